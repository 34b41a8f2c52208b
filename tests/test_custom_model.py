"""Your own model, ``--model package.module:factory``: built for the set's classes with its declared
layout, head and normalization; trained, evaluated, predicted on files and exported through the
commands (the export's documented lines give the same logits). A checkpoint names its factory but
never imports it: without the factory named again on the command line, nothing of it runs."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from helpers import TINY

from vidact.clip.spec import NORMALIZATION
from vidact.models import build_from_config, create_model, load_checkpoint_model
from vidact.shards import ShardSet

pytestmark = pytest.mark.usefixtures("two_torch_threads")

MODELS_PY = '''
import os
import torch
from torch import nn

open(os.environ.get("MYMODELS_MARK", os.devnull), "a").write("imported\\n")  # who imported this file


class Tiny3d(nn.Module):
    input_layout = "BCTHW"
    normalization = "half"

    def __init__(self, num_classes, frames_per_clip):
        super().__init__()
        self.frames = frames_per_clip
        self.stem = nn.Conv3d(3, 8, kernel_size=3, padding=1)
        self.fc = nn.Linear(8, num_classes)
        self.aux = nn.Linear(8, 8)  # not the head: head_name says which is
        self.head_name = "fc"

    def forward(self, x):  # (B, C, T, H, W)
        assert x.shape[1] == 3 and x.shape[2] == self.frames, x.shape
        return self.fc(self.aux(torch.relu(self.stem(x)).mean((2, 3, 4))))


def tiny3d(num_classes, frames_per_clip):
    return Tiny3d(num_classes, frames_per_clip)


def flat(num_classes, **kwargs):
    return nn.Sequential(nn.Flatten(), nn.LazyLinear(num_classes))


def not_a_module(num_classes):
    return "no"


def bad_layout(num_classes):
    m = nn.Linear(3, num_classes)
    m.input_layout = "TCHW"
    return m


def bad_head(num_classes):
    m = nn.Sequential(nn.Flatten(), nn.Linear(3, num_classes))
    m.head_name = "fc"
    return m


def bad_norm(num_classes):
    m = nn.Linear(3, num_classes)
    m.normalization = ((0.5, 0.5), (0.5, 0.5, 0.5))
    return m


def needs_more(num_classes, depth):
    return nn.Linear(3, num_classes)


def buggy(num_classes):
    return nn.Linear(3, num_classes, bias="yes", nonsense=1)  # a bug inside the user's code
'''


@pytest.fixture
def mymodels(tmp_path, monkeypatch):
    """A folder with ``mymodels.py`` on the import path, and the file its imports are marked in."""
    folder = tmp_path / "code"
    folder.mkdir()
    (folder / "mymodels.py").write_text(textwrap.dedent(MODELS_PY))
    mark = tmp_path / "imported.txt"
    monkeypatch.setenv("MYMODELS_MARK", str(mark))
    monkeypatch.syspath_prepend(str(folder))
    yield folder, mark
    sys.modules.pop("mymodels", None)


def test_built_with_its_declared_layout_head_and_normalization(mymodels):
    model = create_model("mymodels:tiny3d", num_classes=5, frames_per_clip=4, crop_size=16).eval()
    x = torch.randn(2, 4, 3, 16, 16)
    with torch.no_grad():
        assert torch.equal(model(x), model.net.model(x.permute(0, 2, 1, 3, 4)))
    assert model(x).shape == (2, 5)
    cfg = model.config
    assert cfg["family"] == "custom" and cfg["arch"]["kwargs"] == {"num_classes": 5, "frames_per_clip": 4}
    assert (cfg["norm"], tuple(cfg["mean"])) == ("half", NORMALIZATION["half"][0])
    backbone, head = model.param_groups()
    assert [p.shape for p in head] == [(5, 8), (5,)]  # fc, not the last-defined aux
    assert len(backbone) == 4


def test_a_checkpoint_never_imports_its_factory_unless_named_again(mymodels, tmp_path):
    model = create_model("mymodels:tiny3d", num_classes=3, frames_per_clip=4, crop_size=16)
    folder, mark = mymodels
    sys.modules.pop("mymodels")
    mark.unlink()
    with pytest.raises(ValueError, match=r"built by mymodels:tiny3d.*pass --model mymodels:tiny3d to allow it"):
        build_from_config(model.config, None, source="best.pt")
    with pytest.raises(ValueError, match="not --model mymodels:flat"):
        build_from_config(model.config, "mymodels:flat", source="best.pt")
    assert not mark.exists() and "mymodels" not in sys.modules  # nothing of the file ran
    again = build_from_config(model.config, "mymodels:tiny3d")
    assert mark.read_text() == "imported\n" and again.config == model.config


def test_wrong_factories_are_one_line(mymodels):
    for spec, message in [("nosuchmodule:f", "cannot import nosuchmodule"),
                          ("mymodels:missing", "has no callable 'missing'"),
                          ("mymodels:not_a_module", "returned str, not a torch.nn.Module"),
                          ("mymodels:bad_layout", "input_layout 'TCHW' is not one of BTCHW, BCTHW"),
                          ("mymodels:bad_head", "head_name 'fc' names no submodule"),
                          ("mymodels:bad_norm", r"neither a name \(imagenet, half"),
                          ("mymodels:needs_more", "cannot be called with {'num_classes': 3}: missing a required")]:
        with pytest.raises(ValueError, match=message) as e:
            create_model(spec, num_classes=3, frames_per_clip=4, crop_size=16)
        assert "\n" not in str(e.value)
    with pytest.raises(TypeError, match="nonsense"):  # the user's own bug: raised as it is, traceback and all
        create_model("mymodels:buggy", num_classes=3, frames_per_clip=4, crop_size=16)


def cmd(module: str, *args: str) -> list[str]:
    return [sys.executable, "-m", f"vidact.{module}", *args]


def run_in(folder: Path, command: list[str], code: int = 0) -> subprocess.CompletedProcess:
    """A command run from `folder` (where mymodels.py is: found as a user beside it would find it)."""
    p = subprocess.run(command, cwd=folder, capture_output=True, text=True, timeout=600)
    assert p.returncode == code, p.stderr[-3000:]
    return p


@pytest.mark.slow
def test_trains_evaluates_predicts_and_exports(synthetic_shards, mymodels, tmp_path):
    folder, _ = mymodels
    out, spec = tmp_path / "run", "mymodels:tiny3d"
    run_in(folder, cmd("train", "--recipe", "demo", "--shards", str(synthetic_shards), "--out", str(out), *TINY,
                       "--model", spec, "--epochs", "1", "--ratios", "1.0", "--no-tensorboard"))
    ckpt = out / "ratio_1" / "best.pt"
    eval_args = ("--ckpt", str(ckpt), "--shards", str(synthetic_shards), "--split", "val", "--out",
                 str(tmp_path / "eval"), "--device", "cpu", "--loader", "torch")
    refused = run_in(folder, cmd("evaluate", *eval_args), code=2).stderr.strip().splitlines()
    assert refused[-1].endswith(f"loading it imports and runs that code; pass --model {spec} to allow it")
    refused = run_in(folder, cmd("evaluate", *eval_args, "--model", "videomae"), code=2).stderr.strip().splitlines()
    assert refused[-1].endswith("'videomae' is not package.module:factory (a family's checkpoint needs no --model: "
                                "it names its model)")
    run_in(folder, cmd("evaluate", *eval_args, "--model", spec))
    assert json.loads(next((tmp_path / "eval").glob("eval_val_*.json")).read_text())["count"] > 0
    source = Path(ShardSet.open(synthetic_shards).manifest["source"])
    video = min(p for p in source.rglob("*") if p.suffix in (".mp4", ".avi", ".mkv", ".webm"))
    preds = tmp_path / "p.csv"
    run_in(folder, cmd("predict", "--ckpt", str(ckpt), "--videos", str(video), "--out", str(preds), "--device", "cpu",
                       "--model", spec))
    assert len(preds.read_text().splitlines()) == 2
    export = tmp_path / "export"
    run_in(folder, cmd("export", "--ckpt", str(ckpt), "--out", str(export), "--model", spec))
    model, state = load_checkpoint_model(ckpt, torch.device("cpu"), spec)
    code = re.search(r"```python\n(.*?)```", (export / "README.md").read_text(), re.S).group(1)
    scope: dict = {}
    exec(compile(code, "README.md", "exec"), scope)  # the documented loader, as a user would paste it
    t, crop = state["spec"]["frames_per_clip"], state["spec"]["crop_size"]
    x = torch.randn(2, t, 3, crop, crop)
    with torch.no_grad():
        assert (scope["classify"](x) - model(x)).abs().max().item() <= 1e-6
    assert json.loads((export / "config.json").read_text())["factory"] == spec


def test_train_refuses_a_factory_it_cannot_build_before_writing_anything(synthetic_shards, mymodels, tmp_path):
    folder, _ = mymodels
    out = tmp_path / "run"
    p = run_in(folder, cmd("train", "--recipe", "demo", "--shards", str(synthetic_shards), "--out", str(out), *TINY,
                           "--model", "mymodels:bad_head"), code=2)
    assert p.stderr.strip().splitlines()[-1].endswith("head_name 'fc' names no submodule of the module")
    assert not out.exists()
