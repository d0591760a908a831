"""The device check pairs the CPU snapshot with the records measured again on the GPU."""

from __future__ import annotations

import json

import pytest

from basics.io import atomic_write_json
from experiments.subarch_device import device_check, device_check_lines, spearman


def test_spearman_on_hand_made_orders():
    assert spearman([1, 2, 3, 4, 5], [10, 20, 30, 40, 50]) == 1.0
    assert spearman([1, 2, 3, 4, 5], [5, 4, 3, 2, 1]) == -1.0
    assert spearman([1, 2, 3, 4], [2, 1, 3, 4]) is None  # too few pairs to say


def test_device_check_pairs_only_what_was_measured_again_on_the_gpu(tmp_path):
    errors = {"A": (1.0, 0.50), "B": (1.2, 0.60), "C": (1.4, 0.70)}
    atomic_write_json(tmp_path / "gpu" / "cpu_side.json", {
        "candidates": {n: {"heldout_before": b, "heldout": a} for n, (b, a) in errors.items()},
        "finetune": {"finetune/teacher/rte/run1": {"metrics": {"rte": {"accuracy": 60.0}}, "machine": {"cuda": None}}}})
    assert device_check_lines(device_check(tmp_path)) == ["(no measurement has been taken again on the GPU yet)"]
    for name, (before, after), device in (("A", (1.001, 0.51), "cuda:0 (H)"), ("B", (1.199, 0.62), "cuda:0 (H)"),
                                          ("C", (1.4, 0.70), "cpu")):  # C: still the CPU's record, not a pair
        atomic_write_json(tmp_path / "candidates" / f"{name}.json",
                          {"error": {"heldout_before": before, "heldout": after, "device": device}})
    run = tmp_path / "finetune" / "teacher" / "rte" / "run1"
    atomic_write_json(run / "metrics.json", {"rte": {"accuracy": 62.5}})
    atomic_write_json(run / "results.json", {"metrics": {"rte": {"accuracy": 62.5}}, "machine": {"cuda": "H"}})
    check = device_check(tmp_path)
    assert check["loss_after"]["n"] == 2 and check["loss_after"]["difference"]["mean"] == pytest.approx(0.015)
    assert check["loss_after"]["max_abs"] == pytest.approx(0.02) and check["loss_after"]["spearman"] is None
    assert check["loss_before"]["difference"]["mean"] == pytest.approx(0.0)
    assert check["finetune"]["difference"]["mean"] == pytest.approx(2.5) and check["finetune"]["n"] == 1
    assert check["devices"] == ["H"]
    text = "\n".join(device_check_lines(check))
    assert "| held-out loss after 200 distillation steps (the error surrogate) | 2 | +0.01500 [" in text
    assert "| fine-tuning run, dev score (points) | 1 | +2.50 | 2.50 | — |" in text
    json.dumps(check)


def test_the_table_says_where_each_row_trained_once_the_places_differ():
    from experiments.subarch_table import devices_of, markdown

    def row(label, devices):
        chosen = {"lr": 1e-4, "warmup": 0.1, "seeds": [1, 2], "dev": {"mean": 60.0, "std": 1.0}, "devices": devices}
        r = {"label": label, "model": None, "speedup": None, "tasks": {"rte": {"chosen": chosen}}, "average": None}
        return {**r, "trained_on": devices_of(r)}

    table = {"study": "s", "teacher": "t", "batch_sizes": [1], "latency": {}, "select_on": "holdout", "tasks": ["rte"],
             "rows": [row("Teacher", ["NVIDIA H200", "NVIDIA H200"]), row("Ticket", ["CPU", "NVIDIA H200"])]}
    assert table["rows"][1]["trained_on"] == {"CPU": 1, "NVIDIA H200": 1}
    text = markdown(table)
    assert "- Teacher: 2 on NVIDIA H200" in text and "- Ticket: 1 on CPU, 1 on NVIDIA H200" in text
    table["rows"] = table["rows"][:1]
    assert "Trained on" not in markdown(table)  # one place for every run: nothing to say
