"""The search steps of a sub-architecture study: score the teacher, measure every candidate, select.

Each step is a module-level function the study engine runs (:mod:`experiments.subarch`); each writes its
files under the study's output folder and does nothing when they are already there, so a search that
stops (or is killed) resumes with the candidates it has not measured yet.

- :func:`score_step`: the teacher's layer, head, neuron and hidden-dimension scores
  (:func:`masks.subarch_importance.score_subarch`) on ``scoring.batches`` batches of the corpus;
- :func:`teacher_cache_step`: the teacher's outputs on the candidates' distillation and held-out batches, computed
  once (:mod:`mtl.teacher_cache`; ``search.teacher_cache``), which every candidate then reads instead of running
  the teacher: the same losses, about half the search's operations on MiniLM's grid;
- :func:`candidate_latency_step` and :func:`candidate_error_step`: one candidate in two parts, which may run on
  different machines (``--only 'candidates/*/error'`` on a GPU machine, ``--only 'candidates/*/latency'`` on the
  deployment CPU): its units (:func:`masks.subarch.select`), its parameters and operations per token
  (:mod:`masks.cost`) and its measured latency against the teacher's (paired, at each batch size); and its error
  surrogate, the distillation loss on the held-out text after ``search.distill.steps`` steps of distillation from
  the teacher (before: the loss of the bare extraction); :func:`write_record` joins them in ``candidates/NAME.json``;
- :func:`select_step`: the Pareto frontier over (encoder parameters, cost, error), the W ranking
  (:mod:`experiments.pareto`), the constraints, the choice; ``search.json`` / ``search.md`` /
  ``frontier.png`` / ``chosen.json``.
"""

from __future__ import annotations

import statistics
import time
from pathlib import Path
from typing import Any

import torch

from basics.errors import UserError
from basics.io import atomic_write_json, atomic_write_text
from experiments.pareto import plot_frontier, rank
from experiments.subarch_config import SubarchStudy
from experiments.subarch_files import StudyFiles, read_json, study_texts
from masks.arch import shape_of
from masks.cost import EncoderSize, measure_latency, ops_per_token, param_counts, torch_threads
from masks.importance import load_importance
from masks.subarch import Selection, SubArch, select
from masks.subarch_importance import (
    describe,
    load_scores,
    save_scores,
    score_subarch,
    task_units_label,
    with_task_units,
)
from mtl.corpus import BatchStream, TokenizedCorpus, subsample
from mtl.distill import Distiller, objective_for
from mtl.distributed import pick_device
from mtl.rundir import RunDir
from mtl.teacher import load_teacher, make_student, save_student
from mtl.teacher_cache import open_teacher_cache, write_teacher_cache
from tasks.score import task_score


def score_step(study: SubarchStudy, threads: int | None = 1) -> None:
    files = StudyFiles(study.out)
    s = study.scoring
    units = "output" if s.units == "output" else task_units_label(study.unit_importance(), s.weights)
    if files.scores.is_file():
        made = load_scores(files.scores).meta.get("units", "output")
        if made != units:
            raise UserError(f"{files.scores} ranks heads and neurons by {made}, the study by {units}; delete it "
                            "(and the candidates measured with it) or use another output directory")
        print(f"scores: {files.scores} exists", flush=True)
        return
    with torch_threads(threads):
        teacher = load_teacher(study.teacher)
        train, _ = study_texts(study)
        texts = subsample(train, s.batches * s.batch_size, s.seed)
        corpus = TokenizedCorpus.of(teacher.tokenizer, texts, study.corpus.max_seq_length)
        stream = iter(BatchStream(corpus, min(s.batch_size, len(corpus)), s.seed))
        batches = [next(stream) for _ in range(max(1, min(s.batches, len(corpus) // s.batch_size)))]
        scores = score_subarch(teacher.encoder, batches, seed=s.seed)
        if s.units == "tasks":
            shape = shape_of(teacher.encoder)
            scores = with_task_units(scores, {task: load_importance(path, expect_shape=shape)
                                              for task, path in study.unit_importance().items()}, s.weights)
    scores.meta["teacher"] = study.teacher
    save_scores(scores, files.scores)
    atomic_write_json(files.scores_json, {"teacher": study.teacher, "batches": len(batches), "units": units,
                                          **describe(scores)})
    print(f"scores: layers {describe(scores)['layers']}", flush=True)


def measure(models: dict, lat, threads: int | None) -> dict[str, Any]:
    """CPU latency of ``models`` (``lat``: a :class:`LatencySpec`), and under ``"gpu"`` the same on the GPU when
    there is one (the models are moved there and back)."""
    out = measure_latency(models, lat.batch_sizes, lat.seq_len, lat.rounds, lat.calls(), reference="teacher",
                          threads=threads)
    if torch.cuda.is_available():
        for model in models.values():
            model.to("cuda")
        out["gpu"] = measure_latency(models, lat.batch_sizes, lat.seq_len, lat.rounds, lat.calls(), reference="teacher",
                                     threads=None)
        for model in models.values():
            model.to("cpu")
    return out


def selection_of(study: SubarchStudy, arch: SubArch, teacher) -> Selection:
    scores = load_scores(StudyFiles(study.out).scores, shape_of(teacher.encoder))
    return select(scores, arch, study.search.layers)


def encoder_costs(size: EncoderSize, seq_len: int) -> dict[str, Any]:
    counts = param_counts(size)
    return {"params": counts, "ops_per_token": ops_per_token(size, seq_len),
            "arch": {"depth": size.depth, "heads": list(size.heads), "hidden": size.hidden, "ffn": list(size.ffn),
                     "head_dim": size.head_dim}}


def search_corpora(study: SubarchStudy, tokenizer) -> tuple[TokenizedCorpus, TokenizedCorpus]:
    """The texts every candidate is distilled on (``search.distill.steps`` batches' worth) and the held-out texts,
    tokenized: the same for every candidate, so the teacher's outputs on them can be cached."""
    train, heldout = study_texts(study)
    d, length = study.search.distill, study.corpus.max_seq_length
    needed = subsample(train, d.steps * d.batch_size, study.corpus.seed)
    return TokenizedCorpus.of(tokenizer, needed, length), TokenizedCorpus.of(tokenizer, heldout, length)


def uses_teacher_cache(study: SubarchStudy, teacher) -> bool:
    """Whether the candidates read the teacher cache: asked for, and the objective is ``hidden`` (the ``mlm``
    objective's teacher logits depend on each step's random masking)."""
    return study.search.teacher_cache and objective_for(study.search.distill, teacher) == "hidden"


def teacher_cache_step(study: SubarchStudy, names: list[str], threads: int | None = 1) -> None:
    """Run the teacher once on the candidates' batches (:mod:`mtl.teacher_cache`), unless every candidate is measured."""
    files = StudyFiles(study.out)
    if all(files.candidate_json(n).is_file() for n in names):
        print("teacher cache: every candidate is measured; not needed", flush=True)
        return
    with torch_threads(threads):
        teacher = load_teacher(study.teacher)
        if not uses_teacher_cache(study, teacher):
            print("teacher cache: not used (search.teacher_cache false, or the mlm objective)", flush=True)
            return
        train, heldout = search_corpora(study, teacher.tokenizer)
        start = time.perf_counter()
        write_teacher_cache(teacher, train, heldout, study.search.distill, files.teacher_cache,
                            say=lambda line: print(line, flush=True))
    size = sum(f.stat().st_size for f in files.teacher_cache.iterdir()) / 2**30
    print(f"teacher cache: {files.teacher_cache} ({size:.1f} GiB, {time.perf_counter() - start:.0f} s)", flush=True)


def candidate_latency_step(study: SubarchStudy, name: str, threads: int | None = 1) -> None:
    """The candidate's part measured where the study runs (the deployment CPU): its units, parameters and operations
    per token, and its latency against the teacher's; ``candidates/NAME/latency.json``, then the record if its
    error is there too."""
    files = StudyFiles(study.out)
    if files.candidate_json(name).is_file() or files.candidate_latency(name).is_file():
        print(f"{name}: latency measured before", flush=True)
        write_record(study, name)
        return
    arch, lat = SubArch.parse(name), study.search.latency
    with torch_threads(threads):
        teacher = load_teacher(study.teacher)
        selection = selection_of(study, arch, teacher)
        student = make_student(teacher, selection, {"search": study.name})
        latency = measure({"teacher": teacher.encoder, "candidate": student.encoder}, lat, threads)
        teacher_costs = encoder_costs(EncoderSize.of(teacher.encoder), lat.seq_len)
    costs = encoder_costs(EncoderSize.of(student.encoder), lat.seq_len)
    atomic_write_json(files.candidate_latency(name), {
        "name": name, "arch": {"depth": arch.depth, "heads": arch.heads, "hidden": arch.hidden, "ffn": arch.ffn},
        "layers_kept": list(selection.layers), **costs, "teacher": teacher_costs,
        "encoder_share": costs["params"]["layers"] / teacher_costs["params"]["layers"],
        "ops_ratio": costs["ops_per_token"] / teacher_costs["ops_per_token"], "latency": latency})
    write_record(study, name)


def candidate_error_step(study: SubarchStudy, name: str, threads: int | None = 1) -> None:
    """The candidate's error surrogate: the distillation loss on the held-out text after ``search.distill.steps``
    steps of distillation from the teacher (before: the loss of the bare extraction), on the GPU when there is
    one; ``candidates/NAME/distill.json``, then the record if its latency is there too."""
    files = StudyFiles(study.out)
    if files.candidate_json(name).is_file() or files.candidate_distill(name).is_file():
        print(f"{name}: error measured before", flush=True)
        write_record(study, name)
        return
    search = study.search
    with torch_threads(threads):
        teacher = load_teacher(study.teacher)
        student = make_student(teacher, selection_of(study, SubArch.parse(name), teacher), {"search": study.name})
        train, heldout = search_corpora(study, teacher.tokenizer)
        cache = open_teacher_cache(files.teacher_cache) if uses_teacher_cache(study, teacher) else None
        Distiller(teacher, student, train, heldout, search.distill, files.candidate_dir(name),
                  say=lambda line: print(line, flush=True), device=pick_device("auto"), teacher_cache=cache).run()
        if search.reference_task is not None:
            save_student(student, teacher.tokenizer, files.candidate_dir(name) / "model", {"candidate": name})
    write_record(study, name)


def write_record(study: SubarchStudy, name: str) -> bool:
    """``candidates/NAME.json`` from the candidate's two parts (:func:`candidate_latency_step`,
    :func:`candidate_error_step`) once both are there; whether it is there now."""
    files = StudyFiles(study.out)
    target = files.candidate_json(name)
    if target.is_file():
        return True
    if not (files.candidate_latency(name).is_file() and files.candidate_distill(name).is_file()):
        return False
    distilled = read_json(files.candidate_distill(name))
    record = {**read_json(files.candidate_latency(name)),
              "error": {"heldout_before": distilled["heldout_before"]["loss"], "heldout": distilled["heldout"]["loss"],
                        "parts": distilled["heldout"], "steps": distilled["steps"],
                        "seconds": distilled["train_seconds"], "device": distilled.get("device", "cpu")}}
    atomic_write_json(target, record)
    print(f"{name}: encoder share {record['encoder_share']:.3f}, ops {record['ops_ratio']:.3f} of the teacher's, "
          f"held-out loss {record['error']['heldout_before']:.4f} -> {record['error']['heldout']:.4f}", flush=True)
    return True


# ---------------------------------------------------------------- selection


def cost_of(record: dict, axis: str) -> float:
    if axis == "ops":
        return float(record["ops_per_token"])
    batch = axis.split("_b")[1]
    seconds = record["latency"]["seconds"]["candidate"]
    if batch not in seconds:
        raise UserError(f"select.cost {axis}: the search measured latency at batch sizes {sorted(seconds)} only")
    return float(seconds[batch])


def error_of(record: dict, study: SubarchStudy) -> float:
    if study.select.error == "distill":
        return float(record["error"]["heldout"])
    run = RunDir(StudyFiles(study.out).reference_run(record["name"]))
    if not run.finished:
        raise UserError(f"select.error task: the reference run of {record['name']} did not finish ({run.path})")
    task = study.search.reference_task["task"]
    return 100.0 - task_score(run.metrics()[task])


def largest_speedup(record: dict) -> float:
    speedup = record["latency"]["speedup"]["candidate"]
    return float(speedup[max(speedup, key=int)])


def eligible(record: dict, study: SubarchStudy) -> bool:
    s = study.select
    if s.max_encoder_share is not None and record["encoder_share"] > s.max_encoder_share + 1e-12:
        return False
    return s.min_speedup is None or largest_speedup(record) >= s.min_speedup


def select_step(study: SubarchStudy, names: list[str]) -> None:
    files = StudyFiles(study.out)
    missing = [n for n in names if not files.candidate_json(n).is_file()]
    if missing:  # --report-only on an unfinished search
        print(f"select: {len(missing)} candidate(s) not measured yet, left out: {', '.join(missing)}", flush=True)
    records = [read_json(files.candidate_json(n)) for n in names if n not in missing]
    if not records:
        raise UserError("no candidate has been measured yet; run the search first")
    for r in records:
        r["objectives"] = {"params": r["params"]["layers"], "cost": cost_of(r, study.select.cost),
                           "error": error_of(r, study)}
    w = study.select.weights
    ranking = rank([r["name"] for r in records], [tuple(r["objectives"].values()) for r in records],
                   (w["params"], w["cost"], w["error"]))
    by_name = {r["name"]: r for r in records}
    for item in ranking:
        by_name[item["name"]].update(w=item["w"], rank=item["rank"], frontier=item["frontier"],
                                     eligible=eligible(by_name[item["name"]], study))
    chosen = study.select.arch or next((i["name"] for i in ranking if by_name[i["name"]]["eligible"]), None)
    if chosen is None:
        raise UserError("no candidate meets select.max_encoder_share / select.min_speedup; relax them or widen the grid")
    if chosen not in by_name:
        raise UserError(f"select.arch {chosen} is not among the searched candidates")
    ordered = [by_name[i["name"]] for i in ranking]
    report = {"chosen": chosen, "select": vars(study.select), "candidates": ordered,
              "frontier": [r["name"] for r in ordered if r["frontier"]], "missing": missing}
    atomic_write_json(files.search_json, report)
    atomic_write_text(files.search_md, search_markdown(report, study))
    plot_frontier([{"name": r["name"], "params": r["objectives"]["params"], "cost": r["objectives"]["cost"],
                    "error": r["objectives"]["error"], "frontier": r["frontier"]} for r in ordered],
                  files.frontier_png, COST_LABELS[study.select.cost] + (" (millions)" if study.select.cost == "ops" else ""),
                  ERROR_LABELS[study.select.error], chosen, cost_scale=1e6 if study.select.cost == "ops" else 1.0)
    pick = by_name[chosen]
    atomic_write_json(files.chosen, {"arch": chosen, "layers_kept": pick["layers_kept"], "params": pick["params"],
                                     "encoder_share": pick["encoder_share"]})
    print(f"select: {chosen} (W {pick['w']:.3f}, rank {pick['rank']} of {len(ordered)}; "
          f"{len(report['frontier'])} on the frontier)", flush=True)


COST_LABELS = {"ops": "operations per token", "latency_b1": "seconds per call, batch 1",
               "latency_b32": "seconds per call, batch 32"}
ERROR_LABELS = {"distill": "held-out distillation loss", "task": "100 - reference task dev score"}


def error_label(study: SubarchStudy) -> str:
    """What the search's error objective is, in words, with its protocol."""
    steps = study.search.distill.steps
    if study.select.error == "distill":
        return f"{ERROR_LABELS['distill']} " + (f"after {steps} distillation steps" if steps
                                                else "of the bare extraction (no distillation)")
    ref = study.search.reference_task
    options = ", ".join(f"{k} {v}" for k, v in sorted((ref.get("train") or {}).items()) if k not in ("task_def",
                                                                                                     "cache_dir"))
    start = f"each candidate after {steps} distillation steps" if steps else \
        "each candidate's bare extraction (no distillation)"
    return (f"100 - the {ref['task']} dev score (the mean of its metrics) after a fine-tune of {start}, seed 1"
            f"{', ' + options if options else ''}")


def search_table(report: dict) -> list[str]:
    """The candidates of ``search.json`` as a markdown table, best W first."""
    sizes = sorted({b for r in report["candidates"] for b in r["latency"]["speedup"]["candidate"]}, key=int)
    task = report["select"]["error"] == "task"  # the error is 100 - the reference run's dev score: show that score
    head = ["rank", "candidate", "W", "frontier", "layers kept", "encoder params (M)", "share", "ops/token (M)",
            *(f"speed-up b{b}" for b in sizes), "loss before", "loss after", *(["reference dev score"] if task else [])]
    lines = ["| " + " | ".join(head) + " |", "|" + "---:|" * len(head)]
    for r in report["candidates"]:
        speed = r["latency"]["speedup"]["candidate"]
        label = r["name"] + (" (chosen)" if r["name"] == report["chosen"] else "") + \
            (" (the teacher)" if r["arch"] == r["teacher"]["arch"] else "")
        cells = [str(r["rank"]), label, f"{r['w']:.3f}",
                 "yes" if r["frontier"] else "", ",".join(map(str, r["layers_kept"])),
                 f"{r['params']['layers'] / 1e6:.2f}", f"{r['encoder_share']:.2f}", f"{r['ops_per_token'] / 1e6:.2f}",
                 *(f"{speed[b]:.2f}×" for b in sizes), f"{r['error']['heldout_before']:.4f}", f"{r['error']['heldout']:.4f}",
                 *([f"{100.0 - r['objectives']['error']:.1f}"] if task else [])]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def reference_grid(report: dict) -> list[str]:
    """For a search on a reference task: the best reference dev score of each depth (rows) and head count (columns)
    over the hidden and FFN sizes searched, with that candidate and how many there were."""
    if report["select"]["error"] != "task":
        raise UserError("the search's error is not a reference task's (select.error: task)")
    best: dict[tuple[int, int], tuple[float, str, int]] = {}
    for r in report["candidates"]:
        arch = SubArch.parse(r["name"])
        score = 100.0 - r["objectives"]["error"]
        top, name, n = best.get((arch.depth, arch.heads), (float("-inf"), "", 0))
        best[(arch.depth, arch.heads)] = (score, r["name"], n + 1) if score > top else (top, name, n + 1)
    depths, heads = sorted({d for d, _ in best}), sorted({a for _, a in best})
    lines = ["| layers \\ heads per layer | " + " | ".join(map(str, heads)) + " |", "|---|" + "---:|" * len(heads)]
    for d in depths:
        cells = [f"{best[(d, a)][0]:.1f} ({best[(d, a)][1]}, best of {best[(d, a)][2]})" if (d, a) in best else ""
                 for a in heads]
        lines.append(f"| {d} | " + " | ".join(cells) + " |")
    return lines


def search_markdown(report: dict, study: SubarchStudy) -> str:
    seconds = [r["error"]["seconds"] for r in report["candidates"]]
    lines = [f"# Sub-architecture search: {study.name} (teacher {study.teacher})", "",
             f"Chosen: **{report['chosen']}**. Cost axis: {COST_LABELS[study.select.cost]}; error: "
             f"{error_label(study)}. "
             f"W: closeness to the utopia point of the min-max normalised (params, cost, error), weights "
             f"{study.select.weights} (experiments/pareto.py: our stand-in for Bort's W-coefficient).", "",
             *search_table(report),
             "", f"Speed-ups: paired median against the teacher, measured in each candidate's job "
             f"({study.search.latency.seq_len} tokens, {study.search.latency.rounds} rounds). "
             f"Distillation per candidate: median {statistics.median(seconds):.0f} s.", ""]
    return "\n".join(lines)


def scores_table(scores: dict) -> list[str]:
    """The per-layer teacher scores of ``scores.json`` as a markdown table (layer importance, head and FFN
    importance summed over the layer)."""
    layers = range(len(scores["layers"]))
    rows = [("layer importance (relative output change when skipped)", scores["layers"], "{:.2f}"),
            ("head importance, summed over the layer's heads and the scoring batches", scores["heads_per_layer"], "{:.2f}"),
            ("FFN neuron importance, summed over the layer's neurons and the scoring batches", scores["ffn_per_layer"], "{:.1f}")]
    lines = ["| layer | " + " | ".join(map(str, layers)) + " |", "|---|" + "---:|" * len(layers)]
    lines += [f"| {what} | " + " | ".join(form.format(v) for v in values) + " |" for what, values, form in rows]
    return lines


def chosen_arch(study: SubarchStudy) -> SubArch:
    """The architecture ``select_step`` chose (UserError before it ran)."""
    path = StudyFiles(study.out).chosen
    if not Path(path).is_file():
        raise UserError(f"no chosen architecture yet ({path}); the search has not finished")
    return SubArch.parse(read_json(path)["arch"])
