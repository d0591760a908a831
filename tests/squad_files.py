"""A small SQuAD-format data folder the tests build (no SQuAD data is on this machine): ``ROOT/SQuAD/``
``{train,dev}-v1.1.json`` and ``{train,dev}-v2.0.json`` over the tiny vocabulary of :mod:`tests.tiny_run`, with
one long context that needs several windows at ``--max-seq-length 32``."""

from __future__ import annotations

import json
import random
from pathlib import Path

from tests.tiny_run import WORDS

LONG_WORDS = 60  # words of the long context: several windows of 32 tokens


def _paragraph(rng: random.Random, n_words: int, n_questions: int, prefix: str, impossible: int = 0) -> dict:
    words = [rng.choice(WORDS) for _ in range(n_words)]
    context = " ".join(words)
    starts = [0]
    for w in words[:-1]:
        starts.append(starts[-1] + len(w) + 1)
    qas = []
    for q in range(n_questions):
        first = rng.randrange(n_words)
        last = min(n_words - 1, first + rng.randrange(3))
        text = " ".join(words[first:last + 1])
        qas.append({"id": f"{prefix}-{q}", "question": " ".join(rng.choice(WORDS) for _ in range(3)) + " ?",
                    "answers": [{"text": text, "answer_start": starts[first]}]})
    for q in range(impossible):
        qas.append({"id": f"{prefix}-none-{q}", "question": "what is not here ?", "answers": [],
                    "is_impossible": True})
    return {"context": context, "qas": qas}


def squad_document(seed: int, version: int, n_paragraphs: int = 6) -> dict:
    """A SQuAD JSON document: ``n_paragraphs`` short paragraphs (8-14 words, 2 questions each) and one long one;
    v2.0 adds a question without an answer to every other paragraph."""
    rng = random.Random(seed)
    paragraphs = [_paragraph(rng, rng.randint(8, 14), 2, f"s{seed}p{i}", impossible=int(version == 2 and i % 2 == 0))
                  for i in range(n_paragraphs)]
    paragraphs.append(_paragraph(rng, LONG_WORDS, 3, f"s{seed}long", impossible=int(version == 2)))
    return {"version": "1.1" if version == 1 else "v2.0", "data": [{"title": "tiny", "paragraphs": paragraphs}]}


def write_squad_dir(root: Path) -> Path:
    """``root/SQuAD/{train,dev}-v{1.1,2.0}.json``; returns ``root`` (the data directory, ``--glue-dir``)."""
    folder = Path(root) / "SQuAD"
    folder.mkdir(parents=True, exist_ok=True)
    for version, suffix in ((1, "v1.1"), (2, "v2.0")):
        for split, seed in (("train", 1), ("dev", 2)):
            document = squad_document(seed, version, n_paragraphs=12 if split == "train" else 6)
            (folder / f"{split}-{suffix}.json").write_text(json.dumps(document), encoding="utf-8")
    return Path(root)
