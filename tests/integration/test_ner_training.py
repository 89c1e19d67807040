"""NER through the trainer: scheme detected and logged, entity F1 primary in every output, and
constrained decoding leaving only valid IOB2 sequences in the evaluation's predictions."""

import json

from conftest import read_json, train_smoke

from tagtune.schemes import allowed


def valid(tags, scheme="IOB2"):
    seq = ["<s>", *tags, "</s>"]
    return all(allowed(a, b, scheme) for a, b in zip(seq, seq[1:]))


def test_ner_run_constrained_decoding_and_primary_metric(tmp_path, caplog):
    caplog.set_level("INFO", logger="tagtune")
    out = train_smoke(
        tmp_path / "ner",
        "--dataset_name", "synthetic:ner",
        "--constrain_decoding", "true",
        "--max_train_samples", "64",
        "--max_eval_samples", "80",
        "--num_train_epochs", "1",
        "--learning_rate", "1e-3",
    )  # fmt: skip
    logs = " ".join(r.getMessage() for r in caplog.records)
    assert "tagging scheme: IOB2" in logs and "primary metric: entity_f1" in logs
    res = read_json(out / "results.json")
    final = res["final"]
    assert res["tagging_scheme"] == "IOB2" and res["primary_metric"] == final["primary_metric"] == "entity_f1"
    assert final["constrained_decoding"] is True and "entity_f1_unconstrained" in final
    assert set(final["per_entity"]) <= {"PER", "LOC", "ORG"} and final["gold_entities"] > 0
    rows = [json.loads(line) for line in (out / "eval_predictions.jsonl").read_text().splitlines()]
    assert all(valid(r["tags"]) for r in rows)  # Viterbi never emits I-X after O or after B-Y
    assert all(valid(r["labels"]) for r in rows)
    header = (out / "epochs.csv").read_text().splitlines()[0]
    assert header.startswith("Epoch,Training Loss,Validation Loss,Entity P,Entity R,Entity F1 (primary)")
    assert "Entity type" in (out / "per_entity.csv").read_text()
    assert json.loads((out / "epochs.json").read_text())[-1]["primary"] == final["entity_f1"]


def test_pos_run_keeps_accuracy_primary(tmp_path):
    out = train_smoke(
        tmp_path / "pos", "--max_train_samples", "64", "--max_eval_samples", "40", "--num_train_epochs", "1"
    )
    res = read_json(out / "results.json")
    assert res["tagging_scheme"] == "none" and res["final"]["primary_metric"] == "accuracy"
    assert res["final"]["primary"] == res["final"]["accuracy"] and "entity_f1" not in res["final"]
    assert (out / "epochs.csv").read_text().splitlines()[0].startswith("Epoch,Training Loss,Validation Loss,Precision")
    assert not (out / "per_entity.csv").exists()
