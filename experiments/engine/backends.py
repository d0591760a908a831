"""Where jobs run: in the scheduler's process, in local worker processes, or as Ray tasks.

Every backend takes a job with :meth:`submit` when it has a free slot (:attr:`free`) and gives back
finished :class:`~experiments.engine.worker.Outcome`\\ s from :meth:`poll`.

- ``inline``: one job at a time in the scheduler's own process (no isolation; for tests and debugging).
- ``local`` (the default): one process per job, at most ``jobs`` at once. Processes are forked from a
  server that imported torch and transformers once (``forkserver``), so starting one costs a fork, not
  seconds of imports; a crash, a kill or a non-finite loss ends that job alone. Each job's output
  goes to its log file (``RUN/train.log`` for a training run).
- ``ray``: each job is a Ray task with ``num_cpus`` / ``num_gpus``, on the cluster at ``address`` or on a
  local Ray started for the study. The task sends the run's small artifacts back, so workers need
  no shared disk with the scheduler.
"""

from __future__ import annotations

import multiprocessing
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from basics.errors import UserError
from experiments.engine.jobs import Job
from experiments.engine.worker import Outcome, execute

PRELOAD = ["experiments.engine.preload"]  # imports torch, transformers and the training code once


class Backend(Protocol):
    name: str

    @property
    def free(self) -> int: ...

    def submit(self, job: Job) -> None: ...

    def poll(self, timeout: float) -> list[Outcome]: ...

    def shutdown(self) -> None: ...


class InlineBackend:
    """Runs each job at once, in this process."""

    name = "inline"

    def __init__(self, log_dir: Path | None = None) -> None:
        self.done: list[Outcome] = []
        self.log_dir = log_dir

    @property
    def free(self) -> int:
        return 1

    def submit(self, job: Job) -> None:
        self.done.append(execute(job, log_dir=self.log_dir))

    def poll(self, timeout: float) -> list[Outcome]:
        out, self.done = self.done, []
        return out

    def shutdown(self) -> None:
        pass


def job_log(job: Job, log_dir: Path) -> Path:
    """Where a worker's output goes: ``RUN/train.log`` for a training job, ``LOG_DIR/NAME.log`` for a step."""
    if job.is_training:
        return job.run.path / "train.log"
    return Path(log_dir) / f"{job.name.replace('/', '_')}.log"


def _child(job: Job, log: str, log_dir: str, conn) -> None:
    """The body of a worker process: output to the log file, run the job, send the outcome back."""
    Path(log).parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    sys.stdout = os.fdopen(1, "w", buffering=1, closefd=False)
    sys.stderr = os.fdopen(2, "w", buffering=1, closefd=False)
    outcome = execute(job, log_dir=Path(log_dir))
    conn.send(outcome)
    conn.close()


@dataclass
class _Running:
    job: Job
    process: Any
    conn: Any
    submitted: float


class LocalBackend:
    """At most ``jobs`` worker processes at once, each running one job."""

    name = "local"

    def __init__(self, jobs: int, log_dir: Path, start_method: str = "forkserver") -> None:
        if jobs < 1:
            raise UserError(f"--jobs must be >= 1, got {jobs}")
        self.jobs = jobs
        self.log_dir = Path(log_dir)
        methods = multiprocessing.get_all_start_methods()
        self.ctx = multiprocessing.get_context(start_method if start_method in methods else "spawn")
        if self.ctx.get_start_method() == "forkserver":
            self.ctx.set_forkserver_preload(PRELOAD)
        self.running: dict[str, _Running] = {}

    @property
    def free(self) -> int:
        return self.jobs - len(self.running)

    def submit(self, job: Job) -> None:
        receive, send = self.ctx.Pipe(duplex=False)
        log = job_log(job, self.log_dir)
        process = self.ctx.Process(target=_child, args=(job, str(log), str(self.log_dir), send),
                                   name=f"job:{job.name}", daemon=False)
        process.start()
        send.close()
        self.running[job.name] = _Running(job, process, receive, time.time())

    def poll(self, timeout: float) -> list[Outcome]:
        if self.running:
            multiprocessing.connection.wait([r.process.sentinel for r in self.running.values()], timeout)
        else:
            time.sleep(timeout)
        done = []
        for name, r in list(self.running.items()):
            if r.process.is_alive():
                continue
            r.process.join()
            outcome = None
            if r.conn.poll():
                try:
                    outcome = r.conn.recv()
                except (EOFError, OSError):
                    outcome = None
            if outcome is None:
                code = r.process.exitcode
                why = f"killed by signal {-code}" if code is not None and code < 0 else f"exit status {code}"
                outcome = Outcome(name, ok=False, seconds=round(time.time() - r.submitted, 1),
                                  error=f"worker process ended without a result ({why}); see {job_log(r.job, self.log_dir)}")
            done.append(outcome)
            del self.running[name]
        return done

    def shutdown(self) -> None:
        for r in self.running.values():
            r.process.terminate()
        for r in self.running.values():
            r.process.join(timeout=10)
            if r.process.is_alive():
                r.process.kill()
        self.running.clear()


def _ray_module():
    try:
        import ray
    except ImportError:
        raise UserError("--backend ray needs Ray: pip install '.[ray]' (or pip install 'ray[default]')") from None
    return ray


def _ray_execute(job: Job) -> Outcome:
    """The Ray task: run the job on whatever node Ray chose; ship the run's small artifacts back."""
    return execute(job, ship_artifacts=job.is_training)


class RayBackend:
    """Each job a Ray task on an existing cluster (``address``) or on a local Ray started here."""

    name = "ray"

    def __init__(self, address: str | None, cpus_per_job: float, gpus_per_job: float, local_cpus: int,
                 log_dir: Path) -> None:
        ray = _ray_module()
        self.ray = ray
        self.log_dir = Path(log_dir)
        if not ray.is_initialized():
            kwargs: dict[str, Any] = {"address": address} if address else {"num_cpus": local_cpus}
            root = str(Path(__file__).resolve().parents[2])
            ray.init(**kwargs, include_dashboard=False, log_to_driver=False, configure_logging=False,
                     runtime_env={"env_vars": {"PYTHONPATH": root + os.pathsep + os.environ.get("PYTHONPATH", "")}})
        self.remote = ray.remote(num_cpus=cpus_per_job, num_gpus=gpus_per_job, max_retries=0)(_ray_execute)
        resources = ray.cluster_resources()
        by_cpu = int(resources.get("CPU", 1) // max(cpus_per_job, 1e-9)) if cpus_per_job else 10**6
        by_gpu = int(resources.get("GPU", 0) // gpus_per_job) if gpus_per_job else 10**6
        self.slots = max(1, min(by_cpu, by_gpu))
        self.running: dict[Any, Job] = {}
        self.started_here = not address

    @property
    def free(self) -> int:
        return self.slots - len(self.running)

    def submit(self, job: Job) -> None:
        self.running[self.remote.remote(job)] = job

    def poll(self, timeout: float) -> list[Outcome]:
        if not self.running:
            time.sleep(timeout)
            return []
        ready, _ = self.ray.wait(list(self.running), num_returns=len(self.running), timeout=timeout)
        done = []
        for ref in ready:
            job = self.running.pop(ref)
            try:
                outcome = self.ray.get(ref)
            except Exception as exc:  # noqa: BLE001 - a lost node or a crashed task fails that job alone
                outcome = Outcome(job.name, ok=False, error=f"Ray task failed: {type(exc).__name__}: {exc}".splitlines()[0])
            if outcome.ok and outcome.artifacts and job.is_training:
                # the scheduler's copy of the run, metrics.json last (its presence marks a finished run)
                for rel, data in sorted(outcome.artifacts.items(), key=lambda kv: Path(kv[0]).name == "metrics.json"):
                    target = job.run.path / rel
                    target.parent.mkdir(parents=True, exist_ok=True)
                    if not target.is_file() or target.read_bytes() != data:
                        target.write_bytes(data)
                outcome.artifacts = {}
            done.append(outcome)
        return done

    def shutdown(self) -> None:
        for ref in self.running:
            self.ray.cancel(ref, force=True)
        self.running.clear()
        if self.started_here:
            self.ray.shutdown()
