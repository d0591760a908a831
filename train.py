"""Train one task (single-task fine-tuning) or several (multi-task learning) on a shared encoder.

    python train.py --tasks rte,mrpc,stsb --output-dir runs/x [--config experiments/X.yaml] [--flags ...]
"""

from __future__ import annotations

import sys


def main(argv: list[str] | None = None) -> int:
    from mtl.cli import config_parser, parse_config, run_main
    from mtl.config import TrainConfig
    from mtl.run import run_training

    def go() -> None:
        parser = config_parser("train.py", __doc__.splitlines()[0], TrainConfig)
        config, _ = parse_config(parser, TrainConfig, argv)
        run_training(config)

    return run_main(go)


if __name__ == "__main__":
    sys.exit(main())
