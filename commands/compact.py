"""Compact a trained model: physically remove the pruned heads and FFN neurons (``mtl-compact``).

    mtl-compact --run RUN_DIR [--mask MASK_FILE] --out OUT_DIR
    python -m commands.compact --run RUN_DIR [--mask MASK_FILE] --out OUT_DIR

RUN_DIR is a ``train.py`` output directory (its ``model/`` is read; a model directory itself is
accepted too); MASK_FILE is one shared mask (True = keep), by default the one the run was trained with. OUT_DIR gets a model that reloads with
``mtl.model.load_multitask_model`` and, for the encoder alone, ``transformers.AutoModel`` (see
:mod:`mtl.compact_run`). The compacted model is checked against the masked full model.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from basics.cli import OneLineParser, run_main
from mtl.compact_run import compact_run, format_summary


def main(argv: Sequence[str] | None = None) -> int:
    def go() -> None:
        parser = OneLineParser(prog="mtl-compact", description=__doc__.splitlines()[0],
                               formatter_class=argparse.RawDescriptionHelpFormatter)
        parser.add_argument("--run", type=Path, required=True, help="train.py output directory (holding model/)")
        parser.add_argument("--mask", type=Path, default=None,
                            help="shared mask file (True = keep); default: the mask the model was trained with")
        parser.add_argument("--out", type=Path, required=True, help="output directory for the compacted model")
        args = parser.parse_args(argv)
        print(format_summary(compact_run(args.run, args.mask, args.out)))

    return run_main(go)


if __name__ == "__main__":
    sys.exit(main())
