"""Issue 15's targets for a sub-architecture study, judged from its ``table.json`` (:mod:`experiments.subarch_table`).

- the extracted-and-distilled model keeps at most ``max_encoder_share`` of the teacher's encoder-layer
  parameters (embeddings and pooler not counted: Bort's "encoder" proportion is of the layers);
- it runs at least ``min_speedup`` times the teacher's measured CPU throughput at batch ``speedup_batch``;
- its GLUE average is within ``max_gap`` points of the teacher's: the paired difference over the seeds that
  finished every task (95 % t-interval, :func:`basics.stats.paired_difference`); met on the mean, and said
  whether the interval clears the line too;
- the comparisons, stated whichever way they come out: each ticket row (its size against the distilled model's
  said when it differs by more than 5 %) against the distilled model, each ticket row against the teacher (the
  gap the sub-architecture is held to), and the distilled model against the same architecture without
  distillation.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from basics.stats import PairedDifference, direction, paired_difference, signed
from experiments.subarch_table import seed_averages


@dataclass(frozen=True)
class Targets:
    max_encoder_share: float = 0.5
    min_speedup: float = 2.0
    speedup_batch: str = "32"
    max_gap: float = 1.5  # GLUE average points below the teacher


ISSUE_TARGETS = Targets()
TICKET_NAMES = {"ticket": "ticket", "ticket_sized": "ticket with no head minimum"}  # the ticket rows in the checks


@dataclass(frozen=True)
class Check:
    """One line of the verdict: ``met`` is "yes", "no", "on the mean only", "—" (a comparison) or
    "not measured"."""

    what: str
    target: str
    measured: str
    met: str


def _row(table: Mapping[str, Any], name: str) -> Mapping[str, Any] | None:
    return next((r for r in table["rows"] if r["row"] == name), None)


def _difference(table: Mapping[str, Any], a: str, b: str) -> PairedDifference | None:
    ra, rb = _row(table, a), _row(table, b)
    if ra is None or rb is None:
        return None
    return paired_difference(seed_averages(ra, table["tasks"]), seed_averages(rb, table["tasks"]))


def _verdict(diff: PairedDifference | None) -> str:
    if diff is None:
        return "not measured"
    if diff.low is None or diff.no_spread:
        return f"{diff.format()}: no interval"
    side = direction(diff)
    return diff.format() + (": not distinguishable" if side == 0 else ": higher" if side == 1 else ": lower")


def ticket_size(table: Mapping[str, Any], row: str = "ticket") -> str:
    """"same size", or the ticket row's encoder-layer parameters against the distilled model's when they differ by
    more than 5 % (a union of tickets that keeps a head per layer and task cannot shrink below some size);
    "size not measured" while either model is not built yet."""
    ticket, model = _row(table, row), _row(table, "distilled")
    if not (ticket and model and ticket.get("model") and model.get("model")):
        return "size not measured"
    ratio = ticket["model"]["params"]["layers"] / model["model"]["params"]["layers"]
    return "same size" if abs(ratio - 1) <= 0.05 else f"{ratio:.2f}× the encoder-layer parameters"


MODEL_NAMES = {"distilled": "extracted + distilled", "ticket_distilled": "the ticket's units, extracted + distilled"}


def _model_checks(table: Mapping[str, Any], row: str, targets: Targets) -> list[Check]:
    """The three targets for the model ``row`` (the sub-architecture, or the distilled ticket's units)."""
    teacher, model, name = _row(table, "teacher"), _row(table, row), MODEL_NAMES[row]
    checks = []
    of = "" if row == "distilled" else f" ({name})"  # the distilled model's lines keep their plain names
    what = "encoder-layer parameters, share of the teacher's" + of
    if teacher is not None and model is not None and teacher["model"] and model["model"]:
        share = model["model"]["params"]["layers"] / teacher["model"]["params"]["layers"]
        checks.append(Check(what, f"≤ {targets.max_encoder_share:.0%}",
                            f"{share:.1%} ({model['model']['params']['layers'] / 1e6:.2f} M of "
                            f"{teacher['model']['params']['layers'] / 1e6:.2f} M)",
                            "yes" if share <= targets.max_encoder_share + 1e-12 else "no"))
    else:
        checks.append(Check(what, f"≤ {targets.max_encoder_share:.0%}", "–", "not measured"))
    speed = (model or {}).get("speedup") or {}
    b = targets.speedup_batch
    checks.append(Check(f"measured CPU throughput at batch {b}, against the teacher{of}", f"≥ {targets.min_speedup:g}×",
                        f"{speed[b]:.2f}×" if b in speed else "–",
                        ("yes" if speed[b] >= targets.min_speedup else "no") if b in speed else "not measured"))
    gap = _difference(table, row, "teacher")
    if gap is None:
        met = "not measured"
    elif gap.mean < -targets.max_gap:
        met = "no" if gap.high is not None and gap.high < -targets.max_gap and not gap.no_spread else "no (on the mean)"
    elif gap.low is not None and not gap.no_spread and gap.low >= -targets.max_gap:
        met = "yes"
    else:
        met = "on the mean only"
    checks.append(Check(f"GLUE average, {name} − teacher (paired over seeds)",
                        f"≥ {signed(-targets.max_gap, 1)}", gap.format() if gap else "–", met))
    return checks


def judge(table: Mapping[str, Any], targets: Targets = ISSUE_TARGETS) -> list[Check]:
    """The targets and comparisons of ``table`` (a study's ``table.json``); with a ``ticket_distilled`` row, the
    same targets for it, and what distillation did to the ticket."""
    checks = _model_checks(table, "distilled", targets)
    tickets = [(row, name) for row, name in TICKET_NAMES.items() if row == "ticket" or _row(table, row) is not None]
    for row, name in tickets:
        checks.append(Check(f"GLUE average, {name} ({ticket_size(table, row)}) − extracted + distilled",
                            "stated either way", _verdict(_difference(table, row, "distilled")), "—"))
    checks.append(Check("GLUE average, extracted + distilled − extracted, not distilled", "stated either way",
                        _verdict(_difference(table, "distilled", "extracted")), "—"))
    for row, name in tickets:  # the ticket against the bar the sub-architecture is held to
        checks.append(Check(f"GLUE average, {name} − teacher", "stated either way",
                            _verdict(_difference(table, row, "teacher")), "—"))
    if _row(table, "ticket_distilled") is not None:
        checks += _model_checks(table, "ticket_distilled", targets)
        checks.append(Check("GLUE average, the ticket's units, extracted + distilled − ticket", "stated either way",
                            _verdict(_difference(table, "ticket_distilled", "ticket")), "—"))
        checks.append(Check("GLUE average, the ticket's units, extracted + distilled − extracted + distilled",
                            "stated either way", _verdict(_difference(table, "ticket_distilled", "distilled")), "—"))
    return checks


def targets_table(table: Mapping[str, Any], targets: Targets = ISSUE_TARGETS) -> list[str]:
    """:func:`judge` as a markdown table."""
    lines = ["| what | target | measured | met |", "|---|---|---|---|"]
    lines += [f"| {c.what} | {c.target} | {c.measured} | {c.met} |" for c in judge(table, targets)]
    return lines
