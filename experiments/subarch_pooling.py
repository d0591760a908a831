"""The pooling pilot of a sub-architecture study: the same fine-tuning runs with another sentence representation.

A study fine-tunes every row with the ``pooling`` of its ``finetune.train`` block (default ``cls``: the first
token's last hidden state, as BERT and MT-DNN do). A two-layer model extracted from a sentence-embedding teacher
(the packaged MiniLM was trained with mean pooling) may carry the sentence in its token states and not in the
first token. The pilot reruns chosen runs of the study with ``--pooling mean`` and nothing else changed
(``experiments/results/subarch/pooling/run.sh``), and :func:`pooling_table` sets them beside the originals.

:func:`zero_shot` measures the other side without any fine-tuning: the Spearman correlation (× 100) of the
cosine similarity of each STS-B dev pair's mean-pooled embeddings with the gold score, per model. It says how
much of the teacher's sentence similarity a model keeps before a task head is trained.

    python -m experiments.subarch_pooling chosen-run FULL ROW TASK     # the seed-1 run at the chosen setting
    python -m experiments.subarch_pooling zero-shot OUT.json NAME=MODEL ...   # needs GLUE_DIR
    python -m experiments.subarch_pooling table FULL POOLING            # the pilot's table
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

import torch

from basics.cli import OneLineParser, run_main
from basics.errors import UserError
from basics.io import atomic_write_json
from basics.stats import signed
from experiments.subarch_files import read_json
from experiments.subarch_table import ROW_LABELS
from mtl.model import load_encoder
from mtl.pooling import mean_pooling
from mtl.rundir import RunDir
from tasks.metrics import spearman
from tasks.readers import read_split
from tasks.registry import default_registry
from tasks.score import task_score

PILOT_RUN = "mean-seed1"  # a pilot run's folder: pooling/ROW/TASK/mean-seed1


def chosen_run(full: Path, row: str, task: str, seed: int = 1, table: dict[str, Any] | None = None) -> Path:
    """The run of ``row`` on ``task`` at the setting the study chose for them (``table``: ``full/table.json``,
    read when not given), seed ``seed``."""
    table = table if table is not None else read_json(Path(full) / "table.json")
    entry = next((r for r in table["rows"] if r["row"] == row), None)
    if entry is None or task not in entry["tasks"] or entry["tasks"][task]["chosen"] is None:
        raise UserError(f"{full}/table.json has no chosen setting of {row} on {task}")
    pick = entry["tasks"][task]["chosen"]
    return Path(full) / "finetune" / row / task / f"lr{pick['lr']:g}-wu{pick['warmup']:g}-seed{seed}"


def pilot_pairs(full: Path, pooling: Path) -> list[dict[str, Any]]:
    """Each pilot run beside its original: ``{row, task, original, mean}`` dev task scores, in the table's order."""
    table = read_json(Path(full) / "table.json")
    pairs = []
    for entry in table["rows"]:
        for task in table["tasks"]:
            pilot = RunDir(Path(pooling) / entry["row"] / task / PILOT_RUN)
            if not pilot.finished:
                continue
            original = RunDir(chosen_run(full, entry["row"], task, table=table))
            pairs.append({"row": entry["row"], "task": task, "original_pooling": original.config().model.pooling,
                          "original": task_score(original.result().metrics[task]),
                          "mean": task_score(pilot.result().metrics[task]),
                          "pilot_pooling": pilot.config().model.pooling})
    return pairs


def pooling_table(full: Path, pooling: Path) -> list[str]:
    """The pilot as a markdown table; the zero-shot STS-B column from ``pooling/zero_shot.json`` when there."""
    zero = Path(pooling) / "zero_shot.json"
    shots = read_json(zero)["spearman"] if zero.is_file() else {}
    lines = ["| model | task | dev, first-token pooling (the study's seed-1 run) | dev, mean pooling (seed 1) | "
             "mean − first token |",
             "|---|---|---:|---:|---:|"]
    for p in pilot_pairs(full, pooling):
        if (p["original_pooling"], p["pilot_pooling"]) != ("cls", "mean"):
            raise UserError(f"pilot run {p['row']}/{p['task']}: pooling {p['pilot_pooling']} against "
                            f"{p['original_pooling']}, expected mean against cls")
        lines.append(f"| {ROW_LABELS[p['row']]} | {p['task']} | {p['original']:.1f} | {p['mean']:.1f} | "
                     f"{signed(p['mean'] - p['original'], 1)} |")
    if shots:
        lines += ["", "| model | STS-B dev, zero-shot (Spearman × 100 of the mean-pooled embeddings' cosine) |",
                  "|---|---:|"]
        lines += [f"| {ROW_LABELS.get(name, name)} | {value:.1f} |" for name, value in shots.items()]
    return lines


@torch.no_grad()
def embeddings(model: str, texts: list[str], batch_size: int = 64) -> torch.Tensor:
    """Unit-length mean-pooled last hidden states of ``texts`` (128 tokens at most)."""
    encoder, tokenizer = load_encoder(model)
    encoder.eval()
    out = []
    for i in range(0, len(texts), batch_size):
        batch = tokenizer(texts[i:i + batch_size], return_tensors="pt", padding=True, truncation=True, max_length=128)
        out.append(mean_pooling(encoder(**batch), batch["attention_mask"]))
    return torch.nn.functional.normalize(torch.cat(out), dim=-1)


def zero_shot(models: dict[str, str], glue_dir: Path) -> dict[str, Any]:
    """STS-B dev: the Spearman correlation (× 100) of each model's embedding cosine with the gold scores."""
    examples = read_split(default_registry().get("stsb"), glue_dir, "dev")
    gold = [float(e.label) for e in examples]
    result = {}
    for name, model in models.items():
        a, b = embeddings(model, [e.text_a for e in examples]), embeddings(model, [e.text_b for e in examples])
        result[name] = spearman((a * b).sum(1).numpy(), gold)
    return {"task": "stsb", "split": "dev", "pairs": len(examples), "pooling": "mean", "spearman": result,
            "models": models}


def main(argv: list[str] | None = None) -> int:
    parser = OneLineParser(prog="python -m experiments.subarch_pooling", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("chosen-run")
    p.add_argument("full", type=Path)
    p.add_argument("row")
    p.add_argument("task")
    p = sub.add_parser("zero-shot")
    p.add_argument("out", type=Path)
    p.add_argument("models", nargs="+", help="NAME=MODEL (a model name or directory)")
    p = sub.add_parser("table")
    p.add_argument("full", type=Path)
    p.add_argument("pooling", type=Path)
    args = parser.parse_args(argv)
    if args.command == "chosen-run":
        print(chosen_run(args.full, args.row, args.task))
    elif args.command == "zero-shot":
        if not os.environ.get("GLUE_DIR"):
            raise UserError("set GLUE_DIR to the GLUE folder (STS-B's dev.tsv is read)")
        bad = [m for m in args.models if "=" not in m]
        if bad:
            raise UserError(f"give each model as NAME=MODEL, got {bad[0]!r}")
        models = dict(m.split("=", 1) for m in args.models)
        result = zero_shot(models, Path(os.environ["GLUE_DIR"]).expanduser())
        atomic_write_json(args.out, result)
        print("\n".join(f"{name}: {value:.1f}" for name, value in result["spearman"].items()))
    else:
        print("\n".join(pooling_table(args.full, args.pooling)))
    return 0


if __name__ == "__main__":
    sys.exit(run_main(main))
