"""The sub-architecture study end to end on a tiny teacher: search, selection, distillation, ticket, fine-tuning,
latency and the table; the search resumes (nothing measured twice, a missing candidate measured alone); the
Pareto frontier and the W ranking on a hand-made set."""

from __future__ import annotations

import dataclasses
import json
import random
import re

import pytest
import torch
import yaml

import mtl.distill
from basics.errors import UserError
from experiments import subarch
from experiments.pareto import dominates, pareto_front, rank, w_scores
from experiments.subarch_config import load_study, study_from_dict, timed_rows
from experiments.subarch_files import progress
from experiments.subarch_search import reference_grid, score_step
from experiments.subarch_table import timed_as
from experiments.subarch_targets import judge
from masks.arch import EncoderShape
from masks.importance import Importance, load_importance, save_importance
from masks.mask import load_mask
from masks.subarch import SubArch
from masks.subarch_importance import load_scores, with_task_units
from mtl.rundir import RunDir
from mtl.teacher import read_student_info
from tasks.score import task_score
from tests.conftest import REPO
from tests.test_distill import save_tiny_model
from tests.tiny_run import WORDS, write_tiny_tasks

CANDIDATES = ["D1-A1-H8-I8", "D1-A2-H16-I16", "D2-A2-H24-I20", "D3-A4-H32-I37"]


pytestmark = pytest.mark.usefixtures("one_thread")


def test_pareto_frontier_and_ranking_on_a_hand_made_set():
    points = [(1, 5, 5), (2, 2, 2), (3, 3, 3), (5, 1, 1), (2, 2, 2), (1, 5, 6), (4, 4, 0.5)]
    assert dominates((2, 2, 2), (3, 3, 3)) and not dominates((2, 2, 2), (2, 2, 2))
    assert pareto_front(points) == [0, 1, 3, 4, 6]  # (3,3,3) by (2,2,2); (1,5,6) by (1,5,5); equal points both stay
    assert w_scores([(0, 0, 0), (1, 1, 1), (0.5, 0, 0)], [1, 1, 1]) == pytest.approx([1.0, 0.0, 1 - (0.25 / 3) ** 0.5])
    ranked = rank([f"c{i}" for i in range(len(points))], points, [1, 1, 1])
    assert ranked[0]["frontier"] and [r["rank"] for r in ranked] == list(range(1, len(points) + 1))
    assert rank(["a", "b"], [(1, 9, 9), (9, 1, 1)], [1, 0, 0])[0]["name"] == "a"  # only size counts
    with pytest.raises(UserError, match="ranking weights must be 3 non-negative numbers"):
        w_scores(points, [1, -1, 1])


def test_study_config_checks_its_keys_and_candidates():
    study = study_from_dict({"search": {"candidates": CANDIDATES}})
    assert study.search.distill.steps == 300 and study.distill.steps == 20000
    shape = EncoderShape(3, 4, 8, 32, 37)
    assert [a.name for a in study.search.archs(shape)] == CANDIDATES
    assert len(study_from_dict({}).search.archs(EncoderShape(6, 12, 32, 384, 1536))) == 256  # the grid
    with pytest.raises(UserError, match="unknown study key search.gird"):
        study_from_dict({"search": {"gird": {}}})
    with pytest.raises(UserError, match="hidden 48 is outside 1..32"):
        study_from_dict({"search": {"candidates": ["D1-A1-H48-I8"]}}).search.archs(shape)
    with pytest.raises(UserError, match="ticket.min_heads_per_layer must be 0 or more, got -1"):
        study_from_dict({"ticket": {"min_heads_per_layer": -1}})
    given = study_from_dict({"ticket": {"mask": "union.safetensors"}})  # a given mask has its own size
    assert given.rows() == ["teacher", "distilled", "extracted", "ticket"]
    assert given.ticket.min_heads("ticket") == 1 and given.ticket.min_heads("ticket_sized") == 0
    assert study_from_dict({}).rows() == ["teacher", "distilled", "extracted"]  # no ticket without its source
    with pytest.raises(UserError, match="unknown cost axis 'flops'"):
        study_from_dict({"select": {"cost": "flops"}})


def tiny_study(root, **changes) -> dict:
    teacher = save_tiny_model(root / "teacher")
    task_def = write_tiny_tasks(root / "data", n_train=64, n_dev=24)
    rng = random.Random(0)
    (root / "corpus.txt").write_text("\n".join(" ".join(rng.choice(WORDS) for _ in range(rng.randint(4, 12)))
                                               for _ in range(120)), encoding="utf-8")
    g = torch.Generator().manual_seed(0)
    save_importance(Importance(*(torch.rand(*s, generator=g) for s in ((3, 4), (3, 37), (3, 4), (3, 37), (3, 1))),
                               meta={"shape": "L=3,H=4,d=8,hidden=32,I=37", "tasks": "tinysent"}), root / "imp.safetensors")
    study = {
        "name": "tiny", "teacher": str(teacher), "output_dir": str(root / "out"),
        "corpus": {"files": [str(root / "corpus.txt")], "heldout": 16, "max_seq_length": 32},
        "scoring": {"batches": 2, "batch_size": 8},
        "search": {"candidates": CANDIDATES, "distill": {"steps": 3, "batch_size": 8, "lr": 1e-3},
                   "latency": {"seq_len": 16, "batch_sizes": [1, 4], "rounds": 1, "sequences_per_round": 4}},
        "select": {"max_encoder_share": 0.7},
        "distill": {"steps": 6, "batch_size": 8, "lr": 1e-3, "checkpoint_every": 2, "log_every": 2},
        "finetune": {"tasks": ["tinysent"], "seeds": [1], "lrs": [1e-3, 1e-5], "warmups": [0.1],
                     "train": {"epochs": 1, "task_def": [str(task_def)], "batch_size": 8, "max_seq_length": 32,
                               "precision": "fp32", "cache_dir": str(root / "cache")}},
        "ticket": {"importance": {"tinysent": str(root / "imp.safetensors")}},
        "latency": {"seq_len": 16, "batch_sizes": [1, 4], "rounds": 1, "sequences_per_round": 4},
    }
    study.update(changes)
    (root / "study.yaml").write_text(yaml.safe_dump(study), encoding="utf-8")
    return study


def run(root, *extra) -> int:
    return subarch.main([str(root / "study.yaml"), "--backend", "inline", "--status-every", "600", *extra])


def test_a_tiny_study_end_to_end_and_its_search_resumes(tmp_path, monkeypatch, capsys):
    tiny_study(tmp_path)
    assert run(tmp_path) == 0, capsys.readouterr().err
    out = tmp_path / "out"
    search = json.loads((out / "search.json").read_text())
    chosen = search["chosen"]
    assert len(search["candidates"]) == 4 and search["frontier"] and (out / "frontier.png").stat().st_size > 1000
    pick = next(c for c in search["candidates"] if c["name"] == chosen)
    assert pick["encoder_share"] <= 0.7 and pick["rank"] == min(c["rank"] for c in search["candidates"] if c["eligible"])
    full = next(c for c in search["candidates"] if c["name"] == "D3-A4-H32-I37")
    assert full["encoder_share"] == 1.0 and full["error"]["heldout_before"] < 1e-6  # the teacher itself
    table = json.loads((out / "table.json").read_text())
    assert [r["row"] for r in table["rows"]] == ["teacher", "distilled", "extracted", "ticket", "ticket_sized"]
    assert all(r["tasks"]["tinysent"]["chosen"] is not None and r["speedup"] for r in table["rows"])
    for row in table["rows"]:  # the sweep's setting with the best held-out score is the one reported
        settings = row["tasks"]["tinysent"]["settings"]
        assert len(settings) == 2 and row["tasks"]["tinysent"]["chosen"]["holdout"]["mean"] == max(
            s["holdout"]["mean"] for s in settings)
    ticket = json.loads((out / "ticket" / "ticket.json").read_text())
    assert abs(ticket["layer_params"] - pick["params"]["layers"]) <= 0.1 * pick["params"]["layers"]
    sized = json.loads((out / "ticket_sized" / "ticket.json").read_text())
    assert ticket["min_heads_per_layer"] == 1 and sized["min_heads_per_layer"] == 0
    assert abs(sized["layer_params"] - pick["params"]["layers"]) <= 0.1 * pick["params"]["layers"]
    distill = json.loads((out / "distill" / "distill.json").read_text())
    assert distill["steps"] == 6 and (out / "distill" / "curve.png").is_file()
    assert "Extracted + distilled" in (out / "table.md").read_text()
    measured = {p.name: p.stat().st_mtime_ns for p in (out / "candidates").glob("*.json")}
    costs = subarch.StepCosts.of(load_study(tmp_path / "study.yaml"), [SubArch.parse(c) for c in CANDIDATES],
                                 EncoderShape(3, 4, 8, 32, 37))  # nothing left: no cost
    assert set(costs.candidates.values()) == {0.0} and costs.pretrain == 0.0 and costs.pretrain_arch == chosen
    places = {j.name: j.where for j in subarch.study_jobs(load_study(tmp_path / "study.yaml"),
                                                          [SubArch.parse(c) for c in CANDIDATES], 1, costs)}
    assert {places[f"candidates/{c}/{part}"] for c in CANDIDATES for part in ("latency", "error")} == {"scheduler"}
    assert places["scores"] == "worker"  # measured parts only write their record: no worker started for them
    steps = progress(load_study(tmp_path / "study.yaml"), out)  # all done, counted from the files
    assert ("search candidates", 4, 4) in steps and all(done == of for _, done, of in steps), steps
    assert json.loads((out / "teacher_cache" / "cache.json").read_text())["batches"] == {"train": 3, "heldout": 1}
    cached = json.loads((out / "candidates" / "D1-A2-H16-I16.json").read_text())["error"]

    calls = []
    original = mtl.distill.Distiller.run

    def counting(self):
        calls.append(self.student.selection.arch.name)
        return original(self)

    monkeypatch.setattr(mtl.distill.Distiller, "run", counting)
    assert run(tmp_path) == 0  # everything done: nothing is measured, distilled or trained again
    assert calls == [] and {p.name: p.stat().st_mtime_ns for p in (out / "candidates").glob("*.json")} == measured
    assert "every candidate is measured; not needed" in capsys.readouterr().out
    record = out / "candidates" / "D1-A2-H16-I16.json"
    before = json.loads(record.read_text())
    record.unlink()  # its two parts are there: the record is joined again, nothing is measured
    assert run(tmp_path, "--only", "candidates/D1-A2-H16-I16/*") == 0 and calls == []
    assert json.loads(record.read_text()) == before
    record.unlink()
    (out / "candidates" / "D1-A2-H16-I16" / "distill.json").unlink()  # as if killed before its distillation ended
    assert run(tmp_path, "--report-only") == 0 and calls == []
    study = yaml.safe_load((tmp_path / "study.yaml").read_text())
    study["search"]["teacher_cache"] = False  # measured again with the live teacher: the same losses
    (tmp_path / "study.yaml").write_text(yaml.safe_dump(study), encoding="utf-8")
    capsys.readouterr()
    assert run(tmp_path, "--only", "candidates/*/error") == 0  # the error part alone (e.g. on a GPU machine)
    assert calls == ["D1-A2-H16-I16"]  # the missing candidate alone
    assert "[start] select" not in capsys.readouterr().out and record.is_file()
    live = json.loads((out / "candidates" / "D1-A2-H16-I16.json").read_text())["error"]
    assert (live["heldout_before"], live["heldout"]) == (cached["heldout_before"], cached["heldout"])


def test_sweep_seeds_run_the_other_seeds_at_the_chosen_setting_only(tmp_path, capsys):
    study = tiny_study(tmp_path)
    study["finetune"].update(seeds=[1, 2], sweep_seeds=[1], rows=["teacher"])
    (tmp_path / "study.yaml").write_text(yaml.safe_dump(study), encoding="utf-8")
    assert run(tmp_path, "--dry-run") == 0
    assert ("finetune/teacher/tinysent/chosen-seed2: to train" in capsys.readouterr().out)
    assert run(tmp_path) == 0, capsys.readouterr().err
    runs = tmp_path / "out" / "finetune" / "teacher" / "tinysent"
    assert ("fine-tuning runs", 3, 3) in progress(load_study(tmp_path / "study.yaml"), tmp_path / "out")
    assert sorted(p.name for p in runs.iterdir()) == ["chosen-seed2", "lr0.001-wu0.1-seed1", "lr1e-05-wu0.1-seed1"]
    cell = json.loads((tmp_path / "out" / "table.json").read_text())["rows"][0]["tasks"]["tinysent"]
    best = max(cell["settings"], key=lambda s: s["holdout"]["mean"])  # chosen on seed 1's held-out score alone
    assert all(s["seeds"] == [1] for s in cell["settings"])
    chosen = cell["chosen"]
    assert (chosen["lr"], chosen["warmup"], chosen["seeds"]) == (best["lr"], best["warmup"], [1, 2])
    assert RunDir(runs / "chosen-seed2").config().optim.lr == best["lr"]
    assert chosen["dev"]["n"] == 2 and chosen["dev"]["values"][1] == pytest.approx(
        task_score(RunDir(runs / "chosen-seed2").metrics()["tinysent"]))
    with pytest.raises(UserError, match=r"finetune.sweep_seeds must be some of finetune.seeds \[1, 2\]"):
        study_from_dict({"finetune": {"seeds": [1, 2], "sweep_seeds": [3]}})


def test_a_ticket_row_added_to_a_finished_study_is_cut_and_every_model_timed_again(tmp_path, capsys):
    study = tiny_study(tmp_path)
    study["finetune"].update(lrs=[1e-3], rows=["teacher", "extracted", "ticket"])
    (tmp_path / "study.yaml").write_text(yaml.safe_dump(study), encoding="utf-8")
    assert run(tmp_path) == 0, capsys.readouterr().err
    out = tmp_path / "out"
    before = json.loads((out / "latency.json").read_text())
    assert sorted(before["speedup"]) == ["extracted", "teacher", "ticket"] and not (out / "ticket_sized").exists()
    finished = {p: p.stat().st_mtime_ns for p in (out / "finetune").glob("*/*/*/results.json")}
    study["finetune"]["rows"].append("ticket_sized")
    (tmp_path / "study.yaml").write_text(yaml.safe_dump(study), encoding="utf-8")
    capsys.readouterr()
    assert run(tmp_path) == 0, capsys.readouterr().err
    printed = capsys.readouterr().out
    assert "lacks ticket_sized; timing every model again" in printed
    after = json.loads((out / "latency.json").read_text())
    assert sorted(after["speedup"]) == ["extracted", "teacher", "ticket", "ticket_sized"]
    assert {p: p.stat().st_mtime_ns for p in finished} == finished  # the finished runs were not trained again
    assert json.loads((out / "ticket_sized" / "ticket.json").read_text())["min_heads_per_layer"] == 0
    table = json.loads((out / "table.json").read_text())
    assert [r["row"] for r in table["rows"]] == ["teacher", "extracted", "ticket", "ticket_sized"]
    assert table["rows"][-1]["speedup"] and table["rows"][-1]["tasks"]["tinysent"]["chosen"] is not None
    assert "Ticket, no head minimum" in (out / "table.md").read_text()


def test_the_ticket_units_distilled_row(tmp_path, capsys):
    """``ticket_distilled``: the ticket row's units extracted (every layer and hidden dimension) and distilled as the
    distilled row is, timed as the ticket (its shape), judged against the same targets and against the ticket."""
    study = tiny_study(tmp_path)
    study["finetune"].update(lrs=[1e-3], rows=["teacher", "distilled", "ticket", "ticket_distilled"])
    (tmp_path / "study.yaml").write_text(yaml.safe_dump(study), encoding="utf-8")
    assert run(tmp_path, "--dry-run") == 0
    assert "distillation of the ticket's units (ticket_distilled): about" in capsys.readouterr().out
    assert run(tmp_path) == 0, capsys.readouterr().err
    out = tmp_path / "out"
    mask = load_mask(out / "ticket" / "mask.safetensors")
    info = read_student_info(out / "models" / "ticket_distilled")
    assert info["selection"]["heads"] == [r.nonzero().flatten().tolist() for r in mask.heads]
    assert info["selection"]["neurons"] == [r.nonzero().flatten().tolist() for r in mask.ffn]
    assert info["selection"]["layers"] == [0, 1, 2] and len(info["selection"]["dims"]) == 32
    assert info["distilled"] and info["steps"] == 6 and info["heldout"] < info["heldout_before"]
    log = [json.loads(line) for line in (out / "distill_ticket" / "log.jsonl").read_text().splitlines()]
    assert log[-1]["step"] == 6 and (out / "distill_ticket" / "curve.png").is_file()
    table = json.loads((out / "table.json").read_text())
    rows = {r["row"]: r for r in table["rows"]}
    assert list(rows) == ["teacher", "distilled", "ticket", "ticket_distilled"]
    assert rows["ticket_distilled"]["speedup"] == rows["ticket"]["speedup"]
    assert rows["ticket_distilled"]["model"] == rows["ticket"]["model"]
    assert rows["ticket_distilled"]["tasks"]["tinysent"]["chosen"] is not None
    whats = [c.what for c in judge(table)]
    assert "GLUE average, the ticket's units, extracted + distilled − teacher (paired over seeds)" in whats
    assert "GLUE average, the ticket's units, extracted + distilled − ticket" in whats
    assert "Ticket's units, extracted + distilled" in (out / "table.md").read_text()
    capsys.readouterr()
    assert run(tmp_path) == 0  # done: nothing is distilled or trained again
    assert "ticket_distilled: nothing to do" in capsys.readouterr().out
    held = out / "models" / "ticket_distilled" / "subarch.json"
    info = json.loads(held.read_text())
    info["selection"]["heads"][0] = info["selection"]["heads"][0][1:] or [0, 1]  # other units than the mask's
    held.write_text(json.dumps(info))
    with pytest.raises(UserError, match="holds other units than the ticket's mask"):
        subarch.ticket_distilled_step(study_from_dict(study))
    with pytest.raises(UserError, match="ticket_distilled distils the ticket row's units; add ticket to the rows"):
        study_from_dict({**study, "finetune": {**study["finetune"], "rows": ["teacher", "ticket_distilled"]}})
    assert study_from_dict({**study, "ticket": {}}).rows() == ["teacher", "distilled"]  # no ticket, no distilled ticket


def test_dry_run_prints_the_plan_and_the_search_cost(tmp_path, capsys):
    tiny_study(tmp_path)
    assert run(tmp_path, "--dry-run") == 0
    printed = capsys.readouterr().out
    assert "search: 4 of 4 candidates' errors and 4 timings to measure" in printed
    assert "candidates/D1-A1-H8-I8/error: step (worker) ~" in printed
    assert "candidates/D1-A1-H8-I8/latency: step (worker) ~" in printed
    assert re.search(r"models/distilled: step \(worker\) ~\d+m\d\ds \(resumable\)", printed), printed
    assert "finetune/distilled/tinysent/lr0.001-wu0.1-seed1: to train" in printed
    assert "finetune/ticket/tinysent/lr1e-05-wu0.1-seed1: to train" in printed
    assert not (tmp_path / "out" / "scores.safetensors").exists()
    assert SubArch.parse(CANDIDATES[0]).depth == 1
    # an interrupted pre-training: the plan counts the steps left after its checkpoint (step 4 of 6), not all 6
    args = (load_study(tmp_path / "study.yaml"), [SubArch.parse(c) for c in CANDIDATES], EncoderShape(3, 4, 8, 32, 37))
    whole = subarch.StepCosts.of(*args)
    distill = tmp_path / "out" / "distill"
    distill.mkdir(parents=True)
    (distill / "log.jsonl").write_text("".join(f'{{"step": {k}, "loss": 1.0}}\n' for k in (2, 4, 5)))
    assert subarch.StepCosts.of(*args).pretrain == whole.pretrain  # a log without a checkpoint: from the start
    (distill / "checkpoint.pt").write_bytes(b"")
    resumed = subarch.StepCosts.of(*args)
    assert resumed.pretrain_resumed == 4 and resumed.pretrain == pytest.approx(whole.pretrain * 2 / 6)
    assert "distillation pre-training: 6 steps of batch 8, 4 done (its checkpoint), " in "\n".join(
        resumed.lines(load_study(tmp_path / "study.yaml")))


def test_the_shipped_studies_load():
    minilm = EncoderShape(6, 12, 32, 384, 1536)
    full = load_study(REPO / "experiments" / "subarch.yaml")
    assert len(full.search.archs(minilm)) == full.search.size() == 256 and full.select.max_encoder_share == 0.5
    jobs = subarch.study_jobs(full, full.search.archs(minilm), threads=1)
    assert sum(j.name.startswith("finetune/") for j in jobs) == 150 == dict(
        (s, n) for s, _, n in progress(full, full.out))["fine-tuning runs"]
    sampled = study_from_dict({"search": {"sample": 10}})
    assert sampled.search.size() == len(sampled.search.archs(minilm)) == 10
    assert full.rows() == ["teacher", "distilled", "extracted", "ticket", "ticket_sized"] and full.distill.steps == 20000
    deep = load_study(REPO / "experiments" / "subarch_deep.yaml")  # the deeper choice: one candidate, the same protocol
    assert [a.name for a in deep.search.archs(minilm)] == ["D6-A4-H384-I768"] and deep.out != full.out
    same_rows = dataclasses.replace(full.finetune, rows=["teacher", "distilled", "extracted", "ticket"])
    assert (deep.finetune, deep.distill, deep.select, deep.ticket) == (same_rows, full.distill, full.select, full.ticket)
    demo = load_study(REPO / "experiments" / "subarch_demo.yaml")
    assert len(demo.search.archs(minilm)) == demo.search.size() == 6 and demo.finetune.tasks == ["rte", "mrpc"]
    for path in demo.ticket.importance.values():
        assert (REPO / path).is_file()


def test_a_chosen_seed_run_waits_for_its_model_even_when_its_sweep_is_restored():
    study = study_from_dict({"search": {"candidates": CANDIDATES},
                             "finetune": {"tasks": ["rte"], "seeds": [1, 2], "sweep_seeds": [1]}})
    jobs = {j.name: j for j in subarch.study_jobs(study, [SubArch.parse(c) for c in CANDIDATES], 1)}
    assert "models/distilled" in jobs["finetune/distilled/rte/chosen-seed2"].deps
    assert not any(d.startswith("models/") for d in jobs["finetune/teacher/rte/chosen-seed2"].deps)
    # the timing waits for no distillation: the extracted model stands for the chosen shape
    assert "models/distilled" not in jobs["latency"].deps and "models/extracted" in jobs["latency"].deps
    assert timed_as("distilled", {"teacher": {}, "extracted": {}}) == "extracted"
    assert timed_as("extracted", {"teacher": {}, "distilled": {}}) == "distilled"  # a table timed before the change
    assert timed_rows(["teacher", "extracted", "ticket_sized", "ticket"]) == ["extracted", "ticket", "ticket_sized"]
    assert timed_rows(["teacher", "distilled", "ticket"]) == ["distilled", "ticket"]  # no extracted row: the distilled


def test_fine_tuning_jobs_are_ordered_row_by_row():
    """The scheduler starts ready jobs in the order they were added: a row's seeds that run only the chosen
    setting come before the next row's sweep, so a study cut short (a time limit, a session's end) has whole rows."""
    study = study_from_dict({"search": {"candidates": CANDIDATES},
                             "finetune": {"tasks": ["rte", "mrpc"], "seeds": [1, 2, 3], "sweep_seeds": [1],
                                          "rows": ["teacher", "distilled", "extracted"]}})
    names = [j.name for j in subarch.study_jobs(study, [SubArch.parse(c) for c in CANDIDATES], 1)
             if j.name.startswith("finetune/")]
    rows = [n.split("/")[1] for n in names]
    assert rows == sorted(rows, key=["teacher", "distilled", "extracted"].index) and len(names) == 3 * 2 * (4 + 2)
    distilled = [n for n in names if n.startswith("finetune/distilled/")]
    assert [n.rsplit("/", 1)[1] for n in distilled[-4:]] == ["chosen-seed2", "chosen-seed3"] * 2


def test_a_search_on_a_reference_task_of_the_bare_extractions(tmp_path):
    """``search.distill.steps: 0`` with ``select.error: task``: every candidate is extracted (its held-out loss
    measured, not distilled), saved and fine-tuned on the reference task; the error is 100 minus that run's dev
    score, and the choice with weights (0, 0, 1) is the eligible candidate with the lowest one."""
    study = tiny_study(tmp_path)
    train = {k: study["finetune"]["train"][k] for k in ("task_def", "batch_size", "max_seq_length", "precision",
                                                         "cache_dir")}
    study["search"]["distill"] = {"steps": 0, "batch_size": 8}
    study["search"]["reference_task"] = {"task": "tinysent", "train": {**train, "max_steps": 4, "lr": 1e-3}}
    study["select"] = {"error": "task", "weights": {"params": 0, "cost": 0, "error": 1}, "max_encoder_share": 0.7}
    (tmp_path / "study.yaml").write_text(yaml.safe_dump(study), encoding="utf-8")
    assert run(tmp_path, "--only", "select") == 0
    out = tmp_path / "out"
    assert json.loads((out / "teacher_cache" / "cache.json").read_text())["batches"] == {"train": 0, "heldout": 1}
    search = json.loads((out / "search.json").read_text())
    errors = {}
    for c in search["candidates"]:
        assert c["error"]["steps"] == 0 and c["error"]["heldout"] == c["error"]["heldout_before"]
        reference = RunDir(out / "candidates" / c["name"] / "reference")
        assert reference.finished and reference.config().model.name == str(out / "candidates" / c["name"] / "model")
        errors[c["name"]] = 100.0 - task_score(reference.metrics()["tinysent"])
        assert c["objectives"]["error"] == pytest.approx(errors[c["name"]])
    eligible = [c["name"] for c in search["candidates"] if c["encoder_share"] <= 0.7]
    assert search["chosen"] == min(eligible, key=lambda n: (errors[n], n))
    assert not (out / "distill").exists()  # the search alone: nothing after the choice ran
    md = (out / "search.md").read_text()
    assert "error: 100 - the tinysent dev score (the mean of its metrics) after a fine-tune of each candidate's " \
           "bare extraction (no distillation), seed 1, batch_size 8, lr 0.001, max_seq_length 32, max_steps 4" in md
    rows = {line.split(" | ")[1].split(" ")[0]: line.split(" | ")[-1].rstrip(" |") for line in md.splitlines()
            if line.startswith("| ") and line.split(" | ")[1][:1] == "D"}
    assert md.count("| reference dev score |") == 1
    assert rows == {name: f"{100.0 - e:.1f}" for name, e in errors.items()}


def test_the_reference_grid_keeps_the_best_score_of_each_depth_and_head_count():
    report = {"select": {"error": "task"}, "candidates": [
        {"name": n, "objectives": {"error": e}} for n, e in
        (("D2-A4-H8-I8", 90.0), ("D2-A4-H16-I8", 70.0), ("D2-A8-H8-I8", 80.0), ("D3-A8-H8-I8", 40.0))]}
    assert reference_grid(report) == [
        "| layers \\ heads per layer | 4 | 8 |", "|---|---:|---:|",
        "| 2 | 30.0 (D2-A4-H16-I8, best of 2) | 20.0 (D2-A8-H8-I8, best of 1) |",
        "| 3 |  | 60.0 (D3-A8-H8-I8, best of 1) |"]
    with pytest.raises(UserError, match="not a reference task's"):
        reference_grid({**report, "select": {"error": "distill"}})


def test_units_chosen_by_the_tasks_importance(tmp_path):
    """``scoring.units: tasks``: the scores file ranks heads and neurons by the ticket's importance files (the
    output sensitivity still ranks layers and hidden dimensions); scores made the other way are refused."""
    study = tiny_study(tmp_path, scoring={"batches": 2, "batch_size": 8, "units": "tasks"})
    assert run(tmp_path, "--only", "scores") == 0
    out = tmp_path / "out"
    scores = load_scores(out / "scores.safetensors")
    expect = with_task_units(scores, {"tinysent": load_importance(tmp_path / "imp.safetensors")})
    assert torch.equal(scores.heads, expect.heads) and torch.equal(scores.ffn, expect.ffn)
    assert scores.meta["units"] == "tasks: tinysent" and json.loads((out / "scores.json").read_text())["units"] == \
        "tasks: tinysent"
    output = tiny_study(tmp_path / "plain")
    assert run(tmp_path / "plain", "--only", "scores") == 0
    plain = load_scores(tmp_path / "plain" / "out" / "scores.safetensors")
    assert torch.equal(scores.layers, plain.layers) and torch.equal(scores.hidden, plain.hidden)
    assert not torch.equal(scores.heads, plain.heads)
    with pytest.raises(UserError, match="ranks heads and neurons by tasks: tinysent, the study by output; delete it"):
        score_step(study_from_dict({**output, "output_dir": str(out)}))
    with pytest.raises(UserError, match="scoring.units tasks needs importance files"):
        study_from_dict({"scoring": {"units": "tasks"}})
    with pytest.raises(UserError, match="unknown unit scores 'task'"):
        study_from_dict({"scoring": {"units": "task"}})
    assert study_from_dict({**study, "scoring": {"units": "tasks", "importance": {"x": "x.st"}}}).unit_importance() \
        == {"x": "x.st"}


def test_weighted_task_units(tmp_path):
    """``scoring.weights``: the score step weighs each task's importance as :func:`with_task_units` does, and a
    scores file weighed otherwise is refused; weights need ``units: tasks`` and name tasks with importance."""
    study = tiny_study(tmp_path, scoring={"batches": 2, "batch_size": 8, "units": "tasks", "weights": {"tinysent": 2}})
    assert run(tmp_path, "--only", "scores") == 0
    out = tmp_path / "out"
    scores = load_scores(out / "scores.safetensors")
    expect = with_task_units(scores, {"tinysent": load_importance(tmp_path / "imp.safetensors")}, {"tinysent": 2.0})
    assert torch.equal(scores.heads, expect.heads) and torch.equal(scores.ffn, expect.ffn)
    assert scores.meta["units"] == "tasks: tinysent (weights tinysent 2)"
    unweighted = {**study, "scoring": {**study["scoring"], "weights": {}}, "output_dir": str(out)}
    with pytest.raises(UserError, match=r"ranks heads and neurons by tasks: tinysent \(weights tinysent 2\), the "
                                        "study by tasks: tinysent; delete it"):
        score_step(study_from_dict(unweighted))
    with pytest.raises(UserError, match="scoring.weights weighs the tasks' importance: it needs scoring.units: tasks"):
        study_from_dict({"scoring": {"weights": {"x": 2}}})
    with pytest.raises(UserError, match="scoring.weights names y, which has no importance file"):
        study_from_dict({**study, "scoring": {"units": "tasks", "importance": {"x": "x.st"}, "weights": {"y": 2}}})
    with pytest.raises(UserError, match="scoring.weights must be numbers >= 0"):
        study_from_dict({**study, "scoring": {"units": "tasks", "weights": {"tinysent": -1}}})
