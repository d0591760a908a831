"""Iterative pruning: the procedure on a synthetic setting with a hand-made score, the random / bad twins,
and the experiment's command line end to end on the tiny model (resumable)."""

import json

import pytest
import torch

from basics.errors import UserError
from basics.stats import paired_difference
from experiments.report_stats import format_versus
from masks.arch import EncoderShape
from masks.importance import Importance
from masks.iterative import (
    IterativeConfig,
    iterative_prune,
    kept_layer_l2,
    matched_mask,
)
from masks.mask import Mask, load_mask

SHAPE = EncoderShape(num_layers=2, num_heads=4, head_dim=2, hidden=8, intermediate=10)
# "useful" units: 2 heads per layer and 4 FFN neurons per layer; the other 4 heads and 12 neurons do nothing
USEFUL_HEADS = torch.tensor([[1, 0, 1, 0], [0, 1, 0, 1]], dtype=torch.bool)
USEFUL_FFN = torch.tensor([[1, 1, 0, 0, 0, 0, 0, 0, 1, 1], [0, 0, 1, 1, 1, 1, 0, 0, 0, 0]], dtype=torch.bool)


def useful_kept(mask: Mask) -> float:
    """Hand-made score: half the share of useful heads kept + half the share of useful neurons kept."""
    heads = int((mask.heads & USEFUL_HEADS).sum()) / int(USEFUL_HEADS.sum())
    ffn = int((mask.ffn & USEFUL_FFN).sum()) / int(USEFUL_FFN.sum())
    return 0.5 * heads + 0.5 * ffn


def importance(heads: torch.Tensor, ffn: torch.Tensor) -> Importance:
    heads, ffn = heads.float(), ffn.float()
    return Importance(heads, ffn, heads, ffn, ffn.sum(1, keepdim=True))


class Scorer:
    """Useful units score high; useless ones get scores that change with every call (so re-scoring matters),
    and units the mask already prunes get the LOWEST scores (they must not be picked again)."""

    def __init__(self):
        self.calls: list[Mask] = []

    def __call__(self, mask: Mask) -> Importance:
        self.calls.append(mask)
        return self.scores(mask, len(self.calls) - 1)

    def scores(self, mask: Mask, call: int) -> Importance:
        g = torch.Generator().manual_seed(100 + call)
        heads = torch.rand(SHAPE.num_layers, SHAPE.num_heads, generator=g) + 10 * USEFUL_HEADS
        ffn = torch.rand(SHAPE.num_layers, SHAPE.intermediate, generator=g) + 10 * USEFUL_FFN
        return importance(torch.where(mask.heads, heads, -100.0), torch.where(mask.ffn, ffn, -100.0))


def test_stops_at_the_threshold_and_returns_the_last_mask_above_it():
    scorer = Scorer()
    result = iterative_prune(SHAPE, useful_kept, scorer, IterativeConfig(threshold=0.9, step=0.1), meta={"tasks": "t"})
    # 10% of 8 heads (round half up: 1 per step) and of 20 neurons (2 per step). The 4 useless heads go in
    # steps 1-4; step 5 removes a useful head: score 0.5*3/4 + 0.5 = 0.875 < 0.9 -> stop, keep step 4.
    steps = [(r.step, r.heads_kept, r.ffn_kept, r.score) for r in result.trajectory]
    assert steps == [(0, 8, 20, 1.0), (1, 7, 18, 1.0), (2, 6, 16, 1.0), (3, 5, 14, 1.0), (4, 4, 12, 1.0),
                     (5, 3, 10, 0.875)]
    assert result.stop_reason == "threshold" and result.selected_step == 4 and result.target == pytest.approx(0.9)
    assert [r.above_threshold for r in result.trajectory] == [True] * 5 + [False]
    assert torch.equal(result.mask.heads, USEFUL_HEADS)  # exactly the useful heads survive
    assert int((result.mask.ffn & USEFUL_FFN).sum()) == 8 and result.mask.num_ffn_kept == 12
    assert result.mask.meta.to_strings()["kind"] == "good" and result.mask.meta.to_strings()["selected_step"] == "4"
    assert result.mask.meta.to_strings()["tasks"] == "t" and result.mask.meta.to_strings()["shape"] == SHAPE.describe()
    params = [r.params_kept for r in result.trajectory]
    assert params[0] == 100.0 and params == sorted(params, reverse=True)

    # scored once per step, always with the current mask: call k saw the mask of step k
    assert len(scorer.calls) == 5 and result.mask.same_units(scorer.calls[4])
    for k, seen in enumerate(scorer.calls):
        assert (seen.num_heads_kept, seen.num_ffn_kept) == (result.trajectory[k].heads_kept, result.trajectory[k].ffn_kept)
    # pruned units never come back, and each step pruned the lowest-scoring units still kept (by that step's scores)
    for k in range(1, len(scorer.calls)):
        before, after = scorer.calls[k - 1], scorer.calls[k]
        assert not bool((after.heads & ~before.heads).any() or (after.ffn & ~before.ffn).any())
        imp = scorer.scores(before, k - 1)  # what step k ranked by
        for name in ("heads", "ffn"):
            b, a, sc = getattr(before, name), getattr(after, name), getattr(imp, name)
            assert float(sc[b & ~a].max()) <= float(sc[a].min())


def test_a_score_exactly_at_the_threshold_counts_as_at_it():
    result = iterative_prune(SHAPE, useful_kept, Scorer(), IterativeConfig(threshold=0.875, step=0.1))
    assert result.trajectory[5].score == 0.875 and result.trajectory[5].above_threshold
    assert result.selected_step == 5 and result.stop_reason == "threshold" and len(result.trajectory) == 7


def test_min_heads_per_layer_exhaustion_and_max_steps():
    always = lambda mask: 1.0  # pruning never hurts: runs until nothing is left
    result = iterative_prune(SHAPE, always, Scorer(), IterativeConfig(step=0.3, min_heads_per_layer=1))
    assert result.stop_reason == "exhausted" and result.selected_step == len(result.trajectory) - 1
    assert all(rec.heads_kept >= SHAPE.num_layers for rec in result.trajectory)
    assert result.mask.heads.sum(1).tolist() == [1, 1] and result.mask.num_ffn_kept == 0
    result = iterative_prune(SHAPE, always, Scorer(), IterativeConfig(step=0.1, max_steps=2))
    assert result.stop_reason == "max_steps" and len(result.trajectory) == 3
    with pytest.raises(UserError, match="must be > 0"):
        iterative_prune(SHAPE, lambda mask: 0.0, Scorer())
    for bad in ({"threshold": 1.5}, {"step": 0.0}, {"granularity": "block"}, {"max_steps": 0}):
        with pytest.raises(UserError):
            IterativeConfig(**bad)


def test_layer_granularity_prunes_whole_ffn_blocks_by_layer_score():
    shape = EncoderShape(num_layers=4, num_heads=2, head_dim=2, hidden=4, intermediate=3)
    block_scores = torch.tensor([3.0, 1.0, 4.0, 2.0])

    def score(mask):
        imp = importance(torch.ones(4, 2), torch.ones(4, 3))
        imp.ffn_layer_raw = block_scores[:, None].clone()
        return imp

    result = iterative_prune(shape, lambda m: 1.0, score,
                             IterativeConfig(step=0.25, granularity="layer", min_heads_per_layer=1))
    assert [r.ffn_kept for r in result.trajectory] == [4, 3, 2, 1, 0]  # one whole block per step
    assert [r.ffn_neurons_kept for r in result.trajectory] == [12, 9, 6, 3, 0]
    good = iterative_prune(shape, lambda m: 1.0, score,
                           IterativeConfig(step=0.25, granularity="layer", max_steps=2)).mask
    assert good.ffn.all(1).tolist() == [True, False, True, False] and not bool((good.ffn.any(1) & ~good.ffn.all(1)).any())


def test_bad_and_random_masks_have_the_good_counts():
    result = iterative_prune(SHAPE, useful_kept, Scorer(), IterativeConfig(threshold=0.9, step=0.1))
    good, dense = result.mask, result.dense_importance
    bad = matched_mask(good, "bad", shape=SHAPE, imp=dense, seed=1)
    rnd = matched_mask(good, "random", shape=SHAPE, seed=1)
    for m in (bad, rnd):
        assert (m.num_heads_kept, m.num_ffn_kept) == (good.num_heads_kept, good.num_ffn_kept)
        assert int(m.heads.sum(1).min()) >= 1 and m.meta.to_strings()["shape"] == SHAPE.describe()
    assert bad.meta.to_strings()["kind"] == "bad" and rnd.meta.to_strings()["kind"] == "random" and rnd.meta.to_strings()["seed"] == "1"
    # bad keeps the lowest-scoring units of the dense importance: here, no useful unit at all
    assert not bool((bad.heads & USEFUL_HEADS).any()) and not bool((bad.ffn & USEFUL_FFN).any())
    assert matched_mask(good, "random", shape=SHAPE, seed=1).same_units(rnd)  # seeded
    assert not matched_mask(good, "random", shape=SHAPE, seed=2).same_units(rnd)
    blocks = Mask(torch.ones(2, 4, dtype=torch.bool), torch.tensor([[1] * 10, [0] * 10], dtype=torch.bool),
                  {"shape": SHAPE.describe()})
    for kind in ("bad", "random"):
        twin = matched_mask(blocks, kind, shape=SHAPE, imp=dense, granularity="layer")
        assert sorted(twin.ffn.sum(1).tolist()) == [0, 10]
    with pytest.raises(UserError, match="whole FFN blocks"):
        matched_mask(good, "random", shape=SHAPE, granularity="layer")
    with pytest.raises(UserError, match="unknown matched mask kind"):
        matched_mask(good, "losing", shape=SHAPE)


def test_kept_layer_l2_ignores_pruned_units():
    raw = torch.tensor([[3.0, 4.0, 100.0]])
    out = kept_layer_l2(raw, torch.tensor([[True, True, False]]))
    assert torch.allclose(out, torch.tensor([[0.6, 0.8, 0.0]]))


# --------------------------------------------------------------------------- the command line

def test_cli_end_to_end_then_resume_skips_everything(tmp_path, capsys, monkeypatch):
    from experiments import iterative_pruning as ip
    from tests.tiny_run import tiny_setup

    flags = tiny_setup(tmp_path / "tiny")
    out = tmp_path / "out"
    argv = ["--task", "tinysent", "--threshold", "0.9", "--step", "0.25", "--seeds", "1,2", "--prune-seeds", "1,2",
            "--output-dir", str(out), "--score-batches", "2", "--epochs", "2", "--lr", "3e-3", "--", *flags]
    assert ip.main(argv) == 0, capsys.readouterr().err
    for name in ("iterative_pruning.json", "iterative_pruning.md", "iterative_pruning.png"):
        assert (out / name).is_file()
    report = json.loads((out / "iterative_pruning.json").read_text())
    assert [r["kind"] for r in report["rows"]] == ["dense", "good", "random", "bad"]
    assert all(r["seeds"] == [1, 2] for r in report["rows"]) and report["command"].startswith("python -m")
    for seed in ("1", "2"):
        rec = report["trajectories"][seed]
        points = rec["trajectory"]
        assert points[rec["selected_step"]]["score"] >= rec["target"]
        assert all(p["above_threshold"] for p in points[:rec["selected_step"] + 1])
        if rec["stop_reason"] == "threshold":
            assert points[-1]["score"] < rec["target"] and len(points) == rec["selected_step"] + 2
        good = load_mask(out / "masks" / f"good-seed{seed}.safetensors")
        assert good.meta.to_strings()["kind"] == "good" and good.meta.to_strings()["seed"] == seed and good.meta.to_strings()["tasks"] == "tinysent"
        assert good.num_heads_kept == points[rec["selected_step"]]["heads_kept"]
        for kind in ("bad", "random"):
            twin = load_mask(out / "masks" / f"{kind}-seed{seed}.safetensors")
            assert (twin.num_heads_kept, twin.num_ffn_kept) == (good.num_heads_kept, good.num_ffn_kept)
            results = json.loads((out / f"{kind}-seed{seed}" / "results.json").read_text())
            assert results["mask"]["mask"].endswith(f"{kind}-seed{seed}.safetensors")
    md = (out / "iterative_pruning.md").read_text()
    assert "## Pruning trajectory, seed 2" in md and "| good |" in md and "±" in md
    good = next(r for r in report["rows"] if r["kind"] == "good")
    dense = report["rows"][0]
    diffs = [g - d for g, d in zip(good["dev"], dense["dev"])]  # paired by seed (1, 2)
    assert "Δ dev vs dense [95% CI]" in md and format_versus(paired_difference(dict(enumerate(good["dev"])),
                                                                               dict(enumerate(dense["dev"])))) in md
    assert len(diffs) == 2 and report["baseline"] is not None  # tinysent's dev file is the task's own: read

    # re-run: every run folder and both prunings are finished, so nothing is trained or pruned again
    def boom(*args, **kwargs):
        raise AssertionError("re-run trained or pruned again")

    import mtl.run

    monkeypatch.setattr(mtl.run, "run_training", boom)  # ensure_run trains through it
    monkeypatch.setattr(ip, "_prune_model", boom)
    capsys.readouterr()
    assert ip.main([*argv, "--backend", "inline"]) == 0, capsys.readouterr().err
    printed = capsys.readouterr().out
    assert "8/13 done" in printed  # 2 dense + 6 rewound runs finished before
    assert "skip pruning seed 1" in printed and "skip pruning seed 2" in printed

    # other pruning options over the same folder: one line, exit 2
    assert ip.main([a if a != "0.9" else "0.8" for a in argv]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "pruned with other options (threshold: 0.9 -> 0.8)" in err[0]


@pytest.mark.parametrize("extra, message", [
    (["--select-on", "holdout"], "--select-on holdout needs --holdout-fraction > 0"),
    (["--prune-seeds", "3"], "--prune-seeds [3] are not among --seeds [1, 2]"),
    (["--seeds", "1,x"], "--seeds takes comma-separated integers"),
    (["--threshold", "2"], "threshold must be in (0, 1]"),
    (["--task", "rte,mrpc"], "--task takes one task"),
])
def test_cli_user_errors_are_one_line(tmp_path, capsys, extra, message):
    from experiments import iterative_pruning as ip

    argv = ["--task", "rte", "--seeds", "1,2", "--output-dir", str(tmp_path / "o"), *extra]
    assert ip.main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0]
    assert not (tmp_path / "o").exists()


def test_prasanna_protocol_runs_three_phases_and_undoes_the_failing_step():
    """Whole FFN blocks: 4 layers, 4 heads (16 heads: step 0.25 -> 4 heads and 1 MLP per step in phase 1,
    2 heads per step in phase 2, 1 MLP per step in phase 3). Only heads (l, 0) and the MLPs of layers 0-1
    matter; the score counts them (each half of the score)."""
    shape = EncoderShape(num_layers=4, num_heads=4, head_dim=2, hidden=8, intermediate=3)
    useful_heads = torch.zeros(4, 4, dtype=torch.bool)
    useful_heads[:, 0] = True
    useful_mlps = torch.tensor([True, True, False, False])

    def evaluate(mask: Mask) -> float:
        heads = int((mask.heads & useful_heads).sum()) / 4
        mlps = int((mask.ffn.all(1) & useful_mlps).sum()) / 2
        return 0.5 * heads + 0.5 * mlps

    def score(mask: Mask) -> Importance:
        heads = torch.arange(16, dtype=torch.float).view(4, 4) / 100 + 10 * useful_heads  # useless: by index
        mlps = torch.tensor([[9.0], [8.0], [2.0], [1.0]])  # layer 3 is the least useful MLP, then layer 2
        return Importance(heads, torch.zeros(4, 3), heads, torch.zeros(4, 3), mlps)

    config = IterativeConfig(threshold=0.8, step=0.25, granularity="layer", min_heads_per_layer=0,
                             protocol="prasanna")
    result = iterative_prune(shape, evaluate, score, config)
    steps = [(r.phase, r.heads_kept, r.ffn_kept, r.score) for r in result.trajectory]
    # phase 1: -4 useless heads and MLP 3, -4 useless heads and MLP 2, then the last 4 useless heads and the useful
    # MLP 1: 0.75 < 0.8, undone. Phase 2 (from step 2): -2 heads, -2 heads (the useless ones are gone), then 2 useful
    # heads: 0.75, undone. Phase 3 (from step 5): MLP 1: 0.75, undone.
    assert steps == [(0, 16, 4, 1.0), (1, 12, 3, 1.0), (1, 8, 2, 1.0), (1, 4, 1, 0.75), (2, 6, 2, 1.0),
                     (2, 4, 2, 1.0), (2, 2, 2, 0.75), (3, 4, 1, 0.75)]
    assert result.selected_step == 5 and result.stop_reason == "threshold"
    assert torch.equal(result.mask.heads, useful_heads)
    assert result.mask.ffn.all(1).tolist() == [True, True, False, False]
    assert result.mask.meta.to_strings()["protocol"] == "prasanna"
    with pytest.raises(UserError, match="needs granularity 'layer'"):
        IterativeConfig(protocol="prasanna")


def test_cli_prasanna_protocol_scores_on_dev_and_reports_the_independent_split(tmp_path, capsys):
    from experiments import iterative_pruning as ip
    from tests.tiny_run import tiny_setup

    flags = tiny_setup(tmp_path / "tiny")
    flags = flags[:flags.index("--tasks")] + flags[flags.index("--tasks") + 2:]
    out = tmp_path / "out"
    argv = ["--task", "tinysent", "--protocol", "prasanna", "--seeds", "1", "--step", "0.25", "--threshold", "0.5",
            "--holdout-fraction", "0.25", "--output-dir", str(out), "--score-batches", "2", "--epochs", "1",
            "--backend", "inline", *flags]
    assert ip.main(argv) == 0, capsys.readouterr().err
    report = json.loads((out / "iterative_pruning.json").read_text())
    settings = report["trajectories"]["1"]["settings"]
    assert (settings["protocol"], settings["score_on"], settings["granularity"]) == ("prasanna", "dev", "layer")
    assert {p["phase"] for p in report["trajectories"]["1"]["trajectory"][1:]} <= {1, 2, 3}
    good = load_mask(out / "masks" / "good-seed1.safetensors")
    assert good.ffn.all(1).sum() + (~good.ffn.any(1)).sum() == good.ffn.shape[0]  # whole FFN blocks only
    assert "chosen on dev, so its dev score is not an independent estimate: the held-out column is." in \
        (out / "iterative_pruning.md").read_text()
