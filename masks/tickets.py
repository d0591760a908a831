"""Cut winning / random / losing tickets (masks, True = keep) from importance scores.

- winning: prune the lowest-scoring units (keep the most important);
- losing: prune the highest-scoring units;
- random: prune a uniformly random set of exactly the same size (seeded generator).

Heads are ranked globally across layers and keep at least ``min_heads_per_layer`` per layer: when
that binds, the next candidates in order are pruned instead, so counts stay exact. FFN neurons are
ranked globally (``ffn_allocation="global"``, the default) or within each layer, the same fraction
pruned in every layer (``"per-layer"``; :data:`masks.kinds.FFN_ALLOCATIONS`). Global ranking of
unnormalised neuron scores lets the layers with the smallest scores (often the last) lose most;
per-layer allocation, or FFN scores normalised per layer (``normalize_ffn="layer_l2"`` when scoring),
spread the pruning.
Counts: ``n_prune = floor(fraction * count + 0.5)`` (round half up).
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import torch

from basics.errors import UserError
from masks.arch import EncoderShape
from masks.importance import Importance
from masks.kinds import FFN_ALLOCATIONS, GRANULARITIES, TICKET_KINDS
from masks.mask import Mask
from masks.meta import MaskMeta

KINDS: tuple[str, ...] = TICKET_KINDS.names()


def n_to_prune(fraction: float, count: int) -> int:
    """Units pruned out of ``count`` for ``fraction`` (round half up, exact for 0.3*10)."""
    return int(math.floor(fraction * count + 0.5 + 1e-9))


def _check_fraction(name: str, value: float) -> float:
    if not isinstance(value, (int, float)) or not 0.0 <= float(value) < 1.0:
        raise UserError(f"{name} must be a fraction in [0, 1), got {value!r}")
    return float(value)


def prune_order(scores: torch.Tensor, kind: str, generator: torch.Generator) -> torch.Tensor:
    """Flat indices of ``scores`` (any shape) in the order they are pruned, by the ticket kind's order
    (:data:`masks.kinds.TICKET_KINDS`: winning ascending, losing descending, random a permutation)."""
    flat = scores.detach().flatten().float().cpu()
    return TICKET_KINDS.get(kind)(flat, generator)


def _prune_heads(
    order: torch.Tensor, n_prune: int, num_heads: int, keep_min: int, num_layers: int
) -> torch.Tensor:
    """bool ``[L, H]`` keep-mask: prune ``order`` greedily, never below ``keep_min`` per layer."""
    keep = torch.ones(num_layers * num_heads, dtype=torch.bool)  # [L*H]
    kept = [num_heads] * num_layers
    pruned = 0
    for idx in order.tolist():
        if pruned == n_prune:
            break
        layer = idx // num_heads
        if kept[layer] > keep_min:
            keep[idx] = False
            kept[layer] -= 1
            pruned += 1
    return keep.view(num_layers, num_heads)


def _prune_flat(order: torch.Tensor, n_prune: int, shape: tuple[int, ...]) -> torch.Tensor:
    """bool keep-mask of ``shape`` with the first ``n_prune`` indices of ``order`` pruned."""
    keep = torch.ones(math.prod(shape), dtype=torch.bool)
    keep[order[:n_prune]] = False
    return keep.view(shape)


def _ffn_mask(
    imp: Importance, kind: str, frac: float, shape: EncoderShape, granularity: str, gen: torch.Generator,
    allocation: str = "global",
) -> torch.Tensor:
    """bool ``[L, I]``: neurons ranked globally or per layer, or whole layers ranked by ``ffn_layer_raw``."""
    L, I = shape.num_layers, shape.intermediate
    if granularity == "layer":
        order = prune_order(imp.ffn_layer_raw[:, 0], kind, gen)  # [L]
        layer_keep = _prune_flat(order, n_to_prune(frac, L), (L,))  # [L]
        return layer_keep[:, None].expand(L, I).clone()
    if allocation == "per-layer":  # n_to_prune(frac, I) in every layer
        rows = [_prune_flat(prune_order(imp.ffn[layer], kind, gen), n_to_prune(frac, I), (I,)) for layer in range(L)]
        return torch.stack(rows)  # [L, I]
    order = prune_order(imp.ffn, kind, gen)  # [L*I]
    return _prune_flat(order, n_to_prune(frac, L * I), (L, I))


def cut_ticket(
    imp: Importance,
    kind: str,
    sparsity: float,
    *,
    shape: EncoderShape,
    ffn_sparsity: float | None = None,
    min_heads_per_layer: int = 1,
    granularity: str = "neuron",
    ffn_allocation: str = "global",
    seed: int = 0,
    meta: dict[str, str] | None = None,
) -> Mask:
    """Cut one ticket (True = keep) from ``imp``.

    ``sparsity`` in [0, 1) is the fraction of heads pruned, and of FFN units pruned unless
    ``ffn_sparsity`` is given (FFN units = neurons, or whole FFN layers for
    ``granularity="layer"``). ``random`` prunes exactly as many units per granularity as
    ``winning``, drawn with ``torch.Generator().manual_seed(seed)``. ``ffn_allocation``
    (:data:`masks.kinds.FFN_ALLOCATIONS`): FFN neurons ranked across layers ("global") or the same
    fraction pruned in every layer ("per-layer", neuron granularity only).
    Returns a Mask with heads ``[L, H]``, ffn ``[L, I]``.
    """
    TICKET_KINDS.check(kind)
    GRANULARITIES.check(granularity)
    FFN_ALLOCATIONS.check(ffn_allocation)
    if ffn_allocation != "global" and granularity != "neuron":
        raise UserError(f"ffn_allocation {ffn_allocation!r} spreads FFN neurons over layers; it needs granularity "
                        f"'neuron', got {granularity!r}")
    head_frac = _check_fraction("sparsity", sparsity)
    ffn_frac = head_frac if ffn_sparsity is None else _check_fraction("ffn_sparsity", ffn_sparsity)
    imp.check_shape(shape)
    L, H = shape.num_layers, shape.num_heads
    if not 0 <= min_heads_per_layer <= H:
        raise UserError(f"min_heads_per_layer must be in 0..{H}, got {min_heads_per_layer}")
    n_heads = n_to_prune(head_frac, L * H)
    if n_heads > L * (H - min_heads_per_layer):
        raise UserError(
            f"sparsity {sparsity} prunes {n_heads} of {L * H} heads, but keeping "
            f"{min_heads_per_layer} per layer allows at most {L * (H - min_heads_per_layer)}; "
            "lower the sparsity or min_heads_per_layer"
        )
    gen = torch.Generator().manual_seed(int(seed))
    heads = _prune_heads(prune_order(imp.heads, kind, gen), n_heads, H, min_heads_per_layer, L)
    ffn = _ffn_mask(imp, kind, ffn_frac, shape, granularity, gen, ffn_allocation)
    info = MaskMeta(kind=kind, tasks=imp.meta.get("tasks", ""), model=imp.meta.get("model", "unknown"), shape=shape,
                    sparsity=head_frac, ffn_sparsity=ffn_frac, scorer=imp.meta.get("scorer", "gate_grad"),
                    granularity=granularity, seed=int(seed), objective=imp.meta.get("objective") or None,
                    extra={"normalize_heads": imp.meta.get("normalize_heads", ""),
                           "normalize_ffn": imp.meta.get("normalize_ffn", ""),
                           "importance_abs": imp.meta.get("abs_per", ""),
                           "ffn_allocation": ffn_allocation,
                           "min_heads_per_layer": str(min_heads_per_layer)})
    mask = Mask(heads, ffn, info.updated(meta or {}))
    mask.meta.param_sparsity = mask.sparsity(shape)
    return mask


def cut_all(
    imp: Importance, sparsities: Iterable[float], kinds: Iterable[str] = KINDS, **kw: object
) -> dict[tuple[str, float], Mask]:
    """``{(kind, sparsity): cut_ticket(imp, kind, sparsity, **kw)}`` for every pair."""
    return {(kind, s): cut_ticket(imp, kind, s, **kw) for kind in kinds for s in sparsities}
