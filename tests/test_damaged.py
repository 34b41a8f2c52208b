"""Damaged samples neither crash nor poison a run: flipped bytes, a zeroed tail, a garbled header, a
truncated member and a table that lies, in samples of one set. Both loaders check every sample
before decoding it, leave out exactly the damaged ones (said once each), hand out the rest as the
clean set's, keep train batches full, stop past --max-bad-samples; `vidact-shards verify` names
them and exits 1."""

from __future__ import annotations

import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch
from test_loaders import N_CLIPS, run
from test_loaders import shards as shards  # noqa: F401 - the loader tests' set, as a fixture here

from vidact.clip.spec import ClipSpec
from vidact.data import build_loader
from vidact.data.batch import TooManyDamaged
from vidact.shards import ShardSet, member_exts, members_checksum, write_dali_index, write_tar

ROOT = Path(__file__).resolve().parents[1]
SPEC = ClipSpec(frames_per_clip=4, crop_size=32, ratio=1.0)


def flip(m: dict) -> None:
    v = bytearray(m["ivf"])
    v[len(v) // 2:len(v) // 2 + 256] = np.random.default_rng(0).integers(0, 256, 256, np.uint8).tobytes()
    m["ivf"] = bytes(v)


def zero_tail(m: dict) -> None:
    v = m["ivf"]
    m["ivf"] = v[:len(v) // 2] + b"\0" * (len(v) - len(v) // 2)


def garble_header(m: dict) -> None:
    m["ivf"] = bytes(32) + m["ivf"][32:]


def truncate(m: dict) -> None:
    m["ivf"] = m["ivf"][:len(m["ivf"]) * 2 // 3]


def lying_offsets(m: dict) -> None:
    """Offsets past the stream, with a checksum that matches them: only the tables' check sees it."""
    offsets = np.frombuffer(m["offsets.i32"], "<i4").copy()
    offsets[1:] += 100
    m["offsets.i32"] = offsets.astype("<i4").tobytes()
    m["xxh3"] = members_checksum([m[e] for e in member_exts("ivf")])


DAMAGES = [flip, zero_tail, garble_header, truncate, lying_offsets]


def damaged_copy(ss: ShardSet, dst: Path, damages: tuple = tuple(DAMAGES)) -> list[str]:
    """A copy of the set with the first sample of each of its first shards damaged one way each
    (tars and indexes rewritten whole, their .sha256 left as they were); returns '<tar>: sample
    <key>' of each."""
    shutil.copytree(ss.root, dst)
    hit = []
    for tar, damage in zip(sorted(dst.glob("train-*.tar")), damages):
        with tarfile.open(tar) as t:
            members = [(m.name, t.extractfile(m).read()) for m in t if m.isfile()]
        key = members[0][0].partition(".")[0]
        sample = {n.partition(".")[2]: d for n, d in members if n.partition(".")[0] == key}
        damage(sample)
        members = [(n, sample[n.partition(".")[2]] if n.partition(".")[0] == key else d) for n, d in members]
        write_tar(tar, members)
        write_dali_index(tar, tar.with_suffix(".idx"))
        hit.append(f"{tar}: sample {key}")
    assert len(hit) == len(damages)
    return hit


def where_of(line: str) -> str:
    return line.split(": sample ")[0] + ": sample " + line.split(": sample ")[1].split(":")[0]


@pytest.mark.parametrize("loader", ["dali", "torch"])
def test_eval_leaves_out_exactly_the_damaged_samples(shards, tmp_path, loader):  # noqa: F811
    hit = damaged_copy(shards, tmp_path / "set")
    clean = {i: v for b in run(shards, loader, "eval", SPEC) for i, v in zip(b.ids, b.video)}
    L = build_loader(tmp_path / "set", "train", loader, "eval", SPEC, 4, device="cpu", workers=2)
    got = {i: v for b in L for i, v in zip(b.ids, b.video)}
    assert sorted(where_of(s) for s in L.skipped) == sorted(hit)  # each said once, with shard and sample
    assert len(got) == N_CLIPS - len(hit) and set(got) < set(clean)
    for i, v in got.items():  # the rest is the clean set's, to the pixel
        assert torch.equal(v, clean[i]), i
    reasons = " ".join(L.skipped)
    assert "checksum mismatch" in reasons and "frame table" in reasons  # bytes, and a table that lies


@pytest.mark.parametrize("loader", ["dali", "torch"])
def test_train_keeps_its_batches_full_and_stops_past_the_limit(shards, tmp_path, loader):  # noqa: F811
    """3 damaged of 10, batches of 5 (every clip read, no batch all damaged): each damaged slot
    takes a good sample of its batch; past --max-bad-samples 2 the loader stops in one line. (A
    train batch of damaged samples only stops the run.)"""
    hit = damaged_copy(shards, tmp_path / "set", (flip, truncate, lying_offsets))
    L = build_loader(tmp_path / "set", "train", loader, "train", SPEC, 5, device="cpu", workers=2, seed=1)
    batches = list(L)
    assert len(batches) == len(L) == 2 and all(b.video.shape[0] == 5 for b in batches)
    assert sorted(where_of(s) for s in L.skipped) == sorted(hit)
    assert not {w.rpartition("sample ")[2] for w in hit} & {i for b in batches for i in b.ids}
    strict = build_loader(tmp_path / "set", "train", loader, "train", SPEC, 5, device="cpu", workers=2,
                          max_bad_samples=2)
    with pytest.raises(TooManyDamaged, match=r"3 damaged samples, more than --max-bad-samples 2 .*verify") as e:
        list(strict)
    assert "\n" not in str(e.value)


def test_verify_names_every_damaged_sample_and_file(shards, tmp_path):  # noqa: F811
    hit = damaged_copy(shards, tmp_path / "set")
    p = subprocess.run([sys.executable, "-m", "vidact.prep.make_shards", "verify", str(tmp_path / "set")],
                       cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert p.returncode == 1, p.stderr
    lines = p.stdout.splitlines()
    assert sorted(where_of(x) for x in lines if ": sample " in x) == sorted(hit)
    files = {x.split(": sha256 differs")[0] for x in lines if "sha256 differs" in x}
    assert {w.split(": sample ")[0] for w in hit} <= files  # each rewritten tar (an index, where it changed)
    assert f"{N_CLIPS} samples checked, {len(lines)} problems" in p.stderr
    clean = subprocess.run([sys.executable, "-m", "vidact.prep.make_shards", "verify", str(shards.root)],
                           cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert clean.returncode == 0 and clean.stdout == "", clean.stderr


def test_evaluate_and_predict_list_what_they_left_out(shards, tmp_path, capsys):  # noqa: F811
    """evaluate's report and predict's `_skipped.csv` list the damaged samples; the rest is written."""
    from vidact import evaluate, predict
    from vidact.models import create_model

    hit = damaged_copy(shards, tmp_path / "set", (flip, garble_header))
    model = create_model("vit-mean", num_classes=len(shards.classes), preset="tiny", frames_per_clip=4, crop_size=32)
    ckpt = tmp_path / "best.pt"
    torch.save({"model": model.state_dict(), "model_config": model.config, "epoch": 1, "best": {},
                "classes": shards.classes, "spec": {**SPEC.__dict__, "norm": "half", "mean": None, "std": None}}, ckpt)
    common = ["--ckpt", str(ckpt), "--shards", str(tmp_path / "set"), "--split", "train", "--device", "cpu"]
    assert evaluate.main([*common, "--out", str(tmp_path / "eval")]) == 0
    report = __import__("json").loads((tmp_path / "eval" / "eval_train_v1.json").read_text())
    assert sorted(where_of(s) for s in report["skipped"]) == sorted(hit) and report["count"] == N_CLIPS - len(hit)
    assert predict.main([*common, "--out", str(tmp_path / "p.csv")]) == 0
    listed = (tmp_path / "p_skipped.csv").read_text().splitlines()
    assert listed[0] == "sample,reason" and sorted(x.split(",")[0] for x in listed[1:]) == sorted(hit)
    assert len((tmp_path / "p.csv").read_text().splitlines()) == 1 + N_CLIPS - len(hit)
    assert f"-> {tmp_path / 'p_skipped.csv'}" in capsys.readouterr().out
