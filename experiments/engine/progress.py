"""What the scheduler prints: a line when a job starts or ends, and every so often one line per active
run (epoch, step, ETA from its status file) with the study's progress and ETA from the cost model."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Iterable

from experiments.engine.cost import CostModel, duration
from experiments.engine.jobs import Job
from experiments.engine.worker import read_status


def run_eta(status: dict | None) -> str:
    """``epoch 2/3, step 120/187, ETA 1m40s`` from a run's status file."""
    if not status or not status.get("steps"):
        return "starting"
    step, steps, elapsed = status["step"], status["steps"], status.get("elapsed", 0.0)
    eta = elapsed / step * (steps - step) if step else None
    return f"epoch {status['epoch']}/{status['epochs']}, step {step}/{steps}, ETA {duration(eta)}"


class Board:
    """Progress lines for one study run by one scheduler."""

    def __init__(self, total: int, cost: CostModel, slots: int, say: Callable[[str], None] | None = None,
                 every: float = 60.0, deadline: float | None = None) -> None:
        self.total = total
        self.deadline = deadline  # the time limit's end (time.time() clock), when there is one
        self.cost = cost
        self.slots = max(1, slots)
        self.say = say or (lambda line: print(line, file=sys.stdout, flush=True))
        self.every = every
        self.last = time.time()
        self.started: dict[str, float] = {}

    def start(self, job: Job, note: str = "") -> None:
        self.started[job.name] = time.time()
        self.say(f"[start] {job.name}{note}")

    def end(self, job: Job, text: str) -> None:
        self.started.pop(job.name, None)
        self.say(f"[{text.split(':')[0]}] {job.name}{text[len(text.split(':')[0]):]}")

    def remaining_seconds(self, pending: Iterable[Job], running: Iterable[Job]) -> float | None:
        """Estimated wall seconds left: the cost of what is pending plus what running jobs still need,
        spread over the slots."""
        total = 0.0
        for job in pending:
            cost = self.cost.seconds(job)
            total += cost or 0.0
        now = time.time()
        for job in running:
            cost = self.cost.seconds(job)
            if cost is not None:
                total += max(0.0, cost - (now - self.started.get(job.name, now)))
        return total / self.slots

    def maybe_report(self, done: int, failed: int, pending: list[Job], running: list[Job], force: bool = False,
                     left: int = 0) -> None:
        """The progress bar and a line per running job, every ``every`` seconds (``force``: now). ``left``: jobs
        left at the time limit (not failures: the next call runs them)."""
        now = time.time()
        if not force and now - self.last < self.every:
            return
        self.last = now
        width = 20
        filled = int(width * done / self.total) if self.total else width
        eta = self.remaining_seconds(pending, running)
        self.say(f"[study] [{'#' * filled}{'.' * (width - filled)}] {done}/{self.total} done, {len(running)} running, "
                 f"{failed} failed{f', {left} left at the time limit' if left else ''}; ETA {duration(eta)}"
                 + ("" if self.deadline is None else f", time limit in {duration(max(0.0, self.deadline - now))}"))
        for job in running:
            status = read_status(job.run.path) if job.is_training else None
            self.say(f"    {job.describe()}: {run_eta(status) if job.is_training else 'running'}")
