"""GLUE dev table from run directories: one row per model, mean ± std over seeds, paired differences
to dense, "not learnt" marks and two parameter accountings.

    python -m experiments.glue_table RUN_DIR... --out table.md [--title TEXT]
    python -m experiments.glue_table --from-table OLD/table.json [--masks OLD/masks] --out table.md

A RUN_DIR is one run (it holds ``metrics.json``), a folder of runs, or a study folder (its
``runs/`` is read). Writes ``table.md``, ``table.csv`` and ``table.json`` (same stem).
``--from-table`` re-summarises a committed ``table.json`` (its per-seed values) without the runs,
taking the per-task ticket sizes from the study's ``masks/*.json`` (``masks.construct`` reports).

- Row label: ``study_run.json``'s ``label`` (written by ``experiments.run``), else inferred from the
  run: no mask -> ``MT-DNN (dense)`` (several tasks) or ``Single-task (dense)``; a per-task mask ->
  ``Tickets-Share (per-task)``; a shared mask -> ``Tickets-Share (union)`` (its kind).
- Columns: the tasks present in any run, in GLUE order, each with its metrics (MNLI m/mm, QQP and
  MRPC acc/F1, STS-B Pearson/Spearman, CoLA MCC, ...). A task no run has is left out; a task a row
  lacks is ``–``, never zero.
- Task score = mean of the task's metrics (:mod:`tasks.score`). GLUE avg = mean of the row's task
  scores; its std is over the seeds that have every task of the row. A task score below the task's
  constant-prediction baseline + one dev-set standard error (:mod:`tasks.baseline`; the baselines are
  read from the dev files the runs used, :mod:`experiments.baselines`) is marked † (not learnt), and the
  GLUE average says how many of its tasks are learnt.
- Δ vs dense: the row's GLUE average minus its dense baseline's (``MT-DNN (dense)`` for multi-task
  rows, ``Single-task (dense)`` for single-task rows), paired by seed, mean and 95 % t-interval
  (:func:`basics.stats.paired_difference`); per task in ``table.json``.
- Parameters, both in % of the encoder's *prunable* parameters (attention Q/K/V/O and FFN units with
  their biases; embeddings, pooler and task heads excluded; 100 = dense):
  *union*: what the shared encoder keeps, the union of the task masks for per-task runs (what must be
  stored); *task avg*: the mean over tasks of each task's own ticket size (the Super Tickets paper's
  "Avg Compression"; equal to the union for a shared mask).
"""

from __future__ import annotations

import csv
import io
import statistics
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from basics.cli import OneLineParser, run_main
from basics.errors import UserError
from basics.io import atomic_write_json, atomic_write_text
from basics.stats import paired_difference, seeds_needed
from experiments.baselines import baselines_for, committed_baselines
from experiments.report_stats import NOT_LEARNT, format_versus
from mtl.rundir import MaskInfo, RunDir, read_json
from tasks.baseline import Baseline, is_learnt
from tasks.score import task_score

GLUE_ORDER = ("mnli", "qqp", "qnli", "sst2", "cola", "stsb", "mrpc", "rte", "wnli")
TASK_NAMES = {"mnli": "MNLI", "qqp": "QQP", "qnli": "QNLI", "sst2": "SST-2", "cola": "CoLA", "stsb": "STS-B",
              "mrpc": "MRPC", "rte": "RTE", "wnli": "WNLI"}
METRIC_NAMES = {"accuracy": "acc", "f1": "F1", "mcc": "MCC", "pearson": "P", "spearman": "S",
                "accuracy_m": "m", "accuracy_mm": "mm"}
# Row order: by group (label prefix), the known labels first in this order, then the others by name.
LABEL_GROUPS = ("Single-task", "MT-DNN", "Tickets-Share", "Random-Share")
KNOWN_LABELS = ("Single-task (dense)", "Single-task (super ticket)", "MT-DNN (dense)", "Tickets-Share (union)",
                "Tickets-Share (per-task)", "Random-Share (union)", "Random-Share (per-task)")


# The dense row each row is compared with (by label group).
DENSE_OF_GROUP = {"Single-task": "Single-task (dense)", "MT-DNN": "MT-DNN (dense)", "Tickets-Share": "MT-DNN (dense)",
                  "Random-Share": "MT-DNN (dense)"}
TARGET_HALF_WIDTH = 0.9  # the interval issue 16 asks of Tickets-Share - MT-DNN on the GLUE average (points)
DENOMINATOR = ("% of the encoder's prunable parameters (attention Q/K/V/O and FFN units with their biases; "
               "embeddings, pooler and task heads excluded)")


@dataclass(frozen=True)
class RunRecord:
    """One finished run: its row label, seed, dev metrics ``{task: {metric: percent}}`` and the parameters
    kept (% of the prunable encoder parameters): ``params_kept`` by the mask it trained with (per-task:
    their union), ``params_task_mean`` the mean of its tasks' own masks (the same for a shared mask)."""

    path: Path
    label: str
    seed: int | None
    metrics: dict[str, dict[str, float]]
    params_kept: float | None
    params_task_mean: float | None = None
    params_prunable: int | None = None


def infer_label(tasks: Sequence[str], mask_info: MaskInfo | None) -> str:
    """Row label of a run without ``study_run.json``, from its tasks and the mask it trained with."""
    multi = len(tasks) > 1
    if mask_info is None:
        return "MT-DNN (dense)" if multi else "Single-task (dense)"
    if mask_info.mask_mode == "per-task":
        return "Tickets-Share (per-task)"
    kind = mask_info.mask_kind or "mask"
    if multi:
        return f"Tickets-Share ({kind})"
    return "Single-task (super ticket)" if kind == "super_ticket" else f"Single-task ({kind} ticket)"


def load_run(path: Path) -> RunRecord:
    """Read one finished run directory: its metrics, the study's label and seed when a study ran it
    (``study_run.json``), else a label inferred from its tasks and mask and the seed of its config."""
    run = RunDir(path)
    metrics = run.metrics()
    info = run.study_info()
    result = run.result() if run.results_path.is_file() else None
    mask = result.mask if result is not None else None
    label = info.get("label") or infer_label(list(metrics), mask)
    params = result.params_kept_pct() if result is not None else None
    if "seed" in info:
        seed: int | None = int(info["seed"])
    else:
        seed = run.config().optim.seed if run.config_path.is_file() else None
    return RunRecord(path, label, seed, metrics, params, task_mean_pct(mask, params),
                     mask.params_prunable if mask is not None else None)


def task_mean_pct(mask: MaskInfo | None, params_kept: float | None) -> float | None:
    """Mean over the run's tasks of each task's own mask size (%): per-task masks from ``task_sparsity``,
    a shared mask (or none) is every task's."""
    if mask is not None and mask.mask_mode == "per-task" and mask.task_sparsity:
        return statistics.fmean(100.0 * (1 - s) for s in mask.task_sparsity.values())
    return params_kept


def find_run_dirs(paths: Sequence[Path]) -> tuple[list[Path], list[Path]]:
    """(finished run directories, unfinished ones) under ``paths``; see the module doc for what a path may be."""
    finished: list[Path] = []
    unfinished: list[Path] = []
    for path in map(Path, paths):
        if not path.is_dir():
            raise UserError(f"run directory not found: {path}")
        if RunDir(path).metrics_path.is_file():
            finished.append(path)
            continue
        base = path / "runs" if (path / "runs").is_dir() else path
        children = sorted(d for d in base.iterdir() if d.is_dir())
        done = [d for d in children if RunDir(d).metrics_path.is_file()]
        started = [d for d in children if RunDir(d).started and d not in done]
        if not done and not started:
            raise UserError(f"{path}: no run directories in it (a run directory holds metrics.json)")
        finished += done
        unfinished += started
    return finished, unfinished


def collect_runs(paths: Sequence[Path]) -> tuple[list[RunRecord], list[Path]]:
    """(records of the finished runs, unfinished run directories) under ``paths``."""
    finished, unfinished = find_run_dirs(paths)
    return [load_run(p) for p in finished], unfinished


def _stats(values: list[float], seeds: list | None = None) -> dict[str, Any]:
    out = {"mean": statistics.fmean(values), "std": statistics.stdev(values) if len(values) > 1 else None,
           "n": len(values), "values": values}
    return out if seeds is None else {**out, "seeds": seeds}


def task_order(tasks: set[str]) -> list[str]:
    """GLUE order first, other tasks after in name order."""
    return [t for t in GLUE_ORDER if t in tasks] + sorted(t for t in tasks if t not in GLUE_ORDER)


def _row_order(labels: list[str]) -> list[str]:
    def key(label: str) -> tuple[int, int, str]:
        group = next((i for i, g in enumerate(LABEL_GROUPS) if label.startswith(g)), len(LABEL_GROUPS))
        known = KNOWN_LABELS.index(label) if label in KNOWN_LABELS else len(KNOWN_LABELS)
        return group, known, label

    return sorted(labels, key=key)


def _check_duplicates(records: list[RunRecord]) -> None:
    seen: dict[tuple, Path] = {}
    for r in records:
        if r.seed is None:
            continue
        for task in r.metrics:
            key = (r.label, task, r.seed)
            if key in seen:
                raise UserError(f"two runs of {r.label!r} on {task} with seed {r.seed}: {seen[key]} and {r.path}; "
                                "pass the run directories of one study")
            seen[key] = r.path


def _key(record: RunRecord) -> Any:
    """What pairs runs across rows: the seed (the run's path when it has none)."""
    return record.seed if record.seed is not None else str(record.path)


def _params_stats(values: list[float]) -> dict[str, float] | None:
    return {"mean": statistics.fmean(values), "min": min(values), "max": max(values)} if values else None


def _row(label: str, records: list[RunRecord], tasks: list[str]) -> dict[str, Any]:
    cells: dict[str, Any] = {}
    by_seed: dict[Any, dict[str, float]] = {}
    for task in tasks:
        runs = [r for r in records if task in r.metrics]
        if not runs:
            continue
        names = list(dict.fromkeys(m for r in runs for m in r.metrics[task]))
        scores = [task_score(r.metrics[task]) for r in runs]
        cells[task] = {"metrics": {m: _stats([r.metrics[task][m] for r in runs if m in r.metrics[task]],
                                             [_key(r) for r in runs if m in r.metrics[task]]) for m in names},
                       "score": _stats(scores, [_key(r) for r in runs])}
        for r, score in zip(runs, scores, strict=True):
            by_seed.setdefault(_key(r), {})[task] = score
    row_tasks = list(cells)
    average = None
    if row_tasks:
        complete = {seed: statistics.fmean(s.values()) for seed, s in by_seed.items() if set(s) == set(row_tasks)}
        average = {"mean": statistics.fmean(cells[t]["score"]["mean"] for t in row_tasks),
                   "std": statistics.stdev(complete.values()) if len(complete) > 1 else None, "n": len(complete),
                   "tasks": row_tasks, "complete": len(row_tasks) == len(tasks),
                   "by_seed": [[seed, value] for seed, value in complete.items()]}
    prunable = {r.params_prunable for r in records if r.params_prunable is not None}
    return {"label": label, "seeds": sorted({r.seed for r in records if r.seed is not None}),
            "runs": sorted(str(r.path) for r in records), "tasks": cells, "average": average,
            "params_kept": _params_stats([r.params_kept for r in records if r.params_kept is not None]),
            "params_task_mean": _params_stats([r.params_task_mean for r in records if r.params_task_mean is not None]),
            "params_prunable": prunable.pop() if len(prunable) == 1 else None}


def build_table(records: list[RunRecord], baselines: dict[str, Baseline] | None = None) -> dict[str, Any]:
    """The table as JSON-ready data: ``tasks`` (columns with their metrics), ``rows`` (one per label, with
    their paired differences to dense and learnt flags, :func:`annotate`) and the ``baselines`` used
    (default: read from the dev files of the runs' configs, :func:`table_baselines`)."""
    if not records:
        raise UserError("no finished runs to tabulate")
    _check_duplicates(records)
    tasks = task_order({t for r in records for t in r.metrics})
    labels = _row_order(list(dict.fromkeys(r.label for r in records)))
    rows = [_row(label, [r for r in records if r.label == label], tasks) for label in labels]
    columns = []
    for task in tasks:
        metrics = list(dict.fromkeys(m for row in rows if task in row["tasks"] for m in row["tasks"][task]["metrics"]))
        columns.append({"task": task, "name": TASK_NAMES.get(task, task), "metrics": metrics})
    if baselines is None:
        baselines = table_baselines(records, tasks)
    return annotate({"tasks": columns, "rows": rows}, baselines)


def table_baselines(records: list[RunRecord], tasks: list[str]) -> dict[str, Baseline]:
    """``{task: Baseline}`` from the dev files a run of each task evaluated on (its ``config.yaml``); tasks
    whose runs have no config or whose dev labels cannot be read are left out."""
    out: dict[str, Baseline] = {}
    for task in tasks:
        run = next((RunDir(r.path) for r in records if task in r.metrics and RunDir(r.path).config_path.is_file()), None)
        if run is None:
            continue
        try:
            config = run.config()
        except UserError:
            continue
        out.update(baselines_for(config, [task]))
    return out


def _seeded(stats: dict[str, Any], row: dict[str, Any]) -> dict:
    """``{seed: value}`` of a cell's stats; tables written before seeds were recorded list their values in
    the order of the row's seeds."""
    seeds = stats.get("seeds")
    if seeds is None:
        if len(stats["values"]) != len(row["seeds"]):
            raise UserError(f"row {row['label']!r}: {len(stats['values'])} values but seeds {row['seeds']}; "
                            "cannot pair them by seed")
        seeds = row["seeds"]
    return dict(zip(seeds, stats["values"], strict=True))


def _average_by_seed(row: dict[str, Any]) -> dict:
    avg = row["average"]
    if avg is None:
        return {}
    if "by_seed" in avg:
        return {seed: value for seed, value in avg["by_seed"]}
    per_task = [_seeded(row["tasks"][t]["score"], row) for t in avg["tasks"]]
    seeds = set.intersection(*(set(p) for p in per_task))
    return {s: statistics.fmean(p[s] for p in per_task) for s in sorted(seeds, key=str)}


def dense_label(label: str) -> str | None:
    """The dense row a row is compared with, by its group; None for a dense row itself or an unknown group."""
    group = next((g for g in LABEL_GROUPS if label.startswith(g)), None)
    dense = DENSE_OF_GROUP.get(group) if group else None
    return None if dense == label else dense


def annotate(table: dict[str, Any], baselines: dict[str, Baseline]) -> dict[str, Any]:
    """Add to every row ``vs_dense`` (GLUE average and each task, paired by seed against its dense row, with
    the 95 % t-interval) and ``learnt`` flags (task score vs the constant-prediction baseline; ``average.learnt``:
    how many of the row's tasks are learnt, of how many have a baseline); ``table["baselines"]``."""
    rows = {row["label"]: row for row in table["rows"]}
    for row in table["rows"]:
        if row["average"]:
            row["average"]["by_seed"] = [[s, v] for s, v in _average_by_seed(row).items()]
        for task, cell in row["tasks"].items():
            cell["learnt"] = is_learnt(cell["score"]["mean"], baselines[task]) if task in baselines else None
        if row["average"]:
            flags = [row["tasks"][t]["learnt"] for t in row["average"]["tasks"]]
            row["average"]["learnt"] = sum(f is True for f in flags)
            row["average"]["judged"] = sum(f is not None for f in flags)
        dense = rows.get(dense_label(row["label"]) or "")
        row["vs_dense"] = None
        if dense is not None:
            tasks = {t: _diff(_seeded(row["tasks"][t]["score"], row), _seeded(dense["tasks"][t]["score"], dense))
                     for t in row["tasks"] if t in dense["tasks"]}
            row["vs_dense"] = {"against": dense["label"], "glue_avg": _diff(_average_by_seed(row), _average_by_seed(dense)),
                               "tasks": tasks}
    table["baselines"] = {t: b.to_dict() for t, b in baselines.items()}
    table["comparisons"] = []
    multi, single = rows.get("MT-DNN (dense)"), rows.get("Single-task (dense)")
    if multi and single and multi["average"] and single["average"] and \
            multi["average"]["tasks"] == single["average"]["tasks"]:  # multi-task learning itself
        table["comparisons"].append({"row": multi["label"], "against": single["label"],
                                     "glue_avg": _diff(_average_by_seed(multi), _average_by_seed(single))})
    for label, row in rows.items():  # each ticket row against its control: random masks of the same sizes
        control = rows.get(label.replace("Tickets-Share", "Random-Share", 1)) if label.startswith("Tickets-Share") else None
        if control is not None and row["average"] and control["average"] and \
                row["average"]["tasks"] == control["average"]["tasks"]:
            table["comparisons"].append({"row": label, "against": control["label"],
                                         "glue_avg": _diff(_average_by_seed(row), _average_by_seed(control))})
    return table


def _diff(a: dict, b: dict) -> dict | None:
    d = paired_difference(a, b)
    return d.to_dict() if d is not None else None


def table_from_json(old: dict[str, Any], mask_reports: dict[str, dict] | None = None,
                    baselines: dict[str, Baseline] | None = None) -> dict[str, Any]:
    """Re-summarise a ``table.json`` without its runs: the per-seed values it holds become records again
    (seed by seed), per-task rows take their tasks' ticket sizes from ``mask_reports``
    (``{row label: masks.construct report}``), and the table is built as :func:`build_table` builds it."""
    records = []
    for row in old["rows"]:
        report = (mask_reports or {}).get(row["label"])
        task_mean = _task_mean_of_report(report) if report and report.get("mode") == "per-task" else None
        params = row.get("params_kept") or {}
        per_seed: dict[Any, dict[str, dict[str, float]]] = {}
        for task, cell in row["tasks"].items():
            for metric, stats in cell["metrics"].items():
                for seed, value in _seeded(stats, row).items():
                    per_seed.setdefault(seed, {}).setdefault(task, {})[metric] = value
        for seed, metrics in per_seed.items():
            kept = params.get("mean")
            records.append(RunRecord(Path(f"{row['label']}/seed{seed}"), row["label"], seed, metrics, kept,
                                     task_mean if task_mean is not None else kept,
                                     report["result"]["params_total"] if report else None))
    table = build_table(records, baselines or {})
    runs = {row["label"]: row["runs"] for row in old["rows"]}
    for row in table["rows"]:
        row["runs"] = runs[row["label"]]  # the run folders the values came from
    if old.get("notes"):
        table["notes"] = list(old["notes"])
    return table


def _task_mean_of_report(report: dict) -> float:
    """Mean over the tasks of a ``masks.construct`` report of each task's ticket size (% of prunable parameters)."""
    return statistics.fmean(100.0 * t["params_kept"] / t["params_total"] for t in report["tasks"].values())


def mask_reports_for(table: dict[str, Any], masks_dir: Path) -> dict[str, dict]:
    """``{row label: masks_dir/VARIANT.json}`` for the Tickets-Share rows whose mask report is there."""
    out = {}
    for row in table["rows"]:
        if row["label"].startswith("Tickets-Share (") and row["label"].endswith(")"):
            variant = row["label"][len("Tickets-Share ("):-1].replace(":", "")
            path = Path(masks_dir) / f"{variant}.json"
            if path.is_file():
                out[row["label"]] = read_json(path)
    return out


# ---------------------------------------------------------------- formatting


def _fmt(stats: dict[str, Any] | None) -> str:
    if stats is None:
        return "–"
    return f"{stats['mean']:.1f}" if stats.get("std") is None else f"{stats['mean']:.1f} ± {stats['std']:.1f}"


def _header(column: dict[str, Any]) -> str:
    return f"{column['name']} " + "/".join(METRIC_NAMES.get(m, m) for m in column["metrics"])


def _params(params: dict[str, float] | None) -> str:
    if params is None:
        return "–"
    if params["max"] - params["min"] > 0.05:
        return f"{params['mean']:.1f} ({params['min']:.1f}–{params['max']:.1f})"
    return f"{params['mean']:.1f}"


def _cell(row: dict[str, Any], column: dict[str, Any]) -> str:
    cell = row["tasks"].get(column["task"])
    if cell is None:
        return "–"
    parts = [_fmt(cell["metrics"].get(m)) for m in column["metrics"]]
    text = " / ".join(parts) + (f" {NOT_LEARNT}" if cell.get("learnt") is False else "")
    n = cell["score"]["n"]
    return text if n == len(row["seeds"]) or not row["seeds"] else f"{text} (n={n})"


def _average(row: dict[str, Any]) -> str:
    avg = row["average"]
    if avg is None:
        return "–"
    text = _fmt(avg) + ("" if avg["complete"] else "*")
    if avg.get("judged"):
        text += f" ({avg['learnt']}/{len(avg['tasks'])} learnt)"
    return text


def _versus(row: dict[str, Any]) -> str:
    return "–" if not row.get("vs_dense") else format_versus(row["vs_dense"]["glue_avg"])


def legend(table: dict[str, Any]) -> list[str]:
    """The paragraphs under the table: how each column is computed, the baselines, the denominator."""
    prunable = {r.get("params_prunable") for r in table["rows"]} - {None}
    count = f" ({prunable.pop():,} parameters)" if len(prunable) == 1 else ""
    baselines = {t: Baseline.from_dict(b) for t, b in table.get("baselines", {}).items()}
    lines = ["Dev set, in percent: mean ± std over seeds (sample std; no ± with one seed). Task score = mean of "
             "the task's metrics (`tasks/score.py`); GLUE avg = mean of the row's task scores (std over the seeds "
             "that have every task); \"k/n learnt\": tasks whose score is at least one dev-set standard error above "
             f"the constant-prediction baseline ({NOT_LEARNT} marks the others)."]
    if baselines:
        lines.append("Baselines (best constant prediction ± dev-set standard error, `tasks/baseline.py`): " + "; ".join(
            f"{TASK_NAMES.get(t, t)} {b.score:.1f} ± {b.standard_error:.1f} (n={'+'.join(map(str, b.n.values()))})"
            for t, b in baselines.items()) + ".")
    else:
        lines.append("No dev labels were readable: no learnt / not-learnt marks.")
    lines.append("Δ avg vs dense: GLUE avg minus that of the row's dense baseline (MT-DNN (dense) for multi-task "
                 "rows, Single-task (dense) for single-task rows) on the same seeds: mean [95 % t-interval]; an "
                 "interval containing 0 means no difference was detected.")
    lines.append(f"Params, both in {DENOMINATOR}{count}: *union* = what the shared encoder keeps (per-task masks: "
                 "the union of the task masks); *task avg* = the mean of the tasks' own ticket sizes (the Super "
                 "Tickets paper's \"Avg Compression\"; the same as union for a shared mask).")
    return lines


def format_markdown(table: dict[str, Any], title: str | None = None) -> str:
    columns = table["tasks"]
    header = ["model", "seeds", *(_header(c) for c in columns), "GLUE avg", "Δ avg vs dense [95% CI]",
              "params: union (% prunable)", "params: task avg (% prunable)"]
    lines = ([f"# {title}", ""] if title else []) + [
        "| " + " | ".join(header) + " |",
        "|---|---:|" + "---:|" * len(columns) + "---:|---:|---:|---:|",
    ]
    for row in table["rows"]:
        cells = [row["label"], str(len(row["seeds"]) or len(row["runs"])), *(_cell(row, c) for c in columns),
                 _average(row), _versus(row), _params(row["params_kept"]),
                 _params(row.get("params_task_mean") or row["params_kept"])]
        lines.append("| " + " | ".join(cells) + " |")
    lines += [""]
    for paragraph in legend(table):
        lines += [paragraph, ""]
    if any(row["average"] and not row["average"]["complete"] for row in table["rows"]):
        lines += ["\\* average over the row's tasks only (it lacks some of the table's tasks): not comparable "
                  "with the full rows.", ""]
    for note in table.get("notes", []):
        lines += [f"Note: {note}", ""]
    return "\n".join(lines[:-1]) + "\n"


def _seeds_for(diff: dict[str, Any] | None, half_width: float) -> str:
    n = seeds_needed(diff["differences"], half_width) if diff else None
    return "–" if n is None else str(n)


def format_seed_table(table: dict[str, Any], half_width: float = TARGET_HALF_WIDTH) -> str:
    """GLUE average per seed of every row and its paired difference to its dense row (95 % t-interval), with the
    seeds that difference needs for an interval of ± ``half_width`` if its spread is what these seeds show."""
    seeds = sorted({s for row in table["rows"] for s, _ in (row["average"] or {}).get("by_seed", [])}, key=str)
    lines = ["| model | " + " | ".join(f"seed {s}" for s in seeds)
             + f" | Δ vs | Δ GLUE avg [95% CI] | seeds for ±{half_width:g} |",
             "|---|" + "---:|" * len(seeds) + "---|---:|---:|"]
    for row in table["rows"]:
        values = dict(map(tuple, (row["average"] or {}).get("by_seed", [])))
        vs = row.get("vs_dense")
        lines.append(f"| {row['label']} | " + " | ".join(f"{values[s]:.2f}" if s in values else "–" for s in seeds)
                     + f" | {vs['against'] if vs else '–'} | {_versus(row)} | "
                     + f"{_seeds_for(vs['glue_avg'] if vs else None, half_width)} |")
    for comparison in table.get("comparisons", []):
        lines.append(f"| {comparison['row']} | " + " | ".join("" for _ in seeds)
                     + f" | {comparison['against']} | {format_versus(comparison['glue_avg'])} | "
                     + f"{_seeds_for(comparison['glue_avg'], half_width)} |")
    lines += ["", f"Seeds for ±{half_width:g}: the fewest seeds whose paired 95 % t-interval of Δ GLUE avg is at most "
              f"±{half_width:g} wide, if the spread of the differences is what these seeds show "
              "(`basics.stats.seeds_needed`): how to size the next runs from a pilot; – with one seed, or when every "
              "seed shows the same difference (no spread to size from)."]
    return "\n".join(lines) + "\n"


def format_task_differences(table: dict[str, Any]) -> str:
    """Each row's paired difference to its dense row per task score (95 % t-interval)."""
    columns = table["tasks"]
    lines = ["| model | Δ vs | " + " | ".join(c["name"] for c in columns) + " |",
             "|---|---|" + "---:|" * len(columns)]
    for row in table["rows"]:
        vs = row.get("vs_dense")
        if not vs:
            continue
        lines.append(f"| {row['label']} | {vs['against']} | "
                     + " | ".join(format_versus(vs["tasks"].get(c["task"])) for c in columns) + " |")
    return "\n".join(lines) + "\n"


def format_csv(table: dict[str, Any]) -> str:
    """One line per row; ``{task}_{metric}_mean/_std`` columns, empty where a row has no value."""
    columns = table["tasks"]
    names = ["label", "seeds"]
    for c in columns:
        for m in c["metrics"]:
            names += [f"{c['task']}_{m}_mean", f"{c['task']}_{m}_std", f"{c['task']}_{m}_n"]
        names.append(f"{c['task']}_learnt")
    names += ["glue_avg_mean", "glue_avg_std", "glue_avg_tasks", "glue_avg_learnt", "vs_dense", "vs_dense_mean",
              "vs_dense_low", "vs_dense_high", "params_kept_pct", "params_task_mean_pct"]
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(names)

    def num(x: float | None) -> str:
        return "" if x is None else f"{x:.4f}"

    for row in table["rows"]:
        out = [row["label"], " ".join(map(str, row["seeds"]))]
        for c in columns:
            cell = row["tasks"].get(c["task"], {"metrics": {}})
            for m in c["metrics"]:
                s = cell["metrics"].get(m)
                out += [num(s["mean"]), num(s["std"]), str(s["n"])] if s else ["", "", ""]
            learnt = cell.get("learnt")
            out.append("" if learnt is None else str(learnt).lower())
        avg = row["average"]
        out += ([num(avg["mean"]), num(avg["std"]), " ".join(avg["tasks"]), str(avg.get("learnt", ""))]
                if avg else ["", "", "", ""])
        vs = (row.get("vs_dense") or {})
        diff = vs.get("glue_avg") or {}
        out += [vs.get("against", ""), num(diff.get("mean")), num(diff.get("low")), num(diff.get("high"))]
        out.append(num(row["params_kept"]["mean"]) if row["params_kept"] else "")
        task_mean = row.get("params_task_mean") or row["params_kept"]
        out.append(num(task_mean["mean"]) if task_mean else "")
        writer.writerow(out)
    return buf.getvalue()


def format_report(table: dict[str, Any], title: str | None = None) -> str:
    """``table.md``: the table (:func:`format_markdown`), then the GLUE average per seed with the paired differences
    and the seeds they need (:func:`format_seed_table`)."""
    return (format_markdown(table, title) + "\n## Per seed\n\nGLUE average per seed and the paired difference to the "
            "row's dense row:\n\n" + format_seed_table(table))


def write_table(table: dict[str, Any], out: Path, title: str | None = None) -> list[Path]:
    """Write ``out`` (markdown) and its ``.csv`` / ``.json`` siblings; return the three paths."""
    out = Path(out)
    if out.is_dir():
        raise UserError(f"--out {out} is a directory; give a file path such as {out / 'table.md'}")
    paths = [out, out.with_suffix(".csv"), out.with_suffix(".json")]
    try:
        atomic_write_text(paths[0], format_report(table, title))
        atomic_write_text(paths[1], format_csv(table))
        atomic_write_json(paths[2], {"title": title, **table})
    except OSError as exc:
        raise UserError(f"cannot write {out}: {exc.strerror or exc}") from None
    return paths


def committed_or_none() -> dict[str, Baseline]:
    """The committed dev baselines (``experiments/results/dev_baselines.json``), for tables without runs."""
    try:
        return committed_baselines()
    except UserError:
        return {}


def main(argv: Sequence[str] | None = None) -> int:
    def go() -> None:
        parser = OneLineParser(prog="python -m experiments.glue_table", description=__doc__.splitlines()[0])
        parser.add_argument("run_dirs", nargs="*", type=Path, metavar="RUN_DIR",
                            help="run directories, folders of runs, or study folders")
        parser.add_argument("--out", type=Path, required=True, help="markdown file; .csv and .json are written beside it")
        parser.add_argument("--title", default=None, help="a heading for the markdown table")
        parser.add_argument("--from-table", type=Path, default=None,
                            help="re-summarise this table.json (no run directories needed)")
        parser.add_argument("--masks", type=Path, default=None,
                            help="with --from-table: the study's masks/ folder (per-task ticket sizes)")
        args = parser.parse_args(argv)
        if (args.from_table is None) == (not args.run_dirs):
            raise UserError("give RUN_DIR... or --from-table TABLE_JSON (one of them)")
        if args.from_table is not None:
            old = read_json(args.from_table)
            masks = mask_reports_for(old, args.masks) if args.masks else {}
            table = table_from_json(old, masks, committed_or_none())
            paths = write_table(table, args.out, args.title if args.title is not None else old.get("title"))
            print(format_markdown(table, args.title))
            print("wrote " + ", ".join(map(str, paths)))
            return
        records, unfinished = collect_runs(args.run_dirs)
        for path in unfinished:
            print(f"note: {path} has no metrics.json (unfinished or crashed): left out", file=sys.stderr)
        table = build_table(records)
        paths = write_table(table, args.out, args.title)
        print(format_markdown(table, args.title))
        print("wrote " + ", ".join(map(str, paths)))

    return run_main(go)


if __name__ == "__main__":
    sys.exit(main())
