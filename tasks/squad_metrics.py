"""The official SQuAD metrics: exact match and token F1 of answer texts, in percent.

The same rules as the official ``evaluate-v1.1.py`` and ``evaluate-v2.0.py`` scripts:

- answers are normalised (lower case, punctuation removed, the articles a/an/the removed, whitespace
  collapsed) before they are compared;
- a question's score is the best over its gold answers;
- SQuAD v2.0 (``version=2``): a question without an answer has the gold answer ``""`` (so predicting
  ``""`` scores 1, anything else 0), gold answers that normalise to nothing are dropped, and the scores
  are also reported on the answerable (``HasAns_*``) and unanswerable (``NoAns_*``) questions apart;
- SQuAD v1.1 (``version=1``): F1 of two token lists without a common token is 0 (even two empty ones);
- v2.0 with no-answer probabilities (the script's ``--na-prob-file``; :mod:`mtl.span_answers` gives the null
  odds): a question whose probability exceeds ``na_prob_thresh`` counts as answered ``""``, and the best
  threshold over the probabilities with its scores is reported (``best_exact``, ``best_exact_thresh``,
  ``best_f1``, ``best_f1_thresh``; :func:`best_thresholds`).

Pure Python: no torch, no numpy.
"""

from __future__ import annotations

import re
import string
from collections import Counter
from collections.abc import Mapping, Sequence

SPAN_METRICS: tuple[str, ...] = ("exact", "f1")
"""Metric names of a span task (``metrics`` in a task YAML): exact match and token F1, in percent."""

SQUAD_VERSIONS: tuple[int, ...] = (1, 2)
_PUNCTUATION = frozenset(string.punctuation)
_ARTICLES = re.compile(r"\b(a|an|the)\b", re.UNICODE)


def normalize_answer(text: str) -> str:
    """Lower case, punctuation removed, articles removed, whitespace collapsed (the official rule, in its order)."""
    text = text.lower()
    text = "".join(ch for ch in text if ch not in _PUNCTUATION)
    text = _ARTICLES.sub(" ", text)
    return " ".join(text.split())


def answer_tokens(text: str) -> list[str]:
    """The normalised answer's tokens (``[]`` for an empty answer)."""
    return normalize_answer(text).split() if text else []


def exact_match(prediction: str, gold: str) -> int:
    """1 when the normalised texts are equal, else 0."""
    return int(normalize_answer(prediction) == normalize_answer(gold))


def token_f1(prediction: str, gold: str, version: int = 2) -> float:
    """Token F1 (0..1) of the normalised texts. With no common token: 0, except that v2 scores two empty
    answers 1 (a correct no-answer)."""
    pred, ref = answer_tokens(prediction), answer_tokens(gold)
    if version == 2 and (not pred or not ref):
        return float(pred == ref)
    common = Counter(pred) & Counter(ref)
    same = sum(common.values())
    if same == 0:
        return 0.0
    precision, recall = same / len(pred), same / len(ref)
    return 2 * precision * recall / (precision + recall)


def gold_answers(answers: Sequence[str], version: int) -> list[str]:
    """The gold texts a prediction is scored against: v2 drops answers that normalise to nothing and uses
    ``[""]`` for a question without an answer; v1 uses them as they are."""
    if version == 1:
        return list(answers)
    kept = [a for a in answers if normalize_answer(a)]
    return kept or [""]


def question_scores(prediction: str, answers: Sequence[str], version: int = 2) -> tuple[int, float]:
    """(exact 0/1, F1 0..1) of one prediction: the best over the gold answers."""
    golds = gold_answers(answers, version)
    if not golds:
        raise ValueError("a v1 question needs at least one gold answer")
    return (max(exact_match(prediction, g) for g in golds),
            max(token_f1(prediction, g, version) for g in golds))


def squad_evaluate(predictions: Mapping[str, str], answers: Mapping[str, Sequence[str]], version: int = 2,
                   na_probs: Mapping[str, float] | None = None, na_prob_thresh: float = 1.0) -> dict[str, float]:
    """The official evaluation of ``predictions`` (question id -> answer text, ``""`` = no answer) against
    ``answers`` (question id -> gold texts; ``[]`` = no answer, v2 only): ``exact``, ``f1`` (percent) and
    ``total``; for v2 also ``HasAns_exact/f1/total`` and ``NoAns_exact/f1/total`` where there are such questions.
    With ``na_probs`` (v2; question id -> no-answer probability or odds, higher = more likely none): the scores
    count a question above ``na_prob_thresh`` as answered ``""``, and :func:`best_thresholds` is added.

    Every question of ``answers`` must have a prediction (ValueError naming a missing id), and a no-answer
    probability when ``na_probs`` is given."""
    if version not in SQUAD_VERSIONS:
        raise ValueError(f"SQuAD version must be one of {SQUAD_VERSIONS}, got {version!r}")
    if not answers:
        raise ValueError("cannot evaluate zero questions")
    _check_ids(predictions, answers, "prediction")
    raw = {qid: question_scores(predictions[qid], golds, version) for qid, golds in answers.items()}
    scores = raw
    if na_probs is not None:
        if version != 2:
            raise ValueError("no-answer probabilities are for SQuAD v2.0")
        _check_ids(na_probs, answers, "no-answer probability")
        scores = {qid: ((float(not answers[qid]),) * 2 if na_probs[qid] > na_prob_thresh else s)
                  for qid, s in raw.items()}
    result = _summary(scores, list(answers), "")
    if version == 2:
        has = [qid for qid, golds in answers.items() if golds]  # as the v2 script: a non-empty answer list
        no = [qid for qid, golds in answers.items() if not golds]
        for prefix, ids in (("HasAns_", has), ("NoAns_", no)):
            if ids:
                result.update(_summary(scores, ids, prefix))
    if na_probs is not None:
        result.update(best_thresholds(predictions, answers, na_probs, raw))
    return result


def best_thresholds(predictions: Mapping[str, str], answers: Mapping[str, Sequence[str]], na_probs: Mapping[str, float],
                    raw: Mapping[str, tuple[int, float]] | None = None) -> dict[str, float]:
    """The official v2.0 search (``find_all_best_thresh``): answering ``""`` for every question whose no-answer
    probability exceeds a threshold, the threshold among the probabilities (or 0: ``""`` only where predicted)
    with the best exact match and the one with the best F1: ``best_exact``, ``best_exact_thresh``, ``best_f1``,
    ``best_f1_thresh`` (percent). ``raw``: the questions' (exact, F1) of ``predictions``, computed when None."""
    if raw is None:
        raw = {qid: question_scores(predictions[qid], golds, 2) for qid, golds in answers.items()}
    result: dict[str, float] = {}
    for index, name in ((0, "exact"), (1, "f1")):
        best, thresh = _best_thresh(predictions, {q: s[index] for q, s in raw.items()}, na_probs, answers)
        result.update({f"best_{name}": best, f"best_{name}_thresh": thresh})
    return result


def _best_thresh(predictions: Mapping[str, str], scores: Mapping[str, float], na_probs: Mapping[str, float],
                 answers: Mapping[str, Sequence[str]]) -> tuple[float, float]:
    # the official script's loop: start with every question answered "" (the no-answer ones score), then let
    # the questions answer in order of rising no-answer probability
    current = best = float(sum(1 for golds in answers.values() if not golds))
    best_thresh = 0.0
    for qid in sorted(na_probs, key=lambda q: na_probs[q]):
        if qid not in scores:
            continue
        if answers[qid]:
            current += scores[qid]
        elif predictions[qid]:
            current -= 1
        if current > best:
            best, best_thresh = current, float(na_probs[qid])
    return 100.0 * best / len(scores), best_thresh


def _check_ids(given: Mapping[str, object], answers: Mapping[str, Sequence[str]], what: str) -> None:
    missing = [qid for qid in answers if qid not in given]
    if missing:
        raise ValueError(f"no {what} for {len(missing)} question(s), e.g. {missing[0]!r}")


def _summary(scores: Mapping[str, tuple[int, float]], ids: Sequence[str], prefix: str) -> dict[str, float]:
    n = len(ids)
    return {f"{prefix}exact": 100.0 * sum(scores[q][0] for q in ids) / n,
            f"{prefix}f1": 100.0 * sum(scores[q][1] for q in ids) / n,
            f"{prefix}total": float(n)}
