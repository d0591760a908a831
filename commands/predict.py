"""Predict with a trained model on new data, or write the GLUE leaderboard files (``mtl-predict``).

    mtl-predict --model RUN_OR_MODEL_DIR --task T[,T2,...] --input FILE [--output FILE] [--batch-size N]
        [--probabilities] [--columns A[,B]] [--format tsv|csv|jsonl] [--precision fp32|auto|bf16]
    mtl-predict --model RUN_OR_MODEL_DIR --glue-test [--glue-dir DIR] --output DIR
    mtl-predict --model RUN_OR_MODEL_DIR --task squad --input dev-v1.1.json [--output predictions.json]
        [--eval-output eval.json] [--nbest-output nbest.json] [--null-odds-output null_odds.json]
        [--doc-stride N] [--max-answer-length N] [--null-threshold F]
    python -m commands.predict ...            (the same command)

MODEL: a train.py run directory (its model/), a saved or compacted model directory, or an ONNX export
(mtl-export: its directory, or model.int8.onnx in it), run in ONNX Runtime. FILE: TSV, CSV or JSONL
(by its name) with the task's input columns: a header (or JSONL keys) naming them, e.g. sentence1 and
sentence2 for RTE, or the layout of the task's dev file. The output (TSV on stdout without --output;
TSV, CSV or JSONL by its name) has one row per input row, in input order: index, the prediction (label
name, or score), with --probabilities each label's probability; several tasks give one column each.
Nothing is written when any input is bad.

Span tasks (SQuAD): the input is a SQuAD JSON file, the output the SQuAD prediction file, a JSON object
{question id: answer text} ("" = no answer). When the file holds gold answers, the official exact match and
F1 (v2.0: also on the answerable and unanswerable questions apart, and the best null threshold with its
scores) are printed, and written with --eval-output. --nbest-output writes each question's n-best candidates
(text, softmax probability, score, character span), --null-odds-output (v2.0) each question's null score minus
its best span's score: the --na-prob-file of the official evaluate-v2.0.py script.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from basics.cli import OneLineParser, run_main
from basics.errors import UserError
from basics.io import atomic_write_json
from mtl.glue_submission import read_test_files, submission_tasks, write_submission
from mtl.precision import PRECISIONS
from mtl.predict import (
    SpanSettings,
    load_predictor,
    output_format,
    predict_spans,
    predict_task,
    prediction_columns,
    progress_bar,
    render_table,
    resolve_task,
    with_input_names,
    write_table,
)
from mtl.run import torch_threads
from tasks.inputs import read_inputs
from tasks.registry import default_registry
from tasks.score import squad_version
from tasks.squad import gold_answers_by_id, read_squad_file
from tasks.squad_metrics import best_thresholds, squad_evaluate
from tasks.task_def import FORMATS, TaskDef

SPAN_OUTPUT = ".json"  # span tasks write the SQuAD prediction file


def parser() -> OneLineParser:
    p = OneLineParser(prog="mtl-predict", description=__doc__.splitlines()[0],
                      formatter_class=argparse.RawDescriptionHelpFormatter, epilog="\n".join(__doc__.splitlines()[2:]))
    p.add_argument("--model", type=Path, required=True, help="run directory, model directory, or ONNX export")
    p.add_argument("--task", default=None, help="task(s) to predict, comma-separated (GLUE aliases work: SST-2)")
    p.add_argument("--input", type=Path, default=None, help="TSV, CSV or JSONL file of inputs")
    p.add_argument("--output", type=Path, default=None,
                   help="predictions file (.tsv, .csv, .jsonl; default: TSV on stdout); with --glue-test a directory")
    p.add_argument("--batch-size", type=int, default=128, help="rows per forward pass (train.py's --eval-batch-size)")
    p.add_argument("--probabilities", action="store_true", help="also write every label's probability")
    p.add_argument("--columns", default=None, help="input column names (header fields / JSONL keys) text_a[,text_b], "
                                                   "instead of the task's")
    p.add_argument("--format", default=None, choices=FORMATS, help="input format (default: from the file name)")
    p.add_argument("--precision", default="fp32", choices=PRECISIONS.names(),
                   help="PyTorch models: fp32, or the run's precision (auto: bf16 autocast on CPUs with native bf16, "
                        "what train.py evaluates with by default)")
    p.add_argument("--max-seq-length", type=int, default=None, help="truncate inputs (default: the run's)")
    p.add_argument("--device", default="auto", help="PyTorch models: auto, cpu, cuda, cuda:N")
    p.add_argument("--num-threads", type=int, default=None, help="CPU threads (default: all cores)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--glue-test", action="store_true", help="write the GLUE leaderboard files of the model's tasks "
                                                             "from each task's test.tsv into --output DIR")
    p.add_argument("--glue-dir", type=Path, default=None, help="GLUE folder for --glue-test (default: $GLUE_DIR)")
    p.add_argument("--eval-output", type=Path, default=None,
                   help="span tasks: write the official SQuAD evaluation of a labelled input file here (JSON)")
    p.add_argument("--nbest-output", type=Path, default=None,
                   help="span tasks: write each question's n-best candidates here (JSON)")
    p.add_argument("--null-odds-output", type=Path, default=None,
                   help="span tasks with no-answer questions: write each question's null odds here (JSON; the "
                        "official v2.0 script's --na-prob-file)")
    p.add_argument("--doc-stride", type=int, default=None, help="span tasks: window overlap (default: the run's)")
    p.add_argument("--max-answer-length", type=int, default=None, help="span tasks: longest answer in tokens "
                                                                        "(default: the run's)")
    p.add_argument("--null-threshold", type=float, default=None,
                   help="span tasks with no-answer questions: answer nothing when the null score beats the best span "
                        "by more than this (default: the run's)")
    return p


def check_args(args: argparse.Namespace) -> None:
    if args.batch_size < 1:
        raise UserError(f"--batch-size must be >= 1, got {args.batch_size}")
    if args.max_seq_length is not None and args.max_seq_length < 2:
        raise UserError(f"--max-seq-length must be >= 2, got {args.max_seq_length}")
    if args.glue_test:
        if args.output is None:
            raise UserError("--glue-test needs --output DIR (the folder for the leaderboard files)")
        if args.input is not None:
            raise UserError("--glue-test reads each task's test file; drop --input")
        if args.output.exists() and not args.output.is_dir():
            raise UserError(f"--output {args.output} is a file; --glue-test writes a folder of files")
        return
    if args.task is None or args.input is None:
        raise UserError("give --task T and --input FILE (or --glue-test --output DIR)")
    for flag in ("doc_stride", "max_answer_length"):
        if getattr(args, flag) is not None and getattr(args, flag) < 1:
            raise UserError(f"--{flag.replace('_', '-')} must be >= 1, got {getattr(args, flag)}")
    if args.output is not None:
        if args.output.suffix.lower() != SPAN_OUTPUT:
            output_format(args.output)
        if args.output.resolve() == args.input.resolve():
            raise UserError(f"--output {args.output} is the input file; choose another name")
        if args.output.is_dir():
            raise UserError(f"--output {args.output} is a directory; give a file name (.tsv, .csv, .jsonl)")
        if not args.output.parent.resolve().is_dir():
            raise UserError(f"--output {args.output}: folder {args.output.parent} does not exist")


def predict_file(args: argparse.Namespace, predictor) -> None:
    tasks = [with_input_names(resolve_task(predictor, name)) for name in args.task.split(",") if name.strip()]
    if not tasks:
        raise UserError("--task is empty; give one or more task names")
    spans = [t.name for t in tasks if t.head == "span"]
    if spans:
        if len(tasks) > 1:
            raise UserError(f"span task {spans[0]} reads a SQuAD file of its own: predict it alone (--task {spans[0]})")
        return predict_squad(args, predictor, tasks[0])
    for flag in ("eval_output", "nbest_output", "null_odds_output"):
        if getattr(args, flag) is not None:
            raise UserError(f"--{flag.replace('_', '-')} is for span tasks (SQuAD)")
    if args.output is not None and args.output.suffix.lower() == SPAN_OUTPUT:
        raise UserError(f"--output {args.output}: .json is the SQuAD prediction file of span tasks; name it .tsv, "
                        ".csv or .jsonl")
    columns = [c.strip() for c in args.columns.split(",")] if args.columns else []
    rows = [read_inputs(task, args.input, fmt=args.format, columns=columns) for task in tasks]  # all checked first
    bar = progress_bar(sum(len(r) for r in rows), enabled=not args.no_progress)
    with bar:
        results = [predict_task(predictor, task, r.examples, args.batch_size, bar.update) for task, r in zip(tasks, rows)]
    table = prediction_columns(results, args.probabilities)
    if args.output is None:
        sys.stdout.write(render_table(*table, "tsv"))
    else:
        write_table(args.output, *table)
        print(f"wrote {len(table[1])} predictions to {args.output}", file=sys.stderr)


def predict_squad(args: argparse.Namespace, predictor, task: TaskDef) -> None:
    """A span task: SQuAD JSON in, the SQuAD prediction file {id: answer} out; evaluated when the input is labelled."""
    for flag in ("output", "eval_output", "nbest_output", "null_odds_output"):
        path = getattr(args, flag)
        if path is not None and path.suffix.lower() != SPAN_OUTPUT:
            raise UserError(f"--{flag.replace('_', '-')} {path}: span task {task.name} writes JSON; name it *{SPAN_OUTPUT}")
    version = squad_version(task)
    if args.null_odds_output is not None and version != 2:
        raise UserError(f"--null-odds-output: task {task.name} has no unanswerable questions (SQuAD v1.1), so no "
                        "null odds")
    examples = read_squad_file(args.input, task, labelled=False)
    settings = SpanSettings.of_model(args.model, args.doc_stride, args.max_answer_length, args.null_threshold)
    labelled = all(e.labelled for e in examples)
    if args.eval_output is not None and not labelled:
        raise UserError(f"--eval-output: {args.input} has questions without gold answers; nothing to evaluate")
    with progress_bar(None, enabled=not args.no_progress, desc="predict") as bar:  # counts windows
        predictions = predict_spans(predictor, task, examples, settings, args.batch_size, bar.update)
    answers = {qid: p.answer for qid, p in predictions.items()}
    odds = {qid: p.null_odds for qid, p in predictions.items()} if version == 2 else None
    if args.output is None:
        sys.stdout.write(json.dumps(answers, ensure_ascii=False, indent=1) + "\n")
    else:
        atomic_write_json(args.output, answers)
        print(f"wrote {len(answers)} answers to {args.output}", file=sys.stderr)
    if args.nbest_output is not None:
        atomic_write_json(args.nbest_output, {qid: [e.to_json() for e in p.nbest] for qid, p in predictions.items()})
        print(f"wrote the n-best candidates of {len(predictions)} questions to {args.nbest_output}", file=sys.stderr)
    if args.null_odds_output is not None:
        atomic_write_json(args.null_odds_output, odds)
        print(f"wrote the null odds of {len(predictions)} questions to {args.null_odds_output}", file=sys.stderr)
    if labelled:
        golds = gold_answers_by_id(examples)
        scores = squad_evaluate(answers, golds, version=version)  # the scores of these answers, as train.py's
        if odds is not None:  # and what the official script adds given the null odds (--na-prob-file)
            scores.update(best_thresholds(answers, golds, odds))
        print(json.dumps(scores), file=sys.stderr)
        if args.eval_output is not None:
            atomic_write_json(args.eval_output, scores)


def glue_test(args: argparse.Namespace, predictor) -> None:
    registry = default_registry()
    tasks, missing = submission_tasks(predictor.tasks, registry)
    if args.task:
        wanted = {registry.get(n).name for n in args.task.split(",") if n.strip()}
        tasks = [t for t in tasks if t.name in wanted]
    if not tasks:
        raise UserError(f"the model has no GLUE task with leaderboard files (its tasks: {', '.join(predictor.tasks)})")
    glue_dir = args.glue_dir or (Path(os.environ["GLUE_DIR"]) if os.environ.get("GLUE_DIR") else None)
    files = read_test_files(tasks, glue_dir)  # every test file read and checked before the model runs
    bar = progress_bar(sum(len(f.rows) for f in files), enabled=not args.no_progress)
    with bar:
        paths = write_submission(predictor, files, args.output, args.batch_size, bar.update)
    for path, f in zip(paths, files):
        print(f"wrote {path} ({len(f.rows)} rows, task {f.task.name})", file=sys.stderr)
    if missing:
        print(f"not written (the model has no head for them): {', '.join(missing)}", file=sys.stderr)


def main(argv: Sequence[str] | None = None) -> int:
    def go() -> None:
        args = parser().parse_args(argv)
        check_args(args)
        with torch_threads(args.num_threads):
            predictor = load_predictor(args.model, precision=args.precision, max_length=args.max_seq_length,
                                       device=args.device, threads=args.num_threads)
            (glue_test if args.glue_test else predict_file)(args, predictor)

    return run_main(go)


if __name__ == "__main__":
    sys.exit(main())
