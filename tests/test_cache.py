"""The tokenization cache never serves stale data: changing any input of a split's tokenization (each field of
the task definition, the file's content, the tokenizer, the max length, the subsampling) after the cache is warm
gives exactly what a cold cache gives; a corrupt or truncated entry is a cache miss, not a crash."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

import mtl.data
from basics.errors import UserError
from mtl.config import TrainConfig
from mtl.run import load_split
from tasks.registry import default_registry
from tests.tiny_run import SPECIAL, WORDS

ROWS = ["sentence\tlabel", "good film\tpos", "bad plot\tneg", "the actor was great\tpos", "dull scene\tneg",
        "a fine plot\tpos", "awful film and bad actor\tneg"]


@dataclass
class Setup:
    """A one-task YAML over a TSV file, a saved tokenizer, and a cache folder: what :func:`load` reads."""

    root: Path
    fields: dict
    tokenizer_dir: Path

    def write(self, **changes) -> Path:
        fields = {**self.fields, **changes}
        lines = ["tasks:", "  - name: mine"] + [f"    {k}: {v}" for k, v in fields.items() if v is not None]
        path = self.root / "tasks.yaml"
        path.write_text("\n".join(lines) + "\n")
        return path


def save_tokenizer(path: Path, words: list[str]) -> Path:
    from transformers import BertTokenizer

    BertTokenizer(vocab={w: i for i, w in enumerate(SPECIAL + words)}).save_pretrained(path)
    return path


def tokenizer(path: Path):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(path)


@pytest.fixture
def setup(tmp_path) -> Setup:
    (tmp_path / "train.tsv").write_text("\n".join(ROWS) + "\n")
    fields = {"head": "classification", "labels": '["neg", "pos"]', "metrics": "[accuracy]",
              "files": "{train: train.tsv, dev: train.tsv}", "text_a": 0, "label": 1, "format": "tsv",
              "header": "true"}
    return Setup(tmp_path, fields, save_tokenizer(tmp_path / "tok", WORDS))


def load(setup: Setup, cache: Path | None, tok_dir: Path | None = None, max_samples: int | None = None,
         **config) -> mtl.data.TokenizedSplit:
    """The train split of task ``mine`` through mtl.run.load_split (the path every run takes)."""
    task_def = setup.root / "tasks.yaml"
    task = default_registry([task_def]).get("mine")
    cfg = TrainConfig.of(tasks=["mine"], task_def=[str(task_def)], cache_dir=str(cache or setup.root / "cold"),
                         **config)
    return load_split(task, "train", tokenizer(tok_dir or setup.tokenizer_dir), cfg, max_samples)


def outcome(fn):
    """The split as plain lists, or the UserError message: what a run would get."""
    try:
        data = fn()
    except UserError as exc:
        return str(exc)
    return {"ids": [x.tolist() for x in data.input_ids], "labels": data.labels.tolist(),
            "dtype": str(data.labels.dtype)}


def cold(setup: Setup, **kwargs):
    """What an empty cache gives (a new folder every call)."""
    folder = setup.root / f"cold-{len(list(setup.root.glob('cold-*')))}"
    return outcome(lambda: load(setup, folder, **kwargs))


def warm_then_changed(setup: Setup, before: dict, after: dict, load_before: dict | None = None,
                      load_after: dict | None = None):
    """(warm outcome after the change, cold outcome after the change, outcome before the change)."""
    cache = setup.root / "warm"
    setup.write(**before)
    first = outcome(lambda: load(setup, cache, **(load_before or {})))
    assert not isinstance(first, str), first
    setup.write(**after)
    return outcome(lambda: load(setup, cache, **(load_after or {}))), cold(setup, **(load_after or {})), first


# each field of the task definition: (before, after)
TASK_FIELDS = {
    "labels order": ({}, {"labels": '["pos", "neg"]'}),
    "label column": ({}, {"text_a": 1, "label": 0}),  # a cold cache refuses: 'good film' is no label
    "text column": ({"labels": '["neg", "pos", "label"]', "header": "false"},
                    {"labels": '["neg", "pos", "label"]', "header": "false", "text_a": 1, "label": 0}),
    "column name typo": ({"text_a": "sentence"}, {"text_a": "sentense"}),
    "format": ({}, {"format": "csv"}),
    "header": ({"labels": '["neg", "pos", "label"]'}, {"labels": '["neg", "pos", "label"]', "header": "false"}),
    "head type": ({"labels": '["neg", "pos"]'}, {"head": "regression", "labels": None, "metrics": "[pearson]"}),
    "num_columns": ({}, {"num_columns": 3}),
}


@pytest.mark.parametrize("field", list(TASK_FIELDS))
def test_changing_a_task_field_never_serves_the_warm_cache(field, setup):
    before, after = TASK_FIELDS[field]
    if field == "head type":  # a regression label must be a number: make the file's labels numbers
        (setup.root / "train.tsv").write_text("\n".join(r.replace("\tpos", "\t1").replace("\tneg", "\t0")
                                                        for r in ROWS) + "\n")
        before = {**before, "labels": '["0", "1"]'}
    warm, fresh, first = warm_then_changed(setup, before, after)
    assert warm == fresh
    assert warm != first  # the change matters: a stale cache would have returned ``first``


def test_same_size_same_mtime_new_content_is_new_data(setup):
    setup.write()
    cache, path = setup.root / "warm", setup.root / "train.tsv"
    first = outcome(lambda: load(setup, cache))
    stat = path.stat()
    path.write_text(path.read_text().replace("good film\tpos", "good film\tneg"))  # 3 bytes for 3 bytes
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert (path.stat().st_size, path.stat().st_mtime_ns) == (stat.st_size, stat.st_mtime_ns)
    warm = outcome(lambda: load(setup, cache))
    assert warm == cold(setup) and warm["labels"][0] == 0 and first["labels"][0] == 1


def test_another_tokenizer_in_the_same_folder_is_a_miss(setup):
    setup.write()
    cache = setup.root / "warm"
    first = outcome(lambda: load(setup, cache))
    save_tokenizer(setup.tokenizer_dir, list(reversed(WORDS)))  # same path, same size, other ids
    warm = outcome(lambda: load(setup, cache))
    assert warm == cold(setup) and warm != first


@pytest.mark.parametrize("before,after", [
    ({"max_seq_length": 8}, {"max_seq_length": 4}),
    ({"subsample": "first", "max_train_samples": 3}, {"subsample": "first", "max_train_samples": 4}),
    ({"subsample": "first", "max_train_samples": 3}, {"subsample": "random", "max_train_samples": 3}),
    ({"subsample": "random", "max_train_samples": 3}, {"subsample": "random", "max_train_samples": 5}),
])
def test_max_length_and_subsampling(before, after, setup):
    def split_args(values):
        values = dict(values)
        return {"max_samples": values.pop("max_train_samples", None), **values}

    warm, fresh, first = warm_then_changed(setup, {}, {}, split_args(before), split_args(after))
    assert warm == fresh and warm != first


def test_unchanged_inputs_hit_the_cache(setup, monkeypatch):
    setup.write()
    cache = setup.root / "warm"
    first = outcome(lambda: load(setup, cache))
    calls = []
    real = mtl.data.tokenize
    monkeypatch.setattr(mtl.data, "tokenize", lambda *a, **k: calls.append(1) or real(*a, **k))
    assert outcome(lambda: load(setup, cache)) == first and calls == []
    os.utime(setup.root / "train.tsv")  # a new mtime alone is the same data
    assert outcome(lambda: load(setup, cache)) == first and calls == []


def corrupt(path: Path, how: str) -> None:
    data = path.read_bytes()
    if how == "truncated":
        path.write_bytes(data[: len(data) // 2])
    elif how == "garbage":
        path.write_bytes(b"\x00not a torch file" * 10)
    elif how == "empty":
        path.write_bytes(b"")
    elif how == "wrong structure":
        torch.save({"task": "mine", "split": "train", "input_ids": [], "labels": torch.zeros(3)}, path)
    elif how == "inconsistent":
        entry = torch.load(path, weights_only=True)
        entry["labels"] = entry["labels"][:2]
        torch.save(entry, path)
    elif how == "made for other inputs":
        entry = torch.load(path, weights_only=True)
        entry["key"] = entry["key"].replace('"max_length": 128', '"max_length": 64')
        torch.save(entry, path)


@pytest.mark.parametrize("how", ["truncated", "garbage", "empty", "wrong structure", "inconsistent",
                                 "made for other inputs"])
@pytest.mark.parametrize("read_only", [False, True])
def test_a_corrupt_entry_is_a_miss_not_a_crash(how, read_only, setup, monkeypatch):
    setup.write()
    cache = setup.root / "warm"
    first = outcome(lambda: load(setup, cache))
    (entry,) = cache.glob("mine-train-*.pt")
    corrupt(entry, how)
    if read_only:  # a cache folder nobody may change (root ignores chmod, so refuse every change here)
        def refuse(*args, **kwargs):
            raise PermissionError(13, "Permission denied")

        monkeypatch.setattr(Path, "unlink", refuse)
        monkeypatch.setattr(mtl.data, "atomic_write", refuse)
    assert outcome(lambda: load(setup, cache)) == first
    if not read_only:  # rebuilt: the entry is whole again and is served
        assert torch.load(entry, weights_only=True)["key"]
        assert outcome(lambda: load(setup, cache)) == first
