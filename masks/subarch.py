"""Sub-architectures of a teacher encoder: the sizes (D, A, H, I) and the units that realise them.

A :class:`SubArch` is Bort's four architectural parameters: depth D (layers), attention heads A per
layer, hidden size H, FFN size I per layer. The **head size stays the teacher's** d (32 for MiniLM):
the extracted heads keep their query/key/value weights, so H need not equal A × d; the attention width
is A × d and the hidden size H is independent of it (the extracted config records
``head_size``, :mod:`masks.compact_config`).

A :class:`Selection` says which of the teacher's units realise a SubArch (teacher indices, ascending):
the D layers, the A heads and I neurons of each kept layer, the H hidden dimensions. :func:`select`
picks them from :class:`masks.subarch_importance.SubarchScores`: the A best heads and I best neurons of
each kept layer, the H best hidden dimensions, and the D layers by a :data:`LAYER_CHOICES` rule
(``importance``: the D most important; ``even``: evenly spaced, the baseline).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

import torch

from basics.errors import UserError
from basics.registry import Registry
from masks.arch import EncoderShape
from masks.mask import Mask
from masks.subarch_importance import SubarchScores

_NAME = re.compile(r"^D(\d+)-A(\d+)-H(\d+)-I(\d+)$")


@dataclass(frozen=True, order=True)
class SubArch:
    """Depth D, heads per layer A, hidden size H, FFN size per layer I."""

    depth: int
    heads: int
    hidden: int
    ffn: int

    @property
    def name(self) -> str:
        """``D4-A8-H256-I768`` (also a directory name)."""
        return f"D{self.depth}-A{self.heads}-H{self.hidden}-I{self.ffn}"

    @classmethod
    def parse(cls, text: str) -> "SubArch":
        match = _NAME.match(text.strip())
        if match is None:
            raise UserError(f"bad sub-architecture {text!r}; expected e.g. D4-A8-H256-I768")
        return cls(*(int(g) for g in match.groups()))

    @classmethod
    def of(cls, shape: EncoderShape) -> "SubArch":
        """The teacher's own sizes (the full-size sub-architecture)."""
        return cls(shape.num_layers, shape.num_heads, shape.hidden, shape.intermediate)

    def check(self, shape: EncoderShape) -> "SubArch":
        """UserError unless 1 <= each size <= the teacher's."""
        limits = SubArch.of(shape)
        for name in ("depth", "heads", "hidden", "ffn"):
            value, top = getattr(self, name), getattr(limits, name)
            if not 1 <= value <= top:
                raise UserError(f"sub-architecture {self.name}: {name} {value} is outside 1..{top} "
                                f"(the teacher is {limits.name})")
        return self


@dataclass(frozen=True)
class Selection:
    """The teacher's units an extraction keeps (teacher indices, ascending)."""

    layers: tuple[int, ...]  # [D]
    heads: tuple[tuple[int, ...], ...]  # [D][A]: per kept layer
    neurons: tuple[tuple[int, ...], ...]  # [D][I]: per kept layer
    dims: tuple[int, ...]  # [H]: hidden dimensions

    def __post_init__(self) -> None:
        if not (len(self.layers) == len(self.heads) == len(self.neurons)):
            raise ValueError("a selection needs one head list and one neuron list per kept layer")
        for name, items in (("layers", self.layers), ("dims", self.dims), *(("heads", h) for h in self.heads),
                            *(("neurons", n) for n in self.neurons)):
            if list(items) != sorted(set(items)):
                raise ValueError(f"selection {name} must be ascending and distinct, got {list(items)[:10]}...")

    @property
    def arch(self) -> SubArch:
        """The sizes; A and I are those of the first layer (every layer has the same in a :func:`select`)."""
        return SubArch(len(self.layers), len(self.heads[0]) if self.heads else 0, len(self.dims),
                       len(self.neurons[0]) if self.neurons else 0)

    @property
    def uniform(self) -> bool:
        """Whether every kept layer keeps as many heads, and as many neurons, as the others."""
        return len({len(h) for h in self.heads}) <= 1 and len({len(n) for n in self.neurons}) <= 1

    @property
    def name(self) -> str:
        """:attr:`arch`'s name when :attr:`uniform`, else the per-layer counts: ``D6-A5/7/6-H384-I1234/1105/829``."""
        if self.uniform:
            return self.arch.name
        heads, neurons = "/".join(str(len(h)) for h in self.heads), "/".join(str(len(n)) for n in self.neurons)
        return f"D{len(self.layers)}-A{heads}-H{len(self.dims)}-I{neurons}"

    @classmethod
    def of_mask(cls, mask: Mask, shape: EncoderShape) -> "Selection":
        """A structured ticket as a sub-architecture: every layer and hidden dimension of ``shape``, and in each
        layer the heads and FFN neurons ``mask`` keeps (its extraction equals the ticket compacted by
        :func:`masks.compact.compact_encoder`; ``tests/test_subarch_extract.py``)."""
        if tuple(mask.heads.shape) != (shape.num_layers, shape.num_heads) or \
                tuple(mask.ffn.shape) != (shape.num_layers, shape.intermediate):
            raise UserError(f"a mask with heads {tuple(mask.heads.shape)} and FFN {tuple(mask.ffn.shape)} does not "
                            f"fit the teacher ({shape.describe()})")
        heads, neurons = mask_units(mask)
        return cls(tuple(range(shape.num_layers)), heads, neurons, tuple(range(shape.hidden)))

    @classmethod
    def full(cls, shape: EncoderShape) -> "Selection":
        """Every unit of the teacher (extraction then gives the teacher itself)."""
        L = shape.num_layers
        return cls(tuple(range(L)), (tuple(range(shape.num_heads)),) * L, (tuple(range(shape.intermediate)),) * L,
                   tuple(range(shape.hidden)))

    def unit_mask(self, shape: EncoderShape) -> Mask:
        """The heads and FFN neurons kept, as a :class:`masks.mask.Mask` over the teacher (dropped layers: all
        pruned). With :mod:`masks.hidden_gates` on ``dims`` and :mod:`masks.layer_gates` on ``layers`` it gates
        the teacher into the extracted model."""
        heads = torch.zeros(shape.num_layers, shape.num_heads, dtype=torch.bool)
        ffn = torch.zeros(shape.num_layers, shape.intermediate, dtype=torch.bool)
        for layer, kept_heads, kept_neurons in zip(self.layers, self.heads, self.neurons, strict=True):
            heads[layer, list(kept_heads)] = True
            ffn[layer, list(kept_neurons)] = True
        return Mask(heads, ffn, {"shape": shape.describe(), "kind": "subarch"})

    def to_dict(self) -> dict[str, list]:
        return {"layers": list(self.layers), "heads": [list(h) for h in self.heads],
                "neurons": [list(n) for n in self.neurons], "dims": list(self.dims)}

    @classmethod
    def from_dict(cls, data: dict) -> "Selection":
        return cls(tuple(data["layers"]), tuple(tuple(h) for h in data["heads"]),
                   tuple(tuple(n) for n in data["neurons"]), tuple(data["dims"]))


def mask_units(mask: Mask) -> tuple[tuple[tuple[int, ...], ...], tuple[tuple[int, ...], ...]]:
    """``(heads, neurons)``: the indices ``mask`` keeps in each layer, ascending (a :class:`Selection`'s form)."""
    def kept(rows: torch.Tensor) -> tuple[tuple[int, ...], ...]:
        return tuple(tuple(int(i) for i in torch.nonzero(row).flatten()) for row in rows)

    return kept(mask.heads), kept(mask.ffn)


def top(scores: torch.Tensor, k: int) -> tuple[int, ...]:
    """Indices of the ``k`` highest ``scores`` (ties: lower index first), ascending."""
    order = sorted(range(len(scores)), key=lambda i: (-float(scores[i]), i))
    return tuple(sorted(order[:k]))


def even_layers(num_layers: int, depth: int) -> tuple[int, ...]:
    """``depth`` evenly spaced layers of ``num_layers``, the first and the last included (depth >= 2):
    ``round(i (L-1) / (D-1))``, halves rounded up. Depth 1 keeps the last layer."""
    if depth == 1:
        return (num_layers - 1,)
    return tuple(int(i * (num_layers - 1) / (depth - 1) + 0.5) for i in range(depth))


LAYER_CHOICES: Registry[Callable[[SubarchScores, int], tuple[int, ...]]] = Registry("layer choice")
LAYER_CHOICES.register("importance", lambda scores, depth: top(scores.layers, depth))
LAYER_CHOICES.register("even", lambda scores, depth: even_layers(len(scores.layers), depth))


def select(scores: SubarchScores, arch: SubArch, layers: str = "importance") -> Selection:
    """The units realising ``arch``: D layers by ``layers`` (:data:`LAYER_CHOICES`), then in each the A best
    heads and I best neurons, and the H best hidden dimensions."""
    shape = EncoderShape(len(scores.layers), scores.heads.shape[1], 0, len(scores.hidden), scores.ffn.shape[1])
    arch.check(shape)
    kept = LAYER_CHOICES.get(layers)(scores, arch.depth)
    return Selection(kept, tuple(top(scores.heads[layer], arch.heads) for layer in kept),
                     tuple(top(scores.ffn[layer], arch.ffn) for layer in kept), top(scores.hidden, arch.hidden))
