"""Architecture facts as data: where the prunable modules live in each encoder family.

Every function here takes the Hugging Face *base encoder* (``AutoModel.from_pretrained``:
``BertModel``, ``RobertaModel``, ``DebertaV2Model``, ``ModernBertModel``, ...). A task model that
wraps one (``BertForSequenceClassification``) is accepted too: its ``base_model`` is used.

Module paths are relative: ``layers`` and ``pooler`` are relative to the base encoder, all
others are relative to one encoder layer. Sizes come from the model config, keyed by ``model_type``.
What each family supports (gates, importance, compaction, per-weight masks) is :data:`ARCH_SPECS`
plus :data:`LAYOUTS`; ``docs/tickets.md`` has the table.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, Mapping

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

    Families that differ from BERT say how:

    - ``fused_qkv``: Q, K and V are one Linear (``q == k == v``) whose rows are ``[3, H, d]`` (ModernBERT);
    - ``ffn_up_parts``: the rows of ``ffn_up`` are ``[parts, I]``; a neuron owns one row of each part
      (2 for a gated FFN such as ModernBERT's GeGLU: input half and gate half);
    - ``extra_head_rows``: more projections with rows ``[H, d]``, where a layer has them (DeBERTa's
      ``pos_key_proj`` / ``pos_query_proj`` when ``share_att_key`` is off);
    - ``head_count_attrs`` / ``head_width_attrs``: attributes (relative to a layer) holding the number of
      heads / ``H*d`` that the attention code reads, set per layer in a compacted model;
    - ``head_bias_arg``: ``(name, position)`` of an argument of the attention module (the parent of ``q``)
      holding a per-head bias ``[B, H, T, T]`` computed once for all layers (MPNet's relative position
      bias), cut to the kept heads in a compacted model;
    - ``layout``: how the L layers map to modules (:data:`LAYOUTS`; ALBERT shares one set of weights);
    - ``positions`` / ``position_offset`` / ``positions_if``: the longest input is
      ``config[positions] - position_offset`` tokens (RoBERTa-style position ids start after the
      padding index), only when the config flag ``positions_if`` is true (DeBERTa: absolute position
      embeddings are optional); ``positions`` None: no limit from the architecture.
    """

    layers: str  # ModuleList of encoder layers, relative to the base encoder
    q: str  # Linear hidden -> H*d
    k: str  # Linear hidden -> H*d
    v: str  # Linear hidden -> H*d
    attn_out: str  # Linear H*d -> hidden (gated on its input)
    ffn_up: str  # Linear hidden -> I (times ffn_up_parts)
    ffn_down: str  # Linear I -> hidden (gated on its input)
    num_layers_key: str  # config attribute holding L
    num_heads_key: str  # config attribute holding H
    hidden_key: str  # config attribute holding the hidden size
    intermediate_key: str  # config attribute holding I
    pooler: str | None = None  # Linear hidden -> hidden of the pooler, relative to the base encoder
    fused_qkv: bool = False
    ffn_up_parts: int = 1
    extra_head_rows: tuple[str, ...] = ()
    head_count_attrs: tuple[str, ...] = ()
    head_width_attrs: tuple[str, ...] = ()
    head_bias_arg: tuple[str, int] | None = None
    layout: str = "stacked"
    positions: str | None = "max_position_embeddings"
    position_offset: int = 0
    positions_if: str | None = None

    def path(self, role: str) -> str:
        """Module path (relative to one layer) of ``role`` in :data:`LAYER_ROLES`."""
        if role not in LAYER_ROLES:
            raise UserError(f"unknown module role {role!r}; valid roles: {', '.join(LAYER_ROLES)}")
        return getattr(self, role)

    def row_projections(self) -> tuple[tuple[str, int], ...]:
        """``(path, parts)`` of every distinct Linear whose rows belong to heads (``[parts, H, d]``),
        optional ones (``extra_head_rows``) included."""
        if self.fused_qkv:
            return ((self.q, 3), *((p, 1) for p in self.extra_head_rows))
        return tuple((p, 1) for p in (self.q, self.k, self.v, *self.extra_head_rows))

    @property
    def shares_weights(self) -> bool:
        """True when several layers use the same modules (ALBERT): no compaction, no per-weight masks."""
        return LAYOUTS[self.layout].shares_weights


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

_ROBERTA = replace(_BERT_LIKE, position_offset=2)  # position ids start at padding_idx + 1

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

_DEBERTA_V2 = replace(  # DeBERTa-v2 and -v3 (model_type "deberta-v2"): disentangled attention, no pooler
    _BERT_LIKE,
    q="attention.self.query_proj",
    k="attention.self.key_proj",
    v="attention.self.value_proj",
    pooler=None,
    extra_head_rows=("attention.self.pos_key_proj", "attention.self.pos_query_proj"),
    head_count_attrs=("attention.self.num_attention_heads",),
    head_width_attrs=("attention.self.all_head_size",),
    positions_if="position_biased_input",  # relative positions only (v3): no length limit from the model
)

_MODERNBERT = replace(  # fused Wqkv, GeGLU FFN, alternating local / global attention (per layer, untouched)
    _BERT_LIKE,
    layers="layers",
    q="attn.Wqkv",
    k="attn.Wqkv",
    v="attn.Wqkv",
    attn_out="attn.Wo",
    ffn_up="mlp.Wi",
    ffn_down="mlp.Wo",
    pooler=None,
    fused_qkv=True,
    ffn_up_parts=2,
)

_MPNET = replace(
    _BERT_LIKE,
    q="attention.attn.q",
    k="attention.attn.k",
    v="attention.attn.v",
    attn_out="attention.attn.o",
    head_count_attrs=("attention.attn.num_attention_heads",),
    head_width_attrs=("attention.attn.all_head_size",),
    head_bias_arg=("position_bias", 2),  # MPNetSelfAttention(hidden_states, attention_mask, position_bias)
    position_offset=2,
)

_ALBERT = replace(  # one set of layer weights shared by every layer (LAYOUTS["albert"])
    _BERT_LIKE,
    layers="encoder.albert_layer_groups",
    q="attention.query",
    k="attention.key",
    v="attention.value",
    attn_out="attention.dense",
    ffn_up="ffn",
    ffn_down="ffn_output",
    pooler="pooler",
    layout="albert",
)

# model_type -> ArchSpec (read-only; MiniLM checkpoints report model_type "bert").
ARCH_SPECS: Mapping[str, ArchSpec] = MappingProxyType(
    {
        "bert": _BERT_LIKE,
        "roberta": _ROBERTA,
        "xlm-roberta": _ROBERTA,
        "electra": _ELECTRA,
        "distilbert": _DISTILBERT,
        "deberta-v2": _DEBERTA_V2,
        "modernbert": _MODERNBERT,
        "mpnet": _MPNET,
        "albert": _ALBERT,
    }
)


# ---------------------------------------------------------------- layouts: layer index -> module

@dataclass(frozen=True)
class Layout:
    """How the L layers of a family map to modules.

    ``num_layers(config, spec)``: L, the number of layer applications a forward pass makes (what masks
    index); ``modules(base, spec, config)``: the module of each, in forward order (the same module may
    come several times when ``shares_weights``).
    """

    num_layers: Callable[[Any, ArchSpec], int]
    modules: Callable[[Any, ArchSpec, Any], list]
    shares_weights: bool = False


def _stacked_count(config: Any, spec: ArchSpec) -> int:
    return int(getattr(config, spec.num_layers_key))


def _stacked_modules(base: Any, spec: ArchSpec, config: Any) -> list:
    return list(base.get_submodule(spec.layers))


def _albert_count(config: Any, spec: ArchSpec) -> int:
    return int(config.num_hidden_layers) * int(config.inner_group_num)


def _albert_modules(base: Any, spec: ArchSpec, config: Any) -> list:
    """AlbertTransformer's loop: layer ``i`` runs group ``int(i / (L / G))``, whose inner layers run in order."""
    groups = base.get_submodule(spec.layers)  # [G] AlbertLayerGroup
    L, G = int(config.num_hidden_layers), int(config.num_hidden_groups)
    return [inner for i in range(L) for inner in groups[int(i / (L / G))].albert_layers]


LAYOUTS: Mapping[str, Layout] = MappingProxyType(
    {
        "stacked": Layout(_stacked_count, _stacked_modules),
        "albert": Layout(_albert_count, _albert_modules, shares_weights=True),
    }
)


# ---------------------------------------------------------------- shapes

@dataclass(frozen=True)
class EncoderShape:
    """Sizes of an encoder: L layers, H heads of size d, hidden size, FFN size I.

    ``head_params`` / ``neuron_params``: prunable parameters of one head / one FFN neuron where they
    differ from BERT's ``4*d*hidden + 3*d`` / ``2*hidden + 1`` (a family without biases, a gated FFN,
    extra per-head projections); None means BERT's.
    """

    num_layers: int
    num_heads: int
    head_dim: int
    hidden: int
    intermediate: int
    head_params: int | None = None
    neuron_params: int | None = None

    @property
    def params_per_head(self) -> int:
        """Q/K/V rows (and biases) plus output-projection columns of one head."""
        return self.head_params if self.head_params is not None else 4 * self.head_dim * self.hidden + 3 * self.head_dim

    @property
    def params_per_neuron(self) -> int:
        """FFN up row(s) (and biases) plus the down-projection column of one neuron."""
        return self.neuron_params if self.neuron_params is not None else 2 * self.hidden + 1

    def describe(self) -> str:
        """Canonical string, e.g. ``"L=6,H=12,d=32,hidden=384,I=1536"`` (used in metadata); a family whose
        units have other parameter counts adds ``head_params=..`` / ``neuron_params=..``."""
        text = (
            f"L={self.num_layers},H={self.num_heads},d={self.head_dim},"
            f"hidden={self.hidden},I={self.intermediate}"
        )
        for name in ("head_params", "neuron_params"):
            if getattr(self, name) is not None:
                text += f",{name}={getattr(self, name)}"
        return text

    @classmethod
    def parse(cls, text: str) -> "EncoderShape":
        """Inverse of :meth:`describe`."""
        keys = {"L": "num_layers", "H": "num_heads", "d": "head_dim", "hidden": "hidden", "I": "intermediate",
                "head_params": "head_params", "neuron_params": "neuron_params"}
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


def check_unshared(encoder: nn.Module, what: str) -> ArchSpec:
    """The encoder's :class:`ArchSpec`; UserError when its layers share weights (ALBERT), which ``what``
    (compaction, per-weight masks) cannot handle."""
    spec = arch_for(encoder)
    check_unshared_type(_base(encoder).config.model_type, what)
    return spec


def check_unshared_type(model_type: str | None, what: str) -> None:
    """UserError when ``model_type``'s layers share weights (ALBERT); unknown types pass (checked later)."""
    spec = ARCH_SPECS.get(model_type)  # type: ignore[arg-type]
    if spec is not None and spec.shares_weights:
        raise UserError(f"{what}: not supported for model_type {model_type!r} (its layers share one set of "
                        "weights; gating and importance scoring work, compaction and per-weight masks do not)")


def shape_of(encoder: nn.Module) -> EncoderShape:
    """Sizes read from the encoder's config (never hard-coded); per-unit parameter counts from its modules. The
    head size is ``hidden / H`` unless the config records ``head_size`` (an extracted
    sub-architecture, :mod:`masks.extract`)."""
    spec = arch_for(encoder)
    config = _base(encoder).config
    heads, hidden, inter = (
        int(getattr(config, key)) for key in (spec.num_heads_key, spec.hidden_key, spec.intermediate_key)
    )
    layers = LAYOUTS[spec.layout].num_layers(config, spec)
    head_dim = getattr(config, "head_size", None) or getattr(config, "attention_head_size", None)  # extracted / DeBERTa
    if head_dim is None and hidden % heads != 0:
        raise UserError(f"hidden size {hidden} is not divisible by the number of heads {heads}")
    shape = EncoderShape(layers, heads, head_dim or hidden // heads, hidden, inter)
    head_params, neuron_params = _unit_params(_layers(encoder, spec)[0], spec, shape.head_dim)
    return replace(shape, head_params=None if head_params == shape.params_per_head else head_params,
                   neuron_params=None if neuron_params == shape.params_per_neuron else neuron_params)


def _linear_params(module: Any, rows: int) -> int:
    """Parameters of ``rows`` output rows of a Linear: weights and bias entries."""
    return rows * (module.in_features + (module.bias is not None))


def _unit_params(layer: nn.Module, spec: ArchSpec, head_dim: int) -> tuple[int, int]:
    """(parameters of one head, of one FFN neuron) in ``layer``: the rows and columns compaction removes."""
    per_head = 0
    for path, parts in spec.row_projections():
        module = _optional(layer, path)
        if module is not None:
            per_head += _linear_params(module, parts * head_dim)
    per_head += head_dim * layer.get_submodule(spec.attn_out).out_features  # output-projection columns
    up, down = layer.get_submodule(spec.ffn_up), layer.get_submodule(spec.ffn_down)
    return per_head, _linear_params(up, spec.ffn_up_parts) + down.out_features


def _optional(layer: nn.Module, path: str) -> nn.Module | None:
    """The module at ``path`` in ``layer``, or None where this layer does not have it."""
    try:
        return layer.get_submodule(path)
    except AttributeError:
        return None


def _layers(encoder: nn.Module, spec: ArchSpec) -> list[nn.Module]:
    base = _base(encoder)
    try:
        return LAYOUTS[spec.layout].modules(base, spec, base.config)
    except AttributeError as exc:
        raise UserError(
            f"{type(base).__name__} has no module {spec.layers!r}; pass the base encoder "
            "returned by transformers.AutoModel.from_pretrained"
        ) from exc


def layer_modules(encoder: nn.Module) -> list[nn.Module]:
    """The L encoder layers, in forward order (the same module several times where layers share weights)."""
    spec = arch_for(encoder)
    layers = _layers(encoder, spec)
    expected = LAYOUTS[spec.layout].num_layers(_base(encoder).config, spec)
    if len(layers) != expected:
        raise UserError(f"{spec.layers!r} holds {len(layers)} layers but the config says {expected}")
    return layers


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


def max_input_length(config: Any) -> int | None:
    """The longest input (tokens, special tokens included) an encoder with ``config`` accepts, or None
    when its architecture sets no limit. Compacted configs answer for their base model type; a model type
    without a row in :data:`ARCH_SPECS` answers with its ``max_position_embeddings`` if it has one."""
    model_type = getattr(config, "base_model_type", None) or getattr(config, "model_type", None)
    spec = ARCH_SPECS.get(model_type)
    if spec is None:
        value = getattr(config, "max_position_embeddings", None)
        return int(value) if isinstance(value, int) and value > 0 else None
    if spec.positions is None or (spec.positions_if is not None and not getattr(config, spec.positions_if, False)):
        return None
    value = getattr(config, spec.positions, None)
    return int(value) - spec.position_offset if isinstance(value, int) and value > 0 else None


def check_tensor_shapes(what: str, owner: object, want: Mapping[str, tuple[int, ...]], shape: EncoderShape) -> None:
    """UserError unless every tensor attribute ``name`` of ``owner`` has the shape ``want[name]`` that an encoder of
    ``shape`` needs (``what``: how the message names the owner, e.g. ``importance``)."""
    for name, dims in want.items():
        have = tuple(getattr(owner, name).shape)
        if have != dims:
            raise UserError(f"{what}: {name} has shape {have}, but the model ({shape.describe()}) needs {dims}")
