"""The transfer table: source × target dev scores against dense and random tickets, with verdicts.

Input: ``scores[row][target] = {seed: task score}`` for one sparsity, rows ``dense``, ``random`` and one per
source ticket. For every (source, target):

- the cell: mean ± std over seeds of the target's dev task score (:func:`tasks.score.task_score`);
- ``vs_random`` / ``vs_dense``: the paired difference over seeds with its 95 % t-interval
  (:func:`experiments.report_stats.versus`);
- the verdict against random (:func:`verdict`): ``transfers`` when the interval lies above 0, ``worse than
  random`` when below, ``not distinguishable`` when it contains 0, ``one seed`` when there is no interval.

Per source, :func:`universal` answers "does it transfer universally?" over its *other* targets (a task ticket
on its own task is in-domain, not transfer): ``yes`` when every other target's verdict is ``transfers``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from basics.stats import mean_std
from experiments.report_stats import format_versus, pm, versus

TRANSFERS = "transfers"
WORSE = "worse than random"
UNDECIDED = "not distinguishable"
ONE_SEED = "one seed: no interval"
CONTROLS = ("dense", "random")


def verdict(diff: Mapping[str, Any] | None) -> str:
    """The verdict of a paired difference to random (a :func:`experiments.report_stats.versus` dict)."""
    if diff is None or diff.get("low") is None:
        return ONE_SEED
    if diff["low"] > 0:
        return TRANSFERS
    if diff["high"] < 0:
        return WORSE
    return UNDECIDED


def universal(source: str, own_task: str | None, verdicts: Mapping[str, str]) -> dict[str, Any]:
    """Whether ``source`` transfers to every target but its own; the answer and the targets of each verdict."""
    others = {t: v for t, v in verdicts.items() if t != own_task}
    transfers = [t for t, v in others.items() if v == TRANSFERS]
    worse = [t for t, v in others.items() if v == WORSE]
    if not others:
        answer = "no other target"
    elif len(transfers) == len(others):
        answer = "yes: better than random on every other target"
    elif transfers:
        answer = f"no: better than random on {len(transfers)} of {len(others)} other targets ({', '.join(transfers)})"
    else:
        answer = f"no: better than random on none of {len(others)} other targets"
    return {"source": source, "own_task": own_task, "universal": bool(others) and len(transfers) == len(others),
            "answer": answer, "transfers": transfers, "worse": worse,
            "undecided": [t for t, v in others.items() if v in (UNDECIDED, ONE_SEED)]}


def cell(values: Mapping[Any, float] | None) -> dict[str, Any] | None:
    if not values:
        return None
    mean, std = mean_std(list(values.values()))
    return {"mean": mean, "std": std, "n": len(values), "seeds": list(values), "scores": list(values.values())}


def transfer_report(scores: Mapping[str, Mapping[str, Mapping[Any, float]]], sources: Sequence[str],
                    targets: Sequence[str], own_task: Mapping[str, str | None], sparsity: float) -> dict[str, Any]:
    """The JSON of one sparsity's table (module docstring)."""
    rows: dict[str, Any] = {}
    for row in (*CONTROLS, *sources):
        rows[row] = {}
        for target in targets:
            values = (scores.get(row) or {}).get(target) or {}
            entry: dict[str, Any] = {"score": cell(values)}
            if row != "dense":
                entry["vs_dense"] = versus(values, (scores.get("dense") or {}).get(target) or {})
            if row not in CONTROLS:
                entry["vs_random"] = versus(values, (scores.get("random") or {}).get(target) or {})
                entry["verdict"] = verdict(entry["vs_random"]) if values else None
            rows[row][target] = entry
    answers = [universal(s, own_task.get(s), {t: rows[s][t]["verdict"] for t in targets if rows[s][t]["verdict"]})
               for s in sources]
    return {"sparsity": sparsity, "targets": list(targets), "sources": list(sources), "rows": rows,
            "universal": answers}


def _score_cell(entry: Mapping[str, Any]) -> str:
    s = entry.get("score")
    return pm(s["mean"], s["std"]) if s else "–"


def render(report: Mapping[str, Any], title: str, heading: str = "##") -> str:
    """Markdown of one :func:`transfer_report` under a ``heading`` (``##``): scores, differences to random with
    verdicts, to dense, answers."""
    targets, sources, rows = report["targets"], report["sources"], report["rows"]
    head = "| | " + " | ".join(targets) + " |\n|---|" + "---|" * len(targets)
    lines = [f"{heading} {title}: sparsity {report['sparsity']:.2f}", "",
             "Dev task score (mean ± std over seeds) of each ticket rewound to the pre-trained weights and fine-tuned "
             "on the target; `dense` is the unpruned model, `random` a random mask with the same heads and neurons.",
             "", "| source \\ target | " + " | ".join(targets) + " |", "|---|" + "---|" * len(targets)]
    for row in (*CONTROLS, *sources):
        lines.append(f"| {row} | " + " | ".join(_score_cell(rows[row][t]) for t in targets) + " |")
    lines += ["", "Paired difference to random over seeds, mean [95 % t-interval], and the verdict:", "",
              head.replace("| |", "| source \\ target |", 1)]
    for s in sources:
        lines.append(f"| {s} | " + " | ".join(
            f"{format_versus(rows[s][t].get('vs_random'))} {rows[s][t]['verdict'] or ''}".strip() for t in targets) + " |")
    lines += ["", "Paired difference to dense over seeds, mean [95 % t-interval]:", "",
              head.replace("| |", "| source \\ target |", 1)]
    for row in ("random", *sources):
        lines.append(f"| {row} | " + " | ".join(format_versus(rows[row][t].get("vs_dense")) for t in targets) + " |")
    lines += ["", "Does a source's ticket transfer universally (better than random on every target but its own)?", ""]
    lines += [f"- **{a['source']}**: {a['answer']}" for a in report["universal"]]
    return "\n".join(lines) + "\n"


def tables(doc: Mapping[str, Any], heading: str = "##") -> str:
    """Every sparsity's table of a study's ``transfer.json``, each under a ``heading``."""
    title = f"Ticket transfer ({doc['study']}, {doc['model']})"
    return "".join(render(r, title, heading) + "\n" for r in doc["tables"])


def markdown(doc: Mapping[str, Any]) -> str:
    """The study's ``transfer.md``: its tables and where they come from."""
    command = f"python -m experiments.transfer experiments/{doc['study']}.yaml"
    return (f"# Ticket transfer: {doc['study']}\n\n{tables(doc)}Rendered from `transfer.json` by "
            f"`experiments/transfer_table.py` (study: `{command}`).\n")
