"""Multi-task trainer: AdamW + linear warm-up/decay, clipping, accumulation, autocast, per-epoch dev eval."""

from __future__ import annotations

import contextlib
import json
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch
from tqdm.auto import tqdm

from tasks.task_def import TaskDef

from .config import TrainConfig
from .data import TokenizedSplit, collate, eval_batches, length_grouped_batches
from .errors import UserError
from .metrics import compute_metrics
from .model import MultiTaskModel
from .sampler import build_schedule


class NonFiniteLossError(UserError):
    """Training produced a NaN/inf loss; the message names the step and the task."""


@dataclass
class TaskData:
    """A task's definition, its tokenized training split and its dev split(s)."""

    task: TaskDef
    train: TokenizedSplit | None
    dev: dict[str, TokenizedSplit] = field(default_factory=dict)
    holdout: TokenizedSplit | None = None  # slice of train held out for model selection


def pick_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UserError(f"--device {name}: CUDA is not available on this machine")
    return device


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


def selection_score(metrics: dict[str, dict[str, float]], tasks: dict[str, TaskDef]) -> float:
    """Mean over tasks of the primary metric (averaged over a task's dev splits, e.g. MNLI m/mm)."""
    scores = []
    for name, task_metrics in metrics.items():
        primary = tasks[name].primary
        values = [v for k, v in task_metrics.items() if k == primary or k.startswith(primary + "_")]
        scores.append(sum(values) / len(values))
    return sum(scores) / len(scores)


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


class Trainer:
    """Trains a :class:`MultiTaskModel` on several tasks, one task per batch.

    ``before_batch(task)`` is called before every forward pass (training and evaluation): ticket
    sharing uses it to gate the encoder with the batch's task mask.
    """

    def __init__(self, model: MultiTaskModel, data: dict[str, TaskData], config: TrainConfig,
                 output_dir: Path, pad_id: int, before_batch: Callable[[str], None] | None = None) -> None:
        self.model = model
        self.data = data
        self.config = config
        self.output_dir = Path(output_dir)
        self.pad_id = pad_id
        self.before_batch = before_batch or (lambda task: None)
        self.device = pick_device(config.device)
        self.amp_dtype = autocast_dtype(config.precision, self.device)
        self.model.to(self.device)
        self.log_path = self.output_dir / "metrics.jsonl"

    # ------------------------------------------------------------ helpers

    def autocast(self):
        """Autocast context for the run's precision (a no-op in fp32)."""
        if self.amp_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.amp_dtype)

    def _to_device(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return {k: v.to(self.device, non_blocking=True) for k, v in batch.items()}

    def _log(self, record: dict) -> None:
        with self.log_path.open("a", encoding="utf-8") as f:
            f.write(json.dumps(record) + "\n")

    def epoch_schedule(self, epoch: int) -> list[tuple[str, list[int]]]:
        """The epoch's (task, example indices) steps; a pure function of (seed, epoch)."""
        gen = torch.Generator().manual_seed(self.config.seed * 1_000_003 + epoch)
        batches = {name: length_grouped_batches(d.train.lengths, self.config.batch_size, gen, self.config.group_by_length)
                   for name, d in self.data.items() if d.train is not None}
        sizes = {name: len(d.train) for name, d in self.data.items() if d.train is not None}
        return build_schedule(self.config.sampler, batches, gen, sizes=sizes, temp=self.config.temperature)

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
                preds = self.predict(name, tokenized)
                results.setdefault(name, {}).update(compute_metrics(d.task, preds, tokenized.labels, split))
        self.model.train(was_training)
        return results

    @torch.inference_mode()
    def predict(self, task: str, data: TokenizedSplit) -> torch.Tensor:
        """Predictions (class index or score) for every example of ``data``, in the original order."""
        preds = torch.empty(len(data), dtype=torch.float32 if self.model.tasks[task].head == "regression" else torch.long)
        for indices in eval_batches(data.lengths, self.config.eval_batch_size):
            batch = self._to_device(collate(data, indices, self.pad_id))
            batch.pop("labels")
            with self.autocast():
                logits = self.model(task, **batch)
            preds[indices] = self.model.predict(task, logits).cpu().to(preds.dtype)
        return preds

    # ------------------------------------------------------------ training

    def train(self) -> dict:
        """Run the whole training; returns a summary (best epoch, per-epoch metrics, throughput)."""
        cfg = self.config
        self.output_dir.mkdir(parents=True, exist_ok=True)
        self.log_path.write_text("", encoding="utf-8")
        torch.manual_seed(cfg.seed)
        steps_per_epoch = len(self.epoch_schedule(0))
        micro_total = math.ceil(cfg.epochs * steps_per_epoch)
        if cfg.max_steps is not None:
            micro_total = cfg.max_steps * cfg.grad_accum
        opt_total = max(1, math.ceil(micro_total / cfg.grad_accum))
        n_epochs = max(1, math.ceil(micro_total / steps_per_epoch)) if micro_total else 0

        optimizer = torch.optim.AdamW(param_groups(self.model, cfg.weight_decay), lr=cfg.lr)
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, linear_schedule(int(cfg.warmup_ratio * opt_total), opt_total))
        scaler = torch.amp.GradScaler(self.device.type, enabled=self.amp_dtype == torch.float16)

        history: list[dict] = []
        best = {"score": -math.inf, "epoch": None, "metrics": None, "state": None}
        micro_step, opt_step, seen, train_time = 0, 0, 0, 0.0
        running: dict[str, list[float]] = {}
        self.model.train()
        bar = tqdm(total=micro_total, desc="train", unit="batch", disable=not cfg.progress, dynamic_ncols=True)
        for epoch in range(n_epochs):
            schedule = self.epoch_schedule(epoch)
            t0 = time.perf_counter()
            for task, indices in schedule:
                if micro_step >= micro_total:
                    break
                batch = self._to_device(collate(self.data[task].train, indices, self.pad_id))
                labels = batch.pop("labels")
                self.before_batch(task)
                with self.autocast():
                    logits = self.model(task, **batch)
                loss = self.model.loss(task, logits, labels)
                if not torch.isfinite(loss):
                    raise NonFiniteLossError(f"non-finite loss ({loss.item()}) at step {opt_step + 1}, task {task}, "
                                             f"epoch {epoch + 1}; try a lower --lr or --precision fp32")
                scaler.scale(loss / cfg.grad_accum).backward()
                running.setdefault(task, []).append(loss.item())
                micro_step += 1
                seen += len(indices)
                if micro_step % cfg.grad_accum == 0 or micro_step == micro_total:
                    scaler.unscale_(optimizer)
                    if cfg.max_grad_norm > 0:
                        torch.nn.utils.clip_grad_norm_(self.model.parameters(), cfg.max_grad_norm)
                    scaler.step(optimizer)
                    scaler.update()
                    scheduler.step()
                    optimizer.zero_grad(set_to_none=True)
                    opt_step += 1
                    if opt_step % cfg.log_every == 0:
                        losses = {t: sum(v) / len(v) for t, v in running.items()}
                        self._log({"step": opt_step, "epoch": epoch + 1, "lr": scheduler.get_last_lr()[0], "loss": losses})
                        bar.set_postfix({t: f"{v:.3f}" for t, v in losses.items()})
                        running = {}
                bar.update(1)
            train_time += time.perf_counter() - t0
            last_epoch = epoch == n_epochs - 1 or micro_step >= micro_total
            if cfg.eval_every_epoch or last_epoch:
                metrics = self.evaluate()
                holdout = self.evaluate("holdout") if self.has_holdout else None
                chosen_on = holdout if holdout else metrics
                score = selection_score(chosen_on, self.model.tasks) if chosen_on else -math.inf
                record = {"epoch": epoch + 1, "step": opt_step, "eval": metrics, "score": score}
                if holdout:
                    record["holdout"] = holdout
                history.append(record)
                self._log(record)
                bar.write(f"epoch {epoch + 1}: " + format_metrics(metrics))
                if score > best["score"] or best["epoch"] is None:
                    best = {"score": score, "epoch": epoch + 1, "metrics": metrics, "holdout": holdout,
                            "state": self._state_copy() if cfg.keep_best and not last_epoch else None}
            if cfg.save_checkpoints:
                self.save_checkpoint(optimizer, scheduler, epoch + 1, opt_step)
            if micro_step >= micro_total:
                break
        bar.close()
        if cfg.keep_best and best["state"] is not None:
            self.model.load_state_dict(best["state"])
        final = best if cfg.keep_best else (history[-1] if history else best)
        return {
            "metrics": final.get("metrics") or final.get("eval") or {},
            "holdout_metrics": final.get("holdout"),
            "selected_on": "holdout" if self.has_holdout else "dev",
            "best_epoch": best["epoch"], "kept_epoch": best["epoch"] if cfg.keep_best else (history[-1]["epoch"] if history else None),
            "history": history, "optimizer_steps": opt_step, "train_examples": seen,
            "train_seconds": round(train_time, 2),
            "train_examples_per_s": round(seen / train_time, 2) if train_time > 0 else None,
        }

    def _state_copy(self) -> dict[str, torch.Tensor]:
        return {k: v.detach().to("cpu", copy=True) for k, v in self.model.state_dict().items()}

    def save_checkpoint(self, optimizer, scheduler, epoch: int, step: int) -> None:
        from .io import atomic_write

        state = {"model": self.model.state_dict(), "optimizer": optimizer.state_dict(),
                 "scheduler": scheduler.state_dict(), "epoch": epoch, "step": step,
                 "rng": torch.get_rng_state()}
        atomic_write(self.output_dir / "checkpoint.pt", lambda p: torch.save(state, p))


def format_metrics(metrics: dict[str, dict[str, float]]) -> str:
    return "  ".join(f"{t}: " + " ".join(f"{k}={v:.1f}" for k, v in m.items()) for t, m in metrics.items())
