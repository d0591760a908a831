"""What an encoder costs: parameters (with and without embeddings), operations per token, measured latency.

**Parameters** (:func:`param_counts`), for the per-layer sizes of :class:`EncoderSize` (hidden H, head
size d, heads a_l and FFN neurons i_l of layer l, embedding size E, V / P / T rows of the word, position
and token-type tables):

    embeddings  (V + P + T)·E + 2E  (+ E·H + H for ELECTRA's projection when E != H)
    layer l     3(H·a_l·d + a_l·d)  +  a_l·d·H + H  +  2H  +  (H·i_l + i_l) + (i_l·H + H)  +  2H
    pooler      H·H + H            (BERT, RoBERTa)

**Operations per token** (:func:`ops_per_token`, Bort's inference-speed surrogate: additions,
multiplications and other elementwise operations, for a sequence of ``seq_len`` tokens). A Linear with
bias ``in -> out`` is ``2·in·out`` (``in`` multiplications and ``in`` additions per output, the bias
included); per attention head and token, the scores and the weighted sum of values are ``2·d·T`` each and
the scaling plus softmax (scale, exp, sum, divide) ``4·T``; a LayerNorm is ``7·H`` (mean, centre, square,
variance, normalise, scale, shift); an activation is 1 per neuron; a residual addition is ``H``. Lookups
are free; the pooler (once per sequence) is not counted::

    embeddings  (tables - 1)·E + 7E  (+ 2·E·H with a projection)
    layer l     2·H·3·a_l·d + a_l·(4·d·T + 4·T) + 2·a_l·d·H + H + 7H + 2·H·i_l + i_l + 2·i_l·H + H + 7H

**Latency** (:func:`measure_latency`): median seconds per forward call at each batch size, on random
token ids of ``seq_len`` tokens (no padding), under ``torch.inference_mode``, several models measured
in rotating order round after round, so the load of a shared machine hits them alike; speed-ups are the
median of the per-round paired ratios.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import torch
from torch import nn

from masks.arch import ARCH_SPECS, _base
from masks.residual import find, residual_spec


@dataclass(frozen=True)
class EncoderSize:
    """Sizes of an encoder, per layer where layers may differ (compacted tickets)."""

    hidden: int
    head_dim: int
    heads: tuple[int, ...]  # a_l
    ffn: tuple[int, ...]  # i_l
    vocab: int
    positions: int
    token_types: int  # 0: no token-type table (DistilBERT)
    embedding: int  # E: the width of the embedding tables (== hidden except ELECTRA with a projection)
    pooler: bool

    @property
    def depth(self) -> int:
        return len(self.heads)

    @classmethod
    def of(cls, encoder: nn.Module) -> "EncoderSize":
        """The sizes of a base encoder (stock, compacted or extracted)."""
        base = _base(encoder)
        config = base.config
        spec = ARCH_SPECS[getattr(config, "base_model_type", None) or config.model_type]
        layers, heads, hidden, inter = (int(getattr(config, key)) for key in (
            spec.num_layers_key, spec.num_heads_key, spec.hidden_key, spec.intermediate_key))
        kept = getattr(config, "kept_heads", None)
        sizes = getattr(config, "intermediate_sizes", None)
        rspec = residual_spec(base)
        rows = [find(base, t).num_embeddings if find(base, t) is not None else 0 for t in rspec.tables]
        rows += [0] * (3 - len(rows))
        return cls(hidden=hidden, head_dim=getattr(config, "head_size", None) or getattr(config, "attention_head_size", None) or hidden // heads,
                   heads=tuple(len(h) for h in kept) if kept is not None else (heads,) * layers,
                   ffn=tuple(sizes) if sizes is not None else (inter,) * layers,
                   vocab=rows[0], positions=rows[1], token_types=rows[2],
                   embedding=find(base, rspec.tables[0]).embedding_dim,
                   pooler=spec.pooler is not None and find(base, spec.pooler) is not None)

    def uniform(self, depth: int, heads: int, hidden: int, ffn: int) -> "EncoderSize":
        """A sub-architecture of this encoder: ``depth`` layers of ``heads`` heads (this head size) and
        ``ffn`` neurons, hidden size ``hidden`` (the embeddings narrow with it unless they are projected)."""
        embedding = self.embedding if self.embedding != self.hidden else hidden
        return EncoderSize(hidden, self.head_dim, (heads,) * depth, (ffn,) * depth, self.vocab, self.positions,
                           self.token_types, embedding, self.pooler)


def param_counts(size: EncoderSize) -> dict[str, int]:
    """``{"embeddings", "layers", "pooler", "total"}``: parameter counts (module docstring)."""
    H, d, E = size.hidden, size.head_dim, size.embedding
    embeddings = (size.vocab + size.positions + size.token_types) * E + 2 * E + (E * H + H if E != H else 0)
    layers = 0
    for a, i in zip(size.heads, size.ffn, strict=True):
        layers += 3 * (H * a * d + a * d) + a * d * H + H + 2 * H + (H * i + i) + (i * H + H) + 2 * H
    pooler = H * H + H if size.pooler else 0
    return {"embeddings": embeddings, "layers": layers, "pooler": pooler, "total": embeddings + layers + pooler}


def ops_per_token(size: EncoderSize, seq_len: int) -> int:
    """Operations per token at sequence length ``seq_len`` (module docstring)."""
    H, d, E, T = size.hidden, size.head_dim, size.embedding, seq_len
    tables = 2 + (size.token_types > 0)
    ops = (tables - 1) * E + 7 * E + (2 * E * H if E != H else 0)
    for a, i in zip(size.heads, size.ffn, strict=True):
        attention = 2 * H * 3 * a * d + a * (4 * d * T + 4 * T) + 2 * a * d * H + H + 7 * H
        ffn = 2 * H * i + i + 2 * i * H + H + 7 * H
        ops += attention + ffn
    return ops


def count_params(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


@contextmanager
def torch_threads(threads: int | None):
    """Run with ``threads`` torch threads (None: unchanged), restored afterwards."""
    before = torch.get_num_threads()
    if threads:
        torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def random_batch(vocab: int, batch_size: int, seq_len: int, seed: int, device: torch.device | str = "cpu") -> dict:
    """``batch_size`` x ``seq_len`` random token ids (above the special tokens), no padding."""
    g = torch.Generator().manual_seed(seed)
    low = min(1000, vocab // 2)
    ids = torch.randint(low, vocab, (batch_size, seq_len), generator=g)
    return {"input_ids": ids.to(device), "attention_mask": torch.ones_like(ids).to(device)}


def _time_calls(model: nn.Module, batch: dict, calls: int, device: torch.device) -> float:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    start = time.perf_counter()
    for _ in range(calls):
        model(**batch)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return (time.perf_counter() - start) / calls


@torch.inference_mode()
def measure_latency(models: Mapping[str, nn.Module], batch_sizes: Sequence[int] = (1, 32), seq_len: int = 128,
                    rounds: int = 5, calls: Mapping[int, int] | None = None, reference: str | None = None,
                    threads: int | None = 1, seed: int = 0) -> dict:
    """Median seconds per call of every model at every batch size, and speed-ups against ``reference``.

    ``calls[b]`` timed calls per round at batch size ``b`` (default: 10 at batch 1, else 2), after one
    untimed warm-up call. Returns ``{"seconds": {name: {b: s}}, "speedup": {name: {b: x}}, ...}``.
    """
    calls = dict(calls or {})
    names = list(models)
    first = next(iter(models.values()))
    device = next(first.parameters()).device
    vocab = min(m.config.vocab_size for m in models.values())
    seconds: dict[str, dict[int, list[float]]] = {n: {b: [] for b in batch_sizes} for n in names}
    with torch_threads(threads if device.type == "cpu" else None):
        for model in models.values():
            model.eval()
        for b in batch_sizes:
            batch = random_batch(vocab, b, seq_len, seed, device)
            n_calls = calls.get(b, 10 if b == 1 else 2)
            for model in models.values():
                _time_calls(model, batch, 1, device)  # warm-up
            for round_ in range(rounds):
                order = names[round_ % len(names):] + names[:round_ % len(names)]
                for name in order:
                    seconds[name][b].append(_time_calls(models[name], batch, n_calls, device))
    out = {"seconds": {n: {str(b): statistics.median(v) for b, v in per.items()} for n, per in seconds.items()},
           "device": str(device), "threads": torch.get_num_threads() if threads is None else threads,
           "seq_len": seq_len, "rounds": rounds}
    if reference is not None:
        out["speedup"] = {n: {str(b): statistics.median(r / s for r, s in zip(seconds[reference][b], per[b], strict=True))
                              for b in batch_sizes} for n, per in seconds.items()}
    return out
