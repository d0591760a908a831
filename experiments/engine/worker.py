"""What a worker does with one job: train the run (or read it back if it finished), or call the step.

Runs in a worker process (or, with the inline backend, in the scheduler's). A training job writes its
``study_run.json`` first, then :func:`mtl.run.ensure_run` trains it, resuming from a checkpoint if
there is one; ``RUN/.status.json`` is refreshed every few seconds with the epoch, step and elapsed time
(the scheduler's progress lines read it). Whatever happens comes back as an :class:`Outcome`: a
failure fails this job alone.
"""

from __future__ import annotations

import json
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from basics.errors import UserError
from basics.io import atomic_write_json, atomic_write_text
from experiments.engine.jobs import Job
from mtl.run import ensure_run
from mtl.trainer import NonFiniteLossError, Plan, Progress

STATUS_NAME = ".status.json"
STATUS_EVERY = 2.0  # seconds between status-file writes


@dataclass
class Outcome:
    """How one job ended. ``user_error``: a mistake in the study's inputs (stops the study, exit 2)."""

    name: str
    ok: bool
    seconds: float = 0.0
    error: str | None = None
    user_error: bool = False
    started_at: float | None = None  # wall-clock time the worker began the job
    trained: bool = False  # a training job that trained (False: it was finished and read back)
    metrics: dict[str, dict[str, float]] | None = None
    artifacts: dict[str, bytes] = field(default_factory=dict)  # relative path -> bytes (Ray, no shared disk)


class StatusWriter:
    """``on_step`` callback writing ``RUN/.status.json`` at most every :data:`STATUS_EVERY` seconds."""

    def __init__(self, run_dir: Path) -> None:
        self.path = Path(run_dir) / STATUS_NAME
        self.start = time.time()
        self.last = 0.0

    def __call__(self, progress: Progress, plan: Plan) -> None:
        now = time.time()
        if now - self.last < STATUS_EVERY and progress.opt_step < plan.opt_total:
            return
        self.last = now
        atomic_write_json(self.path, {"epoch": progress.epoch + 1, "epochs": plan.n_epochs,
                                      "step": progress.opt_step, "steps": plan.opt_total,
                                      "elapsed": round(now - self.start, 1), "time": now})


def read_status(run_dir: Path) -> dict[str, Any] | None:
    try:
        return json.loads((Path(run_dir) / STATUS_NAME).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def execute(job: Job, ship_artifacts: bool = False, log_dir: Path | None = None) -> Outcome:
    """Run ``job`` here and now; never raises (the outcome says what went wrong). A training job's
    traceback goes to ``RUN/error.log``, a step's to ``log_dir/NAME.error.log``."""
    start = time.time()
    outcome = Outcome(job.name, ok=False, started_at=start)
    try:
        if job.is_training:
            run = job.run
            run.path.mkdir(parents=True, exist_ok=True)
            if job.info is not None:
                atomic_write_json(run.study_info_path, dict(job.info))
            was_finished = job.finished()
            result = ensure_run(job.config, needs=job.needs, tag=job.name, say=lambda line: print(line, flush=True),
                                on_step=StatusWriter(run.path))
            (run.path / STATUS_NAME).unlink(missing_ok=True)
            outcome.trained = not was_finished
            outcome.metrics = result.metrics
            if ship_artifacts:
                outcome.artifacts = {str(p): (run.path / p).read_bytes() for p in run.small_artifacts()}
        else:
            job.action(*job.args)
        outcome.ok = True
    except NonFiniteLossError as exc:  # a diverged run is that run's failure, not a mistake in the study
        outcome.error = str(exc)
    except UserError as exc:
        outcome.error, outcome.user_error = str(exc), True
    except KeyboardInterrupt:
        raise
    except Exception as exc:  # noqa: BLE001 - one job's failure must not stop the others
        outcome.error = f"{type(exc).__name__}: {exc}".splitlines()[0]
        log = job.run.path / "error.log" if job.is_training else \
            Path(log_dir or ".") / f"{job.name.replace('/', '_')}.error.log"
        try:
            atomic_write_text(log, traceback.format_exc())
            outcome.error += f" (traceback in {log})"
        except OSError:
            pass
    outcome.seconds = round(time.time() - start, 1)
    return outcome
