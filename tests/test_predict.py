"""mtl-predict: predictions equal the trainer's dev predictions; output layout; bad input is one line, exit 2, no file."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
import torch
from transformers import BertConfig, BertModel

from basics.cli import config_parser, parse_config
from commands.predict import main
from masks.arch import shape_of
from masks.mask import Mask, save_task_masks
from mtl.config import TrainConfig
from mtl.model import MultiTaskModel, load_encoder, save_multitask_model
from mtl.run import run_training
from tasks.registry import default_registry
from tests.conftest import tiny_bert
from tests.tiny_run import tiny_setup

REGISTRY = default_registry()


def read_tsv(path: Path) -> list[dict[str, str]]:
    with path.open(encoding="utf-8", newline="") as f:
        return list(csv.DictReader(f, delimiter="\t", quoting=csv.QUOTE_NONE))


def train_tiny(root: Path, *extra: str):
    """A tiny two-task run (tinysent, tinysim), model saved; returns (run dir, RunOutcome)."""
    args = [a for a in tiny_setup(root) if a != "--no-save-model"]
    argv = [*args, "--epochs", "2", "--output-dir", str(root / "run"), *extra]
    config, _ = parse_config(config_parser("train.py", "", TrainConfig), TrainConfig, argv)
    return root / "run", run_training(config)


def trainer_dev_predictions(outcome, task: str) -> list[str]:
    """What the trainer predicted on the task's dev split, as mtl-predict writes it."""
    outcome.model.eval()  # as Trainer.evaluate does
    outcome.trainer.before_batch(task)
    values = outcome.trainer.predict(task, outcome.data[task].dev["dev"])
    definition = outcome.model.tasks[task]
    if definition.head == "regression":
        return [f"{float(v):.6f}" for v in values]
    return [definition.labels[int(v)] for v in values]


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_predictions_equal_the_trainers_dev_predictions(precision, tmp_path, capsys):
    run, outcome = train_tiny(tmp_path, "--precision", precision)
    for task in ("tinysent", "tinysim"):
        out = tmp_path / f"{task}.tsv"
        code = main(["--model", str(run), "--task", task, "--input", str(tmp_path / "data" / task / "dev.tsv"),
                     "--output", str(out), "--batch-size", "16", "--precision", precision, "--no-progress"])
        assert code == 0, capsys.readouterr().err
        rows = read_tsv(out)
        assert [r["index"] for r in rows] == [str(i) for i in range(40)]  # input order, every row
        assert [r["prediction"] for r in rows] == trainer_dev_predictions(outcome, task)


def test_a_model_trained_with_per_task_masks_predicts_gated_as_it_was_trained(tmp_path, capsys):
    shape = shape_of(tiny_bert(vocab_size=23))
    g = torch.Generator().manual_seed(0)
    masks = {t: Mask(torch.rand(shape.num_layers, shape.num_heads, generator=g) < 0.6,
                     torch.rand(shape.num_layers, shape.intermediate, generator=g) < 0.5)
             for t in ("tinysent", "tinysim")}
    save_task_masks(masks, tmp_path / "per_task.safetensors")
    run, outcome = train_tiny(tmp_path, "--mask", str(tmp_path / "per_task.safetensors"))
    assert (run / "model" / "mask.safetensors").is_file()
    for task in ("tinysent", "tinysim"):
        out = tmp_path / f"{task}.jsonl"
        code = main(["--model", str(run / "model"), "--task", task, "--output", str(out), "--batch-size", "16",
                     "--input", str(tmp_path / "data" / task / "dev.tsv"), "--no-progress"])
        assert code == 0, capsys.readouterr().err
        got = [json.loads(line)["prediction"] for line in out.read_text().splitlines()]
        want = trainer_dev_predictions(outcome, task)
        assert [f"{v:.6f}" if isinstance(v, float) else v for v in got] == want


# ---------------------------------------------------------------- a GLUE-task model (tiny BERT, MiniLM tokenizer)

GLUE_TASKS = ("cola", "sst2", "mrpc", "stsb", "rte", "wnli")


@pytest.fixture(scope="module")
def glue_model(tmp_path_factory) -> Path:
    """A saved model with random weights and a head for each GLUE task whose test file is on disk."""
    _, tokenizer = load_encoder("minilm")
    torch.manual_seed(0)
    config = BertConfig(vocab_size=tokenizer.vocab_size, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                        intermediate_size=37, max_position_embeddings=128, attn_implementation="sdpa")
    model = MultiTaskModel(BertModel(config).eval(), [REGISTRY.get(t) for t in GLUE_TASKS]).eval()
    path = tmp_path_factory.mktemp("glue_model") / "model"
    save_multitask_model(model, tokenizer, path, extra={"model": "tiny", "max_seq_length": 64})
    return path


PAIRS = [{"sentence1": "A man plays a guitar.", "sentence2": "Someone makes music."},
         {"sentence1": "Profits fell sharply in the third quarter.", "sentence2": "Profits rose."},
         {"sentence1": "The cat sat.", "sentence2": "A cat is sitting on the mat in the kitchen."}]


def test_several_tasks_in_one_call_with_probabilities(glue_model, tmp_path, capsys):
    data = tmp_path / "pairs.jsonl"
    data.write_text("".join(json.dumps(p) + "\n" for p in PAIRS))
    out = tmp_path / "out.csv"
    code = main(["--model", str(glue_model), "--task", "RTE,sts-b", "--input", str(data), "--output", str(out),
                 "--probabilities", "--no-progress"])
    assert code == 0, capsys.readouterr().err
    with out.open() as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0]) == ["index", "rte", "rte_prob_entailment", "rte_prob_not_entailment", "stsb"]
    assert len(rows) == 3 and all(r["rte"] in ("entailment", "not_entailment") for r in rows)
    for r in rows:
        p = [float(r["rte_prob_entailment"]), float(r["rte_prob_not_entailment"])]
        assert abs(sum(p) - 1) < 1e-5 and r["rte"] == ("entailment" if p[0] >= p[1] else "not_entailment")
        float(r["stsb"])

    # the same rows reversed give the same predictions reversed (input order is kept)
    data.write_text("".join(json.dumps(p) + "\n" for p in PAIRS[::-1]))
    code = main(["--model", str(glue_model), "--task", "stsb", "--input", str(data), "--no-progress"])
    printed = capsys.readouterr().out.splitlines()
    assert code == 0 and printed[0] == "index\tprediction"
    assert [line.split("\t")[1] for line in printed[1:]] == [r["stsb"] for r in rows][::-1]


def test_glue_dev_file_as_it_is(glue_model, glue, tmp_path, capsys):
    """A GLUE dev file reads as it is: by its header (RTE), or by the task's layout (CoLA has no header)."""
    for task, file, n in (("rte", "RTE/dev.tsv", 277), ("cola", "CoLA/dev.tsv", 1043), ("mrpc", "MRPC/dev.tsv", 408)):
        out = tmp_path / f"{task}.tsv"
        code = main(["--model", str(glue_model), "--task", task, "--input", str(glue / file), "--output", str(out),
                     "--no-progress"])
        assert code == 0, capsys.readouterr().err
        assert len(read_tsv(out)) == n


BAD = {
    "missing column": ("in.tsv", "sentence_one\tsentence2\nA man.\tA woman.\n", "rte",
                       "header has no column(s) ['sentence1']"),
    "empty file": ("in.tsv", "", "rte", "no data rows"),
    "header only": ("in.jsonl", "\n\n", "rte", "no data rows"),
    "no head for the task": ("in.tsv", "sentence1\tsentence2\na\tb\n", "qnli", "no head for task 'qnli'"),
    "unknown task": ("in.tsv", "sentence1\tsentence2\na\tb\n", "nosuchtask", "no head for task 'nosuchtask'"),
    "extra field": ("in.tsv", "sentence1\tsentence2\na\tb\nc\td\te\n", "rte", "in.tsv:3: expected 2 columns, found 3"),
    "blank input": ("in.tsv", "sentence1\tsentence2\na\tb\nc\t \n", "rte", "in.tsv:3: missing text_b"),
    "invalid json": ("in.jsonl", '{"sentence1": "a", "sentence2": "b"}\n{"sentence1": "a",\n', "rte",
                     "in.jsonl:2: invalid JSON"),
    "missing json key": ("in.jsonl", '{"sentence1": "a"}\n', "rte", "in.jsonl:1: key 'sentence2' for text_b is missing"),
    "unknown format": ("in.txt", "sentence1\tsentence2\na\tb\n", "rte", "cannot tell the format"),
    "invalid utf-8": ("in.tsv", b"sentence1\tsentence2\n\xff\tb\n", "rte", "in.tsv:2: invalid UTF-8"),
}


@pytest.mark.parametrize("case", list(BAD))
def test_bad_input_is_one_line_exit_2_and_no_output(case, glue_model, tmp_path, capsys):
    name, content, task, fragment = BAD[case]
    data = tmp_path / name
    data.write_bytes(content if isinstance(content, bytes) else content.encode())
    out = tmp_path / "out.tsv"
    code = main(["--model", str(glue_model), "--task", task, "--input", str(data), "--output", str(out),
                 "--no-progress"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and err[0].startswith("error: ") and fragment in err[0], err
    assert not out.exists()


@pytest.mark.parametrize("argv, fragment", [
    (["--task", "rte"], "give --task T and --input FILE"),
    (["--glue-test"], "--glue-test needs --output DIR"),
    (["--task", "rte", "--input", "x.tsv", "--output", "out.txt"], "name it .tsv, .csv or .jsonl"),
    (["--task", "rte", "--input", "x.tsv", "--batch-size", "0"], "--batch-size must be >= 1"),
])
def test_bad_options_are_one_line(argv, fragment, glue_model, capsys):
    code = main(["--model", str(glue_model), *argv])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and fragment in err[0], err


def test_a_directory_without_a_model_is_one_line(tmp_path, capsys):
    code = main(["--model", str(tmp_path), "--task", "rte", "--input", str(tmp_path / "x.tsv")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "not a saved model" in err[0]


# ---------------------------------------------------------------- GLUE leaderboard files (real test files)

LEADERBOARD = {  # file -> (test file, rows, labels the leaderboard expects; None = a score)
    "CoLA.tsv": ("CoLA/test.tsv", 1063, {"0", "1"}),
    "SST-2.tsv": ("SST-2/test.tsv", 1821, {"0", "1"}),
    "MRPC.tsv": ("MRPC/test.tsv", 1725, {"0", "1"}),
    "STS-B.tsv": ("STS-B/test.tsv", 1379, None),
    "RTE.tsv": ("RTE/test.tsv", 3000, {"entailment", "not_entailment"}),
    "WNLI.tsv": ("WNLI/test.tsv", 146, {"0", "1"}),
}


def test_glue_submission_files_on_the_real_test_files(glue_model, glue, tmp_path, capsys):
    out = tmp_path / "submission"
    code = main(["--model", str(glue_model), "--glue-test", "--glue-dir", str(glue), "--output", str(out),
                 "--no-progress"])
    err = capsys.readouterr().err
    assert code == 0, err
    assert sorted(p.name for p in out.iterdir()) == sorted(LEADERBOARD)
    assert "not written (the model has no head for them): QQP.tsv, MNLI-m.tsv, MNLI-mm.tsv, AX.tsv, QNLI.tsv" in err
    for name, (test_file, n, labels) in LEADERBOARD.items():
        lines = (out / name).read_text().splitlines()
        assert lines[0] == "index\tprediction", name
        rows = [line.split("\t") for line in lines[1:]]
        assert len(rows) == n and all(len(r) == 2 for r in rows), name
        test_ids = [r["index"] for r in read_tsv(glue / test_file)]
        assert [r[0] for r in rows] == test_ids, name  # the test file's index, in its order
        if labels is None:
            assert all(len(r[1].split(".")[1]) == 3 and 0 <= abs(float(r[1])) < 100 for r in rows)
        else:
            assert {r[1] for r in rows} <= labels, name


def test_glue_submission_with_a_missing_test_file_writes_nothing(glue_model, glue, tmp_path, capsys):
    fake = tmp_path / "glue"
    for task in ("CoLA", "SST-2", "MRPC", "RTE", "WNLI"):  # no STS-B
        (fake / task).mkdir(parents=True)
        (fake / task / "test.tsv").write_bytes((glue / task / "test.tsv").read_bytes())
    out = tmp_path / "submission"
    code = main(["--model", str(glue_model), "--glue-test", "--glue-dir", str(fake), "--output", str(out),
                 "--no-progress"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "task 'stsb': test file for STS-B.tsv not found" in err[0]
    assert not out.exists()
