"""Unlabelled text for distillation: text files, or the sentences of the GLUE training sets on disk.

- :func:`read_text_files`: one text per non-empty line of each file (UTF-8), in order;
- :func:`glue_sentences`: ``text_a`` and ``text_b`` of every training example of every registered task whose
  training file is in the GLUE folder (dev and test sets are never read), duplicates dropped, in order;
- :func:`split_heldout`: a fixed random slice held out (for the distillation loss on unseen text);
- :class:`TokenizedCorpus`: token ids per text, batched with dynamic padding.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from basics.errors import UserError
from tasks.readers import read_split, split_path
from tasks.registry import default_registry

HELDOUT_SEED = 20_211_233  # fixed: every candidate of a search is measured on the same held-out text


def read_text_files(paths: Sequence[Path]) -> list[str]:
    """The non-empty lines of ``paths`` (stripped), in order; UserError for a missing or empty file."""
    texts: list[str] = []
    for path in map(Path, paths):
        if not path.is_file():
            raise UserError(f"corpus file not found: {path}")
        try:
            lines = [line.strip() for line in path.read_text(encoding="utf-8").splitlines()]
        except UnicodeDecodeError as exc:
            raise UserError(f"corpus file {path} is not UTF-8 text ({exc.reason} at byte {exc.start})") from None
        found = [line for line in lines if line]
        if not found:
            raise UserError(f"corpus file {path} holds no text")
        texts += found
    return texts


def glue_sentences(glue_dir: Path | None, tasks: Sequence[str] | None = None) -> list[str]:
    """The training sentences of the GLUE tasks found in ``glue_dir`` (``tasks``: only these), deduplicated."""
    if glue_dir is None or not Path(glue_dir).is_dir():
        raise UserError(f"no corpus: give --corpus FILES, or a GLUE folder (GLUE_DIR); {glue_dir} is not a directory")
    registry = default_registry()
    names = list(tasks) if tasks else registry.names()
    seen: dict[str, None] = {}
    for name in names:
        task = registry.get(name)
        try:
            split_path(task, Path(glue_dir), "train")
        except UserError:
            if tasks:
                raise
            continue  # a task whose training file is not on disk
        for example in read_split(task, Path(glue_dir), "train"):
            for text in (example.text_a, example.text_b):
                if text and text.strip():
                    seen.setdefault(text.strip(), None)
    if not seen:
        raise UserError(f"no GLUE training file found under {glue_dir}")
    return list(seen)


def subsample(texts: list[str], n: int | None, seed: int) -> list[str]:
    """At most ``n`` of ``texts`` (a fixed random subset, kept in order)."""
    if n is None or n >= len(texts):
        return texts
    keep = torch.randperm(len(texts), generator=torch.Generator().manual_seed(seed))[:n].sort().values
    return [texts[i] for i in keep.tolist()]


def split_heldout(texts: list[str], n_heldout: int) -> tuple[list[str], list[str]]:
    """``(train, heldout)``: ``n_heldout`` texts held out by a fixed permutation (:data:`HELDOUT_SEED`)."""
    if not 0 < n_heldout < len(texts):
        raise UserError(f"cannot hold out {n_heldout} of {len(texts)} texts; use fewer held-out texts or more text")
    perm = torch.randperm(len(texts), generator=torch.Generator().manual_seed(HELDOUT_SEED)).tolist()
    held = set(perm[:n_heldout])
    return [t for i, t in enumerate(texts) if i not in held], [t for i, t in enumerate(texts) if i in held]


@dataclass
class TokenizedCorpus:
    """Token ids (with the tokenizer's special tokens) of each text, truncated to ``max_length``."""

    ids: list[torch.Tensor]
    pad_id: int

    @classmethod
    def of(cls, tokenizer, texts: Sequence[str], max_length: int) -> "TokenizedCorpus":
        if not texts:  # e.g. the training batches of a search that distils 0 steps (fast tokenizers fail on [])
            return cls([], int(tokenizer.pad_token_id or 0))
        enc = tokenizer(list(texts), truncation=True, max_length=max_length, padding=False)
        return cls([torch.tensor(x, dtype=torch.long) for x in enc["input_ids"]], int(tokenizer.pad_token_id or 0))

    def __len__(self) -> int:
        return len(self.ids)

    def collate(self, indices: Sequence[int]) -> dict[str, torch.Tensor]:
        """``input_ids`` and ``attention_mask`` ``(B, T)``, padded to the longest of ``indices``."""
        items = [self.ids[i] for i in indices]
        width = max(len(x) for x in items)
        ids = torch.full((len(items), width), self.pad_id, dtype=torch.long)
        mask = torch.zeros((len(items), width), dtype=torch.long)
        for row, x in enumerate(items):
            ids[row, :len(x)] = x
            mask[row, :len(x)] = 1
        return {"input_ids": ids, "attention_mask": mask}

    def batches(self, batch_size: int) -> list[dict[str, torch.Tensor]]:
        """Every text once, in order, ``batch_size`` at a time (evaluation)."""
        return [self.collate(range(i, min(i + batch_size, len(self)))) for i in range(0, len(self), batch_size)]


class BatchStream:
    """Training batches for ``steps`` steps: a fresh seeded permutation of the corpus every pass.

    ``position`` (the number of batches drawn) is all a resume needs: the stream is a function of it.
    """

    def __init__(self, corpus: TokenizedCorpus, batch_size: int, seed: int, position: int = 0) -> None:
        if len(corpus) < batch_size:
            raise UserError(f"the corpus holds {len(corpus)} texts, fewer than one batch of {batch_size}")
        self.corpus, self.batch_size, self.seed, self.position = corpus, batch_size, seed, position
        self.per_pass = len(corpus) // batch_size

    def _order(self, pass_index: int) -> list[int]:
        if getattr(self, "_pass", None) != pass_index:
            g = torch.Generator().manual_seed(self.seed * 100_003 + pass_index)
            self._pass, self._perm = pass_index, torch.randperm(len(self.corpus), generator=g).tolist()
        return self._perm

    def __iter__(self) -> Iterator[dict[str, torch.Tensor]]:
        while True:
            pass_index, offset = divmod(self.position, self.per_pass)
            order = self._order(pass_index)
            self.position += 1
            yield self.corpus.collate(order[offset * self.batch_size:(offset + 1) * self.batch_size])
