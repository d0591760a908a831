"""Compaction: removing the pruned heads / neurons gives the masked model's outputs, smaller, and reloads."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from transformers import (
    AutoConfig,
    AutoModel,
    BertConfig,
    BertModel,
)

from basics.errors import UserError
from commands.compact import main
from masks.arch import arch_for, shape_of
from masks.auto_classes import register_auto_classes
from masks.compact import compact_encoder, num_params
from masks.compact_config import CompactBertConfig, CompactDistilBertConfig
from masks.compact_model import CompactBertModel, SkippedAttention
from masks.gates import attach_gates
from masks.mask import Mask, save_mask, save_task_masks
from mtl.compact_run import compact_multitask
from mtl.model import MultiTaskModel, load_encoder, load_multitask_model, resolve_model_path, save_multitask_model
from tasks.registry import default_registry
from tests.conftest import COMPACT_ARCHS, REPO, tiny_encoder, tiny_inputs

TOL = 1e-4
BERT_LIKE = dict(vocab_size=99, hidden_size=32, num_hidden_layers=3, num_attention_heads=4,
                 intermediate_size=37, max_position_embeddings=64, attn_implementation="sdpa")
ARCHS = list(COMPACT_ARCHS)


def make_encoder(arch: str) -> torch.nn.Module:
    return tiny_encoder(arch, dropout=0.1, layers=3)


def edge_mask(shape, seed: int = 0) -> Mask:
    """Layer 0 keeps no head, layer 1 no FFN neuron, the rest keep a random part (True = keep)."""
    g = torch.Generator().manual_seed(seed)
    heads = torch.rand(shape.num_layers, shape.num_heads, generator=g) < 0.5
    heads[0] = False
    heads[1:, 0], heads[1:, -1] = True, False  # every other layer keeps some heads and prunes some
    ffn = torch.rand(shape.num_layers, shape.intermediate, generator=g) < 0.5
    ffn[1] = False
    return Mask(heads, ffn, {"shape": shape.describe(), "kind": "random"})


def inputs() -> dict[str, torch.Tensor]:
    return tiny_inputs(9, 6)


def outputs(model) -> list[torch.Tensor]:
    with torch.no_grad():
        out = model(**inputs())
    pooled = getattr(out, "pooler_output", None)
    return [out.last_hidden_state] + ([pooled] if pooled is not None else [])


def max_diff(a: list[torch.Tensor], b: list[torch.Tensor]) -> float:
    return max(float((x - y).abs().max()) for x, y in zip(a, b, strict=True))


@pytest.mark.parametrize("arch", ARCHS)
def test_compacted_equals_masked_and_loses_exactly_the_pruned_parameters(arch):
    enc = make_encoder(arch)
    shape = shape_of(enc)
    mask = edge_mask(shape)
    dense = outputs(enc)
    compact = compact_encoder(enc, mask)
    with attach_gates(enc, mask):
        masked = outputs(enc)
    assert max_diff(dense, masked) > 1e-2  # the mask matters
    assert max_diff(compact_out := outputs(compact), masked) < TOL
    assert max_diff(outputs(enc), dense) == 0  # the source encoder is untouched (gates removed)

    kept, total = mask.param_counts(shape)
    assert num_params(enc) - num_params(compact) == total - kept
    assert compact.config.model_type == f"compact_{enc.config.model_type}"
    assert compact.config._attn_implementation == enc.config._attn_implementation
    assert compact.config.kept_heads == [torch.nonzero(r).flatten().tolist() for r in mask.heads]
    assert compact.config.intermediate_sizes == mask.ffn.sum(1).tolist()
    spec = arch_for(enc)
    layers = compact.get_submodule(spec.layers)
    assert isinstance(layers[0].get_submodule(spec.q.rpartition(".")[0]), SkippedAttention)  # no attention
    assert layers[0].get_submodule(spec.attn_out).in_features == 0  # only its bias is left
    assert layers[1].get_submodule(spec.ffn_down).in_features == 0  # no FFN: only its bias is left
    qkv = 3 if spec.fused_qkv else 1
    assert layers[2].get_submodule(spec.q).out_features == qkv * len(compact.config.kept_heads[2]) * shape.head_dim
    assert layers[2].get_submodule(spec.ffn_up).out_features == spec.ffn_up_parts * compact.config.intermediate_sizes[2]
    assert compact_out[0].shape == dense[0].shape


@pytest.mark.parametrize("arch", ARCHS)
def test_saved_compacted_encoder_reloads_with_automodel_and_is_smaller(arch, tmp_path):
    enc = make_encoder(arch)
    mask = edge_mask(shape_of(enc), seed=2)
    compact = compact_encoder(enc, mask, {"mask_kind": "random"})
    enc.save_pretrained(tmp_path / "full")
    compact.save_pretrained(tmp_path / "compact")

    saved = json.loads((tmp_path / "compact" / "config.json").read_text())
    assert saved["model_type"] == f"compact_{enc.config.model_type}"
    assert saved["kept_heads"] == compact.config.kept_heads and saved["compaction"] == {"mask_kind": "random"}
    register_auto_classes()  # what saving with mtl.compact_run and loading with mtl.model.load_encoder do
    reloaded = AutoModel.from_pretrained(tmp_path / "compact").eval()
    assert type(reloaded) is type(compact)
    assert reloaded.config._attn_implementation == enc.config._attn_implementation
    assert max_diff(outputs(reloaded), outputs(compact)) == 0

    kept, total = mask.param_counts(shape_of(enc))
    full_bytes = (tmp_path / "full" / "model.safetensors").stat().st_size
    compact_bytes = (tmp_path / "compact" / "model.safetensors").stat().st_size
    assert abs((full_bytes - compact_bytes) - 4 * (total - kept)) < 4096  # fp32: 4 bytes per removed parameter


def test_keep_everything_mask_changes_nothing():
    enc = make_encoder("bert")
    compact = compact_encoder(enc, Mask.ones(shape_of(enc)))
    assert num_params(compact) == num_params(enc)
    assert max_diff(outputs(compact), outputs(enc)) < TOL


def test_importing_the_packages_registers_nothing():
    """No import-time side effects: the compacted classes are unknown to transformers until registered."""
    code = ("import basics, tasks, masks, mtl, experiments, commands, masks.compact, mtl.run, mtl.compact_run\n"
            "from transformers import AutoConfig\n"
            "try:\n    AutoConfig.for_model('compact_bert')\nexcept ValueError:\n    print('unregistered')\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, check=True).stdout
    assert out.strip() == "unregistered"


def test_registering_compacted_classes_is_idempotent():
    register_auto_classes()
    register_auto_classes()  # a second registration is a no-op
    assert type(AutoConfig.for_model("compact_bert")) is CompactBertConfig
    assert type(AutoConfig.for_model("compact_distilbert")) is CompactDistilBertConfig
    config = CompactBertConfig(**BERT_LIKE, kept_heads=[[], [1], [0, 3]], intermediate_sizes=[5, 0, 37])
    model = AutoModel.from_config(config)
    assert type(model) is CompactBertModel
    assert [layer.intermediate.dense.out_features for layer in model.encoder.layer] == [5, 0, 37]


def test_config_rejects_inconsistent_sizes():
    with pytest.raises(Exception, match="kept_heads has 1 entries but the model has 3 layers"):
        CompactBertConfig(**BERT_LIKE, kept_heads=[[0]], intermediate_sizes=[1, 1, 1])
    with pytest.raises(Exception, match="sorted distinct indices in 0..3"):
        CompactBertConfig(**BERT_LIKE, kept_heads=[[0], [5], []], intermediate_sizes=[1, 1, 1])


def test_albert_compaction_is_refused_in_one_line_before_any_work(tmp_path, capsys, monkeypatch):
    enc = tiny_encoder("albert")
    with pytest.raises(UserError, match="compaction: not supported for model_type 'albert' \\(its layers share"):
        compact_encoder(enc, edge_mask(shape_of(enc)))
    _, tokenizer = load_encoder("minilm")
    save_multitask_model(MultiTaskModel(enc, [CLS]), tokenizer, tmp_path / "run" / "model")
    save_mask(edge_mask(shape_of(enc)), tmp_path / "mask.safetensors")
    import mtl.compact_run

    monkeypatch.setattr(mtl.compact_run, "load_multitask_model", lambda *a: pytest.fail("loaded the model"))
    out = tmp_path / "out"
    assert main(["--run", str(tmp_path / "run"), "--mask", str(tmp_path / "mask.safetensors"), "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "compaction: not supported for model_type 'albert'" in err[0] and not out.exists()


def test_already_compacted_or_wrapped_models_are_refused():
    enc = make_encoder("bert")
    compact = compact_encoder(enc, edge_mask(shape_of(enc)))
    with pytest.raises(UserError, match="already compacted"):
        compact_encoder(compact, edge_mask(shape_of(enc)))


# ---------------------------------------------------------------- the command on a saved run

CLS = default_registry().get("rte")


def saved_run(tmp_path):
    """A train.py-like run directory: tiny random BERT with the MiniLM tokenizer, one RTE head."""
    _, tokenizer = load_encoder("minilm")
    torch.manual_seed(0)
    cfg = {**BERT_LIKE, "vocab_size": tokenizer.vocab_size, "max_position_embeddings": 128}
    model = MultiTaskModel(BertModel(BertConfig(**cfg)).eval(), [CLS], pooling="pooler").eval()
    save_multitask_model(model, tokenizer, tmp_path / "run" / "model")
    return model, tokenizer


def test_command_writes_a_model_both_loaders_read(tmp_path, capsys):
    model, tokenizer = saved_run(tmp_path)
    mask = edge_mask(shape_of(model.encoder), seed=3)
    save_mask(mask, tmp_path / "mask.safetensors")
    out = tmp_path / "compact"
    code = main(["--run", str(tmp_path / "run"), "--mask", str(tmp_path / "mask.safetensors"), "--out", str(out)])
    printed = capsys.readouterr()
    assert code == 0, printed.err
    assert "heads kept per layer:       0," in printed.out and "encoder parameters:" in printed.out

    loaded, _ = load_multitask_model(out)  # the project's loader: compacted encoder + task heads
    assert type(loaded.encoder) is CompactBertModel and set(loaded.heads) == {"rte"}
    batch = tokenizer(["A man plays a guitar.", "Profits fell."], ["Someone makes music.", "Profits rose."],
                      padding=True, return_tensors="pt")
    with torch.no_grad(), attach_gates(model.encoder, mask):
        want = model("rte", **batch)
        got = loaded.eval()("rte", **batch)
    assert float((want - got).abs().max()) < TOL
    info = json.loads((out / "model.json").read_text())
    assert info["encoder_dir"] == "." and info["compaction"]["heads_kept"] == f"{mask.num_heads_kept}/12"
    assert type(AutoModel.from_pretrained(out)) is CompactBertModel
    assert (out / "model.safetensors").stat().st_size < (tmp_path / "run" / "model" / "encoder" /
                                                         "model.safetensors").stat().st_size

    # running again into the same output directory overwrites the earlier compaction
    assert main(["--run", str(tmp_path / "run"), "--mask", str(tmp_path / "mask.safetensors"), "--out", str(out)]) == 0


def test_compact_multitask_keeps_heads_and_pooling():
    _, tokenizer = load_encoder("minilm")
    torch.manual_seed(0)
    model = MultiTaskModel(make_encoder("roberta"), [CLS], pooling="mean").eval()
    compact = compact_multitask(model, edge_mask(shape_of(model.encoder)))
    assert compact.pooling == "mean" and not compact.training
    assert torch.equal(compact.heads["rte"].out.weight, model.heads["rte"].out.weight)


@pytest.mark.parametrize("case, fragment", [
    ("per-task", "holds per-task masks (rte, mrpc)"),
    ("no-run", "run directory not found"),
    ("no-model", "holds no saved model"),
    ("wrong-shape", "mask is for L=2,H=4,I=37 but model is L=3,H=4,I=37"),
    ("out-not-empty", "exists and is not empty"),
])
def test_user_errors_are_one_line(case, fragment, tmp_path, capsys):
    run, mask_file, out = tmp_path / "run", tmp_path / "mask.safetensors", tmp_path / "out"
    if case != "no-run":
        run.mkdir()
    if case not in ("no-run", "no-model"):
        model, _ = saved_run(tmp_path)
        shape = shape_of(model.encoder)
        save_mask(edge_mask(shape), mask_file)
    if case == "per-task":
        save_task_masks({"rte": edge_mask(shape), "mrpc": Mask.ones(shape)}, mask_file)
    if case == "wrong-shape":
        save_mask(Mask(torch.ones(2, 4), torch.ones(2, 37)), mask_file)
    if case == "out-not-empty":
        out.mkdir()
        (out / "notes.txt").write_text("mine")
    code = main(["--run", str(run), "--mask", str(mask_file), "--out", str(out)])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and fragment in err[0], err
    assert case == "out-not-empty" or not out.exists()


# ---------------------------------------------------------------- MiniLM on real GLUE sentences

@pytest.mark.integration
def test_minilm_compacted_run_matches_masked_model_on_glue(glue, tmp_path, capsys):
    from tasks.readers import read_split

    encoder, tokenizer = load_encoder("minilm")
    torch.manual_seed(0)
    model = MultiTaskModel(encoder, [CLS], pooling="cls").eval()
    save_multitask_model(model, tokenizer, tmp_path / "run" / "model")
    mask = edge_mask(shape_of(encoder), seed=5)  # ~50% of heads and neurons; layer 0 no heads, layer 1 no FFN
    save_mask(mask, tmp_path / "mask.safetensors")
    out = tmp_path / "compact"
    assert main(["--run", str(tmp_path / "run"), "--mask", str(tmp_path / "mask.safetensors"),
                 "--out", str(out)]) == 0, capsys.readouterr().err

    examples = read_split(CLS, glue, "dev", max_samples=32)
    batch = tokenizer([e.text_a for e in examples], [e.text_b for e in examples], padding=True,
                      truncation=True, max_length=128, return_tensors="pt")
    loaded, _ = load_multitask_model(out)
    with torch.no_grad():
        with attach_gates(model.encoder, mask):
            want = model("rte", **batch)
        got = loaded.eval()("rte", **batch)
    assert float((want - got).abs().max()) < TOL
    kept, total = mask.param_counts(shape_of(encoder))
    assert num_params(encoder) - num_params(loaded.encoder) == total - kept


def test_a_model_directory_may_be_given_as_a_path(tmp_path):
    assert resolve_model_path(tmp_path / "model") == str(tmp_path / "model")
    assert resolve_model_path(Path("minilm")) == resolve_model_path("minilm") != "minilm"  # the packaged model
    encoder, _ = load_encoder(Path(resolve_model_path("minilm")))
    assert encoder.config.num_hidden_layers == 6
