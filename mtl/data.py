"""Tokenized task data: tokenize once (disk cache), length-grouped batches, dynamic padding."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from basics.errors import UserError
from basics.io import atomic_write
from mtl.span_features import SpanFeatures, tokenize_spans
from tasks.squad import QAExample
from tasks.task_def import Example, TaskDef

CACHE_VERSION = 2  # 2: keyed on the task definition, the file content and the whole tokenizer


@dataclass
class TokenizedSplit:
    """One split of one task, tokenized without padding.

    ``input_ids[i]`` / ``token_type_ids[i]``: 1-D int tensors of example i (length ``lengths[i]``);
    ``labels``: (N,) long (class index) or float (regression score).

    Span tasks: every item is a window of a (question, context) example (:mod:`mtl.span_features`),
    ``labels`` (N, 2) long (answer start and end token), and ``spans`` says which example each window
    belongs to and where its tokens are in the context.
    """

    task: str
    split: str
    input_ids: list[torch.Tensor]
    token_type_ids: list[torch.Tensor] | None
    labels: torch.Tensor
    lengths: torch.Tensor  # (N,) long
    spans: SpanFeatures | None = None

    def __len__(self) -> int:
        return len(self.input_ids)

    @property
    def num_examples(self) -> int:
        """Examples (questions of a span task, whose windows are the items; else the items themselves)."""
        return len(self) if self.spans is None else len(self.spans.ids)

    def subset(self, indices: Sequence[int], split: str | None = None) -> "TokenizedSplit":
        """The items (windows of a span task) at ``indices``."""
        idx = list(indices)
        return TokenizedSplit(
            task=self.task, split=split or self.split,
            input_ids=[self.input_ids[i] for i in idx],
            token_type_ids=None if self.token_type_ids is None else [self.token_type_ids[i] for i in idx],
            labels=self.labels[idx], lengths=self.lengths[idx],
            spans=None if self.spans is None else self.spans.subset(idx))

    def subset_examples(self, rows: Sequence[int], split: str | None = None) -> "TokenizedSplit":
        """The examples at ``rows`` (e.g. a held-out slice of train): every window of a span task's questions, so a
        question is never split between two subsets."""
        return self.subset(rows if self.spans is None else self.spans.windows_of(rows), split)


def tokenize(tokenizer, examples: Sequence[Example] | Sequence[QAExample], task: TaskDef, split: str, max_length: int,
             doc_stride: int | None = None) -> TokenizedSplit:
    """Tokenize sentence(-pair) examples with truncation and no padding; span tasks: cut every question and
    context into windows overlapping by ``doc_stride`` tokens (:func:`mtl.span_features.tokenize_spans`)."""
    if task.head == "span":
        if doc_stride is None:
            raise UserError(f"task {task.name}: a span task needs --doc-stride")
        w = tokenize_spans(tokenizer, examples, max_length, doc_stride)
        lengths = torch.tensor([len(x) for x in w.input_ids], dtype=torch.long)
        return TokenizedSplit(task.name, split, w.input_ids, w.token_type_ids, w.labels, lengths, spans=w.features)
    text_a = [e.text_a for e in examples]
    pair = any(e.text_b is not None for e in examples)
    text_b = [e.text_b or "" for e in examples] if pair else None
    enc = tokenizer(text_a, text_b, truncation=True, max_length=max_length, padding=False)
    ids = [torch.tensor(x, dtype=torch.int32) for x in enc["input_ids"]]
    tt = enc.get("token_type_ids")
    types = [torch.tensor(x, dtype=torch.int8) for x in tt] if tt is not None else None
    dtype = torch.float32 if task.head == "regression" else torch.long
    labels = torch.tensor([0 if e.label is None else e.label for e in examples], dtype=dtype)  # None: unlabelled
    lengths = torch.tensor([len(x) for x in ids], dtype=torch.long)
    return TokenizedSplit(task.name, split, ids, types, labels, lengths)


def default_cache_dir() -> Path:
    return Path(os.environ.get("MTL_CACHE_DIR") or Path.home() / ".cache" / "mtl_tickets")


def task_fingerprint(task: TaskDef, split: str) -> dict[str, Any]:
    """Everything of a task definition that changes what ``split`` tokenizes to: its name (stored in the
    result), head type (label dtype), labels in order (class indices), file format, header, the split's
    columns (overrides applied), its file entry and its hub source."""
    fingerprint = {"name": task.name, "head": task.head, "labels": list(task.labels), "format": task.format,
                   "header": task.header, "columns": dataclasses.asdict(task.columns(split)),
                   "file": task.files.get(split), "hub": task.hub}
    if task.head == "span":  # (only here, so the keys of the other tasks' entries stay as they were)
        fingerprint["no_answer"] = task.no_answer
    return fingerprint


def tokenizer_fingerprint(tokenizer) -> dict[str, Any]:
    """The tokenizer's identity: its class, name, and a digest of everything that decides its output (the
    serialised fast tokenizer: vocabulary, normaliser, pre-tokeniser, special-token template, added tokens;
    else the vocabulary and settings), plus the side it truncates."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is not None:
        content = backend.to_str()
    else:
        content = json.dumps({"vocab": sorted(tokenizer.get_vocab().items()),
                              "init": {k: str(v) for k, v in sorted(getattr(tokenizer, "init_kwargs", {}).items())}})
    return {"cls": type(tokenizer).__name__, "name": str(getattr(tokenizer, "name_or_path", "")),
            "len": len(tokenizer), "lower": getattr(tokenizer, "do_lower_case", None),
            "truncation_side": getattr(tokenizer, "truncation_side", None),
            "content": hashlib.sha256(content.encode()).hexdigest()}


def cache_key(tokenizer, task: TaskDef, split: str, source: dict, max_length: int,
              doc_stride: int | None = None) -> tuple[str, str]:
    """``(key, description)`` of everything the tokenized result depends on: the resolved task definition
    (:func:`task_fingerprint`), the data source (a file's content digest, or a hub split) and how many
    examples were read, the tokenizer (:func:`tokenizer_fingerprint`) and the max length. The key names the
    cache file; the description is stored in it and compared on reading. Span tasks add the window stride."""
    values = {"v": CACHE_VERSION, "task": task_fingerprint(task, split), "split": split, "src": source,
              "tok": tokenizer_fingerprint(tokenizer), "max_length": max_length}
    if task.head == "span":
        values["doc_stride"] = doc_stride
    blob = json.dumps(values, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:32], blob


def file_fingerprint(path: Path) -> dict:
    """A data file by its content (SHA-256 of its bytes): an edited file is new data, whatever its mtime."""
    with Path(path).open("rb") as handle:
        digest = hashlib.file_digest(handle, "sha256").hexdigest()
    return {"sha256": digest, "size": Path(path).stat().st_size}


def _read_cache(path: Path, description: str) -> TokenizedSplit | None:
    """The entry in ``path`` if it is whole and was made for ``description``; None (a miss) otherwise, and an
    unreadable entry is removed (when the cache folder allows it)."""
    try:
        data = torch.load(path, weights_only=True)
        if not isinstance(data, dict) or data.pop("key", None) != description:
            raise ValueError("made for other inputs")
        spans = data.pop("spans", None)
        result = TokenizedSplit(**data, spans=None if spans is None else SpanFeatures.from_state(spans))
        n = len(result.input_ids)
        if (len(result.labels) != n or len(result.lengths) != n or any(len(x) != int(k) for x, k in
                                                                        zip(result.input_ids, result.lengths))
                or (result.token_type_ids is not None and len(result.token_type_ids) != n)
                or (result.spans is not None and (len(result.spans.offsets) != n or len(result.spans.example_index) != n))):
            raise ValueError("inconsistent sizes")
        return result
    except Exception:  # truncated, corrupt, another format or other inputs: rebuild it
        try:
            path.unlink(missing_ok=True)
        except OSError:
            pass  # a read-only cache: the entry is rebuilt in memory every time
        return None


def load_or_tokenize(tokenizer, task: TaskDef, split: str, max_length: int, read_examples,
                     source: dict, cache_dir: Path | None, doc_stride: int | None = None) -> TokenizedSplit:
    """Return the cached tokenization for ``source`` or call ``read_examples()`` and tokenize (then cache).

    The cache never serves stale data: the key covers every input of the result (:func:`cache_key`), and a
    corrupt, truncated or foreign entry is a miss, not an error."""
    path = None
    if cache_dir is not None:
        key, description = cache_key(tokenizer, task, split, source, max_length, doc_stride)
        path = Path(cache_dir) / f"{task.name}-{split}-{key}.pt"
        if path.is_file():
            cached = _read_cache(path, description)
            if cached is not None:
                return cached
    result = tokenize(tokenizer, read_examples(), task, split, max_length, doc_stride)
    if path is not None:
        state = {**vars(result), "spans": None if result.spans is None else result.spans.to_state(), "key": description}
        try:
            atomic_write(path, lambda p: torch.save(state, p))
        except OSError:
            pass  # a read-only cache directory only costs speed
    return result


# ---------------------------------------------------------------- batching

def length_grouped_batches(lengths: torch.Tensor, batch_size: int, generator: torch.Generator,
                           group_by_length: bool = True, mega_factor: int = 50) -> list[list[int]]:
    """Shuffle, then sort inside mega-batches of ``batch_size * mega_factor`` by length, then shuffle batch order.

    Every index appears exactly once. Batches of similar lengths need little padding while the
    order stays random from epoch to epoch (the generator decides everything).
    """
    n = len(lengths)
    perm = torch.randperm(n, generator=generator)
    if not group_by_length:
        return [perm[i:i + batch_size].tolist() for i in range(0, n, batch_size)]
    mega = batch_size * mega_factor
    batches: list[list[int]] = []
    for start in range(0, n, mega):
        chunk = perm[start:start + mega]
        chunk = chunk[torch.argsort(lengths[chunk], descending=True, stable=True)]
        batches.extend(chunk[i:i + batch_size].tolist() for i in range(0, len(chunk), batch_size))
    order = torch.randperm(len(batches), generator=generator).tolist()
    return [batches[i] for i in order]


def eval_batches(lengths: torch.Tensor, batch_size: int) -> list[list[int]]:
    """Deterministic batches sorted by length (longest first) for fast evaluation."""
    order = torch.argsort(lengths, descending=True, stable=True)
    return [order[i:i + batch_size].tolist() for i in range(0, len(order), batch_size)]


def collate(data: TokenizedSplit, indices: Sequence[int], pad_id: int) -> dict[str, torch.Tensor]:
    """Pad the examples at ``indices`` to the longest one: input_ids/attention_mask/token_type_ids (B, T), labels (B,)
    (span tasks: (B, 2))."""
    seqs = [data.input_ids[i] for i in indices]
    width = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(seqs), width), dtype=torch.long)
    for row, s in enumerate(seqs):
        ids[row, : len(s)] = s
        mask[row, : len(s)] = 1
    batch = {"input_ids": ids, "attention_mask": mask, "labels": data.labels[list(indices)]}
    if data.token_type_ids is not None:
        types = torch.zeros((len(seqs), width), dtype=torch.long)
        for row, i in enumerate(indices):
            t = data.token_type_ids[i]
            types[row, : len(t)] = t
        batch["token_type_ids"] = types
    return batch
