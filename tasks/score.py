"""A task's score from its metrics: what selects the best epoch, the super ticket and fills the GLUE average.

- :func:`task_score`: the mean of a task's metrics (MRPC accuracy and F1, STS-B Pearson and Spearman,
  MNLI m and mm, ...), as in the GLUE average. Super-ticket selection and the tables use it.
- :func:`selection_score`: the mean over tasks of each task's *primary* metric (``primary`` in the
  task definition; averaged over a task's dev splits, e.g. MNLI m/mm). Best-epoch selection uses it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from tasks.metrics import METRICS
from tasks.task_def import TaskDef


def task_score(metrics: Mapping[str, float]) -> float:
    """One number per task: the mean of its metrics."""
    return sum(metrics.values()) / len(metrics)


def primary_score(metrics: Mapping[str, float], task: TaskDef) -> float:
    """The task's primary metric, averaged over its dev splits (``accuracy_m``/``accuracy_mm`` for MNLI)."""
    primary = task.primary
    values = [v for k, v in metrics.items() if k == primary or k.startswith(primary + "_")]
    return sum(values) / len(values)


def selection_score(metrics: Mapping[str, Mapping[str, float]], tasks: Mapping[str, TaskDef]) -> float:
    """Mean over tasks of the primary metric (averaged over a task's dev splits, e.g. MNLI m/mm)."""
    scores = [primary_score(task_metrics, tasks[name]) for name, task_metrics in metrics.items()]
    return sum(scores) / len(scores)


def compute_metrics(task: TaskDef, preds: Any, labels: Any, split: str) -> dict[str, float]:
    """All of ``task.metrics`` on one split: ``{metric + suffix: percent}``.

    ``preds``/``labels``: ``(N,)`` class indices (classification) or floats (regression).
    The suffix comes from ``task.metric_suffix`` (MNLI: ``accuracy_m`` / ``accuracy_mm``).
    """
    return {task.metric_key(name, split): METRICS[name](preds, labels) for name in task.metrics}
