"""Phase transition of structured tickets for one task, and its super ticket (resumable).

    python -m experiments.phase_transition --task rte --sparsities 0.1,0.2,...,0.7 --seeds 1,2,3 \
        --output-dir runs/pt-rte [--select-on holdout|dev] [any train.py option: --epochs, --lr, ...]

1. ``dense-seed{S}``: fine-tune the dense model for every seed; the first seed's model is scored
   and cut into winning / random / losing masks at every sparsity.
2. ``{kind}-{sparsity:.2f}-seed{S}``: rewind, that is, train from the pre-trained weights with
   the mask fixed. Winning and losing masks come from the scoring run. The random mask is redrawn
   for every seed, with exactly the winning ticket's counts.
3. ``phase_transition.json`` / ``.md``: mean ± std over seeds of the task score (the mean of the
   task's metrics) on dev and on the held-out slice of train. ``phase_transition.png``: dev score
   vs sparsity for the three kinds, with the dense line and the seed spread.
4. ``super_ticket.safetensors``: the winning ticket at the sparsity with the best mean score on the
   held-out slice of train (``--select-on dev`` to use dev instead).

A run whose ``metrics.json`` exists is skipped, so re-running the command resumes the study.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

from basics.cli import config_parser, parse_config, run_main
from basics.errors import UserError
from basics.io import atomic_write_json, atomic_write_text
from basics.stats import mean_std
from experiments.plots import plot_phase_transition
from masks.importance import load_importance
from masks.kinds import TICKET_KINDS
from masks.mask import load_mask, save_mask
from masks.tickets import cut_ticket
from mtl.config import TrainConfig
from mtl.run import ensure_run, prepare_output_dir, resolve_tasks
from mtl.rundir import RunDir, RunResult
from tasks.score import task_score

TAG = "phase-transition"


def run_once(config: TrainConfig, tag: str = TAG) -> RunResult:
    """The run's result, trained unless its folder holds it finished (:func:`mtl.run.ensure_run`)."""
    return ensure_run(config, tag=tag, say=lambda line: print(line, flush=True))


def scores_of(result: RunResult, task: str) -> dict[str, float | None]:
    """The task's score (mean of its metrics) on dev and on the held-out slice, and its dev metrics."""
    holdout = result.holdout_metrics or {}
    return {"dev": task_score(result.metrics[task]),
            "holdout": task_score(holdout[task]) if task in holdout else None,
            "dev_metrics": result.metrics[task]}


@dataclass(frozen=True)
class TicketRun:
    """One run of a phase-transition study: ``dense-seed{S}`` or ``{kind}-{sparsity:.2f}-seed{S}``."""

    kind: str  # "dense" or a ticket kind
    sparsity: float  # 0.0 for dense
    seed: int
    config: TrainConfig

    @property
    def name(self) -> str:
        return Path(self.config.output.output_dir).name

    @property
    def row(self) -> str:
        """The report row this run belongs to: ``dense`` or ``{kind}-{sparsity:.2f}``."""
        return "dense" if self.kind == "dense" else f"{self.kind}-{self.sparsity:.2f}"


def scoring_dir(out: Path, seeds: list[int]) -> Path:
    """The dense run that is scored and cut into tickets: the first seed's."""
    return out / f"dense-seed{seeds[0]}"


def random_mask_path(out: Path, sparsity: float, seed: int) -> Path:
    """Random tickets are drawn per seed (the winning ticket's counts): ``masks/random-{s}-seed{S}``."""
    return out / "masks" / f"random-{sparsity:.2f}-seed{seed}.safetensors"


def plan_study(base: TrainConfig, seeds: list[int], out: Path,
               control_sparsities: list[float] | None = None) -> list[TicketRun]:
    """Every run of the study, in order: dense runs (the first seed scores importance), then every ticket
    kind at every sparsity; random and losing tickets only at ``control_sparsities`` when given."""
    runs = [TicketRun("dense", 0.0, seed, base.replace(
        seed=seed, output_dir=str(out / f"dense-seed{seed}"), mask=None, score_importance=seed == seeds[0],
        save_model=False)) for seed in seeds]
    scorer = RunDir(scoring_dir(out, seeds))
    for sparsity in base.tickets.sparsities:
        for kind in base.tickets.ticket_kinds:
            if kind != "winning" and control_sparsities is not None and \
                    not any(abs(sparsity - c) < 1e-9 for c in control_sparsities):
                continue
            for seed in seeds:
                mask = random_mask_path(out, sparsity, seed) if kind == "random" else scorer.ticket_path(kind, sparsity)
                runs.append(TicketRun(kind, sparsity, seed, base.replace(
                    seed=seed, output_dir=str(out / f"{kind}-{sparsity:.2f}-seed{seed}"), mask=str(mask),
                    score_importance=False, save_model=False)))
    return runs


def draw_random_ticket(base: TrainConfig, out: Path, seeds: list[int], sparsity: float, seed: int) -> Path:
    """``masks/random-{s}-seed{S}``, drawn once from the scoring run's importance with the winning counts."""
    path = random_mask_path(out, sparsity, seed)
    if not path.is_file():
        scorer = RunDir(scoring_dir(out, seeds))
        template = load_mask(scorer.ticket_path("winning", sparsity))
        ffn = template.meta.ffn_sparsity
        save_mask(cut_ticket(load_importance(scorer.importance_path), "random", sparsity, shape=template.meta.shape,
                             seed=seed, ffn_sparsity=sparsity if ffn is None else ffn,
                             min_heads_per_layer=base.tickets.min_heads_per_layer,
                             granularity=base.tickets.ticket_granularity,
                             ffn_allocation=base.tickets.ffn_allocation), path)
    return path


def run_study(base: TrainConfig, task: str, seeds: list[int], out: Path, select_on: str,
              control_sparsities: list[float] | None = None) -> dict:
    """Train (or read back) every run of :func:`plan_study`, then write the report and the super ticket."""
    runs: dict[str, list[dict]] = {}
    for run in plan_study(base, seeds, out, control_sparsities):
        if run.kind == "random":
            draw_random_ticket(base, out, seeds, run.sparsity, run.seed)
        label = f"dense seed {run.seed}" if run.kind == "dense" else f"{run.row} seed {run.seed}"
        print(f"[{TAG}] {label}", flush=True)
        extra = {} if run.kind == "dense" else {"sparsity": run.sparsity}
        runs.setdefault(run.row, []).append({"seed": run.seed, **extra, **scores_of(run_once(run.config), task)})
    return summarize(runs, base, task, out, select_on, scoring_dir(out, seeds))


def summarize(runs: dict[str, list[dict]], base: TrainConfig, task: str, out: Path, select_on: str,
              scoring_dir: Path) -> dict:
    rows = []
    for name, items in runs.items():
        kind, sparsity = ("dense", 0.0) if name == "dense" else (name.rsplit("-", 1)[0], float(name.rsplit("-", 1)[1]))
        dev_mean, dev_std = mean_std([r["dev"] for r in items])
        hold = [r["holdout"] for r in items if r["holdout"] is not None]
        hold_mean, hold_std = mean_std(hold) if hold else (None, None)
        rows.append({"kind": kind, "sparsity": sparsity, "seeds": [r["seed"] for r in items],
                     "dev_mean": dev_mean, "dev_std": dev_std, "holdout_mean": hold_mean, "holdout_std": hold_std,
                     "dev": [r["dev"] for r in items], "dev_metrics": [r["dev_metrics"] for r in items]})
    key = "holdout_mean" if select_on == "holdout" else "dev_mean"
    winning = [r for r in rows if r["kind"] == "winning"]
    if any(r[key] is None for r in winning):
        raise UserError("--select-on holdout needs --holdout-fraction > 0")
    best = max(winning, key=lambda r: (r[key], r["sparsity"]))
    super_mask = load_mask(scoring_dir / "masks" / f"winning-{best['sparsity']:.2f}.safetensors")
    super_mask.meta = super_mask.meta.updated({"kind": "super_ticket", "selected_on": select_on,
                                               "selected_score": f"{best[key]:.3f}", "source_kind": "winning"})
    save_mask(super_mask, out / "super_ticket.safetensors")
    dense = next(r for r in rows if r["kind"] == "dense")
    report = {"task": task, "select_on": select_on, "seeds": dense["seeds"], "rows": rows,
              "super_ticket": {"sparsity": best["sparsity"], "score": best[key], "dev_mean": best["dev_mean"],
                               "dev_std": best["dev_std"], "param_sparsity": super_mask.meta.param_sparsity,
                               "path": str(out / "super_ticket.safetensors")},
              "dense": {"dev_mean": dense["dev_mean"], "dev_std": dense["dev_std"]},
              "config": base.to_dict(), "command": " ".join(sys.argv)}
    atomic_write_json(out / "phase_transition.json", report)
    atomic_write_text(out / "phase_transition.md", markdown(report))
    plot_phase_transition(report, out / "phase_transition.png")
    return report


def markdown(report: dict) -> str:
    rows = report["rows"]
    sparsities = sorted({r["sparsity"] for r in rows if r["kind"] != "dense"})
    by = {(r["kind"], r["sparsity"]): r for r in rows}
    dense = by[("dense", 0.0)]
    lines = [f"# Phase transition: {report['task']} (dev score, mean ± std over seeds {report['seeds']})", "",
             f"Task score = mean of the task's dev metrics. Dense: **{dense['dev_mean']:.2f} ± {dense['dev_std']:.2f}**.",
             f"Super ticket: winning at sparsity {report['super_ticket']['sparsity']:.2f} "
             f"(selected on {report['select_on']}; parameter sparsity {report['super_ticket']['param_sparsity']:.3f}), "
             f"dev {report['super_ticket']['dev_mean']:.2f} ± {report['super_ticket']['dev_std']:.2f}.", "",
             "| sparsity | winning | random | losing | winning (held-out) |", "|---|---|---|---|---|"]
    for s in sparsities:
        cells = []
        for kind in TICKET_KINDS.names():
            r = by.get((kind, s))
            cells.append(f"{r['dev_mean']:.2f} ± {r['dev_std']:.2f}" if r else "")
        w = by.get(("winning", s))
        cells.append(f"{w['holdout_mean']:.2f} ± {w['holdout_std']:.2f}" if w and w["holdout_mean"] is not None else "")
        lines.append(f"| {s:.2f} | " + " | ".join(cells) + " |")
    lines += ["", f"Command: `{report['command']}`", ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    def go() -> None:
        parser = config_parser("python -m experiments.phase_transition", __doc__.splitlines()[0], TrainConfig)
        parser.add_argument("--task", required=True, help="the task (one)")
        parser.add_argument("--seeds", default="1,2", help="comma-separated seeds")
        parser.add_argument("--select-on", default="holdout", choices=("holdout", "dev"),
                            help="choose the super ticket's sparsity on a held-out slice of train, or on dev")
        parser.add_argument("--control-sparsities", default=None,
                            help="sparsities at which random and losing tickets run (default: every sparsity)")
        config, args = parse_config(parser, TrainConfig, argv)
        if "," in args.task:
            raise UserError("--task takes one task; run one study per task")
        seeds = [int(s) for s in args.seeds.split(",") if s.strip()]
        if not seeds:
            raise UserError("--seeds needs at least one seed")
        holdout = config.data.holdout_fraction or (0.1 if args.select_on == "holdout" else 0.0)
        config = config.replace(tasks=[args.task], holdout_fraction=holdout)
        _, (task,) = resolve_tasks(config)
        out = prepare_output_dir(config.output.output_dir)
        controls = None
        if args.control_sparsities is not None:
            controls = [float(s) for s in args.control_sparsities.split(",") if s.strip()]
            unknown = [c for c in controls if not any(abs(c - s) < 1e-9 for s in config.tickets.sparsities)]
            if unknown:
                raise UserError(f"--control-sparsities {unknown} are not among --sparsities {config.tickets.sparsities}")
        report = run_study(config, task.name, seeds, out, args.select_on, controls)
        print(markdown(report))

    return run_main(go)


if __name__ == "__main__":
    sys.exit(main())
