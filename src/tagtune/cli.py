"""`tagtune` command: one subcommand per module, each a ``main(argv)`` in that module.

tagtune train RECIPE_OR_CONFIG ...   same as running a recipe (use `accelerate launch` for many processes)
tagtune report RUN_DIR [RUN_DIR ...] --out DIR
tagtune predict --model DIR --input FILE|-
tagtune evaluate --model DIR --dataset ...
tagtune export --model DIR --merge --out DIR
tagtune memory --model NAME --gpus N
tagtune bench --preset cpu|gpu
tagtune reproduce [--seeds N] [--models ...] [--methods ...] [--lora_init ...] [--dry-run]
"""

from __future__ import annotations

import importlib
import sys
from typing import Optional

from .errors import TagtuneError

# subcommand -> (module, function, one-line help)
COMMANDS = {
    "train": ("tagtune.train", "main", "train with the base config (recipes/*.py are the usual way)"),
    "report": ("tagtune.report", "main", "tables and figures (Markdown + PNG) from run directories"),
    "predict": ("tagtune.predict", "predict_main", "tag raw text, JSONL or CoNLL with a trained model"),
    "evaluate": ("tagtune.predict", "evaluate_main", "score a trained model on any labelled set"),
    "export": ("tagtune.predict", "export_main", "merge a LoRA adapter into a plain transformers model"),
    "memory": ("tagtune.memory", "main", "estimated per-device memory under DDP and ZeRO-1/2/3 (+offload)"),
    "bench": ("tagtune.bench", "main", "side-by-side benchmark against the standard HF Trainer recipe"),
    "reproduce": (
        "tagtune.reproduce",
        "main",
        "the study's grid over seeds, resumable, with its numbers side by side",
    ),
}


def usage() -> str:
    lines = ["usage: tagtune COMMAND [args]", "", "commands:"]
    lines += [f"  {name:<9} {help_}" for name, (_, _, help_) in COMMANDS.items()]
    return "\n".join(lines)


def main(argv: Optional[list[str]] = None) -> int:
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
        if name == "train":
            from .train import main as train_main

            train_main(args=rest)
            return 0
        result = getattr(importlib.import_module(module), func)(rest)
        return int(result or 0)
    except TagtuneError as err:
        print(f"tagtune: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
