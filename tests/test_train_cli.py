"""The train.py contract on the real packaged MiniLM and real GLUE slices, and its user errors."""

import json
import os
import subprocess
import sys

import pytest
import yaml

from tests.conftest import REPO, glue_dir

SMALL = ["--max-train-samples", "48", "--max-eval-samples", "40", "--batch-size", "16", "--no-progress",
         "--eval-batch-size", "64"]


def run_train(args, env_extra=None, timeout=900):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", **(env_extra or {})}
    return subprocess.run([sys.executable, str(REPO / "train.py"), *args], capture_output=True, text=True,
                          cwd=REPO, env=env, timeout=timeout)


@pytest.mark.integration
def test_multitask_run_writes_metrics_contract(glue, tmp_path):
    out = tmp_path / "mtl"
    r = run_train(["--tasks", "rte,MRPC,sts-b,cola,sst2", "--output-dir", str(out), "--glue-dir", str(glue),
                   "--max-steps", "6", *SMALL])
    assert r.returncode == 0, r.stderr[-2000:]
    metrics = json.loads((out / "metrics.json").read_text())
    assert set(metrics) == {"rte", "mrpc", "stsb", "cola", "sst2"}
    assert set(metrics["mrpc"]) == {"accuracy", "f1"}
    assert set(metrics["stsb"]) == {"pearson", "spearman"}
    assert set(metrics["cola"]) == {"mcc"}
    assert 0 <= metrics["rte"]["accuracy"] <= 100 and -100 <= metrics["cola"]["mcc"] <= 100
    results = json.loads((out / "results.json").read_text())
    assert results["optimizer_steps"] == 6
    assert results["data"]["rte"] == {"train": 48, "dev": 40}
    config = yaml.safe_load((out / "config.yaml").read_text())
    assert config["tasks"] == ["rte", "MRPC", "sts-b", "cola", "sst2"] and config["max_steps"] == 6
    # the saved model reloads and predicts what the run reported
    from mtl.model import load_multitask_model

    model, _ = load_multitask_model(out / "model")
    assert set(model.heads) == {"rte", "mrpc", "stsb", "cola", "sst2"}


@pytest.mark.integration
def test_single_task_with_yaml_config_and_flag_override(glue, tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text(yaml.safe_dump({"tasks": "rte", "epochs": 1, "lr": 5e-5, "seed": 7, "max_train_samples": 32}))
    out = tmp_path / "one"
    r = run_train(["--config", str(cfg), "--output-dir", str(out), "--seed", "9", "--no-save-model",
                   "--max-eval-samples", "32", "--no-progress"], env_extra={"GLUE_DIR": str(glue)})
    assert r.returncode == 0, r.stderr[-2000:]
    saved = yaml.safe_load((out / "config.yaml").read_text())
    assert saved["seed"] == 9 and saved["lr"] == 5e-5 and saved["tasks"] == ["rte"]  # flag beats YAML
    assert list(json.loads((out / "metrics.json").read_text())) == ["rte"]
    assert not (out / "model").exists()


ERRORS = [
    (["--tasks", "rte,nope"], "unknown task 'nope'", "known tasks: cola"),
    (["--tasks", "rte", "--glue-dir", "/nonexistent/glue"], "GLUE directory not found", "/nonexistent/glue"),
    (["--tasks", "mnli"], "mnli", "not found"),
    (["--tasks", "rte", "--sampler", "zigzag"], "--sampler must be one of", "round-robin"),
    (["--tasks", "rte", "--lr", "-1"], "--lr must be > 0", "-1"),
    (["--tasks", "rte", "--batch-size", "many"], "--batch-size", "many"),
    (["--tasks", "rte", "--bogus-flag", "1"], "unrecognized arguments", "--bogus-flag"),
    (["--tasks", "rte", "--config", "/nonexistent.yaml"], "config file not found", ""),
    ([], "--tasks is required", ""),
]


@pytest.mark.parametrize("args,fragment,detail", ERRORS)
def test_user_errors_exit_2_with_one_line(args, fragment, detail, tmp_path, capsys, monkeypatch):
    import train

    monkeypatch.setenv("GLUE_DIR", str(glue_dir() or tmp_path))
    code = train.main([*args, "--output-dir", str(tmp_path / "o")])
    err = capsys.readouterr().err
    assert code == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("error: ") and fragment in lines[0] and detail in lines[0]


def test_entry_point_prints_one_line_without_traceback(tmp_path):
    r = run_train(["--tasks", "nope", "--output-dir", str(tmp_path / "o")])
    assert r.returncode == 2
    assert r.stderr.strip().splitlines() == [
        "error: unknown task 'nope' (known tasks: cola, sst2, mrpc, stsb, qqp, mnli, qnli, rte, wnli, squad, squad_v2)"]
