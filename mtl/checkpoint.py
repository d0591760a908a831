"""Training checkpoints: everything ``--resume`` needs, in one atomically written file; where a run resumes.

``OUTPUT/checkpoint.pt`` (``torch.save`` of plain containers and tensors, read back with
``weights_only=True``) holds::

    format, version, config            the run's options (a resume with other options is refused)
    model, optimizer, scheduler, scaler    state dicts
    progress                           mtl.trainer.Progress as a dict: epoch, position in the epoch's
                                       schedule, step counters, pending log losses, history, best record,
                                       length of metrics.jsonl at this point
    best_state                         the best epoch's weights (keep_best), or None
    rng                                one RNG state per rank: torch CPU (dropout), CUDA, Python

A checkpoint is written only at an optimizer-step boundary, so no half-accumulated gradient is lost.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import torch

from basics.errors import UserError
from basics.io import atomic_write
from basics.io import remove_temporaries as _remove_temporaries

from .config import TrainConfig, check_same_run, read_yaml
from .distributed import SINGLE, Dist

CHECKPOINT_NAME = "checkpoint.pt"
CHECKPOINT_FORMAT = "mtl-tickets/checkpoint"
CHECKPOINT_VERSION = 1


def rng_state() -> dict[str, Any]:
    """This process's random state: torch CPU (dropout), every CUDA device, Python's ``random``."""
    return {"torch": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
            "python": random.getstate()}


def set_rng_state(state: dict[str, Any]) -> None:
    """Inverse of :func:`rng_state` (CUDA states only where this machine has CUDA)."""
    torch.set_rng_state(state["torch"])
    if state.get("cuda") is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    if state.get("python") is not None:
        random.setstate(state["python"])


def save_checkpoint(path: Path, state: dict[str, Any]) -> None:
    """Write ``state`` (see the module doc) to ``path`` atomically: a crash leaves the previous file."""
    atomic_write(path, lambda tmp: torch.save({"format": CHECKPOINT_FORMAT, "version": CHECKPOINT_VERSION, **state}, tmp))


def load_checkpoint(path: Path) -> dict[str, Any]:
    """Read a file written by :func:`save_checkpoint` (on the CPU); one-line UserError if unusable."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # truncated, not a torch file, unpicklable content
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise UserError(f"cannot read checkpoint {path} ({first}); delete it to start the run over") from None
    if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT:
        raise UserError(f"{path} is not a training checkpoint of this toolkit; delete it to start the run over")
    if state.get("version") != CHECKPOINT_VERSION:
        raise UserError(f"{path} has checkpoint version {state.get('version')}, this code reads {CHECKPOINT_VERSION}")
    return state


def remove_temporaries(directory: Path) -> None:
    """Delete temporary files and folders that a killed :func:`basics.io.atomic_write` or
    :func:`basics.io.atomic_write_dir` (the final ``model/``) left in ``directory``."""
    _remove_temporaries(directory)


# ---------------------------------------------------------------- --resume

def resume_point(out: Path, config: TrainConfig, dist: Dist = SINGLE) -> tuple[str, dict | None]:
    """``("fresh", None)``, ``("resume", checkpoint)`` or ``("complete", None)`` (a finished run, nothing
    to resume). Rank 0 reads the files and tells the others; a conflicting config is a UserError."""
    answer = None
    if dist.is_main:
        try:
            answer = ("ok", _resume_point(out, config))
        except UserError as exc:
            answer = ("error", str(exc))
    answer = dist.broadcast_object(answer)
    if answer[0] == "error":
        raise UserError(answer[1])
    return answer[1]


def _resume_point(out: Path, config: TrainConfig) -> tuple[str, dict | None]:
    if not config.output.resume:
        return "fresh", None
    saved = out / "config.yaml"
    if saved.is_file():
        check_same_run(read_yaml(saved), config, saved)
    checkpoint_path = out / CHECKPOINT_NAME
    if checkpoint_path.is_file():
        checkpoint = load_checkpoint(checkpoint_path)
        check_same_run(checkpoint["config"], config, checkpoint_path)
        return "resume", checkpoint
    if (out / "metrics.json").is_file() and (out / "results.json").is_file():
        return "complete", None
    return "fresh", None


def clear_previous_run(out: Path) -> None:
    """Before a fresh start: remove what marks an earlier run in ``out`` as finished or resumable."""
    for name in (CHECKPOINT_NAME, "metrics.json", "results.json"):
        (out / name).unlink(missing_ok=True)
