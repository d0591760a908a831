"""The study engine on this machine: the quickstart study with 2 workers against 1, and on a local Ray.

    python -m experiments.bench_study [--study experiments/quickstart.yaml] [--out runs/bench_study] \
        [--ray] [--json experiments/results/bench_study.json]

Runs the study from scratch several times, each in a fresh output folder, with ``deterministic: true``
added to the study's ``train`` block: ``--jobs 2`` (one thread per run), ``--jobs 1`` and, with ``--ray``,
``--backend ray --jobs 2`` (a local Ray with 2 CPUs). Reports the wall times and their ratio, whether
the tables are bitwise identical (``table.json`` and every run's ``metrics.json``), and the scheduler's
overhead per run: the time from handing a job to a worker to the worker starting it
(``logs/engine.json``). The 2-worker call runs first, so it pays the tokenization (the cache then
serves the others): the ratio is, if anything, understated.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

import yaml

from basics.io import atomic_write_json, atomic_write_text
from basics.options import read_yaml

TARGET_RATIO = 1.6
TARGET_OVERHEAD = 2.0  # seconds per run


def run_study(study: Path, out: Path, flags: list[str]) -> float:
    """Wall seconds of one whole study call (a fresh output folder, every run deterministic)."""
    shutil.rmtree(out, ignore_errors=True)
    cmd = [sys.executable, "-m", "experiments.run", str(study), "--output-dir", str(out), "--status-every", "3600",
           *flags]
    start = time.perf_counter()
    done = subprocess.run(cmd, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    (out / "logs").mkdir(parents=True, exist_ok=True)
    (out / "logs" / "bench_stdout.txt").write_text(done.stdout + done.stderr)
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed ({done.returncode}):\n{done.stderr[-3000:]}")
    return seconds


def fingerprint(out: Path) -> dict[str, object]:
    """What must not depend on the number of workers: the table and every run's metrics (the table names its
    runs by path: the output folder is written ``OUT``)."""
    runs = {str(p.parent.relative_to(out)): json.loads(p.read_text()) for p in sorted(out.rglob("metrics.json"))}
    table = json.loads((out / "table.json").read_text().replace(json.dumps(str(out.resolve()))[1:-1], "OUT")
                       .replace(json.dumps(str(out))[1:-1], "OUT"))
    table.pop("title", None)
    return {"table": table, "runs": runs}


def overheads(out: Path) -> list[float]:
    jobs = json.loads((out / "logs" / "engine.json").read_text())["jobs"]
    return [j["overhead"] for j in jobs if j.get("overhead") is not None]


def markdown(report: dict) -> str:
    r = report
    lines = ["# The study engine: the quickstart study on 2 workers, on 1, and on a local Ray", "",
             f"Command: `{r['command']}`", "",
             f"Machine: {r['machine']}. Study: `{r['study']}` ({r['runs']} training runs, every run "
             "`--deterministic`, one torch thread per run, the tokenization cache warm).", "",
             "| call | wall time | vs --jobs 1 | table and every run's metrics | 1-min load average before |",
             "|---|---:|---:|---|---:|"]
    for name, row in r["calls"].items():
        same = "reference" if name == "jobs1" else ("bitwise identical" if row["identical"] else "DIFFERENT")
        lines.append(f"| `{row['flags']}` | {row['seconds']:.0f} s | {r['calls']['jobs1']['seconds'] / row['seconds']:.2f}x "
                     f"| {same} | {row.get('load_before', float('nan')):.2f} |")
    lines += ["", "The load average counts every runnable process of the machine, also those kept at the lowest "
              "CPU priority while the benchmark ran (other work of the session, at autogroup nice 19)."]
    o = r["overhead"]
    lines += ["", f"**Speed-up of 2 workers over 1: {r['ratio']:.2f}x** (target ≥ {TARGET_RATIO}x: "
              f"{'met' if r['ratio'] >= TARGET_RATIO else 'missed'}).",
              f"**Scheduler overhead per run** (handing a job to a worker until the worker starts it): median "
              f"{o['median']:.3f} s, max {o['max']:.2f} s over {o['n']} runs (the max is the first run, which waits for "
              f"the fork server to import torch and transformers once) (target < {TARGET_OVERHEAD} s: "
              f"{'met' if o['median'] < TARGET_OVERHEAD else 'missed'}).", ""]
    return "\n".join(lines)


def rejudge(out: Path, json_path: Path | None) -> int:
    """Recompute the identity column of an earlier call's report from its output folders (same runs, same times)."""
    if json_path is None or not json_path.is_file():
        raise SystemExit("--rejudge needs --json FILE written by an earlier call")
    report = json.loads(json_path.read_text())
    reference = fingerprint(out / "jobs1")
    for name, row in report["calls"].items():
        row["identical"] = fingerprint(out / name) == reference
    report["rejudged"] = "identity recomputed by --rejudge from the same output folders"
    text = markdown(report)
    print(text)
    atomic_write_json(json_path, report)
    atomic_write_text(json_path.with_suffix(".md"), text)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--study", type=Path, default=Path("experiments/quickstart.yaml"))
    parser.add_argument("--out", type=Path, default=Path("runs/bench_study"))
    parser.add_argument("--ray", action="store_true", help="also run the study on a local Ray with 2 CPUs")
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument("--rejudge", action="store_true",
                        help="run nothing: compare the folders of an earlier call again (its times from --json)")
    args = parser.parse_args(argv)
    if args.rejudge:
        return rejudge(args.out, args.json)
    command = "python -m experiments.bench_study " + " ".join(argv if argv is not None else sys.argv[1:])
    data = read_yaml(args.study)
    data["train"] = {**(data.get("train") or {}), "deterministic": True}
    args.out.mkdir(parents=True, exist_ok=True)
    study = args.out / "study.yaml"
    study.write_text(yaml.safe_dump(data, sort_keys=False))
    calls = {"jobs2": ["--jobs", "2", "--threads-per-run", "1"], "jobs1": ["--jobs", "1", "--threads-per-run", "1"]}
    if args.ray:
        calls["ray2"] = ["--backend", "ray", "--jobs", "2", "--threads-per-run", "1"]
    rows: dict[str, dict] = {}
    for name, flags in calls.items():
        out = args.out / name
        load = os.getloadavg()[0]
        seconds = run_study(study, out, [*flags])
        rows[name] = {"flags": " ".join(flags), "seconds": round(seconds, 1), "load_before": round(load, 2)}
        print(f"{name}: {seconds:.0f} s", flush=True)
    reference = fingerprint(args.out / "jobs1")
    for name in rows:
        rows[name]["identical"] = fingerprint(args.out / name) == reference
    times = overheads(args.out / "jobs2")
    report = {"command": command, "study": str(args.study), "calls": rows,
              "runs": len(reference["runs"]),
              "ratio": rows["jobs1"]["seconds"] / rows["jobs2"]["seconds"],
              "overhead": {"median": statistics.median(times), "max": max(times), "n": len(times)},
              "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores"}
    text = markdown(report)
    print(text)
    if args.json:
        atomic_write_json(args.json, report)
        atomic_write_text(args.json.with_suffix(".md"), text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
