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

Beyond the answer, :func:`extract_predictions` gives what ``run_qa.py`` writes next to its predictions: the
``n_best`` best candidates of each question with the softmax of their scores (``nbest_predictions.json``; for
no-answer tasks the empty answer with the null score is one of them) and, for no-answer tasks, the null odds
(``null_odds.json``: the null score minus the best non-empty candidate's score; the answer is ``""`` exactly
when the odds exceed ``null_threshold``). The null odds are the ``--na-prob-file`` of the official SQuAD v2.0
evaluation, which finds the best threshold from them (:func:`tasks.squad_metrics.best_thresholds`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from basics.errors import UserError
from mtl.span_features import NO_CONTEXT, SpanFeatures

N_BEST = 20
NO_SPAN_ODDS = 1e9  # null odds of a question without any admissible span: its answer is "" at every threshold


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


@dataclass(frozen=True)
class NBestEntry:
    """One of a question's best candidates: its text, score (start + end logit; the null score for ``""``),
    softmax probability among the question's n-best, and characters ``[start, end)`` (-1, -1 for ``""``)."""

    text: str
    score: float
    probability: float
    start: int
    end: int

    def to_json(self) -> dict[str, object]:
        return {"text": self.text, "probability": self.probability, "score": self.score,
                "start": self.start, "end": self.end}


@dataclass(frozen=True)
class QuestionPrediction:
    """A question's answer (``""``: none), its n-best candidates (best first) and, for no-answer tasks, the null
    odds (null score - best non-empty candidate's score; :data:`NO_SPAN_ODDS` when it has none); None otherwise."""

    answer: str
    nbest: tuple[NBestEntry, ...]
    null_odds: float | None


def _softmax(scores: Sequence[float]) -> list[float]:
    if not scores:
        return []
    values = np.exp(np.asarray(scores, dtype=np.float64) - max(scores))
    return (values / values.sum()).tolist()


def question_prediction(windows: Sequence[tuple[np.ndarray, np.ndarray]], context: str,
                        decoding: SpanDecoding) -> QuestionPrediction:
    """The prediction of one question from its windows' (logits (T, 2), offsets (T, 2))."""
    candidates = [c for logits, offsets in windows for c in window_candidates(logits, offsets, decoding)]
    candidates.sort(key=lambda c: c.score, reverse=True)
    top = [(context[c.start:c.end], c.score, c.start, c.end) for c in candidates[:decoding.n_best]]
    best = next((entry for entry in top if entry[0]), None)
    if not decoding.no_answer:
        answer, odds = (top[0][0] if top else ""), None
    else:
        null = min(float(logits[0, 0] + logits[0, 1]) for logits, _ in windows)
        odds = NO_SPAN_ODDS if best is None else null - best[1]
        answer = "" if odds > decoding.null_threshold else best[0]
        top = sorted([*top, ("", null, -1, -1)], key=lambda entry: entry[1], reverse=True)
    nbest = tuple(NBestEntry(text, score, prob, start, end)
                  for (text, score, start, end), prob in zip(top, _softmax([e[1] for e in top]), strict=True))
    return QuestionPrediction(answer, nbest, odds)


def question_answer(windows: Sequence[tuple[np.ndarray, np.ndarray]], context: str, decoding: SpanDecoding) -> str:
    """The answer text of one question from its windows' (logits (T, 2), offsets (T, 2))."""
    return question_prediction(windows, context, decoding).answer


def extract_predictions(features: SpanFeatures, logits: Sequence[torch.Tensor],
                        decoding: SpanDecoding) -> dict[str, QuestionPrediction]:
    """Question id -> :class:`QuestionPrediction`, for every question with at least one window.
    ``logits[i]``: (T_i, 2) of window i."""
    if len(logits) != len(features.offsets):
        raise ValueError(f"{len(logits)} logit rows for {len(features.offsets)} windows")
    by_question: dict[int, list[tuple[np.ndarray, np.ndarray]]] = {}
    for i, example in enumerate(features.example_index.tolist()):
        window = logits[i].float().numpy()[: len(features.offsets[i])]
        by_question.setdefault(example, []).append((window, features.offsets[i].numpy()))
    return {features.ids[e]: question_prediction(windows, features.contexts[e], decoding)
            for e, windows in sorted(by_question.items())}


def extract_answers(features: SpanFeatures, logits: Sequence[torch.Tensor], decoding: SpanDecoding) -> dict[str, str]:
    """Question id -> answer text, for every question with at least one window. ``logits[i]``: (T_i, 2) of window i."""
    return {qid: p.answer for qid, p in extract_predictions(features, logits, decoding).items()}
