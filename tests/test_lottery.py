"""experiments.lottery end to end on the tiny setup (dense, IMP, OMP, random, transfer; resume skips every
finished run), its one-line errors, the shipped CPU config, and the matching rule on synthetic numbers."""

import json

import pytest

import mtl.run
from experiments.lottery import (
    LotteryConfig,
    Study,
    derive,
    is_matching,
    main,
    markdown,
    parse_args,
    summarize,
)
from masks.magnitude import magnitude_mask_path
from masks.weight_mask import load_weight_mask
from mtl.config import TrainConfig
from mtl.run import resolve_tasks
from mtl.rundir import RunResult
from tasks.baseline import Baseline
from tests.conftest import REPO
from tests.tiny_run import tiny_setup

STUDY = ["--task", "tinysent", "--method", "imp,omp,random", "--sparsities", "0.2,0.4", "--rate", "0.2",
         "--rounds", "2", "--seeds", "1,2", "--epochs", "1"]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return tiny_setup(tmp_path_factory.mktemp("tiny"))


@pytest.fixture(scope="module")
def study(tiny, tmp_path_factory):
    out = tmp_path_factory.mktemp("lottery") / "rte"
    assert main([*STUDY, "--output-dir", str(out), "--", *tiny]) == 0
    return out


def test_study_writes_json_md_png(study):
    report = json.loads((study / "lottery.json").read_text())
    rows = {(r["method"], r["sparsity"]): r for r in report["rows"]}
    assert report["rows"][0]["method"] == "dense" and report["rows"][0]["matching"] is None
    assert set(rows) == {("dense", 0.0), *((m, s) for m in ("imp", "omp", "random") for s in (0.2, 0.4))}
    assert all(r["seeds"] == [1, 2] and len(r["scores"]) == 2 for r in rows.values())
    assert report["imp"] == {"rate": 0.2, "rounds": 2, "sparsities": [0.2, 0.4]} and report["metric"] == "task score"
    # the task score: tinysent has accuracy and F1, the score is their mean
    dense = report["rows"][0]
    assert dense["scores"] == [pytest.approx((m["accuracy"] + m["f1"]) / 2) for m in dense["dev_metrics"]]
    assert rows[("omp", 0.2)]["omp_source"] == "finetuned" and "omp_source" not in rows[("imp", 0.2)]
    assert rows[("omp", 0.2)]["vs_dense"]["seeds"] == [1, 2]
    assert report["command"].startswith("python -m experiments.lottery --task tinysent")
    table = (study / "lottery.md").read_text().splitlines()
    header = table.index("| method | sparsity | weights kept | score | matching | Δ vs dense [95% CI] |")
    assert table[header + 2].startswith("| dense | 0.00 | 100.0% |") and table[header + 3].startswith("| imp | 0.20 |")
    assert any(line.startswith("| omp (fine-tuned) | 0.20 |") for line in table)
    assert table[-1].startswith("Command: `python -m experiments.lottery")
    assert (study / "lottery.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_study_masks_have_exact_sparsity_nested_imp_and_per_seed_random(study):
    report = json.loads((study / "lottery.json").read_text())
    masks = {(r["method"], r["sparsity"]): {int(s): load_weight_mask(study / p) for s, p in r["masks"].items()}
             for r in report["rows"] if r["method"] != "dense"}
    for (method, sparsity), by_seed in masks.items():
        for mask in by_seed.values():
            assert mask.total - mask.kept == round(sparsity * mask.total), (method, sparsity)
    for seed in (1, 2):
        assert masks[("imp", 0.4)][seed].is_subset_of(masks[("imp", 0.2)][seed])  # IMP round 2 inside round 1
        # IMP round 1 is the dense run's one-shot mask; round 2 prunes among its survivors
        assert masks[("imp", 0.2)][seed].same_weights(masks[("omp", 0.2)][seed])
        assert (study / f"imp-0.20-seed{seed}" / "weight_masks" / "imp-0.40.safetensors").is_file()
        results = json.loads((study / f"imp-0.40-seed{seed}" / "results.json").read_text())
        assert results["weight_mask"]["method"] == "imp" and results["weight_mask"]["round"] == "2"
    assert not masks[("random", 0.4)][1].same_weights(masks[("random", 0.4)][2])  # drawn per seed


def test_rerun_skips_every_finished_run(study, tiny, capsys, monkeypatch):
    stamps = {p: p.stat().st_mtime_ns for p in study.glob("*/metrics.json")}
    assert len(stamps) == 14  # 2 seeds x (dense + 2 IMP rounds + 2 OMP + 2 random)

    def no_training(config):
        raise AssertionError(f"trained {config.output.output_dir} again")

    monkeypatch.setattr(mtl.run, "run_training", no_training)
    capsys.readouterr()
    assert main([*STUDY, "--output-dir", str(study), "--backend", "inline", "--", *tiny]) == 0
    assert "14/19 done" in capsys.readouterr().out  # every run finished before; the 4 drawn masks and the report remain
    engine = json.loads((study / "logs" / "engine.json").read_text())
    assert sum(j["status"] == "finished-before" for j in engine["jobs"]) == 14
    assert {p: p.stat().st_mtime_ns for p in study.glob("*/metrics.json")} == stamps
    # an IMP round is finished only with its next round's mask: without it, the round is trained again
    monkeypatch.undo()
    magnitude_mask_path(study / "imp-0.20-seed2", "imp", 0.4).unlink()
    assert main([*STUDY, "--output-dir", str(study), "--", *tiny]) == 0
    out = capsys.readouterr().out
    assert "[start] imp-0.20-seed2" in out and "13/19 done" in out


def test_finished_runs_made_with_other_options_stop_the_study(study, tiny, capsys):
    assert main([*STUDY, "--lr", "0.01", "--output-dir", str(study), "--", *tiny]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [(f"error: finished run {study / 'dense-seed1'} was made with other options: lr: 0.0001 -> 0.01; "
                   "restore the options, use another output directory, or delete that run to retrain it")]


def test_transfer_trains_this_task_with_another_studys_masks(study, tiny, tmp_path):
    out = tmp_path / "sim"
    args = ["--task", "tinysim", "--method", "omp", "--sparsities", "0.2", "--seeds", "1", "--epochs", "1",
            "--transfer-from", str(study), "--output-dir", str(out), *tiny]
    assert main(args) == 0
    report = json.loads((out / "lottery.json").read_text())
    assert [r["method"] for r in report["rows"]] == ["dense", "omp", "transfer-omp", "transfer-omp"]
    transfer = [r for r in report["rows"] if r["method"] == "transfer-omp"]
    assert [r["sparsity"] for r in transfer] == [0.2, 0.4] and transfer[0]["source_task"] == "tinysent"
    assert transfer[0]["masks"]["1"] == str(study / "dense-seed1" / "weight_masks" / "omp-0.20.safetensors")
    assert report["metric"] == "task score"
    assert "transfer-omp (from tinysent)" in (out / "lottery.md").read_text()


def test_omp_from_the_pretrained_weights(tiny, tmp_path):
    from masks.magnitude import magnitude_mask
    from masks.weight_mask import prunable_weights
    from mtl.model import load_encoder

    out = tmp_path / "pre"
    assert main(["--task", "tinysent", "--method", "omp", "--omp-source", "pretrained", "--sparsities", "0.3",
                 "--seeds", "1", "--epochs", "1", "--output-dir", str(out), *tiny]) == 0
    mask = load_weight_mask(out / "masks" / "omp-pretrained-0.30.safetensors")
    pretrained = prunable_weights(load_encoder(tiny[tiny.index("--model") + 1])[0])
    assert mask.same_weights(magnitude_mask(pretrained, 0.3)) and mask.meta["source"] == "pretrained"
    assert not list((out / "dense-seed1").glob("weight_masks/*"))  # the dense run had no mask to write
    report = json.loads((out / "lottery.json").read_text())
    assert report["rows"][1]["masks"] == {"1": "masks/omp-pretrained-0.30.safetensors"}


def test_matching_rule_on_synthetic_numbers(tmp_path):
    assert is_matching(68.0, 70.0, 2.0) and is_matching(75.0, 70.0, 2.0) and not is_matching(67.9, 70.0, 2.0)
    assert is_matching(70.0, 70.0, 0.0) and not is_matching(69.99, 70.0, 0.0)  # one seed: at least the dense mean

    base = TrainConfig.of(tasks=["rte"], output_dir=str(tmp_path))
    _, (task,) = resolve_tasks(base)
    study = Study(base, LotteryConfig(task="rte"), task, tmp_path, [0.2, 0.5], [0.2])

    def add(method, sparsity, scores):
        for seed, score in enumerate(scores, 1):
            study.record(method, sparsity, seed, RunResult(metrics={"rte": {"accuracy": score}}), None)

    add("dense", 0.0, [70.0, 66.0])  # 68 ± 2.83
    add("imp", 0.2, [66.0, 65.0])  # 65.5 >= 65.17: matching
    add("random", 0.2, [64.0, 66.0])  # 65.0 < 65.17: not matching
    add("random", 0.5, [60.0, 61.0])
    report = summarize(study, "synthetic")
    rows = {(r["method"], r["sparsity"]): r for r in report["rows"]}
    assert [r["method"] for r in report["rows"]] == ["dense", "imp", "random", "random"]
    assert rows[("imp", 0.2)]["matching"] and not rows[("random", 0.2)]["matching"]
    assert report["highest_matching_sparsity"] == {"imp": 0.2, "random": None}
    assert "| imp | 0.20 | 100.0% | 65.50 ± 0.71 | yes | −2.50 [−21.56, +16.56] |" in (tmp_path / "lottery.md").read_text()


def test_a_report_scored_on_the_primary_metric_is_re_scored_from_its_dev_metrics():
    """lottery.json files written before the one task score held MRPC accuracy as the score."""
    def row(method, sparsity, metrics):
        return {"method": method, "sparsity": sparsity, "seeds": [1, 2], "scores": [m["accuracy"] for m in metrics],
                "mean": 0.0, "std": 0.0, "matching": None, "kept_fraction": 1.0, "masks": {}, "dev_metrics": metrics}

    old = {"task": "mrpc", "metric": "accuracy", "seeds": [1, 2], "omp_source": "finetuned", "command": "x",
           "imp": {"rate": 0.3, "rounds": 1, "sparsities": [0.3]}, "dense": {"mean": 0.0, "std": 0.0},
           "rows": [row("dense", 0.0, [{"accuracy": 70.0, "f1": 80.0}, {"accuracy": 72.0, "f1": 82.0}]),
                    row("omp", 0.3, [{"accuracy": 69.0, "f1": 81.0}, {"accuracy": 71.0, "f1": 81.0}])]}
    report = derive(old)
    assert report["dense"] == {"mean": 76.0, "std": pytest.approx(1.4142, abs=1e-4)}
    omp = report["rows"][1]
    assert omp["scores"] == [75.0, 76.0] and omp["matching"] and omp["omp_source"] == "finetuned"
    assert omp["vs_dense"]["differences"] == [0.0, -1.0]
    text = markdown(old, {"mrpc": Baseline("mrpc", {"accuracy": 68.4, "f1": 81.2}, 74.8, 2.0, "1", {"dev": 408})})
    assert "| omp (fine-tuned) | 0.30 | 100.0% | 75.50 ± 0.71 † | yes | −0.50 [−6.85, +5.85] |" in text


def test_cpu_config_parses():
    config, study, _ = parse_args(["--config", str(REPO / "experiments" / "lottery_cpu.yaml"), "--task", "rte",
                                "--output-dir", "x"])
    assert (config.model.name, config.data.max_train_samples, config.data.holdout_fraction, config.optim.epochs) == ("minilm", 1000, 0.1, 2)
    assert (config.runtime.num_threads, config.runtime.progress, config.tickets.sparsities) == (1, False, [0.3, 0.6])
    assert (study.rate, study.rounds, study.method) == (0.3, 2, ["imp", "omp", "random"])
    assert study.imp_sparsities(config.tickets.sparsities) == [0.3, 0.6]
    assert LotteryConfig(task="rte", rate=0.1).imp_sparsities([0.2, 0.35]) == [0.1, 0.2, 0.3]  # default rounds


@pytest.mark.parametrize("extra, fragment", [
    (["--method", "imp,snip"], "--method must be among imp, omp, random; got 'snip'"),
    (["--rate", "0.3", "--rounds", "4"], "at most 3 rounds stay below 1"),
    (["--omp-source", "random"], "--omp-source must be one of finetuned, pretrained"),
    (["--transfer-from", "/nonexistent/study"], "no lottery.json there"),
    (["--sparsities", "1.0"], "sparsity must be in [0, 1), got 1.0"),
])
def test_bad_study_options_are_one_line_errors(extra, fragment, tiny, tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["--task", "tinysent", "--output-dir", str(out), *tiny, *extra]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and fragment in err[0], err
    assert not out.exists()
