"""Extract a sub-architecture from a teacher encoder's weights: fewer layers, heads, FFN neurons, hidden dims.

Given a :class:`masks.subarch.Selection` (teacher indices), the extracted encoder is the teacher with

- only the kept layers, in their order (layer ``n`` of the result is teacher layer ``layers[n]``);
- in each, only the kept heads (rows of Q/K/V, columns of the output projection; head ``h`` owns rows
  ``h*d:(h+1)*d``, and the head size d stays the teacher's) and the kept FFN neurons (rows of FFN up,
  columns of FFN down), as in :mod:`masks.compact`;
- only the kept hidden dimensions ``dims`` in every tensor that reads or writes the residual stream
  (:mod:`masks.residual`): the columns of the embedding tables, the entries of every LayerNorm on the
  stream, the input columns of Q/K/V and FFN up, the output rows of the output projection and FFN down,
  both sides of the pooler (and ELECTRA's embedding projection rows).

Its output equals the teacher gated by :mod:`masks.layer_gates` (layers), :mod:`masks.gates` (heads and
neurons, :meth:`Selection.unit_mask`) and :mod:`masks.hidden_gates` (dims), restricted to ``dims``; with
every unit kept it *is* the teacher (``tests/test_subarch_extract.py``).

The result is a compacted encoder (``Compact<Base>Model``, :mod:`masks.compact_model`) whose config has
the new depth and hidden size, ``kept_heads`` (teacher head indices), ``intermediate_sizes`` and
``head_size``; saved with ``save_pretrained`` it reloads with ``AutoModel.from_pretrained``
after :func:`masks.auto_classes.register_auto_classes`.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from types import MappingProxyType
from typing import Mapping

import torch
from torch import nn

from basics.errors import UserError
from masks.arch import arch_for, shape_of
from masks.auto_classes import compact_model_class
from masks.compact import head_rows
from masks.compact_config import compact_config, is_compact
from masks.residual import residual_spec
from masks.subarch import Selection


def _take(tensor: torch.Tensor, rows: torch.Tensor | None = None, cols: torch.Tensor | None = None) -> torch.Tensor:
    """``tensor`` with only ``rows`` (dim 0) and ``cols`` (dim 1) kept (None: all)."""
    if rows is not None:
        tensor = tensor.index_select(0, rows.to(tensor.device))
    if cols is not None:
        tensor = tensor.index_select(1, cols.to(tensor.device))
    return tensor.detach().clone()


def _linear(state: dict, prefix: str, rows: torch.Tensor | None, cols: torch.Tensor | None) -> None:
    """Slice ``prefix.weight`` (rows = outputs, cols = inputs) and ``prefix.bias`` (rows) in ``state``."""
    state[f"{prefix}.weight"] = _take(state[f"{prefix}.weight"], rows, cols)
    if f"{prefix}.bias" in state:
        state[f"{prefix}.bias"] = _take(state[f"{prefix}.bias"], rows)


def _vector(state: dict, prefix: str, index: torch.Tensor) -> None:
    """Slice every 1-D parameter ``prefix.*`` (a LayerNorm's weight and bias) to ``index``."""
    for key in [k for k in state if k.startswith(prefix + ".")]:
        state[key] = _take(state[key], index)


def extracted_state_dict(encoder: nn.Module, selection: Selection) -> dict[str, torch.Tensor]:
    """The teacher's state dict cut to ``selection``, with the keys of the extracted model."""
    spec, rspec, d = arch_for(encoder), residual_spec(encoder), shape_of(encoder).head_dim
    source = encoder.state_dict()
    dims = torch.tensor(selection.dims, dtype=torch.long)
    state = {k: v for k, v in source.items() if not k.startswith(spec.layers + ".")}
    project = rspec.embed_project if f"{rspec.embed_project}.weight" in state else None
    if project is not None:  # tables and embedding LayerNorm live in the embedding space
        _linear(state, project, dims, None)
    else:
        for table in rspec.tables:
            if f"{table}.weight" in state:
                state[f"{table}.weight"] = _take(state[f"{table}.weight"], None, dims)
        _vector(state, rspec.embed_norm, dims)
    if rspec.pooler is not None and f"{rspec.pooler}.weight" in state:
        _linear(state, rspec.pooler, dims, dims)
    for new, (old, heads, neurons) in enumerate(zip(selection.layers, selection.heads, selection.neurons, strict=True)):
        prefix, target = f"{spec.layers}.{old}.", f"{spec.layers}.{new}."
        layer = {target + k[len(prefix):]: v for k, v in source.items() if k.startswith(prefix)}
        rows = head_rows(list(heads), d)  # [A*d]
        units = torch.tensor(neurons, dtype=torch.long)
        for role in ("q", "k", "v"):
            if heads:
                _linear(layer, target + spec.path(role), rows, dims)
            else:  # the compacted model has no Q/K/V in a layer without heads
                for key in [k for k in layer if k.startswith(target + spec.path(role) + ".")]:
                    del layer[key]
        _linear(layer, target + spec.attn_out, dims, rows)
        _linear(layer, target + spec.ffn_up, units, dims)
        _linear(layer, target + spec.ffn_down, dims, units)
        for norm in rspec.layer_norms:
            _vector(layer, target + norm, dims)
        state.update(layer)
    return state


def extract_encoder(encoder: nn.Module, selection: Selection, provenance: dict[str, str] | None = None) -> nn.Module:
    """A new encoder holding only ``selection``'s units of ``encoder`` (a base encoder, untouched).

    Same dtype, device, train/eval mode and attention implementation as ``encoder``. ``provenance`` is
    recorded in the config's ``compaction`` strings.
    """
    if is_compact(getattr(encoder, "config", None)):
        raise UserError("extract from the original model, not from a compacted or extracted one")
    if getattr(encoder, "base_model", encoder) is not encoder:
        raise UserError(f"extract from the base encoder (AutoModel), not {type(encoder).__name__}")
    shape, spec = shape_of(encoder), arch_for(encoder)
    selection_limits(selection, shape)
    changes = {spec.num_layers_key: len(selection.layers), spec.hidden_key: len(selection.dims),
               "head_size": shape.head_dim}
    embedding_size = getattr(encoder.config, "embedding_size", None)
    if embedding_size == shape.hidden:  # ELECTRA without a projection: the embeddings are the stream
        changes["embedding_size"] = len(selection.dims)
    config = compact_config(encoder.config, [list(h) for h in selection.heads], [len(n) for n in selection.neurons],
                            {"extracted": "true", **(provenance or {})}, **changes)
    param = next(encoder.parameters())
    no_pooler = spec.pooler is not None and f"{spec.pooler}.weight" not in encoder.state_dict()
    model = compact_model_class(config)(config, **({"add_pooling_layer": False} if no_pooler else {}))
    model = model.to(device=param.device, dtype=param.dtype)
    model.load_state_dict(extracted_state_dict(encoder, selection), strict=True)
    return model.train(encoder.training)


def selection_limits(selection: Selection, shape) -> None:
    """UserError unless every index of ``selection`` exists in a teacher of ``shape``."""
    checks = [("layers", selection.layers, shape.num_layers), ("dims", selection.dims, shape.hidden),
              *(("heads", h, shape.num_heads) for h in selection.heads),
              *(("neurons", n, shape.intermediate) for n in selection.neurons)]
    for name, items, size in checks:
        if any(not 0 <= i < size for i in items):
            raise UserError(f"selection {name} has an index outside 0..{size - 1} ({shape.describe()})")
    if not selection.layers or not selection.dims:
        raise UserError("a selection keeps at least one layer and one hidden dimension")


# ---------------------------------------------------------------- MLM heads


@dataclass(frozen=True)
class MlmSpec:
    """Where a ``*ForMaskedLM`` model keeps its base encoder and its MLM head, and the head's parts."""

    base: str  # attribute holding the base encoder
    head: str  # attribute holding the head module (forward: hidden states -> vocabulary logits)
    dense: str  # Linear hidden -> hidden, relative to the head
    norm: str  # LayerNorm after it, relative to the head
    decoder: str  # Linear hidden -> vocabulary, relative to the head (weight tied to the word embeddings)
    weight_prefix: str  # how the head's keys start in a checkpoint


MLM_SPECS: Mapping[str, MlmSpec] = MappingProxyType({
    "bert": MlmSpec("bert", "cls", "predictions.transform.dense", "predictions.transform.LayerNorm",
                    "predictions.decoder", "cls.predictions."),
    "roberta": MlmSpec("roberta", "lm_head", "dense", "layer_norm", "decoder", "lm_head."),
})


def extract_mlm_head(head: nn.Module, spec: MlmSpec, dims: tuple[int, ...], word_embeddings: nn.Embedding | None) -> nn.Module:
    """A copy of the MLM ``head`` reading only the hidden dimensions ``dims``: its dense layer (both
    sides), its LayerNorm and the decoder's input columns are sliced; the decoder is tied to
    ``word_embeddings`` (the extracted encoder's) when given. The head's LayerNorm is then over the kept
    dimensions only, as everywhere in the extracted model."""
    out = copy.deepcopy(head)
    index = torch.tensor(dims, dtype=torch.long)
    dense, norm, decoder = (out.get_submodule(p) for p in (spec.dense, spec.norm, spec.decoder))
    new_dense = nn.Linear(len(dims), len(dims), bias=dense.bias is not None)
    new_norm = nn.LayerNorm(len(dims), eps=norm.eps, elementwise_affine=norm.weight is not None)
    with torch.no_grad():
        new_dense.weight.copy_(_take(dense.weight, index, index))
        if dense.bias is not None:
            new_dense.bias.copy_(_take(dense.bias, index))
        if norm.weight is not None:
            new_norm.weight.copy_(_take(norm.weight, index))
            new_norm.bias.copy_(_take(norm.bias, index))
        if word_embeddings is not None:
            decoder.weight = word_embeddings.weight
        else:
            decoder.weight = nn.Parameter(_take(decoder.weight, None, index))
    decoder.in_features = len(dims)
    out.set_submodule(spec.dense, new_dense.to(dense.weight.device, dense.weight.dtype))
    out.set_submodule(spec.norm, new_norm.to(dense.weight.device, dense.weight.dtype))
    return out
