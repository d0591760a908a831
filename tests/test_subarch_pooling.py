"""The pooling pilot of a sub-architecture study: the chosen run it repeats, its table beside the originals, and
the zero-shot STS-B probe (mean pooling that ignores padding: a sentence paired with itself scores cosine 1 even
when the two sides are padded differently)."""

from __future__ import annotations

import random

import pytest
import yaml

from basics.errors import UserError
from basics.io import atomic_write_json
from experiments.subarch_pooling import chosen_run, embeddings, main, pooling_table, zero_shot
from tests.test_distill import save_tiny_model
from tests.tiny_run import WORDS

pytestmark = pytest.mark.usefixtures("one_thread")


def fake_run(path, task: str, score: float, pooling: str) -> None:
    atomic_write_json(path / "metrics.json", {task: {"accuracy": score}})
    atomic_write_json(path / "results.json", {"metrics": {task: {"accuracy": score}}, "machine": {}})
    (path / "config.yaml").write_text(yaml.safe_dump({"pooling": pooling, "tasks": [task]}), encoding="utf-8")


def test_the_pilot_repeats_the_chosen_run_and_sets_it_beside_the_original(tmp_path):
    full, pilot = tmp_path / "full", tmp_path / "pooling"
    chosen = {"lr": 1e-4, "warmup": 0.06}
    atomic_write_json(full / "table.json", {"tasks": ["rte", "cola"], "rows": [
        {"row": "extracted", "tasks": {"rte": {"chosen": chosen}, "cola": {"chosen": None}}}]})
    assert chosen_run(full, "extracted", "rte") == full / "finetune" / "extracted" / "rte" / "lr0.0001-wu0.06-seed1"
    with pytest.raises(UserError, match="no chosen setting of extracted on cola"):
        chosen_run(full, "extracted", "cola")
    with pytest.raises(UserError, match="no chosen setting of teacher on rte"):
        chosen_run(full, "teacher", "rte")
    fake_run(chosen_run(full, "extracted", "rte"), "rte", 53.0, "cls")
    assert pooling_table(full, pilot)[2:] == []  # no pilot run yet
    fake_run(pilot / "extracted" / "rte" / "mean-seed1", "rte", 55.5, "mean")
    lines = pooling_table(full, pilot)
    assert lines[2] == "| Extracted, not distilled | rte | 53.0 | 55.5 | +2.5 |"
    atomic_write_json(pilot / "zero_shot.json", {"spearman": {"teacher": 86.71, "distilled": 83.3}})
    assert pooling_table(full, pilot)[-2:] == ["| Teacher | 86.7 |", "| Extracted + distilled | 83.3 |"]
    fake_run(pilot / "extracted" / "rte" / "mean-seed1", "rte", 55.5, "cls")  # not the pilot's pooling
    with pytest.raises(UserError, match="pooling cls against cls, expected mean against cls"):
        pooling_table(full, pilot)


def test_zero_shot_sts_ranks_a_sentence_with_itself_first(tmp_path, monkeypatch, capsys):
    model = str(save_tiny_model(tmp_path / "model"))
    rng = random.Random(0)
    sentence = lambda: " ".join(rng.choice(WORDS) for _ in range(rng.randint(3, 14)))  # noqa: E731
    rows = ["index\tgenre\tfilename\tyear\told_index\tsource1\tsource2\tsentence1\tsentence2\tscore"]
    for i in range(40):
        a = sentence()
        same = i % 2 == 0
        rows.append(f"{i}\tg\tf\t2012\t{i}\ts\ts\t{a}\t{a if same else sentence()}\t{5.0 if same else 1.0}")
    (tmp_path / "glue" / "STS-B").mkdir(parents=True)
    (tmp_path / "glue" / "STS-B" / "dev.tsv").write_text("\n".join(rows) + "\n", encoding="utf-8")
    texts = [sentence() for _ in range(5)]
    alone = embeddings(model, texts[:1])
    padded = embeddings(model, texts, batch_size=5)  # the same sentence beside longer ones: padded
    assert (alone[0] - padded[0]).abs().max() < 1e-5
    result = zero_shot({"tiny": model}, tmp_path / "glue")
    assert result["pairs"] == 40 and result["spearman"]["tiny"] > 80  # every identical pair above every other
    monkeypatch.setenv("GLUE_DIR", str(tmp_path / "glue"))
    assert main(["zero-shot", str(tmp_path / "zs.json"), f"tiny={model}"]) == 0
    assert capsys.readouterr().out.startswith("tiny: ")
    with pytest.raises(UserError, match="give each model as NAME=MODEL, got 'tiny'"):
        main(["zero-shot", str(tmp_path / "zs.json"), "tiny"])
