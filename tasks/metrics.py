"""GLUE metrics in numpy, reported in percent (0-100) as in the GLUE paper tables.

Every metric takes ``preds`` and ``labels`` of shape ``(N,)`` as lists, numpy arrays or
torch tensors (any device). Classification metrics expect class indices (not logits);
regression metrics expect floats (``(N, 1)`` is flattened).
"""

from __future__ import annotations

from typing import Any, Callable

import numpy as np


def _as_array(values: Any, what: str) -> np.ndarray:
    """Return ``values`` as a flat 1-D numpy array (torch tensors are detached, moved to CPU)."""
    if hasattr(values, "detach"):  # torch.Tensor, without importing torch
        values = values.detach().cpu().numpy()
    array = np.asarray(values)
    if array.ndim == 2 and array.shape[1] == 1:
        array = array[:, 0]
    if array.ndim != 1:
        raise ValueError(
            f"{what} must have shape (N,), got {array.shape}; "
            "for classification pass class indices (logits.argmax(-1)), not logits"
        )
    return array


def _pair(preds: Any, labels: Any) -> tuple[np.ndarray, np.ndarray]:
    """Validate and convert a (preds, labels) pair to equally long 1-D arrays."""
    p, y = _as_array(preds, "preds"), _as_array(labels, "labels")
    if len(p) != len(y):
        raise ValueError(f"preds and labels differ in length: {len(p)} vs {len(y)}")
    if len(p) == 0:
        raise ValueError("cannot compute a metric on zero examples")
    return p, y


def accuracy(preds: Any, labels: Any) -> float:
    """Percentage of ``preds`` equal to ``labels`` (class indices)."""
    p, y = _pair(preds, labels)
    return float(np.mean(p == y) * 100.0)


def f1(preds: Any, labels: Any) -> float:
    """Binary F1 in percent, positive class = index 1; 0 when there are no positives at all."""
    p, y = _pair(preds, labels)
    tp = float(np.sum((p == 1) & (y == 1)))
    fp = float(np.sum((p == 1) & (y != 1)))
    fn = float(np.sum((p != 1) & (y == 1)))
    if tp + fp + fn == 0:
        return 0.0
    return 100.0 * 2.0 * tp / (2.0 * tp + fp + fn)


def mcc(preds: Any, labels: Any) -> float:
    """Matthews correlation coefficient * 100 (multi-class form); 0 when undefined.

    Undefined means a constant prediction or a constant label vector (zero denominator).
    """
    p, y = _pair(preds, labels)
    classes, inverse = np.unique(np.concatenate([y, p]), return_inverse=True)
    y_idx, p_idx = inverse[: len(y)], inverse[len(y):]
    confusion = np.zeros((len(classes), len(classes)), dtype=np.float64)  # (true, pred)
    np.add.at(confusion, (y_idx, p_idx), 1.0)
    t_k, p_k = confusion.sum(axis=1), confusion.sum(axis=0)
    correct, n = np.trace(confusion), confusion.sum()
    cov_yp = correct * n - t_k @ p_k
    cov_pp = n * n - p_k @ p_k
    cov_yy = n * n - t_k @ t_k
    if cov_pp == 0 or cov_yy == 0:
        return 0.0
    return float(100.0 * cov_yp / np.sqrt(cov_pp * cov_yy))


def pearson(preds: Any, labels: Any) -> float:
    """Pearson correlation * 100; 0 when undefined (constant preds or labels)."""
    p, y = _pair(preds, labels)
    return _correlation(p.astype(np.float64), y.astype(np.float64))


def _correlation(x: np.ndarray, y: np.ndarray) -> float:
    """Pearson r * 100 of two float64 vectors; 0 when either is constant."""
    xc, yc = x - x.mean(), y - y.mean()
    denom = np.sqrt(np.sum(xc * xc) * np.sum(yc * yc))
    if denom == 0 or not np.isfinite(denom):
        return 0.0
    return float(100.0 * np.clip(np.sum(xc * yc) / denom, -1.0, 1.0))


def _average_ranks(x: np.ndarray) -> np.ndarray:
    """1-based ranks of ``x``; tied values share the mean of their ranks (scipy ``rankdata``)."""
    order = np.argsort(x, kind="mergesort")
    sorted_x = x[order]
    # start of each run of equal values in sorted order
    starts = np.flatnonzero(np.r_[True, sorted_x[1:] != sorted_x[:-1]])
    ends = np.r_[starts[1:], len(x)]  # exclusive
    run_rank = (starts + ends + 1) / 2.0  # mean of ranks starts+1 .. ends
    ranks = np.empty(len(x), dtype=np.float64)
    ranks[order] = np.repeat(run_rank, ends - starts)
    return ranks


def spearman(preds: Any, labels: Any) -> float:
    """Spearman rank correlation * 100 (average ranks for ties); 0 when undefined."""
    p, y = _pair(preds, labels)
    return _correlation(_average_ranks(p), _average_ranks(y))


METRICS: dict[str, Callable[[Any, Any], float]] = {
    "accuracy": accuracy,
    "f1": f1,
    "mcc": mcc,
    "pearson": pearson,
    "spearman": spearman,
}
"""Metric name (as written in task YAML files) -> function(preds, labels) -> percent."""

CLASSIFICATION_METRICS: tuple[str, ...] = ("accuracy", "f1", "mcc")
REGRESSION_METRICS: tuple[str, ...] = ("pearson", "spearman")
