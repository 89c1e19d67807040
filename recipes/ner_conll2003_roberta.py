"""English NER (CoNLL-2003, IOB2 as the hub copy ships it) with roberta-base: the hub version, for
users with network access. Entity-level F1 (seqeval strict) is the primary metric.

Launch:  accelerate launch recipes/ner_conll2003_roberta.py [--method lora] [--any_field value ...]
Local CoNLL-2003 files (`word POS chunk NER` columns) instead of the hub:
         ... --dataset_name "" --train_file eng.train --validation_file eng.testa --conll_tag_column -1 \
             --tagging_scheme auto   (the original files are IOB1; auto detects it)
"""

from dataclasses import dataclass
from typing import Optional

from tagtune import TrainConfig, main


@dataclass
class NerConll2003Roberta(TrainConfig):
    recipe: str = "ner_conll2003_roberta"
    model_name_or_path: str = "roberta-base"
    dataset_name: Optional[str] = "eriktks/conll2003"
    words_field: str = "tokens"
    labels_field: str = "ner_tags"
    tagging_scheme: str = "IOB2"
    constrain_decoding: bool = True
    method: str = "full"
    learning_rate: float = 3e-5
    per_device_train_batch_size: int = 16
    num_train_epochs: float = 3.0
    warmup_ratio: float = 0.1


if __name__ == "__main__":
    main(NerConll2003Roberta)
