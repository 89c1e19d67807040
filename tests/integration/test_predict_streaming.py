"""`tagtune predict` streams its input in chunks and can shard them over several processes:

- the output is the same, byte for byte, whatever the chunk size (JSONL, CoNLL-U and raw text);
- errors in a later chunk name the right line of the file, and an existing output file is left as it was;
- stdout receives each chunk as soon as it is tagged (a reader sees the first sentences before the end);
- 2 processes (`torchrun` and `accelerate launch -m tagtune.cli predict`) each tag half of the chunks and
  write one output in input order, identical to one process's, with no part file left behind.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import ROOT, free_port, run_cmd, subprocess_env

from tagtune import cli
from tagtune.errors import ConfigError
from tagtune.predict_io import open_input
from tagtune.predict_stream import ChunkSink, Shard


@pytest.fixture(scope="module")
def corpus(smoke_run, tmp_path_factory) -> dict[str, Path]:
    """The smoke run's validation sentences, twice over (about 300 sentences), as JSONL, CoNLL-U and text."""
    rows = [json.loads(line) for line in (smoke_run / "eval_predictions.jsonl").read_text().splitlines()]
    words = [r["words"] for r in rows] * 2
    d = tmp_path_factory.mktemp("stream_in")
    (d / "in.jsonl").write_text("".join(json.dumps({"id": i, "words": w}) + "\n" for i, w in enumerate(words)))
    conllu = "".join("".join(f"{j + 1}\t{t}\t_\t_\t_\t_\t_\t_\t_\t_\n" for j, t in enumerate(w)) + "\n" for w in words)
    (d / "in.conllu").write_text(conllu)
    (d / "in.txt").write_text("".join(" ".join(w) + "\n" for w in words))
    return {"jsonl": d / "in.jsonl", "conllu": d / "in.conllu", "txt": d / "in.txt"}


def predict(model: Path, src: Path, out: Path, *extra: str) -> Path:
    assert cli.main(["predict", "--model", str(model), "--input", str(src), "--output", str(out), *extra]) == 0
    return out


@pytest.mark.parametrize("kind,chunk", [("jsonl", 5), ("conllu", 50), ("txt", 5)])  # ~60 chunks each
def test_output_is_the_same_whatever_the_chunk_size(kind, chunk, smoke_run, corpus, tmp_path):
    src = corpus[kind]
    suffix = ".conll" if kind == "conllu" else ".jsonl"
    whole = predict(smoke_run, src, tmp_path / f"whole{suffix}", "--chunk_lines", "1000000")
    small = predict(smoke_run, src, tmp_path / f"small{suffix}", "--chunk_lines", str(chunk), "--scores")
    assert sum(1 for _ in open_input(str(src), chunk_lines=chunk).chunks) > 50  # really many chunks
    strip = [line.rsplit("\t", 1)[0] if "\t" in line else line for line in small.read_text().splitlines()]
    if kind == "conllu":  # CoNLL output: word, tag, score columns
        assert strip == whole.read_text().splitlines()
    else:
        got = [{k: v for k, v in json.loads(x).items() if k != "scores"} for x in small.read_text().splitlines()]
        assert got == [json.loads(x) for x in whole.read_text().splitlines()]
        assert all("scores" in json.loads(x) for x in small.read_text().splitlines())  # --scores reached it
    if kind == "jsonl":
        ids = [json.loads(line)["id"] for line in whole.read_text().splitlines()]
        assert ids == list(range(len(ids))) and len(ids) > 250  # input order kept


def test_conll_chunks_end_at_sentence_boundaries(corpus):
    """Chunks of 5 lines or more, each ending after a blank line: no sentence is cut in two."""
    whole = open_input(str(corpus["conllu"]), chunk_lines=10**9)
    want = [s.words for text, first in whole.chunks for s in whole.parse(text, first)]
    stream = open_input(str(corpus["conllu"]), chunk_lines=5)
    chunks = list(stream.chunks)
    assert len(chunks) > 250 and all(text.endswith("\n\n") for text, _ in chunks)
    got = [s.words for text, first in chunks for s in stream.parse(text, first)]
    assert got == want
    where = [s.where for text, first in chunks for s in stream.parse(text, first)]
    assert where == [
        s.where
        for text, first in open_input(str(corpus["conllu"]), chunk_lines=10**9).chunks
        for s in whole.parse(text, first)
    ]  # same file:line for every sentence


def test_errors_in_later_chunks_are_located_and_nothing_is_overwritten(smoke_run, corpus, tmp_path, capsys):
    lines = corpus["jsonl"].read_text().splitlines()
    lines[200] = '{"words": ["ok", ""]}'  # line 201: an empty word
    bad = tmp_path / "bad.jsonl"
    bad.write_text("\n".join(lines) + "\n")
    out = tmp_path / "out.jsonl"
    out.write_text("previous results\n")
    args = ["predict", "--model", str(smoke_run), "--input", str(bad), "--output", str(out), "--chunk_lines", "50"]
    assert cli.main(args) == 2
    assert f"{bad}:201" in capsys.readouterr().err
    assert out.read_text() == "previous results\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.jsonl", "out.jsonl"]  # no temporary file left
    raw = bytearray(corpus["jsonl"].read_bytes())
    at = raw.index(b"\n", len(raw) // 2) + 3  # inside a line in the second half
    raw[at] = 0xFF
    latin = tmp_path / "latin.jsonl"
    latin.write_bytes(bytes(raw))
    line = bytes(raw[:at]).count(b"\n") + 1
    args[4] = str(latin)
    assert cli.main(args) == 2
    err = capsys.readouterr().err
    assert f"{latin}:{line}" in err and "invalid UTF-8" in err, err
    assert out.read_text() == "previous results\n"


def test_stdout_gets_each_chunk_as_it_is_tagged(smoke_run, corpus, tmp_path):
    """A reader of the pipe sees the first sentences while the rest of the input has not even been sent."""
    cmd = [sys.executable, "-m", "tagtune.cli", "predict", "--model", str(smoke_run), "--input", "-"]
    cmd += ["--input_format", "jsonl", "--chunk_lines", "20"]
    with open(tmp_path / "stderr", "w") as err:
        proc = subprocess.Popen(  # unbuffered: communicate() below reads the pipe itself, not a Python buffer
            cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=err, env=subprocess_env(), cwd=ROOT, bufsize=0
        )
        lines = corpus["jsonl"].read_text().splitlines(keepends=True)
        proc.stdin.write("".join(lines[:60]).encode())  # 3 chunks, and stdin stays open
        proc.stdin.flush()
        first = proc.stdout.readline()  # returns once the first chunk is out
        assert first, (tmp_path / "stderr").read_text()[-2000:]
        rest, _ = proc.communicate("".join(lines[60:]).encode(), timeout=300)
    assert proc.returncode == 0, (tmp_path / "stderr").read_text()[-2000:]
    ids = [json.loads(x)["id"] for x in [first, *rest.splitlines()]]
    assert ids == list(range(len(lines)))


@pytest.mark.parametrize("launcher", ["torchrun", "accelerate"])
def test_two_processes_share_the_chunks_and_write_one_output_in_order(launcher, smoke_run, corpus, tmp_path):
    single = predict(smoke_run, corpus["jsonl"], tmp_path / "single.jsonl", "--chunk_lines", "1000000")
    out = tmp_path / "out" / "two.jsonl"
    if launcher == "torchrun":
        launch = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2"]
        launch += ["--master_port", str(free_port())]
    else:
        launch = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2"]
        launch += ["--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no"]
        launch += ["--main_process_port", str(free_port()), "-m"]
    args = ["tagtune.cli", "predict", "--model", str(smoke_run), "--input", str(corpus["jsonl"])]
    args += ["--output", str(out), "--chunk_lines", "25"]
    report = tmp_path / "threads.jsonl"
    proc = run_cmd(launch + (["-m"] if launcher == "torchrun" else []) + args, TAGTUNE_THREADS_REPORT=str(report))
    err = proc.stderr
    counts = {}
    for rank in (0, 1):
        line = next(x for x in err.splitlines() if f"rank {rank}:" in x)
        counts[rank] = int(line.split(":")[-1].split()[0])
    n_chunks = sum(1 for _ in open_input(str(corpus["jsonl"]), chunk_lines=25).chunks)
    assert counts[0] + counts[1] == n_chunks and abs(counts[0] - counts[1]) <= 1, counts  # each did its half
    assert "2 process(es)" in err
    assert out.read_text() == single.read_text()
    assert [p.name for p in out.parent.iterdir()] == ["two.jsonl"]  # no part file left
    ranks = [json.loads(line) for line in report.read_text().splitlines()]  # a clean exit: group really gone
    assert sorted(r["rank"] for r in ranks) == [0, 1] and all(r["after"] == [] for r in ranks), ranks
    assert all("pt_gloo_runloop" in r["before"] for r in ranks), ranks


def test_a_json_document_is_one_chunk_and_several_processes_need_an_output_file(corpus, tmp_path):
    doc = tmp_path / "doc.json"
    doc.write_text(json.dumps([json.loads(line) for line in corpus["jsonl"].read_text().splitlines()]))
    stream = open_input(str(doc), chunk_lines=1)
    chunks = list(stream.chunks)
    assert len(chunks) == 1 and len(stream.parse(*chunks[0])) > 250  # an array cannot be parsed piecewise
    with pytest.raises(ConfigError, match="several processes cannot share stdout"):
        with ChunkSink("-", Shard(world_size=2, rank=0)).open():
            pass
