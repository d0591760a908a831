"""Bort-style optimal sub-architecture extraction: search depth, heads, hidden size and FFN size of a teacher
on measured cost, distil the chosen one, fine-tune it and compare it with the teacher and a same-size ticket.

    python -m experiments.subarch STUDY.yaml [--output-dir DIR] [--glue-dir DIR] [--report-only]
        [--jobs N] [--threads-per-run N] [--backend local|ray|inline] [--results-dir DIR] [--dry-run]

The study (:mod:`experiments.subarch_config`, e.g. ``experiments/subarch.yaml``) runs on the study engine
(:mod:`experiments.engine`) as one job graph:

1. ``scores``: score the teacher's layers, heads, FFN neurons and hidden dimensions on the corpus;
2. ``candidates/D…-A…-H…-I…/latency`` and ``…/error``: per candidate of the grid, extract it from the teacher's
   weights; count its parameters and operations and time it against the teacher (``latency``, on the CPU); distil
   it briefly and measure the held-out distillation loss (``error``, the error surrogate, on the GPU when there is
   one); optionally ``…/reference``: a short fine-tune on one task. The two parts may run on different machines
   (``--only``: see docs/subarch.md);
3. ``select``: Pareto frontier over (parameters, cost, error), W ranking, constraints, the choice;
4. ``models/extracted``, ``models/distilled`` (distillation pre-training on the corpus), ``models/ticket``
   (a compacted union of winning tickets cut to the same encoder parameter count) and ``models/ticket_sized``
   (the same with no head minimum per layer, which can reach that count);
5. ``finetune/ROW/TASK/lr…-wu…-seed…``: ``train.py --model DIR`` runs over the sweep (seeds × lr × warm-up);
   with ``finetune.sweep_seeds``, the sweep runs on those seeds and ``finetune/ROW/TASK/chosen-seed…`` runs the
   other seeds at the setting chosen from them (a deferred job of the engine: its config is chosen when the
   sweep has finished);
6. ``latency``: the table's speed measurement; ``table``: the Bort-style table (``table.md``).

Every step skips what is already done, so running the command again resumes the study (an interrupted
distillation continues from its checkpoint). ``--dry-run`` prints the graph and the estimated cost.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

import torch
import yaml

from basics.errors import UserError
from experiments.engine.jobs import Job
from experiments.engine.options import EngineOptions, results_dir, run_study_graph, yaml_study_main
from experiments.study_config import train_config
from experiments.subarch_config import TICKET_ROWS, SubarchStudy, load_study, study_to_dict, timed_rows
from experiments.subarch_files import StudyFiles, read_json
from experiments.subarch_models import distilled_step, extracted_step, latency_step, ticket_distilled_step, ticket_step
from experiments.subarch_search import (
    candidate_error_step,
    candidate_latency_step,
    score_step,
    select_step,
    teacher_cache_step,
)
from experiments.subarch_table import chosen_setting, sweep, table_step
from masks.cost import EncoderSize, ops_per_token, param_counts
from masks.subarch import SubArch
from mtl.config import TrainConfig
from mtl.distill import DistillConfig, resume_step
from mtl.teacher import teacher_shape
from mtl.trainer import autocast_dtype

MODEL_ROWS = ("extracted", "distilled", *TICKET_ROWS, "ticket_distilled")
DISTILL_OUTPUTS = ("log.jsonl", "distill.json", "curve.png")  # a distillation's files the results folder keeps
MODEL_STEPS = {"extracted": extracted_step, "distilled": distilled_step, **{row: ticket_step for row in TICKET_ROWS},
               "ticket_distilled": ticket_distilled_step}
# Seconds of one distillation step on one core, per sequence of the batch: a + b x (millions of operations per
# token of the teacher, unless its outputs are cached, + 3 x the student's; ops counted at 32 tokens), on GLUE
# sentences (about 15 tokens on average), by precision: a least-squares fit of the eight rows (four
# sub-architectures, with and without the teacher cache) of experiments/results/bench_distill.md (MiniLM teacher,
# one thread, the other core idle; each row within -15 % / +31 % of the fit), rounded up.
DISTILL_RATE = {"fp32": (0.0055, 0.00085), "bf16": (0.0066, 0.00045)}


def distill_rate(config: DistillConfig) -> tuple[float, float]:
    """:data:`DISTILL_RATE` for ``config``'s precision on this machine's CPU (``auto``: bf16 where native)."""
    return DISTILL_RATE["bf16" if autocast_dtype(config.precision, torch.device("cpu")) else "fp32"]


def distill_seconds(config: DistillConfig, teacher_mops: float, student_mops: float, cached: bool) -> float:
    """Estimated one-core seconds of ``config.steps`` distillation steps (:func:`distill_rate`)."""
    a, b = distill_rate(config)
    return config.steps * config.batch_size * (a + b * ((0.0 if cached else teacher_mops) + 3 * student_mops))


def finetune_config(study: SubarchStudy, row: str, task: str, lr: float, warmup: float, seed: int) -> TrainConfig:
    files = StudyFiles(study.out)
    model = study.teacher if row == "teacher" else str(files.model(row))
    block = {**study.finetune.train, **study.finetune.per_task.get(task, {})}
    holdout = block.pop("holdout_fraction", 0.1 if study.finetune.select_on == "holdout" else 0.0)
    forced = {"tasks": [task], "seed": seed, "lr": lr, "warmup_ratio": warmup, "model": model,
              "output_dir": str(files.finetune_run(row, task, lr, warmup, seed)), "holdout_fraction": holdout}
    if study.glue_dir:
        forced["glue_dir"] = study.glue_dir
    return train_config([(f"finetune.train / finetune.per_task.{task}", block)], forced, f"finetune {row} {task}")


def chosen_config(study: SubarchStudy, row: str, task: str, seed: int) -> TrainConfig:
    """``seed``'s run of ``row`` on ``task`` at the (lr, warm-up) the sweep seeds chose (``finetune.select_on``), in
    ``finetune/ROW/TASK/chosen-seedK`` (module level: the engine calls it once the sweep has finished)."""
    pick = chosen_setting(sweep(study, row, task), study.finetune.select_on)
    if pick is None:
        raise UserError(f"no finished sweep run of {row} on {task} to choose a learning rate and warm-up from")
    config = finetune_config(study, row, task, pick["lr"], pick["warmup"], seed)
    return config.replace(output_dir=str(StudyFiles(study.out).chosen_run(row, task, seed)))


def reference_config(study: SubarchStudy, name: str) -> TrainConfig:
    files = StudyFiles(study.out)
    ref = dict(study.search.reference_task)
    forced = {"tasks": [ref["task"]], "seed": 1, "model": str(files.candidate_dir(name) / "model"),
              "output_dir": str(files.reference_run(name))}
    if study.glue_dir:
        forced["glue_dir"] = study.glue_dir
    return train_config([("search.reference_task.train", dict(ref.get("train") or {}))], forced, f"reference {name}")


@dataclass(frozen=True)
class StepCosts:
    """Estimated one-core seconds of the steps the engine has no cost model for, from :data:`DISTILL_RATE`:
    each candidate's two measurements (0 once measured), building the teacher cache, the distillation pre-training
    (0 once done; before the choice, for the costliest candidate the selection allows)."""

    candidates: dict[str, float]  # each candidate's distillation (its error)
    latency: dict[str, float]  # each candidate's timing against the teacher
    teacher_cache: float
    cached: bool  # the search distils from cached teacher outputs
    pretrain: float
    pretrain_arch: str
    pretrain_resumed: int = 0  # the step an interrupted pre-training continues from (its checkpoint's)
    ticket_pretrain: float = 0.0  # the ticket_distilled row's (its encoder size is the chosen one's, so about its cost)

    @classmethod
    def of(cls, study: SubarchStudy, archs: list[SubArch], shape) -> "StepCosts":
        files = StudyFiles(study.out)
        base = EncoderSize(shape.hidden, shape.head_dim, (shape.num_heads,) * shape.num_layers,
                           (shape.intermediate,) * shape.num_layers, 30522, 512, 2, shape.hidden, True)
        seq = 32  # the convention of DISTILL_RATE
        teacher_ops = ops_per_token(base, seq) / 1e6

        def size(a: SubArch) -> EncoderSize:
            return base.uniform(a.depth, a.heads, a.hidden, a.ffn)

        def seconds(arch: SubArch, config: DistillConfig, cached: bool) -> float:
            return distill_seconds(config, teacher_ops, ops_per_token(size(arch), seq) / 1e6, cached)

        d = study.search.distill
        cached = study.search.teacher_cache and d.objective != "mlm"  # auto: assumed hidden (a teacher without MLM head)
        todo = [a for a in archs if not files.candidate_json(a.name).is_file()
                and not files.candidate_distill(a.name).is_file()]
        candidates = {a.name: 0.0 if a not in todo else seconds(a, d, cached) + 15.0 for a in archs}  # + loading
        latency = {a.name: 0.0 if files.candidate_json(a.name).is_file() or files.candidate_latency(a.name).is_file()
                   else 45.0 for a in archs}  # MiniLM's grid at 5 rounds: 30-60 s with loading
        cache = 0.0
        if cached and todo and not (files.teacher_cache / "cache.json").is_file():  # the teacher's forward pass
            # once on every sequence, held-out ones too
            a, b = distill_rate(d)
            cache = (d.steps * d.batch_size + study.corpus.heldout) * (a + b * teacher_ops)
        teacher_layers = param_counts(base)["layers"]
        limit = study.select.max_encoder_share
        allowed = [a for a in archs if limit is None or param_counts(size(a))["layers"] / teacher_layers <= limit + 1e-12]
        arch = (SubArch.parse(read_json(files.chosen)["arch"]) if files.chosen.is_file()
                else max(allowed or archs, key=lambda a: ops_per_token(size(a), seq)))
        def left(row: str, out_dir: Path) -> tuple[float, int]:
            """``row``'s distillation still to run (one-core seconds) and the step its checkpoint is at."""
            if (files.model(row) / "subarch.json").is_file():
                return 0.0, 0
            resumed = resume_step(out_dir, study.distill.checkpoint_every)
            return seconds(arch, study.distill, False) * (1 - resumed / study.distill.steps), resumed

        pretrain, resumed = left("distilled", files.distill_dir)
        ticket = left("ticket_distilled", files.ticket_distill_dir)[0] if "ticket_distilled" in study.rows() else 0.0
        return cls(candidates, latency, cache, cached, pretrain, arch.name, resumed, ticket)

    def lines(self, study: SubarchStudy) -> list[str]:
        """The plan's lines on the search and the distillation pre-training."""
        d = study.search.distill
        errors = [n for n, s in self.candidates.items() if s > 0]
        timings = [n for n, s in self.latency.items() if s > 0]
        search = sum(self.candidates.values()) + sum(self.latency.values()) + self.teacher_cache
        chosen = StudyFiles(study.out).chosen.is_file()
        return [f"search: {len(errors)} of {len(self.candidates)} candidates' errors and {len(timings)} timings to "
                f"measure, about {search / 3600:.1f} core-hours on CPU ({d.steps} distillation steps of batch "
                f"{d.batch_size} each, precision {d.precision}{', teacher outputs cached' if self.cached else ''})",
                f"distillation pre-training: {study.distill.steps} steps of batch {study.distill.batch_size}, "
                + (f"{self.pretrain_resumed} done (its checkpoint), " if self.pretrain_resumed else "")
                + (f"about {self.pretrain / 3600:.1f} core-hours left (for {self.pretrain_arch}, the chosen one)"
                   if chosen else f"at most about {self.pretrain / 3600:.1f} core-hours (for {self.pretrain_arch}, "
                   "the costliest candidate the selection allows; the chosen one may be cheaper)"),
                *([f"distillation of the ticket's units (ticket_distilled): about {self.ticket_pretrain / 3600:.1f} "
                   "core-hours left (as for the chosen one: the same encoder size)"] if "ticket_distilled" in study.rows()
                  else []),
                "the engine's total below: these steps and the fine-tuning runs (MiniLM rates; smaller students "
                "train faster)"]


def _finetune_jobs(study: SubarchStudy, row: str, runs: dict[tuple, TrainConfig],
                   chosen: dict[tuple, Path]) -> list[Job]:
    """``row``'s fine-tuning jobs: its lr x warm-up sweep (``runs``), then the seeds that run only the setting the
    sweep chooses (``chosen``: resolved once the sweep and the row's model are done)."""
    f = study.finetune
    model = () if row == "teacher" else (f"models/{row}",)  # the teacher's model is not built by the study
    jobs = []

    def swept_name(task: str, lr: float, wu: float, seed: int) -> str:
        return f"finetune/{row}/{task}/lr{lr:g}-wu{wu:g}-seed{seed}"

    for (_, task, lr, wu, seed), config in runs.items():
        jobs.append(Job(swept_name(task, lr, wu, seed), deps=model, config=config,
                        labels={"task": task, "kind": row, "seed": seed}, info={"label": row, "seed": seed}))
    for (_, task, seed), path in chosen.items():
        # its model too: swept runs restored from a results folder do not wait for it
        swept = tuple(swept_name(task, lr, wu, s) for lr in f.lrs for wu in f.warmups for s in f.swept()) + model
        placeholder = finetune_config(study, row, task, f.lrs[0], f.warmups[0], seed).replace(output_dir=str(path))
        jobs.append(Job(f"finetune/{row}/{task}/chosen-seed{seed}", deps=swept, config=placeholder,
                        resolve=chosen_config, resolve_args=(study, row, task, seed),
                        labels={"task": task, "kind": row, "seed": seed}, info={"label": row, "seed": seed}))
    return jobs


def study_jobs(study: SubarchStudy, archs: list[SubArch], threads: int | None,
               costs: StepCosts | None = None) -> list[Job]:
    """The whole study as jobs (module docstring); ``costs``: the steps' estimates (the ETA and the time limit)."""
    files, rows, f = StudyFiles(study.out), study.rows(), study.finetune
    jobs = [Job("scores", action=score_step, args=(study, threads), where="worker",
                outputs=(files.scores, files.scores_json))]
    searched: list[str] = []
    cache = ("teacher_cache",) if study.search.teacher_cache else ()
    if cache:  # its files are large and rebuilt on demand: not results
        jobs.append(Job("teacher_cache", action=teacher_cache_step, args=(study, [a.name for a in archs], threads),
                        where="worker", seconds=costs.teacher_cache if costs else None))
    for arch in archs:
        name = arch.name
        labels = {"kind": "candidate", "task": name}
        # a part measured before (or restored from the results folder) only writes the record: in the scheduler's
        # process, not in a worker started for it (hundreds of them would cost minutes on every resume)
        measured = {"latency": costs is not None and costs.latency[name] == 0.0,
                    "error": costs is not None and costs.candidates[name] == 0.0}
        where = {part: "scheduler" if done else "worker" for part, done in measured.items()}
        jobs.append(Job(f"candidates/{name}/latency", deps=("scores",), action=candidate_latency_step,
                        args=(study, name, threads), where=where["latency"], labels=labels,
                        seconds=costs.latency[name] if costs else None,
                        outputs=(files.candidate_latency(name), files.candidate_json(name))))
        jobs.append(Job(f"candidates/{name}/error", deps=("scores", *cache), action=candidate_error_step,
                        args=(study, name, threads), where=where["error"], labels=labels,
                        seconds=costs.candidates[name] if costs else None,
                        outputs=(files.candidate_distill(name), files.candidate_dir(name) / "log.jsonl",
                                 files.candidate_json(name))))
        searched += [f"candidates/{name}/latency", f"candidates/{name}/error"]
        if study.search.reference_task is not None:
            jobs.append(Job(f"candidates/{name}/reference", deps=(f"candidates/{name}/error",),
                            config=reference_config(study, name), labels={"task": name, "kind": "reference"}))
            searched.append(f"candidates/{name}/reference")
    jobs.append(Job("select", deps=tuple(searched), action=select_step, args=(study, [a.name for a in archs]),
                    outputs=(files.search_json, files.search_md, files.frontier_png, files.chosen)))
    runs = {(row, t, lr, wu, s): finetune_config(study, row, t, lr, wu, s)
            for row in rows for t in f.tasks for lr in f.lrs for wu in f.warmups for s in f.swept()}
    chosen = {(row, t, s): files.chosen_run(row, t, s) for row in rows for t in f.tasks for s in f.chosen_only()}
    for row in (r for r in rows if r in MODEL_ROWS):
        needed = [str(Path(c.output.output_dir) / "metrics.json") for (r, *_), c in runs.items() if r == row]
        needed += [str(path / "metrics.json") for (r, *_), path in chosen.items() if r == row]
        if row in timed_rows(rows):
            needed.append(str(files.latency))
        outputs = {"distilled": tuple(files.distill_dir / n for n in DISTILL_OUTPUTS),
                   "ticket_distilled": tuple(files.ticket_distill_dir / n for n in DISTILL_OUTPUTS),
                   **{r: (files.ticket_dir(r) / "mask.safetensors", files.ticket_dir(r) / "ticket.json")
                      for r in TICKET_ROWS}}.get(row, ())
        pretrain = row in ("distilled", "ticket_distilled")  # continues from its checkpoint
        args = (study, needed, threads) + ((row,) if row in TICKET_ROWS else ())
        deps = ("select", "models/ticket") if row == "ticket_distilled" else ("select",)  # it distils the ticket's units
        jobs.append(Job(f"models/{row}", deps=deps, action=MODEL_STEPS[row], args=args,
                        where="worker", outputs=outputs, resumable=pretrain,
                        seconds=(costs.ticket_pretrain if row == "ticket_distilled" else costs.pretrain)
                        if costs and pretrain else None))
    for row in rows:  # row by row (its sweep, then its other seeds): a study cut short has whole rows, not sweeps
        jobs += _finetune_jobs(study, row, {k: c for k, c in runs.items() if k[0] == row},
                               {k: p for k, p in chosen.items() if k[0] == row})
    timed = tuple(f"models/{r}" for r in timed_rows(rows))
    jobs.append(Job("latency", deps=("select", *timed), action=latency_step, args=(study, rows, threads),
                    where="worker", outputs=(files.latency,)))
    finetune = tuple(j.name for j in jobs if j.name.startswith("finetune/"))
    jobs.append(Job("table", deps=("latency", *finetune), action=table_step, args=(study, rows), after_failures=True,
                    outputs=(files.table_md, files.table_json)))
    return jobs


def run_study(study: SubarchStudy, engine: EngineOptions, report_only: bool = False) -> int:
    shape = teacher_shape(study.teacher)
    archs = study.search.archs(shape)
    _, threads, _ = engine.resolved()
    results = results_dir(engine, study.out)
    if results is not None:  # what the results folder holds counts as done in the estimates
        files = StudyFiles(study.out)
        results.restore_files([*(p for a in archs for p in (files.candidate_json(a.name), files.candidate_latency(a.name),
                                                             files.candidate_distill(a.name))), files.chosen])
    costs = StepCosts.of(study, archs, shape)
    return run_study_graph(study.out, yaml.safe_dump(study_to_dict(study), sort_keys=False),
                           study_jobs(study, archs, threads, costs), engine,
                           report_only=("select", "table") if report_only else None,
                           plan_lines=costs.lines(study), table=StudyFiles(study.out).table_md)


def main(argv: list[str] | None = None) -> int:
    return yaml_study_main(argv, "python -m experiments.subarch", __doc__.splitlines()[0], "experiments/subarch.yaml",
                           "redo the selection and the table from what is there", load_study, run_study)


if __name__ == "__main__":
    sys.exit(main())

