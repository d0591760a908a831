"""Sub-architecture extraction: at full size it is the teacher; cutting layers, heads, neurons and hidden
dimensions equals gating them (the hidden dimensions by the gated LayerNorm); it reloads with AutoModel;
the analytic parameter and operation counts match the model and a hand count."""

from __future__ import annotations

import pytest
import torch
from transformers import AutoModel

from basics.errors import UserError
from masks.arch import shape_of
from masks.auto_classes import register_auto_classes
from masks.compact import compact_encoder
from masks.cost import EncoderSize, count_params, ops_per_token, param_counts
from masks.extract import extract_encoder
from masks.gates import attach_gates
from masks.hidden_gates import HiddenGates
from masks.importance import Importance
from masks.layer_gates import LayerGates
from masks.mask import Mask, save_mask
from masks.subarch import LAYER_CHOICES, Selection, SubArch, even_layers, select, top
from masks.subarch_importance import SubarchScores, load_scores, save_scores, score_subarch, with_task_units
from tests.conftest import tiny_encoder, tiny_inputs

# the families hidden-dimension extraction knows (masks/residual.py); the others are refused in one line
SUBARCH_ARCHS = ("bert", "roberta", "electra", "distilbert")


pytestmark = pytest.mark.usefixtures("one_thread")


# layers 0 and 2 of 3; 2 of 4 heads; 19 and 25 of 37 neurons; 15 of 32 hidden dims (15 is no multiple of 4 heads)
SELECTION = Selection((0, 2), ((1, 3), (0, 2)), (tuple(range(0, 37, 2)), tuple(range(5, 30))),
                      (0, 3, 5, 7, 8, 10, 11, 12, 15, 16, 20, 21, 22, 25, 30))


def outputs(model, inputs) -> tuple[torch.Tensor, torch.Tensor | None]:
    with torch.no_grad():
        out = model(**inputs)
    return out.last_hidden_state, getattr(out, "pooler_output", None)


@pytest.mark.parametrize("arch", SUBARCH_ARCHS)
def test_extraction_at_full_size_is_the_teacher_and_reloads(arch, tmp_path):
    teacher = tiny_encoder(arch, layers=3)
    inputs = tiny_inputs(9, 6)
    full = extract_encoder(teacher, Selection.full(shape_of(teacher)))
    for a, b in zip(outputs(teacher, inputs), outputs(full, inputs), strict=True):
        assert (a is None) == (b is None) and (a is None or float((a - b).abs().max()) < 1e-5)
    small = extract_encoder(teacher, SELECTION, {"source": "tiny"})
    small.save_pretrained(tmp_path)
    register_auto_classes()
    again = AutoModel.from_pretrained(tmp_path)
    assert type(again) is type(small) and again.config.head_size == 8 and again.config.hidden_size == 15
    assert float((outputs(again, inputs)[0] - outputs(small, inputs)[0]).abs().max()) == 0


@pytest.mark.parametrize("arch", SUBARCH_ARCHS)
def test_cutting_units_equals_gating_them(arch):
    """Layers skipped, heads and neurons gated, hidden dims gated by the gated LayerNorm == the extracted model
    on the kept dims; the removed dims hold exactly 0."""
    teacher = tiny_encoder(arch, layers=3)
    inputs = tiny_inputs(9, 6)
    small_hidden, small_pooled = outputs(extract_encoder(teacher, SELECTION), inputs)
    dense = outputs(teacher, inputs)[0]
    gates = [attach_gates(teacher, SELECTION.unit_mask(shape_of(teacher))), HiddenGates(teacher).keep(list(SELECTION.dims)),
             LayerGates(teacher).keep(list(SELECTION.layers))]
    hidden, pooled = outputs(teacher, inputs)
    for g in gates:
        g.remove()
    dims = torch.tensor(SELECTION.dims)
    removed = torch.tensor([i for i in range(32) if i not in SELECTION.dims])
    assert float((hidden[..., dims] - small_hidden).abs().max()) < 1e-5
    assert float(hidden[..., removed].abs().max()) == 0.0
    if pooled is not None:
        assert float((pooled[..., dims] - small_pooled).abs().max()) < 1e-5
    assert float((outputs(teacher, inputs)[0] - dense).abs().max()) == 0  # every gate removed


@pytest.mark.parametrize("arch", SUBARCH_ARCHS)
def test_a_ticket_as_a_selection_extracts_to_the_compacted_ticket(arch):
    """:meth:`Selection.of_mask`: every layer and hidden dimension, the mask's heads and neurons per layer; its
    extraction computes what the ticket compacted does (and both have the same parameters)."""
    teacher = tiny_encoder(arch, layers=3)
    shape = shape_of(teacher)
    g = torch.Generator().manual_seed(3)
    heads = torch.rand(3, 4, generator=g) > 0.5
    heads[:, 0] = True  # a head in every layer; layers of 1, 2 and more heads
    ffn = torch.rand(3, 37, generator=g) > 0.6
    mask = Mask(heads, ffn)
    selection = Selection.of_mask(mask, shape)
    assert selection.layers == (0, 1, 2) and selection.dims == tuple(range(32))
    assert [len(h) for h in selection.heads] == heads.sum(1).tolist() and not selection.uniform
    assert selection.name == (f"D3-A{'/'.join(map(str, heads.sum(1).tolist()))}-H32-"
                              f"I{'/'.join(map(str, ffn.sum(1).tolist()))}")
    assert torch.equal(selection.unit_mask(shape).heads, heads) and torch.equal(selection.unit_mask(shape).ffn, ffn)
    inputs = tiny_inputs(9, 6)
    extracted = extract_encoder(teacher, selection)
    compacted = compact_encoder(teacher, mask)
    for a, b in zip(outputs(compacted, inputs), outputs(extracted, inputs), strict=True):
        assert (a is None) == (b is None) and (a is None or float((a - b).abs().max()) < 1e-5)
    assert count_params(extracted) == count_params(compacted)
    assert Selection.full(shape).uniform and Selection.full(shape).name == "D3-A4-H32-I37"
    with pytest.raises(UserError, match=r"a mask with heads \(2, 4\) and FFN \(2, 37\) does not fit the teacher"):
        Selection.of_mask(Mask(heads[:2], ffn[:2]), shape)


def test_plain_zeroing_of_hidden_dims_is_not_removal():
    """Why the gate is a gated LayerNorm: multiplying the stream by 0/1 after stock LayerNorms keeps the
    zeros in the LayerNorm statistics, which removing the dimensions does not."""
    teacher = tiny_encoder("bert", layers=3)
    inputs = tiny_inputs(9, 6)
    keep = torch.zeros(32)
    keep[list(SELECTION.dims)] = 1
    hooks = [m.register_forward_hook(lambda mod, args, out: out * keep) for m in
             (teacher.embeddings.LayerNorm, *(l.attention.output.LayerNorm for l in teacher.encoder.layer),
              *(l.output.LayerNorm for l in teacher.encoder.layer))]
    zeroed = outputs(teacher, inputs)[0][..., list(SELECTION.dims)]
    for h in hooks:
        h.remove()
    sliced = outputs(extract_encoder(teacher, Selection((0, 1, 2), ((0, 1, 2, 3),) * 3, (tuple(range(37)),) * 3,
                                                        SELECTION.dims)), inputs)[0]
    assert float((zeroed - sliced).abs().max()) > 1e-2
    with HiddenGates(teacher) as gates:
        gates.keep(list(SELECTION.dims))
        gated = outputs(teacher, inputs)[0][..., list(SELECTION.dims)]
    assert float((gated - sliced).abs().max()) < 1e-5


@pytest.mark.parametrize("arch", SUBARCH_ARCHS)
def test_analytic_parameter_count_matches_the_models(arch):
    teacher = tiny_encoder(arch, layers=3)
    small = extract_encoder(teacher, SELECTION)
    for model in (teacher, small):
        counts = param_counts(EncoderSize.of(model))
        assert counts["total"] == count_params(model)
        project = getattr(model, "embeddings_project", None)  # ELECTRA's: counted with the embeddings
        assert counts["embeddings"] == count_params(model.embeddings) + (count_params(project) if project else 0)
    assert EncoderSize.of(teacher).uniform(2, 2, 15, 19) == EncoderSize.of(
        extract_encoder(teacher, Selection((0, 1), ((0, 1),) * 2, (tuple(range(19)),) * 2, tuple(range(15)))))


def test_operation_count_matches_a_hand_count():
    # one layer, hidden 4, 2 heads of size 2, FFN 3, three embedding tables, 5 tokens
    size = EncoderSize(hidden=4, head_dim=2, heads=(2,), ffn=(3,), vocab=10, positions=8, token_types=2,
                       embedding=4, pooler=True)
    embeddings = 2 * 4 + 7 * 4  # two additions of 4-vectors, one LayerNorm (7 ops per element)
    qkv = 3 * (2 * 4 * 4)  # three Linear 4 -> 4: 2 * in * out
    attention = 2 * (2 * 2 * 5 + 2 * 2 * 5 + 4 * 5)  # per head: scores 2dT, values 2dT, scale+softmax 4T
    out_proj = 2 * 4 * 4
    ffn = 2 * 4 * 3 + 3 + 2 * 3 * 4  # up, GELU, down
    residuals_and_norms = 2 * (4 + 7 * 4)
    assert ops_per_token(size, 5) == embeddings + qkv + attention + out_proj + ffn + residuals_and_norms == 399


def test_selection_takes_the_best_units_and_the_even_baseline():
    assert top(torch.tensor([0.1, 0.9, 0.5, 0.9]), 2) == (1, 3)
    assert even_layers(6, 3) == (0, 3, 5) and even_layers(6, 2) == (0, 5) and even_layers(6, 6) == tuple(range(6))
    assert even_layers(12, 4) == (0, 4, 7, 11) and even_layers(6, 1) == (5,)
    scores = SubarchScores(layers=torch.tensor([3.0, 1.0, 2.0]), heads=torch.tensor([[1.0, 4, 3, 2]] * 3),
                           ffn=torch.arange(15.0).repeat(3, 1), hidden=-torch.arange(8.0))
    chosen = select(scores, SubArch(2, 2, 3, 4))
    assert chosen.layers == (0, 2) and chosen.heads == ((1, 2), (1, 2)) and chosen.neurons == ((11, 12, 13, 14),) * 2
    assert chosen.dims == (0, 1, 2) and chosen.arch == SubArch(2, 2, 3, 4)
    assert select(scores, SubArch(2, 2, 3, 4), layers="even").layers == (0, 2)
    with pytest.raises(UserError, match="unknown layer choice 'best'; valid: importance, even"):
        select(scores, SubArch(2, 2, 3, 4), layers="best")
    with pytest.raises(UserError, match="heads 5 is outside 1..4"):
        select(scores, SubArch(2, 5, 3, 4))
    assert SubArch.parse("D4-A8-H256-I768") == SubArch(4, 8, 256, 768) and "even" in LAYER_CHOICES
    with pytest.raises(UserError, match="bad sub-architecture 'D4-A8'"):
        SubArch.parse("D4-A8")


def test_scores_find_a_dead_layer_a_dead_head_and_a_dead_neuron(tmp_path):
    teacher = tiny_encoder("bert", layers=3, dropout=0.0)
    with torch.no_grad():  # layer 1 adds nothing: with LayerNorm weight 1 and bias 0 it is then the identity
        for lin in (teacher.encoder.layer[1].attention.output.dense, teacher.encoder.layer[1].output.dense):
            lin.weight.zero_()
            lin.bias.zero_()
        teacher.encoder.layer[0].attention.self.value.weight[8:16].zero_()  # head 1 of layer 0 reads nothing
        teacher.encoder.layer[0].attention.self.value.bias[8:16].zero_()
        teacher.encoder.layer[2].output.dense.weight[:, 5].zero_()  # neuron 5 of layer 2 writes nothing
    g = torch.Generator().manual_seed(0)
    batches = [{"input_ids": torch.randint(3, 99, (4, 7), generator=g), "attention_mask": torch.ones(4, 7, dtype=torch.long)}
               for _ in range(3)]
    scores = score_subarch(teacher, batches, seed=1)
    assert int(scores.layers.argmin()) == 1 and float(scores.layers[1]) < 1e-6 < float(scores.layers.max())
    assert float(scores.heads[0, 1]) == 0 and float(scores.heads[0].max()) > 0
    assert float(scores.ffn[2, 5]) == 0 and scores.hidden.shape == (32,) and bool((scores.hidden > 0).all())
    save_scores(scores, tmp_path / "s.safetensors")
    back = load_scores(tmp_path / "s.safetensors", shape_of(teacher))
    assert torch.equal(back.heads, scores.heads) and back.meta["num_batches"] == "3"
    save_mask(Mask.ones(shape_of(teacher)), tmp_path / "m.safetensors")
    with pytest.raises(UserError, match="not a sub-architecture scores file"):
        load_scores(tmp_path / "m.safetensors")


def test_a_family_extraction_does_not_know_is_one_line_error():
    encoder = tiny_encoder("xlm-roberta")
    with pytest.raises(UserError, match="hidden-dimension extraction does not know model_type 'xlm-roberta'"):
        extract_encoder(encoder, Selection.full(shape_of(encoder)))


def test_task_units_rank_heads_and_neurons_by_the_tasks_summed_importance():
    scores = SubarchScores(layers=torch.tensor([3.0, 1.0]), heads=torch.tensor([[9.0, 1, 1, 1]] * 2),
                           ffn=torch.tensor([[9.0, 1, 1]] * 2), hidden=torch.arange(4.0), meta={"scorer": "s"})

    def imp(heads, ffn):
        h, f = torch.tensor(heads), torch.tensor(ffn)
        return Importance(h, f, h, f, torch.ones(2, 1))

    # task a is 10x larger in scale than b: divided by their sums they weigh the same
    a = imp([[0.0, 10, 0, 0], [0.0, 0, 10, 0]], [[0.0, 10, 0], [0.0, 0, 10]])
    b = imp([[0.0, 0, 0, 1], [0.0, 0, 0, 1]], [[0.0, 0, 1], [0.0, 1, 0]])
    units = with_task_units(scores, {"b": b, "a": a})
    assert torch.allclose(units.heads, torch.tensor([[0.0, 0.5, 0, 0.5], [0.0, 0, 0.5, 0.5]]))
    assert torch.allclose(units.ffn, torch.tensor([[0.0, 0.5, 0.5], [0.0, 0.5, 0.5]]))
    assert torch.equal(units.layers, scores.layers) and torch.equal(units.hidden, scores.hidden)
    assert units.meta["units"] == "tasks: a, b"
    chosen = select(units, SubArch(2, 2, 4, 2))
    assert chosen.heads == ((1, 3), (2, 3)) and chosen.neurons == ((1, 2), (1, 2))
    assert select(scores, SubArch(2, 2, 4, 2)).heads == ((0, 1), (0, 1))  # the output scores would keep head 0
    with pytest.raises(UserError, match="the importance of c has heads"):
        with_task_units(scores, {"c": imp([[1.0, 1, 1]] * 2, [[1.0, 1, 1]] * 2)})
    with pytest.raises(UserError, match="needs at least one task's importance file"):
        with_task_units(scores, {})


def test_a_task_weight_counts_as_that_many_copies_of_the_task():
    scores = SubarchScores(layers=torch.tensor([3.0, 1.0]), heads=torch.ones(2, 4), ffn=torch.ones(2, 3),
                           hidden=torch.arange(4.0), meta={})

    def imp(seed):
        g = torch.Generator().manual_seed(seed)
        h, f = torch.rand(2, 4, generator=g) * (seed + 1), torch.rand(2, 3, generator=g)
        return Importance(h, f, h, f, torch.ones(2, 1))

    a, b = imp(0), imp(1)
    weighted = with_task_units(scores, {"a": a, "b": b}, {"a": 3.0})
    copies = with_task_units(scores, {"a": a, "a2": a, "a3": a, "b": b})
    assert torch.allclose(weighted.heads, copies.heads) and torch.allclose(weighted.ffn, copies.ffn)
    assert weighted.meta["units"] == "tasks: a, b (weights a 3)"
    assert with_task_units(scores, {"a": a, "b": b}, {"a": 1.0}).meta["units"] == "tasks: a, b"
    only_b = with_task_units(scores, {"a": a, "b": b}, {"a": 0.0})
    assert torch.allclose(only_b.heads, with_task_units(scores, {"b": b}).heads)
    with pytest.raises(UserError, match="unit weights name c, which has no importance file"):
        with_task_units(scores, {"a": a}, {"c": 2.0})
    with pytest.raises(UserError, match="unit weights must be >= 0 and not all 0"):
        with_task_units(scores, {"a": a}, {"a": -1.0})
    with pytest.raises(UserError, match="unit weights must be >= 0 and not all 0"):
        with_task_units(scores, {"a": a}, {"a": 0.0})
