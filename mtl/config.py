"""Typed run configuration: defaults here, a YAML file overrides them, flags override the YAML.

Every field of :class:`TrainConfig` is also a command-line flag (``--batch-size``), generated
from the dataclass so the two can never drift apart. A run saves its resolved config.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from .errors import UserError

SAMPLERS = ("round-robin", "proportional", "temperature")
PRECISIONS = ("auto", "fp32", "bf16", "fp16")
POOLINGS = ("cls", "pooler", "mean")
TICKET_KINDS = ("winning", "random", "losing")
# roles a weight mask may cover (masks.weight_mask.WEIGHT_ROLES); embeddings are left out by default
WEIGHT_MASK_ROLES = ("q", "k", "v", "attn_out", "ffn_up", "ffn_down", "pooler", "embeddings")


@dataclass
class TrainConfig:
    """Everything a training run needs. Field docs double as ``--help`` text (``metadata['help']``)."""

    tasks: list[str] = field(default_factory=list, metadata={"help": "comma-separated task names, e.g. rte,mrpc,stsb"})
    output_dir: str = field(default="", metadata={"help": "directory for every artifact of the run"})
    model: str = field(default="minilm", metadata={"help": "'minilm' (packaged all-MiniLM-L6-v2), a HF hub name, or a local path"})
    glue_dir: str | None = field(default=None, metadata={"help": "GLUE TSV directory (default: $GLUE_DIR; unset: Hugging Face hub)"})
    task_def: list[str] = field(default_factory=list, metadata={"help": "extra task-definition YAML file(s), comma-separated"})
    epochs: float = field(default=5.0, metadata={"help": "training epochs (fractions allowed)"})
    lr: float = field(default=1e-4, metadata={"help": "peak learning rate (AdamW)"})
    batch_size: int = field(default=32, metadata={"help": "training batch size (per step, before accumulation)"})
    eval_batch_size: int = field(default=128, metadata={"help": "evaluation batch size"})
    grad_accum: int = field(default=1, metadata={"help": "gradient accumulation steps"})
    max_seq_length: int = field(default=128, metadata={"help": "truncate inputs to this many tokens"})
    warmup_ratio: float = field(default=0.1, metadata={"help": "fraction of optimizer steps used for linear warm-up"})
    weight_decay: float = field(default=0.01, metadata={"help": "AdamW weight decay (not on biases / LayerNorm)"})
    max_grad_norm: float = field(default=1.0, metadata={"help": "gradient clipping norm (0 = off)"})
    seed: int = field(default=1, metadata={"help": "seed for weights of task heads, data order and sampler"})
    sampler: str = field(default="round-robin", metadata={"help": f"task sampler: {', '.join(SAMPLERS)}"})
    temperature: float = field(default=2.0, metadata={"help": "T for the temperature sampler (p ~ n^(1/T))"})
    pooling: str = field(default="cls", metadata={"help": f"sentence representation for task heads: {', '.join(POOLINGS)}"})
    head_dropout: float = field(default=0.1, metadata={"help": "dropout before each task head"})
    precision: str = field(default="auto", metadata={"help": "auto (bf16 autocast where the CPU/GPU has native bf16, else fp32), fp32, bf16, fp16 (CUDA only)"})
    group_by_length: bool = field(default=True, metadata={"help": "length-grouped batches (less padding)"})
    max_train_samples: int | None = field(default=None, metadata={"help": "use the first N training examples of each task"})
    max_eval_samples: int | None = field(default=None, metadata={"help": "use the first N dev examples of each task"})
    subsample: str = field(default="random", metadata={"help": "how --max-train/eval-samples choose examples: random "
                                                       "(a fixed subset, the same for every run and seed) or first (file order)"})
    holdout_fraction: float = field(default=0.0, metadata={"help": "hold out this fraction of each task's training set "
                                                          "(fixed split, same for every seed) and select the best epoch on it, not on dev"})
    max_steps: int | None = field(default=None, metadata={"help": "stop after N optimizer steps (overrides epochs)"})
    eval_every_epoch: bool = field(default=True, metadata={"help": "evaluate every epoch (else only at the end)"})
    keep_best: bool = field(default=True, metadata={"help": "restore the best epoch (mean primary dev metric) at the end"})
    save_model: bool = field(default=True, metadata={"help": "save the final model under OUTPUT/model"})
    save_checkpoints: bool = field(default=True, metadata={"help": "keep OUTPUT/checkpoint.pt current (end of every epoch, "
                                                          "and every --checkpoint-every steps) so --resume can continue after a crash; "
                                                          "removed when the run completes"})
    checkpoint_every: int = field(default=0, metadata={"help": "also checkpoint every N optimizer steps (0: only at the end of every epoch)"})
    resume: bool = field(default=False, metadata={"help": "continue the run in --output-dir from its last checkpoint; options not given "
                                                   "are taken from its config.yaml, a changed option is an error; no checkpoint: start "
                                                   "from the beginning"})
    deterministic: bool = field(default=False, metadata={"help": "torch.use_deterministic_algorithms: bitwise-repeatable runs "
                                                         "(CPU: same seed, data, threads -> same metrics)"})
    log_every: int = field(default=50, metadata={"help": "log the mean training loss every N steps"})
    num_threads: int | None = field(default=None, metadata={"help": "torch CPU threads (default: all cores)"})
    cache_dir: str | None = field(default=None, metadata={"help": "tokenization cache (default: $MTL_CACHE_DIR or ~/.cache/mtl_tickets)"})
    progress: bool = field(default=True, metadata={"help": "tqdm progress bars"})
    device: str = field(default="auto", metadata={"help": "auto, cpu, cuda, cuda:N"})
    # ---- tickets (masks/apply.py)
    mask: str | None = field(default=None, metadata={"help": "train with the encoder gated by this mask file "
                                                      "(shared or per-task; training starts from the pre-trained weights)"})
    score_importance: bool = field(default=False, metadata={"help": "after training, write importance.safetensors and "
                                                           "masks/{winning,random,losing}-{sparsity}.safetensors"})
    sparsities: list[float] = field(default_factory=lambda: [round(0.1 * i, 1) for i in range(1, 10)],
                                    metadata={"help": "sparsity levels of the cut masks (fraction of heads and FFN neurons pruned)"})
    ffn_sparsities: list[float] = field(default_factory=list, metadata={"help": "FFN fractions, one per sparsity "
                                                                        "(default: the same as the head fraction)"})
    ticket_kinds: list[str] = field(default_factory=lambda: ["winning", "random", "losing"], metadata={"help": "mask kinds to cut"})
    ticket_granularity: str = field(default="neuron", metadata={"help": "FFN units: neuron, or layer (whole FFN per layer)"})
    min_heads_per_layer: int = field(default=1, metadata={"help": "heads every layer keeps in a cut mask"})
    score_batches: int | None = field(default=None, metadata={"help": "training batches used for scoring (default: all)"})
    head_normalization: str = field(default="layer_l2", metadata={"help": "head score normalisation: layer_l2 or none"})
    # ---- unstructured (per-weight) tickets (masks/weight_mask.py, masks/magnitude.py)
    weight_mask: str | None = field(default=None, metadata={"help": "train with this per-weight mask file: pruned weights "
                                                             "are held at exactly 0 (training starts from the pre-trained "
                                                             "weights, so this rewinds the ticket)"})
    write_magnitude_masks: list[float] = field(default_factory=list, metadata={
        "help": "after training, write OUTPUT/weight_masks/omp-{sparsity}.safetensors: global magnitude masks of the "
                "trained weights at these sparsities; with --weight-mask they are imp-{sparsity}, pruned only among the "
                "surviving weights (the next IMP round)"})
    weight_mask_include: list[str] = field(default_factory=lambda: [r for r in WEIGHT_MASK_ROLES if r != "embeddings"], metadata={
        "help": f"weight matrices that --write-magnitude-masks prunes: {', '.join(WEIGHT_MASK_ROLES)}"})

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        """Raise :class:`UserError` naming the bad value and what is allowed."""
        _choice("sampler", self.sampler, SAMPLERS)
        _choice("precision", self.precision, PRECISIONS)
        _choice("pooling", self.pooling, POOLINGS)
        _choice("subsample", self.subsample, ("random", "first"))
        _positive("epochs", self.epochs, allow_zero=True)
        _positive("lr", self.lr)
        _positive("batch_size", self.batch_size)
        _positive("eval_batch_size", self.eval_batch_size)
        _positive("grad_accum", self.grad_accum)
        _positive("max_seq_length", self.max_seq_length)
        _positive("temperature", self.temperature)
        _positive("log_every", self.log_every)
        for name in ("max_train_samples", "max_eval_samples", "max_steps", "num_threads"):
            if getattr(self, name) is not None:
                _positive(name, getattr(self, name))
        if not 0.0 <= self.warmup_ratio < 1.0:
            raise UserError(f"--warmup-ratio must be in [0, 1), got {self.warmup_ratio}")
        if not 0.0 <= self.holdout_fraction < 1.0:
            raise UserError(f"--holdout-fraction must be in [0, 1), got {self.holdout_fraction}")
        if not 0.0 <= self.head_dropout < 1.0:
            raise UserError(f"--head-dropout must be in [0, 1), got {self.head_dropout}")
        for value in [*self.sparsities, *self.ffn_sparsities, *self.write_magnitude_masks]:
            if not 0.0 <= value < 1.0:
                raise UserError(f"sparsity must be in [0, 1), got {value}")
        if self.score_importance and not self.sparsities:
            raise UserError("--score-importance needs at least one --sparsities value")
        if self.ffn_sparsities and len(self.ffn_sparsities) != len(self.sparsities):
            raise UserError(f"--ffn-sparsities needs one value per --sparsities value ({len(self.sparsities)})")
        for kind in self.ticket_kinds:
            _choice("ticket_kinds", kind, TICKET_KINDS)
        _choice("ticket_granularity", self.ticket_granularity, ("neuron", "layer"))
        _choice("head_normalization", self.head_normalization, ("layer_l2", "none"))
        if self.min_heads_per_layer < 0:
            raise UserError(f"--min-heads-per-layer must be >= 0, got {self.min_heads_per_layer}")
        if self.score_batches is not None:
            _positive("score_batches", self.score_batches)
        if self.mask is not None and not Path(self.mask).expanduser().is_file():
            raise UserError(f"mask file not found: {self.mask}")
        if self.weight_mask is not None and not Path(self.weight_mask).expanduser().is_file():
            raise UserError(f"weight mask file not found: {self.weight_mask}")
        if not self.weight_mask_include:
            raise UserError(f"--weight-mask-include needs at least one of {', '.join(WEIGHT_MASK_ROLES)}")
        for role in self.weight_mask_include:
            _choice("weight_mask_include", role, WEIGHT_MASK_ROLES)
        if self.weight_decay < 0 or self.max_grad_norm < 0:
            raise UserError("--weight-decay and --max-grad-norm must be >= 0")
        self.check_conflicts()

    def check_conflicts(self) -> None:
        """Options that contradict each other (each alone is valid)."""
        _positive("checkpoint_every", self.checkpoint_every, allow_zero=True)
        if self.max_steps is not None and self.epochs == 0:
            raise UserError(f"--max-steps {self.max_steps} conflicts with --epochs 0 (no training); give one of them")
        if self.checkpoint_every and not self.save_checkpoints:
            raise UserError("--checkpoint-every conflicts with --no-save-checkpoints; drop one of them")
        if self.precision == "fp16" and self.device == "cpu":
            raise UserError("--precision fp16 needs CUDA, conflicts with --device cpu; use bf16 or fp32 on CPU")

    def resolved_glue_dir(self) -> Path | None:
        """``--glue-dir``, else ``$GLUE_DIR``, else None (meaning: the Hugging Face hub)."""
        value = self.glue_dir or os.environ.get("GLUE_DIR")
        return Path(value).expanduser() if value else None

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


# Options that may differ between a run and its --resume: they change neither the numbers nor the artifacts.
RESUME_FREE = ("output_dir", "resume", "progress", "num_threads", "cache_dir", "device", "save_checkpoints",
               "checkpoint_every", "save_model")


def resume_conflicts(saved: dict[str, Any], config: TrainConfig) -> list[str]:
    """``"name: saved -> now"`` for every option (outside :data:`RESUME_FREE`) that differs from ``saved``."""
    reference = build_config(TrainConfig, saved, {})
    now, then = config.to_dict(), reference.to_dict()
    return [f"{k}: {then[k]!r} -> {now[k]!r}" for k in now if k not in RESUME_FREE and now[k] != then[k]]


def check_same_run(saved: dict[str, Any], config: TrainConfig, source: Path) -> None:
    """UserError naming every option of ``config`` that differs from the run saved in ``source``."""
    conflicts = resume_conflicts(saved, config)
    if conflicts:
        raise UserError(f"--resume: options differ from the run in {source} ({'; '.join(conflicts)}); "
                        "drop them, or use a new --output-dir")


def config_for_resume(config: TrainConfig, yaml_values: dict[str, Any], flag_values: dict[str, Any]) -> TrainConfig:
    """For ``--resume``: options not given (``yaml_values`` from ``--config``, ``flag_values``) come from
    ``OUTPUT/config.yaml`` of the run being resumed; ``config`` itself when there is none."""
    if not config.resume or not config.output_dir:
        return config
    saved = Path(config.output_dir).expanduser() / "config.yaml"
    if not saved.is_file():
        return config
    values = read_yaml(saved)
    resumed = build_config(TrainConfig, {**values, **yaml_values}, flag_values)
    check_same_run(values, resumed, saved)
    return resumed


def _choice(name: str, value: str, options: tuple[str, ...]) -> None:
    if value not in options:
        raise UserError(f"--{name.replace('_', '-')} must be one of {', '.join(options)}; got {value!r}")


def _positive(name: str, value: float, allow_zero: bool = False) -> None:
    if value < 0 or (value == 0 and not allow_zero):
        bound = ">= 0" if allow_zero else "> 0"
        raise UserError(f"--{name.replace('_', '-')} must be {bound}, got {value}")


# ---------------------------------------------------------------- dataclass <-> flags / YAML


def _base_type(annotation: Any) -> tuple[type, bool, bool]:
    """(element type, optional?, is list?) of a field annotation such as ``int | None`` or ``list[str]``."""
    args = typing.get_args(annotation)
    optional = type(None) in args
    if optional:
        annotation = next(a for a in args if a is not type(None))
    if typing.get_origin(annotation) is list:
        return typing.get_args(annotation)[0], optional, True
    return annotation, optional, False


def _parse_bool(text: str) -> bool:
    lowered = text.strip().lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off"):
        return False
    raise ValueError(text)


def _converter(elem: type, optional: bool, is_list: bool):
    def convert(text: str):
        if optional and text.strip().lower() in ("none", "null", ""):
            return None
        if is_list:
            return [elem(part.strip()) for part in text.split(",") if part.strip()]
        return _parse_bool(text) if elem is bool else elem(text)

    convert.__name__ = getattr(elem, "__name__", "value")
    return convert


def add_config_flags(parser: argparse.ArgumentParser, cls: type = TrainConfig) -> None:
    """Add one ``--kebab-case`` flag per dataclass field; unset flags stay absent (``SUPPRESS``)."""
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        elem, optional, is_list = _base_type(hints[f.name])
        flag = "--" + f.name.replace("_", "-")
        help_text = f.metadata.get("help", "")
        if elem is bool and not optional and not is_list:
            parser.add_argument(flag, dest=f.name, action=argparse.BooleanOptionalAction,
                                default=argparse.SUPPRESS, help=help_text)
        else:
            parser.add_argument(flag, dest=f.name, type=_converter(elem, optional, is_list),
                                default=argparse.SUPPRESS, help=help_text, metavar=f.name.upper())


def coerce_value(cls: type, name: str, value: Any) -> Any:
    """Convert a YAML value to the field's type (``"rte,mrpc"`` -> list, ``"3e-5"`` -> float)."""
    hints = typing.get_type_hints(cls)
    elem, optional, is_list = _base_type(hints[name])
    if value is None:
        if optional:
            return None
        raise UserError(f"config key {name!r} cannot be null")
    try:
        if is_list:
            items = value.split(",") if isinstance(value, str) else list(value)
            return [elem(str(v).strip()) for v in items if str(v).strip()]
        if elem is bool:
            return value if isinstance(value, bool) else _parse_bool(str(value))
        if elem is float and isinstance(value, (int, float, str)):
            return float(value)
        if elem is int and isinstance(value, bool):
            raise ValueError(value)
        return elem(value)
    except (TypeError, ValueError):
        raise UserError(f"config key {name!r}: cannot read {value!r} as {getattr(elem, '__name__', elem)}") from None


def read_yaml(path: Path) -> dict[str, Any]:
    """Read a YAML mapping; a missing file or non-mapping is a :class:`UserError`."""
    if not path.is_file():
        raise UserError(f"config file not found: {path}")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as exc:
        raise UserError(f"config file {path} is not valid YAML: {str(exc).splitlines()[0]}") from None
    if not isinstance(data, dict):
        raise UserError(f"config file {path} must hold a mapping of option: value")
    return data


def build_config(cls: type, yaml_values: dict[str, Any], flag_values: dict[str, Any]):
    """Defaults < YAML < flags. Unknown YAML keys are an error listing the valid ones."""
    names = {f.name for f in dataclasses.fields(cls)}
    values: dict[str, Any] = {}
    for key, value in yaml_values.items():
        name = str(key).replace("-", "_")
        if name not in names:
            raise UserError(f"unknown config key {key!r}; valid keys: {', '.join(sorted(names))}")
        values[name] = coerce_value(cls, name, value)
    values.update(flag_values)
    return cls(**values)


def save_config(config: Any, path: Path) -> None:
    """Write the resolved config as YAML (atomically)."""
    from .io import atomic_write_text

    atomic_write_text(path, yaml.safe_dump(dataclasses.asdict(config), sort_keys=False))
