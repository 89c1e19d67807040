"""The primary metric is named and used by the run summary (W&B), the epochs table and the report."""

from pathlib import Path

from tagtune.outputs import epoch_table_text
from tagtune.report import COMPARISON_HEADER, DELTA_HEADER, Run, comparison_row, delta_row
from tagtune.tracking import run_summary

NER_EPOCHS = [
    {"epoch": 1, "accuracy": 0.95, "entity_f1": 0.40, "primary": 0.40, "primary_metric": "entity_f1", "macro_f1": 0.3},
    {"epoch": 2, "accuracy": 0.97, "entity_f1": 0.35, "primary": 0.35, "primary_metric": "entity_f1", "macro_f1": 0.4},
]


def test_run_summary_names_the_primary_metric_and_its_best_epoch():
    s = run_summary({"global_steps": 10}, NER_EPOCHS)
    assert s["primary_metric"] == "entity_f1"
    assert s["final/primary"] == 0.35 and s["best/primary"] == 0.40 and s["best/primary_epoch"] == 1
    assert s["best/accuracy_epoch"] == 2  # accuracy alone would have picked the other epoch


def test_epoch_table_shows_entity_f1_as_primary():
    text = epoch_table_text(NER_EPOCHS)
    assert "Entity F1 (primary)" in text.splitlines()[0] and "0.400000" in text


def run(label, epochs, method="full", peft_method="lora", dora=False):
    config = {"method": method, "peft_method": peft_method, "use_dora": dora, "train_file": "g.tsv"}
    return Run(Path(label), {"method": method, "trainable_params": 10}, epochs, [], config, label)


def test_report_compares_runs_by_the_primary_metric_and_names_methods():
    a = run("full", NER_EPOCHS)
    b = run("dora", [dict(e, entity_f1=0.5, primary=0.5) for e in NER_EPOCHS], method="lora", dora=True)
    c = run("ia3", NER_EPOCHS, method="peft", peft_method="ia3")
    assert (b.method, c.method) == ("lora+dora", "ia3")
    row = dict(zip(COMPARISON_HEADER, comparison_row(a)))
    assert row["Primary metric"] == "entity_f1"
    assert row["Best primary (epoch)"] == "0.4000 (1)" and row["Final primary"] == "0.3500"
    delta = dict(zip(DELTA_HEADER, delta_row("x", a, b)))
    assert delta["Δ final primary"] == "+0.1500"
