"""Find tickets on a pre-training objective: masked-LM (``mlm``) or self-distillation (``self-distill``).

    python -m commands.objective_tickets --objective mlm --model bert-base-uncased --corpus wiki.txt \\
        --sparsities 0.3,0.5 --output-dir runs/mlm-tickets [--imp-rounds 3 --imp-rate 0.1 --imp-steps 200]

Writes ``importance.safetensors``, ``masks/{kind}-{sparsity}.safetensors``, ``weight_masks/imp-{s}`` (IMP)
and ``objective.json`` in ``--output-dir`` (:mod:`mtl.objective_tickets`). Without ``--corpus`` the corpus is
the training sentences of the GLUE tasks in ``--glue-dir`` / ``$GLUE_DIR``. ``--objective task`` is the
fine-tuned task loss: ``train.py --tasks TASK --score-importance``.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path

from basics.cli import OneLineParser, run_main
from basics.errors import UserError
from mtl.objective import OBJECTIVES, ObjectiveConfig
from mtl.objective_tickets import find_objective_tickets


def _floats(text: str) -> list[float]:
    try:
        return [float(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise UserError(f"expected comma-separated numbers, got {text!r}") from None


def _names(text: str) -> list[str]:
    return [x.strip() for x in text.split(",") if x.strip()]


def parser() -> OneLineParser:
    p = OneLineParser(prog="python -m commands.objective_tickets", description=__doc__.splitlines()[0],
                      formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    d = ObjectiveConfig()
    p.add_argument("--objective", choices=OBJECTIVES.names(), default=d.objective,
                   help="; ".join(f"{n}: {OBJECTIVES.get(n).description}" for n in OBJECTIVES))
    p.add_argument("--model", default=d.model, help="hub name or local path (mlm: a checkpoint with its MLM head)")
    p.add_argument("--corpus", type=_names, default=[], help="FILE[,FILE]: plain text, one sentence per line")
    p.add_argument("--glue-dir", default=None, help="default corpus: the GLUE training sentences here ($GLUE_DIR)")
    p.add_argument("--corpus-tasks", type=_names, default=[], help="default corpus: only these tasks' sentences")
    p.add_argument("--max-texts", type=int, default=d.max_texts, help="a fixed random subset of the corpus")
    p.add_argument("--max-seq-length", type=int, default=d.max_seq_length)
    p.add_argument("--batch-size", type=int, default=d.batch_size)
    p.add_argument("--score-batches", type=int, default=d.score_batches, help="corpus batches the scores sum over")
    p.add_argument("--mlm-probability", type=float, default=d.mlm_probability)
    p.add_argument("--seed", type=int, default=d.seed)
    p.add_argument("--sparsities", type=_floats, default=d.sparsities, help="structured tickets cut at these")
    p.add_argument("--ticket-kinds", type=_names, default=d.kinds, help="winning, random, losing")
    p.add_argument("--imp-rounds", type=int, default=d.imp_rounds, help="IMP rounds on the objective (0: none)")
    p.add_argument("--imp-rate", type=float, default=d.imp_rate, help="fraction of the weights pruned per round")
    p.add_argument("--imp-steps", type=int, default=d.imp_steps, help="training steps on the objective per round")
    p.add_argument("--imp-lr", type=float, default=d.imp_lr)
    p.add_argument("--output-dir", type=Path, required=True)
    return p


def config_of(args: argparse.Namespace) -> ObjectiveConfig:
    return ObjectiveConfig(objective=args.objective, model=args.model, corpus=args.corpus, glue_dir=args.glue_dir,
                           corpus_tasks=args.corpus_tasks, max_texts=args.max_texts,
                           max_seq_length=args.max_seq_length, batch_size=args.batch_size,
                           score_batches=args.score_batches, mlm_probability=args.mlm_probability, seed=args.seed,
                           sparsities=args.sparsities, kinds=args.ticket_kinds, imp_rate=args.imp_rate,
                           imp_rounds=args.imp_rounds, imp_steps=args.imp_steps, imp_lr=args.imp_lr)


def main(argv: Sequence[str] | None = None) -> int:
    def go() -> None:
        args = parser().parse_args(argv)
        summary = find_objective_tickets(config_of(args), args.output_dir)
        data = json.loads(summary.read_text(encoding="utf-8"))
        print(f"{args.objective} tickets of {args.model} on {data['corpus']} ({data['texts']} texts): "
              f"{', '.join(data['tickets'])}; IMP rounds {len(data['imp'])}; in {args.output_dir}")

    return run_main(go)


if __name__ == "__main__":
    sys.exit(main())
