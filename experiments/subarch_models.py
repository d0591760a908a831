"""The model steps of a sub-architecture study: the chosen architecture extracted, distilled, the matched
ticket, and the speed measurement of the table.

- :func:`extracted_step`: the chosen architecture cut from the teacher (``models/extracted``), no training;
- :func:`distilled_step`: the same, distilled on the corpus for ``distill.steps`` steps on the GPU when there is
  one (``distill/``: loss log, summary, loss curve; resumable from its checkpoint), saved as ``models/distilled``;
- :func:`ticket_step`: the union of the tasks' winning tickets with the chosen architecture's encoder
  parameter count (:func:`masks.matched_ticket.matched_union`), or ``ticket.mask`` as it is, compacted out of
  the pre-trained teacher (``models/ticket``; fine-tuning it rewinds the ticket); ``models/ticket_sized``: the
  same union with no head minimum per layer, which can shrink to the chosen architecture's size;
- :func:`latency_step`: every model shape of the table against the teacher, paired, at each batch size
  (``latency.json``, with their parameter counts); the chosen architecture is timed once, as the extracted model,
  so the timing waits for no distillation. A row added to a finished study times every model again.

A model step does nothing when its model directory is complete, or when nothing still needs the model
(every run fine-tuned from it has finished, and the speed was measured): a study continued from a results
folder on a new machine rebuilds no model it does not need.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from basics.errors import UserError
from basics.io import atomic_write_json
from experiments.plots import _save, pyplot
from experiments.subarch_config import SubarchStudy, timed_rows
from experiments.subarch_files import StudyFiles, read_json, study_texts
from experiments.subarch_search import chosen_arch, encoder_costs, measure, selection_of
from masks.arch import shape_of
from masks.auto_classes import register_auto_classes
from masks.compact import compact_encoder
from masks.cost import EncoderSize, torch_threads
from masks.importance import load_importance
from masks.mask import load_mask, save_mask
from masks.matched_ticket import layer_params, matched_union
from masks.subarch import Selection, mask_units
from mtl.corpus import TokenizedCorpus
from mtl.distill import Distiller, read_log
from mtl.distributed import pick_device
from mtl.model import load_encoder
from mtl.teacher import Student, Teacher, is_student_dir, load_teacher, make_student, read_student_info, save_student

TICKET_FILE = "ticket.json"


def not_needed(needed_by: Sequence[str]) -> bool:
    """True when every file in ``needed_by`` (the outputs that use a model) exists already."""
    return bool(needed_by) and all(Path(p).is_file() for p in needed_by)


def _ready(model_dir: Path, arch_name: str) -> bool:
    if not is_student_dir(model_dir):
        return False
    if read_student_info(model_dir).get("arch") != arch_name:
        raise UserError(f"{model_dir} holds {read_student_info(model_dir).get('arch')}, but the search now chooses "
                        f"{arch_name}; delete {model_dir.parent} (and the runs fine-tuned from it) to rebuild")
    return True


def _student_step(study: SubarchStudy, row: str, needed_by: Sequence[str], threads: int | None, distil: bool) -> None:
    """Build the chosen architecture's ``row`` model from the teacher's weights; with ``distil``, distil it
    first. Nothing to do when the model is there for the same architecture, or nothing needs it."""
    files, arch = StudyFiles(study.out), chosen_arch(study)
    if _ready(files.model(row), arch.name) or not_needed(needed_by):
        print(f"{row}: nothing to do", flush=True)
        return
    with torch_threads(threads):
        teacher = load_teacher(study.teacher)
        student = make_student(teacher, selection_of(study, arch, teacher), {"row": row})
        info = {"teacher": study.teacher, "distilled": distil}
        if distil:
            info.update(_distil(study, teacher, student, files.distill_dir, f"Distillation of {arch.name} from {study.teacher}"))
        save_student(student, teacher.tokenizer, files.model(row), info)
    print(f"{row}: {arch.name} -> {files.model(row)}", flush=True)


def _distil(study: SubarchStudy, teacher: Teacher, student: Student, out_dir: Path, title: str) -> dict[str, Any]:
    """Distil ``student`` from ``teacher`` on the study's corpus (``distill``), logging to ``out_dir`` (resumes
    from its checkpoint); the held-out losses for the model's ``subarch.json``."""
    train, heldout = study_texts(study)
    tok, length = teacher.tokenizer, study.corpus.max_seq_length
    summary = Distiller(teacher, student, TokenizedCorpus.of(tok, train, length), TokenizedCorpus.of(tok, heldout, length),
                        study.distill, out_dir, say=lambda line: print(line, flush=True), device=pick_device("auto")).run()
    plot_curve(out_dir, title)
    return {"heldout": summary["heldout"]["loss"], "heldout_before": summary["heldout_before"]["loss"],
            "steps": summary["steps"]}


def extracted_step(study: SubarchStudy, needed_by: Sequence[str] = (), threads: int | None = 1) -> None:
    """The chosen architecture sliced from the teacher, not distilled (the table's control row)."""
    _student_step(study, "extracted", needed_by, threads, distil=False)


def distilled_step(study: SubarchStudy, needed_by: Sequence[str] = (), threads: int | None = 1) -> None:
    """The chosen architecture sliced from the teacher and distilled on the study's corpus."""
    _student_step(study, "distilled", needed_by, threads, distil=True)


def ticket_distilled_step(study: SubarchStudy, needed_by: Sequence[str] = (), threads: int | None = 1) -> None:
    """``models/ticket_distilled``: the ``ticket`` row's heads and FFN neurons (its mask) extracted from the teacher
    as a sub-architecture with every layer and hidden dimension and its own head and neuron count per layer
    (:meth:`masks.subarch.Selection.of_mask`; before distillation it is the ticket row's model), then distilled as
    the ``distilled`` row is (``distill_ticket/``)."""
    files = StudyFiles(study.out)
    model_dir, mask_file = files.model("ticket_distilled"), files.ticket_dir("ticket") / "mask.safetensors"
    if not mask_file.is_file():
        raise UserError(f"ticket_distilled distils the ticket row's units: {mask_file} is not there (models/ticket)")
    mask = load_mask(mask_file)
    if is_student_dir(model_dir):
        held = Selection.from_dict(read_student_info(model_dir)["selection"])
        if (held.heads, held.neurons) != mask_units(mask):
            raise UserError(f"{model_dir} holds other units than the ticket's mask {mask_file}; delete it (and the "
                            "runs fine-tuned from it) to rebuild")
        print("ticket_distilled: nothing to do", flush=True)
        return
    if not_needed(needed_by):
        print("ticket_distilled: nothing to do", flush=True)
        return
    with torch_threads(threads):
        teacher = load_teacher(study.teacher)
        shape = shape_of(teacher.encoder)
        selection = Selection.of_mask(mask, shape)  # refuses a mask of another shape
        student = make_student(teacher, selection, {"row": "ticket_distilled"})
        info = {"teacher": study.teacher, "distilled": True, "ticket_mask": str(mask_file),
                **_distil(study, teacher, student, files.ticket_distill_dir,
                          f"Distillation of the ticket's units ({selection.name}) from {study.teacher}")}
        save_student(student, teacher.tokenizer, model_dir, info)
    print(f"ticket_distilled: {selection.name} -> {model_dir}", flush=True)


def plot_curve(run_dir: Path, title: str) -> Path:
    """``run_dir/curve.png``: the training loss and the held-out loss against the step."""
    log = read_log(run_dir)
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6, 4))
    train = [(r["step"], r["loss"]) for r in log if "loss" in r]
    held = [(r["step"], r["heldout"]["loss"]) for r in log if "heldout" in r]
    if train:
        ax.plot(*zip(*train, strict=True), label="training loss (mean over the logging window)")
    if held:
        ax.plot(*zip(*held, strict=True), marker="o", label="held-out loss")
    ax.set_xlabel("step")
    ax.set_ylabel("distillation loss")
    ax.set_title(title, fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    _save(fig, Path(run_dir) / "curve.png")
    return Path(run_dir) / "curve.png"


def ticket_step(study: SubarchStudy, needed_by: Sequence[str] = (), threads: int | None = 1,
                row: str = "ticket") -> None:
    """``models/ROW`` for a ticket row (``ticket``, ``ticket_sized``): the union of the tasks' winning tickets cut
    to the chosen architecture's encoder-layer parameters with the row's head minimum per layer, or the given
    ``ticket.mask``, compacted out of the pre-trained teacher."""
    files = StudyFiles(study.out)
    model_dir, ticket_dir = files.model(row), files.ticket_dir(row)
    if (model_dir / TICKET_FILE).is_file() or not_needed(needed_by):
        print(f"{row}: nothing to do", flush=True)
        return
    given = study.ticket.mask if row == "ticket" else None
    target = read_json(files.chosen)["params"]["layers"]
    with torch_threads(threads):
        encoder, tokenizer = load_encoder(study.teacher)
        teacher_size, shape = EncoderSize.of(encoder), shape_of(encoder)
        if given:
            mask = load_mask(given, expect_shape=shape)
        else:
            importances = {task: load_importance(path, expect_shape=shape) for task, path in study.ticket.importance.items()}
            mask = matched_union(importances, shape, teacher_size, target, study.ticket.min_heads(row))
        save_mask(mask, ticket_dir / "mask.safetensors")
        compact = compact_encoder(encoder.eval(), mask, {"ticket": "given mask" if given else "matched union"})
        register_auto_classes()
        model_dir.mkdir(parents=True, exist_ok=True)
        compact.save_pretrained(model_dir)
        tokenizer.save_pretrained(model_dir)
    info = {"source": given or study.ticket.importance, "target_layer_params": target,
            "min_heads_per_layer": None if given else study.ticket.min_heads(row),
            "layer_params": layer_params(mask, teacher_size), "heads_per_layer": [int(n) for n in mask.heads.sum(1)],
            "ffn_per_layer": [int(n) for n in mask.ffn.sum(1)], "source_sparsity": mask.meta.extra.get("source_sparsity")}
    atomic_write_json(ticket_dir / TICKET_FILE, info)
    atomic_write_json(model_dir / TICKET_FILE, info)
    print(f"{row}: {info['layer_params']:,} encoder-layer parameters (target {target:,}) -> {model_dir}", flush=True)


def latency_step(study: SubarchStudy, rows: Sequence[str], threads: int | None = 1) -> None:
    files = StudyFiles(study.out)
    timed = timed_rows(rows)
    if files.latency.is_file():
        missing = [r for r in timed if r not in read_json(files.latency)["speedup"]]
        if not missing:
            print(f"latency: {files.latency} exists", flush=True)
            return
        # speed-ups are ratios within one measurement: a row added later times every model again
        print(f"latency: {files.latency} lacks {', '.join(missing)}; timing every model again", flush=True)
    models = {"teacher": load_encoder(study.teacher)[0]}
    for row in timed:
        models[row] = load_encoder(str(files.model(row)))[0]
    lat = study.latency
    with torch_threads(threads):
        measured = measure(models, lat, threads)
    measured["models"] = {name: encoder_costs(EncoderSize.of(m), lat.seq_len) for name, m in models.items()}
    atomic_write_json(files.latency, measured)
    print(f"latency: speed-up {measured['speedup']}", flush=True)
