"""An unstructured mask is a value: which individual weights of an encoder's matrices are kept.

Polarity: **True = keep**, False = pruned. A :class:`WeightMask` maps parameter names relative to
the base encoder (``encoder.layer.0.attention.self.query.weight``) to bool tensors of that
parameter's shape: ``[out, in]`` for a Linear weight, ``[num_embeddings, dim]`` for an embedding
table. Metadata is a ``dict[str, str]`` (method, sparsity, source, model, seed, round, ...) saved
with the tensors in one safetensors file.

Which matrices are prunable is architecture data (:data:`masks.arch.ARCH_SPECS`): per layer Q, K,
V, the attention output, FFN up and FFN down, plus the pooler where the family has one
(:data:`DEFAULT_INCLUDE`). Embedding tables are excluded unless ``"embeddings"`` is included. Task
heads are never part of the encoder, so never part of a weight mask.

Training with a mask (:func:`apply_weight_mask`) uses ``torch.nn.utils.parametrize``: the module's
``weight`` becomes ``original * mask``, the mask a non-trainable buffer, so a pruned weight gets a
zero gradient and stays exactly 0 through training. ``original`` keeps the values the model was
built with; since every training run builds its model from the pre-trained weights, training with a
mask *is* rewinding to the pre-trained values (Chen et al. 2020). :func:`remove_weight_mask` bakes
the mask in (pruned entries stored as zeros) before a model is saved or scored.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.nn.utils import parametrize

from basics.errors import UserError
from masks.arch import DEFAULT_WEIGHT_ROLES, LAYER_ROLES, WEIGHT_ROLES, check_unshared, layer_modules
from masks.mask import MASK_FORMAT, read_safetensors, tensor_digest, write_safetensors, zero_one_to_bool
from masks.meta import format_fraction

WEIGHT_MASK_FORMAT = "mtl-tickets/weight-mask"
# Roles a weight mask may cover: the per-layer roles of masks.arch, the pooler, the embedding tables.
DEFAULT_INCLUDE = DEFAULT_WEIGHT_ROLES  # Chen et al. 2020: embeddings not pruned


def base_encoder(encoder: nn.Module) -> nn.Module:
    """The base encoder of ``encoder`` (itself for ``AutoModel``; ``.base_model`` of a task model)."""
    base = getattr(encoder, "base_model", encoder)
    return base if isinstance(base, nn.Module) else encoder


def check_roles(include: Iterable[str]) -> tuple[str, ...]:
    """``include`` as a tuple; UserError naming an unknown role and the valid ones."""
    roles = tuple(include)
    bad = [r for r in roles if r not in WEIGHT_ROLES]
    if bad:
        raise UserError(f"unknown weight role(s) {', '.join(map(repr, bad))}; valid roles: {', '.join(WEIGHT_ROLES)}")
    if not roles:
        raise UserError(f"no weight roles to prune; choose from {', '.join(WEIGHT_ROLES)}")
    return roles


def prunable_modules(encoder: nn.Module, include: Iterable[str] = DEFAULT_INCLUDE) -> dict[str, nn.Module]:
    """``{parameter name: module holding it}`` for the prunable weight matrices, in architecture
    order (embedding tables, then layer by layer q, k, v, attn_out, ffn_up, ffn_down, then the pooler).

    Names are relative to the base encoder and end in ``.weight``. The pooler is skipped for a family
    without one (ELECTRA, DistilBERT) and for an encoder built without it (``add_pooling_layer=False``).
    A fused Q/K/V (ModernBERT) is one matrix, listed once. A family whose layers share weights (ALBERT) is
    a UserError.
    """
    roles = check_roles(include)
    spec, base = check_unshared(encoder, "per-weight masks"), base_encoder(encoder)
    out: dict[str, nn.Module] = {}
    if "embeddings" in roles:
        out.update({f"{name}.weight": m for name, m in base.named_modules() if isinstance(m, nn.Embedding)})
    for i, layer in enumerate(layer_modules(encoder)):
        for role in LAYER_ROLES:
            if role in roles:
                out[f"{spec.layers}.{i}.{spec.path(role)}.weight"] = layer.get_submodule(spec.path(role))
    if "pooler" in roles and spec.pooler is not None:
        try:
            out[f"{spec.pooler}.weight"] = base.get_submodule(spec.pooler)
        except AttributeError:  # built without a pooler
            pass
    return out


def prunable_weights(encoder: nn.Module, include: Iterable[str] = DEFAULT_INCLUDE) -> dict[str, torch.Tensor]:
    """``{parameter name: weight}`` of :func:`prunable_modules`, detached.

    A Linear weight is ``[out, in]``; an embedding table ``[num_embeddings, dim]``. Without an applied
    weight mask the tensors share the model's storage; with one, they are the masked weights
    (``original * mask``, computed).
    """
    return {name: module.weight.detach() for name, module in prunable_modules(encoder, include).items()}


def named_weights(encoder: nn.Module, names: Iterable[str]) -> dict[str, torch.Tensor]:
    """``{name: weight}`` (detached) for parameter names relative to the base encoder; UserError for
    a name the encoder does not have. Under an applied weight mask, the masked value."""
    base, out = base_encoder(encoder), {}
    for name in names:
        value = _lookup(base, name)
        if value is None:
            raise UserError(f"{type(base).__name__} has no weight {name!r}")
        out[name] = value.detach()
    return out


def _as_bool(t: Any, name: str) -> torch.Tensor:
    """``t`` as a CPU bool tensor; 0/1 numbers accepted, anything else is a UserError."""
    t = torch.as_tensor(t).detach().cpu()
    if t.dim() == 0:
        raise UserError(f"weight mask {name!r} must have the weight's shape, got a scalar")
    return zero_one_to_bool(t, f"weight mask {name!r}")


@dataclass(eq=False)
class WeightMask:
    """Per-weight mask over an encoder's weight matrices, True = keep.

    masks: ``{parameter name: bool tensor of that parameter's shape}`` (names relative to the base
    encoder, e.g. ``encoder.layer.0.attention.self.query.weight`` -> bool ``[H*d, hidden]``).
    meta: string metadata (method, sparsity, source, model, seed, round, include, ...). CPU tensors.
    """

    masks: dict[str, torch.Tensor]
    meta: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.masks:
            raise UserError("a weight mask needs at least one weight matrix")
        self.masks = {str(k): _as_bool(v, str(k)) for k, v in self.masks.items()}
        self.meta = {str(k): str(v) for k, v in self.meta.items()}

    @classmethod
    def ones(cls, shapes: Mapping[str, Iterable[int]], **meta: Any) -> WeightMask:
        """Keep-everything mask for ``{name: shape}`` (meta ``method="dense"`` unless given)."""
        return cls({n: torch.ones(tuple(s), dtype=torch.bool) for n, s in shapes.items()},
                   {"method": "dense", **meta})

    # --- counts ---------------------------------------------------------------------------
    @property
    def shapes(self) -> dict[str, tuple[int, ...]]:
        return {n: tuple(m.shape) for n, m in self.masks.items()}

    @property
    def kept(self) -> int:
        """Weights kept (True entries), all matrices together."""
        return sum(int(m.sum()) for m in self.masks.values())

    @property
    def total(self) -> int:
        """Weights covered by the mask, all matrices together."""
        return sum(m.numel() for m in self.masks.values())

    @property
    def sparsity(self) -> float:
        """Fraction of the covered weights pruned: ``1 - kept/total``."""
        return 1.0 - self.kept / self.total

    def matrix_sparsity(self) -> dict[str, float]:
        """Fraction pruned of every matrix (global pruning spreads sparsity unevenly)."""
        return {n: 1.0 - int(m.sum()) / m.numel() for n, m in self.masks.items()}

    # --- algebra --------------------------------------------------------------------------
    def _check_same(self, other: WeightMask) -> None:
        if not isinstance(other, WeightMask):
            raise UserError(f"expected a WeightMask, got {type(other).__name__}")
        if self.shapes != other.shapes:
            raise UserError("weight masks cover different matrices or shapes")

    def __and__(self, other: WeightMask) -> WeightMask:
        """Intersection: a weight is kept if both masks keep it."""
        self._check_same(other)
        return WeightMask({n: m & other.masks[n] for n, m in self.masks.items()}, {"method": "intersection"})

    def is_subset_of(self, other: WeightMask) -> bool:
        """True if every weight this mask keeps is kept by ``other`` (nested IMP rounds)."""
        self._check_same(other)
        return all(bool((m & ~other.masks[n]).sum() == 0) for n, m in self.masks.items())

    def same_weights(self, other: WeightMask) -> bool:
        """True if both masks keep exactly the same weights (meta ignored)."""
        self._check_same(other)
        return all(torch.equal(m, other.masks[n]) for n, m in self.masks.items())

    # --- fit to a model -------------------------------------------------------------------
    def check_fits(self, encoder: nn.Module, source: str = "weight mask") -> None:
        """UserError unless every masked parameter exists in ``encoder`` with the mask's shape."""
        base = base_encoder(encoder)
        missing = [n for n in self.masks if _lookup(base, n) is None]
        if missing:
            raise UserError(f"{source} does not fit the model: {len(missing)} of its {len(self.masks)} weights are not "
                            f"in {type(base).__name__} (first: {missing[0]!r}); was it made for another model?")
        for name, m in self.masks.items():
            have = tuple(_lookup(base, name).shape)
            if have != tuple(m.shape):
                raise UserError(f"{source} does not fit the model: {name} is {list(m.shape)} in the mask "
                                f"but {list(have)} in the model")

    def __repr__(self) -> str:
        return (f"WeightMask({len(self.masks)} matrices, kept {self.kept}/{self.total}, "
                f"sparsity {self.sparsity:.4f}, meta={self.meta})")


def _lookup(base: nn.Module, name: str) -> torch.Tensor | None:
    """The tensor ``name`` (``module.path.attr``) of ``base``, or None (the masked value if parametrized)."""
    path, _, attr = name.rpartition(".")
    try:
        module = base.get_submodule(path) if path else base
    except AttributeError:
        return None
    value = getattr(module, attr, None)
    return value if isinstance(value, torch.Tensor) else None


# --- files -------------------------------------------------------------------------------
def save_weight_mask(mask: WeightMask, path: str | os.PathLike) -> None:
    """Save one weight mask: a uint8 tensor per parameter name (1 = keep), atomically.

    Metadata = ``mask.meta`` plus ``format``, ``kept``, ``total``, ``sparsity``, ``order`` (the
    matrices' order); ``method`` and ``model`` are always present (``custom`` / ``unknown`` by default).
    """
    meta = {"method": "custom", "model": "unknown", **mask.meta, "format": WEIGHT_MASK_FORMAT,
            "kept": str(mask.kept), "total": str(mask.total), "sparsity": format_fraction(round(mask.sparsity, 6)),
            "order": ",".join(mask.masks)}  # safetensors sorts its tensors by name; this keeps the mask's order
    tensors = {n: m.to(torch.uint8).contiguous() for n, m in mask.masks.items()}
    write_safetensors(tensors, path, meta)


def load_weight_mask(path: str | os.PathLike, encoder: nn.Module | None = None) -> WeightMask:
    """Load a file written by :func:`save_weight_mask` (True = keep); with ``encoder``, check it fits.

    One-line UserError when the file is missing, is not a safetensors file, is a structured
    (heads/neurons) mask or another file, holds values other than 0/1, or does not fit ``encoder``.
    """
    path = Path(path)
    tensors, meta = read_safetensors(path, "weight mask")
    fmt = meta.get("format")
    if fmt == MASK_FORMAT:
        raise UserError(f"{path} is a structured mask (heads and FFN neurons, for --mask), not a weight mask "
                        "(one tensor per weight matrix, for --weight-mask)")
    if fmt != WEIGHT_MASK_FORMAT:
        raise UserError(f"{path} is not a weight mask file (format {fmt or 'missing'!s}, expected {WEIGHT_MASK_FORMAT})")
    order = [n for n in meta.get("order", "").split(",") if n in tensors]
    tensors = {n: tensors[n] for n in [*order, *(n for n in tensors if n not in order)]}
    meta = {k: v for k, v in meta.items() if k not in ("format", "kept", "total", "order")}
    try:
        mask = WeightMask(tensors, meta)
    except UserError as exc:
        raise UserError(f"{path} does not hold a valid weight mask: {exc}") from None
    if encoder is not None:
        mask.check_fits(encoder, source=f"weight mask {path}")
    return mask


def describe(mask: WeightMask, path: str | os.PathLike | None = None) -> dict[str, Any]:
    """What a run records about its weight mask (``results.json``): method, sparsity, kept/total, ..."""
    info: dict[str, Any] = {"path": str(path) if path is not None else None, "method": mask.meta.get("method", ""),
                            "sha256": tensor_digest(path) if path is not None and Path(path).is_file() else None,
                            "sparsity": round(mask.sparsity, 6), "kept": mask.kept, "total": mask.total,
                            "matrices": len(mask.masks)}
    keys = ("target_sparsity", "round", "source", "seed", "model", "include")
    info.update({k: mask.meta[k] for k in keys if k in mask.meta})
    return info


# --- applying a mask during training -----------------------------------------------------
class KeepMask(nn.Module):
    """Parametrization ``weight = original * mask``; ``mask`` is a non-trainable, non-persistent buffer
    (1.0 = keep) in the weight's dtype, so it follows the module's ``.to(device / dtype)``."""

    def __init__(self, mask: torch.Tensor, dtype: torch.dtype) -> None:
        super().__init__()
        self.register_buffer("mask", mask.to(dtype), persistent=False)

    def forward(self, original: torch.Tensor) -> torch.Tensor:
        return original * self.mask


def _owner(base: nn.Module, name: str) -> tuple[nn.Module, str]:
    path, _, attr = name.rpartition(".")
    return (base.get_submodule(path) if path else base), attr


def _has_keep_mask(module: nn.Module, attr: str) -> bool:
    return parametrize.is_parametrized(module, attr) and any(
        isinstance(p, KeepMask) for p in module.parametrizations[attr])


def apply_weight_mask(encoder: nn.Module, mask: WeightMask) -> None:
    """Hold every weight that ``mask`` prunes at exactly 0 (``weight = original * mask``).

    ``original`` keeps the current values: applied to a freshly built model, training starts from
    the pre-trained weights with the pruned ones zeroed, i.e. it rewinds to the pre-trained values.
    The optimizer trains ``original``; a pruned entry gets a zero gradient. The state dict then holds
    ``...weight`` as ``...parametrizations.weight.original``: apply the same mask before loading a
    checkpoint, and call :func:`remove_weight_mask` before ``save_pretrained``.
    """
    mask.check_fits(encoder)
    base = base_encoder(encoder)
    owners = {name: _owner(base, name) for name in mask.masks}
    if any(_has_keep_mask(m, a) for m, a in owners.values()):
        raise UserError("the encoder already has a weight mask; call remove_weight_mask first")
    for name, keep in mask.masks.items():
        module, attr = owners[name]
        weight = getattr(module, attr)
        parametrize.register_parametrization(module, attr, KeepMask(keep.to(weight.device), weight.dtype))


def applied_weight_mask(encoder: nn.Module) -> WeightMask | None:
    """The weight mask currently applied to ``encoder`` (None if there is none)."""
    base = base_encoder(encoder)
    masks = {}
    for path, module in base.named_modules():
        if parametrize.is_parametrized(module):
            for attr, plist in module.parametrizations.items():
                for p in plist:
                    if isinstance(p, KeepMask):
                        masks[f"{path}.{attr}" if path else attr] = p.mask.detach().cpu() != 0
    return WeightMask(masks) if masks else None


def remove_weight_mask(encoder: nn.Module) -> int:
    """Bake the applied mask in: ``weight`` becomes a plain parameter holding ``original * mask``
    (pruned entries exactly 0). Returns the number of matrices baked (0 if no mask was applied)."""
    baked = 0
    for module in list(base_encoder(encoder).modules()):
        if parametrize.is_parametrized(module):
            for attr in [a for a in module.parametrizations if _has_keep_mask(module, a)]:
                parametrize.remove_parametrizations(module, attr, leave_parametrized=True)
                baked += 1
    return baked
