"""Masks: algebra, parameter counts, overlap, aggregation, files."""

import json

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load, save, save_file

from basics.errors import UserError
from basics.io import canonical_safetensors
from masks.aggregate import AggregateMode, aggregate, overlap_table, parse_mode
from masks.arch import EncoderShape
from masks.mask import Mask, load_mask, load_mask_file, save_mask, save_task_masks

SHAPE = EncoderShape(num_layers=2, num_heads=2, head_dim=3, hidden=6, intermediate=5)


def mask(heads, ffn, **meta) -> Mask:
    return Mask(torch.tensor(heads, dtype=torch.bool), torch.tensor(ffn, dtype=torch.bool), meta)


A = dict(heads=[[1, 1], [0, 0]], ffn=[[1, 0, 0, 0, 0], [0, 0, 0, 0, 0]])
B = dict(heads=[[0, 1], [1, 0]], ffn=[[1, 1, 0, 0, 0], [0, 0, 0, 0, 0]])
C = dict(heads=[[0, 1], [1, 1]], ffn=[[0, 1, 1, 0, 0], [0, 0, 0, 0, 1]])


def test_param_counts_by_hand():
    # per head 4*d*hidden + 3*d = 4*3*6 + 9 = 81; per neuron 2*hidden + 1 = 13
    m = mask([[1, 1], [1, 0]], [[1, 1, 1, 1, 0], [1, 1, 1, 0, 0]])
    assert m.param_counts(SHAPE) == (3 * 81 + 7 * 13, 4 * 81 + 10 * 13)
    assert m.sparsity(SHAPE) == pytest.approx(1 - 334 / 454)
    assert Mask.ones(SHAPE).sparsity(SHAPE) == 0.0
    assert (m.num_heads_kept, m.num_ffn_kept) == (3, 7)


def test_union_intersection_and_meta():
    a = mask(**A, tasks="rte", kind="winning", model="m", shape=SHAPE.describe())
    b = mask(**B, tasks="mrpc", kind="winning", model="m", shape=SHAPE.describe())
    u, i = a | b, a & b
    assert u.heads.tolist() == [[True, True], [True, False]]
    assert u.ffn[0].tolist() == [True, True, False, False, False]
    assert i.heads.tolist() == [[False, True], [False, False]]
    assert i.ffn[0].tolist() == [True, False, False, False, False]
    assert (u.meta.to_strings()["kind"], u.meta.to_strings()["tasks"], u.meta.to_strings()["model"]) == ("union", "rte,mrpc", "m")
    assert i.meta.to_strings()["kind"] == "intersection"
    assert float(u.meta.to_strings()["sparsity"]) == pytest.approx(u.sparsity(SHAPE), abs=1e-4)
    with pytest.raises(UserError, match="shapes differ"):
        a | Mask.ones(EncoderShape(3, 2, 3, 6, 5))


def test_jaccard_by_hand():
    a, b = mask(**A), mask(**B)
    # heads: a={0,1}, b={1,2} -> 1/3; ffn: a={0}, b={0,1} -> 1/2; pooled: 2/5
    assert a.jaccard_heads(b) == pytest.approx(1 / 3)
    assert a.jaccard_ffn(b) == pytest.approx(1 / 2)
    assert a.jaccard(b) == pytest.approx(2 / 5)
    assert a.jaccard(a) == 1.0
    empty = mask([[0, 0], [0, 0]], [[0] * 5, [0] * 5])
    assert empty.jaccard(empty) == 1.0
    table = overlap_table({"a": a, "b": b})
    assert table["a", "b"] == table["b", "a"] == pytest.approx(0.4) and table["a", "a"] == 1.0


def test_vote_union_intersection_aggregation():
    masks = {"a": mask(**A), "b": mask(**B), "c": mask(**C)}
    two = aggregate(masks, "vote:2")
    assert two.heads.tolist() == [[False, True], [True, False]]
    assert two.ffn.tolist() == [[True, True, False, False, False], [False] * 5]
    assert two.meta.to_strings()["tasks"] == "a,b,c" and two.meta.to_strings()["kind"] == "vote" and two.meta.to_strings()["aggregate"] == "vote:2"
    assert aggregate(masks, "union").same_units(masks["a"] | masks["b"] | masks["c"])
    assert aggregate(masks, "vote:1").same_units(aggregate(masks, "union"))
    assert aggregate(masks, "intersection").same_units(aggregate(masks, "vote:3"))
    assert aggregate(masks, "per-task") == masks
    for bad in ("vote:0", "vote:x", "vote:", "majority"):
        with pytest.raises(UserError):
            aggregate(masks, bad)
    with pytest.raises(UserError, match="1..3"):
        aggregate(masks, "vote:4")
    with pytest.raises(UserError, match="shapes differ"):
        aggregate({"a": masks["a"], "z": Mask.ones(EncoderShape(3, 2, 3, 6, 5))}, "per-task")
    assert parse_mode(" Vote:2 ") == AggregateMode("vote", 2) and str(parse_mode("vote:2")) == "vote:2"


def test_bad_mask_values_are_user_errors():
    with pytest.raises(UserError, match="0/1"):
        Mask(torch.full((2, 2), 0.5), torch.ones(2, 5))
    with pytest.raises(UserError, match="2-D"):
        Mask(torch.ones(2), torch.ones(2, 5))
    with pytest.raises(UserError, match="FFN layers"):
        Mask(torch.ones(2, 2), torch.ones(3, 5))
    assert Mask(torch.ones(2, 2, dtype=torch.uint8), torch.zeros(2, 5)).heads.dtype == torch.bool


def test_save_load_round_trip(tmp_path):
    m = mask(**A, kind="winning", sparsity="0.30", tasks="rte", model="tiny", shape=SHAPE.describe(), seed="3")
    path = tmp_path / "sub" / "mask.safetensors"
    save_mask(m, path)
    back = load_mask(path, expect_shape=SHAPE)
    assert back.same_units(m) and back.meta == m.meta
    assert load_mask_file(path).same_units(m)
    with safe_open(str(path), framework="pt") as f:
        assert f.get_tensor("heads").dtype == torch.uint8
        assert f.metadata()["mode"] == "single"
    assert [p.name for p in path.parent.iterdir()] == ["mask.safetensors"]  # atomic: no temp left


def _reorder_header(blob: bytes, reverse: bool) -> bytes:
    """``blob`` with its header's keys (metadata included) written in another order, as the writer's hash map may."""
    n = int.from_bytes(blob[:8], "little")
    header = json.loads(blob[8:8 + n])
    flip = (lambda d: dict(reversed(list(d.items())))) if reverse else (lambda d: d)
    header = flip({k: flip(v) if k == "__metadata__" else v for k, v in header.items()})
    text = json.dumps(header).encode() + b"   "
    text += b" " * (-len(text) % 8)
    return len(text).to_bytes(8, "little") + text + blob[8 + n:]


def test_canonical_safetensors_same_content_same_bytes():
    tensors = {"b": torch.arange(6, dtype=torch.float32).reshape(2, 3), "a": torch.ones(3, dtype=torch.uint8)}
    meta = {f"key{i}": f"value{i}" for i in range(20)}
    blob = save(tensors, metadata=meta)
    variants = [_reorder_header(blob, False), _reorder_header(blob, True)]
    assert variants[0] != variants[1]
    canon = {canonical_safetensors(v) for v in [blob, *variants]}
    assert len(canon) == 1
    (one,) = canon
    assert canonical_safetensors(one) == one  # idempotent
    assert int.from_bytes(one[:8], "little") % 8 == 0
    back = load(one)  # the reference reader: the same tensors and metadata
    assert set(back) == {"a", "b"} and all(torch.equal(back[k], tensors[k]) for k in tensors)
    header = json.loads(one[8:8 + int.from_bytes(one[:8], "little")])
    assert header["__metadata__"] == meta and list(header["__metadata__"]) == sorted(meta)


def test_saved_mask_bytes_do_not_depend_on_metadata_order(tmp_path):
    keys = dict(kind="winning", sparsity="0.30", tasks="rte", model="tiny", shape=SHAPE.describe(), seed="3")
    save_mask(mask(**A, **keys), tmp_path / "a.safetensors")
    save_mask(mask(**A, **dict(reversed(list(keys.items())))), tmp_path / "b.safetensors")
    assert (tmp_path / "a.safetensors").read_bytes() == (tmp_path / "b.safetensors").read_bytes()


def test_save_fills_required_metadata(tmp_path):
    m = Mask(torch.ones(2, 2), torch.zeros(2, 5))  # no meta, no shape
    save_mask(m, tmp_path / "m.safetensors")
    meta = load_mask(tmp_path / "m.safetensors").meta.to_strings()
    assert meta["kind"] == "custom" and meta["tasks"] == "" and meta["model"] == "unknown"
    assert meta["sparsity"] == f"{10 / 14:.4f}"  # unit fraction when the shape is unknown


def test_load_errors(tmp_path):
    with pytest.raises(UserError, match="not found"):
        load_mask(tmp_path / "nope.safetensors")
    junk = tmp_path / "junk.safetensors"
    junk.write_text("not a safetensors file")
    with pytest.raises(UserError, match="not a safetensors mask file"):
        load_mask(junk)
    partial = tmp_path / "partial.safetensors"
    save_file({"heads": torch.ones(2, 2, dtype=torch.uint8)}, str(partial))
    with pytest.raises(UserError, match=r"missing tensors \['ffn'\]"):
        load_mask(partial)
    good = tmp_path / "good.safetensors"
    save_mask(Mask.ones(SHAPE), good)
    with pytest.raises(UserError, match="mask is for L=2,H=2,I=5 but model is L=2,H=4,I=5"):
        load_mask(good, expect_shape=EncoderShape(2, 4, 3, 12, 5))
    with pytest.raises(UserError, match="mask is for L=2,H=2,d=3,hidden=6,I=5 but model is"):
        load_mask(good, expect_shape=EncoderShape(2, 2, 4, 8, 5))  # same unit counts, other sizes


def test_per_task_files(tmp_path):
    masks = {"rte": mask(**A, kind="winning", tasks="rte"), "mrpc": mask(**B, kind="winning", tasks="mrpc")}
    path = tmp_path / "tasks.safetensors"
    save_task_masks(masks, path, {"model": "tiny", "source": "super tickets"})
    back = load_mask_file(path)
    assert list(back) == ["rte", "mrpc"]
    for task in masks:
        assert back[task].same_units(masks[task]) and back[task].meta == masks[task].meta
    with safe_open(str(path), framework="pt") as f:
        assert set(f.keys()) == {"heads.rte", "ffn.rte", "heads.mrpc", "ffn.mrpc"}
        assert f.metadata()["mode"] == "per-task" and f.metadata()["tasks"] == "rte,mrpc"
        assert f.metadata()["source"] == "super tickets"
    with pytest.raises(UserError, match="per-task mask file.*load_mask_file"):
        load_mask(path)
    with pytest.raises(UserError, match="mask is for"):
        load_mask_file(path, expect_shape=EncoderShape(3, 2, 3, 6, 5))
    with pytest.raises(UserError, match="bad task name"):
        save_task_masks({"a,b": masks["rte"]}, tmp_path / "bad.safetensors")
    with pytest.raises(UserError, match="shapes differ"):
        save_task_masks({"a": masks["rte"], "b": Mask.ones(EncoderShape(3, 2, 3, 6, 5))}, tmp_path / "bad.safetensors")
