"""Bad input, case by case: exit status 2, one line ``error: ...`` on stderr, no traceback, no output written.

Each case runs the real train.py ``main`` on a tiny saved model, tiny user tasks and a fake GLUE folder;
two cases also run as a subprocess, where stray warnings or a traceback would show on stderr.
"""

import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from basics.errors import UserError
from basics.options import _base_type
from masks.arch import shape_of
from masks.importance import Importance, save_importance
from masks.mask import Mask, save_mask, save_task_masks
from mtl.config import TrainConfig
from tests.conftest import REPO, tiny_bert
from tests.tiny_run import save_tiny_model, write_tiny_tasks

RTE_HEAD = "index\tsentence1\tsentence2\tlabel"
STSB_HEAD = "index\tgenre\tfilename\tyear\told_index\tsource1\tsource2\tsentence1\tsentence2\tscore"


def stsb_row(i: int, score: str) -> str:
    return f"{i}\tmain-captions\tMSRvid\t2012test\t{i}\tnone\tnone\tthe film is good\tthe plot is fine\t{score}"


@dataclass
class World:
    root: Path
    model: Path
    task_def: Path
    glue: Path

    def common(self) -> list[str]:
        return ["--model", str(self.model), "--cache-dir", str(self.root / "cache"), "--no-progress",
                "--precision", "fp32", "--batch-size", "8", "--no-save-model", "--epochs", "1",
                "--max-seq-length", "64"]  # the tiny models have 64 positions

    def tiny(self) -> list[str]:
        return [*self.common(), "--task-def", str(self.task_def), "--tasks", "tinysent"]

    def glue_run(self, tasks: str, glue: Path | None = None) -> list[str]:
        return [*self.common(), "--tasks", tasks, "--glue-dir", str(glue or self.glue)]

    def bad_task(self, name: str, train: bytes, head: str = "classification") -> list[str]:
        """A one-task YAML whose train file holds ``train`` (the dev file is fine)."""
        folder = self.root / name
        folder.mkdir(exist_ok=True)
        (folder / "train.tsv").write_bytes(train)
        (folder / "dev.tsv").write_text("sentence\tlabel\nthe film is good\tpos\n" if head == "classification"
                                        else "sentence\tscore\nthe film is good\t1.0\n")
        labels = 'labels: ["neg", "pos"]\n    metrics: [accuracy]' if head == "classification" else "metrics: [pearson]"
        (folder / "tasks.yaml").write_text(
            f"tasks:\n  - name: {name}\n    head: {head}\n    {labels}\n"
            f"    files: {{train: train.tsv, dev: dev.tsv}}\n    text_a: 0\n    label: 1\n    num_columns: 2\n")
        return [*self.common(), "--task-def", str(folder / "tasks.yaml"), "--tasks", name]


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> World:
    root = tmp_path_factory.mktemp("bad_input")
    glue = root / "glue"
    for task, head, rows in (("RTE", RTE_HEAD, [f"{i}\tthe film\tthe plot\tentailment" for i in range(4)]),
                             ("STS-B", STSB_HEAD, [stsb_row(i, "2.5") for i in range(4)])):
        (glue / task).mkdir(parents=True)
        for split in ("train", "dev"):
            (glue / task / f"{split}.tsv").write_text("\n".join([head, *rows]) + "\n")
    return World(root, save_tiny_model(root / "model"), write_tiny_tasks(root / "data", n_train=16, n_dev=8), glue)


def glue_without(world: World, relative: str) -> Path:
    """A copy of the fake GLUE folder without one file."""
    copy = world.root / f"glue-without-{relative.replace('/', '-')}"
    if not copy.exists():
        for path in world.glue.rglob("*.tsv"):
            if path.relative_to(world.glue).as_posix() != relative:
                (copy / path.relative_to(world.glue)).parent.mkdir(parents=True, exist_ok=True)
                (copy / path.relative_to(world.glue)).write_bytes(path.read_bytes())
    return copy


def other_shape_mask(world: World) -> Path:
    path = world.root / "mask-3-layers.safetensors"
    save_mask(Mask.ones(shape_of(tiny_bert(num_hidden_layers=3)), kind="custom", tasks="tinysent"), path)
    return path


def tensorless_mask(world: World) -> Path:
    path = world.root / "not-a-mask.safetensors"
    save_file({"weights": torch.zeros(2, 2)}, str(path), metadata={"format": "mtl-tickets/mask"})
    return path


def importance_as_mask(world: World) -> Path:
    path = world.root / "importance.safetensors"
    shape = shape_of(tiny_bert())
    L, H, I = shape.num_layers, shape.num_heads, shape.intermediate
    save_importance(Importance(torch.ones(L, H), torch.ones(L, I), torch.ones(L, H), torch.ones(L, I),
                               torch.ones(L, 1)), path)
    return path


def tiny_family(world: World, arch: str) -> Path:
    """A saved tiny model of another family (``tests.tiny_run.save_tiny_model``), made once per module."""
    path = world.root / f"model-{arch}"
    return path if path.is_dir() else save_tiny_model(path, arch=arch)


def all_pruned_mask(world: World, per_task: bool = False) -> Path:
    """A mask for the tiny model that keeps no head and no FFN neuron (for one task of a per-task file)."""
    shape = shape_of(tiny_bert())
    empty = Mask(torch.zeros(shape.num_layers, shape.num_heads), torch.zeros(shape.num_layers, shape.intermediate),
                 {"shape": shape.describe(), "kind": "custom", "tasks": "tinysent"})
    path = world.root / f"all-pruned{'-per-task' if per_task else ''}.safetensors"
    if per_task:
        save_task_masks({"tinysent": empty, "tinysim": Mask.ones(shape)}, path)
    else:
        save_mask(empty, path)
    return path


def a_file(world: World) -> Path:
    path = world.root / "a-file"
    path.write_text("")
    return path


# (case, args from the world, what the one stderr line says)
CASES = [
    ("unknown task", lambda w: [*w.tiny(), "--tasks", "tinysent,nope"], "unknown task 'nope' (known tasks: cola"),
    ("model path missing", lambda w: [*w.tiny(), "--model", str(w.root / "no-such-model")],
     "model directory not found"),
    ("model dir without config.json", lambda w: [*w.tiny(), "--model", str(w.root / "data")],
     "not a model directory (no config.json in it)"),
    ("unknown hub model, offline", lambda w: [*w.tiny(), "--model", "no-such-org/no-such-model"],
     "could not load model 'no-such-org/no-such-model'"),
    ("GLUE dir missing", lambda w: w.glue_run("rte", w.root / "no-glue"), "GLUE directory not found"),
    ("one task's GLUE file missing", lambda w: w.glue_run("rte,stsb", glue_without(w, "STS-B/dev.tsv")),
     "task 'stsb': dev file not found"),
    ("empty file (header only)", lambda w: w.bad_task("headeronly", b"sentence\tlabel\n"), "no data rows"),
    ("empty file (0 bytes)", lambda w: w.bad_task("zerobytes", b""), "no data rows"),
    ("wrong column count", lambda w: w.bad_task("columns", b"sentence\tlabel\nthe film\tpos\nthe plot\tneg\textra\n"),
     "train.tsv:3: expected 2 columns, found 3"),
    ("label not in the label list", lambda w: w.bad_task("labels", b"sentence\tlabel\nthe film\tpos\nthe plot\tmaybe\n"),
     "train.tsv:3: label 'maybe' is not one of ['neg', 'pos']"),
    ("non-numeric score", lambda w: w.bad_task("scores", b"sentence\tscore\nthe film\t1.5\nthe plot\thigh\n",
                                                head="regression"),
     "train.tsv:3: score 'high' is not a number"),
    ("invalid UTF-8", lambda w: w.bad_task("utf8", b"sentence\tlabel\nthe film\tpos\nthe \xff plot\tneg\n"),
     "train.tsv:3: invalid UTF-8 (byte 0xff at column 5)"),
    ("sparsity 1", lambda w: [*w.tiny(), "--score-importance", "--sparsities", "0.5,1.0"],
     "sparsity must be in [0, 1), got 1.0"),
    ("sparsity negative", lambda w: [*w.tiny(), "--score-importance", "--ffn-sparsities", "-0.1", "--sparsities", "0.5"],
     "sparsity must be in [0, 1), got -0.1"),
    ("mask of another shape", lambda w: [*w.tiny(), "--mask", str(other_shape_mask(w))],
     "mask is for L=3,H=4,I=37 but model is L=2,H=4,I=37"),
    ("mask file without mask tensors", lambda w: [*w.tiny(), "--mask", str(tensorless_mask(w))],
     "is not a mask file: missing tensors ['heads', 'ffn']; it holds ['weights']"),
    ("importance file given as mask", lambda w: [*w.tiny(), "--mask", str(importance_as_mask(w))],
     "is a 'mtl-tickets/importance' file, not a mask file"),
    ("--max-steps with --epochs 0", lambda w: [*w.tiny(), "--epochs", "0", "--max-steps", "5"],
     "--max-steps 5 conflicts with --epochs 0"),
    ("--checkpoint-every without checkpoints", lambda w: [*w.tiny(), "--checkpoint-every", "5", "--no-save-checkpoints"],
     "--checkpoint-every conflicts with --no-save-checkpoints"),
    ("fp16 on CPU", lambda w: [*w.tiny(), "--precision", "fp16", "--device", "cpu"], "--precision fp16 needs CUDA"),
    ("output dir is a file", lambda w: [*w.tiny(), "--output-dir", str(a_file(w))], "is a file"),
    ("output dir under a file", lambda w: [*w.tiny(), "--output-dir", str(a_file(w) / "run")],
     "cannot be created: "),
    # issue 18
    ("--lr nan", lambda w: [*w.tiny(), "--lr", "nan"], "--lr must be a finite number, got nan"),
    ("--temperature inf", lambda w: [*w.tiny(), "--temperature", "inf"], "--temperature must be a finite number"),
    ("--max-seq-length above the model's", lambda w: [*w.tiny(), "--max-seq-length", "100000"],
     "--max-seq-length 100000 is more than the model takes (64 tokens"),
    ("--score-importance on an unsupported family", lambda w: [*w.tiny(), "--model", str(tiny_family(w, "ernie")),
                                                               "--score-importance", "--sparsities", "0.5"],
     "--score-importance: unsupported model_type 'ernie'"),
    ("--mask on an unsupported family", lambda w: [*w.tiny(), "--model", str(tiny_family(w, "ernie")),
                                                   "--mask", str(other_shape_mask(w))],
     "--mask: unsupported model_type 'ernie'"),
    ("--write-magnitude-masks on ALBERT", lambda w: [*w.tiny(), "--model", str(tiny_family(w, "albert")),
                                                     "--write-magnitude-masks", "0.5"],
     "per-weight masks: not supported for model_type 'albert'"),
    ("a task twice", lambda w: w.glue_run("rte,stsb,RTE"), "task 'rte' is given twice in --tasks (as 'rte' and 'RTE')"),
    ("all-pruned mask", lambda w: [*w.tiny(), "--mask", str(all_pruned_mask(w))],
     "prunes every head and every FFN neuron"),
    ("per-task mask with an all-pruned task", lambda w: [*w.tiny(), "--tasks", "tinysent,tinysim",
                                                         "--mask", str(all_pruned_mask(w, per_task=True))],
     "prunes every head and every FFN neuron (task tinysent)"),
    ("--epochs 0", lambda w: [*w.tiny(), "--epochs", "0"], "--epochs 0 trains nothing"),
]


@pytest.fixture
def offline_hub(monkeypatch):
    """Never ask the network for a model (CI sets HF_HUB_OFFLINE=1 too)."""
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)


@pytest.mark.parametrize("case,args,message", CASES, ids=[c[0] for c in CASES])
def test_bad_input_is_one_line_exit_2_and_writes_nothing(case, args, message, world, tmp_path, capsys, offline_hub):
    import train

    out = tmp_path / "out"
    argv = args(world)
    code = train.main(["--output-dir", str(out), *argv])  # a later --output-dir in argv wins
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert code == 2, captured.err
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], captured.err
    assert not out.exists()  # nothing written, not even the directory


@pytest.mark.skipif(hasattr(os, "geteuid") and os.geteuid() == 0, reason="root can write anywhere")
def test_unwritable_output_dir(world, tmp_path, capsys):
    import train

    locked = tmp_path / "locked"
    locked.mkdir(mode=0o500)
    assert train.main([*world.tiny(), "--output-dir", str(locked / "run")]) == 2
    assert "is not writable" in capsys.readouterr().err


def test_resume_with_another_config_changes_nothing(world, tmp_path, capsys):
    import train

    out = tmp_path / "run"
    assert train.main([*world.tiny(), "--output-dir", str(out)]) == 0
    before = {p.name: p.stat().st_mtime_ns for p in out.iterdir()}
    capsys.readouterr()
    assert train.main([*world.tiny(), "--output-dir", str(out), "--resume", "--seed", "2", "--batch-size", "4"]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and "(batch_size: 8 -> 4; seed: 1 -> 2)" in lines[0]
    assert {p.name: p.stat().st_mtime_ns for p in out.iterdir()} == before


@pytest.mark.parametrize("case", ["wrong column count", "mask of another shape"])
def test_bad_input_as_a_subprocess_prints_exactly_one_line(case, world, tmp_path):
    """The real process: no warning, progress bar or traceback besides the one line."""
    _, args, message = next(c for c in CASES if c[0] == case)
    out = tmp_path / "out"
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    r = subprocess.run([sys.executable, str(REPO / "train.py"), *args(world), "--output-dir", str(out)],
                       capture_output=True, text=True, cwd=REPO, env=env, timeout=900)
    assert r.returncode == 2
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], r.stderr
    assert not out.exists()


# ---------------------------------------------------------------- issue 18: beyond train.py's table

FLOAT_OPTIONS = [o.key for o in TrainConfig.options() if _base_type(o.annotation)[0] is float]


@pytest.mark.parametrize("value", ["nan", "inf", "-inf"])
@pytest.mark.parametrize("key", FLOAT_OPTIONS)
def test_every_float_option_refuses_nan_and_inf(key, value, tmp_path):
    """Every float option (found from the config classes, so a new one cannot slip through), as a flag and in YAML."""
    import train

    out = tmp_path / "out"
    with pytest.raises(UserError, match=f"--{key.replace('_', '-')} must be a finite number, got {value}"):
        TrainConfig.from_flat({key: [float(value)] if key in LIST_OPTIONS else float(value)})
    (tmp_path / "c.yaml").write_text(f"{key}: {value}\n")
    assert train.main(["--config", str(tmp_path / "c.yaml"), "--tasks", "rte", "--output-dir", str(out)]) == 2
    assert not out.exists()


LIST_OPTIONS = {o.key for o in TrainConfig.options() if _base_type(o.annotation)[2]}


def test_a_model_without_sdpa_falls_back_to_its_own_attention_and_says_so(world, tmp_path, capsys):
    """DeBERTa-v2 has no SDPA attention in transformers: the run uses the model's own (eager) attention, gated
    and scored as usual (the gates are forward pre-hooks), and the first lines say so."""
    import train

    out = tmp_path / "run"
    args = [*world.tiny(), "--model", str(tiny_family(world, "deberta-v2")), "--score-importance", "--sparsities", "0.5",
            "--output-dir", str(out)]
    code = train.main(args)
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert "DebertaV2Model has no SDPA attention in transformers: using its own (eager) attention" in captured.out
    assert (out / "metrics.json").is_file() and (out / "masks" / "winning-0.50.safetensors").is_file()


def test_albert_scores_and_trains_with_a_mask_end_to_end(world, tmp_path, capsys):
    """The issue's ALBERT case: scoring and gating work on shared layers (refused before, after a whole epoch)."""
    import train

    albert = ["--model", str(tiny_family(world, "albert"))]
    scored = tmp_path / "scored"
    assert train.main([*world.tiny(), *albert, "--score-importance", "--sparsities", "0.5",
                       "--output-dir", str(scored)]) == 0, capsys.readouterr().err
    ticket = scored / "masks" / "winning-0.50.safetensors"
    rewound = tmp_path / "rewound"
    assert train.main([*world.tiny(), *albert, "--mask", str(ticket), "--output-dir", str(rewound)]) == 0
    assert "training with mask" in capsys.readouterr().out and (rewound / "metrics.json").is_file()


def write_ticket(path: Path, task: str) -> Path:
    shape = shape_of(tiny_bert())
    save_mask(Mask.ones(shape, kind="super_ticket", tasks=task), path)
    return path


def test_construct_refuses_a_ticket_cut_for_another_task_unless_relabel(world, tmp_path, capsys):
    from commands.construct_mask import main

    rte, para = write_ticket(tmp_path / "rte.safetensors", "rte"), write_ticket(tmp_path / "para.safetensors", "para")
    out = tmp_path / "mtl.safetensors"
    code = main(["--tickets", f"rte={rte}", f"mrpc={para}", "--out", str(out)])
    lines = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(lines) == 1, lines
    assert lines[0].startswith("error: ") and f"mrpc={para} is a ticket of task(s) para, not of mrpc" in lines[0]
    assert "--relabel" in lines[0] and not out.exists()
    assert main(["--tickets", f"rte={rte}", f"mrpc={para}", "--out", str(out), "--relabel", "--mode", "per-task"]) == 0
    from masks.mask import load_mask_file

    loaded = load_mask_file(out)
    assert loaded["mrpc"].meta.tasks == ("mrpc",) and loaded["mrpc"].meta.extra["relabelled_from"] == "para"
