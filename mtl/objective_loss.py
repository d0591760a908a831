"""The losses of the pre-training objectives (:mod:`mtl.objective`), on corpus batches.

**mlm** (:func:`mlm_batches`, :func:`mlm_loss`): BERT's masking, :func:`mtl.distill_loss.mask_tokens`:
each non-special, non-padding token is chosen with probability 0.15; a chosen token becomes the mask token
(80 %), a random token (10 %) or stays (10 %), and is predicted; the masking of a batch is drawn once from a
seeded generator, so every scoring pass sees the same inputs. The loss is the model's own cross-entropy.

**self-distill** (:func:`self_distill_loss`): the hidden-state term of :func:`mtl.distill_loss.hidden_loss`
with every layer mapped to itself (the student *is* the teacher, gated or weight-masked)::

    D(g) = mean over hidden states n (embeddings, then every layer) of Σ_tokens ‖s_n(g) − t_n‖² / Σ_tokens ‖t_n‖²

**The self-distill ranking.** At the dense start (all gates 1) the student equals the teacher: ``D = 0`` and
``∂D/∂g = 0`` for every gate, so a first-order (gradient) score is 0 everywhere and ranks nothing. The cost of
removing unit u is second order: with ``J_{n,u} = ∂s_n/∂g_u`` and the residual 0, the Hessian of D is exactly
its Gauss-Newton part, so

    D(1 − e_u) ≈ ½ ∂²D/∂g_u² = (1/N) Σ_n ‖J_{n,u}‖² / ‖t_n‖²          (N hidden states)

the expected squared change of the (normalised) hidden states when the gate is removed. :func:`self_distill_probe`
estimates it without a Jacobian: with ``r ~ N(0, 1)`` drawn per batch, token and dimension (padding excluded),
the probe ``p = Σ_n ⟨r_n, s_n⟩ / sqrt(N ‖t_n‖²)`` has ``E[(∂p/∂g_u)²] = D(1 − e_u)`` to second order. The
gate-gradient importance (:func:`masks.importance.compute_importance`, absolute value per batch) sums
``|∂p/∂g_u|`` over batches, whose expectation per batch is ``sqrt(2/π) · sqrt(D(1 − e_u))``: a ranking by the
second-order removal cost of the self-distillation loss. ``tests/test_objective.py`` checks it against the
measured removal cost of every head and neuron of a tiny model.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import torch
from torch import nn

from masks.arch import shape_of
from mtl.distill_loss import LayerMap, hidden_loss, mask_tokens

Batch = dict[str, torch.Tensor]  # input_ids, attention_mask (B, T) [, labels (B, T)]


def mlm_batches(batches: Iterable[Batch], special: list[int], mask_id: int, vocab: int, seed: int,
                probability: float = 0.15) -> list[Batch]:
    """Each batch with BERT's masking applied once (``input_ids`` masked, ``labels`` -100 where not predicted),
    from one generator seeded with ``seed``: the same batches and seed give the same masking."""
    generator = torch.Generator().manual_seed(int(seed))
    specials = torch.tensor(special, dtype=torch.long)
    out = []
    for batch in batches:
        ids, labels = mask_tokens(batch["input_ids"], batch["attention_mask"], specials, mask_id, vocab, generator,
                                  probability)
        out.append({**batch, "input_ids": ids, "labels": labels})
    return out


def mlm_loss(model: nn.Module) -> Callable[[Batch], torch.Tensor]:
    """``batch -> `` the masked-LM cross-entropy of ``model`` (a ``*ForMaskedLM``) on a masked batch. A batch
    in which no token was chosen gives a zero loss that still depends on the model."""
    def loss(batch: Batch) -> torch.Tensor:
        out = model(**batch)
        return out.loss if out.loss is not None and torch.isfinite(out.loss) else out.logits.sum() * 0.0
    return loss


def identity_map(encoder: nn.Module) -> LayerMap:
    """Every student hidden state, head and dimension compared with the same one of the teacher."""
    shape = shape_of(encoder)
    L = shape.num_layers
    return LayerMap(tuple(range(L + 1)), tuple(range(L)), tuple(tuple(range(shape.num_heads)) for _ in range(L)),
                    tuple(range(shape.hidden)))


def hidden_states(encoder: nn.Module, batch: Batch) -> tuple[torch.Tensor, ...]:
    """The ``L + 1`` hidden states ``(B, T, hidden)`` of a base encoder (embeddings first)."""
    inputs = {k: v for k, v in batch.items() if k != "labels"}
    return encoder(**inputs, output_hidden_states=True).hidden_states


def self_distill_loss(student: nn.Module, teacher: nn.Module, layer_map: LayerMap | None = None
                      ) -> Callable[[Batch], torch.Tensor]:
    """``batch -> D``: the hidden-state distillation loss of ``student`` against the frozen ``teacher``."""
    layer_map = layer_map or identity_map(student)

    def loss(batch: Batch) -> torch.Tensor:
        with torch.no_grad():
            target = hidden_states(teacher, batch)
        return hidden_loss(hidden_states(student, batch), target, layer_map, batch["attention_mask"])
    return loss


def self_distill_probe(student: nn.Module, teacher: nn.Module, generator: torch.Generator
                       ) -> Callable[[Batch], torch.Tensor]:
    """``batch -> p = Σ_n ⟨r_n, s_n⟩ / sqrt(N Σ_tokens ‖t_n‖²)`` with a fresh ``r ~ N(0, 1)`` per call (padding
    excluded): ``E[(∂p/∂g_u)²]`` is the second-order removal cost of :func:`self_distill_loss` (module docstring)."""
    def probe(batch: Batch) -> torch.Tensor:
        mask = batch["attention_mask"].to(torch.float32).unsqueeze(-1)  # (B, T, 1)
        with torch.no_grad():
            targets = hidden_states(teacher, batch)
        states = hidden_states(student, batch)
        total = states[0].new_zeros((), dtype=torch.float32)
        for state, target in zip(states, targets, strict=True):
            r = torch.randn(state.shape, generator=generator).to(state.device)  # (B, T, hidden)
            norm = ((target.float() * mask).square().sum() * len(states)).sqrt().clamp_min(1e-12)
            total = total + (r * state.float() * mask).sum() / norm
        return total
    return probe
