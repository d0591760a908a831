"""How much each layer, head, FFN neuron and hidden dimension of a teacher encoder matters, without a task.

A sub-architecture is cut from a pre-trained encoder that may have no task head and no MLM head (the
packaged MiniLM has neither), so the scores measure how much the encoder's **output** (its last hidden
states ``f(x)``, ``[B, T, hidden]``) depends on each unit, on unlabelled text:

- **heads, FFN neurons** (``heads [L, H]``, ``ffn [L, I]``): the gate-gradient importance of
  :func:`masks.importance.compute_importance` (the same gates and estimator as the tickets), with the
  *output-sensitivity loss* ``⟨r, f(x)⟩ / tokens``, ``r ~ N(0, 1)`` drawn afresh for every batch and token
  (padding excluded). Then ``E|∂loss/∂g_u| ∝ ‖∂f/∂g_u‖``: a unit scores high when removing it moves the
  output far (to first order). A task loss or a self-distillation loss would not do: the teacher is at the
  optimum of its own distillation loss, where every gradient is 0;
- **hidden dimensions** (``hidden [hidden]``): the same, for the gate of :mod:`masks.hidden_gates` (the
  gated LayerNorms on the residual stream);
- **layers** (``layers [L]``), measured, not estimated: the relative change of the output when layer
  ``l`` alone is skipped (:mod:`masks.layer_gates`), ``Σ ‖f_{-l}(x) - f(x)‖² / Σ ‖f(x)‖²`` over tokens.

Higher = more important. Stored in one safetensors file (:func:`save_scores`).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from basics.errors import UserError
from masks.arch import EncoderShape, check_tensor_shapes, shape_of
from masks.hidden_gates import HiddenGates
from masks.importance import Importance, ImportanceConfig, compute_importance
from masks.layer_gates import LayerGates
from masks.mask import read_safetensors, write_safetensors

SCORES_FORMAT = "mtl-tickets/subarch-scores"
_TENSORS = ("layers", "heads", "ffn", "hidden")

Batch = dict[str, torch.Tensor]  # input_ids, attention_mask [, token_type_ids]: (B, T)


@dataclass
class SubarchScores:
    """``layers [L]``, ``heads [L, H]``, ``ffn [L, I]``, ``hidden [hidden]``: higher = keep."""

    layers: torch.Tensor
    heads: torch.Tensor
    ffn: torch.Tensor
    hidden: torch.Tensor
    meta: dict[str, str] = field(default_factory=dict)

    def check_shape(self, shape: EncoderShape) -> None:
        want = {"layers": (shape.num_layers,), "heads": (shape.num_layers, shape.num_heads),
                "ffn": (shape.num_layers, shape.intermediate), "hidden": (shape.hidden,)}
        check_tensor_shapes("sub-architecture scores", self, want, shape)


def last_hidden(encoder: nn.Module, batch: Batch) -> torch.Tensor:
    """``(B, T, hidden)`` last hidden states of a base encoder."""
    return encoder(**batch).last_hidden_state


def sensitivity_loss(encoder: nn.Module, generator: torch.Generator) -> Callable[[Batch], torch.Tensor]:
    """``batch -> ⟨r, f(batch)⟩ / tokens`` with a fresh ``r ~ N(0, 1)`` per call (padding tokens excluded)."""
    def loss(batch: Batch) -> torch.Tensor:
        out = last_hidden(encoder, batch).float()  # (B, T, hidden)
        r = torch.randn(out.shape, generator=generator).to(out.device)
        mask = batch["attention_mask"].to(out.dtype).unsqueeze(-1)  # (B, T, 1)
        return (r * out * mask).sum() / mask.sum().clamp_min(1)
    return loss


def _limited(batches: Iterable[Batch], max_batches: int | None) -> Iterator[Batch]:
    for index, batch in enumerate(batches):
        if max_batches is not None and index >= max_batches:
            return
        yield batch


def hidden_scores(encoder: nn.Module, batches: Iterable[Batch], loss_fn: Callable[[Batch], torch.Tensor]) -> torch.Tensor:
    """``[hidden]``: Σ_batches |∂ loss / ∂ g_i| of the hidden-dimension gates (weights frozen)."""
    flags = {p: p.requires_grad for p in encoder.parameters()}
    gates = HiddenGates(encoder)
    total = torch.zeros_like(gates.gate)
    try:
        for p in flags:
            p.requires_grad_(False)
        gates.gate.requires_grad_(True)
        with torch.enable_grad():
            for batch in batches:
                (grad,) = torch.autograd.grad(loss_fn(batch), [gates.gate])
                total += grad.abs()
    finally:
        gates.remove()
        for p, flag in flags.items():
            p.requires_grad_(flag)
    return total.cpu()


@torch.no_grad()
def layer_scores(encoder: nn.Module, batches: Iterable[Batch]) -> torch.Tensor:
    """``[L]``: Σ ‖f_{-l} - f‖² / Σ ‖f‖² over the tokens of ``batches``, layer ``l`` alone skipped."""
    gates = LayerGates(encoder)
    L = len(gates.gate)
    change, energy = torch.zeros(L, dtype=torch.float64), 0.0
    try:
        for batch in batches:
            mask = batch["attention_mask"].unsqueeze(-1).float()
            full = last_hidden(encoder, batch).float() * mask
            energy += float(full.square().sum())
            for layer in range(L):
                gates.keep([i for i in range(L) if i != layer])
                change[layer] += float((last_hidden(encoder, batch).float() * mask - full).square().sum())
            gates.keep(None)
    finally:
        gates.remove()
    return (change / max(energy, 1e-30)).float()


def score_subarch(encoder: nn.Module, batches: Iterable[Batch], max_batches: int | None = None,
                  seed: int = 0) -> SubarchScores:
    """Every score of the module docstring on ``batches`` (the first ``max_batches``), in eval mode.

    The batches are read three times (heads and FFN, hidden dimensions, layers): pass a list.
    """
    batches = list(_limited(batches, max_batches))
    if not batches:
        raise UserError("scoring a sub-architecture needs at least one batch of text")
    training = encoder.training
    encoder.eval()
    try:
        imp = compute_importance(encoder, encoder, batches, sensitivity_loss(encoder, torch.Generator().manual_seed(seed)),
                                 ImportanceConfig(normalize_heads="none"))
        hidden = hidden_scores(encoder, batches, sensitivity_loss(encoder, torch.Generator().manual_seed(seed + 1)))
        layers = layer_scores(encoder, batches)
    finally:
        encoder.train(training)
    shape = shape_of(encoder)
    meta = {"format": SCORES_FORMAT, "shape": shape.describe(), "num_batches": str(len(batches)), "seed": str(seed),
            "scorer": "output-sensitivity (heads, ffn, hidden); skip-one-layer output change (layers)",
            "model": str(getattr(encoder.config, "_name_or_path", "") or encoder.config.model_type)}
    return SubarchScores(layers=layers, heads=imp.heads_raw, ffn=imp.ffn_raw, hidden=hidden, meta=meta)


def with_task_units(scores: SubarchScores, importances: Mapping[str, Importance],
                    weights: Mapping[str, float] | None = None) -> SubarchScores:
    """``scores`` whose head and FFN-neuron scores are the tasks' own gate importance (the tickets' normalised
    scores, ``heads [L, H]`` and ``ffn [L, I]``), each task's divided by its sum so that every task weighs the
    same, then summed over the tasks, each times its weight in ``weights`` (a task not named there weighs 1); the
    layer and hidden-dimension scores stay the output-sensitivity ones."""
    if not importances:
        raise UserError("choosing the units by task importance needs at least one task's importance file")
    weights = dict(weights or {})
    unknown = sorted(set(weights) - set(importances))
    if unknown:
        raise UserError(f"unit weights name {', '.join(unknown)}, which has no importance file "
                        f"(the tasks: {', '.join(sorted(importances))})")
    if any(w < 0 for w in weights.values()) or not any(weights.get(t, 1.0) > 0 for t in importances):
        raise UserError(f"unit weights must be >= 0 and not all 0, got {weights}")
    shape = EncoderShape(len(scores.layers), scores.heads.shape[1], 0, len(scores.hidden), scores.ffn.shape[1])
    for task, imp in importances.items():
        if tuple(imp.heads.shape) != tuple(scores.heads.shape) or tuple(imp.ffn.shape) != tuple(scores.ffn.shape):
            raise UserError(f"the importance of {task} has heads {tuple(imp.heads.shape)} and FFN "
                            f"{tuple(imp.ffn.shape)}; the teacher has {shape.describe()}")

    def summed(part: str) -> torch.Tensor:
        return sum(weights.get(task, 1.0) * getattr(i, part).float() / getattr(i, part).float().sum().clamp_min(1e-30)
                   for task, i in importances.items())

    meta = {**scores.meta, "units": task_units_label(importances, weights),
            "scorer": scores.meta.get("scorer", "") + "; heads and ffn replaced by the tasks' gate importance"}
    return SubarchScores(scores.layers, summed("heads"), summed("ffn"), scores.hidden, meta)


def task_units_label(tasks: Iterable[str], weights: Mapping[str, float] | None = None) -> str:
    """How :func:`with_task_units` ranked the units, as its scores' metadata says: ``tasks: cola, rte`` and, when a
    task weighs other than 1, `` (weights cola 3)``."""
    names = sorted(tasks)
    odd = [f"{t} {weights[t]:g}" for t in names if weights and weights.get(t, 1.0) != 1.0]
    return "tasks: " + ", ".join(names) + (f" (weights {', '.join(odd)})" if odd else "")


def save_scores(scores: SubarchScores, path: str | os.PathLike) -> None:
    """Write the scores (float32) and their metadata to one safetensors file, atomically."""
    tensors = {name: getattr(scores, name).detach().float().cpu() for name in _TENSORS}
    write_safetensors(tensors, path, {**scores.meta, "format": SCORES_FORMAT})


def load_scores(path: str | os.PathLike, expect_shape: EncoderShape | None = None) -> SubarchScores:
    """Inverse of :func:`save_scores`; UserError for a missing file, another kind of file or a wrong shape."""
    tensors, meta = read_safetensors(path, "sub-architecture scores")
    if meta.get("format") != SCORES_FORMAT or any(name not in tensors for name in _TENSORS):
        raise UserError(f"{path} is not a sub-architecture scores file (format {meta.get('format')!r})")
    scores = SubarchScores(**{name: tensors[name] for name in _TENSORS}, meta=meta)
    if expect_shape is not None:
        scores.check_shape(expect_shape)
    return scores


def describe(scores: SubarchScores) -> dict[str, Any]:
    """A small JSON-able summary: layer scores, per-layer head / FFN score sums, hidden score quartiles."""
    q = torch.quantile(scores.hidden, torch.tensor([0.0, 0.25, 0.5, 0.75, 1.0]))
    return {"layers": [round(float(x), 6) for x in scores.layers],
            "heads_per_layer": [round(float(x), 6) for x in scores.heads.sum(1)],
            "ffn_per_layer": [round(float(x), 6) for x in scores.ffn.sum(1)],
            "hidden_quartiles": [round(float(x), 6) for x in q]}
