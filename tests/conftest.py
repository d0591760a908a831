"""Shared fixtures: tiny random encoders in memory, the real GLUE folder when it exists."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]


def glue_dir() -> Path | None:
    """$GLUE_DIR, else ../shared/glue beside the repository, else None."""
    env = os.environ.get("GLUE_DIR")
    candidates = [Path(env)] if env else []
    candidates.append(REPO.parent / "shared" / "glue")
    return next((p for p in candidates if (p / "RTE" / "train.tsv").is_file()), None)


@pytest.fixture
def glue() -> Path:
    path = glue_dir()
    if path is None:
        pytest.skip("real GLUE data not found (set GLUE_DIR)")
    return path


def tiny_bert(**overrides):
    from transformers import BertConfig, BertModel

    cfg = dict(vocab_size=99, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
               intermediate_size=37, max_position_embeddings=64, attn_implementation="sdpa")
    cfg.update(overrides)
    torch.manual_seed(0)
    return BertModel(BertConfig(**cfg)).eval()


TINY_ARCHS = ("bert", "roberta", "electra", "distilbert")


def tiny_encoder(arch: str = "bert", impl: str = "sdpa", dropout: float = 0.1, layers: int = 2):
    """A tiny random encoder of ``arch`` (hidden 32, 4 heads of 8, FFN 37, vocab 99), seed 0, eval mode."""
    from transformers import (
        BertConfig,
        BertModel,
        DistilBertConfig,
        DistilBertModel,
        ElectraConfig,
        ElectraModel,
        RobertaConfig,
        RobertaModel,
    )

    torch.manual_seed(0)
    if arch == "distilbert":
        config = DistilBertConfig(vocab_size=99, dim=32, n_layers=layers, n_heads=4, hidden_dim=37,
                                  max_position_embeddings=64, dropout=dropout, attention_dropout=dropout,
                                  attn_implementation=impl)
        return DistilBertModel(config).eval()
    config_cls, model_cls = {"bert": (BertConfig, BertModel), "roberta": (RobertaConfig, RobertaModel),
                             "electra": (ElectraConfig, ElectraModel)}[arch]
    extra = {"embedding_size": 16} if arch == "electra" else {}
    config = config_cls(vocab_size=99, hidden_size=32, num_hidden_layers=layers, num_attention_heads=4,
                        intermediate_size=37, max_position_embeddings=64, hidden_dropout_prob=dropout,
                        attention_probs_dropout_prob=dropout, attn_implementation=impl, **extra)
    return model_cls(config).eval()


def tiny_inputs(length: int, pad_from: int) -> dict[str, torch.Tensor]:
    """Two sequences of ``length`` random ids (seed 1); the second is padded from ``pad_from`` on."""
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(3, 99, (2, length), generator=g)
    attn = torch.ones(2, length, dtype=torch.long)
    attn[1, pad_from:] = 0  # padding exercises the attention mask path
    return {"input_ids": ids, "attention_mask": attn}
