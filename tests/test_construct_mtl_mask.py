"""construct_mtl_mask.py: merged masks equal hand-computed ones, per-task round-trip, the printed
numbers, and one-line user errors (exit 2). Tiny masks built in memory and saved to tmp_path."""

import json
import os
import subprocess
import sys

import pytest
import torch

import construct_mtl_mask
from masks.arch import EncoderShape
from masks.mask import Mask, load_mask, load_mask_file, save_mask, save_task_masks
from masks.meta import format_fraction
from tests.conftest import REPO

SHAPE = EncoderShape(num_layers=2, num_heads=2, head_dim=3, hidden=6, intermediate=5)
# per head 4*d*hidden + 3*d = 81 parameters, per FFN neuron 2*hidden + 1 = 13; total 4*81 + 10*13 = 454
HEADS = {"rte": [[1, 1], [0, 0]], "mrpc": [[0, 1], [1, 0]], "stsb": [[0, 1], [1, 1]]}
FFN = {
    "rte": [[1, 0, 0, 0, 0], [0, 0, 0, 0, 0]],
    "mrpc": [[1, 1, 0, 0, 0], [0, 0, 0, 0, 0]],
    "stsb": [[0, 1, 1, 0, 0], [0, 0, 0, 0, 1]],
}
# kept by how many of the three tasks: heads [[1, 3], [2, 1]], ffn [[2, 2, 1, 0, 0], [0, 0, 0, 0, 1]]
EXPECTED = {
    "union": ([[1, 1], [1, 1]], [[1, 1, 1, 0, 0], [0, 0, 0, 0, 1]]),
    "vote:2": ([[0, 1], [1, 0]], [[1, 1, 0, 0, 0], [0, 0, 0, 0, 0]]),
    "intersection": ([[0, 1], [0, 0]], [[0, 0, 0, 0, 0], [0, 0, 0, 0, 0]]),
}


def ticket(task: str, shape: EncoderShape = SHAPE, **meta) -> Mask:
    info = {"tasks": task, "model": "tiny", "shape": shape.describe(), "kind": "winning", "ffn_sparsity": "0.70"}
    return Mask(torch.tensor(HEADS[task], dtype=torch.bool), torch.tensor(FFN[task], dtype=torch.bool),
                {**info, **meta})


@pytest.fixture
def tickets(tmp_path):
    """{task: path} of three saved single-task masks; mrpc's is a directory with super_ticket.safetensors."""
    paths = {}
    for task in HEADS:
        path = tmp_path / ("mrpc_run/super_ticket.safetensors" if task == "mrpc" else f"{task}.safetensors")
        save_mask(ticket(task), path)
        paths[task] = path
    paths["mrpc"] = paths["mrpc"].parent
    return paths


def items(paths) -> list[str]:
    return [f"{task}={path}" for task, path in paths.items()]


def run(args, capsys) -> tuple[int, str, str]:
    code = construct_mtl_mask.main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.mark.parametrize("mode", ["union", "vote:2", "intersection"])
def test_merged_mask_equals_hand_computed(mode, tickets, tmp_path, capsys):
    out = tmp_path / "out" / "mtl.safetensors"
    code, _, err = run(["--tickets", *items(tickets), "--mode", mode, "--out", out], capsys)
    assert code == 0, err
    merged = load_mask(out)
    heads, ffn = EXPECTED[mode]
    assert merged.heads.tolist() == torch.tensor(heads, dtype=torch.bool).tolist()
    assert merged.ffn.tolist() == torch.tensor(ffn, dtype=torch.bool).tolist()
    meta = merged.meta.to_strings()
    assert meta["kind"] == mode.split(":")[0] and meta["aggregate"] == mode
    assert (meta["tasks"], meta["model"], meta["shape"]) == ("rte,mrpc,stsb", "tiny", SHAPE.describe())
    assert meta["sparsity"] == format_fraction(round(merged.sparsity(SHAPE), 4))
    assert float(meta["param_sparsity"]) == pytest.approx(merged.sparsity(SHAPE), abs=1e-4)
    sources = json.loads(meta["sources"])
    assert sources["mrpc"] == str((tickets["mrpc"] / "super_ticket.safetensors").resolve())
    assert sources["rte"] == str(tickets["rte"].resolve())
    assert "ffn_sparsity" not in meta  # one ticket's cut, not the merged mask's


def test_default_mode_is_union_and_task_names_are_lower_cased(tickets, tmp_path, capsys):
    out = tmp_path / "u.safetensors"
    code, _, err = run(["--tickets", f"RTE={tickets['rte']}", f"Mrpc={tickets['mrpc']}", "--out", out], capsys)
    assert code == 0, err
    merged = load_mask(out)
    assert merged.meta.to_strings()["kind"] == "union" and merged.meta.to_strings()["tasks"] == "rte,mrpc"
    assert merged.heads.tolist() == [[True, True], [True, False]]


def test_per_task_file_round_trips(tickets, tmp_path, capsys):
    out = tmp_path / "per_task.safetensors"
    code, stdout, err = run(["--tickets", *items(tickets), "--mode", "per-task", "--out", out], capsys)
    assert code == 0, err
    loaded = load_mask_file(out, expect_shape=SHAPE)
    assert list(loaded) == ["rte", "mrpc", "stsb"]
    for task, mask in loaded.items():
        assert mask.same_units(ticket(task)), task
        assert mask.meta.to_strings()["tasks"] == task and mask.meta.to_strings()["source"].endswith(".safetensors")
    from safetensors import safe_open

    with safe_open(str(out), framework="pt") as f:
        meta = f.metadata()
    union_sparsity = 1 - (4 * 81 + 4 * 13) / 454  # union keeps every head and 4 neurons
    assert meta["mode"] == "per-task" and meta["kind"] == "per-task" and meta["aggregate"] == "per-task"
    assert (meta["tasks"], meta["model"], meta["shape"]) == ("rte,mrpc,stsb", "tiny", SHAPE.describe())
    assert float(meta["param_sparsity"]) == pytest.approx(union_sparsity, abs=1e-4)
    assert set(json.loads(meta["sources"])) == {"rte", "mrpc", "stsb"}
    assert "encoder prunable parameters kept: 82.8%" in stdout and "per-task:" in stdout


def test_printed_numbers_and_overlap_table(tickets, tmp_path, capsys):
    out, js = tmp_path / "v.safetensors", tmp_path / "report" / "v.json"
    code, stdout, err = run(["--tickets", *items(tickets), "--mode", "vote:2", "--out", out, "--json", js], capsys)
    assert code == 0, err
    lines = stdout.splitlines()
    header = next(i for i, line in enumerate(lines) if line.startswith("Jaccard"))
    row = {line.split()[0]: line.split() for line in lines[:header] if line.split()}
    # rte keeps 2 heads + 1 neuron = 175 of 454 parameters; vote:2 keeps 2 heads + 2 neurons = 188
    assert row["rte"][1:] == ["2/4", "(50.0%)", "1/10", "(10.0%)", "61.5%"]
    assert row["stsb"][1:] == ["3/4", "(75.0%)", "3/10", "(30.0%)", "37.9%"]
    assert row["vote:2"][1:] == ["2/4", "(50.0%)", "2/10", "(20.0%)", "58.6%"]
    assert "encoder prunable parameters kept: 41.4% (188/454)" in stdout
    # Jaccard over kept heads + neurons: rte/mrpc 2/5, rte/stsb 1/8, mrpc/stsb 3/7
    assert lines[header + 1].split() == ["rte", "mrpc", "stsb"]
    assert lines[header + 2].split() == ["rte", "1.000", "0.400", "0.125"]
    assert lines[header + 3].split() == ["mrpc", "0.400", "1.000", "0.429"]
    assert lines[header + 4].split() == ["stsb", "0.125", "0.429", "1.000"]
    report = json.loads(js.read_text())
    assert report["mode"] == "vote:2" and report["shape"] == SHAPE.describe()
    assert report["result"]["params_kept"] == 188 and report["result"]["params_total"] == 454
    assert report["tasks"]["rte"]["heads_kept"] == 2 and report["tasks"]["stsb"]["ffn_kept"] == 3
    assert report["result"]["param_sparsity"] == pytest.approx(1 - 188 / 454, abs=1e-6)
    assert report["overlap"]["mrpc"]["stsb"] == pytest.approx(3 / 7, abs=1e-6)
    assert report["overlap"]["rte"]["stsb"] == pytest.approx(1 / 8)


def write_error_inputs(tmp_path, tickets) -> dict[str, str]:
    """Bad inputs beside the good tickets: other shape, other model, per-task file, no shape, not a mask."""
    other = EncoderShape(num_layers=2, num_heads=2, head_dim=3, hidden=6, intermediate=7)
    wide = Mask(torch.ones(2, 2, dtype=torch.bool), torch.ones(2, 7, dtype=torch.bool),
                {"shape": other.describe(), "model": "tiny"})
    save_mask(wide, tmp_path / "wide.safetensors")
    save_mask(ticket("rte", model="bert-base-uncased"), tmp_path / "bert.safetensors")
    save_task_masks({"rte": ticket("rte"), "mrpc": ticket("mrpc")}, tmp_path / "pt.safetensors")
    save_mask(Mask(torch.ones(2, 2), torch.ones(2, 5), {"model": "tiny"}), tmp_path / "noshape.safetensors")
    (tmp_path / "junk.safetensors").write_text("not a mask\nat all\n")
    (tmp_path / "empty_dir").mkdir()
    (tmp_path / "a_file").write_text("x")
    return {"rte": str(tickets["rte"]), "mrpc": str(tickets["mrpc"]), "tmp": str(tmp_path)}


# (args with {rte}/{mrpc}/{tmp} placeholders, fragments the one error line must contain)
ERRORS = [
    (["--tickets", "{rte}", "--out", "{tmp}/o.st"], ["expected TASK=PATH", "{rte}"]),
    (["--tickets", "rte=", "--out", "{tmp}/o.st"], ["expected TASK=PATH"]),
    (["--tickets", "rte={rte}", "RTE={mrpc}", "--out", "{tmp}/o.st"], ["task 'rte' given twice"]),
    (["--tickets", "rte={tmp}/nope.safetensors", "--out", "{tmp}/o.st"], ["not found", "nope.safetensors"]),
    (["--tickets", "rte={tmp}/empty_dir", "--out", "{tmp}/o.st"], ["has no super_ticket.safetensors"]),
    (["--tickets", "rte={rte}", "wide={tmp}/wide.safetensors", "--out", "{tmp}/o.st"],
     ["different shapes", "I=5", "I=7", "wide.safetensors"]),
    (["--tickets", "rte={rte}", "bert={tmp}/bert.safetensors", "--out", "{tmp}/o.st"],
     ["different models", "tiny", "bert-base-uncased"]),
    (["--tickets", "rte={rte}", "--mode", "majority", "--out", "{tmp}/o.st"], ["unknown aggregation mode", "vote:K"]),
    (["--tickets", "rte={rte}", "mrpc={mrpc}", "--mode", "vote:3", "--out", "{tmp}/o.st"], ["K must be in 1..2"]),
    (["--tickets", "rte={rte}", "--mode", "vote:0", "--out", "{tmp}/o.st"], ["K must be a positive integer"]),
    (["--tickets", "--out", "{tmp}/o.st"], ["--tickets", "expected at least one argument"]),
    (["--out", "{tmp}/o.st"], ["required", "--tickets"]),
    (["--tickets", "rte={rte}", "--out", "{tmp}/a_file/o.st"], ["--out", "a_file is a file"]),
    (["--tickets", "rte={rte}", "--out", "{tmp}"], ["--out", "is a directory"]),
    (["--tickets", "rte={rte}", "--out", "{rte}"], ["--out", "is the input ticket of rte"]),
    (["--tickets", "rte={rte}", "--out", "{tmp}/o.st", "--json", "{tmp}/a_file/r.json"], ["--json", "a_file"]),
    (["--tickets", "rte={rte}", "--out", "{tmp}/o.st", "--json", "{tmp}/o.st"], ["--json", "is the --out file"]),
    (["--tickets", "both={tmp}/pt.safetensors", "--out", "{tmp}/o.st"], ["pt.safetensors", "per-task mask file"]),
    (["--tickets", "rte={tmp}/noshape.safetensors", "--out", "{tmp}/o.st"], ["shape"]),
    (["--tickets", "rte={tmp}/junk.safetensors", "--out", "{tmp}/o.st"], ["junk.safetensors"]),
]


def assert_one_error_line(code: int, err: str, fragments: list[str]) -> None:
    assert code == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("error: ")
    for fragment in fragments:
        assert fragment in lines[0], (fragment, lines[0])


@pytest.mark.parametrize("args,fragments", ERRORS)
def test_user_errors_exit_2_with_one_line(args, fragments, tickets, tmp_path, capsys):
    where = write_error_inputs(tmp_path, tickets)
    code, out, err = run([a.format(**where) for a in args], capsys)
    assert_one_error_line(code, err, [f.format(**where) for f in fragments])
    assert not (tmp_path / "o.st").exists() and out == ""


def test_unwritable_output_directory(tickets, tmp_path, capsys, monkeypatch):
    locked = tmp_path / "locked"
    locked.mkdir()
    real_access = os.access
    monkeypatch.setattr(os, "access", lambda p, mode: False if str(p) == str(locked) else real_access(p, mode))
    code, _, err = run(["--tickets", f"rte={tickets['rte']}", "--out", locked / "sub" / "o.st"], capsys)
    assert_one_error_line(code, err, ["--out", "not writable", str(locked)])


def test_entry_point_exit_codes(tickets, tmp_path):
    cmd = [sys.executable, str(REPO / "construct_mtl_mask.py"), "--tickets", *items(tickets)]
    ok = subprocess.run([*cmd, "--mode", "union", "--out", str(tmp_path / "u.safetensors")],
                        capture_output=True, text=True, cwd=tmp_path, timeout=900)
    assert ok.returncode == 0, ok.stderr
    assert "encoder prunable parameters kept: 82.8%" in ok.stdout and (tmp_path / "u.safetensors").is_file()
    bad = subprocess.run([*cmd, "--mode", "vote:9", "--out", str(tmp_path / "v.safetensors")],
                         capture_output=True, text=True, cwd=tmp_path, timeout=900)
    assert bad.returncode == 2
    assert bad.stderr.strip().splitlines() == ["error: bad mode vote:9: K must be in 1..3 for 3 tickets"]


def test_task_spellings_become_canonical_names():
    from masks.construct import parse_tickets

    assert list(parse_tickets(["STS-B=a", "sst-2=b", "mytask=c"])) == ["stsb", "sst2", "mytask"]
