"""Train one task (single-task fine-tuning) or several (multi-task learning) on a shared encoder.

    mtl-train --tasks rte,mrpc,stsb --output-dir runs/x [--config experiments/X.yaml] [--flags ...]
    mtl-train --output-dir runs/x --resume          # continue after a crash (options from runs/x/config.yaml)
    torchrun --nproc_per_node 4 train.py ...        # several processes (DistributedDataParallel)

(``python train.py`` is the same command.)
"""

from __future__ import annotations

import sys
import time
from collections.abc import Sequence

from basics.cli import config_parser, parse_config, run_main
from basics.errors import UserError
from basics.options import read_yaml
from mtl.config import TrainConfig, config_for_resume
from mtl.launch import env_ranks


def main(argv: Sequence[str] | None = None, prog: str = "train.py") -> int:
    def go() -> None:
        try:
            parser = config_parser(prog, __doc__.splitlines()[0], TrainConfig)
            config, args = parse_config(parser, TrainConfig, argv)
            if config.output.resume:
                yaml_values = read_yaml(args.config) if args.config is not None else {}
                flags = {k: v for k, v in vars(args).items() if k in TrainConfig.flat_names()}
                config = config_for_resume(config, yaml_values, flags)
            # imported once the options are read: --help and a bad flag answer without loading torch
            from mtl.run import run_training

            run_training(config)
        except UserError as exc:
            rank = env_ranks()[0]
            if rank != 0:  # under torchrun rank 0 reports; the others only if torchrun has not stopped them by then
                time.sleep(3)
                print(f"error: [rank {rank}] {exc}", file=sys.stderr)
                raise SystemExit(2) from None
            raise

    return run_main(go)


def console_main() -> int:
    """The ``mtl-train`` console script."""
    return main(prog="mtl-train")


if __name__ == "__main__":
    sys.exit(main(prog="python -m commands.train"))
