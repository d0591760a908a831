"""experiments.glue_table on synthetic run directories: means and stds over seeds, the averaging rules,
labels read or inferred, tasks missing from a row or from every run, CSV/JSON, one-line errors."""

import csv
import json
import statistics

import pytest

from experiments import glue_table
from experiments.glue_table import build_table, collect_runs, format_markdown, format_seed_table
from experiments.report_stats import format_versus
from mtl.rundir import MaskInfo
from tasks.baseline import Baseline

MASK_UNION = {"mask": "m.safetensors", "mask_mode": "shared", "mask_kind": "union", "params_kept": 900,
              "params_prunable": 1000, "sparsity": 0.1}
MASK_PER_TASK = {"mask": "p.safetensors", "mask_mode": "per-task", "params_kept": 950, "params_prunable": 1000,
                 "sparsity": 0.05, "task_sparsity": {"rte": 0.3, "mrpc": 0.1, "stsb": 0.2}}


def write_run(root, name, metrics, seed=None, label=None, mask=None, results=True):
    """A finished run directory as mtl.run writes it (metrics.json, results.json, config.yaml)."""
    run = root / name
    run.mkdir(parents=True)
    (run / "metrics.json").write_text(json.dumps(metrics))
    if results:
        (run / "results.json").write_text(json.dumps({"metrics": metrics, **({"mask": mask} if mask else {})}))
    if seed is not None:
        (run / "config.yaml").write_text(f"tasks: [{', '.join(metrics)}]\nseed: {seed}\n")
    if label is not None:
        (run / "study_run.json").write_text(json.dumps({"label": label, "seed": seed}))
    return run


def mtl_metrics(rte, mrpc, stsb):
    return {"rte": {"accuracy": rte}, "mrpc": {"accuracy": mrpc[0], "f1": mrpc[1]},
            "stsb": {"pearson": stsb[0], "spearman": stsb[1]}}


@pytest.fixture
def study(tmp_path):
    """Dense MTL over seeds 1-3, union over seeds 1-2 (inferred labels), single-task rows (labelled)."""
    runs = tmp_path / "study" / "runs"
    dense = [(60.0, (80.0, 86.0), (84.0, 83.0)), (62.0, (82.0, 88.0), (86.0, 85.0)), (64.0, (78.0, 84.0), (85.0, 84.0))]
    for seed, (r, m, s) in enumerate(dense, 1):
        write_run(runs, f"mtl-dense-seed{seed}", mtl_metrics(r, m, s), seed=seed)
    for seed, (r, m, s) in enumerate([(66.0, (81.0, 87.0), (85.0, 84.0)), (68.0, (83.0, 89.0), (87.0, 86.0))], 1):
        write_run(runs, f"mtl-union-seed{seed}", mtl_metrics(r, m, s), seed=seed, mask=MASK_UNION)
    # single-task rows: rte and mrpc only (no stsb): a partial row
    for seed, (r, m) in enumerate([(58.0, (79.0, 85.0)), (60.0, (81.0, 87.0))], 1):
        write_run(runs, f"single-dense-rte-seed{seed}", {"rte": {"accuracy": r}}, seed=seed, label="Single-task (dense)")
        write_run(runs, f"single-dense-mrpc-seed{seed}", {"mrpc": {"accuracy": m[0], "f1": m[1]}}, seed=seed,
                  label="Single-task (dense)")
    for seed, (r, m, s) in enumerate([(61.0, (80.0, 86.0), (83.0, 82.0)), (64.0, (81.0, 87.0), (86.0, 84.0))], 1):
        write_run(runs, f"mtl-random-share-seed{seed}", mtl_metrics(r, m, s), seed=seed, label="Random-Share (union)")
    (runs / "mtl-per-task-seed1").mkdir()  # crashed: config.yaml, no metrics.json
    (runs / "mtl-per-task-seed1" / "config.yaml").write_text("seed: 1\n")
    return tmp_path / "study"


def rows_by_label(table):
    return {row["label"]: row for row in table["rows"]}


def test_means_stds_and_glue_average(study):
    records, unfinished = collect_runs([study])
    assert [p.name for p in unfinished] == ["mtl-per-task-seed1"]
    table = build_table(records)
    assert [c["task"] for c in table["tasks"]] == ["stsb", "mrpc", "rte"]  # GLUE order; no CoLA, MNLI, ... columns
    assert [c["metrics"] for c in table["tasks"]] == [["pearson", "spearman"], ["accuracy", "f1"], ["accuracy"]]
    dense = rows_by_label(table)["MT-DNN (dense)"]
    rte = dense["tasks"]["rte"]["metrics"]["accuracy"]
    assert (rte["mean"], rte["std"], rte["n"]) == (62.0, 2.0, 3)
    f1 = dense["tasks"]["mrpc"]["metrics"]["f1"]
    assert f1["mean"] == pytest.approx(86.0) and f1["std"] == pytest.approx(2.0)
    # a task with two metrics contributes their mean; GLUE avg = mean of the task scores
    per_seed = [statistics.fmean([60, (80 + 86) / 2, (84 + 83) / 2]), statistics.fmean([62, (82 + 88) / 2, (86 + 85) / 2]),
                statistics.fmean([64, (78 + 84) / 2, (85 + 84) / 2])]
    avg = dense["average"]
    assert avg["mean"] == pytest.approx(statistics.fmean(per_seed))
    assert avg["std"] == pytest.approx(statistics.stdev(per_seed))
    assert avg["complete"] and avg["tasks"] == ["stsb", "mrpc", "rte"] and avg["n"] == 3
    assert dense["seeds"] == [1, 2, 3]
    assert dense["params_kept"]["mean"] == 100.0


def test_labels_inferred_params_and_row_order(study, tmp_path):
    write_run(tmp_path / "other", "pt", mtl_metrics(70.0, (80.0, 85.0), (86.0, 85.0)), seed=1, mask=MASK_PER_TASK)
    records, _ = collect_runs([study, tmp_path / "other" / "pt"])
    table = build_table(records)
    assert [r["label"] for r in table["rows"]] == ["Single-task (dense)", "MT-DNN (dense)", "Tickets-Share (union)",
                                                    "Tickets-Share (per-task)", "Random-Share (union)"]
    rows = rows_by_label(table)
    assert rows["Tickets-Share (union)"]["params_kept"]["mean"] == pytest.approx(90.0)
    assert rows["Tickets-Share (union)"]["params_task_mean"]["mean"] == pytest.approx(90.0)  # shared: the same
    # two accountings for per-task masks: the union (95 %) and the mean of the task tickets' sizes (80 %)
    assert rows["Tickets-Share (per-task)"]["params_kept"]["mean"] == pytest.approx(95.0)
    assert rows["Tickets-Share (per-task)"]["params_task_mean"]["mean"] == pytest.approx(80.0)
    assert rows["Tickets-Share (per-task)"]["params_prunable"] == 1000
    assert rows["Tickets-Share (per-task)"]["average"]["std"] is None  # one seed: no std
    line = next(x for x in format_markdown(table).splitlines() if x.startswith("| Tickets-Share (per-task)"))
    assert line.endswith("| 95.0 | 80.0 |")
    assert "% of the encoder's prunable parameters" in format_markdown(table)


@pytest.mark.parametrize("tasks, mask, label", [
    (["rte", "mrpc"], None, "MT-DNN (dense)"),
    (["rte"], None, "Single-task (dense)"),
    (["rte", "mrpc"], MASK_UNION, "Tickets-Share (union)"),
    (["rte", "mrpc"], MASK_PER_TASK, "Tickets-Share (per-task)"),
    (["rte"], {**MASK_UNION, "mask_kind": "super_ticket"}, "Single-task (super ticket)"),
])
def test_infer_label(tasks, mask, label):
    assert glue_table.infer_label(tasks, MaskInfo.from_dict(mask) if mask else None) == label


def test_missing_task_in_a_row_is_a_dash_and_marks_the_average(study):
    table = build_table(collect_runs([study])[0], baselines={})
    single = rows_by_label(table)["Single-task (dense)"]
    assert "stsb" not in single["tasks"]
    assert single["average"]["tasks"] == ["mrpc", "rte"] and not single["average"]["complete"]
    assert single["average"]["mean"] == pytest.approx(statistics.fmean([statistics.fmean([80.0, 86.0]), 59.0]))
    md = format_markdown(table)
    line = next(line for line in md.splitlines() if line.startswith("| Single-task (dense)"))
    cells = [c.strip() for c in line.strip("|").split("|")]
    header = [c.strip() for c in md.splitlines()[0].strip("|").split("|")]
    assert header == ["model", "seeds", "STS-B P/S", "MRPC acc/F1", "RTE acc", "GLUE avg", "Δ avg vs dense [95% CI]",
                      "params: union (% prunable)", "params: task avg (% prunable)"]
    assert cells[2] == "–" and cells[5].endswith("*")
    assert cells[3] == "80.0 ± 1.4 / 86.0 ± 1.4" and cells[4] == "59.0 ± 1.4"
    assert not any(c.startswith("0.0") for c in cells)
    assert "average over the row's tasks only" in md


def test_one_seed_has_no_std_and_mnli_has_m_mm(tmp_path):
    write_run(tmp_path, "a", {"mnli": {"accuracy_m": 84.0, "accuracy_mm": 84.5}, "cola": {"mcc": 55.0}}, seed=1)
    table = build_table(collect_runs([tmp_path])[0], baselines={})
    md = format_markdown(table, "t")
    assert md.startswith("# t\n")
    assert "| model | seeds | MNLI m/mm | CoLA MCC | GLUE avg | Δ avg vs dense [95% CI] |" in md
    assert "| MT-DNN (dense) | 1 | 84.0 / 84.5 | 55.0 | 69.6 | – | 100.0 | 100.0 |" in md  # (84.25 + 55) / 2 = 69.625


def test_cli_writes_md_csv_json(study, tmp_path, capsys):
    out = tmp_path / "report" / "table.md"
    assert glue_table.main([str(study), "--out", str(out), "--title", "GLUE dev"]) == 0
    stdout, stderr = capsys.readouterr()
    assert "mtl-per-task-seed1 has no metrics.json" in stderr and "| MT-DNN (dense) | 3 |" in stdout
    assert out.read_text().startswith("# GLUE dev")
    rows = list(csv.DictReader(out.with_suffix(".csv").open()))
    by = {r["label"]: r for r in rows}
    assert float(by["MT-DNN (dense)"]["rte_accuracy_mean"]) == pytest.approx(62.0)
    assert float(by["MT-DNN (dense)"]["rte_accuracy_std"]) == pytest.approx(2.0)
    assert by["Single-task (dense)"]["stsb_pearson_mean"] == ""  # missing, never 0
    assert by["Tickets-Share (union)"]["params_kept_pct"] == "90.0000"
    data = json.loads(out.with_suffix(".json").read_text())
    assert data["title"] == "GLUE dev" and len(data["rows"]) == 4


@pytest.mark.parametrize("setup, message", [
    ("missing", "run directory not found"),
    ("empty", "no run directories in it"),
    ("duplicate", "two runs of 'MT-DNN (dense)' on rte with seed 1"),
])
def test_user_errors_are_one_line(setup, message, tmp_path, capsys):
    target = tmp_path / "runs"
    if setup == "empty":
        target.mkdir()
    if setup == "duplicate":
        write_run(target, "a", {"rte": {"accuracy": 60.0}, "mrpc": {"accuracy": 80.0}}, seed=1)
        write_run(target, "b", {"rte": {"accuracy": 61.0}, "mrpc": {"accuracy": 81.0}}, seed=1)
    code = glue_table.main([str(target), "--out", str(tmp_path / "t.md")])
    err = capsys.readouterr().err
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1


def baseline(task, score, error):
    return Baseline(task=task, metrics={"score": score}, score=score, standard_error=error, constant="1", n={"dev": 100})


def test_paired_differences_to_dense_and_learnt_marks(study):
    baselines = {"rte": baseline("rte", 60.0, 2.0), "mrpc": baseline("mrpc", 74.8, 2.0), "stsb": baseline("stsb", 0.0, 2.6)}
    table = build_table(collect_runs([study])[0], baselines=baselines)
    rows = rows_by_label(table)
    union, dense = rows["Tickets-Share (union)"], rows["MT-DNN (dense)"]
    # union has seeds 1 and 2: paired with dense seeds 1 and 2 only
    by_seed = {s: v for s, v in dense["average"]["by_seed"]}
    want = [dict(union["average"]["by_seed"])[s] - by_seed[s] for s in (1, 2)]
    diff = union["vs_dense"]["glue_avg"]
    assert union["vs_dense"]["against"] == "MT-DNN (dense)" and diff["seeds"] == [1, 2]
    assert diff["differences"] == pytest.approx(want)
    half = 12.706204736174694 * statistics.stdev(want) / 2 ** 0.5
    assert (diff["low"], diff["high"]) == (pytest.approx(statistics.fmean(want) - half),
                                           pytest.approx(statistics.fmean(want) + half))
    assert union["vs_dense"]["tasks"]["rte"]["differences"] == [6.0, 6.0]  # 66 - 60, 68 - 62
    assert rows["Single-task (dense)"]["vs_dense"] is None and dense["vs_dense"] is None
    # the control: Random-Share against MT-DNN (its dense row), and the ticket row against its control
    control = rows["Random-Share (union)"]
    assert control["vs_dense"]["against"] == "MT-DNN (dense)" and control["vs_dense"]["tasks"]["rte"]["differences"] == [1.0, 2.0]
    versus_control = next(c for c in table["comparisons"] if c["against"] == "Random-Share (union)")
    assert versus_control["row"] == "Tickets-Share (union)" and versus_control["glue_avg"]["seeds"] == [1, 2]
    assert versus_control["glue_avg"]["differences"] == pytest.approx(
        [dict(union["average"]["by_seed"])[s] - dict(control["average"]["by_seed"])[s] for s in (1, 2)])
    # RTE: dense 62.0 >= 60 + 2 (learnt); single-task 59.0 < 62 (not learnt)
    assert dense["tasks"]["rte"]["learnt"] and not rows["Single-task (dense)"]["tasks"]["rte"]["learnt"]
    assert dense["average"]["learnt"] == 3 and rows["Single-task (dense)"]["average"]["learnt"] == 1
    md = format_markdown(table)
    single = next(x for x in md.splitlines() if x.startswith("| Single-task (dense)"))
    assert "59.0 ± 1.4 †" in single and "(1/2 learnt)" in single
    line = next(x for x in md.splitlines() if x.startswith("| Tickets-Share (union)"))
    assert format_versus(diff) in line and "RTE 60.0 ± 2.0 (n=100)" in md
    # the seed table sizes the next runs from this spread (basics.stats.seeds_needed, checked by hand in
    # test_statistics): union - dense is the same on both seeds: no spread to size from, and no interval
    assert want[0] == pytest.approx(want[1])
    seed_table = format_seed_table(table, half_width=0.9)
    assert "seeds for ±0.9" in seed_table
    union_seeds = next(x for x in seed_table.splitlines() if x.startswith("| Tickets-Share (union)"))
    assert union_seeds.endswith("(n=2, the same on every seed) | – |")
    assert next(x for x in seed_table.splitlines() if x.startswith("| MT-DNN (dense)")).endswith("| – |")


def test_from_table_re_summarises_a_committed_table(study, tmp_path, capsys):
    out = tmp_path / "a" / "table.md"
    assert glue_table.main([str(study), "--out", str(out)]) == 0
    again = tmp_path / "b" / "table.md"
    (tmp_path / "masks").mkdir()
    (tmp_path / "masks" / "union.json").write_text(json.dumps({
        "mode": "union", "tasks": {"rte": {"params_kept": 1, "params_total": 2}}, "result": {"params_total": 1000}}))
    assert glue_table.main(["--from-table", str(out.with_suffix(".json")), "--masks", str(tmp_path / "masks"),
                            "--out", str(again)]) == 0
    first, second = (json.loads(p.with_suffix(".json").read_text()) for p in (out, again))
    for a, b in zip(first["rows"], second["rows"], strict=True):
        assert a["label"] == b["label"] and a["runs"] == b["runs"] and a["seeds"] == b["seeds"]
        assert a["tasks"] == b["tasks"] or {t: c["score"]["values"] for t, c in a["tasks"].items()} == {
            t: c["score"]["values"] for t, c in b["tasks"].items()}
        assert a["vs_dense"] == b["vs_dense"]
    union = rows_by_label(second)["Tickets-Share (union)"]
    assert union["params_task_mean"]["mean"] == pytest.approx(90.0)  # a shared mask: its own size, not the tickets'
    code = glue_table.main(["--out", str(tmp_path / "c.md")])
    assert code == 2 and "give RUN_DIR... or --from-table" in capsys.readouterr().err
