"""The objective a ticket is found on (one registry: :data:`OBJECTIVES`), its options, and the model it needs.

- ``task``: the loss of a fine-tuned task head (``train.py --score-importance``: :mod:`mtl.gating`);
- ``mlm``: BERT's masked-language-model loss (15 % of the tokens; 80 % ``[MASK]``, 10 % a random token, 10 %
  unchanged) of an encoder *with its MLM head* (``AutoModelForMaskedLM``: BERT, RoBERTa, ELECTRA generator
  checkpoints, from the hub or a local path), on a text corpus;
- ``self-distill``: match the hidden states of the dense model (a frozen copy: the teacher), for encoders
  without an MLM head such as the packaged MiniLM (:mod:`mtl.objective_loss` says how a ranking is taken
  where the loss and its gradient are 0).

The corpus is ``corpus`` (text files, one sentence per line) or, by default, the training sentences of the
GLUE tasks on disk (:func:`mtl.corpus.glue_sentences`; dev sets are never read).
"""

from __future__ import annotations

import copy
import dataclasses
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from torch import nn

from basics.errors import UserError
from basics.registry import Registry
from masks.kinds import TICKET_KINDS
from mtl.corpus import glue_sentences, read_text_files, subsample
from mtl.model import load_encoder, resolve_model_path


@dataclass(frozen=True)
class Objective:
    """One choice of :data:`OBJECTIVES`: what it optimises, and whether it needs an MLM head."""

    description: str
    needs_mlm_head: bool = False
    needs_corpus: bool = True


OBJECTIVES: Registry[Objective] = Registry("ticket objective")
OBJECTIVES.register("task", Objective("the fine-tuned task loss (train.py --score-importance)", needs_corpus=False))
OBJECTIVES.register("mlm", Objective("masked-language modelling (15 %: 80/10/10) with the checkpoint's MLM head",
                                     needs_mlm_head=True))
OBJECTIVES.register("self-distill", Objective("match the dense model's hidden states (frozen teacher copy)"))
CORPUS_OBJECTIVES = tuple(name for name in OBJECTIVES if OBJECTIVES.get(name).needs_corpus)


@dataclass
class ObjectiveConfig:
    """How tickets are found on a pre-training objective (saved in ``objective.json``)."""

    objective: str = "self-distill"  # CORPUS_OBJECTIVES: mlm | self-distill
    model: str = "minilm"  # hub name or local path (minilm: the packaged MiniLM)
    corpus: list[str] = field(default_factory=list)  # text files; empty: the GLUE training sentences on disk
    glue_dir: str | None = None  # for the default corpus (None: $GLUE_DIR)
    corpus_tasks: list[str] = field(default_factory=list)  # default corpus: only these tasks' sentences
    max_texts: int | None = 20000  # a fixed random subset of the corpus
    max_seq_length: int = 128
    batch_size: int = 32
    score_batches: int = 32  # batches the importance is summed over
    mlm_probability: float = 0.15
    seed: int = 1  # masking, probes, corpus order, random tickets
    sparsities: list[float] = field(default_factory=lambda: [0.3, 0.5])  # structured tickets cut at these
    kinds: list[str] = field(default_factory=lambda: ["winning", "random", "losing"])  # masks.kinds.TICKET_KINDS
    # unstructured IMP on the objective (Chen et al.): rounds of (train `imp_steps`, prune `imp_rate` more)
    imp_rate: float = 0.1
    imp_rounds: int = 0  # 0: no IMP
    imp_steps: int = 0  # training steps per round (0: prune the pre-trained weights round after round)
    imp_lr: float = 5e-5

    def __post_init__(self) -> None:
        OBJECTIVES.check(self.objective)
        if self.objective not in CORPUS_OBJECTIVES:
            raise UserError(f"objective {self.objective!r} is the fine-tuned task loss: use train.py --tasks TASK "
                            f"--score-importance; here choose one of {', '.join(CORPUS_OBJECTIVES)}")
        for name in ("max_seq_length", "batch_size", "score_batches"):
            if getattr(self, name) < 1:
                raise UserError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.max_texts is not None and self.max_texts < self.batch_size:
            raise UserError(f"max_texts ({self.max_texts}) must hold at least one batch of {self.batch_size}")
        if not 0.0 < self.mlm_probability < 1.0:
            raise UserError(f"mlm_probability must be in (0, 1), got {self.mlm_probability}")
        if self.imp_rounds < 0 or self.imp_steps < 0 or not 0.0 < self.imp_rate < 1.0 or self.imp_lr <= 0:
            raise UserError("IMP needs imp_rounds >= 0, imp_steps >= 0, 0 < imp_rate < 1 and imp_lr > 0")
        for kind in self.kinds:
            TICKET_KINDS.check(kind)
        if not self.sparsities or any(not 0.0 <= float(x) < 1.0 for x in self.sparsities):
            raise UserError(f"sparsities must be fractions in [0, 1), got {self.sparsities}")
        self.sparsities = [float(x) for x in self.sparsities]
        self.corpus = [str(p) for p in self.corpus]
        self.corpus_tasks = [str(t) for t in self.corpus_tasks]

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any], where: str = "objective") -> "ObjectiveConfig":
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - names)
        if unknown:
            raise UserError(f"{where}: unknown key(s) {', '.join(unknown)}; valid: {', '.join(sorted(names))}")
        return cls(**data)


def corpus_texts(config: ObjectiveConfig) -> list[str]:
    """The corpus of ``config``: its files, or the GLUE training sentences; at most ``max_texts`` (fixed subset)."""
    if config.corpus:
        texts = read_text_files([Path(p).expanduser() for p in config.corpus])
    else:
        glue = config.glue_dir or os.environ.get("GLUE_DIR")
        texts = glue_sentences(Path(glue).expanduser() if glue else None, config.corpus_tasks or None)
    return subsample(texts, config.max_texts, config.seed)


@dataclass
class ObjectiveModel:
    """The model an objective scores and trains.

    ``model``: what the loss runs (``*ForMaskedLM`` for ``mlm``; the base encoder for ``self-distill``);
    ``encoder``: its base encoder (gates and weight masks go there); ``teacher``: the frozen dense copy
    (``self-distill``), else None.
    """

    objective: str
    model: nn.Module
    encoder: nn.Module
    tokenizer: Any
    teacher: nn.Module | None = None


def _mlm_model(name: str):
    """``AutoModelForMaskedLM`` of ``name`` and whether its checkpoint lacked head weights (newly initialised)."""
    from transformers import AutoModelForMaskedLM

    path = resolve_model_path(name)
    try:
        model, info = AutoModelForMaskedLM.from_pretrained(path, output_loading_info=True, attn_implementation="sdpa")
    except ValueError as exc:
        if "Unrecognized configuration class" in str(exc) or "AutoModelForMaskedLM" in str(exc):
            raise UserError(f"model {name!r} has no masked-LM class; use --objective self-distill") from None
        raise
    prefix = f"{model.base_model_prefix}."
    missing = [k for k in info.get("missing_keys", []) if not k.startswith(prefix)]
    return model, missing


def load_objective_model(name: str, objective: str) -> ObjectiveModel:
    """The model for ``objective`` (eval mode). ``mlm`` refuses, in one line, a checkpoint without MLM head
    weights (e.g. the packaged MiniLM, a sentence encoder), and suggests ``self-distill``."""
    OBJECTIVES.check(objective)
    encoder, tokenizer = load_encoder(name)  # tokenizer, one clear error for a name that does not load
    if objective == "mlm":
        if tokenizer.mask_token_id is None:
            raise UserError(f"model {name!r}: its tokenizer has no mask token; use --objective self-distill")
        model, missing = _mlm_model(name)
        if missing:
            raise UserError(f"model {name!r} has no MLM head in its checkpoint (missing {missing[0]}, ...); "
                            "use --objective self-distill")
        return ObjectiveModel(objective, model.eval(), model.base_model, tokenizer)
    teacher = copy.deepcopy(encoder).eval()
    for p in teacher.parameters():
        p.requires_grad_(False)
    return ObjectiveModel(objective, encoder.eval(), encoder, tokenizer, teacher)


def special_ids(tokenizer) -> list[int]:
    """The ids masking never touches (CLS, SEP, PAD, ...)."""
    return sorted(set(int(i) for i in tokenizer.all_special_ids))


__all__: Sequence[str] = ("OBJECTIVES", "CORPUS_OBJECTIVES", "Objective", "ObjectiveConfig", "ObjectiveModel",
                          "corpus_texts", "load_objective_model", "special_ids")
