"""Tickets found on a pre-training objective (:mod:`mtl.objective`): structured (heads and FFN neurons, by the
gate-gradient importance on the objective) and unstructured (IMP on the objective, Chen et al. 2020).

:func:`find_objective_tickets` writes, in ``out_dir`` (the layout of a training run's tickets):

- ``importance.safetensors``: heads ``[L, H]``, ffn ``[L, I]`` scored on ``score_batches`` corpus batches
  (metadata ``objective``, ``corpus``);
- ``masks/{kind}-{sparsity:.2f}.safetensors``: the tickets (``MaskMeta.objective`` says what they were found on);
- ``weight_masks/imp-{sparsity}.safetensors`` with ``imp_rounds > 0``: IMP round k trains the pre-trained model
  with round k−1's mask for ``imp_steps`` steps on the objective (rewound every round), then prunes ``imp_rate``
  more of the original weights by magnitude among the survivors (metadata ``objective``, ``round``);
- ``objective.json`` last (its presence marks the folder complete): the config, the corpus size, timings.

A complete folder made with the same config is not redone; one made with another config is a one-line error.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import torch

from basics.errors import UserError
from basics.io import atomic_write_json
from masks.arch import shape_of
from masks.importance import Importance, ImportanceConfig, compute_importance, save_importance
from masks.magnitude import imp_schedule, magnitude_mask, magnitude_mask_path
from masks.mask import save_mask
from masks.meta import format_fraction
from masks.tickets import cut_ticket
from masks.weight_mask import (
    WeightMask,
    apply_weight_mask,
    named_weights,
    prunable_weights,
    remove_weight_mask,
    save_weight_mask,
)
from mtl.corpus import BatchStream, TokenizedCorpus
from mtl.objective import ObjectiveConfig, ObjectiveModel, corpus_texts, load_objective_model, special_ids
from mtl.objective_loss import Batch, mlm_batches, mlm_loss, self_distill_loss, self_distill_probe
from mtl.trainer import linear_schedule, param_groups

SUMMARY = "objective.json"
IMP_WARMUP = 0.1  # fraction of a round's steps spent warming up


def corpus_label(config: ObjectiveConfig) -> str:
    """``files:a.txt,b.txt`` or ``glue:rte,mrpc`` / ``glue:all`` (what the metadata records)."""
    if config.corpus:
        return "files:" + ",".join(Path(p).name for p in config.corpus)
    return "glue:" + (",".join(config.corpus_tasks) or "all")


def _stream(om: ObjectiveModel, config: ObjectiveConfig, texts: list[str]) -> BatchStream:
    corpus = TokenizedCorpus.of(om.tokenizer, texts, config.max_seq_length)
    return BatchStream(corpus, min(config.batch_size, len(corpus)), config.seed)


def _masked(om: ObjectiveModel, config: ObjectiveConfig, batches: list[Batch], seed: int) -> list[Batch]:
    if om.objective != "mlm":
        return batches
    return mlm_batches(batches, special_ids(om.tokenizer), int(om.tokenizer.mask_token_id), len(om.tokenizer),
                       seed, config.mlm_probability)


def objective_loss(om: ObjectiveModel):
    """``batch -> loss`` of the objective (what IMP trains on)."""
    return mlm_loss(om.model) if om.objective == "mlm" else self_distill_loss(om.encoder, om.teacher)


def score_objective(om: ObjectiveModel, config: ObjectiveConfig, texts: list[str]) -> Importance:
    """Importance of every head and FFN neuron of ``om.encoder`` on ``score_batches`` corpus batches: the MLM
    loss, or the self-distillation probe (:mod:`mtl.objective_loss`: the second-order removal cost)."""
    stream = iter(_stream(om, config, texts))
    batches = _masked(om, config, [next(stream) for _ in range(config.score_batches)], config.seed)
    if om.objective == "mlm":
        loss_fn = mlm_loss(om.model)
    else:
        loss_fn = self_distill_probe(om.encoder, om.teacher, torch.Generator().manual_seed(config.seed))
    meta = {"objective": om.objective, "model": config.model, "corpus": corpus_label(config),
            "seed": str(config.seed), "tasks": ""}
    return compute_importance(om.model, om.encoder, batches, loss_fn, ImportanceConfig(), meta=meta)


def train_on_objective(om: ObjectiveModel, config: ObjectiveConfig, texts: list[str], steps: int, seed: int) -> list[float]:
    """``steps`` AdamW steps (linear warm-up and decay, clipping at 1) of ``om.model`` on the objective; the
    losses. Dropout is on; the self-distillation teacher stays frozen in eval mode."""
    if steps == 0:
        return []
    torch.manual_seed(seed)
    stream = iter(BatchStream(TokenizedCorpus.of(om.tokenizer, texts, config.max_seq_length),
                              min(config.batch_size, len(texts)), seed))
    loss_fn = objective_loss(om)
    optimizer = torch.optim.AdamW(param_groups(om.model, 0.01), lr=config.imp_lr)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, linear_schedule(int(IMP_WARMUP * steps), steps))
    om.model.train()
    losses = []
    for step in range(steps):
        (batch,) = _masked(om, config, [next(stream)], seed * 100_003 + step)
        loss = loss_fn(batch)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_([p for g in optimizer.param_groups for p in g["params"]], 1.0)
        optimizer.step()
        schedule.step()
        losses.append(float(loss.detach()))
    om.model.eval()
    return losses


def imp_on_objective(config: ObjectiveConfig, texts: list[str], out_dir: Path) -> list[dict[str, Any]]:
    """IMP rounds on the objective (module docstring); writes ``weight_masks/imp-{s}``; one record per round."""
    previous: WeightMask | None = None
    rounds = []
    for k, sparsity in enumerate(imp_schedule(config.imp_rate, config.imp_rounds), start=1):
        om = load_objective_model(config.model, config.objective)  # rewound: the pre-trained weights
        if previous is not None:
            apply_weight_mask(om.encoder, previous)
        start = time.time()
        losses = train_on_objective(om, config, texts, config.imp_steps, config.seed + k)
        remove_weight_mask(om.encoder)
        weights = prunable_weights(om.encoder) if previous is None else named_weights(om.encoder, previous.masks)
        meta = {"method": "imp", "objective": config.objective, "model": config.model, "corpus": corpus_label(config),
                "round": str(k), "steps": str(config.imp_steps), "seed": str(config.seed)}
        mask = magnitude_mask(weights, sparsity, previous, meta)
        save_weight_mask(mask, magnitude_mask_path(out_dir, "imp", sparsity))
        rounds.append({"round": k, "sparsity": sparsity, "kept": mask.kept, "total": mask.total,
                       "first_loss": losses[0] if losses else None, "last_loss": losses[-1] if losses else None,
                       "seconds": round(time.time() - start, 2)})
        previous = mask
    return rounds


def ticket_path(out_dir: Path, kind: str, sparsity: float) -> Path:
    return Path(out_dir) / "masks" / f"{kind}-{sparsity:.2f}.safetensors"


def _check_done(out_dir: Path, config: ObjectiveConfig) -> bool:
    """True when ``out_dir`` holds finished tickets of ``config``; UserError when of another config."""
    path = Path(out_dir) / SUMMARY
    if not path.is_file():
        return False
    done = json.loads(path.read_text(encoding="utf-8")).get("config", {})
    if done != config.to_dict():
        changed = sorted(k for k in set(done) | set(config.to_dict()) if done.get(k) != config.to_dict().get(k))
        raise UserError(f"{out_dir} holds tickets found with other options ({', '.join(changed)}); "
                        "use another output folder or remove it")
    return True


def find_objective_tickets(config: ObjectiveConfig, out_dir: Path) -> Path:
    """Score, cut and (with ``imp_rounds``) IMP on the objective; the files of the module docstring. Returns
    the summary's path. Nothing is redone when the folder is complete for ``config``."""
    out_dir = Path(out_dir)
    if _check_done(out_dir, config):
        return out_dir / SUMMARY
    start = time.time()
    texts = corpus_texts(config)
    if len(texts) < config.batch_size:
        raise UserError(f"the corpus holds {len(texts)} texts, fewer than one batch of {config.batch_size}")
    om = load_objective_model(config.model, config.objective)
    imp = score_objective(om, config, texts)
    save_importance(imp, out_dir / "importance.safetensors")
    shape = shape_of(om.encoder)
    tickets = {}
    for sparsity in config.sparsities:
        for kind in config.kinds:
            mask = cut_ticket(imp, kind, sparsity, shape=shape, seed=config.seed, meta={"corpus": corpus_label(config)})
            save_mask(mask, ticket_path(out_dir, kind, sparsity))
            tickets[f"{kind}-{format_fraction(sparsity)}"] = {"param_sparsity": mask.meta.param_sparsity,
                                                             "heads_kept": mask.num_heads_kept,
                                                             "ffn_kept": mask.num_ffn_kept}
    scored = time.time() - start
    rounds = imp_on_objective(config, texts, out_dir) if config.imp_rounds else []
    atomic_write_json(out_dir / SUMMARY, {"config": config.to_dict(), "corpus": corpus_label(config),
                                          "texts": len(texts), "shape": shape.describe(), "tickets": tickets,
                                          "imp": rounds, "scoring_seconds": round(scored, 2),
                                          "seconds": round(time.time() - start, 2)})
    return out_dir / SUMMARY
