"""One task, several arms that differ in a few training options, the same seeds: which option moves the score.

    python -m experiments.ablation experiments/stsb_gap.yaml [--jobs 2] [--results-dir DIR] [--dry-run]

The YAML::

    name: stsb_gap
    model: minilm
    task: stsb
    seeds: [1, 2, 3]
    output_dir: runs/stsb_gap
    train: {epochs: 2, max_train_samples: 1000}     # options every arm shares (any train.py option)
    reference: cpu_study                            # the arm the others are compared with (default: the first)
    arms:                                           # in order; each: the options it changes
      cpu_study: {sampler: proportional, keep_best: false, eval_every_epoch: false}
      holdout: {sampler: proportional, keep_best: false, eval_every_epoch: false, holdout_fraction: 0.1}

Every run goes through the study engine (``--jobs``, ``--results-dir``, resume, ``--dry-run``). Writes
``OUT/ablation.json`` (per arm: its options, per-seed dev metrics and task scores, mean ± std and the paired
difference to the reference with its 95 % t-interval; each arm also against the arm before it, since arms
are usually listed one change at a time) and ``OUT/ablation.md`` rendered from it (:func:`markdown`).
"""

from __future__ import annotations

import shlex
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from basics.cli import OneLineParser, run_main
from basics.errors import UserError
from basics.io import atomic_write_json, atomic_write_text
from basics.options import read_yaml
from basics.stats import mean_std
from experiments.baselines import baselines_for
from experiments.engine.jobs import Job, JobGraph
from experiments.engine.options import EngineOptions, add_engine_flags, engine_options, print_study_report, run_jobs
from experiments.engine.scheduler import raise_if_failed
from experiments.report_stats import baseline_legend, by_seed, format_versus, learnt_mark, versus
from experiments.study_config import canonical_tasks, train_config
from mtl.config import TrainConfig
from mtl.rundir import RunDir, read_json
from tasks.baseline import Baseline
from tasks.score import task_score


@dataclass
class Ablation:
    """An ablation study, validated on construction."""

    name: str
    task: str
    output_dir: str
    arms: dict[str, dict[str, Any]]
    seeds: list[int] = field(default_factory=lambda: [1, 2, 3])
    model: str = "minilm"
    glue_dir: str | None = None
    train: dict[str, Any] = field(default_factory=dict)
    reference: str | None = None

    def __post_init__(self) -> None:
        if not self.name or any(c in self.name for c in "/\\\n"):
            raise UserError(f"ablation name must be a non-empty word without slashes, got {self.name!r}")
        if not isinstance(self.arms, dict) or not self.arms:
            raise UserError("ablation key 'arms' needs at least one arm: a mapping of arm name to its options")
        if not self.seeds or any(not isinstance(s, int) or isinstance(s, bool) for s in self.seeds):
            raise UserError(f"ablation key 'seeds' must be a list of integers, got {self.seeds!r}")
        self.reference = self.reference or next(iter(self.arms))
        if self.reference not in self.arms:
            raise UserError(f"reference arm {self.reference!r} is not one of the arms {list(self.arms)}")
        self.task = canonical_tasks([self.task], self.train)[0]
        for arm in self.arms:
            for seed in self.seeds:
                self.config(arm, seed)  # every combination validates before anything runs

    @classmethod
    def from_dict(cls, data: dict[str, Any], overrides: dict[str, Any] | None = None) -> "Ablation":
        data = {**data, **(overrides or {})}
        known = {f for f in cls.__dataclass_fields__}
        unknown = sorted(set(data) - known)
        if unknown:
            raise UserError(f"unknown ablation key(s) {unknown}; valid keys: {', '.join(sorted(known))}")
        arms = data.get("arms") or {}
        if not isinstance(arms, dict):
            raise UserError("ablation key 'arms' must be a mapping of arm name to its options")
        data["arms"] = {str(k): dict(v or {}) for k, v in arms.items()}
        return cls(**data)

    @property
    def out(self) -> Path:
        return Path(self.output_dir)

    def run_dir(self, arm: str, seed: int) -> Path:
        return self.out / "runs" / f"{arm}-seed{seed}"

    def config(self, arm: str, seed: int) -> TrainConfig:
        forced = {"tasks": [self.task], "seed": seed, "output_dir": str(self.run_dir(arm, seed)), "model": self.model,
                  "glue_dir": self.glue_dir}
        return train_config([("train", self.train), (f"arms.{arm}", self.arms[arm])], forced,
                            f"arm {arm}, seed {seed}")


def load_ablation(path: Path, overrides: dict[str, Any] | None = None) -> Ablation:
    try:
        return Ablation.from_dict(read_yaml(Path(path)), overrides)
    except UserError as exc:
        raise UserError(f"{path}: {exc}") from None


def ablation_jobs(study: Ablation, command: str) -> list[Job]:
    """A training job per arm and seed (seed by seed, so each finished seed completes a set), then the report."""
    jobs = [Job(f"{arm}-seed{seed}", config=study.config(arm, seed),
                labels={"task": study.task, "kind": arm, "seed": seed})
            for seed in study.seeds for arm in study.arms]
    jobs.append(Job("ablation", deps=tuple(j.name for j in jobs), action=report_step, args=(study, command),
                    outputs=(study.out / "ablation.json", study.out / "ablation.md")))
    return jobs


def report_step(study: Ablation, command: str) -> None:
    """``ablation.{json,md}`` from the finished runs."""
    arms = []
    for arm, options in study.arms.items():
        metrics = [RunDir(study.run_dir(arm, s)).result().metrics[study.task] for s in study.seeds]
        arms.append({"arm": arm, "options": options, "seeds": list(study.seeds), "dev_metrics": metrics})
    baseline = baselines_for(study.config(study.reference, study.seeds[0]), [study.task]).get(study.task)
    report = derive({"name": study.name, "task": study.task, "model": study.model, "reference": study.reference,
                     "train": study.train, "arms": arms, "command": command,
                     "baseline": baseline.to_dict() if baseline is not None else None})
    atomic_write_json(study.out / "ablation.json", report)
    atomic_write_text(study.out / "ablation.md", markdown(report))


def derive(report: dict) -> dict:
    """Each arm's task scores, mean ± std, and its paired differences to the reference and to the arm before."""
    arms = report["arms"]
    for arm in arms:
        arm["scores"] = [task_score(m) for m in arm["dev_metrics"]]
        arm["mean"], arm["std"] = mean_std(arm["scores"])
    reference = next(a for a in arms if a["arm"] == report["reference"])
    for i, arm in enumerate(arms):
        own = by_seed(arm["seeds"], arm["scores"])
        arm["vs_reference"] = None if arm is reference else versus(own, by_seed(reference["seeds"], reference["scores"]))
        arm["vs_previous"] = versus(own, by_seed(arms[i - 1]["seeds"], arms[i - 1]["scores"])) if i else None
    return report


def _options(options: dict[str, Any]) -> str:
    return ", ".join(f"`{k}: {v}`" for k, v in options.items()) or "–"


def table(report: dict, baseline: Baseline | None = None) -> list[str]:
    """Markdown rows: arm, its options, per-seed task scores, mean ± std, Δ vs reference, Δ vs the arm above."""
    lines = ["| arm | options | task score per seed | mean ± std | Δ vs reference [95% CI] | Δ vs the arm above [95% CI] |",
             "|---|---|---|---|---|---|"]
    for arm in report["arms"]:
        seeds = ", ".join(f"{s:.2f}" for s in arm["scores"])
        ref = "reference" if arm["arm"] == report["reference"] else format_versus(arm["vs_reference"])
        lines.append(f"| {arm['arm']} | {_options(arm['options'])} | {seeds} | {arm['mean']:.2f} ± {arm['std']:.2f}"
                     f"{learnt_mark(arm['mean'], baseline)} | {ref} | {format_versus(arm['vs_previous'])} |")
    return lines


def markdown(report: dict) -> str:
    baseline = Baseline.from_dict(report["baseline"]) if report.get("baseline") else None
    shared = _options(report.get("train") or {})
    lines = [f"# Ablation {report['name']}: {report['task']} on {report['model']}", "",
             "Task score = mean of the task's dev metrics (`tasks/score.py`); Δ = paired difference over the same "
             "seeds with its 95 % t-interval (an interval containing 0: no difference detected).", "",
             f"Options every arm shares: {shared}.", "", baseline_legend(baseline), "", *table(report, baseline), "",
             f"Command: `{report['command']}`", ""]
    return "\n".join(lines)


def render(path: Path) -> str:
    """The markdown table of a committed ``ablation.json`` (for the results READMEs)."""
    report = derive(read_json(path))
    baseline = Baseline.from_dict(report["baseline"]) if report.get("baseline") else None
    return "\n".join(table(report, baseline)) + "\n"


def run_ablation(study: Ablation, command: str, engine: EngineOptions | None = None) -> dict | None:
    report = run_jobs(JobGraph(ablation_jobs(study, command)), engine or EngineOptions(), study.out)
    if report is None:
        return None
    raise_if_failed(report)
    return read_json(study.out / "ablation.json")


def main(argv: Sequence[str] | None = None) -> int:
    def go() -> int:
        parser = OneLineParser(prog="python -m experiments.ablation", description=__doc__.splitlines()[0])
        parser.add_argument("study", type=Path, help="the ablation YAML, e.g. experiments/stsb_gap.yaml")
        parser.add_argument("--output-dir", default=None, help="override the YAML's output_dir")
        parser.add_argument("--glue-dir", default=None, help="override the YAML's glue_dir (default: $GLUE_DIR)")
        add_engine_flags(parser)
        args_in = list(sys.argv[1:] if argv is None else argv)
        args = parser.parse_args(args_in)
        overrides = {k: v for k, v in (("output_dir", args.output_dir), ("glue_dir", args.glue_dir)) if v}
        study = load_ablation(args.study, overrides)
        command = "python -m experiments.ablation " + shlex.join(args_in)
        return print_study_report(lambda: run_ablation(study, command, engine_options(args)), markdown)

    return run_main(go)


if __name__ == "__main__":
    sys.exit(main())
