"""The transfer study's YAML file as a typed value (:class:`TransferStudy`); every key is described here.

    name: transfer_cpu
    model: minilm                     # the pre-trained encoder every ticket is cut from and rewound to
    tasks: [rte, mrpc, stsb, cola]    # the targets; with task_sources, also sources
    objectives: [self-distill]        # sources found on a pre-training objective (mtl.objective.OBJECTIVES)
    task_sources: true                # each task's winning ticket is a source too
    sparsities: [0.4]                 # every ticket, and the random control, cut at these (matched sparsity)
    seeds: [1, 2, 3]                  # fine-tuning seeds of every (row, target); the random mask is drawn per seed
    ticket_seed: 1                    # the seed of the dense run each task ticket is scored on
    output_dir: runs/transfer_cpu
    glue_dir: null                    # default: $GLUE_DIR
    objective: {max_texts: 20000, score_batches: 32}   # mtl.objective.ObjectiveConfig keys (corpus, ...)
    tickets: {train: {...}, per_task: {}}              # the dense runs the task tickets are scored on
    train: {...}                      # every transfer fine-tune (dense, random, each source); train.py options
    per_task: {rte: {...}}            # per target
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from basics.errors import UserError
from experiments.study_config import canonical_tasks
from mtl.objective import CORPUS_OBJECTIVES, OBJECTIVES, ObjectiveConfig

# the objective keys the study sets itself
OBJECTIVE_OWNED = ("objective", "model", "sparsities", "kinds", "glue_dir")


@dataclass
class TicketRuns:
    """The dense single-task runs the task tickets are scored and cut on."""

    train: dict[str, Any] = field(default_factory=dict)
    per_task: dict[str, dict[str, Any]] = field(default_factory=dict)


@dataclass
class TransferStudy:
    name: str = "transfer"
    model: str = "minilm"
    tasks: list[str] = field(default_factory=list)
    objectives: list[str] = field(default_factory=lambda: ["self-distill"])
    task_sources: bool = True
    sparsities: list[float] = field(default_factory=lambda: [0.4])
    seeds: list[int] = field(default_factory=lambda: [1, 2, 3])
    ticket_seed: int = 1
    output_dir: str = "runs/transfer"
    glue_dir: str | None = None
    objective: dict[str, Any] = field(default_factory=dict)
    tickets: TicketRuns = field(default_factory=TicketRuns)
    train: dict[str, Any] = field(default_factory=dict)
    per_task: dict[str, dict[str, Any]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.tasks:
            raise UserError("the transfer study needs tasks: [TASK, ...] (the targets)")
        if len(set(self.tasks)) != len(self.tasks):
            raise UserError(f"tasks lists a task twice: {self.tasks}")
        for name in self.objectives:
            OBJECTIVES.check(name)
            if name not in CORPUS_OBJECTIVES:
                raise UserError(f"objectives: {name!r} is the task loss; set task_sources: true for task tickets "
                                f"(objectives are {', '.join(CORPUS_OBJECTIVES)})")
        if not self.objectives and not self.task_sources:
            raise UserError("no sources: give objectives: [...] or task_sources: true")
        if not self.sparsities or any(not 0.0 < float(s) < 1.0 for s in self.sparsities):
            raise UserError(f"sparsities must be fractions in (0, 1), got {self.sparsities}")
        if not self.seeds or len(set(self.seeds)) != len(self.seeds):
            raise UserError(f"seeds must be distinct integers, got {self.seeds}")
        owned = [k for k in self.objective if k in OBJECTIVE_OWNED]
        if owned:
            raise UserError(f"objective: {', '.join(owned)} are set by the study (objectives, model, sparsities)")
        for objective in self.objectives:
            self.objective_config(objective)  # every objective block validates
        unknown = [t for t in (*self.per_task, *self.tickets.per_task) if t not in self.tasks]
        if unknown:
            raise UserError(f"per_task names task(s) not in tasks: {', '.join(unknown)}")

    @property
    def out(self) -> Path:
        return Path(self.output_dir).expanduser()

    def sources(self) -> list[str]:
        """Source names: the objectives, then the tasks (with ``task_sources``)."""
        return [*self.objectives, *(self.tasks if self.task_sources else [])]

    def source_task(self, source: str) -> str | None:
        """The task a source ticket was found on (None for an objective)."""
        return source if source in self.tasks and source not in self.objectives else None

    def objective_config(self, objective: str) -> ObjectiveConfig:
        values = {**self.objective, "objective": objective, "model": self.model, "sparsities": list(self.sparsities),
                  "kinds": ["winning"], "glue_dir": self.glue_dir or os.environ.get("GLUE_DIR")}
        return ObjectiveConfig.from_dict(values, "objective")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def study_from_dict(data: dict[str, Any], output_dir: str | None = None, glue_dir: str | None = None) -> TransferStudy:
    """A :class:`TransferStudy` from YAML data; unknown keys are one-line errors."""
    data = dict(data or {})
    names = {f.name for f in dataclasses.fields(TransferStudy)}
    unknown = sorted(set(data) - names)
    if unknown:
        raise UserError(f"unknown transfer study key(s) {', '.join(unknown)}; valid: {', '.join(sorted(names))}")
    tickets = dict(data.pop("tickets", None) or {})
    bad = sorted(set(tickets) - {"train", "per_task"})
    if bad:
        raise UserError(f"unknown key(s) tickets.{', tickets.'.join(bad)}; valid: train, per_task")
    if output_dir:
        data["output_dir"] = output_dir
    if glue_dir:
        data["glue_dir"] = glue_dir
    train = dict(data.get("train") or {})
    if data.get("tasks"):
        data["tasks"] = canonical_tasks(list(data["tasks"]), train)
    for key in ("objective", "train", "per_task"):
        data[key] = dict(data.get(key) or {})
    return TransferStudy(**data, tickets=TicketRuns(dict(tickets.get("train") or {}),
                                                    dict(tickets.get("per_task") or {})))


def load_study(path: Path, output_dir: str | None = None, glue_dir: str | None = None) -> TransferStudy:
    if not Path(path).is_file():
        raise UserError(f"study file not found: {path}")
    try:
        data = yaml.safe_load(Path(path).read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as exc:
        raise UserError(f"{path} is not valid YAML: {str(exc).splitlines()[0]}") from None
    if not isinstance(data, dict):
        raise UserError(f"{path} must hold a mapping of study keys")
    return study_from_dict(data, output_dir, glue_dir)
