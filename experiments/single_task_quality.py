"""Single-task quality on full GLUE training sets with the default settings, one run per task (resumable).

    python -m experiments.single_task_quality --tasks rte,mrpc,stsb,cola,sst2 --output-dir runs/quality \
        [--seeds 1] [--report-only] [-- extra train.py flags]

Each run is ``python -m commands.train --tasks T --output-dir OUT/T-seedS --seed S [extra]`` (the
``train.py`` command, in its own process, from any working directory); a finished run is skipped. Writes ``OUT/quality.md`` and ``OUT/quality.json``.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

from basics.io import atomic_write_json, atomic_write_text
from basics.stats import mean_std
from mtl.rundir import RunDir

TARGETS = {"rte": ("accuracy", 60.0), "mrpc": ("f1", 86.0), "stsb": ("pearson", 85.0),
           "cola": ("mcc", 30.0), "sst2": ("accuracy", 88.0)}


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    extra = argv[argv.index("--") + 1:] if "--" in argv else []
    argv = argv[: argv.index("--")] if "--" in argv else argv
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", default="rte,mrpc,stsb,cola,sst2")
    parser.add_argument("--seeds", default="1")
    parser.add_argument("--output-dir", type=Path, required=True)
    parser.add_argument("--report-only", action="store_true",
                        help="train nothing: report the finished runs in --output-dir and list the missing ones")
    args = parser.parse_args(argv)
    rows = []
    for task in args.tasks.split(","):
        for seed in args.seeds.split(","):
            run = RunDir(args.output_dir / f"{task}-seed{seed}")
            if not run.finished:
                if args.report_only:
                    print(f"not run: {run.path}", flush=True)
                    continue
                cmd = [sys.executable, "-m", "commands.train", "--tasks", task, "--output-dir", str(run.path),
                       "--seed", seed, "--no-progress", "--no-save-model", *extra]
                print("running:", " ".join(cmd), flush=True)
                subprocess.run(cmd, check=True)
            result = run.result()
            rows.append({"task": task, "seed": int(seed), "metrics": result.metrics[task],
                         "best_epoch": result.best_epoch, "train_ex_per_s": result.train_examples_per_s,
                         "wall_s": result.wall_seconds})
    report = quality_report(rows)
    atomic_write_text(args.output_dir / "quality.md", report)
    atomic_write_json(args.output_dir / "quality.json", rows)
    print(report, end="")
    return 0


def _target(task: str, value: float | None) -> str:
    metric, bar = TARGETS.get(task, (None, None))
    if metric is None:
        return ""
    return f"{metric} ≥ {bar:g}: {'met' if value is not None and value >= bar else 'MISSED'}"


def quality_report(rows: list[dict]) -> str:
    """Markdown: one line per run, then per task the target metric over seeds (mean ± sample std, min, max)."""
    lines = ["| task | seed | dev metrics | target | best epoch | train ex/s | wall s |", "|---|---|---|---|---|---|---|"]
    by_task: dict[str, list[float]] = {}
    for r in rows:
        metric = TARGETS.get(r["task"], (None,))[0]
        if metric in r["metrics"]:
            by_task.setdefault(r["task"], []).append(r["metrics"][metric])
        shown = ", ".join(f"{k} {v:.1f}" for k, v in r["metrics"].items())
        lines.append(f"| {r['task']} | {r['seed']} | {shown} | {_target(r['task'], r['metrics'].get(metric))} "
                     f"| {r['best_epoch']} | {r['train_ex_per_s']} | {r['wall_s']} |")
    if any(len(v) > 1 for v in by_task.values()):
        lines += ["", "| task | metric | seeds | mean ± std | min | max | target (mean) |", "|---|---|---|---|---|---|---|"]
        for task, values in by_task.items():
            mean, std = mean_std(values)
            lines.append(f"| {task} | {TARGETS[task][0]} | {len(values)} | {mean:.1f}{f' ± {std:.1f}' if len(values) > 1 else ''} | {min(values):.1f} "
                         f"| {max(values):.1f} | {_target(task, mean)} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
