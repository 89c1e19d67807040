"""Shipped accelerate/DeepSpeed configs and launch scripts: each is headed by its exact command, parses the
way Accelerate and DeepSpeed will read it, and each launch script's dry run prints a command that
`accelerate launch` accepts, with the right config, process count, ranks and addresses.
Also `tagtune memory` against hand-computed numbers and the README's table, and gpu_check's report. ~20 s.
"""

from __future__ import annotations

import io
import json
import os
import shlex
import subprocess
from contextlib import redirect_stdout
from pathlib import Path

import pytest
import yaml
from conftest import ROOT

ACC = ROOT / "accelerate_configs"
DS = ROOT / "ds_configs"
LAUNCH = ROOT / "launch"

DS_YAMLS = {
    "deepspeed_zero1": ("zero1", 1),
    "deepspeed_zero2": ("zero2", 2),
    "deepspeed_zero2_offload": ("zero2_offload", 2),
    "deepspeed_zero3": ("zero3", 3),
    "deepspeed_zero3_offload": ("zero3_offload", 3),
}
PLAIN_YAMLS = {"single_t4_fp16": "NO", "multi_gpu": "MULTI_GPU", "multi_node": "MULTI_GPU"}


# ------------------------------------------------------------------------------------------
# accelerate_configs/ and ds_configs/
# ------------------------------------------------------------------------------------------


def test_every_config_is_shipped_with_its_launch_command():
    assert {p.stem for p in ACC.glob("*.yaml")} == set(DS_YAMLS) | set(PLAIN_YAMLS)
    assert {p.stem for p in DS.glob("*.json")} == {v[0] for v in DS_YAMLS.values()}
    for p in ACC.glob("*.yaml"):
        assert f"accelerate launch --config_file accelerate_configs/{p.name}" in p.read_text(), p
    for p in DS.glob("*.json"):
        assert (
            "accelerate launch --config_file accelerate_configs/deepspeed_" in json.loads(p.read_text())["_comment"]
        ), p


@pytest.mark.parametrize("name", sorted(PLAIN_YAMLS))
def test_plain_accelerate_configs_load(name):
    from accelerate.commands.config.config_args import load_config_from_file

    cfg = load_config_from_file(str(ACC / f"{name}.yaml"))
    assert str(getattr(cfg.distributed_type, "value", cfg.distributed_type)) == PLAIN_YAMLS[name]
    assert (
        str(getattr(cfg.mixed_precision, "value", cfg.mixed_precision)) == "fp16"
    )  # the T4 default; bf16 is a command-line choice
    if name == "multi_node":
        assert cfg.rdzv_backend == "c10d" and cfg.num_machines == 2


@pytest.mark.parametrize("name", sorted(DS_YAMLS))
def test_deepspeed_configs_load_as_accelerate_and_deepspeed_read_them(name, monkeypatch):
    from accelerate.commands.config.config_args import load_config_from_file
    from accelerate.utils import DeepSpeedPlugin

    json_name, stage = DS_YAMLS[name]
    raw = yaml.safe_load((ACC / f"{name}.yaml").read_text())
    # Accelerate refuses mixed_precision (and other DeepSpeed fields) in the yaml beside a deepspeed_config_file
    assert "mixed_precision" not in raw and set(raw["deepspeed_config"]) <= {
        "deepspeed_config_file",
        "deepspeed_multinode_launcher",
        "zero3_init_flag",
    }
    cfg = load_config_from_file(str(ACC / f"{name}.yaml"))
    assert str(getattr(cfg.distributed_type, "value", cfg.distributed_type)) == "DEEPSPEED"
    ds_file = ROOT / cfg.deepspeed_config["deepspeed_config_file"]
    assert ds_file == DS / f"{json_name}.json"
    assert cfg.deepspeed_config["zero3_init_flag"] is (stage == 3)

    ds = json.loads(ds_file.read_text())
    for key in (
        "train_micro_batch_size_per_gpu",
        "train_batch_size",
        "gradient_accumulation_steps",
        "gradient_clipping",
    ):
        assert ds[key] == "auto", key  # the recipe's values win
    assert ds["fp16"]["enabled"] == "auto" and ds["bf16"]["enabled"] == "auto"
    assert "optimizer" not in ds and "scheduler" not in ds  # the trainer's AdamW and schedule
    zero = ds["zero_optimization"]
    assert zero["stage"] == stage
    if stage == 3:
        assert zero["stage3_gather_16bit_weights_on_model_save"] is True
    offload = json_name.endswith("offload")
    assert (zero.get("offload_optimizer", {}).get("device") == "cpu") is offload
    assert (zero.get("offload_param", {}).get("device") == "cpu") is (offload and stage == 3)

    # exactly what `accelerate launch --config_file <yaml>` hands the training process
    monkeypatch.setenv("ACCELERATE_CONFIG_DS_FIELDS", ",".join(raw["deepspeed_config"]).lower())
    plugin = DeepSpeedPlugin(hf_ds_config=str(ds_file))
    assert plugin.zero_stage == stage and plugin.hf_ds_config.is_zero3() is (stage == 3)

    # DeepSpeed's own validation of the filled-in config (unknown or misspelt ZeRO keys fail here)
    from deepspeed.runtime.config import DeepSpeedConfig

    filled = json.loads(json.dumps(ds).replace('"auto"', "null"))
    filled.update(
        train_micro_batch_size_per_gpu=8, train_batch_size=8, gradient_accumulation_steps=1, gradient_clipping=1.0
    )
    filled["fp16"]["enabled"], filled["bf16"]["enabled"] = True, False
    for k in ("reduce_bucket_size", "stage3_prefetch_bucket_size", "stage3_param_persistence_threshold"):
        if zero.get(k) == "auto":
            filled["zero_optimization"][k] = 768 * 768
    conf = DeepSpeedConfig(filled)  # no process group: world size 1
    assert conf.zero_optimization_stage == stage and conf.train_batch_size == 8
    if stage == 3:
        assert conf.zero_config.gather_16bit_weights_on_model_save


# ------------------------------------------------------------------------------------------
# launch/*: dry runs
# ------------------------------------------------------------------------------------------


def dry_run(script: str, *args: str, env: dict | None = None, ok: bool = True) -> subprocess.CompletedProcess:
    full_env = {**os.environ, "PATH": "/usr/bin:/bin", **(env or {})}  # no nvidia-smi, no scontrol
    proc = subprocess.run(
        ["bash", str(LAUNCH / script), "--dry-run", *args],
        capture_output=True,
        text=True,
        env=full_env,
        cwd=ROOT,
        timeout=60,
    )
    assert (proc.returncode == 0) is ok, proc.stderr
    return proc


def printed(proc: subprocess.CompletedProcess) -> list[list[str]]:
    return [shlex.split(line[2:]) for line in proc.stdout.splitlines() if line.startswith("+ ")]


def accelerate_args(cmd: list[str]):
    """Parse with `accelerate launch`'s own argument parser: every flag must exist."""
    from accelerate.commands.launch import launch_command_parser

    assert cmd[:2] == ["accelerate", "launch"], cmd
    return launch_command_parser().parse_args(cmd[2:])


def test_single_gpu_dry_run():
    (cmd,) = printed(dry_run("single_gpu.sh", "recipes/roberta_lora.py", "--num_train_epochs", "1"))
    a = accelerate_args(cmd)
    assert Path(a.config_file) == ACC / "single_t4_fp16.yaml" and a.mixed_precision == "fp16"
    assert a.training_script == "recipes/roberta_lora.py" and a.training_script_args == ["--num_train_epochs", "1"]


@pytest.mark.parametrize(
    "flags,config",
    [
        ([], "multi_gpu"),
        (["--zero", "1"], "deepspeed_zero1"),
        (["--zero", "2", "--offload"], "deepspeed_zero2_offload"),
        (["--zero", "3"], "deepspeed_zero3"),
    ],
)
def test_multi_gpu_dry_run(flags, config):
    (cmd,) = printed(
        dry_run(
            "multi_gpu.sh",
            "--gpus",
            "4",
            *flags,
            "--mixed_precision",
            "bf16",
            "recipes/roberta_full.py",
            "--lora_r",
            "16",
        )
    )
    a = accelerate_args(cmd)
    assert Path(a.config_file) == ACC / f"{config}.yaml"
    assert (a.num_processes, a.num_machines, a.mixed_precision) == (4, 1, "bf16")
    assert a.training_script_args == ["--lora_r", "16"]


def test_multi_gpu_refuses_what_cannot_work():
    assert "no GPU found" in dry_run("multi_gpu.sh", "recipes/smoke.py", ok=False).stderr
    assert (
        "--offload needs" in dry_run("multi_gpu.sh", "--gpus", "2", "--offload", "recipes/smoke.py", ok=False).stderr
    )
    assert (
        "--zero must be 1, 2 or 3"
        in dry_run("multi_gpu.sh", "--gpus", "2", "--zero", "4", "recipes/smoke.py", ok=False).stderr
    )


def test_slurm_dry_run_per_node_command():
    env = {"SLURM_JOB_NODELIST": "gpu[03-04,07]", "SLURM_NNODES": "3", "SLURM_GPUS_ON_NODE": "4", "SLURM_PROCID": "2"}
    srun, node = printed(
        dry_run("slurm_multinode.sbatch", "--zero", "3", "recipes/roberta_full.py", "--seed", "7", env=env)
    )
    assert srun[:4] == ["srun", "--ntasks-per-node=1", "--ntasks=3", "bash"] and srun[4] == "-c"
    inner = srun[5]
    assert '--machine_rank "$SLURM_PROCID"' in inner  # expanded on each node, not here
    cd, _, rest = inner.partition(" && ")
    assert cd == f"cd {ROOT}"
    assert accelerate_args(shlex.split(rest.replace('"$SLURM_PROCID"', "5"))).machine_rank == 5
    assert node[:3] == ["(node", "2)", "accelerate"]
    a = accelerate_args(node[2:])
    assert Path(a.config_file) == ACC / "deepspeed_zero3.yaml"
    assert (a.num_machines, a.num_processes, a.machine_rank) == (3, 12, 2)
    assert (a.main_process_ip, a.main_process_port, a.rdzv_backend, a.same_network) == ("gpu03", 29500, "c10d", True)
    assert a.training_script_args == ["--seed", "7"]
    # plain DDP across nodes uses multi_node.yaml
    _, node = printed(dry_run("slurm_multinode.sbatch", "recipes/roberta_full.py", env={**env, "SLURM_PROCID": "0"}))
    assert Path(accelerate_args(node[2:]).config_file) == ACC / "multi_node.yaml"


def test_deepspeed_hostfile_dry_run(tmp_path):
    hostfile = tmp_path / "hosts"
    hostfile.write_text("# cluster\nnode-a slots=8\n\nnode-b slots=4  # smaller box\n")
    (cmd,) = printed(
        dry_run("deepspeed_hostfile.sh", "--hostfile", str(hostfile), "--zero", "2", "recipes/roberta_lora.py")
    )
    a = accelerate_args(cmd)
    assert Path(a.config_file) == ACC / "deepspeed_zero2.yaml"
    assert (a.num_machines, a.num_processes, a.main_process_ip) == (2, 12, "node-a")
    assert (a.deepspeed_hostfile, a.deepspeed_multinode_launcher) == (str(hostfile), "pdsh")
    assert (
        "hostfile not found"
        in dry_run("deepspeed_hostfile.sh", "--hostfile", str(tmp_path / "nope"), "recipes/x.py", ok=False).stderr
    )


def test_zero_to_fp32_dry_run():
    convert, finish = printed(dry_run("zero_to_fp32.sh", "run/checkpoints/step-8", "run/fp32"))
    assert convert[1:] == [
        "-m",
        "deepspeed.utils.zero_to_fp32",
        "run/checkpoints/step-8",
        "run/fp32",
        "--safe_serialization",
    ]
    assert finish[1:] == [str(LAUNCH / "zero_to_fp32_finish.py"), "run/checkpoints/step-8", "run/fp32"]


def test_gpu_check_dry_run_falls_back_to_a_tiny_model_and_local_data():
    proc = dry_run("gpu_check.sh", "--steps", "20", "--out", "/tmp/gc")
    assert "no GPU found" in proc.stderr and "synthetic:roberta" in proc.stderr
    cmds = printed(proc)
    assert len(cmds) == 5 and cmds[-1][1:] == [str(LAUNCH / "gpu_check_report.py"), "/tmp/gc"]
    seen = []
    for cmd in cmds[:4]:
        a = accelerate_args(cmd)
        args = a.training_script_args
        value = lambda flag, args=args: args[args.index(flag) + 1]  # noqa: E731
        assert a.mixed_precision == "fp16"
        assert (value("--model_name_or_path"), value("--dataset_name"), value("--max_steps")) == (
            "synthetic:roberta",
            "synthetic:pos",
            "20",
        )
        seen.append((Path(a.config_file).stem, Path(a.training_script).name, Path(value("--output_dir")).name))
    assert seen == [
        ("single_t4_fp16", "roberta_lora.py", "single_fp16-lora"),
        ("deepspeed_zero2", "roberta_lora.py", "zero2_fp16-lora"),
        ("single_t4_fp16", "roberta_full.py", "single_fp16-full"),
        ("deepspeed_zero2", "roberta_full.py", "zero2_fp16-full"),
    ]
    # a local model folder and local files replace the fallbacks
    cmds = printed(
        dry_run(
            "gpu_check.sh",
            "--model",
            "/models/roberta-base",
            "--train_file",
            "t.conllu",
            "--validation_file",
            "d.conllu",
        )
    )
    args = accelerate_args(cmds[0]).training_script_args
    assert args[args.index("--model_name_or_path") + 1] == "/models/roberta-base"
    assert args[args.index("--train_file") + 1] == "t.conllu" and args[args.index("--dataset_name") + 1] == ""


def test_gpu_check_without_gpu_and_without_dry_run_stops():
    proc = subprocess.run(
        ["bash", str(LAUNCH / "gpu_check.sh")],
        capture_output=True,
        text=True,
        env={**os.environ, "PATH": "/usr/bin:/bin"},
        cwd=ROOT,
        timeout=60,
    )
    assert proc.returncode == 2 and "no GPU found" in proc.stderr and proc.stdout == ""


def test_gpu_check_report_from_a_real_run(smoke_run, tmp_path):
    """The one JSON gpu_check writes, built from a real training run folder."""
    import shutil
    import sys

    shutil.copytree(smoke_run, tmp_path / "single_fp16-full")
    (tmp_path / "zero2_fp16-full").mkdir()  # a run that failed before writing results
    sys.path.insert(0, str(LAUNCH))
    try:
        import gpu_check_report
    finally:
        sys.path.pop(0)
    with redirect_stdout(io.StringIO()):
        gpu_check_report.main(tmp_path)
    report = json.loads((tmp_path / "gpu_check.json").read_text())
    res = json.loads((smoke_run / "results.json").read_text())
    (run,) = report["runs"]
    assert report["failed"] == ["zero2_fp16-full"]
    assert run["peak_memory_bytes"] == res["peak_memory_bytes"] > 0 and run["peak_memory_kind"] == "cpu_peak_rss"
    assert run["optimizer_steps"] == res["global_steps"] and run["global_batch"] == 32
    assert run["samples_per_second"] == pytest.approx(res["global_steps"] * 32 / res["train_time_s"])
    assert run["tokens_per_second"] == pytest.approx(res["train_tokens"] / res["train_time_s"])
    history = [json.loads(line) for line in (smoke_run / "history.jsonl").read_text().splitlines()]
    assert run["last_train_loss"] == history[-1]["train_loss"] < run["first_train_loss"] == history[0]["train_loss"]
    assert run["accuracy"] == res["final"]["accuracy"]


# ------------------------------------------------------------------------------------------
# tagtune memory
# ------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def memory_json():
    from tagtune.memory import main

    buf = io.StringIO()
    with redirect_stdout(buf):
        main(["--model", "bert-base-cased", "roberta-base", "--gpus", "1", "2", "8", "--json"])
    return json.loads(buf.getvalue())


def rows_of(memory_json, model, method, gpus):
    (entry,) = [e for e in memory_json if (e["name"], e["method"], e["gpus_per_node"]) == (model, method, gpus)]
    return entry, {r["setup"]: r for r in entry["rows"]}


def test_memory_formula_by_hand(memory_json):
    gib = 1024**3
    # LoRA: the study's counts (108,051,504 distinct parameters, 331,824 trainable). DDP under autocast keeps
    # every weight fp32, the frozen ones too (4 bytes), + 4 of gradient and 8 of AdamW state per trainable one;
    # DeepSpeed fp16 keeps a 2-byte copy of every weight, + 2 of gradient and 12 of optimizer state
    entry, rows = rows_of(memory_json, "bert-base-cased", "lora", 8)
    assert (entry["total"], entry["trainable"]) == (108_051_504, 331_824)
    # (+ 4 per trainable one for DDP's gradient buckets on several processes)
    assert rows["DDP"]["gpu_total_gib"] * gib == pytest.approx(4 * 108_051_504 + 16 * 331_824)
    assert round(rows["DDP"]["gpu_total_gib"], 2) == 0.41
    assert rows["ZeRO-3"]["gpu_total_gib"] * gib == pytest.approx((2 * 108_051_504 + 14 * 331_824) / 8)
    # full fine-tuning: 16 bytes per parameter, partitioned stage by stage
    entry, rows = rows_of(memory_json, "roberta-base", "full", 8)
    psi = entry["total"]
    assert psi == entry["trainable"] and 124_000_000 < psi < 124_700_000
    assert rows["DDP"]["gpu_total_gib"] * gib == pytest.approx(20 * psi)  # 16 + DDP's gradient buckets
    assert rows["ZeRO-1"]["gpu_total_gib"] * gib == pytest.approx(4 * psi + 12 * psi / 8)
    assert rows["ZeRO-2"]["gpu_total_gib"] * gib == pytest.approx(2 * psi + 14 * psi / 8)
    assert rows["ZeRO-3"]["gpu_total_gib"] * gib == pytest.approx(16 * psi / 8)
    assert rows["ZeRO-2 + offload optimizer"]["cpu_total_gib"] * gib == pytest.approx(14 * psi / 8)
    # DeepSpeed's estimator beside it (adds fp32 gradients): 2 + 18/N bytes per parameter under ZeRO-2
    assert rows["ZeRO-2"]["deepspeed_gpu_gib"] * gib == pytest.approx(2 * psi + 18 * psi / 8, rel=1e-6)
    _, one = rows_of(memory_json, "roberta-base", "full", 1)
    assert (
        len({round(one[s]["gpu_total_gib"], 9) for s in ("DDP", "ZeRO-1", "ZeRO-2", "ZeRO-3")}) == 1
    )  # nothing to split on 1 GPU, and no DDP buckets


def test_memory_fp32_deepspeed_rows():
    """DeepSpeed without mixed precision (CPU): 4-byte weights and gradients, the optimizer's own fp32 copy."""
    from tagtune.memory import ModelShape, estimate

    rows = {r.setup: r for r in estimate(ModelShape("m", "lora", 1000, 100, 10), gpus=2, precision="fp32")}
    assert rows["ZeRO-3"].gpu_total_gib * 1024**3 == pytest.approx((4 * 1000 + 4 * 100 + 12 * 100) / 2)
    assert rows["DDP"].gpu_total_gib * 1024**3 == pytest.approx(4 * 1000 + 16 * 100)
    assert rows["ZeRO-2"].deepspeed_gpu_gib is None  # DeepSpeed's estimators assume fp16


def test_readme_memory_table_is_what_the_command_prints():
    from tagtune.memory import main

    buf = io.StringIO()
    with redirect_stdout(buf):
        main(["--summary"])
    table = [line for line in buf.getvalue().splitlines() if line.startswith("|")]
    readme = (ROOT / "README.md").read_text()
    section = readme.split("## Scaling out", 1)[1].split("\n## ", 1)[0]
    assert "tagtune memory --summary" in section
    assert "\n".join(table) in section


def test_memory_bad_input_is_a_clear_error():
    from tagtune.errors import ConfigError
    from tagtune.memory import main

    with pytest.raises(ConfigError, match="--gpus"):
        main(["--gpus", "0"])
    with pytest.raises(ConfigError, match="cannot read the config of 'no/such-model'"):
        main(["--model", "no/such-model", "--gpus", "1"])
