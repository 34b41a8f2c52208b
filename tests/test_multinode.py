"""Two `torchrun` "nodes" on this machine (static rendezvous on 127.0.0.1, gloo) reading a shard
set from a local S3 server: each rank reads its own share, eval sees every clip once, train
ranks step together, and a run whose node died resumes when both are launched again."""

from __future__ import annotations

import contextlib
import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import free_port
from helpers import ROOT, TINY, log_rows

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def s3_shards(synthetic_shards, s3_server) -> str:
    """The synthetic shard set copied to the local S3 server: the nodes read it from there."""
    s3_server.mkdir("nodes")
    s3_server.put(f"{synthetic_shards}/", "nodes/set", recursive=True)
    return "s3://nodes/set"


def node_cmd(rank: int, port: int, module: str, *args: str) -> list[str]:
    return [sys.executable, "-m", "torch.distributed.run", "--nnodes", "2", "--nproc-per-node", "1",
            "--node-rank", str(rank), "--master-addr", "127.0.0.1", "--master-port", str(port),
            "--max-restarts", "0", "-m", module, *args]


def launch(module: str, *args: str) -> list[subprocess.Popen]:
    port = free_port()
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return [subprocess.Popen(node_cmd(r, port, module, *args), cwd=ROOT, env=env, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True, start_new_session=True) for r in (0, 1)]


def finish(nodes: list[subprocess.Popen], timeout: float = 600) -> list[str]:
    outs = []
    for p in nodes:
        out, err = p.communicate(timeout=timeout)
        assert p.returncode == 0, err[-3000:]
        outs.append(out + err)
    return outs


def kill_tree(pid: int) -> None:
    """SIGKILL a torchrun agent and every process under it (its workers run in their own
    process groups, so killing the agent's group would leave them running): a node dies."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    todo, tree = [pid], []
    while todo:
        p = todo.pop()
        tree.append(p)
        todo.extend(children.get(p, []))
    for p in tree:
        with contextlib.suppress(ProcessLookupError):
            os.kill(p, signal.SIGKILL)


def traces(path) -> dict[int, list[dict]]:
    return {r: [json.loads(x) for x in path.with_name(f"{path.name}.rank{r}").read_text().splitlines()]
            for r in (0, 1)}


def train_args(shards, out, trace, *extra: str) -> list[str]:
    return ["--recipe", "demo", "--shards", str(shards), "--out", str(out), *TINY, "--batch-size", "1",
            "--ratios", "1.0", "--no-tensorboard", "--trace-batches", str(trace), "--dist-timeout", "20", *extra]


def assert_ranks_share(by_rank: dict[int, list[dict]], epoch: int) -> None:
    """One epoch's batches: 12 train clips over 2 ranks at batch 1, each rank its own 6 (they step
    together), no clip twice."""
    batches = {r: [t["ids"] for t in by_rank[r] if t["epoch"] == epoch] for r in (0, 1)}
    assert len(batches[0]) == len(batches[1]) == 6
    ids = [i for r in (0, 1) for b in batches[r] for i in b]
    assert len(ids) == len(set(ids)) == 12


def test_two_nodes_share_the_clips_and_a_dead_node_resumes(s3_shards, tmp_path):
    """One run: the nodes share epoch 1's clips; node 1 dies in epoch 2, the survivor gives up
    after --dist-timeout; both launched again resume inside epoch 2 and share epoch 3; then a
    two-node predict sees every val clip once."""
    trace = tmp_path / "trace.jsonl"
    args = train_args(s3_shards, tmp_path / "run", trace, "--epochs", "3", "--save-every", "1")
    nodes = launch("vidact.train", *args)
    rank1 = trace.with_name(trace.name + ".rank1")
    deadline = time.time() + 300
    while time.time() < deadline and not (rank1.is_file() and len(rank1.read_text().splitlines()) >= 8):
        time.sleep(0.1)
    kill_tree(nodes[1].pid)  # node 1 dies in epoch 2
    nodes[1].wait()
    nodes[0].communicate(timeout=180)  # the survivor gives up after --dist-timeout
    assert nodes[0].returncode != 0
    assert_ranks_share(traces(trace), 1)
    last = tmp_path / "run" / "ratio_1" / "last.pt"
    assert last.is_file()
    for r in (0, 1):  # the relaunch's traces are its own
        trace.with_name(f"{trace.name}.rank{r}").unlink()
    outs = finish(launch("vidact.train", *args))
    assert "resuming" in outs[0]
    assert [r["epoch"] for r in log_rows(tmp_path / "run" / "ratio_1" / "log.csv")] == ["1", "2", "3"]
    by_rank = traces(trace)
    assert {t["epoch"] for r in (0, 1) for t in by_rank[r]} == {2, 3}  # epoch 1 was not trained again
    # Epoch 2 goes on from its last mid-epoch checkpoint (--save-every 1), the ranks in step.
    rest = {r: [t["ids"] for t in by_rank[r] if t["epoch"] == 2] for r in (0, 1)}
    assert len(rest[0]) == len(rest[1]) < 6
    assert len({i for r in (0, 1) for b in rest[r] for i in b}) == 2 * len(rest[0])
    assert_ranks_share(by_rank, 3)

    csv_out = tmp_path / "pred.csv"
    finish(launch("vidact.predict", "--ckpt", str(tmp_path / "run" / "ratio_1" / "best.pt"), "--shards", s3_shards,
                  "--split", "val", "--out", str(csv_out), "--device", "cpu", "--workers", "1"))
    with csv_out.open() as f:
        ids = [row["id"] for row in csv.DictReader(f)]
    assert len(ids) == len(set(ids)) == 6  # every val clip exactly once over the two ranks
