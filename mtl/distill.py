"""Distil a teacher into an extracted student on unlabelled text: resumable, logged, with a held-out loss.

:class:`Distiller` trains ``config.steps`` AdamW steps (linear warm-up and decay, gradient clipping) of the
student (encoder and, for the ``mlm`` objective, its MLM head) against the frozen teacher on batches of a
:class:`mtl.corpus.TokenizedCorpus`, with the loss of :mod:`mtl.distill_loss` (``objective: auto`` picks
``mlm`` when the teacher has an MLM head, else ``hidden``). Attention runs eagerly while distilling (the
attention distributions are needed); the student is saved with SDPA.

Files in ``out_dir`` (None: nothing is written, nothing resumes):

- ``log.jsonl``: one record every ``log_every`` steps (``step``, ``loss`` and its parts, ``lr``,
  ``seconds``) and one per held-out evaluation (``heldout``: loss and parts); the loss curve;
- ``checkpoint.pt`` every ``checkpoint_every`` steps (student, head, optimizer, schedule, batch position,
  RNG): a killed run continues from it (:mod:`mtl.checkpoint`); removed at the end;
- ``distill.json``: the summary (held-out loss before and after, steps, seconds, config).

The held-out loss uses a fixed masking generator (``mlm``), so two students are measured on the same inputs.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import torch

from basics.errors import UserError
from basics.io import atomic_write_json
from masks.arch import ARCH_SPECS, shape_of
from mtl.checkpoint import load_checkpoint, rng_state, save_checkpoint, set_rng_state
from mtl.corpus import BatchStream, TokenizedCorpus
from mtl.distill_loss import OBJECTIVES, LayerMap, LossParts, hidden_attention_loss, mask_tokens, mlm_kd_loss
from mtl.distributed import device_name
from mtl.teacher import Student, Teacher
from mtl.trainer import autocast_dtype, linear_schedule, param_groups

HELDOUT_MASK_SEED = 20_211_234


@dataclass
class DistillConfig:
    """How long and how a student is distilled (saved in every checkpoint and summary)."""

    steps: int = 2000
    batch_size: int = 32
    lr: float = 1e-4
    warmup_ratio: float = 0.05
    weight_decay: float = 0.01
    max_grad_norm: float = 1.0
    max_seq_length: int = 128
    objective: str = "auto"  # auto | mlm | hidden (OBJECTIVES)
    temperature: float = 2.0  # mlm: Bort's T
    mlm_weight: float = 0.1  # mlm: weight of the MLM cross-entropy
    kd_weight: float = 0.5  # mlm: weight of T² · KL
    mlm_probability: float = 0.15
    hidden_weight: float = 1.0  # hidden: weight of the hidden-state term
    attention_weight: float = 1.0  # hidden: weight of the attention term
    precision: str = "auto"  # auto | fp32 | bf16 (mtl.precision); auto: bf16 where native, as training does
    seed: int = 1
    log_every: int = 10
    eval_every: int = 0  # held-out loss every N steps (0: before and after only)
    eval_batch_size: int = 64
    checkpoint_every: int = 100  # 0: no checkpoints

    def __post_init__(self) -> None:
        if self.objective != "auto":
            OBJECTIVES.check(self.objective)
        for name in ("steps", "batch_size", "max_seq_length", "log_every", "eval_batch_size"):
            if getattr(self, name) < (0 if name == "steps" else 1):
                raise UserError(f"distillation {name} must be >= {0 if name == 'steps' else 1}, got {getattr(self, name)}")
        if not self.lr > 0 or not 0 <= self.warmup_ratio < 1 or self.temperature <= 0:
            raise UserError("distillation needs lr > 0, 0 <= warmup_ratio < 1 and temperature > 0")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> "DistillConfig":
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - names)
        if unknown:
            raise UserError(f"unknown distillation option(s) {unknown}; valid: {', '.join(sorted(names))}")
        return cls(**values)


def objective_for(config: DistillConfig, teacher: Teacher) -> str:
    """The objective ``config`` asks of ``teacher``: ``auto`` is ``mlm`` when the teacher has an MLM head, else ``hidden``."""
    if config.objective != "auto":
        return config.objective
    return "mlm" if teacher.mlm_head is not None else "hidden"


class TeacherOutputSource(Protocol):
    """The teacher's outputs on the distiller's batches, computed beforehand (:class:`mtl.teacher_cache.TeacherCache`)."""

    def check(self, teacher: Teacher, train: TokenizedCorpus, heldout: TokenizedCorpus, config: DistillConfig,
              device: str | torch.device) -> None: ...

    def outputs(self, split: str, index: int, input_ids: torch.Tensor, device: str | torch.device) -> Any: ...


class Distiller:
    """Distil ``teacher`` into ``student`` (see the module docstring)."""

    def __init__(self, teacher: Teacher, student: Student, train: TokenizedCorpus, heldout: TokenizedCorpus,
                 config: DistillConfig, out_dir: Path | None = None, say: Callable[[str], None] | None = None,
                 device: str | torch.device = "cpu", teacher_cache: TeacherOutputSource | None = None) -> None:
        self.teacher, self.student, self.config = teacher, student, config
        self.train_data, self.heldout = train, heldout
        self.out_dir = Path(out_dir) if out_dir is not None else None
        self.say = say or (lambda line: None)
        self.device = torch.device(device)
        objective = objective_for(config, teacher)
        if objective == "mlm" and (teacher.mlm_head is None or student.mlm_head is None):
            raise UserError("the mlm objective needs a teacher with an MLM head; use objective hidden (or auto)")
        self.objective = objective
        if teacher_cache is not None:
            if objective != "hidden":
                raise UserError("a teacher cache serves the hidden objective only")
            teacher_cache.check(teacher, train, heldout, config, device)
        self.teacher_cache = teacher_cache
        self.layer_map = LayerMap.of(student.selection, shape_of(teacher.encoder).num_layers)
        self.special = torch.tensor(sorted(set(teacher.tokenizer.all_special_ids)), dtype=torch.long)
        self.autocast = autocast_dtype(config.precision, self.device)
        for module in self._modules():
            module.to(self.device)
        for model in (teacher.encoder, student.encoder):
            model.set_attn_implementation("eager")
        # the attention probabilities a model returns in training mode are those after dropout (zeros, 1/(1-p)):
        # not a distribution. The student distils without attention dropout (restored at the end).
        self._attention_dropout = [(d, d.p) for d in attention_dropouts(student.encoder)]

    # ---------------------------------------------------------------- pieces

    def _modules(self) -> list[torch.nn.Module]:
        return [m for m in (self.teacher.encoder, self.teacher.mlm_head, self.student.encoder, self.student.mlm_head)
                if m is not None]

    def _trainable(self) -> torch.nn.ModuleList:
        return torch.nn.ModuleList([m for m in (self.student.encoder, self.student.mlm_head) if m is not None])

    def loss(self, batch: dict[str, torch.Tensor], generator: torch.Generator, cached: tuple[str, int] | None = None) -> LossParts:
        """The objective's loss on one batch (the teacher without gradients). ``cached``: ``(split, index)`` of the
        batch in the teacher cache, whose outputs then replace the teacher's forward pass."""
        t_cached = (self.teacher_cache.outputs(*cached, batch["input_ids"], self.device)
                    if cached is not None and self.teacher_cache is not None else None)
        batch = {k: v.to(self.device) for k, v in batch.items()}
        mask = batch["attention_mask"]
        context = torch.autocast(self.device.type, dtype=self.autocast) if self.autocast else contextlib.nullcontext()
        with context:
            if self.objective == "mlm":
                ids, labels = mask_tokens(batch["input_ids"].cpu(), mask.cpu(), self.special,
                                          self.teacher.tokenizer.mask_token_id, self.teacher.encoder.config.vocab_size,
                                          generator, self.config.mlm_probability)
                ids, labels = ids.to(self.device), labels.to(self.device)
                with torch.no_grad():
                    t_logits = self.teacher.mlm_head(self.teacher.encoder(input_ids=ids, attention_mask=mask).last_hidden_state)
                s_logits = self.student.mlm_head(self.student.encoder(input_ids=ids, attention_mask=mask).last_hidden_state)
                return mlm_kd_loss(s_logits, t_logits, labels, mask, self.config.temperature,
                                   self.config.mlm_weight, self.config.kd_weight)
            if t_cached is not None:
                t_out = t_cached
            else:
                with torch.no_grad():
                    t_out = self.teacher.encoder(**batch, output_hidden_states=True, output_attentions=True)
            s_out = self.student.encoder(**batch, output_hidden_states=True, output_attentions=True)
            return hidden_attention_loss(s_out, t_out, self.layer_map, mask, self.config.hidden_weight,
                                         self.config.attention_weight)

    @torch.no_grad()
    def evaluate(self) -> dict[str, float]:
        """The loss on the held-out text (eval mode, fixed masking), weighted by batch size."""
        modes = [(m, m.training) for m in self._modules()]
        for m, _ in modes:
            m.eval()
        generator = torch.Generator().manual_seed(HELDOUT_MASK_SEED)
        totals: dict[str, float] = {}
        count = 0
        try:
            for index, batch in enumerate(self.heldout.batches(self.config.eval_batch_size)):
                parts = self.loss(batch, generator, ("heldout", index))
                n = len(batch["input_ids"])
                for key, value in {"loss": float(parts.loss.detach()), **parts.parts}.items():
                    totals[key] = totals.get(key, 0.0) + value * n
                count += n
        finally:
            for m, training in modes:
                m.train(training)
        return {k: v / count for k, v in totals.items()}

    # ---------------------------------------------------------------- the loop

    def run(self) -> dict[str, Any]:
        """Train (or continue) to ``config.steps``; returns (and writes) the summary."""
        cfg = self.config
        torch.manual_seed(cfg.seed)
        params = self._trainable()
        optimizer = torch.optim.AdamW(param_groups(params, cfg.weight_decay), lr=cfg.lr)
        warmup = int(cfg.warmup_ratio * cfg.steps)
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, linear_schedule(warmup, max(1, cfg.steps)))
        generator = torch.Generator().manual_seed(cfg.seed)  # masking (mlm)
        step, position, initial, seconds = self._resume(optimizer, scheduler, generator)
        if initial is None:
            initial = self.evaluate()
            self._log({"step": 0, "heldout": initial})
            self.say(f"distill: held-out loss before distillation {initial['loss']:.4f}")
        for m in self._modules():
            m.train(m in (self.student.encoder, self.student.mlm_head))
        self.teacher.encoder.eval()
        if self.teacher.mlm_head is not None:
            self.teacher.mlm_head.eval()
        for dropout, _ in self._attention_dropout:
            dropout.p = 0.0
        if step < cfg.steps:  # 0 steps (the held-out loss of the bare student) need no training text
            stream = BatchStream(self.train_data, cfg.batch_size, cfg.seed, position)
            batches = iter(stream)
        start, window = time.time() - seconds, []
        while step < cfg.steps:
            index = stream.position
            parts = self.loss(next(batches), generator, ("train", index))
            if not torch.isfinite(parts.loss):
                raise UserError(f"distillation loss is {float(parts.loss.detach())} at step {step + 1}; lower the learning rate")
            optimizer.zero_grad(set_to_none=True)
            parts.loss.backward()
            if cfg.max_grad_norm > 0:
                torch.nn.utils.clip_grad_norm_(params.parameters(), cfg.max_grad_norm)
            optimizer.step()
            scheduler.step()
            step += 1
            window.append({"loss": float(parts.loss.detach()), **parts.parts})
            if step % cfg.log_every == 0 or step == cfg.steps:
                record = {k: sum(w[k] for w in window) / len(window) for k in window[0]}
                self._log({"step": step, **record, "lr": scheduler.get_last_lr()[0], "seconds": round(time.time() - start, 1)})
                self.say(f"distill: step {step}/{cfg.steps} loss {record['loss']:.4f} ({time.time() - start:.0f}s)")
                window = []
            if cfg.eval_every and step % cfg.eval_every == 0 and step < cfg.steps:
                self._log({"step": step, "heldout": self.evaluate()})
            if cfg.checkpoint_every and step % cfg.checkpoint_every == 0 and step < cfg.steps and self.out_dir:
                self._checkpoint(step, stream.position, generator, optimizer, scheduler, initial, time.time() - start)
        final = self.evaluate()
        self._log({"step": step, "heldout": final})
        self.say(f"distill: held-out loss after {step} steps {final['loss']:.4f}")
        for model in (self.teacher.encoder, self.student.encoder):
            model.set_attn_implementation("sdpa")
        for dropout, p in self._attention_dropout:
            dropout.p = p
        summary = {"objective": self.objective, "steps": step, "heldout_before": initial, "heldout": final,
                   "train_seconds": round(time.time() - start, 1), "train_texts": len(self.train_data),
                   "heldout_texts": len(self.heldout), "device": device_name(self.device), "config": cfg.to_dict()}
        if self.out_dir is not None:
            atomic_write_json(self.out_dir / "distill.json", summary)
            (self.out_dir / "checkpoint.pt").unlink(missing_ok=True)
        return summary

    # ---------------------------------------------------------------- files

    def _log(self, record: dict) -> None:
        if self.out_dir is None:
            return
        self.out_dir.mkdir(parents=True, exist_ok=True)
        with (self.out_dir / "log.jsonl").open("a", encoding="utf-8") as f:
            f.write(json.dumps(record) + "\n")

    def _identity(self) -> dict[str, Any]:
        return {"config": self.config.to_dict(), "selection": self.student.selection.to_dict(), "objective": self.objective}

    def _checkpoint(self, step: int, position: int, generator: torch.Generator, optimizer, scheduler, initial: dict,
                    seconds: float) -> None:
        save_checkpoint(self.out_dir / "checkpoint.pt", {
            "identity": self._identity(), "step": step, "position": position, "model": self._trainable().state_dict(),
            "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(), "initial": initial,
            "seconds": seconds, "rng": rng_state(), "masking": generator.get_state()})

    def _resume(self, optimizer, scheduler, generator: torch.Generator) -> tuple[int, int, dict | None, float]:
        """``(step, batch position, held-out loss before, seconds so far)`` from ``checkpoint.pt``, or a fresh start."""
        path = self.out_dir / "checkpoint.pt" if self.out_dir is not None else None
        if path is None or not path.is_file():
            if self.out_dir is not None:
                (self.out_dir / "log.jsonl").unlink(missing_ok=True)
            return 0, 0, None, 0.0
        state = load_checkpoint(path)
        if state["identity"] != self._identity():
            raise UserError(f"{path} was made with other distillation options or another sub-architecture; "
                            "delete it (or the folder) to start over")
        self._trainable().load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        set_rng_state(state["rng"])
        generator.set_state(state["masking"])
        step = int(state["step"])
        log = self.out_dir / "log.jsonl"
        if log.is_file():  # drop what was logged after the checkpoint
            kept = [line for line in log.read_text(encoding="utf-8").splitlines() if json.loads(line)["step"] <= step]
            log.write_text("".join(line + "\n" for line in kept), encoding="utf-8")
        self.say(f"distill: resuming at step {step}/{self.config.steps} from {path}")
        return step, int(state["position"]), state["initial"], float(state["seconds"])


def attention_dropouts(encoder: torch.nn.Module) -> list[torch.nn.Dropout]:
    """The dropout on the attention probabilities of every layer of a base encoder (stock or compacted)."""
    config = encoder.config
    spec = ARCH_SPECS[getattr(config, "base_model_type", None) or config.model_type]
    cores = [layer.get_submodule(spec.q.rpartition(".")[0]) for layer in encoder.get_submodule(spec.layers)]
    return [core.dropout for core in cores if isinstance(getattr(core, "dropout", None), torch.nn.Dropout)]


def read_log(out_dir: Path) -> list[dict]:
    """The records of ``out_dir/log.jsonl`` (empty when there is none)."""
    path = Path(out_dir) / "log.jsonl"
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def resume_step(out_dir: Path, checkpoint_every: int) -> int:
    """The step a distillation in ``out_dir`` would continue from, without loading its checkpoint: the last step
    its log reached, down to a multiple of ``checkpoint_every`` (checkpoints are written at those steps); 0 without
    a checkpoint."""
    if not checkpoint_every or not (Path(out_dir) / "checkpoint.pt").is_file():
        return 0
    steps = [int(r["step"]) for r in read_log(out_dir) if "step" in r]
    return max(steps, default=0) // checkpoint_every * checkpoint_every
