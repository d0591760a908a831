"""masks.agreement on hand-checked masks: Jaccard, Fleiss' kappa (and its degenerate cases), the stable mask."""

import pytest
import torch

from basics.errors import UserError
from masks.agreement import (
    agreement,
    fleiss_kappa,
    jaccard,
    mean_pairwise_jaccard,
    stable_mask,
    units,
)
from masks.arch import EncoderShape
from masks.mask import Mask

SHAPE = EncoderShape(num_layers=2, num_heads=2, head_dim=3, hidden=6, intermediate=3)

# 3 raters (seeds) x 4 subjects (units), 1 = kept.
RATERS = [[1, 1, 0, 0],
          [1, 0, 0, 0],
          [1, 1, 0, 1]]
# By hand: kept counts k = [3, 2, 0, 1], n = 3 raters.
#   P_i = (k^2 + (3-k)^2 - 3) / (3*2) = [6/6, 2/6, 6/6, 2/6]  ->  P = (1 + 1/3 + 1 + 1/3) / 4 = 2/3
#   p(kept) = 6 / 12 = 1/2  ->  P_e = 1/4 + 1/4 = 1/2
#   kappa = (2/3 - 1/2) / (1 - 1/2) = 1/3
KAPPA = 1 / 3


def mask(heads, ffn, seed="1") -> Mask:
    return Mask(torch.tensor(heads, dtype=torch.bool), torch.tensor(ffn, dtype=torch.bool),
                {"tasks": "rte", "model": "tiny", "shape": SHAPE.describe(), "kind": "good", "seed": seed})


def test_fleiss_kappa_hand_example_on_tensors_dicts_and_masks():
    tensors = [torch.tensor(r) for r in RATERS]
    assert fleiss_kappa(tensors) == pytest.approx(KAPPA)
    # unstructured per-weight masks: {name: bool tensor}, split differently, same units in sorted-name order
    dicts = [{"b.weight": torch.tensor(r[2:], dtype=torch.bool), "a.weight": torch.tensor([r[:2]])} for r in RATERS]
    assert fleiss_kappa(dicts) == pytest.approx(KAPPA)
    # structured: the 4 subjects are the heads of a [2, 2] mask; the FFN part differs
    masks = [mask([r[:2], r[2:]], [[1, 0, 1], [0, 0, 1]]) for r in RATERS]
    assert fleiss_kappa(masks, "heads") == pytest.approx(KAPPA)
    assert fleiss_kappa(masks, "ffn") == 1.0  # identical FFN masks using both categories: P = 1, P_e < 1


def test_fleiss_kappa_degenerate_and_chance_cases():
    ones = [torch.ones(5, dtype=torch.bool)] * 3
    zeros = [torch.zeros(5, dtype=torch.bool)] * 2
    assert fleiss_kappa(ones) == 1.0 and fleiss_kappa(zeros) == 1.0  # P_e = 1: defined as 1.0
    # two raters that always disagree, balanced categories: P = 0, P_e = 1/2 -> kappa = -1
    assert fleiss_kappa([torch.tensor([1, 0, 1, 0]), torch.tensor([0, 1, 0, 1])]) == pytest.approx(-1.0)
    with pytest.raises(UserError, match="at least 2 masks"):
        fleiss_kappa([torch.tensor([1, 0])])
    with pytest.raises(UserError, match="different numbers of units"):
        fleiss_kappa([torch.tensor([1, 0]), torch.tensor([1, 0, 1])])
    with pytest.raises(UserError, match="only 0/1"):
        fleiss_kappa([torch.tensor([1, 2]), torch.tensor([1, 0])])


def test_jaccard_by_hand():
    a, b = torch.tensor(RATERS[0]), torch.tensor(RATERS[2])
    assert jaccard(a, b) == pytest.approx(2 / 3)  # {0,1} vs {0,1,3}
    assert jaccard(torch.zeros(3), torch.zeros(3)) == 1.0  # neither keeps anything
    m1 = mask([[1, 1], [0, 0]], [[1, 0, 0], [0, 0, 0]])
    m2 = mask([[1, 0], [0, 1]], [[1, 1, 0], [0, 0, 0]])
    assert jaccard(m1, m2, "heads") == pytest.approx(1 / 3)
    assert jaccard(m1, m2, "ffn") == pytest.approx(1 / 2)
    assert jaccard(m1, m2) == pytest.approx(2 / 5) == m1.jaccard(m2)  # pooled, as Mask.jaccard
    tensors = [torch.tensor(r) for r in RATERS]
    assert mean_pairwise_jaccard(tensors) == pytest.approx((1 / 2 + 2 / 3 + 1 / 3) / 3)
    with pytest.raises(UserError, match="structured Masks"):
        jaccard(a, b, "heads")
    with pytest.raises(UserError, match="unknown mask part"):
        units(m1, "layers")


def test_stable_mask_is_the_intersection():
    masks = [mask([[1, 1], [0, 1]], [[1, 1, 0], [0, 1, 1]], "1"),
             mask([[1, 0], [1, 1]], [[1, 0, 1], [0, 1, 1]], "2"),
             mask([[1, 1], [1, 1]], [[1, 1, 1], [0, 1, 0]], "3")]
    stable = stable_mask(masks)
    assert stable.heads.tolist() == [[True, False], [False, True]]
    assert stable.ffn.tolist() == [[True, False, False], [False, True, False]]
    assert stable.meta.to_strings()["kind"] == "stable" and stable.meta.to_strings()["seeds"] == "1,2,3" and stable.meta.to_strings()["tasks"] == "rte"
    assert float(stable.meta.to_strings()["param_sparsity"]) == pytest.approx(stable.sparsity(SHAPE), abs=1e-4)
    tensors = [torch.tensor(r) for r in RATERS]
    assert stable_mask(tensors).tolist() == [True, False, False, False]
    dicts = [{"w": torch.tensor(r)} for r in RATERS]
    assert stable_mask(dicts)["w"].tolist() == [True, False, False, False]


def test_agreement_summary_per_part():
    masks = [mask([r[:2], r[2:]], [[1, 0, 1], [0, 0, 1]], str(i)) for i, r in enumerate(RATERS)]
    out = agreement(masks)
    assert set(out) == {"all", "heads", "ffn"}
    assert out["heads"]["kappa"] == pytest.approx(KAPPA)
    assert out["heads"]["intersection_over_union"] == pytest.approx(1 / 3)  # kept by all {0} / kept by any {0,1,3}
    assert out["ffn"]["jaccard"] == 1.0
    assert agreement(masks[:1])["all"] == {"jaccard": None, "kappa": None, "intersection_over_union": None}
