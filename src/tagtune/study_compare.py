"""Reproduced runs beside the study's published numbers (`tagtune report --compare-study`).

The study's Tables 2-6, parameter counts and conclusions live in ``study/seed_report.json`` (transcribed
once from the project's seed report). For every cell of the grid (model family x method x where LoRA
started) this builds: per-epoch mean +- std over seeds next to the study's value and the difference;
Table 2 label by label; exact parameter counts; and for each comparison the study draws (LoRA vs full,
RoBERTa vs BERT) the difference with a 95% interval and a verdict in words. The same tables can be
logged as W&B tables to one summary run.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Optional

from .report import Run, model_family, slug
from .significance import Interval, mean_std, paired_bootstrap, per_sentence_correct, verdict, welch_interval

PRETRAINED, FROM_FULL_RUN = "pretrained", "from_full_run"
SEQEVAL_WHY = (
    "seqeval (the study's F1) parses tags as IOB chunks: for POS tags without B-/I- prefixes it reads IN as "
    "'I- of type N', NNP as type 'NP' and drops punctuation tags, so its P/R/F1 are not per-tag scores. "
    "They are shown only to compare with the study; Macro-F1 (true per-tag F1, averaged) and Accuracy are correct."
)
# (label, key in epochs.json / the study's rows, shown in the study?)
EPOCH_METRICS = [
    ("Training Loss", "train_loss"),
    ("Validation Loss", "eval_loss"),
    ("Precision (seqeval, study-compatible*)", "seqeval_precision"),
    ("Recall (seqeval, study-compatible*)", "seqeval_recall"),
    ("F1 (seqeval, study-compatible*)", "seqeval_f1"),
    ("Macro-F1 (correct per-tag)", "macro_f1"),
    ("Accuracy", "accuracy"),
]


def load_study() -> dict[str, Any]:
    """The study's numbers as shipped inside the package."""
    return json.loads(resources.files("tagtune").joinpath("study/seed_report.json").read_text(encoding="utf-8"))


# ----------------------------------------------------------------------------------------
# the grid's cells
# ----------------------------------------------------------------------------------------


def lora_start(model_path: str) -> tuple[str, str]:
    """(base model id, protocol): a folder written by a tagtune run (tagtune_config.json) means the LoRA run
    started from that run's fine-tuned weights."""
    marker = Path(model_path) / "tagtune_config.json"
    if marker.is_file():
        base = json.loads(marker.read_text(encoding="utf-8")).get("model_name_or_path", model_path)
        return lora_start(base)[0], FROM_FULL_RUN
    return model_path, PRETRAINED


@dataclass
class Cell:
    family: str
    method: str
    init: str  # pretrained | from_full_run
    model: str  # base model id
    runs: list[Run] = field(default_factory=list)

    @property
    def name(self) -> str:
        if self.method == "full":
            return f"{self.family} full"
        return (
            f"{self.family} {self.method} ({'from the full run' if self.init == FROM_FULL_RUN else 'from pretrained'})"
        )

    def seeds(self) -> list[Any]:
        return [r.config.get("seed") for r in self.runs]


def group_cells(runs: Sequence[Run]) -> list[Cell]:
    cells: dict[tuple[str, str, str], Cell] = {}
    for r in runs:
        base, init = lora_start(r.model)
        key = (model_family(base), r.method, init)
        cells.setdefault(key, Cell(key[0], r.method, init, base)).runs.append(r)
    order = {"bert": 0, "roberta": 1}
    return sorted(cells.values(), key=lambda c: (order.get(c.family, 9), c.family, c.method != "full", c.init))


def _final(run: Run, key: str) -> Optional[float]:
    ev = [e for e in run.evaluated if e.get(key) is not None]
    return ev[-1][key] if ev else None


def _epoch_value(run: Run, epoch: int, key: str) -> Optional[float]:
    for e in run.epochs:
        if e.get("epoch") == epoch and e.get(key) is not None:
            return float(e[key])
    return None


def _pm(values: list[float]) -> str:
    if not values:
        return ""
    m, s, n = mean_std(values)
    return f"{m:.6f} ± {s:.6f} (n={n})"


# ----------------------------------------------------------------------------------------
# sections: (title, header, rows, notes), rendered as Markdown and logged as W&B tables
# ----------------------------------------------------------------------------------------


@dataclass
class Section:
    key: str  # short W&B table key (artifact names are limited to 128 characters)
    title: str
    header: list[str]
    rows: list[list[str]]
    notes: list[str] = field(default_factory=list)
    level: int = 3


def table2_section(runs: Sequence[Run], study: dict[str, Any]) -> Section:
    t2 = study["table2"]
    dist = next((r.results["label_distribution"] for r in runs if r.results.get("label_distribution")), {})
    ours = dict(map(tuple, dist.get("train", [])))
    rows = []
    for tag, n in list(t2["counts"].items()) + list(t2["skipped_in_range"].items()):
        mine = ours.get(tag)
        shown = "" if tag in t2["counts"] else " (not in the study's table)"
        rows.append([tag + shown, str(n), "" if mine is None else str(mine), "" if mine is None else f"{mine - n:+d}"])
    setup = study["setup"]
    r0 = next((r.results for r in runs if r.results.get("label_distribution")), {})
    notes = [
        f"Study: {setup['train_sentences']:,} training sentences, {setup['train_tags']} tags in train. "
        f"Reproduced: {r0.get('train_sentences', '?')} training sentences, {len(ours)} tags in train.",
        t2["note"],
    ]
    return Section("table2", f"{t2['title']}: label by label", ["Tag", "Study", "Reproduced", "Δ"], rows, notes)


def epoch_section(cell: Cell, table_id: str, table: dict[str, Any]) -> Section:
    study_rows = {r["epoch"]: r for r in table["rows"]}
    epochs = sorted(set(study_rows) | {e["epoch"] for r in cell.runs for e in r.epochs if "epoch" in e})
    rows = []
    for ep in epochs:
        for label, key in EPOCH_METRICS:
            vals = [v for r in cell.runs if (v := _epoch_value(r, ep, key)) is not None]
            ref = study_rows.get(ep, {}).get(key)
            diff = f"{mean_std(vals)[0] - ref:+.6f}" if vals and ref is not None else ""
            rows.append([str(ep), label, _pm(vals), "" if ref is None else f"{ref:.6f}", diff])
    notes = [
        f"Reproduced: {cell.name}, `{cell.model}`, seeds {cell.seeds()}; mean ± sample std over seeds. "
        "Δ = reproduced mean − study.",
        "\\* " + SEQEVAL_WHY,
    ]
    title = f"{table['title']} vs reproduced {cell.name}"
    key = f"table{table_id}_{cell.init if cell.method == 'lora' else 'full'}"
    return Section(key, title, ["Epoch", "Metric", "Reproduced mean ± std", "Study", "Δ"], rows, notes)


def protocol_section(cells: Sequence[Cell], study: dict[str, Any]) -> Optional[Section]:
    """Which LoRA start matches the study's epoch-1 training loss (its anomaly); None unless both were run."""
    rows = []
    for table_id, t in study["tables"].items():
        mine = {c.init: c for c in cells if (c.family, c.method) == (t["family"], t["method"]) and c.method == "lora"}
        if set(mine) != {PRETRAINED, FROM_FULL_RUN}:
            continue
        ref = t["rows"][0]["train_loss"]
        got = {
            k: mean_std([v for r in c.runs if (v := _epoch_value(r, 1, "train_loss")) is not None])[0]
            for k, c in mine.items()
        }
        closest = min(got, key=lambda k: abs(got[k] - ref))
        rows.append(
            [
                f"Table {table_id} ({t['family']} LoRA)",
                f"{ref:.4f}",
                f"{got[PRETRAINED]:.4f}",
                f"{got[FROM_FULL_RUN]:.4f}",
                closest,
            ]
        )
    if not rows:
        return None
    notes = [
        "Epoch-1 mean training loss. A LoRA run that starts from the already fine-tuned full-run weights begins "
        "near the full run's final loss; the study's low epoch-1 LoRA losses suggest it did so."
    ]
    header = ["Study table", "Study epoch-1 training loss", "From pretrained", "From the full run", "Closest"]
    return Section("protocol", "Protocol: where LoRA starts", header, rows, notes)


def _count(values: set) -> str:
    return f"{next(iter(values)):,}" if len(values) == 1 else "varies: " + ", ".join(f"{v:,}" for v in sorted(values))


def params_section(cells: Sequence[Cell], study: dict[str, Any]) -> Section:
    rows = []
    for c in cells:
        ref = study["parameters"].get(c.family) if c.method == "lora" else None
        cols = []
        match = []
        for key in ("trainable_params", "total_params", "unique_params"):
            got = {r.results[key] for r in c.runs if key in r.results}
            cols += ["" if ref is None else f"{ref[key]:,}", _count(got) if got else ""]
            if ref is not None and got:
                match.append("equal" if got == {ref[key]} else f"differs ({key.split('_')[0]})")
        rows.append([c.name, c.model, *cols, "; ".join(match) if match else "study reports no count"])
    header = [
        "Cell",
        "Model",
        "Study trainable",
        "Reproduced trainable",
        "Study total (peft)",
        "Reproduced total (peft)",
        "Study unique",
        "Reproduced unique",
        "Exact match",
    ]
    notes = [
        study["parameters"]["bert"]["note"],
        "peft's total counts the LoRA classifier twice; unique counts it once.",
    ]
    return Section("parameters", "Parameter counts (compared exactly)", header, rows, notes)


# ----------------------------------------------------------------------------------------
# is the difference real?
# ----------------------------------------------------------------------------------------


def _predictions(run: Run) -> Optional[list[dict]]:
    p = run.dir / "eval_predictions.jsonl"
    if not p.is_file():
        return None
    return [json.loads(line) for line in p.read_text(encoding="utf-8").splitlines() if line.strip()]


def difference(a: Cell, b: Cell, key: str) -> Optional[Interval]:
    """b - a over seeds (Welch) when both cells have >= 2 runs, else a paired bootstrap of accuracy over the
    test sentences of one run each (same sentences required)."""
    va = [v for r in a.runs if (v := _final(r, key)) is not None]
    vb = [v for r in b.runs if (v := _final(r, key)) is not None]
    if len(va) >= 2 and len(vb) >= 2:
        return welch_interval(va, vb)
    if key != "accuracy":
        return None
    pa, pb = _predictions(a.runs[0]), _predictions(b.runs[0])
    if not pa or not pb or [r["words"] for r in pa] != [r["words"] for r in pb]:
        return None
    (ca, w), (cb, _) = per_sentence_correct(pa), per_sentence_correct(pb)
    return paired_bootstrap(ca, cb, w)


def comparisons(cells: Sequence[Cell]) -> list[tuple[str, str, Cell, Cell]]:
    """(conclusion id, name, a, b) for LoRA vs full per model and RoBERTa vs BERT per method (and LoRA start)."""
    lora_vs_full = [
        ("lora_vs_full", f"LoRA vs full, {b.family} ({b.name})", a, b)
        for b in cells
        for a in cells
        if a.family == b.family and a.method == "full" and b.method == "lora"
    ]
    roberta_vs_bert = [
        ("roberta_vs_bert", f"RoBERTa vs BERT, {b.name.split(' ', 1)[1]}", a, b)
        for b in cells
        for a in cells
        if (a.method, a.init) == (b.method, b.init) and a.family == "bert" and b.family == "roberta"
    ]
    return lora_vs_full + roberta_vs_bert


def _study_final(study: dict[str, Any], family: str, method: str, key: str) -> Optional[float]:
    for t in study["tables"].values():
        if t["family"] == family and t["method"] == method:
            return t["rows"][-1].get(key)
    return None


def significance_section(cells: Sequence[Cell], study: dict[str, Any]) -> tuple[Section, list[str]]:
    rows, verdicts = [], []
    for cid, name, a, b in comparisons(cells):
        margin = study["conclusions"][cid]["margin"]
        for label, key in (("Accuracy", "accuracy"), ("Macro-F1", "macro_f1"), ("F1 (seqeval*)", "seqeval_f1")):
            iv = difference(a, b, key)
            sa, sb = _study_final(study, a.family, a.method, key), _study_final(study, b.family, b.method, key)
            study_diff = f"{sb - sa:+.4f}" if sa is not None and sb is not None else "not reported"
            va = [v for r in a.runs if (v := _final(r, key)) is not None]
            vb = [v for r in b.runs if (v := _final(r, key)) is not None]
            rows.append(
                [
                    name,
                    label,
                    _pm(va),
                    _pm(vb),
                    iv.text() if iv else "no interval: one seed (the sentence bootstrap covers accuracy only)",
                    iv.method if iv else "",
                    study_diff,
                ]
            )
            if key == "accuracy":
                line = verdict(iv, margin, a.name, b.name) if iv else "no verdict: no interval could be computed."
                verdicts.append(
                    f"- **{name}** — study: “{study['conclusions'][cid]['claim']}” Verdict (accuracy): {line}"
                )
    header = [
        "Comparison",
        "Metric (final epoch)",
        "A mean ± std",
        "B mean ± std",
        "B − A [95% interval]",
        "Interval",
        "Study B − A",
    ]
    notes = [
        "A is the first-named baseline (full, or BERT), B the other. Welch t-interval over seeds when each side has "
        "two or more seeds; with one seed, a paired bootstrap over the test sentences (2,000 resamples) from the runs' "
        "eval_predictions.jsonl.",
    ]
    return Section("significance", "Is the difference real?", header, rows, notes), verdicts


# ----------------------------------------------------------------------------------------
# rendering and W&B
# ----------------------------------------------------------------------------------------


def build_sections(runs: Sequence[Run], study: Optional[dict[str, Any]] = None) -> tuple[list[Section], list[str]]:
    """All sections (Table 2, Tables 3-6 per cell, parameter counts, significance) and the verdict lines."""
    study = study or load_study()
    cells = group_cells(runs)
    sections = [table2_section(runs, study)]
    for table_id, t in study["tables"].items():
        for c in cells:
            if (c.family, c.method) == (t["family"], t["method"]):
                sections.append(epoch_section(c, table_id, t))
    sections.append(params_section(cells, study))
    proto = protocol_section(cells, study)
    if proto is not None:
        sections.append(proto)
    sig, verdicts = significance_section(cells, study)
    sections.append(sig)
    return sections, verdicts


def markdown(sections: Sequence[Section], verdicts: Sequence[str], study: dict[str, Any]) -> str:
    from .outputs import markdown_table

    md = ["## Comparison with the study", "", f"Source of the study's numbers: {study['source']}", ""]
    for s in sections:
        md += ["#" * s.level + " " + s.title, "", markdown_table(s.header, s.rows).rstrip("\n"), ""]
        md += [n + "\n" for n in s.notes]
    md += ["### Verdicts", "", *verdicts, ""]
    return "\n".join(md)


def write_comparison(runs: Sequence[Run], out: str | Path, report_md: Optional[Path] = None) -> Path:
    """Write study_comparison.md into ``out`` (and append it to report.md when given); return its path."""
    from .outputs import atomic_write_text

    study = load_study()
    sections, verdicts = build_sections(runs, study)
    text = markdown(sections, verdicts, study)
    path = Path(out) / "study_comparison.md"
    atomic_write_text(path, text)
    atomic_write_text(
        Path(out) / "study_comparison.json",
        json.dumps([s.__dict__ for s in sections] + [{"verdicts": list(verdicts)}], indent=1),
    )
    if report_md is not None:
        atomic_write_text(report_md, report_md.read_text(encoding="utf-8").rstrip() + "\n\n" + text)
    return path


def log_to_wandb(out: str | Path, project: str, group: str) -> Path:
    """Log the comparison's tables (from study_comparison.json) as W&B tables to one summary run of ``group``;
    offline when WANDB_MODE=offline or not logged in. Returns the W&B run folder."""
    import wandb

    from .tracking import resolve_report_to

    resolve_report_to("auto")  # offline unless logged in, as training runs do
    data = json.loads((Path(out) / "study_comparison.json").read_text(encoding="utf-8"))
    # one id per group: a rerun of the reproduction updates the same summary run instead of adding one
    run = wandb.init(
        project=project,
        group=group,
        name=f"{group}-study-summary",
        id=f"{slug(group).replace('.', '-')[:40]}-study-summary",
        resume="allow",
        job_type="study-report",
        dir=str(out),
    )
    try:
        tables = {f"study/{s['key']}": wandb.Table(columns=s["header"], data=s["rows"]) for s in data[:-1]}
        tables["study/verdicts"] = wandb.Table(columns=["verdict"], data=[[v] for v in data[-1]["verdicts"]])
        run.log(tables)
        return Path(run.dir).parent
    finally:
        run.finish()


def compare_study(
    runs: Sequence[Run], out: str | Path, report_md: Path, wandb_group: Optional[str] = None, project: str = "tagtune"
) -> None:
    """What `tagtune report --compare-study [--wandb-group G]` adds to a report."""
    path = write_comparison(runs, out, report_md)
    print(f"study comparison written to {path} (also appended to {report_md})")
    if wandb_group:
        print(f"W&B summary run: {log_to_wandb(out, project, wandb_group)}")
