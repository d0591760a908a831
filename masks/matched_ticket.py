"""A union of winning tickets cut to a given encoder size: the ticket to compare a sub-architecture with.

Each task's winning ticket at sparsity ``s`` (:func:`masks.tickets.cut_ticket` on the task's importance
scores) keeps its most important heads and FFN neurons; their union keeps a unit that any task keeps, as
``construct_mtl_mask.py --mode union`` does with super tickets. :func:`matched_union` searches ``s`` (by
bisection: the union shrinks as ``s`` grows) so that the compacted encoder layers hold as close as possible
to ``target`` parameters (:func:`masks.cost.param_counts`, ``layers``): a ticket and a sub-architecture
with the same encoder parameter count.
"""

from __future__ import annotations

from collections.abc import Mapping

from basics.errors import UserError
from masks.arch import EncoderShape
from masks.cost import EncoderSize, param_counts
from masks.importance import Importance
from masks.mask import Mask
from masks.tickets import cut_ticket


def union_at(importances: Mapping[str, Importance], shape: EncoderShape, sparsity: float,
             min_heads_per_layer: int = 1) -> Mask:
    """The union of every task's winning ticket at ``sparsity``."""
    masks = [cut_ticket(imp, "winning", sparsity, shape=shape, min_heads_per_layer=min_heads_per_layer)
             for imp in importances.values()]
    union = masks[0]
    for mask in masks[1:]:
        union = union | mask
    union.meta = union.meta.updated({"kind": "union", "tasks": ",".join(importances), "source_sparsity": f"{sparsity:.4f}"})
    return union


def layer_params(mask: Mask, teacher: EncoderSize) -> int:
    """Parameters of the encoder layers once ``mask`` is compacted out of a teacher of size ``teacher``."""
    size = EncoderSize(teacher.hidden, teacher.head_dim, tuple(int(n) for n in mask.heads.sum(1)),
                       tuple(int(n) for n in mask.ffn.sum(1)), teacher.vocab, teacher.positions, teacher.token_types,
                       teacher.embedding, teacher.pooler)
    return param_counts(size)["layers"]


def matched_union(importances: Mapping[str, Importance], shape: EncoderShape, teacher: EncoderSize, target: int,
                  min_heads_per_layer: int = 1, iterations: int = 40) -> Mask:
    """The union of winning tickets whose compacted layers hold the parameter count closest to ``target``."""
    if not importances:
        raise UserError("a matched ticket needs at least one task's importance scores")
    top = 1 - min_heads_per_layer / shape.num_heads - 1e-9  # the most a cut may prune and keep min_heads_per_layer
    low, high = 0.0, max(0.0, top)
    best = union_at(importances, shape, low, min_heads_per_layer)
    for _ in range(iterations):
        middle = (low + high) / 2
        mask = union_at(importances, shape, middle, min_heads_per_layer)
        if abs(layer_params(mask, teacher) - target) < abs(layer_params(best, teacher) - target):
            best = mask
        if layer_params(mask, teacher) > target:
            low = middle
        else:
            high = middle
    best.meta = best.meta.updated({**best.meta.extra, "target_layer_params": str(target),
                                   "layer_params": str(layer_params(best, teacher))})
    return best
