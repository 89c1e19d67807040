"""The README's Architecture section, checked against the source: every module of the package is in its
table and every module in the table exists; recipes import only `tagtune`; the pure modules ("metrics know
nothing of processes") import neither torch nor accelerate nor the process modules; and the bench's
modules import one way (spec <- trainer and report <- bench), so each can be read on its own."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest
from conftest import ROOT

PACKAGE = ROOT / "src" / "tagtune"
README = (ROOT / "README.md").read_text(encoding="utf-8")


def architecture_section() -> str:
    start = README.index("\n## Architecture\n")
    return README[start : README.index("\n## ", start + 1)]


def imported_modules(path: Path) -> set[str]:
    """Every module a file imports, anywhere in it (functions too), relative imports as `.name`."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = "." * node.level + (node.module or "")
            names.add(base)
            if node.level and not node.module:  # from . import x
                names.update("." + a.name for a in node.names)
    return names


def test_every_module_is_in_the_architecture_table_and_every_row_exists():
    listed = set(re.findall(r"^\| `tagtune/(\w+)\.py` \|", architecture_section(), flags=re.M))
    modules = {p.stem for p in PACKAGE.glob("*.py")} - {"__init__"}
    assert modules - listed == set(), f"modules missing from README's Architecture table: {modules - listed}"
    assert listed - modules == set(), (
        f"README's Architecture table lists modules that do not exist: {listed - modules}"
    )


def test_recipes_import_only_tagtune():
    for recipe in sorted((ROOT / "recipes").glob("*.py")):
        outside = {m for m in imported_modules(recipe) if m.split(".")[0] not in ("tagtune", "dataclasses", "typing")}
        outside -= {"__future__", "pathlib"}
        assert not outside, f"{recipe.name} imports {outside}: a recipe is a config subclass and tagtune.main"


@pytest.mark.parametrize("name", ["metrics", "significance", "decoding", "schemes", "bench_report"])
def test_pure_modules_know_nothing_of_processes(name):
    imports = imported_modules(PACKAGE / f"{name}.py")
    process = {m for m in imports if m.split(".")[0] in ("accelerate", "deepspeed", "torch")}
    process |= imports & {".runtime", ".train", ".checkpoint", ".tracking", ".evaluation"}
    if name == "bench_report":  # records the versions it ran with, nothing more
        process -= {"accelerate", "torch"}
    assert not process, f"{name}.py imports {process}"


def test_bench_modules_import_one_way():
    spec, trainer, report = (imported_modules(PACKAGE / f"bench_{m}.py") for m in ("spec", "trainer", "report"))
    assert not spec & {".bench", ".bench_trainer", ".bench_report"}, spec
    assert not trainer & {".bench", ".bench_report"}, trainer
    assert not report & {".bench", ".bench_trainer"}, report
    assert ".bench_spec" in trainer and ".bench_spec" in report


# what a function may not take untyped or typed `Any`: the config, the Accelerator, a settings namespace
TYPED_NAMES = {"cfg", "config", "accelerator", "acc", "settings"}


def test_no_function_takes_the_config_or_the_accelerator_as_any():
    untyped = []
    for path in sorted(PACKAGE.glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                continue
            for arg in node.args.posonlyargs + node.args.args + node.args.kwonlyargs:
                annotation = ast.unparse(arg.annotation) if arg.annotation else None
                if arg.arg in TYPED_NAMES and annotation in (None, "Any"):
                    untyped.append(f"{path.name}:{node.lineno} {node.name}({arg.arg}: {annotation})")
    assert not untyped, f"take the fields a helper reads, or type it (TrainConfig, Accelerator): {untyped}"


def test_the_stage_entries_type_the_config():
    entries = {"data.py": "load_corpus", "modeling.py": "build_model", "tracking.py": "init"}
    for module, name in entries.items():
        tree = ast.parse((PACKAGE / module).read_text(encoding="utf-8"))
        (fn,) = [n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == name]
        annotations = {a.arg: ast.unparse(a.annotation) for a in fn.args.args if a.annotation}
        assert annotations.get("cfg") == "TrainConfig", f"{module} {name}: {annotations}"
