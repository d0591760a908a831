"""Sentence representations for the task heads (one registry): what ``--pooling`` accepts.

A pooling maps the encoder output and the attention mask ``(B, T)`` to ``(B, hidden)``:

- ``cls``: the first token's last hidden state;
- ``pooler``: the encoder's own pooler output (tanh(W h_cls) for BERT);
- ``mean``: the attention-masked mean of the last hidden states.

Tensor methods only (no torch import): the option parser reads this module.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from basics.registry import Registry


def cls_pooling(out: Any, attention_mask: Any) -> Any:
    return out.last_hidden_state[:, 0]


def pooler_pooling(out: Any, attention_mask: Any) -> Any:
    return out.pooler_output


def mean_pooling(out: Any, attention_mask: Any) -> Any:
    hidden = out.last_hidden_state  # (B, T, hidden)
    m = attention_mask.unsqueeze(-1).to(hidden.dtype)  # (B, T, 1)
    return (hidden * m).sum(1) / m.sum(1).clamp_min(1.0)


POOLINGS: Registry[Callable[[Any, Any], Any]] = Registry("pooling")
POOLINGS.register("cls", cls_pooling)
POOLINGS.register("pooler", pooler_pooling)
POOLINGS.register("mean", mean_pooling)
