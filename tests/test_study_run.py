"""experiments.run: a whole study with the training and ticket functions replaced by fakes that write
synthetic runs. Resume skips finished runs, restarts crashed ones, retries failed ones; a changed option
of a finished run and a bad study file are one-line errors; the table and plots come out."""

import json
import shutil
from pathlib import Path

import pytest
import torch
import yaml

import mtl.run
from experiments import run as study_run
from experiments.study_config import load_study
from masks.arch import EncoderShape
from masks.importance import Importance, save_importance
from masks.mask import Mask, load_mask_file, save_mask
from mtl.config import save_config
from mtl.run import RunOutcome
from mtl.rundir import RunResult
from mtl.trainer import SELECTED_BY

SHAPE = EncoderShape(num_layers=2, num_heads=2, head_dim=3, hidden=6, intermediate=5)
TICKET_HEADS = {"rte": [[1, 1], [0, 1]], "mrpc": [[0, 1], [1, 1]]}
TICKET_FFN = {"rte": [[1, 1, 0, 0, 1], [0, 1, 1, 0, 0]], "mrpc": [[1, 0, 0, 1, 1], [0, 1, 0, 1, 0]]}
METRICS = {"rte": ("accuracy",), "mrpc": ("accuracy", "f1")}

STUDY = {
    "name": "tiny", "model": "minilm", "tasks": ["RTE", "mrpc"], "seeds": [1, 2],
    "tickets": {"sparsities": [0.3, 0.6], "seeds": [1], "train": {"epochs": 1, "max_train_samples": 40}},
    "mtl": {"variants": ["dense", "union", "per-task"], "single_task": ["super"], "train": {"epochs": 1}},
}


def write_study(tmp_path, **changes):
    data = json.loads(json.dumps(STUDY))
    data["output_dir"] = str(tmp_path / "out")
    for key, value in changes.items():
        section, _, sub = key.partition("__")
        if sub:
            data[section][sub] = value
        else:
            data[section] = value
    path = tmp_path / "study.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def ticket(task: str, kind: str, sparsity: float) -> Mask:
    return Mask(torch.tensor(TICKET_HEADS[task], dtype=torch.bool), torch.tensor(TICKET_FFN[task], dtype=torch.bool),
                {"tasks": task, "model": "tiny", "shape": SHAPE.describe(), "kind": kind,
                 "sparsity": f"{sparsity:.2f}", "param_sparsity": f"{sparsity:.4f}"})


class Fakes:
    """Stand-in for mtl.run.run_training (the study runs inline, in this process): it writes a synthetic
    finished run, and the scoring run's importance and tickets; it records what it trains."""

    def __init__(self):
        self.trained: list[str] = []  # multi-task / single-task run folder names, in order
        self.ticket_runs: list[str] = []
        self.fail: set[str] = set()
        self.fail_tickets: set[str] = set()

    def run_training(self, config, on_step=None):
        out = Path(config.output.output_dir)
        task = config.data.tasks[0]
        is_ticket_run = out.parent.parent.name == "tickets" or out.parent.name.startswith("pt-")
        if is_ticket_run and task in self.fail_tickets:
            raise RuntimeError(f"ticket study of {task} broke")
        out.mkdir(parents=True, exist_ok=True)
        save_config(config, out / "config.yaml")
        if out.name in self.fail:
            raise RuntimeError(f"boom in {out.name}")
        if is_ticket_run:
            name = out.name.rsplit("-seed", 1)[0]
            score = getattr(self, "dense_score", 62.0) if name == "dense" else 70.0 - 10 * float(name.rsplit("-", 1)[1])
            metrics = {task: {"accuracy": score}}
            results = {"metrics": metrics, "holdout_metrics": metrics, "selected_by": SELECTED_BY}
            self.ticket_runs.append(f"{task}/{out.name}")
        else:
            bonus = 1.0 if config.tickets.mask else 0.0
            metrics = {t: {m: 60.0 + 10 * i + config.optim.seed + bonus for i, m in enumerate(METRICS[t])}
                       for t in config.data.tasks}
            results = {"metrics": metrics, "selected_by": SELECTED_BY}
            self.trained.append(out.name)
        if config.tickets.mask:
            loaded = load_mask_file(config.tickets.mask)
            union = loaded if isinstance(loaded, Mask) else loaded["rte"] | loaded["mrpc"]
            kept, total = union.param_counts(SHAPE)
            results["mask"] = {"mask": config.tickets.mask, "mask_mode": "shared" if isinstance(loaded, Mask) else "per-task",
                               "mask_kind": union.meta.kind, "params_kept": kept, "params_prunable": total}
        if config.tickets.score_importance:
            g = torch.Generator().manual_seed(0)
            save_importance(Importance(torch.rand(2, 2, generator=g), torch.rand(2, 5, generator=g), torch.rand(2, 2),
                                       torch.rand(2, 5), torch.rand(2, 1), {"tasks": task, "model": "tiny"}),
                            out / "importance.safetensors")
            for s in config.tickets.sparsities:
                for kind in config.tickets.ticket_kinds:
                    save_mask(ticket(task, kind, s), out / "masks" / f"{kind}-{s:.2f}.safetensors")
        (out / "results.json").write_text(json.dumps(results))
        (out / "metrics.json").write_text(json.dumps(metrics))
        return RunOutcome(RunResult.from_dict(results))


@pytest.fixture
def fakes(monkeypatch):
    f = Fakes()
    monkeypatch.setattr(mtl.run, "run_training", f.run_training)
    return f


def run_cli(path, capsys, *flags):
    code = study_run.main([str(path), "--backend", "inline", *flags])
    out, err = capsys.readouterr()
    return code, out, err


MTL_RUNS = ["mtl-dense-seed1", "mtl-union-seed1", "mtl-per-task-seed1", "single-super-rte-seed1",
            "single-super-mrpc-seed1", "mtl-dense-seed2", "mtl-union-seed2", "mtl-per-task-seed2",
            "single-super-rte-seed2", "single-super-mrpc-seed2"]


def test_whole_study_then_resume_trains_nothing(tmp_path, fakes, capsys):
    path = write_study(tmp_path)
    code, out, err = run_cli(path, capsys)
    assert code == 0, err
    assert sorted(fakes.trained) == sorted(MTL_RUNS)
    assert fakes.trained.index("mtl-dense-seed2") < fakes.trained.index("mtl-union-seed1")  # dense needs no ticket
    assert len(fakes.ticket_runs) == 2 * 7  # per task: dense + 3 kinds x 2 sparsities, 1 seed
    root = tmp_path / "out"
    info = json.loads((root / "runs" / "mtl-union-seed2" / "study_run.json").read_text())
    assert info["label"] == "Tickets-Share (union)" and info["seed"] == 2 and info["tasks"] == ["rte", "mrpc"]
    union = load_mask_file(root / "masks" / "union.safetensors")
    assert union.heads.tolist() == [[True, True], [True, True]]
    assert set(load_mask_file(root / "masks" / "per-task.safetensors")) == {"rte", "mrpc"}
    table = json.loads((root / "table.json").read_text())
    labels = [r["label"] for r in table["rows"]]
    assert labels == ["Single-task (super ticket)", "MT-DNN (dense)", "Tickets-Share (union)", "Tickets-Share (per-task)"]
    dense = next(r for r in table["rows"] if r["label"] == "MT-DNN (dense)")
    assert dense["tasks"]["rte"]["metrics"]["accuracy"]["mean"] == pytest.approx(61.5)  # 60 + seed, seeds 1 and 2
    assert (root / "table.md").is_file() and (root / "table.csv").is_file()
    for name in ["phase-rte", "phase-mrpc", "mask-rte", "mask-mrpc", "mask-union", "mask-per-task", "overlap"]:
        assert (root / "plots" / f"{name}.png").stat().st_size > 0, name
    summary = json.loads((root / "summary.json").read_text())
    trained = [j["name"] for j in summary["jobs"] if j["status"] == "ran" and j["name"].startswith("runs/")]
    assert sorted(trained) == sorted(f"runs/{r}" for r in MTL_RUNS)
    assert "[start] runs/mtl-dense-seed1" in out and "[done] runs/mtl-dense-seed1: in " in out
    assert "| Tickets-Share (union) | 2 |" in out

    fakes.trained.clear()
    fakes.ticket_runs.clear()
    code, out, err = run_cli(path, capsys)
    assert code == 0, err
    assert fakes.trained == [] and fakes.ticket_runs == []
    summary = json.loads((root / "summary.json").read_text())
    assert all(j["status"] == "finished-before" for j in summary["jobs"] if j["name"].startswith(("runs/", "tickets/"))
               and not j["name"].endswith(("phase_transition",)) and "/masks/" not in j["name"])
    assert f"{len(MTL_RUNS) + 14} finished-before" in out


def test_crashed_run_restarts(tmp_path, fakes, capsys):
    path = write_study(tmp_path)
    assert run_cli(path, capsys)[0] == 0
    crashed = tmp_path / "out" / "runs" / "mtl-union-seed2"
    (crashed / "metrics.json").unlink()  # config.yaml and study_run.json stay, as after a crash
    fakes.trained.clear()
    code, out, _ = run_cli(path, capsys)
    assert code == 0
    assert fakes.trained == ["mtl-union-seed2"]
    assert "[start] runs/mtl-union-seed2" in out


def test_failed_run_is_reported_then_retried(tmp_path, fakes, capsys):
    path = write_study(tmp_path)
    fakes.fail = {"mtl-per-task-seed1"}
    code, out, _ = run_cli(path, capsys)
    assert code == 1
    assert "[FAILED] runs/mtl-per-task-seed1: after" in out and "RuntimeError: boom in mtl-per-task-seed1" in out
    assert "boom" in (tmp_path / "out" / "runs" / "mtl-per-task-seed1" / "error.log").read_text()
    assert "mtl-dense-seed2" in fakes.trained  # the study went on
    fakes.fail, fakes.trained = set(), []
    code, out, _ = run_cli(path, capsys)
    assert code == 0 and fakes.trained == ["mtl-per-task-seed1"]


def test_failed_ticket_study_leaves_masked_runs_undone(tmp_path, fakes, capsys):
    path = write_study(tmp_path)
    fakes.fail_tickets = {"mrpc"}
    code, out, _ = run_cli(path, capsys)
    assert code == 1
    assert sorted(fakes.trained) == ["mtl-dense-seed1", "mtl-dense-seed2", "single-super-rte-seed1",
                                     "single-super-rte-seed2"]  # everything that needs no mrpc ticket
    assert "[not run] runs/mtl-union-seed1: needs masks/union, which failed" in out
    assert not (tmp_path / "out" / "masks" / "union.safetensors").exists()


def test_finished_run_with_other_options_is_an_error(tmp_path, fakes, capsys):
    assert run_cli(write_study(tmp_path), capsys)[0] == 0
    fakes.trained.clear()
    fakes.ticket_runs.clear()
    code, _, err = run_cli(write_study(tmp_path, mtl__train={"epochs": 2}), capsys)
    assert code == 2 and fakes.trained == []
    assert "mtl-dense-seed1 was made with other options: epochs: 1.0 -> 2.0" in err
    assert len(err.strip().splitlines()) == 1
    code, _, err = run_cli(write_study(tmp_path, tickets__train={"epochs": 3, "max_train_samples": 40}), capsys)
    assert code == 2 and fakes.trained == [] and fakes.ticket_runs == []
    assert "tickets/rte/dense-seed1 was made with other options: epochs: 1.0 -> 3.0" in err


def test_dry_run_trains_nothing(tmp_path, fakes, capsys):
    code, out, _ = run_cli(write_study(tmp_path), capsys, "--dry-run")
    assert code == 0 and fakes.trained == [] and not (tmp_path / "out").exists()
    assert "tickets/rte/dense-seed1: to train" in out and "runs/mtl-per-task-seed2: to train" in out
    assert "estimated cost of what is left" in out


def test_tasks_are_canonical_and_options_layer(tmp_path):
    study = load_study(write_study(tmp_path, train={"max_seq_length": 64}))
    assert study.tasks == ["rte", "mrpc"]
    ticket = study.ticket_config("rte")
    assert (ticket.optim.epochs, ticket.data.max_seq_length, ticket.data.holdout_fraction,
            ticket.tickets.sparsities) == (1.0, 64, 0.1, [0.3, 0.6])
    assert ticket.runtime.progress is False and ticket.output.save_model is False
    mtl = study.mtl_config(study.tasks, seed=2, output_dir="x")
    assert (mtl.optim.epochs, mtl.data.max_seq_length, mtl.optim.seed, mtl.data.holdout_fraction,
            mtl.data.tasks) == (1.0, 64, 2, 0.0, ["rte", "mrpc"])


@pytest.mark.parametrize("changes, message", [
    ({"tasks": ["rte", "nope"]}, "nope"),
    ({"seeds": [1, 1]}, "seeds lists a seed twice"),
    ({"colour": "red"}, "unknown study key 'colour'"),
    ({"tickets__sparsities": [0.3, 1.2]}, "strictly between 0 and 1"),
    ({"tickets__select_on": "test"}, "tickets.select_on must be one of holdout, dev"),
    ({"tickets__kinds": ["random"]}, "must include winning"),
    ({"tickets__dense_candidate": "no"}, "tickets.dense_candidate must be true or false"),
    ({"tickets__dirs": {"cola": "x"}}, "tickets.dirs names task(s) cola"),
    ({"tickets__train": {"seed": 3}}, "tickets.train: 'seed' is set by the study"),
    ({"mtl__train": {"epoch": 3}}, "mtl.train: unknown option 'epoch'"),
    ({"mtl__train": {"lr": "fast"}}, "mtl.train: config key 'lr': cannot read 'fast'"),
    ({"mtl__variants": ["dense", "vote:3"]}, "vote:3 needs K in 1..2"),
    ({"mtl__variants": ["dense", "merge"]}, "unknown aggregation mode 'merge'"),
    ({"mtl__single_task": ["best"]}, "mtl.single_task: unknown kind 'best'"),
])
def test_bad_study_file_is_one_line_error(changes, message, tmp_path, fakes, capsys):
    code, _, err = run_cli(write_study(tmp_path, **changes), capsys)
    assert code == 2 and message in err, err
    assert len(err.strip().splitlines()) == 1 and err.startswith("error: ")
    assert fakes.trained == []


def test_options_that_do_not_change_results_still_resume(tmp_path, fakes, capsys):
    assert run_cli(write_study(tmp_path), capsys)[0] == 0
    fakes.trained.clear()
    fakes.ticket_runs.clear()
    code, _, err = run_cli(write_study(tmp_path, train={"num_threads": 1, "progress": True}), capsys)
    assert code == 0, err
    assert fakes.trained == [] and fakes.ticket_runs == []


def test_ticket_dirs_and_output_dir_override(tmp_path, fakes, capsys):
    shared = tmp_path / "pt-rte"
    path = write_study(tmp_path, tickets__dirs={"RTE": str(shared)})
    code, _, err = run_cli(path, capsys, "--output-dir", str(tmp_path / "elsewhere"))
    assert code == 0, err
    assert (shared / "super_ticket.safetensors").is_file()
    assert (tmp_path / "elsewhere" / "tickets" / "mrpc" / "super_ticket.safetensors").is_file()
    assert (tmp_path / "elsewhere" / "table.md").is_file() and not (tmp_path / "out").exists()


@pytest.mark.parametrize("name, tasks, seeds, runs", [
    ("quickstart", ["rte", "mrpc", "stsb"], [1], 3),
    ("cpu_study", ["cola", "sst2", "mrpc", "stsb", "rte"], [1, 2, 3], 12 + 15),
    ("paper_base", ["mnli", "qqp", "qnli", "sst2", "cola", "stsb", "mrpc", "rte"], [1, 2, 3, 4, 5], 15 + 80),
])
def test_shipped_study_files_are_valid(name, tasks, seeds, runs):
    from tests.conftest import REPO

    study = load_study(REPO / "experiments" / f"{name}.yaml")
    assert (study.name, study.tasks, study.seeds) == (name, tasks, seeds)
    assert len(study_run.plan_runs(study)) == runs
    assert study.ticket_config(tasks[0]).data.holdout_fraction > 0  # the super ticket is chosen off dev
    assert study.mtl_config(tasks, seeds[0], "x").eval.keep_best is False  # multi-task rows report the last epoch


@pytest.mark.parametrize("single_task, what", [(["super"], "super ticket of rte"), ([], "union mask")])
def test_changed_ticket_with_finished_runs_is_an_error(single_task, what, tmp_path, fakes, capsys, monkeypatch):
    path = write_study(tmp_path, mtl__single_task=single_task)
    assert run_cli(path, capsys)[0] == 0
    monkeypatch.setitem(TICKET_HEADS, "rte", [[1, 0], [0, 1]])  # the scoring runs now hold other tickets
    monkeypatch.setitem(TICKET_HEADS, "mrpc", [[1, 0], [0, 1]])
    for task in ("rte", "mrpc"):
        for mask in (tmp_path / "out" / "tickets" / task / "dense-seed1" / "masks").glob("winning-*.safetensors"):
            save_mask(ticket(task, "winning", float(mask.stem.split("-")[1])), mask)
    fakes.trained.clear()
    code, _, err = run_cli(path, capsys)
    assert code == 2 and fakes.trained == []
    assert f"the {what} (" in err and "finished run(s) were trained with the previous one" in err


@pytest.mark.parametrize("dense_candidate, kind", [(True, "dense"), (False, "winning")])
def test_dense_candidate_reaches_the_ticket_studies(dense_candidate, kind, tmp_path, fakes, capsys, monkeypatch):
    monkeypatch.setattr(fakes, "dense_score", 75.0, raising=False)  # dense beats every winning ticket
    path = write_study(tmp_path, tickets__dense_candidate=dense_candidate)
    code, out, err = run_cli(path, capsys)
    assert code == 0, err
    report = json.loads((tmp_path / "out" / "tickets" / "rte" / "phase_transition.json").read_text())
    assert report["super_ticket"]["kind"] == kind and report["super_ticket"]["dense_candidate"] is dense_candidate


def test_runs_whose_mask_keeps_every_unit_repeat_the_dense_runs_and_are_not_trained(tmp_path, fakes, capsys,
                                                                                    monkeypatch):
    monkeypatch.setattr(fakes, "dense_score", 75.0, raising=False)  # both super tickets are dense: all-keep masks
    path = write_study(tmp_path, mtl__variants=["dense", "union", "per-task", "random-share"],
                       mtl__single_task=["dense", "super"])
    code, out, err = run_cli(path, capsys)
    assert code == 0, err
    assert sorted(fakes.trained) == sorted(f"{kind}-seed{s}" for s in (1, 2) for kind in
                                           ("mtl-dense", "single-dense-rte", "single-dense-mrpc"))
    assert ("[skipped] runs/mtl-union-seed1: its mask union.safetensors keeps every head and FFN neuron of every "
            "task: it would repeat runs/mtl-dense-seed1 exactly") in out
    assert "[skipped] runs/single-super-rte-seed2: its mask super_ticket.safetensors" in out
    assert "it would repeat runs/single-dense-rte-seed2 exactly" in out
    table = json.loads((tmp_path / "out" / "table.json").read_text())
    assert [r["label"] for r in table["rows"]] == ["Single-task (dense)", "MT-DNN (dense)"]
    assert [n.split(" is not in the table")[0] for n in table["notes"]] == [
        "Tickets-Share (union)", "Tickets-Share (per-task)", "Random-Share (per-task)", "Single-task (super ticket)"]
    assert "would repeat MT-DNN (dense)'s run of the same seed exactly" in table["notes"][0]
    assert "Note: Tickets-Share (union) is not in the table" in (tmp_path / "out" / "table.md").read_text()
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert sum(j["status"] == "skipped" for j in summary["jobs"]) == 10  # 3 shared-mask rows and 2 tasks x 2 seeds
    fakes.trained.clear()
    code, out, err = run_cli(path, capsys, "--dry-run")
    assert code == 0 and "runs/mtl-per-task-seed2: skipped (as its inputs are now: its mask" in out
    code, out, err = run_cli(path, capsys)
    assert code == 0 and fakes.trained == [] and "10 skipped" in out


def test_the_results_folder_alone_rebuilds_the_table(tmp_path, fakes, capsys):
    # what a fresh clone has: the committed results folder, no run directory (no weights, no checkpoints)
    path = write_study(tmp_path)
    results = tmp_path / "results"
    code, _, err = run_cli(path, capsys, "--results-dir", str(results))
    assert code == 0, err
    original = json.loads((tmp_path / "out" / "table.json").read_text())
    assert json.loads((results / "table.json").read_text()) == original
    shutil.rmtree(tmp_path / "out")
    (results / "table.json").unlink()
    shutil.rmtree(results / "plots")
    fakes.trained.clear()
    fakes.ticket_runs.clear()
    code, _, err = run_cli(path, capsys, "--output-dir", str(results), "--report-only")
    assert code == 0, err
    assert fakes.trained == [] and fakes.ticket_runs == []
    rebuilt = json.loads((results / "table.json").read_text())
    for table in (original, rebuilt):  # the runs' paths differ; everything else must not
        for row in table["rows"]:
            row.pop("runs", None)
    assert rebuilt == original
    assert (results / "plots" / "overlap.png").is_file() and (results / "plots" / "mask-union.png").is_file()
