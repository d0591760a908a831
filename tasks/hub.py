"""Fallback: load a task split from the Hugging Face hub (``datasets``), when no local copy is given.

``datasets`` is imported inside the function, so importing this module costs nothing.
"""

from __future__ import annotations

from typing import Any

from basics.errors import UserError
from tasks.readers import check_max_samples, parse_label
from tasks.task_def import Example, TaskDef

_FIX = "pass --glue-dir DIR or set GLUE_DIR to a local GLUE copy"


def load_hub_split(task: TaskDef, split: str, max_samples: int | None = None) -> list[Example]:
    """Examples of ``task``'s ``split`` from ``datasets.load_dataset(hub.path, hub.name)``.

    Hub class labels are integers in the order of ``task.labels`` (string labels are looked up
    in ``task.labels``); regression labels are floats. Any loading failure (offline, no network,
    unknown dataset) raises ``UserError`` that says how to use a local copy instead.
    """
    check_max_samples(max_samples)
    hub = task.hub
    if hub is None:
        raise UserError(f"task '{task.name}' has no hub entry: {_FIX}")
    if split not in hub["splits"]:
        raise UserError(f"task '{task.name}' has no hub split for {split!r} "
                        f"(hub splits: {', '.join(hub['splits'])})")
    hub_split = hub["splits"][split]
    if max_samples is not None:
        hub_split = f"{hub_split}[:{max_samples}]"
    try:
        import datasets

        dataset = datasets.load_dataset(hub["path"], hub.get("name"), split=hub_split)
    except Exception as err:  # offline, no network, bad name: all mean "use local files"
        reason = f"{type(err).__name__}: {(str(err).strip().splitlines() or [''])[0]}"
        raise UserError(f"could not load {task.name} from the Hugging Face hub ({reason}): {_FIX}") from err
    source = f"{hub['path']}/{hub.get('name') or ''} {hub_split}"
    return [_example(task, hub, row, f"{source} row {index}") for index, row in enumerate(dataset)]


def _example(task: TaskDef, hub: dict[str, Any], row: dict[str, Any], where: str) -> Example:
    """One ``Example`` from one hub row (a dict of column -> value)."""
    text_a = _text(row, hub["text_a"], where)
    text_b = None if hub.get("text_b") is None else _text(row, hub["text_b"], where)
    value = _value(row, hub["label"], where)
    if task.head == "classification" and isinstance(value, int) and not isinstance(value, bool):
        if not 0 <= value < task.num_labels:  # -1 marks the unlabelled GLUE test split
            raise UserError(f"{where}: label {value} is not a class index 0..{task.num_labels - 1} "
                            f"(labels: {list(task.labels)})")
        return Example(text_a, text_b, value)
    label_index = {label: index for index, label in enumerate(task.labels)}
    return Example(text_a, text_b, parse_label(task, label_index, value, where))


def _value(row: dict[str, Any], key: str, where: str) -> Any:
    if key not in row:
        raise UserError(f"{where}: hub column {key!r} is missing (columns: {sorted(row)})")
    return row[key]


def _text(row: dict[str, Any], key: str, where: str) -> str:
    value = _value(row, key, where)
    if not isinstance(value, str) or not value.strip():
        raise UserError(f"{where}: missing text in hub column {key!r} (got {value!r})")
    return value
