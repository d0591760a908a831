"""Iterative structured pruning for one task (Prasanna et al. 2020): good / random / bad subnetworks (resumable).

    python -m experiments.iterative_pruning --task rte --threshold 0.9 --step 0.1 --seeds 1,2 \
        --output-dir runs/ip-rte [--prune-seeds 1,2] [--ffn-granularity neuron|layer] \
        [--select-on dev|holdout] [--config YAML] [--] [any train.py option: --epochs, --lr, ...]

1. ``dense-seed{S}/``: fine-tune the dense model for every seed. Prune seeds (``--prune-seeds``,
   default: the first seed) keep their model (``model/``) for pruning.
2. ``pruning/seed{P}.json``: prune that dense model iteratively (``masks/iterative.py``): each step
   removes the least important ``--step`` of the ORIGINAL heads and FFN units (re-scored with the
   current mask, ``--score-batches`` training batches), until the task score on dev (or the held-out
   slice of train, ``--select-on holdout``) falls below ``--threshold`` x the unpruned score.
   ``masks/good-seed{P}.safetensors`` is the last mask at or above it; ``masks/bad-seed{P}.safetensors``
   keeps the same numbers of heads and FFN units, the lowest-scoring ones by the dense importance
   (``pruning/importance-seed{P}.safetensors``).
3. ``{good,random,bad}-seed{S}/``: rewind, i.e. train from the pre-trained weights with the mask fixed.
   Seed S uses the good and bad masks pruned at seed S if S is a prune seed, else those of the first
   prune seed; ``masks/random-seed{S}.safetensors`` is a fresh uniform draw (seed S) with the same counts.
4. ``iterative_pruning.json`` / ``.md`` / ``.png``: the trajectories and the mean ± std over seeds of
   the task score (the mean of the task's dev metrics, as in ``experiments.phase_transition``).

Re-running resumes: a run folder with ``metrics.json`` is skipped, and so is a pruning whose
``pruning/seed{P}.json`` exists (an error if it was made with other pruning options).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import shlex
import sys
from dataclasses import dataclass
from pathlib import Path

from basics.cli import config_parser, parse_config, run_main
from basics.errors import UserError
from basics.io import atomic_write, atomic_write_json, atomic_write_text
from basics.stats import mean_std
from experiments.baselines import baselines_for
from experiments.engine.jobs import Job, JobGraph
from experiments.engine.options import EngineOptions, add_engine_flags, engine_options, print_study_report, run_jobs
from experiments.engine.scheduler import raise_if_failed
from experiments.phase_transition import scores_of
from experiments.report_stats import baseline_legend, baseline_of, by_seed, format_versus, learnt_mark, versus
from masks.arch import shape_of
from masks.gates import attach_gates
from masks.importance import save_importance
from masks.iterative import (
    PROTOCOLS,
    IterativeConfig,
    IterativeResult,
    iterative_prune,
    kept_layer_l2,
    matched_mask,
)
from masks.mask import Mask, load_mask, save_mask
from mtl.config import TrainConfig
from mtl.gating import score_model
from mtl.model import load_multitask_model
from mtl.run import (
    deterministic_algorithms,
    load_task_data,
    prepare_output_dir,
    resolve_tasks,
    torch_threads,
)
from mtl.rundir import RunDir
from mtl.trainer import TaskData, Trainer
from tasks.baseline import Baseline
from tasks.score import task_score

TAG = "iterative-pruning"

KINDS = ("good", "random", "bad")
COLORS = {"dense": "gray", "good": "tab:green", "random": "tab:blue", "bad": "tab:red"}
# pruning options a saved trajectory must match on a re-run
SETTING_KEYS = ("threshold", "step", "granularity", "min_heads_per_layer", "max_steps", "select_on", "score_batches",
                "head_normalization", "protocol", "score_on")
SCORE_ON = ("train", "dev")  # the data importance is computed on (Prasanna et al.'s code: dev)


@dataclass
class PruneSpec:
    """The experiment's own options (training options live in TrainConfig)."""

    seeds: list[int]
    prune_seeds: list[int]
    select_on: str  # "dev" | "holdout"
    iterative: IterativeConfig
    score_on: str = "train"  # SCORE_ON

    def mask_seed(self, seed: int) -> int:
        """The prune seed whose good / bad masks the retraining run of ``seed`` uses."""
        return seed if seed in self.prune_seeds else self.prune_seeds[0]

    def settings(self, base: TrainConfig) -> dict:
        return {**dataclasses.asdict(self.iterative), "select_on": self.select_on, "score_on": self.score_on,
                "score_batches": base.tickets.score_batches, "head_normalization": base.tickets.head_normalization}


# --------------------------------------------------------------------------- runs

def dense_config(base: TrainConfig, seed: int, spec: PruneSpec, out: Path) -> TrainConfig:
    """``dense-seed{seed}``: prune seeds keep their model (``model/``) for pruning."""
    return base.replace(seed=seed, output_dir=str(out / f"dense-seed{seed}"), mask=None, score_importance=False,
                        save_model=seed in spec.prune_seeds)


def retrain_config(base: TrainConfig, kind: str, seed: int, spec: PruneSpec, out: Path) -> TrainConfig:
    """``{kind}-seed{seed}``: the subnetwork rewound, trained from the pre-trained weights with its mask."""
    mask = random_path(seed, out) if kind == "random" else out / "masks" / f"{kind}-seed{spec.mask_seed(seed)}.safetensors"
    return base.replace(seed=seed, output_dir=str(out / f"{kind}-seed{seed}"), mask=str(mask),
                        score_importance=False, save_model=False)


def _prune_model(base: TrainConfig, task: str, seed: int, spec: PruneSpec, out: Path) -> IterativeResult:
    """Load ``dense-seed{seed}/model`` and prune it; evaluation and scoring as train.py does them."""
    model_dir = out / f"dense-seed{seed}" / "model"
    if not (model_dir / "model.json").is_file():
        raise UserError(f"{model_dir.parent} has no saved model to prune; delete that folder so the dense run is redone")
    cfg = base.replace(seed=seed, output_dir=str(model_dir.parent), mask=None)
    _, tasks = resolve_tasks(cfg)
    with torch_threads(cfg.runtime.num_threads), deterministic_algorithms(cfg.runtime.deterministic):
        model, tokenizer = load_multitask_model(model_dir)
        data = load_task_data(tasks, tokenizer, cfg)
        pad_id = tokenizer.pad_token_id or 0
        trainer = Trainer(model, data, cfg, out / "pruning", pad_id=pad_id)
        gates = attach_gates(model.encoder)

        def evaluate(mask: Mask) -> float:
            gates.set_mask(mask)
            return task_score(trainer.evaluate(spec.select_on)[task])

        scoring_data = data if spec.score_on == "train" else dev_as_training(data)

        def score(mask: Mask):
            gates.set_mask(mask)
            imp = score_model(model, scoring_data, cfg, pad_id, trainer.device, trainer.autocast)
            if cfg.tickets.head_normalization == "layer_l2":  # normalise over the heads still kept
                imp.heads = kept_layer_l2(imp.heads_raw, mask.heads)
            return imp

        try:
            return iterative_prune(shape_of(model.encoder), evaluate, score, spec.iterative,
                                   meta={"tasks": task, "model": base.model.name, "seed": str(seed),
                                         "select_on": spec.select_on, "source_run": str(model_dir.parent)},
                                   log=lambda line: print(f"[iterative-pruning] seed {seed} {line}", flush=True))
        finally:
            gates.remove()


def dev_as_training(data: dict[str, TaskData]) -> dict[str, TaskData]:
    """The tasks' data with each task's (first) dev split in the place of train: what scoring reads."""
    return {name: dataclasses.replace(d, train=next(iter(d.dev.values()))) for name, d in data.items()}


def check_settings(saved: dict, now: dict, path: Path) -> None:
    """UserError naming every pruning option that differs from the saved trajectory's."""
    diffs = [f"{k}: {saved.get(k)!r} -> {now.get(k)!r}" for k in SETTING_KEYS if saved.get(k) != now.get(k)]
    if diffs:
        raise UserError(f"{path} was pruned with other options ({'; '.join(diffs)}); use a new --output-dir "
                        "or delete that file and the masks")


def prune_seed(base: TrainConfig, task: str, seed: int, spec: PruneSpec, out: Path) -> dict:
    """``pruning/seed{seed}.json`` (made unless it exists), with ``masks/good-`` and ``bad-seed{seed}``."""
    path = out / "pruning" / f"seed{seed}.json"
    settings = spec.settings(base)
    if path.is_file():
        record = json.loads(path.read_text(encoding="utf-8"))
        check_settings(record["settings"], settings, path)
        print(f"[iterative-pruning] skip pruning seed {seed}: {path} exists", flush=True)
        return record
    print(f"[iterative-pruning] pruning dense seed {seed}", flush=True)
    result = _prune_model(base, task, seed, spec, out)
    shape = result.mask.meta.shape
    good_path, bad_path = out / "masks" / f"good-seed{seed}.safetensors", out / "masks" / f"bad-seed{seed}.safetensors"
    imp_path = out / "pruning" / f"importance-seed{seed}.safetensors"
    save_importance(result.dense_importance, imp_path)
    save_mask(result.mask, good_path)
    save_mask(matched_mask(result.mask, "bad", shape=shape, imp=result.dense_importance,
                           granularity=spec.iterative.granularity,
                           min_heads_per_layer=spec.iterative.min_heads_per_layer, seed=seed), bad_path)
    record = {"task": task, "seed": seed, "settings": settings, **result.to_dict(),
              "masks": {"good": str(good_path), "bad": str(bad_path)}, "importance": str(imp_path)}
    atomic_write_json(path, record)  # last: its presence means the pruning is done
    return record


def random_path(seed: int, out: Path) -> Path:
    return out / "masks" / f"random-seed{seed}.safetensors"


def random_mask_step(seed: int, spec: PruneSpec, out: Path) -> None:
    """``masks/random-seed{seed}.safetensors``: drawn once, with the counts of the good mask seed ``seed`` uses."""
    path = random_path(seed, out)
    if not path.is_file():
        good = load_mask(out / "masks" / f"good-seed{spec.mask_seed(seed)}.safetensors")
        save_mask(matched_mask(good, "random", shape=good.meta.shape, granularity=spec.iterative.granularity,
                               min_heads_per_layer=spec.iterative.min_heads_per_layer, seed=seed), path)


def prune_step(base: TrainConfig, task: str, seed: int, spec: PruneSpec, out: Path) -> None:
    prune_seed(base, task, seed, spec, out)


def report_step(base: TrainConfig, task: str, spec: PruneSpec, out: Path, command: str) -> None:
    """``iterative_pruning.{json,md,png}`` from the finished runs and the saved trajectories."""
    dense = [{"seed": seed, **scores_of(RunDir(dense_config(base, seed, spec, out).output.output_dir).result(), task)}
             for seed in spec.seeds]
    trajectories = {seed: json.loads((out / "pruning" / f"seed{seed}.json").read_text(encoding="utf-8"))
                    for seed in spec.prune_seeds}
    runs: dict[str, list[dict]] = {}
    for kind in KINDS:
        for seed in spec.seeds:
            cfg = retrain_config(base, kind, seed, spec, out)
            mask = load_mask(cfg.tickets.mask)
            runs.setdefault(kind, []).append({
                "seed": seed, "mask": cfg.tickets.mask, "heads_kept": mask.num_heads_kept,
                "ffn_kept": mask.num_ffn_kept, "params_kept": 100.0 * (1 - mask.meta.param_sparsity),
                **scores_of(RunDir(cfg.output.output_dir).result(), task)})
    summarize(dense, trajectories, runs, base, task, spec, out, command)


def experiment_jobs(base: TrainConfig, task: str, spec: PruneSpec, out: Path, command: str = "") -> list[Job]:
    """Dense runs -> a pruning per prune seed (in a worker: it loads and scores the model) -> the random
    draws -> the rewound good / random / bad runs -> the report."""
    jobs: list[Job] = []
    for seed in spec.seeds:
        cfg = dense_config(base, seed, spec, out)
        needs = (RunDir(cfg.output.output_dir).model_dir / "model.json",) if seed in spec.prune_seeds else ()
        jobs.append(Job(f"dense-seed{seed}", config=cfg, needs=needs, labels={"task": task, "kind": "dense", "seed": seed}))
    for seed in spec.prune_seeds:
        outputs = (out / "pruning" / f"seed{seed}.json", out / "pruning" / f"importance-seed{seed}.safetensors",
                   out / "masks" / f"good-seed{seed}.safetensors", out / "masks" / f"bad-seed{seed}.safetensors")
        jobs.append(Job(f"pruning/seed{seed}", deps=(f"dense-seed{seed}",), action=prune_step,
                        args=(base, task, seed, spec, out), where="worker", outputs=outputs))
    for seed in spec.seeds:
        jobs.append(Job(f"masks/random-seed{seed}", deps=(f"pruning/seed{spec.mask_seed(seed)}",),
                        action=random_mask_step, args=(seed, spec, out), outputs=(random_path(seed, out),)))
    for kind in KINDS:
        for seed in spec.seeds:
            dep = f"masks/random-seed{seed}" if kind == "random" else f"pruning/seed{spec.mask_seed(seed)}"
            jobs.append(Job(f"{kind}-seed{seed}", deps=(dep,), config=retrain_config(base, kind, seed, spec, out),
                            labels={"task": task, "kind": kind, "seed": seed}))
    jobs.append(Job("iterative_pruning", deps=tuple(j.name for j in jobs), action=report_step,
                    args=(base, task, spec, out, command),
                    outputs=tuple(out / f"iterative_pruning.{ext}" for ext in ("json", "md", "png"))))
    return jobs


def run_experiment(base: TrainConfig, task: str, spec: PruneSpec, out: Path, command: str = "",
                   engine: EngineOptions | None = None) -> dict | None:
    """The whole experiment on the study engine (resumable); the report (None for a dry run)."""
    report = run_jobs(JobGraph(experiment_jobs(base, task, spec, out, command)), engine or EngineOptions(), out)
    if report is None:
        return None
    raise_if_failed(report)
    return json.loads((out / "iterative_pruning.json").read_text(encoding="utf-8"))


# --------------------------------------------------------------------------- report

def _row(kind: str, items: list[dict]) -> dict:
    dev_mean, dev_std = mean_std([r["dev"] for r in items])
    hold = [r["holdout"] for r in items if r["holdout"] is not None]
    hold_mean, hold_std = mean_std(hold) if hold else (None, None)
    row = {"kind": kind, "seeds": [r["seed"] for r in items], "dev_mean": dev_mean, "dev_std": dev_std,
           "holdout_mean": hold_mean, "holdout_std": hold_std, "dev": [r["dev"] for r in items],
           "dev_metrics": [r["dev_metrics"] for r in items]}
    if kind != "dense":
        row.update(heads_kept=mean_std([r["heads_kept"] for r in items])[0],
                   ffn_kept=mean_std([r["ffn_kept"] for r in items])[0],
                   params_kept=mean_std([r["params_kept"] for r in items])[0], masks=[r["mask"] for r in items])
    return row


def summarize(dense: list[dict], trajectories: dict[int, dict], runs: dict[str, list[dict]], base: TrainConfig,
              task: str, spec: PruneSpec, out: Path, command: str = "") -> dict:
    rows = [_row("dense", dense)] + [_row(kind, runs[kind]) for kind in KINDS]
    baseline = baselines_for(base, [task]).get(task)
    report = {"task": task, "seeds": spec.seeds, "prune_seeds": spec.prune_seeds, "select_on": spec.select_on,
              "settings": spec.settings(base), "rows": rows,
              "baseline": baseline.to_dict() if baseline is not None else None,
              "trajectories": {str(seed): record for seed, record in trajectories.items()},
              "config": base.to_dict(), "command": command}
    atomic_write_json(out / "iterative_pruning.json", report)
    atomic_write_text(out / "iterative_pruning.md", markdown(report))
    plot(report, out / "iterative_pruning.png")
    return report


def _pm(mean: float | None, std: float | None) -> str:
    return "–" if mean is None else f"{mean:.2f} ± {std:.2f}"


def markdown(report: dict, baselines: dict[str, Baseline] | None = None) -> str:
    """Trajectories, then the retrained subnetworks: dev († = not learnt) and held-out task scores, and each
    one's paired difference to dense on dev (same seeds, 95 % t-interval)."""
    s = report["settings"]
    other = "held-out" if report["select_on"] == "dev" else "dev"
    independent = any(r.get("holdout_mean") is not None for r in report["rows"]) or report["select_on"] != "dev"
    baseline = baseline_of(report, report["task"], baselines)
    lines = [f"# Iterative pruning: {report['task']}", "",
             (f"Protocol {s.get('protocol', 'uniform')}: threshold {s['threshold']} x the unpruned score, step "
              f"{s['step']} of the original heads and FFN {s['granularity']}s, at least {s['min_heads_per_layer']} "
              f"head(s) per layer, importance on {s.get('score_on', 'train')}, selected on {report['select_on']}. "
              "Task score = mean of the task's metrics."), "",
             (f"The good subnetwork was chosen on {report['select_on']}, so its {report['select_on']} score is not an "
              f"independent estimate: " + (f"the {other} column is." if independent else
                                             "this run has no split independent of the selection "
                                             "(add --holdout-fraction to get one).")), ""]
    for seed, rec in report["trajectories"].items():
        lines += [f"## Pruning trajectory, seed {seed}", "",
                  (f"Unpruned {report['select_on']} score {rec['base_score']:.2f}, target >= {rec['target']:.2f}; "
                   f"stopped: {rec['stop_reason']}; selected step {rec['selected_step']}."), "",
                  "| step | heads kept | FFN kept | params kept % | score | |", "|---|---|---|---|---|---|"]
        for p in rec["trajectory"]:
            mark = "selected" if p["step"] == rec["selected_step"] else ("" if p["above_threshold"] else "below")
            lines.append(f"| {p['step']} | {p['heads_kept']} | {p['ffn_kept']} | {p['params_kept']:.1f} | "
                         f"{p['score']:.2f} | {mark} |")
        lines.append("")
    lines += [f"## Retrained from the pre-trained weights (mean ± std over seeds {report['seeds']})", "",
              baseline_legend(baseline), "", *retrained_table(report, baseline),
              "", f"Command: `{report['command']}`", ""]
    return "\n".join(lines)


def retrained_table(report: dict, baseline: Baseline | None) -> list[str]:
    """Markdown lines: every retrained subnetwork's size, dev score († = not learnt), its paired difference to
    dense on dev (95 % t-interval) and its held-out score."""
    dense = next(r for r in report["rows"] if r["kind"] == "dense")
    reference = by_seed(dense["seeds"], dense["dev"])
    lines = ["| subnetwork | heads kept | FFN neurons kept | params kept % | dev | Δ dev vs dense [95% CI] | held-out |",
             "|---|---|---|---|---|---|---|"]
    for r in report["rows"]:
        counts = ("all", "all", "100.0") if r["kind"] == "dense" else (
            f"{r['heads_kept']:g}", f"{r['ffn_kept']:g}", f"{r['params_kept']:.1f}")
        diff = "–" if r is dense else format_versus(versus(by_seed(r["seeds"], r["dev"]), reference))
        lines.append(f"| {r['kind']} | {' | '.join(counts)} | {_pm(r['dev_mean'], r['dev_std'])}"
                     f"{learnt_mark(r['dev_mean'], baseline)} | {diff} | {_pm(r['holdout_mean'], r['holdout_std'])} |")
    return lines


def plot(report: dict, path: Path) -> None:
    """Left: score and params kept vs pruning step (one line per prune seed). Right: retrained kinds."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    fig, (ax, ax_bar) = plt.subplots(1, 2, figsize=(11, 4), gridspec_kw={"width_ratios": [3, 2]})
    ax_params = ax.twinx()
    for i, (seed, rec) in enumerate(report["trajectories"].items()):
        color = f"C{i}"
        steps = [p["step"] for p in rec["trajectory"]]
        ax.plot(steps, [p["score"] for p in rec["trajectory"]], marker="o", color=color, label=f"score, seed {seed}")
        ax.axhline(rec["target"], color=color, linestyle="--", linewidth=1)
        ax_params.plot(steps, [p["params_kept"] for p in rec["trajectory"]], linestyle=":", color=color,
                       label=f"params kept, seed {seed}")
        chosen = rec["trajectory"][rec["selected_step"]]
        ax.scatter([chosen["step"]], [chosen["score"]], marker="*", s=180, color="gold", edgecolor="black", zorder=5)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("pruning step")
    ax.set_ylabel(f"{report['task']} {report['select_on']} score (dashed: threshold)")
    ax_params.set_ylabel("prunable parameters kept (%)")
    ax_params.set_ylim(0, 105)
    handles = ax.get_legend_handles_labels()[0] + ax_params.get_legend_handles_labels()[0]
    ax.legend(handles, [h.get_label() for h in handles], fontsize=7, loc="lower left")
    ax.grid(alpha=0.3)
    ax.set_title("Pruning trajectory (star: selected mask)", fontsize=10)
    kinds = [r["kind"] for r in report["rows"]]
    ax_bar.bar(kinds, [r["dev_mean"] for r in report["rows"]], yerr=[r["dev_std"] for r in report["rows"]],
               color=[COLORS[k] for k in kinds], capsize=4)
    ax_bar.set_ylabel(f"{report['task']} dev score after retraining")
    ax_bar.set_title(f"Rewound subnetworks (seeds {','.join(map(str, report['seeds']))})", fontsize=10)
    ax_bar.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    atomic_write(path, lambda tmp: fig.savefig(tmp, dpi=120, format="png"))
    plt.close(fig)


# --------------------------------------------------------------------------- command line

def parse_seeds(text: str, flag: str) -> list[int]:
    """``"1,2"`` -> ``[1, 2]``; UserError for anything else or duplicates."""
    try:
        seeds = [int(s) for s in text.split(",") if s.strip()]
    except ValueError:
        raise UserError(f"{flag} takes comma-separated integers, got {text!r}") from None
    if not seeds:
        raise UserError(f"{flag} needs at least one seed")
    if len(set(seeds)) != len(seeds):
        raise UserError(f"{flag} lists a seed twice: {text!r}")
    return seeds


def build_spec(args: argparse.Namespace, config: TrainConfig) -> PruneSpec:
    seeds = parse_seeds(args.seeds or ("1,2,3,4,5" if args.protocol == "prasanna" else "1,2"), "--seeds")
    prune_seeds = parse_seeds(args.prune_seeds, "--prune-seeds") if args.prune_seeds else seeds[:1]
    extra = [s for s in prune_seeds if s not in seeds]
    if extra:
        raise UserError(f"--prune-seeds {extra} are not among --seeds {seeds}")
    if args.select_on == "holdout" and config.data.holdout_fraction <= 0:
        raise UserError("--select-on holdout needs --holdout-fraction > 0 (e.g. 0.1)")
    prasanna = args.protocol == "prasanna"
    granularity = args.ffn_granularity or ("layer" if prasanna else config.tickets.ticket_granularity)
    iterative = IterativeConfig(threshold=args.threshold, step=args.step, granularity=granularity,
                                min_heads_per_layer=config.tickets.min_heads_per_layer, max_steps=args.max_prune_steps,
                                protocol=args.protocol)
    score_on = args.score_on or ("dev" if prasanna else "train")
    return PruneSpec(seeds=seeds, prune_seeds=prune_seeds, select_on=args.select_on, iterative=iterative,
                     score_on=score_on)


def main(argv: list[str] | None = None) -> int:
    def go() -> int:
        parser = config_parser("python -m experiments.iterative_pruning", __doc__.splitlines()[0], TrainConfig)
        parser.add_argument("--task", required=True, help="the task (one)")
        parser.add_argument("--threshold", type=float, default=0.9, help="stop below this fraction of the unpruned score")
        parser.add_argument("--step", type=float, default=0.1, help="fraction of the original heads / FFN units per step")
        parser.add_argument("--seeds", default=None,
                            help="comma-separated training seeds (default: 1,2; 1,2,3,4,5 with --protocol prasanna)")
        parser.add_argument("--prune-seeds", default=None, help="seeds whose dense model is pruned (default: the first seed)")
        parser.add_argument("--ffn-granularity", default=None, choices=("neuron", "layer"),
                            help="FFN units: neurons or whole FFN blocks (default: --ticket-granularity)")
        parser.add_argument("--select-on", default="dev", choices=("dev", "holdout"),
                            help="score the pruning steps on dev (as the paper) or on the held-out slice of train")
        parser.add_argument("--max-prune-steps", type=int, default=None, help="stop pruning after N steps")
        parser.add_argument("--protocol", default="uniform", choices=PROTOCOLS,
                            help="uniform: heads and FFN units together every step; prasanna: Prasanna et al.'s "
                                 "phases with whole MLPs (heads+MLPs, then heads at half the step, then MLPs)")
        parser.add_argument("--score-on", default=None, choices=SCORE_ON,
                            help="data the importance is computed on (default: train; dev with --protocol prasanna, "
                                 "as in Prasanna et al.'s code)")
        add_engine_flags(parser)
        args_in = sys.argv[1:] if argv is None else list(argv)
        config, args = parse_config(parser, TrainConfig, [a for a in args_in if a != "--"])
        if "," in args.task:
            raise UserError("--task takes one task; run one experiment per task")
        config = config.replace(tasks=[args.task])
        spec = build_spec(args, config)
        _, (task,) = resolve_tasks(config)
        out = prepare_output_dir(config.output.output_dir)
        command = "python -m experiments.iterative_pruning " + " ".join(map(shlex.quote, args_in))
        return print_study_report(lambda: run_experiment(config, task.name, spec, out, command, engine_options(args)), markdown)

    return run_main(go)


if __name__ == "__main__":
    sys.exit(main())
