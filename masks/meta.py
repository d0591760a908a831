"""Mask metadata as a typed value; the safetensors string metadata is only its file form.

Every structured mask says what it is: its kind (winning, random, losing, super_ticket, union, ...),
the tasks and model it was cut for, the encoder shape (:class:`masks.arch.EncoderShape`), the
sparsity it was cut at and the parameter sparsity it has, the scorer, the FFN granularity and the
seed of a random draw, and the objective the scores were taken on (``task``, ``mlm``, ``self-distill``:
:data:`mtl.objective.OBJECTIVES`; None in masks written before it was recorded, which were all scored on the
task loss). Anything else a tool records (the run it came from, how it was selected, ...)
lives in ``extra`` as strings.

File form: ``to_strings()`` / ``from_strings()`` with the keys ``kind``, ``tasks`` (comma list),
``model``, ``shape`` (``L=6,H=12,d=32,hidden=384,I=1536``), ``sparsity`` (``0.30``), ``ffn_sparsity``,
``param_sparsity`` (``0.3046``), ``scorer``, ``granularity``, ``seed``, ``objective``, plus the ``extra`` keys.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from basics.errors import UserError
from masks.arch import EncoderShape

TYPED_KEYS = ("kind", "tasks", "model", "shape", "sparsity", "ffn_sparsity", "param_sparsity", "scorer",
              "granularity", "seed", "objective")
# describe one mask, not a merge of several: dropped when masks are combined (and recomputed there)
PER_MASK_FIELDS = ("sparsity", "ffn_sparsity", "param_sparsity", "seed")


def format_fraction(x: float) -> str:
    """``0.3 -> "0.30"``, ``0.125 -> "0.125"`` (two decimals unless more are needed)."""
    short = f"{x:.2f}"
    if abs(float(short) - x) < 1e-9:
        return short
    return f"{x:.6f}".rstrip("0")


def _float(key: str, text: str) -> float | None:
    if text == "":
        return None
    try:
        return float(text)
    except ValueError:
        raise UserError(f"mask metadata {key}={text!r} is not a number") from None


def merge_names(lists: Iterable[Sequence[str]]) -> tuple[str, ...]:
    """Name lists merged, order kept, duplicates dropped."""
    out: list[str] = []
    for names in lists:
        out += [n for n in names if n and n not in out]
    return tuple(out)


@dataclass
class MaskMeta:
    """What a structured mask is. ``tasks`` is a tuple of task names; fractions are floats in [0, 1)."""

    kind: str = "custom"
    tasks: tuple[str, ...] = ()
    model: str = "unknown"
    shape: EncoderShape | None = None
    sparsity: float | None = None  # the fraction the mask was cut at (heads; FFN too unless ffn_sparsity)
    ffn_sparsity: float | None = None
    param_sparsity: float | None = None  # measured: 1 - kept / total prunable encoder parameters
    scorer: str | None = None
    granularity: str | None = None  # "neuron" or "layer" (masks.kinds.GRANULARITIES)
    seed: int | None = None  # the seed of a random draw / of the scoring run
    objective: str | None = None  # what the scores were taken on: task | mlm | self-distill (None: task, older files)
    extra: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if isinstance(self.tasks, str):
            self.tasks = tuple(t for t in self.tasks.split(",") if t)
        self.tasks = tuple(self.tasks)
        self.extra = {str(k): str(v) for k, v in self.extra.items()}
        clash = [k for k in self.extra if k in TYPED_KEYS]
        if clash:
            raise ValueError(f"mask metadata {clash} are typed fields, not extra entries")

    # ---- file form
    def to_strings(self) -> dict[str, str]:
        """The safetensors metadata: every set field as a string, then ``extra``."""
        out = {"kind": self.kind, "tasks": ",".join(self.tasks), "model": self.model}
        if self.shape is not None:
            out["shape"] = self.shape.describe()
        if self.sparsity is not None:
            out["sparsity"] = format_fraction(self.sparsity)
        if self.ffn_sparsity is not None:
            out["ffn_sparsity"] = format_fraction(self.ffn_sparsity)
        if self.param_sparsity is not None:
            out["param_sparsity"] = f"{self.param_sparsity:.4f}"
        for key in ("scorer", "granularity", "objective"):
            if getattr(self, key) is not None:
                out[key] = getattr(self, key)
        if self.seed is not None:
            out["seed"] = str(self.seed)
        return {**out, **self.extra}

    @classmethod
    def from_strings(cls, meta: Mapping[str, str]) -> "MaskMeta":
        """Parse the file form; keys outside the typed fields go to ``extra``."""
        meta = {str(k): str(v) for k, v in meta.items()}
        extra = {k: v for k, v in meta.items() if k not in TYPED_KEYS}
        seed_text = meta.get("seed", "")
        if seed_text and not seed_text.lstrip("-").isdigit():
            raise UserError(f"mask metadata seed={seed_text!r} is not an integer")
        return cls(kind=meta.get("kind") or "custom",
                   tasks=tuple(t for t in meta.get("tasks", "").split(",") if t),
                   model=meta.get("model") or "unknown",
                   shape=EncoderShape.parse(meta["shape"]) if meta.get("shape") else None,
                   sparsity=_float("sparsity", meta.get("sparsity", "")),
                   ffn_sparsity=_float("ffn_sparsity", meta.get("ffn_sparsity", "")),
                   param_sparsity=_float("param_sparsity", meta.get("param_sparsity", "")),
                   scorer=meta.get("scorer") or None, granularity=meta.get("granularity") or None,
                   seed=int(seed_text) if seed_text else None, objective=meta.get("objective") or None,
                   extra=extra)

    # ---- values
    def replace(self, **changes: object) -> "MaskMeta":
        """A copy with fields changed (``extra`` entries merged, not replaced)."""
        extra = {**self.extra, **dict(changes.pop("extra", {}) or {})}  # type: ignore[arg-type]
        return dataclasses.replace(self, **changes, extra=extra)

    def with_extra(self, **entries: object) -> "MaskMeta":
        return self.replace(extra={k: str(v) for k, v in entries.items()})

    def updated(self, entries: Mapping[str, object]) -> "MaskMeta":
        """A copy with ``entries`` applied (typed keys parsed, others into ``extra``); see :func:`updated`."""
        return updated(self, entries)

    @classmethod
    def merged(cls, metas: Sequence["MaskMeta"], kind: str) -> "MaskMeta":
        """The metadata of a mask combined from masks with ``metas``: the entries they all share,
        their tasks merged, the given ``kind``; per-mask values (sparsities, seed) are dropped."""
        if not metas:
            raise ValueError("merged needs at least one MaskMeta")
        first = metas[0]
        shared = {f.name: getattr(first, f.name) for f in dataclasses.fields(cls)
                  if f.name not in ("extra", "tasks", "kind", *PER_MASK_FIELDS)
                  and all(getattr(m, f.name) == getattr(first, f.name) for m in metas)}
        extra = {k: v for k, v in first.extra.items() if all(m.extra.get(k) == v for m in metas)}
        return cls(kind=kind, tasks=merge_names(m.tasks for m in metas), extra=extra, **shared)


def _typed_value(key: str, value: object) -> object:
    """A typed field's value from its file form (a string) or from a value already of its type."""
    if value is None or (isinstance(value, str) and value == "" and key not in ("kind", "model")):
        return None
    if key == "tasks":
        return tuple(t for t in value.split(",") if t) if isinstance(value, str) else tuple(value)  # type: ignore[arg-type]
    if key == "shape":
        return value if isinstance(value, EncoderShape) else EncoderShape.parse(str(value))
    if key in ("sparsity", "ffn_sparsity", "param_sparsity"):
        return _float(key, value) if isinstance(value, str) else float(value)  # type: ignore[arg-type]
    if key == "seed":
        try:
            return int(value)  # type: ignore[call-overload]
        except (TypeError, ValueError):
            raise UserError(f"mask metadata seed={value!r} is not an integer") from None
    return str(value)


def updated(meta: MaskMeta, entries: Mapping[str, object]) -> MaskMeta:
    """``meta`` with ``entries`` applied: typed keys (strings in file form, or typed values) set their
    field, any other key becomes an ``extra`` string."""
    typed = {k: _typed_value(k, v) for k, v in entries.items() if k in TYPED_KEYS}
    extra = {k: str(v) for k, v in entries.items() if k not in TYPED_KEYS}
    return meta.replace(**typed, extra=extra)
