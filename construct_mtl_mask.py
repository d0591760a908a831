"""Merge single-task tickets into the mask of a multi-task run (same as ``mtl-construct-mask``).

    python construct_mtl_mask.py --tickets rte=PATH mrpc=PATH ... --mode union|intersection|vote:K|per-task \
        --out FILE [--json FILE]
"""

import sys

from commands.construct_mask import main

if __name__ == "__main__":
    sys.exit(main())
