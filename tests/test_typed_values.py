"""The typed values between the packages: registries, TrainConfig sections, MaskMeta, RunDir / RunResult."""

from __future__ import annotations

import json

import pytest
import torch
import yaml

from basics.errors import UserError
from basics.options import ROLES
from basics.registry import Registry
from masks.arch import EncoderShape
from masks.mask import Mask, load_mask, save_mask
from masks.meta import MaskMeta
from mtl.config import TrainConfig, run_conflicts, save_config
from mtl.rundir import MaskInfo, RunDir, RunResult

SHAPE = EncoderShape(num_layers=2, num_heads=2, head_dim=4, hidden=8, intermediate=3)


# ---------------------------------------------------------------- registries

def test_registry_refuses_duplicates_and_names_the_choices():
    reg: Registry[int] = Registry("widget")
    reg.register("a", 1)
    reg.add("b")(2)
    with pytest.raises(ValueError, match="registered twice"):
        reg.register("a", 3)
    with pytest.raises(UserError, match="unknown widget 'c'; valid: a, b"):
        reg.get("c")
    assert reg.names() == ("a", "b") and "b" in reg and len(reg) == 2


@pytest.mark.parametrize("flag,value,names", [
    ("--sampler", "zigzag", "round-robin, proportional, temperature"),
    ("--precision", "fp8", "auto, fp32, bf16, fp16"),
    ("--pooling", "max", "cls, pooler, mean"),
    ("--ticket-kinds", "best", "winning, random, losing"),
    ("--ticket-granularity", "block", "neuron, layer"),
    ("--head-normalization", "l1", "layer_l2, none"),
])
def test_config_choices_come_from_the_registries(flag, value, names):
    key = flag[2:].replace("-", "_")
    with pytest.raises(UserError, match=f"{flag} must be one of {names}; got '{value}'"):
        TrainConfig.of(**{key: [value] if key == "ticket_kinds" else value})


# ---------------------------------------------------------------- TrainConfig


def test_flat_options_route_to_sections_and_back():
    config = TrainConfig.of(tasks=["rte"], lr=3e-5, model="bert-base-uncased", mask=None, keep_best=False,
                            num_threads=1, output_dir="runs/x")
    assert (config.optim.lr, config.model.name, config.eval.keep_best, config.runtime.num_threads,
            config.data.tasks, config.output.output_dir) == (3e-5, "bert-base-uncased", False, 1, ["rte"], "runs/x")
    flat = config.to_dict()
    assert flat["lr"] == 3e-5 and flat["model"] == "bert-base-uncased" and list(flat)[0] == "model"
    assert TrainConfig.from_flat(flat) == config
    assert config.replace(seed=7).optim.seed == 7 and config.optim.seed == 1  # a copy


def test_every_option_has_a_role_and_a_help():
    options = TrainConfig.options()
    assert len({o.key for o in options}) == len(options)  # flat names are unique across sections
    assert all(o.role in ROLES and o.help for o in options)
    free = {o.key for o in options if o.role == "free"}
    assert {"output_dir", "num_threads", "device", "glue_dir", "progress", "resume"} <= free
    assert {o.key for o in options if o.role == "input"} == {"mask", "weight_mask"}
    assert {"importance_abs", "ffn_normalization", "ffn_allocation", "head_normalization"} <= {
        o.key for o in options if o.role == "scoring"}


def test_per_layer_ffn_allocation_needs_neuron_granularity():
    with pytest.raises(UserError, match="--ffn-allocation per-layer needs --ticket-granularity neuron"):
        TrainConfig.of(ffn_allocation="per-layer", ticket_granularity="layer")


@pytest.mark.parametrize("option,value,message", [
    ("lr", float("nan"), "--lr must be a finite number"),
    ("epochs", float("inf"), "--epochs must be a finite number"),
    ("batch_size", 0, "--batch-size must be > 0"),
    ("holdout_fraction", 1.0, "--holdout-fraction must be in [0, 1)"),
    ("unknown_option", 1, "unknown option(s) 'unknown_option'"),
    ("importance_abs", "word", "--importance-abs must be one of batch, example, token"),
    ("ffn_allocation", "uniform", "--ffn-allocation must be one of global, per-layer"),
    ("ffn_normalization", "l1", "--ffn-normalization must be one of layer_l2, none"),
])
def test_each_section_validates_itself(option, value, message):
    with pytest.raises(UserError, match=message.replace("(", r"\(").replace(")", r"\)").replace("[", r"\[")):
        TrainConfig.of(**{option: value})


def test_run_conflicts_by_role(tmp_path):
    base = TrainConfig.of(tasks=["rte"], output_dir=str(tmp_path / "a"))
    saved = base.to_dict()
    # free options never make another run; result options always do
    assert run_conflicts(saved, base.replace(output_dir="elsewhere", num_threads=4, glue_dir="/g", progress=False)) == []
    assert run_conflicts(saved, base.replace(lr=0.5)) == ["lr: 0.0001 -> 0.5"]
    # scoring options count only for a run that scores importance
    assert run_conflicts(saved, base.replace(sparsities=[0.5])) == []
    scoring = base.replace(score_importance=True)
    assert run_conflicts(scoring.to_dict(), scoring.replace(sparsities=[0.5])) == [
        "sparsities: [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9] -> [0.5]"]
    # an older config without a newer option: that option takes its default
    old = {k: v for k, v in saved.items() if k != "head_dropout"}
    assert run_conflicts(old, base) == []


# ---------------------------------------------------------------- MaskMeta


def test_mask_meta_file_form_round_trips():
    meta = MaskMeta(kind="winning", tasks=("rte", "mrpc"), model="m", shape=SHAPE, sparsity=0.3, ffn_sparsity=0.125,
                    param_sparsity=0.30461, scorer="gate_grad", granularity="neuron", seed=3,
                    extra={"source_run": "runs/x"})
    strings = meta.to_strings()
    assert strings == {"kind": "winning", "tasks": "rte,mrpc", "model": "m", "shape": SHAPE.describe(),
                       "sparsity": "0.30", "ffn_sparsity": "0.125", "param_sparsity": "0.3046", "scorer": "gate_grad",
                       "granularity": "neuron", "seed": "3", "source_run": "runs/x"}
    back = MaskMeta.from_strings(strings)
    assert back.to_strings() == strings and back.shape == SHAPE and back.tasks == ("rte", "mrpc")
    assert back.seed == 3 and back.sparsity == 0.3 and back.extra == {"source_run": "runs/x"}


def test_mask_meta_bad_file_values_are_user_errors():
    with pytest.raises(UserError, match="sparsity='lots' is not a number"):
        MaskMeta.from_strings({"sparsity": "lots"})
    with pytest.raises(UserError, match="seed='x' is not an integer"):
        MaskMeta.from_strings({"seed": "x"})
    with pytest.raises(UserError, match="bad encoder shape string"):
        MaskMeta.from_strings({"shape": "L=two"})


def test_merged_keeps_what_all_share_and_drops_per_mask_values():
    a = MaskMeta(kind="winning", tasks=("rte",), model="m", shape=SHAPE, sparsity=0.3, seed=1, scorer="g",
                 extra={"normalize_heads": "layer_l2", "source_run": "a"})
    b = MaskMeta(kind="winning", tasks=("mrpc", "rte"), model="m", shape=SHAPE, sparsity=0.5, seed=2, scorer="h",
                 extra={"normalize_heads": "layer_l2", "source_run": "b"})
    merged = MaskMeta.merged([a, b], "union")
    assert merged == MaskMeta(kind="union", tasks=("rte", "mrpc"), model="m", shape=SHAPE,
                              extra={"normalize_heads": "layer_l2"})


def test_mask_saves_typed_meta_and_union_measures_its_sparsity(tmp_path):
    heads = torch.tensor([[1, 0], [1, 1]], dtype=torch.bool)
    ffn = torch.tensor([[1, 0, 0], [1, 1, 1]], dtype=torch.bool)
    m = Mask(heads, ffn, MaskMeta(kind="winning", tasks=("rte",), shape=SHAPE, sparsity=0.25, seed=4))
    save_mask(m, tmp_path / "m.safetensors")
    back = load_mask(tmp_path / "m.safetensors")
    assert back.meta == m.meta and isinstance(back.meta.shape, EncoderShape)
    union = back | Mask(~heads | heads, ffn, {"kind": "winning", "tasks": "mrpc", "shape": SHAPE.describe()})
    assert union.meta.kind == "union" and union.meta.tasks == ("rte", "mrpc")
    assert union.meta.sparsity == pytest.approx(round(union.sparsity(), 4)) and union.meta.seed is None


# ---------------------------------------------------------------- RunDir / RunResult


def _finish(run: RunDir, config: TrainConfig, results: dict) -> None:
    run.path.mkdir(parents=True, exist_ok=True)
    save_config(config, run.config_path)
    run.results_path.write_text(json.dumps(results))
    run.metrics_path.write_text(json.dumps(results["metrics"]))


def test_run_dir_states_and_typed_result(tmp_path):
    run = RunDir(tmp_path / "r")
    assert run.state() == "new" and not run.finished
    config = TrainConfig.of(tasks=["rte"], output_dir=str(run.path))
    run.path.mkdir()
    save_config(config, run.config_path)
    assert run.state() == "started"
    run.checkpoint_path.write_bytes(b"x")
    assert run.state() == "resumable"
    run.checkpoint_path.unlink()
    _finish(run, config, {"metrics": {"rte": {"accuracy": 61.0}}, "best_epoch": 2, "future_key": [1],
                          "mask": {"mask": "m", "mask_mode": "shared", "params_kept": 900, "params_prunable": 1000}})
    assert run.state() == "finished"
    result = run.result()
    assert result.metrics == {"rte": {"accuracy": 61.0}} and result.best_epoch == 2
    assert result.mask == MaskInfo(mask="m", mask_mode="shared", params_kept=900, params_prunable=1000, sparsity=0.1)
    assert result.params_kept_pct() == 90.0 and result.extra == {"future_key": [1]}
    assert RunResult.from_dict(result.to_dict()) == result
    assert run.config() == config and run.ticket_path("winning", 0.3).name == "winning-0.30.safetensors"


def test_conflicts_compare_masks_by_content_not_path(tmp_path):
    mask = Mask(torch.ones(2, 2, dtype=torch.bool), torch.ones(2, 3, dtype=torch.bool), {"shape": SHAPE.describe()})
    save_mask(mask, tmp_path / "a.safetensors")
    save_mask(mask, tmp_path / "copy-elsewhere.safetensors")
    other = Mask(torch.tensor([[1, 0], [1, 1]]), torch.ones(2, 3), {"shape": SHAPE.describe()})
    save_mask(other, tmp_path / "other.safetensors")
    from masks.mask import tensor_digest

    run = RunDir(tmp_path / "run")
    config = TrainConfig.of(tasks=["rte"], output_dir=str(run.path), mask=str(tmp_path / "a.safetensors"))
    _finish(run, config, {"metrics": {"rte": {"accuracy": 50.0}},
                          "mask": {"mask_mode": "shared", "params_kept": 1, "params_prunable": 1,
                                   "sha256": tensor_digest(tmp_path / "a.safetensors")}})
    assert run.conflicts(config.replace(mask=str(tmp_path / "copy-elsewhere.safetensors"))) == []
    found = run.conflicts(config.replace(mask=str(tmp_path / "other.safetensors")))
    assert len(found) == 1 and "holds other masks than the run trained with" in found[0]
    with pytest.raises(UserError, match="was made with other options: mask:"):
        run.check_matches(config.replace(mask=str(tmp_path / "other.safetensors")))


def test_small_artifacts_leave_out_weights_and_checkpoints(tmp_path):
    run = RunDir(tmp_path / "r")
    _finish(run, TrainConfig.of(tasks=["rte"], output_dir=str(run.path)), {"metrics": {"rte": {"accuracy": 1.0}}})
    for path in (run.log_path, run.importance_path, run.ticket_path("winning", 0.1), run.checkpoint_path,
                 run.model_dir / "heads.safetensors", run.magnitude_mask_path("omp", 0.2)):
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"x")
    names = sorted(str(p) for p in run.small_artifacts())
    assert names == sorted(["config.yaml", "results.json", "metrics.json", "metrics.jsonl", "importance.safetensors",
                            "masks/winning-0.10.safetensors", "weight_masks/omp-0.20.safetensors"])
    assert yaml.safe_load(run.config_path.read_text())["tasks"] == ["rte"]


def test_a_run_that_chose_its_best_epoch_by_the_primary_metric_is_another_run(tmp_path):
    run = RunDir(tmp_path / "r")
    config = TrainConfig.of(tasks=["mrpc"], output_dir=str(run.path))
    metrics = {"mrpc": {"accuracy": 80.0, "f1": 86.0}}
    _finish(run, config, {"metrics": metrics})  # older code: no "selected_by"
    assert any("best-epoch selection" in c for c in run.conflicts(config))
    last = config.replace(keep_best=False)
    _finish(run, last, {"metrics": metrics})
    assert run.conflicts(last) == []  # the last epoch was kept: nothing was selected
    _finish(run, config, {"metrics": metrics, "selected_by": "task_score"})
    assert run.conflicts(config) == []
