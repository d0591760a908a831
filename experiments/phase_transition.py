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
4. ``super_ticket.safetensors``: the candidate with the best mean task score on the held-out slice of
   train (``--select-on dev`` to use dev instead): the winning tickets and dense itself (sparsity 0;
   ``--no-dense-candidate`` leaves it out). When dense wins, the file is an all-keep mask of kind
   ``super_ticket``. The report records the choice and every candidate's held-out and dev scores, the
   paired difference of every row to dense (95 % t-interval) and the constant-prediction baseline.

The runs execute on the study engine (:mod:`experiments.engine`): ``--jobs N`` runs at once (default:
one per core), ``--backend ray`` on a Ray cluster, ``--results-dir DIR`` keeps a committable copy of
every finished run, ``--dry-run`` prints the plan with its estimated cost. A finished run is never
trained again, so re-running the command resumes the study.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from pathlib import Path

from basics.cli import config_parser, parse_config, run_main
from basics.errors import UserError
from basics.io import atomic_write_json, atomic_write_text
from basics.stats import direction, mean_std
from experiments.baselines import baselines_for
from experiments.engine.jobs import Job, JobGraph
from experiments.engine.options import EngineOptions, add_engine_flags, engine_options, print_study_report, run_jobs
from experiments.engine.scheduler import raise_if_failed
from experiments.glue_table import TASK_NAMES
from experiments.plots import plot_phase_transition
from experiments.report_stats import baseline_legend, baseline_of, by_seed, format_versus, learnt_mark, pm, versus
from masks.importance import load_importance
from masks.kinds import TICKET_KINDS
from masks.mask import Mask, load_mask, save_mask
from masks.tickets import cut_ticket
from mtl.config import TrainConfig
from mtl.model_card import command_line
from mtl.run import ensure_run, prepare_output_dir, resolve_tasks
from mtl.rundir import RunDir, RunResult
from tasks.baseline import Baseline, is_learnt
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


def collect_runs(plan: list[TicketRun], task: str) -> dict[str, list[dict]]:
    """``{row: [one record per seed]}`` of the finished runs of ``plan`` (scores on dev and held out)."""
    runs: dict[str, list[dict]] = {}
    for run in plan:
        extra = {} if run.kind == "dense" else {"sparsity": run.sparsity}
        result = RunDir(run.config.output.output_dir).result()
        runs.setdefault(run.row, []).append({"seed": run.seed, **extra, **scores_of(result, task)})
    return runs


def report_step(base: TrainConfig, task: str, seeds: list[int], out: Path, select_on: str,
                control_sparsities: list[float] | None, dense_candidate: bool = True) -> None:
    """The study's last step: ``phase_transition.{json,md,png}`` and ``super_ticket.safetensors``."""
    plan = plan_study(base, seeds, out, control_sparsities)
    summarize(collect_runs(plan, task), base, task, out, select_on, scoring_dir(out, seeds),
              dense_candidate=dense_candidate)


def report_files(out: Path) -> tuple[Path, ...]:
    return tuple(out / name for name in ("phase_transition.json", "phase_transition.md", "phase_transition.png",
                                         "super_ticket.safetensors"))


def study_jobs(base: TrainConfig, task: str, seeds: list[int], out: Path, select_on: str,
               control_sparsities: list[float] | None = None, prefix: str = "", dense_candidate: bool = True) -> list[Job]:
    """The study as jobs named ``{prefix}{run}``: the dense runs (the first seed's also scores and cuts
    the tickets), a step drawing each random ticket, every ticket run, and the report step."""
    plan = plan_study(base, seeds, out, control_sparsities)
    scorer = RunDir(scoring_dir(out, seeds))
    first = f"{prefix}{scorer.name}"
    kinds, sparsities = base.tickets.ticket_kinds, base.tickets.sparsities
    scorer_needs = (scorer.importance_path, *(scorer.ticket_path(k, s) for k in kinds for s in sparsities))
    jobs: list[Job] = []
    for run in plan:
        labels = {"task": task, "kind": run.kind, "seed": run.seed}
        if run.kind != "dense":
            labels["sparsity"] = run.sparsity
        deps: tuple[str, ...] = () if run.kind == "dense" else (first,)
        if run.kind == "random":
            draw = f"{prefix}masks/random-{run.sparsity:.2f}-seed{run.seed}"
            jobs.append(Job(draw, deps=(first,), action=draw_random_ticket,
                            args=(base, out, seeds, run.sparsity, run.seed),
                            outputs=(random_mask_path(out, run.sparsity, run.seed),)))
            deps = (draw,)
        needs = scorer_needs if run.config.tickets.score_importance else ()
        jobs.append(Job(prefix + run.name, deps=deps, config=run.config, needs=needs, labels=labels))
    jobs.append(Job(f"{prefix}phase_transition", deps=tuple(prefix + r.name for r in plan), action=report_step,
                    args=(base, task, seeds, out, select_on, control_sparsities, dense_candidate),
                    outputs=report_files(out)))
    return jobs


def run_study(base: TrainConfig, task: str, seeds: list[int], out: Path, select_on: str,
              control_sparsities: list[float] | None = None, engine: EngineOptions | None = None,
              dense_candidate: bool = True) -> dict | None:
    """Run (or resume) the whole study on the study engine; the report (None for a dry run)."""
    graph = JobGraph(study_jobs(base, task, seeds, out, select_on, control_sparsities,
                                dense_candidate=dense_candidate))
    report = run_jobs(graph, engine or EngineOptions(), out)
    if report is None:
        return None
    raise_if_failed(report)
    return json.loads((out / "phase_transition.json").read_text(encoding="utf-8"))


def summarize(runs: dict[str, list[dict]], base: TrainConfig, task: str, out: Path, select_on: str,
              scoring_dir: Path, *, dense_candidate: bool = True, baselines: dict[str, Baseline] | None = None) -> dict:
    """``phase_transition.{json,md,png}`` and ``super_ticket.safetensors`` from the runs' scores.

    ``runs``: ``{row: [one dict per seed: seed, dev, holdout, dev_metrics (, sparsity)]}``, rows ``dense``
    and ``{kind}-{sparsity:.2f}``. The super ticket is the candidate with the best mean task score on
    ``select_on`` (held-out slice or dev): the winning tickets and, with ``dense_candidate`` (the default),
    dense itself; ties go to the sparser. When dense wins, the super ticket is an all-keep mask (kind
    ``super_ticket``, sparsity 0). ``baselines``: the task's constant-prediction baseline (default: read
    from the dev files, :func:`experiments.baselines.baselines_for`; none when they cannot be read).
    """
    rows = [_row(name, items) for name, items in runs.items()]
    dense = next(r for r in rows if r["kind"] == "dense")
    for row in rows:
        row["vs_dense"] = versus(by_seed(row["seeds"], row["dev"]), by_seed(dense["seeds"], dense["dev"]))
    key = "holdout_mean" if select_on == "holdout" else "dev_mean"
    candidates = super_ticket_candidates(rows, dense_candidate)
    if any(r[key] is None for r in candidates):
        raise UserError("--select-on holdout needs --holdout-fraction > 0")
    best = max(candidates, key=lambda r: selection_key(r, key))
    template = load_mask(scoring_dir / "masks" / f"winning-{_winning_sparsities(rows)[0]:.2f}.safetensors")
    if best["kind"] == "dense":  # keep everything: the task's best model is the dense one
        super_mask = Mask.ones(template.meta.shape, kind="super_ticket", tasks=template.meta.tasks,
                               model=template.meta.model, param_sparsity=0.0)
    else:
        super_mask = load_mask(scoring_dir / "masks" / f"winning-{best['sparsity']:.2f}.safetensors")
    super_mask.meta = super_mask.meta.updated({"kind": "super_ticket", "selected_on": select_on,
                                               "selected_score": f"{best[key]:.3f}", "source_kind": best["kind"],
                                               "dense_candidate": str(dense_candidate).lower()})
    save_mask(super_mask, out / "super_ticket.safetensors")
    baseline = (baselines if baselines is not None else baselines_for(base, [task])).get(task)
    report = {"task": task, "select_on": select_on, "seeds": dense["seeds"], "rows": rows,
              "super_ticket": {"kind": best["kind"], "sparsity": best["sparsity"], "score": best[key],
                               "dev_mean": best["dev_mean"], "dev_std": best["dev_std"],
                               "param_sparsity": super_mask.meta.param_sparsity, "dense_candidate": dense_candidate,
                               "candidates": [_candidate(r) for r in candidates],
                               "path": str(out / "super_ticket.safetensors")},
              "dense": {"dev_mean": dense["dev_mean"], "dev_std": dense["dev_std"]},
              "baseline": baseline.to_dict() if baseline is not None else None,
              "config": base.to_dict(), "command": command_line()}
    report["command"] = _first_command(report, out / "phase_transition.json")
    atomic_write_json(out / "phase_transition.json", report)
    atomic_write_text(out / "phase_transition.md", markdown(report))
    plot_phase_transition(report, out / "phase_transition.png")
    return report


def _first_command(report: dict, path: Path) -> str:
    """The command of the report already at ``path`` when everything else in it is what ``report`` says (a
    resumed study rewrites the same report: its first command stays, and the file does not change); else
    ``report``'s."""
    if path.is_file():
        try:
            before = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return report["command"]
        if {**before, "command": None} == {**json.loads(json.dumps(report)), "command": None}:
            return before.get("command", report["command"])
    return report["command"]


def _row(name: str, items: list[dict]) -> dict:
    """One report row: mean ± std over seeds of the dev and held-out task scores, per-seed values."""
    kind, sparsity = ("dense", 0.0) if name == "dense" else (name.rsplit("-", 1)[0], float(name.rsplit("-", 1)[1]))
    dev_mean, dev_std = mean_std([r["dev"] for r in items])
    hold = [r["holdout"] for r in items if r["holdout"] is not None]
    hold_mean, hold_std = mean_std(hold) if hold else (None, None)
    return {"kind": kind, "sparsity": sparsity, "seeds": [r["seed"] for r in items],
            "dev_mean": dev_mean, "dev_std": dev_std, "holdout_mean": hold_mean, "holdout_std": hold_std,
            "dev": [r["dev"] for r in items], "holdout": [r["holdout"] for r in items],
            "dev_metrics": [r["dev_metrics"] for r in items]}


def _winning_sparsities(rows: list[dict]) -> list[float]:
    return sorted(r["sparsity"] for r in rows if r["kind"] == "winning")


def super_ticket_candidates(rows: list[dict], dense_candidate: bool = True) -> list[dict]:
    """The rows the super ticket is chosen among: the winning tickets, and dense when ``dense_candidate``."""
    return [r for r in rows if r["kind"] == "winning" or (dense_candidate and r["kind"] == "dense")]


TIE_DIGITS = 9  # scores equal to this many decimals are a tie (a mean of the same correct counts, summed in another order)


def selection_key(row: dict, key: str) -> tuple[float, float]:
    """How a super-ticket candidate ranks: its mean score on ``key``, then its sparsity (ties go to the sparser).
    The score is rounded to :data:`TIE_DIGITS` decimals, so that two means of the same numbers of correct
    predictions tie even when floating-point sums differ in the last bit."""
    return round(row[key], TIE_DIGITS), row["sparsity"]


def _candidate(row: dict) -> dict:
    return {"kind": row["kind"], "sparsity": row["sparsity"], "holdout_mean": row["holdout_mean"],
            "dev_mean": row["dev_mean"]}


def selection(report: dict, dense_candidate: bool = True) -> dict:
    """The candidate :func:`summarize` picks from ``report``'s rows under today's rule (a report of an
    older version, which knew no dense candidate, is re-read this way too)."""
    key = "holdout_mean" if report["select_on"] == "holdout" else "dev_mean"
    candidates = [r for r in super_ticket_candidates(report["rows"], dense_candidate) if r[key] is not None]
    best = max(candidates, key=lambda r: selection_key(r, key))
    return {"kind": best["kind"], "sparsity": best["sparsity"], "score": best[key], "dev_mean": best["dev_mean"]}


def dense_differences(report: dict) -> dict[tuple[str, float], dict | None]:
    """``{(kind, sparsity): dev score - dense dev score, paired by seed}`` (:func:`experiments.report_stats.versus`)."""
    rows = report["rows"]
    dense = next(r for r in rows if r["kind"] == "dense")
    reference = by_seed(dense["seeds"], dense["dev"])
    return {(r["kind"], r["sparsity"]): versus(by_seed(r["seeds"], r["dev"]), reference) for r in rows}


def transition(report: dict, baseline: Baseline | None) -> dict:
    """Whether the Super Tickets paper's phase transition appears in ``report``: the winning ticket's dev score
    rises detectably above dense at some sparsity, then falls detectably below that peak at a higher one. Every
    "detectably" is a paired 95 % t-interval over the seeds that excludes 0 (winning − dense; winning at the
    higher sparsity − winning at the peak). Returns the verdict and what it rests on."""
    rows = report["rows"]
    dense = next(r for r in rows if r["kind"] == "dense")
    winning = sorted((r for r in rows if r["kind"] == "winning"), key=lambda r: r["sparsity"])
    diffs = dense_differences(report)
    above = [r["sparsity"] for r in winning if direction(diffs[("winning", r["sparsity"])]) == 1]
    below = [r["sparsity"] for r in winning if direction(diffs[("winning", r["sparsity"])]) == -1]
    dense_learnt = None if baseline is None else bool(is_learnt(dense["dev_mean"], baseline))
    peak = max((r for r in winning if r["sparsity"] in above), key=lambda r: (r["dev_mean"], -r["sparsity"]), default=None)
    fall = None
    if peak is not None:
        for r in winning:
            if r["sparsity"] > peak["sparsity"]:
                d = versus(by_seed(r["seeds"], r["dev"]), by_seed(peak["seeds"], peak["dev"]))
                if direction(d) == -1:
                    fall = {"sparsity": r["sparsity"], "vs_peak": d}
                    break
    if dense_learnt is False:
        verdict = "cannot be judged: dense is not learnt"
    elif peak is not None and fall is not None:
        verdict = "appears"
    elif peak is not None:
        verdict = "rises above dense, no detectable fall after it"
    else:
        verdict = "does not appear: no winning ticket is detectably above dense"
    return {"task": report["task"], "seeds": len(dense["seeds"]), "dense_learnt": dense_learnt,
            "above": above, "below": below, "peak": None if peak is None else peak["sparsity"],
            "peak_vs_dense": None if peak is None else diffs[("winning", peak["sparsity"])], "fall": fall,
            "verdict": verdict}


def transition_table(reports: list[dict], baselines: dict[str, Baseline]) -> list[str]:
    """Markdown lines: one row per task's report with :func:`transition`'s verdict and what it rests on."""
    lines = ["| task | seeds | dense learnt | winning detectably above dense at | peak − dense | "
             "detectable fall after the peak | winning detectably below dense at | phase transition |",
             "|---|---:|---|---|---|---|---|---|"]
    spars = lambda xs: ", ".join(f"{x:.2f}" for x in xs) or "none"  # noqa: E731
    for report in reports:
        t = transition(report, baselines.get(report["task"]))
        learnt = {None: "–", True: "yes", False: "no"}[t["dense_learnt"]]
        fall = "–" if t["peak"] is None else (
            "none" if t["fall"] is None else f"{t['fall']['sparsity']:.2f}: {format_versus(t['fall']['vs_peak'])}")
        peak = "–" if t["peak"] is None else f"{t['peak']:.2f}: {format_versus(t['peak_vs_dense'])}"
        lines.append(f"| {TASK_NAMES.get(report['task'], report['task'])} | {t['seeds']} | {learnt} | {spars(t['above'])} | {peak} | {fall} | "
                     f"{spars(t['below'])} | {t['verdict']} |")
    lines += ["", "Detectably: the paired 95 % t-interval over the seeds excludes 0 (winning − dense; for the fall, "
              "winning at the higher sparsity − winning at the peak, the best winning ticket detectably above dense)."]
    return lines


def super_ticket_line(report: dict) -> str:
    """Which ticket was chosen, among what, on which scores."""
    st = report["super_ticket"]
    on = report["select_on"]
    key = "holdout_mean" if on == "holdout" else "dev_mean"
    dense = next(r for r in report["rows"] if r["kind"] == "dense")
    what = "dense (sparsity 0: the all-keep mask)" if st.get("kind", "winning") == "dense" \
        else f"winning at sparsity {st['sparsity']:.2f}"
    among = "dense and the winning tickets" if st.get("dense_candidate", False) else "the winning tickets only"
    text = (f"Super ticket: {what}, chosen on {on} among {among} ({on} score {st['score']:.2f}; dense "
            f"{_num(dense[key])}); parameter sparsity {st['param_sparsity'] or 0.0:.3f}, dev "
            f"{st['dev_mean']:.2f} ± {st['dev_std']:.2f}.")
    if "dense_candidate" not in st:  # written before dense was a candidate
        now = selection(report)
        now_what = "dense" if now["kind"] == "dense" else f"winning at {now['sparsity']:.2f}"
        text += (f" This report predates dense as a candidate; with dense as a candidate the choice is "
                 f"{now_what} ({on} {now['score']:.2f}).")
    return text


def _num(x: float | None) -> str:
    return "–" if x is None else f"{x:.2f}"


def score_table(report: dict, baseline: Baseline | None) -> list[str]:
    """Markdown lines: dev score per kind and sparsity (mean ± std, † = not learnt), the held-out score of
    the winning tickets and of dense (what the super ticket was chosen on)."""
    rows = report["rows"]
    sparsities = sorted({r["sparsity"] for r in rows if r["kind"] != "dense"})
    by = {(r["kind"], r["sparsity"]): r for r in rows}
    dense = by[("dense", 0.0)]
    kinds = TICKET_KINDS.names()

    def cell(r: dict | None) -> str:
        return pm(r["dev_mean"], r["dev_std"]) + learnt_mark(r["dev_mean"], baseline) if r else ""

    lines = ["| sparsity | " + " | ".join(kinds) + " | winning (held-out) |", "|---|" + "---|" * (len(kinds) + 1),
             f"| 0 (dense) | {cell(dense)} |" + " |" * (len(kinds) - 1) + f" {pm(dense['holdout_mean'], dense['holdout_std'])} |"]
    for s in sparsities:
        w = by.get(("winning", s))
        held = pm(w["holdout_mean"], w["holdout_std"]) if w and w["holdout_mean"] is not None else ""
        lines.append(f"| {s:.2f} | " + " | ".join(cell(by.get((k, s))) for k in kinds) + f" | {held} |")
    return lines


def difference_table(report: dict) -> list[str]:
    """Markdown lines: each kind's dev score minus dense's, paired by seed (mean and 95 % t-interval)."""
    rows = report["rows"]
    sparsities = sorted({r["sparsity"] for r in rows if r["kind"] != "dense"})
    kinds = TICKET_KINDS.names()
    diffs = dense_differences(report)
    seeds = len(next(r for r in rows if r["kind"] == "dense")["seeds"])
    lines = [f"Paired difference to dense on dev (same seeds; mean and 95 % t-interval over {seeds} seed(s); an "
             "interval containing 0 means no difference was detected):", "",
             "| sparsity | " + " | ".join(kinds) + " |", "|---|" + "---|" * len(kinds)]
    for s in sparsities:
        lines.append(f"| {s:.2f} | " + " | ".join(format_versus(diffs[k, s]) if (k, s) in diffs else "" for k in kinds) + " |")
    return lines


def markdown(report: dict, baselines: dict[str, Baseline] | None = None) -> str:
    """The report as markdown: dev score per kind and sparsity († = not learnt), the held-out scores the
    super ticket was chosen on, and each row's paired difference to dense with its 95 % t-interval."""
    dense = next(r for r in report["rows"] if r["kind"] == "dense")
    baseline = baseline_of(report, report["task"], baselines)
    lines = [f"# Phase transition: {report['task']} (dev task score, mean ± std over seeds {report['seeds']})", "",
             f"Task score = mean of the task's dev metrics (`tasks/score.py`). Dense: **{pm(dense['dev_mean'], dense['dev_std'])}**"
             f"{learnt_mark(dense['dev_mean'], baseline)}.", "", super_ticket_line(report), "", baseline_legend(baseline), "",
             *score_table(report, baseline), "", *difference_table(report), "", f"Command: `{report['command']}`", ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    def go() -> int:
        parser = config_parser("python -m experiments.phase_transition", __doc__.splitlines()[0], TrainConfig)
        parser.add_argument("--task", required=True, help="the task (one)")
        parser.add_argument("--seeds", default="1,2", help="comma-separated seeds")
        parser.add_argument("--select-on", default="holdout", choices=("holdout", "dev"),
                            help="choose the super ticket's sparsity on a held-out slice of train, or on dev")
        parser.add_argument("--no-dense-candidate", dest="dense_candidate", action="store_false",
                            help="choose the super ticket among the winning tickets only (default: dense too)")
        parser.add_argument("--control-sparsities", default=None,
                            help="sparsities at which random and losing tickets run (default: every sparsity)")
        add_engine_flags(parser)
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
        engine = engine_options(args)
        return print_study_report(lambda: run_study(config, task.name, seeds, out, args.select_on, controls, engine,
                                                    args.dense_candidate), markdown)

    return run_main(go)


if __name__ == "__main__":
    sys.exit(main())
