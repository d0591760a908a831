"""Copy a model directory with its matrices stored in fp16 (``--to fp16``) or back in fp32 (``--to fp32``).

The GPU machine of this workplace receives at most 64 MiB with the working tree: MiniLM's fp32 weights (91 MB)
do not fit, its fp16 copy (45 MB) does. Vectors (biases, LayerNorms) stay fp32; matrices are rounded to fp16
(relative error at most 2^-11) and expanded back to fp32 there. tiny_effect.json (made by teacher_effect.py)
measures what the rounding changes in the teacher's outputs.

    python half_model.py SRC DST --to fp16|fp32
"""

import argparse
import shutil
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file


def convert(src: Path, dst: Path, to: str) -> None:
    dst.mkdir(parents=True, exist_ok=True)
    for f in src.iterdir():
        if f.is_file() and f.name != "model.safetensors":
            shutil.copyfile(f, dst / f.name)
        elif f.is_dir():
            shutil.copytree(f, dst / f.name, dirs_exist_ok=True)
    dtype = torch.float16 if to == "fp16" else torch.float32
    tensors = load_file(src / "model.safetensors")
    out = {k: (v.to(dtype) if v.is_floating_point() and (v.dim() >= 2 or to == "fp32") else v).contiguous()
           for k, v in tensors.items()}
    save_file(out, dst / "model.safetensors", metadata={"format": "pt"})


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("src", type=Path)
    parser.add_argument("dst", type=Path)
    parser.add_argument("--to", choices=("fp16", "fp32"), required=True)
    args = parser.parse_args()
    convert(args.src, args.dst, args.to)
