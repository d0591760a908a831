"""Ticket transfer: tickets found on a pre-training objective and on each task, rewound and fine-tuned on every task.

    python -m experiments.transfer STUDY.yaml [--output-dir DIR] [--glue-dir DIR] [--report-only]
        [--jobs N] [--threads-per-run N] [--backend local|ray|inline] [--results-dir DIR] [--dry-run]

The study (:mod:`experiments.transfer_config`, e.g. ``experiments/transfer_cpu.yaml``) is one job graph on the
study engine (:mod:`experiments.engine`):

1. ``sources/OBJECTIVE``: the objective's tickets (:func:`mtl.objective_tickets.find_objective_tickets`: the
   gate-gradient importance on the corpus, winning tickets at every sparsity);
   ``sources/TASK``: a dense fine-tune of TASK (``ticket_seed``) scored and cut (``train.py --score-importance``);
2. ``random/S-seedK``: a random mask with exactly the tickets' heads and FFN neurons at sparsity S, per seed;
3. ``runs/TARGET/ROW/seedK``: ``train.py --tasks TARGET --mask ...`` from the pre-trained weights (rewinding)
   for every row: ``dense``, ``random-S`` and ``SOURCE-S`` for every source and sparsity;
4. ``table``: ``transfer.md`` / ``transfer.json`` (:mod:`experiments.transfer_table`).

Re-running resumes (finished runs are read back); ``--dry-run`` prints the plan and its cost.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch
import yaml

from basics.io import atomic_write_json, atomic_write_text
from experiments.baselines import baselines_for
from experiments.engine.jobs import Job
from experiments.engine.options import EngineOptions, run_study_graph, yaml_study_main
from experiments.study_config import train_config
from experiments.transfer_config import TransferStudy, load_study
from experiments.transfer_table import markdown, transfer_report
from masks.importance import load_importance
from masks.mask import load_mask_file, save_mask
from masks.meta import format_fraction
from masks.tickets import cut_ticket
from mtl.config import TrainConfig
from mtl.objective_tickets import find_objective_tickets
from mtl.objective_tickets import ticket_path as objective_ticket_path
from mtl.rundir import RunDir
from tasks.score import task_score


def source_dir(study: TransferStudy, source: str) -> Path:
    return study.out / "sources" / source


def source_mask(study: TransferStudy, source: str, sparsity: float) -> Path:
    """The winning ticket of ``source`` at ``sparsity`` (same file name for objective and task tickets)."""
    return objective_ticket_path(source_dir(study, source), "winning", sparsity)


def random_mask_path(study: TransferStudy, sparsity: float, seed: int) -> Path:
    return study.out / "random" / f"random-{format_fraction(sparsity)}-seed{seed}.safetensors"


def row_name(row: str, sparsity: float | None) -> str:
    return row if sparsity is None else f"{row}-{format_fraction(sparsity)}"


def run_dir(study: TransferStudy, target: str, row: str, seed: int) -> Path:
    return study.out / "runs" / target / row / f"seed{seed}"


def _glue(study: TransferStudy) -> dict:
    return {"glue_dir": study.glue_dir} if study.glue_dir else {}


def ticket_config(study: TransferStudy, task: str) -> TrainConfig:
    forced = {"tasks": [task], "seed": study.ticket_seed, "model": study.model, "score_importance": True,
              "sparsities": list(study.sparsities), "ticket_kinds": ["winning"],
              "output_dir": str(source_dir(study, task)), **_glue(study)}
    layers = [("tickets.train", study.tickets.train), (f"tickets.per_task.{task}", study.tickets.per_task.get(task, {}))]
    return train_config(layers, forced, f"ticket run {task}")


def transfer_config(study: TransferStudy, target: str, row: str, seed: int, mask: Path | None) -> TrainConfig:
    forced = {"tasks": [target], "seed": seed, "model": study.model, "output_dir": str(run_dir(study, target, row, seed)),
              "mask": str(mask) if mask is not None else None, **_glue(study)}
    layers = [("train", study.train), (f"per_task.{target}", study.per_task.get(target, {}))]
    return train_config(layers, forced, f"transfer run {target} {row} seed {seed}")


# ---- steps (module-level: the engine pickles them) ---------------------------------------------------------


def objective_step(study: TransferStudy, objective: str, threads: int | None = 1) -> None:
    if threads:
        torch.set_num_threads(threads)
    summary = find_objective_tickets(study.objective_config(objective), source_dir(study, objective))
    print(f"{objective} tickets: {summary}", flush=True)


def random_step(study: TransferStudy, sparsity: float, seed: int) -> None:
    """A random mask with the first source's head and neuron counts at ``sparsity`` (drawn with ``seed``)."""
    path = random_mask_path(study, sparsity, seed)
    if path.is_file():
        return
    first = source_mask(study, study.sources()[0], sparsity)
    imp = load_importance(source_dir(study, study.sources()[0]) / "importance.safetensors")
    ticket = load_mask_file(first)
    shape = ticket.meta.shape
    mask = cut_ticket(imp, "random", sparsity, shape=shape, seed=seed,
                      min_heads_per_layer=int(ticket.meta.extra.get("min_heads_per_layer", "1")),
                      meta={"study": study.name})
    mask.meta = mask.meta.replace(tasks=(), objective=None)  # a random draw: no task, no objective
    if (mask.num_heads_kept, mask.num_ffn_kept) != (ticket.num_heads_kept, ticket.num_ffn_kept):
        raise RuntimeError(f"random mask {path} keeps other counts than {first}")
    save_mask(mask, path)


def collect(study: TransferStudy, sparsity: float) -> dict[str, dict[str, dict[int, float]]]:
    """``{row: {target: {seed: dev task score}}}`` of the finished runs at ``sparsity`` (rows: dense, random, sources)."""
    scores: dict[str, dict[str, dict[int, float]]] = {}
    rows = {"dense": "dense", "random": row_name("random", sparsity),
            **{s: row_name(s, sparsity) for s in study.sources()}}
    for row, folder in rows.items():
        for target in study.tasks:
            for seed in study.seeds:
                run = RunDir(run_dir(study, target, folder, seed))
                if run.finished:
                    scores.setdefault(row, {}).setdefault(target, {})[seed] = task_score(run.result().metrics[target])
    return scores


def table_step(study: TransferStudy) -> None:
    own = {s: study.source_task(s) for s in study.sources()}
    baselines = {}  # the targets' dev files, as their runs read them (no baseline where they cannot be read)
    for target in study.tasks:
        baselines.update(baselines_for(transfer_config(study, target, "dense", study.seeds[0], None), [target]))
    reports = [transfer_report(collect(study, s), study.sources(), study.tasks, own, s, baselines)
               for s in study.sparsities]
    doc = {"study": study.name, "model": study.model, "seeds": study.seeds, "ticket_seed": study.ticket_seed,
           "objectives": study.objectives, "task_sources": study.task_sources, "tables": reports}
    atomic_write_json(study.out / "transfer.json", doc)
    atomic_write_text(study.out / "transfer.md", markdown(json.loads(json.dumps(doc))))
    print(f"table: {study.out / 'transfer.md'}", flush=True)


# ---- the graph ------------------------------------------------------------------------------------------------


def study_jobs(study: TransferStudy, threads: int | None) -> list[Job]:
    jobs: list[Job] = []
    for objective in study.objectives:
        folder = source_dir(study, objective)
        jobs.append(Job(f"sources/{objective}", action=objective_step, args=(study, objective, threads), where="worker",
                        labels={"kind": objective}, outputs=(
                            folder / "objective.json", folder / "importance.safetensors",
                            *(source_mask(study, objective, s) for s in study.sparsities))))
    if study.task_sources:
        for task in study.tasks:
            jobs.append(Job(f"sources/{task}", config=ticket_config(study, task),
                            needs=tuple(source_mask(study, task, s) for s in study.sparsities),
                            labels={"task": task, "kind": "ticket source"}))
    first = f"sources/{study.sources()[0]}"
    for s in study.sparsities:
        for seed in study.seeds:
            jobs.append(Job(f"random/{format_fraction(s)}-seed{seed}", deps=(first,), action=random_step,
                            args=(study, s, seed), outputs=(random_mask_path(study, s, seed),)))
    runs = []
    for target in study.tasks:
        for seed in study.seeds:
            runs.append(Job(f"runs/{target}/dense/seed{seed}", config=transfer_config(study, target, "dense", seed, None),
                            labels={"task": target, "kind": "dense", "seed": seed}))
            for s in study.sparsities:
                row = row_name("random", s)
                runs.append(Job(f"runs/{target}/{row}/seed{seed}", deps=(f"random/{format_fraction(s)}-seed{seed}",),
                                config=transfer_config(study, target, row, seed, random_mask_path(study, s, seed)),
                                labels={"task": target, "kind": "random", "sparsity": s, "seed": seed}))
                for source in study.sources():
                    row = row_name(source, s)
                    runs.append(Job(f"runs/{target}/{row}/seed{seed}", deps=(f"sources/{source}",),
                                    config=transfer_config(study, target, row, seed, source_mask(study, source, s)),
                                    labels={"task": target, "kind": f"from {source}", "sparsity": s, "seed": seed}))
    jobs += runs
    jobs.append(Job("table", deps=tuple(j.name for j in runs), action=table_step, args=(study,), after_failures=True,
                    outputs=(study.out / "transfer.json", study.out / "transfer.md")))
    return jobs


def run_study(study: TransferStudy, engine: EngineOptions, report_only: bool = False) -> int:
    _, threads, _ = engine.resolved()
    plan = [f"objective tickets: {len(study.objectives)} step(s), each {study.objective.get('score_batches', 32)} "
            "scoring batches (a few minutes of one core for MiniLM); the training runs: the engine's estimate below"]
    return run_study_graph(study.out, yaml.safe_dump(json.loads(json.dumps(study.to_dict())), sort_keys=False),
                           study_jobs(study, threads), engine, report_only=("table",) if report_only else None,
                           plan_lines=plan, table=study.out / "transfer.md")


def main(argv: list[str] | None = None) -> int:
    return yaml_study_main(argv, "python -m experiments.transfer", __doc__.splitlines()[0], "experiments/transfer_cpu.yaml",
                           "rebuild the table from the finished runs", load_study, run_study)


if __name__ == "__main__":
    sys.exit(main())
