"""Same seed, same data, same machine -> identical metrics, log and importance scores (CPU, --deterministic)."""

import json

import pytest
from safetensors.torch import load_file

from tests.tiny_run import tiny_setup


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return tiny_setup(tmp_path_factory.mktemp("tiny"))


def run(tiny, out, seed):
    import train

    args = [*tiny, "--output-dir", str(out), "--seed", str(seed), "--epochs", "2", "--log-every", "3",
            "--deterministic", "--score-importance", "--sparsities", "0.5"]
    assert train.main(args) == 0
    results = json.loads((out / "results.json").read_text())
    return {"metrics": json.loads((out / "metrics.json").read_text()), "history": results["history"],
            "log": (out / "metrics.jsonl").read_text(),
            "importance": {k: v.tolist() for k, v in load_file(str(out / "importance.safetensors")).items()},
            "winning": load_file(str(out / "masks" / "winning-0.50.safetensors"))["heads"].tolist()}


def test_same_seed_same_metrics_other_seed_other_metrics(tiny, tmp_path):
    a = run(tiny, tmp_path / "a", seed=4)
    b = run(tiny, tmp_path / "b", seed=4)
    assert a == b  # bitwise: metrics, per-epoch history, training-loss log, raw and normalised scores
    c = run(tiny, tmp_path / "c", seed=5)
    assert c["metrics"] != a["metrics"] and c["log"] != a["log"]
