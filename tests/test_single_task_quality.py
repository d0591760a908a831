"""experiments.single_task_quality: finished runs are reused, and the report gives each run and the mean over seeds."""

import json
import statistics

from experiments import single_task_quality


def fake_run(out, task, metrics, best_epoch=3):
    out.mkdir(parents=True)
    (out / "metrics.json").write_text(json.dumps({task: metrics}))
    (out / "results.json").write_text(json.dumps({"metrics": {task: metrics}, "best_epoch": best_epoch,
                                                   "train_examples_per_s": 50.0, "wall_seconds": 10.0}))


def test_finished_runs_are_reported_with_mean_and_std_over_seeds(tmp_path, monkeypatch):
    accs = {1: 59.6, 2: 56.3, 3: 61.4}
    for seed, acc in accs.items():
        fake_run(tmp_path / f"rte-seed{seed}", "rte", {"accuracy": acc})
    fake_run(tmp_path / "cola-seed1", "cola", {"mcc": 31.0})
    fake_run(tmp_path / "cola-seed2", "cola", {"mcc": 29.0})
    monkeypatch.setattr(single_task_quality.subprocess, "run", lambda *a, **k: (_ for _ in ()).throw(AssertionError("ran")))
    assert single_task_quality.main(["--tasks", "rte", "--seeds", "1,2,3", "--output-dir", str(tmp_path)]) == 0
    report = (tmp_path / "quality.md").read_text()
    assert "| rte | 2 | accuracy 56.3 | accuracy ≥ 60: MISSED | 3 | 50.0 | 10.0 |" in report
    assert "| rte | 3 | accuracy 61.4 | accuracy ≥ 60: met |" in report
    mean, std = statistics.fmean(accs.values()), statistics.stdev(accs.values())
    assert f"| rte | accuracy | 3 | {mean:.1f} ± {std:.1f} | 56.3 | 61.4 | accuracy ≥ 60: MISSED |" in report
    assert [r["seed"] for r in json.loads((tmp_path / "quality.json").read_text())] == [1, 2, 3]

    assert single_task_quality.main(["--tasks", "cola", "--seeds", "1,2", "--output-dir", str(tmp_path)]) == 0
    assert "| cola | mcc | 2 | 30.0 ± 1.4 | 29.0 | 31.0 | mcc ≥ 30: met |" in (tmp_path / "quality.md").read_text()


def test_report_only_skips_missing_runs(tmp_path, monkeypatch, capsys):
    fake_run(tmp_path / "cola-seed1", "cola", {"mcc": 29.1})
    monkeypatch.setattr(single_task_quality.subprocess, "run", lambda *a, **k: (_ for _ in ()).throw(AssertionError("ran")))
    assert single_task_quality.main(["--tasks", "cola,sst2", "--seeds", "1", "--output-dir", str(tmp_path), "--report-only"]) == 0
    assert f"not run: {tmp_path / 'sst2-seed1'}" in capsys.readouterr().out
    assert [r["task"] for r in json.loads((tmp_path / "quality.json").read_text())] == ["cola"]


def test_one_seed_has_no_summary_table():
    rows = [{"task": "sst2", "seed": 1, "metrics": {"accuracy": 88.8}, "best_epoch": 1, "train_ex_per_s": 89.6, "wall_s": 763.5}]
    report = single_task_quality.quality_report(rows)
    assert report.splitlines()[2] == "| sst2 | 1 | accuracy 88.8 | accuracy ≥ 88: met | 1 | 89.6 | 763.5 |"
    assert "mean ± std" not in report
    rows.append({**rows[0], "task": "cola", "metrics": {"mcc": 29.1}})
    rows.append({**rows[0], "seed": 2, "metrics": {"accuracy": 89.0}})
    report = single_task_quality.quality_report(rows)
    assert "| cola | mcc | 1 | 29.1 | 29.1 | 29.1 | mcc ≥ 30: MISSED |" in report  # one seed: no std
    assert "| sst2 | accuracy | 2 | 88.9 ± 0.1 | 88.8 | 89.0 | accuracy ≥ 88: met |" in report
