"""Read one split of a task from local TSV / CSV / JSONL files into ``Example`` objects.

Files are streamed line by line, so ``max_samples`` stops early on big files (MNLI, QQP).
Every malformed row raises ``UserError("FILE:LINE: what is wrong")``; nothing is skipped
silently except empty lines.
"""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any, BinaryIO

from basics.errors import UserError
from tasks.task_def import Column, Example, SplitColumns, TaskDef

Record = list[str] | dict[str, Any]  # a TSV/CSV row, or a JSONL object


def check_max_samples(max_samples: int | None) -> None:
    """Raise ``UserError`` unless ``max_samples`` is None or a positive integer."""
    if max_samples is not None and (type(max_samples) is not int or max_samples < 1):
        raise UserError(f"max_samples must be a positive integer or None, got {max_samples!r}")


def split_path(task: TaskDef, data_dir: Path | None, split: str) -> Path:
    """Path of ``task``'s ``split`` file; ``UserError`` if the directory or the file is missing.

    Relative paths are taken from ``task.base_dir`` (user YAML tasks) or else ``data_dir``
    (the GLUE directory); absolute paths are used as they are.
    """
    if split not in task.files:
        raise UserError(f"task '{task.name}' has no split {split!r} (splits: {', '.join(task.files)})")
    relative = Path(task.files[split])
    if task.base_dir is not None:
        path = Path(task.base_dir) / relative
    elif relative.is_absolute():
        path = relative
    elif data_dir is None or not Path(data_dir).is_dir():
        shown = "not set" if data_dir is None else f"not found: {data_dir}"
        raise UserError(f"GLUE directory {shown} (set --glue-dir or GLUE_DIR)")
    else:
        path = Path(data_dir) / relative
    if not path.is_file():
        raise UserError(f"task '{task.name}': {split} file not found: {path}")
    return path


def read_split(
    task: TaskDef, data_dir: Path | None, split: str, max_samples: int | None = None
) -> list[Example]:
    """Examples of ``task``'s ``split`` in file order; the first ``max_samples`` rows if given.

    Labels become class indices into ``task.labels`` (classification) or floats (regression).
    """
    check_max_samples(max_samples)
    path = split_path(task, data_dir, split)
    spec = task.columns(split)
    label_index = {label: index for index, label in enumerate(task.labels)}
    examples: list[Example] = []
    with path.open("rb") as handle:
        lines = _decoded_lines(handle, path)
        if task.format == "jsonl":
            records = _jsonl_records(lines, path)
        else:
            records, spec = _table_records(lines, path, task, spec)
        for number, record in records:
            where = f"{path}:{number}"
            examples.append(_example(task, spec, label_index, record, where))
            if max_samples is not None and len(examples) >= max_samples:
                break
    if not examples:
        header = " apart from its header" if task.header and task.format != "jsonl" else ""
        raise UserError(f"{path}:1: no data rows (the file is empty{header}; task '{task.name}')")
    return examples


def _decoded_lines(handle: BinaryIO, path: Path) -> Iterator[str]:
    """Lines of a binary file decoded as UTF-8 (a leading BOM is dropped), one str per line."""
    for number, raw in enumerate(handle, start=1):
        try:
            line = raw.decode("utf-8")
        except UnicodeDecodeError as err:
            raise UserError(
                f"{path}:{number}: invalid UTF-8 (byte {raw[err.start]:#04x} at column "
                f"{err.start + 1}); save the file as UTF-8"
            ) from None
        yield line.removeprefix("\ufeff") if number == 1 else line


def _jsonl_records(lines: Iterable[str], path: Path) -> Iterator[tuple[int, Record]]:
    """(line number, object) for each non-blank JSONL line."""
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as err:
            raise UserError(f"{path}:{number}: invalid JSON ({err.msg} at column {err.colno})") from None
        except ValueError as err:  # e.g. an integer with more digits than Python converts
            raise UserError(f"{path}:{number}: invalid JSON ({str(err).split(';')[0]})") from None
        except RecursionError:
            raise UserError(f"{path}:{number}: invalid JSON (nested too deeply)") from None
        if not isinstance(record, dict):
            raise UserError(f"{path}:{number}: expected a JSON object, got {type(record).__name__}")
        yield number, record


def _table_records(
    lines: Iterable[str], path: Path, task: TaskDef, spec: SplitColumns
) -> tuple[Iterator[tuple[int, Record]], SplitColumns]:
    """(line number, row) for each TSV/CSV data row, and ``spec`` with column names resolved.

    TSV is read with quoting off (as the GLUE processors do); CSV with the default dialect.
    The header, if any, is skipped by position; its fields resolve named columns.
    """
    if task.format == "tsv":
        reader = csv.reader(lines, delimiter="\t", quoting=csv.QUOTE_NONE)
    else:
        reader = csv.reader(lines)
    rows = _csv_rows(reader, path)
    if task.header:
        first = next(rows, None)
        if first is not None:
            spec = _resolve_names(spec, first[1], f"{path}:{first[0]}")
    return _checked_rows(rows, spec.num_columns, path), spec


def _csv_rows(reader: Any, path: Path) -> Iterator[tuple[int, list[str]]]:
    """(first line number, fields) of each non-empty row; csv errors become ``UserError``."""
    while True:
        start = reader.line_num + 1
        try:
            row = next(reader)
        except StopIteration:
            return
        except csv.Error as err:
            raise UserError(f"{path}:{reader.line_num}: malformed row ({err})") from None
        if row:
            yield start, row


def _checked_rows(
    rows: Iterator[tuple[int, list[str]]], num_columns: int | None, path: Path
) -> Iterator[tuple[int, Record]]:
    """Pass rows through, refusing any whose column count differs from ``num_columns``."""
    for number, row in rows:
        if num_columns is not None and len(row) != num_columns:
            raise UserError(
                f"{path}:{number}: expected {num_columns} columns, found {len(row)} "
                "(check the delimiter and stray tabs or quotes)"
            )
        yield number, row


def _resolve_names(spec: SplitColumns, header: list[str], where: str) -> SplitColumns:
    """Replace column names in ``spec`` by their index in ``header``."""
    names = [field.strip() for field in header]

    def index(column: Column | None, what: str) -> Column | None:
        if not isinstance(column, str):
            return column
        if column not in names:
            raise UserError(f"{where}: header has no column {column!r} for {what} (columns: {names})")
        return names.index(column)

    return SplitColumns(index(spec.text_a, "text_a"), index(spec.text_b, "text_b"),
                        index(spec.label, "label"), spec.num_columns)


def _field(record: Record, column: Column, what: str, where: str) -> Any:
    """Value of ``column`` in a row (index) or JSON object (key)."""
    if isinstance(record, dict):
        if column not in record:
            raise UserError(f"{where}: key {column!r} for {what} is missing (keys: {sorted(record)})")
        return record[column]
    if not isinstance(column, int) or not -len(record) <= column < len(record):
        raise UserError(f"{where}: no column {column!r} for {what} (row has {len(record)} columns)")
    return record[column]


def _text(record: Record, column: Column, what: str, where: str) -> str:
    """Non-blank text of ``column``."""
    value = _field(record, column, what, where)
    if not isinstance(value, str) or not value.strip():
        raise UserError(f"{where}: missing {what} in column {column!r} (got {_show(value)})")
    return value


def parse_label(task: TaskDef, label_index: dict[str, int], value: Any, where: str) -> int | float:
    """Class index of a label string (classification) or a finite float score (regression)."""
    if task.head == "classification":
        if isinstance(value, bool) or not isinstance(value, (str, int)):
            raise UserError(f"{where}: label {_show(value)} is not one of {list(task.labels)}")
        key = str(value).strip()
        if key not in label_index:
            raise UserError(f"{where}: label {_show(key)} is not one of {list(task.labels)} (task '{task.name}')")
        return label_index[key]
    not_a_number = f"{where}: score {_show(value)} is not a number (task '{task.name}' is a regression task)"
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        raise UserError(not_a_number)
    try:
        score = float(value)
    except ValueError:
        raise UserError(not_a_number) from None
    except OverflowError:  # an integer beyond the float range
        score = math.inf
    if not math.isfinite(score):
        raise UserError(f"{where}: score {_show(value)} is not finite (task '{task.name}')")
    return score


def _show(value: Any, limit: int = 60) -> str:
    """``repr(value)`` cut to ``limit`` characters (error messages stay one short line)."""
    try:
        text = repr(value)
    except ValueError:  # an int too long to print
        text = f"<{type(value).__name__}>"
    return text if len(text) <= limit else text[:limit] + "..."


def _example(
    task: TaskDef, spec: SplitColumns, label_index: dict[str, int], record: Record, where: str
) -> Example:
    """One ``Example`` from one record."""
    text_a = _text(record, spec.text_a, "text_a", where)
    text_b = None if spec.text_b is None else _text(record, spec.text_b, "text_b", where)
    label = parse_label(task, label_index, _field(record, spec.label, "label", where), where)
    return Example(text_a, text_b, label)
