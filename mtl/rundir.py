"""The run directory as an API: the files of one training run, whether it finished, what it produced.

Every training run writes one folder::

    config.yaml              the resolved options (flat form, mtl.config.TrainConfig.to_dict)
    metrics.jsonl            the training log (loss records, one evaluation record per epoch)
    checkpoint.pt            while unfinished: everything --resume needs (removed when it finishes)
    results.json             the run's summary (RunResult); written just before metrics.json
    metrics.json             the dev metrics {task: {metric: percent}}; its presence means "finished"
    importance.safetensors   with --score-importance: the scores (masks.importance)
    masks/KIND-S.safetensors with --score-importance: the cut tickets (masks.tickets)
    weight_masks/*.safetensors  with --write-magnitude-masks: per-weight masks (masks.magnitude)
    model/                   with --save-model: the trained model (mtl.model)
    study_run.json           written by a study: the run's table label, variant and seed

:class:`RunDir` knows these names; :class:`RunResult` is ``results.json`` as a typed value. Studies
ask a RunDir whether a run finished and whether that finished run is the run they want
(:meth:`RunDir.conflicts`), and copy its small artifacts (:meth:`RunDir.small_artifacts`) to a results
folder from which a study can continue elsewhere.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from basics.errors import UserError
from basics.options import build_config, read_yaml
from masks.mask import tensor_digest
from masks.meta import format_fraction
from mtl.config import TrainConfig, run_conflicts
from mtl.model_digest import is_model_alias, local_model_dir, weights_digest
from mtl.trainer import SELECTED_BY

CONFIG = "config.yaml"
METRICS = "metrics.json"
RESULTS = "results.json"
LOG = "metrics.jsonl"
CHECKPOINT = "checkpoint.pt"
IMPORTANCE = "importance.safetensors"
MASKS = "masks"
WEIGHT_MASKS = "weight_masks"
MODEL = "model"
STUDY_RUN = "study_run.json"


def read_json(path: Path) -> Any:
    """The JSON in ``path``; an unreadable or malformed file is a one-line UserError."""
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise UserError(f"cannot read {path}: {exc}") from None


@dataclass(frozen=True)
class MaskInfo:
    """What a run records about the structured mask it trained with (``results.json`` ``mask``)."""

    mask: str  # the path given to --mask
    mask_mode: str  # "shared" or "per-task"
    params_kept: int  # prunable encoder parameters kept (per-task: by the union of the task masks)
    params_prunable: int
    sparsity: float  # 1 - params_kept / params_prunable
    mask_kind: str = ""  # shared masks: the file's kind (winning, union, super_ticket, ...)
    task_sparsity: dict[str, float] = field(default_factory=dict)  # per-task masks: each task's own
    sha256: str | None = None  # digest of the mask's tensors (masks.mask.tensor_digest); None in older runs

    @property
    def params_kept_pct(self) -> float:
        return 100.0 * self.params_kept / self.params_prunable

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "MaskInfo":
        names = {f.name for f in dataclasses.fields(cls)}
        values = {k: v for k, v in data.items() if k in names}
        values.setdefault("mask", "")
        values.setdefault("sparsity", round(1 - values["params_kept"] / values["params_prunable"], 4))
        return cls(**values)


@dataclass(frozen=True)
class RunResult:
    """``results.json`` of a finished run. Metrics are percentages ``{task: {metric: value}}``.

    ``metrics`` are the dev metrics of the kept epoch (the best one with ``keep_best``, else the last);
    ``holdout_metrics`` the same on the held-out slice of train when the run held one out. Keys this
    class does not know are kept in ``extra`` and written back unchanged.
    """

    metrics: dict[str, dict[str, float]]
    holdout_metrics: dict[str, dict[str, float]] | None = None
    selected_on: str = "dev"
    best_epoch: int | None = None
    kept_epoch: int | None = None
    history: list[dict[str, Any]] = field(default_factory=list)
    optimizer_steps: int = 0
    train_examples: int = 0
    train_seconds: float = 0.0
    train_examples_per_s: float | None = None
    wall_seconds: float | None = None
    data: dict[str, dict[str, int]] = field(default_factory=dict)
    machine: dict[str, Any] = field(default_factory=dict)
    model: dict[str, str] | None = None  # the model it started from: name, and sha256 of a local one's weights
    mask: MaskInfo | None = None
    scoring: dict[str, Any] | None = None
    weight_mask: dict[str, Any] | None = None
    magnitude_masks: list[str] | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "RunResult":
        names = {f.name for f in dataclasses.fields(cls)} - {"extra", "mask"}
        known = {k: v for k, v in data.items() if k in names}
        extra = {k: v for k, v in data.items() if k not in names and k != "mask"}
        mask = MaskInfo.from_dict(data["mask"]) if data.get("mask") else None
        return cls(**known, mask=mask, extra=extra)

    def to_dict(self) -> dict[str, Any]:
        out = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name not in ("extra", "mask")}
        if self.mask is not None:
            out["mask"] = dataclasses.asdict(self.mask)
        elif "mask" in self.extra:
            out["mask"] = self.extra["mask"]
        out = {k: v for k, v in out.items() if v is not None or k in ("holdout_metrics", "best_epoch", "kept_epoch")}
        return {**out, **{k: v for k, v in self.extra.items() if k != "mask"}}

    @property
    def tasks(self) -> list[str]:
        return list(self.metrics)

    def params_kept_pct(self) -> float:
        """Share (%) of the encoder's prunable parameters the run kept: 100 without a mask."""
        return self.mask.params_kept_pct if self.mask is not None else 100.0


@dataclass(frozen=True)
class RunDir:
    """One run's folder (it need not exist yet)."""

    path: Path

    def __post_init__(self) -> None:
        object.__setattr__(self, "path", Path(self.path).expanduser())

    @property
    def name(self) -> str:
        return self.path.name

    # ---- file names
    @property
    def config_path(self) -> Path:
        return self.path / CONFIG

    @property
    def metrics_path(self) -> Path:
        return self.path / METRICS

    @property
    def results_path(self) -> Path:
        return self.path / RESULTS

    @property
    def log_path(self) -> Path:
        return self.path / LOG

    @property
    def checkpoint_path(self) -> Path:
        return self.path / CHECKPOINT

    @property
    def importance_path(self) -> Path:
        return self.path / IMPORTANCE

    @property
    def masks_dir(self) -> Path:
        return self.path / MASKS

    @property
    def weight_masks_dir(self) -> Path:
        return self.path / WEIGHT_MASKS

    @property
    def model_dir(self) -> Path:
        return self.path / MODEL

    @property
    def study_info_path(self) -> Path:
        return self.path / STUDY_RUN

    def ticket_path(self, kind: str, sparsity: float) -> Path:
        """``masks/{kind}-{sparsity:.2f}.safetensors``: a ticket the run cut after scoring."""
        return self.masks_dir / f"{kind}-{sparsity:.2f}.safetensors"

    def magnitude_mask_path(self, method: str, sparsity: float) -> Path:
        """``weight_masks/{method}-{sparsity}.safetensors``: a per-weight mask the run wrote."""
        return self.weight_masks_dir / f"{method}-{format_fraction(sparsity)}.safetensors"

    # ---- state
    @property
    def started(self) -> bool:
        return self.config_path.is_file()

    @property
    def finished(self) -> bool:
        """``metrics.json`` and ``results.json`` exist (they are the last files a run writes)."""
        return self.metrics_path.is_file() and self.results_path.is_file()

    @property
    def has_checkpoint(self) -> bool:
        return self.checkpoint_path.is_file()

    def state(self) -> str:
        """``finished``, ``resumable`` (a checkpoint), ``started`` (config only) or ``new``."""
        if self.finished:
            return "finished"
        if self.has_checkpoint:
            return "resumable"
        return "started" if self.started else "new"

    # ---- contents
    def result(self) -> RunResult:
        """The finished run's ``results.json``; UserError if the run has not finished."""
        if not self.finished:
            raise UserError(f"{self.path} is not a finished run (no {METRICS} and {RESULTS})")
        data = read_json(self.results_path)
        if not isinstance(data, dict) or not isinstance(data.get("metrics"), dict):
            raise UserError(f"{self.results_path} holds no run summary (no 'metrics')")
        return RunResult.from_dict(data)

    def metrics(self) -> dict[str, dict[str, float]]:
        """``metrics.json``: the dev metrics of a finished run."""
        data = read_json(self.metrics_path)
        if not isinstance(data, dict) or not data:
            raise UserError(f"{self.metrics_path} holds no task metrics")
        return data

    def saved_options(self) -> dict[str, Any]:
        """``config.yaml`` as flat options (``{}`` when the run has none)."""
        return read_yaml(self.config_path) if self.config_path.is_file() else {}

    def config(self) -> TrainConfig:
        """The run's options as a :class:`TrainConfig` (options it predates take their defaults)."""
        known = {k: v for k, v in self.saved_options().items() if k in TrainConfig.flat_names()}
        return build_config(TrainConfig, known, {})

    def study_info(self) -> dict[str, Any]:
        """``study_run.json`` (label, variant, seed) when a study wrote one, else ``{}``."""
        return read_json(self.study_info_path) if self.study_info_path.is_file() else {}

    # ---- is it the run we want?
    def conflicts(self, config: TrainConfig) -> list[str]:
        """What makes this run another run than ``config`` asks for (empty: the same run).

        Options are compared by their role (:func:`mtl.config.run_conflicts`). A mask is compared by
        content: the digest the run recorded against the digest of ``config``'s mask file; a local model
        directory too (:mod:`mtl.model_digest`): a student rebuilt at the same path is another model.
        """
        out = run_conflicts(self.saved_options(), config) if self.config_path.is_file() else []
        if not self.finished:
            return out
        result = self.result()
        several = any(len(metrics) > 1 for metrics in result.metrics.values())
        if config.eval.keep_best and several and result.extra.get("selected_by") != SELECTED_BY:
            out.append("best-epoch selection: the run kept its best epoch by the primary metric (older code); "
                       "runs now select it by the task score (the mean of the task's metrics)")
        for option, recorded in (("mask", result.mask.sha256 if result.mask else None),
                                 ("weight_mask", (result.weight_mask or {}).get("sha256"))):
            given = getattr(config.tickets, option)
            if given is None or recorded is None or not Path(given).expanduser().is_file():
                continue  # no mask asked for, or the run predates digests, or the file is gone
            if tensor_digest(Path(given).expanduser()) != recorded:
                out.append(f"{option}: {given} holds other masks than the run trained with")
        recorded = (result.model or {}).get("sha256")
        local = local_model_dir(config.model.name)
        if recorded and local is not None and weights_digest(local) not in (None, recorded):
            out.append(f"model: {config.model.name} holds other weights than the run trained from (rebuilt since?)")
        return out

    def model_unbuilt(self, config: TrainConfig) -> bool:
        """The finished run recorded the weights of a local model folder that ``config`` names but that does not
        exist (yet) on this machine (a study's student, built by a step): :meth:`conflicts` can compare the
        weights only once it does."""
        if not self.finished or (self.result().model or {}).get("sha256") is None:
            return False
        return local_model_dir(config.model.name) is None and not is_model_alias(config.model.name)

    def check_matches(self, config: TrainConfig) -> None:
        """UserError naming the differences when this (finished) run is not the run ``config`` asks for."""
        diffs = self.conflicts(config)
        if diffs:
            more = f" (and {len(diffs) - 1} more)" if len(diffs) > 1 else ""
            raise UserError(f"finished run {self.path} was made with other options: {diffs[0]}{more}; restore "
                            "the options, use another output directory, or delete that run to retrain it")

    # ---- copying
    def small_artifacts(self) -> list[Path]:
        """The files worth keeping of a finished run (no weights, no checkpoint), relative to the run folder:
        config, results, metrics, log, study label, importance scores and every mask it wrote."""
        names = [CONFIG, RESULTS, METRICS, LOG, STUDY_RUN, IMPORTANCE]
        files = [Path(n) for n in names if (self.path / n).is_file()]
        for folder in (MASKS, WEIGHT_MASKS):
            if (self.path / folder).is_dir():
                files += sorted(p.relative_to(self.path) for p in (self.path / folder).glob("*.safetensors"))
        return files
