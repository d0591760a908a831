"""Answers from span logits: the best span of each question over all its windows (the usual SQuAD rules).

For every window of a question, the ``n_best`` highest start logits and ``n_best`` highest end logits are
paired; a pair is a candidate when both tokens lie in the context, the end is not before the start and the
span is at most ``max_answer_length`` tokens. A candidate's score is start logit + end logit, and its text
is the context between the characters of its first and last token. The question's answer is its best
candidate over all windows (``""`` when there is none).

No-answer tasks (SQuAD v2.0): the null score of a window is the start + end logit of its first token
([CLS]); the question's null score is the lowest over its windows. The answer is ``""`` when the null
score beats the best non-empty candidate's score by more than ``null_threshold``.
These are the rules of Hugging Face's ``run_qa.py`` (``postprocess_qa_predictions``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from basics.errors import UserError
from mtl.span_features import NO_CONTEXT, SpanFeatures

N_BEST = 20


@dataclass(frozen=True)
class SpanDecoding:
    """How answers are read from the logits. ``no_answer``: the task allows ``""`` (SQuAD v2.0)."""

    max_answer_length: int = 30
    null_threshold: float = 0.0
    no_answer: bool = False
    n_best: int = N_BEST

    def __post_init__(self) -> None:
        if self.max_answer_length < 1:
            raise UserError(f"--max-answer-length must be >= 1, got {self.max_answer_length}")
        if self.n_best < 1:
            raise UserError(f"n_best must be >= 1, got {self.n_best}")


@dataclass(frozen=True)
class Candidate:
    """A span of a context: characters ``[start, end)`` and its score (start + end logit)."""

    start: int
    end: int
    score: float


def window_candidates(logits: np.ndarray, offsets: np.ndarray, decoding: SpanDecoding) -> list[Candidate]:
    """Candidates of one window: ``logits`` (T, 2) start/end, ``offsets`` (T, 2) characters (``NO_CONTEXT`` outside)."""
    start_logits, end_logits = logits[:, 0], logits[:, 1]
    starts = np.argsort(start_logits)[-1:-decoding.n_best - 1:-1]
    ends = np.argsort(end_logits)[-1:-decoding.n_best - 1:-1]
    found = []
    for s in starts:
        if offsets[s, 0] == NO_CONTEXT:
            continue
        for e in ends:
            if offsets[e, 0] == NO_CONTEXT or e < s or e - s + 1 > decoding.max_answer_length:
                continue
            found.append(Candidate(int(offsets[s, 0]), int(offsets[e, 1]), float(start_logits[s] + end_logits[e])))
    return found


def question_answer(windows: Sequence[tuple[np.ndarray, np.ndarray]], context: str, decoding: SpanDecoding) -> str:
    """The answer text of one question from its windows' (logits (T, 2), offsets (T, 2))."""
    candidates = [c for logits, offsets in windows for c in window_candidates(logits, offsets, decoding)]
    candidates.sort(key=lambda c: c.score, reverse=True)
    texts = [(context[c.start:c.end], c.score) for c in candidates[:decoding.n_best]]
    best = next(((text, score) for text, score in texts if text), None)
    if not decoding.no_answer:
        return texts[0][0] if texts else ""
    null = min(float(logits[0, 0] + logits[0, 1]) for logits, _ in windows)
    if best is None or null - best[1] > decoding.null_threshold:
        return ""
    return best[0]


def extract_answers(features: SpanFeatures, logits: Sequence[torch.Tensor], decoding: SpanDecoding) -> dict[str, str]:
    """Question id -> answer text, for every question with at least one window. ``logits[i]``: (T_i, 2) of window i."""
    if len(logits) != len(features.offsets):
        raise ValueError(f"{len(logits)} logit rows for {len(features.offsets)} windows")
    by_question: dict[int, list[tuple[np.ndarray, np.ndarray]]] = {}
    for i, example in enumerate(features.example_index.tolist()):
        window = logits[i].float().numpy()[: len(features.offsets[i])]
        by_question.setdefault(example, []).append((window, features.offsets[i].numpy()))
    return {features.ids[e]: question_answer(windows, features.contexts[e], decoding)
            for e, windows in sorted(by_question.items())}
