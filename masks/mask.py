"""A structured mask is a value: which heads and FFN neurons of an encoder are kept.

Polarity: **True = keep**, False = pruned. ``heads`` is ``bool[L, H]``, ``ffn`` is
``bool[L, I]`` (whole-FFN-layer granularity = rows all True or all False). Metadata is a
:class:`masks.meta.MaskMeta`; its string form is saved with the tensors in one safetensors file.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, safe_open, save

from basics.errors import UserError
from basics.io import atomic_write_bytes, canonical_safetensors
from masks.arch import EncoderShape
from masks.meta import MaskMeta

MASK_FORMAT = "mtl-tickets/mask"
PER_TASK_MODE = "per-task"
SINGLE_MODE = "single"
# Metadata keys every saved mask file carries (defaults filled in by save_mask).
REQUIRED_META = ("kind", "sparsity", "tasks", "model")


def zero_one_to_bool(t: torch.Tensor, label: str) -> torch.Tensor:
    """A bool tensor (returned as is) or 0/1 numbers (True = 1 = keep); other values: UserError naming ``label``."""
    if t.dtype == torch.bool:
        return t
    if not bool(((t == 0) | (t == 1)).all()):
        raise UserError(f"{label} must hold only 0/1 (1 = keep); got other values")
    return t != 0


def _as_bool(t: Any, name: str) -> torch.Tensor:
    """``t`` as a 2-D CPU bool tensor; 0/1 numbers accepted, anything else is a UserError."""
    t = torch.as_tensor(t).detach().cpu()
    if t.dim() != 2:
        raise UserError(f"mask.{name} must be 2-D, got shape {tuple(t.shape)}")
    return zero_one_to_bool(t, f"mask.{name}")


@dataclass(eq=False)
class Mask:
    """Structured mask over an encoder, True = keep.

    heads: bool ``[L, H]``; ffn: bool ``[L, I]``; meta: :class:`MaskMeta` (kind, tasks, model,
    shape, sparsities, scorer, granularity, seed; a plain string mapping is read as its file form).
    Tensors live on the CPU.
    """

    heads: torch.Tensor  # bool [L, H]
    ffn: torch.Tensor  # bool [L, I]
    meta: MaskMeta = field(default_factory=MaskMeta)

    def __post_init__(self) -> None:
        self.heads = _as_bool(self.heads, "heads")
        self.ffn = _as_bool(self.ffn, "ffn")
        if self.heads.shape[0] != self.ffn.shape[0]:
            raise UserError(
                f"mask has {self.heads.shape[0]} head layers but {self.ffn.shape[0]} FFN layers"
            )
        if not isinstance(self.meta, MaskMeta):
            self.meta = MaskMeta.from_strings(self.meta)

    # --- construction -------------------------------------------------------------------
    @classmethod
    def ones(cls, shape: EncoderShape, **meta: Any) -> "Mask":
        """Keep-everything mask for ``shape`` (kind "dense", sparsity 0 unless ``meta`` says otherwise)."""
        return cls(
            torch.ones(shape.num_layers, shape.num_heads, dtype=torch.bool),
            torch.ones(shape.num_layers, shape.intermediate, dtype=torch.bool),
            MaskMeta(**{"shape": shape, "kind": "dense", "sparsity": 0.0, **meta}),
        )

    # --- shape ---------------------------------------------------------------------------
    @property
    def dims(self) -> str:
        """``"L=..,H=..,I=.."`` from the tensor sizes."""
        return f"L={self.heads.shape[0]},H={self.heads.shape[1]},I={self.ffn.shape[1]}"

    def check_shape(self, shape: EncoderShape) -> None:
        """UserError unless the mask fits an encoder of ``shape``."""
        want = (shape.num_layers, shape.num_heads, shape.intermediate)
        have = (self.heads.shape[0], self.heads.shape[1], self.ffn.shape[1])
        if have != want:
            raise UserError(
                f"mask is for {self.dims} but model is "
                f"L={shape.num_layers},H={shape.num_heads},I={shape.intermediate}"
            )
        if self.meta.shape is not None and self.meta.shape != shape:
            raise UserError(f"mask is for {self.meta.shape.describe()} but model is {shape.describe()}")

    def _check_same(self, other: "Mask") -> None:
        if not isinstance(other, Mask):
            raise UserError(f"expected a Mask, got {type(other).__name__}")
        if self.heads.shape != other.heads.shape or self.ffn.shape != other.ffn.shape:
            raise UserError(f"mask shapes differ: {self.dims} vs {other.dims}")

    # --- algebra -------------------------------------------------------------------------
    def _combine(self, other: "Mask", heads: torch.Tensor, ffn: torch.Tensor, kind: str) -> "Mask":
        """Result meta: :meth:`MaskMeta.merged` (shared entries, tasks merged, kind set), measured sparsity."""
        return Mask(heads, ffn, MaskMeta.merged([self.meta, other.meta], kind)).with_measured_sparsity()

    def with_measured_sparsity(self, param_sparsity: bool = False) -> "Mask":
        """Set ``meta.sparsity`` (rounded to 4 places), and ``meta.param_sparsity`` if asked, to the parameter
        sparsity this mask has, when its meta knows the encoder shape; returns self."""
        if self.meta.shape is not None:
            measured = self.sparsity(self.meta.shape)
            self.meta.sparsity = round(measured, 4)
            if param_sparsity:
                self.meta.param_sparsity = measured
        return self

    def __or__(self, other: "Mask") -> "Mask":
        """Union: a unit is kept if either mask keeps it (meta kind="union")."""
        self._check_same(other)
        return self._combine(other, self.heads | other.heads, self.ffn | other.ffn, "union")

    def __and__(self, other: "Mask") -> "Mask":
        """Intersection: a unit is kept if both masks keep it (meta kind="intersection")."""
        self._check_same(other)
        return self._combine(other, self.heads & other.heads, self.ffn & other.ffn, "intersection")

    def same_units(self, other: "Mask") -> bool:
        """True if both masks keep exactly the same heads and neurons (meta ignored)."""
        self._check_same(other)
        return bool(torch.equal(self.heads, other.heads) and torch.equal(self.ffn, other.ffn))

    # --- counts --------------------------------------------------------------------------
    @property
    def num_heads_kept(self) -> int:
        return int(self.heads.sum())

    @property
    def num_ffn_kept(self) -> int:
        return int(self.ffn.sum())

    @property
    def keeps_all(self) -> bool:
        """True if the mask keeps every head and every FFN neuron (gating with it changes nothing)."""
        return bool(self.heads.all() and self.ffn.all())

    def param_counts(self, shape: EncoderShape | None = None) -> tuple[int, int]:
        """(kept, total) prunable encoder parameters.

        Per head: Q/K/V rows with biases plus O columns = ``4*d*hidden + 3*d`` (BERT; other families
        record their own count in the shape: :attr:`EncoderShape.params_per_head`).
        Per FFN neuron: up row + bias + down column = ``2*hidden + 1`` (or :attr:`EncoderShape.params_per_neuron`).
        Shared biases, LayerNorms and embeddings are not prunable and not counted. ``shape`` defaults to the
        recorded one. Where layers share weights (ALBERT) a unit counts once per layer that runs it.
        """
        shape = self._shape(shape)
        self.check_shape(shape)
        per_head = shape.params_per_head
        per_neuron = shape.params_per_neuron
        kept = self.num_heads_kept * per_head + self.num_ffn_kept * per_neuron
        total = self.heads.numel() * per_head + self.ffn.numel() * per_neuron
        return kept, total

    def _shape(self, shape: EncoderShape | None) -> EncoderShape:
        if shape is not None:
            return shape
        if self.meta.shape is None:
            raise UserError("the mask does not record its encoder shape; pass shape=EncoderShape(...)")
        return self.meta.shape

    def sparsity(self, shape: EncoderShape | None = None) -> float:
        """Fraction of prunable parameters removed: ``1 - kept/total`` (``shape``: default the recorded one)."""
        kept, total = self.param_counts(shape)
        return 1.0 - kept / total

    # --- overlap -------------------------------------------------------------------------
    def jaccard_heads(self, other: "Mask") -> float:
        """|A ∩ B| / |A ∪ B| over heads (1.0 when both keep nothing)."""
        self._check_same(other)
        return _jaccard(self.heads, other.heads)

    def jaccard_ffn(self, other: "Mask") -> float:
        """|A ∩ B| / |A ∪ B| over FFN neurons (1.0 when both keep nothing)."""
        self._check_same(other)
        return _jaccard(self.ffn, other.ffn)

    def jaccard(self, other: "Mask") -> float:
        """|A ∩ B| / |A ∪ B| over all kept units, heads and neurons pooled."""
        self._check_same(other)
        a = torch.cat([self.heads.flatten(), self.ffn.flatten()])
        b = torch.cat([other.heads.flatten(), other.ffn.flatten()])
        return _jaccard(a, b)

    def __repr__(self) -> str:
        return (
            f"Mask({self.dims}, heads kept {self.num_heads_kept}/{self.heads.numel()}, "
            f"ffn kept {self.num_ffn_kept}/{self.ffn.numel()}, meta={self.meta})"
        )


def _jaccard(a: torch.Tensor, b: torch.Tensor) -> float:
    union = int((a | b).sum())
    return 1.0 if union == 0 else int((a & b).sum()) / union


# --- files -------------------------------------------------------------------------------
def write_safetensors(tensors: dict[str, torch.Tensor], path: str | os.PathLike, meta: dict[str, str]) -> None:
    """Write a safetensors file atomically (temp file in the same directory + rename), byte-deterministic: the same
    tensors and metadata always give the same bytes (:func:`basics.io.canonical_safetensors`)."""
    blob = save({k: v.contiguous() for k, v in tensors.items()}, metadata=meta)
    atomic_write_bytes(Path(path), canonical_safetensors(blob))


def tensor_digest(path: str | os.PathLike) -> str:
    """SHA-256 of a safetensors file's tensors (names, dtypes, shapes, bytes; metadata ignored): two mask
    files with the same digest keep the same units, whatever their paths and descriptions."""
    tensors, _ = read_safetensors(path, "mask")
    digest = hashlib.sha256()
    for name in sorted(tensors):
        digest.update(tensor_record(name, tensors[name]))
    return digest.hexdigest()


def tensor_record(name: str, tensor: torch.Tensor) -> bytes:
    """What a digest of a named tensor reads: ``name:dtype:(numel,);`` then its bytes."""
    t = tensor.contiguous().reshape(-1)
    return f"{name}:{t.dtype}:{tuple(t.shape)};".encode() + (t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")


def read_safetensors(path: str | os.PathLike, what: str) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """(tensors, metadata) of a safetensors file; UserError if missing or unreadable."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{what} file not found: {path}")
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = dict(f.metadata() or {})
        tensors = load_file(str(path))
    except (SafetensorError, OSError, ValueError) as exc:
        raise UserError(f"{path} is not a safetensors {what} file ({exc})") from exc
    return tensors, meta


def _file_meta(mask: Mask) -> dict[str, str]:
    """The file form of ``mask.meta`` (kind, tasks and model always; a sparsity measured if none is set)."""
    meta = mask.meta
    if meta.sparsity is None:
        if meta.shape is not None:
            frac = mask.sparsity(meta.shape)
        else:  # unit fraction when the parameter shape is unknown
            frac = 1 - (mask.num_heads_kept + mask.num_ffn_kept) / (mask.heads.numel() + mask.ffn.numel())
        meta = meta.replace(sparsity=round(frac, 4))
    return meta.to_strings()


def save_mask(mask: Mask, path: str | os.PathLike) -> None:
    """Save one mask: tensors ``heads`` ``[L,H]`` and ``ffn`` ``[L,I]`` as uint8 (1 = keep).

    Metadata = ``mask.meta`` plus ``format``, ``mode="single"``; ``kind``, ``sparsity``,
    ``tasks``, ``model`` are always present (defaults filled in). Atomic write.
    """
    meta = {**_file_meta(mask), "format": MASK_FORMAT, "mode": SINGLE_MODE}
    tensors = {"heads": mask.heads.to(torch.uint8), "ffn": mask.ffn.to(torch.uint8)}
    write_safetensors(tensors, path, meta)


def _mask_from(tensors: dict[str, torch.Tensor], hkey: str, fkey: str, meta: dict[str, str], path: Path) -> Mask:
    missing = [k for k in (hkey, fkey) if k not in tensors]
    if missing:
        raise UserError(
            f"{path} is not a mask file: missing tensors {missing}; it holds {sorted(tensors) or 'none'}"
        )
    try:
        return Mask(tensors[hkey], tensors[fkey], meta)
    except UserError as exc:
        raise UserError(f"{path} does not hold a valid mask: {exc}") from exc


def _check_format(meta: dict[str, str], path: Path) -> None:
    fmt = meta.get("format", MASK_FORMAT)
    if fmt != MASK_FORMAT:
        raise UserError(f"{path} is a {fmt!r} file, not a mask file ({MASK_FORMAT!r})")


def _strip(meta: dict[str, str]) -> dict[str, str]:
    return {k: v for k, v in meta.items() if k not in ("format", "mode")}


def load_mask(path: str | os.PathLike, expect_shape: EncoderShape | None = None) -> Mask:
    """Load a single-mask file written by :func:`save_mask` (True = keep).

    UserError when the file is missing, not a mask, lacks ``heads``/``ffn``, is a per-task
    file, or does not fit ``expect_shape``.
    """
    path = Path(path)
    tensors, meta = read_safetensors(path, "mask")
    _check_format(meta, path)
    if meta.get("mode") == PER_TASK_MODE:
        raise UserError(
            f"{path} is a per-task mask file (tasks {meta.get('tasks', '?')}); load it with "
            "load_mask_file, or aggregate it into one mask first"
        )
    mask = _mask_from(tensors, "heads", "ffn", _strip(meta), path)
    if expect_shape is not None:
        mask.check_shape(expect_shape)
    return mask


def _check_task_name(task: str) -> None:
    if not task or any(c in task for c in ", \t\n"):
        raise UserError(f"bad task name {task!r} for a per-task mask file (no commas or spaces)")


def save_task_masks(masks: dict[str, Mask], path: str | os.PathLike, meta: dict[str, str] | None = None) -> None:
    """Save one mask per task in one file: tensors ``heads.<task>``, ``ffn.<task>`` (uint8).

    Metadata: ``meta`` plus ``mode="per-task"``, ``tasks="a,b"`` and each task's own meta
    as JSON under ``meta.<task>``. All masks must have the same shape. Atomic write.
    """
    if not masks:
        raise UserError("save_task_masks needs at least one task mask")
    first = next(iter(masks.values()))
    tensors: dict[str, torch.Tensor] = {}
    file_meta = {str(k): str(v) for k, v in (meta or {}).items()}
    for task, mask in masks.items():
        _check_task_name(task)
        first._check_same(mask)
        tensors[f"heads.{task}"] = mask.heads.to(torch.uint8)
        tensors[f"ffn.{task}"] = mask.ffn.to(torch.uint8)
        file_meta[f"meta.{task}"] = json.dumps(mask.meta.to_strings(), sort_keys=True)
    file_meta.setdefault("kind", "per-task")
    file_meta.setdefault("model", first.meta.model)
    file_meta.setdefault("sparsity", "")
    file_meta.update(format=MASK_FORMAT, mode=PER_TASK_MODE, tasks=",".join(masks))
    write_safetensors(tensors, path, file_meta)


def _load_task_masks(tensors: dict[str, torch.Tensor], meta: dict[str, str], path: Path) -> dict[str, Mask]:
    tasks = [t for t in meta.get("tasks", "").split(",") if t]
    if not tasks:
        raise UserError(f"{path} is a per-task mask file without a 'tasks' metadata entry")
    out = {}
    for task in tasks:
        try:
            task_meta = json.loads(meta.get(f"meta.{task}", "{}"))
        except json.JSONDecodeError:
            raise UserError(f"{path}: metadata entry 'meta.{task}' is not valid JSON (corrupt mask file?)") from None
        out[task] = _mask_from(tensors, f"heads.{task}", f"ffn.{task}", task_meta, path)
    return out


def keeps_all_units(masks: Mask | dict[str, Mask]) -> bool:
    """True if a mask file's mask (or every task's mask of a per-task file) keeps every unit."""
    return all(m.keeps_all for m in (masks.values() if isinstance(masks, dict) else [masks]))


def load_mask_file(
    path: str | os.PathLike, expect_shape: EncoderShape | None = None
) -> Mask | dict[str, Mask]:
    """Load either kind of mask file: a :class:`Mask`, or ``{task: Mask}`` for per-task files."""
    path = Path(path)
    tensors, meta = read_safetensors(path, "mask")
    _check_format(meta, path)
    if meta.get("mode") != PER_TASK_MODE:
        return load_mask(path, expect_shape)
    masks = _load_task_masks(tensors, meta, path)
    if expect_shape is not None:
        for mask in masks.values():
            mask.check_shape(expect_shape)
    return masks
