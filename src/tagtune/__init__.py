"""tagtune: distributed fine-tuning of encoders for token classification (POS tagging)."""

from .config import TrainConfig, parse
from .errors import CheckpointError, ConfigError, DataError, TagtuneError

__version__ = "0.1.0"


def run(cfg: TrainConfig):
    """Train with a parsed config (see ``tagtune.train.run``)."""
    from .train import run as _run

    return _run(cfg)


def main(cls: type = TrainConfig, args=None):
    """Parse ``cls`` from defaults < recipe < --config file < CLI, then train."""
    from .train import main as _main

    return _main(cls, args)


def __getattr__(name: str):
    if name == "Tagger":  # lazy: `import tagtune` stays free of torch/transformers
        from .tagger import Tagger

        return Tagger
    raise AttributeError(f"module 'tagtune' has no attribute {name!r}")


__all__ = [
    "Tagger",
    "TrainConfig",
    "parse",
    "run",
    "main",
    "TagtuneError",
    "ConfigError",
    "DataError",
    "CheckpointError",
]
