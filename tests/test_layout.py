"""The code's structural rules, checked on the source: dependencies point one way, functions fit
on a screen, and the code names protocols, not documents the repository does not have."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SOURCE_DIRS = ("vidact", "pipelines", "tools")
MAX_FUNCTION_LINES = 60


def source_files() -> list[Path]:
    return sorted(p for d in SOURCE_DIRS for p in (REPO / d).rglob("*.py"))


def project_imports(path: Path, top_level_only: bool = False) -> set[str]:
    """Modules of vidact/pipelines that `path` imports (relative imports resolved)."""
    tree = ast.parse(path.read_text())
    nodes = tree.body if top_level_only else ast.walk(tree)
    found = set()
    for node in nodes:
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
            found.update(f"{node.module}.{a.name}" for a in node.names)
    return {m for m in found if m.split(".")[0] in ("vidact", "pipelines")}


def lazy_project_imports(path: Path) -> set[str]:
    return project_imports(path) - project_imports(path, top_level_only=True)


def test_graphs_import_only_the_pure_modules():
    for path in (REPO / "pipelines").rglob("*.py"):
        for module in project_imports(path):
            assert module.startswith(("vidact.clip", "vidact.shards", "pipelines")), f"{path}: imports {module}"


def test_pure_modules_import_no_loader_model_or_training():
    for path in (REPO / "vidact" / "clip").rglob("*.py"):
        for module in project_imports(path):
            assert module.startswith("vidact.clip"), f"{path}: imports {module}"


def imports_module(path: Path, module: str) -> bool:
    return any(m == module or m.startswith(module + ".") for m in project_imports(path))


def test_only_the_training_command_imports_train():
    for path in source_files():
        if path == REPO / "vidact" / "train.py":
            continue
        assert not imports_module(path, "vidact.train"), path


def test_only_the_training_command_imports_the_trainer():
    for path in source_files():
        if path == REPO / "vidact" / "train.py":
            continue
        assert not imports_module(path, "vidact.trainer"), path


def test_the_epoch_loop_sits_below_loaders_and_checkpoints():
    """The engine is called by the trainer, the bench and inference; it calls none of them, and
    the run state it advances is the checkpoint's (duck-typed), not imported."""
    engine = REPO / "vidact" / "engine.py"
    for module in ("vidact.data", "vidact.checkpoint", "vidact.trainer", "vidact.train", "vidact.inference"):
        assert not imports_module(engine, module), f"engine.py imports {module}"
    assert not imports_module(REPO / "vidact" / "checkpoint.py", "vidact.engine")


def test_reading_a_checkpoint_imports_no_loader():
    code = ("import sys, vidact.checkpoint; "
            "print(sorted(m for m in sys.modules if m.startswith(('nvidia', 'vidact.data'))))")
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]", out


def test_evaluate_and_predict_are_peers_over_the_inference_core():
    evaluate, predict = REPO / "vidact" / "evaluate.py", REPO / "vidact" / "predict.py"
    assert not imports_module(evaluate, "vidact.predict") and not imports_module(predict, "vidact.evaluate")
    assert imports_module(evaluate, "vidact.inference") and imports_module(predict, "vidact.inference")
    for path in source_files():
        if path not in (evaluate, predict):
            assert not imports_module(path, "vidact.evaluate") and not imports_module(path, "vidact.predict"), path


def test_inference_and_benchmark_do_not_import_recipes():
    paths = [REPO / "vidact" / f for f in ("evaluate.py", "predict.py", "engine.py", "inference.py")]
    paths += [p for p in source_files() if "bench" in p.name or "bench" in p.parent.name]
    for path in paths:
        assert "vidact.recipes" not in project_imports(path), path


def test_no_import_loop_hidden_by_a_lazy_import():
    for path in source_files():
        assert not lazy_project_imports(path), f"{path}: function-level imports {lazy_project_imports(path)}"


@pytest.mark.parametrize("path", source_files(), ids=lambda p: str(p.relative_to(REPO)))
def test_functions_fit_on_a_screen(path):
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            lines = node.end_lineno - node.lineno + 1
            assert lines <= MAX_FUNCTION_LINES, f"{path}:{node.lineno} {node.name} is {lines} lines"


def test_no_references_to_documents_outside_the_repository():
    for path in [*source_files(), REPO / "pyproject.toml"]:
        text = path.read_text().lower()
        for word in ("seed 00", "../facts", "spec §"):
            assert word not in text, f"{path} mentions {word!r}"
