"""A sub-architecture study (Bort-style search, distillation, fine-tuning, table) as a typed value.

A study YAML (``experiments/subarch.yaml``) has these sections; every key has a default here::

    name: subarch
    teacher: minilm                     # any model name or path (the packaged MiniLM: D<=6, A<=12, H<=384, I<=1536)
    output_dir: runs/subarch
    glue_dir: null                      # default: $GLUE_DIR
    corpus:    {files: [], glue_tasks: [], max_texts: null, heldout: 2000, max_seq_length: 128}
    scoring:   {batches: 64, batch_size: 32, seed: 0, units: output, importance: {}, weights: {}}   # units: tasks ->
                                        # the tasks' importance (scoring.importance, else ticket.importance), each
                                        # task's divided by its sum, times its weight (default 1), summed, ranks heads
                                        # and neurons
    search:
      grid: {depth: [2, 3, 4, 6], heads: [4, 6, 8, 12], hidden: [192, 256, 320, 384], ffn: [384, 768, 1152, 1536]}
      candidates: []                    # names such as D4-A8-H256-I768 instead of the grid
      sample: null                      # draw this many candidates of the grid (seeded)
      layers: importance                # or even (masks.subarch.LAYER_CHOICES)
      distill: {steps: 300}             # the error surrogate's limited distillation (mtl.distill.DistillConfig)
      teacher_cache: true               # run the teacher once on the candidates' batches (mtl.teacher_cache)
      latency: {seq_len: 128, batch_sizes: [1, 32], rounds: 5}
      reference_task: null              # e.g. {task: rte, train: {epochs: 1}}: dev error after a short fine-tune
    select:    {cost: ops, error: distill, weights: {params: 1, cost: 1, error: 1}, max_encoder_share: null,
                min_speedup: null, arch: null}
    distill:   {steps: 20000, ...}      # pre-training of the chosen architecture (mtl.distill.DistillConfig)
    finetune:  {tasks: [...], seeds: [1, 2, 3], lrs: [...], warmups: [...], select_on: holdout,
                sweep_seeds: null,      # null: every seed runs every setting; [1]: the others only the chosen one
                train: {...},
                per_task: {sst2: {...}}, rows: [teacher, distilled, extracted, ticket, ticket_sized]}
                                        # (also ticket_distilled: the ticket row's units, distilled; needs ticket)
    ticket:    {importance: {rte: FILE, ...}, mask: null, min_heads_per_layer: 1}   # ticket_sized: 0 heads
    latency:   {seq_len: 128, batch_sizes: [1, 32], rounds: 9}   # the table's speed-up measurement
"""

from __future__ import annotations

import dataclasses
import itertools
import random
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from basics.errors import UserError
from basics.options import read_yaml
from basics.registry import Registry
from masks.arch import EncoderShape
from masks.subarch import LAYER_CHOICES, SubArch
from mtl.distill import DistillConfig

# the axes a candidate's cost can be measured on (the frontier's second objective)
COST_AXES: Registry[str] = Registry("cost axis")
COST_AXES.register("ops", "analytic operations per token (Bort's inference-speed surrogate)")
COST_AXES.register("latency_b1", "measured seconds per call at batch 1")
COST_AXES.register("latency_b32", "measured seconds per call at batch 32")
ERRORS: Registry[str] = Registry("error surrogate")
ERRORS.register("distill", "the distillation loss on held-out text after the search's limited distillation")
ERRORS.register("task", "100 - the reference task's dev score after a short fine-tune")
UNITS: Registry[str] = Registry("unit scores")
UNITS.register("output", "the teacher's output sensitivity on the corpus (task-free)")
UNITS.register("tasks", "the tasks' own gate importance (scoring.importance, else ticket.importance), summed")
ROWS: Registry[str] = Registry("table row")
ROWS.register("teacher", "the teacher, fine-tuned")
ROWS.register("distilled", "the chosen architecture, extracted and distilled")
ROWS.register("extracted", "the chosen architecture, extracted, not distilled")
ROWS.register("ticket", "a compacted union of winning tickets with the chosen architecture's encoder parameters")
ROWS.register("ticket_sized", "the same union with no head minimum per layer, so that it can shrink to those parameters")
ROWS.register("ticket_distilled", "the ticket row's heads and neurons extracted as a per-layer sub-architecture and "
              "distilled as the distilled row is")
TICKET_ROWS = ("ticket", "ticket_sized")  # the rows cut from ticket.importance (ticket: or given as ticket.mask)
OPTIONAL_ROWS = ("ticket_distilled",)  # rows a study has only when its finetune.rows names them
SELECT_ON = ("holdout", "dev")


def timed_rows(rows: Sequence[str]) -> list[str]:
    """The model rows the table's timing measures (``latency.json``): the chosen architecture once (the extracted
    model, which needs no training, else the distilled one: the same shape, so the same speed) and the ticket rows."""
    shape = [r for r in ("extracted", "distilled") if r in rows][:1]
    return shape + [r for r in TICKET_ROWS if r in rows]


def _build(cls: type, data: Any, where: str):
    """``cls(**data)`` with unknown keys and bad values as one-line errors naming ``where``."""
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise UserError(f"study key {where!r} must be a mapping, got {data!r}")
    names = [f.name for f in dataclasses.fields(cls)]
    unknown = [k for k in data if k not in names]
    if unknown:
        raise UserError(f"unknown study key {where}.{unknown[0]}; valid keys of {where}: {', '.join(names)}")
    try:
        return cls(**data)
    except TypeError as exc:
        raise UserError(f"study key {where}: {exc}") from None


@dataclass
class CorpusSpec:
    files: list[str] = field(default_factory=list)  # text files, one text per line; none: GLUE training sentences
    glue_tasks: list[str] = field(default_factory=list)  # [] = every GLUE task whose training file is on disk
    max_texts: int | None = None  # a fixed random subset of the corpus
    heldout: int = 2000  # texts held out for the distillation loss
    max_seq_length: int = 128
    seed: int = 0

    def __post_init__(self) -> None:
        if self.heldout < 1 or self.max_seq_length < 8 or (self.max_texts is not None and self.max_texts <= self.heldout):
            raise UserError("corpus needs heldout >= 1, max_seq_length >= 8 and max_texts > heldout")


@dataclass
class ScoringSpec:
    batches: int = 64
    batch_size: int = 32
    seed: int = 0
    units: str = "output"  # how heads and FFN neurons are ranked (UNITS); layers and hidden: output sensitivity
    importance: dict[str, str] = field(default_factory=dict)  # units: tasks; task -> importance.safetensors
    weights: dict[str, float] = field(default_factory=dict)  # units: tasks; task -> weight in the sum (default 1)

    def __post_init__(self) -> None:
        if self.batches < 1 or self.batch_size < 1:
            raise UserError("scoring needs batches >= 1 and batch_size >= 1")
        UNITS.check(self.units)
        if self.weights and self.units != "tasks":
            raise UserError("scoring.weights weighs the tasks' importance: it needs scoring.units: tasks")
        if any(not isinstance(w, (int, float)) or w < 0 for w in self.weights.values()):
            raise UserError(f"scoring.weights must be numbers >= 0, got {self.weights}")
        self.weights = {task: float(w) for task, w in self.weights.items()}


@dataclass
class LatencySpec:
    seq_len: int = 128
    batch_sizes: list[int] = field(default_factory=lambda: [1, 32])
    rounds: int = 5
    sequences_per_round: int = 32  # timed calls per round at batch b: max(1, this // b)

    def __post_init__(self) -> None:
        if self.rounds < 1 or not self.batch_sizes or min(self.batch_sizes) < 1 or self.seq_len < 2:
            raise UserError("latency needs rounds >= 1, batch sizes >= 1 and seq_len >= 2")

    def calls(self) -> dict[int, int]:
        return {b: max(1, self.sequences_per_round // b) for b in self.batch_sizes}


@dataclass
class SearchSpec:
    grid: dict[str, list[int]] = field(default_factory=lambda: {
        "depth": [2, 3, 4, 6], "heads": [4, 6, 8, 12], "hidden": [192, 256, 320, 384], "ffn": [384, 768, 1152, 1536]})
    candidates: list[str] = field(default_factory=list)
    sample: int | None = None
    seed: int = 0
    layers: str = "importance"
    distill: DistillConfig = field(default_factory=lambda: DistillConfig(steps=300, checkpoint_every=0, log_every=25))
    teacher_cache: bool = True  # the teacher's outputs on the candidates' batches, computed once (hidden objective)
    latency: LatencySpec = field(default_factory=LatencySpec)
    reference_task: dict[str, Any] | None = None  # {task: NAME, train: {train.py options}}

    def __post_init__(self) -> None:
        LAYER_CHOICES.check(self.layers)
        if isinstance(self.distill, dict):
            self.distill = DistillConfig.from_dict({"checkpoint_every": 0, "log_every": 25, "steps": 300, **self.distill})
        if isinstance(self.latency, dict):
            self.latency = _build(LatencySpec, self.latency, "search.latency")
        axes = ("depth", "heads", "hidden", "ffn")
        if sorted(self.grid) != sorted(axes) or any(not v for v in self.grid.values()):
            raise UserError(f"search.grid needs a non-empty list for each of {', '.join(axes)}")
        if self.reference_task is not None and "task" not in self.reference_task:
            raise UserError("search.reference_task needs a task, e.g. {task: rte, train: {epochs: 1}}")

    def size(self) -> int:
        """How many candidates :meth:`archs` gives (without the teacher's shape)."""
        if self.candidates:
            return len(self.candidates)
        total = 1
        for values in self.grid.values():
            total *= len(values)
        return total if self.sample is None else min(self.sample, total)

    def archs(self, shape: EncoderShape) -> list[SubArch]:
        """The candidates: the explicit list, else the grid (or ``sample`` of it), each checked against the teacher."""
        if self.candidates:
            archs = [SubArch.parse(name) for name in self.candidates]
        else:
            g = self.grid
            archs = [SubArch(*values) for values in itertools.product(g["depth"], g["heads"], g["hidden"], g["ffn"])]
            if self.sample is not None and self.sample < len(archs):
                archs = sorted(random.Random(self.seed).sample(archs, self.sample))
        if len(set(archs)) != len(archs):
            raise UserError("search.candidates lists a sub-architecture twice")
        return [a.check(shape) for a in archs]


@dataclass
class SelectSpec:
    cost: str = "ops"
    error: str = "distill"
    weights: dict[str, float] = field(default_factory=lambda: {"params": 1.0, "cost": 1.0, "error": 1.0})
    max_encoder_share: float | None = None  # keep candidates with at most this share of the teacher's layer parameters
    min_speedup: float | None = None  # ... and at least this measured speed-up at the largest latency batch
    arch: str | None = None  # choose this candidate instead of the best ranked

    def __post_init__(self) -> None:
        COST_AXES.check(self.cost)
        ERRORS.check(self.error)
        if sorted(self.weights) != ["cost", "error", "params"]:
            raise UserError("select.weights needs params, cost and error")


@dataclass
class FinetuneSpec:
    tasks: list[str] = field(default_factory=lambda: ["rte", "mrpc", "stsb", "cola", "sst2"])
    seeds: list[int] = field(default_factory=lambda: [1, 2, 3])
    lrs: list[float] = field(default_factory=lambda: [5e-5, 1e-4])
    warmups: list[float] = field(default_factory=lambda: [0.06, 0.1])
    select_on: str = "holdout"
    # seeds the lr x warm-up sweep runs on (default: every seed); the other seeds run only the setting chosen on
    # these (``finetune/ROW/TASK/chosen-seedK``): (settings - 1) x (other seeds) fewer runs per row and task
    sweep_seeds: list[int] | None = None
    train: dict[str, Any] = field(default_factory=dict)  # train.py options of every fine-tuning run
    per_task: dict[str, dict[str, Any]] = field(default_factory=dict)  # e.g. {sst2: {max_train_samples: 10000}}
    rows: list[str] = field(default_factory=lambda: [r for r in ROWS.names() if r not in OPTIONAL_ROWS])

    def __post_init__(self) -> None:
        for row in self.rows:
            ROWS.check(row)
        if self.select_on not in SELECT_ON:
            raise UserError(f"finetune.select_on must be one of {', '.join(SELECT_ON)}")
        if not (self.tasks and self.seeds and self.lrs and self.warmups and self.rows):
            raise UserError("finetune needs tasks, seeds, lrs, warmups and rows")
        if self.sweep_seeds is not None:
            outside = [s for s in self.sweep_seeds if s not in self.seeds]
            if not self.sweep_seeds or outside:
                raise UserError(f"finetune.sweep_seeds must be some of finetune.seeds {self.seeds}; got "
                                f"{self.sweep_seeds}")

    def swept(self) -> list[int]:
        """The seeds every (lr, warm-up) setting runs on."""
        return list(self.sweep_seeds) if self.sweep_seeds is not None else list(self.seeds)

    def chosen_only(self) -> list[int]:
        """The seeds that run only the chosen setting."""
        return [s for s in self.seeds if s not in self.swept()]

    def runs_per_row_and_task(self) -> int:
        """Fine-tuning runs of one row on one task: every setting on the swept seeds, the chosen one on the rest."""
        return len(self.lrs) * len(self.warmups) * len(self.swept()) + len(self.chosen_only())


@dataclass
class TicketSpec:
    importance: dict[str, str] = field(default_factory=dict)  # task -> importance.safetensors of a dense run
    mask: str | None = None  # a shared mask file, used as it is (the ``ticket`` row only)
    min_heads_per_layer: int = 1  # of each task's ticket in the ``ticket`` row; ``ticket_sized`` has none

    def __post_init__(self) -> None:
        if self.min_heads_per_layer < 0:
            raise UserError(f"ticket.min_heads_per_layer must be 0 or more, got {self.min_heads_per_layer}")

    def min_heads(self, row: str) -> int:
        """The head minimum per layer of each task's ticket in ``row``'s union: the ``ticket`` row keeps
        ``min_heads_per_layer`` (a union of tickets that each keep a head per layer cannot shrink below some size);
        ``ticket_sized`` none, so that it can reach the chosen architecture's encoder parameter count."""
        return 0 if row == "ticket_sized" else self.min_heads_per_layer

    def cuts(self, row: str) -> bool:
        """Whether ``row`` can be made: ``ticket`` from the importance files or the given mask, ``ticket_sized``
        from the importance files alone (a given mask has its own size)."""
        return bool(self.importance) or (row == "ticket" and bool(self.mask))


@dataclass
class SubarchStudy:
    name: str = "subarch"
    teacher: str = "minilm"
    output_dir: str = "runs/subarch"
    glue_dir: str | None = None
    corpus: CorpusSpec = field(default_factory=CorpusSpec)
    scoring: ScoringSpec = field(default_factory=ScoringSpec)
    search: SearchSpec = field(default_factory=SearchSpec)
    select: SelectSpec = field(default_factory=SelectSpec)
    distill: DistillConfig = field(default_factory=lambda: DistillConfig(steps=20000, checkpoint_every=500,
                                                                         log_every=50, eval_every=2000))
    finetune: FinetuneSpec = field(default_factory=FinetuneSpec)
    ticket: TicketSpec = field(default_factory=TicketSpec)
    latency: LatencySpec = field(default_factory=lambda: LatencySpec(rounds=9))

    def __post_init__(self) -> None:
        if self.scoring.units == "tasks" and not self.unit_importance():
            raise UserError("scoring.units tasks needs importance files: scoring.importance or ticket.importance "
                            "({task: importance.safetensors})")
        if "ticket_distilled" in self.finetune.rows and "ticket" not in self.finetune.rows:
            raise UserError("finetune.rows: ticket_distilled distils the ticket row's units; add ticket to the rows")
        unknown = sorted(set(self.scoring.weights) - set(self.unit_importance()))
        if unknown:
            raise UserError(f"scoring.weights names {', '.join(unknown)}, which has no importance file "
                            f"(the tasks: {', '.join(sorted(self.unit_importance()))})")

    def unit_importance(self) -> dict[str, str]:
        """The importance files that rank heads and neurons when ``scoring.units`` is ``tasks``."""
        return dict(self.scoring.importance or self.ticket.importance)

    @property
    def out(self) -> Path:
        return Path(self.output_dir).expanduser()

    def rows(self) -> list[str]:
        """The table's rows; the ticket rows only when the study says where they come from (:meth:`TicketSpec.cuts`)."""
        return [r for r in self.finetune.rows if (r not in TICKET_ROWS or self.ticket.cuts(r))
                and (r != "ticket_distilled" or self.ticket.cuts("ticket"))]


SECTIONS = {"corpus": CorpusSpec, "scoring": ScoringSpec, "search": SearchSpec, "select": SelectSpec,
            "finetune": FinetuneSpec, "ticket": TicketSpec, "latency": LatencySpec}


def study_from_dict(data: dict[str, Any]) -> SubarchStudy:
    """The study of a YAML mapping; unknown keys and bad values are one-line errors."""
    values: dict[str, Any] = {}
    for key, value in (data or {}).items():
        if key in SECTIONS:
            values[key] = _build(SECTIONS[key], value, key)
        elif key == "distill":
            values[key] = DistillConfig.from_dict({"checkpoint_every": 500, "log_every": 50, "eval_every": 2000,
                                                   "steps": 20000, **(value or {})})
        else:
            values[key] = value
    return _build(SubarchStudy, values, "study")


def load_study(path: Path, output_dir: str | None = None, glue_dir: str | None = None) -> SubarchStudy:
    """Read a study YAML; ``output_dir`` / ``glue_dir`` (command-line flags) override the file."""
    study = study_from_dict(read_yaml(Path(path)))
    if output_dir is not None:
        study.output_dir = output_dir
    if glue_dir is not None:
        study.glue_dir = glue_dir
    return study


def study_to_dict(study: SubarchStudy) -> dict[str, Any]:
    """The resolved study as plain data (written as ``study.yaml``)."""
    return dataclasses.asdict(study)
