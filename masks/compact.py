"""Physically remove the pruned heads and FFN neurons of an encoder: a smaller, faster model.

MASK is one shared mask (True = keep). Per layer ``l`` the heads kept ``K_l``
and FFN neurons kept ``N_l`` are sliced out of the weights (head ``h`` owns rows ``h*d:(h+1)*d``):

- Q, K, V: rows of ``K_l`` (weights ``[h_l*d, hidden]`` and biases; in each third of a fused Q/K/V, and in
  any extra per-head projection such as DeBERTa's ``pos_key_proj``); output projection: its columns;
- FFN up: rows ``N_l`` (and bias; in both halves of a gated FFN such as ModernBERT's GeGLU); FFN down:
  columns ``N_l``;
- a layer with no head left has no attention; one with no neuron left has no FFN. The output
  projection biases and LayerNorms stay, so the result equals the masked model's exactly.

Families whose layers share weights (ALBERT) cannot be compacted (a one-line UserError before any work).
The result is a ``Compact<Base>Model`` (:mod:`masks.compact_model`) whose config
(:mod:`masks.compact_config`) records what each layer kept. Compacting a whole trained multi-task model
and saving it is :mod:`mtl.compact_run` (command: ``mtl-compact``).
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from basics.errors import UserError
from masks.arch import arch_for, check_unshared, shape_of
from masks.auto_classes import compact_model_class
from masks.compact_config import compact_config, is_compact
from masks.mask import Mask, load_mask_file

# ---------------------------------------------------------------- what is kept

def kept_heads(mask: Mask) -> list[list[int]]:
    """Per layer, the indices of the heads kept (ascending)."""
    return [torch.nonzero(row).flatten().tolist() for row in mask.heads]


def head_rows(heads: list[int], head_dim: int) -> torch.Tensor:
    """Rows of Q/K/V (= columns of the output projection) owned by ``heads``: ``[len(heads) * d]``."""
    return (torch.tensor(heads, dtype=torch.long)[:, None] * head_dim + torch.arange(head_dim)).flatten()


def part_rows(rows: torch.Tensor, parts: int, part_size: int) -> torch.Tensor:
    """``rows`` of every part of a Linear whose rows are ``[parts, part_size]`` (a fused Q/K/V: 3 parts of
    ``H*d``; a gated FFN up projection: 2 parts of ``I``): ``[parts * len(rows)]``."""
    return torch.cat([rows + part * part_size for part in range(parts)])


def sliced_state_dict(encoder: nn.Module, mask: Mask) -> dict[str, torch.Tensor]:
    """The encoder's state dict with the pruned rows/columns removed (keys as in the compacted model).

    Layers with no head lose their Q/K/V entirely (the compacted model has no attention there).
    """
    spec, shape = arch_for(encoder), shape_of(encoder)
    state = {k: v.detach() for k, v in encoder.state_dict().items()}
    width = shape.num_heads * shape.head_dim
    for layer, heads in enumerate(kept_heads(mask)):
        prefix = f"{spec.layers}.{layer}."
        rows = head_rows(heads, shape.head_dim)  # [h_l * d]
        neurons = torch.nonzero(mask.ffn[layer]).flatten()  # [I_l]
        for path, parts in spec.row_projections():
            if f"{prefix}{path}.weight" in state:  # optional projections (DeBERTa's pos_*_proj) may be absent
                _select(state, prefix + path, 0, part_rows(rows, parts, width), drop=not heads)
        _select(state, prefix + spec.attn_out, 1, rows, bias=False)
        _select(state, prefix + spec.ffn_up, 0, part_rows(neurons, spec.ffn_up_parts, shape.intermediate))
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
    is ``masks.compact_model.Compact<Base>Model`` (same dtype, device, train/eval mode, attention
    implementation); its config records ``kept_heads`` ``[L][h_l]`` and ``intermediate_sizes`` ``[L]``.
    """
    if is_compact(getattr(encoder, "config", None)):
        raise UserError("this model is already compacted; compact the original (uncompacted) model instead")
    if getattr(encoder, "base_model", encoder) is not encoder:
        raise UserError(f"compact the base encoder (AutoModel), not {type(encoder).__name__}")
    check_unshared(encoder, "compaction")
    mask.check_shape(shape_of(encoder))
    sizes = [int(n) for n in mask.ffn.sum(dim=1)]
    config = compact_config(encoder.config, kept_heads(mask), sizes, compaction)
    param = next(encoder.parameters())
    compact = compact_model_class(config)(config).to(device=param.device, dtype=param.dtype)
    compact.load_state_dict(sliced_state_dict(encoder, mask), strict=True)
    return compact.train(encoder.training)


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
