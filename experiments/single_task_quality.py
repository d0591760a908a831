"""Single-task quality on full GLUE training sets with the default settings, one run per task (resumable).

    python -m experiments.single_task_quality --tasks rte,mrpc,stsb,cola,sst2 --output-dir runs/quality \
        [--seeds 1] [-- extra train.py flags]

Each run is ``python train.py --tasks T --output-dir OUT/T-seedS --seed S [extra]``; a run whose
``metrics.json`` exists is skipped. Writes ``OUT/quality.md`` and ``OUT/quality.json``.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

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
    args = parser.parse_args(argv)
    rows = []
    for task in args.tasks.split(","):
        for seed in args.seeds.split(","):
            out = args.output_dir / f"{task}-seed{seed}"
            if not (out / "metrics.json").is_file():
                cmd = [sys.executable, "train.py", "--tasks", task, "--output-dir", str(out), "--seed", seed,
                       "--no-progress", "--no-save-model", *extra]
                print("running:", " ".join(cmd), flush=True)
                subprocess.run(cmd, check=True)
            results = json.loads((out / "results.json").read_text())
            rows.append({"task": task, "seed": int(seed), "metrics": results["metrics"][task],
                         "best_epoch": results["best_epoch"], "train_ex_per_s": results["train_examples_per_s"],
                         "wall_s": results["wall_seconds"]})
    lines = ["| task | seed | dev metrics | target | best epoch | train ex/s | wall s |", "|---|---|---|---|---|---|---|"]
    for r in rows:
        metric, bar = TARGETS.get(r["task"], (None, None))
        value = r["metrics"].get(metric) if metric else None
        target = f"{metric} ≥ {bar:g}: {'met' if value is not None and value >= bar else 'MISSED'}" if metric else ""
        shown = ", ".join(f"{k} {v:.1f}" for k, v in r["metrics"].items())
        lines.append(f"| {r['task']} | {r['seed']} | {shown} | {target} | {r['best_epoch']} | {r['train_ex_per_s']} | {r['wall_s']} |")
    args.output_dir.mkdir(parents=True, exist_ok=True)
    (args.output_dir / "quality.md").write_text("\n".join(lines) + "\n")
    (args.output_dir / "quality.json").write_text(json.dumps(rows, indent=2))
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
