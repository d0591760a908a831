"""Tickets on a pre-training objective: BERT's masking rule, MLM importance (against finite differences) and
tickets on a tiny BertForMaskedLM, the one-line refusal of a checkpoint without MLM head, the self-distillation
ranking (zero loss and gradient at the dense start; the probe ranks units like their measured removal cost),
IMP on the objective, resuming, and the objective in the mask metadata."""

from __future__ import annotations

import json
import random

import pytest
import torch

from basics.errors import UserError
from commands.objective_tickets import main as objective_main
from masks.gates import attach_gates
from masks.mask import load_mask_file
from masks.meta import MaskMeta
from masks.weight_mask import load_weight_mask
from mtl.corpus import TokenizedCorpus
from mtl.objective import ObjectiveConfig, load_objective_model
from mtl.objective_loss import mlm_batches, mlm_loss, self_distill_loss
from mtl.objective_tickets import find_objective_tickets, score_objective
from tests.test_distill import save_tiny_mlm_model, save_tiny_model
from tests.tiny_run import WORDS

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    root = tmp_path_factory.mktemp("objective")
    save_tiny_mlm_model(root / "mlm")
    save_tiny_model(root / "base")
    rng = random.Random(0)
    (root / "corpus.txt").write_text("\n".join(" ".join(rng.choice(WORDS) for _ in range(rng.randint(4, 12)))
                                               for _ in range(120)), encoding="utf-8")
    return root


def config(root, **changes) -> ObjectiveConfig:
    values = dict(objective="mlm", model=str(root / "mlm"), corpus=[str(root / "corpus.txt")], max_texts=96,
                  batch_size=8, score_batches=3, max_seq_length=32, sparsities=[0.25, 0.5])
    return ObjectiveConfig(**{**values, **changes})


# ---- the masking rule ---------------------------------------------------------------------------------


def masked(seed: int):
    g = torch.Generator().manual_seed(99)
    ids = torch.randint(10, 1000, (400, 64), generator=g)
    ids[:, 0], ids[:, -1] = 2, 3  # CLS, SEP
    attention = torch.ones_like(ids)
    attention[:200, 40:] = 0  # padding
    ids[:200, 40:] = 0
    batch = {"input_ids": ids, "attention_mask": attention}
    (out,) = mlm_batches([batch], special=[0, 2, 3], mask_id=4, vocab=1000, seed=seed)
    return batch, out


def test_masking_rule_rate_split_specials_and_seed():
    batch, out = masked(seed=7)
    ids, labels = batch["input_ids"], out["labels"]
    candidates = (batch["attention_mask"] > 0) & (ids != 2) & (ids != 3)
    chosen = labels != -100
    assert not bool((chosen & ~candidates).any())  # never a special token or padding
    assert torch.equal(out["input_ids"][~chosen], ids[~chosen])  # unchosen tokens untouched
    assert torch.equal(labels[chosen], ids[chosen])  # the original token is the target
    n = int(candidates.sum())  # 200*38 + 200*62 = 20000 candidates
    assert abs(int(chosen.sum()) / n - 0.15) < 0.01
    new = out["input_ids"][chosen]
    as_mask = float((new == 4).float().mean())
    same = float((new == ids[chosen]).float().mean())
    other = 1 - as_mask - same
    assert abs(as_mask - 0.8) < 0.025 and abs(same - 0.1) < 0.02 and abs(other - 0.1) < 0.02
    _, again = masked(seed=7)
    _, other_seed = masked(seed=8)
    assert torch.equal(again["input_ids"], out["input_ids"]) and torch.equal(again["labels"], labels)
    assert not torch.equal(other_seed["labels"], labels)


# ---- mlm ------------------------------------------------------------------------------------------------


def test_mlm_importance_equals_finite_differences(root):
    cfg = config(root, score_batches=1)
    om = load_objective_model(cfg.model, "mlm")
    texts = [line for line in (root / "corpus.txt").read_text().splitlines()][:96]
    imp = score_objective(om, cfg, texts)
    assert imp.meta["objective"] == "mlm" and float(imp.heads_raw.min()) > 0
    # rebuild the one scoring batch and differentiate the loss numerically in two gates
    from mtl.corpus import BatchStream
    from mtl.objective import special_ids

    stream = iter(BatchStream(TokenizedCorpus.of(om.tokenizer, texts, cfg.max_seq_length), 8, cfg.seed))
    (batch,) = mlm_batches([next(stream)], special_ids(om.tokenizer), om.tokenizer.mask_token_id, len(om.tokenizer),
                           cfg.seed)
    gates, loss = attach_gates(om.encoder), mlm_loss(om.model)
    eps = 1e-3
    with torch.no_grad():
        for part, index, raw in (("heads", (1, 2), imp.heads_raw), ("ffn", (0, 5), imp.ffn_raw)):
            values = []
            for sign in (1, -1):
                getattr(gates, part)[index] = 1 + sign * eps
                gates.refresh()
                values.append(float(loss(batch)))
                getattr(gates, part)[index] = 1
                gates.refresh()
            assert abs((values[0] - values[1]) / (2 * eps)) == pytest.approx(float(raw[index]), rel=0.02, abs=1e-5)
    gates.remove()


def test_mlm_tickets_and_imp_on_a_tiny_masked_lm(root, tmp_path):
    cfg = config(root, imp_rounds=2, imp_rate=0.2, imp_steps=2)
    find_objective_tickets(cfg, tmp_path / "t")
    summary = json.loads((tmp_path / "t" / "objective.json").read_text())
    assert summary["config"]["objective"] == "mlm" and summary["corpus"] == "files:corpus.txt"
    win = load_mask_file(tmp_path / "t" / "masks" / "winning-0.50.safetensors")
    rnd = load_mask_file(tmp_path / "t" / "masks" / "random-0.50.safetensors")
    assert win.meta.objective == "mlm" and win.meta.kind == "winning"
    assert win.num_heads_kept == rnd.num_heads_kept == 6 and win.num_ffn_kept == rnd.num_ffn_kept
    assert not torch.equal(win.heads, rnd.heads) or not torch.equal(win.ffn, rnd.ffn)
    r1 = load_weight_mask(tmp_path / "t" / "weight_masks" / "imp-0.20.safetensors")
    r2 = load_weight_mask(tmp_path / "t" / "weight_masks" / "imp-0.40.safetensors")
    assert r1.meta["objective"] == "mlm" and r2.meta["round"] == "2"
    assert r1.sparsity == pytest.approx(0.2, abs=1e-3) and r2.sparsity == pytest.approx(0.4, abs=1e-3)
    for name, keep in r2.masks.items():  # a pruned weight is never revived
        assert not bool((keep & ~r1.masks[name]).any())
    assert [r["round"] for r in summary["imp"]] == [1, 2] and summary["imp"][0]["first_loss"] > 0


def test_mlm_without_head_is_one_line(root, tmp_path, capsys):
    rc = objective_main(["--objective", "mlm", "--model", str(root / "base"), "--corpus", str(root / "corpus.txt"),
                         "--output-dir", str(tmp_path / "x")])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and len(err.splitlines()) == 1
    assert "has no MLM head" in err and "self-distill" in err
    with pytest.raises(UserError, match="train.py"):
        ObjectiveConfig(objective="task")
    with pytest.raises(UserError, match="unknown ticket objective 'mlmx'"):
        ObjectiveConfig(objective="mlmx")


# ---- self-distill ---------------------------------------------------------------------------------------


def _spearman(a: torch.Tensor, b: torch.Tensor) -> float:
    ra, rb = a.flatten().argsort().argsort().float(), b.flatten().argsort().argsort().float()
    ra, rb = ra - ra.mean(), rb - rb.mean()
    return float((ra * rb).sum() / (ra.norm() * rb.norm()))


def test_self_distill_ranks_units_by_their_removal_cost(root):
    cfg = config(root, objective="self-distill", model=str(root / "base"), score_batches=40)
    om = load_objective_model(cfg.model, "self-distill")
    texts = (root / "corpus.txt").read_text().splitlines()[:96]
    batch = TokenizedCorpus.of(om.tokenizer, texts, 32).collate(range(96))
    loss = self_distill_loss(om.encoder, om.teacher)
    gates = attach_gates(om.encoder)
    gates.requires_grad_(True)
    value = loss(batch)  # the dense start: zero loss, zero gradient (a first-order score ranks nothing)
    grads = torch.autograd.grad(value, [gates.heads, gates.ffn])
    assert float(value.detach()) == pytest.approx(0.0, abs=1e-10) and all(float(g.abs().max()) < 1e-8 for g in grads)
    gates.requires_grad_(False)
    cost = {"heads": torch.zeros_like(gates.heads), "ffn": torch.zeros_like(gates.ffn)}
    with torch.no_grad():  # the measured removal cost of every head and FFN neuron
        for part, tensor in cost.items():
            for index in torch.cartesian_prod(*(torch.arange(n) for n in tensor.shape)).tolist():
                getattr(gates, part)[tuple(index)] = 0
                gates.refresh()
                tensor[tuple(index)] = float(loss(batch))
                getattr(gates, part)[tuple(index)] = 1
                gates.refresh()
    gates.remove()
    imp = score_objective(om, cfg, texts)
    assert imp.meta["objective"] == "self-distill"
    assert _spearman(imp.heads_raw, cost["heads"]) > 0.8
    assert _spearman(imp.ffn_raw, cost["ffn"]) > 0.8


def test_self_distill_tickets_resume_and_refuse_other_options(root, tmp_path):
    cfg = config(root, objective="self-distill", model=str(root / "base"), imp_rounds=1, imp_rate=0.3)
    find_objective_tickets(cfg, tmp_path / "t")
    summary = tmp_path / "t" / "objective.json"
    stamp = summary.stat().st_mtime_ns
    find_objective_tickets(cfg, tmp_path / "t")
    assert summary.stat().st_mtime_ns == stamp  # nothing redone
    assert load_mask_file(tmp_path / "t" / "masks" / "losing-0.25.safetensors").meta.objective == "self-distill"
    assert load_weight_mask(tmp_path / "t" / "weight_masks" / "imp-0.30.safetensors").meta["objective"] == "self-distill"
    with pytest.raises(UserError, match="other options .*seed"):
        find_objective_tickets(config(root, objective="self-distill", model=str(root / "base"), imp_rounds=1,
                                      imp_rate=0.3, seed=2), tmp_path / "t")


def test_objective_is_a_typed_mask_field():
    meta = MaskMeta(kind="winning", objective="self-distill")
    assert meta.to_strings()["objective"] == "self-distill"
    assert MaskMeta.from_strings(meta.to_strings()) == meta
    assert MaskMeta.from_strings({"kind": "winning"}).objective is None  # older files: task loss
    assert MaskMeta.merged([meta, meta.replace(kind="random")], "union").objective == "self-distill"
