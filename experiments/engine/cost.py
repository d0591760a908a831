"""Estimated run times, for ``--dry-run`` and the study's ETA.

A training run's time is its training examples (after ``max_train_samples`` and the held-out slice) times
its epochs, divided by a throughput in examples per second per core. The throughput starts from the
measured epoch times below (MiniLM, one core, bf16, 128 tokens; ``experiments/results/
single_task_quality/``) and is replaced by the study's own measurements as its runs finish (every
finished run records ``train_examples`` and ``train_seconds``).
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from experiments.engine.jobs import Job
from mtl.config import TrainConfig
from mtl.rundir import RunDir
from tasks.readers import split_path
from tasks.registry import default_registry

# examples per second on one core: one full-data epoch took RTE ~100 s (2490 examples), MRPC ~130 s (3668),
# STS-B ~145 s (5749), CoLA ~140 s (8551), SST-2 ~1100 s (67349)
MEASURED_RATE = {"rte": 24.9, "mrpc": 28.2, "stsb": 39.6, "cola": 61.1, "sst2": 61.2}
DEFAULT_RATE = 30.0  # a task not measured above
EVAL_OVERHEAD = 1.1  # evaluation and start-up, on top of training


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


class CostModel:
    """Seconds a training job takes on one core (``threads_per_run`` cores divide it, up to a point)."""

    def __init__(self, threads_per_run: int = 1) -> None:
        self.rates = dict(MEASURED_RATE)
        self.threads = max(1, threads_per_run)
        self._rows: dict[str, int] = {}
        self.missing: dict[str, str] = {}  # task -> why its training data was not counted

    def learn(self, runs: Iterable[RunDir]) -> None:
        """Replace the table's rates by the throughput of finished single-task runs of this study."""
        measured: dict[str, list[float]] = {}
        for run in runs:
            if not run.finished:
                continue
            result = run.result()
            if len(result.metrics) == 1 and result.train_seconds and result.train_examples:
                threads = run.config().runtime.num_threads or 1
                rate = result.train_examples / result.train_seconds / min(threads, 2) ** 0.5
                measured.setdefault(next(iter(result.metrics)), []).append(rate)
        for task, rates in measured.items():
            self.rates[task] = sum(rates) / len(rates)

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
        """Estimated seconds of a training job (None for a step or unknown data)."""
        if job.config is None:
            return None
        examples = self.examples(job.config)
        if len(examples) != len(job.config.data.tasks):
            return None
        epochs = job.config.optim.epochs
        total = sum(n * epochs / self.rates.get(task, DEFAULT_RATE) for task, n in examples.items())
        return total * EVAL_OVERHEAD / self.threads ** 0.5


def duration(seconds: float | None) -> str:
    if seconds is None:
        return "?"
    seconds = int(round(seconds))
    h, rest = divmod(seconds, 3600)
    return f"{h}h{rest // 60:02d}m" if h else f"{rest // 60}m{rest % 60:02d}s"
