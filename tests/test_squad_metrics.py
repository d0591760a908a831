"""The SQuAD metrics: hand-computed cases, and equivalence with the official evaluate-v1.1 / v2.0 scripts
(their scoring functions, re-typed below as they are written there)."""

from __future__ import annotations

import collections
import random
import re
import string

import pytest

from tasks.squad_metrics import best_thresholds, exact_match, normalize_answer, squad_evaluate, token_f1

# ---------------------------------------------------------------- the official scripts' functions


def official_normalize(s):
    def remove_articles(text):
        return re.sub(r"\b(a|an|the)\b", " ", text, flags=re.UNICODE)

    def white_space_fix(text):
        return " ".join(text.split())

    def remove_punc(text):
        exclude = set(string.punctuation)
        return "".join(ch for ch in text if ch not in exclude)

    return white_space_fix(remove_articles(remove_punc(s.lower())))


def v1_f1(prediction, ground_truth):  # evaluate-v1.1.py
    prediction_tokens = official_normalize(prediction).split()
    ground_truth_tokens = official_normalize(ground_truth).split()
    common = collections.Counter(prediction_tokens) & collections.Counter(ground_truth_tokens)
    num_same = sum(common.values())
    if num_same == 0:
        return 0
    precision = 1.0 * num_same / len(prediction_tokens)
    recall = 1.0 * num_same / len(ground_truth_tokens)
    return (2 * precision * recall) / (precision + recall)


def v1_evaluate(answers, predictions):
    f1 = exact = total = 0
    for qid, golds in answers.items():
        total += 1
        exact += max(official_normalize(predictions[qid]) == official_normalize(g) for g in golds)
        f1 += max(v1_f1(predictions[qid], g) for g in golds)
    return {"exact": 100.0 * exact / total, "f1": 100.0 * f1 / total}


def v2_tokens(s):
    return official_normalize(s).split() if s else []


def v2_f1(a_gold, a_pred):  # evaluate-v2.0.py compute_f1
    gold_toks, pred_toks = v2_tokens(a_gold), v2_tokens(a_pred)
    common = collections.Counter(gold_toks) & collections.Counter(pred_toks)
    num_same = sum(common.values())
    if len(gold_toks) == 0 or len(pred_toks) == 0:
        return int(gold_toks == pred_toks)
    if num_same == 0:
        return 0
    precision = 1.0 * num_same / len(pred_toks)
    recall = 1.0 * num_same / len(gold_toks)
    return (2 * precision * recall) / (precision + recall)


def apply_no_ans_threshold(scores, na_probs, qid_to_has_ans, na_prob_thresh):  # evaluate-v2.0.py
    new_scores = {}
    for qid, s in scores.items():
        pred_na = na_probs[qid] > na_prob_thresh
        if pred_na:
            new_scores[qid] = float(not qid_to_has_ans[qid])
        else:
            new_scores[qid] = s
    return new_scores


def find_best_thresh(preds, scores, na_probs, qid_to_has_ans):  # evaluate-v2.0.py
    num_no_ans = sum(1 for k in qid_to_has_ans if not qid_to_has_ans[k])
    cur_score = num_no_ans
    best_score = cur_score
    best_thresh = 0.0
    qid_list = sorted(na_probs, key=lambda k: na_probs[k])
    for qid in qid_list:
        if qid not in scores:
            continue
        if qid_to_has_ans[qid]:
            diff = scores[qid]
        else:
            if preds[qid]:
                diff = -1
            else:
                diff = 0
        cur_score += diff
        if cur_score > best_score:
            best_score = cur_score
            best_thresh = na_probs[qid]
    return 100.0 * best_score / len(scores), best_thresh


def v2_evaluate(answers, predictions, na_probs=None, na_prob_thresh=1.0):
    exact, f1 = {}, {}
    for qid, raw in answers.items():
        golds = [a for a in raw if official_normalize(a)] or [""]
        exact[qid] = max(int(official_normalize(a) == official_normalize(predictions[qid])) for a in golds)
        f1[qid] = max(v2_f1(a, predictions[qid]) for a in golds)
    raw_exact, raw_f1 = exact, f1
    has_ans = {q: bool(a) for q, a in answers.items()}
    if na_probs is not None:
        exact = apply_no_ans_threshold(raw_exact, na_probs, has_ans, na_prob_thresh)
        f1 = apply_no_ans_threshold(raw_f1, na_probs, has_ans, na_prob_thresh)
    out = {"exact": 100.0 * sum(exact.values()) / len(exact), "f1": 100.0 * sum(f1.values()) / len(f1),
           "total": len(exact)}
    for prefix, ids in (("HasAns", [q for q, a in answers.items() if a]), ("NoAns", [q for q, a in answers.items() if not a])):
        if ids:
            out.update({f"{prefix}_exact": 100.0 * sum(exact[q] for q in ids) / len(ids),
                        f"{prefix}_f1": 100.0 * sum(f1[q] for q in ids) / len(ids), f"{prefix}_total": len(ids)})
    if na_probs is not None:  # find_all_best_thresh
        out["best_exact"], out["best_exact_thresh"] = find_best_thresh(predictions, raw_exact, na_probs, has_ans)
        out["best_f1"], out["best_f1_thresh"] = find_best_thresh(predictions, raw_f1, na_probs, has_ans)
    return out


# ---------------------------------------------------------------- hand-computed cases

@pytest.mark.parametrize("text, normal", [
    ("The Cat sat.", "cat sat"),
    ("  an apple, a pear and THE plum!! ", "apple pear and plum"),
    ("theatre anthem", "theatre anthem"),  # articles only as whole words
    ("", ""),
])
def test_normalisation(text, normal):
    assert normalize_answer(text) == normal


@pytest.mark.parametrize("pred, gold, em, f1", [
    ("the Cat sat", "a cat sat.", 1, 1.0),
    ("cat sat on mat", "cat sat", 0, 2 * 0.5 * 1.0 / 1.5),  # precision 2/4, recall 2/2
    ("Denver Broncos", "Broncos", 0, 2 * 0.5 * 1.0 / 1.5),
    ("blue", "red", 0, 0.0),
    ("x b b", "b b c", 0, 2 / 3),  # common: b twice; precision 2/3, recall 2/3
    ("a b b", "b b c", 0, 0.8),  # "a" is an article: "b b", precision 2/2, recall 2/3
])
def test_exact_match_and_f1_by_hand(pred, gold, em, f1):
    assert exact_match(pred, gold) == em
    assert token_f1(pred, gold, version=1) == pytest.approx(f1)
    assert token_f1(pred, gold, version=2) == pytest.approx(f1)


def test_best_gold_answer_counts_v1():
    answers = {"q1": ["Denver Broncos", "The Broncos"], "q2": ["Santa Clara, California", "Levi's Stadium"]}
    preds = {"q1": "broncos", "q2": "Levi's Stadium in Santa Clara"}
    # q1: EM 1 ("the broncos" -> "broncos"), F1 1. q2: EM 0; F1 max(Santa Clara California: common santa clara ->
    # p 2/5, r 2/3 -> 0.5; levis stadium: common levis stadium -> p 2/5, r 1 -> 4/7)
    scores = squad_evaluate(preds, answers, version=1)
    assert scores["exact"] == pytest.approx(50.0)
    assert scores["f1"] == pytest.approx(100 * (1 + 4 / 7) / 2)
    assert scores["total"] == 2


def test_no_answer_rules_v2():
    answers = {"has": ["Paris"], "none": [], "none2": []}
    preds = {"has": "in Paris", "none": "", "none2": "London"}
    scores = squad_evaluate(preds, answers, version=2)
    # has: EM 0, F1 2*(1/2*1)/(1.5) = 2/3; none: EM 1 F1 1; none2: 0, 0
    assert scores["exact"] == pytest.approx(100 / 3)
    assert scores["f1"] == pytest.approx(100 * (2 / 3 + 1) / 3)
    assert (scores["HasAns_exact"], scores["HasAns_f1"], scores["HasAns_total"]) == (0.0, pytest.approx(200 / 3), 1)
    assert (scores["NoAns_exact"], scores["NoAns_f1"], scores["NoAns_total"]) == (50.0, 50.0, 2)


def test_v1_and_v2_differ_only_where_the_scripts_do():
    # a gold that normalises to nothing: v2 drops it (gold ""), so the empty prediction scores 1; v1 F1 is 0
    assert squad_evaluate({"q": ""}, {"q": ["the"]}, version=2)["f1"] == 100.0
    assert squad_evaluate({"q": ""}, {"q": ["the"]}, version=1)["f1"] == 0.0


def test_best_threshold_by_hand():
    answers = {"a": ["Paris"], "b": ["Rome"], "n1": [], "n2": []}
    preds = {"a": "Paris", "b": "Milan", "n1": "", "n2": "London"}
    odds = {"a": -3.0, "b": 1.0, "n1": 5.0, "n2": 0.5}
    # rising odds: a (+1), n2 (-1: it answers), b (+0), n1 (0). Start at 2 (every question ""): 3 after a, the best
    best = best_thresholds(preds, answers, odds)
    assert best == {"best_exact": 75.0, "best_exact_thresh": -3.0, "best_f1": 75.0, "best_f1_thresh": -3.0}
    # with the odds, the scores count questions above the threshold as "": b and n1 above 0.9 -> a 1, b 0, n1 1, n2 0
    scores = squad_evaluate(preds, answers, version=2, na_probs=odds, na_prob_thresh=0.9)
    assert scores["exact"] == 50.0 and scores["NoAns_exact"] == 50.0 and scores["best_exact"] == 75.0
    # a threshold above every odd changes nothing
    plain = squad_evaluate(preds, answers, version=2)
    high = squad_evaluate(preds, answers, version=2, na_probs=odds, na_prob_thresh=10.0)
    assert {k: high[k] for k in plain} == plain
    with pytest.raises(ValueError, match="no no-answer probability"):
        squad_evaluate(preds, answers, version=2, na_probs={"a": 0.0})
    with pytest.raises(ValueError, match="v2.0"):
        squad_evaluate(preds, {"a": ["Paris"]}, version=1, na_probs=odds)


def test_missing_prediction_and_bad_version_are_errors():
    with pytest.raises(ValueError, match="no prediction"):
        squad_evaluate({}, {"q": ["a"]})
    with pytest.raises(ValueError, match="version"):
        squad_evaluate({"q": "a"}, {"q": ["a"]}, version=3)


# ---------------------------------------------------------------- equivalence with the official scripts

WORDS = ["the", "a", "an", "Cat", "cat,", "dog", "sat", "on", "mat.", "Mat", "blue", "(red)", "An", "theory"]


def _phrase(rng: random.Random, low: int = 0) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(rng.randint(low, 5)))


@pytest.mark.parametrize("seed", range(5))
def test_equals_the_official_scripts(seed):
    rng = random.Random(seed)
    answers_v1 = {f"q{i}": [_phrase(rng, 1) for _ in range(rng.randint(1, 3))] for i in range(60)}
    preds = {q: _phrase(rng) for q in answers_v1}
    for q in list(preds)[::4]:  # some exact hits in other spellings
        preds[q] = answers_v1[q][0].upper() + " ."
    ours, ref = squad_evaluate(preds, answers_v1, version=1), v1_evaluate(answers_v1, preds)
    assert ours["exact"] == pytest.approx(ref["exact"]) and ours["f1"] == pytest.approx(ref["f1"])
    answers_v2 = {q: (g if i % 3 else []) for i, (q, g) in enumerate(answers_v1.items())}
    for q in list(preds)[1::6]:
        preds[q] = ""
    ours, ref = squad_evaluate(preds, answers_v2, version=2), v2_evaluate(answers_v2, preds)
    assert set(ours) == set(ref)
    for key, value in ref.items():
        assert ours[key] == pytest.approx(value), key
    odds = {q: rng.uniform(-4, 4) for q in answers_v2}
    for thresh in (1.0, -0.5):
        ours, ref = squad_evaluate(preds, answers_v2, 2, odds, thresh), v2_evaluate(answers_v2, preds, odds, thresh)
        assert set(ours) == set(ref)
        for key, value in ref.items():
            assert ours[key] == pytest.approx(value), key
