"""Distillation losses of an extracted student against its teacher (one registry: :data:`OBJECTIVES`).

``mlm`` (Bort's recipe, for a teacher with an MLM head): 15 % of the tokens are masked (80 % ``[MASK]``,
10 % a random token, 10 % unchanged) and::

    loss = 0.1 · CE(student MLM logits at the masked tokens, the original tokens)
         + 0.5 · T² · KL(softmax(teacher logits / T) ‖ softmax(student logits / T)),   T = 2

the KL averaged over every non-padding token (teacher and student read the same masked input).

``hidden`` (for a teacher without an MLM head, such as the packaged MiniLM): the student was cut from
the teacher, so each of its layers, heads and hidden dimensions *is* a teacher unit (:class:`LayerMap`)::

    loss = hidden + attention
    hidden    = mean over the student's hidden states s_n (embeddings, then every layer) of
                Σ_tokens ‖pad(s_n) - t_{m(n)}‖² / Σ_tokens ‖t_{m(n)}‖²
    attention = mean over the student's layers and heads of KL(teacher head ‖ student head), per query token

``pad`` puts the student's H dimensions at their teacher positions and zeros elsewhere, so the hidden
term also charges the part of the teacher's output a narrower student cannot hold (the relative energy of
the removed dimensions); it is a relative error, comparable across sub-architectures. The hidden target
``m(n)`` of student layer n is the teacher layer it was cut from, except the student's last layer, which
targets the teacher's last layer (output to output); attention targets are the heads each student head was
cut from.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from basics.registry import Registry
from masks.subarch import Selection

LOG_TINY = 1e-12


@dataclass(frozen=True)
class LayerMap:
    """Which teacher tensors each student tensor is compared with (teacher indices)."""

    hidden_targets: tuple[int, ...]  # per student hidden state (0 = embeddings): the teacher hidden state
    attention_sources: tuple[int, ...]  # per student layer: the teacher layer its heads come from
    heads: tuple[tuple[int, ...], ...]  # per student layer: the teacher heads
    dims: tuple[int, ...]  # the teacher hidden dimensions of the student's

    @classmethod
    def of(cls, selection: Selection, teacher_layers: int) -> "LayerMap":
        targets = (0, *(layer + 1 for layer in selection.layers[:-1]), teacher_layers)
        return cls(targets, selection.layers, selection.heads, selection.dims)


@dataclass
class LossParts:
    """The total loss and its named parts (floats, for logs)."""

    loss: torch.Tensor
    parts: dict[str, float]


def _token_mask(attention_mask: torch.Tensor) -> torch.Tensor:
    return attention_mask.to(torch.float32)  # (B, T)


def hidden_loss(student: tuple[torch.Tensor, ...], teacher: tuple[torch.Tensor, ...], layer_map: LayerMap,
                attention_mask: torch.Tensor) -> torch.Tensor:
    """Mean relative squared error of the padded student hidden states (module docstring)."""
    mask = _token_mask(attention_mask).unsqueeze(-1)  # (B, T, 1)
    dims = torch.tensor(layer_map.dims, device=attention_mask.device)
    terms = []
    for state, target_index in zip(student, layer_map.hidden_targets, strict=True):
        target = teacher[target_index].float() * mask  # (B, T, H_t)
        padded = torch.zeros_like(target).index_copy(-1, dims, state.float() * mask)
        terms.append((padded - target).square().sum() / target.square().sum().clamp_min(LOG_TINY))
    return torch.stack(terms).mean()


def attention_loss(student: tuple[torch.Tensor, ...], teacher: tuple[torch.Tensor, ...], layer_map: LayerMap,
                   attention_mask: torch.Tensor) -> torch.Tensor:
    """Mean KL(teacher ‖ student) of the attention distributions of corresponding heads, per query token."""
    mask = _token_mask(attention_mask)  # (B, T)
    terms = []
    for probs, source, heads in zip(student, layer_map.attention_sources, layer_map.heads, strict=True):
        target = teacher[source][:, list(heads)].float()  # (B, A, T, T)
        kl = (target * (target.clamp_min(LOG_TINY).log() - probs.float().clamp_min(LOG_TINY).log())).sum(-1)  # (B, A, T)
        terms.append((kl * mask.unsqueeze(1)).sum() / (mask.sum() * kl.shape[1]).clamp_min(1))
    return torch.stack(terms).mean()


def mask_tokens(input_ids: torch.Tensor, attention_mask: torch.Tensor, special: torch.Tensor, mask_id: int,
                vocab: int, generator: torch.Generator, probability: float = 0.15) -> tuple[torch.Tensor, torch.Tensor]:
    """``(masked ids, labels)``: BERT's masking (labels -100 where not predicted); specials and padding never."""
    candidates = (attention_mask > 0) & ~torch.isin(input_ids, special)
    chosen = (torch.rand(input_ids.shape, generator=generator) < probability) & candidates
    labels = torch.where(chosen, input_ids, torch.full_like(input_ids, -100))
    roll = torch.rand(input_ids.shape, generator=generator)
    ids = torch.where(chosen & (roll < 0.8), torch.full_like(input_ids, mask_id), input_ids)
    random_ids = torch.randint(0, vocab, input_ids.shape, generator=generator)
    ids = torch.where(chosen & (roll >= 0.8) & (roll < 0.9), random_ids, ids)
    return ids, labels


def mlm_kd_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, labels: torch.Tensor,
                attention_mask: torch.Tensor, temperature: float = 2.0, mlm_weight: float = 0.1,
                kd_weight: float = 0.5) -> LossParts:
    """Bort's ``mlm_weight · CE + kd_weight · T² · KL`` (module docstring); logits ``(B, T, V)``."""
    vocab = student_logits.shape[-1]
    ce = F.cross_entropy(student_logits.float().view(-1, vocab), labels.view(-1), ignore_index=-100) \
        if bool((labels != -100).any()) else student_logits.sum() * 0.0
    mask = _token_mask(attention_mask)
    t = F.log_softmax(teacher_logits.float() / temperature, dim=-1)
    s = F.log_softmax(student_logits.float() / temperature, dim=-1)
    kl = (t.exp() * (t - s)).sum(-1)  # (B, T)
    kd = (kl * mask).sum() / mask.sum().clamp_min(1) * temperature ** 2
    loss = mlm_weight * ce + kd_weight * kd
    return LossParts(loss, {"mlm_ce": float(ce.detach()), "kd": float(kd.detach())})


def hidden_attention_loss(student_out, teacher_out, layer_map: LayerMap, attention_mask: torch.Tensor,
                          hidden_weight: float = 1.0, attention_weight: float = 1.0) -> LossParts:
    """``hidden_weight · hidden + attention_weight · attention`` from model outputs with ``hidden_states``
    and ``attentions``."""
    hidden = hidden_loss(student_out.hidden_states, teacher_out.hidden_states, layer_map, attention_mask)
    attention = attention_loss(student_out.attentions, teacher_out.attentions, layer_map, attention_mask)
    return LossParts(hidden_weight * hidden + attention_weight * attention,
                     {"hidden": float(hidden.detach()), "attention": float(attention.detach())})


OBJECTIVES: Registry[Callable[..., LossParts]] = Registry("distillation objective")
OBJECTIVES.register("mlm", mlm_kd_loss)
OBJECTIVES.register("hidden", hidden_attention_loss)
