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

With the targets' constant-prediction baselines (:mod:`tasks.baseline`), a score below the baseline plus one
dev-set standard error is marked not learnt (†), and a target on which the dense model itself is not learnt
is left out of the "universally" question: no ticket can show transfer where the task is not learnt at all.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from typing import Any

from basics.stats import direction, mean_std, no_spread
from experiments.report_stats import NOT_LEARNT, format_versus, learnt_mark, pm, versus
from tasks.baseline import Baseline, is_learnt

TRANSFERS = "transfers"
WORSE = "worse than random"
UNDECIDED = "not distinguishable"
ONE_SEED = "one seed: no interval"
NO_SPREAD = "no spread: no interval"  # every seed the same difference (basics.stats.PairedDifference.no_spread)
CONTROLS = ("dense", "random")


def verdict(diff: Mapping[str, Any] | None) -> str:
    """The verdict of a paired difference to random (a :func:`experiments.report_stats.versus` dict)."""
    sign = direction(diff)
    if sign is None:
        return NO_SPREAD if no_spread(diff) else ONE_SEED
    return {1: TRANSFERS, -1: WORSE, 0: UNDECIDED}[sign]


def universal(source: str, own_task: str | None, verdicts: Mapping[str, str],
              unlearnt: Collection[str] = ()) -> dict[str, Any]:
    """Whether ``source`` transfers to every target but its own (and but those in ``unlearnt``: targets on which
    the dense model is not learnt); the answer and the targets of each verdict."""
    others = {t: v for t, v in verdicts.items() if t != own_task}
    skipped = [t for t in others if t in unlearnt]
    judged = {t: v for t, v in others.items() if t not in unlearnt}
    transfers = [t for t, v in judged.items() if v == TRANSFERS]
    worse = [t for t, v in judged.items() if v == WORSE]
    if not judged:
        answer = "no other target" if not skipped else "no other target on which dense is learnt"
    elif len(transfers) == len(judged):
        answer = "yes: better than random on every other target"
    elif transfers:
        answer = f"no: better than random on {len(transfers)} of {len(judged)} other targets ({', '.join(transfers)})"
    else:
        answer = f"no: better than random on none of {len(judged)} other targets"
    if skipped and judged:
        answer += f"; not judged: {', '.join(skipped)} (dense not learnt)"
    return {"source": source, "own_task": own_task, "universal": bool(judged) and len(transfers) == len(judged),
            "answer": answer, "transfers": transfers, "worse": worse, "not_judged": skipped,
            "undecided": [t for t, v in judged.items() if v in (UNDECIDED, ONE_SEED, NO_SPREAD)]}


def cell(values: Mapping[Any, float] | None) -> dict[str, Any] | None:
    if not values:
        return None
    mean, std = mean_std(list(values.values()))
    return {"mean": mean, "std": std, "n": len(values), "seeds": list(values), "scores": list(values.values())}


def transfer_report(scores: Mapping[str, Mapping[str, Mapping[Any, float]]], sources: Sequence[str],
                    targets: Sequence[str], own_task: Mapping[str, str | None], sparsity: float,
                    baselines: Mapping[str, Baseline] | None = None) -> dict[str, Any]:
    """The JSON of one sparsity's table (module docstring)."""
    baselines = {t: b for t, b in (baselines or {}).items() if t in targets}
    rows: dict[str, Any] = {}
    for row in (*CONTROLS, *sources):
        rows[row] = {}
        for target in targets:
            values = (scores.get(row) or {}).get(target) or {}
            entry: dict[str, Any] = {"score": cell(values)}
            if entry["score"] is not None and target in baselines:
                entry["learnt"] = is_learnt(entry["score"]["mean"], baselines[target])
            if row != "dense":
                entry["vs_dense"] = versus(values, (scores.get("dense") or {}).get(target) or {})
            if row not in CONTROLS:
                entry["vs_random"] = versus(values, (scores.get("random") or {}).get(target) or {})
                entry["verdict"] = verdict(entry["vs_random"]) if values else None
            rows[row][target] = entry
    unlearnt = [t for t in targets if rows["dense"][t].get("learnt") is False]
    answers = [universal(s, own_task.get(s), {t: rows[s][t]["verdict"] for t in targets if rows[s][t]["verdict"]},
                         unlearnt) for s in sources]
    return {"sparsity": sparsity, "targets": list(targets), "sources": list(sources), "rows": rows,
            "baselines": {t: b.to_dict() for t, b in baselines.items()}, "dense_not_learnt": unlearnt,
            "universal": answers}


def _score_cell(entry: Mapping[str, Any], baseline: Baseline | None) -> str:
    s = entry.get("score")
    return pm(s["mean"], s["std"]) + learnt_mark(s["mean"], baseline) if s else "–"


def render(report: Mapping[str, Any], title: str, heading: str = "##") -> str:
    """Markdown of one :func:`transfer_report` under a ``heading`` (``##``): scores, differences to random with
    verdicts, to dense, answers."""
    targets, sources, rows = report["targets"], report["sources"], report["rows"]
    head = "| | " + " | ".join(targets) + " |\n|---|" + "---|" * len(targets)
    lines = [f"{heading} {title}: sparsity {report['sparsity']:.2f}", "",
             "Dev task score (mean ± std over seeds) of each ticket rewound to the pre-trained weights and fine-tuned "
             "on the target; `dense` is the unpruned model, `random` a random mask with the same heads and neurons.",
             "", "| source \\ target | " + " | ".join(targets) + " |", "|---|" + "---|" * len(targets)]
    baselines = {t: Baseline.from_dict(b) for t, b in (report.get("baselines") or {}).items()}
    for row in (*CONTROLS, *sources):
        lines.append(f"| {row} | " + " | ".join(_score_cell(rows[row][t], baselines.get(t)) for t in targets) + " |")
    if baselines:
        lines += ["", f"{NOT_LEARNT}: below the target's constant-prediction baseline plus one dev-set standard error, "
                  "not learnt (`tasks/baseline.py`): " + "; ".join(
                      f"{t} {b.score:.2f} + {b.standard_error:.2f}" for t, b in baselines.items()) + "."
                  + (f" Dense is not learnt on {', '.join(report['dense_not_learnt'])}: left out of the "
                     "\"universally\" question below." if report.get("dense_not_learnt") else "")]
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
