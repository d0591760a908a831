"""Every results table of the documentation, rendered from the committed JSON by code.

    python -m experiments.result_tables            # rewrite every table from its JSON
    python -m experiments.result_tables --check    # exit 1 and name each page whose table differs

A page marks each table it shows::

    <!-- table: NAME -->
    ...(rendered, do not edit by hand)...
    <!-- /table -->

``NAME`` is a key of :data:`TABLES`, a function that reads committed files under
``experiments/results/`` and returns the table (markdown). :data:`PAGES` lists the pages that carry
markers (``docs/results.md`` and every ``experiments/results/*/README.md``); :data:`FILES` lists the
committed report files that are wholly rendered from their JSON (``phase_transition.md``,
``lottery.md``, ``iterative_pruning.md``, ``cpu_study/table.md``, ``subarch/*/search.md`` and ``table.md``). ``tests/test_result_tables.py``
re-renders all of them and fails when one differs, so a table cannot drift from its JSON.

"Not learnt" marks use the committed dev baselines (``experiments/results/dev_baselines.json``,
:mod:`experiments.baselines`), which the committed results were evaluated against (full GLUE dev sets).
"""

from __future__ import annotations

import re
import statistics
import sys
from collections.abc import Callable, Sequence
from functools import cache
from pathlib import Path

from basics.cli import OneLineParser, run_main
from basics.errors import UserError
from basics.io import atomic_write_text
from basics.stats import mean_std, signed
from experiments import (
    ablation,
    glue_table,
    iterative_pruning,
    lottery,
    paper_comparison,
    phase_transition,
    subarch_device,
    subarch_files,
    subarch_pooling,
    subarch_search,
    subarch_table,
    subarch_targets,
    transfer_table,
)
from experiments.baselines import BASELINES_FILE, committed_baselines
from experiments.report_stats import NOT_LEARNT, baseline_legend, format_versus, learnt_mark, pm
from experiments.single_task_quality import TARGETS
from experiments.subarch_config import load_study
from masks.aggregate import aggregate
from masks.mask import load_mask
from mtl.rundir import read_json
from tasks.baseline import Baseline, is_learnt

REPO = Path(__file__).resolve().parent.parent
RESULTS = REPO / "experiments" / "results"
# a marker is a line of its own (a marker written inside a sentence is text)
MARKER = re.compile(r"^(<!-- table: (?P<name>[\w.-]+) -->\n)(?P<body>.*?)^(<!-- /table -->)$", re.S | re.M)
OPEN = re.compile(r"^<!-- table: [\w.-]+ -->$", re.M)
CLOSE = re.compile(r"^<!-- /table -->$", re.M)
PT_TASKS = ("stsb", "rte", "mrpc", "cola")  # experiments/results/phase_transition/
CPU_FULL_TICKETS = ("rte", "mrpc", "stsb", "cola", "sst2")  # experiments/results/cpu_full/tickets/: add each task as its tickets finish
SUBARCH_STUDIES = ("demo", "full", "deep", "units", "a8")  # experiments/results/subarch/: the studies with a Bort-style table
TASK_NAMES = glue_table.TASK_NAMES


@cache
def baselines() -> dict[str, Baseline]:
    return committed_baselines(BASELINES_FILE)


def _json(relative: str) -> dict | list:
    return read_json(RESULTS / relative)


def _pt(task: str) -> dict:
    """A phase-transition report: ``phase_transition/TASK`` (two seeds), SST-2 from ``cpu_study/tickets``."""
    return _json(f"phase_transition/{task}/phase_transition.json" if task in PT_TASKS
                 else f"cpu_study/tickets/{task}/phase_transition.json")


def _lines(lines: Sequence[str]) -> str:
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------- the GLUE study (cpu_study)


def glue(folder: str = "cpu_study") -> Callable[[], str]:
    """The GLUE table of the study committed in ``experiments/results/FOLDER/table.json``."""
    return lambda: glue_table.format_markdown(_json(f"{folder}/table.json"))


def glue_seeds(folder: str = "cpu_study") -> Callable[[], str]:
    return lambda: glue_table.format_seed_table(_json(f"{folder}/table.json"))


def glue_task_differences(folder: str = "cpu_study") -> Callable[[], str]:
    return lambda: glue_table.format_task_differences(_json(f"{folder}/table.json"))


def paper_table(folder: str, model: str = "MiniLM") -> Callable[[], str]:
    """The study's table beside the Super Tickets paper's numbers (:mod:`experiments.paper_comparison`)."""
    return lambda: paper_comparison.format_comparison(paper_comparison.comparison(_json(f"{folder}/table.json")), model)


def cpu_tickets() -> str:
    """The super tickets the GLUE study trained with: which candidate won on the held-out slice, its size,
    and what the choice would be with dense as a candidate."""
    per_task = _json("cpu_study/masks/per-task.json")["tasks"]
    lines = ["| task | super ticket used | held-out: dense / best winning | params kept (% prunable) | "
             "with dense as a candidate | dev: dense / super ticket (seed 1) |", "|---|---|---|---:|---|---|"]
    for task in per_task:
        report = _json(f"cpu_study/tickets/{task}/phase_transition.json")
        st = report["super_ticket"]
        dense = next(r for r in report["rows"] if r["kind"] == "dense")
        now = phase_transition.selection(report)
        now_text = "dense" if now["kind"] == "dense" else f"the same (winning {now['sparsity']:.2f})"
        kept = 100.0 * per_task[task]["params_kept"] / per_task[task]["params_total"]
        lines.append(f"| {TASK_NAMES[task]} | winning {st['sparsity']:.2f} | {dense['holdout_mean']:.2f} / {st['score']:.2f} | "
                     f"{kept:.1f} | {now_text} | {dense['dev_mean']:.2f} / {st['dev_mean']:.2f} |")
    return _lines(lines)


def ticket_unions() -> str:
    """Union and vote:3 of the five super tickets: the study's (STS-B ticket of cpu_study, one seed) and
    with phase_transition's STS-B ticket (two seeds) instead, from the committed mask files."""
    tasks = list(_json("cpu_study/masks/per-task.json")["tasks"])
    study = {t: load_mask(RESULTS / "cpu_study" / "tickets" / t / "super_ticket.safetensors") for t in tasks}
    other = {**study, "stsb": load_mask(RESULTS / "phase_transition" / "stsb" / "super_ticket.safetensors")}
    lines = ["| super tickets | STS-B ticket | union: params kept (% prunable) | vote:3: params kept | "
             "mean ticket size (task avg) |", "|---|---|---:|---:|---:|"]
    for name, masks in (("`cpu_study/tickets/*` (used by the study)", study),
                        ("same, with `phase_transition/stsb`'s ticket", other)):
        shape = next(iter(masks.values())).meta.shape
        union, vote = aggregate(masks, "union"), aggregate(masks, "vote:3")
        size = statistics.fmean(100 * (1 - m.sparsity(shape)) for m in masks.values())
        lines.append(f"| {name} | {masks['stsb'].meta.sparsity:.2f} | {100 * (1 - union.sparsity(shape)):.1f} | "
                     f"{100 * (1 - vote.sparsity(shape)):.1f} | {size:.1f} |")
    return _lines(lines)


# ---------------------------------------------------------------- phase transitions


def _order(report: dict, sparsity: float) -> str:
    """``W > L > R`` at one sparsity (by mean dev score)."""
    means = {r["kind"]: r["dev_mean"] for r in report["rows"] if r["sparsity"] == sparsity and r["kind"] != "dense"}
    return " > ".join(k[0].upper() for k in sorted(means, key=lambda k: -means[k]))


def phase_summary() -> str:
    """Per task: dense, the best winning ticket on dev and its paired difference to dense, the super ticket,
    the order of the kinds at every sparsity, and how many cells are learnt."""
    table = ["| task | seeds | dense (dev) | best winning (dev) | winning − dense [95% CI] | super ticket (held-out) | "
             "order of the kinds per sparsity (W winning, R random, L losing) | rows learnt (of dense + kinds × sparsities) |",
             "|---|---|---|---|---|---|---|---|"]
    for task in (*PT_TASKS, "sst2"):
        report = _pt(task)
        base = baselines().get(task)
        rows = report["rows"]
        dense = next(r for r in rows if r["kind"] == "dense")
        best = max((r for r in rows if r["kind"] == "winning"), key=lambda r: (r["dev_mean"], -r["sparsity"]))
        diff = phase_transition.dense_differences(report)[("winning", best["sparsity"])]
        sparsities = sorted({r["sparsity"] for r in rows if r["kind"] != "dense"})
        order = "; ".join(f"{s:.2f}: {_order(report, s)}" for s in sparsities)
        learnt = sum(is_learnt(r["dev_mean"], base) for r in rows) if base else None
        st = report["super_ticket"]
        source = "" if task in PT_TASKS else " (`cpu_study/tickets`)"
        table.append(f"| {TASK_NAMES[task]}{source} | {len(dense['seeds'])} | {pm(dense['dev_mean'], dense['dev_std'])}"
                     f"{learnt_mark(dense['dev_mean'], base)} | {pm(best['dev_mean'], best['dev_std'])}"
                     f"{learnt_mark(best['dev_mean'], base)} at {best['sparsity']:.2f} | {format_versus(diff)} | "
                     f"winning {st['sparsity']:.2f} ({st['score']:.2f}) | {order} | "
                     f"{'–' if learnt is None else f'{learnt}/{len(rows)}'} |")
    return _lines(table)


def phase_table(task: str, folder: str | None = None) -> Callable[[], str]:
    """A task's phase-transition tables: the committed 2-seed study (``phase_transition/TASK``), or the report in
    ``FOLDER/tickets/TASK`` of a GLUE study (``cpu_full``)."""
    def render() -> str:
        report = _json(f"{folder}/tickets/{task}/phase_transition.json") if folder else _pt(task)
        base = baselines().get(task)
        return _lines([baseline_legend(base), "", *phase_transition.score_table(report, base), "",
                       *phase_transition.difference_table(report), "", phase_transition.super_ticket_line(report)])
    return render


# ---------------------------------------------------------------- lottery, iterative pruning


def lottery_table(folder: str) -> Callable[[], str]:
    """The table of ``lottery/FOLDER/lottery.json``. A task's study with fine-tuned-source OMP rows points to the
    pre-trained-source study of the same task (``lottery/TASK-pretrained/``, its own dense runs) when it exists."""
    def render() -> str:
        report = lottery.derive(_json(f"lottery/{folder}/lottery.json"))
        base = baselines().get(report["task"])
        sources = sorted({r["omp_source"] for r in report["rows"] if r.get("omp_source")})
        lines = [baseline_legend(base), "", *lottery.table(report, base), "",
                 "OMP source of these rows: " + ", ".join(lottery.OMP_WORDS[s] for s in sources) + " weights "
                 "(`omp_source` in `lottery.json`)."]
        if "pretrained" not in sources:
            sibling = f"{report['task']}-pretrained"
            if (RESULTS / "lottery" / sibling / "lottery.json").is_file():
                lines.append("OMP from the pre-trained weights (Chen et al.'s one-shot setting): the "
                             f"`{sibling}` table (its own dense runs on the same seeds).")
            else:
                lines.append("OMP from the pre-trained weights (Chen et al.'s one-shot setting): **pending, not run "
                             "yet** (`--omp-source pretrained`).")
        return _lines(lines)
    return render


def iterative_table(folder: str) -> Callable[[], str]:
    def render() -> str:
        report = _json(f"iterative_pruning/{folder}/iterative_pruning.json")
        base = baselines().get(report["task"])
        return _lines([baseline_legend(base), "", *iterative_pruning.retrained_table(report, base), "",
                       "Held-out = the training examples held out of the run's training set (never trained on; "
                       "each run's best epoch was chosen on them); the good masks were chosen on "
                       f"{report['select_on']}."])
    return render


# ---------------------------------------------------------------- mask analysis


def analysis_seeds() -> str:
    groups = _json("analysis/analysis.json")["groups"]
    lines = ["| masks | seeds | params kept (%) | Jaccard across seeds (all units) | Fleiss' κ heads / FFN | "
             "stable (kept by every seed): heads, FFN neurons, params kept (%) |", "|---|---|---:|---:|---|---|"]
    for name, group in groups.items():
        agreement = group["agreement"]
        if agreement["all"]["jaccard"] is None:
            continue
        kept = statistics.fmean(m["params_kept"] for m in group["masks"])
        stable = group["stable"]
        lines.append(f"| {name} good masks | {', '.join(group['seeds'])} | {kept:.1f} | {agreement['all']['jaccard']:.2f} | "
                     f"{agreement['heads']['kappa']:.2f} / {agreement['ffn']['kappa']:.2f} | {stable['heads_kept']}/"
                     f"{stable['heads_total']}, {stable['ffn_kept']}/{stable['ffn_total']}, {stable['params_kept']:.1f} |")
    return _lines(lines)


def analysis_tasks() -> str:
    """Pairwise Jaccard of the super tickets the analysis read (``analysis.json`` overlap of the stable masks)."""
    data = _json("analysis/analysis.json")
    groups = {name: g for name, g in data["groups"].items() if g["source"] == "super_ticket" or ":" not in name}
    names = [n for n in groups if groups[n]["source"] == "super_ticket"]
    overlap = data["overlap"]["stable"]
    lines = ["| ticket | params kept (%) | " + " | ".join(names) + " |", "|---|---:|" + "---:|" * len(names)]
    for a in names:
        lines.append(f"| {a} | {groups[a]['stable']['params_kept']:.1f} | "
                     + " | ".join("–" if a == b else f"{overlap[a][b]:.2f}" for b in names) + " |")
    return _lines(lines)


# ---------------------------------------------------------------- single-task quality


def _quality(file: str) -> dict[str, list[dict]]:
    out: dict[str, list[dict]] = {}
    for row in _json(f"single_task_quality/{file}"):
        out.setdefault(row["task"], []).append(row)
    return out


def quality_defaults() -> str:
    runs = _quality("defaults_quality.json")
    lines = ["| task | metric | target | seed 1 | seed 2 | seed 3 | mean ± std | verdict (on the mean) |",
             "|---|---|---|---|---|---|---|---|"]
    for task in ("sst2", "mrpc", "stsb", "cola", "rte"):
        metric, target = TARGETS[task]
        by_seed = {r["seed"]: r["metrics"][metric] for r in runs[task]}
        values = list(by_seed.values())
        mean, std = mean_std(values)
        cells = [f"{by_seed[s]:.1f} (epoch {next(r['best_epoch'] for r in runs[task] if r['seed'] == s)})"
                 if s in by_seed else "–" for s in (1, 2, 3)]
        met = sum(v >= target for v in values)
        verdict = (f"met ({met}/{len(values)} seeds)" if mean >= target
                   else f"missed by {target - mean:.1f} ({met}/{len(values)} seeds reach it)")
        spread = f"{mean:.1f} ± {std:.1f}" if len(values) > 1 else f"{mean:.1f}"
        lines.append(f"| {TASK_NAMES[task]} | {metric} | {target:g} | " + " | ".join(cells) + f" | {spread} | {verdict} |")
    return _lines(lines)


QUALITY_SETTINGS = (  # label, file, kind ("quality": a list of runs; "result": one results.json)
    ("defaults (lr 1e-4, 5 epochs, CLS)", "defaults_quality.json", "quality"),
    ("`--lr 5e-5`", "lr5e-5_quality.json", "quality"),
    ("`--pooling pooler`", "rte_pooler_quality.json", "quality"),
    ("`--pooling mean`", "rte_pooling_mean_results.json", "result"),
    ("`--epochs 10`", "epochs10_quality.json", "quality"),
    ("`--max-seq-length 256`", "rte_len256_quality.json", "quality"),
)


def quality_alternatives() -> str:
    lines = ["| setting | RTE accuracy (seeds) | RTE mean ± std | CoLA MCC (seeds) | CoLA mean ± std | file |",
             "|---|---|---|---|---|---|"]
    for label, file, kind in QUALITY_SETTINGS:
        if kind == "result":
            result = _json(f"single_task_quality/{file}")
            runs = {task: [{"metrics": m, "best_epoch": result["best_epoch"]}] for task, m in result["metrics"].items()}
        else:
            runs = _quality(file)
        cells = []
        for task, metric in (("rte", "accuracy"), ("cola", "mcc")):
            values = [r["metrics"][metric] for r in runs.get(task, [])]
            if not values:
                cells += ["–", "–"]
                continue
            epochs = [r["best_epoch"] for r in runs[task]]
            seeds = ", ".join(f"{v:.1f}" for v in values)
            if len(values) == 1:
                seeds += f" (best epoch {epochs[0]})"
            cells += [seeds, pm(*mean_std(values), digits=1) if len(values) > 1 else "–"]
        lines.append(f"| {label} | " + " | ".join(cells) + f" | `{file}` |")
    return _lines(lines)


# ---------------------------------------------------------------- docs/results.md


def dev_baselines() -> str:
    lines = ["| task | dev examples | labels (dev) | best constant | its task score | dev-set SE | learnt above |",
             "|---|---:|---|---|---:|---:|---:|"]
    for task, b in baselines().items():
        counts = "; ".join(", ".join(f"{k}: {v}" for k, v in c.items()) for c in b.label_counts.values()) or "scores"
        constant = repr(b.constant) if b.constant is not None else "any (correlation 0)"
        lines.append(f"| {TASK_NAMES.get(task, task)} | {sum(b.n.values())} | {counts} | {constant} | {b.score:.2f} | "
                     f"{b.standard_error:.2f} | {b.threshold:.2f} |")
    return _lines(lines)


def _glue_summary(table: dict) -> str:
    """MT-DNN's GLUE average, every masked multi-task row against its dense baseline (with its parameter
    accounting), and the table's comparisons (MT-DNN − single-task, each Tickets-Share row − its control)."""
    rows = {r["label"]: r for r in table["rows"]}
    dense = rows["MT-DNN (dense)"]
    text = f"MT-DNN (dense) {pm(dense['average']['mean'], dense['average']['std'], 1)}"
    masked_groups = [g for g, base in glue_table.DENSE_OF_GROUP.items() if base == "MT-DNN (dense)" and g != "MT-DNN"]
    for group in masked_groups:
        parts = [f"{label[len(group) + 1:]} {format_versus(row['vs_dense']['glue_avg'])} "
                 f"(params {row['params_kept']['mean']:.1f} % union / "
                 f"{(row.get('params_task_mean') or row['params_kept'])['mean']:.1f} % task avg)"
                 for label, row in rows.items() if label.startswith(group) and row.get("vs_dense")]
        if parts:
            text += f"; {group} − MT-DNN: " + ", ".join(parts)
    for comparison in table.get("comparisons", []):
        text += f"; {comparison['row']} − {comparison['against']} {format_versus(comparison['glue_avg'])}"
    return text


def _seed_span(table: dict) -> str:
    """``N seeds`` or ``N–M seeds``: how many seeds the rows of a GLUE table have."""
    counts = sorted({len(row["seeds"]) for row in table["rows"]})
    return f"{counts[0]}–{counts[-1]} seeds" if len(counts) > 1 else f"{counts[0]} seeds"


def _quality_summary() -> str:
    runs = _quality("defaults_quality.json")
    parts = []
    for task in ("sst2", "mrpc", "stsb", "cola", "rte"):
        metric, target = TARGETS[task]
        values = [r["metrics"][metric] for r in runs[task]]
        mean, std = mean_std(values)
        spread = f" ± {std:.1f}" if len(values) > 1 else f" ({len(values)} seed)"
        parts.append(f"{TASK_NAMES[task]} {metric} {mean:.1f}{spread} ({'≥' if mean >= target else '<'} {target:g})")
    return "; ".join(parts)


def _best_winning(report: dict) -> str:
    """``TASK +d [lo, hi] at s``: the winning ticket with the best mean dev score and its paired difference to dense."""
    best = max((r for r in report["rows"] if r["kind"] == "winning"), key=lambda r: (r["dev_mean"], -r["sparsity"]))
    diff = phase_transition.dense_differences(report)[("winning", best["sparsity"])]
    return f"{TASK_NAMES[report['task']]} {format_versus(diff)} at {best['sparsity']:.2f}"


def _phase_summary() -> str:
    return "best winning ticket on dev − dense (95 % CI): " + "; ".join(
        _best_winning(_pt(task)) for task in (*PT_TASKS, "sst2"))


def _cpu_full_seeds() -> str:
    counts = sorted({len(_json(f"cpu_full/tickets/{t}/phase_transition.json")["seeds"]) for t in CPU_FULL_TICKETS})
    return " or ".join(map(str, counts)) + " seeds"


def _cpu_full_phase_summary() -> str:
    """The full-budget ticket stage: the best winning ticket per task, the super tickets, the verdicts."""
    reports = [_json(f"cpu_full/tickets/{t}/phase_transition.json") for t in CPU_FULL_TICKETS]
    supers = [f"{TASK_NAMES[r['task']]} " + ("dense" if r["super_ticket"]["kind"] == "dense"
                                             else f"winning {r['super_ticket']['sparsity']:.2f}") for r in reports]
    verdicts = [phase_transition.transition(r, baselines().get(r["task"])) for r in reports]
    appears = [TASK_NAMES[v["task"]] for v in verdicts if v["verdict"] == "appears"]
    return ("best winning ticket on dev − dense (95 % CI): " + "; ".join(_best_winning(r) for r in reports)
            + "; super tickets (held-out): " + ", ".join(supers)
            + f"; phase transition detected on: {', '.join(appears) or 'none'}")


def _lottery_summary() -> str:
    parts = []
    above = total = 0
    for task in ("mrpc", "rte"):
        report = lottery.derive(_json(f"lottery/{task}/lottery.json"))
        by = {(r["method"], r["sparsity"]): r for r in report["rows"]}
        for (method, s), row in by.items():
            if method in ("imp", "omp") and ("random", s) in by:
                total += 1
                above += row["mean"] >= by[("random", s)]["mean"]
        matching = [f"{r['method']} {r['sparsity']:.1f}" for r in report["rows"] if r["matching"]]
        parts.append(f"{TASK_NAMES[task]} matching: {', '.join(matching) or 'none'}")
    pre = []
    for task in ("mrpc", "rte"):
        if (RESULTS / "lottery" / f"{task}-pretrained" / "lottery.json").is_file():
            report = lottery.derive(_json(f"lottery/{task}-pretrained/lottery.json"))
            cells = [f"{r['sparsity']:.1f} {format_versus(r['vs_dense'])}" for r in report["rows"] if r["method"] == "omp"]
            pre.append(f"{TASK_NAMES[task]} " + ", ".join(cells))
    tail = ("; OMP from the pre-trained weights, Δ vs its own dense [95 % CI]: " + "; ".join(pre)) if pre else \
        "; OMP from fine-tuned weights only (pre-trained source pending)"
    return f"magnitude ≥ random in {above} of {total} comparisons (means, fine-tuned-source OMP); " + "; ".join(parts) + tail


def _iterative_summary() -> str:
    parts = []
    for folder in ("rte", "mrpc-t98"):
        report = _json(f"iterative_pruning/{folder}/iterative_pruning.json")
        rows = {r["kind"]: r for r in report["rows"]}
        dev = " / ".join(f"{rows[k]['dev_mean']:.1f}" for k in ("good", "random", "bad"))
        held = " / ".join(f"{rows[k]['holdout_mean']:.1f}" for k in ("good", "random", "bad"))
        parts.append(f"{folder}: good / random / bad dev {dev} (dense {rows['dense']['dev_mean']:.1f}), held-out {held}")
    return "; ".join(parts)


def _deploy_summary() -> str:
    report = _json("bench_deploy.json")
    speed = {(r["threads"], r["batch"], r["variant"]): r for r in report["speed"]}
    latency = lambda v: speed[(1, 32, v)]["latency_ms"]  # noqa: E731
    dev = report["dev"]
    score = lambda v, t: dev[v][t]["score"]  # noqa: E731
    compact, dense, int8 = "compact 50% onnx int8", "dense pytorch fp32", "dense onnx int8"
    return (f"{latency(dense) / latency(compact):.2f}x dense PyTorch fp32 and {latency(int8) / latency(compact):.2f}x "
            f"dense ONNX Runtime int8 (medians); dev task score vs the compacted fp32 model: SST-2 "
            f"{signed(score(compact, 'sst2') - score('compact 50% pytorch fp32', 'sst2'), 2)}, STS-B "
            f"{signed(score(compact, 'stsb') - score('compact 50% pytorch fp32', 'stsb'), 2)}")


def _engine_summary() -> str:
    r = _json("bench_study.json")
    same = [name for name, row in r["calls"].items() if name != "jobs1" and row["identical"]]
    words = {"jobs2": "2 local workers", "ray2": "2 Ray workers"}
    return (f"{r['ratio']:.2f}x; table and every run's metrics bitwise identical with "
            f"{' and '.join(words.get(n, n) for n in same) or 'no other call'}; scheduler overhead median "
            f"{r['overhead']['median']:.2f} s per run")


def _transfer_summary() -> str:
    doc = _json("transfer_cpu/transfer.json")
    table = doc["tables"][0]
    rows = table["rows"]
    learnt = [t for t in table["targets"] if t not in table["dense_not_learnt"]]
    objective = next(s for s in table["sources"] if s in doc["objectives"])
    parts = [f"{objective} ticket − random: " + ", ".join(
        f"{TASK_NAMES[t]} {format_versus(rows[objective][t]['vs_random'])}" for t in learnt)]
    parts.append(f"{objective} ticket − dense: " + ", ".join(
        f"{TASK_NAMES[t]} {format_versus(rows[objective][t]['vs_dense'])}" for t in learnt))
    universal = [a["source"] for a in table["universal"] if a["universal"]]
    parts.append(f"sources that transfer universally: {', '.join(universal) or 'none'}")
    if table["dense_not_learnt"]:
        parts.append(f"not judged (dense not learnt): {', '.join(TASK_NAMES[t] for t in table['dense_not_learnt'])}")
    return f"sparsity {table['sparsity']:.2f}; " + "; ".join(parts)


def bench_train() -> str:
    """The trainer-throughput table of ``bench_train_rte.json``: every trainer with its ratio to both Trainer rows."""
    r = _json("bench_train_rte.json")
    speed = r["examples_per_s"]
    standard, tuned = (speed[k] for k in ("hf Trainer (fp32, DataCollatorWithPadding)", "hf Trainer (bf16, group_by_length)"))
    lines = ["| trainer | examples/s | vs standard `Trainer` | vs tuned `Trainer` |", "|---|---:|---:|---:|"]
    for name, value in speed.items():
        lines.append(f"| {name} | {value:.1f} | {value / standard:.2f}x | {value / tuned:.2f}x |")
    extra = r.get("speedups") or {}
    if "compile" in extra and "padding" in extra:
        c, pad = extra["compile"], extra["padding"]
        lines += ["", f"`torch.compile` (ours, defaults): {c['eager_examples_per_s']:.1f} ex/s eager vs "
                  f"{c['compiled_examples_per_s']:.1f} compiled, {c['compile_seconds_first_step']:.0f} s to compile, "
                  f"largest loss difference {c['max_loss_difference']:.1e}. Padding share of the length-grouped batches on "
                  f"the whole RTE training set: {100 * pad['length_grouped_padding_share']:.2f} % (random batches: "
                  f"{100 * pad['random_padding_share']:.1f} %)."]
    return _lines(lines)


def _distill_summary() -> str:
    rows = _json("bench_distill.json")["rows"]

    def span(variant: str) -> str:
        ratios = [r["variants"]["fp32"]["seconds_per_step"] / r["variants"][variant]["seconds_per_step"] for r in rows]
        return f"{min(ratios):.2f}–{max(ratios):.2f}x"

    loss = max(abs(r["variants"][v]["heldout_after"] - r["variants"]["fp32"]["heldout_after"])
               for r in rows for v in r["variants"])
    return (f"{span('bf16')} faster in bf16, {span('bf16 + teacher cache')} with the teacher cache too, over "
            f"{len(rows)} sub-architectures; held-out loss within {loss:.4f} of fp32's")


def _subarch_summary(table: dict) -> str:
    """The sub-architecture study's targets in one cell: each check's measurement and verdict."""
    arch = next(r for r in table["rows"] if r["row"] == "distilled")["model"]["arch"]
    checks = subarch_targets.judge(table)
    return f"D{arch['depth']}-A{arch['heads'][0]}-H{arch['hidden']}-I{arch['ffn'][0]}: " + "; ".join(
        f"{c.what}: {c.measured}" + (f" (target {c.target}: {c.met})" if c.met != "—" else "") for c in checks)


def results_summary() -> str:
    train = _json("bench_train_rte.json")
    masks = _json("bench_masks.json")
    compact = {(r["batch"], r["variant"]): r for r in _json("bench_compact.json")["rows"]}
    full = _json("cpu_full/table.json")
    rows = [
        ("GLUE table: ticket sharing vs dense MTL (5 tasks, 3 seeds; GLUE avg, paired 95 % CI)",
         _glue_summary(_json("cpu_study/table.json")), "`cpu_study/table.json`"),
        (f"GLUE table, full training sets (5 tasks, {_seed_span(full)}; GLUE avg, paired 95 % CI)",
         _glue_summary(full), "`cpu_full/table.json`"),
        ("single-task quality, full training sets, defaults (targets in brackets)", _quality_summary(),
         "`single_task_quality/defaults_quality.json`"),
        ("training speed vs HF `Trainer` (RTE, 1 thread)", f"{train['ratios']['vs standard Trainer']:.2f}x the "
         f"standard recipe, {train['ratios']['vs tuned Trainer (bf16, group_by_length)']:.2f}x a `Trainer` given "
         "bf16 and group_by_length", "`bench_train_rte.json`"),
        ("study engine: the quickstart study (24 runs) with 2 workers vs 1 on 2 cores", _engine_summary(),
         "`bench_study.json`"),
        ("gates: overhead with all-ones gates / scoring vs training throughput",
         f"{signed(100 * masks['gate_overhead'], 1)} % (paired per-round median "
         f"{signed(100 * masks['gate_overhead_paired_median'], 1)} %) / "
         f"{masks['scoring_over_training']:.2f}x", "`bench_masks.json`"),
        ("compaction at 50 % of heads + neurons pruned (paired speed-up)",
         f"{compact[(32, 'compact 50%')]['paired_speedup']:.2f}x at batch 32, "
         f"{compact[(1, 'compact 50%')]['paired_speedup']:.2f}x at batch 1; unstructured 50 %: "
         f"{compact[(32, 'unstructured 50%')]['paired_speedup']:.2f}x", "`bench_compact.json`"),
        ("deployment: 50 % compacted ticket in ONNX Runtime int8 (MiniLM, batch 32 x 128, 1 thread)",
         _deploy_summary(), "`bench_deploy.json`"),
        ("phase transition (STS-B, RTE, MRPC, CoLA: 2 seeds; SST-2: 1 seed)", _phase_summary(),
         "`phase_transition/*/phase_transition.json`, `cpu_study/tickets/sst2/`"),
        (f"phase transition, full training sets ({', '.join(TASK_NAMES[t] for t in CPU_FULL_TICKETS)}: "
         f"{_cpu_full_seeds()})",
         _cpu_full_phase_summary(), "`cpu_full/tickets/*/phase_transition.json`"),
        ("unstructured tickets (IMP / OMP / random), MRPC and RTE, 2 seeds", _lottery_summary(),
         "`lottery/*/lottery.json`"),
        ("iterative structured pruning, 2 seeds", _iterative_summary(), "`iterative_pruning/*/iterative_pruning.json`"),
        ("ticket transfer: self-distillation and task tickets on RTE, MRPC, STS-B, CoLA (MiniLM, 3 seeds, paired 95 % "
         "CI)", _transfer_summary(), "`transfer_cpu/transfer.json`"),
        ("distillation step of a sub-architecture from MiniLM (1 thread): bf16, and bf16 with the teacher cache, vs "
         "fp32", _distill_summary(), "`bench_distill.json`"),
        ("Bort-style sub-architecture of MiniLM, extracted + distilled, first search (5 tasks, 3 seeds; issue 15's "
         "targets)", _subarch_summary(_json("subarch/full/table.json")), "`subarch/full/table.json`"),
        ("Bort-style sub-architecture of MiniLM, extracted + distilled, fourth search: heads and neurons ranked by the "
         "tasks' importance, 3,000 distillation steps; and the same-size ticket's units, distilled the same way (5 "
         "tasks, 3 seeds; issue 15's targets)",
         _subarch_summary(_json("subarch/units/table.json")), "`subarch/units/table.json`"),
        ("Bort-style sub-architecture of MiniLM, extracted + distilled, fifth choice: the fourth search's settings "
         "with 8 heads and 512 FFN neurons per layer (5 tasks, 3 seeds; issue 15's targets)",
         _subarch_summary(_json("subarch/a8/table.json")), "`subarch/a8/table.json`"),
    ]
    lines = ["| what | result (computed from the file) | file (under `experiments/results/`) |", "|---|---|---|"]
    lines += [f"| {what} | {result} | {file} |" for what, result, file in rows]
    return _lines(lines)


def subarch_scores(folder: str) -> Callable[[], str]:
    return lambda: _lines(subarch_search.scores_table(_json(f"subarch/{folder}/scores.json")))


def subarch_progress(folder: str) -> Callable[[], str]:
    def render() -> str:
        where = RESULTS / "subarch" / folder
        steps = subarch_files.progress(load_study(where / "study.yaml"), where)
        return _lines(["| step | done | of |", "|---|---:|---:|", *(f"| {s} | {d} | {n} |" for s, d, n in steps)])
    return render


def subarch_targets_table(folder: str) -> Callable[[], str]:
    """Issue 15's targets judged from ``subarch/FOLDER/table.json``; a line saying so while it does not exist."""
    def render() -> str:
        path = RESULTS / "subarch" / folder / "table.json"
        if not path.is_file():
            return _lines([f"Not measured yet: `{folder}/table.json` does not exist (the study has not finished)."])
        return _lines(subarch_targets.targets_table(read_json(path)))
    return render


def subarch_search_table(folder: str) -> Callable[[], str]:
    return lambda: _lines(subarch_search.search_table(_json(f"subarch/{folder}/search.json")))


def subarch_reference_grid(folder: str) -> Callable[[], str]:
    return lambda: _lines(subarch_search.reference_grid(_json(f"subarch/{folder}/search.json")))


def subarch_units_check() -> str:
    """``subarch/task/units/stsb_reference.json``: the same reference fine-tune of extractions whose heads and
    neurons are ranked by the tasks' importance or by output sensitivity (the third search's own runs)."""
    data = _json("subarch/task/units/stsb_reference.json")
    rows = []
    special = {"teacher": ("the teacher", "all"), "ticket": ("the deeper study's ticket (compacted)", "ticket")}
    ranked_by = {"task_importance": "tasks' importance", "output_sensitivity": "output sensitivity"}
    for name, run in data["runs"].items():
        arch, _, units = name.rpartition("-")  # e.g. D6-A4-H384-I768-task_importance
        label = special.get(name) or (arch, ranked_by[units])
        m = run["stsb_dev"]
        rows.append((*label, f"{m['pearson']:.1f} / {m['spearman']:.1f}", f"{run['score']:.1f}", "`task/units/`"))
    for arch, score in data["search_output_sensitivity"].items():
        rows.append((arch, "output sensitivity", "", f"{score:.1f}", "`task/search.json`"))
    order = {"the teacher": 0, "the deeper study's ticket (compacted)": 1}
    rows.sort(key=lambda r: (order.get(r[0], 2), r[0], r[1]))
    lines = ["| model | heads and neurons ranked by | STS-B dev Pearson / Spearman | score | file |",
             "|---|---|---:|---:|---|", *(f"| {' | '.join(r)} |" for r in rows)]
    return _lines(lines)


def subarch_cola_units() -> str:
    """``subarch/units/cola_units/cola_units.json``: CoLA fine-tunes of the fourth search's shape with its heads and
    neurons ranked three ways (the study's sum over the tasks, CoLA's own importance, the maximum over the tasks)."""
    data = _json("subarch/units/cola_units/cola_units.json")
    what = {"sum": "the five tasks' normalised importance, summed (the study's extracted row)",
            "cola": "CoLA's own importance", "max": "the five tasks' normalised importance, largest"}
    lines = ["| heads and FFN neurons ranked by | heads kept also kept by the sum (of 24) | "
             "neurons kept also kept by the sum (of 4,608) | CoLA dev, seeds 1 / 2 / 3 | mean ± std | "
             "− the sum, paired over seeds |", "|---|---:|---:|---|---:|---|"]
    for name, r in data["rankings"].items():
        seeds = " / ".join(f"{v:.1f}" for v in r["runs"].values())
        versus = format_versus(r["minus_sum"]) if "minus_sum" in r else ""
        lines.append(f"| {what[name]} | {r['kept']['heads_shared_with_sum']} | {r['kept']['neurons_shared_with_sum']:,} "
                     f"| {seeds} | {r['mean']:.1f} ± {r['std']:.1f} | {versus} |")
    return _lines(lines)


def subarch_cola_other_tasks() -> str:
    """``subarch/units/cola_units/other_tasks.json``: the CoLA-ranked extraction on every task against the study's
    extracted row (the sum ranking), paired by seed."""
    data = _json("subarch/units/cola_units/other_tasks.json")
    rows = [(TASK_NAMES[t], r) for t, r in data["tasks"].items()] + [("GLUE avg", data["average"])]
    lines = ["| task | summed ranking (the study's extracted row) | CoLA's ranking | CoLA's − summed, paired over seeds |",
             "|---|---:|---:|---|"]
    lines += [f"| {name} | {pm(r['sum']['mean'], r['sum']['std'], 1)} | {pm(r['cola']['mean'], r['cola']['std'], 1)} | "
              f"{format_versus(r['cola_minus_sum'])} |" for name, r in rows]
    return _lines(lines)


def subarch_shape_screen() -> str:
    """``subarch/units/shape_screen/shape_screen.json``: CoLA and STS-B fine-tunes of other shapes and unit weightings
    of the fourth search's encoder size (seed 1; seeds 1-3 for two), against the study's extracted row."""
    data = _json("subarch/units/shape_screen/shape_screen.json")
    lines = ["| extraction (not distilled) | heads and FFN neurons ranked by | CoLA dev by seed | CoLA mean ± std | "
             "CoLA − the study's, paired | STS-B dev by seed | STS-B mean ± std | STS-B − the study's, paired | "
             "CPU speed-up b32 |", "|---|---|---|---:|---|---|---:|---|---:|"]
    speed = data["speed"]["speedup"]
    for v in data["variants"].values():
        units = "the tasks' sum, weights " + ", ".join(f"{TASK_NAMES[t]} {w:g}" for t, w in v["weights"].items()) \
            if v["weights"] else "the tasks' sum"
        study = " (the study's extracted row)" if "runs_from" in v else ""
        cells = []
        for task in ("cola", "stsb"):
            r = v[task]
            cells += [" / ".join(f"{x:.1f}" for x in r["runs"].values()),
                      pm(r["mean"], r["std"], 1) if "mean" in r else "",
                      format_versus(r["minus_study"]) if "minus_study" in r else ""]
        lines.append(f"| {v['arch']}{study} | {units} | {' | '.join(cells)} | {speed[v['arch']]['32']:.2f}× |")
    return _lines(lines)


def subarch_lr_check() -> str:
    """``subarch/units/lr_check/lr_check.json``: the distilled model's CoLA at each learning rate and warm-up,
    seed 1 (the sweep's runs and two at lr 2e-4)."""
    data = _json("subarch/units/lr_check/lr_check.json")
    lines = ["| learning rate | warm-up | CoLA holdout (what the sweep chooses on) | CoLA dev | run |", "|---:|---:|---:|---:|---|"]
    lines += [f"| {r['lr']:g} | {r['warmup']:g} | {r['holdout']:.1f} | {r['dev']:.1f} | {r['from']} |" for r in data["runs"]]
    return _lines(lines)


def subarch_result_table(folder: str) -> Callable[[], str]:
    return lambda: _lines(subarch_table.table_lines(_json(f"subarch/{folder}/table.json")))


# ---------------------------------------------------------------- registry and pages

TABLES: dict[str, Callable[[], str]] = {
    "glue": glue(),
    "glue-seeds": glue_seeds(),
    "glue-task-differences": glue_task_differences(),
    "cpu-tickets": cpu_tickets,
    "ticket-unions": ticket_unions,
    "phase-summary": phase_summary,
    **{f"phase-{t}": phase_table(t) for t in (*PT_TASKS, "sst2")},
    **{f"cpu-full-phase-{t}": phase_table(t, "cpu_full") for t in CPU_FULL_TICKETS},
    "cpu-full-glue": glue("cpu_full"),
    "cpu-full-glue-seeds": glue_seeds("cpu_full"),
    "cpu-full-task-differences": glue_task_differences("cpu_full"),
    "cpu-full-paper": paper_table("cpu_full"),
    "cpu-full-phase-summary": lambda: _lines(phase_transition.transition_table(
        [_json(f"cpu_full/tickets/{t}/phase_transition.json") for t in CPU_FULL_TICKETS], baselines())),
    **{f"lottery-{f}": lottery_table(f) for f in ("mrpc", "rte", "mrpc-pretrained", "rte-pretrained")},
    **{f"iterative-{f}": iterative_table(f) for f in ("rte", "mrpc", "mrpc-t98")},
    "analysis-seeds": analysis_seeds,
    "analysis-tasks": analysis_tasks,
    "quality-defaults": quality_defaults,
    "quality-alternatives": quality_alternatives,
    "dev-baselines": dev_baselines,
    "results-summary": results_summary,
    "bench-train": bench_train,
    "ablation-stsb-gap": lambda: ablation.render(RESULTS / "stsb_gap" / "ablation.json"),
    "transfer-cpu": lambda: transfer_table.tables(_json("transfer_cpu/transfer.json"), "###"),
    **{f"subarch-{f}-scores": subarch_scores(f) for f in ("demo", "full")},
    "subarch-demo-search": subarch_search_table("demo"),
    "subarch-full-progress": subarch_progress("full"),
    "subarch-deep-progress": subarch_progress("deep"),
    "subarch-task-reference": subarch_reference_grid("task"),
    "subarch-task-units": subarch_units_check,
    "subarch-units-progress": subarch_progress("units"),
    "subarch-units-reference": subarch_reference_grid("units"),
    "subarch-a8-progress": subarch_progress("a8"),
    **{f"subarch-{f}-targets": subarch_targets_table(f) for f in SUBARCH_STUDIES},
    **{f"subarch-{f}-table": subarch_result_table(f) for f in SUBARCH_STUDIES},
    "subarch-cola-units": subarch_cola_units,
    "subarch-cola-other-tasks": subarch_cola_other_tasks,
    "subarch-shape-screen": subarch_shape_screen,
    "subarch-lr-check": subarch_lr_check,
    "subarch-full-device-check": lambda: _lines(subarch_device.device_check_lines(
        subarch_device.device_check(RESULTS / "subarch" / "full"))),
    "subarch-pooling": lambda: _lines(subarch_pooling.pooling_table(RESULTS / "subarch" / "full",
                                                                    RESULTS / "subarch" / "pooling")),
}


def pages() -> list[Path]:
    """The pages whose tables are rendered: ``docs/results.md``, ``README.md`` and every results README."""
    return [REPO / "README.md", REPO / "docs" / "results.md", RESULTS / "bench_train.md", *sorted(RESULTS.glob("*/README.md"))]


def _report_file(json_path: Path, render: Callable[[dict], str]) -> tuple[Path, Callable[[], str]]:
    return json_path.with_suffix(".md"), lambda: render(read_json(json_path))


def files() -> dict[Path, Callable[[], str]]:
    """Committed report files rendered whole from their JSON (the studies' own ``.md`` outputs)."""
    out: dict[Path, Callable[[], str]] = {}
    for path in sorted(RESULTS.glob("*/**/phase_transition.json")):
        md, render = _report_file(path, lambda r: phase_transition.markdown(r, baselines()))
        out[md] = render
    for path in sorted(RESULTS.glob("lottery/*/lottery.json")):
        md, render = _report_file(path, lambda r: lottery.markdown(r, baselines()))
        out[md] = render
    for path in sorted(RESULTS.glob("iterative_pruning/*/iterative_pruning.json")):
        md, render = _report_file(path, lambda r: iterative_pruning.markdown(r, baselines()))
        out[md] = render
    for path in sorted(RESULTS.glob("*/transfer.json")):
        md, render = _report_file(path, transfer_table.markdown)
        out[md] = render
    for path in sorted(RESULTS.glob("*/ablation.json")):
        md, render = _report_file(path, lambda r: ablation.markdown(ablation.derive(r)))
        out[md] = render
    for folder in ("cpu_study", "cpu_full"):
        md, render = _report_file(RESULTS / folder / "table.json", lambda t: glue_table.format_report(t, t.get("title")))
        out[md] = render
    for path in sorted(RESULTS.glob("subarch/*/table.json")):
        md, render = _report_file(path, subarch_table.markdown)
        out[md] = render
    for path in sorted(RESULTS.glob("subarch/*/search.json")):
        study = path.with_name("study.yaml")
        md, render = _report_file(path, lambda r, study=study: subarch_search.search_markdown(r, load_study(study)))
        out[md] = render
    return out


def render_page(text: str, where: str = "page") -> str:
    """``text`` with every marked table re-rendered; UserError for an unknown table name or a marker left open."""
    opened, closed = len(OPEN.findall(text)), len(CLOSE.findall(text))
    if opened != closed:
        raise UserError(f"{where}: {opened} '<!-- table: NAME -->' markers but {closed} '<!-- /table -->'")

    def fill(match: re.Match) -> str:
        name = match.group("name")
        if name not in TABLES:
            raise UserError(f"{where}: unknown table {name!r}; known: {', '.join(TABLES)}")
        return f"{match.group(1)}{TABLES[name]()}{match.group(4)}"

    return MARKER.sub(fill, text)


def table_names(text: str) -> list[str]:
    return [m.group("name") for m in MARKER.finditer(text)]


def stale() -> list[Path]:
    """Pages and files whose tables differ from what their JSON renders to now."""
    out = [p for p in pages() if p.is_file() and render_page(p.read_text(encoding="utf-8"), str(p)) != p.read_text(encoding="utf-8")]
    out += [p for p, render in files().items() if not p.is_file() or p.read_text(encoding="utf-8") != render()]
    return out


def write_all() -> list[Path]:
    """Rewrite every stale page and file; return them."""
    changed = stale()
    for path in changed:
        if path in files():
            atomic_write_text(path, files()[path]())
        else:
            atomic_write_text(path, render_page(path.read_text(encoding="utf-8"), str(path)))
    return changed


def _shown(path: Path) -> str:
    return str(path.relative_to(REPO)) if path.is_relative_to(REPO) else str(path)


def main(argv: Sequence[str] | None = None) -> int:
    def go() -> int:
        parser = OneLineParser(prog="python -m experiments.result_tables", description=__doc__.splitlines()[0])
        parser.add_argument("--check", action="store_true", help="rewrite nothing; exit 1 if a table differs from its JSON")
        args = parser.parse_args(argv)
        if args.check:
            bad = stale()
            for path in bad:
                print(f"{_shown(path)}: a table differs from its JSON "
                      "(run python -m experiments.result_tables)", file=sys.stderr)
            return 1 if bad else 0
        for path in write_all():
            print(f"rewrote {_shown(path)}")
        return 0

    return run_main(go)


__all__ = ["TABLES", "pages", "files", "render_page", "stale", "write_all", "NOT_LEARNT"]

if __name__ == "__main__":
    sys.exit(main())
