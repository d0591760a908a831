"""--report-to tensorboard: the JSONL log's records as TensorBoard scalars in RUN/tensorboard/."""

from __future__ import annotations

import builtins
import json

import pytest

from commands.train import main
from mtl.config import option_roles
from tests.tiny_run import tiny_setup

pytest.importorskip("tensorboard")


def scalars(log_dir) -> dict[str, list[tuple[int, float]]]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(log_dir))
    acc.Reload()
    return {tag: [(e.step, e.value) for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}


def same(got: list[tuple[int, float]], want: list[tuple[int, float]]) -> bool:
    """Same steps, same values (TensorBoard stores float32)."""
    return [s for s, _ in got] == [s for s, _ in want] and [v for _, v in got] == pytest.approx([v for _, v in want])


def test_tensorboard_scalars_equal_the_jsonl_log(tmp_path, capsys):
    run = tmp_path / "run"
    code = main([*tiny_setup(tmp_path), "--output-dir", str(run), "--epochs", "2", "--log-every", "3",
                 "--report-to", "tensorboard"])
    assert code == 0, capsys.readouterr().err
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    got = scalars(run / "tensorboard")
    losses = [r for r in records if "loss" in r]
    evals = [r for r in records if "eval" in r]
    assert len(evals) == 2 and losses
    for task in ("tinysent", "tinysim"):
        want = [(r["step"], r["loss"][task]) for r in losses if task in r["loss"]]
        assert same(got[f"train/loss/{task}"], want)
    assert same(got["train/lr"], [(r["step"], r["lr"]) for r in losses])
    for metric in ("accuracy", "f1"):
        assert same(got[f"dev/tinysent/{metric}"], [(r["step"], r["eval"]["tinysent"][metric]) for r in evals])
    assert same(got["dev/tinysim/pearson"], [(r["step"], r["eval"]["tinysim"]["pearson"]) for r in evals])
    assert same(got["dev/score"], [(r["step"], r["score"]) for r in evals])


def test_report_to_is_a_free_option_with_checked_choices(tmp_path, capsys):
    assert option_roles()["report_to"] == "free"  # a run logged to TensorBoard is the same run
    code = main([*tiny_setup(tmp_path), "--output-dir", str(tmp_path / "run"), "--report-to", "wandb"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "--report-to must be one of tensorboard" in err[0]


def test_missing_tensorboard_is_one_line_before_anything_is_written(tmp_path, monkeypatch, capsys):
    real = builtins.__import__

    def no_tensorboard(name, *args, **kwargs):
        if name.startswith("torch.utils.tensorboard"):
            raise ImportError(name)
        return real(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_tensorboard)
    run = tmp_path / "run"
    code = main([*tiny_setup(tmp_path), "--output-dir", str(run), "--report-to", "tensorboard"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "pip install 'mtl-tickets[tensorboard]'" in err[0]
    assert not run.exists()
