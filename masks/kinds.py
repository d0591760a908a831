"""The choices of how a ticket is cut: ticket kinds, FFN granularities and FFN allocations (one registry each).

A ticket kind is the order in which units are pruned: ``order(scores, generator)`` gives the flat
indices of ``scores`` (any shape) from first pruned to last.

- ``winning``: ascending score (the least important go first; keeps the most important);
- ``losing``: descending score (keeps the least important);
- ``random``: a permutation drawn from ``generator`` (the same counts as winning, no scores used).

Ties break by flat index (stable sort). A new kind is one function and one ``register`` line.
This module is read by the option parser, so it imports torch only inside the random order.
"""

from __future__ import annotations

from typing import Any, Protocol

from basics.errors import UserError
from basics.registry import Registry


class PruneOrder(Protocol):
    def __call__(self, scores: Any, generator: Any) -> Any: ...


def _finite(flat: Any) -> Any:
    if not bool(flat.isfinite().all()):
        raise UserError("importance scores contain NaN or inf; re-run scoring")
    return flat


def winning_order(scores: Any, generator: Any) -> Any:
    return _finite(scores).sort(descending=False, stable=True).indices


def losing_order(scores: Any, generator: Any) -> Any:
    return _finite(scores).sort(descending=True, stable=True).indices


def random_order(scores: Any, generator: Any) -> Any:
    import torch

    return torch.randperm(scores.numel(), generator=generator)


TICKET_KINDS: Registry[PruneOrder] = Registry("ticket kind")
TICKET_KINDS.register("winning", winning_order)
TICKET_KINDS.register("random", random_order)
TICKET_KINDS.register("losing", losing_order)

# FFN units a ticket prunes: single neurons, or whole FFN blocks (one gate per layer).
GRANULARITIES: Registry[str] = Registry("FFN granularity")
GRANULARITIES.register("neuron", "single FFN neurons, ranked globally")
GRANULARITIES.register("layer", "whole FFN blocks, one per layer, ranked by the block's gate score")

# How a ticket's FFN neurons to prune are spread over the layers.
FFN_ALLOCATIONS: Registry[str] = Registry("FFN allocation")
FFN_ALLOCATIONS.register("global", "neurons ranked across all layers at once (the layers' shares follow the scores)")
FFN_ALLOCATIONS.register("per-layer", "the same fraction pruned in every layer, neurons ranked within their layer")
