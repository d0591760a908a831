"""Compacted encoders: the stock transformers model with each layer cut to the sizes its config records.

``CompactBertModel`` *is* a ``BertModel`` (same modules, same state-dict keys, same forward, SDPA
attention); only the sizes of the Linear layers differ, per layer (``config.kept_heads``,
``config.intermediate_sizes``, see :mod:`masks.compact_config`). Per layer ``l`` with ``h_l`` heads of
size ``d`` and ``I_l`` FFN neurons:

- Q, K, V: ``hidden -> h_l*d``; attention output projection: ``h_l*d -> hidden``. The attention code
  reshapes to ``(B, h_l, T, d)`` with ``-1`` for the head count, so it runs unchanged.
- ``h_l == 0``: the module holding Q/K/V (``attention.self`` in BERT, ``attention`` in DistilBERT) is
  replaced by :class:`SkippedAttention`; the output projection becomes ``Linear(0, hidden)``, which
  returns its bias. So the sublayer gives ``LayerNorm(bias + residual)``, as the masked model does.
- FFN up: ``hidden -> I_l`` (``2*I_l`` for a gated FFN); down: ``I_l -> hidden`` (``I_l == 0``: zero-width,
  the output is the bias).
- Families whose attention code reads its head count or ``H*d`` from an attribute (DeBERTa-v2, MPNet) get
  that attribute set per layer; MPNet's relative position bias ``[B, H, T, T]``, computed once for all
  layers, is cut to each layer's kept heads by a forward pre-hook on the attention module.

Module paths come from :data:`masks.arch.ARCH_SPECS`, keyed by the base model type. Importing this
module imports the transformers model code (seconds); :mod:`masks.auto_classes` does it lazily.
"""

from __future__ import annotations

import warnings

import torch
from torch import nn
from transformers import (
    BertModel,
    DebertaV2Model,
    DistilBertModel,
    ElectraModel,
    ModernBertModel,
    MPNetModel,
    PreTrainedModel,
    RobertaModel,
    XLMRobertaModel,
)

from masks.arch import ARCH_SPECS, ArchSpec
from masks.compact_config import (
    CompactBertConfig,
    CompactDebertaV2Config,
    CompactDistilBertConfig,
    CompactElectraConfig,
    CompactFields,
    CompactModernBertConfig,
    CompactMPNetConfig,
    CompactRobertaConfig,
    CompactXLMRobertaConfig,
)


class SkippedAttention(nn.Module):
    """Stands in for the attention of a layer whose heads were all pruned: no Q/K/V, no attention.

    The context (what the output projection reads) is ``(B, T, 0)``. When the architecture keeps the
    output projection inside this module (DistilBERT's ``out_lin``), it is held under the same name,
    so the state-dict keys do not change, and applied here: the result is its bias.
    """

    def __init__(self, out_proj_name: str | None = None, out_proj: nn.Linear | None = None) -> None:
        super().__init__()
        self.out_proj_name = out_proj_name
        if out_proj_name is not None:
            self.add_module(out_proj_name, out_proj)

    def forward(self, hidden_states: torch.Tensor, *args, **kwargs) -> tuple[torch.Tensor, None]:
        context = hidden_states[..., :0]  # (B, T, 0)
        if self.out_proj_name is not None:
            context = getattr(self, self.out_proj_name)(context)  # (B, T, hidden) = bias
        return context, None  # (output, attention weights) like the module it replaces


def _linear_like(old: nn.Linear, in_features: int, out_features: int) -> nn.Linear:
    """A new Linear of the given size on ``old``'s device and dtype, with a bias iff ``old`` has one."""
    with warnings.catch_warnings():  # zero-width layers: "Initializing zero-element tensors is a no-op"
        warnings.filterwarnings("ignore", message="Initializing zero-element tensors")
        return nn.Linear(in_features, out_features, bias=old.bias is not None,
                         device=old.weight.device, dtype=old.weight.dtype)


def _resize(layer: nn.Module, path: str, *, in_features: int | None = None, out_features: int | None = None) -> None:
    old = layer.get_submodule(path)
    new = _linear_like(old, old.in_features if in_features is None else in_features,
                       old.out_features if out_features is None else out_features)
    layer.set_submodule(path, new)


def _skip_attention(layer: nn.Module, spec: ArchSpec) -> None:
    """Replace the module holding Q/K/V by :class:`SkippedAttention`; the output projection reads width 0."""
    core = spec.q.rpartition(".")[0]  # "attention.self" (BERT-like) or "attention" (DistilBERT)
    out_proj = layer.get_submodule(spec.attn_out)
    zero_in = _linear_like(out_proj, 0, out_proj.out_features)
    if spec.attn_out.startswith(core + "."):  # output projection inside the replaced module
        name = spec.attn_out[len(core) + 1:]
        if "." in name:
            raise ValueError(f"cannot skip attention: output projection {spec.attn_out!r} is nested below {core!r}")
        layer.set_submodule(core, SkippedAttention(name, zero_in))
    else:
        layer.set_submodule(core, SkippedAttention())
        layer.set_submodule(spec.attn_out, zero_in)


class HeadBiasSlice:
    """Forward pre-hook of an attention module: keeps the kept heads of a per-head bias argument
    (``[B, H, T, T]`` -> ``[B, h_l, T, T]``), given by name or at a position (:attr:`ArchSpec.head_bias_arg`)."""

    def __init__(self, name: str, position: int, heads: list[int]) -> None:
        self.name, self.position, self.heads = name, position, list(heads)  # a list: models are built on "meta"

    def _cut(self, bias):
        if bias is None:
            return None
        return bias.index_select(1, torch.tensor(self.heads, dtype=torch.long, device=bias.device))

    def __call__(self, module: nn.Module, args: tuple, kwargs: dict) -> tuple[tuple, dict]:
        if self.name in kwargs:
            kwargs = {**kwargs, self.name: self._cut(kwargs[self.name])}
        elif len(args) > self.position:
            args = (*args[:self.position], self._cut(args[self.position]), *args[self.position + 1:])
        return args, kwargs


def _cut_heads(layer: nn.Module, spec: ArchSpec, heads: list[int], head_dim: int, num_heads: int) -> None:
    """Cut one layer's attention to ``heads`` (at least one): Q/K/V rows, output columns, head attributes."""
    width = len(heads) * head_dim
    for path, parts in spec.row_projections():
        if _has(layer, path):  # optional projections (DeBERTa's pos_*_proj) may be absent
            _resize(layer, path, out_features=parts * width)
    _resize(layer, spec.attn_out, in_features=width)
    for attrs, value in ((spec.head_count_attrs, len(heads)), (spec.head_width_attrs, width)):
        for attr in attrs:
            owner, _, name = attr.rpartition(".")
            setattr(layer.get_submodule(owner), name, value)
    if spec.head_bias_arg is not None and len(heads) < num_heads:
        core = layer.get_submodule(spec.q.rpartition(".")[0])
        core.register_forward_pre_hook(HeadBiasSlice(*spec.head_bias_arg, heads), with_kwargs=True)


def _has(layer: nn.Module, path: str) -> bool:
    try:
        layer.get_submodule(path)
    except AttributeError:
        return False
    return True


def resize_layers(model: PreTrainedModel, config: CompactFields) -> None:
    """Cut every layer of ``model`` (a full-size base encoder) to the sizes recorded in ``config``."""
    spec = ARCH_SPECS[config.base_model_type]
    layers = model.get_submodule(spec.layers)
    head_dim = config.head_dim
    for index, layer in enumerate(layers):
        heads = config.kept_heads[index] if config.kept_heads is not None else None
        if heads is None and config.head_size is not None:
            heads = list(range(config.num_attention_heads))  # built with one head: give it all of them
        if heads is not None:
            if not heads:
                _skip_attention(layer, spec)
            else:
                _cut_heads(layer, spec, list(heads), head_dim, config.num_attention_heads)
        attention = layer.get_submodule(spec.q.rpartition(".")[0])  # reshapes to (B, T, -1, d)
        if config.head_size is not None and not isinstance(attention, SkippedAttention):
            attention.attention_head_size = head_dim
            attention.scaling = head_dim ** -0.5
        if config.intermediate_sizes is not None:
            size = config.intermediate_sizes[index]
            _resize(layer, spec.ffn_up, out_features=spec.ffn_up_parts * size)
            _resize(layer, spec.ffn_down, in_features=size)


class _CompactMixin:
    """``__init__``: build the full-size base encoder, cut its layers, then initialise what is new.

    With a ``head_size`` the hidden size need not be a multiple of the head count, which the
    stock attention refuses to build: the base encoder is then built with one head per layer (Q/K/V
    ``hidden -> hidden``, resized at once) and every attention module gets the recorded head size.
    """

    def __init__(self, config: CompactFields, *args, **kwargs) -> None:
        heads = config.num_attention_heads
        if config.head_size is not None:
            config.num_attention_heads = 1  # the stock constructor's divisibility check; restored below
        try:
            super().__init__(config, *args, **kwargs)
        finally:
            config.num_attention_heads = heads
        resize_layers(self, config)
        self.post_init()  # initialises only the new (resized) modules; on the meta device a no-op


class CompactBertModel(_CompactMixin, BertModel):
    config_class = CompactBertConfig


class CompactRobertaModel(_CompactMixin, RobertaModel):
    config_class = CompactRobertaConfig


class CompactElectraModel(_CompactMixin, ElectraModel):
    config_class = CompactElectraConfig


class CompactDistilBertModel(_CompactMixin, DistilBertModel):
    config_class = CompactDistilBertConfig


class CompactXLMRobertaModel(_CompactMixin, XLMRobertaModel):
    config_class = CompactXLMRobertaConfig


class CompactDebertaV2Model(_CompactMixin, DebertaV2Model):
    config_class = CompactDebertaV2Config


class CompactModernBertModel(_CompactMixin, ModernBertModel):
    config_class = CompactModernBertConfig


class CompactMPNetModel(_CompactMixin, MPNetModel):
    config_class = CompactMPNetConfig


# compacted model_type -> model class
COMPACT_MODELS: dict[str, type[PreTrainedModel]] = {
    cls.config_class.model_type: cls
    for cls in (CompactBertModel, CompactRobertaModel, CompactElectraModel, CompactDistilBertModel,
                CompactXLMRobertaModel, CompactDebertaV2Model, CompactModernBertModel, CompactMPNetModel)
}
