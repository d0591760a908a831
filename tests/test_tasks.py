"""Task definitions, registry, readers (real GLUE files and malformed files) and hub fallback."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import types
from collections import Counter
from pathlib import Path

import pytest

from basics.errors import UserError
from tasks.hub import load_hub_split
from tasks.readers import read_split, split_path
from tasks.registry import TaskRegistry, default_registry, load_task_defs, parse_task_list
from tasks.task_def import Example, TaskDef

GLUE_TASKS = ["cola", "sst2", "mrpc", "stsb", "qqp", "mnli", "qnli", "rte", "wnli"]
PACKAGED_TASKS = GLUE_TASKS + ["squad", "squad_v2"]  # tasks/glue.yaml, then tasks/squad.yaml

# task, split, official row count, label distribution (label string -> count) or None
OFFICIAL = [
    ("cola", "train", 8551, None),
    ("cola", "dev", 1043, {"1": 721, "0": 322}),
    ("sst2", "train", 67349, None),
    ("sst2", "dev", 872, {"1": 444, "0": 428}),
    ("mrpc", "train", 3668, None),
    ("mrpc", "dev", 408, {"1": 279, "0": 129}),
    ("stsb", "train", 5749, None),
    ("stsb", "dev", 1500, None),
    ("qqp", "train", 363846, None),
    ("qqp", "dev", 40430, None),
    ("mnli", "train", 392702, None),
    ("mnli", "dev_matched", 9815, None),
    ("mnli", "dev_mismatched", 9832, None),
    ("qnli", "train", 104743, None),
    ("qnli", "dev", 5463, {"entailment": 2702, "not_entailment": 2761}),
    ("rte", "train", 2490, None),
    ("rte", "dev", 277, {"entailment": 146, "not_entailment": 131}),
    ("wnli", "train", 635, None),
    ("wnli", "dev", 71, {"1": 31, "0": 40}),
]


@pytest.fixture(scope="module")
def registry() -> TaskRegistry:
    return default_registry()


# ---------------------------------------------------------------- real GLUE files


@pytest.mark.integration
@pytest.mark.parametrize("name, split, rows, distribution", OFFICIAL, ids=[f"{t}-{s}" for t, s, _, _ in OFFICIAL])
def test_glue_split_has_official_rows_or_is_reported_missing(glue, registry, name, split, rows, distribution):
    task = registry.get(name)
    if not (glue / task.files[split]).is_file():  # MNLI, QQP, QNLI-train are absent from the shared copy
        with pytest.raises(UserError, match=f"task '{name}': {split} file not found: .*{task.files[split]}"):
            read_split(task, glue, split)
        return
    examples = read_split(task, glue, split)
    assert len(examples) == rows
    if task.head == "regression":
        assert all(0.0 <= ex.label <= 5.0 for ex in examples)
        assert len({ex.label for ex in examples}) > 50
    else:
        counts = Counter(task.labels[ex.label] for ex in examples)
        assert set(counts) == set(task.labels)
        if distribution is not None:
            assert counts == distribution
    assert all(ex.text_a.strip() for ex in examples)
    assert all((ex.text_b is None) == (task.columns(split).text_b is None) for ex in examples)


@pytest.mark.integration
def test_glue_rows_hold_the_right_columns(glue, registry):
    rte = read_split(registry.get("rte"), glue, "dev", max_samples=1)[0]
    assert rte.text_b == "Christopher Reeve had an accident." and rte.label == 1  # not_entailment
    mrpc = read_split(registry.get("mrpc"), glue, "train", max_samples=1)[0]  # header with a BOM
    assert mrpc.text_a.startswith("Amrozi accused") and mrpc.label == 1
    cola = read_split(registry.get("cola"), glue, "dev", max_samples=1)[0]  # no header
    assert cola == Example("The sailors rode the breeze clear of the rocks.", None, 1)
    stsb = read_split(registry.get("stsb"), glue, "dev", max_samples=1)[0]
    assert stsb == Example("A man with a hard hat is dancing.", "A man wearing a hard hat is dancing.", 5.0)


@pytest.mark.integration
def test_max_samples_keeps_the_first_rows(glue, registry):
    task = registry.get("sst2")
    assert read_split(task, glue, "dev", max_samples=5) == read_split(task, glue, "dev")[:5]
    with pytest.raises(UserError, match="max_samples"):
        read_split(task, glue, "dev", max_samples=0)


def test_missing_glue_dir_says_how_to_set_it(registry, tmp_path):
    with pytest.raises(UserError, match=r"GLUE directory not found: .*nowhere \(set --glue-dir or GLUE_DIR\)"):
        read_split(registry.get("rte"), tmp_path / "nowhere", "dev")
    with pytest.raises(UserError, match="has no split 'test'.*train, dev"):
        split_path(registry.get("rte"), tmp_path, "test")


# ---------------------------------------------------------------- glue.yaml as data


def test_glue_yaml_defines_the_nine_tasks(registry):
    assert registry.names() == PACKAGED_TASKS


@pytest.mark.parametrize("name, labels, metrics, primary", [
    ("cola", ("0", "1"), ("mcc",), "mcc"),
    ("sst2", ("0", "1"), ("accuracy",), "accuracy"),
    ("mrpc", ("0", "1"), ("accuracy", "f1"), "accuracy"),
    ("stsb", (), ("pearson", "spearman"), "pearson"),
    ("qqp", ("0", "1"), ("accuracy", "f1"), "accuracy"),
    ("mnli", ("entailment", "neutral", "contradiction"), ("accuracy",), "accuracy"),  # hub order
    ("qnli", ("entailment", "not_entailment"), ("accuracy",), "accuracy"),
    ("rte", ("entailment", "not_entailment"), ("accuracy",), "accuracy"),
    ("wnli", ("0", "1"), ("accuracy",), "accuracy"),
])
def test_glue_task_labels_follow_hub_order_and_metrics(registry, name, labels, metrics, primary):
    task = registry.get(name)
    assert (task.labels, task.metrics, task.primary) == (labels, metrics, primary)
    assert task.num_labels == (1 if name == "stsb" else len(labels))
    assert task.hub["path"] == "nyu-mll/glue" and task.hub["name"] == name
    assert set(task.hub["splits"]) == set(task.files)


def test_mnli_layout_differs_per_split(registry):
    mnli = registry.get("mnli")
    assert mnli.dev_splits == ("dev_matched", "dev_mismatched")
    assert mnli.columns("train").num_columns == 12 and mnli.columns("dev_matched").num_columns == 16
    assert (mnli.columns("dev_mismatched").text_a, mnli.columns("dev_mismatched").label) == (8, -1)
    assert mnli.metric_key("accuracy", "dev_matched") == "accuracy_m"
    assert mnli.hub["splits"]["dev_mismatched"] == "validation_mismatched"


@pytest.mark.integration
def test_mnli_reads_gold_label_from_the_last_column(tmp_path, registry):
    mnli = registry.get("mnli")
    head = ["index", "promptID", "pairID", "genre", "b1", "b2", "p1", "p2", "sentence1", "sentence2"]
    train = head + ["label1", "gold_label"]
    dev = head + ["label1", "label2", "label3", "label4", "label5", "gold_label"]
    _write(tmp_path / "MNLI/train.tsv", _tsv([train, ["x"] * 8 + ["p", "h", "neutral", "neutral"]]))
    _write(tmp_path / "MNLI/dev_matched.tsv", _tsv([dev, ["x"] * 8 + ["p", "h"] + ["neutral"] * 5 + ["contradiction"]]))
    assert read_split(mnli, tmp_path, "train") == [Example("p", "h", 1)]
    assert read_split(mnli, tmp_path, "dev_matched") == [Example("p", "h", 2)]


# ---------------------------------------------------------------- registry


@pytest.mark.parametrize("spelling, name", [
    ("SST-2", "sst2"), ("sst2", "sst2"), ("sst_2", "sst2"), (" Sst-2 ", "sst2"),
    ("STS-B", "stsb"), ("sts_b", "stsb"), ("CoLA", "cola"), ("RTE", "rte"),
    ("MNLI-m", "mnli"), ("multinli", "mnli"), ("QNLI", "qnli"),
])
def test_lookup_is_case_insensitive_and_alias_aware(registry, spelling, name):
    assert registry.get(spelling).name == name
    assert spelling in registry


def test_unknown_task_lists_known_tasks(registry):
    with pytest.raises(UserError) as err:
        registry.get("rtee")
    message = str(err.value)
    assert "'rtee'" in message and all(name in message for name in GLUE_TASKS)
    assert "did you mean 'rte'" in message


def test_duplicate_name_or_alias_is_rejected(registry):
    rte = registry.get("rte")
    fresh = TaskRegistry()
    fresh.register(rte)
    with pytest.raises(UserError, match="already used by task 'rte'"):
        fresh.register(rte)
    clash = TaskDef(name="other", head="classification", loss="cross_entropy", labels=("a", "b"),
                    metrics=("accuracy",), primary="accuracy", files={"dev": "x.tsv"},
                    dev_splits=("dev",), aliases=("RTE",))
    with pytest.raises(UserError, match="name or alias 'rte' is already used by task 'rte'"):
        fresh.register(clash)
    assert fresh.names() == ["rte"]


def test_user_file_cannot_redefine_a_glue_task(tmp_path):
    path = _write(tmp_path / "mine.yaml", _user_yaml(name="rte"))
    with pytest.raises(UserError, match=f"task 'rte' \\(from {path}\\).*already used by task 'rte'"):
        default_registry(extra=[path])


@pytest.mark.parametrize("spec, names", [
    ("rte,mrpc, STS-B", ["rte", "mrpc", "stsb"]),
    ("RTE,rte,Rte", ["rte"]),
    ("mnli-m,mnli-mm", ["mnli"]),
])
def test_parse_task_list(registry, spec, names):
    assert [task.name for task in parse_task_list(spec, registry)] == names


@pytest.mark.parametrize("spec, match", [
    ("", "empty task list"), ("  ", "empty task list"), ("rte,,mrpc", "empty task name"),
    ("rte,squadd", "unknown task 'squadd'"),
])
def test_parse_task_list_errors(registry, spec, match):
    with pytest.raises(UserError, match=match):
        parse_task_list(spec, registry)


# ---------------------------------------------------------------- user tasks from YAML


def _write(path: Path, content: str | bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content, encoding="utf-8")
    return path


def _tsv(rows: list[list[str]]) -> str:
    return "".join("\t".join(row) + "\n" for row in rows)


def _user_yaml(**fields: object) -> str:
    """One user task entry: a binary TSV task with header, then ``fields`` overriding keys."""
    entry = {"name": "toy", "head": "classification", "labels": ["no", "yes"], "metrics": ["accuracy"],
             "files": {"train": "data/train.tsv", "dev": "data/dev.tsv"}, "text_a": 0, "text_b": 1,
             "label": 2, "num_columns": 3}
    entry.update(fields)
    return json.dumps({"tasks": [entry]})  # JSON is valid YAML


def test_user_tasks_in_tsv_csv_and_jsonl_load_without_code(tmp_path):
    data = tmp_path / "my data"
    _write(data / "pairs.tsv", "first\tsecond\tlabel\nA cat.\tA dog.\tno\nIt rains.\tIt pours.\tyes\n")
    _write(data / "reviews.csv", 'id,review,sentiment\n1,"Great, really ""great"" film",pos\n'
                                 '2,"Two\nlines",neg\n3,Dull.,neg\n')
    _write(data / "sim.jsonl", '{"first": "A man eats.", "second": "A man is eating.", "score": 4.5}\n'
                               '\n{"first": "Hello.", "second": "Bye.", "score": "0.25"}\n')
    absolute = _write(tmp_path / "elsewhere" / "abs.tsv", "x\ty\t1\n")
    path = _write(tmp_path / "conf" / "my_tasks.yaml", textwrap.dedent(f"""\
        tasks:
          - name: pairs
            head: classification
            labels: ["no", "yes"]
            metrics: [accuracy, f1]
            files: {{train: "../my data/pairs.tsv", dev: "../my data/pairs.tsv"}}
            text_a: first          # header names work for TSV too
            text_b: second
            label: label
            num_columns: 3
          - name: reviews
            aliases: [Movie-Reviews]
            head: classification
            labels: [neg, pos]
            metrics: [accuracy]
            files: {{dev: "../my data/reviews.csv"}}
            format: csv
            text_a: review
            label: sentiment
          - name: sim
            head: regression
            metrics: [spearman, pearson]
            files: {{train: "../my data/sim.jsonl", dev: "../my data/sim.jsonl"}}
            format: jsonl
            text_a: first
            text_b: second
            label: score
          - name: absolute
            head: classification
            labels: [0, 1]
            metrics: [mcc]
            files: {{dev: "{absolute}"}}
            header: false
            text_a: 0
            label: 2
        """))
    registry = default_registry(extra=[path])
    assert registry.names() == PACKAGED_TASKS + ["pairs", "reviews", "sim", "absolute"]
    pairs = registry.get("PAIRS")
    assert (pairs.loss, pairs.primary, pairs.dev_splits, pairs.num_labels) == ("cross_entropy", "accuracy", ("dev",), 2)
    assert read_split(pairs, None, "train") == [Example("A cat.", "A dog.", 0), Example("It rains.", "It pours.", 1)]
    reviews = registry.get("movie-reviews")
    assert read_split(reviews, None, "dev") == [
        Example('Great, really "great" film', None, 1), Example("Two\nlines", None, 0), Example("Dull.", None, 0)]
    sim = registry.get("sim")
    assert (sim.loss, sim.primary, sim.num_labels) == ("mse", "spearman", 1)
    assert read_split(sim, None, "dev") == [Example("A man eats.", "A man is eating.", 4.5),
                                            Example("Hello.", "Bye.", 0.25)]
    assert read_split(registry.get("absolute"), Path("/unused"), "dev") == [Example("x", None, 1)]


# ---------------------------------------------------------------- malformed YAML


@pytest.mark.parametrize("fields, match", [
    ({"head": "ranking"}, "unknown head 'ranking' \\(valid: classification, regression, span\\)"),
    ({"loss": "hinge"}, "loss 'hinge' does not fit head 'classification' \\(valid: cross_entropy\\)"),
    ({"metrics": ["bleu"]}, "unknown metric 'bleu' \\(valid: accuracy, f1, mcc, pearson, spearman, exact\\)"),
    ({"metrics": ["pearson"]}, "metric 'pearson' does not fit head 'classification'"),
    ({"format": "xml"}, "unknown format 'xml' \\(valid: tsv, csv, jsonl, squad\\)"),
    ({"primary": "f1"}, "primary metric 'f1' is not in metrics"),
    ({"labels": ["a", "b", "c"], "metrics": ["f1"]}, "'f1' is binary"),
    ({"labels": [True, False]}, "quote it in YAML"),
    ({"labels": ["a", "a"]}, "duplicates"),
    ({"dev_splits": ["test"]}, "dev split 'test' has no file"),
    ({"text_a": 5}, "text_a=5 is out of range for 3 columns"),
    ({"format": "jsonl"}, "must be a key name for jsonl"),
    ({"head": "span", "labels": []}, "a span task reads SQuAD JSON files"),
    ({"format": "squad"}, "format 'squad' is for span tasks"),
    ({"no_answer": True}, "'no_answer' is for span tasks"),
    ({"overrides": {"dev": {"sep": ","}}}, "unknown keys \\['sep'\\]"),
    ({"hub": {"path": "x"}}, "missing keys \\['splits', 'text_a', 'label'\\]"),
    ({"colour": "red"}, "unknown keys \\['colour'\\]"),
    ({"name": "My Task"}, "task name 'My Task' is invalid"),
])
def test_bad_task_yaml_names_file_line_and_task(tmp_path, fields, match):
    path = _write(tmp_path / "bad.yaml", "# comment\n" + _user_yaml(**fields))
    with pytest.raises(UserError, match=match) as err:
        load_task_defs(path)
    assert str(err.value).startswith(f"{path}:2: ")


@pytest.mark.parametrize("content, match", [
    ("tasks: [ {name: x\n", ":2: invalid YAML"),
    ("- just a list\n", "expected a mapping"),
    ("tasks: []\n", "non-empty list"),
    ("files_relative_to: cwd\ntasks: [{}]\n", "files_relative_to: 'cwd' is not one of yaml, glue_dir"),
])
def test_bad_yaml_structure(tmp_path, content, match):
    path = _write(tmp_path / "bad.yaml", content)
    with pytest.raises(UserError, match=match) as err:
        load_task_defs(path)
    assert str(path) in str(err.value)


def test_missing_task_file(tmp_path):
    with pytest.raises(UserError, match="task file not found: .*nope.yaml"):
        default_registry(extra=[tmp_path / "nope.yaml"])


# ---------------------------------------------------------------- malformed data files

GOOD_RTE = "index\tsentence1\tsentence2\tlabel\n0\tA.\tB.\tentailment\n"

# task, file under the GLUE dir, content, line of the error, message
MALFORMED = [
    ("rte", "RTE/dev.tsv", GOOD_RTE + "1\tA.\tB.\n", 3, "expected 4 columns, found 3"),
    ("rte", "RTE/dev.tsv", GOOD_RTE + "1\tA.\tB\tC.\tentailment\n", 3, "expected 4 columns, found 5"),
    ("rte", "RTE/dev.tsv", GOOD_RTE + "1\tA.\tB.\tmaybe\n", 3,
     "label 'maybe' is not one of \\['entailment', 'not_entailment'\\]"),
    ("rte", "RTE/dev.tsv", GOOD_RTE + "1\t \tB.\tentailment\n", 3, "missing text_a"),
    ("rte", "RTE/dev.tsv", "index\tsentence1\tsentence2\tlabel\n", 1, "no data rows"),
    ("cola", "CoLA/dev.tsv", b"", 1, "no data rows"),
    ("cola", "CoLA/dev.tsv", b"gj04\t1\t\tFine.\ngj04\t1\t\tBad \xff byte.\n", 2, "invalid UTF-8"),
    ("stsb", "STS-B/dev.tsv", "h\n" + "\t".join(["0"] * 7 + ["A.", "B.", "five"]) + "\n", 2,
     "score 'five' is not a number"),
    ("stsb", "STS-B/dev.tsv", "h\n" + "\t".join(["0"] * 7 + ["A.", "B.", "nan"]) + "\n", 2, "not finite"),
]


@pytest.mark.parametrize("name, relative, content, line, match", MALFORMED)
def test_malformed_glue_file_names_file_and_line(tmp_path, registry, name, relative, content, line, match):
    path = _write(tmp_path / relative, content)
    with pytest.raises(UserError, match=match) as err:
        read_split(registry.get(name), tmp_path, "dev")
    assert str(err.value).startswith(f"{path}:{line}: ")


JSONL = {"format": "jsonl", "text_a": "a", "text_b": "b", "label": "y"}
CSV = {"format": "csv", "header": True, "text_a": "t", "text_b": None, "label": "l", "num_columns": None}


@pytest.mark.parametrize("fields, content, line, match", [
    (JSONL, '{"a": "x", "b": "y", "y": "no"}\n{"a": "x",\n', 2, "invalid JSON"),
    (JSONL, '{"a": "x", "y": "no"}\n', 1, "key 'b' for text_b is missing"),
    (JSONL, '{"a": "x", "b": "y", "y": "maybe"}\n', 1, "label 'maybe' is not one of \\['no', 'yes'\\]"),
    ({**JSONL, "text_b": None}, "[1, 2]\n", 1, "expected a JSON object"),
    (CSV, "t,l\nfine,no\n,yes\n", 3, "missing text_a"),
    ({**CSV, "text_a": "text"}, "t,l\nfine,no\n", 1, "header has no column 'text'"),
    ({"head": "regression", "labels": [], "metrics": ["pearson"]}, "a\tb\t1.0\na\tb\t\n", 2,
     "score '' is not a number"),
])
def test_malformed_user_file_names_file_and_line(tmp_path, fields, content, line, match):
    data = _write(tmp_path / "data" / "dev.txt", content)
    fields = {"files": {"dev": "data/dev.txt"}, "header": False, **fields}
    (task,) = load_task_defs(_write(tmp_path / "t.yaml", _user_yaml(**fields)))
    with pytest.raises(UserError, match=match) as err:
        read_split(task, None, "dev")
    assert str(err.value).startswith(f"{data}:{line}: ")


def test_missing_user_file_names_task_and_path(tmp_path):
    (task,) = load_task_defs(_write(tmp_path / "t.yaml", _user_yaml()))
    with pytest.raises(UserError, match=f"task 'toy': train file not found: {tmp_path}/data/train.tsv"):
        read_split(task, None, "train")


# ---------------------------------------------------------------- Hugging Face hub fallback


def test_hub_offline_says_to_use_glue_dir(tmp_path):
    # a fresh interpreter, so HF_HUB_OFFLINE is read by datasets at import time (as for a user)
    code = ("from tasks.registry import default_registry\nfrom tasks.hub import load_hub_split\n"
            "from basics.errors import UserError\n"
            "try:\n    load_hub_split(default_registry().get('rte'), 'dev', max_samples=3)\n"
            "except UserError as err:\n    print('USERERROR', err)\n")
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf")}
    env.pop("HF_DATASETS_CACHE", None)
    result = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=900,
                            cwd=Path(__file__).resolve().parents[1])
    assert "USERERROR could not load rte from the Hugging Face hub" in result.stdout, result.stderr
    assert "pass --glue-dir DIR or set GLUE_DIR" in result.stdout


def _fake_datasets(rows: list[dict], calls: list) -> types.ModuleType:
    def load_dataset(path, name=None, split=None):
        calls.append((path, name, split))
        if rows is None:
            raise ConnectionError("no network")
        return rows

    module = types.ModuleType("datasets")
    module.load_dataset = load_dataset
    return module


def test_hub_rows_map_to_examples(monkeypatch, registry):
    calls: list = []
    rows = [{"sentence1": "A.", "sentence2": "B.", "label": 1, "idx": 0}]
    monkeypatch.setitem(sys.modules, "datasets", _fake_datasets(rows, calls))
    assert load_hub_split(registry.get("rte"), "dev", max_samples=2) == [Example("A.", "B.", 1)]
    assert calls == [("nyu-mll/glue", "rte", "validation[:2]")]
    rows[0]["label"] = 4.2
    assert load_hub_split(registry.get("stsb"), "dev") == [Example("A.", "B.", 4.2)]
    rows[0]["label"] = -1  # the unlabelled GLUE test split
    with pytest.raises(UserError, match="label -1 is not a class index 0..1"):
        load_hub_split(registry.get("rte"), "dev")


def test_hub_failures_become_user_errors(monkeypatch, registry):
    monkeypatch.setitem(sys.modules, "datasets", _fake_datasets(None, []))
    with pytest.raises(UserError, match="could not load mnli from the Hugging Face hub \\(ConnectionError: no network\\)"
                                        ": pass --glue-dir DIR or set GLUE_DIR"):
        load_hub_split(registry.get("mnli"), "dev_matched")
    with pytest.raises(UserError, match="no hub split for 'test'"):
        load_hub_split(registry.get("mnli"), "test")
