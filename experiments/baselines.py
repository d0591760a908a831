"""Constant-prediction baselines of tasks on their dev sets, read from the data (the "not learnt" marks).

    python -m experiments.baselines --tasks sst2,cola,stsb,mrpc,rte [--glue-dir DIR] \
        [--out experiments/results/dev_baselines.json]

A baseline (:mod:`tasks.baseline`) is the best task score a constant prediction gets on the dev
labels, with its dev-set standard error. The labels are read as a run evaluates them: the task's
dev split(s) from the GLUE directory (or the task's own files, else the Hugging Face hub), cut to
``--max-eval-samples`` the way a run cuts them (:func:`mtl.run.subset_indices`).

Studies compute the baselines of their tasks when they summarise (:func:`baselines_for`; none when
the dev files cannot be read; the Hugging Face hub is not asked). The committed results are re-rendered without the data:
``experiments/results/dev_baselines.json`` (:data:`BASELINES_FILE`) holds the baselines of the full
GLUE dev sets they were evaluated on, written by this command from ``$GLUE_DIR``, with each file's
SHA-256; ``tests/test_result_tables.py`` recomputes it from the files when they are there.
"""

from __future__ import annotations

import hashlib
import sys
from collections.abc import Iterable, Sequence
from pathlib import Path

from basics.cli import OneLineParser, run_main
from basics.errors import UserError
from basics.io import atomic_write_json
from mtl.config import TrainConfig
from mtl.run import resolve_tasks, subset_indices
from mtl.rundir import read_json
from tasks.baseline import Baseline, constant_baseline
from tasks.hub import load_hub_split
from tasks.readers import read_split, split_path
from tasks.task_def import TaskDef

BASELINES_FILE = Path(__file__).resolve().parent / "results" / "dev_baselines.json"


def dev_labels(task: TaskDef, config: TrainConfig) -> tuple[dict[str, list], dict[str, str]]:
    """``({dev split: labels}, {dev split: file and its sha256})``: the labels a run of ``config``
    evaluates on (same files, same ``--max-eval-samples`` subset). UserError when they cannot be read."""
    glue_dir = config.resolved_glue_dir()
    labels, sources = {}, {}
    for split in task.dev_splits:
        if task.base_dir is not None or glue_dir is not None:
            path = split_path(task, glue_dir, split)
            examples = read_split(task, glue_dir, split)
            sources[split] = f"{_relative(path, glue_dir)} sha256:{hashlib.sha256(path.read_bytes()).hexdigest()}"
        else:
            examples = load_hub_split(task, split)
            sources[split] = f"hub:{task.hub}"
        rows = subset_indices(len(examples), config.data.max_eval_samples, config.data.subsample)
        values = [e.label for e in examples]
        labels[split] = values if rows is None else [values[i] for i in rows]
    return labels, sources


def _relative(path: Path, root: Path | None) -> str:
    try:
        return path.resolve().relative_to(Path(root).resolve()).as_posix() if root else str(path)
    except ValueError:
        return str(path)


def baselines_for(config: TrainConfig, tasks: Iterable[str] | None = None, hub: bool = False) -> dict[str, Baseline]:
    """``{task: Baseline}`` for ``tasks`` (default: ``config``'s) as a run of ``config`` evaluates them;
    tasks whose dev labels cannot be read are left out. Only local files are read unless ``hub`` (a table
    never downloads data): a task without a GLUE directory or files of its own gets no baseline."""
    names = list(tasks) if tasks is not None else list(config.data.tasks)
    if not names:
        return {}
    try:
        _, defs = resolve_tasks(config.replace(tasks=names))
    except UserError:
        return {}
    out = {}
    local = config.resolved_glue_dir() is not None
    for task in defs:
        if not (hub or local or task.base_dir is not None):
            continue
        try:
            out[task.name] = constant_baseline(task, dev_labels(task, config)[0])
        except (UserError, OSError, ValueError):
            continue
    return out


def committed_baselines(path: Path = BASELINES_FILE) -> dict[str, Baseline]:
    """The baselines the committed results are rendered with (``experiments/results/dev_baselines.json``)."""
    data = read_json(path)
    return {name: Baseline.from_dict(entry) for name, entry in data["tasks"].items()}


def baselines_report(config: TrainConfig, tasks: Sequence[str]) -> dict:
    """The JSON of ``--out``: per task its baseline and the dev files (with their SHA-256) it was read from."""
    _, defs = resolve_tasks(config.replace(tasks=list(tasks)))
    entries = {}
    for task in defs:
        labels, sources = dev_labels(task, config)
        entries[task.name] = {**constant_baseline(task, labels).to_dict(), "sources": sources}
    return {"what": "constant-prediction baselines on the dev sets (tasks.baseline)",
            "max_eval_samples": config.data.max_eval_samples, "subsample": config.data.subsample,
            "command": "python -m experiments.baselines --tasks " + ",".join(tasks), "tasks": entries}


def baseline_cell(baseline: Baseline) -> str:
    """``"74.8 ± 2.0 (n=408, constant '1')"``: a baseline in one line."""
    n = "+".join(str(v) for v in baseline.n.values())
    what = f"constant {baseline.constant!r}" if baseline.constant is not None else "a constant"
    return f"{baseline.score:.1f} ± {baseline.standard_error:.1f} (n={n}, {what})"


def main(argv: Sequence[str] | None = None) -> int:
    def go() -> None:
        parser = OneLineParser(prog="python -m experiments.baselines", description=__doc__.splitlines()[0])
        parser.add_argument("--tasks", required=True, help="comma-separated tasks")
        parser.add_argument("--glue-dir", default=None, help="GLUE directory (default: $GLUE_DIR)")
        parser.add_argument("--max-eval-samples", type=int, default=None, help="as the runs had it (default: all)")
        parser.add_argument("--out", type=Path, default=None, help="write the JSON here (default: print it)")
        args = parser.parse_args(argv)
        tasks = [t for t in args.tasks.split(",") if t]
        config = TrainConfig.of(tasks=tasks, glue_dir=args.glue_dir, max_eval_samples=args.max_eval_samples)
        report = baselines_report(config, tasks)
        for name, entry in report["tasks"].items():
            print(f"{name}: {baseline_cell(Baseline.from_dict(entry))}, threshold {entry['threshold']:.2f}")
        if args.out is not None:
            atomic_write_json(args.out, report)
            print(f"wrote {args.out}")

    return run_main(go)


if __name__ == "__main__":
    sys.exit(main())
