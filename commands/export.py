"""Export a trained (dense, masked or compacted) model with its task heads to ONNX, and to int8 (``mtl-export``).

    mtl-export --model RUN_OR_MODEL_DIR --out OUT_DIR [--no-int8] [--opset 18]
    python -m commands.export --model RUN_OR_MODEL_DIR --out OUT_DIR

OUT_DIR gets model.onnx (fp32; checked against PyTorch: max |logit difference| <= 1e-4),
model.int8.onnx (ONNX Runtime dynamic int8 quantization), the tokenizer, model.json and a model card.
Run it with mtl-predict --model OUT_DIR (or OUT_DIR/model.int8.onnx). Needs the deploy extra:
pip install 'mtl-tickets[deploy]' (onnx, onnxscript, onnxruntime).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from basics.cli import OneLineParser, run_main
from mtl.onnx_export import OPSET, export_model


def main(argv: Sequence[str] | None = None) -> int:
    def go() -> None:
        parser = OneLineParser(prog="mtl-export", description=__doc__.splitlines()[0],
                               formatter_class=argparse.RawDescriptionHelpFormatter)
        parser.add_argument("--model", type=Path, required=True, help="train.py run directory, or a (compacted) model directory")
        parser.add_argument("--out", type=Path, required=True, help="output directory for the ONNX files")
        parser.add_argument("--no-int8", action="store_true", help="skip the int8 quantized graph")
        parser.add_argument("--opset", type=int, default=OPSET, help="ONNX opset version")
        args = parser.parse_args(argv)
        result = export_model(args.model, args.out, int8=not args.no_int8, opset=args.opset)
        print(f"wrote {result.fp32_path} ({result.fp32_bytes / 1e6:.1f} MB); max |logit difference| vs PyTorch: "
              f"{result.max_logit_difference:.2g}")
        if result.int8_path is not None:
            print(f"wrote {result.int8_path} ({result.int8_bytes / 1e6:.1f} MB); max |logit difference| vs PyTorch: "
                  f"{result.int8_max_logit_difference:.2g}")

    return run_main(go)


if __name__ == "__main__":
    sys.exit(main())
