"""Architecture facts as data: where the residual stream (the hidden dimension) lives in each encoder family.

Removing hidden dimension ``i`` touches every tensor that reads or writes the residual stream. Besides
the layer roles of :data:`masks.arch.ARCH_SPECS` (Q/K/V and FFN up read it: their input columns; the
attention output projection and FFN down write it: their output rows), those are:

- ``tables``: the embedding tables added into the stream (columns);
- ``embed_norm``: the LayerNorm of the embeddings; ``layer_norms``: the LayerNorms of each layer (one after
  each residual add, post-LN): every one of them writes the stream;
- ``embed_project``: a Linear from the embedding size to the hidden size (ELECTRA when the two differ;
  then the tables and ``embed_norm`` live in the embedding space and are not touched), rows;
- ``pooler``: the pooler's Linear (hidden -> hidden: input columns and output rows).

Paths are relative to the base encoder, except ``layer_norms`` (relative to one layer). A path the model
does not have (no pooler, no token types, no projection) is skipped.
"""

from __future__ import annotations

from dataclasses import dataclass
from types import MappingProxyType
from typing import TYPE_CHECKING, Mapping

from basics.errors import UserError
from masks.arch import _base, layer_modules

if TYPE_CHECKING:
    from torch import nn


@dataclass(frozen=True)
class ResidualSpec:
    """Where one encoder family reads and writes its residual stream (see the module docstring)."""

    tables: tuple[str, ...]  # embedding tables [rows, hidden]
    embed_norm: str  # LayerNorm after the embedding sum
    layer_norms: tuple[str, ...]  # per layer: the LayerNorm after attention, the one after the FFN
    embed_project: str | None = None  # Linear embedding_size -> hidden, when the model has one
    pooler: str | None = None  # Linear hidden -> hidden


_BERT_LIKE = ResidualSpec(
    tables=("embeddings.word_embeddings", "embeddings.position_embeddings", "embeddings.token_type_embeddings"),
    embed_norm="embeddings.LayerNorm",
    layer_norms=("attention.output.LayerNorm", "output.LayerNorm"),
    pooler="pooler.dense",
)

RESIDUAL_SPECS: Mapping[str, ResidualSpec] = MappingProxyType({
    "bert": _BERT_LIKE,
    "roberta": _BERT_LIKE,
    "electra": ResidualSpec(tables=_BERT_LIKE.tables, embed_norm=_BERT_LIKE.embed_norm,
                            layer_norms=_BERT_LIKE.layer_norms, embed_project="embeddings_project"),
    "distilbert": ResidualSpec(tables=("embeddings.word_embeddings", "embeddings.position_embeddings"),
                               embed_norm="embeddings.LayerNorm", layer_norms=("sa_layer_norm", "output_layer_norm")),
})


def residual_spec(encoder: nn.Module) -> ResidualSpec:
    """The :class:`ResidualSpec` of ``encoder``'s base model type (a compacted model: its base type)."""
    config = _base(encoder).config
    model_type = getattr(config, "base_model_type", None) or config.model_type
    if model_type not in RESIDUAL_SPECS:
        raise UserError(f"hidden-dimension extraction does not know model_type {model_type!r}; "
                        f"supported: {', '.join(sorted(RESIDUAL_SPECS))}")
    return RESIDUAL_SPECS[model_type]


def find(encoder: nn.Module, path: str | None) -> nn.Module | None:
    """The submodule at ``path`` of the base encoder, or None when it has none (or ``path`` is None)."""
    if path is None:
        return None
    try:
        return _base(encoder).get_submodule(path)
    except AttributeError:
        return None


def stream_writers(encoder: nn.Module) -> tuple[list[nn.Module], list[nn.Module]]:
    """``(norms, linears)``: every LayerNorm that writes the residual stream (the embeddings' first, then
    each layer's in order) and every Linear whose output *is* the stream with no LayerNorm after it
    (ELECTRA's embedding projection; the pooler). Gating the stream means gating these outputs."""
    spec = residual_spec(encoder)
    project = find(encoder, spec.embed_project)
    norms = [] if project is not None else [find(encoder, spec.embed_norm)]
    for layer in layer_modules(encoder):
        norms += [layer.get_submodule(path) for path in spec.layer_norms]
    linears = [m for m in (project, find(encoder, spec.pooler)) if m is not None]
    return norms, linears
