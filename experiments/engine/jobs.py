"""Jobs and the graph they form.

A **training job** carries a :class:`mtl.config.TrainConfig`: a worker trains it unless its run directory
holds it finished (:func:`mtl.run.ensure_run`). A **deferred** training job's config depends on what its
dependencies found (e.g. the learning rate a sweep chose): it carries a placeholder config with its run
directory (fixed: only the options are chosen) and ``resolve(*resolve_args)``, which the scheduler calls for
the real config once every dependency has finished. A training job may also carry ``skip(*skip_args)``,
asked once every dependency has finished: a sentence (why the run would repeat one the study already has,
e.g. a shared mask that keeps every unit) means the run is not trained and counts as done; None means it
is trained. A **step** is a function of the study (cut a random
ticket, select a super ticket, merge masks, prune a model, write a report): ``where="scheduler"`` runs
it in the scheduler's process (cheap, idempotent steps), ``where="worker"`` in a worker like a training
run (heavy steps). A job starts when every job it depends on has finished.
"""

from __future__ import annotations

import dataclasses
import fnmatch
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from basics.errors import UserError
from mtl.config import TrainConfig
from mtl.rundir import RunDir

PLACES = ("scheduler", "worker")


@dataclass(frozen=True)
class Job:
    """One node of a study graph. ``name`` is unique in the graph (e.g. ``tickets/rte/winning-0.10-seed1``)."""

    name: str
    deps: tuple[str, ...] = ()
    config: TrainConfig | None = None  # a training run
    needs: tuple[Path, ...] = ()  # files the training run must have written to count as finished
    info: Mapping[str, Any] | None = None  # study_run.json of a training run (its table label)
    action: Callable[..., Any] | None = None  # a step: action(*args); a module-level function (picklable)
    args: tuple[Any, ...] = ()
    where: str = "scheduler"  # where a step runs
    outputs: tuple[Path, ...] = ()  # files a step writes (copied to the results folder)
    labels: Mapping[str, Any] = field(default_factory=dict)  # task, kind, sparsity, seed: for progress lines
    after_failures: bool = False  # a step that runs once its dependencies are settled, even if some failed
    resolve: Callable[..., TrainConfig] | None = None  # a deferred training job: the config, once deps finished
    resolve_args: tuple[Any, ...] = ()
    skip: Callable[..., str | None] | None = None  # a training job: why not to train it (None: train it)
    skip_args: tuple[Any, ...] = ()
    seconds: float | None = None  # a step: its estimated one-core seconds of work left (the ETA, the plan, the limit)
    resumable: bool = False  # a step that continues from its checkpoint: the time limit starts it while time is left

    def __post_init__(self) -> None:
        if (self.config is None) == (self.action is None):
            raise ValueError(f"job {self.name}: give either a training config or an action")
        if self.config is not None and (self.seconds is not None or self.resumable):
            raise ValueError(f"job {self.name}: seconds and resumable are for steps (the cost model times a run)")
        if self.skip is not None and self.config is None:
            raise ValueError(f"job {self.name}: only a training job can be skipped")
        if self.resolve is not None and not self.deps:
            raise ValueError(f"job {self.name}: a deferred training job needs the jobs its config depends on")
        if self.where not in PLACES:
            raise ValueError(f"job {self.name}: where must be one of {PLACES}")

    @property
    def is_training(self) -> bool:
        return self.config is not None

    @property
    def deferred(self) -> bool:
        """A training job whose config is known only once its dependencies have finished."""
        return self.resolve is not None

    def resolved(self) -> "Job":
        """The job with its real config (itself when not deferred); call it once every dependency finished."""
        if self.resolve is None:
            return self
        config = self.resolve(*self.resolve_args)
        if not isinstance(config, TrainConfig):
            raise TypeError(f"job {self.name}: resolve gave {type(config).__name__}, not a TrainConfig")
        if Path(config.output.output_dir) != Path(self.config.output.output_dir):
            raise ValueError(f"job {self.name}: resolve moved the run from {self.config.output.output_dir} to "
                             f"{config.output.output_dir}; a deferred run's directory is fixed")
        return dataclasses.replace(self, config=config, resolve=None, resolve_args=())

    def skip_reason(self) -> str | None:
        """Why this training run need not be trained (``skip(*skip_args)``), or None: train it."""
        return self.skip(*self.skip_args) if self.skip is not None else None

    @property
    def in_worker(self) -> bool:
        return self.is_training or self.where == "worker"

    @property
    def run(self) -> RunDir | None:
        return RunDir(self.config.output.output_dir) if self.config is not None else None

    def finished(self) -> bool:
        """A training job whose run finished with every file it needs (steps are never 'finished': they rerun)."""
        return self.run is not None and self.run.finished and all(Path(p).is_file() for p in self.needs)

    def describe(self) -> str:
        """``rte winning 0.30 seed 2`` from the labels (the name without labels)."""
        parts = [str(self.labels[k]) for k in ("task", "kind") if k in self.labels]
        if "sparsity" in self.labels:
            parts.append(f"{float(self.labels['sparsity']):.2f}")
        if "seed" in self.labels:
            parts.append(f"seed {self.labels['seed']}")
        return " ".join(parts) or self.name

    def with_threads(self, threads: int | None, device: str | None = None) -> "Job":
        """The job with its run's thread count (and device) set: options that never change a run's result."""
        if self.config is None:
            return self
        changes: dict[str, Any] = {"num_threads": threads, "progress": False}
        if device is not None:
            changes["device"] = device
        return dataclasses.replace(self, config=self.config.replace(**changes))


class JobGraph:
    """Jobs by name, in the order they were added (the order ties are broken in)."""

    def __init__(self, jobs: Iterable[Job] = ()) -> None:
        self.jobs: dict[str, Job] = {}
        for job in jobs:
            self.add(job)

    def add(self, job: Job) -> Job:
        if job.name in self.jobs:
            raise ValueError(f"job {job.name!r} is in the graph twice")
        self.jobs[job.name] = job
        return job

    def __iter__(self):
        return iter(self.jobs.values())

    def __len__(self) -> int:
        return len(self.jobs)

    def __getitem__(self, name: str) -> Job:
        return self.jobs[name]

    def training(self) -> list[Job]:
        return [j for j in self.jobs.values() if j.is_training]

    def only(self, patterns: Sequence[str]) -> "JobGraph":
        """The jobs whose names match one of the shell-style ``patterns`` (``candidates/*/error``), with every job
        they depend on, directly or not (a finished one skips at once); UserError when a pattern matches nothing."""
        unmatched = [p for p in patterns if not any(fnmatch.fnmatchcase(name, p) for name in self.jobs)]
        if unmatched:
            raise UserError(f"--only {','.join(unmatched)} matches no job of this study; --dry-run lists them")
        keep: set[str] = set()
        todo = [name for name in self.jobs if any(fnmatch.fnmatchcase(name, p) for p in patterns)]
        while todo:
            name = todo.pop()
            if name not in keep:
                keep.add(name)
                todo.extend(self.jobs[name].deps)
        return JobGraph(job for name, job in self.jobs.items() if name in keep)

    def validate(self) -> None:
        """Every dependency exists, no cycle, and no two training jobs share a run directory."""
        for job in self.jobs.values():
            missing = [d for d in job.deps if d not in self.jobs]
            if missing:
                raise ValueError(f"job {job.name} depends on unknown job(s) {missing}")
        self.order()
        seen: dict[Path, str] = {}
        for job in self.training():
            path = job.run.path.resolve()
            if path in seen:
                raise UserError(f"jobs {seen[path]} and {job.name} write the same run directory {path}")
            seen[path] = job.name

    def order(self) -> list[Job]:
        """A topological order (stable: insertion order among ready jobs); a cycle is a ValueError."""
        indegree = {name: len(set(job.deps)) for name, job in self.jobs.items()}
        children: dict[str, list[str]] = {name: [] for name in self.jobs}
        for name, job in self.jobs.items():
            for dep in set(job.deps):
                children[dep].append(name)
        ready = [name for name in self.jobs if indegree[name] == 0]
        out: list[Job] = []
        while ready:
            name = ready.pop(0)
            out.append(self.jobs[name])
            for child in children[name]:
                indegree[child] -= 1
                if indegree[child] == 0:
                    ready.append(child)
        if len(out) != len(self.jobs):
            stuck = sorted(n for n, d in indegree.items() if d > 0)
            raise ValueError(f"the job graph has a cycle among {stuck}")
        return out

    def dependents(self, name: str) -> list[str]:
        """Every job that depends on ``name``, directly or not."""
        out: list[str] = []
        frontier = [name]
        while frontier:
            current = frontier.pop()
            for job in self.jobs.values():
                if current in job.deps and job.name not in out:
                    out.append(job.name)
                    frontier.append(job.name)
        return out
