"""A GLUE study as a typed value: tasks, seeds, the ticket budget, the multi-task budget.

A study YAML (``experiments/quickstart.yaml``) has these keys; ``train`` blocks take any
:class:`mtl.config.TrainConfig` option (``epochs``, ``lr``, ``max_train_samples``, ...)::

    name: quickstart                  # recorded in every run, shown in the table's title
    model: minilm
    tasks: [rte, mrpc, stsb]
    seeds: [1, 2, 3]                  # multi-task (and single-task) training seeds
    output_dir: runs/quickstart      # relative paths are relative to the working directory
    glue_dir: null                    # default: $GLUE_DIR
    train: {}                         # options shared by every run of the study
    tickets:                          # ticket identification, per task (experiments.phase_transition)
      sparsities: [0.3, 0.6]
      seeds: [1]
      kinds: [winning, random, losing]
      select_on: holdout              # or dev
      dense_candidate: true           # dense (sparsity 0) may be the super ticket; false: winning tickets only
      train: {epochs: 2, max_train_samples: 400}
      per_task: {mnli: {epochs: 3}}   # task-specific overrides of tickets.train
      dirs: {rte: runs/pt/rte}        # reuse (and resume) existing phase-transition folders
    mtl:
      variants: [dense, union, per-task]   # dense = MT-DNN; union / intersection / vote:K / per-task; random-share (control)
      single_task: [dense]                 # optional single-task rows: dense and/or super (the super ticket)
      train: {epochs: 3, sampler: proportional}

Options are layered: TrainConfig defaults < study defaults (no progress bars, no saved model) <
``train`` < the phase's ``train`` < ``per_task``. Fields the study sets itself (tasks, seed,
output_dir, mask, ...) cannot be given in a ``train`` block.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from basics.errors import UserError
from basics.options import build_config, coerce_value, read_yaml
from masks.aggregate import parse_mode
from masks.kinds import TICKET_KINDS
from mtl.config import TrainConfig
from mtl.run import resolve_tasks

SELECT_ON = ("holdout", "dev")
RANDOM_SHARE = "random-share"  # the control arm: per-task random masks with each super ticket's counts
SINGLE_TASK_KINDS = ("dense", "super")
# What the runner sets on every run; a ``train`` block may not (it would be overwritten).
STUDY_OWNED = ("tasks", "output_dir", "seed", "mask", "score_importance", "model", "glue_dir",
               "sparsities", "ticket_kinds")
# Run defaults of a study (a ``train`` block can change them).
STUDY_DEFAULTS = {"progress": False, "save_model": False}


def _where(where: str, key: str) -> str:
    return f"{where}.{key}" if where else key


def _check_keys(data: dict, cls: type, where: str) -> None:
    names = [f.name for f in dataclasses.fields(cls)]
    for key in data:
        if key not in names:
            raise UserError(f"unknown study key {_where(where, str(key))!r}; valid keys{' of ' + where if where else ''}: "
                            f"{', '.join(names)}")


def _list(value: Any, elem: type, where: str) -> list:
    """``[1, 2]``, ``"1,2"`` or a scalar -> a list of ``elem``; bad items are one-line errors."""
    items = value.split(",") if isinstance(value, str) else value if isinstance(value, list) else [value]
    try:
        out = [elem(str(v).strip()) if elem is not str else str(v).strip() for v in items]
    except ValueError:
        raise UserError(f"study key {where!r}: cannot read {value!r} as a list of {elem.__name__}") from None
    return [v for v in out if v != ""]


def _mapping(value: Any, where: str) -> dict:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise UserError(f"study key {where!r} must be a mapping of option: value, got {value!r}")
    return {str(k).replace("-", "_"): v for k, v in value.items()}


def _check_train_block(block: dict, where: str) -> None:
    """UserError for keys the study owns; the rest is checked by :func:`train_config`."""
    for key in block:
        if key in STUDY_OWNED:
            raise UserError(f"{where}: {key!r} is set by the study, not in a train block "
                            f"(tasks/seeds/model/output_dir/glue_dir at the top level, sparsities/kinds under tickets)")


def train_config(layers: list[tuple[str, dict]], forced: dict[str, Any], what: str) -> TrainConfig:
    """A TrainConfig from study defaults < each ``(where, block)`` in order < ``forced``.

    Unknown or unreadable options are errors naming their block; ``what`` names the run in the
    error of a combination that does not validate.
    """
    names = set(TrainConfig.flat_names())
    values: dict[str, Any] = dict(STUDY_DEFAULTS)
    for where, block in layers:
        _check_train_block(block, where)
        for key, value in block.items():
            if key not in names:
                raise UserError(f"{where}: unknown option {key!r}; valid options: {', '.join(sorted(names - set(STUDY_OWNED)))}")
            try:
                values[key] = coerce_value(TrainConfig, key, value)
            except UserError as exc:
                raise UserError(f"{where}: {exc}") from None
    values.update(forced)
    try:
        return TrainConfig.from_flat(values)
    except UserError as exc:
        raise UserError(f"{what}: {exc}") from None


@dataclass
class TicketBudget:
    """Ticket identification per task: dense fine-tune + scoring + rewinds over sparsities and seeds."""

    sparsities: list[float] = field(default_factory=lambda: [0.1, 0.3, 0.5, 0.7])
    seeds: list[int] = field(default_factory=lambda: [1])
    kinds: list[str] = field(default_factory=lambda: list(TICKET_KINDS.names()))
    select_on: str = "holdout"
    control_sparsities: list[float] | None = None  # random / losing tickets only here (default: every sparsity)
    dense_candidate: bool = True  # dense (sparsity 0) may be the super ticket (experiments.phase_transition)
    train: dict[str, Any] = field(default_factory=dict)
    per_task: dict[str, dict[str, Any]] = field(default_factory=dict)
    dirs: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.control_sparsities is not None:
            unknown = [c for c in self.control_sparsities if not any(abs(c - s) < 1e-9 for s in self.sparsities)]
            if unknown:
                raise UserError(f"tickets.control_sparsities {unknown} are not among tickets.sparsities {self.sparsities}")
        if not self.sparsities:
            raise UserError("tickets.sparsities needs at least one value, e.g. [0.3, 0.5]")
        for s in self.sparsities:
            if not 0 < s < 1:
                raise UserError(f"tickets.sparsities must lie strictly between 0 and 1, got {s}")
        if len({f"{s:.2f}" for s in self.sparsities}) != len(self.sparsities):
            raise UserError(f"tickets.sparsities {self.sparsities} repeat a value at two decimals "
                            "(runs are named kind-0.30-seedS)")
        _check_seeds(self.seeds, "tickets.seeds")
        if "winning" not in self.kinds:
            raise UserError(f"tickets.kinds must include winning (the super ticket is a winning ticket), got {self.kinds}")
        for kind in self.kinds:
            if kind not in TICKET_KINDS:
                raise UserError(f"tickets.kinds: unknown kind {kind!r}; valid: {', '.join(TICKET_KINDS.names())}")
        if self.select_on not in SELECT_ON:
            raise UserError(f"tickets.select_on must be one of {', '.join(SELECT_ON)}, got {self.select_on!r}")

    @classmethod
    def from_dict(cls, data: dict, where: str = "tickets") -> "TicketBudget":
        data = _mapping(data, where)
        _check_keys(data, cls, where)
        out: dict[str, Any] = {}
        if "sparsities" in data:
            out["sparsities"] = _list(data["sparsities"], float, f"{where}.sparsities")
        if "seeds" in data:
            out["seeds"] = _list(data["seeds"], int, f"{where}.seeds")
        if "kinds" in data:
            out["kinds"] = _list(data["kinds"], str, f"{where}.kinds")
        if "select_on" in data:
            out["select_on"] = str(data["select_on"])
        if data.get("control_sparsities") is not None:
            out["control_sparsities"] = _list(data["control_sparsities"], float, f"{where}.control_sparsities")
        if "dense_candidate" in data:
            if not isinstance(data["dense_candidate"], bool):
                raise UserError(f"{where}.dense_candidate must be true or false, got {data['dense_candidate']!r}")
            out["dense_candidate"] = data["dense_candidate"]
        out["train"] = _mapping(data.get("train"), f"{where}.train")
        per_task = _mapping(data.get("per_task"), f"{where}.per_task")
        out["per_task"] = {t: _mapping(v, f"{where}.per_task.{t}") for t, v in per_task.items()}
        out["dirs"] = {t: str(v) for t, v in _mapping(data.get("dirs"), f"{where}.dirs").items()}
        return cls(**out)


@dataclass
class MtlBudget:
    """Multi-task training: which models (dense / ticket-sharing) and their options."""

    variants: list[str] = field(default_factory=lambda: ["dense", "union", "per-task"])
    single_task: list[str] = field(default_factory=list)
    train: dict[str, Any] = field(default_factory=dict)
    # seeds of some rows only (keys: a variant, or single-dense / single-super); default: the study's seeds
    seeds: dict[str, list[int]] = field(default_factory=dict)

    def seeds_for(self, row: str, study_seeds: list[int]) -> list[int]:
        """The seeds a row is trained with: ``mtl.seeds[row]`` if given, else all of the study's."""
        return self.seeds.get(row, study_seeds)

    def __post_init__(self) -> None:
        if not self.variants and not self.single_task:
            raise UserError("mtl.variants is empty and mtl.single_task too: nothing to train")
        for v in self.variants:
            if v not in ("dense", RANDOM_SHARE):
                parse_mode(v)  # UserError naming the valid modes
        if len(set(self.variants)) != len(self.variants):
            raise UserError(f"mtl.variants lists a variant twice: {self.variants}")
        for kind in self.single_task:
            if kind not in SINGLE_TASK_KINDS:
                raise UserError(f"mtl.single_task: unknown kind {kind!r}; valid: {', '.join(SINGLE_TASK_KINDS)}")

    @property
    def needs_tickets(self) -> bool:
        return any(v != "dense" for v in self.variants) or "super" in self.single_task

    @classmethod
    def from_dict(cls, data: dict, where: str = "mtl") -> "MtlBudget":
        data = _mapping(data, where)
        _check_keys(data, cls, where)
        out: dict[str, Any] = {"train": _mapping(data.get("train"), f"{where}.train")}
        if "variants" in data:
            out["variants"] = [str(parse_mode(v)) if v not in ("dense", RANDOM_SHARE) else v
                               for v in _list(data["variants"], str, f"{where}.variants")]
        if "single_task" in data:
            out["single_task"] = _list(data["single_task"], str, f"{where}.single_task")
        raw_seeds = data.get("seeds") or {}
        if not isinstance(raw_seeds, dict):
            raise UserError(f"study key '{where}.seeds' must map a row to its seeds, e.g. {{union: [1, 2, 3]}}")
        out["seeds"] = {str(k): _list(v, int, f"{where}.seeds.{k}") for k, v in raw_seeds.items()}
        rows = {*out.get("variants", cls().variants), *(f"single-{k}" for k in out.get("single_task", []))}
        unknown = [k for k in out["seeds"] if k not in rows]
        if unknown:
            raise UserError(f"{where}.seeds names {unknown}, which are not rows of the study ({', '.join(sorted(rows))})")
        return cls(**out)


def _check_seeds(seeds: list[int], where: str) -> None:
    if not seeds:
        raise UserError(f"{where} needs at least one seed, e.g. [1, 2, 3]")
    if len(set(seeds)) != len(seeds):
        raise UserError(f"{where} lists a seed twice: {seeds}")


@dataclass
class StudyConfig:
    """One GLUE study. Validated on construction; task names become the registry's canonical names."""

    name: str
    tasks: list[str]
    output_dir: str
    model: str = "minilm"
    seeds: list[int] = field(default_factory=lambda: [1])
    glue_dir: str | None = None
    train: dict[str, Any] = field(default_factory=dict)
    tickets: TicketBudget = field(default_factory=TicketBudget)
    mtl: MtlBudget = field(default_factory=MtlBudget)

    def __post_init__(self) -> None:
        if not self.name or any(c in self.name for c in "/\\\n"):
            raise UserError(f"study name must be a non-empty word without slashes, got {self.name!r}")
        if not self.output_dir:
            raise UserError("study key 'output_dir' is required, e.g. output_dir: runs/quickstart")
        _check_seeds(self.seeds, "seeds")
        self.tasks = canonical_tasks(self.tasks, self.train)
        for key, mapping in (("tickets.per_task", self.tickets.per_task), ("tickets.dirs", self.tickets.dirs)):
            renamed = {canonical_tasks([t], self.train)[0]: v for t, v in mapping.items()}
            extra = [t for t in renamed if t not in self.tasks]
            if extra:
                raise UserError(f"{key} names task(s) {', '.join(extra)} that are not in the study's tasks "
                                f"({', '.join(self.tasks)})")
            mapping.clear()
            mapping.update(renamed)
        for row, seeds in self.mtl.seeds.items():
            _check_seeds(seeds, f"mtl.seeds.{row}")
            if not set(seeds) <= set(self.seeds):
                raise UserError(f"mtl.seeds.{row} {seeds} are not all among the study's seeds {self.seeds}")
        for v in self.mtl.variants:
            mode = parse_mode(v) if v not in ("dense", RANDOM_SHARE) else None
            if mode is not None and mode.name == "vote" and not 1 <= mode.k <= len(self.tasks):
                raise UserError(f"mtl.variants: {v} needs K in 1..{len(self.tasks)} for {len(self.tasks)} tasks")
        # Build every kind of run config once now, so a bad option fails before any training.
        self.ticket_config(self.tasks[0])
        self.mtl_config(self.tasks, seed=self.seeds[0], output_dir="x")

    @property
    def out(self) -> Path:
        return Path(self.output_dir).expanduser()

    def _common(self) -> dict[str, Any]:
        return {"model": self.model, "glue_dir": self.glue_dir}

    def ticket_config(self, task: str) -> TrainConfig:
        """The base config of ``task``'s ticket study (``run_study`` sets seed, output_dir, mask per run)."""
        holdout = {"holdout_fraction": 0.1} if self.tickets.select_on == "holdout" else {}
        layers = [("train", self.train), ("tickets.train", {**holdout, **self.tickets.train}),
                  (f"tickets.per_task.{task}", self.tickets.per_task.get(task, {}))]
        forced = {**self._common(), "tasks": [task], "sparsities": self.tickets.sparsities,
                  "ticket_kinds": self.tickets.kinds, "output_dir": str(self.ticket_dir(task))}
        config = train_config(layers, forced, f"ticket runs of {task}")
        if self.tickets.select_on == "holdout" and config.data.holdout_fraction <= 0:
            raise UserError("tickets.select_on: holdout needs holdout_fraction > 0 in tickets.train (default 0.1)")
        return config

    def mtl_config(self, tasks: list[str], seed: int, output_dir: str, mask: str | None = None) -> TrainConfig:
        forced = {**self._common(), "tasks": list(tasks), "seed": seed, "output_dir": output_dir, "mask": mask}
        return train_config([("train", self.train), ("mtl.train", self.mtl.train)], forced, "multi-task runs")

    def ticket_dir(self, task: str) -> Path:
        """Where ``task``'s phase-transition study lives (``tickets.dirs`` or ``OUT/tickets/TASK``)."""
        given = self.tickets.dirs.get(task)
        return Path(given).expanduser() if given else self.out / "tickets" / task

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict, overrides: dict[str, Any] | None = None) -> "StudyConfig":
        data = {**_mapping(data, ""), **(overrides or {})}
        _check_keys(data, cls, "")
        for key in ("name", "tasks", "output_dir"):
            if data.get(key) in (None, "", []):
                raise UserError(f"study key {key!r} is required")
        out: dict[str, Any] = {"name": str(data["name"]), "tasks": _list(data["tasks"], str, "tasks"),
                               "output_dir": str(data["output_dir"]), "train": _mapping(data.get("train"), "train"),
                               "tickets": TicketBudget.from_dict(data.get("tickets") or {}),
                               "mtl": MtlBudget.from_dict(data.get("mtl") or {})}
        if "model" in data:
            out["model"] = str(data["model"])
        if "seeds" in data:
            out["seeds"] = _list(data["seeds"], int, "seeds")
        if data.get("glue_dir") is not None:
            out["glue_dir"] = str(data["glue_dir"])
        return cls(**out)


def canonical_tasks(names: list[str], train: dict[str, Any]) -> list[str]:
    """Registry names (``STS-B`` -> ``stsb``); unknown or repeated names are one-line errors."""
    if not names:
        raise UserError("study key 'tasks' needs at least one task, e.g. [rte, mrpc, stsb]")
    task_def = train.get("task_def") or []
    config = build_config(TrainConfig, {"task_def": task_def}, {"tasks": list(names)})
    _, tasks = resolve_tasks(config)
    canonical = [t.name for t in tasks]
    if len(canonical) != len(names):
        raise UserError(f"study key 'tasks' lists a task twice: {names}")
    return canonical


def load_study(path: Path, overrides: dict[str, Any] | None = None) -> StudyConfig:
    """Read and validate a study YAML; ``overrides`` (e.g. ``{"output_dir": ...}``) replace top-level keys."""
    try:
        return StudyConfig.from_dict(read_yaml(Path(path)), overrides)
    except UserError as exc:
        message = str(exc)
        raise UserError(message if str(path) in message else f"{path}: {message}") from None
