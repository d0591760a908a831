"""A gate on every encoder layer: ``out = g_l · layer(x) + (1 - g_l) · x``, applied by forward hooks.

``g_l = 1`` keeps layer ``l`` as it is; ``g_l = 0`` skips it exactly (its input passes to the next layer),
which is what removing the layer from the model does (:mod:`masks.extract` keeps a subset of the layers).
Used to measure how much each layer matters (:mod:`masks.subarch_importance`).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from masks.arch import layer_modules
from masks.hooks import HookedGates


class _LayerHook:
    def __init__(self, gates: "LayerGates", index: int) -> None:
        self.gates = gates
        self.index = index

    def __call__(self, module: nn.Module, args: tuple[Any, ...], output: Any) -> Any:
        g = self.gates.gate[self.index]
        if not g.requires_grad and float(g) == 1.0:
            return None
        x = args[0]  # (B, T, hidden): the layer's input
        hidden = output[0] if isinstance(output, tuple) else output
        mixed = g.to(hidden.dtype) * hidden + (1 - g.to(hidden.dtype)) * x
        return (mixed, *output[1:]) if isinstance(output, tuple) else mixed


class LayerGates(HookedGates):
    """Gates ``gate`` ``[L]`` (1 = keep the layer, 0 = skip it) on a base encoder's layers."""

    def __init__(self, encoder: nn.Module) -> None:
        layers = layer_modules(encoder)
        param = next(encoder.parameters())
        self.gate = torch.ones(len(layers), device=param.device)  # [L] float32
        self._handles = [layer.register_forward_hook(_LayerHook(self, i)) for i, layer in enumerate(layers)]

    def keep(self, layers: list[int] | None) -> "LayerGates":
        """Gate 1 on ``layers``, 0 on the others; None: all ones."""
        with torch.no_grad():
            self.gate.fill_(1.0 if layers is None else 0.0)
            for index in layers or []:
                self.gate[index] = 1.0
        return self
