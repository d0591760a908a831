"""Unstructured pruning: scores -> weight masks (Chen et al. 2020, lottery tickets in pre-trained BERT).

- :func:`magnitude_mask`: global magnitude pruning. All prunable matrices are ranked together by
  ``|w|`` and exactly ``round(sparsity * total)`` entries are pruned overall; never an entry already
  pruned by ``previous`` revived (that is one IMP round).
- :func:`random_mask`: the same count pruned uniformly at random (seeded), the random baseline.
- :func:`imp_schedule`: iterative magnitude pruning prunes ``rate`` of the *original* weight count
  per round, so round ``k`` has sparsity ``k * rate``.
- :func:`write_magnitude_masks`: what a training run writes with ``--write-magnitude-masks``.

Polarity as in :mod:`masks.weight_mask`: True = keep.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

import torch
from torch import nn

from basics.errors import UserError
from masks.meta import format_fraction
from masks.weight_mask import (
    DEFAULT_INCLUDE,
    WeightMask,
    check_roles,
    named_weights,
    prunable_weights,
    save_weight_mask,
)

MAGNITUDE_DIR = "weight_masks"  # OUTPUT/weight_masks/{omp|imp}-{sparsity}.safetensors


def check_sparsity(sparsity: float) -> None:
    """UserError unless ``0 <= sparsity < 1``."""
    if not 0.0 <= sparsity < 1.0:
        raise UserError(f"sparsity must be in [0, 1), got {sparsity}")


def prune_lowest(scores: torch.Tensor, n_prune: int) -> torch.Tensor:
    """bool ``[N]``, True = pruned: the ``n_prune`` lowest of ``scores`` (float ``[N]``).

    Exactly ``n_prune`` entries; among equal scores at the threshold the lower indices are pruned
    first, so the result is a deterministic function of ``scores``.
    """
    pruned = torch.zeros(scores.numel(), dtype=torch.bool)
    if n_prune <= 0:
        return pruned
    threshold = torch.kthvalue(scores, n_prune).values
    pruned = scores < threshold
    ties = torch.nonzero(scores == threshold).flatten()
    pruned[ties[: n_prune - int(pruned.sum())]] = True
    return pruned


def _split(keep: torch.Tensor, shapes: Mapping[str, Sequence[int]]) -> dict[str, torch.Tensor]:
    """Flat bool ``[N]`` back into ``{name: bool[shape]}`` (names in ``shapes`` order)."""
    out, start = {}, 0
    for name, shape in shapes.items():
        n = int(torch.Size(shape).numel())
        out[name] = keep[start:start + n].reshape(tuple(shape)).clone()
        start += n
    return out


def _global_mask(scores: torch.Tensor, shapes: Mapping[str, Sequence[int]], sparsity: float,
                 previous: WeightMask | None, meta: dict[str, str]) -> WeightMask:
    """Prune the ``round(sparsity * N)`` lowest ``scores`` (flat ``[N]``, ``shapes`` order); entries
    that ``previous`` prunes go first, so they stay pruned."""
    check_sparsity(sparsity)
    total = scores.numel()
    n_prune = round(sparsity * total)
    if previous is not None:
        if previous.shapes != {n: tuple(s) for n, s in shapes.items()}:
            raise UserError("the previous weight mask covers other matrices or shapes than the weights to prune")
        forced = torch.cat([~previous.masks[n].flatten() for n in shapes])
        n_forced = int(forced.sum())
        if n_forced > n_prune:
            raise UserError(f"sparsity {sparsity} prunes {n_prune} weights but the previous mask already prunes "
                            f"{n_forced} (sparsity {previous.sparsity:.4f}); pruned weights are never revived, so ask "
                            "for a higher sparsity")
        scores = scores.masked_fill(forced, -torch.inf)
    keep = ~prune_lowest(scores, n_prune)
    return WeightMask(_split(keep, shapes), {"target_sparsity": format_fraction(sparsity), **meta})


def magnitude_mask(weights: Mapping[str, torch.Tensor], sparsity: float, previous: WeightMask | None = None,
                   meta: Mapping[str, str] | None = None) -> WeightMask:
    """Global magnitude pruning of ``weights`` (``{name: tensor}``, e.g. :func:`prunable_weights`).

    Keeps the largest ``|w|`` over all matrices together and prunes exactly
    ``round(sparsity * total)`` entries (True = keep). Ties are broken by position: matrices in
    ``weights`` order, entries in row-major order, earlier pruned first. With ``previous`` (one IMP
    round), every entry that ``previous`` prunes stays pruned, whatever its value, and the rest are
    pruned among the survivors; ``sparsity`` counts the total, not the survivors, and may not be
    below ``previous``'s. ``meta`` defaults to ``method="imp"`` with ``previous``, else ``"omp"``.
    """
    if not weights:
        raise UserError("magnitude_mask needs at least one weight matrix")
    scores = torch.cat([w.detach().float().abs().flatten().cpu() for w in weights.values()])
    if bool(torch.isnan(scores).any()):
        raise UserError("cannot prune by magnitude: the weights contain NaN")
    base_meta = {"method": "imp" if previous is not None else "omp", **dict(meta or {})}
    return _global_mask(scores, {n: tuple(w.shape) for n, w in weights.items()}, sparsity, previous, base_meta)


def random_mask(shapes: Mapping[str, Sequence[int]], sparsity: float, seed: int, previous: WeightMask | None = None,
                meta: Mapping[str, str] | None = None) -> WeightMask:
    """Uniform random global pruning: exactly ``round(sparsity * total)`` of the entries of
    ``{name: shape}`` pruned, every subset of that size equally likely; the same ``seed`` gives the
    same mask. With ``previous``, its pruned entries stay pruned and the rest are drawn among survivors."""
    total = sum(int(torch.Size(s).numel()) for s in shapes.values())
    if total == 0:
        raise UserError("random_mask needs at least one weight")
    scores = torch.rand(total, generator=torch.Generator().manual_seed(int(seed)))
    base_meta = {"method": "random", "seed": str(seed), **dict(meta or {})}
    return _global_mask(scores, shapes, sparsity, previous, base_meta)


def imp_schedule(rate: float, rounds: int) -> list[float]:
    """Sparsity after each IMP round: ``[rate, 2*rate, ..., rounds*rate]`` (fractions of the
    original weight count). Every round must stay below sparsity 1: a longer schedule is a UserError
    naming the most rounds ``rate`` allows."""
    if not 0.0 < rate < 1.0:
        raise UserError(f"--rate must be in (0, 1), got {rate}")
    if rounds < 1:
        raise UserError(f"--rounds must be >= 1, got {rounds}")
    schedule = [round(k * rate, 10) for k in range(1, rounds + 1)]
    if schedule[-1] >= 1.0:
        most = sum(1 for k in range(1, rounds + 1) if round(k * rate, 10) < 1.0)
        raise UserError(f"IMP with --rate {rate} reaches sparsity {schedule[-1]:g} at round {rounds}; "
                        f"at most {most} rounds stay below 1")
    return schedule


def magnitude_mask_path(out_dir: str | os.PathLike, method: str, sparsity: float) -> Path:
    """``out_dir/weight_masks/{method}-{sparsity}.safetensors`` (``0.3 -> "0.30"``)."""
    return Path(out_dir) / MAGNITUDE_DIR / f"{method}-{format_fraction(sparsity)}.safetensors"


def check_after(previous: WeightMask | None, sparsities: Iterable[float]) -> None:
    """UserError if a requested sparsity is below ``previous``'s (IMP never revives weights)."""
    for s in sparsities:
        check_sparsity(s)
        if previous is not None and round(s * previous.total) < previous.total - previous.kept:
            raise UserError(f"--write-magnitude-masks {s}: below the sparsity of the run's weight mask "
                            f"({previous.sparsity:.4f}); pruned weights are never revived")


def write_magnitude_masks(encoder: nn.Module, sparsities: Iterable[float], out_dir: str | os.PathLike,
                          previous: WeightMask | None = None, include: Iterable[str] = DEFAULT_INCLUDE,
                          meta: Mapping[str, str] | None = None) -> list[Path]:
    """One-shot magnitude masks of ``encoder``'s current (trained) weights, one file per sparsity.

    Without ``previous`` (a dense run) the masks are ``omp-{s}`` (one-shot magnitude pruning) over
    the ``include`` roles. With ``previous`` (the mask the run trained with) they are ``imp-{s}``:
    the same matrices, its pruned weights kept pruned, the rest pruned by magnitude among the
    survivors; ``round`` in the metadata counts the pruning rounds so far. Returns the paths.
    """
    sparsities = list(sparsities)
    check_after(previous, sparsities)
    include = check_roles(include)
    extra = {**dict(meta or {}), "include": ",".join(include), "round": "1"}
    if previous is None:
        method, weights = "omp", prunable_weights(encoder, include)
    else:  # the mask's own matrices, whatever include says
        method, weights = "imp", named_weights(encoder, previous.masks)
        extra.update(include=previous.meta.get("include", extra["include"]),
                     round=str(_round_of(previous) + 1))
    paths = []
    for s in sparsities:
        path = magnitude_mask_path(out_dir, method, s)
        save_weight_mask(magnitude_mask(weights, s, previous, {"method": method, **extra}), path)
        paths.append(path)
    return paths


def _round_of(mask: WeightMask) -> int:
    """Pruning rounds behind ``mask`` (its ``round`` metadata; 1 when absent)."""
    try:
        return int(mask.meta.get("round", "1"))
    except ValueError:
        return 1
