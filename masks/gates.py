"""Multiplicative gates on attention heads and FFN neurons, applied by forward pre-hooks.

Per layer ``l`` (module paths from :mod:`masks.arch`):

- heads: the input of the attention output projection, ``[B, T, H*d]`` viewed
  ``[B, T, H, d]``, is multiplied by ``heads[l]`` (``[H]``);
- FFN: the input of the FFN down projection, ``[B, T, I]``, is multiplied by ``ffn[l]``
  (``[I]``).

A gate of 0 removes the unit exactly; 1 keeps it. Attention itself is untouched, so the
model's attention implementation (SDPA where the model has it) stays in use. Nothing in the model is copied.

Where layers share weights (ALBERT), one module runs as several layers: its hook counts its calls
(reset at the start of every forward pass of the base encoder) and gates the ``n``-th call with the
gates of the ``n``-th layer that uses it.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from basics.errors import UserError
from masks.arch import EncoderShape, attn_out_modules, ffn_down_modules, shape_of
from masks.hooks import HookedGates
from masks.mask import Mask

_KINDS = ("heads", "ffn")


class _GateHook:
    """Forward pre-hook of one gated Linear; delegates to its :class:`Gates`.

    ``layers``: the layers this module runs as, in forward order (one, unless layers share weights);
    the ``n``-th call of a forward pass is gated as ``layers[n % len(layers)]``.
    """

    def __init__(self, gates: "Gates", kind: str, layers: list[int]) -> None:
        self.gates = gates
        self.kind = kind
        self.layers = layers
        self.calls = 0

    def __call__(self, module: nn.Module, args: tuple[Any, ...]) -> tuple[Any, ...] | None:
        layer = self.layers[self.calls % len(self.layers)]
        self.calls += 1
        return self.gates._gate_input(self.kind, layer, args)


def _calls(modules: list[nn.Module]) -> list[tuple[nn.Module, list[int]]]:
    """Each distinct module of ``modules`` (one per layer) with the layers it runs as, in order."""
    out: dict[int, tuple[nn.Module, list[int]]] = {}
    for layer, module in enumerate(modules):
        out.setdefault(id(module), (module, []))[1].append(layer)
    return list(out.values())


class Gates(HookedGates):
    """Multiplicative gates on every head and FFN neuron of an encoder (via forward pre-hooks).

    heads: float ``[L, H]``, ffn: float ``[L, I]``; ones by default (1 = keep, 0 = pruned).
    Build with :func:`attach_gates`. Three regimes, chosen per forward:

    - all ones, no grad: the hooks return None (no-op);
    - masked, no grad: the input is multiplied by a per-channel vector cached at
      :meth:`set_mask` (``heads[l].repeat_interleave(d)`` -> ``[H*d]``; ``ffn[l]`` -> ``[I]``);
      layers whose gates are all ones are skipped;
    - requires grad (importance scoring): the vector is built from the gate tensor in the
      hook so gradients reach ``heads`` / ``ffn``. Between :meth:`start_probes` and
      :meth:`stop_probes`, each gated input is also multiplied by a per-token probe of ones
      ``[B, T, N]`` (N = H or I): ``x * (g + p - 1)``, so ``∂L/∂p[b, t, u]`` is example ``b``'s,
      token ``t``'s share of ``∂L/∂g[u]`` (they sum to it); the per-token importance estimator.

    If you edit ``heads``/``ffn`` in place, call :meth:`refresh`.
    """

    def __init__(self, encoder: nn.Module) -> None:
        self.shape: EncoderShape = shape_of(encoder)
        param = next(encoder.parameters(), None)
        device = param.device if param is not None else torch.device("cpu")
        L, H, I = self.shape.num_layers, self.shape.num_heads, self.shape.intermediate
        self.heads = torch.ones(L, H, device=device)  # [L, H] float32
        self.ffn = torch.ones(L, I, device=device)  # [L, I] float32
        self.mask: Mask | None = None  # the mask last given to set_mask
        self.is_identity = True
        self._vectors: dict[tuple[str, int], torch.Tensor | None] = {}
        self._converted: dict[tuple[str, int, torch.dtype, torch.device], torch.Tensor] = {}
        self._handles = []
        self._probes: list[tuple[str, int, torch.Tensor]] | None = None  # (kind, layer, probe [B, T, N])
        self._hooks: list[_GateHook] = []
        for kind, modules in (("heads", attn_out_modules(encoder)), ("ffn", ffn_down_modules(encoder))):
            for module, layers in _calls(modules):
                hook = _GateHook(self, kind, layers)
                self._hooks.append(hook)
                self._handles.append(module.register_forward_pre_hook(hook))
        if any(len(hook.layers) > 1 for hook in self._hooks):  # shared weights: count calls per forward pass
            base = getattr(encoder, "base_model", encoder)
            self._handles.append(base.register_forward_pre_hook(lambda module, args: self._reset_calls()))
        self.refresh()

    # --- public API ----------------------------------------------------------------------
    def set_mask(self, mask: Mask | None) -> None:
        """Gate values := mask (True -> 1, False -> 0); None = all ones. UserError on shape mismatch."""
        if mask is not None:
            if not isinstance(mask, Mask):
                raise UserError(f"set_mask expects a Mask or None, got {type(mask).__name__}")
            mask.check_shape(self.shape)
        with torch.no_grad():
            if mask is None:
                self.heads.fill_(1.0)
                self.ffn.fill_(1.0)
            else:
                self.heads.copy_(mask.heads)
                self.ffn.copy_(mask.ffn)
        self.mask = mask
        self.refresh()

    def refresh(self) -> None:
        """Recompute the identity flag and the cached per-channel vectors from the gate values."""
        with torch.no_grad():
            d = self.shape.head_dim
            self._vectors.clear()
            self._converted.clear()
            for layer in range(self.shape.num_layers):
                head_g, ffn_g = self.heads[layer], self.ffn[layer]  # [H], [I]
                self._vectors["heads", layer] = None if bool((head_g == 1).all()) else head_g.repeat_interleave(d)
                self._vectors["ffn", layer] = None if bool((ffn_g == 1).all()) else ffn_g.clone()
            self.is_identity = all(v is None for v in self._vectors.values())

    def requires_grad_(self, flag: bool = True) -> "Gates":
        """Make ``heads`` and ``ffn`` (leaf tensors) require grad, for importance scoring."""
        self.heads.requires_grad_(flag)
        self.ffn.requires_grad_(flag)
        return self

    def start_probes(self) -> None:
        """From now on, gated forwards (with grad) add a per-token probe; see the class doc."""
        self._probes = []

    def stop_probes(self) -> list[tuple[str, int, torch.Tensor]]:
        """The probes of the forwards since :meth:`start_probes`: ``(kind, layer, probe [B, T, N])``."""
        probes, self._probes = self._probes or [], None
        return probes

    @property
    def requires_grad(self) -> bool:
        return self.heads.requires_grad or self.ffn.requires_grad

    def to(self, device: torch.device | str) -> "Gates":
        """Move the gate tensors (the hooks also adapt lazily to the input's device)."""
        flag = self.requires_grad
        with torch.no_grad():
            self.heads = self.heads.detach().to(device)
            self.ffn = self.ffn.detach().to(device)
        self.requires_grad_(flag)
        self.refresh()
        return self

    # --- the hook ------------------------------------------------------------------------
    def _reset_calls(self) -> None:
        for hook in self._hooks:
            hook.calls = 0

    def _gate_input(self, kind: str, layer: int, args: tuple[Any, ...]) -> tuple[Any, ...] | None:
        x = args[0]  # heads: [B, T, H*d]; ffn: [B, T, I]
        if self.requires_grad:
            if self._probes is not None:
                return (x * self._probed_factor(kind, layer, x), *args[1:])
            g = self.heads[layer].repeat_interleave(self.shape.head_dim) if kind == "heads" else self.ffn[layer]
            return (x * g.to(device=x.device, dtype=x.dtype), *args[1:])
        if self.is_identity:
            return None
        vec = self._vectors[kind, layer]  # [H*d] or [I], None = layer all ones
        if vec is None:
            return None
        if vec.dtype != x.dtype or vec.device != x.device:
            key = (kind, layer, x.dtype, x.device)
            if key not in self._converted:
                self._converted[key] = vec.to(device=x.device, dtype=x.dtype)
            vec = self._converted[key]
        return (x * vec, *args[1:])

    def _probed_factor(self, kind: str, layer: int, x: torch.Tensor) -> torch.Tensor:
        """``g + p - 1`` per token, ``[B, T, H*d]`` or ``[B, T, I]``; the probe ``p`` (ones, ``[B, T, N]``) is kept."""
        g = (self.heads if kind == "heads" else self.ffn)[layer]  # [N]
        probe = torch.ones(*x.shape[:-1], g.shape[0], device=x.device, requires_grad=True)  # [B, T, N]
        self._probes.append((kind, layer, probe))
        factor = g.to(x.device) + (probe - 1)  # [B, T, N]; equals g, gradients reach g and p
        if kind == "heads":
            factor = factor.repeat_interleave(self.shape.head_dim, dim=-1)  # [B, T, H*d]
        return factor.to(x.dtype)


def find_gates(encoder: nn.Module) -> Gates | None:
    """The :class:`Gates` attached to ``encoder``, or None."""
    for module in attn_out_modules(encoder):
        for hook in module._forward_pre_hooks.values():
            if isinstance(hook, _GateHook):
                return hook.gates
    return None


def attach_gates(encoder: nn.Module, mask: Mask | None = None) -> Gates:
    """Attach gates (all ones, or ``mask`` if given) to a base encoder; returns the :class:`Gates`.

    UserError if the encoder already carries gates (use :func:`find_gates`, or ``remove()`` first).
    """
    if find_gates(encoder) is not None:
        raise UserError("encoder already has gates attached; reuse them (find_gates) or call .remove() first")
    gates = Gates(encoder)
    if mask is not None:
        gates.set_mask(mask)
    return gates
