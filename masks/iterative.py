"""Iterative structured pruning (Prasanna et al. 2020, "When BERT Plays the Lottery, All Tickets Are Winning").

Start from the fine-tuned model with every unit kept. Each step:

1. score every head and FFN unit with the current mask applied (``score(mask)``);
2. among the units still kept, prune the lowest-scoring ones until ``step`` × the ORIGINAL count
   of each type has been pruned in total (at least one more unit of each type per step; heads never
   below ``min_heads_per_layer`` per layer). Pruned units never come back;
3. evaluate (``evaluate(mask)``).

Stop at the first step whose score falls below ``threshold`` × the unpruned score and return the
last mask at or above it (the "good" subnetwork), with the whole trajectory. Also stop when nothing
is left to prune, or after ``max_steps``.

FFN units are neurons (``granularity="neuron"``, ranked by ``Importance.ffn``) or whole FFN blocks
(``"layer"``, ranked by ``Importance.ffn_layer_raw``). Heads are ranked by ``Importance.heads``.
:func:`matched_mask` then cuts the *random* and *bad* subnetworks with the good one's counts.

Two protocols (:data:`PROTOCOLS`):

- ``uniform`` (the default): every step prunes heads and FFN units together, as above;
- ``prasanna``: the schedule of Prasanna et al.'s code (``find_head_mlp_masks.py``), with whole FFN blocks
  ("MLPs"): phase 1 prunes ``step`` of the heads (at least one) and one MLP per step; once a step falls
  below the threshold it is undone, and phase 2 prunes heads only, half as many per step; then phase 3
  prunes one MLP per step. Each phase starts from the last mask at or above the threshold.

Polarity: masks are True = keep; scores are higher = more important.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import asdict, dataclass, field

import torch

from basics.errors import UserError
from masks.arch import EncoderShape
from masks.importance import Importance
from masks.mask import Mask
from masks.meta import MaskMeta, format_fraction
from masks.tickets import n_to_prune, prune_order

GRANULARITIES: tuple[str, ...] = ("neuron", "layer")
PROTOCOLS: tuple[str, ...] = ("uniform", "prasanna")
MATCHED_KINDS: tuple[str, ...] = ("random", "bad")
STOP_REASONS: tuple[str, ...] = ("threshold", "exhausted", "max_steps")
# metadata of the good mask that its random / bad twins share
_SHARED_EXTRA = ("method", "threshold", "step", "min_heads_per_layer", "select_on")

EvaluateFn = Callable[[Mask], float]  # mask -> score (higher = better), with the mask applied
ScoreFn = Callable[[Mask], Importance]  # mask -> importance of every unit, with the mask applied


@dataclass
class IterativeConfig:
    """How to prune. Saved with the trajectory and in the good mask's metadata."""

    threshold: float = 0.9  # keep pruning while score >= threshold * unpruned score
    step: float = 0.1  # fraction of the ORIGINAL number of heads / FFN units pruned per step
    granularity: str = "neuron"  # FFN units: "neuron" or "layer" (whole FFN blocks)
    min_heads_per_layer: int = 1  # heads every layer keeps
    max_steps: int | None = None  # None = until the threshold or nothing is left
    protocol: str = "uniform"  # PROTOCOLS: "uniform" or "prasanna" (phases; needs granularity "layer")

    def __post_init__(self) -> None:
        if self.protocol not in PROTOCOLS:
            raise UserError(f"unknown pruning protocol {self.protocol!r}; valid: {', '.join(PROTOCOLS)}")
        if self.protocol == "prasanna" and self.granularity != "layer":
            raise UserError("the prasanna protocol prunes whole FFN blocks: it needs granularity 'layer'")
        if not isinstance(self.threshold, (int, float)) or not 0.0 < self.threshold <= 1.0:
            raise UserError(f"threshold must be in (0, 1] (a fraction of the unpruned score), got {self.threshold!r}")
        if not isinstance(self.step, (int, float)) or not 0.0 < self.step <= 1.0:
            raise UserError(f"step must be in (0, 1] (a fraction of the original unit count), got {self.step!r}")
        if self.granularity not in GRANULARITIES:
            raise UserError(f"unknown FFN granularity {self.granularity!r}; valid: {', '.join(GRANULARITIES)}")
        if self.min_heads_per_layer < 0:
            raise UserError(f"min_heads_per_layer must be >= 0, got {self.min_heads_per_layer}")
        if self.max_steps is not None and self.max_steps < 1:
            raise UserError(f"max_steps must be >= 1 or None, got {self.max_steps}")


@dataclass
class StepRecord:
    """One point of the trajectory (step 0 = unpruned)."""

    step: int
    heads_kept: int
    ffn_kept: int  # FFN units kept: neurons, or whole FFN blocks for granularity "layer"
    ffn_neurons_kept: int
    params_kept: float  # % of the encoder's prunable parameters kept
    score: float
    above_threshold: bool  # score >= threshold * unpruned score
    phase: int = 0  # prasanna protocol: 1 heads and MLPs, 2 heads only, 3 MLPs only (0: uniform)


@dataclass
class IterativeResult:
    """What :func:`iterative_prune` found.

    mask: the last mask (True = keep) scoring >= ``target``, i.e. the good subnetwork;
    trajectory: every evaluated step, the one that fell below the threshold included;
    dense_importance: the scores of the unpruned model (step 0), for the bad subnetwork.
    """

    mask: Mask
    selected_step: int
    base_score: float
    target: float  # threshold * base_score
    stop_reason: str  # one of STOP_REASONS
    trajectory: list[StepRecord]
    dense_importance: Importance
    config: IterativeConfig = field(default_factory=IterativeConfig)

    def to_dict(self) -> dict:
        """JSON-ready summary (no tensors)."""
        return {"base_score": self.base_score, "target": self.target, "selected_step": self.selected_step,
                "stop_reason": self.stop_reason, "config": asdict(self.config),
                "trajectory": [asdict(r) for r in self.trajectory]}


# --- counting ------------------------------------------------------------------------------
def ffn_layer_keep(ffn: torch.Tensor) -> torch.Tensor:
    """bool ``[L]``: FFN blocks kept, from an all-or-nothing ``[L, I]`` FFN mask; UserError if a row is mixed."""
    full, empty = ffn.all(1), ~ffn.any(1)  # [L], [L]
    if not bool((full | empty).all()):
        raise UserError("FFN granularity 'layer' needs whole FFN blocks kept or pruned; this mask prunes single neurons")
    return full


def _ffn_units(ffn: torch.Tensor, granularity: str) -> torch.Tensor:
    """The FFN units as a 2-D keep mask: ``[L, I]`` neurons, or ``[L, 1]`` blocks."""
    return ffn if granularity == "neuron" else ffn_layer_keep(ffn)[:, None]


def _cumulative_target(k: int, step: float, total: int, pruned: int, cap: int) -> int:
    """Units pruned in total after step ``k``: ``round(k * step * total)`` (half up), at least one more than the
    ``pruned`` ones so far, at most ``cap``."""
    return min(cap, max(pruned + 1, n_to_prune(min(1.0, round(k * step, 12)), total)))


def _record(k: int, mask: Mask, score: float, target: float, shape: EncoderShape, granularity: str,
            phase: int = 0) -> StepRecord:
    kept, total = mask.param_counts(shape)
    return StepRecord(step=k, heads_kept=mask.num_heads_kept, ffn_kept=int(_ffn_units(mask.ffn, granularity).sum()),
                      ffn_neurons_kept=mask.num_ffn_kept, params_kept=round(100.0 * kept / total, 4),
                      score=float(score), above_threshold=bool(score >= target), phase=phase)


def kept_layer_l2(raw: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
    """``raw`` ``[L, N]`` scores divided per layer by the L2 norm over the KEPT units only (pruned -> 0).

    Per-layer normalisation of head scores (Michel et al.) while pruning: units already pruned must not
    set the scale of the units still competing.
    """
    kept = raw * keep.to(raw.dtype)  # [L, N]
    norm = kept.norm(p=2, dim=-1, keepdim=True)  # [L, 1]
    return kept / norm.clamp_min(torch.finfo(raw.dtype).tiny)


# --- pruning -------------------------------------------------------------------------------
def prune_greedy(keep: torch.Tensor, order: torch.Tensor, n_prune: int, min_per_row: int = 0) -> torch.Tensor:
    """A copy of ``keep`` (bool ``[R, C]``, True = keep) with ``n_prune`` more units pruned.

    Units are taken in ``order`` (flat indices), skipping units already pruned and rows already at
    ``min_per_row`` kept units. UserError if fewer than ``n_prune`` units can be pruned.
    """
    out = keep.clone().flatten()
    cols = keep.shape[1]
    row_kept = keep.sum(1).tolist()  # [R]
    pruned = 0
    for idx in order.tolist():
        if pruned == n_prune:
            break
        row = idx // cols
        if out[idx] and row_kept[row] > min_per_row:
            out[idx] = False
            row_kept[row] -= 1
            pruned += 1
    if pruned < n_prune:
        raise UserError(f"cannot prune {n_prune} units keeping {min_per_row} per row: only {pruned} are prunable")
    return out.view_as(keep)


def _prune_more(keep: torch.Tensor, scores: torch.Tensor, k: int, step: float, min_per_row: int) -> torch.Tensor:
    """``keep`` ``[R, C]`` after step ``k``: the lowest-scoring kept units pruned up to the cumulative target."""
    total = keep.numel()
    pruned = total - int(keep.sum())
    n_new = _cumulative_target(k, step, total, pruned, total - keep.shape[0] * min_per_row) - pruned
    if n_new <= 0:
        return keep
    order = prune_order(scores.reshape(keep.shape), "winning", torch.Generator())  # ascending score
    return prune_greedy(keep, order, n_new, min_per_row)


def prune_step(mask: Mask, imp: Importance, k: int, config: IterativeConfig) -> Mask:
    """The mask after step ``k`` (1-based): heads and FFN units pruned by ``imp`` up to ``k * step`` of the
    original counts. Units ``mask`` already prunes stay pruned whatever their new scores."""
    keep_min = min(config.min_heads_per_layer, mask.heads.shape[1])
    heads = _prune_more(mask.heads, imp.heads, k, config.step, keep_min)
    if config.granularity == "layer":
        blocks = _prune_more(ffn_layer_keep(mask.ffn)[:, None], imp.ffn_layer_raw, k, config.step, 0)  # [L, 1]
        ffn = blocks.expand_as(mask.ffn).clone()
    else:
        ffn = _prune_more(mask.ffn, imp.ffn, k, config.step, 0)
    return Mask(heads, ffn, mask.meta.replace())


def _exhausted(mask: Mask, config: IterativeConfig) -> bool:
    """True when neither heads nor FFN units can be pruned any further."""
    L, H = mask.heads.shape
    heads_left = mask.num_heads_kept > L * min(config.min_heads_per_layer, H)
    return not heads_left and not bool(_ffn_units(mask.ffn, config.granularity).any())


def _mask_meta(mask: Mask, shape: EncoderShape, **changes: object) -> None:
    """Set the measured sparsities, the kept counts and ``changes`` (typed fields or extra entries)."""
    sparsity = mask.sparsity(shape)
    mask.meta = mask.meta.updated({"shape": shape, "sparsity": round(sparsity, 4), "param_sparsity": sparsity,
                                   "heads_kept": mask.num_heads_kept, "ffn_kept": mask.num_ffn_kept, **changes})


def iterative_prune(
    shape: EncoderShape,
    evaluate: EvaluateFn,
    score: ScoreFn,
    config: IterativeConfig | None = None,
    *,
    meta: dict[str, str] | None = None,
    log: Callable[[str], None] | None = None,
) -> IterativeResult:
    """Prune iteratively until ``evaluate`` falls below ``config.threshold`` × its unpruned value.

    ``evaluate(mask)`` returns the score (higher = better) of the model with ``mask`` applied;
    ``score(mask)`` returns the :class:`Importance` of every unit with ``mask`` applied (heads ``[L, H]``,
    ffn ``[L, I]``, ffn_layer_raw ``[L, 1]``; higher = keep). Both get Masks of ``shape``
    (heads bool ``[L, H]``, ffn bool ``[L, I]``, True = keep). The unpruned score must be > 0.
    A step scoring exactly ``threshold`` × unpruned counts as at the threshold (kept going).

    Returns the last mask at/above the threshold (meta kind="good", method="iterative", plus
    ``meta``), the trajectory and the unpruned importance.
    """
    config = config or IterativeConfig()
    say = log or (lambda message: None)
    info = MaskMeta().updated(meta or {}).replace(shape=shape, kind="dense", sparsity=0.0)
    mask = Mask(Mask.ones(shape).heads, Mask.ones(shape).ffn, info)
    base = float(evaluate(mask))
    if not math.isfinite(base) or base <= 0:
        raise UserError(f"the unpruned score is {base}: the threshold is a fraction of it, so it must be > 0")
    target = config.threshold * base
    trajectory = [_record(0, mask, base, target, shape, config.granularity)]
    say(f"step 0: score {base:.3f} (target >= {target:.3f})")
    if config.protocol == "prasanna":
        selected, selected_step, dense, reason = _prasanna(mask, evaluate, score, config, target, shape, trajectory,
                                                           say)
    else:
        selected, selected_step, dense, reason = _uniform(mask, evaluate, score, config, target, shape, trajectory,
                                                          say)
    if dense is None:  # nothing was prunable: still report the unpruned scores
        dense = score(Mask(mask.heads.clone(), mask.ffn.clone(), info))
    good = Mask(selected.heads, selected.ffn, info)
    _mask_meta(good, shape, kind="good", method="iterative", threshold=format_fraction(config.threshold),
               step=format_fraction(config.step), granularity=config.granularity, protocol=config.protocol,
               min_heads_per_layer=str(config.min_heads_per_layer), selected_step=str(selected_step),
               score=f"{trajectory[selected_step].score:.4f}", base_score=f"{base:.4f}")
    return IterativeResult(mask=good, selected_step=selected_step, base_score=base, target=target, stop_reason=reason,
                           trajectory=trajectory, dense_importance=dense, config=config)


def _uniform(mask: Mask, evaluate: EvaluateFn, score: ScoreFn, config: IterativeConfig, target: float,
             shape: EncoderShape, trajectory: list[StepRecord], say: Callable[[str], None]):
    """Heads and FFN units together, ``step`` of each per step; (selected, its step, dense importance, reason)."""
    selected, selected_step, dense, reason = mask, 0, None, "exhausted"
    k = 0
    while not _exhausted(mask, config):
        if config.max_steps is not None and k >= config.max_steps:
            reason = "max_steps"
            break
        imp = score(mask)
        imp.check_shape(shape)
        dense = dense if dense is not None else imp
        k += 1
        mask = prune_step(mask, imp, k, config)
        record = _record(k, mask, float(evaluate(mask)), target, shape, config.granularity)
        trajectory.append(record)
        say(f"step {k}: heads {record.heads_kept}, FFN units {record.ffn_kept}, params kept {record.params_kept:.1f}%, "
            f"score {record.score:.3f}")
        if not record.above_threshold:
            reason = "threshold"
            break
        selected, selected_step = mask, k
    return selected, selected_step, dense, reason


def _prune_lowest(keep: torch.Tensor, scores: torch.Tensor, n: int, min_per_row: int) -> torch.Tensor | None:
    """``keep`` (bool ``[R, C]``) with its ``n`` lowest-scoring kept units pruned (fewer if fewer can be, rows
    keeping ``min_per_row``); None when none can be pruned."""
    prunable = sum(max(0, int(kept) - min_per_row) for kept in keep.sum(1))
    if prunable <= 0 or n <= 0:
        return None
    order = prune_order(scores.reshape(keep.shape), "winning", torch.Generator())  # ascending score
    return prune_greedy(keep, order, min(n, prunable), min_per_row)


def _prasanna(mask: Mask, evaluate: EvaluateFn, score: ScoreFn, config: IterativeConfig, target: float,
              shape: EncoderShape, trajectory: list[StepRecord], say: Callable[[str], None]):
    """Prasanna et al.'s three phases (see the module doc); (selected, its step, dense importance, reason)."""
    L, H = shape.num_layers, shape.num_heads
    keep_min = min(config.min_heads_per_layer, H)
    per_step = max(1, int(L * H * config.step))  # their num_to_mask
    phases = ((1, per_step, 1), (2, max(1, per_step // 2), 0), (3, 0, 1))  # (phase, heads per step, MLPs per step)
    selected, selected_step, reason = mask, 0, "exhausted"
    selected_imp = score(mask)
    selected_imp.check_shape(shape)
    dense, k = selected_imp, 0
    for phase, n_heads, n_mlps in phases:
        while True:
            if config.max_steps is not None and k >= config.max_steps:
                return selected, selected_step, dense, "max_steps"
            heads = selected.heads
            if n_heads:  # head scores normalised per layer over the heads still kept
                heads = _prune_lowest(heads, kept_layer_l2(selected_imp.heads_raw, heads), n_heads, keep_min)
            blocks = ffn_layer_keep(selected.ffn)[:, None]  # [L, 1]
            if n_mlps:
                blocks = _prune_lowest(blocks, selected_imp.ffn_layer_raw, n_mlps, 0)
            if heads is None or blocks is None:
                break  # nothing left to prune in this phase
            k += 1
            candidate = Mask(heads, blocks.expand_as(selected.ffn).clone(), selected.meta.replace())
            record = _record(k, candidate, float(evaluate(candidate)), target, shape, config.granularity, phase)
            trajectory.append(record)
            say(f"step {k} (phase {phase}): heads {record.heads_kept}, FFN blocks {record.ffn_kept}, "
                f"params kept {record.params_kept:.1f}%, score {record.score:.3f}")
            if not record.above_threshold:
                reason = "threshold"
                break  # undone: the next phase starts from the last mask at or above the threshold
            selected, selected_step = candidate, k
            selected_imp = score(selected)
            selected_imp.check_shape(shape)
    return selected, selected_step, dense, reason


# --- random / bad twins ---------------------------------------------------------------------
def matched_mask(
    good: Mask,
    kind: str,
    *,
    shape: EncoderShape,
    imp: Importance | None = None,
    granularity: str = "neuron",
    min_heads_per_layer: int = 1,
    seed: int = 0,
    meta: dict[str, str] | None = None,
) -> Mask:
    """A mask keeping exactly as many heads and FFN units (neurons, or blocks for ``"layer"``) as ``good``.

    kind ``"bad"``: keeps the LOWEST-scoring units of ``imp`` (the unpruned model's importance);
    kind ``"random"``: keeps a uniformly random set drawn with ``torch.Generator().manual_seed(seed)``.
    Heads keep at least ``min_heads_per_layer`` per layer in both. Returns heads ``[L, H]``, ffn ``[L, I]``.
    """
    if kind not in MATCHED_KINDS:
        raise UserError(f"unknown matched mask kind {kind!r}; valid: {', '.join(MATCHED_KINDS)}")
    if granularity not in GRANULARITIES:
        raise UserError(f"unknown FFN granularity {granularity!r}; valid: {', '.join(GRANULARITIES)}")
    if kind == "bad" and imp is None:
        raise UserError("a bad mask needs the unpruned model's importance (imp)")
    good.check_shape(shape)
    if imp is not None:
        imp.check_shape(shape)
    gen = torch.Generator().manual_seed(int(seed))
    order_kind = "losing" if kind == "bad" else "random"  # bad prunes the most important first
    L, H = shape.num_layers, shape.num_heads
    keep_min = min(min_heads_per_layer, H)
    if int(good.heads.sum(1).min()) < keep_min:
        raise UserError(f"the good mask keeps fewer than {keep_min} heads in some layer; lower min_heads_per_layer")
    head_scores = imp.heads if imp is not None else torch.zeros(L, H)
    heads = prune_greedy(torch.ones(L, H, dtype=torch.bool), prune_order(head_scores, order_kind, gen),
                         L * H - good.num_heads_kept, keep_min)
    if granularity == "layer":
        n_blocks = int(ffn_layer_keep(good.ffn).sum())
        block_scores = imp.ffn_layer_raw[:, 0] if imp is not None else torch.zeros(L)
        blocks = prune_greedy(torch.ones(L, 1, dtype=torch.bool), prune_order(block_scores, order_kind, gen),
                              L - n_blocks)
        ffn = blocks.expand(L, shape.intermediate).clone()
    else:
        ffn_scores = imp.ffn if imp is not None else torch.zeros(L, shape.intermediate)
        ffn = prune_greedy(torch.ones(L, shape.intermediate, dtype=torch.bool), prune_order(ffn_scores, order_kind, gen),
                           good.ffn.numel() - good.num_ffn_kept)
    base = MaskMeta(tasks=good.meta.tasks, model=good.meta.model, scorer=good.meta.scorer, shape=shape,
                    granularity=granularity, extra={k: good.meta.extra[k] for k in _SHARED_EXTRA if k in good.meta.extra})
    base = base.with_extra(min_heads_per_layer=min_heads_per_layer)
    if good.meta.seed is not None:
        base = base.with_extra(matched_to_seed=good.meta.seed)
    mask = Mask(heads, ffn, base)
    _mask_meta(mask, shape, kind=kind, seed=seed, **(meta or {}))
    return mask
