"""Tickets in a training run: gate the encoder with a mask file, and score + cut masks after training.

``train.py --mask FILE`` trains (always from the pre-trained weights: that is rewinding) with the
encoder gated by FILE: one shared mask, or a per-task file whose masks gate each batch by its task.
``train.py --score-importance`` scores every head and FFN neuron of the trained model on its
training data and writes ``importance.safetensors`` and ``masks/{kind}-{sparsity:.2f}.safetensors``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import torch

from basics.errors import UserError
from masks.arch import arch_for, check_unshared, shape_of
from masks.gates import attach_gates
from masks.importance import Importance, ImportanceConfig, compute_importance, save_importance
from masks.mask import Mask, load_mask_file, save_mask, tensor_digest
from masks.tickets import cut_ticket
from mtl.data import collate, length_grouped_batches
from mtl.distributed import SINGLE, Dist


def check_arch_support(encoder, tickets) -> None:
    """UserError, before anything is trained or written, when the run asks the encoder for something its family
    does not support: gates (``--mask``, ``--score-importance``: :data:`masks.arch.ARCH_SPECS`) or per-weight
    masks (``--weight-mask``, ``--write-magnitude-masks``: not where layers share weights)."""
    wanted = [("--mask", tickets.mask), ("--score-importance", tickets.score_importance),
              ("--weight-mask", tickets.weight_mask), ("--write-magnitude-masks", tickets.write_magnitude_masks)]
    for flag, value in wanted:
        if value:
            try:
                arch_for(encoder)
            except UserError as exc:
                raise UserError(f"{flag}: {exc}") from None
            if flag in ("--weight-mask", "--write-magnitude-masks"):
                check_unshared(encoder, "per-weight masks")


def check_not_empty(mask: Mask, path: Path, task: str | None = None) -> None:
    """UserError for a mask that keeps no head and no FFN neuron: nothing of the encoder would be trained."""
    if mask.num_heads_kept == 0 and mask.num_ffn_kept == 0:
        which = f" (task {task})" if task is not None else ""
        raise UserError(f"mask {path} prunes every head and every FFN neuron{which}: the encoder would pass only "
                        "embeddings and biases through; use a mask that keeps some units")


def mask_gating(model, mask_path: Path, task_names: Sequence[str]) -> tuple[Callable[[str], None], dict]:
    """Attach gates to ``model.encoder`` set from ``mask_path``; return ``(before_batch, info)``.

    ``before_batch(task)`` sets the batch's task mask (per-task files); for a shared mask the gates
    are set once and ``before_batch`` does nothing.
    """
    shape = shape_of(model.encoder)
    loaded = load_mask_file(mask_path, expect_shape=shape)
    if isinstance(loaded, Mask):
        check_not_empty(loaded, mask_path)
    else:
        for t in task_names:
            if t in loaded:
                check_not_empty(loaded[t], mask_path, t)
    gates = attach_gates(model.encoder)
    if isinstance(loaded, Mask):
        gates.set_mask(loaded)
        kept, total = loaded.param_counts(shape)
        info = {"mask": str(mask_path), "mask_mode": "shared", "mask_kind": loaded.meta.kind,
                "params_kept": kept, "params_prunable": total, "sparsity": round(1 - kept / total, 4),
                "sha256": tensor_digest(mask_path)}
        return (lambda task: None), info
    missing = [t for t in task_names if t not in loaded]
    if missing:
        raise UserError(f"per-task mask file {mask_path} has no mask for task(s) {', '.join(missing)} "
                        f"(it has: {', '.join(loaded)})")
    union = None
    for t in task_names:
        union = loaded[t] if union is None else union | loaded[t]
    kept, total = union.param_counts(shape)
    info = {"mask": str(mask_path), "mask_mode": "per-task", "params_kept": kept, "params_prunable": total,
            "sparsity": round(1 - kept / total, 4),
            "task_sparsity": {t: round(loaded[t].sparsity(shape), 4) for t in task_names},
            "sha256": tensor_digest(mask_path)}
    current = {"task": None}

    def before_batch(task: str) -> None:
        if current["task"] != task:  # switching masks only when the task changes
            gates.set_mask(loaded[task])
            current["task"] = task

    return before_batch, info


def scoring_plan(data: dict, batch_size: int, seed: int, max_batches: int | None) -> list[tuple[str, list[int]]]:
    """(task, example indices) of every scoring batch: every task's training split, tasks interleaved,
    at most ``max_batches``. A pure function of its arguments (the same on every rank)."""
    gen = torch.Generator().manual_seed(seed)
    per_task = {name: length_grouped_batches(d.train.lengths, batch_size, gen) for name, d in data.items()}
    plan = []
    longest = max(len(b) for b in per_task.values())
    for i in range(longest):
        for name, batches in per_task.items():
            if i < len(batches):
                if max_batches is not None and len(plan) >= max_batches:
                    return plan
                plan.append((name, batches[i]))
    return plan


def scoring_batches(data: dict, batch_size: int, seed: int, pad_id: int, device: torch.device,
                    max_batches: int | None, dist: Dist = SINGLE) -> Iterator[tuple[str, dict]]:
    """(task, batch) pairs of :func:`scoring_plan`; under several processes, this rank's share of them."""
    for name, indices in dist.shard(scoring_plan(data, batch_size, seed, max_batches)):
        batch = collate(data[name].train, indices, pad_id)
        yield name, {k: v.to(device) for k, v in batch.items()}


def score_model(model, data: dict, config, pad_id: int, device: torch.device, autocast, dist: Dist = SINGLE) -> Importance:
    """Importance of every head / FFN neuron of ``model.encoder`` on the tasks' training data.

    Under several processes each rank scores every ``world``-th batch and the raw sums are all-reduced,
    so the result equals the single-process one (up to float summation order).
    """

    def loss_fn(item) -> torch.Tensor:
        task, batch = item
        inputs = {k: v for k, v in batch.items() if k != "labels"}
        with autocast():
            logits = model(task, **inputs)
        return model.loss(task, logits, batch["labels"])

    total = len(scoring_plan(data, config.optim.batch_size, config.optim.seed, config.tickets.score_batches))
    if total < dist.world_size:
        raise UserError(f"{total} scoring batch(es) for {dist.world_size} processes: score with fewer processes "
                        "or more data (--score-batches, --max-train-samples)")
    imp_config = ImportanceConfig(max_batches=config.tickets.score_batches, abs_per=config.tickets.importance_abs,
                                  normalize_heads=config.tickets.head_normalization,
                                  normalize_ffn=config.tickets.ffn_normalization)
    batches = scoring_batches(data, config.optim.batch_size, config.optim.seed, pad_id, device, config.tickets.score_batches, dist)
    meta = {"tasks": ",".join(data), "model": config.model.name, "seed": str(config.optim.seed), "objective": "task"}
    if dist.enabled and imp_config.abs_per != "example":  # the counts of the whole run, not of this rank's share
        meta.update(num_batches=str(total), num_loss_terms=str(total), processes=str(dist.world_size))
    return compute_importance(model, model.encoder, batches, loss_fn, imp_config, split_batch=split_examples,
                              all_reduce=dist.all_reduce_sum if dist.enabled else None, meta=meta)


def split_examples(item: tuple[str, dict]) -> Iterator[tuple[str, dict]]:
    """A scoring batch ``(task, batch)`` as batches of one example each (``--importance-abs example``)."""
    task, batch = item
    for i in range(len(batch["labels"])):
        yield task, {k: v[i:i + 1] for k, v in batch.items()}


def write_tickets(imp: Importance, encoder, config, out_dir: Path) -> list[Path]:
    """``importance.safetensors`` + ``masks/{kind}-{sparsity:.2f}.safetensors`` for every kind and sparsity."""
    out_dir = Path(out_dir)
    save_importance(imp, out_dir / "importance.safetensors")
    shape = shape_of(encoder)
    ffn = config.tickets.ffn_sparsities or [None] * len(config.tickets.sparsities)
    if len(ffn) != len(config.tickets.sparsities):
        raise UserError(f"--ffn-sparsities needs one value per --sparsities value ({len(config.tickets.sparsities)}), got {len(ffn)}")
    paths = []
    for sparsity, ffn_sparsity in zip(config.tickets.sparsities, ffn, strict=True):
        for kind in config.tickets.ticket_kinds:
            mask = cut_ticket(imp, kind, sparsity, shape=shape, ffn_sparsity=ffn_sparsity,
                              min_heads_per_layer=config.tickets.min_heads_per_layer, granularity=config.tickets.ticket_granularity,
                              ffn_allocation=config.tickets.ffn_allocation, seed=config.optim.seed,
                              meta={"source_run": str(out_dir)})
            path = out_dir / "masks" / f"{kind}-{sparsity:.2f}.safetensors"
            save_mask(mask, path)
            paths.append(path)
    return paths
