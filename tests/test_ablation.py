"""experiments.ablation on the tiny setup: every arm's runs equal plain train.py runs with the same options,
the report's differences are the hand-computed paired ones, a rerun trains nothing, bad files are one line."""

from __future__ import annotations

import json
import statistics

import pytest
import yaml

from basics.stats import t_quantile
from commands.train import main as train_main
from experiments.ablation import main, render
from tasks.score import task_score
from tests.tiny_run import tiny_setup


def _study(tiny: list[str], root, **changes) -> dict:
    opts = dict(zip(tiny[::2], tiny[1::2], strict=True))
    data = {"name": "tiny_gap", "model": opts["--model"], "task": "tinysim", "seeds": [1, 2, 3],
            "output_dir": str(root / "out"),
            "train": {"task_def": [opts["--task-def"]], "cache_dir": opts["--cache-dir"], "precision": "fp32",
                      "batch_size": 8, "eval_batch_size": 16, "max_seq_length": 32, "epochs": 1},
            "arms": {"base": {}, "lr": {"lr": 5.0e-4}, "holdout": {"lr": 5.0e-4, "holdout_fraction": 0.25}}}
    data.update(changes)
    path = root / "ablation.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return tiny_setup(tmp_path_factory.mktemp("tiny"))


@pytest.fixture(scope="module")
def done(tiny, tmp_path_factory):
    root = tmp_path_factory.mktemp("ablation")
    path = _study(tiny, root)
    assert main([str(path), "--jobs", "2"]) == 0
    return root, json.loads((root / "out" / "ablation.json").read_text())


def test_each_arm_is_the_train_py_run_with_its_options(done, tiny, tmp_path):
    root, report = done
    opts = dict(zip(tiny[::2], tiny[1::2], strict=True))
    out = tmp_path / "plain"
    assert train_main(["--model", opts["--model"], "--task-def", opts["--task-def"], "--cache-dir", opts["--cache-dir"],
                       "--tasks", "tinysim", "--precision", "fp32", "--batch-size", "8", "--eval-batch-size", "16",
                       "--max-seq-length", "32", "--epochs", "1", "--lr", "5e-4", "--holdout-fraction", "0.25",
                       "--seed", "2", "--num-threads", "1", "--no-progress", "--no-save-model",
                       "--output-dir", str(out)]) == 0
    plain = json.loads((out / "metrics.json").read_text())["tinysim"]
    arm = next(a for a in report["arms"] if a["arm"] == "holdout")
    assert arm["options"] == {"lr": 5.0e-4, "holdout_fraction": 0.25}
    assert arm["dev_metrics"][arm["seeds"].index(2)] == plain


def test_the_differences_are_the_paired_ones(done):
    _, report = done
    arms = {a["arm"]: a for a in report["arms"]}
    assert report["reference"] == "base" and arms["base"]["vs_reference"] is None
    for name in arms:
        assert arms[name]["scores"] == [task_score(m) for m in arms[name]["dev_metrics"]]
    for name, other in (("lr", "base"), ("holdout", "lr")):
        diffs = [a - b for a, b in zip(arms[name]["scores"], arms[other]["scores"], strict=True)]
        half = t_quantile(2) * statistics.stdev(diffs) / 3 ** 0.5
        got = arms[name]["vs_previous"]
        assert got["mean"] == pytest.approx(statistics.fmean(diffs))
        assert (got["low"], got["high"]) == pytest.approx((statistics.fmean(diffs) - half, statistics.fmean(diffs) + half))
    assert arms["lr"]["vs_previous"] == arms["lr"]["vs_reference"]
    # the rendered table shows them
    text = render(done[0] / "out" / "ablation.json")
    assert text.count("\n") == 2 + 3 and "| base | – |" in text and "reference" in text


def test_a_rerun_trains_nothing(done, capsys):
    root, report = done
    before = {p: p.stat().st_mtime_ns for p in (root / "out" / "runs").rglob("metrics.json")}
    assert main([str(root / "ablation.yaml"), "--jobs", "1"]) == 0
    assert {p: p.stat().st_mtime_ns for p in (root / "out" / "runs").rglob("metrics.json")} == before
    assert json.loads((root / "out" / "ablation.json").read_text())["arms"] == report["arms"]


@pytest.mark.parametrize("changes, fragment", [
    ({"arms": {}}, "needs at least one arm"),
    ({"reference": "nope"}, "reference arm 'nope' is not one of the arms"),
    ({"arms": {"a": {"lrr": 1}}}, "arms.a: unknown option 'lrr'"),
    ({"arms": {"a": {"seed": 3}}}, "'seed' is set by the study"),
    ({"task": "nope"}, "unknown task 'nope'"),
    ({"colour": "red"}, "unknown ablation key(s) ['colour']"),
])
def test_bad_files_are_one_line_errors(changes, fragment, tiny, tmp_path, capsys):
    path = _study(tiny, tmp_path, **changes)
    assert main([str(path)]) == 2
    err = capsys.readouterr().err
    assert fragment in err and err.count("\n") == 1 and not (tmp_path / "out").exists()
