"""The teacher's outputs on a distillation's fixed batches, computed once and read by many students.

A sub-architecture search distils every candidate from the same teacher on the same batches (the same
corpus, batch size and seed), so the teacher's forward pass — half the search's operations on MiniLM's grid,
most of it for the small candidates — is the same in every candidate. :func:`write_teacher_cache` runs it
once and stores, per batch, the ``input_ids`` and every hidden state and attention distribution the
``hidden`` objective can compare with (:mod:`mtl.distill_loss`); :class:`TeacherCache` gives them back to
:class:`mtl.distill.Distiller`, which then skips the teacher. Only the ``hidden`` objective is cached (the
``mlm`` objective's teacher logits depend on each step's random masking).

The batches are those the distiller draws: ``config.steps`` batches of
:class:`mtl.corpus.BatchStream` ``(train, batch_size, seed)``, and the held-out corpus in batches of
``eval_batch_size``; the teacher runs as the distiller runs it (eval mode, eager attention, the autocast of
``config.precision``), so the losses are those without the cache (tested). Every batch read is checked
against the ``input_ids`` stored with it. Files (in ``folder``; large: not results, never committed):

- ``train-00000.safetensors`` …, ``heldout-00000.safetensors`` …: ``input_ids``, ``lengths``, and ``hidden.{i}``,
  ``attention.{i}`` packed: only each text's real positions (its ``(n, H)`` hidden states, its ``(A, n, n)``
  attention block), a tenth of the padded size on GLUE sentences; padded positions read back as zeros, which
  the losses never see (tested: the same losses and weights as the live teacher);
- ``cache.json``, written last: what the cache was made from (:func:`cache_identity`); a cache without it is
  unfinished and is rebuilt.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import shutil
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open

from basics.errors import UserError
from basics.io import atomic_write_json
from masks.mask import write_safetensors
from mtl.corpus import BatchStream, TokenizedCorpus
from mtl.distill import DistillConfig, objective_for
from mtl.teacher import Teacher
from mtl.trainer import autocast_dtype

CACHE_FORMAT = "mtl-tickets/teacher-cache"
SPLITS = ("train", "heldout")


def corpus_digest(corpus: TokenizedCorpus) -> str:
    """SHA-256 of a corpus's token ids, text by text."""
    digest = hashlib.sha256()
    for ids in corpus.ids:
        digest.update(ids.numpy().tobytes() + b";")
    return digest.hexdigest()


def cache_identity(teacher: Teacher, train: TokenizedCorpus, heldout: TokenizedCorpus, config: DistillConfig,
                   device: str | torch.device = "cpu") -> dict[str, Any]:
    """Everything the cached outputs depend on: the teacher, both corpora, the batches, the device and the precision."""
    device = torch.device(device)
    return {"format": CACHE_FORMAT, "teacher": teacher.name, "train": corpus_digest(train), "heldout": corpus_digest(heldout),
            "steps": config.steps, "batch_size": config.batch_size, "seed": config.seed,
            "eval_batch_size": config.eval_batch_size, "precision": config.precision,
            "device": device.type, "autocast": str(autocast_dtype(config.precision, device))}


def _file(folder: Path, split: str, index: int) -> Path:
    return folder / f"{split}-{index:05d}.safetensors"


def _batches(train: TokenizedCorpus, heldout: TokenizedCorpus, config: DistillConfig):
    if config.steps:  # 0 steps: no training text, the held-out batches only
        stream = iter(BatchStream(train, config.batch_size, config.seed))
        for index in range(config.steps):
            yield "train", index, next(stream)
    for index, batch in enumerate(heldout.batches(config.eval_batch_size)):
        yield "heldout", index, batch


def write_teacher_cache(teacher: Teacher, train: TokenizedCorpus, heldout: TokenizedCorpus, config: DistillConfig,
                        folder: Path, say=None, device: str | torch.device = "cpu") -> "TeacherCache":
    """Run the teacher once over the distiller's batches and store its outputs in ``folder`` (nothing to do when a
    finished cache of the same identity is there; an unfinished or different one is replaced)."""
    folder = Path(folder)
    device = torch.device(device)
    identity = cache_identity(teacher, train, heldout, config, device)
    existing = open_teacher_cache(folder)
    if existing is not None and existing.identity == identity:
        return existing
    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    if objective_for(config, teacher) != "hidden":
        raise UserError("the teacher cache holds hidden states and attentions: it serves the hidden objective only")
    encoder = teacher.encoder.eval().to(device)
    encoder.set_attn_implementation("eager")
    dtype = autocast_dtype(config.precision, device)
    context = (lambda: torch.autocast(device.type, dtype=dtype)) if dtype else contextlib.nullcontext
    count = {"train": 0, "heldout": 0}
    try:
        with torch.no_grad():
            for split, index, batch in _batches(train, heldout, config):
                with context():
                    out = encoder(**{k: v.to(device) for k, v in batch.items()}, output_hidden_states=True,
                                  output_attentions=True)
                lengths = batch["attention_mask"].sum(1).tolist()
                if any(not batch["attention_mask"][b, :n].all() for b, n in enumerate(lengths)):
                    raise ValueError("the teacher cache packs right-padded batches only")  # TokenizedCorpus pads right
                tensors = {"input_ids": batch["input_ids"], "lengths": torch.tensor(lengths),
                           **{f"hidden.{i}": pack_hidden(h.cpu(), lengths) for i, h in enumerate(out.hidden_states)},
                           **{f"attention.{i}": pack_attention(a.cpu(), lengths) for i, a in enumerate(out.attentions)}}
                write_safetensors(tensors, _file(folder, split, index),
                                  {"format": CACHE_FORMAT, "heads": str(out.attentions[0].shape[1])})
                count[split] += 1
                if say and split == "train" and (index + 1) % 50 == 0:
                    say(f"teacher cache: {index + 1}/{config.steps} training batches")
    finally:
        encoder.set_attn_implementation("sdpa")
    atomic_write_json(folder / "cache.json", {**identity, "batches": count})
    return TeacherCache(folder, identity)


def open_teacher_cache(folder: Path) -> "TeacherCache | None":
    """The finished cache in ``folder``, or None when there is none (or it is unfinished)."""
    path = Path(folder) / "cache.json"
    if not path.is_file():
        return None
    made = json.loads(path.read_text(encoding="utf-8"))
    return TeacherCache(Path(folder), {k: v for k, v in made.items() if k != "batches"})


def pack_hidden(hidden: torch.Tensor, lengths: list[int]) -> torch.Tensor:
    """``(B, T, H)`` -> ``(sum of lengths, H)``: each text's real (unpadded) positions."""
    return torch.cat([hidden[b, :n] for b, n in enumerate(lengths)])


def unpack_hidden(packed: torch.Tensor, lengths: list[int], width: int) -> torch.Tensor:
    out = packed.new_zeros(len(lengths), width, packed.shape[-1])
    start = 0
    for b, n in enumerate(lengths):
        out[b, :n] = packed[start:start + n]
        start += n
    return out


def pack_attention(attention: torch.Tensor, lengths: list[int]) -> torch.Tensor:
    """``(B, A, T, T)`` -> one flat tensor of each text's ``(A, n, n)`` block of real queries and keys."""
    return torch.cat([attention[b, :, :n, :n].reshape(-1) for b, n in enumerate(lengths)])


def unpack_attention(packed: torch.Tensor, lengths: list[int], heads: int, width: int) -> torch.Tensor:
    out = packed.new_zeros(len(lengths), heads, width, width)
    start = 0
    for b, n in enumerate(lengths):
        out[b, :, :n, :n] = packed[start:start + heads * n * n].view(heads, n, n)
        start += heads * n * n
    return out


class _Layers:
    """Lazily read and unpack ``{prefix}.{i}`` of one cached batch (a student reads only the layers it maps to)."""

    def __init__(self, cached: "CachedOutputs", prefix: str) -> None:
        self.cached, self.prefix = cached, prefix

    def __getitem__(self, index: int) -> torch.Tensor:
        c = self.cached
        packed = c.handle.get_tensor(f"{self.prefix}.{index}")
        if self.prefix == "hidden":
            return unpack_hidden(packed, c.lengths, c.width).to(c.device)
        return unpack_attention(packed, c.lengths, c.heads, c.width).to(c.device)


class CachedOutputs:
    """``hidden_states`` and ``attentions`` of one batch, as a model output offers them. Stored packed (the real
    positions of each text only): padded positions come back as zeros, which the losses never read (padded
    queries are masked out, and the teacher's attention on padded keys is zero)."""

    def __init__(self, path: Path, device: torch.device) -> None:
        self.handle = safe_open(str(path), framework="pt")
        self.device = device
        self.input_ids = self.handle.get_tensor("input_ids")
        self.lengths = self.handle.get_tensor("lengths").tolist()
        self.width = self.input_ids.shape[1]
        self.heads = int(self.handle.metadata()["heads"])
        self.hidden_states = _Layers(self, "hidden")
        self.attentions = _Layers(self, "attention")


class TeacherCache:
    """A finished cache (:func:`write_teacher_cache`): :meth:`outputs` of each batch, checked against its ids."""

    def __init__(self, folder: Path, identity: dict[str, Any]) -> None:
        self.folder, self.identity = Path(folder), identity

    def check(self, teacher: Teacher, train: TokenizedCorpus, heldout: TokenizedCorpus, config: DistillConfig,
              device: str | torch.device = "cpu") -> None:
        """UserError unless this cache was made for these corpora, batches, device and precision."""
        want = cache_identity(teacher, train, heldout, config, device)
        if want != self.identity:
            changed = sorted(k for k in want if want[k] != self.identity.get(k))
            raise UserError(f"the teacher cache {self.folder} was made for other {', '.join(changed)}; delete it to rebuild")

    def outputs(self, split: str, index: int, input_ids: torch.Tensor, device: str | torch.device = "cpu") -> CachedOutputs:
        """The teacher's outputs on batch ``index`` of ``split`` (on ``device``), after checking its ``input_ids``."""
        path = _file(self.folder, split, index)
        if not path.is_file():
            raise UserError(f"the teacher cache {self.folder} has no {split} batch {index}; delete it to rebuild")
        cached = CachedOutputs(path, torch.device(device))
        if not torch.equal(cached.input_ids, input_ids.cpu()):
            raise UserError(f"the teacher cache {self.folder}: {split} batch {index} holds other texts; delete it to rebuild")
        return cached

