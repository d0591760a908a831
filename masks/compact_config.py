"""Configs of compacted encoders: the base config plus what each layer kept.

A compacted encoder is its base architecture (BERT, RoBERTa, XLM-RoBERTa, ELECTRA, DistilBERT, DeBERTa-v2/v3,
ModernBERT, MPNet; every family of :data:`masks.arch.ARCH_SPECS` whose layers do not share weights) with the pruned
attention heads and FFN neurons physically removed, so layers may differ in size. Its config is the
base config, unchanged (hidden size, number of layers, ``num_attention_heads`` H of the original
model, so the head size stays ``hidden / H``), plus these fields:

- ``kept_heads``: per layer, the original indices of the heads kept, ``list[L][h_l]``. An empty list
  means the layer has no attention left: only the output projection's bias remains.
- ``intermediate_sizes``: per layer, the number of FFN neurons kept ``I_l``. 0 means no FFN: only
  the down projection's bias remains.
- ``compaction``: provenance strings (source model, mask kind and sparsity, ...).
- ``head_size``: the head size d when it is not ``hidden / H``. An extracted
  sub-architecture (:mod:`masks.extract`) keeps its teacher's heads, so d stays the teacher's while
  the hidden size shrinks: the attention width ``h_l * d`` and the hidden size are independent.
  None (the default, every compacted ticket) means ``hidden / H``.

``model_type`` is ``compact_<base>``, so the Auto classes build the right model once
:func:`masks.auto_classes.register_auto_classes` has run (saving or loading a compacted model runs it).

This module is light (configuration classes only); the models are in :mod:`masks.compact_model`.
"""

from __future__ import annotations

from typing import Any

from huggingface_hub.dataclasses import strict
from transformers import (
    BertConfig,
    DebertaV2Config,
    DistilBertConfig,
    ElectraConfig,
    ModernBertConfig,
    MPNetConfig,
    PreTrainedConfig,
    RobertaConfig,
    XLMRobertaConfig,
)

COMPACT_PREFIX = "compact_"


@strict
class CompactFields(PreTrainedConfig):
    """The fields every compacted config adds to its base config (see the module docstring)."""

    base_model_type = ""  # set by each subclass: the model_type whose modules are compacted

    kept_heads: list[list[int]] | None = None  # [L][h_l] original head indices kept per layer
    intermediate_sizes: list[int] | None = None  # [L] FFN neurons kept per layer
    compaction: dict[str, str] | None = None  # provenance
    head_size: int | None = None  # head size d; None: the base config's (hidden_size // num_attention_heads)

    @property
    def head_dim(self) -> int:
        """The head size d of every attention head."""
        return self.head_size or getattr(self, "attention_head_size", None) or self.hidden_size // self.num_attention_heads

    def validate_compaction(self) -> None:
        """Per-layer lists of the right length, sorted distinct head indices in 0..H-1, sizes >= 0.

        None (the class default, e.g. ``CompactBertConfig()``) means nothing was removed.
        """
        L, H = self.num_hidden_layers, self.num_attention_heads
        for name in ("kept_heads", "intermediate_sizes"):
            value = getattr(self, name)
            if value is not None and len(value) != L:
                raise ValueError(f"{name} has {len(value)} entries but the model has {L} layers")
        for layer, heads in enumerate(self.kept_heads or []):
            if list(heads) != sorted(set(heads)) or any(not 0 <= h < H for h in heads):
                raise ValueError(f"kept_heads[{layer}] = {heads}: expected sorted distinct indices in 0..{H - 1}")
        if any(size < 0 for size in self.intermediate_sizes or []):
            raise ValueError(f"intermediate_sizes must be >= 0, got {self.intermediate_sizes}")
        if self.head_size is not None and self.head_size < 1:
            raise ValueError(f"head_size must be >= 1, got {self.head_size}")


@strict
class CompactBertConfig(CompactFields, BertConfig):
    model_type = "compact_bert"
    base_model_type = "bert"


@strict
class CompactRobertaConfig(CompactFields, RobertaConfig):
    model_type = "compact_roberta"
    base_model_type = "roberta"


@strict
class CompactElectraConfig(CompactFields, ElectraConfig):
    model_type = "compact_electra"
    base_model_type = "electra"


@strict
class CompactDistilBertConfig(CompactFields, DistilBertConfig):
    model_type = "compact_distilbert"
    base_model_type = "distilbert"


@strict
class CompactXLMRobertaConfig(CompactFields, XLMRobertaConfig):
    model_type = "compact_xlm-roberta"
    base_model_type = "xlm-roberta"


@strict
class CompactDebertaV2Config(CompactFields, DebertaV2Config):
    model_type = "compact_deberta-v2"
    base_model_type = "deberta-v2"


@strict
class CompactModernBertConfig(CompactFields, ModernBertConfig):
    model_type = "compact_modernbert"
    base_model_type = "modernbert"


@strict
class CompactMPNetConfig(CompactFields, MPNetConfig):
    model_type = "compact_mpnet"
    base_model_type = "mpnet"


# base model_type -> compacted config class (one per row of masks.arch.ARCH_SPECS whose layers do not share weights)
COMPACT_CONFIGS: dict[str, type[CompactFields]] = {
    cls.base_model_type: cls
    for cls in (CompactBertConfig, CompactRobertaConfig, CompactElectraConfig, CompactDistilBertConfig,
                CompactXLMRobertaConfig, CompactDebertaV2Config, CompactModernBertConfig, CompactMPNetConfig)
}


def is_compact(config: Any) -> bool:
    """True if ``config`` (a model config) describes a compacted encoder."""
    return isinstance(config, CompactFields)


def compact_config(base: PreTrainedConfig, kept_heads: list[list[int]], intermediate_sizes: list[int],
                   compaction: dict[str, str] | None = None, **changes: Any) -> CompactFields:
    """The compacted config of an encoder whose config is ``base``, keeping ``kept_heads`` / ``intermediate_sizes``.

    Every base setting is kept, the attention implementation (SDPA) included, except ``changes``
    (config keys such as ``num_hidden_layers``, ``hidden_size``, ``head_size``: what
    :mod:`masks.extract` sets). ValueError for a model type without a compacted class, or for an
    already compacted config.
    """
    if is_compact(base):
        raise ValueError(f"the model is already compacted ({base.model_type}); compact the original model instead")
    if base.model_type not in COMPACT_CONFIGS:
        raise ValueError(f"no compacted config for model_type {base.model_type!r}; "
                         f"supported: {', '.join(sorted(COMPACT_CONFIGS))}")
    cls = COMPACT_CONFIGS[base.model_type]
    skip = ("model_type", "architectures", "transformers_version")
    values = {k: v for k, v in base.to_dict().items() if k not in skip}
    values.update(kept_heads=[[int(h) for h in heads] for heads in kept_heads],
                  intermediate_sizes=[int(n) for n in intermediate_sizes],
                  compaction={str(k): str(v) for k, v in (compaction or {}).items()})
    values.update(changes)
    config = cls.from_dict(values)
    config._attn_implementation = base._attn_implementation
    return config
