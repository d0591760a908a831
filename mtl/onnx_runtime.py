"""Run an exported model (``mtl-export``) in ONNX Runtime, behind the same interface as the PyTorch model.

An export directory holds ``model.onnx`` (fp32), optionally ``model.int8.onnx`` (dynamic int8
quantization), the tokenizer, ``model.json`` (``"format": "onnx"``, the tasks, the graph's input and
output names) and a model card. :class:`OnnxPredictor` gives the logits of one task's batch, as
:class:`mtl.predict.TorchPredictor` does.

onnx, onnxscript and onnxruntime are an optional extra (``pip install 'mtl-tickets[deploy]'``); they are
imported only when an export or a session is made, and a missing one is a one-line error naming the
install command.
"""

from __future__ import annotations

import importlib
import json
from pathlib import Path
from types import ModuleType
from typing import Any

import torch

from basics.errors import UserError
from mtl.model import task_from_json
from tasks.task_def import TaskDef

DEPLOY_INSTALL = "pip install 'mtl-tickets[deploy]'  (or: pip install onnx onnxscript onnxruntime)"
ONNX_FORMAT = "onnx"
FP32_FILE = "model.onnx"
INT8_FILE = "model.int8.onnx"


def require(module: str, what: str = "ONNX export and ONNX Runtime") -> ModuleType:
    """Import an optional deployment package; a one-line UserError naming the install command if it is missing."""
    try:
        return importlib.import_module(module)
    except ImportError:
        raise UserError(f"{what} needs the Python package '{module}': {DEPLOY_INSTALL}") from None


def is_onnx_model(path: Path) -> bool:
    """True for an ``.onnx`` file or a directory holding ``model.onnx``."""
    path = Path(path)
    return (path.is_file() and path.suffix == ".onnx") or (path / FP32_FILE).is_file()


def session(path: Path, threads: int | None = None):
    """An ONNX Runtime CPU session for ``path`` (``threads`` intra-op threads; None = all cores)."""
    ort = require("onnxruntime")
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads or 0
    options.inter_op_num_threads = 1
    options.log_severity_level = 3  # errors only
    try:
        return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    except Exception as exc:  # an unreadable or invalid file
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise UserError(f"cannot load ONNX model {path}: {first}") from None


class OnnxPredictor:
    """An exported model in ONNX Runtime: ``logits(task, batch)`` like :class:`mtl.predict.TorchPredictor`."""

    def __init__(self, sess, tasks: dict[str, TaskDef], tokenizer, max_length: int, input_names: list[str],
                 outputs: dict[str, str], path: Path | None = None) -> None:
        self.session = sess
        self.tasks = tasks
        self.tokenizer = tokenizer
        self.max_length = max_length
        self.input_names = input_names
        self.outputs = outputs  # task -> graph output name
        self.path = path

    @classmethod
    def load(cls, path: Path, *, max_length: int | None = None, threads: int | None = None) -> "OnnxPredictor":
        """From an export directory (its ``model.onnx``) or one ``.onnx`` file in it."""
        from transformers import AutoTokenizer

        path = Path(path)
        directory, file = (path.parent, path) if path.is_file() else (path, path / FP32_FILE)
        info = read_export_info(directory)
        tasks = {t["name"]: task_from_json(t) for t in info["tasks"]}
        tokenizer = AutoTokenizer.from_pretrained(directory)
        return cls(session(file, threads), tasks, tokenizer, max_length or int(info["max_seq_length"]),
                   list(info["inputs"]), dict(info["outputs"]), file)

    def logits(self, task: str, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        feed = {name: batch[name].to(torch.int64).numpy() for name in self.input_names}
        return torch.from_numpy(self.session.run([self.outputs[task]], feed)[0])

    def run_all(self, batch: dict[str, Any]) -> dict[str, Any]:
        """Every task's logits (numpy) for one batch: the encoder runs once."""
        feed = {name: batch[name] for name in self.input_names}
        names = list(self.outputs.values())
        return dict(zip(self.outputs, self.session.run(names, feed), strict=True))


def read_export_info(directory: Path) -> dict:
    """``model.json`` of an export directory; UserError unless it is one."""
    info_path = Path(directory) / "model.json"
    if not info_path.is_file():
        raise UserError(f"{directory} is not an mtl-export directory (no model.json beside the .onnx file)")
    info = json.loads(info_path.read_text(encoding="utf-8"))
    if info.get("format") != ONNX_FORMAT:
        raise UserError(f"{info_path} does not describe an ONNX export (format {info.get('format')!r})")
    return info
