"""The flags every study command shares, the backend they build, and the ``--dry-run`` plan.

    --jobs N              concurrent runs (default: the cores at --threads-per-run each; one per GPU)
    --threads-per-run N   torch threads of each run (default 1 on CPU: small models scale poorly)
    --backend local|ray|inline
    --ray-address ADDR    an existing Ray cluster (default: a local Ray started for the study)
    --gpus-per-run F      Ray: GPUs each run asks for (default 1 when the driver sees CUDA, else 0)
    --results-dir DIR     copy each finished run's small artifacts there; continue from it
    --status-every S      seconds between progress reports
    --dry-run             print the graph with its estimated cost; train nothing
    --only GLOB[,GLOB]    run only the jobs whose names match, with what they depend on (e.g. a study's GPU part
                          on a GPU machine, its CPU timing on the deployment CPU)
"""

from __future__ import annotations

import argparse
import os
import re
import socket
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from basics.cli import OneLineParser, run_main
from basics.errors import UserError
from basics.io import atomic_write_text
from basics.registry import Registry
from experiments.engine.backends import Backend, InlineBackend, LocalBackend, RayBackend
from experiments.engine.cost import CostModel, duration
from experiments.engine.jobs import Job, JobGraph
from experiments.engine.results_dir import ResultsDir
from experiments.engine.scheduler import (
    Report,
    Scheduler,
    StudyFailed,
    raise_if_failed,
    raise_user_errors,
    write_report,
)

BACKENDS: Registry[str] = Registry("backend")
BACKENDS.register("local", "one worker process per run on this machine (the default)")
BACKENDS.register("ray", "one Ray task per run, on a Ray cluster or a local Ray")
BACKENDS.register("inline", "every job in the scheduler's own process, one at a time (debugging)")


def cuda_devices() -> list[str]:
    """``cuda:0``... for every GPU this process sees (none without CUDA)."""
    import torch

    return [f"cuda:{i}" for i in range(torch.cuda.device_count())] if torch.cuda.is_available() else []


def accelerator(devices: list[str]) -> str | None:
    """The name of the GPU the runs go to (as a run's ``results.json`` records it), None for CPU runs."""
    if not devices:
        return None
    import torch

    return torch.cuda.get_device_name(torch.device(devices[0]))


@dataclass
class EngineOptions:
    jobs: int | None = None
    threads_per_run: int | None = None
    backend: str = "local"
    ray_address: str | None = None
    gpus_per_run: float | None = None
    results_dir: Path | None = None
    status_every: float = 60.0
    dry_run: bool = False
    time_limit: float | None = None  # seconds: start no training run that would not finish within it
    only: tuple[str, ...] = ()  # job-name globs: run only these jobs and their dependencies

    def __post_init__(self) -> None:
        BACKENDS.check(self.backend)
        if self.time_limit is not None and self.time_limit <= 0:
            raise UserError(f"--time-limit must be positive, got {self.time_limit:g} s")
        for name in ("jobs", "threads_per_run"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise UserError(f"--{name.replace('_', '-')} must be >= 1, got {value}")
        if self.ray_address and self.backend != "ray":
            raise UserError("--ray-address needs --backend ray")

    def resolved(self) -> tuple[int, int, list[str]]:
        """(concurrent jobs, threads per run, devices to spread runs over)."""
        devices = [] if self.backend == "ray" else cuda_devices()
        cores = os.cpu_count() or 1
        if devices:
            threads = self.threads_per_run or max(1, cores // len(devices))
            return self.jobs or len(devices), threads, devices
        threads = self.threads_per_run or 1
        return self.jobs or max(1, cores // threads), threads, []


def add_engine_flags(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("study engine")
    group.add_argument("--jobs", type=int, default=None,
                       help="runs at once (default: the cores at --threads-per-run each; one per GPU on a GPU box)")
    group.add_argument("--threads-per-run", type=int, default=None, help="torch threads per run (default 1 on CPU)")
    group.add_argument("--backend", default="local", help=f"where runs execute: {', '.join(BACKENDS.names())}")
    group.add_argument("--ray-address", default=None, help="Ray cluster address (default: start a local Ray)")
    group.add_argument("--gpus-per-run", type=float, default=None, help="Ray: GPUs per run (default: 1 with CUDA)")
    group.add_argument("--results-dir", type=Path, default=None,
                       help="copy every finished run's small artifacts here (commit it); a study continues from it")
    group.add_argument("--status-every", type=float, default=60.0, help="seconds between progress reports")
    group.add_argument("--dry-run", action="store_true", help="print the job graph with its estimated cost; train nothing")
    group.add_argument("--time-limit", type=parse_duration, default=None, metavar="DURATION",
                       help="e.g. 2h30m, 90m or 5400 (seconds): start no training run that the cost model says would "
                            "not finish within it, counted from the start (a batch job's wall-time limit, a session's "
                            "end); what is left runs on the next call")
    group.add_argument("--only", type=globs, default=(), metavar="GLOB[,GLOB]",
                       help="run only the jobs whose names match (shell-style, e.g. 'candidates/*/error'), with the "
                            "jobs they depend on; --dry-run lists the names")


DURATION = re.compile(r"^(?:(?P<h>\d+(?:\.\d+)?)h)?(?:(?P<m>\d+(?:\.\d+)?)m)?(?:(?P<s>\d+(?:\.\d+)?)s?)?$")


def parse_duration(text: str) -> float:
    """Seconds from ``2h30m``, ``90m``, ``45s``, ``1h5m30s`` or a plain number of seconds."""
    match = DURATION.match(text.strip())
    if not text.strip() or match is None or not any(match.groupdict().values()):
        raise argparse.ArgumentTypeError(f"not a duration: {text!r} (e.g. 2h30m, 90m, 45s or 5400)")
    h, m, s = (float(match[k] or 0) for k in ("h", "m", "s"))
    return 3600 * h + 60 * m + s


def globs(text: str) -> tuple[str, ...]:
    """``a/*,b/*`` -> ``("a/*", "b/*")``."""
    parts = tuple(p.strip() for p in text.split(",") if p.strip())
    if not parts:
        raise argparse.ArgumentTypeError("--only needs at least one job-name pattern")
    return parts


def engine_options(args: argparse.Namespace) -> EngineOptions:
    return EngineOptions(jobs=args.jobs, threads_per_run=args.threads_per_run, backend=args.backend,
                         ray_address=args.ray_address, gpus_per_run=args.gpus_per_run, results_dir=args.results_dir,
                         status_every=args.status_every, dry_run=args.dry_run, time_limit=args.time_limit,
                         only=args.only)


def make_backend(options: EngineOptions, log_dir: Path) -> Backend:
    jobs, threads, _ = options.resolved()
    if options.backend == "inline":
        return InlineBackend(log_dir)
    if options.backend == "ray":
        gpus = options.gpus_per_run if options.gpus_per_run is not None else (1.0 if cuda_devices() else 0.0)
        return RayBackend(options.ray_address, cpus_per_job=threads, gpus_per_job=gpus, local_cpus=jobs * threads,
                          log_dir=log_dir)
    return LocalBackend(jobs, log_dir)


def results_dir(options: EngineOptions, study_out: Path) -> ResultsDir | None:
    return ResultsDir(options.results_dir, study_out) if options.results_dir is not None else None


def _skip_now(job: Job) -> str | None:
    """Whether ``job`` would be skipped given the files as they are now (a dry run's guess: the scheduler
    asks again once the job's dependencies have run)."""
    try:
        return job.skip_reason()
    except Exception:  # noqa: BLE001 - a guess only: its inputs may not exist yet
        return None


def plan_text(graph: JobGraph, options: EngineOptions, results: ResultsDir | None) -> str:
    """The graph as a table: every job, its state and estimated time; then the totals."""
    jobs, threads, devices = options.resolved()
    cost = CostModel(threads, accelerator(devices))
    cost.learn(j.run for j in graph.training())
    lines = [f"{len(graph)} jobs ({len(graph.training())} training runs); {jobs} at a time, {threads} thread(s) each"
             + (f", on {', '.join(devices)}" if devices else "")]
    counts: dict[str, int] = {}
    todo_seconds = 0.0
    unknown = 0
    for job in graph.order():
        if job.is_training:
            state = "finished" if job.finished() else (
                "in results folder" if results is not None and results.finished_copy(job.run) else job.run.state())
            reason = _skip_now(job) if state in ("new", "started", "resumable") else None
            if reason:
                state, text = "skipped", f"(as its inputs are now: {reason})"
            elif state in ("new", "started", "resumable"):
                estimate = cost.seconds(job)
                if estimate is None:
                    unknown += 1
                else:
                    todo_seconds += estimate
                text = f"~{duration(estimate)}" + (" (its config is chosen when its dependencies finish)"
                                                   if job.deferred else "")
                state = "to train" if state != "resumable" else "resumable"
            else:
                text = ""
        else:
            state, estimate = f"step ({job.where})", cost.seconds(job)
            text = "" if estimate is None else f"~{duration(estimate)}" + (" (resumable)" if job.resumable else "")
            todo_seconds += estimate or 0.0
        counts[state] = counts.get(state, 0) + 1
        deps = f" <- {len(job.deps)} job(s)" if job.deps else ""
        lines.append(f"  {job.name}: {state}{(' ' + text) if text else ''}{deps}")
    lines.append("training runs: " + ", ".join(f"{n} {s}" for s, n in counts.items() if not s.startswith("step")))
    core_hours = todo_seconds * threads / 3600
    lines.append(f"estimated cost of what is left (training runs, and steps with an estimate): {core_hours:.1f} "
                 f"core-hours, about {duration(todo_seconds / jobs)} with {jobs} run(s) at a time"
                 + (f" ({unknown} run(s) without an estimate)" if unknown else ""))
    by_place: dict[str, list[str]] = {}
    for task, place in sorted(cost.missing.items()):
        by_place.setdefault(place, []).append(task)
    for place, tasks in by_place.items():
        lines.append(f"no training data counted for {', '.join(tasks)} ({place}): set GLUE_DIR or "
                     "--glue-dir to a local copy for an estimate of their runs")
    return "\n".join(lines)


def run_jobs(graph: JobGraph, options: EngineOptions, out: Path, say=None) -> Report | None:
    """Run ``graph`` as ``options`` say, logs under ``OUT/logs``; None for ``--dry-run`` (the plan is
    printed). A user mistake found by a job is raised as one UserError after the running jobs end.
    ``options.only``: the part of ``graph`` those patterns select (:meth:`JobGraph.only`)."""
    if options.only:
        graph = graph.only(options.only)
    results = results_dir(options, out)
    if options.dry_run:
        (say or print)(plan_text(graph, options, results))
        return None
    jobs, threads, devices = options.resolved()
    log_dir = Path(out) / "logs"
    backend = make_backend(options, log_dir)
    scheduler = Scheduler(graph, backend, log_dir=log_dir, results=results, threads_per_run=threads,
                          devices=devices, cost=CostModel(threads, accelerator(devices)), say=say,
                          status_every=options.status_every, time_limit=options.time_limit)
    report = scheduler.run()
    write_report(report, log_dir / "engine.json")  # the last call's
    write_report(report, log_dir / f"engine-{socket.gethostname()}-{os.getpid()}.json")  # every call's
    raise_user_errors(report)
    return report


def run_study_graph(out: Path, study_yaml: str, jobs: Sequence[Job], options: EngineOptions, *,
                    report_only: Sequence[str] | None = None, plan_lines: Sequence[str] = (),
                    table: Path | None = None) -> int:
    """The tail of a study driven by one YAML file (``experiments.subarch``, ``experiments.transfer``): write
    ``OUT/study.yaml``; with ``--results-dir``, restore the steps' outputs from it (a step that finds them skips)
    and publish ``study.yaml`` there (not on a dry run, which leaves the results folder as it is); with
    ``report_only``, restore the finished runs from it too and keep only the named steps, without their
    dependencies; print ``plan_lines`` before a dry run's plan; run the graph, raise :class:`StudyFailed` if a
    job did not finish, and print the ``table``."""
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / "study.yaml", study_yaml)
    results = results_dir(options, out)
    if results is not None:  # steps find their outputs and skip; runs are restored by the scheduler
        results.restore_files(p for job in jobs for p in job.outputs)
        if not options.dry_run:
            results.publish_files([out / "study.yaml"])
    if report_only is not None:
        if results is not None and not options.dry_run:  # the runs the report reads: those finished elsewhere too
            for job in jobs:
                if job.is_training:
                    results.restore_run(job.run)
        jobs = [Job(j.name, action=j.action, args=j.args, outputs=j.outputs) for j in jobs if j.name in report_only]
    if options.dry_run:
        for line in plan_lines:
            print(line)
    report = run_jobs(JobGraph(list(jobs)), options, out)
    if report is None:
        return 0
    raise_if_failed(report)
    if table is not None:
        print(f"table: {table}")
    return 0


def print_study_report(run: Callable[[], Report | Any | None], render: Callable[[Any], str]) -> int:
    """Run a study and print its rendered report (nothing after ``--dry-run``, whose plan is printed); a job
    that did not finish: how to retry, exit 1."""
    try:
        report = run()
    except StudyFailed as exc:
        print(f"{exc}; run the same command again to retry them (finished runs are kept)", file=sys.stderr)
        return 1
    if report is not None:
        text = render(report)
        print(text, end="" if text.endswith("\n") else "\n")
    return 0


def yaml_study_main(argv: Sequence[str] | None, prog: str, description: str, example: str, report_only_help: str,
                    load: Callable[[Path, str | None, str | None], Any],
                    run: Callable[[Any, EngineOptions, bool], int]) -> int:
    """The command line of a study driven by one YAML file (``experiments.subarch``, ``experiments.transfer``):
    the file, ``--output-dir`` / ``--glue-dir`` overrides, ``--report-only`` and the engine flags; a failed run
    exits 1 with how to retry, a user mistake is one line (:func:`basics.cli.run_main`)."""
    def go() -> int:
        parser = OneLineParser(prog=prog, description=description)
        parser.add_argument("study", type=Path, help=f"the study YAML ({example})")
        parser.add_argument("--output-dir", default=None, help="override the study's output_dir")
        parser.add_argument("--glue-dir", default=None, help="override the study's glue_dir (default: $GLUE_DIR)")
        parser.add_argument("--report-only", action="store_true", help=report_only_help)
        add_engine_flags(parser)
        args = parser.parse_args(argv)
        study = load(args.study, args.output_dir, args.glue_dir)
        try:
            return run(study, engine_options(args), args.report_only)
        except StudyFailed as exc:
            print(f"{exc}; run the same command again to retry them (finished work is kept)", file=sys.stderr)
            return 1

    return run_main(go)
