"""ONNX export: the graph's logits equal PyTorch's (dense and compacted, tiny models and MiniLM); int8; predict via ONNX."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

pytest.importorskip("onnxruntime")  # the deploy extra (CI installs it with .[test])

from commands.export import main as export_main  # noqa: E402
from commands.predict import main as predict_main  # noqa: E402
from masks.arch import shape_of  # noqa: E402
from masks.mask import Mask, save_task_masks  # noqa: E402
from mtl.compact_run import compact_multitask, save_compacted  # noqa: E402
from mtl.model import MultiTaskModel, load_encoder  # noqa: E402
from mtl.onnx_export import CHECK_TOLERANCE, export_model  # noqa: E402
from mtl.onnx_runtime import OnnxPredictor  # noqa: E402
from tasks.registry import default_registry  # noqa: E402
from tests.conftest import tiny_encoder  # noqa: E402
from tests.test_predict import read_tsv, train_tiny  # noqa: E402
from tests.tiny_run import SPECIAL, WORDS  # noqa: E402

REGISTRY = default_registry()
TASKS = [REGISTRY.get("rte"), REGISTRY.get("stsb")]


def word_tokenizer(path: Path):
    from transformers import BertTokenizer

    return BertTokenizer(vocab={w: i for i, w in enumerate(SPECIAL + WORDS)})


def edge_mask(shape, seed: int = 0) -> Mask:
    """Layer 0 keeps no head, layer 1 no FFN neuron, the rest about half (per-layer sizes differ)."""
    g = torch.Generator().manual_seed(seed)
    heads = torch.rand(shape.num_layers, shape.num_heads, generator=g) < 0.5
    heads[0] = False
    heads[1:, 0] = True
    ffn = torch.rand(shape.num_layers, shape.intermediate, generator=g) < 0.5
    ffn[1] = False
    return Mask(heads, ffn, {"kind": "random"})


def random_batches(tokenizer_vocab: int, with_types: bool):
    """Batches of several shapes, with padding: (batch 1, length 3), (5, 17), (3, 40)."""
    g = torch.Generator().manual_seed(3)
    for b, t in ((1, 3), (5, 17), (3, 40)):
        ids = torch.randint(5, tokenizer_vocab, (b, t), generator=g)
        mask = torch.ones(b, t, dtype=torch.long)
        mask[-1, t // 2:] = 0
        batch = {"input_ids": ids, "attention_mask": mask}
        if with_types:
            batch["token_type_ids"] = (torch.arange(t) >= t // 3).long().expand(b, t).clone()
        yield batch


def assert_onnx_equals_pytorch(model: MultiTaskModel, out: Path, vocab: int) -> None:
    predictor = OnnxPredictor.load(out)
    model.eval()
    for batch in random_batches(vocab, "token_type_ids" in predictor.input_names):
        for task in model.tasks:
            with torch.no_grad():
                want = model(task, **batch)
            got = predictor.logits(task, batch)
            assert float((got - want).abs().max()) <= CHECK_TOLERANCE, task


@pytest.mark.parametrize("arch", ["bert", "distilbert"])
def test_compacted_tiny_model_exports_with_per_layer_head_counts(arch, tmp_path):
    torch.manual_seed(0)
    model = MultiTaskModel(tiny_encoder(arch, layers=3), TASKS).eval()
    mask = edge_mask(shape_of(model.encoder))
    compact = compact_multitask(model, mask).eval()
    assert compact.encoder.config.kept_heads[0] == [] and compact.encoder.config.intermediate_sizes[1] == 0
    save_compacted(compact, word_tokenizer(tmp_path), tmp_path / "compact", {"mask_kind": "random"})
    result = export_model(tmp_path / "compact", tmp_path / "onnx")
    assert result.max_logit_difference <= CHECK_TOLERANCE
    assert result.int8_max_logit_difference < 0.1  # the zero-width layers stay fp32 (else: garbage)
    info = json.loads((tmp_path / "onnx" / "model.json").read_text())
    assert info["outputs"] == {"rte": "logits_rte", "stsb": "logits_stsb"}
    assert ("token_type_ids" in info["inputs"]) == (arch != "distilbert")
    assert_onnx_equals_pytorch(compact, tmp_path / "onnx", vocab=len(SPECIAL + WORDS))
    assert (tmp_path / "onnx" / "model.int8.onnx").stat().st_size < (tmp_path / "onnx" / "model.onnx").stat().st_size
    assert "## ONNX export" in (tmp_path / "onnx" / "README.md").read_text()


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A tiny trained two-task run and its ONNX export (fp32 + int8)."""
    root = tmp_path_factory.mktemp("onnx_run")
    run, _ = train_tiny(root)
    assert export_main(["--model", str(run), "--out", str(root / "onnx")]) == 0
    return root


def test_predict_through_onnx_runtime_gives_the_pytorch_predictions(trained, capsys):
    dev = trained / "data" / "tinysim" / "dev.tsv"
    outputs = {}
    for name, model in (("torch", trained / "run"), ("onnx", trained / "onnx"),
                        ("int8", trained / "onnx" / "model.int8.onnx")):
        for task in ("tinysent", "tinysim"):
            out = trained / f"{name}-{task}.tsv"
            data = trained / "data" / task / "dev.tsv"
            code = predict_main(["--model", str(model), "--task", task, "--input", str(data), "--output", str(out),
                                 "--probabilities", "--no-progress"])
            assert code == 0, capsys.readouterr().err
            outputs[name, task] = read_tsv(out)
    assert dev.is_file()
    for task in ("tinysent", "tinysim"):
        torch_rows, onnx_rows = outputs["torch", task], outputs["onnx", task]
        assert len(torch_rows) == len(onnx_rows) == 40
        for a, b in zip(torch_rows, onnx_rows):
            assert a["index"] == b["index"]
            if task == "tinysent":
                assert a["prediction"] == b["prediction"]
                assert abs(float(a["prob_pos"]) - float(b["prob_pos"])) <= 1e-5
            else:
                assert abs(float(a["prediction"]) - float(b["prediction"])) <= 1e-5
    agree = sum(a["prediction"] == b["prediction"]
                for a, b in zip(outputs["torch", "tinysent"], outputs["int8", "tinysent"]))
    assert agree >= 36  # int8: 90 % of the dev rows at least (a tiny random-ish model has small margins)


def test_span_task_exports_and_predicts_the_pytorch_answers(tmp_path, capsys):
    """A SQuAD v2.0 + sentence-task model: the span head's (batch, sequence, 2) logits through ONNX Runtime equal
    PyTorch's, and mtl-predict on the export gives the same answers, null odds and scores."""
    from commands import train
    from tests.squad_files import write_squad_dir
    from tests.tiny_run import save_tiny_model, write_tiny_tasks

    data = write_squad_dir(tmp_path / "data")
    tasks = write_tiny_tasks(tmp_path / "tiny", n_train=32, n_dev=16)
    run = tmp_path / "run"
    assert train.main(["--tasks", "squad_v2,tinysent", "--task-def", str(tasks), "--output-dir", str(run),
                       "--model", str(save_tiny_model(tmp_path / "model")), "--glue-dir", str(data),
                       "--cache-dir", str(tmp_path / "cache"), "--max-seq-length", "32", "--doc-stride", "8",
                       "--batch-size", "8", "--epochs", "1", "--precision", "fp32", "--num-threads", "1",
                       "--no-progress", "--lr", "3e-3"]) == 0
    assert export_main(["--model", str(run), "--out", str(tmp_path / "onnx")]) == 0
    info = json.loads((tmp_path / "onnx" / "model.json").read_text())
    assert info["outputs"] == {"squad_v2": "logits_squad_v2", "tinysent": "logits_tinysent"}
    assert info["doc_stride"] == 8  # the span settings travel with the export
    assert "(batch, sequence, 2: start and end)" in (tmp_path / "onnx" / "README.md").read_text()
    from mtl.model import load_multitask_model

    model, _ = load_multitask_model(run / "model")
    assert_onnx_equals_pytorch(model, tmp_path / "onnx", vocab=len(SPECIAL + WORDS))
    dev = data / "SQuAD" / "dev-v2.0.json"
    got = {}
    for name, source in (("torch", run), ("onnx", tmp_path / "onnx")):
        out = tmp_path / f"predicted-{name}"
        out.mkdir()
        code = predict_main(["--model", str(source), "--task", "squad_v2", "--input", str(dev), "--output",
                             str(out / "p.json"), "--null-odds-output", str(out / "odds.json"), "--eval-output",
                             str(out / "eval.json"), "--no-progress", "--num-threads", "1"])
        assert code == 0, capsys.readouterr().err
        got[name] = [json.loads((out / f).read_text()) for f in ("p.json", "odds.json", "eval.json")]
    (answers, odds, scores), (onnx_answers, onnx_odds, onnx_scores) = got["torch"], got["onnx"]
    assert onnx_answers == answers and scores.keys() == onnx_scores.keys()
    assert all(abs(odds[q] - onnx_odds[q]) <= 1e-3 for q in odds)
    assert all(scores[k] == pytest.approx(onnx_scores[k], abs=1e-3) for k in scores)


def test_per_task_masked_model_is_refused_in_one_line(tmp_path, capsys):
    from tests.conftest import tiny_bert

    shape = shape_of(tiny_bert(vocab_size=23))
    save_task_masks({t: Mask.ones(shape) for t in ("tinysent", "tinysim")}, tmp_path / "pt.safetensors")
    run, _ = train_tiny(tmp_path, "--mask", str(tmp_path / "pt.safetensors"), "--epochs", "1")
    code = export_main(["--model", str(run), "--out", str(tmp_path / "onnx")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "per-task masks" in err[0]
    assert not (tmp_path / "onnx").exists()


def test_missing_onnxruntime_names_the_install_command(trained, monkeypatch, capsys):
    import importlib

    real = importlib.import_module

    def no_ort(name, *args):
        if name.startswith("onnxruntime"):
            raise ImportError(name)
        return real(name, *args)

    monkeypatch.setattr(importlib, "import_module", no_ort)
    code = predict_main(["--model", str(trained / "onnx"), "--task", "tinysent", "--no-progress",
                         "--input", str(trained / "data" / "tinysent" / "dev.tsv")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "pip install 'mtl-tickets[deploy]'" in err[0]


# ---------------------------------------------------------------- MiniLM on real GLUE sentences

def fitted_head(model: MultiTaskModel, tokenizer, examples, task: str) -> None:
    """Fit ``task``'s head (logistic regression on the frozen pooled vectors) so its predictions have real margins."""
    batch = tokenizer([e.text_a for e in examples], padding=True, truncation=True, max_length=64, return_tensors="pt")
    with torch.no_grad():
        pooled = model.pool(model.encoder(**batch), batch["attention_mask"])
    labels = torch.tensor([e.label for e in examples])
    head = model.heads[task].out
    optimizer = torch.optim.LBFGS(head.parameters(), max_iter=100)

    def closure():
        optimizer.zero_grad()
        loss = torch.nn.functional.cross_entropy(head(pooled), labels) + 1e-3 * head.weight.square().sum()
        loss.backward()
        return loss

    optimizer.step(closure)


@pytest.mark.integration
def test_minilm_compacted_export_matches_pytorch_and_int8_agrees_on_sst2_dev(glue, tmp_path):
    from tasks.readers import read_split

    sst2 = REGISTRY.get("sst2")
    encoder, tokenizer = load_encoder("minilm")
    torch.manual_seed(0)
    model = MultiTaskModel(encoder, [sst2, REGISTRY.get("stsb")]).eval()
    fitted_head(model, tokenizer, read_split(sst2, glue, "train", max_samples=256), "sst2")
    compact = compact_multitask(model, edge_mask(shape_of(encoder), seed=5)).eval()
    save_compacted(compact, tokenizer, tmp_path / "compact", {"mask_kind": "random"}, extra={"max_seq_length": 128})
    result = export_model(tmp_path / "compact", tmp_path / "onnx")
    assert result.max_logit_difference <= CHECK_TOLERANCE

    dev = read_split(sst2, glue, "dev", max_samples=128)
    from mtl.predict import TorchPredictor, predict_task

    want = predict_task(TorchPredictor(compact, tokenizer, 128, device="cpu"), sst2, dev, batch_size=32)
    fp32 = predict_task(OnnxPredictor.load(tmp_path / "onnx"), sst2, dev, batch_size=32)
    int8 = predict_task(OnnxPredictor.load(tmp_path / "onnx" / "model.int8.onnx"), sst2, dev, batch_size=32)
    assert torch.equal(want.values, fp32.values)
    assert float((want.probabilities - fp32.probabilities).abs().max()) <= 1e-5
    agreement = float((int8.values == fp32.values).float().mean())
    assert agreement >= 0.95, agreement  # measured: see docs/deploy.md
    assert float((want.values == torch.tensor([e.label for e in dev])).float().mean()) > 0.6  # the head learned
