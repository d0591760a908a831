"""Predict with a saved model: rows of new data in, one prediction per row out, in input order.

A model is a ``train.py`` run directory (its ``model/``), a saved model directory (``model.json``), a
compacted directory (``mtl-compact``) or an ONNX export (``mtl-export``: a directory holding
``model.onnx``, or one ``.onnx`` file of it), run through PyTorch or ONNX Runtime
(:mod:`mtl.onnx_runtime`) behind one :class:`Predictor` interface.

Predictions are computed as the trainer computes its dev predictions (:meth:`mtl.trainer.Trainer.predict`):
the same tokenization (:func:`mtl.data.tokenize`), batches sorted by length (:func:`mtl.data.eval_batches`),
padding (:func:`mtl.data.collate`) and head; so with the run's precision and evaluation batch size they
are the trainer's dev predictions exactly. Classification gives the label name (and, on request, every
label's probability); regression gives the score.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import torch
from tqdm.auto import tqdm

from basics.errors import UserError
from basics.io import atomic_write_text
from mtl.data import collate, eval_batches, tokenize
from mtl.distributed import pick_device
from mtl.model import MultiTaskModel, load_multitask_model, read_model_info
from mtl.onnx_runtime import OnnxPredictor, is_onnx_model
from mtl.span_answers import QuestionPrediction, SpanDecoding, extract_predictions
from mtl.trainer import autocast_dtype
from tasks.registry import default_registry
from tasks.squad import QAExample
from tasks.task_def import Example, TaskDef

DEFAULT_MAX_LENGTH = 128  # models saved before model.json recorded max_seq_length
DEFAULT_DOC_STRIDE = 128  # span tasks: models saved before model.json recorded doc_stride
OUTPUT_FORMATS = {".tsv": "tsv", ".csv": "csv", ".jsonl": "jsonl"}


class Predictor(Protocol):
    """A model that gives logits for one task's padded batch: what :func:`predict_task` needs."""

    tasks: dict[str, TaskDef]
    tokenizer: Any
    max_length: int

    def logits(self, task: str, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """``batch``: input_ids / attention_mask [/ token_type_ids] (B, T) -> logits (B, num_labels)."""
        ...


class TorchPredictor:
    """A :class:`mtl.model.MultiTaskModel` in eval mode, with the run's autocast precision (fp32 by default)."""

    def __init__(self, model: MultiTaskModel, tokenizer, max_length: int, precision: str = "fp32",
                 device: str = "auto") -> None:
        self.device = pick_device(device)
        self.model = model.eval().to(self.device)
        self.tokenizer = tokenizer
        self.tasks = dict(model.tasks)
        self.max_length = max_length
        self.amp_dtype = autocast_dtype(precision, self.device)

    @torch.inference_mode()
    def logits(self, task: str, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        inputs = {k: v.to(self.device) for k, v in batch.items()}
        amp = (torch.autocast(self.device.type, dtype=self.amp_dtype) if self.amp_dtype is not None
               else contextlib.nullcontext())
        with amp:
            return self.model(task, **inputs).cpu()


def find_model(path: Path) -> Path:
    """The model a ``--model`` path names: an ``.onnx`` file, an ONNX export directory, a saved model
    directory, or a run directory holding ``model/``; UserError otherwise."""
    path = Path(path).expanduser()
    if not path.exists():
        raise UserError(f"--model {path}: not found")
    if is_onnx_model(path):
        return path
    for candidate in (path, path / "model"):
        if (candidate / "model.json").is_file():
            return candidate
    raise UserError(f"--model {path}: not a saved model (no model.json in it or in {path / 'model'}; was the run "
                    "trained with --no-save-model?), and not an ONNX export (model.onnx)")


def load_predictor(path: Path, *, precision: str = "fp32", max_length: int | None = None, device: str = "auto",
                   threads: int | None = None) -> Predictor:
    """A :class:`Predictor` for the model at ``path`` (see :func:`find_model`); ONNX models run in ONNX Runtime."""
    found = find_model(path)
    if is_onnx_model(found):
        return OnnxPredictor.load(found, max_length=max_length, threads=threads)
    info = read_model_info(found)
    model, tokenizer = load_multitask_model(found)
    return TorchPredictor(model, tokenizer, max_length or int(info.get("max_seq_length", DEFAULT_MAX_LENGTH)),
                          precision=precision, device=device)


def resolve_task(predictor: Predictor, name: str) -> TaskDef:
    """The model's task called ``name`` (GLUE aliases such as ``SST-2`` work); UserError if it has no head for it."""
    if name in predictor.tasks:
        return predictor.tasks[name]
    registry = default_registry()
    canonical = registry.get(name).name if name in registry else name.strip().lower()
    if canonical not in predictor.tasks:
        raise UserError(f"the model has no head for task {name!r} (it has: {', '.join(predictor.tasks)})")
    return predictor.tasks[canonical]


def with_input_names(task: TaskDef) -> TaskDef:
    """``task`` with the GLUE input column names when a model saved before they existed lacks them."""
    if task.input_names:
        return task
    registry = default_registry()
    if task.name in registry and registry.get(task.name).labels == task.labels:
        known = registry.get(task.name)
        return TaskDef(**{**vars(task), "inputs": known.input_names, "submission": known.submission,
                          "submission_index": known.submission_index})
    return task


# ---------------------------------------------------------------- predicting

@dataclass(frozen=True)
class TaskPredictions:
    """One task's predictions for N rows, in input order.

    ``values``: (N,) class indices (long) or scores (float32); ``probabilities``: (N, C) softmax of the
    logits (classification only).
    """

    task: TaskDef
    values: torch.Tensor
    probabilities: torch.Tensor | None = None

    def outputs(self) -> list[str] | list[float]:
        """The predictions: label names (classification) or scores (regression)."""
        if self.task.head == "regression":
            return [float(v) for v in self.values]
        return [self.task.labels[int(i)] for i in self.values]


def predict_task(predictor: Predictor, task: TaskDef, examples: Sequence[Example], batch_size: int = 128,
                 progress: Callable[[int], None] | None = None) -> TaskPredictions:
    """Predictions of ``task``'s head for ``examples``, batched as the trainer evaluates (sorted by length).

    ``progress(n)`` is called after each batch of ``n`` rows.
    """
    if batch_size < 1:
        raise UserError(f"--batch-size must be >= 1, got {batch_size}")
    data = tokenize(predictor.tokenizer, examples, task, "input", predictor.max_length)
    pad_id = predictor.tokenizer.pad_token_id or 0
    regression = task.head == "regression"
    values = torch.zeros(len(data), dtype=torch.float32 if regression else torch.long)
    probs = None if regression else torch.zeros(len(data), task.num_labels)
    for indices in eval_batches(data.lengths, batch_size):
        batch = collate(data, indices, pad_id)
        batch.pop("labels")
        logits = predictor.logits(task.name, batch)
        if regression:  # as MultiTaskModel.predict
            values[indices] = logits.squeeze(-1).float()
        else:
            values[indices] = logits.argmax(-1).to(torch.long)
            probs[indices] = torch.softmax(logits.float(), dim=-1)
        if progress is not None:
            progress(len(indices))
    return TaskPredictions(task, values, probs)


@dataclass(frozen=True)
class SpanSettings:
    """How a span task's inputs are windowed (``doc_stride``) and its answers read (``decoding``)."""

    doc_stride: int = DEFAULT_DOC_STRIDE
    max_answer_length: int = 30
    null_threshold: float = 0.0

    @classmethod
    def of_model(cls, path: Path, doc_stride: int | None = None, max_answer_length: int | None = None,
                 null_threshold: float | None = None) -> "SpanSettings":
        """The settings the model at ``path`` was trained with (its ``model.json``), overridden by the given ones."""
        found = find_model(path)
        info = read_model_info(found if found.is_dir() else found.parent)
        default = cls()
        return cls(doc_stride=doc_stride or int(info.get("doc_stride", default.doc_stride)),
                   max_answer_length=max_answer_length or int(info.get("max_answer_length", default.max_answer_length)),
                   null_threshold=(null_threshold if null_threshold is not None
                                   else float(info.get("null_threshold", default.null_threshold))))

    def decoding(self, task: TaskDef) -> SpanDecoding:
        return SpanDecoding(max_answer_length=self.max_answer_length, null_threshold=self.null_threshold,
                            no_answer=task.no_answer)


def predict_spans(predictor: Predictor, task: TaskDef, examples: Sequence[QAExample], settings: SpanSettings,
                  batch_size: int = 128, progress: Callable[[int], None] | None = None) -> dict[str, QuestionPrediction]:
    """Question id -> prediction (the answer text, ``""`` for none; the n-best; the null odds) of a span task,
    computed as the trainer evaluates: the same windows (:func:`mtl.data.tokenize`), batches sorted by length, and
    answer rules (:mod:`mtl.span_answers`).

    ``progress(n)`` is called after each batch of ``n`` windows."""
    if batch_size < 1:
        raise UserError(f"--batch-size must be >= 1, got {batch_size}")
    data = tokenize(predictor.tokenizer, examples, task, "input", predictor.max_length, settings.doc_stride)
    pad_id = predictor.tokenizer.pad_token_id or 0
    logits: list[torch.Tensor] = [torch.empty(0)] * len(data)
    for indices in eval_batches(data.lengths, batch_size):
        batch = collate(data, indices, pad_id)
        batch.pop("labels")
        out = predictor.logits(task.name, batch).float()  # (B, T, 2)
        for row, i in enumerate(indices):
            logits[i] = out[row, : int(data.lengths[i])]
        if progress is not None:
            progress(len(indices))
    return extract_predictions(data.spans, logits, settings.decoding(task))


def progress_bar(total: int | None, enabled: bool, desc: str = "predict"):
    """A tqdm bar on stderr over ``total`` rows (off when not ``enabled`` or stderr is not a terminal)."""
    return tqdm(total=total, desc=desc, unit="row", disable=None if enabled else True, dynamic_ncols=True)


# ---------------------------------------------------------------- output

def prediction_columns(results: Sequence[TaskPredictions], probabilities: bool) -> tuple[list[str], list[list[Any]]]:
    """(column names, rows): ``index`` (0-based data row), then per task its prediction (``prediction`` for a
    single task, else the task's name) and, with ``probabilities``, ``prob_<label>`` per label
    (``<task>_prob_<label>`` for several tasks)."""
    single = len(results) == 1
    columns = ["index"]
    cells: list[list[Any]] = []
    for r in results:
        columns.append("prediction" if single else r.task.name)
        cells.append(r.outputs())
        if probabilities and r.probabilities is not None:
            prefix = "prob_" if single else f"{r.task.name}_prob_"
            for j, label in enumerate(r.task.labels):
                columns.append(prefix + label)
                cells.append(r.probabilities[:, j].tolist())
    n = len(cells[0]) if cells else 0
    return columns, [[i, *(column[i] for column in cells)] for i in range(n)]


def output_format(path: Path) -> str:
    fmt = OUTPUT_FORMATS.get(Path(path).suffix.lower())
    if fmt is None:
        raise UserError(f"--output {path}: name it .tsv, .csv or .jsonl (the format follows the name)")
    return fmt


FLOAT_DIGITS = 6  # scores and probabilities: 6 decimals (float32 keeps ~7 significant digits)


def render_table(columns: Sequence[str], rows: Sequence[Sequence[Any]], fmt: str) -> str:
    """The table as TSV, CSV (header line first) or JSONL text (one object per row, numbers as numbers)."""
    if fmt == "jsonl":
        return "".join(json.dumps(dict(zip(columns, [_rounded(v) for v in row], strict=True))) + "\n" for row in rows)
    buffer = io.StringIO()
    writer = csv.writer(buffer, delimiter="\t" if fmt == "tsv" else ",", lineterminator="\n",
                        quoting=csv.QUOTE_MINIMAL)
    writer.writerow(columns)
    writer.writerows([[f"{v:.{FLOAT_DIGITS}f}" if isinstance(v, float) else v for v in row] for row in rows])
    return buffer.getvalue()


def _rounded(value: Any) -> Any:
    return round(value, FLOAT_DIGITS) if isinstance(value, float) else value


def write_table(path: Path, columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
    """Write the table to ``path`` atomically (nothing is left behind if writing fails)."""
    atomic_write_text(Path(path), render_table(columns, rows, output_format(path)))
