"""RoBERTa full fine-tuning (the study's Table 5) on batterydata/pos_tagging.

Launch:  accelerate launch recipes/roberta_full.py [--any_field value ...]    (--help lists every field)
Study setup: lr 5e-5, batch 16, 3 epochs, weight decay 0.01, validation = test split; starts from the pretrained checkpoint.
"""

from dataclasses import dataclass
from typing import Optional

from tagtune import TrainConfig, main


@dataclass
class RobertaFull(TrainConfig):
    recipe: str = "roberta_full"
    model_name_or_path: str = "roberta-base"
    dataset_name: Optional[str] = "batterydata/pos_tagging"
    method: str = "full"
    learning_rate: float = 5e-5
    per_device_train_batch_size: int = 16
    num_train_epochs: float = 3.0
    weight_decay: float = 0.01


if __name__ == "__main__":
    main(RobertaFull)
