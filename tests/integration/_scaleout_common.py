"""Shared by test_distributed.py and test_deepspeed.py: the smoke recipe launched exactly as a user
would (`accelerate launch --config_file accelerate_configs/<config>.yaml --num_processes 2 recipes/smoke.py`),
single-process reference runs with the same global batch, and the fresh-process reload check.

Run as a script it is that reload check:
    python tests/integration/_scaleout_common.py RUN_DIR [RUN_DIR ...]
prints {run_dir: {"tags": [[tag, ...] per sentence], "load_info": {...}}} for each run's saved model/adapter,
loaded with plain transformers / peft only, predicting the words of the run's eval_predictions.jsonl.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

if __name__ != "__main__":
    from conftest import ROOT, accelerate_launch, read_json, run_cmd

# 64 training sentences = 4 optimizer steps of a global batch of 16 (2 processes x 8, or 1 x 16);
# 37 evaluation sentences in batches of at most 64 padded sub-tokens (1 to 8 sentences each), dealt out to
# the processes in turn: an odd count, so one process runs a batch twice and every word is still counted once.
STEPS, TRAIN, EVAL, GLOBAL_BATCH = 4, 64, 37, 16
COMMON = [
    "--max_steps",
    str(STEPS),
    "--max_train_samples",
    str(TRAIN),
    "--max_eval_samples",
    str(EVAL),
    "--per_device_eval_batch_tokens",
    "64",
    "--logging_steps",
    "1",
    "--report_to",
    "none",
    "--overwrite_output_dir",
    "true",
    "--checkpoint_epoch_end",
    "false",
    # no dropout anywhere (the synthetic model has none): the two runs see the same randomness;
    # a clipping norm that some steps exceed: the recipe's value must reach DeepSpeed
    "--lora_dropout",
    "0",
    "--max_grad_norm",
    "1.5",
]

# Relative tolerance on each step's training loss, 2 processes vs 1 with the same global batch.
# Same data and weights at step 1; the logged loss is the mean of the two processes' token-mean
# losses, not the token mean over the whole batch, and DDP averages the gradients the same way, so the
# curves drift apart by a few 1e-4 over 4 steps (measured: 2.7e-4 LoRA, 4.5e-4 full, same for DDP and ZeRO-1/2/3).
LOSS_RTOL = 2e-3

_REFS: dict[str, Path] = {}


def recipe_args(out: Path, method: str, per_device: int, *extra: str) -> list[str]:
    return [
        "--method",
        method,
        "--per_device_train_batch_size",
        str(per_device),
        "--output_dir",
        str(out),
        *COMMON,
        *extra,
    ]


def launch(config: str, method: str, out: Path, *extra: str, **env: str) -> Path:
    """Two processes under accelerate_configs/<config>.yaml (the config file decides DDP or DeepSpeed)."""
    if config == "multi_gpu":
        env.setdefault("ACCELERATE_USE_CPU", "1")  # CPU DDP over gloo; without it each process trains alone
    report = threads_report(out)
    report.unlink(missing_ok=True)
    env.setdefault("TAGTUNE_THREADS_REPORT", str(report))
    accelerate_launch(
        "recipes/smoke.py",
        recipe_args(out, method, GLOBAL_BATCH // 2, *extra),
        num_processes=2,
        extra_launch=["--config_file", str(ROOT / "accelerate_configs" / f"{config}.yaml")],
        **env,
    )
    return out


def threads_report(run: Path) -> Path:
    """Where each rank of a launch writes the gloo threads alive before and after the trainer's cleanup."""
    return run.parent / f"{run.name}.threads.jsonl"


def assert_process_groups_destroyed(run: Path) -> None:
    """Every rank ended with no gloo thread left: each process group was really destroyed (its threads joined)
    before the interpreter began to finalize, which is what keeps exit from aborting (issue 10)."""
    lines = [json.loads(line) for line in threads_report(run).read_text().splitlines()]
    assert sorted(line["rank"] for line in lines) == [0, 1], lines
    for line in lines:
        assert "pt_gloo_runloop" in line["before"], line  # it really ran over gloo
        assert line["after"] == [], f"rank {line['rank']}: threads still alive after cleanup: {line['after']}"


# every 2-process ZeRO run (test_deepspeed, test_offload, test_universal_resume share them): a checkpoint
# mid-way (the resume tests start there) and one at the last step, all kept
ZERO_EXTRA = ("--checkpoint_epoch_end", "true", "--save_total_limit", "0", "--checkpointing_steps", "2")
_LAUNCHES: dict[tuple, Path] = {}


def shared_launch(config: str, method: str, tmp_root: Path, *extra: str) -> Path:
    """launch() once per pytest session for the same arguments: test files share runs (test_offload.py
    compares against test_deepspeed.py's ZeRO-2 runs without launching them again)."""
    key = (config, method, extra)
    if key not in _LAUNCHES:
        _LAUNCHES[key] = launch(config, method, tmp_root / f"{config}-{method}-{len(_LAUNCHES)}", *extra)
    return _LAUNCHES[key]


def reference(method: str, tmp_root: Path) -> Path:
    """One process, the same global batch of 16: the loss curve the 2-process runs must reproduce."""
    if method not in _REFS:
        out = tmp_root / f"single-{method}"
        run_cmd([sys.executable, str(ROOT / "recipes" / "smoke.py"), *recipe_args(out, method, GLOBAL_BATCH)])
        _REFS[method] = out
    return _REFS[method]


def eval_word_count() -> int:
    from tagtune.synthetic import generate_splits

    return sum(len(words) for words, _ in generate_splits()["validation"][:EVAL])


def losses(run: Path) -> list[float]:
    return [row["train_loss"] for row in map(json.loads, (run / "history.jsonl").read_text().splitlines())]


def check_run(run: Path, distributed_type: str, reference_run: Path) -> dict:
    """Assertions every 2-process run must pass; returns its results.json."""
    assert_process_groups_destroyed(run)
    results, run_config = read_json(run / "results.json"), read_json(run / "run_config.json")
    for rec in (results, run_config):
        assert rec["num_processes"] == 2, rec["num_processes"]
        assert rec["distributed_type"] == distributed_type, rec["distributed_type"]
    # every validation word scored exactly once, whatever the padding of the uneven last batch
    n_words = eval_word_count()
    assert results["eval_words"] == n_words
    assert results["final"]["num_words"] == n_words
    assert sum(map(sum, results["confusion_matrix"]["matrix"])) == n_words
    preds = [json.loads(line) for line in (run / "eval_predictions.jsonl").read_text().splitlines()]
    assert len(preds) == EVAL and sum(len(p["tags"]) for p in preds) == n_words
    # the same loss curve as one process with the same global batch
    got, want = losses(run), losses(reference_run)
    assert len(got) == len(want) == STEPS
    worst = max(abs(g - w) / w for g, w in zip(got, want))
    assert worst <= LOSS_RTOL, (
        f"loss curve {got} vs single process {want}: worst relative gap {worst:.2e} > {LOSS_RTOL}"
    )
    assert got[-1] < got[0]  # it trained
    return results


def reload_in_fresh_process(runs: list[Path]) -> dict[str, dict]:
    proc = run_cmd([sys.executable, str(Path(__file__).resolve()), *map(str, runs)])
    return json.loads(proc.stdout.strip().splitlines()[-1])


def assert_same_predictions(run: Path, reloaded: dict) -> None:
    saved = [json.loads(line)["tags"] for line in (run / "eval_predictions.jsonl").read_text().splitlines()]
    got = reloaded[str(run)]["tags"]
    diff = sum(a != b for s, r in zip(saved, got) for a, b in zip(s, r))
    assert len(got) == len(saved) and diff == 0, f"{run}: reloaded model disagrees on {diff} words"


# ------------------------------------------------------------------------------------------
# the fresh process: plain transformers / peft, nothing from tagtune's training code
# ------------------------------------------------------------------------------------------


def _reload(run: Path) -> dict:
    import torch
    from transformers import AutoModelForTokenClassification, AutoTokenizer

    model_dir = run / "model"
    info: dict = {}
    if (model_dir / "adapter_config.json").is_file():
        from peft import PeftModel
        from safetensors.torch import load_file

        labels = json.loads((model_dir / "tagtune_config.json").read_text())["labels"]
        base_path = json.loads((model_dir / "adapter_config.json").read_text())["base_model_name_or_path"]
        base = AutoModelForTokenClassification.from_pretrained(
            base_path,
            num_labels=len(labels),
            id2label=dict(enumerate(labels)),
            label2id={t: i for i, t in enumerate(labels)},
        )
        model = PeftModel.from_pretrained(base, model_dir)
        weights = load_file(model_dir / "adapter_model.safetensors")
        info = {
            "adapter_bytes": (model_dir / "adapter_model.safetensors").stat().st_size,
            "adapter_shapes": {k: list(v.shape) for k, v in weights.items()},
            "lora_B_abs_sum": float(sum(v.abs().sum() for k, v in weights.items() if "lora_B" in k)),
        }
    else:
        model, loading = AutoModelForTokenClassification.from_pretrained(model_dir, output_loading_info=True)
        labels = [model.config.id2label[i] for i in range(model.config.num_labels)]
        info = {
            k: sorted(v) for k, v in loading.items() if k in ("missing_keys", "unexpected_keys", "mismatched_keys")
        }
    model.eval()
    tok = AutoTokenizer.from_pretrained(model_dir)
    tags = []
    with torch.no_grad():
        for line in (run / "eval_predictions.jsonl").read_text().splitlines():
            words = json.loads(line)["words"]
            enc = tok(words, is_split_into_words=True, return_tensors="pt")
            pred = model(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"]).logits[0].argmax(-1)
            first = {}
            for pos, w in enumerate(enc.word_ids()):
                if w is not None and w not in first:
                    first[w] = pos
            tags.append([labels[int(pred[first[i]])] for i in range(len(words))])
    return {"tags": tags, "load_info": info}


if __name__ == "__main__":
    print(json.dumps({run: _reload(Path(run)) for run in sys.argv[1:]}))
