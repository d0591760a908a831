"""Train one task (single-task fine-tuning) or several (multi-task learning) on a shared encoder.

    python train.py --tasks rte,mrpc,stsb --output-dir runs/x [--config experiments/X.yaml] [--flags ...]
    python train.py --output-dir runs/x --resume        # continue after a crash (options from runs/x/config.yaml)
    torchrun --nproc_per_node 4 train.py ...            # several processes (DistributedDataParallel)

The command lives in :mod:`commands.train` (console script ``mtl-train``).
"""

import sys

from commands.train import main

if __name__ == "__main__":
    sys.exit(main())
