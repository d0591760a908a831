"""Unstructured (per-weight) masks: which matrices are prunable, magnitude / random / IMP pruning, the
parametrization that holds pruned weights at 0, files, and a masked train.py run (rewinding, zeros kept
through real optimizer steps, checkpoint resume, one-line errors)."""

import json

import pytest
import torch

from basics.errors import UserError
from masks.arch import arch_for
from masks.magnitude import (
    imp_schedule,
    magnitude_mask,
    magnitude_mask_path,
    random_mask,
    write_magnitude_masks,
)
from masks.mask import Mask, save_mask
from masks.weight_mask import (
    DEFAULT_INCLUDE,
    WeightMask,
    applied_weight_mask,
    apply_weight_mask,
    load_weight_mask,
    prunable_weights,
    remove_weight_mask,
    save_weight_mask,
)
from mtl.checkpoint import load_checkpoint
from mtl.config import TrainConfig
from tests.conftest import COMPACT_ARCHS, tiny_bert, tiny_encoder, tiny_inputs
from tests.tiny_run import tiny_setup


def pruned(mask: WeightMask) -> int:
    return mask.total - mask.kept


# ---------------------------------------------------------------- which weights


@pytest.mark.parametrize("arch", COMPACT_ARCHS)
def test_prunable_weights_come_from_the_arch_table(arch):
    encoder = tiny_encoder(arch)
    spec = arch_for(encoder)
    weights = prunable_weights(encoder)
    per_layer = [n for n in weights if n.startswith(f"{spec.layers}.0.")]
    paths = list(dict.fromkeys(spec.path(r) for r in ("q", "k", "v", "attn_out", "ffn_up", "ffn_down")))  # fused once
    assert per_layer == [f"{spec.layers}.0.{p}.weight" for p in paths]
    assert len(paths) == (4 if spec.fused_qkv else 6)
    has_pooler = arch in ("bert", "roberta", "xlm-roberta", "mpnet")
    assert len(weights) == len(paths) * 2 + has_pooler  # 2 layers; the pooler where the family has one
    assert ("pooler.dense.weight" in weights) == (spec.pooler is not None) == has_pooler
    assert not any("embeddings" in n for n in weights)  # embeddings excluded by default
    assert all(w.dim() == 2 for w in weights.values())
    with_emb = prunable_weights(encoder, (*DEFAULT_INCLUDE, "embeddings"))
    assert any(n.startswith("embeddings.") and w.shape[0] == 99 for n, w in with_emb.items())  # the word embeddings
    assert list(prunable_weights(encoder, ("ffn_up",))) == [f"{spec.layers}.{i}.{spec.ffn_up}.weight" for i in range(2)]


def test_albert_has_no_per_weight_masks():
    with pytest.raises(UserError, match="per-weight masks: not supported for model_type 'albert'"):
        prunable_weights(tiny_encoder("albert"))


def test_roles_and_defaults_agree_with_the_train_config():
    assert tuple(TrainConfig().tickets.weight_mask_include) == DEFAULT_INCLUDE
    with pytest.raises(UserError, match="weight-mask-include must be one of"):
        TrainConfig.of(weight_mask_include=["qq"])
    with pytest.raises(UserError, match="unknown weight role"):
        prunable_weights(tiny_bert(), ("bias",))


# ---------------------------------------------------------------- scores -> masks


def test_magnitude_keeps_the_largest_weights_hand_checked():
    weights = {"a": torch.tensor([[0.5, -3.0], [0.1, 2.0]]), "b": torch.tensor([[-0.2, 1.0, 0.05]])}
    mask = magnitude_mask(weights, 3 / 7)  # prune round(3/7 * 7) = 3: |0.05|, |0.1|, |-0.2| (global ranking)
    assert mask.masks["a"].tolist() == [[True, True], [False, True]]
    assert mask.masks["b"].tolist() == [[False, True, False]]
    assert (mask.kept, mask.total) == (4, 7) and mask.meta["method"] == "omp"
    # ties: positions in order (matrices in the given order, row-major), earlier pruned first
    ties = magnitude_mask({"x": torch.ones(2, 2), "y": -torch.ones(1, 2)}, 0.5)  # 3 of 6 equal weights
    assert ties.masks["x"].tolist() == [[False, False], [False, True]] and ties.masks["y"].tolist() == [[True, True]]
    assert magnitude_mask(weights, 0.0).kept == 7
    with pytest.raises(UserError, match=r"sparsity must be in \[0, 1\), got 1.0"):
        magnitude_mask(weights, 1.0)


def test_magnitude_never_revives_pruned_weights():
    weights = {"a": torch.tensor([[9.0, 1.0, 2.0, 3.0]])}
    previous = WeightMask({"a": torch.tensor([[False, True, True, True]])})  # prunes the largest weight
    mask = magnitude_mask(weights, 0.5, previous)
    assert mask.masks["a"].tolist() == [[False, False, True, True]] and mask.meta["method"] == "imp"
    with pytest.raises(UserError, match="never revived"):
        magnitude_mask(weights, 0.0, previous)


def test_imp_rounds_keep_exactly_the_requested_sparsity_and_are_nested():
    encoder = tiny_bert()
    weights = prunable_weights(encoder)
    total = sum(w.numel() for w in weights.values())
    gen = torch.Generator().manual_seed(0)
    previous = None
    for sparsity in imp_schedule(0.2, 4):  # 0.2, 0.4, 0.6, 0.8 of the original count
        if previous is not None:  # "train": survivors move, pruned entries come back non-zero (original values)
            weights = {n: w + 0.05 * torch.randn(w.shape, generator=gen) for n, w in weights.items()}
        mask = magnitude_mask(weights, sparsity, previous)
        assert pruned(mask) == round(sparsity * total)
        if previous is not None:
            assert mask.is_subset_of(previous)
        previous = mask
    assert imp_schedule(0.1, 3) == [0.1, 0.2, 0.3]


def test_imp_schedule_stays_below_one():
    assert imp_schedule(0.2, 3) == [0.2, 0.4, 0.6]
    with pytest.raises(UserError, match="at most 3 rounds stay below 1"):
        imp_schedule(0.3, 4)
    with pytest.raises(UserError, match="--rate must be in"):
        imp_schedule(0.0, 2)


def test_random_mask_has_the_exact_count_and_is_seed_reproducible():
    shapes = {n: w.shape for n, w in prunable_weights(tiny_bert()).items()}
    total = sum(s.numel() for s in shapes.values())
    a, b, c = (random_mask(shapes, 0.37, seed) for seed in (1, 1, 2))
    assert pruned(a) == round(0.37 * total) == pruned(c)
    assert a.same_weights(b) and not a.same_weights(c)
    assert a.meta["method"] == "random" and a.meta["seed"] == "1"
    spread = a.matrix_sparsity()["encoder.layer.0.intermediate.dense.weight"]  # uniform: every matrix near 0.37
    assert 0.25 < spread < 0.5


# ---------------------------------------------------------------- applying


def test_all_ones_mask_changes_nothing_and_a_mask_equals_zeroed_weights():
    inputs = tiny_inputs(9, pad_from=5)
    dense, ref = tiny_bert(), tiny_bert()
    expected = ref(**inputs).last_hidden_state
    apply_weight_mask(dense, WeightMask.ones({n: w.shape for n, w in prunable_weights(dense).items()}))
    assert torch.equal(dense(**inputs).last_hidden_state, expected)

    masked, zeroed = tiny_bert(), tiny_bert()
    mask = magnitude_mask(prunable_weights(masked), 0.5)
    apply_weight_mask(masked, mask)
    with torch.no_grad():
        for name, w in prunable_weights(zeroed).items():
            w.mul_(mask.masks[name])
    torch.testing.assert_close(masked(**inputs).last_hidden_state, zeroed(**inputs).last_hidden_state, rtol=0, atol=0)
    assert applied_weight_mask(masked).same_weights(mask)
    key = "encoder.layer.0.attention.self.query"
    assert f"{key}.parametrizations.weight.original" in masked.state_dict()
    with pytest.raises(UserError, match="already has a weight mask"):
        apply_weight_mask(masked, mask)

    assert remove_weight_mask(masked) == len(mask.masks)  # baked: plain weights, pruned entries stored as 0
    assert f"{key}.weight" in masked.state_dict() and applied_weight_mask(masked) is None
    assert all(bool((w[~mask.masks[n]] == 0).all()) for n, w in prunable_weights(masked).items())
    torch.testing.assert_close(masked(**inputs).last_hidden_state, zeroed(**inputs).last_hidden_state, rtol=0, atol=0)


# ---------------------------------------------------------------- files


def test_save_load_round_trip(tmp_path):
    encoder = tiny_bert()
    mask = magnitude_mask(prunable_weights(encoder), 0.3, meta={"model": "tiny", "seed": "4", "round": "1"})
    save_weight_mask(mask, tmp_path / "m.safetensors")
    back = load_weight_mask(tmp_path / "m.safetensors", encoder)
    assert back.same_weights(mask) and list(back.masks) == list(mask.masks)
    assert {k: back.meta[k] for k in ("method", "model", "seed", "round")} == {"method": "omp", "model": "tiny",
                                                                                 "seed": "4", "round": "1"}
    assert float(back.meta["sparsity"]) == pytest.approx(mask.sparsity, abs=1e-6)
    assert not list(tmp_path.glob(".*.tmp"))  # atomic write left nothing behind


def one_line(exc: pytest.ExceptionInfo) -> str:
    message = str(exc.value)
    assert "\n" not in message
    return message


def test_bad_weight_mask_files_are_one_line_errors(tmp_path):
    encoder = tiny_bert()
    structured = tmp_path / "structured.safetensors"
    save_mask(Mask(torch.ones(2, 4), torch.ones(2, 37)), structured)
    (tmp_path / "text.safetensors").write_text("not a mask")
    other = tmp_path / "other.safetensors"  # made for a wider model
    save_weight_mask(magnitude_mask(prunable_weights(tiny_bert(hidden_size=64)), 0.3), other)
    cases = [(tmp_path / "missing.safetensors", "weight mask file not found"),
             (structured, "is a structured mask (heads and FFN neurons, for --mask), not a weight mask"),
             (tmp_path / "text.safetensors", "is not a safetensors weight mask file"),
             (other, ("does not fit the model: encoder.layer.0.attention.self.query.weight is [64, 64] in the mask "
                     "but [32, 32] in the model"))]
    for path, fragment in cases:
        with pytest.raises(UserError) as exc:
            load_weight_mask(path, encoder)
        assert fragment in one_line(exc)
    distil = tmp_path / "distil.safetensors"
    save_weight_mask(magnitude_mask(prunable_weights(tiny_encoder("distilbert")), 0.3), distil)
    with pytest.raises(UserError) as exc:
        load_weight_mask(distil, encoder)
    assert "does not fit the model: 12 of its 12 weights are not in BertModel" in one_line(exc)


# ---------------------------------------------------------------- in a training run


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    root = tmp_path_factory.mktemp("tiny")
    return root, tiny_setup(root, dropout=0.0)


def pretrained_weights(root):
    from mtl.model import load_encoder

    return prunable_weights(load_encoder(str(root / "model"))[0])


@pytest.fixture(scope="module")
def masked_run(tiny, tmp_path_factory):
    """One masked train.py run (real optimizer steps, model saved, next IMP round written), with the encoder's
    weights captured at the first training step."""
    import mtl.run
    from mtl.run import run_training
    from mtl.trainer import Trainer

    root, args = tiny
    tmp = tmp_path_factory.mktemp("masked")
    mask = random_mask({n: w.shape for n, w in pretrained_weights(root).items()}, 0.5, seed=3, meta={"round": "1"})
    save_weight_mask(mask, tmp / "mask.safetensors")
    captured = {}

    class Capturing(Trainer):
        def train(self, checkpoint=None):
            captured.update({n: w.clone() for n, w in prunable_weights(self.model.encoder).items()})
            return super().train(checkpoint)

    from basics.cli import config_parser, parse_config

    config, _ = parse_config(config_parser("t", "", TrainConfig), TrainConfig,
                             [*args, "--tasks", "tinysent", "--epochs", "2", "--lr", "1e-3", "--save-model",
                              "--weight-mask", str(tmp / "mask.safetensors"), "--write-magnitude-masks", "0.6,0.7",
                              "--output-dir", str(tmp / "run")])
    original = mtl.run.Trainer
    mtl.run.Trainer = Capturing
    try:
        result = run_training(config)
    finally:
        mtl.run.Trainer = original
    return root, tmp / "run", mask, captured, result


def test_masked_run_starts_from_the_pretrained_weights(masked_run):
    """Rewinding: at the first step the survivors hold the pre-trained values and the pruned weights are 0."""
    root, _, mask, captured, _ = masked_run
    for name, w in pretrained_weights(root).items():
        keep = mask.masks[name]
        assert torch.equal(captured[name][keep], w[keep]), name
        assert bool((captured[name][~keep] == 0).all()), name


def test_pruned_weights_stay_exactly_zero_through_training(masked_run):
    root, out, mask, _, result = masked_run
    assert result.result.optimizer_steps >= 20
    trained = prunable_weights(result.model.encoder)
    before = pretrained_weights(root)
    for name, w in trained.items():
        assert bool((w[~mask.masks[name]] == 0).all()), name
    assert any(not torch.equal(trained[n][mask.masks[n]], before[n][mask.masks[n]]) for n in trained)  # it trained
    record = json.loads((out / "results.json").read_text())["weight_mask"]
    assert (record["method"], record["kept"], record["total"]) == ("random", mask.kept, mask.total)
    assert record["sparsity"] == pytest.approx(0.5, abs=1e-4)
    # the saved model holds the zeros (the mask was baked in before saving)
    from transformers import AutoModel

    saved = prunable_weights(AutoModel.from_pretrained(out / "model" / "encoder"))
    assert all(torch.equal(saved[n], trained[n]) for n in trained)


def test_masked_run_writes_the_next_imp_round(masked_run):
    _, out, mask, _, result = masked_run
    for sparsity in (0.6, 0.7):
        nxt = load_weight_mask(magnitude_mask_path(out, "imp", sparsity))
        assert pruned(nxt) == round(sparsity * mask.total) and nxt.is_subset_of(mask)
        assert (nxt.meta["method"], nxt.meta["round"]) == ("imp", "2")
    assert result.result.magnitude_masks == [str(magnitude_mask_path(out, "imp", s)) for s in (0.6, 0.7)]


def test_dense_run_writes_omp_masks_of_its_weights(tmp_path):
    encoder = tiny_bert()
    paths = write_magnitude_masks(encoder, [0.2], tmp_path, include=("ffn_up", "ffn_down"), meta={"seed": "1"})
    mask = load_weight_mask(paths[0])
    assert paths[0] == tmp_path / "weight_masks" / "omp-0.20.safetensors"
    assert mask.same_weights(magnitude_mask(prunable_weights(encoder, ("ffn_up", "ffn_down")), 0.2))
    assert mask.meta["include"] == "ffn_up,ffn_down"


def test_resume_with_a_weight_mask_is_bitwise(tmp_path):
    """Checkpoints hold the parametrized weights; a crash then resume equals the uninterrupted run."""
    from tests.test_resume import small_trainer

    torch.set_num_threads(1)
    mask = magnitude_mask(prunable_weights(tiny_bert()), 0.4)

    def trainer(out):
        t = small_trainer(out)
        apply_weight_mask(t.model.encoder, mask)
        return t

    full = trainer(tmp_path / "full")
    expected = full.train()
    crashed = trainer(tmp_path / "crash")
    batches = iter(range(10**6))

    def before_batch(task):
        if crashed.model.training and next(batches) == 13:
            raise RuntimeError("crash")

    crashed.before_batch = before_batch
    with pytest.raises(RuntimeError):
        crashed.train()
    resumed = trainer(tmp_path / "crash")
    summary = resumed.train(load_checkpoint(tmp_path / "crash" / "checkpoint.pt"))
    assert summary["history"] == expected["history"]
    for (ka, a), (kb, b) in zip(resumed.model.state_dict().items(), full.model.state_dict().items(), strict=True):
        assert ka == kb and torch.equal(a, b)
    assert all(bool((w[~mask.masks[n]] == 0).all()) for n, w in prunable_weights(resumed.model.encoder).items())


def test_train_py_resume_with_a_weight_mask_ends_like_an_uninterrupted_run(tiny, tmp_path, monkeypatch):
    import train
    from mtl.trainer import Trainer

    root, args = tiny
    mask_path = tmp_path / "m.safetensors"
    save_weight_mask(random_mask({n: w.shape for n, w in pretrained_weights(root).items()}, 0.5, 2), mask_path)
    run = [*args, "--tasks", "tinysent", "--epochs", "3", "--checkpoint-every", "4", "--seed", "5", "--deterministic",
           "--weight-mask", str(mask_path), "--write-magnitude-masks", "0.6"]
    assert train.main([*run, "--output-dir", str(tmp_path / "reference")]) == 0

    out, calls, forward_backward = tmp_path / "crashed", iter(range(10**6)), Trainer._forward_backward

    def crash_at_batch_21(self, *a, **k):
        if next(calls) == 21:
            raise RuntimeError("crash")
        return forward_backward(self, *a, **k)

    monkeypatch.setattr(Trainer, "_forward_backward", crash_at_batch_21)
    with pytest.raises(RuntimeError, match="crash"):
        train.main([*run, "--output-dir", str(out)])
    monkeypatch.undo()
    assert load_checkpoint(out / "checkpoint.pt")["progress"]["opt_step"] == 20
    assert train.main(["--output-dir", str(out), "--resume"]) == 0
    for name in ("metrics.json", "metrics.jsonl"):
        assert (out / name).read_text() == (tmp_path / "reference" / name).read_text()
    nxt = [load_weight_mask(magnitude_mask_path(d, "imp", 0.6)) for d in (out, tmp_path / "reference")]
    assert nxt[0].same_weights(nxt[1])


def test_bad_weight_mask_stops_train_py_with_one_line_and_writes_nothing(tiny, tmp_path, capsys):
    import train

    root, args = tiny
    mask_path = tmp_path / "m.safetensors"
    save_weight_mask(random_mask({n: w.shape for n, w in pretrained_weights(root).items()}, 0.5, 1), mask_path)
    structured = tmp_path / "structured.safetensors"
    save_mask(Mask(torch.ones(2, 4), torch.ones(2, 37)), structured)
    cases = [(["--weight-mask", str(structured)], "is a structured mask"),
             (["--weight-mask", str(tmp_path / "nope.safetensors")], "weight mask file not found"),
             (["--weight-mask", str(mask_path), "--write-magnitude-masks", "0.3"], ("below the sparsity of the run's "
                                                                                    "weight mask (0.5000)"))]
    for extra, fragment in cases:
        out = tmp_path / "out"
        code = train.main([*args, "--tasks", "tinysent", "--epochs", "1", *extra, "--output-dir", str(out)])
        err = capsys.readouterr().err.strip().splitlines()
        assert code == 2 and len(err) == 1 and err[0].startswith("error: ") and fragment in err[0], err
        assert not out.exists()
