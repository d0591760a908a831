"""Training throughput: our trainer vs. a Hugging Face ``Trainer`` on the same model, data, batch size, epochs.

    python -m experiments.bench_train --task rte [--max-train-samples 800] [--epochs 1] [--batch-size 32]

Both fine-tune the same encoder (default: the packaged MiniLM) with a fresh classification head on
the same GLUE training examples, tokenized the same way (max 128 tokens). The HF baseline is the
standard recipe: ``AutoModelForSequenceClassification`` + ``Trainer`` + ``DataCollatorWithPadding``
(fp32, no length grouping). Throughput = training examples / seconds of the training loop
(evaluation excluded on both sides). The ratios are printed last: against the standard recipe and
against a tuned ``Trainer`` (bf16 + ``group_by_length``, with ``--hf-variants``). Needs ``accelerate``.

``--speedups`` also measures two candidate speed-ups of our training step on the same batches, each
checked for exactness: ``torch.compile`` of the model (loss and gradients against eager), and packing
(no padding at all): its upper bound is the share of padded tokens in our length-grouped batches.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import torch

from mtl.config import TrainConfig
from mtl.data import collate, length_grouped_batches
from mtl.model import resolve_model_path
from mtl.run import build_model, load_split, resolve_tasks, run_training
from mtl.trainer import autocast_dtype
from tasks.registry import default_registry


def ours(args, out: Path, precision: str, group_by_length: bool) -> float:

    config = TrainConfig.of(tasks=[args.task], output_dir=str(out), model=args.model, glue_dir=args.glue_dir,
                         epochs=args.epochs, batch_size=args.batch_size, max_train_samples=args.max_train_samples,
                         max_eval_samples=64, save_model=False, progress=False, precision=precision,
                         group_by_length=group_by_length, seed=args.seed, num_threads=args.threads)
    return run_training(config).result.train_examples_per_s


def hf_trainer(args, out: Path, bf16: bool = False, group_by_length: bool = False) -> float:
    from transformers import AutoModelForSequenceClassification, DataCollatorWithPadding, Trainer, TrainingArguments
    from transformers.utils import logging as hf_logging


    hf_logging.set_verbosity_error()
    task = default_registry().get(args.task)
    path = resolve_model_path(args.model)
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(path)
    cfg = TrainConfig.of(tasks=[args.task], output_dir=str(out), glue_dir=args.glue_dir, progress=False)
    split = load_split(task, "train", tokenizer, cfg, args.max_train_samples)  # same tokens as ours
    features = [{"input_ids": split.input_ids[i].tolist(), "labels": int(split.labels[i]),
                 **({"token_type_ids": split.token_type_ids[i].tolist()} if split.token_type_ids is not None else {})}
                for i in range(len(split))]
    torch.manual_seed(args.seed)
    model = AutoModelForSequenceClassification.from_pretrained(path, num_labels=task.num_labels,
                                                               attn_implementation="sdpa")
    targs = TrainingArguments(output_dir=str(out), per_device_train_batch_size=args.batch_size,
                              num_train_epochs=args.epochs, learning_rate=3e-5, warmup_steps=0.1,
                              logging_steps=10_000, save_strategy="no", report_to=[], seed=args.seed,
                              bf16=bf16, use_cpu=not torch.cuda.is_available(),
                              **({"train_sampling_strategy": "group_by_length"} if group_by_length else {}),
                              disable_tqdm=True, dataloader_num_workers=0)
    trainer = Trainer(model=model, args=targs, train_dataset=features,
                      data_collator=DataCollatorWithPadding(tokenizer))
    start = time.perf_counter()
    trainer.train()
    seconds = time.perf_counter() - start
    return len(features) * args.epochs / seconds


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--task", default="rte")
    parser.add_argument("--model", default="minilm")
    parser.add_argument("--glue-dir", default=None)
    parser.add_argument("--epochs", type=float, default=1.0)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--max-train-samples", type=int, default=800)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads for both trainers (default: all)")
    parser.add_argument("--hf-variants", action="store_true",
                        help="also time Trainer with bf16=True and group_by_length=True")
    parser.add_argument("--speedups", action="store_true",
                        help="also measure torch.compile and the padding share (the most packing could save)")
    parser.add_argument("--json", type=Path, default=None, help="write the numbers here")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    rows: dict[str, float] = {}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        rows["hf Trainer (fp32, DataCollatorWithPadding)"] = hf_trainer(args, tmp / "hf")
        if args.hf_variants:
            rows["hf Trainer (bf16, group_by_length)"] = hf_trainer(args, tmp / "hf2", bf16=True, group_by_length=True)
        rows["ours (fp32, length-grouped)"] = ours(args, tmp / "ours32", "fp32", True)
        rows["ours (default: auto precision, length-grouped)"] = ours(args, tmp / "ours", "auto", True)
    base = rows["hf Trainer (fp32, DataCollatorWithPadding)"]
    print(f"\ntask={args.task} examples={args.max_train_samples} epochs={args.epochs} batch={args.batch_size} "
          f"threads={torch.get_num_threads()}")
    for name, value in rows.items():
        print(f"  {name:<50} {value:8.1f} ex/s   x{value / base:.2f}")
    ours_default = rows["ours (default: auto precision, length-grouped)"]
    ratios = {"vs standard Trainer": ours_default / base}
    tuned = rows.get("hf Trainer (bf16, group_by_length)")
    if tuned:
        ratios["vs tuned Trainer (bf16, group_by_length)"] = ours_default / tuned
    speedups = measure_speedups(args) if args.speedups else None
    if args.json:
        args.json.write_text(json.dumps({"args": vars(args) | {"json": str(args.json)}, "examples_per_s": rows,
                                         "ratio": ratios["vs standard Trainer"], "ratios": ratios,
                                         "speedups": speedups}, indent=2, default=str))
    for name, ratio in ratios.items():
        print(f"speed-up of our trainer {name}: {ratio:.2f}x")
    if speedups:
        print(json.dumps(speedups, indent=2))
    return 0


def padding_share(args) -> dict:
    """Share of padded tokens in our length-grouped batches of the task's training set (one epoch), and
    in random batches: what packing (no padding) could save at most."""
    from transformers import AutoTokenizer


    task = default_registry().get(args.task)
    tokenizer = AutoTokenizer.from_pretrained(resolve_model_path(args.model))
    cfg = TrainConfig.of(tasks=[args.task], output_dir="x", glue_dir=args.glue_dir, progress=False)
    split = load_split(task, "train", tokenizer, cfg, None)
    out = {"examples": len(split), "real_tokens": int(split.lengths.sum())}
    for name, grouped in (("length_grouped", True), ("random", False)):
        batches = length_grouped_batches(split.lengths, args.batch_size, torch.Generator().manual_seed(1), grouped)
        padded = sum(int(split.lengths[b].max()) * len(b) for b in batches)
        out[f"{name}_padding_share"] = round(1 - out["real_tokens"] / padded, 4)
    return out


def compile_check(args) -> dict:
    """Time a training step (forward, backward) of our model on the same length-grouped batches, eager
    against ``torch.compile(dynamic=True)``, in bf16 autocast; report the speed and the largest
    loss difference (exactness)."""

    cfg = TrainConfig.of(tasks=[args.task], output_dir="x", model=args.model, glue_dir=args.glue_dir, progress=False)
    _, tasks = resolve_tasks(cfg)
    model, tokenizer = build_model(cfg, tasks)
    model.eval()  # no dropout: eager and compiled see the same function
    split = load_split(tasks[0], "train", tokenizer, cfg, args.max_train_samples)
    batches = length_grouped_batches(split.lengths, args.batch_size, torch.Generator().manual_seed(1), True)
    dtype = autocast_dtype("auto", torch.device("cpu"))
    inputs = [collate(split, b, tokenizer.pad_token_id or 0) for b in batches]

    def step(fn, batch):
        labels = batch["labels"]
        feats = {k: v for k, v in batch.items() if k != "labels"}
        with torch.autocast("cpu", dtype=dtype, enabled=dtype is not None):
            loss = model.loss(args.task, fn(args.task, **feats), labels)
        loss.backward()
        model.zero_grad(set_to_none=True)
        return float(loss)

    def timed(fn, rounds: int) -> tuple[float, list[float]]:
        losses = [step(fn, b) for b in inputs[:2]]  # warm-up (compilation)
        start = time.perf_counter()
        for _ in range(rounds):
            losses = [step(fn, b) for b in inputs]
        return rounds * sum(len(b["labels"]) for b in inputs) / (time.perf_counter() - start), losses

    eager_rate, eager_losses = timed(model, 1)
    start = time.perf_counter()
    compiled = torch.compile(model, dynamic=True)
    step(compiled, inputs[0])
    compile_seconds = time.perf_counter() - start
    compiled_rate, compiled_losses = timed(compiled, 1)
    return {"eager_examples_per_s": round(eager_rate, 2), "compiled_examples_per_s": round(compiled_rate, 2),
            "compile_seconds_first_step": round(compile_seconds, 1),
            "max_loss_difference": max(abs(a - b) for a, b in zip(eager_losses, compiled_losses, strict=True))}


def measure_speedups(args) -> dict:
    return {"padding": padding_share(args), "compile": compile_check(args)}


if __name__ == "__main__":
    sys.exit(main())
