"""The device check of a sub-architecture study whose training ran on another machine than its first part: the
same measurements taken on both, paired.

A study that moved to a GPU machine part-way (``docs/subarch.md``: timing on one machine, training on another)
keeps a snapshot of what it measured on the CPU before (``gpu/cpu_side.json``: the errors of the control
candidates, the fine-tuning runs finished there) and measures those again on the GPU; the records now in the
results folder hold the GPU values. :func:`device_check` pairs them:

- the held-out loss of the bare extraction (no training: the teacher's and the student's forward passes alone,
  so the devices' arithmetic and any rounding of the teacher's weights in transit);
- the held-out loss after the limited distillation (the error surrogate the selection ranks on), with the
  rank correlation of the controls' order on both devices;
- each fine-tuning run's dev score.

Differences are GPU − CPU, with a 95 % t-interval over the pairs (:func:`basics.stats.paired_difference`).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from basics.stats import paired_difference, signed
from experiments.subarch_files import read_json
from mtl.rundir import RunDir
from tasks import metrics
from tasks.score import task_score


def spearman(a: list[float], b: list[float]) -> float | None:
    """Spearman's rank correlation in [-1, 1] (:func:`tasks.metrics.spearman`, ties at their mean rank); None under
    5 pairs (too few to say)."""
    if len(a) < 5:
        return None
    return metrics.spearman(a, b) / 100.0


def _pairs(cpu: Mapping[str, float], gpu: Mapping[str, float]) -> dict[str, Any]:
    keys = [k for k in cpu if k in gpu]
    diff = paired_difference({k: gpu[k] for k in keys}, {k: cpu[k] for k in keys})
    return {"n": len(keys), "cpu": {k: cpu[k] for k in keys}, "gpu": {k: gpu[k] for k in keys},
            "difference": None if diff is None else {"mean": diff.mean, "low": diff.low, "high": diff.high},
            "max_abs": max((abs(gpu[k] - cpu[k]) for k in keys), default=None),
            "spearman": spearman([cpu[k] for k in keys], [gpu[k] for k in keys])}


def gpu_name(device: str) -> str:
    """``cuda:0 (NVIDIA H200)`` -> ``NVIDIA H200`` (:func:`mtl.distributed.device_name`'s form)."""
    return device.split("(", 1)[1].rstrip(")") if "(" in device else device


def device_check(folder: Path) -> dict[str, Any] | None:
    """The paired CPU/GPU measurements of the study in ``folder`` (its ``gpu/cpu_side.json`` against the records
    there now); None without a snapshot. A record still measured on the CPU is not a pair."""
    snapshot = folder / "gpu" / "cpu_side.json"
    if not snapshot.is_file():
        return None
    side = read_json(snapshot)
    before_cpu, after_cpu, before_gpu, after_gpu, devices = {}, {}, {}, {}, set()
    for name, error in side["candidates"].items():
        before_cpu[name], after_cpu[name] = error["heldout_before"], error["heldout"]
        record = folder / "candidates" / f"{name}.json"
        if record.is_file():
            now = read_json(record)["error"]
            if now.get("device", "cpu") != "cpu":
                before_gpu[name], after_gpu[name] = now["heldout_before"], now["heldout"]
                devices.add(gpu_name(now["device"]))
    runs_cpu, runs_gpu = {}, {}
    for rel, run in side["finetune"].items():
        (values,) = run["metrics"].values()
        runs_cpu[rel] = task_score(values)
        again = RunDir(folder / rel)
        if again.finished and again.result().machine.get("cuda"):
            result = again.result()
            (values,) = result.metrics.values()
            runs_gpu[rel] = task_score(values)
            devices.add(result.machine["cuda"])
    return {"devices": sorted(devices), "loss_before": _pairs(before_cpu, before_gpu),
            "loss_after": _pairs(after_cpu, after_gpu), "finetune": _pairs(runs_cpu, runs_gpu)}


def _interval(pairs: Mapping[str, Any], digits: int) -> str:
    d = pairs["difference"]
    if d is None:
        return "—"
    if d["low"] is None:
        return signed(d["mean"], digits)
    return f"{signed(d['mean'], digits)} [{signed(d['low'], digits)}, {signed(d['high'], digits)}]"


def device_check_lines(check: Mapping[str, Any] | None) -> list[str]:
    """:func:`device_check` as a markdown table."""
    if check is None or not any(check[k]["n"] for k in ("loss_before", "loss_after", "finetune")):
        return ["(no measurement has been taken again on the GPU yet)"]
    lines = ["| measurement | pairs | GPU − CPU, mean [95 % interval] | largest difference (absolute) | rank correlation |",
             "|---|---:|---:|---:|---:|"]
    for key, what, digits in (("loss_before", "held-out loss of the bare extraction (no training)", 5),
                              ("loss_after", "held-out loss after 200 distillation steps (the error surrogate)", 5),
                              ("finetune", "fine-tuning run, dev score (points)", 2)):
        p = check[key]
        if not p["n"]:
            continue
        largest = "—" if p["max_abs"] is None else f"{p['max_abs']:.{digits}f}"
        rho = "—" if p["spearman"] is None else f"{p['spearman']:.3f}"
        lines.append(f"| {what} | {p['n']} | {_interval(p, digits)} | {largest} | {rho} |")
    lines += ["", f"GPU: {', '.join(check['devices'])}; CPU: this repository's 2-core machine."]
    return lines
