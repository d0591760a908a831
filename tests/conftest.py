"""Shared fixtures: tiny random encoders in memory, the real GLUE folder when it exists."""

from __future__ import annotations

import copy
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
def one_thread():
    """One torch thread for the test: tiny models on a shared 2-core machine run ~10x faster than with two.
    A module uses it for every test with ``pytestmark = pytest.mark.usefixtures("one_thread")``."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


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


# every family of masks.arch.ARCH_SPECS, as a tiny random encoder (deberta-v2: separate position projections
# and a conv layer, as DeBERTa-v2; deberta-v3: shared ones, as DeBERTa-v3; both model_type "deberta-v2")
TINY_ARCHS = ("bert", "roberta", "electra", "distilbert", "xlm-roberta", "deberta-v2", "deberta-v3", "modernbert",
              "mpnet", "albert")
COMPACT_ARCHS = tuple(a for a in TINY_ARCHS if a != "albert")  # ALBERT's layers share weights: no compaction
NO_SDPA_ARCHS = ("deberta-v2", "deberta-v3", "mpnet")  # transformers has no SDPA attention for them: eager


def tiny_config(arch: str = "bert", impl: str = "sdpa", dropout: float = 0.1, layers: int = 2, **overrides):
    """The config of a tiny ``arch`` encoder: hidden 32, 4 heads of 8, FFN 37, vocab 99, 64 positions."""
    import transformers as tf

    impl = "eager" if arch in NO_SDPA_ARCHS else impl
    values = dict(vocab_size=99, hidden_size=32, num_hidden_layers=layers, num_attention_heads=4,
                  intermediate_size=37, max_position_embeddings=64, attn_implementation=impl,
                  hidden_dropout_prob=dropout, attention_probs_dropout_prob=dropout)
    if arch == "distilbert":
        values = dict(vocab_size=99, dim=32, n_layers=layers, n_heads=4, hidden_dim=37, max_position_embeddings=64,
                      dropout=dropout, attention_dropout=dropout, attn_implementation=impl)
    elif arch.startswith("deberta"):
        v2 = arch == "deberta-v2"
        values.update(relative_attention=True, pos_att_type=["p2c", "c2p"], position_buckets=8, share_att_key=not v2,
                      norm_rel_ebd="layer_norm", position_biased_input=False, conv_kernel_size=3 if v2 else 0)
    elif arch == "modernbert":  # layers alternate global / local (a window of 2 tokens each side), GeGLU FFN
        for key in ("hidden_dropout_prob", "attention_probs_dropout_prob"):
            del values[key]
        values.update(global_attn_every_n_layers=2, local_attention=4, embedding_dropout=dropout, mlp_dropout=dropout,
                      attention_dropout=dropout, pad_token_id=0, bos_token_id=2, eos_token_id=3, cls_token_id=2,
                      sep_token_id=3)
    elif arch in ("electra", "albert"):
        values["embedding_size"] = 16
    config_cls = {"bert": tf.BertConfig, "roberta": tf.RobertaConfig, "electra": tf.ElectraConfig,
                  "xlm-roberta": tf.XLMRobertaConfig, "mpnet": tf.MPNetConfig, "albert": tf.AlbertConfig,
                  "distilbert": tf.DistilBertConfig, "deberta-v2": tf.DebertaV2Config,
                  "deberta-v3": tf.DebertaV2Config, "modernbert": tf.ModernBertConfig}[arch]
    return config_cls(**{**values, **overrides})


def tiny_encoder(arch: str = "bert", impl: str = "sdpa", dropout: float = 0.1, layers: int = 2, **overrides):
    """A tiny random encoder of ``arch`` (:func:`tiny_config`), seed 0, eval mode."""
    from transformers import AutoModel

    config = tiny_config(arch, impl, dropout, layers, **overrides)
    torch.manual_seed(0)
    return AutoModel.from_config(config, attn_implementation=config._attn_implementation).eval()


def unshared_copy(arch: str, enc: torch.nn.Module) -> torch.nn.Module:
    """A copy of ``enc`` whose layers are distinct modules, with the same outputs: ``enc`` itself copied, except
    for ALBERT (one layer shared by all): an ALBERT with one layer group per layer, each group a copy of the one."""
    if arch != "albert":
        return copy.deepcopy(enc)
    from transformers import AlbertModel

    L = enc.config.num_hidden_layers
    ref = AlbertModel(tiny_config("albert", num_hidden_groups=L)).to(next(enc.parameters()).dtype).eval()
    state = {k: v for k, v in enc.state_dict().items() if "albert_layer_groups" not in k}
    for k, v in enc.state_dict().items():
        if "albert_layer_groups.0." in k:
            state.update({k.replace("albert_layer_groups.0.", f"albert_layer_groups.{g}."): v for g in range(L)})
    ref.load_state_dict(state)
    return ref


def tiny_inputs(length: int, pad_from: int) -> dict[str, torch.Tensor]:
    """Two sequences of ``length`` random ids (seed 1); the second is padded from ``pad_from`` on."""
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(3, 99, (2, length), generator=g)
    attn = torch.ones(2, length, dtype=torch.long)
    attn[1, pad_from:] = 0  # padding exercises the attention mask path
    return {"input_ids": ids, "attention_mask": attn}
