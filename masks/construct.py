"""Merge single-task tickets into the mask of a multi-task run (library of ``construct_mtl_mask.py``).

A ticket path is a single-task mask file (e.g. ``super_ticket.safetensors``) or a directory holding
``super_ticket.safetensors``. ``per-task`` writes every task's mask into one file, so that each
batch of a multi-task run is gated by its own task's mask.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from basics.errors import UserError
from basics.io import atomic_write_json
from masks.aggregate import AggregateMode, aggregate, parse_mode
from masks.arch import EncoderShape
from masks.mask import Mask, load_mask_file, save_mask, save_task_masks
from masks.meta import format_fraction
from masks.report import build_report
from tasks.registry import default_registry

TICKET_FILE = "super_ticket.safetensors"  # looked up when a --tickets PATH is a directory
UNKNOWN_MODELS = ("", "unknown")  # "model" metadata that matches any model
TICKET_ONLY_META = ("ffn_sparsity", "source")  # describe one ticket's cut, not the merged mask


def canonical_task_name(name: str) -> str:
    registry = default_registry()
    return registry.get(name).name if name in registry else name


def parse_tickets(items: Sequence[str]) -> dict[str, Path]:
    """``["rte=a.safetensors", "STS-B=dir"]`` -> ``{"rte": Path(...), "stsb": Path(...)}``.

    Known task names and spellings become the registry's canonical name (what ``train.py`` uses to
    look up a per-task mask); other names are lower-cased.
    """
    if not items:
        raise UserError("--tickets needs at least one TASK=PATH item")
    out: dict[str, Path] = {}
    for item in items:
        task, sep, path = item.partition("=")
        task = canonical_task_name(task.strip().lower())
        if not sep or not path:
            raise UserError(
                f"bad --tickets item {item!r}: expected TASK=PATH, e.g. rte=runs/rte/super_ticket.safetensors"
            )
        if not task or any(c in task for c in ", \t"):
            raise UserError(f"bad task name {task!r} in --tickets item {item!r} (no commas or spaces)")
        if task in out:
            raise UserError(f"task {task!r} given twice in --tickets ({out[task]} and {path}); give each task once")
        out[task] = Path(path)
    return out


def ticket_file(path: Path) -> Path:
    """``path`` itself, or ``path/super_ticket.safetensors`` when ``path`` is a directory."""
    if path.is_dir():
        if not (path / TICKET_FILE).is_file():
            raise UserError(f"directory {path} has no {TICKET_FILE}; give the mask file itself")
        return path / TICKET_FILE
    if not path.exists():
        raise UserError(f"ticket file not found: {path}")
    return path


def load_ticket(task: str, path: Path) -> Mask:
    """One single-task mask; a per-task file is a UserError naming it."""
    loaded = load_mask_file(path)
    if not isinstance(loaded, Mask):
        raise UserError(
            f"{task}={path} is a per-task mask file (tasks {', '.join(loaded)}); "
            "--tickets takes single-task mask files such as super_ticket.safetensors"
        )
    return loaded


def check_task_labels(masks: dict[str, Mask], paths: dict[str, Path], relabel: bool = False) -> None:
    """Each ticket was cut for the task it is given for (its ``tasks`` metadata, when it records any).

    A mismatch (``mrpc=`` a ticket of ``para``) is a UserError unless ``relabel``: then the ticket is
    used for the task it is given for, and its metadata says so (``tasks`` = that task,
    ``relabelled_from`` = the tasks it recorded)."""
    for task, mask in masks.items():
        recorded = tuple(canonical_task_name(t.lower()) for t in mask.meta.tasks)
        if not recorded or task in recorded:
            continue
        if not relabel:
            raise UserError(f"{task}={paths[task]} is a ticket of task(s) {','.join(mask.meta.tasks)}, not of {task}; "
                            f"give the ticket cut for {task}, or add --relabel to use it for {task} anyway")
        mask.meta = mask.meta.replace(tasks=(task,), extra={"relabelled_from": ",".join(mask.meta.tasks)})


def common_shape(masks: dict[str, Mask], paths: dict[str, Path]) -> EncoderShape:
    """The one encoder shape all masks are for (from their ``shape`` metadata, checked against the tensors)."""
    shapes = {task: m.meta.shape for task, m in masks.items() if m.meta.shape is not None}
    if not shapes:
        raise UserError(
            "no ticket records its encoder shape (metadata 'shape', e.g. 'L=6,H=12,d=32,hidden=384,I=1536'), "
            "which parameter counts need; cut tickets with masks.tickets.cut_ticket or set mask.meta.shape"
        )
    first = next(iter(shapes))
    shape = shapes[first]
    for task, other in shapes.items():
        if other != shape:
            raise UserError(
                f"tickets have different shapes: {first} is {shape.describe()} ({paths[first]}) "
                f"but {task} is {other.describe()} ({paths[task]})"
            )
    for task, mask in masks.items():
        try:
            mask.check_shape(shape)
        except UserError as exc:
            raise UserError(f"tickets have different shapes: {task}={paths[task]}: {exc}") from exc
    return shape


def common_model(masks: dict[str, Mask], paths: dict[str, Path]) -> str:
    """The one model all masks are for (masks without a ``model`` entry match any)."""
    known = {task: m.meta.model for task, m in masks.items()}
    known = {task: model for task, model in known.items() if model not in UNKNOWN_MODELS}
    models = sorted(set(known.values()))
    if len(models) > 1:
        listed = ", ".join(f"{task}={model} ({paths[task]})" for task, model in known.items())
        raise UserError(f"tickets are for different models: {listed}")
    return models[0] if models else "unknown"


def check_output(path: Path, flag: str, taken: dict[str, Path]) -> None:
    """UserError unless ``path`` can be written: not a directory, none of ``taken`` (``{what: path}``),
    its first existing folder writable (missing folders are created when writing)."""
    if path.is_dir():
        raise UserError(f"{flag} {path} is a directory; give a file path, e.g. {path / 'mtl_mask.safetensors'}")
    for what, other in taken.items():
        if path.resolve() == other.resolve():
            raise UserError(f"{flag} {path} is {what}; write to another file")
    parent = path.parent
    while not parent.exists():  # the first existing ancestor decides (missing folders get created)
        parent = parent.parent
    if not parent.is_dir():
        raise UserError(f"{flag} {path}: cannot create its folder, {parent} is a file")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise UserError(f"{flag} {path}: output directory {parent} is not writable")


def merge(masks: dict[str, Mask], mode: AggregateMode) -> tuple[Mask | dict[str, Mask], Mask]:
    """``(what to save, merged mask)``; for ``per-task`` the dict of task masks and their union."""
    if mode.name == "per-task":
        return aggregate(masks, mode), aggregate(masks, "union")
    merged = aggregate(masks, mode)  # meta: the tickets' shared entries
    merged.meta = merged.meta.replace(ffn_sparsity=None, extra={})
    merged.meta.extra = {k: v for k, v in merged.meta.extra.items() if k not in TICKET_ONLY_META}
    return merged, merged


def save_result(result: Mask | dict[str, Mask], out: Path, file_meta: dict[str, str]) -> None:
    """Write one mask (``save_mask``) or one per-task file (``save_task_masks``); OSError -> UserError."""
    try:
        if isinstance(result, Mask):
            save_mask(result, out)
        else:
            save_task_masks(result, out, meta=file_meta)
    except OSError as exc:
        raise UserError(f"cannot write --out {out}: {exc.strerror or exc}") from exc


def construct(tickets: dict[str, Path], mode: str, out: Path, json_path: Path | None = None,
              relabel: bool = False) -> dict[str, Any]:
    """Load ``{task: mask path}``, merge by ``mode``, write ``out`` (and ``json_path``); return the report.

    A ticket whose metadata names other tasks than the one it is given for is refused unless ``relabel``
    (:func:`check_task_labels`)."""
    parsed = parse_mode(mode)
    if parsed.name == "vote" and not 1 <= parsed.k <= len(tickets):
        raise UserError(f"bad mode {parsed}: K must be in 1..{len(tickets)} for {len(tickets)} tickets")
    paths = {task: ticket_file(path) for task, path in tickets.items()}
    taken = {f"the input ticket of {task}": path for task, path in paths.items()}
    check_output(out, "--out", taken)
    if json_path is not None:
        check_output(json_path, "--json", {**taken, "the --out file": out})
    masks = {task: load_ticket(task, path) for task, path in paths.items()}
    shape, model = common_shape(masks, paths), common_model(masks, paths)
    check_task_labels(masks, paths, relabel)
    sources = {task: str(path.resolve()) for task, path in paths.items()}
    for task, mask in masks.items():  # per-task files keep each task's own metadata
        mask.meta.extra["source"] = sources[task]
    file_meta = {"kind": parsed.name, "aggregate": str(parsed), "tasks": ",".join(masks),
                 "sources": json.dumps(sources), "model": model, "shape": shape.describe()}
    result, merged = merge(masks, parsed)
    sparsity = merged.sparsity(shape)
    file_meta.update(sparsity=format_fraction(round(sparsity, 4)), param_sparsity=f"{sparsity:.4f}")
    if isinstance(result, Mask):
        result.meta = result.meta.updated(file_meta)
    save_result(result, out, file_meta)
    report = build_report(masks, merged, mode=str(parsed), shape=shape, model=model, sources=sources, out=str(out))
    if json_path is not None:
        try:
            atomic_write_json(json_path, report)
        except OSError as exc:
            raise UserError(f"cannot write --json {json_path}: {exc.strerror or exc}") from exc
    return report
