"""Real speed-up of compaction: dense vs compacted MiniLM, CPU inference, plus an unstructured control.

    python -m experiments.bench_compact [--model minilm] [--glue-dir DIR] [--fractions 0.3,0.5,0.7]
        [--unstructured 0.5] [--batch-size 32] [--seq-len 128] [--repeats 9] [--batch-calls 2]
        [--single-calls 20] [--threads 1] [--seed 0] [--json PATH]

Question (issue target): at 50 % of heads and FFN neurons pruned, does the compacted encoder run at
>= 1.6x the dense throughput? And does an unstructured-sparsity model with the same number of
non-zero parameters (magnitude-pruned weights, dense storage) run any faster than dense? (No.)

Variants, all built from the same pre-trained encoder, in eval mode, fp32, under
``torch.inference_mode``:

- ``dense``: the encoder as loaded;
- ``compact p``: a random ticket (``masks.tickets.cut_ticket``, kind ``random``: global ranking, at
  least one head per layer, so per-layer sizes differ as in real tickets) pruning a fraction p of the
  heads and of the FFN neurons, compacted with ``masks.compact.compact_encoder``;
- ``unstructured p``: a copy of the dense encoder whose smallest-magnitude Q/K/V/O/FFN weights are set
  to 0, exactly as many as ``compact p`` removes, so both have the same number of non-zero parameters.

Inputs: the first ``--batch-size`` RTE dev pairs that are at least ``--seq-len`` tokens long,
truncated to ``--seq-len``: a batch of real text with no padding (batch 1 = the first of them).
Random token ids are used when no GLUE folder is found (recorded in the output).

Timing: one untimed warm-up call per variant and batch size. Then ``--repeats`` rounds; each round
times, for every variant, ``--batch-calls`` calls at the full batch and ``--single-calls`` calls at
batch 1, and the variant order rotates every round so load drift on a shared machine hits all
variants alike. A variant's latency is the median over rounds of (block seconds / calls). Speed-up =
dense latency / variant latency (the per-round paired ratio's median is reported too).
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import platform
import shlex
import statistics
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import torch

from masks.arch import role_modules, shape_of
from masks.compact import compact_encoder, num_params
from masks.gates import attach_gates
from masks.importance import Importance
from masks.tickets import cut_ticket
from mtl.model import load_encoder
from tasks.readers import read_split
from tasks.registry import default_registry

TARGET_SPEEDUP = 1.6  # compacted at 50 % pruned vs dense, batch throughput


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m experiments.bench_compact", description=__doc__.splitlines()[0])
    p.add_argument("--model", default="minilm")
    p.add_argument("--glue-dir", type=Path, default=None, help="GLUE TSV folder (default: $GLUE_DIR, ../shared/glue)")
    p.add_argument("--fractions", default="0.3,0.5,0.7", help="fractions of heads and FFN neurons pruned")
    p.add_argument("--unstructured", default="0.5", help="fractions that also get an unstructured control ('' = none)")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--seq-len", type=int, default=128)
    p.add_argument("--repeats", type=int, default=9)
    p.add_argument("--batch-calls", type=int, default=2, help="timed calls per round at --batch-size")
    p.add_argument("--single-calls", type=int, default=20, help="timed calls per round at batch 1")
    p.add_argument("--threads", type=int, default=1, help="torch threads (1: the machine is shared)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", type=Path, default=None)
    return p.parse_args(argv)


def fractions(text: str) -> list[float]:
    return [float(x) for x in text.split(",") if x.strip()]


def find_glue(arg: Path | None) -> Path | None:
    """--glue-dir (must hold RTE), else $GLUE_DIR, else ../shared/glue beside the repository, else None."""
    if arg is not None:
        if not (arg / "RTE" / "dev.tsv").is_file():
            raise SystemExit(f"error: --glue-dir {arg} has no RTE/dev.tsv")
        return arg
    env = os.environ.get("GLUE_DIR")
    candidates = ([Path(env)] if env else []) + [Path(__file__).resolve().parents[2] / "shared" / "glue"]
    return next((p for p in candidates if (p / "RTE" / "dev.tsv").is_file()), None)


def load_inputs(tokenizer, glue: Path | None, batch_size: int, seq_len: int, seed: int) -> tuple[dict, str]:
    """``(batch, description)``: ``batch_size`` x ``seq_len`` tokens of real RTE pairs, no padding."""
    if glue is not None:

        rte = default_registry().get("rte")
        long = []
        for split in ("dev", "train"):
            for ex in read_split(rte, glue, split):
                if len(tokenizer(ex.text_a, ex.text_b)["input_ids"]) >= seq_len:
                    long.append(ex)
            if len(long) >= batch_size:
                break
        if len(long) >= batch_size:
            long = long[:batch_size]
            batch = tokenizer([e.text_a for e in long], [e.text_b for e in long], truncation=True,
                              max_length=seq_len, return_tensors="pt")
            return dict(batch), f"RTE pairs of >= {seq_len} tokens from {glue}, truncated to {seq_len}"
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(1000, tokenizer.vocab_size, (batch_size, seq_len), generator=g)
    return {"input_ids": ids, "attention_mask": torch.ones_like(ids)}, "random token ids (no GLUE folder)"


def random_ticket(shape, fraction: float, seed: int):
    """A random ticket pruning ``fraction`` of the heads and FFN neurons (global, >= 1 head per layer)."""

    L, H, I = shape.num_layers, shape.num_heads, shape.intermediate
    zeros = Importance(torch.zeros(L, H), torch.zeros(L, I), torch.zeros(L, H), torch.zeros(L, I), torch.zeros(L, 1))
    return cut_ticket(zeros, "random", fraction, shape=shape, seed=seed)


def magnitude_pruned(encoder, n_zero: int):
    """A copy of ``encoder`` with its ``n_zero`` smallest-magnitude Q/K/V/O/FFN weights set to 0 (dense storage)."""

    out = copy.deepcopy(encoder)
    weights = [m.weight for role in ("q", "k", "v", "attn_out", "ffn_up", "ffn_down") for m in role_modules(out, role)]
    with torch.no_grad():
        flat = torch.cat([w.abs().flatten() for w in weights])
        drop = torch.zeros(flat.numel(), dtype=torch.bool)
        drop[torch.topk(flat, n_zero, largest=False).indices] = True
        start = 0
        for w in weights:
            w.masked_fill_(drop[start:start + w.numel()].view_as(w), 0.0)
            start += w.numel()
    return out


def nonzero_params(model) -> int:
    return sum(int(torch.count_nonzero(p)) for p in model.parameters())


def build_variants(encoder, args) -> dict[str, dict]:
    """name -> {model, params, nonzero, ...}; compacted outputs are checked against the masked encoder."""

    shape = shape_of(encoder)
    variants = {"dense": {"model": encoder, "fraction": 0.0, "kind": "dense"}}
    probe = {"input_ids": torch.randint(1000, 20000, (2, 24), generator=torch.Generator().manual_seed(1))}
    for frac in fractions(args.fractions):
        mask = random_ticket(shape, frac, args.seed)
        compact = compact_encoder(encoder, mask).eval()
        with torch.inference_mode(), attach_gates(encoder, mask):
            diff = float((encoder(**probe).last_hidden_state - compact(**probe).last_hidden_state).abs().max())
        kept, total = mask.param_counts(shape)
        variants[f"compact {frac:.0%}"] = {"model": compact, "fraction": frac, "kind": "compact",
                                           "max_diff_vs_masked": diff, "heads_kept": mask.num_heads_kept,
                                           "ffn_kept": mask.num_ffn_kept, "removed": total - kept,
                                           "kept_heads_per_layer": [len(h) for h in compact.config.kept_heads],
                                           "ffn_per_layer": compact.config.intermediate_sizes}
        if frac in fractions(args.unstructured):
            variants[f"unstructured {frac:.0%}"] = {"model": magnitude_pruned(encoder, total - kept).eval(),
                                                    "fraction": frac, "kind": "unstructured",
                                                    "removed": total - kept}
    dense_params = num_params(encoder)
    for info in variants.values():
        info["params"] = num_params(info["model"])
        info["nonzero_params"] = nonzero_params(info["model"])
        info["params_kept"] = info["nonzero_params"] / nonzero_params(encoder)
        info["dense_params"] = dense_params
    return variants


def time_block(model, inputs: dict, calls: int) -> float:
    """Seconds per call over ``calls`` forward passes."""
    start = time.perf_counter()
    for _ in range(calls):
        model(**inputs)
    return (time.perf_counter() - start) / calls


def measure(variants: dict[str, dict], batches: dict[str, tuple[dict, int]], repeats: int) -> dict:
    """{batch name: {variant: [seconds per call, one per round]}}; order rotated every round."""
    names = list(variants)
    rounds = {b: {n: [] for n in names} for b in batches}
    with torch.inference_mode():
        for inputs, _ in batches.values():  # warm-up
            for name in names:
                variants[name]["model"](**inputs)
        for r in range(repeats):
            order = names[r % len(names):] + names[:r % len(names)]
            for b, (inputs, calls) in batches.items():
                for name in order:
                    rounds[b][name].append(time_block(variants[name]["model"], inputs, calls))
            print(f"  round {r + 1}/{repeats}: " + ", ".join(
                f"{b} dense {rounds[b]['dense'][-1] * 1e3:.0f} ms" for b in batches), file=sys.stderr)
    return rounds


def summarize(variants: dict, rounds: dict, batch_sizes: dict[str, int]) -> list[dict]:
    rows = []
    for b, per_variant in rounds.items():
        dense = per_variant["dense"]
        for name, times in per_variant.items():
            med = statistics.median(times)
            paired = statistics.median(d / t for d, t in zip(dense, times, strict=True))
            info = variants[name]
            rows.append({"batch": batch_sizes[b], "variant": name, "latency_ms": med * 1e3,
                         "examples_per_s": batch_sizes[b] / med, "speedup": statistics.median(dense) / med,
                         "paired_speedup": paired, "best_speedup": min(dense) / min(times),
                         "params": info["params"], "nonzero_params": info["nonzero_params"],
                         "params_kept": info["params_kept"], "min_ms": min(times) * 1e3, "max_ms": max(times) * 1e3})
    return rows


def format_table(rows: list[dict]) -> str:
    """Speed-up three ways: ratio of median latencies, median of per-round ratios, ratio of the best rounds."""
    head = (f"{'batch':>5}  {'variant':<17} {'latency ms':>10} {'examples/s':>10} {'speed-up':>8} "
            f"{'paired':>7} {'best':>6} {'params (non-zero)':>18} {'kept':>6}")
    lines = [head, "-" * len(head)]
    for r in rows:
        lines.append(f"{r['batch']:>5}  {r['variant']:<17} {r['latency_ms']:>10.1f} {r['examples_per_s']:>10.1f} "
                     f"{r['speedup']:>7.2f}x {r['paired_speedup']:>6.2f}x {r['best_speedup']:>5.2f}x "
                     f"{r['nonzero_params']:>18,} {r['params_kept']:>6.1%}")
    return "\n".join(lines)


def headline(rows: list[dict], batch_size: int) -> str:
    """The 50 % line: all three speed-up estimates at both batch sizes; the target is judged on the lowest."""
    def pick(batch):
        return next(r for r in rows if r["variant"] == "compact 50%" and r["batch"] == batch)

    big, one = pick(batch_size), pick(1)
    estimates = [big["speedup"], big["paired_speedup"], big["best_speedup"]]
    verdict = "met" if min(estimates) >= TARGET_SPEEDUP else "NOT met"
    return (f"50% pruned: batch {batch_size} throughput {big['speedup']:.2f}x (medians) / "
            f"{big['paired_speedup']:.2f}x (paired per round) / {big['best_speedup']:.2f}x (best rounds), "
            f"target >= {TARGET_SPEEDUP}x: {verdict}; batch 1: {one['speedup']:.2f}x / "
            f"{one['paired_speedup']:.2f}x / {one['best_speedup']:.2f}x")


def machine(threads: int) -> dict:
    import transformers

    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor()) if Path("/proc/cpuinfo").exists() else ""
    return {"cpu": cpu, "cpu_count": os.cpu_count(), "torch_threads": threads, "torch": torch.__version__,
            "transformers": transformers.__version__, "python": platform.python_version(),
            "platform": platform.platform(), "loadavg_at_start": list(os.getloadavg())}


def main(argv: Sequence[str] | None = None) -> int:

    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    started = time.time()
    info = {"command": "python -m experiments.bench_compact " + shlex.join(sys.argv[1:] if argv is None else argv),
            "machine": machine(args.threads), "args": {k: str(v) for k, v in vars(args).items()}}
    encoder, tokenizer = load_encoder(args.model)
    encoder.eval()
    batch, source = load_inputs(tokenizer, find_glue(args.glue_dir), args.batch_size, args.seq_len, args.seed)
    single = {k: v[:1] for k, v in batch.items()}
    variants = build_variants(encoder, args)
    batches = {"batch": (batch, args.batch_calls), "single": (single, args.single_calls)}
    rounds = measure(variants, batches, args.repeats)
    rows = summarize(variants, rounds, {"batch": args.batch_size, "single": 1})
    print(f"inputs: {source}; batch {args.batch_size} x {args.seq_len} tokens and 1 x {args.seq_len}; "
          f"fp32, {args.threads} torch thread(s), median of {args.repeats} rounds")
    print(format_table(rows))
    for name, v in variants.items():
        if v["kind"] == "compact":
            print(f"{name}: heads per layer {v['kept_heads_per_layer']}, FFN per layer {v['ffn_per_layer']}, "
                  f"max |diff| vs masked {v['max_diff_vs_masked']:.1e}")
    if "compact 50%" in variants:
        print(headline(rows, args.batch_size))
    if args.json:
        info.update(inputs=source, wall_s=round(time.time() - started, 1), rows=rows,
                    variants={k: {kk: vv for kk, vv in v.items() if kk != "model"} for k, v in variants.items()},
                    rounds_s=rounds, loadavg_at_end=list(os.getloadavg()))
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(info, indent=2) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
