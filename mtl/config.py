"""Typed run configuration, by component: model, data, optimisation, evaluation, runtime, tickets, output.

:class:`TrainConfig` is composed of small section configs, each with its defaults, its own validation
and its ``to_dict``/``from_dict``. Users see one flat set of options: every field of every section is a
command-line flag (``--batch-size``) and a YAML key (``batch_size``), generated from the dataclasses so
they never drift apart (:mod:`basics.options`); defaults < ``--config`` YAML < flags. A run saves its
resolved config in that flat form (``config.yaml``).

Each option also declares its *role* (``metadata["role"]``, :data:`basics.options.ROLES`): whether
changing it changes what a run computes. That one list decides what ``--resume`` and the studies
accept as "the same run" (:func:`run_conflicts`).

The choice lists come from their registries: :data:`mtl.sampler.SAMPLERS`, :data:`mtl.precision.PRECISIONS`,
:data:`mtl.pooling.POOLINGS`, :data:`masks.kinds.TICKET_KINDS`, :data:`masks.kinds.GRANULARITIES`,
:data:`masks.kinds.FFN_ALLOCATIONS`, :data:`masks.estimators.ESTIMATORS`, :data:`masks.estimators.NORMALIZATIONS`. None of them imports torch, so ``--help`` is fast.
"""

from __future__ import annotations

import dataclasses
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import yaml

from basics.errors import UserError
from basics.io import atomic_write_text
from basics.options import Option, build_config, check_choice, check_positive, options_of, read_yaml, section_options
from masks.arch import DEFAULT_WEIGHT_ROLES, WEIGHT_ROLES
from masks.estimators import ESTIMATORS, NORMALIZATIONS
from masks.kinds import FFN_ALLOCATIONS, GRANULARITIES, TICKET_KINDS
from mtl.pooling import POOLINGS
from mtl.precision import PRECISIONS
from mtl.sampler import SAMPLERS
from mtl.training_log import REPORTERS

SUBSAMPLE_MODES = ("random", "first")


def _opt(default: Any = dataclasses.MISSING, *, help: str, role: str = "result", key: str | None = None,
         factory: Any = dataclasses.MISSING) -> Any:
    metadata = {"help": help, "role": role, **({"key": key} if key else {})}
    if factory is not dataclasses.MISSING:
        return field(default_factory=factory, metadata=metadata)
    return field(default=default, metadata=metadata)


def _finite(name: str, value: float | None) -> None:
    if value is not None and not math.isfinite(value):
        raise UserError(f"--{name.replace('_', '-')} must be a finite number, got {value}")


def check_finite_floats(section: Any) -> None:
    """UserError naming the flag of any float option of ``section`` (or any value of a list of floats) that is
    NaN or infinite. Applied to every section, so a new float option is checked without anyone remembering to."""
    for f in dataclasses.fields(section):
        value = getattr(section, f.name)
        values = value if isinstance(value, list) else [value]
        for item in values:
            if isinstance(item, float):
                _finite(f.metadata.get("key", f.name), item)


class Section:
    """Shared by the section configs: validation on construction (every float finite first), dict form."""

    def __post_init__(self) -> None:
        check_finite_floats(self)
        self.validate()

    def validate(self) -> None:  # overridden
        pass

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)  # type: ignore[call-overload]

    @classmethod
    def from_dict(cls, values: dict[str, Any]):
        return cls(**values)  # type: ignore[call-arg]


@dataclass
class ModelConfig(Section):
    """The encoder and the task heads on top of it."""

    name: str = _opt("minilm", key="model",
                     help="'minilm' (packaged all-MiniLM-L6-v2), a HF hub name, or a local path")
    pooling: str = _opt("cls", help=f"sentence representation for task heads: {', '.join(POOLINGS.names())}")
    head_dropout: float = _opt(0.1, help="dropout before each task head")

    def validate(self) -> None:
        check_choice("pooling", self.pooling, POOLINGS.names())
        if not 0.0 <= self.head_dropout < 1.0:
            raise UserError(f"--head-dropout must be in [0, 1), got {self.head_dropout}")


@dataclass
class DataConfig(Section):
    """Which tasks, where their files are, how they are cut and tokenized."""

    tasks: list[str] = _opt(factory=list, help="comma-separated task names, e.g. rte,mrpc,stsb")
    glue_dir: str | None = _opt(None, role="free",
                                help="GLUE TSV directory (default: $GLUE_DIR; unset: Hugging Face hub)")
    task_def: list[str] = _opt(factory=list, help="extra task-definition YAML file(s), comma-separated")
    max_seq_length: int = _opt(128, help="truncate inputs to this many tokens (span tasks: the window length; "
                                         "384 is the SQuAD convention)")
    doc_stride: int = _opt(128, help="span tasks (SQuAD): context tokens two consecutive windows of a long "
                                     "context share")
    max_train_samples: int | None = _opt(None, help="use at most N training examples of each task")
    max_eval_samples: int | None = _opt(None, help="use at most N dev examples of each task")
    subsample: str = _opt("random", help="how --max-train/eval-samples choose examples: random "
                                         "(a fixed subset, the same for every run and seed) or first (file order)")
    holdout_fraction: float = _opt(0.0, help="hold out this fraction of each task's training set "
                                             "(fixed split, same for every seed) and select the best epoch on it, not on dev")
    cache_dir: str | None = _opt(None, role="free",
                                 help="tokenization cache (default: $MTL_CACHE_DIR or ~/.cache/mtl_tickets)")

    def validate(self) -> None:
        check_choice("subsample", self.subsample, SUBSAMPLE_MODES)
        check_positive("max_seq_length", self.max_seq_length)
        check_positive("doc_stride", self.doc_stride)
        for name in ("max_train_samples", "max_eval_samples"):
            if getattr(self, name) is not None:
                check_positive(name, getattr(self, name))
        if not 0.0 <= self.holdout_fraction < 1.0:
            raise UserError(f"--holdout-fraction must be in [0, 1), got {self.holdout_fraction}")

    def resolved_glue_dir(self) -> Path | None:
        """``--glue-dir``, else ``$GLUE_DIR``, else None (meaning: the Hugging Face hub)."""
        value = self.glue_dir or os.environ.get("GLUE_DIR")
        return Path(value).expanduser() if value else None


@dataclass
class OptimConfig(Section):
    """How long and how the weights are trained, and the seed of everything random in a run."""

    epochs: float = _opt(5.0, help="training epochs (fractions allowed)")
    lr: float = _opt(1e-4, help="peak learning rate (AdamW)")
    batch_size: int = _opt(32, help="training batch size (per step, before accumulation)")
    grad_accum: int = _opt(1, help="gradient accumulation steps")
    warmup_ratio: float = _opt(0.1, help="fraction of optimizer steps used for linear warm-up")
    weight_decay: float = _opt(0.01, help="AdamW weight decay (not on biases / LayerNorm)")
    max_grad_norm: float = _opt(1.0, help="gradient clipping norm (0 = off)")
    max_steps: int | None = _opt(None, help="stop after N optimizer steps (overrides epochs)")
    seed: int = _opt(1, help="seed for weights of task heads, data order and sampler")
    sampler: str = _opt("round-robin", help=f"task sampler: {', '.join(SAMPLERS.names())}")
    temperature: float = _opt(2.0, help="T for the temperature sampler (p ~ n^(1/T))")
    group_by_length: bool = _opt(True, help="length-grouped batches (less padding)")

    def validate(self) -> None:
        check_choice("sampler", self.sampler, SAMPLERS.names())
        check_positive("epochs", self.epochs, allow_zero=True)
        if self.epochs == 0 and self.max_steps is None:  # with --max-steps: TrainConfig.check_conflicts says it
            raise UserError("--epochs 0 trains nothing (the task heads would stay random, so there is nothing to "
                            "evaluate or score); give --epochs > 0 (fractions allowed) or --max-steps N")
        check_positive("lr", self.lr)
        check_positive("batch_size", self.batch_size)
        check_positive("grad_accum", self.grad_accum)
        check_positive("temperature", self.temperature)
        if self.max_steps is not None:
            check_positive("max_steps", self.max_steps)
        if not 0.0 <= self.warmup_ratio < 1.0:
            raise UserError(f"--warmup-ratio must be in [0, 1), got {self.warmup_ratio}")
        if self.weight_decay < 0 or self.max_grad_norm < 0:
            raise UserError("--weight-decay and --max-grad-norm must be >= 0")


@dataclass
class EvalConfig(Section):
    """When the run is evaluated and which epoch it keeps."""

    eval_batch_size: int = _opt(128, role="free", help="evaluation batch size")
    eval_every_epoch: bool = _opt(True, help="evaluate every epoch (else only at the end)")
    keep_best: bool = _opt(True, help="restore the best epoch (the task score, tasks.score: mean of each task's "
                                      "metrics, averaged over tasks; on the held-out slice when there is one) at the end")
    max_answer_length: int = _opt(30, help="span tasks: the longest answer, in tokens")
    null_threshold: float = _opt(0.0, help="span tasks with no-answer questions (SQuAD v2.0): answer nothing when the "
                                           "null score (start + end logit of [CLS]) beats the best span by more than this")

    def validate(self) -> None:
        check_positive("eval_batch_size", self.eval_batch_size)
        check_positive("max_answer_length", self.max_answer_length)


@dataclass
class RuntimeConfig(Section):
    """Where and how the run executes: none of these change what it computes (except precision)."""

    precision: str = _opt("auto", help="auto (bf16 autocast where the CPU/GPU has native bf16, else fp32), "
                                       "fp32, bf16, fp16 (CUDA only)")
    device: str = _opt("auto", role="free", help="auto, cpu, cuda, cuda:N")
    num_threads: int | None = _opt(None, role="free", help="torch CPU threads (default: all cores)")
    deterministic: bool = _opt(False, role="free", help="torch.use_deterministic_algorithms: bitwise-repeatable runs "
                                                        "(CPU: same seed, data, threads -> same metrics)")
    log_every: int = _opt(50, role="free", help="log the mean training loss every N steps")
    progress: bool = _opt(True, role="free", help="tqdm progress bars")
    report_to: list[str] = _opt(factory=list, role="free", help=f"also log training to: {', '.join(REPORTERS.names())} "
                                                                "(OUTPUT/tensorboard/; the JSONL log stays)")

    def validate(self) -> None:
        check_choice("precision", self.precision, PRECISIONS.names())
        for name in self.report_to:
            check_choice("report_to", name, REPORTERS.names())
        check_positive("log_every", self.log_every)
        if self.num_threads is not None:
            check_positive("num_threads", self.num_threads)


@dataclass
class TicketConfig(Section):
    """Masks a run trains with, and the importance scores and masks it writes after training."""

    mask: str | None = _opt(None, role="input", help="train with the encoder gated by this mask file "
                                                      "(shared or per-task; training starts from the pre-trained weights)")
    score_importance: bool = _opt(False, help="after training, write importance.safetensors and "
                                              "masks/{winning,random,losing}-{sparsity}.safetensors")
    sparsities: list[float] = _opt(factory=lambda: [round(0.1 * i, 1) for i in range(1, 10)], role="scoring",
                                   help="sparsity levels of the cut masks (fraction of heads and FFN neurons pruned)")
    ffn_sparsities: list[float] = _opt(factory=list, role="scoring",
                                       help="FFN fractions, one per sparsity (default: the same as the head fraction)")
    ticket_kinds: list[str] = _opt(factory=lambda: list(TICKET_KINDS.names()), role="scoring",
                                   help=f"mask kinds to cut: {', '.join(TICKET_KINDS.names())}")
    ticket_granularity: str = _opt("neuron", role="scoring",
                                   help=f"FFN units: {', '.join(GRANULARITIES.names())} (whole FFN per layer)")
    min_heads_per_layer: int = _opt(1, role="scoring", help="heads every layer keeps in a cut mask")
    score_batches: int | None = _opt(None, role="scoring", help="training batches used for scoring (default: all)")
    head_normalization: str = _opt("layer_l2", role="scoring",
                                   help=f"head score normalisation: {', '.join(NORMALIZATIONS.names())}")
    importance_abs: str = _opt("batch", role="scoring", help=(
        f"where the importance score takes |gradient|: {', '.join(ESTIMATORS.names())} (batch: per batch, as "
        "Michel et al. and Prasanna et al.; token: per token of every example, as the Super Tickets code)"))
    ffn_normalization: str = _opt("none", role="scoring", help=(
        f"FFN neuron score normalisation: {', '.join(NORMALIZATIONS.names())} (layer_l2: each layer's scores "
        "divided by their L2 norm before the global ranking)"))
    ffn_allocation: str = _opt("global", role="scoring", help=(
        f"how a ticket's pruned FFN neurons spread over layers: {', '.join(FFN_ALLOCATIONS.names())} "
        "(global: one ranking across layers; per-layer: the same fraction in every layer)"))
    weight_mask: str | None = _opt(None, role="input", help="train with this per-weight mask file: pruned weights "
                                                            "are held at exactly 0 (training starts from the pre-trained "
                                                            "weights, so this rewinds the ticket)")
    write_magnitude_masks: list[float] = _opt(factory=list, role="outputs", help=(
        "after training, write OUTPUT/weight_masks/omp-{sparsity}.safetensors: global magnitude masks of the "
        "trained weights at these sparsities; with --weight-mask they are imp-{sparsity}, pruned only among the "
        "surviving weights (the next IMP round)"))
    weight_mask_include: list[str] = _opt(factory=lambda: list(DEFAULT_WEIGHT_ROLES), help=(
        f"weight matrices that --write-magnitude-masks prunes: {', '.join(WEIGHT_ROLES)}"))

    def validate(self) -> None:
        for value in [*self.sparsities, *self.ffn_sparsities, *self.write_magnitude_masks]:
            if not 0.0 <= value < 1.0:
                raise UserError(f"sparsity must be in [0, 1), got {value}")
        if self.score_importance and not self.sparsities:
            raise UserError("--score-importance needs at least one --sparsities value")
        if self.ffn_sparsities and len(self.ffn_sparsities) != len(self.sparsities):
            raise UserError(f"--ffn-sparsities needs one value per --sparsities value ({len(self.sparsities)})")
        for kind in self.ticket_kinds:
            check_choice("ticket_kinds", kind, TICKET_KINDS.names())
        check_choice("ticket_granularity", self.ticket_granularity, GRANULARITIES.names())
        check_choice("head_normalization", self.head_normalization, NORMALIZATIONS.names())
        check_choice("importance_abs", self.importance_abs, ESTIMATORS.names())
        check_choice("ffn_normalization", self.ffn_normalization, NORMALIZATIONS.names())
        check_choice("ffn_allocation", self.ffn_allocation, FFN_ALLOCATIONS.names())
        if self.ffn_allocation != "global" and self.ticket_granularity != "neuron":
            raise UserError(f"--ffn-allocation {self.ffn_allocation} needs --ticket-granularity neuron "
                            f"(got {self.ticket_granularity}: whole FFN blocks are ranked, not neurons)")
        if self.min_heads_per_layer < 0:
            raise UserError(f"--min-heads-per-layer must be >= 0, got {self.min_heads_per_layer}")
        if self.score_batches is not None:
            check_positive("score_batches", self.score_batches)
        if not self.weight_mask_include:
            raise UserError(f"--weight-mask-include needs at least one of {', '.join(WEIGHT_ROLES)}")
        for role in self.weight_mask_include:
            check_choice("weight_mask_include", role, WEIGHT_ROLES)

    def check_files(self) -> None:
        """UserError unless the mask files the run reads exist (checked when a run starts, not when a saved
        config is read back: a finished run's inputs may be gone)."""
        if self.mask is not None and not Path(self.mask).expanduser().is_file():
            raise UserError(f"mask file not found: {self.mask}")
        if self.weight_mask is not None and not Path(self.weight_mask).expanduser().is_file():
            raise UserError(f"weight mask file not found: {self.weight_mask}")


@dataclass
class OutputConfig(Section):
    """Where the run writes, what it keeps, and whether it continues an earlier run."""

    output_dir: str = _opt("", role="free", help="directory for every artifact of the run")
    save_model: bool = _opt(True, role="free", help="save the final model under OUTPUT/model")
    save_checkpoints: bool = _opt(True, role="free", help="keep OUTPUT/checkpoint.pt current (end of every epoch, "
                                                          "and every --checkpoint-every steps) so --resume can continue "
                                                          "after a crash; removed when the run completes")
    checkpoint_every: int = _opt(0, role="free",
                                 help="also checkpoint every N optimizer steps (0: only at the end of every epoch)")
    resume: bool = _opt(False, role="free", help="continue the run in --output-dir from its last checkpoint; options "
                                                 "not given are taken from its config.yaml, a changed option is an "
                                                 "error; no checkpoint: start from the beginning")

    def validate(self) -> None:
        check_positive("checkpoint_every", self.checkpoint_every, allow_zero=True)
        if self.checkpoint_every and not self.save_checkpoints:
            raise UserError("--checkpoint-every conflicts with --no-save-checkpoints; drop one of them")


@dataclass
class TrainConfig:
    """Everything a training run needs, by section. Build it from flat options with :meth:`of` /
    :meth:`from_flat`; change it with :meth:`replace` (flat names); ``to_dict`` is the flat file form."""

    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    runtime: RuntimeConfig = field(default_factory=RuntimeConfig)
    tickets: TicketConfig = field(default_factory=TicketConfig)
    output: OutputConfig = field(default_factory=OutputConfig)

    SECTIONS: ClassVar[dict[str, type]] = {"model": ModelConfig, "data": DataConfig, "optim": OptimConfig,
                                           "eval": EvalConfig, "runtime": RuntimeConfig, "tickets": TicketConfig,
                                           "output": OutputConfig}

    def __post_init__(self) -> None:
        self.check_conflicts()

    def check_conflicts(self) -> None:
        """Options of different sections that contradict each other (each alone is valid)."""
        if self.optim.max_steps is not None and self.optim.epochs == 0:
            raise UserError(f"--max-steps {self.optim.max_steps} conflicts with --epochs 0 (no training); "
                            "give one of them")
        if self.runtime.precision == "fp16" and self.runtime.device == "cpu":
            raise UserError("--precision fp16 needs CUDA, conflicts with --device cpu; use bf16 or fp32 on CPU")

    # ---- flat view
    @classmethod
    def options(cls) -> list[Option]:
        return [opt for name, section in cls.SECTIONS.items() for opt in section_options(section, name)]

    @classmethod
    def flat_names(cls) -> tuple[str, ...]:
        return tuple(o.key for o in cls.options())

    @classmethod
    def from_flat(cls, values: dict[str, Any]) -> "TrainConfig":
        """From flat options (``{"lr": 3e-5, "tasks": [...]}``); unknown names are one-line errors."""
        by_key = {o.key: o for o in cls.options()}
        unknown = [k for k in values if k not in by_key]
        if unknown:
            raise UserError(f"unknown option(s) {', '.join(map(repr, unknown))}; valid: {', '.join(sorted(by_key))}")
        parts: dict[str, dict[str, Any]] = {name: {} for name in cls.SECTIONS}
        for key, value in values.items():
            opt = by_key[key]
            parts[opt.section][opt.field] = value  # type: ignore[index]
        return cls(**{name: section.from_dict(parts[name]) for name, section in cls.SECTIONS.items()})

    @classmethod
    def of(cls, **values: Any) -> "TrainConfig":
        """``TrainConfig.of(tasks=["rte"], lr=3e-5)``: defaults and the given flat options."""
        return cls.from_flat(values)

    def to_dict(self) -> dict[str, Any]:
        """The flat form (what ``config.yaml`` and checkpoints hold), sections in order."""
        out: dict[str, Any] = {}
        for opt in self.options():
            out[opt.key] = _copy(getattr(getattr(self, opt.section), opt.field))  # type: ignore[arg-type]
        return out

    def replace(self, **values: Any) -> "TrainConfig":
        """A copy with the given flat options changed (validated)."""
        return self.from_flat({**self.to_dict(), **values})

    def resolved_glue_dir(self) -> Path | None:
        return self.data.resolved_glue_dir()


def _copy(value: Any) -> Any:
    return list(value) if isinstance(value, list) else value


def option_roles() -> dict[str, str]:
    """``{flat option name: role}`` of :class:`TrainConfig` (:data:`basics.options.ROLES`)."""
    return {o.key: o.role for o in TrainConfig.options()}


def run_conflicts(saved: dict[str, Any], config: TrainConfig, *, compare_scoring: bool | None = None) -> list[str]:
    """``"name: saved -> now"`` for every option of ``config`` that makes it another run than ``saved``
    (a run's flat ``config.yaml``).

    ``result`` options always count; ``scoring`` options count when the run scores importance
    (``compare_scoring`` None: when ``config`` does); ``input`` files (masks) are compared by content
    elsewhere (:class:`mtl.rundir.RunDir`), ``outputs`` by the files the caller needs, ``free`` never.
    Keys a saved config lacks take today's default (older runs predate newer options).
    """
    reference = build_config(TrainConfig, {k: v for k, v in saved.items() if k in TrainConfig.flat_names()}, {})
    if compare_scoring is None:
        compare_scoring = config.tickets.score_importance
    counted = {"result"} | ({"scoring"} if compare_scoring else set())
    now, then = config.to_dict(), reference.to_dict()
    roles = option_roles()
    return [f"{k}: {then[k]!r} -> {now[k]!r}" for k in now if roles[k] in counted and now[k] != then[k]]


def check_same_run(saved: dict[str, Any], config: TrainConfig, source: Path) -> None:
    """UserError naming every option of ``config`` that differs from the run saved in ``source``."""
    conflicts = run_conflicts(saved, config)
    if conflicts:
        raise UserError(f"--resume: options differ from the run in {source} ({'; '.join(conflicts)}); "
                        "drop them, or use a new --output-dir")


def config_for_resume(config: TrainConfig, yaml_values: dict[str, Any], flag_values: dict[str, Any]) -> TrainConfig:
    """For ``--resume``: options not given (``yaml_values`` from ``--config``, ``flag_values``) come from
    ``OUTPUT/config.yaml`` of the run being resumed; ``config`` itself when there is none."""
    if not config.output.resume or not config.output.output_dir:
        return config
    saved = Path(config.output.output_dir).expanduser() / "config.yaml"
    if not saved.is_file():
        return config
    values = read_yaml(saved)
    known = {k: v for k, v in values.items() if k in TrainConfig.flat_names()}
    resumed = build_config(TrainConfig, {**known, **yaml_values}, flag_values)
    check_same_run(values, resumed, saved)
    return resumed


def save_config(config: TrainConfig, path: Path) -> None:
    """Write the resolved config in its flat form as YAML (atomically)."""
    atomic_write_text(path, yaml.safe_dump(config.to_dict(), sort_keys=False))


__all__ = ["TrainConfig", "ModelConfig", "DataConfig", "OptimConfig", "EvalConfig", "RuntimeConfig", "TicketConfig",
           "OutputConfig", "run_conflicts", "check_same_run", "config_for_resume", "save_config", "read_yaml",
           "options_of", "option_roles"]
