"""Run-directory files: per-epoch table (CSV, Markdown, JSON), per-tag metrics, step history,
results summary, resolved config. Every file is written atomically (temp file + rename), so a
crash never leaves a half-written file behind."""

from __future__ import annotations

import contextlib
import csv
import io
import json
import os
import re
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any, TextIO

from .errors import CheckpointError

# The study's columns, then the correct POS metrics beside them.
EPOCH_COLUMNS = [
    ("Epoch", "epoch"),
    ("Training Loss", "train_loss"),
    ("Validation Loss", "eval_loss"),
    ("Precision", "seqeval_precision"),
    ("Recall", "seqeval_recall"),
    ("F1", "seqeval_f1"),
    ("Accuracy", "accuracy"),
    ("Macro P", "macro_precision"),
    ("Macro R", "macro_recall"),
    ("Macro F1", "macro_f1"),
    ("Weighted F1", "weighted_f1"),
]
TABLE_NOTE = (
    "Precision/Recall/F1 are seqeval's, computed as the study did (report-compatible only: seqeval "
    "misreads prefix-less POS tags as IOB chunks). Accuracy is token accuracy; Macro/Weighted are true "
    "per-tag scores and are the primary metrics."
)

# NER/chunking runs (a span tagging scheme): entity-level scores first, entity F1 primary
SPAN_EPOCH_COLUMNS = [
    ("Epoch", "epoch"),
    ("Training Loss", "train_loss"),
    ("Validation Loss", "eval_loss"),
    ("Entity P", "entity_precision"),
    ("Entity R", "entity_recall"),
    ("Entity F1 (primary)", "entity_f1"),
    ("Gold entities", "gold_entities"),
    ("Predicted entities", "pred_entities"),
    ("Accuracy", "accuracy"),
    ("Macro F1", "macro_f1"),
]
SPAN_TABLE_NOTE = (
    "Entity P/R/F1 are seqeval's entity-level scores, micro-averaged over spans (strict mode for IOB2/IOBES/"
    "BILOU: a span counts only if well formed and exact; default mode for IOB1); entity F1 is the primary "
    "metric. Accuracy is token accuracy and Macro F1 the per-tag average (secondary)."
)


def is_span_run(epochs: list[dict[str, Any]]) -> bool:
    return any(e.get("primary_metric") == "entity_f1" for e in epochs)


def epoch_columns(epochs: list[dict[str, Any]]) -> list[tuple[str, str]]:
    """The study's columns for flat tags (POS); entity-level columns for span schemes (NER, chunking)."""
    return SPAN_EPOCH_COLUMNS if is_span_run(epochs) else EPOCH_COLUMNS


def table_note(epochs: list[dict[str, Any]]) -> str:
    return SPAN_TABLE_NOTE if is_span_run(epochs) else TABLE_NOTE


RUN_MARKER = "run_config.json"
# a whole name part (HF_TOKEN, WANDB_API_KEY, hub_token), not a substring: tokenizer_name and
# label_all_subtokens are settings, not secrets
SECRET_PATTERN = re.compile(
    r"(?:^|[_\-.])(api[_-]?key|(?:access|auth|hub|hf)?[_-]?token|secret|password|passwd|"
    r"private[_-]?key|credentials?)(?:$|[_\-.])",
    re.I,
)


_UMASK = os.umask(0)
os.umask(_UMASK)


@contextlib.contextmanager
def atomic_writer(path: str | os.PathLike) -> Iterator[TextIO]:
    """A text file written under a temporary name and renamed into place on success: a failure at any
    point (an error, Ctrl-C) leaves the previous file, if any, as it was and no partial file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            yield f
        os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp makes 0600; give the usual file mode
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    with atomic_writer(path) as f:
        f.write(text)


def atomic_write_json(path: str | os.PathLike, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, default=str) + "\n")


def redact(obj: Any) -> Any:
    """Drop values of secret-looking keys and any string equal to a secret in the environment."""
    secrets = {v for k, v in os.environ.items() if SECRET_PATTERN.search(k) and len(v) >= 8}
    if isinstance(obj, dict):
        return {k: ("<redacted>" if SECRET_PATTERN.search(str(k)) and obj[k] else redact(v)) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [redact(v) for v in obj]
    if isinstance(obj, str):
        for s in secrets:
            obj = obj.replace(s, "<redacted>")
    return obj


def check_output_dir(output_dir: str, overwrite: bool, resuming: bool = False) -> None:
    """Refuse to mix two runs in one folder unless told to overwrite or resume."""
    marker = Path(output_dir) / RUN_MARKER
    if marker.exists() and not overwrite and not resuming:
        raise CheckpointError(
            "output directory already holds another run",
            where=str(output_dir),
            fix="pass --overwrite_output_dir true, choose another --output_dir, or resume with --resume_from_checkpoint latest",
        )


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.6f}"
    return "" if v is None else str(v)


def epoch_rows(epochs: list[dict[str, Any]]) -> list[list[str]]:
    return [[_fmt(e.get(key)) for _, key in epoch_columns(epochs)] for e in epochs]


def markdown_table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines) + "\n"


def epoch_table_markdown(epochs: list[dict[str, Any]]) -> str:
    return markdown_table([h for h, _ in epoch_columns(epochs)], epoch_rows(epochs)) + f"\n{table_note(epochs)}\n"


def epoch_table_text(epochs: list[dict[str, Any]]) -> str:
    header = [h for h, _ in epoch_columns(epochs)]
    rows = epoch_rows(epochs)
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(header)]
    fmt = "  ".join(f"{{:>{w}}}" for w in widths)
    return "\n".join([fmt.format(*header)] + [fmt.format(*r) for r in rows])


def csv_text(header: list[str], rows: list[list[Any]]) -> str:
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(header)
    w.writerows(rows)
    return buf.getvalue()


def per_tag_rows(per_tag: dict[str, dict[str, Any]]) -> list[list[Any]]:
    order = sorted(per_tag.items(), key=lambda kv: (-kv[1]["support"], kv[0]))
    return [[t, f"{m['precision']:.6f}", f"{m['recall']:.6f}", f"{m['f1']:.6f}", m["support"]] for t, m in order]


PER_TAG_HEADER = ["Tag", "Precision", "Recall", "F1", "Support"]


def write_epoch_outputs(out: str, epochs: list[dict[str, Any]]) -> None:
    """epochs.csv / epochs.md / epochs.json, and per_tag.csv/.md of the last epoch."""
    out_p = Path(out)
    atomic_write_text(out_p / "epochs.csv", csv_text([h for h, _ in epoch_columns(epochs)], epoch_rows(epochs)))
    atomic_write_text(out_p / "epochs.md", epoch_table_markdown(epochs))
    atomic_write_json(out_p / "epochs.json", epochs)
    if epochs and epochs[-1].get("per_tag"):
        rows = per_tag_rows(epochs[-1]["per_tag"])
        atomic_write_text(out_p / "per_tag.csv", csv_text(PER_TAG_HEADER, rows))
        atomic_write_text(out_p / "per_tag.md", markdown_table(PER_TAG_HEADER, [[str(c) for c in r] for r in rows]))
    if epochs and epochs[-1].get("per_entity"):  # one row per entity type (span schemes)
        rows = per_tag_rows(epochs[-1]["per_entity"])
        header = ["Entity type"] + PER_TAG_HEADER[1:]
        atomic_write_text(out_p / "per_entity.csv", csv_text(header, rows))
        atomic_write_text(out_p / "per_entity.md", markdown_table(header, [[str(c) for c in r] for r in rows]))


def write_history(out: str, history: list[dict[str, Any]]) -> None:
    """history.jsonl: one row per logged optimizer step."""
    atomic_write_text(Path(out) / "history.jsonl", "".join(json.dumps(h) + "\n" for h in history))


def dir_size(path: str | os.PathLike) -> int:
    return sum(f.stat().st_size for f in Path(path).rglob("*") if f.is_file())
