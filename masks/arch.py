"""Architecture facts as data: where the prunable modules live in each encoder family.

Every function here takes the Hugging Face *base encoder* (``AutoModel.from_pretrained``:
``BertModel``, ``RobertaModel``, ``ElectraModel``, ``DistilBertModel``). A task model that
wraps one (``BertForSequenceClassification``) is accepted too: its ``base_model`` is used.

Module paths are relative: ``layers`` and ``pooler`` are relative to the base encoder, all
others are relative to one encoder layer. Sizes come from the model config, keyed by ``model_type``.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from types import MappingProxyType
from typing import TYPE_CHECKING, Mapping

from basics.errors import UserError

if TYPE_CHECKING:  # the tables are read by the option parser: no torch import at run time here
    from torch import nn


@dataclass(frozen=True)
class ArchSpec:
    """Module paths and config keys of one encoder family.

    The attention output projection ``attn_out`` takes ``[B, T, H*d]`` (heads concatenated,
    head ``h`` in columns ``h*d:(h+1)*d``); the FFN down projection ``ffn_down`` takes
    ``[B, T, I]``. Q/K/V and ``ffn_up`` are kept for compaction (rows = output units).
    ``pooler`` is the Linear of the encoder's pooler (``tanh(W h_cls)``), relative to the base
    encoder, or None for a family without one (ELECTRA and DistilBERT in transformers v5).
    """

    layers: str  # ModuleList of encoder layers, relative to the base encoder
    q: str  # Linear hidden -> H*d
    k: str  # Linear hidden -> H*d
    v: str  # Linear hidden -> H*d
    attn_out: str  # Linear H*d -> hidden (gated on its input)
    ffn_up: str  # Linear hidden -> I
    ffn_down: str  # Linear I -> hidden (gated on its input)
    num_layers_key: str  # config attribute holding L
    num_heads_key: str  # config attribute holding H
    hidden_key: str  # config attribute holding the hidden size
    intermediate_key: str  # config attribute holding I
    pooler: str | None = None  # Linear hidden -> hidden of the pooler, relative to the base encoder

    def path(self, role: str) -> str:
        """Module path (relative to one layer) of ``role`` in :data:`LAYER_ROLES`."""
        if role not in LAYER_ROLES:
            raise UserError(f"unknown module role {role!r}; valid roles: {', '.join(LAYER_ROLES)}")
        return getattr(self, role)


LAYER_ROLES: tuple[str, ...] = ("q", "k", "v", "attn_out", "ffn_up", "ffn_down")
# weight matrices a per-weight (unstructured) mask may cover: every layer role, the pooler, the embeddings
WEIGHT_ROLES: tuple[str, ...] = (*LAYER_ROLES, "pooler", "embeddings")
DEFAULT_WEIGHT_ROLES: tuple[str, ...] = (*LAYER_ROLES, "pooler")  # Chen et al. 2020: embeddings not pruned

_BERT_LIKE = ArchSpec(
    layers="encoder.layer",
    q="attention.self.query",
    k="attention.self.key",
    v="attention.self.value",
    attn_out="attention.output.dense",
    ffn_up="intermediate.dense",
    ffn_down="output.dense",
    num_layers_key="num_hidden_layers",
    num_heads_key="num_attention_heads",
    hidden_key="hidden_size",
    intermediate_key="intermediate_size",
    pooler="pooler.dense",
)

_ELECTRA = replace(_BERT_LIKE, pooler=None)  # ElectraModel has no pooler

_DISTILBERT = ArchSpec(
    layers="transformer.layer",
    q="attention.q_lin",
    k="attention.k_lin",
    v="attention.v_lin",
    attn_out="attention.out_lin",
    ffn_up="ffn.lin1",
    ffn_down="ffn.lin2",
    num_layers_key="n_layers",
    num_heads_key="n_heads",
    hidden_key="dim",
    intermediate_key="hidden_dim",
)

# model_type -> ArchSpec (read-only; MiniLM checkpoints report model_type "bert").
ARCH_SPECS: Mapping[str, ArchSpec] = MappingProxyType(
    {
        "bert": _BERT_LIKE,
        "roberta": _BERT_LIKE,
        "electra": _ELECTRA,
        "distilbert": _DISTILBERT,
    }
)


@dataclass(frozen=True)
class EncoderShape:
    """Sizes of an encoder: L layers, H heads of size d, hidden size, FFN size I."""

    num_layers: int
    num_heads: int
    head_dim: int
    hidden: int
    intermediate: int

    def describe(self) -> str:
        """Canonical string, e.g. ``"L=6,H=12,d=32,hidden=384,I=1536"`` (used in metadata)."""
        return (
            f"L={self.num_layers},H={self.num_heads},d={self.head_dim},"
            f"hidden={self.hidden},I={self.intermediate}"
        )

    @classmethod
    def parse(cls, text: str) -> "EncoderShape":
        """Inverse of :meth:`describe`."""
        keys = {"L": "num_layers", "H": "num_heads", "d": "head_dim", "hidden": "hidden", "I": "intermediate"}
        try:
            items = dict(part.split("=", 1) for part in text.split(","))
            return cls(**{keys[k.strip()]: int(v) for k, v in items.items()})
        except (ValueError, KeyError, TypeError) as exc:
            raise UserError(
                f"bad encoder shape string {text!r}; expected e.g. 'L=6,H=12,d=32,hidden=384,I=1536'"
            ) from exc


def _base(encoder: nn.Module) -> nn.Module:
    """The base encoder of ``encoder`` (itself for a base model)."""
    base = getattr(encoder, "base_model", encoder)
    return base if hasattr(base, "get_submodule") else encoder


def arch_for(encoder: nn.Module) -> ArchSpec:
    """The :class:`ArchSpec` for ``encoder.config.model_type``; UserError if unsupported."""
    config = getattr(_base(encoder), "config", None)
    model_type = getattr(config, "model_type", None)
    if model_type not in ARCH_SPECS:
        raise UserError(
            f"unsupported model_type {model_type!r} ({type(encoder).__name__}); "
            f"supported: {', '.join(sorted(ARCH_SPECS))}"
        )
    return ARCH_SPECS[model_type]


def shape_of(encoder: nn.Module) -> EncoderShape:
    """Sizes read from the encoder's config (never hard-coded)."""
    spec = arch_for(encoder)
    config = _base(encoder).config
    layers, heads, hidden, inter = (
        int(getattr(config, key))
        for key in (spec.num_layers_key, spec.num_heads_key, spec.hidden_key, spec.intermediate_key)
    )
    if hidden % heads != 0:
        raise UserError(f"hidden size {hidden} is not divisible by the number of heads {heads}")
    return EncoderShape(layers, heads, hidden // heads, hidden, inter)


def layer_modules(encoder: nn.Module) -> list[nn.Module]:
    """The L encoder layers, in order."""
    spec = arch_for(encoder)
    base = _base(encoder)
    try:
        layers = base.get_submodule(spec.layers)
    except AttributeError as exc:
        raise UserError(
            f"{type(base).__name__} has no module {spec.layers!r}; pass the base encoder "
            "returned by transformers.AutoModel.from_pretrained"
        ) from exc
    expected = shape_of(encoder).num_layers
    if len(layers) != expected:
        raise UserError(f"{spec.layers!r} holds {len(layers)} layers but the config says {expected}")
    return list(layers)


def role_modules(encoder: nn.Module, role: str) -> list[nn.Linear]:
    """The ``role`` Linear of every layer (``role`` in q, k, v, attn_out, ffn_up, ffn_down)."""
    path = arch_for(encoder).path(role)
    return [layer.get_submodule(path) for layer in layer_modules(encoder)]


def attn_out_modules(encoder: nn.Module) -> list[nn.Linear]:
    """Attention output projections, one per layer; input ``[B, T, H*d]``."""
    return role_modules(encoder, "attn_out")


def ffn_down_modules(encoder: nn.Module) -> list[nn.Linear]:
    """FFN down projections, one per layer; input ``[B, T, I]``."""
    return role_modules(encoder, "ffn_down")
