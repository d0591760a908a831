"""Gates: all-ones is a no-op (SDPA kept), gating a unit equals removing it by hand."""

import copy

import pytest
import torch
from transformers import (
    GPT2Config,
    GPT2Model,
)

from basics.errors import UserError
from masks.arch import LAYER_ROLES, EncoderShape, arch_for, role_modules, shape_of
from masks.gates import attach_gates, find_gates
from masks.mask import Mask
from tests.conftest import TINY_ARCHS, tiny_encoder, tiny_inputs

ARCHS = list(TINY_ARCHS)
SHAPE = EncoderShape(num_layers=2, num_heads=4, head_dim=8, hidden=32, intermediate=37)


def make_encoder(arch: str, impl: str = "sdpa") -> torch.nn.Module:
    return tiny_encoder(arch, impl)


def inputs() -> dict[str, torch.Tensor]:
    return tiny_inputs(7, 5)


def hidden(model: torch.nn.Module) -> torch.Tensor:
    with torch.no_grad():
        return model(**inputs()).last_hidden_state  # [B, T, hidden]


@pytest.mark.parametrize("arch", ARCHS)
def test_shape_and_paths_come_from_config(arch):
    enc = make_encoder(arch)
    assert shape_of(enc) == SHAPE
    for role in LAYER_ROLES:
        mods = role_modules(enc, role)
        assert len(mods) == SHAPE.num_layers and all(isinstance(m, torch.nn.Linear) for m in mods)
    assert role_modules(enc, "attn_out")[0].in_features == SHAPE.num_heads * SHAPE.head_dim
    assert role_modules(enc, "ffn_down")[0].in_features == SHAPE.intermediate
    assert role_modules(enc, "ffn_up")[0].out_features == SHAPE.intermediate


def test_unknown_model_type_is_user_error():
    gpt2 = GPT2Model(GPT2Config(n_embd=32, n_layer=1, n_head=4, vocab_size=99))
    with pytest.raises(UserError, match="supported: bert, distilbert, electra, roberta"):
        arch_for(gpt2)
    with pytest.raises(UserError, match="unknown module role"):
        arch_for(make_encoder("bert")).path("pooler")


@pytest.mark.parametrize("impl", ["sdpa", "eager"])
@pytest.mark.parametrize("arch", ARCHS)
def test_all_ones_gates_are_identity_and_keep_sdpa(arch, impl, monkeypatch):
    enc = make_encoder(arch, impl)
    ref = hidden(enc)
    calls = []
    sdpa = torch.nn.functional.scaled_dot_product_attention
    monkeypatch.setattr(
        torch.nn.functional, "scaled_dot_product_attention",
        lambda *a, **k: calls.append(1) or sdpa(*a, **k),
    )
    with attach_gates(enc) as gates:
        assert gates.is_identity
        assert gates._gate_input("heads", 0, (torch.ones(1, 1, 32),)) is None  # hook is a no-op
        out = hidden(enc)
        assert enc.config._attn_implementation == impl
        assert len(calls) == (SHAPE.num_layers if impl == "sdpa" else 0)
    torch.testing.assert_close(out, ref, atol=1e-6, rtol=0)
    assert find_gates(enc) is None  # context manager removed the hooks


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("layer,head", [(0, 0), (1, 3)])
def test_gating_a_head_equals_removing_it(arch, layer, head):
    enc = make_encoder(arch)
    ref = copy.deepcopy(enc)
    d = SHAPE.head_dim
    with torch.no_grad():
        role_modules(ref, "attn_out")[layer].weight[:, head * d:(head + 1) * d] = 0  # [hidden, H*d]
    mask = Mask.ones(SHAPE)
    mask.heads[layer, head] = False
    gates = attach_gates(enc, mask)
    assert not gates.is_identity
    torch.testing.assert_close(hidden(enc), hidden(ref), atol=1e-5, rtol=0)
    assert not torch.allclose(hidden(enc), hidden(make_encoder(arch)), atol=1e-4)


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("layer,neuron", [(0, 5), (1, 36)])
def test_gating_an_ffn_neuron_equals_removing_it(arch, layer, neuron):
    enc = make_encoder(arch)
    ref = copy.deepcopy(enc)
    with torch.no_grad():
        role_modules(ref, "ffn_down")[layer].weight[:, neuron] = 0  # [hidden, I]
    mask = Mask.ones(SHAPE)
    mask.ffn[layer, neuron] = False
    attach_gates(enc, mask)
    torch.testing.assert_close(hidden(enc), hidden(ref), atol=1e-5, rtol=0)


@pytest.mark.parametrize("arch", ["bert", "distilbert"])
def test_set_mask_switches_between_tasks(arch):
    g = torch.Generator().manual_seed(3)
    a = Mask(torch.rand(2, 4, generator=g) > 0.3, torch.rand(2, 37, generator=g) > 0.3)
    b = Mask(torch.rand(2, 4, generator=g) > 0.3, torch.rand(2, 37, generator=g) > 0.3)
    enc = make_encoder(arch)
    gates = attach_gates(enc)
    gates.set_mask(a)
    out_a = hidden(enc)
    gates.set_mask(b)
    out_b = hidden(enc)
    fresh_b = make_encoder(arch)
    attach_gates(fresh_b, b)
    fresh_a = make_encoder(arch)
    attach_gates(fresh_a, a)
    torch.testing.assert_close(out_b, hidden(fresh_b), atol=1e-6, rtol=0)
    torch.testing.assert_close(out_a, hidden(fresh_a), atol=1e-6, rtol=0)
    assert not torch.allclose(out_a, out_b, atol=1e-4)
    gates.set_mask(None)
    assert gates.is_identity and gates.mask is None
    torch.testing.assert_close(hidden(enc), hidden(make_encoder(arch)), atol=1e-6, rtol=0)


def test_grad_path_matches_cached_path_and_reaches_gates():
    enc = make_encoder("bert")
    mask = Mask.ones(SHAPE)
    mask.heads[0, 1] = False
    mask.ffn[1, :10] = False
    gates = attach_gates(enc, mask)
    cached = hidden(enc)
    gates.requires_grad_(True)
    out = enc(**inputs()).last_hidden_state
    torch.testing.assert_close(out, cached, atol=1e-6, rtol=0)
    weights = torch.randn(out.shape, generator=torch.Generator().manual_seed(2))
    (out * weights).sum().backward()  # plain .sum() of a LayerNorm output has ~zero gradient
    assert gates.heads.grad is not None and gates.heads.grad.shape == (2, 4)
    assert gates.ffn.grad is not None and gates.ffn.grad.abs().sum() > 0


def test_remove_restores_model_and_double_attach_is_rejected():
    enc = make_encoder("roberta")
    ref = hidden(enc)
    mask = Mask.ones(SHAPE)
    mask.heads[:, 0] = False
    gates = attach_gates(enc, mask)
    with pytest.raises(UserError, match="already has gates"):
        attach_gates(enc)
    assert find_gates(enc) is gates
    gates.remove()
    gates.remove()  # idempotent
    torch.testing.assert_close(hidden(enc), ref, atol=0, rtol=0)


def test_set_mask_shape_mismatch_is_user_error():
    gates = attach_gates(make_encoder("bert"))
    wrong = Mask.ones(EncoderShape(3, 4, 8, 32, 37))
    with pytest.raises(UserError, match="mask is for L=3,H=4,I=37 but model is L=2,H=4,I=37"):
        gates.set_mask(wrong)
    with pytest.raises(UserError, match="expects a Mask"):
        gates.set_mask(torch.ones(2, 4))


def test_masked_gates_follow_bf16_inputs():
    enc = make_encoder("bert")
    mask = Mask.ones(SHAPE)
    mask.heads[1, 2] = False
    ref = copy.deepcopy(enc)
    with torch.no_grad():
        role_modules(ref, "attn_out")[1].weight[:, 16:24] = 0
    attach_gates(enc, mask)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = hidden(enc)
        want = hidden(ref)
    torch.testing.assert_close(out.float(), want.float(), atol=3e-2, rtol=0)
    enc.to(torch.bfloat16)
    assert hidden(enc).dtype == torch.bfloat16
