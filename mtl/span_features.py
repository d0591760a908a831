"""Span question answering inputs: each (question, context) cut into overlapping windows ("features").

A context longer than ``max_length`` tokens (with the question and the special tokens) is split into
windows that overlap by ``doc_stride`` tokens (a fast tokenizer's ``truncation="only_second"``,
``return_overflowing_tokens``); each window keeps the whole question. A window's label is the token
positions ``(start, end)`` of the answer when the answer lies wholly inside the window, else ``(0, 0)``
(the first token, [CLS]: "no answer here"). For evaluation each window keeps the character span of its
context tokens (``offsets``) and the example it came from, so answers are read back from the context
(:mod:`mtl.span_answers`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from basics.errors import UserError
from tasks.squad import QAExample

NO_CONTEXT = -1  # offsets of a token outside the context (question, special tokens)


@dataclass
class SpanFeatures:
    """What evaluation needs of the windows of one split (N windows of E examples).

    ``example_index`` (N,) long: the example of each window; ``offsets[i]`` (T_i, 2) int32: the character
    span ``[start, end)`` of each token of window i in its context, ``NO_CONTEXT`` for the other tokens;
    per example: ``ids``, ``contexts`` and ``answers`` (gold texts; ``[]`` = no answer), ``labelled``
    (whether gold answers were given).
    """

    example_index: torch.Tensor
    offsets: list[torch.Tensor]
    ids: list[str]
    contexts: list[str]
    answers: list[list[str]]
    labelled: list[bool]

    def subset(self, windows: Sequence[int]) -> "SpanFeatures":
        """The ``windows`` and the examples they belong to (renumbered in order)."""
        windows = list(windows)
        kept = sorted({int(self.example_index[i]) for i in windows})
        new = {old: new for new, old in enumerate(kept)}
        return SpanFeatures(example_index=torch.tensor([new[int(self.example_index[i])] for i in windows], dtype=torch.long),
                            offsets=[self.offsets[i] for i in windows], ids=[self.ids[e] for e in kept],
                            contexts=[self.contexts[e] for e in kept], answers=[self.answers[e] for e in kept],
                            labelled=[self.labelled[e] for e in kept])

    def windows_of(self, examples: Sequence[int]) -> list[int]:
        """The windows of the examples at ``examples`` (indices into ``ids``), in window order."""
        wanted = set(examples)
        return [i for i, e in enumerate(self.example_index.tolist()) if e in wanted]

    def gold(self) -> dict[str, list[str]]:
        """Question id -> gold answer texts of every labelled example (``[]``: no answer)."""
        return {qid: answers for qid, answers, has in zip(self.ids, self.answers, self.labelled, strict=True) if has}

    def to_state(self) -> dict[str, Any]:
        """Tensors, strings and lists only (the tokenization cache loads with ``weights_only``)."""
        return dict(vars(self))

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> "SpanFeatures":
        return cls(**state)


def check_windows(tokenizer, questions: Sequence[str], max_length: int, doc_stride: int) -> None:
    """UserError unless every question leaves more than ``doc_stride`` context tokens per window (the
    tokenizer needs it to step through a long context; it would abort the process otherwise)."""
    if doc_stride < 1:
        raise UserError(f"--doc-stride must be >= 1, got {doc_stride}")
    special = tokenizer.num_special_tokens_to_add(pair=True)
    lengths = [len(ids) for ids in tokenizer(list(questions), add_special_tokens=False)["input_ids"]]
    longest = max(range(len(lengths)), key=lengths.__getitem__)
    room = max_length - special - lengths[longest]
    if room <= doc_stride:
        raise UserError(f"--max-seq-length {max_length} leaves {max(room, 0)} context tokens per window beside the "
                        f"longest question ({lengths[longest]} tokens: {questions[longest][:60]!r}), not more than "
                        f"--doc-stride {doc_stride}; use --max-seq-length 384 (the SQuAD convention) or a smaller "
                        "--doc-stride")


@dataclass
class SpanWindows:
    """The tokenized windows of a split: ``input_ids[i]`` / ``token_type_ids[i]`` 1-D int tensors, ``labels``
    (N, 2) long (answer start and end token; ``(0, 0)``: no answer in the window), ``features``."""

    input_ids: list[torch.Tensor]
    token_type_ids: list[torch.Tensor] | None
    labels: torch.Tensor
    features: SpanFeatures


def tokenize_spans(tokenizer, examples: Sequence[QAExample], max_length: int, doc_stride: int) -> SpanWindows:
    """Cut every (question, context) of ``examples`` into windows of at most ``max_length`` tokens that overlap by
    ``doc_stride`` context tokens, and label them (:func:`window_label`)."""
    if not getattr(tokenizer, "is_fast", False):
        raise UserError(f"span tasks need a fast tokenizer (offsets of every token); {type(tokenizer).__name__} is not one")
    questions = [e.question.lstrip() for e in examples]  # leading blanks only waste window room
    check_windows(tokenizer, questions, max_length, doc_stride)
    enc = tokenizer(questions, [e.context for e in examples], truncation="only_second", max_length=max_length,
                    stride=doc_stride, return_overflowing_tokens=True, return_offsets_mapping=True, padding=False)
    ids, types, labels, offsets = [], [], [], []
    owner = list(enc["overflow_to_sample_mapping"])
    for i, input_ids in enumerate(enc["input_ids"]):
        sequence = enc.sequence_ids(i)
        spans = torch.tensor([list(o) if s == 1 else [NO_CONTEXT, NO_CONTEXT]
                              for o, s in zip(enc["offset_mapping"][i], sequence, strict=True)], dtype=torch.int32)
        ids.append(torch.tensor(input_ids, dtype=torch.int32))
        if "token_type_ids" in enc:
            types.append(torch.tensor(enc["token_type_ids"][i], dtype=torch.int8))
        labels.append(window_label(spans, examples[owner[i]]))
        offsets.append(spans)
    features = SpanFeatures(example_index=torch.tensor(owner, dtype=torch.long), offsets=offsets,
                            ids=[e.id for e in examples], contexts=[e.context for e in examples],
                            answers=[e.answer_texts for e in examples], labelled=[e.labelled for e in examples])
    return SpanWindows(ids, types or None, torch.tensor(labels, dtype=torch.long).view(-1, 2), features)


def window_label(offsets: torch.Tensor, example: QAExample) -> tuple[int, int]:
    """(start token, end token) of the example's first answer in a window whose context tokens span the
    characters ``offsets`` (T, 2); (0, 0) when there is no answer or it is not wholly inside the window."""
    if not example.answers:
        return 0, 0
    answer = example.answers[0]
    context = (offsets[:, 0] != NO_CONTEXT).nonzero().flatten()
    if len(context) == 0:
        return 0, 0
    first, last = int(context[0]), int(context[-1])
    if not (offsets[first, 0] <= answer.start and offsets[last, 1] >= answer.end):
        return 0, 0
    start = first
    while start <= last and offsets[start, 0] <= answer.start:  # the last token starting at or before the answer
        start += 1
    end = last
    while end >= first and offsets[end, 1] >= answer.end:  # the first token ending at or after the answer's end
        end -= 1
    return start - 1, end + 1
