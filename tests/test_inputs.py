"""Reading new data for prediction (tasks/inputs.py): columns by header name or by the task's layout; errors."""

from __future__ import annotations

import pytest

from basics.errors import UserError
from tasks.inputs import read_inputs
from tasks.registry import default_registry

REGISTRY = default_registry()


def write(tmp_path, name: str, text: str):
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def test_tsv_by_header_names_ignores_other_columns_and_a_bom(tmp_path):
    path = write(tmp_path, "x.tsv", "\ufeffid\t#1 String\tlabel\t#2 String\n7\ta \"quoted\b\t1\tb\n")
    rows = read_inputs(REGISTRY.get("mrpc"), path, id_column="id")
    assert [(e.text_a, e.text_b, e.label) for e in rows.examples] == [('a "quoted\b', "b", None)]
    assert rows.ids == ["7"]


def test_csv_with_quotes_and_jsonl_by_keys(tmp_path):
    csv_rows = read_inputs(REGISTRY.get("sst2"), write(tmp_path, "x.csv", 'sentence\n"good, really"\nbad\n'))
    assert [e.text_a for e in csv_rows.examples] == ["good, really", "bad"]
    jsonl = write(tmp_path, "x.jsonl", '{"premise": "p", "hypothesis": "h"}\n\n{"premise": "q", "hypothesis": "i"}\n')
    rows = read_inputs(REGISTRY.get("rte"), jsonl, columns=["premise", "hypothesis"])
    assert [(e.text_a, e.text_b) for e in rows.examples] == [("p", "h"), ("q", "i")]


def test_a_file_without_header_reads_in_the_tasks_layout(tmp_path):
    path = write(tmp_path, "dev.tsv", "gj04\t1\t\tThe sailors rode the breeze.\ngj04\t0\t*\tThe more we study.\n")
    rows = read_inputs(REGISTRY.get("cola"), path)
    assert [e.text_a for e in rows.examples] == ["The sailors rode the breeze.", "The more we study."]
    with pytest.raises(UserError, match="dev.tsv:2: expected 4 columns, found 3"):
        read_inputs(REGISTRY.get("cola"), write(tmp_path, "dev.tsv", "a\t1\t\tok\nb\t0\tbad\n"))


@pytest.mark.parametrize("name, text, task, columns, fragment", [
    ("x.tsv", "sentence2\tsentence1\n", "rte", (), "no data rows"),
    ("x.tsv", "s1\ts2\na\tb\n", "rte", (), "header has no column(s) ['sentence1', 'sentence2']"),
    ("x.tsv", "sentence\n", "sst2", ("a", "b"), "reads 1 input column(s)"),
    ("x.jsonl", "[1, 2]\n", "sst2", (), "x.jsonl:1: expected a JSON object"),
    ("x.xml", "<a/>", "sst2", (), "cannot tell the format"),
])
def test_bad_files_name_the_file_and_line(name, text, task, columns, fragment, tmp_path):
    with pytest.raises(UserError, match=None) as err:
        read_inputs(REGISTRY.get(task), write(tmp_path, name, text), columns=columns)
    assert fragment in str(err.value) and "\n" not in str(err.value)
