"""The one task score, and the metrics of a split.

**Task score** (:func:`task_score`): the mean of *all* of a task's metrics on its dev split(s) —
MRPC accuracy and F1, STS-B Pearson and Spearman, MNLI matched and mismatched accuracy, CoLA MCC,
RTE accuracy. This is the GLUE convention (a task with two metrics counts as their mean), so the
number a table reports for a task is the number every decision was made with. It is used, under
this one definition, everywhere a single number per task is needed:

- best-epoch selection in training (``keep_best``; :func:`selection_score`, the mean over the run's
  tasks of their task scores, on dev or on the held-out slice of train);
- super-ticket selection (``experiments.phase_transition``);
- the GLUE average and every study table (``experiments.glue_table``, phase transition, lottery,
  iterative pruning);
- the "not learnt" test against the constant-prediction baseline (:mod:`tasks.baseline`).

A task's ``primary`` metric (``tasks/glue.yaml``) is its headline metric, kept in the task definition
for reference; it is never used to select or to average.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from tasks.metrics import METRICS
from tasks.squad_metrics import squad_evaluate
from tasks.task_def import TaskDef


def task_score(metrics: Mapping[str, float]) -> float:
    """One number per task: the mean of its metrics (every dev split's, e.g. MNLI ``accuracy_m`` and
    ``accuracy_mm``), in percent."""
    if not metrics:
        raise ValueError("task_score needs at least one metric")
    return sum(metrics.values()) / len(metrics)


def selection_score(metrics: Mapping[str, Mapping[str, float]], tasks: Mapping[str, TaskDef] | None = None) -> float:
    """The number best-epoch selection maximises: the mean over tasks of :func:`task_score`.

    ``metrics``: ``{task: {metric: percent}}``; ``tasks`` is accepted for the caller's convenience and
    not needed (every metric of a task counts).
    """
    scores = [task_score(task_metrics) for task_metrics in metrics.values()]
    return sum(scores) / len(scores)


def compute_metrics(task: TaskDef, preds: Any, labels: Any, split: str) -> dict[str, float]:
    """All of ``task.metrics`` on one split: ``{metric + suffix: percent}``.

    ``preds``/``labels``: ``(N,)`` class indices (classification) or floats (regression); span tasks:
    ``{question id: predicted text}`` and ``{question id: gold texts}`` (the official SQuAD scores,
    :func:`tasks.squad_metrics.squad_evaluate`, v2.0 rules for a task with ``no_answer``).
    The suffix comes from ``task.metric_suffix`` (MNLI: ``accuracy_m`` / ``accuracy_mm``).
    """
    if task.head == "span":
        scores = squad_evaluate(preds, labels, version=squad_version(task))
        return {task.metric_key(name, split): scores[name] for name in task.metrics}
    return {task.metric_key(name, split): METRICS[name](preds, labels) for name in task.metrics}


def squad_version(task: TaskDef) -> int:
    """2 for a span task whose questions may have no answer (SQuAD v2.0 scoring), else 1."""
    return 2 if task.no_answer else 1
