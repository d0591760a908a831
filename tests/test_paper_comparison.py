"""Our GLUE table beside the Super Tickets paper: the numbers come from the table and the paper's data, the
verdict follows the paired interval, and a table without the rows it needs is refused in one line."""

from __future__ import annotations

import copy
import json
import statistics
from pathlib import Path

import pytest

from basics.errors import UserError
from experiments.paper_comparison import SUPER_TICKETS, comparison, format_comparison, paper_inside, verdict

TABLE = Path(__file__).resolve().parent.parent / "experiments" / "results" / "cpu_study" / "table.json"


def table() -> dict:
    return json.loads(TABLE.read_text(encoding="utf-8"))


def test_verdict_follows_the_interval():
    assert verdict({"mean": 1.0, "low": 0.2, "high": 1.8}) == "better"
    assert verdict({"mean": -1.0, "low": -1.8, "high": -0.1}) == "worse"
    assert verdict({"mean": 0.3, "low": -0.5, "high": 1.1}) == "not distinguishable"
    assert verdict({"mean": 0.3, "low": None, "high": None}) == "–" and verdict(None) == "–"
    same = {"mean": -0.69, "low": -0.69, "high": -0.69, "n": 2, "differences": [-0.69, -0.69]}
    assert verdict(same) == "no interval: no spread" and paper_inside(0.5, same) is None


def test_comparison_takes_its_numbers_from_the_table_and_the_paper():
    t = table()
    report = comparison(t)
    rows = {r["label"]: r for r in t["rows"]}
    dense, tickets = rows["MT-DNN (dense)"], rows["Tickets-Share (per-task)"]
    assert report["tasks"] == ["sst2", "cola", "stsb", "mrpc", "rte"] and report["missing"] == []
    for r in report["rows"]:
        task = r["task"]
        assert r["paper"]["dense"] == SUPER_TICKETS.dense.scores[task]
        assert r["paper"]["diff"] == pytest.approx(SUPER_TICKETS.tickets.scores[task] - SUPER_TICKETS.dense.scores[task])
        assert r["ours"]["dense"]["mean"] == dense["tasks"][task]["score"]["mean"]
        assert r["ours"]["tickets"]["mean"] == tickets["tasks"][task]["score"]["mean"]
        assert r["diff"] == tickets["vs_dense"]["tasks"][task]
    avg = report["average"]
    assert avg["paper"]["dense"] == pytest.approx(statistics.fmean([92.2, 54.0, 86.3, 83.4, 79.0]))
    assert avg["paper"]["tickets"] == pytest.approx(statistics.fmean([92.7, 52.0, 87.6, 88.75, 81.2]))
    assert avg["diff"] == tickets["vs_dense"]["glue_avg"] and avg["verdict"] == verdict(avg["diff"])
    text = format_comparison(report, "MiniLM")
    assert "| MRPC | 83.40 | 88.75 | +5.35 |" in text and "average (5 tasks) | 78.98 | 80.45 | +1.47 |" in text
    assert text.count("\n|") == 1 + 5 + 1  # separator, 5 tasks, the average


def test_a_task_missing_from_our_table_is_named_and_the_average_left_out():
    t = table()
    for row in t["rows"]:
        row["tasks"].pop("sst2", None)
    report = comparison(t)
    assert report["missing"] == ["sst2"] and report["average"] is None  # the table's average still covers SST-2
    assert "Not in our table: SST-2." in format_comparison(report, "MiniLM")


def test_a_better_ticket_row_reads_better_and_not_learnt_is_marked():
    t = copy.deepcopy(table())
    tickets = next(r for r in t["rows"] if r["label"] == "Tickets-Share (per-task)")
    tickets["vs_dense"]["tasks"]["rte"] = {"mean": 2.0, "low": 0.5, "high": 3.5, "n": 9}
    tickets["tasks"]["cola"]["learnt"] = False
    report = comparison(t)
    rte = next(r for r in report["rows"] if r["task"] == "rte")
    assert rte["verdict"] == "better"
    text = format_comparison(report, "MiniLM")
    assert "| +2.00 [+0.50, +3.50] | better (n=9) | yes |" in text and "†" in text.split("| CoLA |")[1].split("\n")[0]
    assert rte["paper_inside"] is True  # the paper's +2.20 lies in [+0.50, +3.50]
    tickets["vs_dense"]["tasks"]["rte"] = {"mean": -2.0, "low": -3.5, "high": -0.5, "n": 9}
    rte = next(r for r in comparison(t)["rows"] if r["task"] == "rte")
    assert (rte["verdict"], rte["paper_inside"]) == ("worse", False)


def test_a_table_without_the_rows_is_refused():
    t = table()
    t["rows"] = [r for r in t["rows"] if r["label"] != "Tickets-Share (per-task)"]
    with pytest.raises(UserError, match="no row 'Tickets-Share \\(per-task\\)'"):
        comparison(t)
