"""Deployment speed and quality: dense vs 50 % compacted ticket, in PyTorch fp32, ONNX Runtime fp32 and int8.

    python -m experiments.bench_deploy --dense RUN_OR_MODEL --compact RUN_OR_MODEL [--work-dir DIR]
        [--glue-dir DIR] [--batch-size 32] [--seq-len 128] [--threads 1,2] [--repeats 7] [--batch-calls 1]
        [--single-calls 10] [--json PATH] [--md PATH]
    python -m experiments.bench_deploy --render experiments/results/bench_deploy.json   (the .md from the JSON)

Question (issue target): does the 50 % compacted ticket in int8 run at >= 3x dense PyTorch fp32 and
>= 1.5x dense ONNX Runtime int8 (batch 32 x 128 tokens), within 1 point of the compacted fp32 dev score?

Both models are multi-task models with the same tasks (SST-2 and STS-B here). For each, six variants:
``pytorch fp32`` (the saved model), ``onnx fp32`` and ``onnx int8`` (:mod:`mtl.onnx_export`, exported
into ``--work-dir``). Dev score of each variant on each task's dev file (every row, predicted as
``mtl-predict`` does: batches of 128 sorted by length). Speed: the encoder and every head on one batch
of real text (RTE pairs of >= ``--seq-len`` tokens truncated to it, no padding: the inputs of
``experiments.bench_compact``) at ``--batch-size`` and at 1, for each thread count. Timing: one
untimed warm-up per variant; then ``--repeats`` rounds, each timing every variant (order rotated
every round so load drift on a shared machine hits all alike); latency = median over rounds.
Speed-up = dense PyTorch fp32 median latency / the variant's (same threads, same batch).
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import torch

from experiments.bench_compact import find_glue, load_inputs, machine
from mtl.compact_run import find_model_dir
from mtl.model import load_multitask_model, read_model_info
from mtl.onnx_export import HeadsGraph, export_model
from mtl.onnx_runtime import FP32_FILE, INT8_FILE, OnnxPredictor
from mtl.predict import Predictor, TorchPredictor, predict_task
from tasks.readers import read_split
from tasks.registry import default_registry
from tasks.score import compute_metrics, task_score

TARGETS = {"vs_dense_pytorch": 3.0, "vs_dense_int8": 1.5, "score_points": 1.0}
RUNTIMES = ("pytorch fp32", "onnx fp32", "onnx int8")


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m experiments.bench_deploy", description=__doc__.splitlines()[0])
    p.add_argument("--dense", type=Path, help="the dense model (train.py run or model directory)")
    p.add_argument("--compact", type=Path, help="the compacted ticket (run or model directory)")
    p.add_argument("--work-dir", type=Path, default=Path("runs/bench_deploy"), help="ONNX exports go here")
    p.add_argument("--glue-dir", type=Path, default=None)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--seq-len", type=int, default=128)
    p.add_argument("--threads", default=f"1,{os.cpu_count()}", help="thread counts to time (comma-separated)")
    p.add_argument("--repeats", type=int, default=7)
    p.add_argument("--batch-calls", type=int, default=1, help="timed calls per round at --batch-size")
    p.add_argument("--single-calls", type=int, default=10, help="timed calls per round at batch 1")
    p.add_argument("--eval-batch-size", type=int, default=128)
    p.add_argument("--max-eval-samples", type=int, default=None, help="dev rows per task (default: all)")
    p.add_argument("--json", type=Path, default=None)
    p.add_argument("--md", type=Path, default=None)
    p.add_argument("--render", type=Path, default=None, help="only render --md (or stdout) from this JSON")
    return p.parse_args(argv)


# ---------------------------------------------------------------- variants

def exported(model_dir: Path, work_dir: Path, name: str) -> Path:
    """``work_dir/name``: the ONNX export of ``model_dir`` (made once; reused while its source is the same)."""
    out = work_dir / name
    info = out / "model.json"
    if not (info.is_file() and json.loads(info.read_text())["source"] == str(model_dir) and (out / INT8_FILE).is_file()):
        print(f"exporting {model_dir} -> {out}", file=sys.stderr)
        export_model(model_dir, out)
    return out


def build_variants(dense: Path, compact: Path, work_dir: Path) -> dict[str, dict]:
    """name -> {predictor (for dev scores), forward (numpy batch -> outputs), model dir, runtime}."""
    variants = {}
    for label, source in (("dense", dense), ("compact 50%", compact)):
        model_dir = find_model_dir(source)
        info = read_model_info(model_dir)
        model, tokenizer = load_multitask_model(model_dir)
        torch_predictor = TorchPredictor(model, tokenizer, int(info.get("max_seq_length", 128)), device="cpu")
        graph = HeadsGraph(model.eval())
        onnx_dir = exported(model_dir, work_dir, label.split()[0])
        fp32, int8 = OnnxPredictor.load(onnx_dir / FP32_FILE), OnnxPredictor.load(onnx_dir / INT8_FILE)
        names = fp32.input_names
        variants[f"{label} pytorch fp32"] = {"predictor": torch_predictor, "source": str(model_dir),
                                             "forward": torch_forward(graph, names), "runtime": "pytorch fp32",
                                             "params": sum(p.numel() for p in model.encoder.parameters())}
        for runtime, predictor in (("onnx fp32", fp32), ("onnx int8", int8)):
            variants[f"{label} {runtime}"] = {"predictor": predictor, "source": str(predictor.path),
                                              "forward": predictor.run_all, "runtime": runtime,
                                              "file_bytes": predictor.path.stat().st_size}
    return variants


def torch_forward(graph: HeadsGraph, names: list[str]) -> Callable[[dict], object]:
    def forward(batch: dict) -> object:
        with torch.inference_mode():
            return graph(*(torch.from_numpy(batch[n]) for n in names))
    return forward


def set_threads(variants: dict[str, dict], threads: int, work_dir: Path) -> None:
    """PyTorch: ``torch.set_num_threads``; ONNX Runtime: a new session with that many intra-op threads."""
    torch.set_num_threads(threads)
    for v in variants.values():
        if v["runtime"] != "pytorch fp32":
            v["predictor"] = OnnxPredictor.load(Path(v["source"]), threads=threads)
            v["forward"] = v["predictor"].run_all


# ---------------------------------------------------------------- quality

def dev_scores(variants: dict[str, dict], glue: Path, batch_size: int, max_samples: int | None = None) -> dict[str, dict]:
    """variant -> task -> {metrics, score, predictions (for agreement)} on each task's full dev file."""
    registry = default_registry()
    out: dict[str, dict] = {}
    for name, v in variants.items():
        predictor: Predictor = v["predictor"]
        out[name] = {}
        for task_name, task in predictor.tasks.items():
            examples = read_split(registry.get(task_name), glue, task.dev_splits[0], max_samples=max_samples)
            t0 = time.perf_counter()
            pred = predict_task(predictor, task, examples, batch_size)
            labels = torch.tensor([e.label for e in examples])
            metrics = compute_metrics(task, pred.values, labels, task.dev_splits[0])
            out[name][task_name] = {"metrics": metrics, "score": task_score(metrics), "n": len(examples),
                                    "seconds": round(time.perf_counter() - t0, 1), "values": pred.values.tolist()}
            print(f"  dev {name} {task_name}: {metrics}", file=sys.stderr)
    return out


def agreement(scores: dict, a: str, b: str) -> dict[str, float]:
    """Classification: share of dev rows with the same label; regression: max |score difference|."""
    out = {}
    for task, sa in scores[a].items():
        x, y = torch.tensor(sa["values"]), torch.tensor(scores[b][task]["values"])
        out[task] = float((x == y).float().mean()) if x.dtype == torch.long else float((x - y).abs().max())
    return out


# ---------------------------------------------------------------- speed

def measure(variants: dict[str, dict], batches: dict[str, tuple[dict, int]], repeats: int) -> dict:
    """{batch name: {variant: [seconds per call, one per round]}}; order rotated every round."""
    names = list(variants)
    rounds = {b: {n: [] for n in names} for b in batches}
    for batch, _ in batches.values():  # warm-up
        for name in names:
            variants[name]["forward"](batch)
    for r in range(repeats):
        order = names[r % len(names):] + names[:r % len(names)]
        for b, (batch, calls) in batches.items():
            for name in order:
                start = time.perf_counter()
                for _ in range(calls):
                    variants[name]["forward"](batch)
                rounds[b][name].append((time.perf_counter() - start) / calls)
        print(f"  round {r + 1}/{repeats}", file=sys.stderr)
    return rounds


def speed_rows(rounds: dict, sizes: dict[str, int], threads: int) -> list[dict]:
    rows = []
    for b, per_variant in rounds.items():
        base = per_variant["dense pytorch fp32"]
        for name, times in per_variant.items():
            med = statistics.median(times)
            rows.append({"threads": threads, "batch": sizes[b], "variant": name, "latency_ms": med * 1e3,
                         "examples_per_s": sizes[b] / med, "speedup": statistics.median(base) / med,
                         "paired_speedup": statistics.median(d / t for d, t in zip(base, times, strict=True)),
                         "min_ms": min(times) * 1e3, "max_ms": max(times) * 1e3})
    return rows


# ---------------------------------------------------------------- report

def verdicts(result: dict) -> list[str]:
    """The three targets, judged at the full batch for every thread count."""
    rows, scores, big = result["speed"], result["dev"], result["batch_size"]
    lines = []
    for threads in sorted({r["threads"] for r in rows}):
        pick = {r["variant"]: r for r in rows if r["threads"] == threads and r["batch"] == big}
        c8 = pick["compact 50% onnx int8"]
        vs_pt = c8["speedup"]
        vs_int8 = pick["dense onnx int8"]["latency_ms"] / c8["latency_ms"]
        lines.append(f"{threads} thread(s), batch {big}: compact int8 = {vs_pt:.2f}x dense PyTorch fp32 "
                     f"(target >= {TARGETS['vs_dense_pytorch']}x: {'met' if vs_pt >= TARGETS['vs_dense_pytorch'] else 'NOT met'}), "
                     f"{vs_int8:.2f}x dense ONNX Runtime int8 (target >= {TARGETS['vs_dense_int8']}x: "
                     f"{'met' if vs_int8 >= TARGETS['vs_dense_int8'] else 'NOT met'})")
    for task in scores["compact 50% pytorch fp32"]:
        ref = scores["compact 50% pytorch fp32"][task]["score"]
        got = scores["compact 50% onnx int8"][task]["score"]
        ok = abs(got - ref) <= TARGETS["score_points"]
        lines.append(f"{task} dev score: compact int8 {got:.2f} vs compact fp32 {ref:.2f} ({got - ref:+.2f} points; "
                     f"target within {TARGETS['score_points']}: {'met' if ok else 'NOT met'})")
    return lines


def render(result: dict) -> str:
    """The results as Markdown tables (speed per thread count and batch size, dev scores beside)."""
    tasks = list(result["dev"]["dense pytorch fp32"])
    head = "| variant | " + " | ".join(f"{t} dev" for t in tasks) + " | batch | threads | latency ms | examples/s | vs dense PyTorch fp32 |"
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    for r in result["speed"]:
        dev = " | ".join(_dev_cell(result["dev"][r["variant"]][t]) for t in tasks)
        lines.append(f"| {r['variant']} | {dev} | {r['batch']} | {r['threads']} | {r['latency_ms']:.1f} | "
                     f"{r['examples_per_s']:.1f} | **{r['speedup']:.2f}x** (paired {r['paired_speedup']:.2f}x) |")
    return "\n".join(lines)


def _dev_cell(entry: dict) -> str:
    return " / ".join(f"{v:.2f}" for v in entry["metrics"].values())


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.render is not None:
        result = json.loads(args.render.read_text())
        text = render(result) + "\n\n" + "\n".join(f"- {line}" for line in verdicts(result)) + "\n"
        (args.md.write_text(text) if args.md else sys.stdout.write(text))
        return 0
    started = time.time()
    glue = find_glue(args.glue_dir)
    if glue is None or args.dense is None or args.compact is None:
        raise SystemExit("error: give --dense and --compact, and a GLUE folder (--glue-dir or GLUE_DIR)")
    result = {"command": "python -m experiments.bench_deploy " + shlex.join(sys.argv[1:] if argv is None else argv),
              "machine": machine(torch.get_num_threads()), "batch_size": args.batch_size, "seq_len": args.seq_len,
              "repeats": args.repeats, "targets": TARGETS}
    variants = build_variants(args.dense, args.compact, args.work_dir)
    torch.set_num_threads(max(int(t) for t in args.threads.split(",")))
    print("dev scores ...", file=sys.stderr)
    result["dev"] = dev_scores(variants, glue, args.eval_batch_size, args.max_eval_samples)
    result["agreement"] = {label: {"int8 vs onnx fp32": agreement(result["dev"], f"{label} onnx int8", f"{label} onnx fp32"),
                                   "onnx fp32 vs pytorch": agreement(result["dev"], f"{label} onnx fp32",
                                                                     f"{label} pytorch fp32")}
                           for label in ("dense", "compact 50%")}
    tokenizer = variants["dense pytorch fp32"]["predictor"].tokenizer
    batch, source = load_inputs(tokenizer, glue, args.batch_size, args.seq_len, seed=0)
    names = variants["dense onnx fp32"]["predictor"].input_names
    batch = {n: batch[n].to(torch.int64).numpy() for n in names}
    single = {n: v[:1] for n, v in batch.items()}
    result["inputs"] = source
    result["speed"], result["rounds_s"] = [], {}
    for threads in (int(t) for t in args.threads.split(",")):
        print(f"timing with {threads} thread(s) ...", file=sys.stderr)
        set_threads(variants, threads, args.work_dir)
        rounds = measure(variants, {"batch": (batch, args.batch_calls), "single": (single, args.single_calls)},
                         args.repeats)
        result["speed"] += speed_rows(rounds, {"batch": args.batch_size, "single": 1}, threads)
        result["rounds_s"][str(threads)] = rounds
    for entries in result["dev"].values():
        for entry in entries.values():
            entry.pop("values")
    result["variants"] = {k: {kk: vv for kk, vv in v.items() if kk not in ("predictor", "forward")}
                          for k, v in variants.items()}
    result["wall_s"] = round(time.time() - started, 1)
    result["machine"]["loadavg_at_end"] = list(os.getloadavg())
    print(render(result))
    print("\n".join(verdicts(result)))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
