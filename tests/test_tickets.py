"""Tickets: winning keeps the top scores, losing the bottom, random matches the counts."""

import pytest
import torch

from basics.errors import UserError
from masks.arch import EncoderShape
from masks.importance import Importance, normalize
from masks.tickets import KINDS, cut_all, cut_ticket

SHAPE = EncoderShape(num_layers=3, num_heads=4, head_dim=8, hidden=32, intermediate=10)


def make_imp(heads: torch.Tensor | None = None, ffn_layer: list[float] | None = None) -> Importance:
    """Distinct scores: heads [3,4], ffn [3,10] (a fixed permutation), ffn_layer_raw [3,1]."""
    g = torch.Generator().manual_seed(0)
    if heads is None:
        heads = torch.randperm(12, generator=g).float().view(3, 4)
    ffn = torch.randperm(30, generator=g).float().view(3, 10)
    layer = torch.tensor(ffn_layer or [2.0, 0.5, 1.0]).view(3, 1)
    return Importance(heads, ffn, heads.clone(), ffn.clone(), layer, {"model": "tiny", "tasks": "rte"})


def pruned_set(keep: torch.Tensor) -> set[int]:
    return set((~keep).flatten().nonzero().flatten().tolist())


def test_winning_prunes_lowest_and_losing_prunes_highest():
    heads = torch.tensor([[0.0, 5, 9, 3], [8, 1, 6, 11], [4, 10, 2, 7]])  # lowest never fills a layer
    imp = make_imp(heads)
    win = cut_ticket(imp, "winning", 0.5, shape=SHAPE)
    lose = cut_ticket(imp, "losing", 0.5, shape=SHAPE)
    flat = heads.flatten()
    assert pruned_set(win.heads) == set(flat.argsort()[:6].tolist())  # scores 0..5
    assert pruned_set(lose.heads) == set(flat.argsort()[6:].tolist())  # scores 6..11
    ffn = imp.ffn.flatten()
    assert pruned_set(win.ffn) == set(ffn.argsort()[:15].tolist())
    assert pruned_set(lose.ffn) == set(ffn.argsort()[15:].tolist())
    assert win.heads[imp.heads >= 6].all() and not win.heads[imp.heads < 6].any()


def test_min_heads_per_layer_binds_and_count_stays_exact():
    heads = torch.tensor([[0.0, 1, 2, 3], [4, 8, 9, 10], [5, 6, 7, 11]])  # layer 0 holds the 4 lowest
    win = cut_ticket(make_imp(heads), "winning", 0.5, shape=SHAPE)
    assert win.heads.sum(1).tolist() == [1, 3, 2]
    assert pruned_set(win.heads) == {0, 1, 2, 4, 8, 9}  # 3 of layer 0, then scores 4, 5, 6
    lose = cut_ticket(make_imp(-heads), "losing", 0.5, shape=SHAPE)
    assert torch.equal(lose.heads, win.heads)  # same rule in the other direction
    none = cut_ticket(make_imp(heads), "winning", 0.5, shape=SHAPE, min_heads_per_layer=0)
    assert pruned_set(none.heads) == {0, 1, 2, 3, 4, 8}
    with pytest.raises(UserError, match="at most 9"):
        cut_ticket(make_imp(heads), "winning", 0.8, shape=SHAPE)  # 10 of 12 heads > 3 * (4 - 1)


@pytest.mark.parametrize("sparsity", [0.0, 0.25, 0.5, 0.7])
def test_random_matches_winning_counts(sparsity):
    imp = make_imp()
    win = cut_ticket(imp, "winning", sparsity, shape=SHAPE, ffn_sparsity=0.3)
    for seed in range(5):
        rnd = cut_ticket(imp, "random", sparsity, shape=SHAPE, ffn_sparsity=0.3, seed=seed)
        assert rnd.num_heads_kept == win.num_heads_kept == 12 - round(sparsity * 12)
        assert rnd.num_ffn_kept == win.num_ffn_kept == 30 - 9
        assert bool((rnd.heads.sum(1) >= 1).all())
        assert rnd.meta.to_strings()["kind"] == "random" and rnd.meta.to_strings()["seed"] == str(seed)


def test_random_is_seeded_and_seeds_differ():
    imp = make_imp()
    a = cut_ticket(imp, "random", 0.5, shape=SHAPE, seed=7)
    b = cut_ticket(imp, "random", 0.5, shape=SHAPE, seed=7)
    c = cut_ticket(imp, "random", 0.5, shape=SHAPE, seed=8)
    assert a.same_units(b)
    assert not a.same_units(c)
    state = torch.random.get_rng_state()
    cut_ticket(imp, "random", 0.5, shape=SHAPE, seed=9)
    assert torch.equal(torch.random.get_rng_state(), state)  # global RNG untouched


def test_ties_are_broken_by_position():
    imp = make_imp(torch.zeros(3, 4))
    win = cut_ticket(imp, "winning", 0.5, shape=SHAPE)
    assert pruned_set(win.heads) == {0, 1, 2, 4, 5, 6}  # flat order, at most 3 per layer
    lose = cut_ticket(imp, "losing", 0.5, shape=SHAPE)
    assert torch.equal(lose.heads, win.heads)


def test_layer_granularity_prunes_whole_ffn_layers():
    imp = make_imp(ffn_layer=[2.0, 0.5, 1.0])
    win = cut_ticket(imp, "winning", 0.5, shape=SHAPE, ffn_sparsity=0.4, granularity="layer")
    assert win.ffn.all(1).tolist() == [True, False, True]  # round(0.4 * 3) = 1 layer: the lowest
    assert win.ffn.any(1).tolist() == [True, False, True]
    lose = cut_ticket(imp, "losing", 0.5, shape=SHAPE, ffn_sparsity=0.4, granularity="layer")
    assert lose.ffn.all(1).tolist() == [False, True, True]
    rnd = cut_ticket(imp, "random", 0.5, shape=SHAPE, ffn_sparsity=0.7, granularity="layer", seed=3)
    assert rnd.ffn.all(1).sum() == 1 and (rnd.ffn.all(1) == rnd.ffn.any(1)).all()
    assert win.meta.to_strings()["granularity"] == "layer"


def test_meta_and_param_sparsity():
    imp = make_imp()
    mask = cut_ticket(imp, "winning", 0.3, shape=SHAPE, seed=4, meta={"run": "x"})
    assert mask.meta.to_strings()["sparsity"] == "0.30" and mask.meta.to_strings()["kind"] == "winning"
    assert mask.meta.to_strings()["model"] == "tiny" and mask.meta.to_strings()["tasks"] == "rte" and mask.meta.to_strings()["run"] == "x"
    assert mask.meta.to_strings()["shape"] == SHAPE.describe() and mask.meta.to_strings()["granularity"] == "neuron"
    assert float(mask.meta.to_strings()["param_sparsity"]) == pytest.approx(mask.sparsity(SHAPE), abs=1e-4)
    assert mask.num_heads_kept == 12 - 4 and mask.num_ffn_kept == 30 - 9  # round(3.6)=4, round(9)=9


def test_bad_inputs_are_user_errors():
    imp = make_imp()
    for bad in (1.0, -0.1, 1.5):
        with pytest.raises(UserError, match=r"in \[0, 1\)"):
            cut_ticket(imp, "winning", bad, shape=SHAPE)
    with pytest.raises(UserError, match="ffn_sparsity"):
        cut_ticket(imp, "winning", 0.1, shape=SHAPE, ffn_sparsity=1.0)
    with pytest.raises(UserError, match="valid: winning, random, losing"):
        cut_ticket(imp, "best", 0.1, shape=SHAPE)
    with pytest.raises(UserError, match="granularity"):
        cut_ticket(imp, "winning", 0.1, shape=SHAPE, granularity="block")
    with pytest.raises(UserError, match="needs"):
        cut_ticket(imp, "winning", 0.1, shape=EncoderShape(2, 4, 8, 32, 10))


def test_cut_all_covers_every_kind_and_sparsity():
    masks = cut_all(make_imp(), [0.1, 0.5], shape=SHAPE, seed=1)
    assert set(masks) == {(k, s) for k in KINDS for s in (0.1, 0.5)}
    assert masks["random", 0.5].num_heads_kept == masks["winning", 0.5].num_heads_kept


def skewed_imp() -> Importance:
    """FFN scores whose scale grows with the layer (layer 0 small, layer 2 large), ranks shuffled inside."""
    g = torch.Generator().manual_seed(1)
    ffn = torch.stack([(layer + 1) ** 3 * (1 + torch.randperm(10, generator=g).float()) for layer in range(3)])
    heads = torch.arange(12.0).view(3, 4)
    return Importance(heads, ffn, heads.clone(), ffn.clone(), torch.ones(3, 1), {"model": "tiny"})


def test_global_allocation_follows_the_score_scale():
    mask = cut_ticket(skewed_imp(), "winning", 0.5, shape=SHAPE)  # 15 of 30 neurons
    assert mask.ffn.sum(1).tolist() == [0, 6, 9]  # layer 0 (smallest scores) loses everything first


@pytest.mark.parametrize("kind", KINDS)
def test_per_layer_allocation_prunes_the_same_fraction_in_every_layer(kind):
    imp = skewed_imp()
    mask = cut_ticket(imp, kind, 0.3, shape=SHAPE, ffn_allocation="per-layer", seed=2)
    assert mask.ffn.sum(1).tolist() == [7, 7, 7]  # round(0.3 * 10) = 3 pruned per layer
    assert mask.meta.extra["ffn_allocation"] == "per-layer"
    if kind != "random":
        for layer in range(3):  # ranked within the layer: the 3 lowest (winning) / highest (losing) go
            order = imp.ffn[layer].argsort(descending=kind == "losing")
            assert pruned_set(mask.ffn[layer]) == set(order[:3].tolist())
    with pytest.raises(UserError, match="needs granularity 'neuron'"):
        cut_ticket(imp, kind, 0.3, shape=SHAPE, ffn_allocation="per-layer", granularity="layer")
    with pytest.raises(UserError, match="valid: global, per-layer"):
        cut_ticket(imp, kind, 0.3, shape=SHAPE, ffn_allocation="uniform")


def test_layer_l2_normalised_ffn_scores_spread_global_pruning():
    imp = skewed_imp()
    imp.ffn = normalize(imp.ffn_raw, "layer_l2")
    mask = cut_ticket(imp, "winning", 0.5, shape=SHAPE)
    kept = mask.ffn.sum(1).tolist()
    assert sum(kept) == 15 and min(kept) >= 3  # no layer emptied once the scales are equal


def test_every_shipped_config_states_its_scoring_choices():
    """The importance estimator and the FFN allocation are protocol choices: every experiments/*.yaml names them."""
    from tests.conftest import REPO

    for path in sorted((REPO / "experiments").glob("*.yaml")):
        text = path.read_text(encoding="utf-8")
        assert "ffn_allocation" in text and ("importance_abs" in text or "do not apply" in text), path.name
