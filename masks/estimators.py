"""How importance scores are estimated and normalised (one registry each).

Estimators say where the absolute value is taken in ``I(u) = Σ |Σ ∂L/∂g_u|``:

- ``batch``: |Σ over the batch's examples and tokens| per batch, summed over batches (Michel et
  al.'s and Prasanna et al.'s code);
- ``example``: |Σ over the example's tokens| per example, summed (each example's own loss);
- ``token``: |·| per token per example, summed: ``Σ_examples Σ_tokens |∂L/∂g_u at that token|``
  (the Super Tickets code; ``L`` is the batch loss, as for ``batch``).

With a loss that sums over examples, ``token`` ≥ ``example`` ≥ ``batch`` unit by unit (the triangle
inequality); they differ in which cancellations of signs they keep. ``batch`` is the default: every
committed result was scored with it, and it costs one backward pass per batch like ``token``
(``example`` needs one per example).

Normalisations of a ``[L, N]`` score matrix: ``layer_l2`` divides each layer's row by its L2 norm
(Michel et al.), ``none`` keeps the raw sums. Both registries are torch-free (read by the option
parser); the normalisations use tensor methods only.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from basics.registry import Registry

ESTIMATORS: Registry[str] = Registry("importance estimator")
ESTIMATORS.register("batch", "|sum of the gate gradient over a batch|, summed over batches")
ESTIMATORS.register("example", "|sum of the gate gradient over one example|, summed over examples")
ESTIMATORS.register("token", "|gate gradient at one token of one example|, summed over tokens and examples")

FLOAT32_TINY = 1.1754943508222875e-38  # torch.finfo(torch.float32).tiny: a zero row stays zero


def layer_l2(raw: Any) -> Any:
    """Each row of ``raw`` ``[L, N]`` divided by its L2 norm (a zero row stays zero)."""
    norm = raw.norm(p=2, dim=-1, keepdim=True)  # [L, 1]
    return raw / norm.clamp_min(FLOAT32_TINY)


def no_normalization(raw: Any) -> Any:
    return raw.clone()


NORMALIZATIONS: Registry[Callable[[Any], Any]] = Registry("score normalisation")
NORMALIZATIONS.register("layer_l2", layer_l2)
NORMALIZATIONS.register("none", no_normalization)
