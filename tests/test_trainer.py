"""Trainer on a tiny random BERT and synthetic learnable tasks: learns, is deterministic, logs."""

import json

import pytest
import torch

from mtl.config import TrainConfig
from mtl.data import TokenizedSplit
from mtl.model import MultiTaskModel
from mtl.trainer import NonFiniteLossError, TaskData, Trainer, selection_score
from tasks.task_def import TaskDef
from tests.conftest import tiny_bert

CLS = TaskDef(name="has7", head="classification", loss="cross_entropy", labels=("0", "1"), metrics=("accuracy",),
              primary="accuracy", files={"train": "x", "dev": "y"}, dev_splits=("dev",))
REG = TaskDef(name="frac9", head="regression", loss="mse", labels=(), metrics=("pearson", "spearman"),
              primary="pearson", files={"train": "x", "dev": "y"}, dev_splits=("dev",))


def synthetic(task: TaskDef, n: int, seed: int) -> TokenizedSplit:
    """Sequences of random tokens in [10, 40); classification label = contains 7; regression = share of 9s."""
    g = torch.Generator().manual_seed(seed)
    ids, labels = [], []
    for _ in range(n):
        length = int(torch.randint(4, 20, (1,), generator=g))
        seq = torch.randint(10, 40, (length,), generator=g)
        if task.head == "classification":
            has = bool(torch.rand(1, generator=g) < 0.5)
            if has:
                seq[int(torch.randint(1, length, (1,), generator=g))] = 7
            labels.append(int(has))
        else:
            k = int(torch.randint(0, length, (1,), generator=g))
            seq[1:k + 1] = 9
            labels.append(5.0 * float((seq == 9).sum()) / length)
        seq[0] = 2
        ids.append(seq.to(torch.int32))
    dtype = torch.long if task.head == "classification" else torch.float32
    return TokenizedSplit(task.name, "train", ids, None, torch.tensor(labels, dtype=dtype),
                          torch.tensor([len(x) for x in ids]))


def make_trainer(tmp_path, tasks=(CLS, REG), **cfg):
    defaults = dict(tasks=[t.name for t in tasks], output_dir=str(tmp_path), epochs=4, lr=2e-3, batch_size=16,
                    warmup_ratio=0.0, progress=False, seed=3, log_every=5, pooling="mean")
    defaults.update(cfg)
    config = TrainConfig.from_flat(defaults)
    torch.manual_seed(config.optim.seed)
    model = MultiTaskModel(tiny_bert(), list(tasks), pooling=config.model.pooling, head_dropout=0.0)
    data = {t.name: TaskData(t, synthetic(t, 256, 1), {"dev": synthetic(t, 128, 2)}) for t in tasks}
    return Trainer(model, data, config, tmp_path, pad_id=0)


def test_trainer_learns_both_tasks_and_logs(tmp_path):
    summary = make_trainer(tmp_path, epochs=6).train()
    assert summary["metrics"]["has7"]["accuracy"] > 90
    assert summary["metrics"]["frac9"]["pearson"] > 80
    lines = [json.loads(x) for x in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    evals = [x for x in lines if "eval" in x]
    assert [x["epoch"] for x in evals] == [1, 2, 3, 4, 5, 6]
    assert any("loss" in x and set(x["loss"]) == {"has7", "frac9"} for x in lines)
    assert summary["optimizer_steps"] == 6 * 32  # 16 batches per task per epoch, round-robin


def test_training_is_deterministic(tmp_path):
    a = make_trainer(tmp_path / "a", epochs=1).train()
    b = make_trainer(tmp_path / "b", epochs=1).train()
    assert a["metrics"] == b["metrics"]


def test_max_steps_and_grad_accum_count_optimizer_steps(tmp_path):
    s = make_trainer(tmp_path, epochs=10, max_steps=7, grad_accum=2).train()
    assert s["optimizer_steps"] == 7 and s["train_examples"] == 7 * 2 * 16


def test_keep_best_restores_best_epoch(tmp_path):
    trainer = make_trainer(tmp_path, tasks=(CLS,), epochs=3)
    summary = trainer.train()
    best = max(summary["history"], key=lambda r: r["score"])
    assert summary["best_epoch"] == best["epoch"]
    assert trainer.evaluate() == best["eval"]  # the model in hand is the best epoch's


def test_before_batch_sees_every_task(tmp_path):
    seen = []
    trainer = make_trainer(tmp_path, epochs=1)
    trainer.before_batch = seen.append
    trainer.train()
    assert set(seen) == {"has7", "frac9"}


def test_non_finite_loss_names_step_and_task(tmp_path):
    trainer = make_trainer(tmp_path, tasks=(REG,), epochs=1)
    trainer.data["frac9"].train.labels[:] = float("nan")
    with pytest.raises(NonFiniteLossError, match=r"step 1, task frac9"):
        trainer.train()


def test_selection_score_averages_split_suffixes():
    mnli = TaskDef(name="mnli", head="classification", loss="cross_entropy", labels=("a", "b", "c"),
                   metrics=("accuracy",), primary="accuracy", files={"train": "x", "dev_matched": "y", "dev_mismatched": "z"},
                   dev_splits=("dev_matched", "dev_mismatched"), metric_suffix={"dev_matched": "_m", "dev_mismatched": "_mm"})
    score = selection_score({"mnli": {"accuracy_m": 80.0, "accuracy_mm": 82.0}, "has7": {"accuracy": 60.0}},
                            {"mnli": mnli, "has7": CLS})
    assert score == pytest.approx(70.5)
