"""Task samplers: every batch holds one task; frequencies follow the strategy; seeded."""

from collections import Counter

import pytest
import torch

from basics.errors import UserError
from mtl.sampler import build_schedule, temperature_probs


def fake_batches(sizes):
    """task -> list of batches (each a list of example indices), n batches per task."""
    return {t: [[t_i * 1000 + b] for b in range(n)] for t_i, (t, n) in enumerate(sizes.items())}


SIZES = {"big": 60, "mid": 20, "small": 5}


def test_round_robin_alternates_then_drops_exhausted_tasks():
    sched = build_schedule("round-robin", fake_batches(SIZES), torch.Generator().manual_seed(0))
    tasks = [t for t, _ in sched]
    assert tasks[:6] == ["big", "mid", "small"] * 2
    assert Counter(tasks) == Counter(SIZES)  # every batch exactly once per epoch
    assert tasks[-40:] == ["big"] * 40  # once mid is exhausted only big remains


def test_proportional_uses_every_batch_once_in_random_order():
    batches = fake_batches(SIZES)
    sched = build_schedule("proportional", batches, torch.Generator().manual_seed(0))
    assert Counter(t for t, _ in sched) == Counter(SIZES)
    assert sorted(b[0] for _, b in sched) == sorted(b[0] for bs in batches.values() for b in bs)
    assert [t for t, _ in sched[:10]] != ["big"] * 10  # shuffled, not task by task


def test_temperature_frequencies_match_probabilities():
    sizes = {"big": 6000, "mid": 2000, "small": 500}
    batches = fake_batches({t: n // 10 for t, n in sizes.items()})
    counts = Counter()
    for seed in range(20):
        counts.update(t for t, _ in build_schedule("temperature", batches, torch.Generator().manual_seed(seed),
                                                    sizes=sizes, temp=2.0))
    total = sum(counts.values())
    probs = temperature_probs(sizes, 2.0)
    for task, p in probs.items():
        assert counts[task] / total == pytest.approx(p, abs=0.01)
    # T=2 flattens: small gets more than its proportional share
    assert probs["small"] > 500 / 8500


def test_temperature_one_is_proportional_and_large_t_uniform():
    sizes = {"a": 900, "b": 100}
    assert temperature_probs(sizes, 1.0) == pytest.approx({"a": 0.9, "b": 0.1})
    assert temperature_probs(sizes, 1e9) == pytest.approx({"a": 0.5, "b": 0.5}, abs=1e-6)


@pytest.mark.parametrize("strategy", ["round-robin", "proportional", "temperature"])
def test_schedules_are_seeded(strategy):
    batches = fake_batches(SIZES)
    a = build_schedule(strategy, batches, torch.Generator().manual_seed(3))
    b = build_schedule(strategy, batches, torch.Generator().manual_seed(3))
    assert a == b


def test_unknown_sampler_and_empty_task():
    with pytest.raises(UserError, match="round-robin"):
        build_schedule("zigzag", fake_batches(SIZES), torch.Generator())
    with pytest.raises(UserError, match="no training batches"):
        build_schedule("proportional", {"a": []}, torch.Generator())
