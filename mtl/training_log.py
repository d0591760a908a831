"""Where training logs go besides ``metrics.jsonl``: ``--report-to`` targets (:data:`REPORTERS`).

A reporter receives every record the trainer writes to ``metrics.jsonl`` (:meth:`mtl.trainer.Trainer._log`):
the training loss per task every ``--log-every`` steps (``step``, ``epoch``, ``lr``, ``loss``), and one
evaluation per epoch (``epoch``, ``step``, ``eval``, ``score``, ``holdout``). The JSONL log stays.

``tensorboard``: :class:`TensorBoardLogger` writes them as TensorBoard scalars into ``RUN/tensorboard/``,
one folder per run, so ``tensorboard --logdir STUDY_DIR`` shows every run of a study as its own run.
Tags: ``train/loss/<task>``, ``train/lr``, ``train/epoch``, ``dev/<task>/<metric>``, ``dev/score``
(the selection score), ``holdout/<task>/<metric>``; the x axis is the optimizer step. Needs the
``tensorboard`` package (``pip install 'mtl-tickets[tensorboard]'``), imported only when a logger is made.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from basics.errors import UserError
from basics.registry import Registry

TENSORBOARD_DIR = "tensorboard"


class TensorBoardLogger:
    """Training records -> TensorBoard scalars under ``run_dir/tensorboard``; the writer opens at the first record.

    ``purge_step``: on ``--resume``, events at or after this step from the interrupted attempt are hidden
    (TensorBoard's purge), as ``metrics.jsonl`` is cut back to the checkpoint.
    """

    def __init__(self, run_dir: Path, purge_step: int | None = None) -> None:
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            raise UserError("--report-to tensorboard needs the tensorboard package: "
                            "pip install 'mtl-tickets[tensorboard]' (or: pip install tensorboard)") from None
        self._make = lambda: SummaryWriter(log_dir=str(Path(run_dir) / TENSORBOARD_DIR), purge_step=purge_step,
                                           flush_secs=30)
        self._writer = None

    @property
    def writer(self):
        if self._writer is None:
            self._writer = self._make()
        return self._writer

    def __call__(self, record: Mapping[str, Any]) -> None:
        step = int(record.get("step", 0))
        if "loss" in record:
            for task, value in record["loss"].items():
                self.writer.add_scalar(f"train/loss/{task}", value, step)
            self.writer.add_scalar("train/lr", record["lr"], step)
            self.writer.add_scalar("train/epoch", record["epoch"], step)
        for key, prefix in (("eval", "dev"), ("holdout", "holdout")):
            for task, metrics in (record.get(key) or {}).items():
                for metric, value in metrics.items():
                    self.writer.add_scalar(f"{prefix}/{task}/{metric}", value, step)
        if "eval" in record:
            if record.get("score") is not None:
                self.writer.add_scalar("dev/score", record["score"], step)
            self.writer.flush()  # an epoch's results are on disk at once

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()


REPORTERS: Registry[Callable[..., Any]] = Registry("--report-to target")
REPORTERS.register("tensorboard", TensorBoardLogger)


def open_reporters(names: Sequence[str], run_dir: Path, purge_step: int | None = None) -> list[Any]:
    """One reporter per name (checked: a missing package is a one-line error before anything is written)."""
    return [REPORTERS.get(name)(run_dir, purge_step=purge_step) for name in names]


def close_reporters(reporters: Sequence[Any]) -> None:
    for reporter in reporters:
        reporter.close()
