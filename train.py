"""Train one task (single-task fine-tuning) or several (multi-task learning) on a shared encoder.

    python train.py --tasks rte,mrpc,stsb --output-dir runs/x [--config experiments/X.yaml] [--flags ...]
    python train.py --output-dir runs/x --resume        # continue after a crash (options from runs/x/config.yaml)
    torchrun --nproc_per_node 4 train.py ...            # several processes (DistributedDataParallel)
"""

from __future__ import annotations

import sys
import time


def main(argv: list[str] | None = None) -> int:
    from mtl.cli import config_parser, parse_config, run_main
    from mtl.config import TrainConfig, config_for_resume, read_yaml
    from mtl.distributed import env_ranks
    from mtl.errors import UserError
    from mtl.run import run_training

    def go() -> None:
        try:
            parser = config_parser("train.py", __doc__.splitlines()[0], TrainConfig)
            config, args = parse_config(parser, TrainConfig, argv)
            if config.resume:
                yaml_values = read_yaml(args.config) if args.config is not None else {}
                flags = {k: v for k, v in vars(args).items() if k in TrainConfig.__dataclass_fields__}
                config = config_for_resume(config, yaml_values, flags)
            run_training(config)
        except UserError as exc:
            rank = env_ranks()[0]
            if rank != 0:  # under torchrun rank 0 reports; the others only if torchrun has not stopped them by then
                time.sleep(3)
                print(f"error: [rank {rank}] {exc}", file=sys.stderr)
                raise SystemExit(2) from None
            raise

    return run_main(go)


if __name__ == "__main__":
    sys.exit(main())
