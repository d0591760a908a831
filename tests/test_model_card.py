"""Model cards: every saved model directory (train.py's model/, a compacted directory) carries a README.md."""

from __future__ import annotations

import json
import sys
import types

import pytest
import torch
import yaml

from commands.compact import main as compact_main
from masks.arch import shape_of
from masks.mask import Mask, save_mask
from mtl.model_card import command_line, hub_name
from tests.conftest import tiny_bert
from tests.test_predict import train_tiny


def front_matter(text: str) -> dict:
    assert text.startswith("---\n")
    return yaml.safe_load(text.split("---\n")[1])


def test_train_py_model_card_has_base_model_metrics_and_command(tmp_path):
    run, _ = train_tiny(tmp_path)
    card = (run / "model" / "README.md").read_text()
    meta = front_matter(card)
    assert meta["base_model"] == str(tmp_path / "model") and meta["library_name"] == "mtl-tickets"
    metrics = json.loads((run / "metrics.json").read_text())
    results = {r["dataset"]["name"]: {m["type"]: m["value"] for m in r["metrics"]}
               for r in meta["model-index"][0]["results"]}
    assert results == {t: {k: round(v, 2) for k, v in m.items()} for t, m in metrics.items()}
    assert "| tinysent | classification | neg, pos | accuracy" in card
    assert "- mask: none (dense encoder)" in card and "encoder parameters: " in card
    assert "## How it was made" in card and "--tasks tinysent,tinysim" in card


def test_masked_run_and_its_compacted_model_describe_the_mask(tmp_path, capsys):
    shape = shape_of(tiny_bert(vocab_size=23))
    heads = torch.ones(shape.num_layers, shape.num_heads, dtype=torch.bool)
    heads[0, :2] = False
    ffn = torch.rand(shape.num_layers, shape.intermediate, generator=torch.Generator().manual_seed(0)) < 0.5
    save_mask(Mask(heads, ffn, {"kind": "winning", "sparsity": "0.50"}), tmp_path / "w.safetensors")
    run, _ = train_tiny(tmp_path, "--mask", str(tmp_path / "w.safetensors"))
    card = (run / "model" / "README.md").read_text()
    assert "- mask: winning (shared), sparsity 0." in card and "prunable encoder parameters kept" in card
    assert "lottery-ticket" in front_matter(card)["tags"]

    out = tmp_path / "compact"
    assert compact_main(["--run", str(run), "--out", str(out)]) == 0, capsys.readouterr().err  # the run's own mask
    card = (out / "README.md").read_text()
    meta = front_matter(card)
    assert "compacted" in meta["tags"] and meta["base_model"] == str(tmp_path / "model")
    assert f"heads kept {int(heads.sum())}/{heads.numel()}" in card and " -> " in card and "% kept" in card
    metrics = json.loads((run / "metrics.json").read_text())  # trained with this mask: the same function
    assert f"accuracy {metrics['tinysent']['accuracy']:.2f}" in card
    assert "mtl-compact" in card or "commands.compact" in card or "pytest" in card

    # fine-tuning the compacted model: the new run's card tells the encoder is compacted, and how
    tuned, _ = train_tiny(tmp_path / "tuned", "--model", str(out), "--epochs", "1")
    card = (tuned / "model" / "README.md").read_text()
    assert "- mask: winning (compacted into the encoder)" in card and f"heads kept {int(heads.sum())}/" in card


def test_compacting_with_another_mask_does_not_claim_the_runs_metrics(tmp_path, capsys):
    run, _ = train_tiny(tmp_path)
    shape = shape_of(tiny_bert(vocab_size=23))
    save_mask(Mask.ones(shape, kind="custom"), tmp_path / "ones.safetensors")
    out = tmp_path / "compact"
    assert compact_main(["--run", str(run), "--mask", str(tmp_path / "ones.safetensors"), "--out", str(out)]) == 0
    card = (out / "README.md").read_text()
    assert "not measured" in card and "model-index" not in front_matter(card)
    # a dense run has no mask of its own: --mask is needed
    code = compact_main(["--run", str(run), "--out", str(tmp_path / "c2")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "was not trained with a mask" in err[0]


@pytest.mark.parametrize("main_module, argv, want", [
    (None, ["train.py", "--tasks", "rte"], "python train.py --tasks rte"),
    ("commands.compact", ["/x/commands/compact.py", "--run", "a b"], "python -m commands.compact --run 'a b'"),
    (None, ["/usr/bin/mtl-train", "--tasks", "rte"], "mtl-train --tasks rte"),
])
def test_command_line_is_what_a_user_types(main_module, argv, want, monkeypatch):
    fake = types.ModuleType("__main__")
    fake.__spec__ = types.SimpleNamespace(name=main_module) if main_module else None
    monkeypatch.setitem(sys.modules, "__main__", fake)
    assert command_line(argv) == want


def test_hub_name_of_the_packaged_model():
    assert hub_name("minilm") == "sentence-transformers/all-MiniLM-L6-v2"
    assert hub_name("bert-base-uncased") == "bert-base-uncased"
