"""Second half of launch/zero_to_fp32.sh: make DeepSpeed's fp32 weights a complete model folder.

    python launch/zero_to_fp32_finish.py CHECKPOINT_DIR OUT_DIR

OUT_DIR already holds model.safetensors from `python -m deepspeed.utils.zero_to_fp32`. This adds the
base model's config with the run's label maps (from the checkpoint's tagtune_checkpoint.json) and its
tokenizer. For a LoRA run the weights hold the peft model (base + LoRA + classifier): they are loaded
into the same peft model and merged, so OUT_DIR is a plain model either way.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path


def main(ckpt: Path, out: Path) -> None:
    import torch
    from safetensors.torch import load_file
    from transformers import AutoConfig, AutoModelForTokenClassification

    from tagtune.features import load_tokenizer
    from tagtune.modeling import resolve_model_path

    meta = json.loads((ckpt / "tagtune_checkpoint.json").read_text())
    labels = meta["labels"]
    base = resolve_model_path(meta["model_name_or_path"])
    maps = dict(
        num_labels=len(labels), id2label=dict(enumerate(labels)), label2id={t: i for i, t in enumerate(labels)}
    )
    weights_files = sorted(out.glob("model*.safetensors"))
    if not weights_files:
        raise SystemExit(f"{out} holds no model*.safetensors: run python -m deepspeed.utils.zero_to_fp32 first")
    state = {k: v for f in weights_files for k, v in load_file(f).items()}
    config = AutoConfig.from_pretrained(base, **maps)
    with torch.device("meta"):
        model = AutoModelForTokenClassification.from_config(config)
    if meta["method"] == "lora":
        from peft import LoraConfig, TaskType, get_peft_model

        r, alpha, targets = meta["lora"]
        model = get_peft_model(
            model, LoraConfig(task_type=TaskType.TOKEN_CLS, r=r, lora_alpha=alpha, target_modules=targets)
        )
    missing, unexpected = model.load_state_dict(state, strict=False, assign=True)
    # peft keeps the untrained copy of the classifier beside the trained one: it is not in a ZeRO checkpoint's trainables
    missing = [k for k in missing if ".original_module." not in k]
    if missing or unexpected:
        raise SystemExit(
            f"weights do not fit {base} ({meta['method']}): missing {missing[:5]}, unexpected {unexpected[:5]}"
        )
    if meta["method"] == "lora":
        model = model.merge_and_unload()
    for f in weights_files:
        f.unlink()
    (out / "model.safetensors.index.json").unlink(missing_ok=True)
    model.save_pretrained(out, safe_serialization=True)
    load_tokenizer(base, False).save_pretrained(out)
    print(
        f"wrote a plain {type(model).__name__} to {out} ({len(labels)} labels, {meta['method']} run, step {meta['step']})"
    )


if __name__ == "__main__":
    if len(sys.argv) != 3:
        raise SystemExit("usage: python launch/zero_to_fp32_finish.py CHECKPOINT_DIR OUT_DIR")
    main(Path(sys.argv[1]), Path(sys.argv[2]))
