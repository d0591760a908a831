"""torchrun with 2 CPU processes (gloo): the same run as one process, written once by rank 0.

The tiny model has no dropout, so one process and two processes compute the same gradients (each rank
takes half of every batch) and end with the same weights, metrics and importance scores up to float
summation order.
"""

import json
import os
import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file

from mtl.distributed import SINGLE, Dist
from tests.conftest import REPO
from tests.tiny_run import tiny_setup

RUN = ["--epochs", "2", "--log-every", "3", "--head-dropout", "0", "--score-importance", "--sparsities", "0.5",
       "--save-model", "--seed", "3"]


def test_dist_shards_every_item_once():
    items = list(range(11))
    shards = [Dist(rank=r, world_size=3).shard(items) for r in range(3)]
    assert sorted(sum(shards, [])) == items and [len(s) for s in shards] == [4, 4, 3]
    assert SINGLE.shard(items) == items and SINGLE.all_reduce_sum(torch.ones(2)).tolist() == [1.0, 1.0]


def test_torchrun_two_processes_equal_one_process(tmp_path):
    tiny = tiny_setup(tmp_path / "tiny", dropout=0.0)
    two, one = tmp_path / "two", tmp_path / "one"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    r = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                        str(REPO / "train.py"), *tiny, *RUN, "--output-dir", str(two)],
                       capture_output=True, text=True, cwd=REPO, env=env, timeout=900)
    assert r.returncode == 0, r.stderr[-3000:]
    assert r.stdout.count(f"wrote {two / 'metrics.json'}") == 1  # rank 0 alone reports and writes
    log = [json.loads(line) for line in (two / "metrics.jsonl").read_text().splitlines()]
    assert [x["epoch"] for x in log if "eval" in x] == [1, 2]  # each record written once
    assert [x["step"] for x in log if "loss" in x] == list(range(3, 49, 3))
    results = json.loads((two / "results.json").read_text())
    assert results["machine"]["processes"] == 2 and results["optimizer_steps"] == 48
    assert not (two / "checkpoint.pt").exists()

    import train

    assert train.main([*tiny, *RUN, "--output-dir", str(one)]) == 0
    # training: the same weights and metrics (each rank took half of every batch)
    for name, weight in load_file(str(one / "model" / "heads.safetensors")).items():
        assert torch.allclose(load_file(str(two / "model" / "heads.safetensors"))[name], weight, atol=1e-6), name
    metrics_one, metrics_two = (json.loads((d / "metrics.json").read_text()) for d in (one, two))
    for task, values in metrics_one.items():
        assert metrics_two[task] == pytest.approx(values, abs=0.05)
    # importance: every rank scored half of the batches, the raw sums were all-reduced
    imp_one, imp_two = (load_file(str(d / "importance.safetensors")) for d in (one, two))
    for name in ("heads", "ffn", "heads_raw", "ffn_raw", "ffn_layer_raw"):
        assert torch.allclose(imp_two[name], imp_one[name], rtol=1e-4, atol=1e-7), name
    assert load_file(str(two / "masks" / "winning-0.50.safetensors"))["heads"].equal(
        load_file(str(one / "masks" / "winning-0.50.safetensors"))["heads"])
    # evaluation: each rank predicted every other batch; gathered, that is one process's evaluation
    assert single_process_metrics(two / "model", tiny, tmp_path) == metrics_two


def single_process_metrics(model_dir, tiny, tmp_path):
    """Dev metrics of a saved model, evaluated here in one process (one thread, fp32, as the run)."""
    from mtl.config import TrainConfig
    from mtl.model import load_multitask_model
    from mtl.run import load_task_data, resolve_tasks
    from mtl.trainer import Trainer

    option = {k.lstrip("-").replace("-", "_"): v for k, v in zip(tiny, tiny[1:], strict=False) if k.startswith("--")}
    config = TrainConfig.of(tasks=["tinysent", "tinysim"], output_dir=str(tmp_path / "eval"), task_def=[option["task_def"]],
                         cache_dir=option["cache_dir"], eval_batch_size=int(option["eval_batch_size"]),
                         max_seq_length=int(option["max_seq_length"]), precision="fp32", progress=False)
    model, tokenizer = load_multitask_model(model_dir)
    data = load_task_data(resolve_tasks(config)[1], tokenizer, config)
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return Trainer(model, data, config, tmp_path / "eval", pad_id=tokenizer.pad_token_id).evaluate()
    finally:
        torch.set_num_threads(before)
