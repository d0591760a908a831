"""Combine per-task masks (True = keep) into the multi-task mask.

Modes: ``union`` (kept if any task keeps it), ``intersection`` (kept if all do),
``vote:K`` (kept if at least K tasks keep it), ``per-task`` (no merge: each task's batches
are gated by its own mask).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from basics.errors import UserError
from basics.registry import Registry
from masks.mask import Mask
from masks.meta import MaskMeta


@dataclass(frozen=True)
class Aggregation:
    """How one mode merges ``n`` task masks: ``threshold(n, k)`` is the number of tasks that must keep a
    unit (None: no merge, every task keeps its own mask); ``takes_k`` for modes written ``name:K``."""

    threshold: Callable[[int, int | None], int | None]
    takes_k: bool = False


AGGREGATIONS: Registry[Aggregation] = Registry("aggregation mode")
AGGREGATIONS.register("union", Aggregation(lambda n, k: 1))
AGGREGATIONS.register("intersection", Aggregation(lambda n, k: n))
AGGREGATIONS.register("vote", Aggregation(lambda n, k: k, takes_k=True))
AGGREGATIONS.register("per-task", Aggregation(lambda n, k: None))
MODES: tuple[str, ...] = tuple(f"{name}:K" if AGGREGATIONS.get(name).takes_k else name for name in AGGREGATIONS)


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
    name, _, k = text.partition(":")
    if name not in AGGREGATIONS:
        raise UserError(f"unknown aggregation mode {text!r}; valid: {', '.join(MODES)}")
    if not AGGREGATIONS.get(name).takes_k:
        if k or text != name:
            raise UserError(f"unknown aggregation mode {text!r}; valid: {', '.join(MODES)}")
        return AggregateMode(name)
    if k.isdigit() and int(k) >= 1:
        return AggregateMode(name, int(k))
    raise UserError(f"bad {name} spec {text!r}: K must be a positive integer, e.g. {name}:2")


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
    n = len(items)
    k = AGGREGATIONS.get(parsed.name).threshold(n, parsed.k)
    if k is None:  # per-task: no merge
        return dict(masks)
    if not 1 <= k <= n:
        raise UserError(f"bad vote spec {parsed}: K must be in 1..{n} for {n} task masks")
    heads, ffn = vote(items, k)
    meta = MaskMeta.merged([m.meta for m in items], parsed.name).replace(tasks=tuple(masks))
    return Mask(heads, ffn, meta.with_extra(aggregate=str(parsed))).with_measured_sparsity()


def overlap_table(masks: dict[str, Mask]) -> dict[tuple[str, str], float]:
    """Jaccard overlap (heads and neurons pooled) for every ordered pair ``(a, b)``, diagonal included."""
    _validate(masks)
    return {(a, b): ma.jaccard(mb) for a, ma in masks.items() for b, mb in masks.items()}
