"""Gate-gradient importance of every head and FFN neuron.

For gate ``g_u`` of unit ``u`` (all gates at their current values, 1 by default)::

    I(u) = Σ_batches | Σ_{examples, tokens} ∂L/∂g_u |          (abs_per="batch", the default)

or with the absolute value per example (``"example"``) or per token of every example (``"token"``,
the Super Tickets estimator); see :mod:`masks.estimators`.

Higher = more important. Gradients are taken fresh each batch with
``torch.autograd.grad`` on the gate tensors only; all weights are frozen while scoring.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from basics.errors import UserError
from masks.arch import EncoderShape, check_tensor_shapes, shape_of
from masks.estimators import ESTIMATORS, NORMALIZATIONS
from masks.gates import Gates, attach_gates, find_gates
from masks.mask import read_safetensors, write_safetensors

IMPORTANCE_FORMAT = "mtl-tickets/importance"
_TENSORS = ("heads", "ffn", "heads_raw", "ffn_raw", "ffn_layer_raw")


@dataclass
class ImportanceConfig:
    """How to score. Saved in the Importance metadata."""

    max_batches: int | None = None  # None = all batches given
    abs_per: str = "batch"  # masks.estimators.ESTIMATORS: "batch" |Σ_batch|, "example" Σ_ex |Σ_tokens|, "token" Σ_ex,tok |·|
    normalize_heads: str = "layer_l2"  # "layer_l2" | "none"
    normalize_ffn: str = "none"  # "layer_l2" | "none"

    def __post_init__(self) -> None:
        if self.max_batches is not None and self.max_batches < 1:
            raise UserError(f"max_batches must be >= 1 or None, got {self.max_batches}")
        if self.abs_per not in ESTIMATORS:
            raise UserError(f"abs_per must be one of {', '.join(ESTIMATORS.names())}; got {self.abs_per!r}")
        for name in ("normalize_heads", "normalize_ffn"):
            if getattr(self, name) not in NORMALIZATIONS:
                raise UserError(
                    f"{name} must be one of {', '.join(NORMALIZATIONS.names())}; got {getattr(self, name)!r}"
                )


@dataclass
class Importance:
    """Scores per unit (higher = more important), normalised and raw.

    heads ``[L, H]`` and ffn ``[L, I]``: normalised scores (what tickets rank);
    heads_raw ``[L, H]``, ffn_raw ``[L, I]``: Σ_batches |Σ ∂L/∂g|;
    ffn_layer_raw ``[L, 1]``: the same for one whole-FFN gate per layer (|Σ_i ∂L/∂g_i| per batch).
    """

    heads: torch.Tensor
    ffn: torch.Tensor
    heads_raw: torch.Tensor
    ffn_raw: torch.Tensor
    ffn_layer_raw: torch.Tensor
    meta: dict[str, str] = field(default_factory=dict)

    def check_shape(self, shape: EncoderShape) -> None:
        """UserError unless the scores fit an encoder of ``shape``."""
        L, H, I = shape.num_layers, shape.num_heads, shape.intermediate
        want = {"heads": (L, H), "ffn": (L, I), "heads_raw": (L, H), "ffn_raw": (L, I), "ffn_layer_raw": (L, 1)}
        check_tensor_shapes("importance", self, want, shape)


def normalize(raw: torch.Tensor, mode: str) -> torch.Tensor:
    """``raw`` ``[L, N]`` normalised per layer by ``mode`` (:data:`masks.estimators.NORMALIZATIONS`):
    "layer_l2" divides each row by its L2 norm, "none" copies."""
    return NORMALIZATIONS.get(mode)(raw)


def _freeze(modules: Iterable[nn.Module]) -> dict[nn.Parameter, bool]:
    """requires_grad False on every parameter; returns the previous flags."""
    flags: dict[nn.Parameter, bool] = {}
    for module in modules:
        for p in module.parameters():
            if p not in flags:
                flags[p] = p.requires_grad
                p.requires_grad_(False)
    return flags


def _check_loss(loss: torch.Tensor) -> None:
    if loss.dim() != 0:
        raise UserError(f"loss_fn must return a scalar loss, got shape {tuple(loss.shape)}")
    if not loss.requires_grad:
        raise UserError("loss_fn returned a loss that does not depend on the gated encoder")


def _batch_grads(gates: Gates, loss: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(∂L/∂heads ``[L, H]``, ∂L/∂ffn ``[L, I]``) for one scalar loss."""
    _check_loss(loss)
    gh, gf = torch.autograd.grad(loss, [gates.heads, gates.ffn], allow_unused=True)
    gh = torch.zeros_like(gates.heads) if gh is None else gh
    gf = torch.zeros_like(gates.ffn) if gf is None else gf
    return gh.detach().float(), gf.detach().float()


def _token_grads(gates: Gates, loss_fn: Callable[[Any], torch.Tensor], batch: Any
                 ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """One batch's ``Σ_{examples, tokens} |∂L/∂g at that token|``: heads ``[L, H]``, ffn ``[L, I]``, and
    for the whole-FFN gate ``[L, 1]`` (``Σ_{examples, tokens} |Σ_i ∂L/∂g_i|``), from the gates' per-token probes."""
    L = gates.heads.shape[0]
    heads = torch.zeros_like(gates.heads, dtype=torch.float32)
    ffn = torch.zeros_like(gates.ffn, dtype=torch.float32)
    layer = torch.zeros(L, 1, device=ffn.device)
    gates.start_probes()
    try:
        loss = loss_fn(batch)
    finally:
        probes = gates.stop_probes()
    _check_loss(loss)
    grads = torch.autograd.grad(loss, [p for _, _, p in probes], allow_unused=True)
    for (kind, index, _), grad in zip(probes, grads, strict=True):
        if grad is None:  # the loss does not depend on this layer
            continue
        grad = grad.detach().float().flatten(0, -2)  # [B*T, N]: one row per token of every example
        if kind == "heads":
            heads[index] += grad.abs().sum(0).to(heads.device)
        else:
            ffn[index] += grad.abs().sum(0).to(ffn.device)
            layer[index] += grad.sum(1).abs().sum().to(layer.device)
    return heads, ffn, layer


def _accumulate(
    gates: Gates,
    batches: Iterable[Any],
    loss_fn: Callable[[Any], torch.Tensor],
    config: ImportanceConfig,
    split_batch: Callable[[Any], Iterable[Any]] | None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, int, int]:
    """Raw sums (heads [L,H], ffn [L,I], ffn_layer [L,1]), number of batches, number of loss terms."""
    heads = torch.zeros_like(gates.heads, dtype=torch.float32)  # [L, H]
    ffn = torch.zeros_like(gates.ffn, dtype=torch.float32)  # [L, I]
    layer = torch.zeros(ffn.shape[0], 1, device=ffn.device)  # [L, 1]
    n_batches = n_terms = 0
    for batch in batches:
        if config.max_batches is not None and n_batches >= config.max_batches:
            break
        if config.abs_per == "token":
            gh, gf, gl = _token_grads(gates, loss_fn, batch)
            heads += gh
            ffn += gf
            layer += gl
            n_terms += 1
            n_batches += 1
            continue
        parts = split_batch(batch) if config.abs_per == "example" else [batch]
        for part in parts:
            gh, gf = _batch_grads(gates, loss_fn(part))
            heads += gh.abs()
            ffn += gf.abs()
            layer += gf.sum(dim=1, keepdim=True).abs()  # whole-FFN gate = Σ_i g_i
            n_terms += 1
        n_batches += 1
    if n_batches == 0:
        raise UserError("compute_importance got no batches to score")
    return heads, ffn, layer, n_batches, n_terms


def _reduce(all_reduce: Callable[[torch.Tensor], torch.Tensor], *raws: torch.Tensor) -> list[torch.Tensor]:
    """One all_reduce call over the flattened raw sums; split back to their shapes."""
    flat = all_reduce(torch.cat([r.flatten() for r in raws]))  # [L*H + L*I + L]
    return [chunk.view_as(r) for chunk, r in zip(flat.split([r.numel() for r in raws]), raws, strict=True)]


def compute_importance(
    model: nn.Module,
    encoder: nn.Module,
    batches: Iterable[Any],
    loss_fn: Callable[[Any], torch.Tensor],
    config: ImportanceConfig | None = None,
    *,
    split_batch: Callable[[Any], Iterable[Any]] | None = None,
    all_reduce: Callable[[torch.Tensor], torch.Tensor] | None = None,
    meta: dict[str, str] | None = None,
) -> Importance:
    """Score every head and FFN neuron of ``encoder`` (inside ``model``) by gate gradients.

    ``loss_fn(batch)`` runs the full model forward and returns the scalar task loss.
    With ``abs_per="example"``, ``split_batch(batch)`` must yield batches of one example
    (each term is then |∂ loss_fn(example) / ∂g|, so with a mean-reduced loss the scale differs
    from ``abs_per="batch"`` by the batch size; rankings are unaffected).
    ``all_reduce`` (e.g. a DDP sum) receives the flattened raw sums ``[L*H + L*I + L]``
    before normalisation. Scores are taken at the gates' current values: all ones,
    unless ``encoder`` already carries gates with a mask (then those gates are used).

    During scoring the model is in eval mode and every weight is frozen; afterwards the
    training flags, the weights' ``requires_grad`` flags and the gates are restored, and
    no ``.grad`` is written to any weight. Returns heads ``[L,H]``, ffn ``[L,I]`` (higher = keep).
    """
    config = config or ImportanceConfig()
    if config.abs_per == "example" and split_batch is None:
        raise UserError('abs_per="example" needs split_batch (a function batch -> batches of one)')
    shape = shape_of(encoder)
    modes = {m: m.training for m in model.modules()} | {m: m.training for m in encoder.modules()}
    flags = _freeze([model, encoder])
    existing = find_gates(encoder)
    gates = existing if existing is not None else attach_gates(encoder)
    gate_grad = gates.requires_grad
    try:
        model.eval()
        encoder.eval()
        gates.requires_grad_(True)
        with torch.enable_grad():
            heads, ffn, layer, n_batches, n_terms = _accumulate(gates, batches, loss_fn, config, split_batch)
    finally:
        gates.requires_grad_(gate_grad)
        if existing is None:
            gates.remove()
        for p, flag in flags.items():
            p.requires_grad_(flag)
        for m, training in modes.items():
            m.training = training
    if all_reduce is not None:
        heads, ffn, layer = _reduce(all_reduce, heads, ffn, layer)
    heads, ffn, layer = heads.cpu(), ffn.cpu(), layer.cpu()
    info = {
        "format": IMPORTANCE_FORMAT,
        "scorer": "gate_grad",
        "model": str(getattr(encoder.config, "_name_or_path", "") or encoder.config.model_type),
        "shape": shape.describe(),
        "abs_per": config.abs_per,
        "normalize_heads": config.normalize_heads,
        "normalize_ffn": config.normalize_ffn,
        "max_batches": str(config.max_batches),
        "num_batches": str(n_batches),
        "num_loss_terms": str(n_terms),
        "gated": "mask" if existing is not None and not existing.is_identity else "ones",
        "all_reduced": str(all_reduce is not None).lower(),
    }
    return Importance(
        heads=normalize(heads, config.normalize_heads),
        ffn=normalize(ffn, config.normalize_ffn),
        heads_raw=heads,
        ffn_raw=ffn,
        ffn_layer_raw=layer,
        meta={**info, **{str(k): str(v) for k, v in (meta or {}).items()}},
    )


def save_importance(imp: Importance, path: str | os.PathLike) -> None:
    """Write ``importance.safetensors``: float32 heads, ffn, heads_raw, ffn_raw, ffn_layer_raw + meta. Atomic."""
    tensors = {name: getattr(imp, name).detach().float().cpu() for name in _TENSORS}
    write_safetensors(tensors, path, {**imp.meta, "format": IMPORTANCE_FORMAT})


def load_importance(path: str | os.PathLike, expect_shape: EncoderShape | None = None) -> Importance:
    """Read a file written by :func:`save_importance`; UserError if missing, wrong kind or wrong shape."""
    tensors, meta = read_safetensors(path, "importance")
    fmt = meta.get("format", IMPORTANCE_FORMAT)
    if fmt != IMPORTANCE_FORMAT:
        raise UserError(f"{path} is a {fmt!r} file, not an importance file ({IMPORTANCE_FORMAT!r})")
    missing = [name for name in _TENSORS if name not in tensors]
    if missing:
        raise UserError(
            f"{path} is not an importance file: missing tensors {missing}; it holds {sorted(tensors) or 'none'}"
        )
    imp = Importance(**{name: tensors[name] for name in _TENSORS}, meta=meta)
    if expect_shape is not None:
        imp.check_shape(expect_shape)
    return imp
