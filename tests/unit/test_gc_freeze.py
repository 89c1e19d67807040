"""gc_freeze: a command parsing the process's own command line freezes the objects its imports made (and
everything again at exit); the same entry points called with explicit arguments leave the collector alone."""

from __future__ import annotations

import gc
import json
import subprocess
import sys

import pytest
from conftest import ROOT, subprocess_env

from tagtune import cli

# after `import torch` alone well over 100,000 objects are tracked
IMPORTED = 100_000

PROBE = """
import gc, json, sys
sys.argv = {argv!r}
from tagtune import gc_freeze
from tagtune.{module} import main
try:
    code = main()
except SystemExit as stop:
    code = stop.code
print(json.dumps({{"code": code, "frozen": gc.get_freeze_count(), "at_exit": gc_freeze._FREEZE_AT_EXIT}}))
"""


def probe(module: str, argv: list[str], **env: str) -> dict:
    out = subprocess.run(
        [sys.executable, "-c", PROBE.format(module=module, argv=argv)],
        cwd=ROOT,
        env=subprocess_env(**env),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize(
    "module,argv,code",
    [
        ("cli", ["tagtune", "predict", "--help"], 0),  # the `tagtune` command: frozen after its module's imports
        ("train", ["smoke.py", "--no_such_field", "1"], 2),  # a recipe's main(): frozen before parsing the config
    ],
)
def test_a_command_freezes_what_its_imports_made_and_again_at_exit(module, argv, code):
    got = probe(module, argv)
    assert got["code"] == code, got
    assert got["frozen"] > IMPORTED, got
    assert got["at_exit"] is True, got


def test_tagtune_gc_freeze_0_turns_it_off():
    got = probe("cli", ["tagtune", "predict", "--help"], TAGTUNE_GC_FREEZE="0")
    assert got == {"code": 0, "frozen": 0, "at_exit": False}


def test_explicit_arguments_leave_the_collector_alone(capsys):
    before = gc.get_freeze_count()
    assert cli.main(["memory", "--model", "roberta-base", "--method", "lora", "--gpus", "1"]) == 0
    from tagtune.train import main

    with pytest.raises(SystemExit):
        main(args=["--no_such_field", "1"])
    assert gc.get_freeze_count() == before
    assert "roberta-base" in capsys.readouterr().out
