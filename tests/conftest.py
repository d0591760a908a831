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


@pytest.fixture
def tiny_encoder():
    return tiny_bert()
