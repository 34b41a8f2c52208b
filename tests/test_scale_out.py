"""Shard sets in object storage and sharding on Ray, for real: a moto S3 server on 127.0.0.1 and a
local Ray (2 CPUs, loopback only). make_shards writes s3:// byte for byte as it writes a folder,
resumes an interrupted upload, and every command that reads shards gives the same numbers from
either; a missing object is one line naming it; Ray's shards equal the local run's, also when a
Ray worker dies mid-task."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from functools import partial
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from conftest import free_port
from ray_helpers import encode_or_kill_worker, sleep_then_echo

from vidact import evaluate, predict, preview
from vidact.clip.spec import ClipSpec
from vidact.data import build_loader
from vidact.killable import Failed
from vidact.models import NORM, create_model
from vidact.prep import make_shards
from vidact.prep.ray_pool import run_on_ray
from vidact.shards import ShardError, ShardSet, iter_tar_samples

ROOT = Path(__file__).resolve().parents[1]
BUCKET = "vidact-test"
# small shards, so that a split spans several of them (resume has something to resume)
ARGS = ["--workers", "1", "--short-side", "64", "--min-side", "0", "--shard-size-mb", "0.02"]


def make_shards_cli(src: str, out: str, *extra: str, timeout: int = 300) -> subprocess.CompletedProcess:
    p = subprocess.run([sys.executable, "tools/make_shards.py", src, "--out", out, *ARGS, *extra], cwd=ROOT,
                       capture_output=True, text=True, timeout=timeout)
    assert p.returncode == 0, p.stderr[-3000:]
    return p


def folder_files(path: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(path.iterdir()) if p.is_file()}


def bucket_files(fs, prefix: str) -> dict[str, bytes]:
    names = fs.ls(prefix, detail=False, refresh=True)
    return {n.rsplit("/", 1)[1]: fs.cat_file(n) for n in sorted(names)}


@pytest.fixture(scope="module")
def sets(synthetic_shards, s3_server, tmp_path_factory) -> SimpleNamespace:
    """The synthetic clips sharded into a folder (in process) and into the bucket (the CLI)."""
    src = ShardSet.open(synthetic_shards).manifest["source"]
    local = tmp_path_factory.mktemp("scale_out") / "local"
    assert make_shards.main([src, "--out", str(local), *ARGS]) == 0
    s3_server.mkdir(BUCKET)
    url = f"s3://{BUCKET}/set"
    proc = make_shards_cli(src, url)
    return SimpleNamespace(src=src, local=local, url=url, fs=s3_server, proc=proc)


# --------------------------------------------------------------------------- make_shards --out s3://

@pytest.mark.slow
def test_make_shards_to_s3_writes_the_local_bytes(sets):
    local, remote = folder_files(sets.local), bucket_files(sets.fs, f"{BUCKET}/set")
    assert sorted(remote) == sorted(local)
    assert {n.rsplit(".", 1)[1] for n in local} == {"tar", "idx", "sha256", "json", "jsonl"}
    for name in local:
        assert remote[name] == local[name], name
    manifest = json.loads(remote["manifest.json"])
    tars = [n for s in manifest["splits"].values() for n in s["shards"]]
    assert len(manifest["splits"]["train"]["shards"]) > 1
    assert set(manifest["sha256"]) == {*tars, *(n.replace(".tar", ".idx") for n in tars), "rejects.jsonl"}
    for tar in tars:  # each sidecar is sha256sum's format, and agrees with the manifest
        lines = remote[tar.replace(".tar", ".sha256")].decode().splitlines()
        assert lines == [f"{manifest['sha256'][n]}  {n}" for n in (tar, tar.replace(".tar", ".idx"))]
    assert f"at {sets.url};" in sets.proc.stdout and "Found credentials" not in sets.proc.stderr


@pytest.mark.slow
def test_interrupted_upload_resumes_to_the_clean_result(sets):
    url = f"s3://{BUCKET}/killed"
    cmd = [sys.executable, "tools/make_shards.py", sets.src, "--out", url, *ARGS]
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    seen: list[str] = []
    while proc.poll() is None and time.monotonic() < deadline and not any(n.endswith(".sha256") for n in seen):
        seen = sets.fs.ls(f"{BUCKET}/killed", detail=False, refresh=True) if sets.fs.exists(
            f"{BUCKET}/killed/") else []
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    partial_set = bucket_files(sets.fs, f"{BUCKET}/killed")
    assert "manifest.json" not in partial_set, "the run finished before it could be killed"
    assert any(n.endswith(".sha256") for n in partial_set), "no shard was finished before the kill"
    clean = folder_files(sets.local)
    for name in (n for n in partial_set if n.endswith(".sha256")):  # a finished shard is whole
        for listed in (line.split()[1] for line in partial_set[name].decode().splitlines()):
            assert partial_set[listed] == clean[listed]

    again = make_shards_cli(sets.src, url)
    assert "resuming" in again.stderr
    assert bucket_files(sets.fs, f"{BUCKET}/killed") == clean


# --------------------------------------------------------------------------- reading from s3://

@pytest.mark.slow
@pytest.mark.parametrize("loader,mode", [("dali", "train"), ("dali", "multiview"), ("torch", "eval")])
def test_loaders_give_the_same_batches_from_s3(sets, loader, mode):
    spec = ClipSpec(frames_per_clip=4, crop_size=32)

    def batches(where):
        return [(b.ids, b.video.clone(), b.label) for b in build_loader(
            where, "train", loader, mode, spec, batch_size=3, device="cpu", workers=2, seed=3, num_clips=1)]

    here, there = batches(str(sets.local)), batches(sets.url)
    assert len(here) == len(there) >= 3
    for (ids_a, va, la), (ids_b, vb, lb) in zip(here, there):
        assert ids_a == ids_b and torch.equal(va, vb) and torch.equal(la, lb)


@pytest.mark.slow
def test_a_loader_fetches_each_index_once_however_many_epochs(sets, local_s3):
    """DALI's reader reads every index of a split each time one is built (per pipeline, per epoch):
    from s3:// the loader hands it local copies fetched once, so the server sees each .idx once
    for two pipelines and two epochs, and the reference loader's counts come from the same copies."""
    spec = ClipSpec(frames_per_clip=4, crop_size=32)
    shards = len(ShardSet.open(sets.url).tars("train"))
    before = local_s3.served()
    L = build_loader(sets.url, "train", "dali", "train", spec, batch_size=2, device="cpu", workers=2,
                     dali_pipelines=2)
    epochs = [[i for b in L for i in b.ids] for _ in range(2)]
    assert (local_s3.served() - before).index_requests == shards > 1
    assert sorted(epochs[0]) == sorted(epochs[1]) and epochs[0] != epochs[1]  # two real epochs
    before = local_s3.served()
    ref = build_loader(sets.url, "train", "torch", "eval", spec, batch_size=2, device="cpu", workers=0)
    assert len(ref) > 0 and (local_s3.served() - before).index_requests == shards


@pytest.fixture(scope="module")
def checkpoint(sets, tmp_path_factory) -> Path:
    """A tiny untrained VideoMAE checkpoint for the synthetic classes (what evaluate reads)."""
    torch.manual_seed(0)
    model = create_model("videomae", num_classes=3, preset="tiny", frames_per_clip=4, crop_size=32)
    spec = ClipSpec(frames_per_clip=4, crop_size=32, norm=NORM["videomae"])
    path = tmp_path_factory.mktemp("ckpt") / "best.pt"
    torch.save({"model": model.state_dict(), "model_config": model.config, "epoch": 1, "best": {},
                "classes": ShardSet.open(sets.local).classes, "spec": spec.__dict__}, path)
    return path


@pytest.mark.slow
def test_evaluate_predict_preview_from_s3_equal_local(sets, checkpoint, tmp_path, capsys):
    common = ["--ckpt", str(checkpoint), "--device", "cpu", "--views", "3", "--dali-threads", "2"]
    reports = {}
    for name, where in (("local", str(sets.local)), ("s3", sets.url)):
        assert evaluate.main([*common, "--shards", where, "--split", "val", "--out", str(tmp_path / name)]) == 0
        reports[name] = json.loads((tmp_path / name / "eval_val_v3.json").read_text())
        assert predict.main([*common, "--shards", where, "--out", str(tmp_path / f"{name}.csv")]) == 0
        assert preview.main(["--shards", where, "--frames", "4", "--crop-size", "32", "--batch-size", "3", "--device",
                             "cpu", "--out", str(tmp_path / f"{name}.npz")]) == 0
    capsys.readouterr()
    for key in ("top1", "top5", "count", "per_class", "loss"):
        assert reports["s3"].get(key) == reports["local"].get(key), key
    assert reports["s3"]["shards"] == sets.url
    rows = {n: list(csv.reader((tmp_path / f"{n}.csv").open())) for n in ("local", "s3")}
    assert rows["s3"] == rows["local"] and len(rows["s3"]) == 7
    a, b = np.load(tmp_path / "local.npz"), np.load(tmp_path / "s3.npz")
    assert sorted(a.files) == sorted(b.files)
    for k in a.files:
        assert np.array_equal(a[k], b[k]), k


def test_shards_flags_keep_urls_as_they_are():
    """A ``--shards`` of type Path would fold s3://b/p into s3:/b/p: every command keeps the string."""
    from vidact import evaluate, predict, preview, train
    from vidact.bench import cli as bench

    for command in (train, evaluate, predict, preview, bench):
        assert command.build_parser()._option_string_actions["--shards"].type in (None, str), command.__name__


@pytest.mark.slow
def test_train_from_s3_equals_local(sets, tmp_path):
    tiny = ["--recipe", "demo", "--model-size", "tiny", "--frames", "4", "--crop-size", "32", "--batch-size", "2",
            "--accum", "1", "--dali-threads", "2", "--device", "cpu", "--eval-views", "1", "--epochs", "1",
            "--ratios", "1.0", "--no-tensorboard"]
    logs = {}
    for name, where in (("local", str(sets.local)), ("s3", sets.url)):
        out = tmp_path / name
        p = subprocess.run([sys.executable, "-m", "vidact.train", "--shards", where, "--out", str(out), *tiny],
                           cwd=ROOT, capture_output=True, text=True, timeout=600)
        assert p.returncode == 0, p.stderr[-3000:]
        with (out / "ratio_1" / "log.csv").open(newline="") as f:
            logs[name] = list(csv.DictReader(f))
    keys = [k for k in logs["local"][0] if k.startswith(("train_", "val_"))]
    assert keys and [{k: r[k] for k in keys} for r in logs["s3"]] == [{k: r[k] for k in keys} for r in logs["local"]]


@pytest.mark.slow
def test_bench_adds_dali_rows_reading_the_s3_copy(sets, tmp_path):
    out = tmp_path / "bench.json"
    cmd = [sys.executable, "tools/bench.py", "--shards", str(sets.local), "--s3", sets.url, "--json", str(out),
           "--quick", "--resolutions", "native", "--frames", "4", "--crop-size", "32", "--batch-sizes", "2",
           "--batches", "2", "--repeats", "1", "--warmup", "1", "--workers", "1", "--no-end-to-end", "-q"]
    p = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr[-3000:]
    rows = json.loads(out.read_text())["loader"]
    got = sorted((r["loader"], r["device"], r["storage"]) for r in rows)
    assert ("dali", "cpu", "local") in got and ("dali", "cpu", "s3") in got and ("torch", "cpu", "local") in got
    assert all("error" not in r and r["clips_per_s"] > 0 for r in rows)
    assert "dali from s3" in p.stdout


# --------------------------------------------------------------------------- missing and bad objects

@pytest.fixture
def copy_in_bucket(sets):
    """A fresh copy of the local set at s3://BUCKET/<name> (removed afterwards)."""
    made = []

    def copy(name: str) -> str:
        sets.fs.put(str(sets.local) + "/", f"{BUCKET}/{name}/", recursive=True)
        made.append(f"{BUCKET}/{name}")
        return f"s3://{BUCKET}/{name}"

    yield copy
    for prefix in made:
        sets.fs.rm(prefix, recursive=True)


@pytest.mark.slow
def test_missing_objects_are_one_line_naming_them(sets, copy_in_bucket, tmp_path, capsys):
    url = copy_in_bucket("holes")
    sets.fs.rm(f"{BUCKET}/holes/train-000001.tar")
    for loader in ("dali", "torch"):
        rc = preview.main(["--shards", url, "--loader", loader, "--device", "cpu", "--out", str(tmp_path / "x.png")])
        err = capsys.readouterr().err.strip()
        want = f"python -m vidact.preview: {url}/train-000001.tar: shard listed in manifest.json is missing"
        assert rc == 2 and err == want
    sets.fs.rm(f"{BUCKET}/holes/val-000000.idx")
    with pytest.raises(ShardError, match=rf"^{url}/val-000000.idx: DALI index missing"):
        ShardSet.open(url).indexes("val")
    for where in (f"s3://{BUCKET}/nothing-here", "s3://no-such-bucket-vidact/set"):
        with pytest.raises(ShardError, match=rf"^{where}: not a shard set \(no manifest.json\)"):
            ShardSet.open(where)
    capsys.readouterr()
    assert make_shards.main([sets.src, "--out", "s3://no-such-bucket-vidact/set", *ARGS]) == 2
    err = capsys.readouterr().err.strip()
    assert err == ("python -m vidact.prep.make_shards: s3://no-such-bucket-vidact/set: bucket "
                   "'no-such-bucket-vidact' not found (create it first)")


@pytest.mark.slow
def test_unreachable_endpoint_is_one_line(sets, tmp_path):
    env = {**os.environ, "AWS_ENDPOINT_URL": f"http://127.0.0.1:{free_port()}", "AWS_MAX_ATTEMPTS": "1"}
    p = subprocess.run([sys.executable, "-m", "vidact.preview", "--shards", sets.url, "--out", str(tmp_path / "x.png")],
                       cwd=ROOT, capture_output=True, text=True, timeout=120, env=env)
    assert p.returncode == 2
    assert p.stderr.startswith(f"python -m vidact.preview: {sets.url}/manifest.json: EndpointConnectionError: ")
    assert p.stderr.count("\n") == 1


@pytest.mark.slow
def test_bad_sample_in_s3_is_left_out_and_located_by_the_dali_loader(sets, copy_in_bucket):
    url = copy_in_bucket("bad")
    name = "train-000000.tar"
    data = bytearray(sets.fs.cat_file(f"{BUCKET}/bad/{name}"))
    fields = sets.fs.cat_file(f"{BUCKET}/bad/train-000000.idx").decode().split("\n")[1].split()
    offset, size, key = int(fields[1]), int(fields[2]), fields[3].split(".")[0]
    data[offset: offset + size] = np.random.default_rng(0).integers(0, 256, size, dtype=np.uint8).tobytes()
    sets.fs.pipe_file(f"{BUCKET}/bad/{name}", bytes(data))
    spec = ClipSpec(frames_per_clip=4, crop_size=32)
    L = build_loader(url, "train", "dali", "eval", spec, batch_size=2, device="cpu", workers=2)
    ids = [i for b in L for i in b.ids]  # left out, said once with its s3 address; the rest go on
    assert len(L.skipped) == 1 and L.skipped[0].startswith(f"{url}/{name}: sample {key}: "), L.skipped
    assert "\n" not in L.skipped[0] and key not in ids and len(ids) == len(set(ids)) > 0


# --------------------------------------------------------------------------- Ray

@pytest.fixture(scope="module")
def ray_cluster():
    """A local Ray with 2 CPUs, listening on the loopback interface only (Ray's local mode for
    machines without a cluster network), shut down at the end. Its workers can import this module
    (tests/ray_helpers.py, whose function the test below hands them)."""
    saved = {k: os.environ.get(k) for k in ("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "PYTHONPATH")}
    # Read when ray is imported: node address 127.0.0.1, every Ray server bound to it.
    os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"
    os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), str(ROOT / "tests"), saved["PYTHONPATH"]) if p)
    try:
        import ray  # the test extra installs it
        assert not ray._private.ray_constants.ENABLE_RAY_CLUSTER, "ray was imported before this fixture"
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
        yield ray.get_runtime_context().gcs_address
    finally:
        ray.shutdown()
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


@pytest.mark.slow
def test_ray_distributor_writes_the_local_bytes(sets, ray_cluster, tmp_path):
    assert ray_cluster.startswith("127.0.0.1:")
    out = tmp_path / "ray"
    p = make_shards_cli(sets.src, str(out), "--distributor", "ray", "--ray-address", ray_cluster)
    assert "Ray: 2 CPUs" in p.stderr
    assert folder_files(out) == folder_files(sets.local)


@pytest.mark.slow
def test_ray_task_whose_worker_dies_is_retried(sets, ray_cluster, tmp_path, monkeypatch):
    victim = _first_train_id(sets.local)
    marker = tmp_path / "killed-once"
    monkeypatch.setattr(make_shards, "encode_source", partial(encode_or_kill_worker, marker=str(marker), victim=victim))
    out = tmp_path / "ray"
    assert make_shards.main([sets.src, "--out", str(out), *ARGS, "--distributor", "ray", "--ray-retries", "2"]) == 0
    assert marker.is_file(), "the worker was never killed"
    assert folder_files(out) == folder_files(sets.local)


@pytest.mark.slow
def test_ray_tasks_keep_the_clip_timeout(ray_cluster):
    """A job past the time limit is killed inside its task and comes back as the local run's
    Failed reason; the jobs around it are unaffected and stay in order."""
    results = list(run_on_ray(sleep_then_echo, [(0, 0.0), (1, 30.0), (2, 0.0)], timeout=1.5))
    assert results[0] == 0 and results[2] == 2
    assert results[1] == Failed("timed out after 1.5 s (--clip-timeout)")


def _first_train_id(root: Path) -> str:
    ss = ShardSet.open(root)
    _, sample = next(iter_tar_samples(ss.tars("train")[0], {"json"}))
    return json.loads(sample["json"])["id"]
