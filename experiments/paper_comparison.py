"""A GLUE table (``table.json`` of :mod:`experiments.glue_table`) beside the Super Tickets paper's numbers.

    python -m experiments.paper_comparison experiments/results/cpu_study/table.json [--model MiniLM]

The paper: Liang et al., "Super Tickets in Pre-Trained Language Models: From Model Compression to Improving
Generalization" (ACL 2021), multi-task BERT-base on GLUE dev, as issue 16 quotes them. Each number is a task
score: the mean of the task's metrics (MRPC: accuracy and F1; STS-B: Pearson and Spearman), as
:func:`tasks.score.task_score` scores ours. :func:`comparison` pairs each paper row with ours, task by task
and on the average of the tasks both have, and states ours as its paired interval says: "better", "worse" or
"not distinguishable" (95 % t-interval of Tickets-Share − MT-DNN over seeds, from the table's ``vs_dense``).
"""

from __future__ import annotations

import statistics
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from basics.cli import OneLineParser, run_main
from basics.errors import UserError
from basics.stats import direction, no_spread
from experiments.glue_table import TASK_NAMES, task_order
from experiments.report_stats import NOT_LEARNT, format_versus
from mtl.rundir import read_json


@dataclass(frozen=True)
class PaperRow:
    label: str  # our table's row label that corresponds
    scores: dict[str, float]  # task -> task score (mean of the task's metrics)


@dataclass(frozen=True)
class Paper:
    source: str
    model: str
    dense: PaperRow
    tickets: PaperRow


SUPER_TICKETS = Paper(
    source="Liang et al., Super Tickets in Pre-Trained Language Models (ACL 2021), GLUE dev, as quoted in issue 16",
    model="BERT-base",
    dense=PaperRow("MT-DNN (dense)", {"sst2": 92.2, "cola": 54.0, "stsb": 86.3, "mrpc": 83.4, "rte": 79.0}),
    tickets=PaperRow("Tickets-Share (per-task)", {"sst2": 92.7, "cola": 52.0, "stsb": 87.6, "mrpc": 88.75, "rte": 81.2}),
)


def verdict(diff: dict[str, Any] | None) -> str:
    """"better" / "worse" / "not distinguishable" from a paired difference's 95 % interval; "–" without one, and
    "no interval: no spread" when every seed differs by the same amount (a zero-width interval decides nothing)."""
    sign = direction(diff)
    if sign is None:
        return "no interval: no spread" if no_spread(diff) else "–"
    return {1: "better", -1: "worse", 0: "not distinguishable"}[sign]


def paper_inside(paper_diff: float, diff: dict[str, Any] | None) -> bool | None:
    """Whether the paper's difference lies in our paired 95 % interval (None without one): "yes" means our
    data cannot tell our effect from the paper's."""
    if direction(diff) is None:
        return None
    return bool(diff["low"] <= paper_diff <= diff["high"])


def _row(table: dict[str, Any], label: str) -> dict[str, Any]:
    row = next((r for r in table["rows"] if r["label"] == label), None)
    if row is None:
        raise UserError(f"the GLUE table has no row {label!r} (rows: {', '.join(r['label'] for r in table['rows'])})")
    return row


def comparison(table: dict[str, Any], paper: Paper = SUPER_TICKETS) -> dict[str, Any]:
    """Per task (and the average over the tasks both have): the paper's two scores and difference, ours (mean ±
    std over seeds, learnt or not) and our paired difference with its interval and verdict."""
    dense, tickets = _row(table, paper.dense.label), _row(table, paper.tickets.label)
    versus = tickets.get("vs_dense")
    if not versus or versus["against"] != dense["label"]:
        raise UserError(f"the GLUE table does not pair {tickets['label']} with {dense['label']}")
    tasks = [t for t in task_order(set(paper.dense.scores)) if t in dense["tasks"] and t in tickets["tasks"]]
    if not tasks:
        raise UserError("the GLUE table has none of the paper's tasks")
    rows = []
    for task in tasks:
        ours = {side: row["tasks"][task] for side, row in (("dense", dense), ("tickets", tickets))}
        diff = versus["tasks"].get(task)
        rows.append({"task": task, "paper": {"dense": paper.dense.scores[task], "tickets": paper.tickets.scores[task],
                                             "diff": paper.tickets.scores[task] - paper.dense.scores[task]},
                     "ours": {side: {"mean": c["score"]["mean"], "std": c["score"].get("std"), "n": c["score"]["n"],
                                     "learnt": c.get("learnt")} for side, c in ours.items()},
                     "diff": diff, "verdict": verdict(diff),
                     "paper_inside": paper_inside(paper.tickets.scores[task] - paper.dense.scores[task], diff)})
    same_average = dense["average"] is not None and sorted(dense["average"]["tasks"]) == sorted(tasks)
    average = None
    if same_average:
        p_dense = statistics.fmean(paper.dense.scores[t] for t in tasks)
        p_tickets = statistics.fmean(paper.tickets.scores[t] for t in tasks)
        average = {"paper": {"dense": p_dense, "tickets": p_tickets, "diff": p_tickets - p_dense},
                   "ours": {side: {"mean": row["average"]["mean"], "std": row["average"].get("std"),
                                   "n": row["average"]["n"]} for side, row in (("dense", dense), ("tickets", tickets))},
                   "diff": versus["glue_avg"], "verdict": verdict(versus["glue_avg"]),
                   "paper_inside": paper_inside(p_tickets - p_dense, versus["glue_avg"])}
    return {"source": paper.source, "model": paper.model, "dense": dense["label"], "tickets": tickets["label"],
            "tasks": tasks, "rows": rows, "average": average,
            "missing": [t for t in task_order(set(paper.dense.scores)) if t not in tasks]}


def _ours(cell: dict[str, Any]) -> str:
    text = f"{cell['mean']:.2f}" + (f" ± {cell['std']:.2f}" if cell.get("std") is not None else "")
    return text + (f" {NOT_LEARNT}" if cell.get("learnt") is False else "")


def format_comparison(report: dict[str, Any], model: str) -> str:
    """Markdown: one line per task and one for the average; the paper's columns, then ours."""
    head = ["task", "paper MT-DNN", "paper Tickets-Share", "paper Δ", f"ours {report['dense']}",
            f"ours {report['tickets']}", "ours Δ, paired 95 % interval", "ours, as the interval says",
            "paper Δ inside our interval"]
    lines = ["| " + " | ".join(head) + " |", "|---|" + "---:|" * 6 + "---|---|"]
    entries = [(TASK_NAMES.get(r["task"], r["task"]), r) for r in report["rows"]]
    if report["average"] is not None:
        entries.append((f"average ({len(report['tasks'])} tasks)", report["average"]))
    for name, r in entries:
        p = r["paper"]
        n = r["ours"]["dense"]["n"]
        lines.append("| " + " | ".join([name, f"{p['dense']:.2f}", f"{p['tickets']:.2f}", f"{p['diff']:+.2f}".replace("-", "−"),
                                         _ours(r["ours"]["dense"]), _ours(r["ours"]["tickets"]), format_versus(r["diff"]),
                                         r["verdict"] + (f" (n={r['diff']['n']})" if r["diff"] else f" (n={n})"),
                                         {None: "–", True: "yes", False: "no"}[r["paper_inside"]]]) + " |")
    notes = [f"Paper: {report['model']}, {report['source']}. Task score: the mean of the task's metrics (MRPC accuracy "
             f"and F1, STS-B Pearson and Spearman). Ours: {model}, mean ± std over seeds; Δ = Tickets-Share − MT-DNN, "
             "paired by seed (n: seeds paired); \"paper Δ inside our interval\": yes when our data cannot tell our "
             "difference from the paper's, no when they are distinguishable; "
             f"{NOT_LEARNT} = not learnt (below the constant-prediction bar)."]
    if report["missing"]:
        notes.append("Not in our table: " + ", ".join(TASK_NAMES.get(t, t) for t in report["missing"]) + ".")
    return "\n".join(lines) + "\n\n" + " ".join(notes) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    def go() -> None:
        parser = OneLineParser(prog="python -m experiments.paper_comparison", description=__doc__.splitlines()[0])
        parser.add_argument("table", type=Path, help="a table.json of experiments.glue_table")
        parser.add_argument("--model", default="MiniLM", help="our encoder's name, for the notes")
        args = parser.parse_args(argv)
        print(format_comparison(comparison(read_json(args.table)), args.model), end="")

    return run_main(go)


if __name__ == "__main__":
    sys.exit(main())
