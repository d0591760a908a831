"""SQuAD-format span QA through the real commands, on a SQuAD folder and a tiny model the test builds: train ->
score -> tickets -> rewind -> predict -> compact, multi-task with another task, and the EM/F1 the toolkit reports
equal to the official scripts' EM/F1 of the predictions it wrote."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from commands import compact, predict, train
from masks.mask import load_mask
from tests.squad_files import write_squad_dir
from tests.test_squad_metrics import v1_evaluate, v2_evaluate
from tests.tiny_run import save_tiny_model, write_tiny_tasks

SMALL = ["--max-seq-length", "32", "--doc-stride", "8", "--batch-size", "8", "--eval-batch-size", "16",
         "--precision", "fp32", "--num-threads", "1", "--no-progress", "--lr", "3e-3"]


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("squad")
    data = write_squad_dir(root / "data")
    model = save_tiny_model(root / "model")
    return root, ["--model", str(model), "--glue-dir", str(data), "--cache-dir", str(root / "cache"), *SMALL]


@pytest.fixture(scope="module")
def v1_run(setup):
    root, common = setup
    out = root / "v1"
    code = train.main(["--tasks", "squad", "--output-dir", str(out), *common, "--epochs", "3",
                       "--score-importance", "--sparsities", "0.5", "--score-batches", "3"])
    assert code == 0
    return out


def _predict(run: Path, task: str, source: Path, out: Path, capsys, *more: str) -> tuple[dict, dict]:
    code = predict.main(["--model", str(run), "--task", task, "--input", str(source), "--output", str(out / "p.json"),
                         "--eval-output", str(out / "eval.json"), "--no-progress", "--num-threads", "1", *more])
    assert code == 0, capsys.readouterr().err
    return json.loads((out / "p.json").read_text()), json.loads((out / "eval.json").read_text())


def _golds(path: Path) -> dict[str, list[str]]:
    document = json.loads(path.read_text())
    return {qa["id"]: [a["text"] for a in qa["answers"]]
            for article in document["data"] for p in article["paragraphs"] for qa in p["qas"]}


def test_train_score_tickets_predict_v1(setup, v1_run, tmp_path, capsys):
    root, common = setup
    metrics = json.loads((v1_run / "metrics.json").read_text())
    assert set(metrics["squad"]) == {"exact", "f1"}
    results = json.loads((v1_run / "results.json").read_text())
    assert results["data"]["squad"] == {"train": 27, "dev": 15}  # questions, not windows
    masks = {p.name for p in (v1_run / "masks").iterdir()}
    assert masks == {"winning-0.50.safetensors", "random-0.50.safetensors", "losing-0.50.safetensors"}
    winning = load_mask(v1_run / "masks" / "winning-0.50.safetensors")
    assert winning.meta.tasks == ("squad",) and 0 < winning.num_heads_kept < winning.heads.numel()

    dev = root / "data" / "SQuAD" / "dev-v1.1.json"
    answers, scores = _predict(v1_run, "squad", dev, tmp_path, capsys)
    golds = _golds(dev)
    assert set(answers) == set(golds) and any(answers.values())
    reference = v1_evaluate(golds, answers)  # the official script's numbers of the written predictions
    assert scores["exact"] == pytest.approx(reference["exact"]) and scores["f1"] == pytest.approx(reference["f1"])
    assert scores["total"] == len(golds)
    # the run's dev metrics are these predictions' (same windows, batches, fp32)
    assert metrics["squad"]["exact"] == pytest.approx(scores["exact"]) and metrics["squad"]["f1"] == pytest.approx(scores["f1"])

    # hand-computed: make the predicted answer the only gold of 5 of the 15 questions, and an answer sharing no word
    # with the prediction the gold of the others: EM = F1 = 5/15
    document = json.loads(dev.read_text())
    hits = 0
    for p in document["data"][0]["paragraphs"]:
        for qa in p["qas"]:
            text = answers[qa["id"]]
            words = set(text.split())
            if hits < 5 and text and text in p["context"]:
                qa["answers"] = [{"text": text, "answer_start": p["context"].index(text)}]
                hits += 1
                continue
            context_words = p["context"].split(" ")
            i = next(i for i, w in enumerate(context_words) if w not in words and w not in ("a", "the"))
            qa["answers"] = [{"text": context_words[i], "answer_start": len(" ".join(context_words[:i] + [""]))}]
    assert hits == 5
    edited = tmp_path / "edited.json"
    edited.write_text(json.dumps(document))
    _, scores = _predict(v1_run, "squad", edited, tmp_path, capsys)
    assert scores["exact"] == pytest.approx(100 / 3) and scores["f1"] == pytest.approx(100 / 3)


def test_rewind_ticket_and_compact(setup, v1_run, tmp_path, capsys):
    root, common = setup
    mask = v1_run / "masks" / "winning-0.50.safetensors"
    rewound = tmp_path / "rewound"
    assert train.main(["--tasks", "squad", "--output-dir", str(rewound), *common, "--epochs", "1", "--mask", str(mask)]) == 0
    assert json.loads((rewound / "results.json").read_text())["mask"]["mask_kind"] == "winning"
    assert compact.main(["--run", str(rewound), "--out", str(tmp_path / "compact")]) == 0
    dev = root / "data" / "SQuAD" / "dev-v1.1.json"
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    masked, masked_scores = _predict(rewound, "squad", dev, tmp_path / "a", capsys)
    compacted, compact_scores = _predict(tmp_path / "compact", "squad", dev, tmp_path / "b", capsys)
    assert compacted == masked and compact_scores == masked_scores
    metrics = json.loads((rewound / "metrics.json").read_text())["squad"]
    assert metrics["f1"] == pytest.approx(masked_scores["f1"])


def test_multitask_v2_with_another_task(setup, tmp_path, capsys):
    root, common = setup
    task_def = write_tiny_tasks(tmp_path / "tiny", n_train=32, n_dev=16)
    out = tmp_path / "mt"
    assert train.main(["--tasks", "squad_v2,tinysent", "--task-def", str(task_def), "--output-dir", str(out), *common,
                       "--epochs", "1", "--sampler", "proportional", "--score-importance", "--sparsities", "0.5",
                       "--ticket-kinds", "winning"]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert set(metrics) == {"squad_v2", "tinysent"} and set(metrics["squad_v2"]) == {"exact", "f1"}
    assert load_mask(out / "masks" / "winning-0.50.safetensors").meta.tasks == ("squad_v2", "tinysent")
    dev = root / "data" / "SQuAD" / "dev-v2.0.json"
    answers, scores = _predict(out, "squad_v2", dev, tmp_path, capsys,
                               "--nbest-output", str(tmp_path / "nbest.json"), "--null-odds-output", str(tmp_path / "odds.json"))
    odds = json.loads((tmp_path / "odds.json").read_text())
    nbest = json.loads((tmp_path / "nbest.json").read_text())
    assert set(odds) == set(nbest) == set(answers)
    for qid, answer in answers.items():  # the default null threshold 0: "" exactly when the odds are positive
        assert (answer == "") == (odds[qid] > 0), qid
        assert sum(e["probability"] for e in nbest[qid]) == pytest.approx(1.0)
        assert answer in {e["text"] for e in nbest[qid]}
        assert any(e["text"] == "" for e in nbest[qid])  # the null entry
    # the official v2.0 script: the scores of the answers, and the best thresholds given the null odds as its
    # --na-prob-file
    reference = v2_evaluate(_golds(dev), answers)
    reference.update({k: v for k, v in v2_evaluate(_golds(dev), answers, odds).items() if k.startswith("best_")})
    assert scores.keys() == reference.keys() and {"HasAns_f1", "NoAns_f1", "best_f1", "best_f1_thresh"} <= set(scores)
    for key, value in reference.items():
        assert scores[key] == pytest.approx(value), key
    assert metrics["squad_v2"]["f1"] == pytest.approx(scores["f1"])
    assert scores["best_f1"] >= scores["f1"] - 1e-9  # the threshold search can only do better on the same file


def test_user_errors_are_one_line(setup, v1_run, tmp_path, capsys):
    root, common = setup
    code = train.main(["--tasks", "squad", "--output-dir", str(tmp_path / "x"), *common, "--doc-stride", "64"])
    err = capsys.readouterr().err
    assert code == 2 and "--doc-stride 64" in err and "Traceback" not in err
    code = predict.main(["--model", str(v1_run), "--task", "squad", "--input", str(root / "data" / "SQuAD" / "dev-v1.1.json"),
                         "--output", str(tmp_path / "p.tsv"), "--no-progress"])
    err = capsys.readouterr().err
    assert code == 2 and "*.json" in err and len(err.strip().splitlines()) == 1
    code = predict.main(["--model", str(v1_run), "--task", "squad", "--input", str(root / "data" / "SQuAD" / "dev-v1.1.json"),
                         "--null-odds-output", str(tmp_path / "odds.json"), "--no-progress"])
    err = capsys.readouterr().err
    assert code == 2 and "no unanswerable questions" in err and len(err.strip().splitlines()) == 1
