"""Multi-task trainer: AdamW + linear warm-up/decay, clipping, accumulation, autocast, per-epoch dev eval."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from basics.errors import UserError
from tasks.score import compute_metrics, selection_score
from tasks.task_def import TaskDef

from .checkpoint import CHECKPOINT_NAME, rng_state, save_checkpoint, set_rng_state
from .config import TrainConfig
from .data import TokenizedSplit, collate, eval_batches, length_grouped_batches
from .distributed import SINGLE, Dist, pick_device
from .model import MultiTaskModel
from .sampler import build_schedule
from .span_answers import SpanDecoding, extract_answers

# How the best epoch is chosen, recorded in results.json: runs of older code chose it by the primary metric
SELECTED_BY = "task_score"


class NonFiniteLossError(UserError):
    """Training produced a NaN/inf loss; the message names the step and the task."""


@dataclass
class TaskData:
    """A task's definition, its tokenized training split and its dev split(s)."""

    task: TaskDef
    train: TokenizedSplit | None
    dev: dict[str, TokenizedSplit] = field(default_factory=dict)
    holdout: TokenizedSplit | None = None  # slice of train held out for model selection


def autocast_dtype(precision: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype for ``--precision`` on ``device`` (None = plain fp32)."""
    if precision == "auto":
        if device.type == "cuda":
            return torch.bfloat16 if torch.cuda.is_bf16_supported() else None
        return torch.bfloat16 if cpu_has_fast_bf16() else None
    if precision == "fp16" and device.type != "cuda":
        raise UserError("--precision fp16 needs CUDA; use bf16 or fp32 on CPU")
    return {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}[precision]


def cpu_has_fast_bf16() -> bool:
    """True when oneDNN has native bf16 kernels on this CPU (AVX512-BF16 / AMX): bf16 autocast is then
    ~1.8x faster for MiniLM training here (experiments/results/bench_train.md)."""
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def param_groups(model: torch.nn.Module, weight_decay: float) -> list[dict]:
    """No weight decay on biases and LayerNorm weights (1-D parameters)."""
    decay, no_decay = [], []
    for p in model.parameters():
        if p.requires_grad:
            (no_decay if p.ndim < 2 else decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def linear_schedule(warmup: int, total: int) -> Callable[[int], float]:
    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / max(1, warmup)
        return max(0.0, (total - step) / max(1, total - warmup))
    return factor


RANK_SEED_STRIDE = 1_000_003  # rank r > 0 seeds dropout with seed + r * stride (rank 0: the run's seed)


@dataclass(frozen=True)
class Plan:
    """How long the run is, from the config and the epoch schedule's length."""

    steps_per_epoch: int  # batches (micro-steps) per epoch
    micro_total: int  # batches in the whole run
    opt_total: int  # optimizer steps in the whole run
    n_epochs: int


@dataclass
class Progress:
    """Where training stands. Saved in every checkpoint beside the model, optimizer and RNG states."""

    epoch: int = 0  # the epoch being trained (0-based)
    position: int = 0  # steps of that epoch's schedule already trained (its evaluation not yet done)
    micro_step: int = 0
    opt_step: int = 0
    seen: int = 0  # training examples
    train_time: float = 0.0
    running: dict[str, list[float]] = field(default_factory=dict)  # losses since the last log record
    history: list[dict] = field(default_factory=list)  # one record per evaluated epoch
    best: dict[str, Any] = field(default_factory=lambda: {"score": -math.inf, "epoch": None, "metrics": None})
    log_bytes: int = 0  # length of metrics.jsonl when this was saved


class Trainer:
    """Trains a :class:`MultiTaskModel` on several tasks, one task per batch.

    ``before_batch(task)`` is called before every forward pass (training and evaluation): ticket
    sharing uses it to gate the encoder with the batch's task mask.

    With ``dist`` (several processes, see :mod:`mtl.distributed`) the model is wrapped in
    DistributedDataParallel, each batch is split across ranks, evaluation is gathered, and only
    rank 0 writes ``metrics.jsonl`` and checkpoints.
    """

    def __init__(self, model: MultiTaskModel, data: dict[str, TaskData], config: TrainConfig,
                 output_dir: Path, pad_id: int, before_batch: Callable[[str], None] | None = None,
                 on_step: Callable[[Progress, Plan], None] | None = None,
                 dist: Dist = SINGLE, device: torch.device | None = None,
                 log_sinks: Sequence[Callable[[dict], None]] = ()) -> None:
        self.model = model
        self.data = data
        self.config = config
        self.output_dir = Path(output_dir)
        self.pad_id = pad_id
        self.before_batch = before_batch or (lambda task: None)
        self.on_step = on_step  # called after every optimizer step (a study's progress display), rank 0 only
        self.log_sinks = list(log_sinks)  # also receive every metrics.jsonl record (rank 0): --report-to
        self.dist = dist
        self.device = device if device is not None else pick_device(config.runtime.device)
        self.amp_dtype = autocast_dtype(config.runtime.precision, self.device)
        self.model.to(self.device)
        self.log_path = self.output_dir / "metrics.jsonl"
        self.checkpoint_path = self.output_dir / CHECKPOINT_NAME
        self.last_checkpoint_step: int | None = None
        self._ddp: torch.nn.Module | None = None
        self._checkpoint_due = False
        self._checkpoint_seconds = 0.0

    # ------------------------------------------------------------ helpers

    def autocast(self):
        """Autocast context for the run's precision (a no-op in fp32)."""
        if self.amp_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.amp_dtype)

    def _to_device(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return {k: v.to(self.device, non_blocking=True) for k, v in batch.items()}

    def _log(self, record: dict) -> None:
        if self.dist.is_main:
            with self.log_path.open("a", encoding="utf-8") as f:
                f.write(json.dumps(record) + "\n")
            for sink in self.log_sinks:
                sink(record)

    def epoch_schedule(self, epoch: int) -> list[tuple[str, list[int]]]:
        """The epoch's (task, example indices) steps; a pure function of (seed, epoch), the same on every rank."""
        gen = torch.Generator().manual_seed(self.config.optim.seed * 1_000_003 + epoch)
        batches = {name: length_grouped_batches(d.train.lengths, self.config.optim.batch_size, gen, self.config.optim.group_by_length)
                   for name, d in self.data.items() if d.train is not None}
        sizes = {name: len(d.train) for name, d in self.data.items() if d.train is not None}
        return build_schedule(self.config.optim.sampler, batches, gen, sizes=sizes, temp=self.config.optim.temperature)

    def plan(self) -> Plan:
        cfg = self.config
        steps_per_epoch = len(self.epoch_schedule(0))
        micro_total = math.ceil(cfg.optim.epochs * steps_per_epoch)
        if cfg.optim.max_steps is not None:
            micro_total = cfg.optim.max_steps * cfg.optim.grad_accum
        opt_total = max(1, math.ceil(micro_total / cfg.optim.grad_accum))
        n_epochs = max(1, math.ceil(micro_total / steps_per_epoch)) if micro_total else 0
        return Plan(steps_per_epoch, micro_total, opt_total, n_epochs)

    # ------------------------------------------------------------ evaluation

    @property
    def has_holdout(self) -> bool:
        return any(d.holdout is not None for d in self.data.values())

    @torch.inference_mode()
    def evaluate(self, which: str = "dev") -> dict[str, dict[str, float]]:
        """Metrics (percent) of every task on its dev split(s) (``which="dev"``) or its held-out
        slice of train (``which="holdout"``): ``{task: {metric[_suffix]: value}}``."""
        was_training = self.model.training
        self.model.eval()
        results: dict[str, dict[str, float]] = {}
        for name, d in self.data.items():
            self.before_batch(name)
            splits = d.dev if which == "dev" else ({"holdout": d.holdout} if d.holdout is not None else {})
            for split, tokenized in splits.items():
                if d.task.head == "span":
                    preds, golds = self.span_answers(name, tokenized), tokenized.spans.gold()
                else:
                    preds, golds = self.predict(name, tokenized), tokenized.labels
                results.setdefault(name, {}).update(compute_metrics(d.task, preds, golds, split))
        self.model.train(was_training)
        return results

    @torch.inference_mode()
    def predict(self, task: str, data: TokenizedSplit) -> torch.Tensor:
        """Predictions (class index or score) for every example of ``data``, in the original order.
        Each rank predicts every ``world``-th batch; the sum over ranks fills in every example once."""
        preds = torch.zeros(len(data), dtype=torch.float32 if self.model.tasks[task].head == "regression" else torch.long)
        for indices in self.dist.shard(eval_batches(data.lengths, self.config.eval.eval_batch_size)):
            batch = self._to_device(collate(data, indices, self.pad_id))
            batch.pop("labels")
            with self.autocast():
                logits = self.model(task, **batch)
            preds[indices] = self.model.predict(task, logits).cpu().to(preds.dtype)
        return self.dist.all_reduce_sum(preds)

    def span_decoding(self, task: str) -> SpanDecoding:
        """How answers of span task ``task`` are read from its logits (the run's options)."""
        return SpanDecoding(max_answer_length=self.config.eval.max_answer_length,
                            null_threshold=self.config.eval.null_threshold, no_answer=self.model.tasks[task].no_answer)

    @torch.inference_mode()
    def span_logits(self, task: str, data: TokenizedSplit) -> list[torch.Tensor]:
        """Start/end logits (T_i, 2) of every window of a span task's ``data``, in order. Each rank computes every
        ``world``-th batch; the sum over ranks fills in every window once."""
        logits = torch.zeros(len(data), int(data.lengths.max()), 2)
        for indices in self.dist.shard(eval_batches(data.lengths, self.config.eval.eval_batch_size)):
            batch = self._to_device(collate(data, indices, self.pad_id))
            batch.pop("labels")
            with self.autocast():
                out = self.model(task, **batch).float().cpu()  # (B, T, 2)
            logits[indices, : out.shape[1]] = out
        logits = self.dist.all_reduce_sum(logits)
        return [logits[i, :n] for i, n in enumerate(data.lengths.tolist())]

    def span_answers(self, task: str, data: TokenizedSplit) -> dict[str, str]:
        """Question id -> predicted answer text for every question of a span task's ``data``."""
        return extract_answers(data.spans, self.span_logits(task, data), self.span_decoding(task))

    # ------------------------------------------------------------ training

    def train(self, checkpoint: dict | None = None) -> dict:
        """Run the whole training, or its rest from ``checkpoint`` (:func:`mtl.checkpoint.load_checkpoint`);
        returns a summary (best epoch, per-epoch metrics, throughput)."""
        cfg = self.config
        plan = self.plan()
        optimizer = torch.optim.AdamW(param_groups(self.model, cfg.optim.weight_decay), lr=cfg.optim.lr)
        scheduler = torch.optim.lr_scheduler.LambdaLR(
            optimizer, linear_schedule(int(cfg.optim.warmup_ratio * plan.opt_total), plan.opt_total))
        scaler = torch.amp.GradScaler(self.device.type, enabled=self.amp_dtype == torch.float16)
        self._optim = (optimizer, scheduler, scaler)
        torch.manual_seed(cfg.optim.seed + RANK_SEED_STRIDE * self.dist.rank)  # dropout
        progress, best_state = Progress(), None
        if checkpoint is None:
            self._start_log()
        else:
            progress, best_state = self._restore(checkpoint)
        self._ddp = self._wrap_ddp()
        self.model.train()
        bar = tqdm(total=plan.micro_total, initial=progress.micro_step, desc="train", unit="batch",
                   disable=not cfg.runtime.progress or not self.dist.is_main, dynamic_ncols=True)
        try:
            for epoch in range(progress.epoch, plan.n_epochs):
                t0, self._checkpoint_seconds = time.perf_counter(), 0.0
                best_state = self._train_epoch(epoch, plan, progress, best_state, bar)
                progress.train_time += time.perf_counter() - t0 - self._checkpoint_seconds
                last_epoch = epoch == plan.n_epochs - 1 or progress.micro_step >= plan.micro_total
                if cfg.eval.eval_every_epoch or last_epoch:
                    best_state = self._evaluate_epoch(epoch, last_epoch, progress, best_state, bar)
                progress.epoch, progress.position = epoch + 1, 0
                self._checkpoint_due = True  # now, or at the first optimizer step after accumulation ends
                if not self._pending_grads(progress, plan):
                    self._save_checkpoint(progress, best_state)
                if progress.micro_step >= plan.micro_total:
                    break
        finally:
            bar.close()
            self._ddp = None
        if cfg.eval.keep_best and best_state is not None:
            self.model.load_state_dict(best_state)
        return self._summary(progress)

    def _train_epoch(self, epoch: int, plan: Plan, progress: Progress, best_state, bar) -> dict | None:
        """Train the rest of ``epoch`` from ``progress.position``; checkpoints every --checkpoint-every steps."""
        cfg = self.config
        optimizer, scheduler, scaler = self._optim
        schedule = self.epoch_schedule(epoch)
        for position in range(progress.position, len(schedule)):
            if progress.micro_step >= plan.micro_total:
                break
            task, indices = schedule[position]
            sync = (progress.micro_step + 1) % cfg.optim.grad_accum == 0 or progress.micro_step + 1 == plan.micro_total
            loss = self._forward_backward(task, indices, sync, progress, epoch)
            progress.running.setdefault(task, []).append(loss)
            progress.micro_step += 1
            progress.seen += len(indices)
            progress.position = position + 1
            if sync:
                scaler.unscale_(optimizer)
                if cfg.optim.max_grad_norm > 0:
                    torch.nn.utils.clip_grad_norm_(self.model.parameters(), cfg.optim.max_grad_norm)
                scaler.step(optimizer)
                scaler.update()
                scheduler.step()
                optimizer.zero_grad(set_to_none=True)
                progress.opt_step += 1
                if progress.opt_step % cfg.runtime.log_every == 0:
                    losses = {t: sum(v) / len(v) for t, v in progress.running.items()}
                    self._log({"step": progress.opt_step, "epoch": epoch + 1, "lr": scheduler.get_last_lr()[0], "loss": losses})
                    bar.set_postfix({t: f"{v:.3f}" for t, v in losses.items()})
                    progress.running = {}
                if self._checkpoint_due or (cfg.output.checkpoint_every and progress.opt_step % cfg.output.checkpoint_every == 0):
                    self._save_checkpoint(progress, best_state)
            bar.update(1)
            if sync and self.on_step is not None and self.dist.is_main:
                self.on_step(progress, plan)
        return best_state

    def _forward_backward(self, task: str, indices: list[int], sync: bool, progress: Progress, epoch: int) -> float:
        """One batch: forward, loss, backward (gradients accumulate). Returns the whole batch's loss (all ranks).

        Under DDP this rank takes ``indices[rank::world]`` and weights its mean loss by its share of the
        batch times ``world`` (DDP averages gradients over ranks), so the gradient is the whole batch's.
        A rank left without an example runs one with weight 0 (every rank must run backward).
        """
        share, weight = 1.0, None
        if self.dist.enabled:
            mine = self.dist.shard(indices)
            share = len(mine) / len(indices)
            weight = share * self.dist.world_size
            indices = mine or indices[:1]
        batch = self._to_device(collate(self.data[task].train, indices, self.pad_id))
        labels = batch.pop("labels")
        self.before_batch(task)
        no_sync = self._ddp.no_sync() if self._ddp is not None and not sync else contextlib.nullcontext()
        with no_sync:
            with self.autocast():
                logits = (self._ddp or self.model)(task, **batch)
            loss = self.model.loss(task, logits, labels)
            value = loss.item() if weight is None else float(self.dist.all_reduce_sum(loss.detach().float() * share))
            if not math.isfinite(value):
                advice = "a lower --lr" + (" or --precision fp32" if self.amp_dtype is not None else "")
                kept = (f"; the last good checkpoint (step {self.last_checkpoint_step}) is kept in {self.checkpoint_path}"
                        if self.last_checkpoint_step is not None else "")
                raise NonFiniteLossError(f"non-finite loss ({value}) at step {progress.opt_step + 1}, task {task}, "
                                         f"epoch {epoch + 1}; try {advice}{kept}")
            scaled = loss / self.config.optim.grad_accum if weight is None else loss * weight / self.config.optim.grad_accum
            self._optim[2].scale(scaled).backward()
        return value

    def _evaluate_epoch(self, epoch: int, last_epoch: bool, progress: Progress, best_state, bar) -> dict | None:
        """Dev (and hold-out) metrics of this epoch, its log record, and the best-epoch record."""
        metrics = self.evaluate()
        holdout = self.evaluate("holdout") if self.has_holdout else None
        chosen_on = holdout if holdout else metrics
        score = selection_score(chosen_on, self.model.tasks) if chosen_on else -math.inf
        record = {"epoch": epoch + 1, "step": progress.opt_step, "eval": metrics, "score": score}
        if holdout:
            record["holdout"] = holdout
        progress.history.append(record)
        self._log(record)
        if self.dist.is_main:
            bar.write(f"epoch {epoch + 1}: " + format_metrics(metrics))
        if score > progress.best["score"] or progress.best["epoch"] is None:
            progress.best = {"score": score, "epoch": epoch + 1, "metrics": metrics, "holdout": holdout}
            best_state = self._state_copy() if self.config.eval.keep_best and not last_epoch else None
        return best_state

    def _summary(self, progress: Progress) -> dict:
        cfg, best, history = self.config, progress.best, progress.history
        final = best if cfg.eval.keep_best else (history[-1] if history else best)
        return {
            "metrics": final.get("metrics") or final.get("eval") or {},
            "holdout_metrics": final.get("holdout"),
            "selected_on": "holdout" if self.has_holdout else "dev",
            "selected_by": SELECTED_BY,
            "best_epoch": best["epoch"], "kept_epoch": best["epoch"] if cfg.eval.keep_best else (history[-1]["epoch"] if history else None),
            "history": history, "optimizer_steps": progress.opt_step, "train_examples": progress.seen,
            "train_seconds": round(progress.train_time, 2),
            "train_examples_per_s": round(progress.seen / progress.train_time, 2) if progress.train_time > 0 else None,
        }

    def _state_copy(self) -> dict[str, torch.Tensor]:
        return {k: v.detach().to("cpu", copy=True) for k, v in self.model.state_dict().items()}

    def _wrap_ddp(self) -> torch.nn.Module | None:
        """DistributedDataParallel around the model (several processes only). Unused parameters are
        expected: each batch uses one task head, and the encoder's pooler may be unused."""
        if not self.dist.enabled:
            return None
        from torch.nn.parallel import DistributedDataParallel

        ids = [self.device.index] if self.device.type == "cuda" else None
        return DistributedDataParallel(self.model, device_ids=ids, find_unused_parameters=True)

    # ------------------------------------------------------------ checkpoints

    def _start_log(self) -> None:
        if self.dist.is_main:
            self.output_dir.mkdir(parents=True, exist_ok=True)
            self.log_path.write_text("", encoding="utf-8")

    def _pending_grads(self, progress: Progress, plan: Plan) -> bool:
        """True between the micro-steps of one accumulated optimizer step (no checkpoint possible then)."""
        return progress.micro_step % self.config.optim.grad_accum != 0 and progress.micro_step != plan.micro_total

    def _save_checkpoint(self, progress: Progress, best_state: dict | None) -> None:
        """Write the checkpoint (rank 0; every rank's RNG state is gathered into it). Called on every rank."""
        self._checkpoint_due = False
        if not self.config.output.save_checkpoints:
            return
        t0 = time.perf_counter()
        rngs = self.dist.all_gather_object(rng_state())
        if self.dist.is_main:
            optimizer, scheduler, scaler = self._optim
            progress.log_bytes = self.log_path.stat().st_size if self.log_path.is_file() else 0
            save_checkpoint(self.checkpoint_path, {
                "config": self.config.to_dict(), "world_size": self.dist.world_size,
                "model": self.model.state_dict(), "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(), "scaler": scaler.state_dict(),
                "progress": dataclasses.asdict(progress), "best_state": best_state, "rng": rngs})
        self.last_checkpoint_step = progress.opt_step
        self._checkpoint_seconds += time.perf_counter() - t0

    def _restore(self, checkpoint: dict) -> tuple[Progress, dict | None]:
        """Load model, optimizer, scheduler, scaler, progress and this rank's RNG state; cut metrics.jsonl
        back to what it held at the checkpoint."""
        optimizer, scheduler, scaler = self._optim
        self.model.load_state_dict(checkpoint["model"])
        optimizer.load_state_dict(checkpoint["optimizer"])
        scheduler.load_state_dict(checkpoint["scheduler"])
        scaler.load_state_dict(checkpoint["scaler"])
        progress = Progress(**checkpoint["progress"])
        rngs = checkpoint["rng"]
        if len(rngs) == self.dist.world_size:
            set_rng_state(rngs[self.dist.rank])
        else:  # another number of processes: dropout continues from a fresh, still seeded, stream
            torch.manual_seed(self.config.optim.seed + RANK_SEED_STRIDE * self.dist.rank + progress.opt_step)
        if self.dist.is_main:
            if self.log_path.is_file():
                with self.log_path.open("r+b") as f:
                    f.truncate(min(progress.log_bytes, f.seek(0, 2)))
            else:
                self._start_log()
        self.last_checkpoint_step = progress.opt_step
        return progress, checkpoint.get("best_state")

def format_metrics(metrics: dict[str, dict[str, float]]) -> str:
    return "  ".join(f"{t}: " + " ".join(f"{k}={v:.1f}" for k, v in m.items()) for t, m in metrics.items())
