"""Estimated run times, for ``--dry-run`` and the study's ETA.

A training run's time is its training examples (after ``max_train_samples`` and the held-out slice) times
its epochs, divided by a throughput in examples per second per core. The throughput starts from the
measured epoch times below (MiniLM, one core, bf16, 128 tokens; ``experiments/results/
single_task_quality/``) and is replaced by the study's own measurements as its runs finish (every
finished run records ``train_examples`` and ``train_seconds``), the closest first:

1. finished runs of the same row: the same options but the seed (and masks, which do not change the cost
   of a gated run): their seconds per training example;
2. else finished runs of the same model on the same tasks (a multi-task run's mix of tasks included);
3. else, per task, finished single-task runs of the same model;
4. else, per task, finished single-task runs of any model, then the table.

So the seeds and settings of one row of a study (a smaller student, a compacted model) are costed from
that row's own first run, not from the teacher's. Each is the median over the runs, as a run that was
paused (a study stopped while CI ran, a suspended machine) records hours it did not compute.

Only runs measured on the kind of machine the estimate is for count: a CPU estimate learns from CPU runs, a
GPU estimate from runs on that GPU (each run's ``results.json`` names its accelerator). A study whose first
runs were trained on a lent GPU would otherwise cost its CPU runs at GPU speed, and ``--time-limit`` would
start runs that cannot finish.
"""

from __future__ import annotations

import statistics
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from experiments.engine.jobs import Job
from mtl.config import TrainConfig, option_roles
from mtl.rundir import RunDir
from tasks.readers import split_path
from tasks.registry import default_registry

# examples per second on one core: one full-data epoch took RTE ~100 s (2490 examples), MRPC ~130 s (3668),
# STS-B ~145 s (5749), CoLA ~140 s (8551), SST-2 ~1100 s (67349)
MEASURED_RATE = {"rte": 24.9, "mrpc": 28.2, "stsb": 39.6, "cola": 61.1, "sst2": 61.2}
DEFAULT_RATE = 30.0  # a task not measured above
EVAL_OVERHEAD = 1.1  # evaluation and start-up, on top of training (a measured run's own wall time replaces it)


def _train_rows(task: str, config: TrainConfig, cache: dict[str, int], missing: dict[str, str]) -> int | None:
    """Training examples of ``task`` in ``config``'s data (rows of its train file), or None if unknown (then
    ``missing[task]`` says why)."""
    if task not in cache:
        why = "no task definition"
        try:
            registry = default_registry([Path(p).expanduser() for p in config.data.task_def])
            definition = registry.get(task)
            glue_dir = config.resolved_glue_dir()
            why = f"not in {glue_dir}" if glue_dir is not None else "read from the Hugging Face hub: not counted"
            path = split_path(definition, glue_dir, "train")
            why = f"not in {path}"
            with path.open("rb") as f:
                rows = sum(1 for line in f if line.strip())
            cache[task] = rows - (1 if definition.header and definition.format != "jsonl" else 0)
        except Exception:  # noqa: BLE001 - an estimate only: unknown stays unknown, and says why
            cache[task] = -1
            missing[task] = why
    return cache[task] if cache[task] >= 0 else None


Signature = tuple[str, tuple[str, ...]]  # (model, tasks in the run's order)
COSTED_ROLES = ("result", "scoring")  # the options that can change what a run costs (basics.options.ROLES)


def signature(config: TrainConfig) -> Signature:
    return config.model.name, tuple(config.data.tasks)


def _canonical(value: Any) -> Any:
    """A value as a run's saved ``config.yaml`` reads back: numbers as floats (1 and 1.0 are one option)."""
    if isinstance(value, bool) or not isinstance(value, (int, float, list, tuple)):
        return value
    return [_canonical(v) for v in value] if isinstance(value, (list, tuple)) else float(value)


def row(config: TrainConfig) -> tuple[tuple[str, str], ...]:
    """The run's options that change its cost, but its seed: the seeds of one row of a study share it."""
    roles = option_roles()
    return tuple(sorted((k, repr(_canonical(v))) for k, v in config.to_dict().items()
                        if roles[k] in COSTED_ROLES and k != "seed"))


def accelerator_of(machine: dict[str, Any]) -> str | None:
    """The GPU a run's ``results.json`` ``machine`` names, or None for a CPU run (and for a run without one)."""
    return machine.get("cuda") or None


def _typical(values: dict[str, float]) -> float:
    """The median: a run paused for hours (a machine suspended, a study stopped for CI) is an outlier, not a rate."""
    return statistics.median(values.values())


class CostModel:
    """Seconds a training job takes on one core (``threads_per_run`` cores divide it, up to a point)."""

    def __init__(self, threads_per_run: int = 1, accelerator: str | None = None) -> None:
        self.accelerator = accelerator  # the GPU's name the estimates are for (None: CPU)
        self.rates = dict(MEASURED_RATE)  # task -> examples/s before anything is measured
        self.threads = max(1, threads_per_run)
        self._rows: dict[str, int] = {}
        self.missing: dict[str, str] = {}  # task -> why its training data was not counted
        # what finished runs measured, by run directory (a run learnt twice counts once)
        # (one-core seconds per training example: times add up, so they are what is averaged)
        self._row: dict[tuple, dict[str, float]] = {}
        self._per_example: dict[Signature, dict[str, float]] = {}
        self._model_task: dict[tuple[str, str], dict[str, float]] = {}  # single-task runs, (model, task)
        self._task: dict[str, dict[str, float]] = {}  # single-task runs of any model

    def learn(self, runs: Iterable[RunDir]) -> None:
        """Add the throughput of these finished runs to what the estimates use (module docstring)."""
        for run in runs:
            if not run.finished:
                continue
            result = run.result()
            if not (result.train_seconds and result.train_examples):
                continue
            if accelerator_of(result.machine) != self.accelerator:
                continue  # another kind of machine: its times say nothing of this one's
            config = run.config()
            threads = config.runtime.num_threads or 1
            wall = result.wall_seconds
            # the run's whole time (evaluation and start-up too) when it has one (a resumed run's may not)
            seconds = wall if wall and wall >= result.train_seconds else result.train_seconds * EVAL_OVERHEAD
            per_example = seconds * min(threads, 2) ** 0.5 / result.train_examples  # one core's
            key = str(run.path.resolve())
            self._row.setdefault(row(config), {})[key] = per_example
            self._per_example.setdefault(signature(config), {})[key] = per_example
            if len(config.data.tasks) == 1:
                task = config.data.tasks[0]
                self._model_task.setdefault((config.model.name, task), {})[key] = per_example
                self._task.setdefault(task, {})[key] = per_example

    def per_example(self, model: str, task: str) -> float:
        """One core's seconds per training example of ``model`` on ``task``, evaluation included (rules 3-4)."""
        measured = self._model_task.get((model, task)) or self._task.get(task)
        return _typical(measured) if measured else EVAL_OVERHEAD / self.rates.get(task, DEFAULT_RATE)

    def examples(self, config: TrainConfig) -> dict[str, float]:
        out = {}
        for task in config.data.tasks:
            rows = _train_rows(task, config, self._rows, self.missing)
            if rows is None:
                continue
            if config.data.max_train_samples is not None:
                rows = min(rows, config.data.max_train_samples)
            out[task] = rows * (1 - config.data.holdout_fraction)
        return out

    def seconds(self, job: Job) -> float | None:
        """Estimated seconds of a training job (None for unknown data); a step's own estimate (None: none)."""
        if job.config is None:
            return None if job.seconds is None else job.seconds / self.threads ** 0.5
        examples = self.examples(job.config)
        if len(examples) != len(job.config.data.tasks):
            return None
        epochs = job.config.optim.epochs
        measured = self._row.get(row(job.config)) or self._per_example.get(signature(job.config))
        if measured:
            total = sum(examples.values()) * epochs * _typical(measured)
        else:
            model = job.config.model.name
            total = sum(n * epochs * self.per_example(model, task) for task, n in examples.items())
        return total / self.threads ** 0.5


def duration(seconds: float | None) -> str:
    if seconds is None:
        return "?"
    seconds = int(round(seconds))
    h, rest = divmod(seconds, 3600)
    return f"{h}h{rest // 60:02d}m" if h else f"{rest // 60}m{rest % 60:02d}s"
