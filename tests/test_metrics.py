"""Tests of `vidact.metrics`: hand-computed top-k counts, weighted epoch means, soft targets,
confusion matrices and summaries, the TTA mean, and the DDP all-reduce with two gloo ranks."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from vidact.metrics import (
    MetricTracker,
    average_views,
    confusion_matrix,
    per_class_accuracy,
    summarize,
    topk_correct,
)

# 4 samples, 6 classes; class ranking per row (best first) is written beside it.
LOGITS = torch.tensor([
    [9.0, 1.0, 2.0, 3.0, 4.0, 5.0],  # 0, 5, 4, 3, 2, 1
    [0.0, 9.0, 8.0, 7.0, 6.0, 5.0],  # 1, 2, 3, 4, 5, 0
    [5.0, 4.0, 3.0, 2.0, 1.0, 0.0],  # 0, 1, 2, 3, 4, 5
    [1.0, 2.0, 3.0, 4.0, 5.0, 6.0],  # 5, 4, 3, 2, 1, 0
])
LABELS = torch.tensor([0, 4, 5, 1])  # ranks: 1st, 4th, 6th, 5th


def test_topk_hand_example() -> None:
    assert topk_correct(LOGITS, LABELS) == {1: 1, 5: 3}
    assert topk_correct(LOGITS, LABELS, ks=(1, 2, 3, 4, 5, 6)) == {1: 1, 2: 1, 3: 1, 4: 2, 5: 3, 6: 4}
    # numpy inputs work too
    assert topk_correct(LOGITS.numpy(), LABELS.numpy(), ks=(4,)) == {4: 2}


def test_topk_k_larger_than_classes() -> None:
    logits = torch.tensor([[3.0, 2.0, 1.0], [1.0, 3.0, 2.0]])
    labels = torch.tensor([2, 0])  # both last
    assert topk_correct(logits, labels) == {1: 0, 5: 2}
    assert topk_correct(logits, labels, ks=(3, 100)) == {3: 2, 100: 2}


def test_topk_ties_do_not_matter_when_label_is_clearly_placed() -> None:
    # Ties among wrong classes cannot change the answer: the label is strictly best or strictly worst.
    logits = torch.tensor([[1.0, 1.0, 1.0, 5.0], [2.0, 2.0, 2.0, -1.0]])
    labels = torch.tensor([3, 3])
    assert topk_correct(logits, labels, ks=(1, 3, 4)) == {1: 1, 3: 1, 4: 2}


def test_topk_soft_targets_and_empty() -> None:
    soft = torch.nn.functional.one_hot(LABELS, 6).float() * 0.7 + 0.05
    assert topk_correct(LOGITS, soft) == {1: 1, 5: 3}
    assert topk_correct(torch.zeros(0, 6), torch.zeros(0, dtype=torch.long)) == {1: 0, 5: 0}


def test_topk_bad_shapes() -> None:
    with pytest.raises(ValueError):
        topk_correct(LOGITS[0], LABELS[:1])
    with pytest.raises(ValueError):
        topk_correct(LOGITS, LABELS[:3])


def test_tracker_weighted_means_over_uneven_batches() -> None:
    t = MetricTracker()
    t.update(2.0, LOGITS[:3], LABELS[:3])  # 3 samples, loss 2.0: top1 1, top5 2
    t.update(torch.tensor(0.5), LOGITS[3:], LABELS[3:])  # 1 sample, loss 0.5: top1 0, top5 1
    out = t.compute()
    assert out["count"] == 4
    assert out["loss"] == pytest.approx((3 * 2.0 + 1 * 0.5) / 4)
    assert out["top1"] == pytest.approx(1 / 4)
    assert out["top5"] == pytest.approx(3 / 4)
    t.reset()
    empty = t.compute()
    assert empty["count"] == 0 and math.isnan(empty["loss"]) and math.isnan(empty["top1"])


def test_tracker_soft_targets_use_argmax() -> None:
    # Mixup of label y with a partner: argmax is the dominant class.
    labels = LABELS.clone()
    partners = torch.tensor([3, 3, 3, 3])
    lam = 0.8
    soft = lam * torch.nn.functional.one_hot(labels, 6).float() + (1 - lam) * torch.nn.functional.one_hot(
        partners, 6).float()
    t = MetricTracker()
    t.update(1.0, LOGITS, soft)
    assert t.compute()["top1"] == pytest.approx(0.25)
    assert t.compute()["top5"] == pytest.approx(0.75)


def test_tracker_reduce_without_dist_is_noop() -> None:
    assert not dist.is_initialized()
    t = MetricTracker()
    t.update(1.5, LOGITS, LABELS)
    before = t.compute()
    assert t.reduce() is t
    assert t.compute() == before
    t.update(1.5, LOGITS, LABELS)  # still usable: nothing was reduced
    assert t.compute()["count"] == 8


def test_confusion_and_per_class_accuracy() -> None:
    preds = [0, 0, 1, 1, 1, 0]
    labels = [0, 1, 1, 1, 3, 0]
    cm = confusion_matrix(preds, labels, 4)
    expected = np.array([
        [2, 0, 0, 0],
        [1, 2, 0, 0],
        [0, 0, 0, 0],
        [0, 1, 0, 0],
    ])
    np.testing.assert_array_equal(cm, expected)
    acc = per_class_accuracy(cm)
    np.testing.assert_allclose(acc[[0, 1, 3]], [1.0, 2 / 3, 0.0])
    assert np.isnan(acc[2])
    with pytest.raises(ValueError, match="outside"):
        confusion_matrix([0], [-1], 4)


def test_summarize_hand_example() -> None:
    names = ["walk", "run", "jump", "sit"]
    # argmax per row: 0, 0, 1, 1, 1, 0 (as in the confusion test); labels as there.
    logits = np.array([
        [3.0, 1.0, 0.0, 2.0],
        [3.0, 2.0, 0.0, 1.0],
        [0.0, 3.0, 1.0, 2.0],
        [1.0, 3.0, 0.0, 2.0],
        [2.0, 3.0, 0.0, 1.0],
        [3.0, 0.0, 1.0, 2.0],
    ])
    labels = np.array([0, 1, 1, 1, 3, 0])
    s = summarize(logits, labels, names)
    json.dumps(s)  # JSON-ready: no numpy types, no NaN
    assert s["count"] == 6
    assert s["top1"] == pytest.approx(4 / 6)
    assert s["top5"] == pytest.approx(1.0)  # k clipped to 4 classes
    assert s["per_class"]["walk"] == {"accuracy": 1.0, "count": 2}
    assert s["per_class"]["run"]["accuracy"] == pytest.approx(2 / 3)
    assert s["per_class"]["jump"] == {"accuracy": None, "count": 0}
    assert s["per_class"]["sit"] == {"accuracy": 0.0, "count": 1}
    assert s["mean_class_accuracy"] == pytest.approx((1 + 2 / 3 + 0) / 3)
    assert s["confusion"] == [[2, 0, 0, 0], [1, 2, 0, 0], [0, 0, 0, 0], [0, 1, 0, 0]]
    with pytest.raises(ValueError, match="class names"):
        summarize(logits, labels, names[:3])


def test_average_views() -> None:
    views = torch.arange(2 * 3 * 4, dtype=torch.float32).reshape(2, 3, 4)
    out = average_views(views)
    assert out.shape == (2, 4)
    torch.testing.assert_close(out[0], torch.tensor([4.0, 5.0, 6.0, 7.0]))
    torch.testing.assert_close(out, views.mean(dim=1))
    # logits are averaged, not probabilities: a confident single view can outvote two mild ones
    v = torch.tensor([[[0.0, 1.0], [0.0, 1.0], [10.0, 0.0]]])
    assert int(average_views(v).argmax()) == 0
    assert average_views(views.half()).dtype == torch.float32
    with pytest.raises(ValueError):
        average_views(views[0])


# --- DDP: two gloo ranks with different data --------------------------------------------------

def _rank_batches(rank: int) -> list[tuple[float, torch.Tensor, torch.Tensor]]:
    """Rank 0 sees 2 batches (3 + 1 samples), rank 1 one batch of 5: uneven on purpose."""
    g = torch.Generator().manual_seed(100 + rank)
    sizes = [3, 1] if rank == 0 else [5]
    out = []
    for i, n in enumerate(sizes):
        logits = torch.randn(n, 7, generator=g)
        labels = torch.randint(0, 7, (n,), generator=g)
        out.append((0.25 + rank + i, logits, labels))
    return out


def _ddp_worker(rank: int, world_size: int, tmp: str) -> None:
    dist.init_process_group("gloo", init_method=f"file://{tmp}/x", rank=rank, world_size=world_size)
    try:
        t = MetricTracker()
        for loss, logits, labels in _rank_batches(rank):
            t.update(loss, logits, labels)
        t.reduce()
        t.reduce()  # second call: no double counting
        result = t.compute()
        try:  # mixing global sums with new local batches would be wrong: refused
            t.update(1.0, logits, labels)
            result["update_after_reduce"] = "accepted"
        except RuntimeError:
            result["update_after_reduce"] = "refused"
        Path(tmp, f"rank{rank}.json").write_text(json.dumps(result))
    finally:
        dist.destroy_process_group()


def test_ddp_reduce_two_ranks(tmp_path: Path) -> None:
    mp.spawn(_ddp_worker, args=(2, str(tmp_path)), nprocs=2, join=True)
    expected = MetricTracker()
    for rank in (0, 1):
        for loss, logits, labels in _rank_batches(rank):
            expected.update(loss, logits, labels)
    want = expected.compute()
    assert want["count"] == 9
    for rank in (0, 1):
        got = json.loads(Path(tmp_path, f"rank{rank}.json").read_text())
        assert got["count"] == want["count"]
        assert got["update_after_reduce"] == "refused"
        for key in ("loss", "top1", "top5"):
            assert got[key] == pytest.approx(want[key]), (rank, key)
