"""Unstructured lottery tickets for one task (Chen et al. 2020): IMP, OMP, random pruning, transfer (resumable).

    python -m experiments.lottery --task rte --method imp,omp,random --sparsities 0.2,0.4,0.6 --seeds 1,2 \
        --output-dir runs/lt-rte [--config experiments/lottery_cpu.yaml] [--rate 0.1 --rounds N] \
        [--omp-source finetuned|pretrained] [--transfer-from runs/lt-mrpc] [any train.py option]

Every run builds its model from the pre-trained weights, so training with a weight mask rewinds the
subnetwork to the pre-trained values (the paper's setting). Per seed S:

1. ``dense-seed{S}``: fine-tune the dense model; it writes the one-shot magnitude masks of its
   trained weights (``weight_masks/omp-{s}``) that OMP and IMP's first round need.
2. ``imp-{s}-seed{S}``: iterative magnitude pruning. Round k trains with the mask that round k-1
   wrote (round 1: the dense run's mask at ``--rate``) and writes the next round's mask, pruning
   another ``--rate`` of the original weight count among its surviving weights. IMP's sparsities
   are its rounds: ``rate, 2*rate, ..., rounds*rate``.
3. ``omp-{s}-seed{S}``: one-shot magnitude pruning at every ``--sparsities`` value, of the dense
   run's fine-tuned weights (``--omp-source finetuned``) or of the pre-trained ones (``pretrained``).
4. ``random-{s}-seed{S}``: the same number of weights pruned uniformly at random, drawn per seed
   (``masks/random-{s}-seed{S}``; one seed's draws are nested across sparsities).
5. ``transfer-{method}-{s}-seed{S}`` (``--transfer-from DIR``): this task trained with the masks
   of another task's lottery study in DIR (its seed S, else its first seed), per method and sparsity.

Pruning is global over the encoder's Q/K/V/O, FFN and pooler matrices (``--weight-mask-include``).
A run folder holding ``metrics.json`` (and, for the dense run and IMP rounds, the masks it must
write) is finished and skipped, so re-running the command resumes the study. A finished run made
with other options stops the study with a one-line error.

Score = the task score (:mod:`tasks.score`: the mean of the task's dev metrics; MRPC accuracy and F1,
STS-B Pearson and Spearman), as in every other table. A method is *matching* at a sparsity when its
mean over seeds is at least the dense mean minus the dense standard deviation over seeds. Every row
also carries its paired difference to dense on the same seeds (95 % t-interval) and, in the table, a
† when its score is not above the constant-prediction baseline by one dev-set standard error. OMP rows
name their source (fine-tuned or pre-trained weights).

Output in the output directory: ``lottery.json`` (every run's dev metrics and score, mean ± std per
method and sparsity, the matching flags, the command), ``lottery.md`` (the table), ``lottery.png``. A
lone ``--`` may separate the study's options from the train.py ones.
"""

from __future__ import annotations

import dataclasses
import json
import shlex
import statistics
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from basics.cli import config_parser, run_main
from basics.errors import UserError
from basics.io import atomic_write_json, atomic_write_text
from basics.options import add_config_flags, build_config, options_of, read_yaml
from basics.stats import mean_std
from experiments.baselines import baselines_for
from experiments.engine.jobs import Job, JobGraph
from experiments.engine.options import EngineOptions, add_engine_flags, engine_options, print_study_report, run_jobs
from experiments.engine.scheduler import raise_if_failed
from experiments.plots import dense_band, finish_curves, line_with_band, pyplot
from experiments.report_stats import baseline_legend, baseline_of, by_seed, format_versus, learnt_mark, pm, versus
from masks.magnitude import (
    imp_schedule,
    magnitude_mask,
    magnitude_mask_path,
    random_mask,
)
from masks.meta import format_fraction
from masks.weight_mask import (
    WeightMask,
    load_weight_mask,
    prunable_weights,
    save_weight_mask,
)
from mtl.config import TrainConfig
from mtl.model import load_encoder
from mtl.run import prepare_output_dir, resolve_tasks
from mtl.rundir import RunDir, RunResult
from tasks.baseline import Baseline
from tasks.score import task_score
from tasks.task_def import TaskDef

PROG = "python -m experiments.lottery"
METHODS = ("imp", "omp", "random")
OMP_SOURCES = ("finetuned", "pretrained")
OMP_WORDS = {"finetuned": "fine-tuned", "pretrained": "pre-trained"}
COLORS = {"imp": "tab:green", "omp": "tab:orange", "random": "tab:blue"}


@dataclass
class LotteryConfig:
    """The study's own options (train.py options live in :class:`mtl.config.TrainConfig`)."""

    task: str = field(default="", metadata={"help": "the task (one)"})
    method: list[str] = field(default_factory=lambda: list(METHODS),
                              metadata={"help": f"pruning methods, comma-separated: {', '.join(METHODS)}"})
    seeds: list[int] = field(default_factory=lambda: [1, 2], metadata={"help": "comma-separated seeds"})
    rate: float = field(default=0.1, metadata={"help": "IMP: fraction of the original weights pruned per round"})
    rounds: int | None = field(default=None, metadata={"help": "IMP rounds (default: enough to reach the "
                                                       "largest --sparsities value)"})
    omp_source: str = field(default="finetuned", metadata={"help": "OMP prunes the dense run's fine-tuned "
                                                           "weights or the pre-trained ones: finetuned, pretrained"})
    transfer_from: str | None = field(default=None, metadata={"help": "another task's lottery study directory: "
                                                              "also train this task with its masks"})

    def __post_init__(self) -> None:
        if not self.task:
            raise UserError("--task is required, e.g. --task rte")
        if "," in self.task:
            raise UserError("--task takes one task; run one study per task")
        if not self.method:
            raise UserError(f"--method needs at least one of {', '.join(METHODS)}")
        for m in self.method:
            if m not in METHODS:
                raise UserError(f"--method must be among {', '.join(METHODS)}; got {m!r}")
        self.method = [m for m in METHODS if m in self.method]  # canonical order, no duplicates
        if not self.seeds:
            raise UserError("--seeds needs at least one seed")
        if len(set(self.seeds)) != len(self.seeds):
            raise UserError(f"--seeds has a duplicate: {self.seeds}")
        if self.omp_source not in OMP_SOURCES:
            raise UserError(f"--omp-source must be one of {', '.join(OMP_SOURCES)}; got {self.omp_source!r}")
        if not 0.0 < self.rate < 1.0:
            raise UserError(f"--rate must be in (0, 1), got {self.rate}")
        if self.rounds is not None and self.rounds < 1:
            raise UserError(f"--rounds must be >= 1, got {self.rounds}")
        if self.transfer_from is not None and not (Path(self.transfer_from).expanduser() / "lottery.json").is_file():
            raise UserError(f"--transfer-from {self.transfer_from}: no lottery.json there (run experiments.lottery "
                            "for that task first)")

    def imp_sparsities(self, sparsities: Sequence[float]) -> list[float]:
        """IMP's sparsity after each round; without ``--rounds``, enough rounds to reach max(sparsities)."""
        rounds = self.rounds
        if rounds is None:
            top = max(sparsities, default=self.rate)
            rounds = max(1, sum(1 for k in range(1, 1000) if round(k * self.rate, 10) <= top + 1e-9))
        return imp_schedule(self.rate, rounds)


def is_matching(mean: float, dense_mean: float, dense_std: float) -> bool:
    """A subnetwork is *matching* when its mean score is at most one seed standard deviation below the
    dense model's mean: ``mean >= dense_mean - dense_std`` (Chen et al. 2020: "within one standard
    deviation of the full network"; scoring above dense is matching too)."""
    return mean >= dense_mean - dense_std - 1e-9


def run_score(result: RunResult, task: TaskDef) -> float:
    """A run's task score on dev (:func:`tasks.score.task_score`: the mean of the task's dev metrics)."""
    return task_score(result.metrics[task.name])


# ---------------------------------------------------------------- runs


@dataclass
class Study:
    """A resolved study: options, its task, output folder, the sparsities per method, and the runs'
    results as they come in (``runs[(method, sparsity)]``: one record per seed)."""

    base: TrainConfig
    lottery: LotteryConfig
    task: TaskDef
    out: Path
    sparsities: list[float]  # OMP and random
    imp: list[float]  # IMP, one per round
    runs: dict[tuple[str, float], list[dict]] = field(default_factory=dict)
    _pretrained: dict | None = field(default=None, repr=False)

    def config(self, name: str, seed: int, weight_mask: Path | None = None, write: Sequence[float] = ()) -> TrainConfig:
        """The train.py options of run ``name``: fresh heads, the study's options, no model saved."""
        return self.base.replace(tasks=[self.task.name], seed=seed, output_dir=str(self.out / name),
                                   mask=None, weight_mask=str(weight_mask) if weight_mask else None,
                                   write_magnitude_masks=sorted(set(write)), score_importance=False,
                                   save_model=False, resume=False)

    def record(self, method: str, sparsity: float, seed: int, result: RunResult, mask: Path | None, **extra) -> None:
        """Keep one run's score (the task's main dev metric) and the mask it trained with."""
        info = result.weight_mask or {}
        self.runs.setdefault((method, sparsity), []).append({
            "seed": seed, "score": run_score(result, self.task), "dev_metrics": result.metrics[self.task.name],
            "mask": _relative(mask, self.out) if mask else None, "kept": info.get("kept"), "total": info.get("total"),
            "actual_sparsity": info.get("sparsity", 0.0), **extra})

    def pretrained(self) -> dict:
        """``{name: weight}`` of the pre-trained encoder's prunable matrices (loaded once)."""
        if self._pretrained is None:
            self._pretrained = prunable_weights(load_encoder(self.base.model.name)[0], self.base.tickets.weight_mask_include)
        return self._pretrained

    def pretrained_shapes(self) -> dict[str, tuple[int, ...]]:
        return {n: tuple(w.shape) for n, w in self.pretrained().items()}

    def own_mask(self, name: str, make: Callable[[], WeightMask]) -> Path:
        """``OUT/masks/{name}.safetensors``, written from ``make()`` unless it exists (masks the study draws)."""
        path = self.out / "masks" / f"{name}.safetensors"
        if not path.is_file():
            save_weight_mask(make(), path)
        return path

    def meta(self, source: str) -> dict[str, str]:
        return {"model": self.base.model.name, "include": ",".join(self.base.tickets.weight_mask_include), "source": source}


def _relative(path: Path, root: Path) -> str:
    """``path`` relative to ``root`` where it lies inside, else as it is."""
    try:
        return Path(path).relative_to(root).as_posix()
    except ValueError:
        return str(path)


@dataclass(frozen=True)
class LotteryRun:
    """One training run of the study: ``{method}-{sparsity}-seed{S}`` (``dense-seed{S}``)."""

    method: str  # dense, imp, omp, random, transfer-{method}
    sparsity: float
    seed: int
    config: TrainConfig
    mask: Path | None  # the weight mask it trains with
    needs: tuple[Path, ...] = ()  # masks it must write (dense: OMP / IMP round 1; IMP round k: round k+1)
    after: str | None = None  # the run whose output mask it trains with (dense, or the previous IMP round)
    draw: tuple[str, float, int] | None = None  # a mask the study draws first: (kind, sparsity, seed)
    source_task: str | None = None  # transfer runs: the task the masks came from

    @property
    def name(self) -> str:
        return Path(self.config.output.output_dir).name


def drawn_mask_name(kind: str, sparsity: float, seed: int) -> str:
    """``omp-pretrained-{s}`` (one per sparsity) or ``random-{s}-seed{S}`` (one per seed)."""
    if kind == "omp-pretrained":
        return f"omp-pretrained-{format_fraction(sparsity)}"
    return f"random-{format_fraction(sparsity)}-seed{seed}"


def plan_lottery(study: Study, transfer: list[tuple[str, float, str, dict[int, Path]]]) -> list[LotteryRun]:
    """Every run of the study, seed by seed."""
    lot, out = study.lottery, study.out
    plan: list[LotteryRun] = []
    for seed in lot.seeds:
        writes = [*(study.sparsities if "omp" in lot.method and lot.omp_source == "finetuned" else []),
                  *(study.imp[:1] if "imp" in lot.method else [])]
        dense = out / f"dense-seed{seed}"
        plan.append(LotteryRun("dense", 0.0, seed, study.config(dense.name, seed, write=writes), None,
                               needs=tuple(magnitude_mask_path(dense, "omp", s) for s in writes)))
        if "imp" in lot.method:
            mask, after = magnitude_mask_path(dense, "omp", study.imp[0]), dense.name
            for k, sparsity in enumerate(study.imp):
                name, nxt = f"imp-{format_fraction(sparsity)}-seed{seed}", study.imp[k + 1:k + 2]
                needs = tuple(magnitude_mask_path(out / name, "imp", t) for t in nxt)
                plan.append(LotteryRun("imp", sparsity, seed, study.config(name, seed, mask, write=nxt), mask,
                                       needs=needs, after=after))
                mask, after = (needs[0], name) if needs else (mask, after)
        for method in ("omp", "random"):
            if method not in lot.method:
                continue
            for s in study.sparsities:
                name = f"{method}-{format_fraction(s)}-seed{seed}"
                if method == "omp" and lot.omp_source == "finetuned":
                    mask = magnitude_mask_path(dense, "omp", s)
                    plan.append(LotteryRun(method, s, seed, study.config(name, seed, mask), mask, after=dense.name))
                    continue
                kind = "omp-pretrained" if method == "omp" else "random"
                mask = out / "masks" / f"{drawn_mask_name(kind, s, seed)}.safetensors"
                plan.append(LotteryRun(method, s, seed, study.config(name, seed, mask), mask, draw=(kind, s, seed)))
        for method, s, source_task, masks in transfer:
            mask = masks.get(seed, next(iter(masks.values())))
            name = f"transfer-{method}-{format_fraction(s)}-seed{seed}"
            plan.append(LotteryRun(f"transfer-{method}", s, seed, study.config(name, seed, mask), mask,
                                   source_task=source_task))
    return plan


def draw_mask_step(study: Study, kind: str, sparsity: float, seed: int) -> None:
    """``OUT/masks/{omp-pretrained-s | random-s-seedS}.safetensors``: magnitude pruning of the pre-trained
    weights, or the same number of weights pruned uniformly at random (drawn from ``seed``)."""
    name = drawn_mask_name(kind, sparsity, seed)
    if kind == "omp-pretrained":
        study.own_mask(name, lambda: magnitude_mask(study.pretrained(), sparsity, meta=study.meta("pretrained")))
    else:
        study.own_mask(name, lambda: random_mask(study.pretrained_shapes(), sparsity, seed, meta=study.meta("random")))


def report_step(study: Study, command: str) -> None:
    """``lottery.{json,md,png}`` from the finished runs."""
    study.runs = {}
    transfer = transfer_masks(study) if study.lottery.transfer_from else []
    for run in plan_lottery(study, transfer):
        extra = {"source_task": run.source_task} if run.source_task else {}
        study.record(run.method, run.sparsity, run.seed, RunDir(run.config.output.output_dir).result(), run.mask,
                     **extra)
    summarize(study, command)


def lottery_jobs(study: Study, command: str) -> list[Job]:
    """The study as jobs: the runs (an IMP round after the previous one, OMP of fine-tuned weights after
    its dense run), a step per mask the study draws, and the report step."""
    transfer = transfer_masks(study) if study.lottery.transfer_from else []  # checked before any training
    plan = plan_lottery(study, transfer)
    jobs: dict[str, Job] = {}
    for run in plan:
        deps = [run.after] if run.after else []
        if run.draw is not None:
            draw = f"masks/{drawn_mask_name(*run.draw)}"
            if draw not in jobs:
                jobs[draw] = Job(draw, action=draw_mask_step, args=(study, *run.draw), outputs=(run.mask,))
            deps.append(draw)
        labels = {"task": study.task.name, "kind": run.method, "seed": run.seed}
        if run.method != "dense":
            labels["sparsity"] = run.sparsity
        jobs[run.name] = Job(run.name, deps=tuple(deps), config=run.config, needs=run.needs, labels=labels)
    report = Job("lottery", deps=tuple(jobs), action=report_step, args=(study, command),
                 outputs=tuple(study.out / f"lottery.{ext}" for ext in ("json", "md", "png")))
    return [*jobs.values(), report]


def run_study(study: Study, command: str, engine: EngineOptions | None = None) -> dict | None:
    """Run (or resume) the study on the study engine; the report (None for a dry run)."""
    report = run_jobs(JobGraph(lottery_jobs(study, command)), engine or EngineOptions(), study.out)
    if report is None:
        return None
    raise_if_failed(report)
    return json.loads((study.out / "lottery.json").read_text(encoding="utf-8"))


def transfer_masks(study: Study) -> list[tuple[str, float, str, dict[int, Path]]]:
    """``(method, sparsity, source task, {seed: mask path})`` of the ``--transfer-from`` study, for
    this study's methods; UserError if it was made for another model or has none of them."""
    source = Path(study.lottery.transfer_from).expanduser()
    report = json.loads((source / "lottery.json").read_text(encoding="utf-8"))
    other_model = report.get("config", {}).get("model")
    if other_model != study.base.model.name:
        raise UserError(f"--transfer-from {source}: its masks are for model {other_model!r}, this study trains "
                        f"{study.base.model.name!r}")
    out = []
    for row in report.get("rows", []):
        if row["method"] in study.lottery.method and row.get("masks"):
            masks = {int(seed): source / path for seed, path in row["masks"].items()}
            for path in masks.values():
                load_weight_mask(path)  # one clear error now for a missing or broken file
            out.append((row["method"], row["sparsity"], report.get("task", "?"), masks))
    if not out:
        raise UserError(f"--transfer-from {source}: it has no masks for --method {','.join(study.lottery.method)}")
    return out


# ---------------------------------------------------------------- report


def method_order(method: str) -> tuple[int, str]:
    """Dense first, then imp, omp, random, then transfer rows in the same order."""
    plain = method.removeprefix("transfer-")
    rank = 1 + METHODS.index(plain) if plain in METHODS else len(METHODS) + 1
    return (0 if method == "dense" else rank + (len(METHODS) if method.startswith("transfer-") else 0), method)


def summarize(study: Study, command: str) -> dict:
    """``lottery.json``, ``lottery.md``, ``lottery.png``; returns the report."""
    rows = []
    for (method, sparsity), items in sorted(study.runs.items(), key=lambda kv: (method_order(kv[0][0]), kv[0][1])):
        kept = [r["kept"] / r["total"] for r in items if r.get("total")]
        rows.append({"method": method, "sparsity": sparsity, "seeds": [r["seed"] for r in items],
                     "kept_fraction": statistics.fmean(kept) if kept else 1.0,
                     "masks": {str(r["seed"]): r["mask"] for r in items if r["mask"]},
                     "dev_metrics": [r["dev_metrics"] for r in items],
                     **({"source_task": items[0]["source_task"]} if "source_task" in items[0] else {})})
    baseline = baselines_for(study.base, [study.task.name]).get(study.task.name)
    report = derive({"task": study.task.name, "metric": "task score", "seeds": study.lottery.seeds,
                     "methods": study.lottery.method, "sparsities": study.sparsities,
                     "imp": {"rate": study.lottery.rate, "rounds": len(study.imp), "sparsities": study.imp},
                     "omp_source": study.lottery.omp_source, "transfer_from": study.lottery.transfer_from,
                     "matching_rule": "mean >= dense mean - dense std (std over seeds)", "rows": rows,
                     "baseline": baseline.to_dict() if baseline is not None else None,
                     "config": study.base.to_dict(), "lottery": dataclasses.asdict(study.lottery),
                     "command": command})
    atomic_write_json(study.out / "lottery.json", report)
    atomic_write_text(study.out / "lottery.md", markdown(report))
    plot(report, study.out / "lottery.png")
    return report


def derive(report: dict) -> dict:
    """Fill in what follows from the rows' per-seed dev metrics: each row's task scores, mean ± std, the
    matching flag, its paired difference to dense (``vs_dense``), the source of OMP rows, the dense
    summary and the highest matching sparsity per method. Reports of earlier versions (scored on the
    primary metric) are re-scored this way from their ``dev_metrics``."""
    rows = report["rows"]
    for row in rows:
        row["scores"] = [task_score(m) for m in row["dev_metrics"]]
        row["mean"], row["std"] = mean_std(row["scores"])
        if row["method"] == "omp":  # transfer rows use the other study's masks
            row.setdefault("omp_source", report["omp_source"])
    dense = next(r for r in rows if r["method"] == "dense")
    reference = by_seed(dense["seeds"], dense["scores"])
    highest: dict[str, float | None] = {}  # per method, the highest sparsity that is matching
    for row in rows:
        row["vs_dense"] = None if row is dense else versus(by_seed(row["seeds"], row["scores"]), reference)
        row["matching"] = None if row is dense else is_matching(row["mean"], dense["mean"], dense["std"])
        if row is not dense:
            best = highest.setdefault(row["method"], None)
            if row["matching"]:
                highest[row["method"]] = max(row["sparsity"], best if best is not None else 0.0)
    report.update(metric="task score", dense={"mean": dense["mean"], "std": dense["std"]},
                  highest_matching_sparsity=highest)
    return report


def method_label(row: dict) -> str:
    """``omp (fine-tuned)``, ``imp``, ``transfer-omp (from rte)``, ..."""
    text = row["method"]
    if row.get("omp_source"):
        text += f" ({OMP_WORDS[row['omp_source']]})"
    return text + (f" (from {row['source_task']})" if row.get("source_task") else "")


def table(report: dict, baseline: Baseline | None) -> list[str]:
    """Markdown lines of the method × sparsity table (``report`` as :func:`derive` leaves it)."""
    lines = ["| method | sparsity | weights kept | score | matching | Δ vs dense [95% CI] |", "|---|---|---|---|---|---|"]
    for r in report["rows"]:
        matching = "–" if r["matching"] is None else ("yes" if r["matching"] else "no")
        lines.append(f"| {method_label(r)} | {r['sparsity']:.2f} | {100 * r['kept_fraction']:.1f}% | "
                     f"{pm(r['mean'], r['std'])}{learnt_mark(r['mean'], baseline)} | {matching} | "
                     f"{format_versus(r['vs_dense'])} |")
    return lines


def markdown(report: dict, baselines: dict[str, Baseline] | None = None) -> str:
    """The method × sparsity table, dense row first: task score († = not learnt), matching, and the
    paired difference to dense with its 95 % t-interval."""
    report = derive(report)
    d = report["dense"]
    imp = report["imp"]
    baseline = baseline_of(report, report["task"], baselines)
    title = (f"# Unstructured lottery tickets: {report['task']} (dev task score, mean ± std over seeds "
             f"{','.join(map(str, report['seeds']))})")
    methods = report.get("methods") or ["imp", "omp", "random"]
    said = {"imp": f"IMP prunes {imp['rate']:g} of the original weights per round ({imp['rounds']} rounds)",
            "omp": f"OMP prunes the {OMP_WORDS[report['omp_source']]} weights once",
            "random": "random prunes uniformly at random"}
    legend = (f"Task score = mean of the task's dev metrics (`tasks/score.py`). Matching: mean ≥ dense mean − dense "
              f"std = {d['mean'] - d['std']:.2f}. " + "; ".join(said[m] for m in said if m in methods) +
              ". Every subnetwork is trained from the pre-trained weights.")
    lines = [title, "", legend, "", baseline_legend(baseline), "", *table(report, baseline)]
    best = ", ".join(f"{m} {s:.2f}" if s is not None else f"{m} none" for m, s in report["highest_matching_sparsity"].items())
    lines += ["", f"Highest matching sparsity: {best or 'none'}.", "", f"Command: `{report['command']}`", ""]
    return "\n".join(lines)


def plot(report: dict, path: Path) -> None:
    """Score vs sparsity per method (± std over seeds), the dense mean ± std as a band."""
    fig, ax = pyplot().subplots(figsize=(6, 4))
    d = report["dense"]
    dense_band(ax, d["mean"], d["std"])
    methods = sorted({r["method"] for r in report["rows"] if r["method"] != "dense"}, key=method_order)
    for method in methods:
        pts = [(r["sparsity"], r["mean"], r["std"]) for r in report["rows"] if r["method"] == method]
        color = COLORS.get(method.removeprefix("transfer-"), "tab:gray")
        line_with_band(ax, pts, color, method, linestyle=":" if method.startswith("transfer-") else "-")
    finish_curves(fig, ax, path, "sparsity (fraction of prunable encoder weights pruned)",
                  f"{report['task']} dev {report['metric']}",
                  f"Lottery tickets: {report['task']} (seeds {','.join(map(str, report['seeds']))})")


# ---------------------------------------------------------------- command line


def parse_args(argv: Sequence[str]) -> tuple[TrainConfig, LotteryConfig, EngineOptions]:
    """Defaults < ``--config`` YAML (train.py and study keys together) < flags. A lone ``--`` is
    allowed before the train.py options."""
    parser = config_parser(PROG, __doc__.splitlines()[0], TrainConfig)
    add_config_flags(parser, LotteryConfig)
    add_engine_flags(parser)
    args = parser.parse_args([a for a in argv if a != "--"])
    engine = engine_options(args)
    values = dict(vars(args))
    config_path = values.pop("config", None)
    yaml_values = read_yaml(config_path) if config_path is not None else {}
    train_keys = set(TrainConfig.flat_names())
    study_keys = {o.key for o in options_of(LotteryConfig)}
    unknown = [k for k in yaml_values if str(k).replace("-", "_") not in train_keys | study_keys]
    if unknown:
        raise UserError(f"unknown config key {unknown[0]!r} in {config_path}; valid keys: "
                        f"{', '.join(sorted(train_keys | study_keys))}")

    def pick(keys: set[str], mapping: dict) -> dict:
        return {k: v for k, v in mapping.items() if str(k).replace("-", "_") in keys}

    train = build_config(TrainConfig, pick(train_keys, yaml_values), pick(train_keys, values))
    lottery = build_config(LotteryConfig, pick(study_keys, yaml_values), pick(study_keys, values))
    return train, lottery, engine


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)

    def go() -> int:
        base, lot, engine = parse_args(argv)
        base = base.replace(tasks=[lot.task])
        _, (task,) = resolve_tasks(base)
        sparsities = sorted(set(base.tickets.sparsities)) if {"omp", "random"} & set(lot.method) else []
        imp = lot.imp_sparsities(base.tickets.sparsities) if "imp" in lot.method else []
        out = prepare_output_dir(base.output.output_dir)
        study = Study(base, lot, task, out, sparsities, imp)
        return print_study_report(lambda: run_study(study, f"{PROG} {shlex.join(argv)}", engine), markdown)

    return run_main(go)


if __name__ == "__main__":
    sys.exit(main())
