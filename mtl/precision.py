"""Numeric precisions of a run (one registry): what ``--precision`` accepts and what it means.

Each entry names the autocast dtype (a ``torch`` attribute name, or None for plain fp32) and
whether it needs CUDA. ``auto`` picks bf16 where the device has native bf16 kernels, else fp32
(:func:`mtl.trainer.autocast_dtype`). Torch-free: read by the option parser.
"""

from __future__ import annotations

from dataclasses import dataclass

from basics.registry import Registry


@dataclass(frozen=True)
class Precision:
    dtype: str | None  # torch dtype name for autocast; None = fp32, no autocast
    cuda_only: bool = False
    auto: bool = False  # decided per device


PRECISIONS: Registry[Precision] = Registry("precision")
PRECISIONS.register("auto", Precision(None, auto=True))
PRECISIONS.register("fp32", Precision(None))
PRECISIONS.register("bf16", Precision("bfloat16"))
PRECISIONS.register("fp16", Precision("float16", cuda_only=True))
