"""Issue 15's targets judged from a hand-made table.json: the encoder share of the layers, the measured speed-up,
the GLUE-average gap paired over seeds (met, met on the mean only, missed), and the comparisons stated with
their intervals."""

import pytest

from experiments.subarch_table import seed_averages
from experiments.subarch_targets import judge, targets_table

TASKS = ["rte", "mrpc"]


def row(name: str, layers: float, speedup: float, scores: dict[str, list[float]], seeds=(1, 2, 3)) -> dict:
    tasks = {t: {"chosen": {"seeds": list(seeds), "dev": {"values": v}}, "settings": []} for t, v in scores.items()}
    return {"row": name, "model": {"params": {"layers": layers}}, "speedup": {"1": speedup, "32": speedup},
            "tasks": tasks}


def table(distilled_rte: list[float], ticket_rte: list[float] | None = None) -> dict:
    teacher = row("teacher", 10e6, 1.0, {"rte": [60.0, 62.0, 61.0], "mrpc": [80.0, 80.0, 80.0]})
    distilled = row("distilled", 5e6, 2.1, {"rte": distilled_rte, "mrpc": [80.0, 80.0, 80.0]})
    extracted = row("extracted", 5e6, 2.1, {"rte": [50.0, 52.0, 51.0], "mrpc": [70.0, 71.0, 70.0]})
    ticket = row("ticket", 5e6, 1.9, {"rte": ticket_rte or distilled_rte, "mrpc": [80.5, 79.0, 80.0]})
    return {"tasks": TASKS, "rows": [teacher, distilled, extracted, ticket]}


def test_seed_averages_need_every_task():
    r = row("x", 1, 1, {"rte": [60.0, 70.0], "mrpc": [80.0, 90.0]}, seeds=(1, 2))
    assert seed_averages(r, TASKS) == {1: 70.0, 2: 80.0}
    r["tasks"]["mrpc"]["chosen"] = {"seeds": [1], "dev": {"values": [80.0]}}  # seed 2 lacks MRPC
    assert seed_averages(r, TASKS) == {1: 70.0}
    r["tasks"]["mrpc"]["chosen"] = None
    assert seed_averages(r, TASKS) == {}


def test_targets_met_with_the_interval():
    checks = judge(table([59.0, 61.5, 60.0]))  # RTE −1.0, −0.5, −1.0: GLUE avg −0.5, −0.25, −0.5
    share, speed, gap, ticket, distill, ticket_teacher = checks
    assert (share.measured, share.met) == ("50.0% (5.00 M of 10.00 M)", "yes")
    assert (speed.measured, speed.met) == ("2.10×", "yes")
    assert gap.met == "yes" and gap.measured.startswith("−0.42 [")
    assert ticket.met == "—" and ticket.measured.endswith("not distinguishable")
    assert distill.measured.endswith(": higher")  # distillation helps in this table, detectably
    # the ticket against the teacher: GLUE averages −0.25, −0.75, −0.5 over the seeds
    assert ticket_teacher.what == "GLUE average, ticket − teacher" and ticket_teacher.met == "—"
    assert ticket_teacher.measured.startswith("−0.50 [") and ticket_teacher.measured.endswith("not distinguishable")


@pytest.mark.parametrize("rte, met", [
    ([58.0, 62.0, 59.0], "on the mean only"),  # mean −0.67, the interval reaches below −1.5
    ([55.0, 56.5, 55.0], "no"),                # mean −2.75, the interval entirely below −1.5
    ([50.0, 62.0, 56.0], "no (on the mean)"),  # mean −2.5, the interval reaches above −1.5
])
def test_the_gap_is_judged_on_the_mean_and_on_the_interval(rte, met):
    assert judge(table(rte))[2].met == met


def test_missing_rows_and_a_slower_or_larger_model_are_said():
    t = table([60.0, 62.0, 61.0])
    t["rows"][1]["model"]["params"]["layers"] = 6e6
    t["rows"][1]["speedup"] = {"1": 1.8, "32": 1.9}
    share, speed, _, ticket, _, _ = judge(t)
    assert share.met == "no" and speed.met == "no" and speed.measured == "1.90×"
    assert ticket.what == "GLUE average, ticket (0.83× the encoder-layer parameters) − extracted + distilled"
    assert judge(table([60.0, 62.0, 61.0]))[3].what == "GLUE average, ticket (same size) − extracted + distilled"
    t["rows"][1]["model"] = None  # the distilled model is not built yet: its size is not known either
    assert judge(t)[3].what == "GLUE average, ticket (size not measured) − extracted + distilled"
    t["rows"] = t["rows"][:1]  # only the teacher has finished
    assert [c.what for c in judge(t)][3] == "GLUE average, ticket (size not measured) − extracted + distilled"
    assert [c.met for c in judge(t)] == ["not measured"] * 3 + ["—", "—", "—"]
    assert all(c.measured in ("–", "not measured") for c in judge(t))
    assert targets_table(t)[0] == "| what | target | measured | met |"


def test_each_ticket_row_is_compared_with_the_distilled_model():
    t = table([59.0, 61.5, 60.0])
    t["rows"][3]["model"]["params"]["layers"] = 8e6  # a union that keeps a head per layer and task: larger
    t["rows"].append(row("ticket_sized", 4.9e6, 2.0, {"rte": [50.0, 53.0, 51.0], "mrpc": [75.0, 76.0, 74.0]}))
    checks = judge(t)
    assert [c.what for c in checks[3:5]] == [
        "GLUE average, ticket (1.60× the encoder-layer parameters) − extracted + distilled",
        "GLUE average, ticket with no head minimum (same size) − extracted + distilled"]
    assert checks[4].measured.endswith(": lower") and checks[4].met == "—"
    assert [c.what for c in checks[6:8]] == ["GLUE average, ticket − teacher",
                                             "GLUE average, ticket with no head minimum − teacher"]
    assert len(judge(table([59.0, 61.5, 60.0]))) == 6  # no ticket_sized row: no line for it
