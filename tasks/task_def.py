"""A task is data: where its files are, which columns hold text and label, its head and metrics.

``TaskDef`` validates itself in ``__post_init__`` and raises ``UserError`` naming the task,
the bad value and the valid options; ``tasks.registry.load_task_defs`` adds the YAML file
and line. See the header of ``tasks/glue.yaml`` for the YAML schema.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, NoReturn

from basics.errors import UserError
from tasks.metrics import CLASSIFICATION_METRICS, METRICS, REGRESSION_METRICS
from tasks.squad_metrics import SPAN_METRICS

LOSSES_BY_HEAD: dict[str, tuple[str, ...]] = {
    "classification": ("cross_entropy",),
    "regression": ("mse",),
    "span": ("span_cross_entropy",),  # mean of the start and end position cross-entropies
}
METRICS_BY_HEAD: dict[str, tuple[str, ...]] = {
    "classification": CLASSIFICATION_METRICS,
    "regression": REGRESSION_METRICS,
    "span": SPAN_METRICS,
}
ALL_METRICS: tuple[str, ...] = tuple(dict.fromkeys([*METRICS, *SPAN_METRICS]))
FORMATS: tuple[str, ...] = ("tsv", "csv", "jsonl", "squad")
TABLE_FORMATS: tuple[str, ...] = ("tsv", "csv", "jsonl")  # what new data to predict on may be (span tasks: squad)
NAMED_COLUMN_FORMATS: tuple[str, ...] = ("jsonl", "squad")  # formats whose columns are key names
OVERRIDE_KEYS: tuple[str, ...] = ("text_a", "text_b", "label", "num_columns")
SUBMISSION_SUFFIX = ".tsv"  # GLUE leaderboard files are TSV
HUB_KEYS: tuple[str, ...] = ("path", "name", "splits", "text_a", "text_b", "label")
HUB_REQUIRED: tuple[str, ...] = ("path", "splits", "text_a", "label")
_NAME_RE = re.compile(r"^[a-z][a-z0-9_]*$")
_ALIAS_RE = re.compile(r"^[^\s,]+$")

Column = str | int
"""A column: 0-based index for TSV/CSV (negative counts from the end, -1 = last column),
or a name: a JSONL key, or a header field of a CSV/TSV file that has a header."""


@dataclass(frozen=True)
class Example:
    """One pair. ``label``: class index (classification), float score (regression), or None (new data to predict)."""

    text_a: str
    text_b: str | None
    label: int | float | None


@dataclass(frozen=True)
class SplitColumns:
    """Where the fields of one split live (task columns merged with that split's overrides)."""

    text_a: Column
    text_b: Column | None
    label: Column
    num_columns: int | None


@dataclass(frozen=True, kw_only=True)
class TaskDef:
    """One task. Hash and identity are by ``name`` (dict fields would make it unhashable).

    ``files`` maps split name -> file path relative to the GLUE directory, or to ``base_dir``
    when set (user tasks: the YAML file's directory); absolute paths are used as they are.
    ``overrides`` maps split name -> {text_a|text_b|label|num_columns: value} for splits whose
    layout differs (MNLI dev files have 16 columns, train has 12).
    ``source``: the YAML file the task came from (for error messages); None if built in code.
    ``inputs``: names of the input columns (text_a[, text_b]) in new data to predict on: a header field of a
    TSV/CSV file or a JSONL key (default: ``text_a``/``text_b`` when they are names).
    ``submission``: GLUE leaderboard file name -> the unlabelled test file it is made from (relative to the
    GLUE directory, read by the ``inputs`` names), e.g. ``{"MNLI-m.tsv": "MNLI/test_matched.tsv"}``;
    ``submission_index``: the test files' id column (``index``; QQP: ``id``).
    ``no_answer``: span tasks only: a question may have no answer in the context (SQuAD v2.0).

    Span tasks (``head: span``, SQuAD) read SQuAD JSON files (``format: squad``); ``text_a``, ``text_b`` and
    ``label`` name the question, context and answers columns of the hub dataset.
    """

    name: str
    head: str
    loss: str
    labels: tuple[str, ...]
    metrics: tuple[str, ...]
    primary: str
    files: dict[str, str]
    dev_splits: tuple[str, ...]
    metric_suffix: dict[str, str] = field(default_factory=dict)
    format: str = "tsv"
    header: bool = True
    text_a: Column = 0
    text_b: Column | None = None
    label: Column = 1
    num_columns: int | None = None
    hub: dict[str, Any] | None = None
    aliases: tuple[str, ...] = ()
    overrides: dict[str, dict[str, Any]] = field(default_factory=dict)
    base_dir: str | None = None
    source: str | None = None
    inputs: tuple[str, ...] = ()
    submission: dict[str, str] = field(default_factory=dict)
    submission_index: str = "index"
    no_answer: bool = False

    def __post_init__(self) -> None:
        for name in ("labels", "metrics", "dev_splits", "aliases", "inputs"):
            value = getattr(self, name)
            if isinstance(value, str) or not isinstance(value, (list, tuple)):
                self._fail(f"'{name}' must be a list, got {value!r}")
            if name != "labels" and not all(isinstance(item, str) for item in value):
                self._fail(f"'{name}' must be a list of strings, got {list(value)}")
            object.__setattr__(self, name, tuple(value))
        self._check_identity()
        self._check_head()
        self._check_hub()
        self._check_files()
        self._check_columns()
        self._check_inputs()

    def __hash__(self) -> int:
        return hash(self.name)

    @property
    def num_labels(self) -> int:
        """Output width of the head: ``len(labels)`` for classification, 1 for regression, 2 for span (start and
        end logits of every token)."""
        return {"classification": len(self.labels), "span": 2}.get(self.head, 1)

    def columns(self, split: str) -> SplitColumns:
        """Column spec for ``split``: the task-level columns with ``overrides[split]`` applied."""
        spec = {"text_a": self.text_a, "text_b": self.text_b, "label": self.label,
                "num_columns": self.num_columns}
        spec.update(self.overrides.get(split, {}))
        return SplitColumns(**spec)

    @property
    def input_names(self) -> tuple[str, ...]:
        """Names of the input columns of new data (``inputs``, else ``text_a``/``text_b`` when they are
        names); empty when the task only knows column positions."""
        if self.inputs:
            return self.inputs
        columns = (self.text_a,) if self.text_b is None else (self.text_a, self.text_b)
        return tuple(columns) if all(isinstance(c, str) for c in columns) else ()

    def metric_key(self, metric: str, split: str) -> str:
        """Report key of ``metric`` on ``split``, e.g. ``accuracy_mm`` for MNLI dev_mismatched."""
        return metric + self.metric_suffix.get(split, "")

    def _fail(self, message: str) -> NoReturn:
        raise UserError(f"task '{self.name}': {message}")

    def _check_identity(self) -> None:
        if not isinstance(self.name, str) or not _NAME_RE.match(self.name):
            raise UserError(
                f"task name {self.name!r} is invalid: use lower-case letters, digits and '_', "
                "starting with a letter (spellings like 'SST-2' go in 'aliases')"
            )
        for alias in self.aliases:
            if not isinstance(alias, str) or not _ALIAS_RE.match(alias):
                self._fail(f"alias {alias!r} is invalid: a non-empty string without spaces or commas")

    def _check_head(self) -> None:
        if not isinstance(self.head, str) or self.head not in LOSSES_BY_HEAD:
            self._fail(f"unknown head {self.head!r} (valid: {', '.join(LOSSES_BY_HEAD)})")
        losses = LOSSES_BY_HEAD[self.head]
        if self.loss not in losses:
            self._fail(f"loss {self.loss!r} does not fit head {self.head!r} (valid: {', '.join(losses)})")
        if self.head == "classification":
            if len(self.labels) < 2:
                self._fail(f"a classification task needs at least 2 labels, got {list(self.labels)}")
            if not all(isinstance(label, str) for label in self.labels):
                self._fail(f"labels must be strings (quote them in YAML), got {list(self.labels)}")
            if len(set(self.labels)) != len(self.labels):
                self._fail(f"labels contain duplicates: {list(self.labels)}")
        elif self.labels:
            self._fail(f"a {self.head} task has no labels list, got {list(self.labels)}")
        if not isinstance(self.no_answer, bool):
            self._fail(f"'no_answer' must be true or false, got {self.no_answer!r}")
        if self.no_answer and self.head != "span":
            self._fail("'no_answer' is for span tasks (head: span) only")
        if self.head == "span" and (self.format != "squad" or self.text_b is None):
            self._fail("a span task reads SQuAD JSON files: give 'format: squad' and the hub columns text_a "
                       "(question), text_b (context) and label (answers)")
        if self.format == "squad" and self.head != "span":
            self._fail(f"format 'squad' is for span tasks (head: span), not {self.head!r}")
        self._check_metrics()

    def _check_metrics(self) -> None:
        if not self.metrics:
            self._fail(f"'metrics' is empty (valid: {', '.join(ALL_METRICS)})")
        fitting = METRICS_BY_HEAD[self.head]
        for metric in self.metrics:
            if metric not in ALL_METRICS:
                self._fail(f"unknown metric {metric!r} (valid: {', '.join(ALL_METRICS)})")
            if metric not in fitting:
                self._fail(f"metric {metric!r} does not fit head {self.head!r} (valid: {', '.join(fitting)})")
        if self.head == "classification" and "f1" in self.metrics and len(self.labels) != 2:
            self._fail(f"metric 'f1' is binary (positive class = labels[1]) "
                       f"but the task has {len(self.labels)} labels")
        if self.primary not in self.metrics:
            self._fail(f"primary metric {self.primary!r} is not in metrics {list(self.metrics)}")

    def _check_files(self) -> None:
        if self.format not in FORMATS:
            self._fail(f"unknown format {self.format!r} (valid: {', '.join(FORMATS)})")
        for name in ("metric_suffix", "overrides"):
            if not isinstance(getattr(self, name), dict):
                self._fail(f"'{name}' must be a mapping, got {getattr(self, name)!r}")
        if not isinstance(self.files, dict) or not all(
            isinstance(k, str) and isinstance(v, str) and v for k, v in self.files.items()
        ):
            self._fail(f"'files' must map split names to paths, got {self.files!r}")
        if not self.files and self.hub is None:
            self._fail("needs 'files' (split -> path) or a 'hub' entry")
        known = set(self.files) | set((self.hub or {}).get("splits", {}) or {})
        if not self.dev_splits:
            self._fail(f"'dev_splits' is empty (splits: {', '.join(sorted(known))})")
        for split in self.dev_splits:
            if split not in known:
                self._fail(f"dev split {split!r} has no file (splits: {', '.join(sorted(known))})")
        for split, suffix in self.metric_suffix.items():
            if split not in known or not isinstance(suffix, str):
                self._fail(f"metric_suffix entry {split!r}: {suffix!r} must map a known split to a string "
                           f"(splits: {', '.join(sorted(known))})")

    def _check_columns(self) -> None:
        if not isinstance(self.header, bool):
            self._fail(f"'header' must be true or false, got {self.header!r}")
        for split, override in self.overrides.items():
            if split not in self.files or not isinstance(override, dict):
                self._fail(f"overrides for {split!r} must be a mapping for a split in files "
                           f"({', '.join(self.files)})")
            bad = sorted(set(override) - set(OVERRIDE_KEYS))
            if bad:
                self._fail(f"overrides for {split!r}: unknown keys {bad} (valid: {', '.join(OVERRIDE_KEYS)})")
        for split in self.files:
            self._check_split_columns(split, self.columns(split))

    def _check_split_columns(self, split: str, spec: SplitColumns) -> None:
        n = spec.num_columns
        if n is not None and (type(n) is not int or n < 1):
            self._fail(f"{split}: 'num_columns' must be a positive integer or null, got {n!r}")
        for what in ("text_a", "text_b", "label"):
            column = getattr(spec, what)
            if column is None and what == "text_b":
                continue
            if isinstance(column, bool) or not isinstance(column, (int, str)) or column == "":
                self._fail(f"{split}: column {what}={column!r} must be an index or a name")
            if isinstance(column, int) and self.format in NAMED_COLUMN_FORMATS:
                self._fail(f"{split}: column {what}={column} must be a key name for {self.format} files")
            if isinstance(column, str) and self.format not in NAMED_COLUMN_FORMATS and not self.header:
                self._fail(f"{split}: column {what}={column!r} is a name but 'header' is false; use an index")
            if isinstance(column, int) and n is not None and not -n <= column < n:
                self._fail(f"{split}: column {what}={column} is out of range for {n} columns")

    def _check_inputs(self) -> None:
        wanted = 1 if self.text_b is None else 2
        if self.inputs and (len(self.inputs) != wanted or not all(self.inputs)):
            self._fail(f"'inputs' must name {wanted} column(s) (text_a{'' if wanted == 1 else ', text_b'}), "
                       f"got {list(self.inputs)}")
        if not isinstance(self.submission, dict) or not all(
            isinstance(k, str) and k.endswith(SUBMISSION_SUFFIX) and isinstance(v, str) and v
            for k, v in self.submission.items()
        ):
            self._fail(f"'submission' must map leaderboard file names (*{SUBMISSION_SUFFIX}) to test files, "
                       f"got {self.submission!r}")
        if self.submission and not self.input_names:
            self._fail("'submission' needs 'inputs' (the names of the test files' input columns)")
        if not isinstance(self.submission_index, str) or not self.submission_index:
            self._fail(f"'submission_index' must be a column name, got {self.submission_index!r}")

    def _check_hub(self) -> None:
        if self.hub is None:
            return
        if not isinstance(self.hub, dict):
            self._fail(f"'hub' must be a mapping with keys {', '.join(HUB_KEYS)}, got {self.hub!r}")
        bad = sorted(set(self.hub) - set(HUB_KEYS))
        missing = [key for key in HUB_REQUIRED if key not in self.hub]
        if bad or missing:
            self._fail(f"hub: unknown keys {bad}, missing keys {missing} (valid: {', '.join(HUB_KEYS)})")
        splits = self.hub["splits"]
        if not isinstance(splits, dict) or not all(isinstance(v, str) for v in splits.values()):
            self._fail(f"hub.splits must map split names to hub split names, got {splits!r}")
