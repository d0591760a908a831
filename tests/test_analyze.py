"""experiments.analyze on folders made here: iterative-pruning and phase-transition layouts, direct mask files."""

import json

import pytest
import torch

from experiments.analyze import main
from masks.agreement import fleiss_kappa, jaccard
from masks.arch import EncoderShape
from masks.mask import Mask, load_mask, save_mask

SHAPE = EncoderShape(num_layers=2, num_heads=2, head_dim=3, hidden=6, intermediate=3)


def mask(task, heads, ffn, **meta) -> Mask:
    return Mask(torch.tensor(heads, dtype=torch.bool), torch.tensor(ffn, dtype=torch.bool),
                {"tasks": task, "model": "tiny", "shape": SHAPE.describe(), **meta})


RTE = {1: mask("rte", [[1, 1], [0, 1]], [[1, 1, 0], [0, 1, 1]], kind="good", method="iterative", seed="1"),
       2: mask("rte", [[1, 0], [1, 1]], [[1, 0, 1], [0, 1, 1]], kind="good", method="iterative", seed="2")}
MRPC = {1: mask("mrpc", [[0, 1], [1, 1]], [[0, 0, 1], [1, 1, 0]], kind="good", method="iterative", seed="1"),
        2: mask("mrpc", [[0, 1], [1, 0]], [[0, 1, 1], [1, 1, 0]], kind="good", method="iterative", seed="2")}


def iterative_folder(root, masks):
    for seed, m in masks.items():
        save_mask(m, root / "masks" / f"good-seed{seed}.safetensors")
        # the other masks of an iterative_pruning folder are not tickets to analyse
        save_mask(mask(m.meta.to_strings()["tasks"], [[1, 1], [1, 1]], [[1] * 3] * 2, kind="bad", method="iterative", seed=str(seed)),
                  root / "masks" / f"bad-seed{seed}.safetensors")
    (root / "iterative_pruning.json").write_text("{}")
    return root


def test_groups_agreement_stable_masks_and_overlap(tmp_path, capsys):
    rte, mrpc = iterative_folder(tmp_path / "ip-rte", RTE), iterative_folder(tmp_path / "ip-mrpc", MRPC)
    direct = tmp_path / "seed3" / "stsb.safetensors"  # no seed in the metadata: taken from the folder name
    save_mask(mask("stsb", [[1, 1], [1, 0]], [[1, 1, 1], [0, 0, 0]], kind="custom"), direct)
    out = tmp_path / "analysis"
    assert main([str(rte), str(mrpc), str(direct), "--out", str(out)]) == 0, capsys.readouterr().err
    report = json.loads((out / "analysis.json").read_text())
    assert list(report["groups"]) == ["mrpc", "rte", "stsb"]
    g = report["groups"]["rte"]
    assert g["seeds"] == ["1", "2"] and g["source"] == "iterative"
    assert g["agreement"]["heads"]["jaccard"] == pytest.approx(jaccard(RTE[1], RTE[2], "heads")) == pytest.approx(2 / 4)
    assert g["agreement"]["all"]["kappa"] == pytest.approx(fleiss_kappa([RTE[1], RTE[2]]))
    assert report["groups"]["stsb"]["seeds"] == ["3"] and report["groups"]["stsb"]["agreement"]["all"]["kappa"] is None

    stable = load_mask(out / "stable" / "rte.safetensors")  # intersection across seeds
    assert torch.equal(stable.heads, RTE[1].heads & RTE[2].heads) and torch.equal(stable.ffn, RTE[1].ffn & RTE[2].ffn)
    assert stable.meta.to_strings()["kind"] == "stable" and stable.meta.to_strings()["seeds"] == "1,2" and stable.meta.to_strings()["tasks"] == "rte"
    assert g["stable"]["heads_per_layer"] == [1, 1] and g["stable"]["ffn_kept"] == 3

    stable_mrpc = load_mask(out / "stable" / "mrpc.safetensors")
    assert report["overlap"]["stable"]["rte"]["mrpc"] == pytest.approx(jaccard(stable, stable_mrpc))
    pairs = [jaccard(RTE[a], MRPC[b]) for a in (1, 2) for b in (1, 2)]
    assert report["overlap"]["mean_pairwise"]["rte"]["mrpc"] == pytest.approx(sum(pairs) / 4)
    assert report["overlap"]["mean_pairwise"]["rte"]["rte"] == pytest.approx(jaccard(RTE[1], RTE[2]))
    assert report["overlap"]["mean_pairwise"]["stsb"]["stsb"] is None

    names = {p.name for p in (out / "heatmaps").iterdir()}
    assert names == {"rte-seed1.png", "rte-seed2.png", "rte-stable.png", "mrpc-seed1.png", "mrpc-seed2.png",
                     "mrpc-stable.png", "stsb-seed3.png", "stsb-stable.png"}
    assert (out / "overlap.png").stat().st_size > 0
    md = (out / "analysis.md").read_text()
    assert "| rte | 1,2 | 0.500 |" in md and "Group x group Jaccard of the stable masks" in md


def test_phase_transition_super_tickets_and_mixed_sources(tmp_path, capsys):
    for seed in (1, 2):  # two phase-transition studies of rte, scored at seeds 1 and 2
        save_mask(mask("rte", [[1, 0], [0, 1]], [[1, 0, 0], [0, 1, 0]], kind="super_ticket", seed=str(seed)),
                  tmp_path / "study" / f"pt-rte-s{seed}" / "super_ticket.safetensors")
    iterative_folder(tmp_path / "ip-rte", RTE)
    out = tmp_path / "a"
    assert main([str(tmp_path / "study"), str(tmp_path / "ip-rte"), "--out", str(out)]) == 0, capsys.readouterr().err
    report = json.loads((out / "analysis.json").read_text())
    assert list(report["groups"]) == ["rte:iterative", "rte:super_ticket"]  # one task, two sources
    assert report["groups"]["rte:super_ticket"]["agreement"]["all"] == {
        "jaccard": 1.0, "kappa": 1.0, "intersection_over_union": 1.0}
    assert (out / "stable" / "rte_super_ticket.safetensors").is_file()


def test_nothing_found_and_duplicates_are_one_line_errors(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    assert main([str(tmp_path / "empty"), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "no masks found" in err[0]
    assert not (tmp_path / "o").exists()
    iterative_folder(tmp_path / "a", RTE)
    iterative_folder(tmp_path / "b", RTE)
    assert main([str(tmp_path / "a"), str(tmp_path / "b"), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "two masks for rte seed 1" in err[0]
    assert main([str(tmp_path / "missing"), "--out", str(tmp_path / "o")]) == 2
    assert "not found" in capsys.readouterr().err
