"""Batching and padding: length grouping covers every example once, collate pads correctly."""

import torch

from mtl.data import TokenizedSplit, collate, eval_batches, length_grouped_batches


def make_split(lengths, with_types=True):
    ids = [torch.arange(1, n + 1, dtype=torch.int32) for n in lengths]
    types = [torch.ones(n, dtype=torch.int8) for n in lengths] if with_types else None
    return TokenizedSplit("t", "train", ids, types, torch.arange(len(lengths)), torch.tensor(lengths))


def test_length_grouped_batches_cover_every_index_once_and_reduce_padding():
    gen_lengths = torch.randint(5, 128, (1000,), generator=torch.Generator().manual_seed(0))
    batches = length_grouped_batches(gen_lengths, 16, torch.Generator().manual_seed(1))
    flat = sorted(i for b in batches for i in b)
    assert flat == list(range(1000))
    plain = length_grouped_batches(gen_lengths, 16, torch.Generator().manual_seed(1), group_by_length=False)

    def padded(bs):
        return sum(len(b) * int(gen_lengths[b].max()) for b in bs)

    assert padded(batches) < 0.7 * padded(plain)


def test_batches_change_with_seed_and_repeat_with_same_seed():
    lengths = torch.randint(5, 50, (200,), generator=torch.Generator().manual_seed(0))
    a = length_grouped_batches(lengths, 8, torch.Generator().manual_seed(1))
    b = length_grouped_batches(lengths, 8, torch.Generator().manual_seed(1))
    c = length_grouped_batches(lengths, 8, torch.Generator().manual_seed(2))
    assert a == b and a != c


def test_collate_pads_to_longest_and_masks():
    split = make_split([3, 5, 2])
    batch = collate(split, [0, 1, 2], pad_id=0)
    assert batch["input_ids"].shape == (3, 5)
    assert batch["attention_mask"].sum(1).tolist() == [3, 5, 2]
    assert batch["input_ids"][2].tolist() == [1, 2, 0, 0, 0]
    assert batch["token_type_ids"][0].tolist() == [1, 1, 1, 0, 0]
    assert batch["labels"].tolist() == [0, 1, 2]
    assert "token_type_ids" not in collate(make_split([2, 3], with_types=False), [0, 1], pad_id=0)


def test_eval_batches_sorted_and_complete():
    lengths = torch.tensor([4, 9, 1, 7, 3])
    batches = eval_batches(lengths, 2)
    assert [i for b in batches for i in b] == [1, 3, 0, 4, 2]


def test_take_subset_random_is_fixed_spread_and_in_file_order():
    from mtl.run import take_subset

    split = make_split(list(range(3, 203)))
    a = take_subset(split, 50, "random")
    b = take_subset(split, 50, "random")
    idx = a.labels.tolist()
    assert idx == b.labels.tolist() and idx == sorted(idx) and len(set(idx)) == 50
    assert max(idx) > 150  # not the first rows
    assert take_subset(split, 50, "first").labels.tolist() == list(range(50))
    assert take_subset(split, 500, "random") is split
