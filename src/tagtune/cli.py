"""`tagtune` command: one subcommand per module, each a ``main(argv)`` in that module.

tagtune train RECIPE_OR_CONFIG ...   same as running a recipe (use `accelerate launch` for many processes)
tagtune report RUN_DIR [RUN_DIR ...] --out DIR
tagtune predict --model DIR --input FILE|-
tagtune evaluate --model DIR --dataset ...
tagtune export --model DIR --merge --out DIR
tagtune memory --model NAME --gpus N
tagtune bench --preset cpu|gpu
tagtune reproduce [--seeds N] [--models ...] [--methods ...] [--lora_init ...] [--dry-run]
tagtune convert-checkpoint --to universal CKPT OUT
"""

from __future__ import annotations

import importlib
import sys
from typing import Optional

from . import gc_freeze
from .errors import TagtuneError

# subcommand -> (module, function, one-line help)
COMMANDS = {
    "train": ("tagtune.train", "main", "train: a recipe file (recipes/*.py), a YAML/JSON config, or flags alone"),
    "report": ("tagtune.report", "main", "tables and figures (Markdown + PNG) from run directories"),
    "predict": ("tagtune.predict_cli", "predict_main", "tag raw text, JSONL or CoNLL with a trained model"),
    "evaluate": ("tagtune.predict_cli", "evaluate_main", "score a trained model on any labelled set"),
    "export": ("tagtune.predict_cli", "export_main", "merge a LoRA adapter into a plain transformers model"),
    "memory": ("tagtune.memory", "main", "estimated per-device memory under DDP and ZeRO-1/2/3 (+offload)"),
    "bench": ("tagtune.bench", "main", "side-by-side benchmark against the standard HF Trainer recipe"),
    "reproduce": (
        "tagtune.reproduce",
        "main",
        "the study's grid over seeds, resumable, with its numbers side by side",
    ),
    "convert-checkpoint": (
        "tagtune.universal",
        "main",
        "ZeRO checkpoint -> DeepSpeed universal format (resume at another process count, optimizer kept)",
    ),
}


def recipe_class(path: str) -> type:
    """The TrainConfig subclass a recipe file declares (the one its own module defines)."""
    import dataclasses
    import importlib.util
    from pathlib import Path

    from .config import TrainConfig
    from .errors import ConfigError

    file = Path(path)
    if not file.is_file():
        raise ConfigError(
            f"recipe file not found: {path}", where="tagtune train", fix="e.g. tagtune train recipes/smoke.py"
        )
    spec = importlib.util.spec_from_file_location(f"tagtune_recipe_{file.stem}", file)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)  # a recipe's main() runs only under __main__
    found = [
        obj
        for obj in vars(module).values()
        if isinstance(obj, type)
        and issubclass(obj, TrainConfig)
        and dataclasses.is_dataclass(obj)
        and obj.__module__ == module.__name__
    ]
    if len(found) != 1:
        raise ConfigError(
            f"{path} defines {len(found)} TrainConfig subclasses, expected one",
            where=str(path),
            fix="a recipe is one @dataclass subclass of tagtune.TrainConfig (see recipes/smoke.py)",
        )
    return found[0]


def train_command(argv: list[str]) -> int:
    """`tagtune train [RECIPE.py | CONFIG.yaml|json] [flags]`: the recipe's defaults, or the base config + file."""
    from .config import TrainConfig
    from .train import main as train_main

    cls: type = TrainConfig
    if argv and not argv[0].startswith("-"):
        first, argv = argv[0], argv[1:]
        if first.endswith(".py"):
            cls = recipe_class(first)
        else:
            argv = ["--config", first, *argv]
    train_main(cls, argv)
    return 0


def usage() -> str:
    lines = ["usage: tagtune COMMAND [args]", "", "commands:"]
    lines += [f"  {name:<18} {help_}" for name, (_, _, help_) in COMMANDS.items()]
    return "\n".join(lines)


def main(argv: Optional[list[str]] = None) -> int:
    """``argv`` None: the process's own command line, so the process is this command (gc_freeze)."""
    own_command_line = argv is None
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(usage())
        return 0
    name, rest = argv[0], argv[1:]
    if name not in COMMANDS:
        print(f"tagtune: unknown command '{name}'\n\n{usage()}", file=sys.stderr)
        return 2
    module, func, _ = COMMANDS[name]
    try:
        command = importlib.import_module(module)
        if own_command_line:
            gc_freeze.freeze_imports()
        if name == "train":
            return train_command(rest)
        result = getattr(command, func)(rest)
        return int(result or 0)
    except TagtuneError as err:
        print(f"tagtune: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
