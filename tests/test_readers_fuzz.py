"""Property-based fuzzing of the TSV / CSV / JSONL readers: whatever the bytes of a data file (random rows,
encodings, quotes, tabs, line endings, JSON values), ``read_split`` returns valid examples or raises a
``UserError`` (one line for the user); never another exception (a traceback)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from basics.errors import UserError
from tasks.readers import read_split
from tasks.task_def import Example, TaskDef

FUZZ = settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow], database=None)
LABELS = ("neg", "pos", "0", "1", "a,b", 'q"uote')

# text pieces that matter to the readers: delimiters, quotes, line breaks, BOMs, NULs, non-ASCII, labels, numbers
PIECES = st.sampled_from(["\t", ",", '"', "'", "\n", "\r\n", "\r", "\ufeff", "\x00", "\\", " ", "é", "😀", "\u2028",
                          "{", "}", "[", "]", ":", "null", "true", "1e400", "nan", "-inf", "9" * 400, "9" * 5000,
                          *LABELS, "label", "sentence", "score", "2.5"])
FIELD = st.lists(st.one_of(PIECES, st.text(max_size=6)), max_size=6).map("".join)
ENCODINGS = st.sampled_from(["utf-8", "utf-8-sig", "latin-1", "utf-16", "cp1252"])
JSON_VALUE = st.recursive(st.none() | st.booleans() | st.integers() | st.floats() | FIELD,
                          lambda inner: st.lists(inner, max_size=3) | st.dictionaries(FIELD, inner, max_size=3),
                          max_leaves=6)


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    """Where the fuzzed files are written (one file per format, rewritten for every example)."""
    return tmp_path_factory.mktemp("readers-fuzz")


def task_def(folder: Path, fmt: str, head: str, header: bool, columns: dict, num_columns: int | None) -> TaskDef:
    classification = head == "classification"
    return TaskDef(name="fuzz", head=head, loss="cross_entropy" if classification else "mse",
                   labels=LABELS if classification else (), metrics=("accuracy",) if classification else ("pearson",),
                   primary="accuracy" if classification else "pearson", files={"train": f"train.{fmt}"},
                   dev_splits=("train",), format=fmt, header=header, num_columns=num_columns,
                   base_dir=str(folder), **columns)


def check(task: TaskDef, data: bytes, max_samples: int | None) -> None:
    """The property: valid examples or a one-line UserError."""
    (Path(task.base_dir) / task.files["train"]).write_bytes(data)
    try:
        examples = read_split(task, None, "train", max_samples=max_samples)
    except UserError as exc:
        assert str(exc).strip(), "an empty error message"
        return
    assert examples and (max_samples is None or len(examples) <= max_samples)
    for example in examples:
        assert isinstance(example, Example) and isinstance(example.text_a, str) and example.text_a.strip()
        assert example.text_b is None or (isinstance(example.text_b, str) and example.text_b.strip())
        if task.head == "classification":
            assert isinstance(example.label, int) and 0 <= example.label < len(task.labels)
        else:
            assert isinstance(example.label, float) and math.isfinite(example.label)


HEADS = st.sampled_from(["classification", "regression"])
MAX_SAMPLES = st.none() | st.integers(1, 5)
LINE_ENDS = st.sampled_from(["\n", "\r\n", "\r", ""])


@st.composite
def table_files(draw, delimiter: str) -> tuple[bytes, bool, dict, int | None]:
    """Rows of random fields (sometimes quoted) joined by ``delimiter``, random line endings and encoding."""
    rows = draw(st.lists(st.lists(FIELD, min_size=0, max_size=4), max_size=8))
    quote = draw(st.booleans())
    lines = [delimiter.join(f'"{f}"' if quote and draw(st.booleans()) else f for f in row) for row in rows]
    text = "".join(line + draw(LINE_ENDS) for line in lines)
    header = draw(st.booleans())
    if header and draw(st.booleans()):  # columns by header name
        columns = {"text_a": "sentence", "text_b": draw(st.sampled_from([None, "b"])), "label": "label"}
        text = delimiter.join(["sentence", "b", "label"]) + "\n" + text
    else:
        columns = {"text_a": draw(st.integers(-3, 2)), "text_b": draw(st.sampled_from([None, 1, -2])),
                   "label": draw(st.integers(-1, 2))}
    num_columns = draw(st.sampled_from([None, 2, 3]))
    if num_columns is not None and any(isinstance(c, int) and not -num_columns <= c < num_columns
                                       for c in columns.values()):
        num_columns = None  # the task definition itself would be refused (tested elsewhere)
    try:
        data = text.encode(draw(ENCODINGS))
    except UnicodeEncodeError:
        data = text.encode("utf-8")
    return data, header, columns, num_columns


@pytest.mark.parametrize("fmt,delimiter", [("tsv", "\t"), ("csv", ",")])
@FUZZ
@given(data=st.data(), head=HEADS, max_samples=MAX_SAMPLES)
def test_table_readers_never_crash(folder, fmt, delimiter, data, head, max_samples):
    content, header, columns, num_columns = data.draw(table_files(delimiter))
    check(task_def(folder, fmt, head, header, columns, num_columns), content, max_samples)


@FUZZ
@given(records=st.lists(st.one_of(JSON_VALUE.map(json.dumps),
                                  st.fixed_dictionaries({"a": JSON_VALUE, "label": JSON_VALUE}).map(json.dumps),
                                  FIELD), max_size=6),
       line_end=LINE_ENDS, head=HEADS, encoding=ENCODINGS, max_samples=MAX_SAMPLES, depth=st.integers(0, 3))
def test_jsonl_reader_never_crashes(folder, records, line_end, head, encoding, max_samples, depth):
    if depth == 3:  # nesting deeper than Python's recursion limit
        records = [*records, "[" * 100_000 + "]" * 100_000]
    text = "".join(r + (line_end or "\n") for r in records)
    try:
        content = text.encode(encoding)
    except UnicodeEncodeError:
        content = text.encode("utf-8")
    task = task_def(folder, "jsonl", head, False, {"text_a": "a", "text_b": None, "label": "label"}, None)
    check(task, content, max_samples)


@pytest.mark.parametrize("line", ["9" * 5000, '{"a": "x", "label": ' + "9" * 5000 + "}",
                                  '{"a": "x", "label": ' + "9" * 400 + "}", "[" * 100_000 + "]" * 100_000],
                         ids=["huge int", "huge int label", "int beyond float", "deep nesting"])
@pytest.mark.parametrize("head", ["classification", "regression"])
def test_jsonl_edge_values_are_user_errors(folder, line, head):
    """What the fuzz tests found (tracebacks before): integers beyond Python's digit limit (ValueError) or beyond
    the float range (OverflowError), nesting beyond the recursion limit (RecursionError)."""
    task = task_def(folder, "jsonl", head, False, {"text_a": "a", "text_b": None, "label": "label"}, None)
    (folder / "train.jsonl").write_text(line + "\n")
    with pytest.raises(UserError, match="train.jsonl:1: "):
        read_split(task, None, "train")
