"""Distillation speed: seconds per step of :class:`mtl.distill.Distiller` in fp32 and bf16 autocast, with and
without the teacher cache (``--cache``: :mod:`mtl.teacher_cache`, as the sub-architecture search uses it).

    GLUE_DIR=../shared/glue python -m experiments.bench_distill --archs D3-A8-H256-I768,D6-A12-H384-I1536 \
        --steps 30 --threads 1 --json experiments/results/bench_distill.json

The teacher (default: the packaged MiniLM) is distilled into each sub-architecture (extracted with the teacher
scores ``--scores``; default: those of the committed sub-architecture demonstration) on the GLUE training
sentences, ``--steps`` steps of batch ``--batch-size``, once per precision, from the same extraction and the
same batches. Timed: the training loop only (from the distiller's log; the held-out evaluations before and
after are not timed). Also reported, per precision: the held-out loss before and after (the error surrogate
of the sub-architecture search, which must not depend on the precision), and the cost-model constant of
:mod:`experiments.subarch` (seconds per sequence of the batch per million operations per token of
teacher + 3 x student, operations counted at 32 tokens).
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import torch

from basics.cli import run_main
from basics.io import atomic_write_json, atomic_write_text
from masks.arch import shape_of
from masks.cost import EncoderSize, ops_per_token, torch_threads
from masks.subarch import SubArch, select
from masks.subarch_importance import load_scores
from mtl.corpus import TokenizedCorpus, glue_sentences, split_heldout, subsample
from mtl.distill import DistillConfig, Distiller, read_log
from mtl.teacher import load_teacher, make_student
from mtl.teacher_cache import write_teacher_cache

DEFAULT_SCORES = "experiments/results/subarch/demo/scores.safetensors"
COST_SEQ = 32  # operations per token are counted at this length in the cost model


def cost_mops(teacher: EncoderSize, student: EncoderSize) -> float:
    """Millions of operations per token of teacher + 3 x student (the cost model's unit)."""
    return (ops_per_token(teacher, COST_SEQ) + 3 * ops_per_token(student, COST_SEQ)) / 1e6


def variants(args: argparse.Namespace) -> list[tuple[str, bool]]:
    """``(precision, teacher cache)`` pairs, in the report's column order."""
    return [(p, cached) for p in args.precisions.split(",") for cached in ((False, True) if args.cache else (False,))]


def variant_name(precision: str, cached: bool) -> str:
    return precision + (" + teacher cache" if cached else "")


def measure(args: argparse.Namespace) -> dict:
    teacher = load_teacher(args.teacher)
    scores = load_scores(Path(args.scores), shape_of(teacher.encoder))
    glue = args.glue_dir or os.environ.get("GLUE_DIR")
    train, heldout = split_heldout(subsample(glue_sentences(Path(glue) if glue else None, None), 20_000, 1),
                                   args.heldout)
    tok = teacher.tokenizer
    corpus = TokenizedCorpus.of(tok, subsample(train, args.steps * args.batch_size, 1), 128)
    held = TokenizedCorpus.of(tok, heldout, 128)
    teacher_size = EncoderSize.of(teacher.encoder)
    rows, caches = [], {}
    with tempfile.TemporaryDirectory() as cache_root:
        for name in args.archs.split(","):
            arch = SubArch.parse(name)
            row = {"arch": name, "cost_mops": None, "variants": {}}
            for precision, cached in variants(args):
                student = make_student(teacher, select(scores, arch, "importance"))
                row["cost_mops"] = cost_mops(teacher_size, EncoderSize.of(student.encoder))
                config = DistillConfig(steps=args.steps, batch_size=args.batch_size, precision=precision,
                                       log_every=args.steps, checkpoint_every=0)
                cache = None
                if cached:
                    if precision not in caches:  # built once per precision, shared by every sub-architecture
                        built = time.perf_counter()
                        cache = write_teacher_cache(teacher, corpus, held, config, Path(cache_root) / precision)
                        caches[precision] = {"seconds": time.perf_counter() - built, "cache": cache,
                                             "bytes": sum(f.stat().st_size for f in (Path(cache_root) / precision).iterdir())}
                    cache = caches[precision]["cache"]
                with tempfile.TemporaryDirectory() as tmp:
                    wall = time.perf_counter()
                    summary = Distiller(teacher, student, corpus, held, config, Path(tmp), teacher_cache=cache).run()
                    wall = time.perf_counter() - wall
                    seconds = [r["seconds"] for r in read_log(Path(tmp)) if "seconds" in r][-1]
                per_step = seconds / args.steps
                key = variant_name(precision, cached)
                row["variants"][key] = {
                    "seconds_per_step": per_step, "wall_seconds": wall,
                    "seconds_per_seq_mops": per_step / (args.batch_size * row["cost_mops"]),
                    "heldout_before": summary["heldout_before"]["loss"], "heldout_after": summary["heldout"]["loss"]}
                print(f"{name} {key}: {per_step:.3f} s/step, held-out loss {summary['heldout_before']['loss']:.4f}"
                      f" -> {summary['heldout']['loss']:.4f}", flush=True)
            rows.append(row)
    return {"command": "python -m experiments.bench_distill " + " ".join(sys.argv[1:]),
            "teacher": args.teacher, "steps": args.steps, "batch_size": args.batch_size, "threads": args.threads,
            "heldout_texts": len(held), "note": args.note, "torch": torch.__version__,
            "machine": platform.processor() or platform.machine(),
            "teacher_cache": {p: {"build_seconds": c["seconds"], "bytes": c["bytes"]} for p, c in caches.items()},
            "rows": rows}


def markdown(report: dict) -> str:
    names = list(report["rows"][0]["variants"])
    head = ["sub-architecture", "cost (Mops)", *(f"s/step {n}" for n in names), *(f"{n} vs {names[0]}" for n in names[1:]),
            *(f"s/(seq·Mops) {n}" for n in names), *(f"held-out after {n}" for n in names)]
    lines = ["# Distillation speed: fp32, bf16 autocast, and the teacher cache", "", "Command:", "",
             "    " + report["command"], "",
             f"Teacher {report['teacher']}; {report['steps']} steps of batch {report['batch_size']} of GLUE training "
             f"sentences per row; {report['threads']} torch thread(s); torch {report['torch']}. Timed: the training "
             f"loop only. Held-out loss on {report['heldout_texts']} sentences. s/(seq·Mops): seconds per sequence "
             "per million operations per token of teacher + 3 x student (at 32 tokens), the unit of "
             "experiments/subarch.py's cost model." + (f" {report['note']}" if report.get("note") else ""), "",
             "| " + " | ".join(head) + " |", "|---" + "|---:" * (len(head) - 1) + "|"]
    for row in report["rows"]:
        v = row["variants"]
        cells = [row["arch"], f"{row['cost_mops']:.1f}", *(f"{v[n]['seconds_per_step']:.3f}" for n in names)]
        cells += [f"{v[names[0]]['seconds_per_step'] / v[n]['seconds_per_step']:.2f}x" for n in names[1:]]
        cells += [f"{v[n]['seconds_per_seq_mops']:.5f}" for n in names]
        cells += [f"{v[n]['heldout_after']:.4f}" for n in names]
        lines.append("| " + " | ".join(cells) + " |")
    for precision, cache in report.get("teacher_cache", {}).items():
        lines.append("")
        lines.append(f"Teacher cache ({precision}): built once in {cache['build_seconds']:.0f} s, "
                     f"{cache['bytes'] / 2**20:.0f} MiB for {report['steps']} training batches and the held-out batches.")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m experiments.bench_distill", description=__doc__.split("\n")[0])
    parser.add_argument("--teacher", default="minilm")
    parser.add_argument("--archs", default="D3-A8-H256-I768,D6-A12-H384-I1536", help="comma-separated D-A-H-I names")
    parser.add_argument("--scores", default=DEFAULT_SCORES, help="teacher scores (masks.subarch_importance)")
    parser.add_argument("--precisions", default="fp32,bf16")
    parser.add_argument("--cache", action="store_true", help="also each precision with the teacher cache (mtl.teacher_cache)")
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--heldout", type=int, default=256, help="held-out sentences for the loss before and after")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--glue-dir", default=None)
    parser.add_argument("--note", default="", help="a sentence on the machine's load, kept in the report")
    parser.add_argument("--json", default=None, help="write the report here (and a .md table beside it)")
    args = parser.parse_args(argv)
    with torch_threads(args.threads):
        report = measure(args)
    table = markdown(report)
    print(table)
    if args.json:
        atomic_write_json(Path(args.json), report)
        atomic_write_text(Path(args.json).with_suffix(".md"), table)
    return 0


if __name__ == "__main__":
    sys.exit(run_main(main))
