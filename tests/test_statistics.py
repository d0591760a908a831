"""Paired differences with t-intervals, constant-prediction baselines and their standard errors, the task score."""

import math

import numpy as np
import pytest

from basics.stats import direction, paired_difference, seeds_needed, signed, t_quantile
from tasks.baseline import Baseline, constant_baseline, is_learnt
from tasks.metrics import METRICS
from tasks.score import selection_score, task_score
from tasks.task_def import TaskDef

MRPC = TaskDef(name="mrpc", head="classification", loss="cross_entropy", labels=("0", "1"), metrics=("accuracy", "f1"),
               primary="accuracy", files={"train": "x", "dev": "y"}, dev_splits=("dev",))
COLA = TaskDef(name="cola", head="classification", loss="cross_entropy", labels=("0", "1"), metrics=("mcc",),
               primary="mcc", files={"train": "x", "dev": "y"}, dev_splits=("dev",))
STSB = TaskDef(name="stsb", head="regression", loss="mse", labels=(), metrics=("pearson", "spearman"),
               primary="pearson", files={"train": "x", "dev": "y"}, dev_splits=("dev",))
MNLI = TaskDef(name="mnli", head="classification", loss="cross_entropy", labels=("a", "b", "c"), metrics=("accuracy",),
               primary="accuracy", files={"train": "x", "m": "y", "mm": "z"}, dev_splits=("m", "mm"),
               metric_suffix={"m": "_m", "mm": "_mm"})


def test_paired_difference_matches_a_hand_computed_t_interval():
    a = {1: 59.37, 2: 59.32, 3: 59.68}
    b = {3: 59.22, 1: 59.51, 2: 60.03}  # paired by seed, not by order
    d = paired_difference(a, b)
    diffs = [-0.14, -0.71, 0.46]
    mean = sum(diffs) / 3
    sd = math.sqrt(sum((x - mean) ** 2 for x in diffs) / 2)
    half = 4.302652729749462 * sd / math.sqrt(3)  # t(0.975, df=2)
    assert d.n == 3 and d.seeds == (1, 2, 3) and d.mean == pytest.approx(mean)
    assert (d.low, d.high) == (pytest.approx(mean - half), pytest.approx(mean + half))
    assert not d.excludes_zero and d.format() == "−0.13 [−1.58, +1.32]"
    assert t_quantile(1) == pytest.approx(12.7062, abs=1e-4) and t_quantile(30) == pytest.approx(2.0423, abs=1e-4)


def test_seeds_needed_by_hand():
    # differences 1 and -1: sd sqrt(2); n = 12 is the first with t(n-1) sqrt(2) / sqrt(n) <= 0.9
    assert seeds_needed([1.0, -1.0], 0.9) == 12
    assert t_quantile(11) * math.sqrt(2) / math.sqrt(12) <= 0.9 < t_quantile(10) * math.sqrt(2) / math.sqrt(11)
    assert seeds_needed([0.5, 0.5, 0.5], 0.1) is None  # no spread: a pilot that shows none cannot size anything
    assert seeds_needed([3.0], 0.9) is None  # one seed: no spread to size from
    assert seeds_needed([10.0, -10.0], 0.01, limit=50) is None
    with pytest.raises(ValueError, match="half_width"):
        seeds_needed([1.0, 2.0], 0.0)


def test_paired_difference_edge_cases():
    one = paired_difference({1: 80.0, 2: 70.0}, {1: 79.5})
    assert one.n == 1 and one.low is None and one.format() == "+0.50 (n=1)"
    assert paired_difference({1: 1.0}, {2: 1.0}) is None
    clear = paired_difference({1: 5.0, 2: 5.2, 3: 4.9}, {1: 1.0, 2: 1.1, 3: 0.8})
    assert clear.excludes_zero and clear.low > 0
    assert (signed(0.004), signed(-2.5, 1), signed(3, 0)) == ("0.00", "−2.5", "+3")


def test_a_difference_that_is_the_same_on_every_seed_decides_nothing():
    # RTE (277 examples): 165 vs 161 and 170 vs 166 right: +4 examples on both seeds, equal but for the last bits
    same = paired_difference({1: 165 / 277 * 100, 2: 170 / 277 * 100}, {1: 161 / 277 * 100, 2: 166 / 277 * 100})
    assert same.low == same.high and same.no_spread and not same.excludes_zero
    assert direction(same) is None and direction(same.to_dict()) is None
    assert same.format() == "+1.44 (n=2, the same on every seed)"
    assert seeds_needed(same.differences, 0.9) is None
    identical = paired_difference({1: 70.0, 2: 71.0, 3: 69.0}, {1: 70.0, 2: 71.0, 3: 69.0})  # an arm that repeats another
    assert identical.format() == "0.00 (n=3, the same on every seed)" and direction(identical) is None
    spread = paired_difference({1: 5.0, 2: 5.2}, {1: 1.0, 2: 1.0})
    assert not spread.no_spread and direction(spread) == 1 and direction(spread.to_dict()) == 1
    assert direction({"mean": -1.0, "low": -1.8, "high": -0.1}) == -1  # a dict without its differences
    assert direction({"mean": 0.3, "low": -0.5, "high": 1.1}) == 0 and direction(None) is None


def test_task_score_is_the_mean_of_every_metric_and_selection_averages_tasks():
    assert task_score({"accuracy": 70.0, "f1": 80.0}) == 75.0
    assert task_score({"accuracy_m": 80.0, "accuracy_mm": 82.0}) == 81.0
    # best-epoch selection uses the same task score (MRPC: accuracy and F1, not accuracy alone)
    assert selection_score({"mrpc": {"accuracy": 70.0, "f1": 80.0}, "cola": {"mcc": 20.0}}) == 47.5
    with pytest.raises(ValueError):
        task_score({})


def test_constant_baseline_is_the_best_constant_and_uses_the_task_metrics():
    labels = [1] * 279 + [0] * 129  # MRPC dev: 279 paraphrases of 408
    base = constant_baseline(MRPC, {"dev": labels})
    y = np.array(labels)
    want = {"accuracy": METRICS["accuracy"](np.ones(408), y), "f1": METRICS["f1"](np.ones(408), y)}
    assert base.metrics == pytest.approx(want) and base.constant == "1" and base.n == {"dev": 408}
    assert base.score == pytest.approx((68.382 + 81.223) / 2, abs=1e-3)
    p = 279 / 408
    se_acc = 100 * math.sqrt(p * (1 - p) / 408)
    se_f1 = 100 * 2 / (1 + p) ** 2 * math.sqrt(p * (1 - p) / 408)
    assert base.standard_error == pytest.approx((se_acc + se_f1) / 2)
    assert base.label_counts == {"dev": {"0": 129, "1": 279}}
    assert Baseline.from_dict(base.to_dict()) == base
    # every constant is tried: with 25 % positives, "0" scores (75 + 0) / 2 against "1"'s (25 + 40) / 2
    flipped = constant_baseline(MRPC, {"dev": [0] * 300 + [1] * 100})
    assert flipped.constant == "0" and flipped.score == pytest.approx(37.5)
    assert flipped.standard_error == pytest.approx(100 * math.sqrt(0.75 * 0.25 / 400) / 2)  # F1 of "0": no error


def test_correlation_baselines_are_zero_with_the_null_standard_error():
    cola = constant_baseline(COLA, {"dev": [1] * 700 + [0] * 300})
    assert cola.score == 0.0 and cola.constant == "1"  # ties go to the majority class
    assert cola.standard_error == pytest.approx(100 / math.sqrt(999))
    stsb = constant_baseline(STSB, {"dev": list(np.linspace(0, 5, 1500))})
    assert stsb.metrics == {"pearson": 0.0, "spearman": 0.0} and stsb.constant is None
    assert stsb.standard_error == pytest.approx(100 / math.sqrt(1499))
    mnli = constant_baseline(MNLI, {"m": [0] * 5 + [1] * 3 + [2] * 2, "mm": [0] * 4 + [1] * 4 + [2] * 2})
    assert set(mnli.metrics) == {"accuracy_m", "accuracy_mm"} and mnli.score == pytest.approx(45.0)


def test_not_learnt_is_below_baseline_plus_one_standard_error():
    base = constant_baseline(COLA, {"dev": [1] * 700 + [0] * 300})  # threshold 3.16
    assert not is_learnt(3.0, base) and not is_learnt(-5.0, base) and is_learnt(3.2, base)
