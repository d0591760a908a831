"""Training throughput: our trainer vs. a Hugging Face ``Trainer`` on the same model, data, batch size, epochs.

    python -m experiments.bench_train --task rte [--max-train-samples 800] [--epochs 1] [--batch-size 32]

Both fine-tune the same encoder (default: the packaged MiniLM) with a fresh classification head on
the same GLUE training examples, tokenized the same way (max 128 tokens). The HF baseline is the
standard recipe: ``AutoModelForSequenceClassification`` + ``Trainer`` + ``DataCollatorWithPadding``
(fp32, no length grouping). Throughput = training examples / seconds of the training loop
(evaluation excluded on both sides). The ratio is printed last. Needs ``accelerate`` for ``Trainer``.
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
from mtl.model import resolve_model_path
from mtl.run import load_split, run_training
from tasks.registry import default_registry


def ours(args, out: Path, precision: str, group_by_length: bool) -> float:

    config = TrainConfig.of(tasks=[args.task], output_dir=str(out), model=args.model, glue_dir=args.glue_dir,
                         epochs=args.epochs, batch_size=args.batch_size, max_train_samples=args.max_train_samples,
                         max_eval_samples=64, save_model=False, progress=False, precision=precision,
                         group_by_length=group_by_length, seed=args.seed, num_threads=args.threads)
    return run_training(config)["summary"]["train_examples_per_s"]


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
    ratio = rows["ours (default: auto precision, length-grouped)"] / base
    if args.json:
        args.json.write_text(json.dumps({"args": vars(args) | {"json": str(args.json)}, "examples_per_s": rows,
                                         "ratio": ratio}, indent=2, default=str))
    print(f"speed-up of our trainer over HF Trainer: {ratio:.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
