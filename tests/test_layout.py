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
MAX_MODULE_LINES = 500


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


def module_file(module: str) -> Path | None:
    """The source file of a project module (``a.b`` -> ``a/b.py`` or ``a/b/__init__.py``), or
    None for a name that is not a module (``from vidact.shards import ShardSet`` gives both)."""
    base = REPO.joinpath(*module.split("."))
    for path in (base.with_suffix(".py"), base / "__init__.py"):
        if path.is_file():
            return path
    return None


def import_chains(path: Path) -> dict[str, list[str]]:
    """Every project module that importing `path` loads, directly or through other project
    modules (parent packages included), each with the chain of modules that leads to it."""
    chains: dict[str, list[str]] = {}
    todo = [(m, [m]) for m in sorted(project_imports(path))]
    while todo:
        module, chain = todo.pop()
        parts = module.split(".")
        for name in (".".join(parts[:i]) for i in range(1, len(parts) + 1)):
            source = module_file(name)
            if source is None or name in chains:
                continue
            chains[name] = chain if name == module else [*chain[:-1], name]
            todo += [(m, [*chains[name], m]) for m in sorted(project_imports(source))]
    return chains


TRAINING_SIDE = ("vidact/train.py", "vidact/engine.py", "vidact/evaluate.py", "vidact/predict.py",
                 "vidact/checkpoint.py", "vidact/data", "vidact/clip", "pipelines", "vidact/models*")
TRAINER_MODULES = ("vidact.train", "vidact.engine", "vidact.checkpoint", "vidact.data", "vidact.models",
                   "vidact.evaluate", "vidact.predict")


def files_of(patterns: tuple[str, ...]) -> list[Path]:
    """The .py files that `patterns` (files or folders, globs allowed) name."""
    found = [p for pattern in patterns for p in REPO.glob(pattern)]
    return sorted({f for p in found for f in ([p] if p.is_file() else p.rglob("*.py")) if f.suffix == ".py"})


def in_package(module: str, packages: tuple[str, ...]) -> bool:
    return any(module == p or module.startswith(p + ".") for p in packages)


def test_graphs_import_only_the_pure_modules():
    for path in (REPO / "pipelines").rglob("*.py"):
        for module in project_imports(path):
            assert module.startswith(("vidact.clip", "vidact.shards", "vidact.ivf", "pipelines")), \
                f"{path}: imports {module}"


# The functions that turn a spec and a frame count into frame indices, a keyframe cut and a crop box.
PLAN_MATH = {"frame_indices", "indices_in_window", "strided_indices", "window", "start_range", "plan_cut",
             "random_crop_box", "whole_box", "resize_shorter_size", "crop_offset", "train_plan", "eval_plan"}


def test_only_vidact_clip_plans_clips():
    """`vidact.clip` is the one place that turns a spec and a frame count into frame indices, a cut
    and a crop box: nothing else defines such a function, the graphs compute no plan (they take
    only the spec and the resize from `vidact.clip`, and no DALI arithmetic), and the loaders'
    feed and the reference get their plans from `vidact.clip.plan`."""
    for path in source_files():
        tree = ast.parse(path.read_text())
        if REPO / "vidact" / "clip" not in path.parents:
            defined = {n.name for n in ast.walk(tree) if isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef)}
            assert not defined & PLAN_MATH, f"{path} defines {defined & PLAN_MATH}"
        if REPO / "pipelines" in path.parents:
            clip = {m for m in project_imports(path) if m.startswith("vidact.clip.")}
            assert clip <= {"vidact.clip.spec", "vidact.clip.spec.ClipSpec", "vidact.clip.resample",
                            "vidact.clip.resample.resize"}, f"{path} imports {clip}"
        text = path.read_text()
        assert "nvidia.dali.math" not in text and "pipelines.arith" not in text, path
    for path in (REPO / "vidact" / "data" / "feed.py", REPO / "vidact" / "data" / "reference.py"):
        assert "vidact.clip.plan" in project_imports(path), path


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


def test_training_side_does_not_import_the_shard_maker():
    """Training, inference, loaders, graphs and models run without `vidact.prep`, not even through
    a module they share with it (what both sides read stays at the top of `vidact`)."""
    paths = files_of(TRAINING_SIDE)
    assert REPO / "vidact" / "train.py" in paths and REPO / "pipelines" / "clips.py" in paths
    for path in paths:
        for module, chain in import_chains(path).items():
            assert not in_package(module, ("vidact.prep",)), f"{path}: imports {' -> '.join(chain)}"


def test_shard_maker_does_not_import_the_trainer():
    paths = files_of(("vidact/prep",))
    assert REPO / "vidact" / "prep" / "make_shards.py" in paths
    for path in paths:
        for module, chain in import_chains(path).items():
            assert not in_package(module, TRAINER_MODULES), f"{path}: imports {' -> '.join(chain)}"


def test_no_import_loop_hidden_by_a_lazy_import():
    for path in source_files():
        assert not lazy_project_imports(path), f"{path}: function-level imports {lazy_project_imports(path)}"


MODELS_PKG = REPO / "vidact" / "models"
MODEL_FAMILIES = ("videomae", "vivit", "vit_mean", "tv_video", "timesformer")


def models_internal(module: str) -> bool:
    """`module` names a module of vidact/models or a private name of the package, not its interface."""
    if not module.startswith("vidact.models."):
        return False
    first = module.removeprefix("vidact.models.").split(".")[0]
    return first.startswith("_") or (MODELS_PKG / f"{first}.py").is_file()


def test_models_package_depends_only_on_the_clip_spec_and_the_checkpoint_format():
    """Models sit below the loaders and the engine: building one pulls in no training code. The
    checkpoint module is allowed (a vidact checkpoint given as weights is read under its key
    names), and it must stay light itself (`test_reading_a_checkpoint_imports_no_loader`)."""
    for path in MODELS_PKG.rglob("*.py"):
        for module in project_imports(path):
            assert module.startswith(("vidact.clip", "vidact.models", "vidact.checkpoint")), f"{path}: imports {module}"
    assert not imports_module(REPO / "vidact" / "checkpoint.py", "vidact.models")


def test_model_families_import_neither_each_other_nor_the_package():
    """A family builds on ``_base`` (and ``loading``); the package ``__init__`` imports the families
    to register them, so a module of the package importing it would loop."""
    families = {f"vidact.models.{f}" for f in MODEL_FAMILIES}
    for path in MODELS_PKG.glob("*.py"):
        if path.stem == "__init__":
            continue
        own = f"vidact.models.{path.stem}"
        for module in project_imports(path):
            assert module != "vidact.models", f"{path}: imports the package __init__"
            if path.stem in MODEL_FAMILIES:
                assert module not in families - {own}, f"{path}: imports another family, {module}"


def test_outside_the_models_package_only_its_interface_is_imported():
    """Code and tests import ``vidact.models`` (what its ``__init__`` exports), never its modules or
    private names, so the package can be rearranged inside."""
    paths = [p for p in source_files() if MODELS_PKG not in p.parents] + sorted((REPO / "tests").glob("*.py"))
    for path in paths:
        internal = {m for m in project_imports(path) if models_internal(m)}
        assert not internal, f"{path}: imports {internal}; import from vidact.models"


@pytest.mark.parametrize("path", source_files(), ids=lambda p: str(p.relative_to(REPO)))
def test_modules_hold_one_subject(path):
    """A ceiling, not a target: a module past it holds more than one thing; split it where it
    reads better."""
    lines = len(path.read_text().splitlines())
    assert lines <= MAX_MODULE_LINES, f"{path} is {lines} lines"


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
