"""Span question answering pieces: the SQuAD reader, windows and their labels, answers from logits, the span
head and its loss, on the tiny tokenizer and hand-made logits."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from basics.errors import UserError
from mtl.data import tokenize
from mtl.model import PAD_LOGIT, MultiTaskModel
from mtl.span_answers import NO_SPAN_ODDS, SpanDecoding, question_answer, question_prediction
from mtl.span_features import NO_CONTEXT
from tasks.registry import default_registry
from tasks.squad import read_squad_file, read_squad_split
from tests.conftest import tiny_bert
from tests.squad_files import squad_document, write_squad_dir
from tests.tiny_run import save_tiny_model

REGISTRY = default_registry()
SQUAD, SQUAD_V2 = REGISTRY.get("squad"), REGISTRY.get("squad_v2")


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(save_tiny_model(tmp_path_factory.mktemp("tok")))


def _write(tmp_path, document) -> object:
    path = tmp_path / "f.json"
    path.write_text(json.dumps(document), encoding="utf-8")
    return path


def _doc(qas, context="the film was good"):
    return {"data": [{"title": "t", "paragraphs": [{"context": context, "qas": qas}]}]}


# ---------------------------------------------------------------- reader

def test_reader_reads_questions_and_answers(tmp_path):
    data = write_squad_dir(tmp_path)
    examples = read_squad_split(SQUAD_V2, data, "dev")
    assert len(examples) == 6 * 2 + 3 + 3 + 1  # 2 per short paragraph, 3 on the long one, v2: 4 without answer
    none = [e for e in examples if not e.answers]
    assert len(none) == 4 and all(e.labelled for e in none)
    for e in examples:
        for a in e.answers:
            assert e.context[a.start:a.end] == a.text
    assert len(read_squad_split(SQUAD, data, "dev", max_samples=5)) == 5


@pytest.mark.parametrize("qas, message", [
    ([{"id": "a", "question": "q", "answers": [{"text": "film", "answer_start": 0}]}], "reads 'the '"),
    ([{"id": "a", "question": "q", "answers": [{"text": "film", "answer_start": 99}]}], "outside the context"),
    ([{"id": "a", "question": "q", "answers": []}], "no answer"),
    ([{"id": "a", "question": "q", "answers": [], "is_impossible": True}], "use a v2.0 task"),
    ([{"id": "a", "question": "q", "answers": [{"text": "film", "answer_start": 4}]},
      {"id": "a", "question": "q", "answers": [{"text": "film", "answer_start": 4}]}], "appears twice"),
    ([{"id": "a", "question": " ", "answers": [{"text": "film", "answer_start": 4}]}], "missing 'question'"),
])
def test_reader_errors_are_one_line(tmp_path, qas, message):
    with pytest.raises(UserError, match=message) as err:
        read_squad_file(_write(tmp_path, _doc(qas)), SQUAD)
    assert "\n" not in str(err.value) and "qas[" in str(err.value)


def test_reader_refuses_other_json(tmp_path):
    with pytest.raises(UserError, match="not a SQuAD file"):
        read_squad_file(_write(tmp_path, [1, 2]), SQUAD)
    (tmp_path / "bad.json").write_text("{", encoding="utf-8")
    with pytest.raises(UserError, match="invalid JSON"):
        read_squad_file(tmp_path / "bad.json", SQUAD)


def test_unlabelled_input_reads_without_answers(tmp_path):
    path = _write(tmp_path, _doc([{"id": "a", "question": "what ?"}]))
    [example] = read_squad_file(path, SQUAD, labelled=False)
    assert example.answers == () and not example.labelled


def test_span_task_definitions():
    assert SQUAD.head == "span" and SQUAD.num_labels == 2 and not SQUAD.no_answer
    assert SQUAD_V2.no_answer and REGISTRY.get("SQuAD2").name == "squad_v2"
    assert SQUAD.files["dev"] == "SQuAD/dev-v1.1.json" and SQUAD.hub["path"] == "rajpurkar/squad"


def test_hub_offline_is_one_clear_line(monkeypatch):
    import datasets

    from tasks.squad import load_hub_squad

    def offline(*args, **kwargs):
        raise ConnectionError("Couldn't reach 'rajpurkar/squad' on the Hub\nmore lines")

    monkeypatch.setattr(datasets, "load_dataset", offline)
    with pytest.raises(UserError, match=r"could not load squad from the Hugging Face hub .*--glue-dir DIR") as err:
        load_hub_squad(SQUAD, "dev")
    assert "\n" not in str(err.value)


# ---------------------------------------------------------------- windows

def test_long_context_windows_and_labels(tokenizer, tmp_path):
    examples = read_squad_file(_write(tmp_path, squad_document(3, 1, n_paragraphs=2)), SQUAD)
    data = tokenize(tokenizer, examples, SQUAD, "dev", max_length=24, doc_stride=6)
    spans = data.spans
    assert data.labels.shape == (len(data), 2) and data.num_examples == len(examples)
    counts = np.bincount(spans.example_index.numpy())
    assert counts.max() >= 3  # the long context needs several windows
    assert int(data.lengths.max()) <= 24
    found = set()
    for i in range(len(data)):
        example = examples[int(spans.example_index[i])]
        start, end = data.labels[i].tolist()
        offsets = spans.offsets[i]
        if (start, end) == (0, 0):  # the answer is not wholly in this window
            inside = offsets[offsets[:, 0] != NO_CONTEXT]
            assert not (inside[0, 0] <= example.answers[0].start and inside[-1, 1] >= example.answers[0].end)
            continue
        assert example.context[offsets[start, 0]:offsets[end, 1]] == example.answers[0].text
        found.add(example.id)
    assert found == {e.id for e in examples}  # every answer is labelled in at least one window
    # consecutive windows of one context overlap by doc_stride tokens
    first = [i for i in range(len(data)) if int(spans.example_index[i]) == int(np.argmax(counts))]
    a, b = spans.offsets[first[0]], spans.offsets[first[1]]
    a, b = a[a[:, 0] != NO_CONTEXT], b[b[:, 0] != NO_CONTEXT]
    assert torch.equal(a[-6:], b[:6])


def test_subsets_keep_questions_whole(tokenizer, tmp_path):
    examples = read_squad_file(_write(tmp_path, squad_document(3, 1, n_paragraphs=2)), SQUAD)
    data = tokenize(tokenizer, examples, SQUAD, "train", max_length=24, doc_stride=6)
    part = data.subset_examples([len(examples) - 1])  # the long context's last question
    assert part.num_examples == 1 and len(part) == int((data.spans.example_index == len(examples) - 1).sum()) > 1
    assert part.spans.ids == [examples[-1].id] and set(part.spans.example_index.tolist()) == {0}


def test_doc_stride_that_does_not_fit_is_a_user_error(tokenizer, tmp_path):
    examples = read_squad_file(_write(tmp_path, squad_document(3, 1, n_paragraphs=1)), SQUAD)
    with pytest.raises(UserError, match=r"--max-seq-length 16 leaves .*--doc-stride 128; use --max-seq-length 384"):
        tokenize(tokenizer, examples, SQUAD, "dev", max_length=16, doc_stride=128)


# ---------------------------------------------------------------- answers from logits

CONTEXT = "ab cd ef gh"
# [CLS] q [SEP] ab cd ef gh [SEP]
OFFSETS = np.array([[-1, -1], [-1, -1], [-1, -1], [0, 2], [3, 5], [6, 8], [9, 11], [-1, -1]])


def _logits(start, end):
    return np.stack([np.array(start, dtype=np.float32), np.array(end, dtype=np.float32)], axis=1)


def test_best_span_by_hand():
    logits = _logits([0, 9, 0, 1, 5, 0, 0, 0], [0, 0, 9, 0, 1, 4, 2, 0])  # question tokens are never answers
    assert question_answer([(logits, OFFSETS)], CONTEXT, SpanDecoding()) == "cd ef"  # 5 + 4
    # one token at most: (cd, cd) 5+1, (ab, ab) 1+0, (ef, ef) 0+4 -> "cd"
    assert question_answer([(logits, OFFSETS)], CONTEXT, SpanDecoding(max_answer_length=1)) == "cd"
    # an end before the start is never a span: start gh 5, end ab 4 -> (gh, gh) 5+0 vs (ab, ab) 0+4 vs ...
    reverse = _logits([0, 0, 0, 0, 0, 0, 5, 0], [0, 0, 0, 4, 0, 0, 0, 0])
    assert question_answer([(reverse, OFFSETS)], CONTEXT, SpanDecoding()) == "gh"


def test_best_span_over_windows():
    low = _logits([0, 0, 0, 2, 0, 0, 0, 0], [0, 0, 0, 2, 0, 0, 0, 0])  # "ab": 4
    high = _logits([0, 0, 0, 0, 0, 3, 0, 0], [0, 0, 0, 0, 0, 0, 3, 0])  # "ef gh": 6
    assert question_answer([(low, OFFSETS), (high, OFFSETS)], CONTEXT, SpanDecoding()) == "ef gh"


def test_no_answer_threshold_by_hand():
    logits = _logits([3, 0, 0, 0, 2, 0, 0, 0], [3, 0, 0, 0, 0, 2, 0, 0])  # null 6, best span "cd ef" 4
    v2 = SpanDecoding(no_answer=True)
    assert question_answer([(logits, OFFSETS)], CONTEXT, v2) == ""  # 6 - 4 = 2 > 0
    assert question_answer([(logits, OFFSETS)], CONTEXT, SpanDecoding(no_answer=True, null_threshold=2.5)) == "cd ef"
    assert question_answer([(logits, OFFSETS)], CONTEXT, SpanDecoding()) == "cd ef"  # v1 never answers nothing
    # the null score of a question is its lowest over windows
    other = _logits([0, 0, 0, 0, 0, 0, 0, 0], [0, 0, 0, 0, 0, 0, 0, 0])
    assert question_answer([(logits, OFFSETS), (other, OFFSETS)], CONTEXT, v2) == "cd ef"  # null 0 < 4


def test_nbest_and_null_odds_by_hand():
    logits = _logits([3, 0, 0, 0, 2, 0, 0, 0], [3, 0, 0, 0, 0, 2, 0, 0])  # null 6; "cd ef" 4; then 2-point spans
    # every pair of context tokens (start <= end) is a candidate: "cd ef" 4; "ab cd ef", "cd", "cd ef gh", "ef" 2;
    # the 5 others 0
    v1 = question_prediction([(logits, OFFSETS)], CONTEXT, SpanDecoding())
    assert v1.answer == "cd ef" and v1.null_odds is None and len(v1.nbest) == 10
    assert (v1.nbest[0].text, v1.nbest[0].start, v1.nbest[0].end, v1.nbest[0].score) == ("cd ef", 3, 8, 4.0)
    assert sorted(e.text for e in v1.nbest[1:5]) == ["ab cd ef", "cd", "cd ef gh", "ef"]
    assert sum(e.probability for e in v1.nbest) == pytest.approx(1.0)
    assert v1.nbest[0].probability == pytest.approx(np.exp(4) / (np.exp(4) + 4 * np.exp(2) + 5))
    v2 = question_prediction([(logits, OFFSETS)], CONTEXT, SpanDecoding(no_answer=True))
    assert v2.answer == "" and v2.null_odds == pytest.approx(2.0)  # 6 - 4
    assert (v2.nbest[0].text, v2.nbest[0].score, v2.nbest[0].start) == ("", 6.0, -1)  # the null entry, best first
    assert v2.nbest[1].text == "cd ef" and len(v2.nbest) == 11
    assert v2.nbest[0].probability == pytest.approx(np.exp(6) / (np.exp(6) + np.exp(4) + 4 * np.exp(2) + 5))
    # n_best best starts x n_best best ends: with 1, the [CLS] start and end (3 each), outside the context: none
    assert [e.text for e in question_prediction([(logits, OFFSETS)], CONTEXT, SpanDecoding(n_best=1)).nbest] == []
    # the answer is "" exactly when the odds exceed the threshold
    assert question_prediction([(logits, OFFSETS)], CONTEXT, SpanDecoding(no_answer=True, null_threshold=2.0)).answer == "cd ef"
    # no admissible span at all (every context token's logits can't pair): odds NO_SPAN_ODDS, answer ""
    short = SpanDecoding(no_answer=True, n_best=1)
    only_question = _logits([0, 9, 0, 0, 0, 0, 0, 0], [0, 0, 0, 9, 0, 0, 0, 0])  # best start outside the context
    empty = question_prediction([(only_question, OFFSETS)], CONTEXT, short)
    assert empty.answer == "" and empty.null_odds == NO_SPAN_ODDS and [e.text for e in empty.nbest] == [""]


# ---------------------------------------------------------------- the head

def test_span_head_logits_and_loss():
    model = MultiTaskModel(tiny_bert(), [SQUAD, REGISTRY.get("rte")]).eval()
    ids = torch.randint(5, 99, (2, 7))
    mask = torch.ones(2, 7, dtype=torch.long)
    mask[1, 5:] = 0
    logits = model("squad", ids, mask)
    assert logits.shape == (2, 7, 2) and model("rte", ids, mask).shape == (2, 2)
    assert (logits[1, 5:] == PAD_LOGIT).all()
    labels = torch.tensor([[1, 3], [0, 0]])
    expected = (torch.nn.functional.cross_entropy(logits[..., 0], labels[:, 0])
                + torch.nn.functional.cross_entropy(logits[..., 1], labels[:, 1])) / 2
    assert torch.allclose(model.loss("squad", logits, labels), expected)
    model.loss("squad", logits, labels).backward()  # the gradient reaches the encoder through the head
    assert model.encoder.encoder.layer[0].attention.self.query.weight.grad is not None
