"""Model cards: the ``README.md`` of every saved model directory, in the Hugging Face model-card style.

A card is a value (:class:`ModelCard`) rendered to Markdown with a YAML front matter (``base_model``,
``tags``, ``datasets``, ``model-index`` with the dev metrics), then sections: the tasks and their dev
metrics, the mask (kind, sparsity, units kept) and the parameters kept, the command that made the
model, and how to use it. ``train.py`` writes one into ``OUTPUT/model/`` (:func:`run_card`),
``mtl-compact`` into the compacted directory, ``mtl-export`` into the ONNX directory.
"""

from __future__ import annotations

import shlex
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from mtl.config import TrainConfig
from tasks.task_def import TaskDef

MINILM_HUB = "sentence-transformers/all-MiniLM-L6-v2"  # what --model minilm is (packaged copy)
ALIASES = {"minilm": MINILM_HUB, "all-minilm-l6-v2": MINILM_HUB}


CARD_TASK_TYPES = {"classification": "text-classification", "regression": "text-regression",
                   "span": "question-answering"}  # hub model-card task types by head


@dataclass(frozen=True)
class CardTask:
    """One task head: its labels and its dev metrics (percent; empty when not measured)."""

    name: str
    head: str
    labels: tuple[str, ...]
    metrics: dict[str, float] = field(default_factory=dict)
    hub: tuple[str, str] | None = None  # (dataset path, config) when the task has a hub source


@dataclass(frozen=True)
class CardMask:
    """The structured mask the encoder was trained with or compacted by."""

    kind: str  # winning, union, super_ticket, ...
    mode: str  # shared | per-task
    sparsity: float  # 1 - kept / prunable encoder parameters
    params_kept: int | None = None
    params_prunable: int | None = None
    heads_kept: str = ""  # "36/72"
    ffn_kept: str = ""  # "4608/9216"


@dataclass(frozen=True)
class ModelCard:
    """What a model card says; :meth:`render` writes it."""

    title: str
    base_model: str
    tasks: tuple[CardTask, ...]
    encoder_params: int
    base_encoder_params: int | None = None  # before compaction (None: not compacted)
    mask: CardMask | None = None
    command: str = ""
    metrics_note: str = ""
    notes: tuple[str, ...] = ()

    def front_matter(self) -> dict[str, Any]:
        datasets = sorted({t.hub[0] for t in self.tasks if t.hub})
        results = [{"task": {"type": CARD_TASK_TYPES.get(t.head, "text-regression")},
                    "dataset": _dataset(t),
                    "metrics": [{"type": k, "value": round(float(v), 2)} for k, v in t.metrics.items()]}
                   for t in self.tasks if t.metrics]
        meta: dict[str, Any] = {"base_model": self.base_model, "library_name": "mtl-tickets",
                                "pipeline_tag": "text-classification",
                                "tags": ["mtl-tickets", "multi-task" if len(self.tasks) > 1 else "single-task",
                                         *(["structured-pruning", "lottery-ticket"] if self.mask else []),
                                         *(["compacted"] if self.base_encoder_params else [])]}
        if datasets:
            meta["datasets"] = datasets
        if results:
            meta["model-index"] = [{"name": self.title, "results": results}]
        return meta

    def render(self) -> str:
        lines = ["---", yaml.safe_dump(self.front_matter(), sort_keys=False).rstrip(), "---", "",
                 f"# {self.title}", "", self._summary(), "", "## Tasks and dev metrics", "",
                 "| task | head | labels | dev metrics (%) |", "|---|---|---|---|"]
        for t in self.tasks:
            metrics = ", ".join(f"{k} {v:.2f}" for k, v in t.metrics.items()) or "not measured"
            lines.append(f"| {t.name} | {t.head} | {', '.join(t.labels) or ('(answer span)' if t.head == 'span' else '(score)')} | {metrics} |")
        if self.metrics_note:
            lines += ["", self.metrics_note]
        lines += ["", "## Mask and parameters", "", *self._size_lines()]
        if self.notes:
            lines += ["", *self.notes]
        lines += ["", "## How it was made", "", "```bash", self.command or "(not recorded)", "```"]
        example = self.tasks[0].name if self.tasks else "TASK"
        lines += ["", "## How to use", "", "```bash",
                  f"mtl-predict --model THIS_DIR --task {example} --input data.tsv --output predictions.tsv",
                  "```", "",
                  "The input file has a header naming the task's input columns (or is laid out like the task's "
                  "dev file); see the mtl-tickets docs (docs/deploy.md).", ""]
        return "\n".join(lines)

    def _summary(self) -> str:
        heads = ", ".join(f"`{t.name}`" for t in self.tasks)
        what = "A compacted encoder (pruned attention heads and FFN neurons physically removed)" \
            if self.base_encoder_params else "An encoder"
        gated = f", gated by a {self.mask.mode} {self.mask.kind} mask" if self.mask and not self.base_encoder_params else ""
        return (f"{what} fine-tuned from `{self.base_model}`{gated}, with one head per task ({heads}), "
                "made with mtl-tickets (structured lottery tickets and ticket-sharing multi-task learning).")

    def _size_lines(self) -> list[str]:
        out = []
        if self.mask is None:
            out.append("- mask: none (dense encoder)")
        else:
            m = self.mask
            units = "; ".join(x for x in (m.heads_kept and f"heads kept {m.heads_kept}",
                                          m.ffn_kept and f"FFN neurons kept {m.ffn_kept}") if x)
            kept = (f", {m.params_kept:,} of {m.params_prunable:,} prunable encoder parameters kept"
                    if m.params_kept is not None and m.params_prunable else "")
            out.append(f"- mask: {m.kind} ({m.mode}), sparsity {m.sparsity:.2f}{kept}" + (f"; {units}" if units else ""))
        if self.base_encoder_params:
            share = self.encoder_params / self.base_encoder_params
            out.append(f"- encoder parameters: {self.base_encoder_params:,} -> {self.encoder_params:,} "
                       f"({share:.1%} kept, embeddings included)")
        else:
            out.append(f"- encoder parameters: {self.encoder_params:,} (embeddings included)")
        return out


def _dataset(task: CardTask) -> dict[str, str]:
    if task.hub:
        path, name = task.hub
        return {"name": f"{path} {name}".strip(), "type": path, **({"config": name} if name else {}),
                "split": "validation"}
    return {"name": task.name, "type": task.name, "split": "dev"}


# ---------------------------------------------------------------- building cards

def hub_name(model: str) -> str:
    """The base model's name as the hub knows it (``minilm`` -> ``sentence-transformers/all-MiniLM-L6-v2``)."""
    return ALIASES.get(model.lower(), model) if model else "unknown"


def command_line(argv: Sequence[str] | None = None) -> str:
    """The command this process runs, as a user would type it (``python -m commands.train ...``, ``mtl-train ...``)."""
    argv = list(sys.argv if argv is None else argv)
    spec = getattr(sys.modules.get("__main__"), "__spec__", None)
    if spec is not None and spec.name:
        head = ["python", "-m", spec.name.removesuffix(".__main__")]
    elif argv and argv[0].endswith(".py"):
        head = ["python", Path(argv[0]).name if Path(argv[0]).parent == Path.cwd() else argv[0]]
    else:
        head = [Path(argv[0]).name] if argv else ["python"]
    return shlex.join(head + argv[1:])


def train_command(config: TrainConfig) -> str:
    """The ``python train.py`` command with every option that differs from its default: it makes this run
    again, however the run was started (command line, study, library call)."""
    words = ["python", "train.py"]
    values = config.to_dict()
    for opt in TrainConfig.options():
        value = values[opt.key]
        if value == opt.default or opt.key == "resume":
            continue
        flag = "--" + opt.key.replace("_", "-")
        if isinstance(value, bool):
            words.append(flag if value else "--no-" + opt.key.replace("_", "-"))
        else:
            words += [flag, "none" if value is None else ",".join(map(str, value)) if isinstance(value, list) else str(value)]
    return shlex.join(words)


def card_tasks(tasks: Sequence[TaskDef], metrics: Mapping[str, Mapping[str, float]] | None = None) -> tuple[CardTask, ...]:
    metrics = metrics or {}
    return tuple(CardTask(t.name, t.head, tuple(t.labels), dict(metrics.get(t.name, {})),
                          (t.hub["path"], t.hub.get("name") or "") if t.hub else None) for t in tasks)


def count_params(module) -> int:
    return sum(p.numel() for p in module.parameters())


def basic_card(base_model: str, tasks: Sequence[TaskDef], encoder) -> ModelCard:
    """A card with what the model itself tells: base model, tasks (no metrics), parameters, this command."""
    return ModelCard(title=f"mtl-tickets: {', '.join(t.name for t in tasks)}", base_model=hub_name(base_model),
                     tasks=card_tasks(tasks), encoder_params=count_params(encoder), command=command_line(),
                     metrics_note="Dev metrics were not recorded with this model.")


def mask_of(info: Mapping[str, Any] | None) -> CardMask | None:
    """A :class:`CardMask` from a run's ``results.json`` ``mask`` record (None without a mask)."""
    if not info:
        return None
    return CardMask(kind=str(info.get("mask_kind") or info.get("mask_mode", "")), mode=str(info.get("mask_mode", "")),
                    sparsity=float(info.get("sparsity", 0.0)), params_kept=info.get("params_kept"),
                    params_prunable=info.get("params_prunable"))


def compacted_mask(encoder) -> CardMask | None:
    """The mask a compacted encoder was cut with (its config's ``compaction`` record); None for other encoders."""
    config = getattr(encoder, "config", None)
    if getattr(config, "kept_heads", None) is None:
        return None
    record = getattr(config, "compaction", None) or {}
    return CardMask(kind=str(record.get("mask_kind", "")), mode="compacted into the encoder",
                    sparsity=float(record.get("param_sparsity") or 0.0), heads_kept=str(record.get("heads_kept", "")),
                    ffn_kept=str(record.get("ffn_kept", "")))


def run_card(config: TrainConfig, tasks: Sequence[TaskDef], summary: Mapping[str, Any], encoder) -> ModelCard:
    """The card of ``train.py``'s ``OUTPUT/model``: dev metrics of the kept epoch, the mask, the command."""
    output_dir = config.output.output_dir
    best = summary.get("kept_epoch") or summary.get("best_epoch")
    note = (f"Dev metrics of the kept epoch ({best}) as `train.py` measured them (`{output_dir}/results.json`); "
            "`mtl-predict` on the dev files reproduces the predictions (same precision and batch size).")
    return ModelCard(title=f"mtl-tickets: {', '.join(t.name for t in tasks)}", base_model=hub_name(config.model.name),
                     tasks=card_tasks(tasks, summary.get("metrics")), encoder_params=count_params(encoder),
                     mask=mask_of(summary.get("mask")) or compacted_mask(encoder), command=train_command(config),
                     metrics_note=note,
                     notes=(f"Every option of the run: `{output_dir}/config.yaml`; the run was started with "
                            f"`{command_line()}`.",))
