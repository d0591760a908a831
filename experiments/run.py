"""Run a whole GLUE study from one config file: tickets, shared masks, multi-task training, table, plots.

    python -m experiments.run experiments/quickstart.yaml [--output-dir DIR] [--glue-dir DIR] [--report-only] \
        [--jobs N] [--threads-per-run N] [--backend local|ray] [--ray-address ADDR] [--results-dir DIR] [--dry-run]

The study is a graph of jobs executed by the study engine (:mod:`experiments.engine`), concurrently where
the graph allows (``--jobs``, default one per core):

1. Tickets, per task (:func:`experiments.phase_transition.study_jobs`): fine-tune, score, cut winning /
   random / losing masks, rewind them over sparsities and seeds, select the super ticket.
   ``OUT/tickets/TASK/`` (or ``tickets.dirs``).
2. Masks (:func:`masks.construct.construct`): one per ticket-sharing variant (union, per-task, ...), as
   soon as every task's super ticket exists; the ``random-share`` control draws, per seed, a random mask
   per task with exactly that task's super-ticket counts. ``OUT/masks/``.
3. Training over the study's seeds: ``MT-DNN (dense)`` (starts at once, beside the tickets),
   ``Tickets-Share (VARIANT)``, ``Random-Share (per-task)``, and optional single-task rows.
   ``OUT/runs/NAME/`` with ``study_run.json`` (its table label). A masked run whose mask keeps every
   head and FFN neuron (e.g. the union when one task's super ticket is dense) is not trained when the
   study trains the same run without a mask: it would repeat it exactly; the table says so.
4. Report (even when some runs failed): ``OUT/table.{md,csv,json}`` (:mod:`experiments.glue_table`),
   ``OUT/plots/*.png``, ``OUT/summary.json``.

Resuming: a finished run is never trained again (with ``--results-dir``, not even on another machine);
an interrupted one continues from its checkpoint. A finished run made with other options than the study
now asks for is an error, and so is a super ticket or shared mask that changed under finished runs. A
run that fails fails alone; re-running the command retries it. Exit status: 0 all done, 1 some job
failed, 2 user error.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from basics.cli import OneLineParser, run_main
from basics.errors import UserError
from basics.io import atomic_write_json, atomic_write_text
from experiments.engine.jobs import Job, JobGraph
from experiments.engine.options import EngineOptions, add_engine_flags, engine_options, run_jobs
from experiments.glue_table import build_table, format_markdown, load_run, write_table
from experiments.phase_transition import report_step, study_jobs
from experiments.plots import plot_mask, plot_overlap, plot_phase_transition
from experiments.study_config import RANDOM_SHARE, StudyConfig, load_study
from masks.construct import construct, load_ticket
from masks.iterative import matched_mask
from masks.mask import Mask, keeps_all_units, load_mask_file, save_task_masks
from mtl.config import TrainConfig
from mtl.rundir import RunDir

SUPER_TICKET = "super_ticket.safetensors"


def variant_label(variant: str) -> str:
    if variant == "dense":
        return "MT-DNN (dense)"
    if variant == RANDOM_SHARE:
        return "Random-Share (per-task)"
    return f"Tickets-Share ({variant})"


def single_label(kind: str) -> str:
    return "Single-task (dense)" if kind == "dense" else "Single-task (super ticket)"


def slug(variant: str) -> str:
    """A variant as a file-name part: ``vote:2`` -> ``vote2``."""
    return variant.replace(":", "")


# ---------------------------------------------------------------- the runs


@dataclass
class PlannedRun:
    """One training run of the study: where it goes, its table label, and what it trains."""

    name: str
    label: str
    variant: str
    seed: int
    tasks: list[str]
    mask: Path | None
    run_dir: Path

    def config(self, study: StudyConfig) -> TrainConfig:
        mask = str(self.mask) if self.mask is not None else None
        return study.mtl_config(self.tasks, self.seed, str(self.run_dir), mask)

    def info(self, study: StudyConfig) -> dict[str, Any]:
        return {"study": study.name, "label": self.label, "variant": self.variant, "seed": self.seed,
                "tasks": self.tasks, "mask": str(self.mask) if self.mask else None}


def mask_path(study: StudyConfig, variant: str, seed: int | None = None) -> Path:
    """``OUT/masks/VARIANT.safetensors`` (the random-share control: one file per seed)."""
    name = f"{slug(variant)}-seed{seed}" if variant == RANDOM_SHARE else slug(variant)
    return study.out / "masks" / f"{name}.safetensors"


def plan_runs(study: StudyConfig) -> list[PlannedRun]:
    """Every training run, seed by seed (so each finished seed gives a complete set of rows)."""
    runs_dir = study.out / "runs"
    runs = []
    for seed in study.seeds:
        for v in study.mtl.variants:
            if seed not in study.mtl.seeds_for(v, study.seeds):
                continue
            mask = None if v == "dense" else mask_path(study, v, seed)
            name = f"mtl-{slug(v)}-seed{seed}"
            runs.append(PlannedRun(name, variant_label(v), v, seed, list(study.tasks), mask, runs_dir / name))
        for kind in study.mtl.single_task:
            if seed not in study.mtl.seeds_for(f"single-{kind}", study.seeds):
                continue
            for task in study.tasks:
                mask = study.ticket_dir(task) / SUPER_TICKET if kind == "super" else None
                name = f"single-{kind}-{task}-seed{seed}"
                runs.append(PlannedRun(name, single_label(kind), f"single-{kind}", seed, [task], mask, runs_dir / name))
    return runs


# ---------------------------------------------------------------- steps (module level: workers may run them)


def _same_masks(a: Mask | dict[str, Mask], b: Mask | dict[str, Mask]) -> bool:
    if isinstance(a, Mask) != isinstance(b, Mask):
        return False
    if isinstance(a, Mask):
        return a.heads.shape == b.heads.shape and a.ffn.shape == b.ffn.shape and a.same_units(b)
    return list(a) == list(b) and all(_same_masks(a[t], b[t]) for t in a)


def repeats_unmasked(mask: str, unmasked: str) -> str | None:
    """The ``skip`` of a masked run whose study also trains the same run without a mask (``unmasked``):
    a mask that keeps every head and FFN neuron of every task gates nothing, so the run would repeat
    that one exactly. None (train it) otherwise, or while the mask does not exist."""
    path = Path(mask)
    if not path.is_file() or not keeps_all_units(load_mask_file(path)):
        return None
    return f"its mask {path.name} keeps every head and FFN neuron of every task: it would repeat {unmasked} exactly"


def unmasked_runs(study: StudyConfig) -> dict[str, PlannedRun]:
    """``{masked run's name: the planned run with the same tasks and seed and no mask}`` (MT-DNN (dense) for a
    shared-mask row, the single-task dense run for a single-task super-ticket row), where the plan has one."""
    runs = plan_runs(study)
    plain = {(tuple(r.tasks), r.seed): r for r in runs if r.mask is None}
    return {r.name: plain[(tuple(r.tasks), r.seed)] for r in runs
            if r.mask is not None and (tuple(r.tasks), r.seed) in plain}


def skipped_notes(study: StudyConfig) -> list[str]:
    """One sentence per row whose runs were not trained because their mask keeps every unit (the table's notes)."""
    unmasked = unmasked_runs(study)
    rows: dict[str, tuple[str, set[int]]] = {}
    for run in plan_runs(study):
        if run.name in unmasked and not RunDir(run.run_dir).finished and \
                repeats_unmasked(str(run.mask), unmasked[run.name].name) is not None:
            rows.setdefault(run.label, (unmasked[run.name].label, set()))[1].add(run.seed)
    return [f"{label} is not in the table: its mask keeps every head and FFN neuron of every task (seeds "
            f"{', '.join(map(str, sorted(seeds)))}), so each of its runs would repeat {plain}'s run of the same "
            "seed exactly (an all-keep mask gates nothing); they were not trained."
            for label, (plain, seeds) in rows.items()]


def snapshot(path: Path) -> Mask | dict[str, Mask] | None:
    """The mask file at ``path`` as it is now (None if there is none)."""
    return load_mask_file(path) if path.is_file() else None


def check_unchanged(before: Mask | dict[str, Mask] | None, path: Path, study: StudyConfig, what: str) -> None:
    """UserError if the mask at ``path`` changed while finished runs were trained with the previous one.

    Super tickets and shared masks are re-derived on every start (more ticket seeds, say, can move
    the selected sparsity); finished runs would then no longer match the mask the table names.
    """
    users = [r.run_dir for r in plan_runs(study) if r.mask == path and RunDir(r.run_dir).finished]
    if before is None or not users or _same_masks(before, load_mask_file(path)):
        return
    raise UserError(f"the {what} ({path}) changed, but {len(users)} finished run(s) were trained with the previous "
                    f"one (e.g. {users[0]}); delete those runs to retrain them, or restore the study's previous options")


def ticket_step(study: StudyConfig, task: str) -> None:
    """A task's phase-transition report and super ticket; an error if the super ticket changed under
    finished runs that use it."""
    out = study.ticket_dir(task)
    before = snapshot(out / SUPER_TICKET)
    report_step(study.ticket_config(task), task, study.tickets.seeds, out, study.tickets.select_on,
                study.tickets.control_sparsities, study.tickets.dense_candidate)
    check_unchanged(before, out / SUPER_TICKET, study, f"super ticket of {task}")


def mask_step(study: StudyConfig, variant: str) -> None:
    """``OUT/masks/VARIANT.{safetensors,json}`` merged from the super tickets."""
    path = mask_path(study, variant)
    before = snapshot(path)
    construct({task: study.ticket_dir(task) for task in study.tasks}, variant, path, path.with_suffix(".json"))
    check_unchanged(before, path, study, f"{variant} mask")


def random_share_step(study: StudyConfig, seed: int) -> None:
    """The Random-Share control of one seed: a per-task file in which every task's mask is a uniform
    random draw with exactly the heads and FFN units its super ticket keeps (task ``i`` draws with seed
    ``1000 * seed + i``, so tasks get independent draws and every seed a new one)."""
    path = mask_path(study, RANDOM_SHARE, seed)
    before = snapshot(path)
    masks = {}
    for i, task in enumerate(study.tasks):
        ticket = load_ticket(task, study.ticket_dir(task) / SUPER_TICKET)
        granularity = ticket.meta.granularity or "neuron"
        keep_min = int(ticket.meta.extra.get("min_heads_per_layer", "1"))
        masks[task] = matched_mask(ticket, "random", shape=ticket.meta.shape, granularity=granularity,
                                   min_heads_per_layer=keep_min, seed=1000 * seed + i,
                                   meta={"matched_to": "super_ticket"})
    save_task_masks(masks, path, meta={"kind": RANDOM_SHARE, "model": next(iter(masks.values())).meta.model,
                                       "seed": str(seed)})
    check_unchanged(before, path, study, f"{RANDOM_SHARE} mask of seed {seed}")


def table_title(study: StudyConfig) -> str:
    return f"GLUE dev: study {study.name} ({study.model})"


def make_table(study: StudyConfig) -> tuple[dict | None, list[Path]]:
    """``OUT/table.{md,csv,json}`` from the finished runs of the plan (runs of older plans are left out)."""
    records = [load_run(r.run_dir) for r in plan_runs(study) if RunDir(r.run_dir).finished]
    if not records:
        return None, []
    table = build_table(records)
    notes = skipped_notes(study)
    if notes:
        table["notes"] = notes
    return table, write_table(table, study.out / "table.md", table_title(study))


def shared_masks(study: StudyConfig) -> dict[str, Path]:
    """The shared-mask variants' files that exist (one per variant; Random-Share's first seed)."""
    out = {}
    for v in study.mtl.variants:
        if v != "dense":
            path = mask_path(study, v, study.seeds[0])
            if path.is_file():
                out[v] = path
    return out


def make_plots(study: StudyConfig) -> list[Path]:
    """Phase transitions, super-ticket and shared-mask heatmaps, super-ticket overlap -> ``OUT/plots/``."""
    plots = study.out / "plots"
    written = []
    tickets = {}
    for task in study.tasks:
        pt = study.ticket_dir(task) / "phase_transition.json"
        if pt.is_file():
            plot_phase_transition(pt, plots / f"phase-{task}.png")
            written.append(plots / f"phase-{task}.png")
        super_ticket = study.ticket_dir(task) / SUPER_TICKET
        if super_ticket.is_file():
            tickets[task] = load_mask_file(super_ticket)
            plot_mask(tickets[task], plots / f"mask-{task}.png", f"{task} super ticket")
            written.append(plots / f"mask-{task}.png")
    for variant, path in shared_masks(study).items():
        plot_mask(load_mask_file(path), plots / f"mask-{slug(variant)}.png", f"{variant} mask ({', '.join(study.tasks)})")
        written.append(plots / f"mask-{slug(variant)}.png")
    if len(tickets) > 1:
        plot_overlap(tickets, plots / "overlap.png")
        written.append(plots / "overlap.png")
    return written


def report_files(study: StudyConfig) -> tuple[Path, ...]:
    plots = [study.out / "plots" / f"{kind}-{task}.png" for task in study.tasks for kind in ("phase", "mask")]
    plots += [study.out / "plots" / f"mask-{slug(v)}.png" for v in study.mtl.variants if v != "dense"]
    return (study.out / "table.md", study.out / "table.csv", study.out / "table.json", study.out / "plots" / "overlap.png",
            *plots)


def study_report_step(study: StudyConfig) -> None:
    """The table and the plots, from whatever has finished."""
    table, _ = make_table(study)
    make_plots(study)
    if table is not None:
        print(format_markdown(table, table_title(study)), flush=True)


# ---------------------------------------------------------------- the graph


def study_graph(study: StudyConfig) -> JobGraph:
    """Every job of the study. Dense multi-task and single-task runs need nothing and start at once;
    ticket-sharing runs wait for their mask, which waits for every task's super ticket."""
    graph = JobGraph()
    ticket_steps = {}
    if study.mtl.needs_tickets:
        for task in study.tasks:
            prefix = f"tickets/{task}/"
            jobs = study_jobs(study.ticket_config(task), task, study.tickets.seeds, study.ticket_dir(task),
                              study.tickets.select_on, study.tickets.control_sparsities, prefix=prefix,
                              dense_candidate=study.tickets.dense_candidate)
            *runs, report = jobs
            for job in runs:
                graph.add(job)
            ticket_steps[task] = graph.add(Job(report.name, deps=report.deps, action=ticket_step, args=(study, task),
                                               outputs=report.outputs)).name
    all_tickets = tuple(ticket_steps.values())
    mask_jobs: dict[tuple[str, int], str] = {}
    for variant in study.mtl.variants:
        if variant == "dense":
            continue
        if variant == RANDOM_SHARE:
            for seed in study.mtl.seeds_for(variant, study.seeds):
                path = mask_path(study, variant, seed)
                mask_jobs[(variant, seed)] = graph.add(Job(f"masks/{path.stem}", deps=all_tickets,
                                                           action=random_share_step, args=(study, seed),
                                                           outputs=(path,))).name
        else:
            path = mask_path(study, variant)
            name = graph.add(Job(f"masks/{slug(variant)}", deps=all_tickets, action=mask_step, args=(study, variant),
                                 outputs=(path, path.with_suffix(".json")))).name
            for seed in study.mtl.seeds_for(variant, study.seeds):
                mask_jobs[(variant, seed)] = name
    runs = []
    unmasked = unmasked_runs(study)
    for run in plan_runs(study):
        skip = {}
        if run.name in unmasked:
            skip = {"skip": repeats_unmasked, "skip_args": (str(run.mask), f"runs/{unmasked[run.name].name}")}
        if run.variant.startswith("single-"):
            deps = (ticket_steps[run.tasks[0]],) if run.mask is not None else ()
        else:
            deps = (mask_jobs[(run.variant, run.seed)],) if run.mask is not None else ()
        labels = {"task": ",".join(run.tasks) if len(run.tasks) < 3 else f"{len(run.tasks)} tasks",
                  "kind": run.variant, "seed": run.seed}
        runs.append(graph.add(Job(f"runs/{run.name}", deps=deps, config=run.config(study), info=run.info(study),
                                  labels=labels, **skip)).name)
    graph.add(Job("report", deps=(*all_tickets, *dict.fromkeys(mask_jobs.values()), *runs), action=study_report_step,
                  args=(study,), outputs=report_files(study), after_failures=True))
    return graph


# ---------------------------------------------------------------- the command


def run_whole_study(study: StudyConfig, engine: EngineOptions | None = None, report_only: bool = False) -> int:
    graph = study_graph(study)
    options = engine or EngineOptions()
    if not options.dry_run:
        study.out.mkdir(parents=True, exist_ok=True)
    if report_only:
        study_report_step(study)
        return 0
    if not options.dry_run:
        atomic_write_text(study.out / "study.yaml", yaml.safe_dump(study.to_dict(), sort_keys=False))
    report = run_jobs(graph, options, study.out)
    if report is None:  # a dry run
        return 0
    summary = {"study": study.name, "command": " ".join([Path(sys.executable).name, "-m", "experiments.run",
                                                         *sys.argv[1:]]),
               **report.to_dict(), "masks": {v: str(p) for v, p in shared_masks(study).items()},
               "table": [str(study.out / n) for n in ("table.md", "table.csv", "table.json")
                         if (study.out / n).is_file()]}
    atomic_write_json(study.out / "summary.json", summary)
    print(f"\nstudy {study.name}: {report.summary()} in {report.seconds:.0f} s")
    if not report.ok:
        print("some jobs did not finish: run the same command again to retry them (finished runs are kept)")
        return 1
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    def go() -> int:
        parser = OneLineParser(prog="python -m experiments.run", description=__doc__.splitlines()[0])
        parser.add_argument("study", type=Path, help="the study YAML, e.g. experiments/quickstart.yaml")
        parser.add_argument("--output-dir", default=None, help="override the study's output_dir")
        parser.add_argument("--glue-dir", default=None, help="override the study's glue_dir (default: $GLUE_DIR)")
        parser.add_argument("--report-only", action="store_true",
                            help="train nothing; rebuild the table and plots from the finished runs")
        add_engine_flags(parser)
        args = parser.parse_args(argv)
        overrides = {k: v for k, v in (("output_dir", args.output_dir), ("glue_dir", args.glue_dir)) if v}
        study = load_study(args.study, overrides)
        return run_whole_study(study, engine_options(args), report_only=args.report_only)

    return run_main(go)


if __name__ == "__main__":
    sys.exit(main())
