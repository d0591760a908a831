"""The scheduler: execute a job graph, concurrently where it allows, safely when interrupted or shared.

Guarantees (each tested in ``tests/test_engine.py``):

- a job starts when every job it depends on has finished; a training job whose ``skip`` gives a reason
  then is not trained (recorded as ``skipped``, with the reason) and counts as done; a failed job fails alone, and the jobs that
  depend on it are not run (the study then exits 1; the next call retries them);
- a finished run is never trained again: it is read back, from its run directory or, with a results
  folder, from the copy there (restored into the run directory first);
- before anything is trained, every finished run must be the run the study asks for now
  (:meth:`mtl.rundir.RunDir.check_matches`): a changed config is a one-line error (a deferred run's config
  is known, and checked, once its dependencies have finished; so is a run of a local model folder that a
  dependency builds: a student built again on a new machine must hold the weights the run trained from);
- a run interrupted in any way (a killed worker, a killed scheduler) continues from its checkpoint on
  the next call;
- two schedulers on one folder never train the same run: a run is trained only under its lock
  (:mod:`experiments.engine.locks`); a run locked by a live scheduler is waited for;
- with a results folder, each finished run's small artifacts (and each step's outputs) are copied
  there as soon as they exist;
- with a time limit, no training run starts that the cost model says would not finish within it (with
  :data:`TIME_MARGIN`; a resumable run is costed whole); such runs, and what depends on them, are left
  (``not-run``) for the next call, and the jobs that fit still run.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from basics.errors import UserError
from basics.io import atomic_write_json
from experiments.engine.backends import Backend
from experiments.engine.cost import CostModel, duration
from experiments.engine.jobs import Job, JobGraph
from experiments.engine.locks import RunLock
from experiments.engine.progress import Board
from experiments.engine.results_dir import ResultsDir
from experiments.engine.worker import Outcome, execute
from mtl.trainer import format_metrics

TIME_MARGIN = 1.1  # a run must fit the time left with this factor on its estimate

@dataclass
class Record:
    """What happened to one job in this call."""

    name: str
    status: str  # finished-before | restored | ran | skipped | failed | not-run
    seconds: float = 0.0
    error: str | None = None
    overhead: float | None = None  # seconds from dispatch to the worker starting the job


@dataclass
class Report:
    records: dict[str, Record] = field(default_factory=dict)
    seconds: float = 0.0
    user_errors: list[str] = field(default_factory=list)

    def count(self, status: str) -> int:
        return sum(r.status == status for r in self.records.values())

    @property
    def ok(self) -> bool:
        return not self.user_errors and not self.count("failed") and not self.count("not-run")

    def summary(self) -> str:
        parts = [f"{self.count(s)} {s}" for s in ("ran", "finished-before", "restored", "skipped", "failed", "not-run")
                 if self.count(s)]
        return ", ".join(parts) or "nothing to do"

    def to_dict(self) -> dict:
        return {"seconds": round(self.seconds, 1), "summary": self.summary(),
                "jobs": [vars(r) for r in self.records.values()]}


class Scheduler:
    """Runs a :class:`JobGraph` on a backend. ``log_dir`` gets the logs of steps; ``results`` is the
    optional results folder; ``devices`` (e.g. ``["cuda:0", "cuda:1"]``) gives each concurrent training
    job its own device; ``threads_per_run`` is every training run's torch thread count."""

    def __init__(self, graph: JobGraph, backend: Backend, *, log_dir: Path, results: ResultsDir | None = None,
                 threads_per_run: int | None = 1, devices: list[str] | None = None, cost: CostModel | None = None,
                 say: Callable[[str], None] | None = None, status_every: float = 60.0, stale_after: float = 600.0,
                 poll: float = 0.5, time_limit: float | None = None) -> None:
        graph.validate()
        self.graph = graph
        self.backend = backend
        self.log_dir = Path(log_dir)
        self.results = results
        self.threads = threads_per_run
        self.devices = list(devices or [])
        self.cost = cost or CostModel(threads_per_run or 1)
        self.say = say or (lambda line: print(line, flush=True))
        self.status_every = status_every
        self.stale_after = stale_after
        self.poll_every = poll
        self.time_limit = time_limit
        self.locks: dict[str, RunLock] = {}
        self.device_of: dict[str, str] = {}
        self.dispatched: dict[str, float] = {}

    # ---------------------------------------------------------------- before any work

    def prepare(self, report: Report) -> set[str]:
        """Restore finished runs from the results folder; check every finished run against its config.
        Returns the jobs already done."""
        done = set()
        for job in self.graph.training():
            if job.deferred:  # its config is known, and checked, once its dependencies have finished
                self._restore(job, report)
                continue
            if self._restore_and_check(job, report):
                done.add(job.name)
        return done

    def _restore(self, job: Job, report: Report) -> None:
        """Restore ``job``'s run from the results folder when it is unfinished here and finished there."""
        if not job.finished() and self.results is not None and self.results.restore_run(job.run):
            report.records[job.name] = Record(job.name, "restored")

    def _restore_and_check(self, job: Job, report: Report) -> bool:
        """:meth:`_restore`; True when the run is finished (then checked against the config: a UserError when it
        differs)."""
        self._restore(job, report)
        if not job.finished():
            return False
        if job.deps and job.run.model_unbuilt(job.config):
            return False  # its model is a dependency's output, not built here yet: checked once it is (run)
        job.run.check_matches(job.config)  # a UserError: a changed config never mixes in
        report.records.setdefault(job.name, Record(job.name, "finished-before"))
        if self.results is not None:
            self.results.publish_run(job.run)  # e.g. runs finished before the folder was given
        return True

    def priority(self, done: set[str]) -> list[Job]:
        """The jobs left, in the order they are started when ready: runs with a checkpoint first (their
        work is half done), then the order the study added them (a task's tickets before the next task's)."""
        left = [j for j in self.graph if j.name not in done]
        return sorted(left, key=lambda j: not (j.is_training and j.run.has_checkpoint))

    # ---------------------------------------------------------------- the loop

    def run(self) -> Report:
        start = time.time()
        report = Report()
        self.log_dir.mkdir(parents=True, exist_ok=True)
        done = self.prepare(report)
        self.cost.learn(j.run for j in self.graph.training())
        failed: set[str] = set()
        left: set[str] = set()  # training runs (and what needs them) that would not finish within the time limit
        pending = self.priority(done)
        running: dict[str, Job] = {}
        waiting_note: dict[str, str] = {}
        board = Board(len(self.graph), self.cost, max(1, self.backend.free), self.say, self.status_every,
                      deadline=None if self.time_limit is None else start + self.time_limit)
        board.maybe_report(len(done), 0, pending, [], force=True)
        stop = False
        try:
            while pending or running:
                progressed = False
                for job in list(pending):
                    if stop:
                        break
                    bad = [d for d in job.deps if d in failed]
                    if bad and job.after_failures:
                        if any(d not in done and d not in failed for d in job.deps):
                            continue  # a report: it waits until every input has finished or failed
                        bad = []
                    if bad:
                        pending.remove(job)
                        failed.add(job.name)
                        why = "was left at the time limit" if bad[0] in left else "failed"
                        if bad[0] in left:
                            left.add(job.name)
                        report.records[job.name] = Record(job.name, "not-run", error=f"needs {bad[0]}, which {why}")
                        self.say(f"[not run] {job.name}: needs {bad[0]}, which {why}")
                        continue
                    if any(d not in done and not (job.after_failures and d in failed) for d in job.deps):
                        continue
                    if job.deferred:
                        resolved = self._resolve(job, report, failed)
                        pending[pending.index(job)] = resolved
                        if resolved is job:  # it could not be resolved: failed
                            pending.remove(job)
                            progressed = True
                            continue
                        job = resolved
                        if self._restore_and_check(job, report):
                            pending.remove(job)
                            self._finish(job, Outcome(job.name, ok=True), report, done, failed, board)
                            progressed = True
                            continue
                    if job.is_training and not job.finished():
                        reason = self._skip_reason(job, report, failed)
                        if reason is not None:
                            pending.remove(job)
                            if reason:
                                done.add(job.name)
                                report.records[job.name] = Record(job.name, "skipped", error=reason)
                                board.end(job, f"skipped: {reason}")
                            progressed = True
                            continue
                    if job.is_training and job.finished():  # finished meanwhile (another scheduler), or restored
                        pending.remove(job)  # before its model was built: checked now that it is
                        outcome = self._read_back(job)
                        if outcome.user_error:
                            stop = True
                            report.user_errors.append(f"{job.name}: {outcome.error}")
                        self._finish(job, outcome, report, done, failed, board)
                        progressed = True
                        continue
                    if not job.in_worker:
                        pending.remove(job)
                        board.start(job)
                        outcome = execute(job, log_dir=self.log_dir)
                        if outcome.user_error:
                            stop = True
                            report.user_errors.append(f"{job.name}: {outcome.error}")
                        self._finish(job, outcome, report, done, failed, board)
                        progressed = True
                        continue
                    late = self._too_late(job, start)
                    if late:
                        pending.remove(job)
                        failed.add(job.name)
                        left.add(job.name)
                        report.records[job.name] = Record(job.name, "not-run", error=late)
                        self.say(f"[left] {job.name}: {late}")
                        progressed = True
                        continue
                    if self.backend.free <= 0:
                        continue
                    lock = self._lock(job)
                    if not lock.acquire():
                        holder = lock.holder()
                        note = f"locked by {holder.describe()}" if holder else "locked"
                        if waiting_note.get(job.name) != note:
                            waiting_note[job.name] = note
                            self.say(f"[wait] {job.name}: {note} (another scheduler); waiting for it")
                        continue
                    self.locks[job.name] = lock
                    pending.remove(job)
                    running[job.name] = job
                    self._submit(job, board)
                    progressed = True
                for outcome in self.backend.poll(0.0 if progressed else self.poll_every):
                    job = running.pop(outcome.name)
                    self._release(job)
                    if outcome.user_error:
                        stop = True
                        report.user_errors.append(f"{job.name}: {outcome.error}")
                    self._finish(job, outcome, report, done, failed, board)
                for lock in self.locks.values():
                    lock.heartbeat()
                board.maybe_report(len(done), len(failed - left), pending, list(running.values()), left=len(left))
                if stop and not running:
                    break
        finally:
            self.backend.shutdown()
            for job in list(running.values()):
                self._release(job)
        report.seconds = time.time() - start
        for job in pending:
            report.records.setdefault(job.name, Record(job.name, "not-run", error="the study stopped"))
        return report

    # ---------------------------------------------------------------- helpers

    def _resolve(self, job: Job, report: Report, failed: set[str]) -> Job:
        """The deferred ``job`` with its real config; itself, recorded as failed, when that raises."""
        try:
            return job.resolved()
        except UserError as exc:  # e.g. nothing to choose from: said once, at the end, as a user mistake
            failed.add(job.name)
            report.records[job.name] = Record(job.name, "failed", error=str(exc))
            report.user_errors.append(f"{job.name}: {exc}")
            return job
        except Exception as exc:  # noqa: BLE001 - a bug in the study's resolve: this job fails, not the study
            failed.add(job.name)
            report.records[job.name] = Record(job.name, "failed", error=f"{type(exc).__name__}: {exc}")
            self.say(f"[failed] {job.name}: its config could not be resolved: {type(exc).__name__}: {exc}")
            return job

    @staticmethod
    def _read_back(job: Job) -> Outcome:
        """A finished run taken as done: ok, or a user error when it is not the run the study asks for now."""
        try:
            job.run.check_matches(job.config)
        except UserError as exc:
            return Outcome(job.name, ok=False, error=str(exc), user_error=True)
        return Outcome(job.name, ok=True)

    def _too_late(self, job: Job, start: float) -> str | None:
        """Why ``job`` (one that runs in a worker) should not start under the time limit, or None if it may: a
        job whose estimate (a training run's from the cost model, a step's own) would not fit in the time left;
        any worker job once the limit has passed (one without an estimate, or a resumable step, is started only
        while time is left)."""
        if self.time_limit is None or not job.in_worker:
            return None
        remaining = self.time_limit - (time.time() - start)
        verb = "train" if job.is_training else "run"
        estimate = None if job.resumable else self.cost.seconds(job)
        if estimate is None:
            if remaining > 0:
                return None
            return f"the time limit ({duration(self.time_limit)}) has passed; run the same command again to {verb} it"
        if estimate * TIME_MARGIN <= remaining:
            return None
        return (f"would not finish within the time limit ({duration(self.time_limit)}): needs ~{duration(estimate)}, "
                f"{duration(max(0.0, remaining))} left; run the same command again to {verb} it")

    def _skip_reason(self, job: Job, report: Report, failed: set[str]) -> str | None:
        """``job.skip_reason()``; "" (and the job recorded as failed) when that raises."""
        try:
            return job.skip_reason()
        except UserError as exc:
            failed.add(job.name)
            report.records[job.name] = Record(job.name, "failed", error=str(exc))
            report.user_errors.append(f"{job.name}: {exc}")
        except Exception as exc:  # noqa: BLE001 - a bug in the study's skip: this job fails, not the study
            failed.add(job.name)
            report.records[job.name] = Record(job.name, "failed", error=f"{type(exc).__name__}: {exc}")
            self.say(f"[failed] {job.name}: could not tell whether to train it: {type(exc).__name__}: {exc}")
        return ""

    def _lock(self, job: Job) -> RunLock:
        folder = job.run.path if job.is_training else self.log_dir / "locks" / job.name.replace("/", "_")
        return RunLock(folder, stale_after=self.stale_after)

    def _release(self, job: Job) -> None:
        lock = self.locks.pop(job.name, None)
        if lock is not None:
            lock.release()
        self.device_of.pop(job.name, None)

    def _submit(self, job: Job, board: Board) -> None:
        device = None
        if job.is_training and self.devices:
            used = set(self.device_of.values())
            device = next((d for d in self.devices if d not in used), self.devices[0])
            self.device_of[job.name] = device
        state = job.run.state() if job.is_training else ""
        note = " (resuming)" if state == "resumable" else ""
        estimate = self.cost.seconds(job)
        board.start(job, note + (f", ~{duration(estimate)}" if estimate else ""))
        self.dispatched[job.name] = time.time()
        self.backend.submit(job.with_threads(self.threads, device))

    def _finish(self, job: Job, outcome: Outcome, report: Report, done: set[str], failed: set[str], board: Board) -> None:
        if outcome.ok:
            done.add(job.name)
            if self.results is not None:
                if job.is_training:
                    self.results.publish_run(job.run)
                else:
                    self.results.publish_files(job.outputs)
            status = "ran" if (outcome.trained or not job.is_training) else "finished-before"
            if job.name in report.records and report.records[job.name].status in ("restored", "finished-before"):
                status = report.records[job.name].status
            overhead = None
            if outcome.started_at is not None and job.name in self.dispatched:
                overhead = round(outcome.started_at - self.dispatched[job.name], 3)
            report.records[job.name] = Record(job.name, status, outcome.seconds, overhead=overhead)
            metrics = f": {format_metrics(outcome.metrics)}" if outcome.metrics else ""
            board.end(job, f"done: in {duration(outcome.seconds)}{metrics}")
            if job.is_training:
                self.cost.learn([job.run])
        else:
            failed.add(job.name)
            report.records[job.name] = Record(job.name, "failed", outcome.seconds, error=outcome.error)
            board.end(job, f"FAILED: after {duration(outcome.seconds)}: {outcome.error}")


def write_report(report: Report, path: Path) -> None:
    atomic_write_json(path, report.to_dict())


class StudyFailed(RuntimeError):
    """Some jobs of a study failed (each is reported); the command exits 1 and a re-run retries them."""


def raise_if_failed(report: Report) -> None:
    """:class:`StudyFailed` naming the first job that failed or could not run."""
    failed = [r for r in report.records.values() if r.status in ("failed", "not-run")]
    if failed:
        raise StudyFailed(f"{len(failed)} job(s) did not finish, e.g. {failed[0].name}: {failed[0].error}")


def raise_user_errors(report: Report) -> None:
    """A mistake in the study's inputs found by a job: one line, exit 2."""
    if report.user_errors:
        more = f" (and {len(report.user_errors) - 1} more)" if len(report.user_errors) > 1 else ""
        raise UserError(report.user_errors[0] + more)
