"""A finished run knows the weights it started from: a local model directory rebuilt at the same path (a study's
student distilled again) makes the run another run, a copy of the same weights elsewhere does not."""

import json
import shutil

import pytest
import torch
from transformers import AutoModel

from basics.errors import UserError
from mtl.model_digest import model_identity, weights_digest
from mtl.rundir import RunDir
from tests.tiny_run import tiny_setup


def test_the_digest_follows_the_weights_not_the_path(tmp_path):
    args = tiny_setup(tmp_path)
    model = tmp_path / "model"
    digest = weights_digest(model)
    assert digest and len(digest) == 64
    shutil.copytree(model, tmp_path / "copy")
    assert weights_digest(tmp_path / "copy") == digest
    (tmp_path / "copy" / "README.md").write_text("a card")  # not weights: not in the digest
    assert weights_digest(tmp_path / "copy") == digest
    encoder = AutoModel.from_pretrained(tmp_path / "copy")
    with torch.no_grad():
        encoder.encoder.layer[0].output.dense.weight[0, 0] += 1.0
    encoder.save_pretrained(tmp_path / "copy")
    assert weights_digest(tmp_path / "copy") != digest
    assert model_identity("minilm") == {"name": "minilm"}  # the packaged model: its name is its identity
    assert model_identity("org/hub-model") == {"name": "org/hub-model"}
    assert model_identity(model) == {"name": str(model), "sha256": digest}
    assert weights_digest(tmp_path / "data") is None and args[1] == str(model)


def test_a_run_of_a_rebuilt_model_is_another_run(tmp_path):
    import train

    args = tiny_setup(tmp_path)
    model = tmp_path / "model"
    out = tmp_path / "run"
    assert train.main([*args, "--output-dir", str(out), "--epochs", "1"]) == 0
    recorded = json.loads((out / "results.json").read_text())["model"]
    assert recorded == {"name": str(model), "sha256": weights_digest(model)}
    run = RunDir(out)
    assert run.result().model == recorded and run.conflicts(run.config()) == []
    # the same folder, other weights (a student pre-trained again): the finished run is not taken for its run
    encoder = AutoModel.from_pretrained(model)
    with torch.no_grad():
        encoder.embeddings.word_embeddings.weight.mul_(0.5)
    encoder.save_pretrained(model)
    found = run.conflicts(run.config())
    assert found == [f"model: {model} holds other weights than the run trained from (rebuilt since?)"]
    with pytest.raises(UserError, match="was made with other options: model: .* holds other weights"):
        run.check_matches(run.config())
    # a run recorded before digests, or a model folder that is gone, is not judged on it
    results = json.loads(run.results_path.read_text())
    run.results_path.write_text(json.dumps({k: v for k, v in results.items() if k != "model"}))
    assert run.conflicts(run.config()) == []


def test_shards_and_metadata_do_not_change_the_digest(tmp_path):
    tiny_setup(tmp_path)
    encoder = AutoModel.from_pretrained(tmp_path / "model")
    encoder.save_pretrained(tmp_path / "shards", max_shard_size="20KB")
    assert len(list((tmp_path / "shards").glob("*.safetensors"))) > 1
    assert weights_digest(tmp_path / "shards") == weights_digest(tmp_path / "model")
    encoder.half().save_pretrained(tmp_path / "half")  # the same model rounded to fp16: other weights
    assert weights_digest(tmp_path / "half") != weights_digest(tmp_path / "model")
