"""The Bort-style table of a sub-architecture study: size, shape, measured speed and GLUE dev per model.

One row per model (``finetune.rows``): the teacher, the chosen architecture extracted and distilled, the same
architecture extracted without distillation, and the matched tickets (with and without a head minimum per
layer). Columns: parameters (total, embeddings,
and the encoder layers: their count and their share of the total), D / A / H / I (per-layer means for a
ticket, whose layers differ), the measured CPU speed-up against the teacher at each batch size
(``latency.json``; the extracted and the distilled model have one shape, timed once), and per task the dev task
score (mean of the task's metrics, percent) as mean ± std over seeds, then the GLUE average.

Fine-tuning is a sweep (learning rate × warm-up × seeds): for every row and task the setting with the best
mean score on the held-out slice of the training set (``finetune.select_on: holdout``; or on dev) is the one
reported, so dev numbers are not chosen on dev. Every setting's scores are in ``table.json``. With
``finetune.sweep_seeds``, the setting is chosen on those seeds' runs alone, and the other seeds' runs of the
chosen setting (``chosen-seedK``) are added to it afterwards, so they never change the choice.
"""

from __future__ import annotations

import statistics
from collections.abc import Mapping, Sequence
from typing import Any

from basics.io import atomic_write_json, atomic_write_text
from experiments.glue_table import TASK_NAMES, task_order
from experiments.subarch_config import SubarchStudy
from experiments.subarch_files import StudyFiles, read_json
from mtl.rundir import RunDir
from tasks.score import task_score

ROW_LABELS = {"teacher": "Teacher", "distilled": "Extracted + distilled", "extracted": "Extracted, not distilled",
              "ticket": "Ticket (matched union, compacted)",
              "ticket_sized": "Ticket, no head minimum (matched union, compacted)",
              "ticket_distilled": "Ticket's units, extracted + distilled"}


def _mean_std(values: list[float]) -> dict[str, Any]:
    return {"mean": statistics.fmean(values), "std": statistics.stdev(values) if len(values) > 1 else None,
            "n": len(values), "values": values}


def _setting(lr: float, warmup: float, runs: list[tuple[int, RunDir]], task: str) -> dict[str, Any] | None:
    """One setting's entry from its finished ``(seed, run)`` pairs; None when none has finished."""
    dev, held, seeds, devices = [], [], [], []
    for seed, run in runs:
        if not run.finished:
            continue
        result = run.result()
        dev.append(task_score(result.metrics[task]))
        if result.holdout_metrics and task in result.holdout_metrics:
            held.append(task_score(result.holdout_metrics[task]))
        seeds.append(seed)
        devices.append(trained_on(result.machine))
    if not dev:
        return None
    return {"lr": lr, "warmup": warmup, "seeds": seeds, "dev": _mean_std(dev), "holdout": _mean_std(held) if held else None,
            "devices": devices}


def trained_on(machine: Mapping[str, Any]) -> str:
    """Where a run trained, from its ``results.json`` ``machine`` record: the GPU's name, or ``CPU``."""
    return machine.get("cuda") or "CPU"


def devices_of(row: Mapping[str, Any]) -> dict[str, int]:
    """``{device: runs}`` over the runs a row reports (each task's chosen setting, every seed)."""
    counts: dict[str, int] = {}
    for cell in row["tasks"].values():
        for device in (cell["chosen"] or {}).get("devices", []):
            counts[device] = counts.get(device, 0) + 1
    return counts


def sweep(study: SubarchStudy, row: str, task: str) -> list[dict[str, Any]]:
    """Every (lr, warm-up) setting of ``row`` on ``task`` with its finished swept seeds' dev and held-out scores."""
    files, f = StudyFiles(study.out), study.finetune
    settings = [_setting(lr, wu, [(s, RunDir(files.finetune_run(row, task, lr, wu, s))) for s in f.swept()], task)
                for lr in f.lrs for wu in f.warmups]
    return [s for s in settings if s is not None]


def with_chosen_seeds(study: SubarchStudy, row: str, task: str, pick: dict[str, Any]) -> dict[str, Any]:
    """``pick`` with the runs of the seeds that ran only the chosen setting (``finetune.sweep_seeds``) added."""
    files, f = StudyFiles(study.out), study.finetune
    if not f.chosen_only():
        return pick
    runs = [(s, RunDir(files.finetune_run(row, task, pick["lr"], pick["warmup"], s))) for s in f.swept()]
    for seed in f.chosen_only():
        run = RunDir(files.chosen_run(row, task, seed))
        if run.finished and (run.config().optim.lr, run.config().optim.warmup_ratio) == (pick["lr"], pick["warmup"]):
            runs.append((seed, run))
    return _setting(pick["lr"], pick["warmup"], runs, task) or pick


def chosen_setting(settings: list[dict[str, Any]], select_on: str) -> dict[str, Any] | None:
    """The setting with the best mean selection score (held-out, or dev); ties: more seeds, lower lr."""
    key = "holdout" if select_on == "holdout" else "dev"
    usable = [s for s in settings if s[key] is not None]
    if not usable:
        return None
    return max(usable, key=lambda s: (s[key]["mean"], s[key]["n"], -s["lr"]))


def shape_text(model: dict[str, Any] | None) -> str:
    if model is None:
        return "–"
    a = model["arch"]
    heads, ffn = statistics.fmean(a["heads"]), statistics.fmean(a["ffn"])
    uniform = len(set(a["heads"])) <= 1 and len(set(a["ffn"])) <= 1
    return f"{a['depth']} / {heads:.{0 if uniform else 1}f} / {a['hidden']} / {ffn:.0f}" + ("" if uniform else " (means)")


def seed_averages(row: Mapping[str, Any], tasks: list[str]) -> dict[int, float]:
    """``{seed: GLUE average}`` over the seeds that finished every task of ``row`` at its chosen setting."""
    by_seed: dict[int, list[float]] = {}
    for task in tasks:
        chosen = row["tasks"][task]["chosen"]
        if chosen is None:
            return {}
        for seed, value in zip(chosen["seeds"], chosen["dev"]["values"], strict=True):
            by_seed.setdefault(seed, []).append(value)
    return {s: statistics.fmean(v) for s, v in sorted(by_seed.items()) if len(v) == len(tasks)}


def timed_as(row: str, timed: Mapping[str, Any]) -> str:
    """The timed model that stands for ``row``: itself, or for the extracted and the distilled model (one shape)
    the other one, or for the distilled ticket the ticket (its units, so its shape)."""
    if row == "ticket_distilled":
        return "ticket"
    if row in timed or row not in ("extracted", "distilled"):
        return row
    return "distilled" if row == "extracted" else "extracted"


def build_table(study: SubarchStudy, rows: Sequence[str]) -> dict[str, Any]:
    files = StudyFiles(study.out)
    latency = read_json(files.latency) if files.latency.is_file() else None
    tasks = task_order(set(study.finetune.tasks))
    out_rows = []
    for row in rows:
        source = timed_as(row, (latency or {}).get("models", {}))
        model = (latency or {}).get("models", {}).get(source)
        speed = (latency or {}).get("speedup", {}).get(source)
        gpu = (latency or {}).get("gpu", {}).get("speedup", {}).get(source)
        cells: dict[str, Any] = {}
        for task in tasks:
            settings = sweep(study, row, task)
            pick = chosen_setting(settings, study.finetune.select_on)
            if pick is not None:
                pick = with_chosen_seeds(study, row, task, pick)
            cells[task] = {"chosen": pick, "settings": settings}
        done = [t for t in tasks if cells[t]["chosen"] is not None]
        complete = list(seed_averages({"tasks": cells}, tasks).values())
        average = None if len(done) < len(tasks) else {
            "mean": statistics.fmean(cells[t]["chosen"]["dev"]["mean"] for t in tasks),
            "std": statistics.stdev(complete) if len(complete) > 1 else None}
        out_rows.append({"row": row, "label": ROW_LABELS[row], "model": model, "speedup": speed, "gpu_speedup": gpu,
                         "tasks": cells, "average": average, "trained_on": devices_of({"tasks": cells})})
    return {"study": study.name, "teacher": study.teacher, "tasks": tasks, "rows": out_rows,
            "batch_sizes": study.latency.batch_sizes, "select_on": study.finetune.select_on,
            "latency": {k: v for k, v in (latency or {}).items() if k in ("device", "threads", "seq_len", "rounds")}}


def _fmt(stats: dict[str, Any] | None) -> str:
    if stats is None:
        return "–"
    return f"{stats['mean']:.1f}" if stats.get("std") is None else f"{stats['mean']:.1f} ± {stats['std']:.1f}"


def table_lines(table: dict[str, Any]) -> list[str]:
    """The rows of ``table.json`` as a markdown table."""
    sizes = [str(b) for b in table["batch_sizes"]]
    gpu = any(r.get("gpu_speedup") for r in table["rows"])
    head = ["model", "D / A / H / I", "params (M)", "embeddings (M)", "encoder (M)", "encoder share",
            *(f"CPU speed-up b{b}" for b in sizes), *((f"GPU speed-up b{b}" for b in sizes) if gpu else ()),
            *(TASK_NAMES.get(t, t) for t in table["tasks"]), "GLUE avg"]
    lines = ["| " + " | ".join(head) + " |", "|---|---|" + "---:|" * (len(head) - 2)]
    for r in table["rows"]:
        p = r["model"]["params"] if r["model"] else None
        cells = [r["label"], shape_text(r["model"]),
                 f"{p['total'] / 1e6:.2f}" if p else "–", f"{p['embeddings'] / 1e6:.2f}" if p else "–",
                 f"{p['layers'] / 1e6:.2f}" if p else "–",
                 f"{p['layers'] / p['total']:.1%}" if p else "–",
                 *((f"{r['speedup'][b]:.2f}×" if r["speedup"] else "–") for b in sizes),
                 *(((f"{r['gpu_speedup'][b]:.2f}×" if r.get("gpu_speedup") else "–") for b in sizes) if gpu else ()),
                 *(_fmt(r["tasks"][t]["chosen"]["dev"] if r["tasks"][t]["chosen"] else None) for t in table["tasks"]),
                 _fmt(r["average"])]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def markdown(table: dict[str, Any]) -> str:
    lines = [f"# {table['study']}: sub-architecture vs teacher vs ticket (teacher {table['teacher']})", "",
             *table_lines(table)]
    lat = table["latency"]
    lines += ["", "GLUE dev task scores (percent; mean of the task's metrics), mean ± std over seeds, at the "
              f"(learning rate, warm-up) chosen per row and task on {table['select_on']}. Encoder = the encoder "
              "layers' parameters (no embeddings, no pooler); encoder share = encoder / all parameters. Speed-up: paired median against the teacher "
              f"({lat.get('device', '?')}, {lat.get('threads', '?')} thread(s), {lat.get('seq_len', '?')} tokens, "
              f"{lat.get('rounds', '?')} rounds); the extracted and the distilled model have one shape, so one speed.", "",
              "Settings chosen:", ""]
    for r in table["rows"]:
        chosen = [f"{t} lr {c['chosen']['lr']:g} wu {c['chosen']['warmup']:g} (seeds {c['chosen']['seeds']})"
                  for t, c in r["tasks"].items() if c["chosen"]]
        lines.append(f"- {r['label']}: " + ("; ".join(chosen) or "no finished run"))
    places = {r["label"]: r.get("trained_on") or {} for r in table["rows"]}
    if len({d for p in places.values() for d in p}) > 1:  # say where, once the runs did not all train in one place
        lines += ["", "Trained on (the runs each row reports):", ""]
        lines += [f"- {label}: " + (", ".join(f"{n} on {d}" for d, n in sorted(p.items())) or "no finished run")
                  for label, p in places.items()]
    return "\n".join(lines) + "\n"


def table_step(study: SubarchStudy, rows: Sequence[str]) -> None:
    files = StudyFiles(study.out)
    table = build_table(study, rows)
    atomic_write_json(files.table_json, table)
    atomic_write_text(files.table_md, markdown(table))
    print(markdown(table), flush=True)
