"""tagtune bench: the arithmetic (rates from counts, ratios, CPU floors, MFU and the peak it names) on
hand-made numbers, and the README's `tagtune bench --preset tiny --ablations lora` run here as written
(synthetic model and data, 30 steps per path: tagtune through `accelerate launch`, the grouped and the
default Trainer, each in its own process, LoRA's row, the inference comparison) whose counts match the data
and whose JSON and Markdown agree. Nothing here is timed: speed is what the benchmark itself reports.
About 2 minutes, nearly all of it the worker processes.
"""

from __future__ import annotations

import json

import pytest
from conftest import readme_block, run_readme_block

from tagtune import bench, bench_predict, bench_report, bench_spec
from tagtune.config import TrainConfig
from tagtune.errors import ConfigError

H100 = "NVIDIA H100 80GB HBM3"


def raw(**kw):
    base = dict(
        steps=3,
        train_time_s=2.0,
        train_tokens=800,
        train_words=500,
        train_padded_tokens=1000,
        eval_time_s=4.0,
        eval_words=1000,
        accuracy=0.9,
        params=1000,
        peak_memory_bytes=2**30,
        device="cpu",
        torch_threads=2,
    )
    return {**base, **kw}


def test_rates_count_real_sub_tokens_not_padding():
    r = bench_report.rates(raw())
    assert r["train_tokens_per_s"] == 400 and r["train_words_per_s"] == 250
    assert r["padding_fraction"] == pytest.approx(0.2)
    assert r["eval_words_per_s"] == 250


def test_ratios_and_cpu_floors():
    base = bench_report.rates(raw(train_time_s=2.0, eval_time_s=2.5, accuracy=0.902, peak_memory_bytes=2**31))
    fast = bench_report.ratios(bench_report.rates(raw(train_time_s=1.5, eval_time_s=1.6, accuracy=0.900)), base)
    assert fast["train_tokens_per_s"] == pytest.approx(4 / 3) and fast["eval_words_per_s"] == pytest.approx(1.5625)
    assert fast["accuracy_points"] == pytest.approx(-0.2) and fast["peak_memory_bytes"] == pytest.approx(0.5)
    assert all(bench_report.verdict(fast).values())
    slow = bench_report.verdict(
        bench_report.ratios(
            bench_report.rates(raw(train_time_s=1.6, eval_time_s=1.7, accuracy=0.895, peak_memory_bytes=1.3 * 2**30)),
            base,
        )
    )
    assert list(slow.values()) == [False, False, False, False]  # 1.25x, 1.47x, 0.65x memory, -0.7 points


def test_peak_flops_table_and_mfu():
    assert (
        bench_report.peak_flops(H100, "bf16")[0] == 989e12 and "H100 SXM" in bench_report.peak_flops(H100, "bf16")[1]
    )
    assert bench_report.peak_flops("NVIDIA H100 PCIe", "bf16")[0] == 756e12
    assert bench_report.peak_flops("NVIDIA H200", "bf16")[0] == 989e12
    assert bench_report.peak_flops("NVIDIA A100-SXM4-80GB", "bf16")[0] == 312e12
    assert bench_report.peak_flops("Tesla T4", "fp16")[0] == 65e12
    peak, why = bench_report.peak_flops("Tesla T4", "bf16")
    assert peak is None and "--peak_tflops" in why
    assert bench_report.peak_flops("Some GPU", "bf16", override_tflops=100.0)[0] == 1e14
    assert bench_report.mfu(125_000_000, 400_000, 989e12) == pytest.approx(6 * 125e6 * 4e5 / 989e12)


def test_repeats_alternate_and_report_medians():
    assert bench_predict.alternating_order(list(bench_spec.PATHS), 2) == [
        "baseline",
        "grouped",
        "tagtune",
        "tagtune",
        "grouped",
        "baseline",
    ]
    row = bench_report.combine([bench_report.rates(raw(train_time_s=t)) for t in (1.0, 4.0, 2.0)])
    assert row["train_time_s"] == 2.0 and row["train_tokens_per_s"] == 400 and row["repeats"] == 3
    # the report keeps each round's ratio beside the medians' (the machine's speed drifts between rounds)
    spec = bench_spec.BenchSpec(preset="cpu", model="m", train_file="t", validation_file="v", precision="no")
    runs = {
        "tagtune": [bench_report.rates(raw(train_time_s=t)) for t in (1.0, 1.0, 2.0)],
        "grouped": [bench_report.rates(raw(train_time_s=t)) for t in (1.5, 2.0, 2.0)],
        "baseline": [bench_report.rates(raw(train_time_s=t)) for t in (3.0, 3.0, 3.0)],
    }
    rep = bench_report.assemble(spec, runs, {}, "")
    assert [x["train_tokens_per_s"] for x in rep["round_ratios"]] == pytest.approx([1.5, 2.0, 1.0])
    assert rep["ratios"]["train_tokens_per_s"] == pytest.approx(2.0)  # medians: 1.0 s against 2.0 s
    md = bench_report.markdown(rep)
    assert "within each of the 3 rounds (the paths' i-th runs, minutes apart): training 1.50x, 2.00x, 1.00x;" in md
    assert "rounds" not in bench_report.markdown(
        bench_report.assemble(spec, {k: v[:1] for k, v in runs.items()}, {}, "")
    )


def test_gpu_report_prints_mfu_and_the_peak_it_used():
    spec = bench_spec.BenchSpec(
        preset="gpu", model="cache/roberta-base-shape-v1", dataset_name="synthetic:pos", precision="bf16"
    )
    gpu = dict(device=H100, params=125_000_000, train_time_s=10.0)
    runs = {
        "tagtune": [bench_report.rates(raw(train_tokens=4_000_000, **gpu))],
        "grouped": [bench_report.rates(raw(train_tokens=2_000_000, **gpu))],
        "baseline": [bench_report.rates(raw(train_tokens=1_000_000, **gpu))],
    }
    rep = bench_report.assemble(spec, runs, {}, "tagtune bench --preset gpu")
    expected = 6 * 125e6 * 4e5 / 989e12
    assert rep["mfu"]["tagtune"] == pytest.approx(expected) and rep["mfu"]["baseline"] == pytest.approx(expected / 4)
    assert rep["mfu"]["grouped"] == pytest.approx(expected / 2) and rep["ratios"]["train_tokens_per_s"] == 2.0
    md = bench_report.markdown(rep)
    assert "989 TFLOPS (H100 SXM dense bf16/fp16)" in md and f"{100 * expected:.1f}%" in md and "floors" not in rep


def test_cpu_bf16_report_checks_the_floor_against_the_grouped_trainer_in_fp32():
    spec = bench_spec.BenchSpec(preset="cpu", model="m", train_file="t", validation_file="v", precision="bf16")
    bf16 = dict(precision="bf16", peak_memory_bytes=2**30)
    runs = {
        "tagtune": [bench_report.rates(raw(train_time_s=1.0, accuracy=0.900, **bf16))],
        "grouped": [bench_report.rates(raw(train_time_s=1.1, **bf16))],
        "baseline": [bench_report.rates(raw(train_time_s=2.0, **bf16))],
    }
    fp32 = bench_report.rates(raw(train_time_s=1.9, accuracy=0.902, precision="no"))
    rep = bench_report.assemble(spec, runs, {}, "tagtune bench --preset cpu", fp32_ref=fp32)
    assert rep["ratios_fp32"]["train_tokens_per_s"] == pytest.approx(1.9)
    assert rep["floors"]["bf16 train_tokens_per_s >= 1.8x grouped fp32"] is True
    assert rep["floors"]["bf16 accuracy within 0.3 points of grouped fp32"] is True  # -0.2 points
    assert rep["floors"]["train_tokens_per_s >= 1.3x"] is False  # 1.1x against the grouped Trainer in bf16
    md = bench_report.markdown(rep)
    assert "| tagtune bf16 / Trainer fp32 | | **1.90x** |" in md and "-0.20 points" in md
    assert "Every floor met in this run (predict not run): no (3 not met)" in md  # training, evaluation, memory
    # a bf16 bench's report ends with both inference comparisons, float32 first, and their floors join the rest
    rep.update(predict=_predict_row("float32"), predict_half={**_predict_row("bfloat16"), "met": False})
    for key in ("predict", "predict_half"):
        bench_report.add_predict_floor(rep, key)
    assert rep["floors"]["predict float32 >= 3x the faster pipeline, tags identical"] is True
    assert rep["floors"]["predict bfloat16 >= 3x the faster pipeline, tags agreeing"] is False
    md = bench_report.markdown(rep)
    assert -1 < md.index("Inference in float32") < md.index("Inference in bfloat16") < md.index("CPU floors")
    assert "predict float32 >= 3x the faster pipeline, tags identical: met;" in md
    assert md.rstrip().splitlines()[-3] == "Every floor met in this run: no (4 not met)"
    for floor in rep["floors"]:  # a run that meets every floor says so
        rep["floors"][floor] = True
    assert "Every floor met in this run: yes" in bench_report.markdown(rep)
    slow = bench_report.assemble(
        spec, runs, {}, "", fp32_ref=bench_report.rates(raw(train_time_s=1.7, precision="no"))
    )
    assert slow["floors"]["bf16 train_tokens_per_s >= 1.8x grouped fp32"] is False  # 1.7x
    # without an fp32 reference (fp32 runs) there is no such floor
    assert "grouped_fp32" not in bench_report.assemble(spec, runs, {}, "")


def test_auto_precision_on_cpu(monkeypatch):
    """auto: bf16 for the cpu preset where the CPU computes bf16 natively, else fp32; tiny always fp32."""
    import torch

    from tagtune import runtime

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)  # the CPU rule, on any machine
    for native, preset, expected in [
        (True, "cpu", "bf16"),
        (False, "cpu", "no"),
        (True, "tiny", "no"),
    ]:
        monkeypatch.setattr(runtime, "cpu_bf16_supported", lambda native=native: native)
        assert bench_spec.device_precision(preset) == ("cpu", expected)


def test_bad_data_dir_and_gpu_preset_without_gpu(tmp_path):
    with pytest.raises(ConfigError) as err:
        bench_spec.ewt_files(str(tmp_path))
    assert "en_ewt-ud-train.conllu" in str(err.value) and "--data_dir" in str(err.value)
    import torch

    if not torch.cuda.is_available():
        with pytest.raises(ConfigError, match="needs a CUDA device"):
            bench.main(["--preset", "gpu", "--dataset", "synthetic:pos", "--out", str(tmp_path / "x")])
        assert not (tmp_path / "x").exists()


def test_tiny_preset_through_the_cli_runs_all_three_paths(tmp_path, synthetic_bert):
    """`tagtune bench --preset tiny` as the README shows it (that block runs here, as written): tagtune through
    accelerate launch, both Trainer paths, LoRA's row, and the inference comparison."""
    import os

    from tagtune.features import LengthGroupedBatchSampler, build_features, load_tokenizer
    from tagtune.synthetic import generate_splits

    line, source = readme_block("tagtune bench --preset tiny")
    run_readme_block(line, source, tmp_path, timeout=900)
    out = tmp_path / "outputs" / "bench-tiny"
    steps, eval_sents = bench_spec.PRESETS["tiny"]["max_steps"], bench_spec.PRESETS["tiny"]["max_eval_samples"]
    js = json.loads((out / "bench.json").read_text())
    md = (out / "bench.md").read_text()
    assert js["spec"]["model"] == "synthetic:bert" and js["spec"]["dataset_name"] == "synthetic:pos"

    splits = generate_splits("pos")
    eval_words = sum(len(w) for w, _ in splits["validation"][:eval_sents])
    dirs = {"baseline": "00-baseline", "grouped": "01-grouped", "tagtune": "02-tagtune"}  # c b a
    for path in bench_spec.PATHS:
        r = js[path]
        assert r["steps"] == steps and r["eval_words"] == eval_words, (path, r)
        assert 0 < r["train_words"] < r["train_tokens"] <= r["train_padded_tokens"]  # [CLS]/[SEP]: real, unscored
        assert 0.0 <= r["accuracy"] <= 1.0 and r["peak_memory_bytes"] > 100 * 2**20
        assert r["precision"] == "no" and (out / dirs[path] / "log.txt").is_file()  # its own process
    # tagtune ran under `accelerate launch` (its launcher line is in the log, its results.json was read),
    # which would have set 1 thread: tagtune's runtime gives it the cores, the Trainer has torch's default
    launched = (out / dirs["tagtune"] / "train_config.json").is_file() and (out / dirs["tagtune"] / "run").is_dir()
    assert launched and js["tagtune"]["torch_threads"] == len(os.sched_getaffinity(0))
    assert js["grouped"]["train_sampling_strategy"] == "group_by_length"
    assert js["baseline"]["train_sampling_strategy"] == "random"
    assert "| torch threads | " + str(js["tagtune"]["torch_threads"]) in md and "| precision | no | no | no |" in md

    # tagtune's words are exactly those of the sentences its first `steps` length-grouped batches hold
    train = splits["train"]
    feats = build_features([w for w, _ in train], None, load_tokenizer(synthetic_bert))
    defaults = TrainConfig.__dataclass_fields__  # as tagtune ran, by default
    pools, runs = defaults["length_group_batches"].default, defaults["length_run_batches"].default
    batches = list(LengthGroupedBatchSampler(feats.lengths, 16, seed=js["spec"]["seed"], mega=pools, run=runs))
    batches = batches[:steps]
    assert js["tagtune"]["train_words"] == sum(len(train[i][0]) for b in batches for i in b)
    assert js["tagtune"]["train_tokens"] == sum(feats.lengths[i] for b in batches for i in b)
    # length grouping: less padding than the default Trainer's random batches
    assert js["grouped"]["padding_fraction"] < js["baseline"]["padding_fraction"]
    assert js["tagtune"]["padding_fraction"] < js["baseline"]["padding_fraction"]

    for key, against in (("ratios", "grouped"), ("ratios_default", "baseline")):
        ratio = js["tagtune"]["train_tokens_per_s"] / js[against]["train_tokens_per_s"]
        assert js[key]["train_tokens_per_s"] == pytest.approx(ratio)
        assert f"{ratio:.2f}x" in md
    assert f"| training sub-tokens/s (real, no padding) | {js['tagtune']['train_tokens_per_s']:,.0f} |" in md
    assert "floors" not in js  # floors are for the cpu preset on real data

    # the LoRA row: the same batches as full fine-tuning, with far fewer trainable parameters
    lora = js["ablations"]["lora"]
    assert lora["steps"] == steps and lora["train_tokens"] == js["tagtune"]["train_tokens"]
    assert "| LoRA instead of full fine-tuning" in md
    # inference: the saved model tagged the same validation sentences through tagtune predict and the pipeline
    pred = js["predict"]
    assert pred["sentences"] == eval_sents and pred["words"] == eval_words
    assert pred["identical_tags"] is True and pred["mismatched"] == []
    assert set(pred["words_per_s"]) == {"tagtune predict", "pipeline, batch_size=1", "pipeline, batch_size=32"}
    best = max(v for k, v in pred["words_per_s"].items() if k.startswith("pipeline"))
    assert pred["ratio"] == pytest.approx(pred["words_per_s"]["tagtune predict"] / best)
    assert f"{pred['ratio']:.2f}x, floor 3x" in md
    assert pred["dtype"] == "float32" and pred["agreement"] == 1.0 and "predict_half" not in js  # fp32 bench
    assert pred["pipeline_dtype"] == "torch.float32"

    # a bf16 bench also compares in bf16, both tools in that dtype (its floor: tags agreeing on >= 99.9%);
    # on 40 sentences of a 3-step synthetic model the agreement itself is only checked to be high
    run_dir = next(p for p in sorted(out.glob("*-tagtune")) if (p / "run" / "model").is_dir()) / "run"
    sentences = [json.loads(x)["words"] for x in (run_dir / "eval_predictions.jsonl").read_text().splitlines()]
    half = bench_predict.compare(run_dir / "model", sentences, tmp_path / "half", 32, dict(os.environ), "bfloat16")
    assert half["dtype"] == "bfloat16" and half["pipeline_dtype"] == "torch.bfloat16" and half["words"] == eval_words
    assert set(half["words_per_s"]) == set(pred["words_per_s"])
    assert 0.9 <= half["agreement"] <= 1.0 and 0.9 <= half["pipeline_self_agreement"] <= 1.0
    assert half["met"] == (half["ratio"] >= 3.0 and half["agreement"] >= 0.999)
    text = bench_predict.markdown(half)
    assert "Inference in bfloat16" in text and f"on {100 * half['agreement']:.2f}% of the words" in text
    assert bench._predict_dtypes("bf16") == {"predict": "float32", "predict_half": "bfloat16"}
    assert bench._predict_dtypes("no") == {"predict": "float32"}


def test_agreement_counts_words_tagged_alike():
    assert bench_predict.agreement([["A", "B"], ["C"]], [["A", "X"], ["C"]]) == pytest.approx(2 / 3)
    assert bench_predict.agreement([], []) == 0.0
    with pytest.raises(ValueError):  # a word the other tagging lacks is an error, not a skipped word
        bench_predict.agreement([["A", "B"]], [["A"]])


@pytest.mark.parametrize(
    "dtype, pipeline_tags, rate, met",
    [
        ("float32", [["A", "B"], ["C"]], 100.0, True),  # 3x, identical
        ("float32", [["A", "X"], ["C"]], 100.0, False),  # 3x, one tag differs: fp32 wants every tag
        ("float32", [["A", "B"], ["C"]], 101.0, False),  # identical, under 3x
        ("bfloat16", [["A", "X"], ["C"]], 100.0, False),  # 3x, 66.7% agreement < 99.9%
        ("bfloat16", [["A", "B"], ["C"]], 100.0, True),
    ],
)
def test_predict_floor_needs_the_ratio_and_the_tags(monkeypatch, tmp_path, dtype, pipeline_tags, rate, met):
    tagtune_tags = [["A", "B"], ["C"]]
    monkeypatch.setattr(bench_predict, "run_tagtune", lambda *a: {"seconds": 1.0, "words": 300, "tags": tagtune_tags})

    def pipeline(model_dir, input_file, workdir, batch, dt, env):
        assert dt == dtype  # the pipeline runs in the compared dtype
        return {"seconds": 300.0 / rate, "words": 300, "tags": pipeline_tags, "dtype": f"torch.{dt}"}

    monkeypatch.setattr(bench_predict, "run_pipeline", pipeline)
    res = bench_predict.compare(tmp_path, [["w", "x"], ["y"]], tmp_path / "p", 32, {}, dtype)
    assert res["met"] is met and res["ratio"] == pytest.approx(300.0 / rate)
    assert res["pipeline_self_agreement"] == 1.0  # batch sizes 1 and 32: both rows
    text = bench_predict.markdown(res)
    assert ("floor 3x: met." if met else "floor 3x: NOT met.") in text
    assert res["rounds"] == 1 and "rounds" not in text  # one run per path: no per-round line
    single = bench_predict.compare(tmp_path, [["w", "x"], ["y"]], tmp_path / "q", 1, {}, dtype)
    assert single["pipeline_self_agreement"] is None and "two batch sizes" not in bench_predict.markdown(single)


def test_predict_rounds_alternate_and_rates_are_medians(monkeypatch, tmp_path):
    """--repeats N runs each predict path N times, alternating the order; rates are medians, the ratio of
    each round is reported, and a round whose tags differ is a mismatch."""
    calls: list[str] = []
    seconds = {"t": iter([1.0, 3.0, 1.5]), 1: iter([10.0, 12.0, 8.0]), 32: iter([4.0, 6.0, 5.0])}

    def tagtune(*a):
        calls.append("t")
        return {"seconds": next(seconds["t"]), "words": 300, "tags": [["A", "B"], ["C"]]}

    def pipeline(model_dir, input_file, workdir, batch, dt, env):
        calls.append(batch)
        tags = [["A", "X"], ["C"]] if batch == 32 and len(calls) > 6 else [["A", "B"], ["C"]]  # third round
        return {"seconds": next(seconds[batch]), "words": 300, "tags": tags, "dtype": f"torch.{dt}"}

    monkeypatch.setattr(bench_predict, "run_tagtune", tagtune)
    monkeypatch.setattr(bench_predict, "run_pipeline", pipeline)
    res = bench_predict.compare(tmp_path, [["w", "x"], ["y"]], tmp_path / "p", 32, {}, "float32", rounds=3)
    assert calls == [32, 1, "t", "t", 1, 32, 32, 1, "t"]  # c b a, a b c, c b a
    assert res["words_per_s"] == {
        "tagtune predict": pytest.approx(200.0),  # median of 300, 100, 200 words/s
        "pipeline, batch_size=1": pytest.approx(30.0),
        "pipeline, batch_size=32": pytest.approx(60.0),
    }
    assert res["ratio"] == pytest.approx(200.0 / 60.0)
    assert res["round_ratios"] == pytest.approx([300 / 75, 100 / 50, 200 / 60])
    assert [r["pipeline, batch_size=1"] for r in res["round_words_per_s"]] == pytest.approx([30.0, 25.0, 37.5])
    assert res["mismatched"] == ["pipeline, batch_size=32"] and res["met"] is False  # round 3's tags differ
    text = bench_predict.markdown(res)
    assert "medians of 3 rounds" in text and "4.00x, 2.00x, 3.33x" in text


def _predict_row(dtype: str) -> dict:
    row = {"words_per_s": {"tagtune predict": 3.0, "pipeline, batch_size=1": 1.0}, "words": 3, "sentences": 1}
    row.update(best_pipeline="pipeline, batch_size=1", ratio=3.0, floor=3.0, met=True, identical_tags=True)
    return {**row, "dtype": dtype, "agreement": 1.0, "pipeline_self_agreement": None}


def test_inference_tables_name_their_dtype():
    text = "\n".join(bench_predict.markdown(_predict_row(d)) for d in ("float32", "bfloat16"))
    assert "Inference in float32" in text and "Inference in bfloat16" in text
    assert bench._predict_dtypes("no") == {"predict": "float32"}  # CPU fp16 trains as fp32 ("no")


def test_first_subtoken_tags_maps_the_pipelines_sub_tokens_to_words():
    from tagtune.bench_predict import first_subtoken_tags

    entities = [{"index": i, "entity": t} for i, t in enumerate(["X", "DT", "NN", "NN-cont", "VBD", "Y"])]
    # [CLS] the cat ##s ran [SEP]: word 1 has two sub-tokens; the second's label is not the word's
    assert first_subtoken_tags(entities, [None, 0, 1, 1, 2, None]) == ["DT", "NN", "VBD"]


def test_openmp_wait_policy_is_the_users_unless_asked(monkeypatch):
    """Workers run with the environment's OMP_WAIT_POLICY (as users run); --omp_wait_policy sets it."""
    monkeypatch.delenv("OMP_WAIT_POLICY", raising=False)
    assert "OMP_WAIT_POLICY" not in bench_spec.worker_env()
    assert bench_spec.worker_env("passive")["OMP_WAIT_POLICY"] == "PASSIVE"
    monkeypatch.setenv("OMP_WAIT_POLICY", "ACTIVE")
    assert bench_spec.worker_env()["OMP_WAIT_POLICY"] == "ACTIVE"
    args = bench.parse_args(["--preset", "tiny", "--omp_wait_policy", "passive"])
    assert bench_spec.build_spec(args).omp_wait_policy == "passive"


@pytest.mark.parametrize("name", sorted(bench_spec.ABLATIONS))
def test_every_ablation_is_a_valid_config_that_switches_one_thing(name, tmp_path):
    spec = bench_spec.build_spec(bench.parse_args(["--preset", "tiny"]))
    overrides, label = bench_spec.ABLATIONS[name]
    cfg, base = bench_spec.train_config(spec, tmp_path, **overrides), bench_spec.train_config(spec, tmp_path)
    changed = {k for k in overrides if getattr(cfg, k) != getattr(base, k)}
    assert changed == set(overrides) and len(overrides) == 1 and label


def test_every_path_starts_from_the_kernel_cache_defaults(monkeypatch):
    """The Trainer paths and the no_kernel_cache_bound row run with oneDNN's and ideep's defaults, whatever
    this process has set; tagtune's own paths bound the caches themselves."""
    from tagtune.onednn_cache import VARIABLES

    for name in VARIABLES:
        monkeypatch.setenv(name, "1")
    env = bench_spec.worker_env()
    assert [name for name in VARIABLES if name in env] == []
