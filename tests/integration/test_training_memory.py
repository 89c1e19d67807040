"""What a training run keeps in memory: no metric libraries before the first evaluation (and the heap
kept for training steps released before its forward passes, their pages before the libraries), no training sentences once their features exist, and
results.json still reports the training split in full."""

import json
import subprocess
import sys

from conftest import ROOT, subprocess_env

SCRIPT = """
import json, logging, sys
sys.path.insert(0, "recipes")
from smoke import Smoke
import tagtune.train
from tagtune.data import load_corpus
from tagtune.metrics import label_distribution
from tagtune.train import TrainingRecipe

events = []  # the trainer's heap releases and evaluation passes, in order: were the metric libraries loaded yet?
release, passes = tagtune.train.release_freed_memory, tagtune.train.gather_positions
tagtune.train.release_freed_memory = lambda: events.append(["release", "seqeval" in sys.modules]) or release()
tagtune.train.gather_positions = lambda *a, **k: events.append(["passes", "seqeval" in sys.modules]) or passes(*a, **k)

# (not SciPy: transformers imports scipy.optimize itself when it loads a model, for its detection losses)
LIBS = ("seqeval", "sklearn", "pandas", "pyarrow")
cfg = Smoke(output_dir=sys.argv[1], overwrite_output_dir=True, max_steps=3)
train = load_corpus(cfg, logging.getLogger("test")).train  # what the run reads, read independently
recipe = TrainingRecipe(cfg)
recipe.setup()
at_setup = [m for m in LIBS if m in sys.modules]
sentences_kept = len(recipe.corpus.train)
recipe.train()
after_eval = [m for m in LIBS if m in sys.modules]
results = recipe.finish()
recipe.cleanup()
print(json.dumps({
    "at_setup": at_setup,
    "after_eval": after_eval,
    "sentences_kept": sentences_kept,
    "events": events,
    "train_sentences": [len(train), results["train_sentences"]],
    "labels": [label_distribution([s.tags for s in train]), results["label_distribution"]["train"]],
}))
"""


def test_metric_libraries_load_at_the_first_evaluation_and_training_sentences_go(tmp_path):
    out = subprocess.run(
        [sys.executable, "-c", SCRIPT, str(tmp_path / "run")],
        cwd=ROOT,
        env=subprocess_env(),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0, out.stderr[-4000:]
    got = json.loads(out.stdout.strip().split("\n")[-1])
    # seqeval imports scikit-learn, which imports pandas and pyarrow: ~130 MiB training never holds
    assert got["at_setup"] == []
    assert got["after_eval"] == ["seqeval", "sklearn", "pandas", "pyarrow"]
    # one evaluation: the kept heap went back before its forward passes, and their pages before the
    # libraries loaded (neither stacks on the other or on training's pages)
    assert got["events"] == [["release", False], ["passes", False], ["release", False]]
    assert got["sentences_kept"] == 0
    n, reported = got["train_sentences"]
    assert n > 100 and reported == n
    expected, reported_labels = got["labels"]
    assert reported_labels == expected and sum(c for _, c in expected) > n
