"""The transfer study: the table and its verdicts against hand-computed numbers; the study end to end on a tiny
model and tiny tasks through the engine (one worker and two give the same table; a second call trains nothing);
the study file's checks; the shipped study files parse and plan."""

from __future__ import annotations

import json
import random

import pytest
import yaml

from basics.errors import UserError
from experiments import transfer, transfer_table
from experiments.transfer_config import load_study, study_from_dict
from experiments.transfer_table import ONE_SEED, TRANSFERS, UNDECIDED, WORSE, render, transfer_report, universal
from masks.mask import load_mask_file
from tasks.baseline import Baseline
from tests.conftest import REPO
from tests.tiny_run import WORDS, save_tiny_model, write_tiny_tasks

pytestmark = pytest.mark.usefixtures("one_thread")


# ---- the table -------------------------------------------------------------------------------------------


def test_table_and_verdicts_against_hand_computed_numbers():
    scores = {"dense": {"a": {1: 70.0, 2: 72.0, 3: 74.0}, "b": {1: 50.0, 2: 50.0, 3: 50.0}},
              "random": {"a": {1: 60.0, 2: 61.0, 3: 62.0}, "b": {1: 50.0, 2: 52.0, 3: 54.0}},
              "obj": {"a": {1: 65.0, 2: 67.0, 3: 66.0}, "b": {1: 49.0, 2: 53.0, 3: 51.0}},
              "a": {"a": {1: 70.0, 2: 70.0, 3: 71.0}, "b": {1: 40.0, 2: 41.0, 3: 43.0}},
              "b": {"a": {1: 63.0}, "b": {1: 55.0, 2: 55.0, 3: 55.0}}}
    report = transfer_report(scores, ["obj", "a", "b"], ["a", "b"], {"obj": None, "a": "a", "b": "b"}, 0.4)
    rows = report["rows"]
    # obj on a: differences to random 5, 6, 4: mean 5, sd 1, t(2) = 4.303 -> 5 ± 2.484
    d = rows["obj"]["a"]["vs_random"]
    assert d["mean"] == pytest.approx(5.0) and d["low"] == pytest.approx(5 - 4.3027 / 3 ** 0.5, abs=1e-3)
    assert rows["obj"]["a"]["verdict"] == TRANSFERS
    assert rows["obj"]["b"]["verdict"] == UNDECIDED  # differences -1, 1, -3
    assert rows["a"]["b"]["verdict"] == WORSE  # -10, -11, -11
    assert rows["b"]["a"]["verdict"] == ONE_SEED
    assert transfer_table.verdict({"mean": 2.0, "low": 2.0, "high": 2.0, "n": 3, "differences": [2.0, 2.0, 2.0]}) == transfer_table.NO_SPREAD
    assert rows["a"]["a"]["score"]["mean"] == pytest.approx(70 + 1 / 3)
    assert rows["random"]["a"]["vs_dense"]["mean"] == pytest.approx(-11.0)
    assert rows["obj"]["a"]["vs_dense"]["differences"] == [-5.0, -5.0, -8.0]
    answers = {a["source"]: a for a in report["universal"]}
    assert not answers["obj"]["universal"] and answers["obj"]["transfers"] == ["a"]
    assert answers["a"]["worse"] == ["b"] and answers["a"]["answer"].startswith("no: better than random on none")
    assert answers["b"]["undecided"] == ["a"]  # its own task b does not count
    assert universal("x", None, {"a": TRANSFERS, "b": TRANSFERS})["universal"]
    text = render(report, "T")
    assert "| obj | 66.00 ± 1.00 | 51.00 ± 2.00 |" in text
    assert "+5.00 [+2.52, +7.48] transfers" in text and "**obj**: no: better than random on 1 of 2" in text


def test_not_learnt_marks_and_targets_left_out_of_the_universal_question():
    scores = {"dense": {"a": {1: 70.0, 2: 72.0}, "b": {1: 50.0, 2: 51.0}},
              "random": {"a": {1: 60.0, 2: 61.0}, "b": {1: 40.0, 2: 41.0}},
              "obj": {"a": {1: 65.0, 2: 66.5}, "b": {1: 49.0, 2: 50.0}}}
    # a: baseline 52 ± 3 (learnt above 55); b: 50 ± 3 (above 53): dense is not learnt on b (50.5)
    baselines = {"a": Baseline("a", {"accuracy": 52.0}, 52.0, 3.0, "x", {"dev": 100}),
                 "b": Baseline("b", {"accuracy": 50.0}, 50.0, 3.0, "y", {"dev": 100})}
    report = transfer_report(scores, ["obj"], ["a", "b"], {"obj": None}, 0.4, baselines)
    assert report["dense_not_learnt"] == ["b"]
    assert report["rows"]["dense"]["a"]["learnt"] and not report["rows"]["obj"]["b"]["learnt"]
    answer = report["universal"][0]
    # obj on b: +9, +9 vs random (no spread: no interval), and b is not judged anyway; on a: +5, +5.5 -> transfers
    assert report["rows"]["obj"]["b"]["verdict"] == transfer_table.NO_SPREAD and answer["not_judged"] == ["b"]
    assert answer["universal"] and answer["answer"] == ("yes: better than random on every other target; "
                                                         "not judged: b (dense not learnt)")
    text = render(report, "T")
    assert "| dense | 71.00 ± 1.41 | 50.50 ± 0.71 † |" in text and "Dense is not learnt on b" in text
    assert universal("x", None, {"b": TRANSFERS}, unlearnt=["b"])["answer"] == "no other target on which dense is learnt"


# ---- the study end to end -----------------------------------------------------------------------------------


def tiny_study(root, out: str) -> dict:
    model = save_tiny_model(root / "model")
    task_def = write_tiny_tasks(root / "data", n_train=48, n_dev=24)
    rng = random.Random(0)
    (root / "corpus.txt").write_text("\n".join(" ".join(rng.choice(WORDS) for _ in range(rng.randint(4, 12)))
                                               for _ in range(64)), encoding="utf-8")
    run = {"task_def": [str(task_def)], "epochs": 1, "batch_size": 8, "eval_batch_size": 16, "max_seq_length": 32,
           "precision": "fp32", "cache_dir": str(root / "cache"), "lr": 1e-3}
    return {"name": "tiny", "model": str(model), "tasks": ["tinysent"], "objectives": ["self-distill"],
            "sparsities": [0.5], "seeds": [1, 2], "output_dir": str(root / out),
            "objective": {"corpus": [str(root / "corpus.txt")], "max_texts": 48, "batch_size": 8, "score_batches": 2,
                          "max_seq_length": 32},
            "tickets": {"train": {**run, "score_batches": 2}}, "train": run}


def run_cli(root, data: dict, *flags: str) -> int:
    path = root / f"{data['output_dir'].rsplit('/', 1)[-1]}.yaml"
    path.write_text(yaml.safe_dump(data), encoding="utf-8")
    return transfer.main([str(path), "--status-every", "600", *flags])


def test_tiny_study_end_to_end_one_and_two_workers(tmp_path, capsys):
    one = tiny_study(tmp_path, "one")
    assert run_cli(tmp_path, one, "--jobs", "1") == 0
    two = {**one, "output_dir": str(tmp_path / "two")}
    assert run_cli(tmp_path, two, "--jobs", "2") == 0
    a = json.loads((tmp_path / "one" / "transfer.json").read_text())
    b = json.loads((tmp_path / "two" / "transfer.json").read_text())
    assert a["tables"] == b["tables"]
    table = a["tables"][0]
    assert table["sources"] == ["self-distill", "tinysent"]
    for row in ("dense", "random", "self-distill", "tinysent"):
        assert table["rows"][row]["tinysent"]["score"]["n"] == 2
    assert table["rows"]["self-distill"]["tinysent"]["verdict"] in (TRANSFERS, WORSE, UNDECIDED, transfer_table.NO_SPREAD)
    # matched sparsity: every source ticket and the random masks keep the same heads and neurons
    masks = [load_mask_file(tmp_path / "one" / "sources" / s / "masks" / "winning-0.50.safetensors")
             for s in table["sources"]]
    masks += [load_mask_file(tmp_path / "one" / "random" / f"random-0.50-seed{k}.safetensors") for k in (1, 2)]
    assert len({(m.num_heads_kept, m.num_ffn_kept) for m in masks}) == 1
    assert masks[0].meta.objective == "self-distill" and masks[1].meta.objective == "task"
    text = (tmp_path / "one" / "transfer.md").read_text()
    assert "| self-distill |" in text and "transfer universally" in text
    capsys.readouterr()
    assert run_cli(tmp_path, one, "--jobs", "1", "--dry-run") == 0
    assert "to train" not in capsys.readouterr().out  # a second call trains nothing
    # a dry run elsewhere, continuing from a results folder, leaves that folder as it is
    results = tmp_path / "results"
    assert run_cli(tmp_path, {**one, "output_dir": str(tmp_path / "three")}, "--jobs", "1", "--dry-run",
                   "--results-dir", str(results)) == 0
    assert not (results / "study.yaml").exists()


def test_study_file_checks(tmp_path):
    base = {"tasks": ["rte"], "model": "minilm"}
    with pytest.raises(UserError, match="unknown transfer study key"):
        study_from_dict({**base, "sorces": []})
    with pytest.raises(UserError, match="objectives: 'task' is the task loss"):
        study_from_dict({**base, "objectives": ["task"]})
    with pytest.raises(UserError, match="unknown ticket objective 'mlmx'"):
        study_from_dict({**base, "objectives": ["mlmx"]})
    with pytest.raises(UserError, match="set by the study"):
        study_from_dict({**base, "objective": {"model": "x"}})
    with pytest.raises(UserError, match="no sources"):
        study_from_dict({**base, "objectives": [], "task_sources": False})
    with pytest.raises(UserError, match="sparsities"):
        study_from_dict({**base, "sparsities": [0.0]})


@pytest.mark.parametrize("name, runs", [("transfer_cpu.yaml", 88), ("transfer_demo.yaml", 22)])
def test_shipped_study_files_plan(name, runs, tmp_path, capsys):
    study = load_study(REPO / "experiments" / name, output_dir=str(tmp_path / "out"))
    jobs = transfer.study_jobs(study, 1)
    assert sum(j.is_training for j in jobs) == runs
    assert {j.config.output.output_dir for j in jobs if j.is_training}.__len__() == runs
