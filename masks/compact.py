"""Physically remove the pruned heads and FFN neurons: a smaller, faster model that reloads.

    python -m masks.compact --run RUN_DIR --mask MASK_FILE --out OUT_DIR

RUN_DIR is a ``train.py`` output directory (its ``model/`` is read; a model directory itself is
accepted too). MASK_FILE is one shared mask (True = keep). Per layer ``l`` the heads kept ``K_l``
and FFN neurons kept ``N_l`` are sliced out of the weights (head ``h`` owns rows ``h*d:(h+1)*d``):

- Q, K, V: rows of ``K_l`` (weights ``[h_l*d, hidden]`` and biases); output projection: its columns;
- FFN up: rows ``N_l`` (and bias); FFN down: columns ``N_l``;
- a layer with no head left has no attention; one with no neuron left has no FFN. The output
  projection biases and LayerNorms stay, so the result equals the masked model's exactly.

OUT_DIR gets the compacted encoder at its top level (``config.json`` with ``model_type``
``compact_<base>``, ``kept_heads`` and ``intermediate_sizes``; ``model.safetensors``; the tokenizer),
so ``transformers.AutoModel.from_pretrained(OUT_DIR)`` works after ``import mtl``, plus the task heads
(``heads.safetensors``) and ``model.json`` (``"encoder_dir": "."``) for
``mtl.model.load_multitask_model(OUT_DIR)``.
"""

from __future__ import annotations

import argparse
import inspect
import sys
from collections.abc import Sequence
from pathlib import Path

import torch
from safetensors.torch import save_file
from torch import nn

from mtl.errors import UserError

from .arch import arch_for, shape_of
from .mask import Mask, load_mask_file

CHECK_SENTENCES = (("A man is playing a guitar on the stage.", "Someone performs music."),
                   ("The company said profits fell sharply in the third quarter.", "Profits rose."))
CHECK_TOLERANCE = 1e-3  # compaction is exact up to float reassociation (~1e-6); more means a bug


# ---------------------------------------------------------------- what is kept

def kept_heads(mask: Mask) -> list[list[int]]:
    """Per layer, the indices of the heads kept (ascending)."""
    return [torch.nonzero(row).flatten().tolist() for row in mask.heads]


def head_rows(heads: list[int], head_dim: int) -> torch.Tensor:
    """Rows of Q/K/V (= columns of the output projection) owned by ``heads``: ``[len(heads) * d]``."""
    return (torch.tensor(heads, dtype=torch.long)[:, None] * head_dim + torch.arange(head_dim)).flatten()


def sliced_state_dict(encoder: nn.Module, mask: Mask) -> dict[str, torch.Tensor]:
    """The encoder's state dict with the pruned rows/columns removed (keys as in the compacted model).

    Layers with no head lose their Q/K/V entirely (the compacted model has no attention there).
    """
    spec, shape = arch_for(encoder), shape_of(encoder)
    state = {k: v.detach() for k, v in encoder.state_dict().items()}
    for layer, heads in enumerate(kept_heads(mask)):
        prefix = f"{spec.layers}.{layer}."
        rows = head_rows(heads, shape.head_dim)  # [h_l * d]
        neurons = torch.nonzero(mask.ffn[layer]).flatten()  # [I_l]
        for role in ("q", "k", "v"):
            _select(state, prefix + spec.path(role), 0, rows, drop=not heads)
        _select(state, prefix + spec.attn_out, 1, rows, bias=False)
        _select(state, prefix + spec.ffn_up, 0, neurons)
        _select(state, prefix + spec.ffn_down, 1, neurons, bias=False)
    return state


def _select(state: dict, module: str, dim: int, index: torch.Tensor, *, bias: bool = True, drop: bool = False) -> None:
    """Keep ``index`` along ``dim`` of ``module.weight`` (and of its bias if ``bias``), or drop both."""
    keys = [f"{module}.weight"] + ([f"{module}.bias"] if f"{module}.bias" in state else [])
    for key in keys:
        if drop:
            del state[key]
        elif key.endswith(".weight"):
            state[key] = state[key].index_select(dim, index.to(state[key].device))
        elif bias:
            state[key] = state[key].index_select(0, index.to(state[key].device))


# ---------------------------------------------------------------- compact

def compact_encoder(encoder: nn.Module, mask: Mask, compaction: dict[str, str] | None = None) -> nn.Module:
    """A new, smaller encoder without the units ``mask`` prunes (True = keep); ``encoder`` is untouched.

    ``encoder`` is a base encoder (``AutoModel``) of a type in :data:`masks.arch.ARCH_SPECS`. The result
    is ``mtl.compact_model.Compact<Base>Model`` (same dtype, device, train/eval mode, attention
    implementation); its config records ``kept_heads`` ``[L][h_l]`` and ``intermediate_sizes`` ``[L]``.
    """
    from mtl.auto_classes import compact_model_class
    from mtl.compact_config import compact_config, is_compact

    if is_compact(getattr(encoder, "config", None)):
        raise UserError("this model is already compacted; compact the original (uncompacted) model instead")
    if getattr(encoder, "base_model", encoder) is not encoder:
        raise UserError(f"compact the base encoder (AutoModel), not {type(encoder).__name__}")
    mask.check_shape(shape_of(encoder))
    sizes = [int(n) for n in mask.ffn.sum(dim=1)]
    config = compact_config(encoder.config, kept_heads(mask), sizes, compaction)
    param = next(encoder.parameters())
    compact = compact_model_class(config)(config).to(device=param.device, dtype=param.dtype)
    compact.load_state_dict(sliced_state_dict(encoder, mask), strict=True)
    return compact.train(encoder.training)


def compact_multitask(model, mask: Mask, compaction: dict[str, str] | None = None):
    """A :class:`mtl.model.MultiTaskModel` with the compacted encoder and copies of ``model``'s task heads."""
    from mtl.model import MultiTaskModel

    dropout = next(iter(model.heads.values())).dropout.p
    out = MultiTaskModel(compact_encoder(model.encoder, mask, compaction), list(model.tasks.values()),
                         pooling=model.pooling, head_dropout=dropout)
    out.heads.load_state_dict(model.heads.state_dict())
    return out.train(model.training)


def num_params(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


# ---------------------------------------------------------------- files

def load_shared_mask(path: Path, encoder: nn.Module) -> Mask:
    """The mask in ``path``; UserError for a per-task file (it cannot give one shared encoder)."""
    loaded = load_mask_file(path, expect_shape=shape_of(encoder))
    if not isinstance(loaded, Mask):
        raise UserError(f"{path} holds per-task masks ({', '.join(loaded)}): each task keeps different units of "
                        "the shared encoder, so there is no single compacted encoder; merge them into one mask "
                        "first (construct_mtl_mask.py --mode union) and compact that")
    return loaded


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


def check_out_dir(out_dir: Path, source: Path) -> Path:
    """UserError unless OUT_DIR is new, empty, or an earlier compaction (then it is overwritten)."""
    import json

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


def save_compacted(model, tokenizer, out_dir: Path, compaction: dict) -> None:
    """Encoder + tokenizer at the top of ``out_dir`` (AutoModel), ``heads.safetensors``, ``model.json``."""
    from mtl.io import atomic_write, atomic_write_json
    from mtl.model import task_to_json

    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UserError(f"cannot create output directory {out_dir}: {exc.strerror or exc}") from None
    model.encoder.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    heads = {k: v.detach().cpu().contiguous() for k, v in model.heads.state_dict().items()}
    atomic_write(out_dir / "heads.safetensors", lambda p: save_file(heads, str(p)))
    info = {"pooling": model.pooling, "tasks": [task_to_json(t) for t in model.tasks.values()],
            "encoder_dir": ".", "compaction": compaction}
    atomic_write_json(out_dir / "model.json", info)


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


def compact_run(run_dir: Path, mask_path: Path, out_dir: Path) -> dict:
    """Compact the model of ``run_dir`` with the shared mask ``mask_path`` into ``out_dir``; return a summary.

    The compacted model is checked against the masked full model (logits on two sentence pairs).
    """
    from mtl.model import load_multitask_model

    from .gates import attach_gates

    source = find_model_dir(run_dir)
    out_dir = check_out_dir(out_dir, source)
    model, tokenizer = load_multitask_model(source)
    model.eval()
    mask_path = Path(mask_path)
    mask = load_shared_mask(mask_path, model.encoder)
    shape = shape_of(model.encoder)
    kept, total = mask.param_counts(shape)
    compaction = {"source": str(source), "mask": str(mask_path), "mask_kind": mask.meta.get("kind", ""),
                  "mask_sparsity": mask.meta.get("sparsity", ""), "mask_tasks": mask.meta.get("tasks", ""),
                  "base_shape": shape.describe(), "heads_kept": f"{mask.num_heads_kept}/{mask.heads.numel()}",
                  "ffn_kept": f"{mask.num_ffn_kept}/{mask.ffn.numel()}",
                  "param_sparsity": f"{1 - kept / total:.4f}"}
    compact = compact_multitask(model, mask, compaction).eval()
    attach_gates(model.encoder, mask)
    diff = max_logit_difference(model, compact, tokenizer)
    if diff > CHECK_TOLERANCE:
        raise RuntimeError(f"compacted model differs from the masked model by {diff:.3g} (> {CHECK_TOLERANCE}); "
                           "this is a bug, please report it")
    save_compacted(compact, tokenizer, out_dir, {**compaction, "max_logit_difference": f"{diff:.3g}"})
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


# ---------------------------------------------------------------- command line

def main(argv: Sequence[str] | None = None) -> int:
    from mtl.cli import OneLineParser, run_main

    def go() -> None:
        parser = OneLineParser(prog="python -m masks.compact", description=__doc__.splitlines()[0],
                               formatter_class=argparse.RawDescriptionHelpFormatter)
        parser.add_argument("--run", type=Path, required=True, help="train.py output directory (holding model/)")
        parser.add_argument("--mask", type=Path, required=True, help="shared mask file (True = keep)")
        parser.add_argument("--out", type=Path, required=True, help="output directory for the compacted model")
        args = parser.parse_args(argv)
        print(format_summary(compact_run(args.run, args.mask, args.out)))

    return run_main(go)


if __name__ == "__main__":
    sys.exit(main())
