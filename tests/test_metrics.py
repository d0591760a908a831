"""Metrics against hand-computed values, degenerate cases, input types, and scipy/sklearn."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tasks.metrics import (
    METRICS,
    _average_ranks,
    accuracy,
    f1,
    mcc,
    pearson,
    spearman,
)
from tasks.registry import default_registry
from tasks.score import compute_metrics

# (metric, preds, labels, expected percent), each worked out by hand in the comment
HAND_CASES = [
    ("accuracy", [0, 1, 1, 0], [0, 1, 0, 0], 75.0),
    # tp=2 fp=1 fn=1: 2*2 / (2*2 + 1 + 1)
    ("f1", [1, 1, 0, 0, 1], [1, 0, 0, 1, 1], 200 / 3),
    ("f1", [0, 0, 0], [0, 0, 0], 0.0),  # no positives anywhere
    ("f1", [1, 1], [0, 0], 0.0),
    # tp=2 tn=1 fp=1 fn=1: (2*1 - 1*1) / sqrt(3*3*2*2) = 1/6
    ("mcc", [1, 1, 0, 0, 1], [1, 0, 0, 1, 1], 100 / 6),
    ("mcc", [1, 0, 1, 0], [1, 0, 1, 0], 100.0),
    ("mcc", [0, 1, 0, 1], [1, 0, 1, 0], -100.0),
    ("mcc", [1, 1, 1, 1], [1, 0, 1, 0], 0.0),  # constant prediction: undefined -> 0
    ("mcc", [1, 0, 1, 0], [1, 1, 1, 1], 0.0),  # constant labels: undefined -> 0
    ("pearson", [1, 2, 3, 4], [2, 4, 6, 8], 100.0),
    ("pearson", [1, 2, 3, 4], [4, 3, 2, 1], -100.0),
    # centred x=(-1,0,1) y=(-1,1,0): 1 / sqrt(2*2)
    ("pearson", [1, 2, 3], [1, 3, 2], 50.0),
    ("pearson", [2.0, 2.0, 2.0], [1.0, 2.0, 3.0], 0.0),  # constant: undefined -> 0
    # ranks x=(1,2.5,2.5,4) y=(1,3,2,4): centred dot 4.5 / sqrt(4.5*5)
    ("spearman", [1, 2, 2, 3], [1, 3, 2, 4], 100 * 4.5 / np.sqrt(22.5)),
    ("spearman", [10, 20, 30, 40], [1, 4, 9, 16], 100.0),  # monotone, not linear
]


@pytest.mark.parametrize("name, preds, labels, expected", HAND_CASES)
def test_metric_matches_hand_computed_value(name, preds, labels, expected):
    assert METRICS[name](preds, labels) == pytest.approx(expected, abs=1e-9)


def test_average_ranks_share_the_mean_rank_of_ties():
    assert _average_ranks(np.array([3.0, 1.0, 3.0, 2.0, 3.0])).tolist() == [4.0, 1.0, 4.0, 2.0, 4.0]


@pytest.mark.parametrize("convert", [list, np.array, torch.tensor], ids=["list", "numpy", "torch"])
def test_metrics_accept_lists_arrays_and_tensors(convert):
    preds, labels = convert([1, 0, 1, 1]), convert([1, 0, 0, 1])
    assert accuracy(preds, labels) == 75.0
    assert isinstance(mcc(preds, labels), float)


def test_regression_metrics_accept_column_vectors_and_grad_tensors():
    preds = torch.tensor([[0.1], [0.5], [0.2], [0.9]], requires_grad=True)  # (N, 1) head output
    labels = torch.tensor([0.0, 3.0, 1.0, 5.0])
    assert pearson(preds, labels) > 90.0
    assert spearman(preds, labels) == pytest.approx(100.0)


@pytest.mark.parametrize("preds, labels, match", [
    ([0, 1], [0, 1, 1], "differ in length"),
    ([], [], "zero examples"),
    (np.zeros((4, 3)), [0, 1, 2, 0], "argmax"),  # logits instead of class indices
])
def test_bad_inputs_raise_value_error(preds, labels, match):
    with pytest.raises(ValueError, match=match):
        accuracy(preds, labels)


def test_compute_metrics_uses_task_metrics_and_split_suffix():
    registry = default_registry()
    mnli, mrpc, stsb = registry.get("mnli"), registry.get("mrpc"), registry.get("stsb")
    assert compute_metrics(mnli, [0, 1, 2, 2], [0, 1, 2, 1], "dev_mismatched") == {"accuracy_mm": 75.0}
    assert set(compute_metrics(mnli, [0], [0], "dev_matched")) == {"accuracy_m"}
    assert set(compute_metrics(mrpc, [1, 0], [1, 1], "dev")) == {"accuracy", "f1"}
    scores = compute_metrics(stsb, [0.5, 2.0, 4.5], [1.0, 2.0, 5.0], "dev")
    assert scores == {"pearson": pytest.approx(pearson([0.5, 2.0, 4.5], [1.0, 2.0, 5.0])), "spearman": 100.0}


def _random_cases(seed: int, n: int = 200, classes: int = 2):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, classes, n)
    preds = np.where(rng.random(n) < 0.7, labels, rng.integers(0, classes, n))
    return preds, labels


@pytest.mark.parametrize("seed", range(5))
def test_agrees_with_scipy(seed):
    stats = pytest.importorskip("scipy.stats")
    preds, labels = _random_cases(seed)
    # binary MCC is the phi coefficient: Pearson correlation of the 0/1 vectors
    assert mcc(preds, labels) == pytest.approx(100 * stats.pearsonr(preds, labels)[0])
    # F1 is the harmonic mean of precision and recall
    tp = np.sum((preds == 1) & (labels == 1))
    precision, recall = tp / np.sum(preds == 1), tp / np.sum(labels == 1)
    assert f1(preds, labels) == pytest.approx(100 * stats.hmean([precision, recall]))
    rng = np.random.default_rng(seed)
    x = rng.integers(0, 6, 300).astype(float)  # many ties, like STS-B scores
    y = x + rng.normal(0, 2, 300)
    assert spearman(x, y) == pytest.approx(100 * stats.spearmanr(x, y)[0])
    assert pearson(x, y) == pytest.approx(100 * stats.pearsonr(x, y)[0])


@pytest.mark.parametrize("seed", range(3))
def test_agrees_with_sklearn(seed):
    skm = pytest.importorskip("sklearn.metrics")
    preds, labels = _random_cases(seed, classes=3)
    assert mcc(preds, labels) == pytest.approx(100 * skm.matthews_corrcoef(labels, preds))
    preds, labels = _random_cases(seed)
    assert f1(preds, labels) == pytest.approx(100 * skm.f1_score(labels, preds))
    assert accuracy(preds, labels) == pytest.approx(100 * skm.accuracy_score(labels, preds))
