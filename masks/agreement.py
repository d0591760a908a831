"""How much masks agree: Jaccard overlap, Fleiss' kappa across seeds, and the stable (intersection) mask.

Polarity: **True = keep** everywhere. Every function takes any mix of

- a structured :class:`~masks.mask.Mask` (heads ``[L, H]``, FFN neurons ``[L, I]``), read as its
  heads, its FFN neurons, or both pooled (``part="heads" | "ffn" | "all"``);
- a boolean (or 0/1) tensor of any shape, e.g. an unstructured per-weight mask;
- a ``{name: tensor}`` mapping (one entry per weight matrix), flattened in sorted-name order.

Fleiss' kappa treats every unit (head, FFN neuron, weight) as a subject and every mask as a rater
choosing one of two categories, kept or pruned. With ``n`` raters and ``N`` subjects, ``k_i`` raters
keeping subject ``i``::

    P_i = (k_i^2 + (n - k_i)^2 - n) / (n (n - 1))        agreement on subject i
    P   = mean_i P_i                                      observed agreement
    p   = sum_i k_i / (N n)                               share of "kept" ratings
    P_e = p^2 + (1 - p)^2                                 agreement expected by chance
    kappa = (P - P_e) / (1 - P_e)

Degenerate case: ``P_e = 1`` happens exactly when every rating falls in one category (every mask
keeps every unit, or every mask prunes every unit). Kappa is then 0/0; we define it as **1.0**:
the raters agree on every subject and chance agreement cannot be separated from it. (When all
masks are identical but use both categories, P = 1 and P_e < 1, so kappa = 1 without a convention.)
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from functools import reduce

import torch

from basics.errors import UserError
from masks.mask import Mask
from masks.meta import MaskMeta

PARTS: tuple[str, ...] = ("all", "heads", "ffn")
MaskLike = Mask | torch.Tensor | Mapping[str, torch.Tensor]


def _bool_tensor(t: torch.Tensor, what: str) -> torch.Tensor:
    t = torch.as_tensor(t).detach().cpu()
    if t.dtype == torch.bool:
        return t
    if not bool(((t == 0) | (t == 1)).all()):
        raise UserError(f"{what} must be boolean or hold only 0/1 (1 = keep); got other values")
    return t != 0


def units(mask: MaskLike, part: str = "all") -> torch.Tensor:
    """``mask`` as a flat bool vector ``[U]`` of units (True = kept).

    Mask: ``part="heads"`` -> ``L*H`` heads, ``"ffn"`` -> ``L*I`` neurons, ``"all"`` -> both, heads first.
    Tensor: flattened (``part`` must be ``"all"``). Mapping: each tensor flattened, in sorted key order.
    """
    if part not in PARTS:
        raise UserError(f"unknown mask part {part!r}; valid: {', '.join(PARTS)}")
    if isinstance(mask, Mask):
        pieces = {"heads": [mask.heads], "ffn": [mask.ffn], "all": [mask.heads, mask.ffn]}[part]
        return torch.cat([p.flatten() for p in pieces])
    if part != "all":
        raise UserError(f"part={part!r} needs structured Masks; plain tensors only have part='all'")
    if isinstance(mask, Mapping):
        if not mask:
            raise UserError("empty {name: tensor} mask")
        return torch.cat([_bool_tensor(mask[k], f"mask[{k!r}]").flatten() for k in sorted(mask)])
    if isinstance(mask, torch.Tensor):
        return _bool_tensor(mask, "mask").flatten()
    raise UserError(f"expected a Mask, a bool tensor or a {{name: tensor}} mapping, got {type(mask).__name__}")


def _stack(masks: Sequence[MaskLike], part: str) -> torch.Tensor:
    """bool ``[n_masks, U]``; UserError when the masks do not cover the same units."""
    rows = [units(m, part) for m in masks]
    if isinstance(masks[0], Mapping):
        names = sorted(masks[0])
        for m in masks[1:]:
            if not isinstance(m, Mapping) or sorted(m) != names:
                raise UserError("{name: tensor} masks must all have the same names")
    sizes = {r.numel() for r in rows}
    if len(sizes) != 1:
        raise UserError(f"masks cover different numbers of units: {sorted(sizes)}")
    shapes = {tuple(m.heads.shape) + tuple(m.ffn.shape) if isinstance(m, Mask) else None for m in masks}
    if len(shapes) != 1:
        raise UserError("masks have different shapes (or mix structured Masks with plain tensors)")
    return torch.stack(rows)


def jaccard(a: MaskLike, b: MaskLike, part: str = "all") -> float:
    """|A ∩ B| / |A ∪ B| of the kept units of ``a`` and ``b``; 1.0 when neither keeps anything."""
    x, y = _stack([a, b], part)
    union = int((x | y).sum())
    return 1.0 if union == 0 else int((x & y).sum()) / union


def mean_pairwise_jaccard(masks: Sequence[MaskLike], part: str = "all") -> float:
    """Mean Jaccard over all unordered pairs of ``masks`` (at least two)."""
    if len(masks) < 2:
        raise UserError(f"pairwise Jaccard needs at least 2 masks, got {len(masks)}")
    values = [jaccard(a, b, part) for a, b in itertools.combinations(masks, 2)]
    return sum(values) / len(values)


def fleiss_kappa(masks: Sequence[MaskLike], part: str = "all") -> float:
    """Fleiss' kappa of ``masks`` (raters) over their units (subjects), categories kept / pruned.

    1.0 = perfect agreement, 0 = chance level, < 0 = worse than chance. When every rating is in
    one category (``P_e = 1``) kappa is defined as 1.0 (see the module docstring). Needs >= 2 masks.
    """
    if len(masks) < 2:
        raise UserError(f"Fleiss' kappa needs at least 2 masks (raters), got {len(masks)}")
    ratings = _stack(list(masks), part)  # [n, N] bool
    n, n_subjects = ratings.shape
    if n_subjects == 0:
        raise UserError("Fleiss' kappa needs at least one unit (subject)")
    kept = ratings.sum(0).double()  # [N] raters keeping each unit
    total_kept = int(kept.sum())
    if total_kept in (0, n * n_subjects):  # one category only: P_e = 1
        return 1.0
    per_subject = (kept**2 + (n - kept) ** 2 - n) / (n * (n - 1))  # [N] P_i
    observed = float(per_subject.mean())
    p = total_kept / (n * n_subjects)
    expected = p**2 + (1 - p) ** 2
    return (observed - expected) / (1 - expected)


def stable_mask(masks: Sequence[MaskLike]) -> MaskLike:
    """Units kept by every mask (intersection), the same type as the inputs.

    For Masks: meta ``kind="stable"``, ``stable_over`` = number of masks, ``seeds`` = their seeds
    (meta ``seed``) when known; other metadata shared by all inputs is kept.
    """
    if not masks:
        raise UserError("stable_mask needs at least one mask")
    _stack(list(masks), "all")  # same units everywhere
    first = masks[0]
    if isinstance(first, Mask):
        seeds = [m.meta.seed for m in masks]
        meta = MaskMeta.merged([m.meta for m in masks], "stable").with_extra(stable_over=len(masks))
        if all(s is not None for s in seeds):
            meta = meta.with_extra(seeds=",".join(map(str, seeds)))
        heads = reduce(torch.logical_and, [m.heads for m in masks])
        ffn = reduce(torch.logical_and, [m.ffn for m in masks])
        return Mask(heads, ffn, meta).with_measured_sparsity(param_sparsity=True)
    if isinstance(first, Mapping):
        return {k: reduce(torch.logical_and, [_bool_tensor(m[k], f"mask[{k!r}]") for m in masks]) for k in first}
    return reduce(torch.logical_and, [_bool_tensor(m, "mask") for m in masks])


def agreement(masks: Sequence[MaskLike]) -> dict[str, dict[str, float | None]]:
    """Agreement of ``masks`` per part: ``{part: {"jaccard", "kappa", "intersection_over_union"}}``.

    jaccard = mean pairwise Jaccard; kappa = Fleiss' kappa; intersection_over_union = units kept by
    every mask / units kept by any (1.0 when none is kept). Parts: heads, ffn, all for Masks; all
    for tensors. With fewer than 2 masks every value is None.
    """
    parts = PARTS if all(isinstance(m, Mask) for m in masks) else ("all",)
    out: dict[str, dict[str, float | None]] = {}
    for part in parts:
        if len(masks) < 2:
            out[part] = {"jaccard": None, "kappa": None, "intersection_over_union": None}
            continue
        ratings = _stack(list(masks), part)
        any_kept = int(ratings.any(0).sum())
        out[part] = {"jaccard": mean_pairwise_jaccard(masks, part), "kappa": fleiss_kappa(masks, part),
                     "intersection_over_union": 1.0 if any_kept == 0 else int(ratings.all(0).sum()) / any_kept}
    return out
