"""A multiplicative gate on every hidden dimension of the residual stream, applied by forward hooks.

The gate ``g`` (float ``[hidden]``, 1 = keep, 0 = removed) acts where the stream is written
(:func:`masks.residual.stream_writers`):

- every LayerNorm that writes the stream becomes a **gated LayerNorm**: its statistics are weighted by
  ``g`` and its output is multiplied by ``g``::

      mean = Σ_i g_i x_i / Σ_i g_i        var = Σ_i g_i (x_i - mean)² / Σ_i g_i
      y    = g ⊙ ((x - mean) / sqrt(var + eps) ⊙ weight + bias)

- a Linear that writes the stream with no LayerNorm after it (ELECTRA's embedding projection, the pooler)
  has its output multiplied by ``g``.

Why this construction: a plain ``x ⊙ g`` on the stream is *not* the same as removing dimensions, because a
LayerNorm would still count the zeros in its mean and variance. With the gated LayerNorm, a 0/1 gate is
exactly the model with those dimensions sliced out of every tensor (:mod:`masks.extract`): removed
dimensions hold 0 everywhere, so every projection that reads the stream ignores them; whatever a
projection writes into them is ignored by the next (gated) LayerNorm's statistics and zeroed by its
output. At ``g = 1`` it is the stock LayerNorm. In between, it is differentiable in ``g``, which gives the
hidden-dimension importance (:mod:`masks.subarch_importance`).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from masks.hooks import HookedGates
from masks.residual import stream_writers


def gated_layer_norm(x: torch.Tensor, norm: nn.LayerNorm, gate: torch.Tensor) -> torch.Tensor:
    """``norm(x)`` with its statistics over the dimensions weighted by ``gate`` ``[H]``, times ``gate``.
    ``x``: ``[..., H]``. Equals ``norm(x)`` at ``gate = 1``."""
    g = gate.to(dtype=x.dtype, device=x.device)
    n = g.sum()
    mean = (x * g).sum(-1, keepdim=True) / n  # [..., 1]
    centered = x - mean
    var = (g * centered.square()).sum(-1, keepdim=True) / n  # biased, like nn.LayerNorm
    y = centered * torch.rsqrt(var + norm.eps)
    if norm.weight is not None:
        y = y * norm.weight
    if norm.bias is not None:
        y = y + norm.bias
    return y * g


class _NormHook:
    def __init__(self, gates: "HiddenGates") -> None:
        self.gates = gates

    def __call__(self, module: nn.Module, args: tuple[Any, ...], output: torch.Tensor) -> torch.Tensor | None:
        if self.gates.is_identity:
            return None
        return gated_layer_norm(args[0], module, self.gates.gate)


class _LinearHook:
    def __init__(self, gates: "HiddenGates") -> None:
        self.gates = gates

    def __call__(self, module: nn.Module, args: tuple[Any, ...], output: torch.Tensor) -> torch.Tensor | None:
        if self.gates.is_identity:
            return None
        return output * self.gates.gate.to(dtype=output.dtype, device=output.device)


class HiddenGates(HookedGates):
    """Gates ``gate`` ``[hidden]`` on the residual stream of a base encoder (see the module docstring).

    Ones by default (a no-op). :meth:`keep` sets a 0/1 gate; ``gate.requires_grad_()`` for scoring.
    Remove with :meth:`remove` (or use as a context manager).
    """

    def __init__(self, encoder: nn.Module) -> None:
        norms, linears = stream_writers(encoder)
        width = norms[0].normalized_shape[-1] if norms else linears[0].out_features
        param = next(encoder.parameters())
        self.gate = torch.ones(width, device=param.device)  # [hidden] float32
        self._handles = [m.register_forward_hook(_NormHook(self)) for m in norms]
        self._handles += [m.register_forward_hook(_LinearHook(self)) for m in linears]

    @property
    def is_identity(self) -> bool:
        return not self.gate.requires_grad and bool((self.gate == 1).all())

    def keep(self, dims: torch.Tensor | list[int] | None) -> "HiddenGates":
        """Gate 1 on ``dims`` (indices, or a bool ``[hidden]``), 0 elsewhere; None: all ones."""
        with torch.no_grad():
            if dims is None:
                self.gate.fill_(1.0)
            else:
                index = torch.as_tensor(dims)
                keep = index if index.dtype == torch.bool else torch.zeros_like(self.gate, dtype=torch.bool).index_fill(
                    0, index.long().to(self.gate.device), True)
                self.gate.copy_(keep.to(self.gate.dtype))
        return self
