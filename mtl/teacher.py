"""The teacher of a sub-architecture search, and the students cut from it.

:func:`load_teacher` loads a model name or path (``minilm``: the packaged MiniLM) as a base encoder plus
its MLM head when its checkpoint has one (:data:`masks.extract.MLM_SPECS`: BERT's ``cls.predictions``,
RoBERTa's ``lm_head``); the packaged MiniLM has none. :func:`make_student` extracts a
:class:`masks.subarch.Selection` from it (encoder and head), and :func:`save_student` writes the student
encoder as a model directory that ``train.py --model DIR`` and ``AutoModel.from_pretrained`` (after
:func:`masks.auto_classes.register_auto_classes`) read, with ``subarch.json`` recording what was kept.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from safetensors import safe_open
from torch import nn

from basics.errors import UserError
from basics.io import atomic_write_json
from masks.arch import ARCH_SPECS, EncoderShape
from masks.auto_classes import register_auto_classes
from masks.extract import MLM_SPECS, MlmSpec, extract_encoder, extract_mlm_head
from masks.subarch import Selection
from mtl.model import load_encoder, resolve_model_path

SUBARCH_FILE = "subarch.json"


@dataclass
class Teacher:
    encoder: nn.Module  # base encoder (eval mode)
    tokenizer: Any
    mlm_head: nn.Module | None  # hidden states -> vocabulary logits, or None
    mlm_spec: MlmSpec | None
    name: str
    mlm_tied: bool = False  # the head's decoder is the word embedding matrix


@dataclass
class Student:
    encoder: nn.Module  # the extracted encoder
    mlm_head: nn.Module | None
    selection: Selection


def checkpoint_keys(path: Path) -> list[str]:
    """Tensor names of a local model directory's safetensors files (none for other formats)."""
    names: list[str] = []
    for file in sorted(Path(path).glob("*.safetensors")):
        with safe_open(str(file), framework="pt") as f:
            names += list(f.keys())
    return names


def mlm_spec_of(path: Path) -> MlmSpec | None:
    """The :class:`MlmSpec` when the model directory ``path`` holds MLM head weights, else None."""
    config = Path(path) / "config.json"
    if not config.is_file():
        return None
    spec = MLM_SPECS.get(json.loads(config.read_text(encoding="utf-8")).get("model_type", ""))
    if spec is None:
        return None
    return spec if any(k.startswith(spec.weight_prefix) for k in checkpoint_keys(path)) else None


def load_teacher(name: str) -> Teacher:
    """The teacher ``name`` in eval mode: its base encoder (``AutoModel``, with its pooler) and, when its
    checkpoint has one, its MLM head (from ``AutoModelForMaskedLM``; the encoder weights are the same)."""
    path = Path(resolve_model_path(name))
    spec = mlm_spec_of(path) if path.is_dir() else None
    encoder, tokenizer = load_encoder(name)
    if spec is None:
        return Teacher(encoder.eval(), tokenizer, None, None, name)
    from transformers import AutoModelForMaskedLM

    model = AutoModelForMaskedLM.from_pretrained(str(path), attn_implementation="sdpa")
    head = getattr(model, spec.head).eval()
    tied = head.get_submodule(spec.decoder).weight is model.get_input_embeddings().weight
    return Teacher(encoder.eval(), tokenizer, head, spec, name, tied)


def make_student(teacher: Teacher, selection: Selection, provenance: dict[str, str] | None = None) -> Student:
    """The sub-architecture ``selection`` of ``teacher`` (training mode), with its MLM head when the teacher
    has one (decoder tied to the student's word embeddings when the teacher's is tied to its own)."""
    encoder = extract_encoder(teacher.encoder, selection, {"teacher": teacher.name, **(provenance or {})})
    head = None
    if teacher.mlm_head is not None:
        head = extract_mlm_head(teacher.mlm_head, teacher.mlm_spec, selection.dims,
                                encoder.get_input_embeddings() if teacher.mlm_tied else None)
    return Student(encoder.train(), head.train() if head is not None else None, selection)


def save_student(student: Student, tokenizer, out_dir: Path, info: dict[str, Any]) -> Path:
    """Write the student encoder (SDPA attention) and the tokenizer to ``out_dir``, ``subarch.json`` last
    (its presence marks a complete directory)."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    register_auto_classes()
    encoder = student.encoder
    encoder.set_attn_implementation("sdpa")
    encoder.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    atomic_write_json(out_dir / SUBARCH_FILE, {**info, "selection": student.selection.to_dict(),
                                               "arch": student.selection.name})
    return out_dir


def is_student_dir(path: Path) -> bool:
    """True when ``path`` holds a complete saved student (written by :func:`save_student`)."""
    return (Path(path) / SUBARCH_FILE).is_file() and (Path(path) / "config.json").is_file()


def read_student_info(path: Path) -> dict[str, Any]:
    file = Path(path) / SUBARCH_FILE
    if not file.is_file():
        raise UserError(f"{path} is not a saved sub-architecture (no {SUBARCH_FILE})")
    return json.loads(file.read_text(encoding="utf-8"))


def teacher_shape(name: str) -> EncoderShape:
    """The sizes of model ``name`` from its config alone (no weights are loaded)."""
    from transformers import AutoConfig

    register_auto_classes()
    try:
        config = AutoConfig.from_pretrained(resolve_model_path(name))
    except (OSError, ValueError) as exc:
        raise UserError(f"could not read the config of model {name!r}: {str(exc).splitlines()[0]}") from None
    if config.model_type not in ARCH_SPECS:
        raise UserError(f"teacher {name!r} is a {config.model_type!r} model; supported: {', '.join(sorted(ARCH_SPECS))}")
    spec = ARCH_SPECS[config.model_type]
    layers, heads, hidden, inter = (int(getattr(config, k)) for k in (
        spec.num_layers_key, spec.num_heads_key, spec.hidden_key, spec.intermediate_key))
    return EncoderShape(layers, heads, hidden // heads, hidden, inter)
