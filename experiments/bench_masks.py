"""Gate overhead and scoring throughput on real GLUE batches with the real packaged MiniLM.

    python -m experiments.bench_masks [--task rte] [--glue-dir DIR] [--model minilm] [--batches N]
        [--batch-size 32] [--repeats R] [--threads 1] [--precision auto|fp32|bf16] [--json PATH]

Two questions (targets from the issue):

1. Training step time with gates attached (all ones) vs no gates: overhead <= 3 %.
2. Scoring throughput (``compute_importance``: eval mode, weights frozen, gradients for the gates
   only, no optimizer) vs training throughput (no-gates training step) on the same data: >= 1.3x.

Every variant runs on the same N training batches of the task (``load_split`` +
``length_grouped_batches`` with a fixed seed + ``collate``, built once, before any timing), so
data preparation is never timed. A training step is forward + loss + backward + AdamW step +
``zero_grad(set_to_none=True)`` in ``model.train()`` under the autocast dtype the trainer would use
(``mtl.trainer.autocast_dtype``); gradient clipping and the LR scheduler are left out. Variants:

- ``train, no gates``: the plain model;
- ``train, gates on (all ones)``: an identical copy with ``attach_gates`` (every hook fires);
- ``train, gates masked (50 %)``: a copy gated by a random mask with half of the heads and half of
  the FFN neurons of every layer off (for information: its numbers have no target);
- ``scoring (compute_importance)``: one ``compute_importance`` call over the N batches on the
  no-gates model, with the loss computed under the same autocast dtype.

Each variant has its own model copy and AdamW state. After ``--warmup`` untimed rounds (each variant
over all N batches, so every batch shape has been seen), ``--repeats`` rounds run one timed block of N batches per variant; the variant order rotates every
round (A B C D, B C D A, ...) so that load drift on a shared machine hits all variants alike. A
variant's time per step is the median over rounds of (block seconds / N). The overhead is
``median(gates on) / median(no gates) - 1``; the per-round paired ratio is reported alongside.
The scoring / training ratio is printed last.
"""

from __future__ import annotations

import argparse
import copy
import gc
import json
import os
import platform
import shlex
import statistics
import sys
import time
from contextlib import nullcontext
from pathlib import Path

import torch

from masks.arch import shape_of
from masks.gates import attach_gates, find_gates
from masks.importance import ImportanceConfig, compute_importance
from masks.mask import Mask
from mtl.config import TrainConfig
from mtl.data import collate, length_grouped_batches
from mtl.run import build_model, load_split
from mtl.trainer import autocast_dtype, param_groups
from tasks.registry import default_registry

GATE_OVERHEAD_TARGET = 0.03  # gates on (all ones) may cost at most 3 % per training step
SCORING_RATIO_TARGET = 1.3  # scoring must be at least 1.3x the training throughput

NO_GATES, GATES_ONES, GATES_MASKED, SCORING = (
    "train, no gates", "train, gates on (all ones)", "train, gates masked (50%)", "scoring (compute_importance)")


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def machine(threads: int, amp_dtype) -> dict:
    import transformers

    try:
        load = os.getloadavg()
    except OSError:
        load = None
    return {"cpu": cpu_model(), "cpu_count": os.cpu_count(), "torch_threads": threads,
            "torch": torch.__version__, "transformers": transformers.__version__,
            "python": platform.python_version(), "platform": platform.platform(),
            "native_bf16": bool(torch.ops.mkldnn._is_mkldnn_bf16_supported()),
            "autocast": str(amp_dtype).replace("torch.", "") if amp_dtype else "none (fp32)",
            "loadavg_at_start": load}


def half_mask(shape, seed: int):
    """Random mask keeping half of the heads and half of the FFN neurons of every layer."""

    gen = torch.Generator().manual_seed(seed)
    heads = torch.zeros(shape.num_layers, shape.num_heads, dtype=torch.bool)
    ffn = torch.zeros(shape.num_layers, shape.intermediate, dtype=torch.bool)
    for layer in range(shape.num_layers):
        heads[layer, torch.randperm(shape.num_heads, generator=gen)[: shape.num_heads // 2]] = True
        ffn[layer, torch.randperm(shape.intermediate, generator=gen)[: shape.intermediate // 2]] = True
    return Mask(heads=heads, ffn=ffn, meta={"kind": "random", "sparsity": "0.50"})


def build(args):
    """(model, tokenizer, task, batches, amp_dtype): model and data exactly as a training run builds them."""

    task = default_registry().get(args.task)
    config = TrainConfig.of(tasks=[task.name], model=args.model, glue_dir=args.glue_dir, batch_size=args.batch_size,
                         precision=args.precision, seed=args.seed, progress=False)
    amp_dtype = autocast_dtype(config.runtime.precision, torch.device("cpu"))
    model, tokenizer = build_model(config, [task])
    train = load_split(task, "train", tokenizer, config, None)
    order = length_grouped_batches(train.lengths, args.batch_size, torch.Generator().manual_seed(args.seed),
                                   config.optim.group_by_length)
    if len(order) < args.batches:
        raise SystemExit(f"error: {task.name} has only {len(order)} training batches of {args.batch_size}; "
                         f"lower --batches")
    pad = tokenizer.pad_token_id or 0
    batches = [collate(train, idx, pad) for idx in order[: args.batches]]
    return model, task, batches, amp_dtype


def split(batch: dict) -> tuple[dict, torch.Tensor]:
    inputs = {k: v for k, v in batch.items() if k != "labels"}
    return inputs, batch["labels"]


class TrainVariant:
    """One model copy + its own AdamW; ``run(batches)`` does one training step per batch."""

    def __init__(self, name: str, model, task: str, amp_dtype, lr: float) -> None:

        self.name, self.model, self.task, self.amp_dtype = name, model, task, amp_dtype
        self.optimizer = torch.optim.AdamW(param_groups(model, 0.01), lr=lr)

    def autocast(self):
        return torch.autocast("cpu", dtype=self.amp_dtype) if self.amp_dtype else nullcontext()

    def run(self, batches: list[dict]) -> None:
        self.model.train()
        for batch in batches:
            inputs, labels = split(batch)
            with self.autocast():
                logits = self.model(self.task, **inputs)
            loss = self.model.loss(self.task, logits, labels)
            loss.backward()
            self.optimizer.step()
            self.optimizer.zero_grad(set_to_none=True)


class ScoringVariant:
    """``compute_importance`` over the batches (it attaches and removes its own gates each call)."""

    def __init__(self, model, task: str, amp_dtype) -> None:
        self.name, self.model, self.task, self.amp_dtype = SCORING, model, task, amp_dtype
        self.last = None

    def loss(self, batch: dict) -> torch.Tensor:
        inputs, labels = split(batch)
        with torch.autocast("cpu", dtype=self.amp_dtype) if self.amp_dtype else nullcontext():
            logits = self.model(self.task, **inputs)
        return self.model.loss(self.task, logits, labels)

    def run(self, batches: list[dict]) -> None:

        self.last = compute_importance(self.model, self.model.encoder, batches, self.loss, ImportanceConfig())


def timed(variant, batches: list[dict]) -> float:
    gc.collect()
    start = time.perf_counter()
    variant.run(batches)
    return time.perf_counter() - start


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--task", default="rte")
    parser.add_argument("--glue-dir", default=os.environ.get("GLUE_DIR"),
                        help="GLUE TSV directory (default: $GLUE_DIR; unset: Hugging Face hub)")
    parser.add_argument("--model", default="minilm")
    parser.add_argument("--batches", type=int, default=8, help="timed batches per variant per round")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=8, help="rounds; each times every variant once")
    parser.add_argument("--warmup", type=int, default=1,
                        help="untimed warm-up rounds (each runs every variant over all N batches)")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1: the machine is shared)")
    parser.add_argument("--precision", default="auto", choices=("auto", "fp32", "bf16"),
                        help="auto = what the trainer uses (bf16 autocast where the CPU has native bf16)")
    parser.add_argument("--no-masked", action="store_true", help="skip the 50%%-masked variant")
    parser.add_argument("--lr", type=float, default=1e-5, help="AdamW learning rate of the timed steps")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--json", type=Path, default=None, help="write every number here")
    args = parser.parse_args(argv)
    for name in ("batches", "batch_size", "repeats", "threads"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be >= 1")
    if args.warmup < 0:
        parser.error("--warmup must be >= 0")

    torch.set_num_threads(args.threads)

    base, task, batches, amp_dtype = build(args)
    n_examples = sum(len(b["labels"]) for b in batches)
    tokens = sum(int(b["attention_mask"].sum()) for b in batches)
    padded = sum(b["input_ids"].numel() for b in batches)
    ones_model = copy.deepcopy(base)
    gates_ones = attach_gates(ones_model.encoder)
    assert find_gates(ones_model.encoder) is gates_ones and gates_ones.is_identity
    variants = [TrainVariant(NO_GATES, base, task.name, amp_dtype, args.lr),
                TrainVariant(GATES_ONES, ones_model, task.name, amp_dtype, args.lr)]
    if not args.no_masked:
        masked_model = copy.deepcopy(base)
        attach_gates(masked_model.encoder, half_mask(shape_of(masked_model.encoder), args.seed))
        variants.append(TrainVariant(GATES_MASKED, masked_model, task.name, amp_dtype, args.lr))
    score_model = copy.deepcopy(base)  # its own copy: scoring reads weights only, never trains them
    variants.append(ScoringVariant(score_model, task.name, amp_dtype))

    info = machine(torch.get_num_threads(), amp_dtype)
    print(f"task={task.name} model={args.model} batches={args.batches}x{args.batch_size} ({n_examples} examples, "
          f"{tokens} tokens, {padded} with padding) repeats={args.repeats} warmup={args.warmup} "
          f"threads={info['torch_threads']} autocast={info['autocast']}", flush=True)
    print(f"machine: {info['cpu']}, {info['cpu_count']} cores, load average {info['loadavg_at_start']}", flush=True)

    for _ in range(args.warmup):  # every shape and code path seen once before timing starts
        for v in variants:
            timed(v, batches)
    seconds: dict[str, list[float]] = {v.name: [] for v in variants}
    order_log: list[list[str]] = []
    for r in range(args.repeats):
        k = r % len(variants)
        order = variants[k:] + variants[:k]
        order_log.append([v.name for v in order])
        for v in order:
            seconds[v.name].append(timed(v, batches))
        print(f"  round {r + 1}/{args.repeats}: " + "  ".join(
            f"{name.split(' (')[0].replace('train, ', '')}={s[-1] / args.batches:.3f}s" for name, s in seconds.items()),
            flush=True)
    assert find_gates(ones_model.encoder) is gates_ones  # still attached after every round

    per_step = {name: [s / args.batches for s in vals] for name, vals in seconds.items()}
    median_step = {name: statistics.median(vals) for name, vals in per_step.items()}
    ex_per_s = {name: n_examples / (m * args.batches) for name, m in median_step.items()}
    overhead = median_step[GATES_ONES] / median_step[NO_GATES] - 1
    paired = [a / b - 1 for a, b in zip(seconds[GATES_ONES], seconds[NO_GATES], strict=True)]
    paired_median = statistics.median(paired)
    ratio = ex_per_s[SCORING] / ex_per_s[NO_GATES]
    paired_ratio = statistics.median(b / a for a, b in zip(seconds[SCORING], seconds[NO_GATES], strict=True))
    overhead_met = overhead <= GATE_OVERHEAD_TARGET
    ratio_met = ratio >= SCORING_RATIO_TARGET
    try:
        info["loadavg_at_end"] = os.getloadavg()
    except OSError:
        pass

    print(f"\n{'variant':<32} {'median s/step':>14} {'examples/s':>11} {'min..max s/step':>17}")
    for name in per_step:
        unit = "batch" if name == SCORING else "step"
        lo, hi = min(per_step[name]), max(per_step[name])
        print(f"{name:<32} {median_step[name]:>14.4f} {ex_per_s[name]:>11.1f} {lo:>8.3f}..{hi:.3f}"
              + ("  (s per scored batch)" if unit == "batch" else ""))
    if GATES_MASKED in median_step:
        print(f"masked (50%) vs no gates: {median_step[GATES_MASKED] / median_step[NO_GATES] - 1:+.1%} per step "
              "(information only)")
    print(f"gate overhead (all-ones gates vs no gates): {overhead:+.2%} "
          f"(paired per-round median {paired_median:+.2%}); target <= {GATE_OVERHEAD_TARGET:.0%}: "
          f"{'met' if overhead_met else 'NOT met'}")

    command = "python -m experiments.bench_masks" + (" " + shlex.join(argv) if argv else "")
    if args.json:
        record = {
            "command": command,
            "args": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
            "machine": info,
            "data": {"task": task.name, "batches": args.batches, "batch_size": args.batch_size,
                     "examples": n_examples, "tokens": tokens, "padded_tokens": padded},
            "round_orders": order_log,
            "seconds_per_step": per_step,
            "median_seconds_per_step": median_step,
            "examples_per_s": ex_per_s,
            "gate_overhead": overhead, "gate_overhead_paired_median": paired_median,
            "gate_overhead_target": GATE_OVERHEAD_TARGET, "gate_overhead_met": overhead_met,
            "masked_vs_no_gates": (median_step[GATES_MASKED] / median_step[NO_GATES] - 1)
            if GATES_MASKED in median_step else None,
            "scoring_over_training": ratio, "scoring_over_training_paired_median": paired_ratio,
            "scoring_target": SCORING_RATIO_TARGET, "scoring_met": ratio_met,
        }
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(record, indent=2) + "\n")
        print(f"wrote {args.json}")
    print(f"scoring / training throughput (same batches): {ratio:.2f}x "
          f"(paired per-round median {paired_ratio:.2f}x); target >= {SCORING_RATIO_TARGET}x: "
          f"{'met' if ratio_met else 'NOT met'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
