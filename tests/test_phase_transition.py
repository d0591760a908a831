"""phase_transition.summarize on synthetic scores: dense is a super-ticket candidate (and can be left out),
the choice and held-out scores are recorded, paired differences to dense and "not learnt" marks."""

import json

import pytest

from experiments import phase_transition
from experiments.phase_transition import markdown, selection, summarize
from masks.arch import EncoderShape
from masks.mask import Mask, load_mask, save_mask
from mtl.config import TrainConfig
from tasks.baseline import Baseline

SHAPE = EncoderShape(num_layers=2, num_heads=2, head_dim=3, hidden=6, intermediate=5)
BASELINE = Baseline(task="rte", metrics={"accuracy": 52.7}, score=52.7, standard_error=3.0, constant="entailment",
                    n={"dev": 277})


def scoring_dir(tmp_path, sparsities=(0.3, 0.6)):
    scorer = tmp_path / "dense-seed1"
    for s in sparsities:
        mask = Mask.ones(SHAPE, kind="winning", tasks="rte", model="tiny", sparsity=s)
        mask.heads[0, 0] = False
        mask.ffn[1, :2] = False
        mask.meta.param_sparsity = mask.sparsity(SHAPE)
        save_mask(mask, scorer / "masks" / f"winning-{s:.2f}.safetensors")
    return scorer


def runs(dense_hold: float, win_hold: dict[float, float], dev: dict[str, list[float]]) -> dict[str, list[dict]]:
    """Two seeds per row; dev scores per row name, held-out scores per row (seed-independent here)."""
    out = {}
    for name, values in dev.items():
        sparsity = 0.0 if name == "dense" else float(name.rsplit("-", 1)[1])
        hold = dense_hold if name == "dense" else win_hold.get(sparsity, 50.0)
        out[name] = [{"seed": seed, "dev": v, "holdout": hold, "dev_metrics": {"accuracy": v},
                      **({} if name == "dense" else {"sparsity": sparsity})} for seed, v in zip((1, 2), values)]
    return out


DEV = {"dense": [58.0, 56.0], "winning-0.30": [57.0, 54.0], "random-0.30": [50.0, 51.0],
       "winning-0.60": [52.0, 50.0], "random-0.60": [49.0, 50.0]}
BASE = TrainConfig.of(tasks=["rte"], sparsities=[0.3, 0.6])


def test_dense_wins_when_it_scores_best_on_holdout(tmp_path):
    report = summarize(runs(70.0, {0.3: 65.0, 0.6: 60.0}, DEV), BASE, "rte", tmp_path, "holdout",
                       scoring_dir(tmp_path), baselines={"rte": BASELINE})
    st = report["super_ticket"]
    assert (st["kind"], st["sparsity"], st["score"], st["dense_candidate"]) == ("dense", 0.0, 70.0, True)
    assert [(c["kind"], c["sparsity"], c["holdout_mean"]) for c in st["candidates"]] == [
        ("dense", 0.0, 70.0), ("winning", 0.3, 65.0), ("winning", 0.6, 60.0)]
    mask = load_mask(tmp_path / "super_ticket.safetensors")
    assert bool(mask.heads.all()) and bool(mask.ffn.all())  # all-keep
    assert mask.meta.kind == "super_ticket" and mask.meta.sparsity == 0.0 and mask.meta.param_sparsity == 0.0
    assert mask.meta.extra["source_kind"] == "dense" and mask.meta.tasks == ("rte",)
    saved = json.loads((tmp_path / "phase_transition.json").read_text())
    assert saved["super_ticket"]["kind"] == "dense" and saved["baseline"]["score"] == 52.7
    assert "Super ticket: dense (sparsity 0" in (tmp_path / "phase_transition.md").read_text()


def test_without_the_dense_candidate_and_ties_go_to_the_sparser(tmp_path):
    report = summarize(runs(70.0, {0.3: 65.0, 0.6: 65.0}, DEV), BASE, "rte", tmp_path, "holdout",
                       scoring_dir(tmp_path), dense_candidate=False, baselines={})
    st = report["super_ticket"]
    assert (st["kind"], st["sparsity"], st["dense_candidate"]) == ("winning", 0.6, False)
    assert [c["kind"] for c in st["candidates"]] == ["winning", "winning"]
    mask = load_mask(tmp_path / "super_ticket.safetensors")
    assert mask.meta.kind == "super_ticket" and not bool(mask.heads[0, 0]) and mask.meta.extra["dense_candidate"] == "false"
    # a dense tie with the best winning ticket goes to the winning ticket (sparser)
    tie = summarize(runs(65.0, {0.3: 65.0, 0.6: 60.0}, DEV), BASE, "rte", tmp_path, "holdout",
                    scoring_dir(tmp_path), baselines={})
    assert (tie["super_ticket"]["kind"], tie["super_ticket"]["sparsity"]) == ("winning", 0.3)


def test_paired_differences_and_not_learnt_marks(tmp_path):
    report = summarize(runs(50.0, {0.3: 65.0}, DEV), BASE, "rte", tmp_path, "holdout", scoring_dir(tmp_path),
                       baselines={"rte": BASELINE})
    row = next(r for r in report["rows"] if (r["kind"], r["sparsity"]) == ("winning", 0.3))
    diff = row["vs_dense"]
    assert diff["differences"] == [-1.0, -2.0] and diff["mean"] == pytest.approx(-1.5)
    half = 12.706204736174694 * 0.7071067811865476 / 2 ** 0.5  # t(0.975, 1) * sd / sqrt(2) = 6.35
    assert (diff["low"], diff["high"]) == (pytest.approx(-1.5 - half), pytest.approx(-1.5 + half))
    text = markdown(report)
    assert "| 0.30 | 55.50 ± 2.12 † | 50.50 ± 0.71 † |  | 65.00 ± 0.00 |" in text  # below 52.7 + 3.0
    assert "| 0 (dense) | 57.00 ± 1.41 |" in text  # learnt: no mark
    assert "| 0.30 | −1.50 [−7.85, +4.85] | −6.50 [−25.56, +12.56] |  |" in text
    assert "| 0.60 | −6.00 (n=2, the same on every seed) |" in text  # no spread: a zero-width interval decides nothing
    assert "below 55.70, not learnt" in text


def test_an_older_report_is_reread_with_dense_as_a_candidate(tmp_path):
    report = summarize(runs(70.0, {0.3: 65.0, 0.6: 60.0}, DEV), BASE, "rte", tmp_path, "holdout",
                       scoring_dir(tmp_path), dense_candidate=False, baselines={})
    for key in ("dense_candidate", "candidates", "kind"):  # what a report of the previous version lacks
        del report["super_ticket"][key]
    for row in report["rows"]:
        del row["vs_dense"], row["holdout"]
    assert selection(report)["kind"] == "dense" and selection(report, dense_candidate=False)["sparsity"] == 0.3
    text = markdown(report, {"rte": BASELINE})
    assert "among the winning tickets only" in text and "with dense as a candidate the choice is dense" in text
    assert "| 0.30 | −1.50 [−7.85, +4.85]" in text  # differences computed from the per-seed scores


def _report(dev: dict, task: str = "rte") -> dict:
    """A hand-made report: ``dev`` maps ``"dense"`` / ``"winning-0.10"`` ... to per-seed dev scores (seeds 1..n)."""
    rows = []
    for name, values in dev.items():
        kind, sparsity = ("dense", 0.0) if name == "dense" else ("winning", float(name.split("-")[1]))
        rows.append({"kind": kind, "sparsity": sparsity, "seeds": list(range(1, len(values) + 1)), "dev": values,
                     "dev_mean": sum(values) / len(values)})
    return {"task": task, "rows": rows}


def test_phase_transition_verdict_by_hand():
    base = Baseline(task="rte", metrics={"accuracy": 50.0}, score=50.0, standard_error=1.0,
                    constant="0", n={"dev": 100}, label_counts={})
    rise_fall = _report({"dense": [60, 61, 62], "winning-0.10": [62, 63, 64.5], "winning-0.20": [64, 65, 66.2],
                         "winning-0.30": [60, 62.5, 61.6], "winning-0.40": [55, 56, 57.1]})
    t = phase_transition.transition(rise_fall, base)
    assert t["above"] == [0.1, 0.2] and t["peak"] == 0.2 and t["below"] == [0.4] and t["dense_learnt"] is True
    assert t["fall"]["sparsity"] == 0.3 and t["fall"]["vs_peak"]["high"] < 0 and t["verdict"] == "appears"
    flat = _report({"dense": [60, 61, 62], "winning-0.10": [59, 62, 61.5], "winning-0.20": [58, 59, 60.2]})
    t = phase_transition.transition(flat, base)
    assert t["above"] == [] and t["peak"] is None and t["verdict"].startswith("does not appear")
    no_fall = _report({"dense": [60, 61, 62], "winning-0.10": [62, 63, 64.1], "winning-0.20": [61, 64, 63]})
    assert phase_transition.transition(no_fall, base)["verdict"] == "rises above dense, no detectable fall after it"
    not_learnt = _report({"dense": [50, 50.5, 50.2], "winning-0.10": [55, 56, 57.1]})
    assert phase_transition.transition(not_learnt, base)["verdict"] == "cannot be judged: dense is not learnt"
    # without a baseline dense is not judged on learning: the rise alone is read
    assert phase_transition.transition(not_learnt, None)["verdict"] == "rises above dense, no detectable fall after it"
    lines = phase_transition.transition_table([rise_fall, flat], {"rte": base})
    assert lines[2].startswith("| RTE | 3 | yes | 0.10, 0.20 | 0.20: +4.07") and lines[2].endswith("| 0.40 | appears |")


def test_a_tie_in_the_last_floating_point_bit_is_a_tie_and_goes_to_the_sparser():
    # the same held-out accuracies summed in another order: 0.2 against 0.19999999999999998 as floats
    dense = {"kind": "dense", "sparsity": 0.0, "holdout_mean": sum([0.1, 0.2, 0.3]) / 3, "dev_mean": 1.0}
    winning = {"kind": "winning", "sparsity": 0.3, "holdout_mean": sum([0.3, 0.2, 0.1]) / 3, "dev_mean": 0.5}
    assert dense["holdout_mean"] > winning["holdout_mean"]  # without the rounding, dense would win
    report = {"select_on": "holdout", "rows": [dense, winning]}
    assert (selection(report)["kind"], selection(report)["sparsity"]) == ("winning", 0.3)
    # a real difference still decides
    winning["holdout_mean"] = 0.2 - 1e-6
    assert selection(report)["kind"] == "dense"


def test_a_resumed_study_keeps_the_report_and_its_first_command(tmp_path, monkeypatch):
    def write(command, dev):
        monkeypatch.setattr(phase_transition, "command_line", lambda: command)
        return summarize(runs(70.0, {0.3: 65.0, 0.6: 60.0}, dev), BASE, "rte", tmp_path, "holdout",
                         scoring_dir(tmp_path), baselines={"rte": BASELINE})

    write("python -m experiments.run study.yaml", DEV)
    first = (tmp_path / "phase_transition.json").read_bytes()
    assert write("python -m experiments.run study.yaml --time-limit 2h", DEV)["command"] == (
        "python -m experiments.run study.yaml")  # the same report: nothing changes
    assert (tmp_path / "phase_transition.json").read_bytes() == first
    assert "Command: `python -m experiments.run study.yaml`" in (tmp_path / "phase_transition.md").read_text()
    changed = {**DEV, "dense": [58.0, 57.0]}  # another result: the command that wrote it
    assert write("python -m experiments.run study.yaml --time-limit 2h", changed)["command"].endswith("--time-limit 2h")
