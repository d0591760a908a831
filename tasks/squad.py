"""Span question answering data: SQuAD v1.1 / v2.0 JSON files and the hub's ``squad`` / ``squad_v2``.

A SQuAD file is ``{"data": [{"title", "paragraphs": [{"context", "qas": [{"id", "question",
"answers": [{"text", "answer_start"}], "is_impossible"}]}]}]}`` (``is_impossible`` only in v2.0).
Every question becomes one :class:`QAExample`; a malformed file stops with one line naming the file,
the question and what is wrong (an answer whose text is not at its ``answer_start`` in the context, a
duplicate id, a v2.0 question without an answer in a v1.1 task).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from basics.errors import UserError
from tasks.readers import check_max_samples, split_path
from tasks.task_def import TaskDef

_HUB_FIX = "download the SQuAD JSON files and pass --glue-dir DIR (DIR/SQuAD/train-v1.1.json, ...)"


@dataclass(frozen=True)
class Answer:
    """One gold answer: its text and where it starts in the context (character offset)."""

    text: str
    start: int

    @property
    def end(self) -> int:
        """Character offset just after the answer."""
        return self.start + len(self.text)


@dataclass(frozen=True)
class QAExample:
    """One question about one context. ``answers`` empty: no answer (SQuAD v2.0 ``is_impossible``), or new
    data without gold answers (``labelled`` False)."""

    id: str
    question: str
    context: str
    answers: tuple[Answer, ...] = ()
    labelled: bool = True

    @property
    def answer_texts(self) -> list[str]:
        return [a.text for a in self.answers]


def read_squad_split(task: TaskDef, data_dir: Path | None, split: str, max_samples: int | None = None
                     ) -> list[QAExample]:
    """The questions of ``task``'s ``split`` file (e.g. ``DATA_DIR/SQuAD/dev-v1.1.json``), with gold answers."""
    return read_squad_file(split_path(task, data_dir, split), task, max_samples)


def gold_answers_by_id(examples: Iterable[QAExample]) -> dict[str, list[str]]:
    """Question id -> gold answer texts (``[]``: no answer), what :func:`tasks.squad_metrics.squad_evaluate` takes."""
    return {e.id: e.answer_texts for e in examples}


def read_squad_file(path: Path, task: TaskDef, max_samples: int | None = None, *, labelled: bool = True
                    ) -> list[QAExample]:
    """The questions of a SQuAD JSON file in file order (the first ``max_samples`` if given).

    ``labelled``: gold answers are required (a question of a v1.1 task must have one; a v2.0 task allows
    ``is_impossible`` questions without); False: new data to predict on, answers are read when present.
    """
    check_max_samples(max_samples)
    path = Path(path)
    if not path.is_file():
        raise UserError(f"task '{task.name}': file not found: {path}")
    try:
        document = json.loads(path.read_bytes().decode("utf-8-sig"))
    except UnicodeDecodeError:
        raise UserError(f"{path}: invalid UTF-8; save the file as UTF-8") from None
    except (json.JSONDecodeError, RecursionError, ValueError) as err:
        raise UserError(f"{path}: invalid JSON ({getattr(err, 'msg', err)})") from None
    if not isinstance(document, dict) or not isinstance(document.get("data"), list):
        raise UserError(f"{path}: not a SQuAD file (expected a JSON object with a 'data' list of articles)")
    examples: list[QAExample] = []
    seen: set[str] = set()
    for where, context, qa in _questions(document["data"], path):
        example = _example(task, qa, context, where, labelled)
        if example.id in seen:
            raise UserError(f"{where}: question id {example.id!r} appears twice")
        seen.add(example.id)
        examples.append(example)
        if max_samples is not None and len(examples) >= max_samples:
            break
    if not examples:
        raise UserError(f"{path}: no questions (task '{task.name}')")
    return examples


def _questions(articles: list[Any], path: Path) -> Iterator[tuple[str, str, dict]]:
    """(where, context, question object) of every question, in file order."""
    for a, article in enumerate(articles):
        paragraphs = article.get("paragraphs") if isinstance(article, dict) else None
        if not isinstance(paragraphs, list):
            raise UserError(f"{path}: data[{a}] has no 'paragraphs' list")
        for p, paragraph in enumerate(paragraphs):
            where = f"{path}: data[{a}].paragraphs[{p}]"
            if not isinstance(paragraph, dict) or not isinstance(paragraph.get("context"), str):
                raise UserError(f"{where} has no 'context' text")
            if not isinstance(paragraph.get("qas"), list):
                raise UserError(f"{where} has no 'qas' list")
            for q, qa in enumerate(paragraph["qas"]):
                if not isinstance(qa, dict):
                    raise UserError(f"{where}.qas[{q}] is not an object")
                yield f"{where}.qas[{q}]", paragraph["context"], qa


def _example(task: TaskDef, qa: dict, context: str, where: str, labelled: bool) -> QAExample:
    qid, question = qa.get("id"), qa.get("question")
    if not isinstance(qid, (str, int)) or isinstance(qid, bool) or str(qid) == "":
        raise UserError(f"{where}: missing question 'id'")
    where = f"{where} (id {qid})"
    if not isinstance(question, str) or not question.strip():
        raise UserError(f"{where}: missing 'question' text")
    raw = qa.get("answers", [])
    if not isinstance(raw, list):
        raise UserError(f"{where}: 'answers' must be a list")
    answers = tuple(_answer(item, context, where) for item in raw)
    impossible = qa.get("is_impossible", False) is True
    if impossible and answers:
        raise UserError(f"{where}: is_impossible is true but the question has answers")
    has_gold = bool(answers) or impossible
    if labelled and not has_gold:
        raise UserError(f"{where}: no answer (give 'answers', or 'is_impossible': true in a SQuAD v2.0 file)")
    if labelled and impossible and not task.no_answer:
        raise UserError(f"{where}: a question without an answer (SQuAD v2.0) in task '{task.name}', which has "
                        "no no-answer option; use a v2.0 task such as squad_v2")
    return QAExample(str(qid), question, context, answers, labelled=has_gold)


def _answer(item: Any, context: str, where: str) -> Answer:
    if not isinstance(item, dict) or not isinstance(item.get("text"), str) or not item["text"]:
        raise UserError(f"{where}: an answer needs a non-empty 'text', got {item!r}"[:300])
    start = item.get("answer_start")
    if isinstance(start, bool) or not isinstance(start, int) or not 0 <= start <= len(context) - len(item["text"]):
        raise UserError(f"{where}: answer_start {start!r} of {item['text']!r} is outside the context")
    if context[start:start + len(item["text"])] != item["text"]:
        raise UserError(f"{where}: the context at answer_start {start} reads "
                        f"{context[start:start + len(item['text'])]!r}, not the answer {item['text']!r}")
    return Answer(item["text"], start)


# ---------------------------------------------------------------- the hub

def load_hub_squad(task: TaskDef, split: str, max_samples: int | None = None) -> list[QAExample]:
    """The questions of ``task``'s ``split`` from the Hugging Face hub (``task.hub``: e.g. ``rajpurkar/squad``,
    columns id, question, context, answers {text, answer_start}). Offline or any other loading failure: one
    ``UserError`` saying how to use local files instead."""
    check_max_samples(max_samples)
    hub = task.hub
    if hub is None:
        raise UserError(f"task '{task.name}' has no hub entry: {_HUB_FIX}")
    if split not in hub["splits"]:
        raise UserError(f"task '{task.name}' has no hub split for {split!r} (hub splits: {', '.join(hub['splits'])})")
    hub_split = hub["splits"][split] + (f"[:{max_samples}]" if max_samples is not None else "")
    try:
        import datasets

        rows: Iterable[dict] = datasets.load_dataset(hub["path"], hub.get("name"), split=hub_split)
    except Exception as err:  # offline, no network, bad name: all mean "use local files"
        reason = f"{type(err).__name__}: {(str(err).strip().splitlines() or [''])[0]}"
        raise UserError(f"could not load {task.name} from the Hugging Face hub ({reason}): {_HUB_FIX}") from err
    source = f"{hub['path']} {hub_split}"
    return [_hub_example(task, hub, row, f"{source} row {i}") for i, row in enumerate(rows)]


def _hub_example(task: TaskDef, hub: dict, row: dict, where: str) -> QAExample:
    """A hub row as the SQuAD JSON question it came from, read by the same checks."""
    missing = [key for key in ("id", hub["text_a"], hub["text_b"], hub["label"]) if key not in row]
    if missing:
        raise UserError(f"{where}: hub column(s) {missing} missing (columns: {sorted(row)})")
    answers = row[hub["label"]] or {}
    texts, starts = answers.get("text", []), answers.get("answer_start", [])
    qa = {"id": row["id"], "question": row[hub["text_a"]],
          "answers": [{"text": t, "answer_start": s} for t, s in zip(texts, starts, strict=False)],
          "is_impossible": not texts}
    return _example(task, qa, row[hub["text_b"]], where, labelled=True)
