"""GLUE leaderboard files from a model: one ``<NAME>.tsv`` per test file, ``index`` and ``prediction`` columns.

Which files, from which test file, are data in ``tasks/glue.yaml`` (each task's ``submission``: e.g.
MNLI gives ``MNLI-m.tsv``, ``MNLI-mm.tsv`` and the diagnostic ``AX.tsv``). The predictions are the
label names the leaderboard expects, which are the task's own label strings (``0``/``1`` for CoLA,
SST-2, MRPC, QQP, WNLI; ``entailment``/``not_entailment`` for QNLI, RTE; ``entailment``/``neutral``/
``contradiction`` for MNLI and AX); STS-B gets scores with 3 decimals. Rows keep the test file's order
and its ``index`` (QQP: ``id``) values.

Every test file is read and checked before the model runs, and the files are written only once every
prediction is made: a bad or missing test file leaves the output directory untouched.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from basics.errors import UserError
from basics.io import atomic_write_text
from mtl.predict import Predictor, TaskPredictions, predict_task
from tasks.inputs import InputRows, read_inputs
from tasks.registry import TaskRegistry
from tasks.task_def import TaskDef

SUBMISSION_HEADER = ("index", "prediction")
SCORE_FORMAT = ".3f"  # STS-B, as the GLUE baselines write it


@dataclass(frozen=True)
class SubmissionFile:
    """One leaderboard file: its name, the model's task, the test rows it is made from."""

    name: str
    task: TaskDef
    rows: InputRows


def submission_tasks(model_tasks: dict[str, TaskDef], registry: TaskRegistry) -> tuple[list[TaskDef], list[str]]:
    """(GLUE tasks of the model with leaderboard files, leaderboard files the model cannot write).

    A model task is matched to the registry by name; its labels must be the registry's (the leaderboard's).
    """
    tasks, missing = [], []
    for name in registry.names():
        known = registry.get(name)
        if not known.submission:
            continue
        if name not in model_tasks:
            missing.extend(known.submission)
            continue
        if model_tasks[name].labels != known.labels or model_tasks[name].head != known.head:
            raise UserError(f"the model's task '{name}' has labels {list(model_tasks[name].labels)}, not the GLUE "
                            f"labels {list(known.labels)}: it cannot make the leaderboard file")
        tasks.append(known)
    return tasks, missing


def read_test_files(tasks: Sequence[TaskDef], glue_dir: Path | None) -> list[SubmissionFile]:
    """Every leaderboard file's test rows (with their ids), read and checked; UserError for a missing file."""
    files = []
    for task in tasks:
        for name, relative in task.submission.items():
            path = test_path(task, name, relative, glue_dir)
            rows = read_inputs(task, path, fmt="tsv", id_column=task.submission_index)
            files.append(SubmissionFile(name, task, rows))
    return files


def test_path(task: TaskDef, name: str, relative: str, glue_dir: Path | None) -> Path:
    """The test file ``relative`` (to the GLUE directory, or the task's own directory); UserError if missing."""
    if task.base_dir is not None:
        base = Path(task.base_dir)
    elif glue_dir is None or not Path(glue_dir).is_dir():
        shown = "not set" if glue_dir is None else f"not found: {glue_dir}"
        raise UserError(f"GLUE directory {shown} (set --glue-dir or GLUE_DIR)")
    else:
        base = Path(glue_dir)
    path = base / relative
    if not path.is_file():
        raise UserError(f"task '{task.name}': test file for {name} not found: {path}")
    return path


def render_submission(predictions: TaskPredictions, ids: Sequence[str]) -> str:
    """``index\\tprediction`` then one line per test row."""
    outputs = predictions.outputs()
    if predictions.task.head == "regression":
        outputs = [format(v, SCORE_FORMAT) for v in outputs]
    lines = ["\t".join(SUBMISSION_HEADER), *(f"{i}\t{p}" for i, p in zip(ids, outputs, strict=True))]
    return "\n".join(lines) + "\n"


def write_submission(predictor: Predictor, files: Sequence[SubmissionFile], out_dir: Path, batch_size: int = 128,
                     progress: Callable[[int], None] | None = None) -> list[Path]:
    """Predict every file, then write them all into ``out_dir`` (created); returns the paths written."""
    texts = {}
    for f in files:
        model_task = predictor.tasks[f.task.name]
        texts[f.name] = render_submission(predict_task(predictor, model_task, f.rows.examples, batch_size, progress),
                                          f.rows.ids or [])
    try:
        Path(out_dir).mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UserError(f"cannot create output directory {out_dir}: {exc.strerror or exc}") from None
    paths = []
    for name, text in texts.items():
        atomic_write_text(Path(out_dir) / name, text)
        paths.append(Path(out_dir) / name)
    return paths
