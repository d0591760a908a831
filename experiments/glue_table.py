"""GLUE dev table from run directories: one row per model, mean ± std over seeds.

    python -m experiments.glue_table RUN_DIR... --out table.md [--title TEXT]

A RUN_DIR is one run (it holds ``metrics.json``), a folder of runs, or a study folder (its
``runs/`` is read). Writes ``table.md``, ``table.csv`` and ``table.json`` (same stem).

- Row label: ``study_run.json``'s ``label`` (written by ``experiments.run``), else inferred from the
  run: no mask -> ``MT-DNN (dense)`` (several tasks) or ``Single-task (dense)``; a per-task mask ->
  ``Tickets-Share (per-task)``; a shared mask -> ``Tickets-Share (union)`` (its kind).
- Columns: the tasks present in any run, in GLUE order, each with its metrics (MNLI m/mm, QQP and
  MRPC acc/F1, STS-B Pearson/Spearman, CoLA MCC, ...). A task no run has is left out; a task a row
  lacks is ``–``, never zero.
- Task score = mean of the task's metrics. GLUE avg = mean of the row's task scores; its std is over
  the seeds that have every task of the row.
- Params kept = % of the encoder's prunable parameters (attention Q/K/V/O and FFN units) the mask
  keeps (100 for dense; the union of the task masks for per-task).
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
from mtl.rundir import MaskInfo, RunDir
from tasks.score import task_score

GLUE_ORDER = ("mnli", "qqp", "qnli", "sst2", "cola", "stsb", "mrpc", "rte", "wnli")
TASK_NAMES = {"mnli": "MNLI", "qqp": "QQP", "qnli": "QNLI", "sst2": "SST-2", "cola": "CoLA", "stsb": "STS-B",
              "mrpc": "MRPC", "rte": "RTE", "wnli": "WNLI"}
METRIC_NAMES = {"accuracy": "acc", "f1": "F1", "mcc": "MCC", "pearson": "P", "spearman": "S",
                "accuracy_m": "m", "accuracy_mm": "mm"}
# Row order: by group (label prefix), the known labels first in this order, then the others by name.
LABEL_GROUPS = ("Single-task", "MT-DNN", "Tickets-Share")
KNOWN_LABELS = ("Single-task (dense)", "Single-task (super ticket)", "MT-DNN (dense)", "Tickets-Share (union)",
                "Tickets-Share (per-task)")


@dataclass(frozen=True)
class RunRecord:
    """One finished run: its row label, seed, dev metrics ``{task: {metric: percent}}`` and params kept (%)."""

    path: Path
    label: str
    seed: int | None
    metrics: dict[str, dict[str, float]]
    params_kept: float | None


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
    return RunRecord(path, label, seed, metrics, params)


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


def _stats(values: list[float]) -> dict[str, Any]:
    return {"mean": statistics.fmean(values), "std": statistics.stdev(values) if len(values) > 1 else None,
            "n": len(values), "values": values}


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


def _row(label: str, records: list[RunRecord], tasks: list[str]) -> dict[str, Any]:
    cells: dict[str, Any] = {}
    by_seed: dict[Any, dict[str, float]] = {}
    for task in tasks:
        runs = [r for r in records if task in r.metrics]
        if not runs:
            continue
        names = list(dict.fromkeys(m for r in runs for m in r.metrics[task]))
        scores = [task_score(r.metrics[task]) for r in runs]
        cells[task] = {"metrics": {m: _stats([r.metrics[task][m] for r in runs if m in r.metrics[task]]) for m in names},
                       "score": _stats(scores)}
        for r, score in zip(runs, scores, strict=True):
            by_seed.setdefault(r.seed if r.seed is not None else str(r.path), {})[task] = score
    row_tasks = list(cells)
    average = None
    if row_tasks:
        complete = [statistics.fmean(s.values()) for s in by_seed.values() if set(s) == set(row_tasks)]
        average = {"mean": statistics.fmean(cells[t]["score"]["mean"] for t in row_tasks),
                   "std": statistics.stdev(complete) if len(complete) > 1 else None, "n": len(complete),
                   "tasks": row_tasks, "complete": len(row_tasks) == len(tasks)}
    params = [r.params_kept for r in records if r.params_kept is not None]
    return {"label": label, "seeds": sorted({r.seed for r in records if r.seed is not None}),
            "runs": sorted(str(r.path) for r in records), "tasks": cells, "average": average,
            "params_kept": {"mean": statistics.fmean(params), "min": min(params), "max": max(params)} if params else None}


def build_table(records: list[RunRecord]) -> dict[str, Any]:
    """The table as JSON-ready data: ``tasks`` (columns with their metrics) and ``rows`` (one per label)."""
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
    return {"tasks": columns, "rows": rows}


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
    text = " / ".join(parts)
    n = cell["score"]["n"]
    return text if n == len(row["seeds"]) or not row["seeds"] else f"{text} (n={n})"


def _average(row: dict[str, Any]) -> str:
    avg = row["average"]
    if avg is None:
        return "–"
    text = _fmt(avg)
    return text if avg["complete"] else f"{text}*"


def format_markdown(table: dict[str, Any], title: str | None = None) -> str:
    columns = table["tasks"]
    header = ["model", "seeds", *(_header(c) for c in columns), "GLUE avg", "params kept (%)"]
    lines = ([f"# {title}", ""] if title else []) + [
        "| " + " | ".join(header) + " |",
        "|---|---:|" + "---:|" * len(columns) + "---:|---:|",
    ]
    for row in table["rows"]:
        cells = [row["label"], str(len(row["seeds"]) or len(row["runs"])), *(_cell(row, c) for c in columns),
                 _average(row), _params(row["params_kept"])]
        lines.append("| " + " | ".join(cells) + " |")
    lines += ["", "Dev set, in percent: mean ± std over seeds (sample std; no ± with one seed). "
              "Task score = mean of the task's metrics; GLUE avg = mean of the row's task scores "
              "(std over the seeds that have every task). Params kept = share of the encoder's prunable "
              "parameters (attention Q/K/V/O and FFN units; embeddings excluded) that the mask keeps."]
    if any(row["average"] and not row["average"]["complete"] for row in table["rows"]):
        lines.append("\\* average over the row's tasks only (it lacks some of the table's tasks): not comparable "
                     "with the full rows.")
    return "\n".join(lines) + "\n"


def format_csv(table: dict[str, Any]) -> str:
    """One line per row; ``{task}_{metric}_mean/_std`` columns, empty where a row has no value."""
    columns = table["tasks"]
    names = ["label", "seeds"]
    for c in columns:
        for m in c["metrics"]:
            names += [f"{c['task']}_{m}_mean", f"{c['task']}_{m}_std", f"{c['task']}_{m}_n"]
    names += ["glue_avg_mean", "glue_avg_std", "glue_avg_tasks", "params_kept_pct"]
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
        avg = row["average"]
        out += [num(avg["mean"]), num(avg["std"]), " ".join(avg["tasks"])] if avg else ["", "", ""]
        out.append(num(row["params_kept"]["mean"]) if row["params_kept"] else "")
        writer.writerow(out)
    return buf.getvalue()


def write_table(table: dict[str, Any], out: Path, title: str | None = None) -> list[Path]:
    """Write ``out`` (markdown) and its ``.csv`` / ``.json`` siblings; return the three paths."""
    out = Path(out)
    if out.is_dir():
        raise UserError(f"--out {out} is a directory; give a file path such as {out / 'table.md'}")
    paths = [out, out.with_suffix(".csv"), out.with_suffix(".json")]
    try:
        atomic_write_text(paths[0], format_markdown(table, title))
        atomic_write_text(paths[1], format_csv(table))
        atomic_write_json(paths[2], {"title": title, **table})
    except OSError as exc:
        raise UserError(f"cannot write {out}: {exc.strerror or exc}") from None
    return paths


def main(argv: Sequence[str] | None = None) -> int:
    def go() -> None:
        parser = OneLineParser(prog="python -m experiments.glue_table", description=__doc__.splitlines()[0])
        parser.add_argument("run_dirs", nargs="+", type=Path, metavar="RUN_DIR",
                            help="run directories, folders of runs, or study folders")
        parser.add_argument("--out", type=Path, required=True, help="markdown file; .csv and .json are written beside it")
        parser.add_argument("--title", default=None, help="a heading for the markdown table")
        args = parser.parse_args(argv)
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
