"""Task registry: the packaged GLUE tasks plus tasks from user YAML files, looked up by name.

Names and aliases are case-insensitive; registering a name or alias twice is an error, so a
user file can add tasks but never silently replace one.
"""

from __future__ import annotations

import difflib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml

from basics.errors import UserError
from tasks.task_def import LOSSES_BY_HEAD, TaskDef

TOP_LEVEL_KEYS: tuple[str, ...] = ("files_relative_to", "tasks")
RELATIVE_TO: tuple[str, ...] = ("yaml", "glue_dir")
TASK_KEYS: tuple[str, ...] = (
    "name", "aliases", "head", "loss", "labels", "metrics", "primary", "files", "dev_splits",
    "metric_suffix", "format", "header", "text_a", "text_b", "label", "num_columns",
    "overrides", "hub", "inputs", "submission", "submission_index", "no_answer",
)
TASK_REQUIRED: tuple[str, ...] = ("name", "head", "metrics", "files", "text_a", "label")
NOT_DEV_SPLITS: tuple[str, ...] = ("train", "test")


def _key(name: str) -> str:
    """Lookup key of a task name or alias: case-insensitive, surrounding blanks ignored."""
    return name.strip().casefold()


class TaskRegistry:
    """Task name/alias -> ``TaskDef``. Filled by explicit ``register`` calls."""

    def __init__(self) -> None:
        self._tasks: dict[str, TaskDef] = {}  # canonical name -> task, in registration order
        self._keys: dict[str, str] = {}  # lookup key (name or alias) -> canonical name

    def register(self, task: TaskDef) -> None:
        """Add ``task``; raise ``UserError`` if its name or an alias is already taken."""
        keys = {_key(task.name)} | {_key(alias) for alias in task.aliases}
        for key in sorted(keys):
            if key in self._keys:
                other = self._tasks[self._keys[key]]
                raise UserError(
                    f"task '{task.name}'{_origin(task)}: name or alias '{key}' is already used by "
                    f"task '{other.name}'{_origin(other)}; pick another name"
                )
        self._tasks[task.name] = task
        self._keys.update({key: task.name for key in keys})

    def get(self, name: str) -> TaskDef:
        """Task by name or alias, case-insensitive (``"SST-2"``, ``"sst2"``, ``"sst_2"``)."""
        key = _key(name)
        if key not in self._keys:
            close = difflib.get_close_matches(key, list(self._keys), n=1)
            hint = f"; did you mean '{self._keys[close[0]]}'?" if close else ""
            raise UserError(f"unknown task {name!r} (known tasks: {', '.join(self.names())}){hint}")
        return self._tasks[self._keys[key]]

    def names(self) -> list[str]:
        """Canonical task names in registration order."""
        return list(self._tasks)

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and _key(name) in self._keys


def _origin(task: TaskDef) -> str:
    return f" (from {task.source})" if task.source else ""


def load_task_defs(path: Path) -> list[TaskDef]:
    """Parse and validate one task YAML file (schema: header of ``tasks/glue.yaml``).

    Every mistake raises ``UserError`` naming the file, the line of the task and the bad value.
    """
    path = Path(path)
    if not path.is_file():
        raise UserError(f"task file not found: {path}")
    try:
        text = path.read_text(encoding="utf-8")
        document = yaml.safe_load(text)
        lines = _task_lines(text)
    except UnicodeDecodeError as err:
        raise UserError(f"{path}: not UTF-8 text ({err.reason} at byte {err.start})") from None
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark is not None else str(path)
        raise UserError(f"{where}: invalid YAML: {getattr(err, 'problem', None) or err}") from None
    entries, base_dir = _parse_top_level(document, path)
    tasks = []
    for index, entry in enumerate(entries):
        where = f"{path}:{lines[index]}" if index < len(lines) else str(path)
        try:
            tasks.append(_task_from_entry(entry, base_dir, str(path)))
        except UserError as err:
            raise UserError(f"{where}: {err}") from None
    return tasks


def _parse_top_level(document: Any, path: Path) -> tuple[list[Any], str | None]:
    """Check the top-level mapping; return the task entries and the base dir of their files."""
    if not isinstance(document, dict):
        raise UserError(f"{path}: expected a mapping with keys {', '.join(TOP_LEVEL_KEYS)}")
    unknown = sorted(set(document) - set(TOP_LEVEL_KEYS), key=str)
    if unknown:
        raise UserError(f"{path}: unknown top-level keys {unknown} (valid: {', '.join(TOP_LEVEL_KEYS)})")
    relative_to = document.get("files_relative_to", "yaml")
    if relative_to not in RELATIVE_TO:
        raise UserError(f"{path}: files_relative_to: {relative_to!r} is not one of {', '.join(RELATIVE_TO)}")
    entries = document.get("tasks")
    if not isinstance(entries, list) or not entries:
        raise UserError(f"{path}: 'tasks' must be a non-empty list of task entries")
    base_dir = str(path.resolve().parent) if relative_to == "yaml" else None
    return entries, base_dir


def _task_lines(text: str) -> list[int]:
    """1-based line of each entry of the top-level ``tasks`` list (for error messages)."""
    root = yaml.compose(text, Loader=yaml.SafeLoader)
    if isinstance(root, yaml.MappingNode):
        for key, value in root.value:
            if key.value == "tasks" and isinstance(value, yaml.SequenceNode):
                return [item.start_mark.line + 1 for item in value.value]
    return []


def _task_from_entry(entry: Any, base_dir: str | None, source: str) -> TaskDef:
    """Build a ``TaskDef`` from one YAML mapping, filling defaults (``TaskDef`` validates)."""
    if not isinstance(entry, dict):
        raise UserError(f"a task entry must be a mapping, got {entry!r}")
    name = entry.get("name", "?")
    unknown = sorted(set(entry) - set(TASK_KEYS), key=str)
    missing = [key for key in TASK_REQUIRED if key not in entry]
    if unknown or missing:
        raise UserError(f"task '{name}': unknown keys {unknown}, missing keys {missing} "
                        f"(valid: {', '.join(TASK_KEYS)})")
    fields = dict(entry)
    head = fields["head"]
    known_head = isinstance(head, str) and head in LOSSES_BY_HEAD
    fields.setdefault("loss", LOSSES_BY_HEAD[head][0] if known_head else None)  # TaskDef reports the head
    fields["labels"] = _label_strings(name, fields.get("labels") or [])
    metrics = fields["metrics"]
    if isinstance(metrics, list) and metrics:
        fields.setdefault("primary", metrics[0])
    files = fields["files"]
    if isinstance(files, dict):
        fields.setdefault("dev_splits", [split for split in files if split not in NOT_DEV_SPLITS])
    for key in ("aliases", "dev_splits"):
        fields[key] = fields.get(key) or []
    fields["metric_suffix"] = fields.get("metric_suffix") or {}
    fields["overrides"] = fields.get("overrides") or {}
    fields["inputs"] = fields.get("inputs") or []
    fields["submission"] = fields.get("submission") or {}
    return TaskDef(**fields, base_dir=base_dir, source=source)


def _label_strings(task: str, labels: Any) -> list[str]:
    """Label strings; YAML integers become strings ("0"), YAML booleans are refused."""
    if not isinstance(labels, list):
        raise UserError(f"task '{task}': 'labels' must be a list of strings, got {labels!r}")
    for label in labels:
        if isinstance(label, bool) or not isinstance(label, (str, int)):
            raise UserError(f"task '{task}': label {label!r} must be a string; quote it in YAML "
                            "(yes/no/true/false read as booleans)")
    return [str(label) for label in labels]


def packaged_task_file() -> Path:
    """Path of the packaged ``tasks/glue.yaml``."""
    return Path(__file__).resolve().parent / "glue.yaml"


def packaged_task_files() -> tuple[Path, ...]:
    """The packaged task files: ``tasks/glue.yaml`` (the nine GLUE tasks) and ``tasks/squad.yaml`` (SQuAD)."""
    return packaged_task_file(), Path(__file__).resolve().parent / "squad.yaml"


def default_registry(extra: Sequence[Path] = ()) -> TaskRegistry:
    """The packaged tasks (the nine GLUE tasks of ``tasks/glue.yaml``, ``squad`` and ``squad_v2`` of
    ``tasks/squad.yaml``) plus the tasks of each user YAML in ``extra``.

    A user task whose name or alias is already taken raises ``UserError`` (no overriding).
    """
    registry = TaskRegistry()
    for path in (*packaged_task_files(), *extra):
        for task in load_task_defs(Path(path)):
            registry.register(task)
    return registry


def parse_task_list(spec: str, registry: TaskRegistry, unique: bool = False) -> list[TaskDef]:
    """``"rte,mrpc, STS-B"`` -> task defs in the given order, without duplicates.

    With ``unique``, a task named twice (under any of its spellings) is a UserError instead of being merged:
    a run config that lists a task twice would say it trains more tasks than it does.
    """
    known = ", ".join(registry.names())
    if not spec or not spec.strip():
        raise UserError(f"empty task list: give comma-separated task names, e.g. 'rte,mrpc' "
                        f"(known tasks: {known})")
    tasks: list[TaskDef] = []
    spelled: dict[str, str] = {}
    for item in spec.split(","):
        if not item.strip():
            raise UserError(f"empty task name in task list {spec!r} (known tasks: {known})")
        task = registry.get(item)
        if task.name in spelled:
            if unique:
                raise UserError(f"task {task.name!r} is given twice in --tasks (as {spelled[task.name]!r} and "
                                f"{item.strip()!r}); give each task once")
            continue
        spelled[task.name] = item.strip()
        tasks.append(task)
    return tasks
