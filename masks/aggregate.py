"""Combine per-task masks (True = keep) into the multi-task mask.

Modes: ``union`` (kept if any task keeps it), ``intersection`` (kept if all do),
``vote:K`` (kept if at least K tasks keep it), ``per-task`` (no merge: each task's batches
are gated by its own mask).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from masks.arch import EncoderShape
from masks.mask import Mask, format_fraction
from mtl.errors import UserError

MODES: tuple[str, ...] = ("union", "intersection", "vote:K", "per-task")


@dataclass(frozen=True)
class AggregateMode:
    """A parsed mode: name in union/intersection/vote/per-task, ``k`` for vote."""

    name: str
    k: int | None = None

    def __str__(self) -> str:
        return f"vote:{self.k}" if self.name == "vote" else self.name


def parse_mode(text: str) -> AggregateMode:
    """``"union"``, ``"intersection"``, ``"per-task"`` or ``"vote:K"`` (K >= 1) -> AggregateMode."""
    text = text.strip().lower()
    if text in ("union", "intersection", "per-task"):
        return AggregateMode(text)
    if text.startswith("vote:"):
        k = text.split(":", 1)[1]
        if k.isdigit() and int(k) >= 1:
            return AggregateMode("vote", int(k))
        raise UserError(f"bad vote spec {text!r}: K must be a positive integer, e.g. vote:2")
    raise UserError(f"unknown aggregation mode {text!r}; valid: {', '.join(MODES)}")


def _validate(masks: dict[str, Mask]) -> list[Mask]:
    if not masks:
        raise UserError("aggregate needs at least one task mask")
    items = list(masks.values())
    for task, mask in masks.items():
        if not isinstance(mask, Mask):
            raise UserError(f"mask for task {task!r} is a {type(mask).__name__}, not a Mask")
        if mask.heads.shape != items[0].heads.shape or mask.ffn.shape != items[0].ffn.shape:
            raise UserError(f"mask shapes differ: task {task!r} is {mask.dims}, first is {items[0].dims}")
    return items


def vote(masks: list[Mask], k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(heads ``[L, H]``, ffn ``[L, I]``) bool: units kept by at least ``k`` of the masks."""
    heads = torch.stack([m.heads for m in masks]).sum(0)  # [L, H] votes
    ffn = torch.stack([m.ffn for m in masks]).sum(0)  # [L, I] votes
    return heads >= k, ffn >= k


def aggregate(masks: dict[str, Mask], mode: str | AggregateMode) -> Mask | dict[str, Mask]:
    """Merge ``{task: Mask}`` by ``mode``; ``per-task`` returns the dict (validated, same shapes)."""
    parsed = parse_mode(mode) if isinstance(mode, str) else mode
    items = _validate(masks)
    if parsed.name == "per-task":
        return dict(masks)
    n = len(items)
    k = {"union": 1, "intersection": n}.get(parsed.name, parsed.k)
    if k is None or not 1 <= k <= n:
        raise UserError(f"bad vote spec {parsed}: K must be in 1..{n} for {n} task masks")
    heads, ffn = vote(items, k)
    first = items[0].meta
    meta = {key: v for key, v in first.items() if all(m.meta.get(key) == v for m in items)}
    for key in ("sparsity", "param_sparsity", "seed", "tasks"):
        meta.pop(key, None)
    meta.update(kind=parsed.name, aggregate=str(parsed), tasks=",".join(masks))
    out = Mask(heads, ffn, meta)
    if "shape" in meta:
        out.meta["sparsity"] = format_fraction(round(out.sparsity(EncoderShape.parse(meta["shape"])), 4))
    return out


def overlap_table(masks: dict[str, Mask]) -> dict[tuple[str, str], float]:
    """Jaccard overlap (heads and neurons pooled) for every ordered pair ``(a, b)``, diagonal included."""
    _validate(masks)
    return {(a, b): ma.jaccard(mb) for a, ma in masks.items() for b, mb in masks.items()}
