"""The universal-checkpoint resume rules (checkpoint.check_compatible) and `tagtune convert-checkpoint`'s
refusals, without a DeepSpeed run (test_universal_resume.py converts and resumes real checkpoints)."""

from __future__ import annotations

import json

import pytest
from test_bad_input import _meta

from tagtune.checkpoint import META_NAME, check_compatible, request_universal_load
from tagtune.cli import main as cli_main
from tagtune.errors import CheckpointError


def test_zero_checkpoint_at_another_world_size_points_at_the_conversion(tmp_path):
    with pytest.raises(CheckpointError) as err:
        check_compatible(_meta(zero_stage=2), _meta(zero_stage=2, world_size=1), tmp_path)
    msg = str(err.value)
    assert "written by 2 processes, this launch has 1" in msg
    assert f"tagtune convert-checkpoint --to universal {tmp_path} OUT" in msg and "zero_to_fp32" in msg


def test_universal_checkpoint_resumes_at_another_world_size_but_not_another_stage(tmp_path):
    check_compatible(_meta(zero_stage=2, universal=True), _meta(zero_stage=2, world_size=1), tmp_path)
    with pytest.raises(CheckpointError, match="ZeRO stage 2, this launch 3"):
        check_compatible(_meta(zero_stage=2, universal=True), _meta(zero_stage=3, world_size=1), tmp_path)


def test_request_universal_load_keeps_other_checkpoint_settings():
    ds = {"checkpoint": {"tag_validation": "WARN"}}
    request_universal_load(ds)
    assert ds["checkpoint"] == {"tag_validation": "WARN", "load_universal": True}


def _fake_checkpoint(folder, **meta):
    folder.mkdir(parents=True)
    (folder / META_NAME).write_text(json.dumps(_meta(**meta)))
    return folder


@pytest.mark.parametrize(
    "meta, expect",
    [
        ({"zero_stage": 0}, "not a DeepSpeed ZeRO checkpoint"),
        ({"zero_stage": 2, "universal": True}, "already a universal"),
    ],
)
def test_convert_refuses(tmp_path, capsys, meta, expect):
    src = _fake_checkpoint(tmp_path / "run" / "checkpoints" / "step-2", **meta)
    assert cli_main(["convert-checkpoint", "--to", "universal", str(src), str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert expect in err and str(src) in err and "Fix:" in err
    assert not (tmp_path / "out").exists()


def test_convert_refuses_a_folder_that_is_no_checkpoint(tmp_path, capsys):
    (tmp_path / "nothing").mkdir()
    assert cli_main(["convert-checkpoint", "--to", "universal", str(tmp_path / "nothing"), str(tmp_path / "out")]) == 2
    assert "is not a complete tagtune checkpoint" in capsys.readouterr().err
