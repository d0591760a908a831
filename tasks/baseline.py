"""The constant-prediction baseline of a task on its dev labels, and when a score is "not learnt".

A model that learnt nothing from the input can still score: predicting the majority class gives
MRPC accuracy 68.4 and F1 81.2. The baseline is the best task score (:func:`tasks.score.task_score`)
any *constant* prediction gets on the dev labels, computed with the task's own metric functions:

- classification: every class is tried as the constant answer; the best task score wins (the dev
  majority class for accuracy; for MRPC "paraphrase", which also gives F1 > 0). MCC of a constant
  is 0;
- regression: a constant has no correlation with the labels: Pearson and Spearman 0.

Its **standard error** is the sampling error of that score over dev sets of this size, per metric
(percent points; ``n`` dev examples of the split):

- accuracy ``b``: ``sqrt(b (1 - b) / n)`` (binomial);
- F1 of the constant positive answer, ``F = 2p / (1 + p)`` with positive share ``p``: the delta
  method, ``2 / (1 + p)² · sqrt(p (1 - p) / n)`` (0 when the constant is the negative class);
- MCC, Pearson, Spearman: ``1 / sqrt(n - 1)``, their standard error at zero correlation;

and of a task score with several metrics, the mean of its metrics' errors (an upper bound: the
metrics are positively correlated). A score is **not learnt** when it is below the baseline plus one
standard error: :func:`is_learnt`. Scores are percentages, like every metric here.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from tasks.metrics import METRICS
from tasks.score import task_score
from tasks.task_def import TaskDef

CORRELATIONS = ("mcc", "pearson", "spearman")


@dataclass(frozen=True)
class Baseline:
    """A task's constant-prediction baseline on its dev split(s).

    ``metrics``: ``{metric key: percent}`` of the best constant; ``score``: its task score;
    ``standard_error``: of that score over dev sets of this size (percent points); ``constant``: the
    class label predicted (classification) or ``None``; ``n``: dev examples per split;
    ``label_counts``: per split, ``{label: count}`` (classification).
    """

    task: str
    metrics: dict[str, float]
    score: float
    standard_error: float
    constant: str | None
    n: dict[str, int]
    label_counts: dict[str, dict[str, int]] = field(default_factory=dict)

    @property
    def threshold(self) -> float:
        """Scores below this are "not learnt": baseline + one standard error."""
        return self.score + self.standard_error

    def to_dict(self) -> dict:
        return {"task": self.task, "metrics": self.metrics, "score": self.score,
                "standard_error": self.standard_error, "threshold": self.threshold, "constant": self.constant,
                "n": self.n, "label_counts": self.label_counts}

    @classmethod
    def from_dict(cls, data: Mapping) -> "Baseline":
        return cls(task=data["task"], metrics=dict(data["metrics"]), score=float(data["score"]),
                   standard_error=float(data["standard_error"]), constant=data.get("constant"),
                   n={k: int(v) for k, v in data["n"].items()},
                   label_counts={k: dict(v) for k, v in data.get("label_counts", {}).items()})


def is_learnt(score: float, baseline: Baseline) -> bool:
    """True when ``score`` (percent) is at least one dev-set standard error above the baseline."""
    return score >= baseline.threshold


def metric_standard_error(metric: str, value: float, labels: np.ndarray, constant: object) -> float:
    """Standard error (percent points) of ``metric`` for the constant prediction that scored ``value``."""
    n = len(labels)
    if metric in CORRELATIONS:
        return 100.0 / math.sqrt(max(n - 1, 1))
    if metric == "accuracy":
        b = value / 100.0
        return 100.0 * math.sqrt(b * (1 - b) / n)
    if metric == "f1":
        if constant != 1:  # the negative answer has F1 0 whatever the sample
            return 0.0
        p = float(np.mean(labels == 1))
        return 100.0 * 2.0 / (1.0 + p) ** 2 * math.sqrt(p * (1 - p) / n)
    raise KeyError(f"no standard error for metric {metric!r}; known: accuracy, f1, {', '.join(CORRELATIONS)}")


def constant_baseline(task: TaskDef, labels: Mapping[str, Sequence]) -> Baseline:
    """The best constant prediction's metrics on ``labels`` (``{dev split: labels}``, class indices or
    floats as the readers give them), its task score and standard error."""
    arrays = {split: np.asarray(values) for split, values in labels.items()}
    if task.head == "classification":  # the most frequent class first: it wins ties (CoLA: MCC 0 for every constant)
        pooled = np.concatenate(list(arrays.values()))
        candidates = sorted(range(task.num_labels), key=lambda c: -int(np.sum(pooled == c)))
    else:
        candidates = [0.0]  # any constant: no correlation with the labels (0.0 keeps the arithmetic exact)
    best = None
    for constant in candidates:
        metrics, errors = {}, []
        for split, y in arrays.items():
            preds = np.full(len(y), constant)
            for name in task.metrics:
                value = METRICS[name](preds, y)
                metrics[task.metric_key(name, split)] = value
                errors.append(metric_standard_error(name, value, y, constant))
        score = task_score(metrics)
        if best is None or score > best[0]:
            best = (score, metrics, sum(errors) / len(errors), constant)
    score, metrics, error, constant = best
    counts = {}
    if task.head == "classification":
        counts = {split: {task.labels[i]: int(np.sum(y == i)) for i in range(task.num_labels)}
                  for split, y in arrays.items()}
    return Baseline(task=task.name, metrics=metrics, score=score, standard_error=error,
                    constant=task.labels[constant] if task.head == "classification" else None,
                    n={split: len(y) for split, y in arrays.items()}, label_counts=counts)
