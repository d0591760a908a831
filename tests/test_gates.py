"""Gates: all-ones is a no-op (SDPA kept), gating a unit equals removing it by hand, for every family."""

import copy

import pytest
import torch
from transformers import (
    GPT2Config,
    GPT2Model,
)

from basics.errors import UserError
from masks.arch import LAYER_ROLES, EncoderShape, arch_for, layer_modules, role_modules, shape_of
from masks.gates import attach_gates, find_gates
from masks.mask import Mask
from tests.conftest import NO_SDPA_ARCHS, TINY_ARCHS, tiny_encoder, tiny_inputs, unshared_copy

ARCHS = list(TINY_ARCHS)
SHAPE = EncoderShape(num_layers=2, num_heads=4, head_dim=8, hidden=32, intermediate=37)
IMPLS = [(arch, impl) for arch in ARCHS for impl in ("sdpa", "eager") if impl == "eager" or arch not in NO_SDPA_ARCHS]


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
    shape, spec = shape_of(enc), arch_for(enc)
    dims = (shape.num_layers, shape.num_heads, shape.head_dim, shape.hidden, shape.intermediate)
    assert dims == (SHAPE.num_layers, SHAPE.num_heads, SHAPE.head_dim, SHAPE.hidden, SHAPE.intermediate)
    for role in LAYER_ROLES:
        mods = role_modules(enc, role)
        assert len(mods) == SHAPE.num_layers and all(isinstance(m, torch.nn.Linear) for m in mods)
    qkv = 3 if spec.fused_qkv else 1
    assert role_modules(enc, "q")[0].out_features == qkv * SHAPE.num_heads * SHAPE.head_dim
    assert role_modules(enc, "attn_out")[0].in_features == SHAPE.num_heads * SHAPE.head_dim
    assert role_modules(enc, "ffn_down")[0].in_features == SHAPE.intermediate
    assert role_modules(enc, "ffn_up")[0].out_features == spec.ffn_up_parts * SHAPE.intermediate
    assert (len({id(m) for m in layer_modules(enc)}) == 1) == spec.shares_weights == (arch == "albert")


@pytest.mark.parametrize("arch", ["deberta-v2", "modernbert"])
def test_unit_parameter_counts_follow_the_modules(arch):
    """Per head: Q/K/V rows (+ DeBERTa-v2's position projections) and output columns; per neuron: both GeGLU
    rows and the down column; no biases in ModernBERT. Recorded in the shape string and read back."""
    shape = shape_of(make_encoder(arch))
    d, hidden = SHAPE.head_dim, SHAPE.hidden
    if arch == "deberta-v2":
        assert (shape.params_per_head, shape.neuron_params) == (5 * d * (hidden + 1) + d * hidden, None)
    else:
        assert (shape.params_per_head, shape.params_per_neuron) == (3 * d * hidden + d * hidden, 2 * hidden + hidden)
    assert EncoderShape.parse(shape.describe()) == shape
    assert shape_of(make_encoder("deberta-v3")) == SHAPE  # shared position projections: BERT's counts


def test_unknown_model_type_is_user_error():
    gpt2 = GPT2Model(GPT2Config(n_embd=32, n_layer=1, n_head=4, vocab_size=99))
    with pytest.raises(UserError, match="supported: albert, bert, deberta-v2, distilbert, electra, modernbert, "
                                        "mpnet, roberta, xlm-roberta"):
        arch_for(gpt2)
    with pytest.raises(UserError, match="unknown module role"):
        arch_for(make_encoder("bert")).path("pooler")


@pytest.mark.parametrize("arch,impl", IMPLS)
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
    ref = unshared_copy(arch, enc)
    d = SHAPE.head_dim
    with torch.no_grad():
        role_modules(ref, "attn_out")[layer].weight[:, head * d:(head + 1) * d] = 0  # [hidden, H*d]
    mask = Mask.ones(shape_of(enc))
    mask.heads[layer, head] = False
    gates = attach_gates(enc, mask)
    assert not gates.is_identity
    torch.testing.assert_close(hidden(enc), hidden(ref), atol=1e-5, rtol=0)
    assert not torch.allclose(hidden(enc), hidden(make_encoder(arch)), atol=1e-4)


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("layer,neuron", [(0, 5), (1, 36)])
def test_gating_an_ffn_neuron_equals_removing_it(arch, layer, neuron):
    enc = make_encoder(arch)
    ref = unshared_copy(arch, enc)
    with torch.no_grad():
        role_modules(ref, "ffn_down")[layer].weight[:, neuron] = 0  # [hidden, I]
    mask = Mask.ones(shape_of(enc))
    mask.ffn[layer, neuron] = False
    attach_gates(enc, mask)
    torch.testing.assert_close(hidden(enc), hidden(ref), atol=1e-5, rtol=0)


@pytest.mark.parametrize("arch", ["bert", "distilbert", "modernbert", "albert"])
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


def test_shared_layers_are_gated_per_layer_even_after_an_interrupted_forward():
    """ALBERT runs one module as every layer: the n-th call of a forward pass gets layer n's gates, and a pass
    that stopped half-way (an exception) does not shift the next one."""
    enc = make_encoder("albert")
    mask = Mask.ones(SHAPE)
    mask.heads[1, 2] = False
    mask.ffn[0, :5] = False
    ref = unshared_copy("albert", enc)
    attach_gates(ref, mask)
    attach_gates(enc, mask)
    want = hidden(ref)
    torch.testing.assert_close(hidden(enc), want, atol=1e-5, rtol=0)

    def fail_once(module, args):
        raise RuntimeError("stop")

    handle = role_modules(enc, "ffn_down")[0].register_forward_pre_hook(fail_once)
    with pytest.raises(RuntimeError):
        hidden(enc)  # stopped after the first layer's attention: the counters are mid-pass
    handle.remove()
    torch.testing.assert_close(hidden(enc), want, atol=1e-5, rtol=0)
