"""Compact a trained multi-task model: remove the pruned heads and FFN neurons, check, save a model that reloads.

RUN_DIR is a ``train.py`` output directory (its ``model/`` is read; a model directory itself is
accepted too). OUT_DIR gets the compacted encoder at its top level (``config.json`` with ``model_type``
``compact_<base>``, ``kept_heads`` and ``intermediate_sizes``; ``model.safetensors``; the tokenizer),
so ``transformers.AutoModel.from_pretrained(OUT_DIR)`` works once
:func:`masks.auto_classes.register_auto_classes` has run (saving and :func:`mtl.model.load_encoder` run it),
plus the task heads (``heads.safetensors``) and ``model.json`` (``"encoder_dir": "."``) for
:func:`mtl.model.load_multitask_model`.
"""

from __future__ import annotations

import inspect
import json
from pathlib import Path

import torch
from safetensors.torch import save_file

from basics.errors import UserError
from basics.io import atomic_write, atomic_write_json, atomic_write_text
from masks.arch import check_unshared_type, shape_of
from masks.auto_classes import register_auto_classes
from masks.compact import compact_encoder, load_shared_mask, num_params
from masks.gates import attach_gates
from masks.mask import Mask, tensor_digest
from mtl.model import CARD_FILE, MASK_FILE, MultiTaskModel, load_multitask_model, read_model_info, task_to_json
from mtl.model_card import CardMask, ModelCard, card_tasks, command_line, hub_name

CHECK_SENTENCES = (("A man is playing a guitar on the stage.", "Someone performs music."),
                   ("The company said profits fell sharply in the third quarter.", "Profits rose."))
CHECK_TOLERANCE = 1e-3  # compaction is exact up to float reassociation (~1e-6); more means a bug


def compact_multitask(model, mask: Mask, compaction: dict[str, str] | None = None):
    """A :class:`mtl.model.MultiTaskModel` with the compacted encoder and copies of ``model``'s task heads."""
    dropout = next(iter(model.heads.values())).dropout.p
    out = MultiTaskModel(compact_encoder(model.encoder, mask, compaction), list(model.tasks.values()),
                         pooling=model.pooling, head_dropout=dropout)
    out.heads.load_state_dict(model.heads.state_dict())
    return out.train(model.training)


def find_model_dir(run_dir: Path) -> Path:
    """``RUN_DIR/model`` (or RUN_DIR itself when it is a model directory); UserError if neither."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise UserError(f"run directory not found: {run_dir}")
    for candidate in (run_dir / "model", run_dir):
        if (candidate / "model.json").is_file():
            return candidate
    raise UserError(f"{run_dir} holds no saved model (no {run_dir / 'model' / 'model.json'}; "
                    "was it trained with --no-save-model?)")


def check_compactable(model_dir: Path) -> None:
    """UserError, before any weight is loaded, when the saved encoder's family cannot be compacted (ALBERT)."""
    try:
        info = json.loads((model_dir / "model.json").read_text(encoding="utf-8"))
        config = json.loads((model_dir / info.get("encoder_dir", "encoder") / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError, AttributeError):
        return  # unreadable: loading the model says what is wrong
    check_unshared_type(config.get("model_type") if isinstance(config, dict) else None, "compaction")


def check_out_dir(out_dir: Path, source: Path) -> Path:
    """UserError unless OUT_DIR is new, empty, or an earlier compaction (then it is overwritten)."""
    out_dir = Path(out_dir)
    if out_dir.resolve() == source.resolve():
        raise UserError(f"--out {out_dir} is the source model directory; choose a new directory")
    if out_dir.is_dir() and any(out_dir.iterdir()):
        info = out_dir / "model.json"
        earlier = info.is_file() and "compaction" in json.loads(info.read_text(encoding="utf-8"))
        if not earlier:
            raise UserError(f"--out {out_dir} exists and is not empty; choose a new directory")
    if out_dir.exists() and not out_dir.is_dir():
        raise UserError(f"--out {out_dir} is a file; choose a new directory")
    return out_dir


def save_compacted(model, tokenizer, out_dir: Path, compaction: dict, card: ModelCard | None = None,
                   extra: dict | None = None) -> None:
    """Encoder + tokenizer at the top of ``out_dir`` (AutoModel), ``heads.safetensors``, ``model.json``,
    the model card ``README.md``."""
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UserError(f"cannot create output directory {out_dir}: {exc.strerror or exc}") from None
    register_auto_classes()  # the saved directory reloads with AutoModel in this process too
    model.encoder.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    heads = {k: v.detach().cpu().contiguous() for k, v in model.heads.state_dict().items()}
    atomic_write(out_dir / "heads.safetensors", lambda p: save_file(heads, str(p)))
    info = {"pooling": model.pooling, "tasks": [task_to_json(t) for t in model.tasks.values()],
            **(extra or {}), "encoder_dir": ".", "compaction": compaction}
    atomic_write_json(out_dir / "model.json", info)
    if card is not None:
        atomic_write_text(out_dir / CARD_FILE, card.render())


def max_logit_difference(masked, compact, tokenizer) -> float:
    """max |logits(masked) - logits(compact)| over every task head on :data:`CHECK_SENTENCES` (eval mode)."""
    batch = tokenizer([a for a, _ in CHECK_SENTENCES], [b for _, b in CHECK_SENTENCES],
                      padding=True, return_tensors="pt")
    keys = ["input_ids", "attention_mask"]
    if "token_type_ids" in inspect.signature(masked.encoder.forward).parameters:  # not DistilBERT
        keys.append("token_type_ids")
    inputs = {k: batch[k] for k in keys if k in batch}
    worst = 0.0
    with torch.no_grad():
        for task in masked.tasks:
            diff = (masked(task, **inputs) - compact(task, **inputs)).abs().max()
            worst = max(worst, float(diff))
    return worst


def _file_size(directory: Path) -> int:
    return sum(p.stat().st_size for p in directory.glob("*.safetensors") if p.name != "heads.safetensors")


def source_metrics(source: Path, mask_path: Path) -> tuple[dict, str]:
    """(dev metrics, note) for the card of a model compacted from ``source`` (a run's ``model/``): the run's
    ``metrics.json`` when the run was trained with this very mask (then the compacted model computes what
    was measured), else none."""
    run = source.parent if source.name == "model" else None
    if run is None or not (run / "metrics.json").is_file():
        return {}, "The source model's dev metrics were not found (no metrics.json beside it)."
    trained = source / MASK_FILE
    if trained.is_file() and tensor_digest(trained) == tensor_digest(mask_path):
        metrics = json.loads((run / "metrics.json").read_text(encoding="utf-8"))
        return metrics, (f"Dev metrics of the source run `{run}` (trained with this mask, so the compacted model "
                         "computes the same function, up to ~1e-6 in the logits).")
    return {}, (f"Not measured: the source run `{run}` was not trained with this mask, so its dev metrics are not "
                "this model's; measure them with `mtl-predict --task T --input DEV_FILE`.")


def compact_run(run_dir: Path, mask_path: Path | None, out_dir: Path) -> dict:
    """Compact the model of ``run_dir`` with the shared mask ``mask_path`` into ``out_dir``; return a summary.

    ``mask_path`` None: the mask the model was trained with (``model/mask.safetensors``). The compacted
    model is checked against the masked full model (logits on two sentence pairs).
    """
    source = find_model_dir(run_dir)
    check_compactable(source)
    out_dir = check_out_dir(out_dir, source)
    if mask_path is None:
        mask_path = source / MASK_FILE
        if not mask_path.is_file():
            raise UserError(f"{source} was not trained with a mask (no {MASK_FILE}); pass --mask FILE")
    model, tokenizer = load_multitask_model(source, gate=False)
    model.eval()
    mask_path = Path(mask_path)
    mask = load_shared_mask(mask_path, model.encoder)
    shape = shape_of(model.encoder)
    kept, total = mask.param_counts(shape)
    file_meta = mask.meta.to_strings()
    compaction = {"source": str(source), "mask": str(mask_path), "mask_kind": mask.meta.kind,
                  "mask_sparsity": file_meta.get("sparsity", ""), "mask_tasks": file_meta["tasks"],
                  "base_shape": shape.describe(), "heads_kept": f"{mask.num_heads_kept}/{mask.heads.numel()}",
                  "ffn_kept": f"{mask.num_ffn_kept}/{mask.ffn.numel()}",
                  "param_sparsity": f"{1 - kept / total:.4f}"}
    compact = compact_multitask(model, mask, compaction).eval()
    attach_gates(model.encoder, mask)
    diff = max_logit_difference(model, compact, tokenizer)
    if diff > CHECK_TOLERANCE:
        raise RuntimeError(f"compacted model differs from the masked model by {diff:.3g} (> {CHECK_TOLERANCE}); "
                           "this is a bug, please report it")
    info = read_model_info(source)
    metrics, note = source_metrics(source, mask_path)
    card = ModelCard(title=f"mtl-tickets: {', '.join(compact.tasks)} (compacted)",
                     base_model=hub_name(str(info.get("model", ""))), tasks=card_tasks(list(compact.tasks.values()), metrics),
                     encoder_params=num_params(compact.encoder), base_encoder_params=num_params(model.encoder),
                     mask=CardMask(kind=mask.meta.kind, mode="shared", sparsity=1 - kept / total, params_kept=kept,
                                   params_prunable=total, heads_kept=compaction["heads_kept"], ffn_kept=compaction["ffn_kept"]),
                     command=command_line(), metrics_note=note,
                     notes=(f"Compacted from `{source}` with `{mask_path}`; max |logit difference| vs the masked "
                            f"model: {diff:.2g}.",))
    extra = {k: info[k] for k in ("model", "max_seq_length", "doc_stride", "max_answer_length", "null_threshold")
             if k in info}
    save_compacted(compact, tokenizer, out_dir, {**compaction, "max_logit_difference": f"{diff:.3g}"}, card, extra)
    encoder_dir = source / "encoder"
    return {"source": str(source), "out": str(out_dir), "mask": str(mask_path),
            "kept_heads": compact.encoder.config.kept_heads,
            "intermediate_sizes": compact.encoder.config.intermediate_sizes,
            "heads_kept": mask.num_heads_kept, "heads_total": mask.heads.numel(),
            "ffn_kept": mask.num_ffn_kept, "ffn_total": mask.ffn.numel(),
            "encoder_params": num_params(model.encoder), "compact_encoder_params": num_params(compact.encoder),
            "encoder_file_bytes": _file_size(encoder_dir), "compact_encoder_file_bytes": _file_size(out_dir),
            "max_logit_difference": diff}


def format_summary(s: dict) -> str:
    """Human-readable lines for :func:`compact_run`'s summary."""
    heads = ",".join(str(len(h)) for h in s["kept_heads"])
    ffn = ",".join(str(n) for n in s["intermediate_sizes"])
    p0, p1 = s["encoder_params"], s["compact_encoder_params"]
    f0, f1 = s["encoder_file_bytes"], s["compact_encoder_file_bytes"]
    return "\n".join([
        f"compacted {s['source']} with {s['mask']} -> {s['out']}",
        f"  heads kept per layer:       {heads}  ({s['heads_kept']}/{s['heads_total']})",
        f"  FFN neurons kept per layer: {ffn}  ({s['ffn_kept']}/{s['ffn_total']})",
        f"  encoder parameters: {p0:,} -> {p1:,} ({p1 / p0:.1%})",
        f"  encoder weights file: {f0 / 1e6:.1f} MB -> {f1 / 1e6:.1f} MB",
        f"  max |logit difference| vs the masked model: {s['max_logit_difference']:.2g}",
    ])
