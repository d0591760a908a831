"""train.py ticket options on the real MiniLM and real GLUE slices: score + cut, then rewind with a mask."""

import json

import pytest
import torch

from masks.arch import shape_of
from masks.mask import load_mask, save_task_masks
from tests.conftest import tiny_bert

SMALL = ["--max-train-samples", "40", "--max-eval-samples", "32", "--batch-size", "16", "--no-progress",
         "--max-steps", "2", "--no-save-model"]


@pytest.mark.integration
def test_score_then_rewind_with_shared_and_per_task_masks(glue, tmp_path, capsys):
    import train

    dense = tmp_path / "dense"
    code = train.main(["--tasks", "rte", "--output-dir", str(dense), "--glue-dir", str(glue), *SMALL,
                       "--score-importance", "--sparsities", "0.3,0.5"])
    assert code == 0, capsys.readouterr().err
    assert (dense / "importance.safetensors").is_file()
    names = sorted(p.name for p in (dense / "masks").iterdir())
    assert names == sorted(f"{k}-{s}.safetensors" for k in ("winning", "random", "losing") for s in ("0.30", "0.50"))
    win = load_mask(dense / "masks" / "winning-0.50.safetensors")
    rnd = load_mask(dense / "masks" / "random-0.50.safetensors")
    assert win.meta.to_strings()["kind"] == "winning" and win.meta.to_strings()["sparsity"] == "0.50" and win.meta.to_strings()["tasks"] == "rte"
    assert (win.num_heads_kept, win.num_ffn_kept) == (rnd.num_heads_kept, rnd.num_ffn_kept) == (36, 6 * 768)
    assert int(json.loads((dense / "results.json").read_text())["scoring"]["batches"]) == 3  # 40 examples / 16

    shared = tmp_path / "shared"
    code = train.main(["--tasks", "rte", "--output-dir", str(shared), "--glue-dir", str(glue), *SMALL,
                       "--mask", str(dense / "masks" / "winning-0.30.safetensors")])
    assert code == 0, capsys.readouterr().err
    info = json.loads((shared / "results.json").read_text())["mask"]
    assert info["mask_mode"] == "shared" and 0.28 < info["sparsity"] < 0.32

    per_task = tmp_path / "per_task.safetensors"
    save_task_masks({"rte": win, "mrpc": load_mask(dense / "masks" / "losing-0.30.safetensors")}, per_task)
    code = train.main(["--tasks", "rte,mrpc", "--output-dir", str(tmp_path / "pt"), "--glue-dir", str(glue),
                       *SMALL, "--mask", str(per_task)])
    assert code == 0, capsys.readouterr().err
    info = json.loads((tmp_path / "pt" / "results.json").read_text())["mask"]
    assert info["mask_mode"] == "per-task" and set(info["task_sparsity"]) == {"rte", "mrpc"}

    # a per-task file without one of the training tasks: one clear line
    code = train.main(["--tasks", "rte,stsb", "--output-dir", str(tmp_path / "bad"), "--glue-dir", str(glue),
                       *SMALL, "--mask", str(per_task)])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "no mask for task(s) stsb" in err[0]


def test_mask_of_another_shape_and_bad_sparsity_are_user_errors(tmp_path, capsys):
    import train
    from masks.mask import Mask, save_mask

    small = Mask.ones(shape_of(tiny_bert()), kind="custom", tasks="rte", model="tiny")
    save_mask(small, tmp_path / "tiny.safetensors")
    code = train.main(["--tasks", "rte", "--output-dir", str(tmp_path / "o"), "--sparsities", "0.2,1.5",
                       "--score-importance"])
    assert code == 2 and "sparsity must be in [0, 1), got 1.5" in capsys.readouterr().err
    code = train.main(["--tasks", "rte", "--output-dir", str(tmp_path / "o"), "--mask", str(tmp_path / "missing.st")])
    assert code == 2 and "mask file not found" in capsys.readouterr().err


def test_per_task_gating_switches_masks_by_task(tmp_path):
    from masks.mask import Mask
    from mtl.gating import mask_gating
    from mtl.model import MultiTaskModel
    from tests.test_trainer import CLS, REG

    enc = tiny_bert()
    model = MultiTaskModel(enc, [CLS, REG]).eval()
    shape = shape_of(enc)
    a = Mask.ones(shape, kind="custom", tasks="has7", model="tiny")
    b = Mask.ones(shape, kind="custom", tasks="frac9", model="tiny")
    b.heads[0, :2] = False
    b.ffn[1, :10] = False
    save_task_masks({"has7": a, "frac9": b}, tmp_path / "pt.safetensors")
    before_batch, info = mask_gating(model, tmp_path / "pt.safetensors", ["has7", "frac9"])
    ids = torch.randint(5, 90, (2, 7))
    att = torch.ones_like(ids)
    before_batch("frac9")
    out_b = model.encoder(input_ids=ids, attention_mask=att).last_hidden_state
    before_batch("has7")
    out_a = model.encoder(input_ids=ids, attention_mask=att).last_hidden_state
    reference = tiny_bert()(input_ids=ids, attention_mask=att).last_hidden_state
    assert torch.allclose(out_a, reference, atol=1e-6)  # all-ones mask = ungated model
    assert not torch.allclose(out_b, reference, atol=1e-3)
    assert info["mask_mode"] == "per-task" and info["task_sparsity"]["has7"] == 0.0


@pytest.mark.parametrize("estimator", ["token", "example"])
def test_scoring_options_reach_the_importance_and_the_masks(tmp_path, capsys, estimator):
    """--importance-abs, --ffn-normalization and --ffn-allocation (role "scoring") reach the scores and cut masks."""
    import train
    from masks.importance import load_importance
    from tests.tiny_run import tiny_setup

    out = tmp_path / "run"
    code = train.main([*tiny_setup(tmp_path), "--output-dir", str(out), "--max-steps", "1", "--score-batches", "2",
                       "--score-importance", "--sparsities", "0.3", "--importance-abs", estimator,
                       "--ffn-normalization", "layer_l2", "--ffn-allocation", "per-layer"])
    assert code == 0, capsys.readouterr().err
    imp = load_importance(out / "importance.safetensors")
    assert imp.meta["abs_per"] == estimator and imp.meta["normalize_ffn"] == "layer_l2"
    torch.testing.assert_close(imp.ffn.norm(dim=1), torch.ones(2))  # each layer's FFN scores at unit L2 norm
    for kind in ("winning", "random", "losing"):
        mask = load_mask(out / "masks" / f"{kind}-0.30.safetensors")
        assert mask.ffn.sum(1).tolist() == [26, 26]  # 37 neurons, round(0.3 * 37) = 11 pruned in each layer
        assert mask.meta.extra["ffn_allocation"] == "per-layer" and mask.meta.extra["importance_abs"] == estimator
    if estimator == "example":
        assert int(imp.meta["num_loss_terms"]) == 16  # 2 scoring batches of 8 examples, one term each
