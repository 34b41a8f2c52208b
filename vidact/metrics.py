"""Classification metrics: top-k counts, an epoch accumulator that survives DDP, confusion
matrices, JSON-ready summaries and the multi-view TTA rule.

Pure torch/numpy, no I/O: the training loop and `vidact.evaluate` feed logits in and write
what comes out. Accuracies are fractions in ``[0, 1]`` everywhere (plots turn them into
percent).

:class:`MetricTracker` keeps its running sums as a small float64 tensor on the device of the
logits, so ``update`` never forces a host-device sync inside the training loop; the one sync
happens in :meth:`MetricTracker.compute`.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence

import numpy as np
import torch

# Layout of MetricTracker's sum vector (and of the tensor all-reduced across ranks).
_LOSS_SUM, _CORRECT1, _CORRECT5, _COUNT = range(4)


def _as_tensor(x: torch.Tensor | np.ndarray | Sequence) -> torch.Tensor:
    """`x` as a tensor (numpy arrays and lists are converted, tensors passed through)."""
    return x if isinstance(x, torch.Tensor) else torch.as_tensor(np.asarray(x))


def hard_labels(labels: torch.Tensor, num_classes: int | None = None) -> torch.Tensor:
    """Class ids ``(B,)`` from hard labels ``(B,)`` or soft/mixup targets ``(B, C)``.

    For soft targets the class is the argmax of the target (the dominant class of a mixup pair),
    which is how accuracy is counted under mixup.
    """
    if labels.ndim == 2:
        if num_classes is not None and labels.shape[1] != num_classes:
            raise ValueError(f"soft targets have {labels.shape[1]} classes, logits have {num_classes}")
        return labels.argmax(dim=1)
    if labels.ndim != 1:
        raise ValueError(f"labels must be (B,) class ids or (B, C) soft targets, got shape {tuple(labels.shape)}")
    return labels.long()


def _topk_correct_tensor(logits: torch.Tensor, labels: torch.Tensor, ks: Iterable[int]) -> dict[int, torch.Tensor]:
    """Like :func:`topk_correct` but the counts stay 0-d tensors on the logits' device (no sync)."""
    if logits.ndim != 2:
        raise ValueError(f"logits must be (B, C), got shape {tuple(logits.shape)}")
    batch, num_classes = logits.shape
    labels = hard_labels(labels.to(logits.device), num_classes)
    if labels.shape[0] != batch:
        raise ValueError(f"{batch} logits but {labels.shape[0]} labels")
    ks = [int(k) for k in ks]
    if any(k < 1 for k in ks):
        raise ValueError(f"k must be >= 1, got {ks}")
    if batch == 0 or num_classes == 0:
        zero = torch.zeros((), dtype=torch.long, device=logits.device)
        return {k: zero for k in ks}
    kmax = min(max(ks), num_classes)
    top = logits.detach().topk(kmax, dim=1).indices  # (B, kmax), best first
    hits = top == labels[:, None]
    # A label appears at most once among the top-k, so the hits up to column k count the samples.
    cum = hits.cumsum(dim=1).sum(dim=0)  # (kmax,): samples correct within the top-(j+1)
    return {k: cum[min(k, num_classes) - 1] for k in ks}


def topk_correct(logits: torch.Tensor, labels: torch.Tensor, ks: Iterable[int] = (1, 5)) -> dict[int, int]:
    """Number of samples whose label is among the `k` highest logits, for each `k` in `ks`.

    `k` is clipped to the number of classes, so top-5 over 3 classes counts every sample.
    `labels` are class ids ``(B,)``; soft targets ``(B, C)`` count by their argmax.
    """
    return {k: int(v) for k, v in _topk_correct_tensor(_as_tensor(logits), _as_tensor(labels), ks).items()}


class MetricTracker:
    """Accumulates loss and top-1/top-5 over the batches of an epoch.

    ``update`` takes the batch-mean loss, so the epoch loss is weighted by batch size (a short
    last batch counts for what it holds). Under DDP every rank updates with its own batches and
    then calls :meth:`reduce` (a collective: all ranks must call it) so that each rank's
    :meth:`compute` gives the global numbers.
    """

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        """Forgets everything: start of a new epoch / evaluation pass."""
        self._sums: torch.Tensor | None = None
        self._reduced = False

    def _ensure(self, device: torch.device) -> torch.Tensor:
        if self._sums is None:
            self._sums = torch.zeros(4, dtype=torch.float64, device=device)
        return self._sums

    def update(self, loss: float | torch.Tensor, logits: torch.Tensor, labels: torch.Tensor) -> None:
        """Adds one batch: `loss` is its mean loss, `logits` ``(B, C)``, `labels` ``(B,)`` ids
        or ``(B, C)`` soft (mixup) targets."""
        if self._reduced:
            raise RuntimeError("MetricTracker.update after reduce(): call reset() to start a new pass")
        logits = _as_tensor(logits)
        n = logits.shape[0]
        if n == 0:
            return
        correct = _topk_correct_tensor(logits, _as_tensor(labels), (1, 5))
        sums = self._ensure(logits.device)
        if sums.device != logits.device:
            raise ValueError(f"MetricTracker holds sums on {sums.device}, got logits on {logits.device}")
        # In-place adds of device tensors and Python scalars: no host<->device copy, no sync.
        if isinstance(loss, torch.Tensor):
            sums[_LOSS_SUM] += loss.detach().to(sums.device, torch.float64).reshape(()) * n
        else:
            sums[_LOSS_SUM] += float(loss) * n
        sums[_CORRECT1] += correct[1]
        sums[_CORRECT5] += correct[5]
        sums[_COUNT] += n

    def reduce(self, device: torch.device | str | None = None) -> MetricTracker:
        """Sums the counters of all ranks in place (one float64 all-reduce) so every rank's
        :meth:`compute` is global; a no-op when ``torch.distributed`` is not initialized.

        `device` is where the all-reduce runs; by default the current CUDA device for NCCL and
        the CPU otherwise. Calling it twice without :meth:`reset` is a no-op the second time.
        """
        dist = torch.distributed
        if not (dist.is_available() and dist.is_initialized()) or self._reduced:
            return self
        if device is None:
            backend = str(dist.get_backend()).lower()
            device = torch.device("cuda", torch.cuda.current_device()) if "nccl" in backend else torch.device("cpu")
        device = torch.device(device)
        sums = self._ensure(device).to(device)
        dist.all_reduce(sums, op=dist.ReduceOp.SUM)
        self._sums = sums
        self._reduced = True
        return self

    def state_dict(self) -> dict:
        """The running sums (for a checkpoint taken in the middle of an epoch)."""
        return {"sums": None if self._sums is None else self._sums.detach().cpu().clone()}

    def load_state_dict(self, state: dict, device: torch.device | str = "cpu") -> None:
        self.reset()
        if state.get("sums") is not None:
            self._sums = state["sums"].to(device, torch.float64)

    def compute(self) -> dict[str, float | int]:
        """``{"loss", "top1", "top5", "count"}``: sample-weighted mean loss, top-1/top-5 as
        fractions, number of samples. With no samples the means are NaN and count is 0."""
        if self._sums is None:
            return {"loss": math.nan, "top1": math.nan, "top5": math.nan, "count": 0}
        loss_sum, c1, c5, n = self._sums.tolist()
        if n == 0:
            return {"loss": math.nan, "top1": math.nan, "top5": math.nan, "count": 0}
        return {"loss": loss_sum / n, "top1": c1 / n, "top5": c5 / n, "count": int(round(n))}


def confusion_matrix(preds: torch.Tensor | np.ndarray | Sequence[int],
                     labels: torch.Tensor | np.ndarray | Sequence[int], num_classes: int) -> np.ndarray:
    """``(C, C)`` int64 counts: rows are the true class, columns the predicted class."""
    p = np.asarray(preds.cpu() if isinstance(preds, torch.Tensor) else preds).astype(np.int64).ravel()
    t = np.asarray(labels.cpu() if isinstance(labels, torch.Tensor) else labels).astype(np.int64).ravel()
    if p.shape != t.shape:
        raise ValueError(f"{p.size} predictions but {t.size} labels")
    for name, v in (("label", t), ("prediction", p)):
        bad = (v < 0) | (v >= num_classes)
        if bad.any():
            raise ValueError(f"{name} {int(v[bad][0])} outside [0, {num_classes}) (unlabeled samples have no "
                             f"confusion matrix)")
    return np.bincount(t * num_classes + p, minlength=num_classes * num_classes).reshape(num_classes, num_classes)


def per_class_accuracy(cm: np.ndarray) -> np.ndarray:
    """Recall of every class (diagonal over row sums); NaN for classes with no samples."""
    cm = np.asarray(cm, dtype=np.float64)
    totals = cm.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(totals > 0, np.diag(cm) / np.where(totals > 0, totals, 1), np.nan)


def summarize(logits: np.ndarray | torch.Tensor, labels: np.ndarray | torch.Tensor | Sequence[int],
              class_names: Sequence[str]) -> dict:
    """JSON-ready evaluation report of ``(N, C)`` logits against ``(N,)`` labels.

    Keys: ``top1``, ``top5`` (fractions; None when N = 0), ``count``, ``mean_class_accuracy``
    (mean over classes that have samples), ``per_class`` (``{name: {"accuracy": float | None,
    "count": int}}``, None for a class with no samples) and ``confusion`` (rows true, columns
    predicted, as lists of ints).
    """
    logits_t = _as_tensor(logits).detach().cpu().float()
    labels_t = hard_labels(_as_tensor(labels).detach().cpu())
    if logits_t.ndim != 2:
        raise ValueError(f"logits must be (N, C), got shape {tuple(logits_t.shape)}")
    num_classes = len(class_names)
    if logits_t.shape[1] != num_classes:
        raise ValueError(f"logits have {logits_t.shape[1]} classes but {num_classes} class names were given")
    if len(set(class_names)) != num_classes:
        raise ValueError("class names are not unique")
    n = int(logits_t.shape[0])
    correct = topk_correct(logits_t, labels_t, (1, 5))
    preds = logits_t.argmax(dim=1) if n else torch.zeros(0, dtype=torch.long)
    cm = confusion_matrix(preds, labels_t, num_classes)
    acc = per_class_accuracy(cm)
    counts = cm.sum(axis=1)
    has = ~np.isnan(acc)
    return {
        "top1": correct[1] / n if n else None,
        "top5": correct[5] / n if n else None,
        "count": n,
        "mean_class_accuracy": float(acc[has].mean()) if has.any() else None,
        "per_class": {name: {"accuracy": None if math.isnan(a) else float(a), "count": int(c)}
                      for name, a, c in zip(class_names, acc.tolist(), counts.tolist())},
        "confusion": cm.tolist(),
    }


def average_views(logits: torch.Tensor) -> torch.Tensor:
    """Multi-view TTA: ``(B, V, C)`` view logits -> ``(B, C)`` clip logits by the mean over views.

    This is the VideoMAE recipe's 6-view rule (``logits.view(B, V, -1).mean(dim=1)`` before the argmax):
    logits are averaged, not softmax probabilities, so prediction parity with that system holds.
    Half-precision logits are averaged in float32.
    """
    if logits.ndim != 3:
        raise ValueError(f"view logits must be (B, V, C), got shape {tuple(logits.shape)}")
    if logits.shape[1] == 0:
        raise ValueError("no views to average")
    if logits.dtype in (torch.float16, torch.bfloat16):
        logits = logits.float()
    return logits.mean(dim=1)
