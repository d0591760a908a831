"""Run a whole GLUE study from one config file: tickets, shared masks, multi-task training, table, plots.

    python -m experiments.run experiments/quickstart.yaml [--output-dir DIR] [--glue-dir DIR] \
        [--dry-run] [--report-only]

1. Tickets, per task (``experiments.phase_transition.run_study``): fine-tune, score, cut winning /
   random / losing masks, rewind them over sparsities and seeds, select the super ticket.
   ``OUT/tickets/TASK/`` (or ``tickets.dirs``).
2. Masks (``construct_mtl_mask.construct``): one per ticket-sharing variant (union, per-task, ...).
   ``OUT/masks/VARIANT.safetensors`` and ``.json``.
3. Training over the study's seeds: ``MT-DNN (dense)``, ``Tickets-Share (VARIANT)``, and optional
   single-task rows. ``OUT/runs/NAME/`` with ``study_run.json`` (its table label) beside the run's files.
4. Report: ``OUT/table.{md,csv,json}`` (``experiments.glue_table``), ``OUT/plots/*.png``,
   ``OUT/summary.json``.

Resuming: a run whose ``metrics.json`` exists is skipped, one without it (crashed or interrupted)
starts again. A finished run made with other options than the study now asks for is an error, so
a changed config never mixes silently into the table. A run that fails is reported and the study
goes on; re-running the command retries it. Exit status: 0 all done, 1 some run failed, 2 user error.
"""

from __future__ import annotations

import sys
import time
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from basics.cli import OneLineParser, run_main
from basics.errors import UserError
from basics.io import atomic_write_json, atomic_write_text
from experiments.glue_table import build_table, format_markdown, load_run, write_table
from experiments.phase_transition import plan_study, run_study
from experiments.plots import plot_mask, plot_overlap, plot_phase_transition
from experiments.study_config import StudyConfig, load_study
from masks.construct import construct
from masks.mask import Mask, load_mask_file
from mtl.config import TrainConfig
from mtl.run import run_training
from mtl.rundir import RunDir
from mtl.trainer import NonFiniteLossError, format_metrics


def variant_label(variant: str) -> str:
    return "MT-DNN (dense)" if variant == "dense" else f"Tickets-Share ({variant})"


def single_label(kind: str) -> str:
    return "Single-task (dense)" if kind == "dense" else "Single-task (super ticket)"


def slug(variant: str) -> str:
    """A variant as a file-name part: ``vote:2`` -> ``vote2``."""
    return variant.replace(":", "")


def duration(seconds: float) -> str:
    seconds = int(round(seconds))
    h, rest = divmod(seconds, 3600)
    return f"{h}h{rest // 60:02d}m" if h else f"{rest // 60}m{rest % 60:02d}s"


def is_finished(run_dir: Path) -> bool:
    return RunDir(run_dir).finished


# ---------------------------------------------------------------- 1. tickets


def ticket_run_names(study: StudyConfig) -> list[str]:
    """The run folders ``run_study`` makes in one task's ticket folder."""
    task = study.tasks[0]
    return [r.name for r in plan_study(study.ticket_config(task), study.tickets.seeds, study.ticket_dir(task))]


def check_ticket_runs(study: StudyConfig) -> None:
    """UserError if a finished ticket run was made with other options than the study asks for now."""
    for task in study.tasks:
        for run in plan_study(study.ticket_config(task), study.tickets.seeds, study.ticket_dir(task)):
            check_finished(Path(run.config.output.output_dir), run.config)


def check_finished(run_dir: Path, expected: TrainConfig) -> None:
    """UserError if ``run_dir`` is finished but is another run than ``expected`` (:meth:`RunDir.check_matches`)."""
    run = RunDir(run_dir)
    if run.finished:
        run.check_matches(expected)


def identify_tickets(study: StudyConfig, log: "Log", runs: list["PlannedRun"]) -> dict[str, dict | None]:
    """Run (or resume) every task's ticket study; ``{task: phase_transition report, None if it failed}``."""
    reports: dict[str, dict | None] = {}
    names = ticket_run_names(study)
    for i, task in enumerate(study.tasks, 1):
        out = study.ticket_dir(task)
        done = sum(is_finished(out / n) for n in names)
        tag = f"[tickets {i}/{len(study.tasks)}] {task}"
        log.line(f"{tag}: {len(names)} runs ({done} finished) in {out}")
        before = snapshot(out / "super_ticket.safetensors")
        start = time.time()
        try:
            out.mkdir(parents=True, exist_ok=True)
            report = run_study(study.ticket_config(task), task, study.tickets.seeds, out, study.tickets.select_on,
                               dense_candidate=study.tickets.dense_candidate)
        except (UserError, KeyboardInterrupt):
            raise
        except Exception as exc:  # noqa: BLE001 - one task's failure must not stop the others
            log.failure(f"tickets-{task}", out, exc, time.time() - start, tag)
            reports[task] = None
            continue
        check_unchanged(before, out / "super_ticket.safetensors", runs, f"super ticket of {task}")
        ran = sum(is_finished(out / n) for n in names) - done
        st = report["super_ticket"]
        log.record(f"tickets-{task}", "ran" if ran else "skipped", time.time() - start, runs=ran)
        log.line(f"{tag}: super ticket = {st.get('kind', 'winning')} at sparsity {st['sparsity']:.2f} (params kept "
                 f"{100 * (1 - st['param_sparsity']):.1f}%), dev {st['dev_mean']:.2f} vs dense "
                 f"{report['dense']['dev_mean']:.2f}; {ran} runs trained in {duration(time.time() - start)}")
        reports[task] = report
    return reports


# ---------------------------------------------------------------- 2. masks


def _same_masks(a: Mask | dict[str, Mask], b: Mask | dict[str, Mask]) -> bool:
    if isinstance(a, Mask) != isinstance(b, Mask):
        return False
    if isinstance(a, Mask):
        return a.heads.shape == b.heads.shape and a.ffn.shape == b.ffn.shape and a.same_units(b)
    return list(a) == list(b) and all(_same_masks(a[t], b[t]) for t in a)


def snapshot(path: Path) -> Mask | dict[str, Mask] | None:
    """The mask file at ``path`` as it is now (None if there is none)."""
    return load_mask_file(path) if path.is_file() else None


def check_unchanged(before: Mask | dict[str, Mask] | None, path: Path, runs: list["PlannedRun"], what: str) -> None:
    """UserError if the mask at ``path`` changed while finished runs were trained with the previous one.

    Super tickets and shared masks are re-derived on every start (more ticket seeds, say, can move
    the selected sparsity); finished runs would then no longer match the mask the table names.
    """
    users = [r.run_dir for r in runs if r.mask == path and is_finished(r.run_dir)]
    if before is None or not users or _same_masks(before, load_mask_file(path)):
        return
    raise UserError(f"the {what} ({path}) changed, but {len(users)} finished run(s) were trained with the previous "
                    f"one (e.g. {users[0]}); delete those runs to retrain them, or restore the study's previous options")


def build_masks(study: StudyConfig, log: "Log", runs: list["PlannedRun"]) -> dict[str, Path]:
    """``{variant: mask file}`` for every ticket-sharing variant, rebuilt from the super tickets."""
    tickets = {task: study.ticket_dir(task) for task in study.tasks}
    paths = {}
    for variant in (v for v in study.mtl.variants if v != "dense"):
        path = study.out / "masks" / f"{slug(variant)}.safetensors"
        before = snapshot(path)
        report = construct(tickets, variant, path, path.with_suffix(".json"))
        check_unchanged(before, path, runs, f"{variant} mask")
        result = report["result"]
        log.line(f"[masks] {variant}: {path}, heads {result['heads_kept']}/{result['heads_total']}, "
                 f"FFN neurons {result['ffn_kept']}/{result['ffn_total']}, "
                 f"params kept {100 * (1 - result['param_sparsity']):.1f}%")
        paths[variant] = path
    return paths


# ---------------------------------------------------------------- 3. training runs


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


def plan_runs(study: StudyConfig) -> list[PlannedRun]:
    """Every training run, seed by seed (so each finished seed gives a complete set of rows)."""
    runs_dir = study.out / "runs"
    runs = []
    for seed in study.seeds:
        for v in study.mtl.variants:
            mask = None if v == "dense" else study.out / "masks" / f"{slug(v)}.safetensors"
            name = f"mtl-{slug(v)}-seed{seed}"
            runs.append(PlannedRun(name, variant_label(v), v, seed, list(study.tasks), mask, runs_dir / name))
        for kind in study.mtl.single_task:
            for task in study.tasks:
                mask = study.ticket_dir(task) / "super_ticket.safetensors" if kind == "super" else None
                name = f"single-{kind}-{task}-seed{seed}"
                runs.append(PlannedRun(name, single_label(kind), f"single-{kind}", seed, [task], mask, runs_dir / name))
    return runs


def train_runs(study: StudyConfig, runs: list[PlannedRun], log: "Log", skip: Callable[[PlannedRun], str | None]) -> None:
    """Train every run not finished; a progress line before and after each, with an ETA."""
    took: list[float] = []
    for i, run in enumerate(runs, 1):
        tag = f"[run {i}/{len(runs)}] {run.name}"
        if is_finished(run.run_dir):
            log.record(run.name, "skipped", 0.0)
            log.line(f"{tag}: finished before, skipped")
            continue
        reason = skip(run)
        if reason:
            log.record(run.name, "not run", 0.0, reason=reason)
            log.line(f"{tag}: not run ({reason})")
            continue
        restart = " (restarting an unfinished run)" if run.run_dir.exists() else ""
        log.line(f"{tag}: training {run.label}, seed {run.seed}{restart}")
        start = time.time()
        try:
            run.run_dir.mkdir(parents=True, exist_ok=True)
            atomic_write_json(RunDir(run.run_dir).study_info_path, run.info(study))
            resume = RunDir(run.run_dir).has_checkpoint  # a crashed run continues where it stopped
            run_training(run.config(study).replace(resume=resume))
        except NonFiniteLossError as exc:  # a diverged run is that run's failure, not the study's
            log.failure(run.name, run.run_dir, exc, time.time() - start, tag)
            continue
        except (UserError, KeyboardInterrupt):
            raise
        except Exception as exc:  # noqa: BLE001 - one failed run must not stop the study
            log.failure(run.name, run.run_dir, exc, time.time() - start, tag)
            continue
        took.append(time.time() - start)
        todo = sum(not is_finished(r.run_dir) for r in runs[i:])
        eta = f", ETA {duration(todo * sum(took) / len(took))} for {todo} more" if todo else ""
        metrics = RunDir(run.run_dir).metrics()
        log.record(run.name, "ran", took[-1])
        log.line(f"{tag}: done in {duration(took[-1])}: {format_metrics(metrics)}{eta}")


# ---------------------------------------------------------------- 4. report


def make_plots(study: StudyConfig, masks: dict[str, Path]) -> list[Path]:
    """Phase transitions, super-ticket and shared-mask heatmaps, super-ticket overlap -> ``OUT/plots/``."""
    plots = study.out / "plots"
    written = []
    tickets = {}
    for task in study.tasks:
        pt = study.ticket_dir(task) / "phase_transition.json"
        if pt.is_file():
            plot_phase_transition(pt, plots / f"phase-{task}.png")
            written.append(plots / f"phase-{task}.png")
        super_ticket = study.ticket_dir(task) / "super_ticket.safetensors"
        if super_ticket.is_file():
            tickets[task] = load_mask_file(super_ticket)
            plot_mask(tickets[task], plots / f"mask-{task}.png", f"{task} super ticket")
            written.append(plots / f"mask-{task}.png")
    for variant, path in masks.items():
        plot_mask(load_mask_file(path), plots / f"mask-{slug(variant)}.png", f"{variant} mask ({', '.join(study.tasks)})")
        written.append(plots / f"mask-{slug(variant)}.png")
    if len(tickets) > 1:
        plot_overlap(tickets, plots / "overlap.png")
        written.append(plots / "overlap.png")
    return written


def make_table(study: StudyConfig, runs: list[PlannedRun]) -> tuple[dict | None, list[Path]]:
    """``OUT/table.{md,csv,json}`` from the finished runs of the plan (runs of older plans are left out)."""
    records = [load_run(r.run_dir) for r in runs if is_finished(r.run_dir)]
    if not records:
        return None, []
    table = build_table(records)
    return table, write_table(table, study.out / "table.md", table_title(study))


def table_title(study: StudyConfig) -> str:
    return f"GLUE dev: study {study.name} ({study.model})"


class Log:
    """Progress lines on stdout, and what happened to each run (for the summary)."""

    def __init__(self) -> None:
        self.runs: list[dict[str, Any]] = []

    def line(self, text: str) -> None:
        print(text, flush=True)

    def record(self, name: str, status: str, seconds: float, **extra: Any) -> None:
        self.runs.append({"name": name, "status": status, "seconds": round(seconds, 1), **extra})

    def failure(self, name: str, run_dir: Path, exc: BaseException, seconds: float, tag: str) -> None:
        error = f"{type(exc).__name__}: {exc}".splitlines()[0]
        try:
            atomic_write_text(run_dir / "error.log", traceback.format_exc())
        except OSError:
            pass
        self.record(name, "failed", seconds, error=error)
        self.line(f"{tag}: FAILED after {duration(seconds)}: {error} (traceback in {run_dir / 'error.log'})")

    def count(self, status: str) -> int:
        return sum(r["status"] == status for r in self.runs)

    def summary(self) -> str:
        """``"tickets: 21 runs trained for 3 tasks; training runs: 2 trained, 1 finished before, ..."``."""
        tickets = [r for r in self.runs if r["name"].startswith("tickets-")]
        runs = [r for r in self.runs if not r["name"].startswith("tickets-")]
        parts = []
        if tickets:
            failed = sum(r["status"] == "failed" for r in tickets)
            parts.append(f"tickets: {sum(r.get('runs', 0) for r in tickets)} runs trained for {len(tickets)} tasks"
                         + (f", {failed} tasks failed" if failed else ""))
        counts = {s: sum(r["status"] == s for r in runs) for s in ("ran", "skipped", "failed", "not run")}
        parts.append(f"training runs: {counts['ran']} trained, {counts['skipped']} finished before, "
                     f"{counts['failed']} failed, {counts['not run']} not run")
        return "; ".join(parts)


# ---------------------------------------------------------------- the whole study


def print_plan(study: StudyConfig, runs: list[PlannedRun]) -> None:
    names = ticket_run_names(study)
    print(f"study {study.name}: model {study.model}, tasks {', '.join(study.tasks)}, seeds {study.seeds}, "
          f"output {study.out}")
    if study.mtl.needs_tickets:
        for task in study.tasks:
            done = sum(is_finished(study.ticket_dir(task) / n) for n in names)
            print(f"  tickets {task}: {len(names)} runs, {done} finished ({study.ticket_dir(task)})")
        print(f"  masks: {', '.join(v for v in study.mtl.variants if v != 'dense') or 'none'}")
    for run in runs:
        state = "finished" if is_finished(run.run_dir) else "unfinished, restarts" if run.run_dir.exists() else "to run"
        print(f"  {run.name}: {run.label}, seed {run.seed} [{state}]")


def run_whole_study(study: StudyConfig, dry_run: bool = False, report_only: bool = False) -> int:
    runs = plan_runs(study)
    if dry_run:
        print_plan(study, runs)
        return 0
    for run in runs:  # before any training: a changed config must not mix into finished runs
        check_finished(run.run_dir, run.config(study))
    if study.mtl.needs_tickets:
        check_ticket_runs(study)
    study.out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(study.out / "study.yaml", yaml.safe_dump(study.to_dict(), sort_keys=False))
    log, start = Log(), time.time()
    masks: dict[str, Path] = {}
    if not report_only:
        failed_tickets: list[str] = []
        if study.mtl.needs_tickets:
            reports = identify_tickets(study, log, runs)
            failed_tickets = [t for t, r in reports.items() if r is None]
            if not failed_tickets:
                masks = build_masks(study, log, runs)
        no_ticket = f"no super ticket for {', '.join(failed_tickets)}" if failed_tickets else None
        train_runs(study, runs, log, lambda run: no_ticket if run.mask is not None else None)
    else:
        masks = {v: study.out / "masks" / f"{slug(v)}.safetensors" for v in study.mtl.variants if v != "dense"}
        masks = {v: p for v, p in masks.items() if p.is_file()}
    table, table_paths = make_table(study, runs)
    plots = make_plots(study, masks)
    summary = {"study": study.name, "command": " ".join([Path(sys.executable).name, "-m", "experiments.run",
                                                         *sys.argv[1:]]),
               "seconds": round(time.time() - start, 1), "runs": log.runs,
               "masks": {v: str(p) for v, p in masks.items()}, "table": [str(p) for p in table_paths],
               "plots": [str(p) for p in plots]}
    atomic_write_json(study.out / "summary.json", summary)
    print(f"\nstudy {study.name} in {duration(time.time() - start)}: {log.summary()}")
    if table is not None:
        print(format_markdown(table, table_title(study)))
        print("wrote " + ", ".join(map(str, table_paths)))
    else:
        print("no finished training runs yet: no table")
    if plots:
        print(f"wrote {len(plots)} plots in {study.out / 'plots'}")
    if log.count("failed") or log.count("not run"):
        print("some runs did not finish: run the same command again to retry them (finished runs are kept)")
        return 1
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    def go() -> int:
        parser = OneLineParser(prog="python -m experiments.run", description=__doc__.splitlines()[0])
        parser.add_argument("study", type=Path, help="the study YAML, e.g. experiments/quickstart.yaml")
        parser.add_argument("--output-dir", default=None, help="override the study's output_dir")
        parser.add_argument("--glue-dir", default=None, help="override the study's glue_dir (default: $GLUE_DIR)")
        parser.add_argument("--dry-run", action="store_true", help="print the plan and what is finished; train nothing")
        parser.add_argument("--report-only", action="store_true",
                            help="train nothing; rebuild the table and plots from the finished runs")
        args = parser.parse_args(argv)
        overrides = {k: v for k, v in (("output_dir", args.output_dir), ("glue_dir", args.glue_dir)) if v}
        study = load_study(args.study, overrides)
        return run_whole_study(study, dry_run=args.dry_run, report_only=args.report_only)

    return run_main(go)


if __name__ == "__main__":
    sys.exit(main())
