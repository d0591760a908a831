"""Read new, unlabelled data of a task for prediction: TSV / CSV / JSONL rows -> ``Example`` (label None).

Which columns hold the inputs:

- JSONL: the keys named by the task's input names (:attr:`tasks.task_def.TaskDef.input_names`, e.g.
  ``sentence1``/``sentence2`` for RTE), or by ``columns``;
- TSV / CSV whose first line holds those names: a header; the inputs are read by name, every other
  column is ignored (a label column may be there or not);
- any other TSV / CSV, when the task's own files have no header (CoLA) or the task names no input
  columns: laid out like the task's dev file (the task definition's column positions, header setting
  and column count), so every GLUE ``dev.tsv`` reads as it is.

Every malformed row (too few or too many fields, a blank input, invalid JSON or UTF-8) raises
``UserError("FILE:LINE: ...")``, as :mod:`tasks.readers` does for training files; an empty file too.
"""

from __future__ import annotations

import csv
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from basics.errors import UserError
from tasks.readers import Record, _checked_rows, _csv_rows, _decoded_lines, _jsonl_records, _text
from tasks.task_def import FORMATS, Column, Example, TaskDef

SUFFIX_FORMATS: dict[str, str] = {".tsv": "tsv", ".csv": "csv", ".jsonl": "jsonl", ".json": "jsonl"}


@dataclass(frozen=True)
class InputRows:
    """The rows of one input file, in file order: ``examples[i]`` (label None) and, when asked for, ``ids[i]``."""

    path: Path
    examples: list[Example]
    ids: list[str] | None = None

    def __len__(self) -> int:
        return len(self.examples)


def file_format(path: Path, given: str | None = None) -> str:
    """``given`` (checked), else the format the file name says (``.tsv``, ``.csv``, ``.jsonl``/``.json``)."""
    if given is not None:
        if given not in FORMATS:
            raise UserError(f"unknown input format {given!r} (valid: {', '.join(FORMATS)})")
        return given
    fmt = SUFFIX_FORMATS.get(Path(path).suffix.lower())
    if fmt is None:
        raise UserError(f"cannot tell the format of {path} from its name: use .tsv, .csv or .jsonl, "
                        f"or pass --format {'|'.join(FORMATS)}")
    return fmt


def read_inputs(task: TaskDef, path: Path, *, fmt: str | None = None, columns: Sequence[str] = (),
                id_column: str | None = None) -> InputRows:
    """The input texts of every row of ``path`` for ``task`` (see the module docstring for the columns).

    ``columns``: input column names overriding the task's (1 or 2, as the task has text_b or not).
    ``id_column``: also return that column of every row (by name: a header field or JSONL key).
    """
    path = Path(path)
    if not path.is_file():
        raise UserError(f"input file not found: {path}")
    fmt = file_format(path, fmt)
    names = _input_names(task, columns)
    with path.open("rb") as handle:
        lines = _decoded_lines(handle, path)
        if fmt == "jsonl":
            if not names:
                raise UserError(f"task '{task.name}' names no input keys for JSONL files; pass --columns "
                                "(the keys of text_a[,text_b])")
            records = _jsonl_records(lines, path)
            text, ident = tuple(names), id_column
        else:
            records, text, ident = _table(lines, path, fmt, task, names, id_column)
        examples, ids = [], []
        for number, record in records:
            where = f"{path}:{number}"
            text_b = None if len(text) == 1 else _text(record, text[1], "text_b", where)
            examples.append(Example(_text(record, text[0], "text_a", where), text_b, None))
            if ident is not None:
                ids.append(str(_text(record, ident, id_column or "id", where)).strip())
    if not examples:
        raise UserError(f"{path}: no data rows (the file is empty or holds only a header; task '{task.name}')")
    return InputRows(path, examples, ids if id_column is not None else None)


def _input_names(task: TaskDef, columns: Sequence[str]) -> tuple[str, ...]:
    wanted = 1 if task.text_b is None else 2
    if columns:
        if len(columns) != wanted:
            raise UserError(f"--columns: task '{task.name}' reads {wanted} input column(s) "
                            f"(text_a{'' if wanted == 1 else ', text_b'}), got {list(columns)}")
        return tuple(columns)
    return task.input_names


def _table(lines: Iterator[str], path: Path, fmt: str, task: TaskDef, names: tuple[str, ...],
           id_column: str | None) -> tuple[Iterator[tuple[int, Record]], tuple[Column, ...], Column | None]:
    """(rows, input columns, id column) of a TSV/CSV file: by header names, or the task's dev layout."""
    reader = csv.reader(lines, delimiter="\t", quoting=csv.QUOTE_NONE) if fmt == "tsv" else csv.reader(lines)
    rows = _csv_rows(reader, path)
    first = next(rows, None)
    if first is None:
        raise UserError(f"{path}: no data rows (the file is empty; task '{task.name}')")
    header = [field.strip() for field in first[1]]
    wanted = [*names, *([id_column] if id_column else [])]
    if names and all(name in header for name in wanted):
        return (_checked_rows(rows, len(header), path), tuple(header.index(n) for n in names),
                header.index(id_column) if id_column else None)
    # the task's own layout: only for files like its dev file that cannot be read by name (no header, e.g.
    # CoLA, or a task that names no input columns); a file with a header must name the inputs
    layout_ok = (fmt == task.format and all(isinstance(c, int) for c in (task.text_a, task.text_b) if c is not None)
                 and (not names or not task.header))
    if id_column is not None or not layout_ok:
        missing = [name for name in wanted if name not in header]
        what = f"column(s) {missing}" if names else "input column names (pass --columns)"
        raise UserError(f"{path}:{first[0]}: the header has no {what} for task '{task.name}' "
                        f"(first row: {header[:8]}); add a header naming the inputs, or pass --columns")
    spec = task.columns(task.dev_splits[0]) if task.dev_splits[0] in task.files else task.columns("train")
    data = rows if task.header else _prepend(first, rows)
    text = (spec.text_a,) if spec.text_b is None else (spec.text_a, spec.text_b)
    return _checked_rows(data, spec.num_columns, path), text, None


def _prepend(first: tuple[int, list[str]], rows: Iterator[tuple[int, list[str]]]) -> Iterator[tuple[int, list[str]]]:
    yield first
    yield from rows
