"""Importance = |dL/dgate|: checked against finite differences of the loss, state restored."""

import copy

import pytest
import torch
from torch import nn

from basics.errors import UserError
from masks.arch import EncoderShape, role_modules, shape_of
from masks.gates import attach_gates, find_gates
from masks.importance import ImportanceConfig, compute_importance, load_importance, save_importance
from masks.mask import Mask, save_mask
from tests.conftest import TINY_ARCHS, tiny_encoder, unshared_copy

SHAPE = EncoderShape(2, 4, 8, 32, 37)


class Classifier(nn.Module):
    """Encoder + linear head on the first token; the `model` that contains `encoder`."""

    def __init__(self, encoder: nn.Module) -> None:
        super().__init__()
        self.encoder = encoder
        self.head = nn.Linear(32, 3)

    def loss(self, batch: dict, reduction: str = "mean") -> torch.Tensor:
        h = self.encoder(input_ids=batch["input_ids"]).last_hidden_state  # [B, T, hidden]
        logits = self.head(h[:, 0])  # [B, 3]
        return nn.functional.cross_entropy(logits, batch["labels"], reduction=reduction)


def make_model(arch: str = "bert", dtype: torch.dtype = torch.float32) -> Classifier:
    torch.manual_seed(0)
    return Classifier(tiny_encoder(arch, dropout=0.3)).to(dtype).train()


def make_batches(n: int, size: int = 4) -> list[dict]:
    g = torch.Generator().manual_seed(5)
    return [
        {
            "input_ids": torch.randint(3, 99, (size, 6), generator=g),
            "labels": torch.randint(0, 3, (size,), generator=g),
        }
        for _ in range(n)
    ]


def split(batch: dict) -> list[dict]:
    return [{k: v[i:i + 1] for k, v in batch.items()} for i in range(len(batch["labels"]))]


def eval_copy(model: Classifier, arch: str) -> Classifier:
    """An eval-mode copy of ``model`` whose layers are distinct modules (ALBERT's shared layer unshared,
    :func:`tests.conftest.unshared_copy`), for perturbing one layer's weights."""
    ref = copy.deepcopy(model).eval()
    ref.encoder = unshared_copy(arch, model.encoder).eval()
    return ref


def fd_slope(ref: Classifier, batch: dict, role: str, layer: int, cols: slice, eps: float = 1e-4) -> float:
    """dL/dg by central differences, gating = scaling input columns of one layer's projection weight
    (``ref`` from :func:`eval_copy`; its weights are restored afterwards)."""
    weight = role_modules(ref.encoder, role)[layer].weight  # [hidden, H*d] or [hidden, I]
    original = weight.detach().clone()
    losses = []
    with torch.no_grad():
        for g in (1 + eps, 1 - eps):
            weight[:, cols] *= g
            losses.append(ref.loss(batch).item())
            weight.copy_(original)
    return (losses[0] - losses[1]) / (2 * eps)


@pytest.mark.parametrize("arch", TINY_ARCHS)
def test_raw_scores_equal_finite_differences(arch):
    """For every family, ALBERT's per-layer gates on shared weights and DeBERTa / ModernBERT / MPNet included."""
    model = make_model(arch, torch.float64)
    batch = make_batches(1)[0]
    cfg = ImportanceConfig(normalize_heads="none")
    imp = compute_importance(model, model.encoder, [batch], model.loss, cfg)
    ref = eval_copy(model, arch)
    d = SHAPE.head_dim
    for layer in range(SHAPE.num_layers):
        for head in range(SHAPE.num_heads):
            want = abs(fd_slope(ref, batch, "attn_out", layer, slice(head * d, (head + 1) * d)))
            assert imp.heads_raw[layer, head].item() == pytest.approx(want, rel=1e-3, abs=1e-10)
        for neuron in (0, 17, 36):
            want = abs(fd_slope(ref, batch, "ffn_down", layer, slice(neuron, neuron + 1)))
            assert imp.ffn_raw[layer, neuron].item() == pytest.approx(want, rel=1e-3, abs=1e-10)
        want = abs(fd_slope(ref, batch, "ffn_down", layer, slice(None)))  # whole-FFN gate
        assert imp.ffn_layer_raw[layer, 0].item() == pytest.approx(want, rel=1e-3, abs=1e-10)
    torch.testing.assert_close(imp.heads, imp.heads_raw)  # normalize_heads="none"


def test_state_is_restored_and_no_weight_grads():
    model = make_model()
    model.encoder.embeddings.requires_grad_(False)
    flags = {n: p.requires_grad for n, p in model.named_parameters()}
    imp = compute_importance(model, model.encoder, make_batches(2), model.loss)
    assert {n: p.requires_grad for n, p in model.named_parameters()} == flags
    assert all(p.grad is None for p in model.parameters())
    assert all(m.training for m in model.modules())
    assert find_gates(model.encoder) is None
    assert imp.heads.shape == (2, 4) and imp.ffn.shape == (2, 37) and imp.ffn_layer_raw.shape == (2, 1)
    assert imp.meta["num_batches"] == "2" and imp.meta["shape"] == SHAPE.describe()
    again = compute_importance(model, model.encoder, make_batches(2), model.loss)  # dropout is off
    torch.testing.assert_close(again.heads_raw, imp.heads_raw, atol=0, rtol=0)


def test_layer_l2_normalisation_and_batch_accumulation():
    model = make_model()
    batches = make_batches(3)
    imp = compute_importance(model, model.encoder, batches, model.loss, ImportanceConfig(max_batches=2))
    parts = [compute_importance(model, model.encoder, [b], model.loss) for b in batches[:2]]
    torch.testing.assert_close(imp.heads_raw, parts[0].heads_raw + parts[1].heads_raw)
    torch.testing.assert_close(imp.ffn_layer_raw, parts[0].ffn_layer_raw + parts[1].ffn_layer_raw)
    torch.testing.assert_close(imp.heads.norm(dim=1), torch.ones(2))
    torch.testing.assert_close(imp.ffn, imp.ffn_raw)  # normalize_ffn="none" by default
    assert imp.meta["num_batches"] == "2"


def test_per_example_abs_bounds_per_batch_abs():
    model = make_model()
    batches = make_batches(2)
    loss = lambda b: model.loss(b, reduction="sum")  # noqa: E731
    per_batch = compute_importance(model, model.encoder, batches, loss)
    per_example = compute_importance(
        model, model.encoder, batches, loss, ImportanceConfig(abs_per="example"), split_batch=split
    )
    for name in ("heads_raw", "ffn_raw", "ffn_layer_raw"):
        ex, ba = getattr(per_example, name), getattr(per_batch, name)
        assert bool((ex >= ba - 1e-6).all()), name
        assert bool((ex > ba + 1e-6).any()), name  # signs differ across examples somewhere
    assert per_example.meta["num_loss_terms"] == "8"
    with pytest.raises(UserError, match="split_batch"):
        compute_importance(model, model.encoder, batches, loss, ImportanceConfig(abs_per="example"))


def direct_token_scores(model: Classifier, batches: list[dict]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Σ over examples and tokens of |∂loss(example)/∂g at the token|, computed one example at a time:
    the gated inputs ``x`` ([1, T, H*d] / [1, T, I]) are captured with ``retain_grad`` and each token's
    share of ∂L/∂g is ``⟨∂L/∂x, x⟩`` over the unit's channels. No gates, no probes."""
    d, L = SHAPE.head_dim, SHAPE.num_layers
    heads, ffn, layer = torch.zeros(L, SHAPE.num_heads), torch.zeros(L, SHAPE.intermediate), torch.zeros(L, 1)
    model = copy.deepcopy(model).eval()
    for example in (e for b in batches for e in split(b)):
        seen: dict[tuple[str, int], torch.Tensor] = {}

        def keep(role: str, layers: list[int]):
            calls = iter(layers)  # a module shared by several layers (ALBERT) runs once per layer, in order

            def hook(module, args):
                x = args[0] * 1.0  # a non-leaf copy whose .grad we keep
                x.retain_grad()
                seen[role, next(calls)] = x
                return (x, *args[1:])
            return hook

        handles = []
        for role in ("attn_out", "ffn_down"):
            modules = role_modules(model.encoder, role)
            for m in dict.fromkeys(modules):
                handles.append(m.register_forward_pre_hook(keep(role, [i for i, n in enumerate(modules) if n is m])))
        model.loss(example, reduction="sum").backward()
        for h in handles:
            h.remove()
        for i in range(L):
            x = seen["attn_out", i]  # [1, T, H*d]
            share = (x.grad * x).view(*x.shape[:2], SHAPE.num_heads, d).sum(-1)  # [1, T, H]
            heads[i] += share.abs().sum((0, 1)).detach()
            x = seen["ffn_down", i]  # [1, T, I]
            share = (x.grad * x)  # [1, T, I]
            ffn[i] += share.abs().sum((0, 1)).detach()
            layer[i] += share.sum(-1).abs().sum().detach()
    return heads, ffn, layer


@pytest.mark.parametrize("arch", TINY_ARCHS)
def test_token_estimator_equals_direct_per_example_per_token_computation(arch):
    model = make_model(arch, torch.float64)
    batches = make_batches(2)
    loss = lambda b: model.loss(b, reduction="sum")  # noqa: E731 - the batch loss is the sum of the examples'
    imp = compute_importance(model, model.encoder, batches, loss,
                             ImportanceConfig(abs_per="token", normalize_heads="none"))
    heads, ffn, layer = direct_token_scores(model.double(), batches)
    torch.testing.assert_close(imp.heads_raw, heads.float(), rtol=1e-4, atol=1e-7)
    torch.testing.assert_close(imp.ffn_raw, ffn.float(), rtol=1e-4, atol=1e-7)
    torch.testing.assert_close(imp.ffn_layer_raw, layer.float(), rtol=1e-4, atol=1e-7)
    assert imp.meta["abs_per"] == "token" and imp.meta["num_loss_terms"] == "2"
    assert all(p.grad is None for p in model.parameters())
    # |.| taken later keeps more: token >= example >= batch, unit by unit, and strictly somewhere
    per_example = compute_importance(model, model.encoder, batches, loss, ImportanceConfig(abs_per="example"),
                                     split_batch=split)
    per_batch = compute_importance(model, model.encoder, batches, loss)
    for name in ("heads_raw", "ffn_raw", "ffn_layer_raw"):
        tok, ex, ba = getattr(imp, name), getattr(per_example, name), getattr(per_batch, name)
        assert bool((tok >= ex - 1e-6).all()) and bool((ex >= ba - 1e-6).all()), name
        assert bool((tok > ex + 1e-6).any()), name


def test_token_probes_sum_to_the_gate_gradient_under_a_mask():
    model = make_model()
    batch = make_batches(1)[0]
    mask = Mask.ones(SHAPE)
    mask.heads[1, 2] = False
    mask.ffn[0, :5] = False
    gates = attach_gates(model.encoder, mask)
    gates.requires_grad_(True)
    gates.start_probes()
    loss = model.loss(batch)
    probes = gates.stop_probes()
    grads = torch.autograd.grad(loss, [gates.heads, gates.ffn, *(p for _, _, p in probes)])
    by = {(kind, i): g for (kind, i, _), g in zip(probes, grads[2:])}
    for i in range(SHAPE.num_layers):
        torch.testing.assert_close(by["heads", i].sum((0, 1)), grads[0][i])
        torch.testing.assert_close(by["ffn", i].sum((0, 1)), grads[1][i])
    assert by["heads", 1].abs().sum((0, 1))[2] > 0  # a masked unit still has its gradient share
    assert gates.stop_probes() == []
    gates.remove()


def test_all_reduce_hook_and_existing_masked_gates():
    model = make_model()
    batches = make_batches(1)
    base = compute_importance(model, model.encoder, batches, model.loss)
    doubled = compute_importance(model, model.encoder, batches, model.loss, all_reduce=lambda t: 2 * t)
    torch.testing.assert_close(doubled.heads_raw, 2 * base.heads_raw)
    torch.testing.assert_close(doubled.heads, base.heads)  # normalisation after the reduce

    mask = Mask.ones(SHAPE)
    mask.heads[0, 0] = False
    gates = attach_gates(model.encoder, mask)
    masked = compute_importance(model, model.encoder, batches, model.loss)
    assert find_gates(model.encoder) is gates and not gates.requires_grad
    assert masked.meta["gated"] == "mask"
    assert not torch.allclose(masked.heads_raw, base.heads_raw)


def test_config_and_input_errors():
    with pytest.raises(UserError, match="abs_per must be one of batch, example, token"):
        ImportanceConfig(abs_per="word")
    with pytest.raises(UserError, match="normalize_heads"):
        ImportanceConfig(normalize_heads="l1")
    with pytest.raises(UserError, match="max_batches"):
        ImportanceConfig(max_batches=0)
    model = make_model()
    with pytest.raises(UserError, match="no batches"):
        compute_importance(model, model.encoder, [], model.loss)
    assert all(p.requires_grad for p in model.parameters())  # restored after the error


def test_save_load_round_trip_and_errors(tmp_path):
    model = make_model()
    imp = compute_importance(model, model.encoder, make_batches(1), model.loss, meta={"tasks": "rte"})
    path = tmp_path / "importance.safetensors"
    save_importance(imp, path)
    back = load_importance(path, expect_shape=shape_of(model.encoder))
    for name in ("heads", "ffn", "heads_raw", "ffn_raw", "ffn_layer_raw"):
        torch.testing.assert_close(getattr(back, name), getattr(imp, name), atol=0, rtol=0)
    assert back.meta == imp.meta and back.meta["tasks"] == "rte"
    assert [p.name for p in tmp_path.iterdir()] == ["importance.safetensors"]  # no temp files left
    with pytest.raises(UserError, match=r"^importance: heads has shape \(2, 4\), but the model \(L=3,H=4,d=8,"
                                        r"hidden=32,I=37\) needs \(3, 4\)$"):
        load_importance(path, expect_shape=EncoderShape(3, 4, 8, 32, 37))
    with pytest.raises(UserError, match="not found"):
        load_importance(tmp_path / "missing.safetensors")
    save_mask(Mask.ones(SHAPE), tmp_path / "mask.safetensors")
    with pytest.raises(UserError, match="not an importance file"):
        load_importance(tmp_path / "mask.safetensors")
