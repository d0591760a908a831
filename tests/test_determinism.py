"""Same seed, same data, same machine -> identical metrics, log and importance scores (CPU, --deterministic)."""

import json

import pytest
from safetensors.torch import load_file
from transformers import AutoModel

from masks.arch import shape_of
from masks.mask import Mask, save_mask, save_task_masks
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


@pytest.mark.parametrize("per_task", [False, True])
def test_an_all_keep_mask_trains_exactly_the_dense_run(tiny, tmp_path, per_task):
    """What lets a study skip a masked run whose mask keeps every unit (experiments.run.repeats_unmasked): it
    would repeat the unmasked run of the same seed to the bit (metrics, per-epoch history, loss log)."""
    import train

    model = tiny[tiny.index("--model") + 1]
    shape = shape_of(AutoModel.from_pretrained(model))
    mask = tmp_path / "all-keep.safetensors"
    if per_task:
        save_task_masks({"tinysent": Mask.ones(shape), "tinysim": Mask.ones(shape)}, mask)
    else:
        save_mask(Mask.ones(shape, kind="union", tasks="tinysent,tinysim"), mask)
    out = {}
    for name, extra in (("dense", []), ("masked", ["--mask", str(mask)])):
        args = [*tiny, "--output-dir", str(tmp_path / name), "--seed", "3", "--epochs", "2", "--log-every", "3",
                "--sampler", "proportional", *extra]
        assert train.main(args) == 0
        results = json.loads((tmp_path / name / "results.json").read_text())
        out[name] = (results["metrics"], results["history"], (tmp_path / name / "metrics.jsonl").read_text())
        if extra:  # the mask was applied, not ignored
            assert results["mask"]["mask_mode"] == ("per-task" if per_task else "shared")
    assert out["masked"] == out["dense"]
