"""Where a sub-architecture study writes (:class:`StudyFiles`), and the text it reads (:func:`study_texts`).

    OUT/scores.safetensors, scores.json          teacher scores (layers, heads, neurons, hidden dims)
    OUT/teacher_cache/                           the teacher's outputs on the candidates' batches (large; not results)
    OUT/candidates/NAME.json                     one searched candidate: sizes, costs, latency, error (written
                                                 once both parts below are there)
    OUT/candidates/NAME/latency.json             its part measured on the CPU: sizes, costs, latency
    OUT/candidates/NAME/log.jsonl, distill.json  its limited distillation: the error (NAME/model: saved for a
                                                 reference task)
    OUT/search.json, search.md, frontier.png     frontier, ranking, the choice; OUT/chosen.json
    OUT/models/ROW/                              the rows' model directories (weights: never committed)
    OUT/distill/log.jsonl, distill.json, curve.png   distillation of the chosen architecture
    OUT/ticket/mask.safetensors, ticket.json     the matched union ticket (OUT/ticket_sized/: the one with no
                                                 head minimum per layer)
    OUT/finetune/ROW/TASK/lrLR-wuWU-seedS/       fine-tuning runs (train.py run directories)
    OUT/latency.json                             the table's speed measurement
    OUT/table.md, table.json                     the Bort-style table
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from experiments.subarch_config import SubarchStudy, timed_rows
from mtl.corpus import glue_sentences, read_text_files, split_heldout, subsample


@dataclass(frozen=True)
class StudyFiles:
    out: Path

    @property
    def scores(self) -> Path:
        return self.out / "scores.safetensors"

    @property
    def scores_json(self) -> Path:
        return self.out / "scores.json"

    @property
    def teacher_cache(self) -> Path:
        return self.out / "teacher_cache"

    def candidate_json(self, name: str) -> Path:
        return self.out / "candidates" / f"{name}.json"

    def candidate_dir(self, name: str) -> Path:
        return self.out / "candidates" / name

    def candidate_latency(self, name: str) -> Path:
        return self.out / "candidates" / name / "latency.json"

    def candidate_distill(self, name: str) -> Path:
        return self.out / "candidates" / name / "distill.json"

    def reference_run(self, name: str) -> Path:
        return self.out / "candidates" / name / "reference"

    @property
    def search_json(self) -> Path:
        return self.out / "search.json"

    @property
    def search_md(self) -> Path:
        return self.out / "search.md"

    @property
    def frontier_png(self) -> Path:
        return self.out / "frontier.png"

    @property
    def chosen(self) -> Path:
        return self.out / "chosen.json"

    def model(self, row: str) -> Path:
        return self.out / "models" / row

    @property
    def distill_dir(self) -> Path:
        return self.out / "distill"

    @property
    def ticket_distill_dir(self) -> Path:
        """The ``ticket_distilled`` row's distillation (as :attr:`distill_dir` is the ``distilled`` row's)."""
        return self.out / "distill_ticket"

    def ticket_dir(self, row: str = "ticket") -> Path:
        """A ticket row's mask and ``ticket.json`` (``OUT/ticket``, ``OUT/ticket_sized``)."""
        return self.out / row

    def finetune_run(self, row: str, task: str, lr: float, warmup: float, seed: int) -> Path:
        return self.out / "finetune" / row / task / f"lr{lr:g}-wu{warmup:g}-seed{seed}"

    def chosen_run(self, row: str, task: str, seed: int) -> Path:
        """A seed that runs only the setting the sweep chose (``finetune.sweep_seeds``)."""
        return self.out / "finetune" / row / task / f"chosen-seed{seed}"

    @property
    def latency(self) -> Path:
        return self.out / "latency.json"

    @property
    def table_md(self) -> Path:
        return self.out / "table.md"

    @property
    def table_json(self) -> Path:
        return self.out / "table.json"


def progress(study: SubarchStudy, out: Path) -> list[tuple[str, int, int]]:
    """``(step, done, of)`` for each stage of the study, from the files under ``out`` (a results folder or the
    output directory): what a study that runs across sessions has finished so far."""
    files = StudyFiles(Path(out))
    rows, f = study.rows(), study.finetune
    finished_runs = [p for row in rows for p in (files.out / "finetune" / row).glob("*/*/results.json")]
    timed = read_json(files.latency)["speedup"] if files.latency.is_file() else {}
    return [("teacher scores", int(files.scores_json.is_file()), 1),
            ("search candidates", len(list((files.out / "candidates").glob("*.json"))), study.search.size()),
            ("selection (frontier, ranking, choice)", int(files.search_json.is_file()), 1),
            ("distillation pre-training of the chosen architecture",
             int((files.distill_dir / "distill.json").is_file()), int("distilled" in rows)),
            *([("distillation pre-training of the ticket's units", int((files.ticket_distill_dir / "distill.json")
                                                                       .is_file()), 1)] if "ticket_distilled" in rows
              else []),
            ("fine-tuning runs", len(finished_runs), len(rows) * len(f.tasks) * f.runs_per_row_and_task()),
            ("latency of the table's models", int(files.latency.is_file() and set(timed_rows(rows)) <= set(timed)), 1),
            ("table, every row complete", int(files.table_json.is_file() and all(
                r["average"] is not None for r in read_json(files.table_json)["rows"])), 1)]


def read_json(path: Path) -> Any:
    return json.loads(Path(path).read_text(encoding="utf-8"))


def study_texts(study: SubarchStudy) -> tuple[list[str], list[str]]:
    """``(train, heldout)`` texts: the corpus files, else the GLUE training sentences; fixed subset and split."""
    c = study.corpus
    if c.files:
        texts = read_text_files([Path(f).expanduser() for f in c.files])
    else:
        glue = study.glue_dir or os.environ.get("GLUE_DIR")
        texts = glue_sentences(Path(glue).expanduser() if glue else None, c.glue_tasks or None)
    return split_heldout(subsample(texts, c.max_texts, c.seed), c.heldout)
