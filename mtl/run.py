"""One training run end to end: config -> tasks -> data -> model -> Trainer -> artifacts in OUTPUT/."""

from __future__ import annotations

import contextlib
import os
import platform
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from basics.errors import UserError
from basics.io import atomic_write_json
from masks.magnitude import check_after, write_magnitude_masks
from masks.weight_mask import WeightMask, apply_weight_mask, describe, load_weight_mask, remove_weight_mask
from mtl import distributed
from mtl.checkpoint import clear_previous_run, remove_temporaries, resume_point
from mtl.config import TrainConfig, save_config
from mtl.data import TokenizedSplit, default_cache_dir, file_fingerprint, load_or_tokenize
from mtl.distributed import Dist
from mtl.gating import check_arch_support, mask_gating, score_model, write_tickets
from mtl.model import MultiTaskModel, attention_note, check_max_seq_length, load_encoder, save_multitask_model
from mtl.model_card import run_card
from mtl.model_digest import model_identity
from mtl.rundir import RunDir, RunResult
from mtl.trainer import Plan, Progress, TaskData, Trainer, format_metrics
from mtl.training_log import close_reporters, open_reporters
from tasks.hub import load_hub_split
from tasks.readers import read_split, split_path
from tasks.registry import TaskRegistry, default_registry, parse_task_list
from tasks.squad import load_hub_squad, read_squad_split
from tasks.task_def import TaskDef

StepCallback = Callable[[Progress, Plan], None]


def check_output_dir(path_str: str) -> Path:
    """The output directory, checked without creating anything: it is (or can become) a writable directory."""
    if not path_str:
        raise UserError("--output-dir is required (every artifact of the run goes there)")
    path = Path(path_str).expanduser()
    existing = next(p for p in (path, *path.parents) if p.exists())
    if not existing.is_dir():
        what = "is a file" if existing == path else f"cannot be created: {existing} is a file"
        raise UserError(f"output directory {path} {what}")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise UserError(f"cannot write to output directory {path}: {existing} is not writable")
    return path


def prepare_output_dir(path_str: str) -> Path:
    """Create the output directory (one clear error if impossible)."""
    path = check_output_dir(path_str)
    try:
        path.mkdir(parents=True, exist_ok=True)
        probe = path / ".write-test"
        probe.write_text("")
        probe.unlink()
    except OSError as exc:
        raise UserError(f"cannot write to output directory {path}: {exc.strerror or exc}") from None
    return path


def resolve_tasks(config: TrainConfig) -> tuple[TaskRegistry, list[TaskDef]]:
    if not config.data.tasks:
        raise UserError("--tasks is required, e.g. --tasks rte,mrpc,stsb")
    registry = default_registry([Path(p).expanduser() for p in config.data.task_def])
    return registry, parse_task_list(",".join(config.data.tasks), registry, unique=True)


SUBSAMPLE_SEED = 20_211_232  # fixed: --max-*-samples picks the same examples in every run


def subset_indices(total: int, n: int | None, mode: str) -> list[int] | None:
    """The rows (file order) that ``--max-*-samples n`` keeps of ``total``; None = all of them."""
    if n is None or n >= total:
        return None
    if mode == "first":
        return list(range(n))
    perm = torch.randperm(total, generator=torch.Generator().manual_seed(SUBSAMPLE_SEED))
    return sorted(perm[:n].tolist())


def take_subset(data: TokenizedSplit, n: int | None, mode: str) -> TokenizedSplit:
    """``n`` examples of ``data``: the first ``n`` (``mode="first"``), or a fixed random subset kept in file
    order (``"random"``; GLUE files are often sorted by genre or source, so the first rows are biased).
    Span tasks count questions (with all their windows)."""
    rows = subset_indices(data.num_examples, n, mode)
    return data if rows is None else data.subset_examples(rows)


def load_split(task: TaskDef, split: str, tokenizer, config: TrainConfig, max_samples: int | None) -> TokenizedSplit:
    """Read one split from the GLUE directory / the task's own files / the hub, tokenized (cached),
    then cut to ``max_samples`` examples as ``config.data.subsample`` says."""
    if config.data.subsample == "first":
        return _load_split(task, split, tokenizer, config, max_samples)
    return take_subset(_load_split(task, split, tokenizer, config, None), max_samples, "random")


def _load_split(task: TaskDef, split: str, tokenizer, config: TrainConfig, max_samples: int | None) -> TokenizedSplit:
    glue_dir = config.resolved_glue_dir()
    cache_dir = Path(config.data.cache_dir).expanduser() if config.data.cache_dir else default_cache_dir()
    span = task.head == "span"
    doc_stride = config.data.doc_stride if span else None
    if task.base_dir is not None or glue_dir is not None:
        file_path = split_path(task, glue_dir, split)  # clear error for a missing directory or file
        source = {**file_fingerprint(file_path), "max_samples": max_samples, "split": split}
        read = read_squad_split if span else read_split
        return load_or_tokenize(tokenizer, task, split, config.data.max_seq_length,
                                lambda: read(task, glue_dir, split, max_samples=max_samples), source, cache_dir,
                                doc_stride=doc_stride)
    if task.hub is None:
        raise UserError(f"task {task.name} has no Hugging Face hub source: pass --glue-dir DIR or set GLUE_DIR")
    source = {"hub": task.hub, "split": split, "max_samples": max_samples}
    load = load_hub_squad if span else load_hub_split
    return load_or_tokenize(tokenizer, task, split, config.data.max_seq_length,
                            lambda: load(task, split, max_samples=max_samples), source, cache_dir, doc_stride=doc_stride)


HOLDOUT_SEED = 20_211_231  # fixed: every seed and every ticket of a study sees the same held-out slice


def split_holdout(train: TokenizedSplit, fraction: float) -> tuple[TokenizedSplit, TokenizedSplit | None]:
    """Split ``fraction`` of ``train`` off (fixed permutation, independent of the run's seed); span tasks split
    questions, each with all its windows."""
    if fraction <= 0:
        return train, None
    total = train.num_examples
    n_hold = max(1, round(fraction * total))
    if n_hold >= total:
        raise UserError(f"--holdout-fraction {fraction} leaves no training examples for task {train.task}")
    perm = torch.randperm(total, generator=torch.Generator().manual_seed(HOLDOUT_SEED)).tolist()
    return train.subset_examples(sorted(perm[n_hold:])), train.subset_examples(sorted(perm[:n_hold]), split="holdout")


def load_task_data(tasks: list[TaskDef], tokenizer, config: TrainConfig, train: bool = True) -> dict[str, TaskData]:
    data = {}
    for task in tasks:
        train_split, holdout = None, None
        if train:
            full = load_split(task, "train", tokenizer, config, config.data.max_train_samples)
            train_split, holdout = split_holdout(full, config.data.holdout_fraction)
        dev = {s: load_split(task, s, tokenizer, config, config.data.max_eval_samples) for s in task.dev_splits}
        data[task.name] = TaskData(task, train_split, dev, holdout)
    return data


def machine_info() -> dict:
    return {"platform": platform.platform(), "python": platform.python_version(), "torch": torch.__version__,
            "cpu_count": os.cpu_count(), "threads": torch.get_num_threads(),
            "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None}


def build_model(config: TrainConfig, tasks: list[TaskDef]):
    """Encoder + fresh task heads (initialised from the run's seed)."""
    encoder, tokenizer = load_encoder(config.model.name)
    torch.manual_seed(config.optim.seed)
    model = MultiTaskModel(encoder, tasks, pooling=config.model.pooling, head_dropout=config.model.head_dropout)
    return model, tokenizer


def check_model_name(name: str) -> None:
    """A ``--model`` that names a local path must be a model directory (the hub is asked only for names)."""
    path = Path(name).expanduser()
    if path.exists():
        if not (path / "config.json").is_file():
            raise UserError(f"--model {name}: not a model directory (no config.json in it); give a directory written by "
                            "save_pretrained, a Hugging Face hub name, or 'minilm'")
    elif name.startswith(("/", "./", "../", "~")) or "\\" in name:
        raise UserError(f"--model {name}: model directory not found")


def check_data_files(tasks: list[TaskDef], config: TrainConfig) -> None:
    """Every split file the run will read exists (before anything slow happens)."""
    glue_dir = config.resolved_glue_dir()
    for task in tasks:
        if task.base_dir is None and glue_dir is None:
            if task.hub is None:
                raise UserError(f"task {task.name} has no Hugging Face hub source: pass --glue-dir DIR or set GLUE_DIR")
            continue
        for split in ("train", *task.dev_splits):
            split_path(task, glue_dir, split)


@contextlib.contextmanager
def deterministic_algorithms(enabled: bool) -> Iterator[None]:
    """``torch.use_deterministic_algorithms`` for the block when ``enabled`` (restored after). An op without
    a deterministic kernel (some CUDA backward passes) warns instead of stopping the run."""
    before = (torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled())
    if enabled:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")  # deterministic cuBLAS
        torch.use_deterministic_algorithms(True, warn_only=True)
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(before[0], warn_only=before[1])


@contextlib.contextmanager
def torch_threads(n: int | None) -> Iterator[None]:
    """``torch.set_num_threads(n)`` for the block (nothing when None); the caller's count is restored."""
    before = torch.get_num_threads()
    if n:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


# ---------------------------------------------------------------- the run

@dataclass
class RunOutcome:
    """What :func:`run_training` returns: the run's typed result (None on ranks other than 0), and the
    trained model, tokenizer, data and trainer for a caller that continues in-process (all None when the
    run had finished before and nothing was trained)."""

    result: RunResult | None
    model: MultiTaskModel | None = None
    tokenizer: Any = None
    data: dict[str, TaskData] | None = None
    trainer: Trainer | None = None


def run_training(config: TrainConfig, on_step: StepCallback | None = None) -> RunOutcome:
    """Train as ``config`` says and write ``metrics.json``, ``results.json``, ``config.yaml``, ``model/``.

    With ``config.tickets.mask`` the encoder is gated by that mask file (shared, or per task); with
    ``config.tickets.score_importance`` the trained model is scored and masks are cut (:mod:`mtl.gating`).
    With ``config.output.resume`` the run continues from ``OUTPUT/checkpoint.pt``. Every input is checked
    before the first file is written. Under torchrun every process calls this; rank 0 writes.
    ``on_step(progress, plan)`` is called after every optimizer step (a study shows it as progress).
    """
    with (distributed.session(config.runtime.device) as (dist, device), deterministic_algorithms(config.runtime.deterministic),
          torch_threads(config.runtime.num_threads)):
        return _run(config, dist, device, on_step)


def _run(config: TrainConfig, dist: Dist, device: torch.device, on_step: StepCallback | None) -> RunOutcome:
    say = print if dist.is_main else (lambda *args, **kwargs: None)
    out = check_output_dir(config.output.output_dir)
    config.tickets.check_files()
    _, tasks = resolve_tasks(config)
    check_model_name(config.model.name)
    check_data_files(tasks, config)
    mode, checkpoint = resume_point(out, config, dist)
    if mode == "complete":
        say(f"nothing to resume: {out} holds a finished run ({out / 'metrics.json'})")
        return RunOutcome(RunDir(out).result() if dist.is_main else None)
    model_id = model_identity(config.model.name)  # the weights the run starts from, before it reads them
    model, tokenizer = build_model(config, tasks)
    check_max_seq_length(model.encoder, config.data.max_seq_length, config.model.name)
    check_arch_support(model.encoder, config.tickets)
    weight_mask = apply_run_weight_mask(model, config)  # checked here, before any file is written
    data = load_task_data(tasks, tokenizer, config)
    before_batch, mask_info = None, None
    if config.tickets.mask:
        before_batch, mask_info = mask_gating(model, Path(config.tickets.mask).expanduser(), [t.name for t in tasks])
    pad_id = tokenizer.pad_token_id or 0
    reporters = open_reporters(config.runtime.report_to if dist.is_main else [], out,
                               purge_step=checkpoint["progress"]["opt_step"] + 1 if checkpoint else None)
    trainer = Trainer(model, data, config, out, pad_id=pad_id, before_batch=before_batch, on_step=on_step, dist=dist,
                      device=device, log_sinks=reporters)
    # every input has been checked: from here on, files are written (by rank 0)
    if dist.is_main:
        prepare_output_dir(config.output.output_dir)
        remove_temporaries(out)
        if checkpoint is None:
            clear_previous_run(out)
            save_config(config, out / "config.yaml")
    note = attention_note(model.encoder)  # a model without SDPA attention: say which attention it runs
    if note:
        say(note)
    if mode == "resume":
        say(f"resuming {out} from optimizer step {checkpoint['progress']['opt_step']} "
            f"(epoch {checkpoint['progress']['epoch'] + 1})")
    elif config.output.resume:
        say(f"no checkpoint in {out}: starting from the beginning")
    if mask_info is not None:
        say(f"training with mask {config.tickets.mask}: {mask_info['mask_mode']}, sparsity {mask_info['sparsity']:.3f}")
    if weight_mask is not None:
        say(f"training with weight mask {config.tickets.weight_mask}: {weight_mask.meta.get('method', 'custom')}, "
            f"{weight_mask.kept}/{weight_mask.total} weights kept (sparsity {weight_mask.sparsity:.3f})")
    start = time.time()
    summary = trainer.train(checkpoint)
    close_reporters(reporters)
    checkpoint = None  # free its tensors
    if mask_info is not None:
        summary["mask"] = mask_info
    summary.update(finish_weight_masks(model, config, out, weight_mask, dist.is_main))
    if config.tickets.score_importance:
        t0 = time.time()
        imp = score_model(model, data, config, pad_id, trainer.device, trainer.autocast, dist=dist)
        paths = write_tickets(imp, model.encoder, config, out) if dist.is_main else []
        summary["scoring"] = {"seconds": round(time.time() - t0, 1), "batches": int(imp.meta["num_batches"]),
                              "masks": len(paths)}
        say(f"wrote {out / 'importance.safetensors'} and {len(paths)} masks in {out / 'masks'}")
    summary["wall_seconds"] = round(time.time() - start, 1)
    summary["data"] = {t: {"train": d.train.num_examples if d.train else 0, **{s: v.num_examples for s, v in d.dev.items()},
                           **({"holdout": d.holdout.num_examples} if d.holdout is not None else {})}
                       for t, d in data.items()}
    summary["machine"] = {**machine_info(), "processes": dist.world_size}
    summary["model"] = model_id
    if dist.is_main:
        write_results(out, summary, model, tokenizer, config)
    say(f"done in {summary['wall_seconds']}s (best epoch {summary['best_epoch']}): {format_metrics(summary['metrics'])}")
    say(f"wrote {out / 'metrics.json'}")
    result = RunResult.from_dict(summary) if dist.is_main else None
    return RunOutcome(result, model, tokenizer, data, trainer)


def apply_run_weight_mask(model: MultiTaskModel, config: TrainConfig) -> WeightMask | None:
    """``--weight-mask``: load the per-weight mask, check it fits the encoder and the
    ``--write-magnitude-masks`` sparsities, and hold its pruned weights at 0 (``masks.weight_mask``).
    The model was just built from the pre-trained weights, so training it rewinds the ticket.
    Returns the :class:`masks.weight_mask.WeightMask`, or None without ``--weight-mask``."""
    if not config.tickets.weight_mask:
        check_after(None, config.tickets.write_magnitude_masks)
        return None
    mask = load_weight_mask(Path(config.tickets.weight_mask).expanduser(), model.encoder)
    check_after(mask, config.tickets.write_magnitude_masks)
    apply_weight_mask(model.encoder, mask)
    return mask


def finish_weight_masks(model: MultiTaskModel, config: TrainConfig, out: Path, weight_mask: WeightMask | None,
                        write: bool) -> dict:
    """After training: bake the weight mask into the weights (pruned entries stored as 0, so the model
    saves and scores as a plain one) and write ``--write-magnitude-masks``. Returns what
    ``results.json`` records (``weight_mask``, ``magnitude_masks``)."""
    record: dict = {}
    if weight_mask is not None:
        remove_weight_mask(model.encoder)
        record["weight_mask"] = describe(weight_mask, config.tickets.weight_mask)
    if config.tickets.write_magnitude_masks:
        paths = write_magnitude_masks(model.encoder, config.tickets.write_magnitude_masks, out, previous=weight_mask,
                                      include=config.tickets.weight_mask_include,
                                      meta={"source": str(out), "model": config.model.name, "seed": str(config.optim.seed),
                                            "tasks": ",".join(config.data.tasks)}) if write else []
        record["magnitude_masks"] = [str(p) for p in paths]
    return record


def span_settings(config: TrainConfig) -> dict:
    """What ``model.json`` records for span tasks, so ``mtl-predict`` cuts windows and reads answers as the run did."""
    return {"doc_stride": config.data.doc_stride, "max_answer_length": config.eval.max_answer_length,
            "null_threshold": config.eval.null_threshold}


def write_results(out: Path, summary: dict, model: MultiTaskModel, tokenizer, config: TrainConfig) -> None:
    """The run's final artifacts, ``metrics.json`` last (its presence means the run finished), then the
    checkpoint is removed."""
    run = RunDir(out)
    if config.output.save_model:
        card = run_card(config, list(model.tasks.values()), summary, model.encoder)
        save_multitask_model(model, tokenizer, run.model_dir, mask=config.tickets.mask, card=card,
                             extra={"model": config.model.name, "max_seq_length": config.data.max_seq_length,
                                    **span_settings(config)})
    atomic_write_json(run.results_path, summary)
    atomic_write_json(run.metrics_path, summary["metrics"])
    run.checkpoint_path.unlink(missing_ok=True)


def ensure_run(config: TrainConfig, *, needs: Sequence[Path] = (), tag: str = "run",
               say: Callable[[str], None] = print, on_step: StepCallback | None = None) -> RunResult:
    """The result of the run ``config`` describes, training it only if its folder does not hold it finished.

    - finished (``metrics.json`` and ``results.json``, and every file in ``needs``): the run must be the
      one ``config`` asks for (:meth:`mtl.rundir.RunDir.check_matches`, a UserError otherwise); it is
      read back, not retrained;
    - a checkpoint: the run continues from it (a checkpoint made with other options is a UserError);
    - otherwise (new, or finished without a file it must have written): it is trained from the start.

    Prints one line, ``[tag] NAME: finished, skipped`` or ``[tag] NAME`` (``(resuming)``) before training.
    """
    run = RunDir(config.output.output_dir)
    if run.finished and all(Path(p).is_file() for p in needs):
        run.check_matches(config)
        say(f"[{tag}] {run.name}: finished, skipped")
        return run.result()
    resume = run.has_checkpoint and not run.finished
    say(f"[{tag}] {run.name}{' (resuming)' if resume else ''}")
    result = run_training(config.replace(resume=resume), on_step=on_step).result
    missing = [str(p) for p in needs if not Path(p).is_file()]
    if missing:
        raise UserError(f"run {run.path} did not write {missing[0]}")
    assert result is not None  # studies run in one process (rank 0)
    return result
