"""Distillation of an extracted student: the losses are 0 for the teacher itself, the held-out loss falls on a
tiny model (hidden-state + attention objective, and Bort's MLM recipe), and a killed run resumes exactly."""

from __future__ import annotations

import random

import pytest
import torch
from transformers import BertConfig, BertForMaskedLM, BertModel

from basics.errors import UserError
from masks.arch import shape_of
from masks.subarch import Selection, SubArch, select
from masks.subarch_importance import SubarchScores
from mtl.corpus import BatchStream, TokenizedCorpus, glue_sentences, read_text_files, split_heldout
from mtl.distill import DistillConfig, Distiller, read_log, resume_step
from mtl.teacher import is_student_dir, load_teacher, make_student, save_student
from tests.tiny_run import WORDS
from tests.tiny_run import save_tiny_model as save_tokenizer_and_model

pytestmark = pytest.mark.usefixtures("one_thread")


def texts(n: int = 160, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    return [" ".join(rng.choice(WORDS) for _ in range(rng.randint(4, 14))) for _ in range(n)]


def save_tiny_model(path, cls=BertModel, attention_dropout: float = 0.0):
    """A random 3-layer BERT (hidden 32, 4 heads, FFN 37, no dropout by default) whose layers matter: initialised
    at std 0.3 (at the usual 0.02 a random model's layers barely change its embeddings)."""
    save_tokenizer_and_model(path)  # the tokenizer (and a base model, replaced)
    torch.manual_seed(0)
    config = BertConfig.from_pretrained(path, num_hidden_layers=3, initializer_range=0.3, hidden_dropout_prob=0.0,
                                        attention_probs_dropout_prob=attention_dropout)
    cls(config).save_pretrained(path)
    return path


def save_tiny_mlm_model(path):
    return save_tiny_model(path, BertForMaskedLM)


def chosen(teacher, arch=SubArch(1, 2, 20, 16)) -> Selection:
    shape = shape_of(teacher.encoder)
    g = torch.Generator().manual_seed(3)
    scores = SubarchScores(torch.rand(shape.num_layers, generator=g), torch.rand(shape.num_layers, shape.num_heads, generator=g),
                           torch.rand(shape.num_layers, shape.intermediate, generator=g), torch.rand(shape.hidden, generator=g))
    return select(scores, arch)


def corpora(tokenizer):
    train, held = split_heldout(texts(), 32)
    return TokenizedCorpus.of(tokenizer, train, 32), TokenizedCorpus.of(tokenizer, held, 32)


def config(**kw) -> DistillConfig:
    return DistillConfig(**{"steps": 40, "batch_size": 16, "lr": 2e-3, "warmup_ratio": 0.0, "log_every": 5,
                            "checkpoint_every": 0, **kw})


def test_the_teacher_itself_has_zero_loss_and_stays_close(tmp_path):
    for save in (save_tiny_model, save_tiny_mlm_model):
        teacher = load_teacher(str(save(tmp_path / save.__name__)))
        student = make_student(teacher, Selection.full(shape_of(teacher.encoder)))
        train, held = corpora(teacher.tokenizer)
        distiller = Distiller(teacher, student, train, held, config(objective="auto", kd_weight=1.0, mlm_weight=0.0))
        assert distiller.objective == ("mlm" if save is save_tiny_mlm_model else "hidden")
        assert distiller.evaluate()["loss"] < 1e-6
    # with attention dropout: the attention term compares distributions (the student's attention dropout is off
    # while it distils; the probabilities after dropout, with their zeros, are not one), so a copy stays close
    teacher = load_teacher(str(save_tiny_model(tmp_path / "dropout", attention_dropout=0.1)))
    student = make_student(teacher, Selection.full(shape_of(teacher.encoder)))
    train, held = corpora(teacher.tokenizer)
    summary = Distiller(teacher, student, train, held, config(steps=10, lr=1e-4), tmp_path / "copy").run()
    assert max(r["attention"] for r in read_log(tmp_path / "copy") if "attention" in r) < 0.05
    assert summary["heldout"]["loss"] < 0.05 and student.encoder.encoder.layer[0].attention.self.dropout.p == 0.1


@pytest.mark.parametrize("objective", ["hidden", "mlm"])
def test_distillation_lowers_the_heldout_loss(tmp_path, objective):
    path = (save_tiny_mlm_model if objective == "mlm" else save_tiny_model)(tmp_path / "teacher")
    teacher = load_teacher(str(path))
    assert (teacher.mlm_head is not None) == (objective == "mlm")
    # every hidden dimension for the hidden objective: the removed ones' energy is a floor no training lowers
    student = make_student(teacher, chosen(teacher, SubArch(1, 2, 32 if objective == "hidden" else 20, 16)))
    if objective == "mlm":  # the student's decoder is tied to its own (sliced) word embeddings
        assert student.mlm_head.predictions.decoder.weight is student.encoder.embeddings.word_embeddings.weight
    train, held = corpora(teacher.tokenizer)
    summary = Distiller(teacher, student, train, held, config(objective=objective), tmp_path / "run").run()
    assert summary["heldout"]["loss"] < 0.8 * summary["heldout_before"]["loss"]
    log = read_log(tmp_path / "run")
    curve = [r["loss"] for r in log if "loss" in r]
    assert len(curve) == 8 and curve[-1] < curve[0] and "heldout" in log[0] and "heldout" in log[-1]
    save_student(student, teacher.tokenizer, tmp_path / "student", {"teacher": str(path)})
    assert is_student_dir(tmp_path / "student")
    reloaded = load_teacher(str(tmp_path / "student"))  # a plain encoder directory (AutoModel) again
    assert reloaded.encoder.config.hidden_size == (32 if objective == "hidden" else 20) and reloaded.encoder.config.num_hidden_layers == 1


def test_a_killed_distillation_resumes_where_it_stopped(tmp_path, monkeypatch):
    path = save_tiny_model(tmp_path / "teacher")

    def run(out, fail_at=None):
        teacher = load_teacher(str(path))
        train, held = corpora(teacher.tokenizer)
        distiller = Distiller(teacher, make_student(teacher, chosen(teacher)), train, held,
                              config(steps=12, checkpoint_every=5, log_every=2), out)
        if fail_at is not None:
            calls = {"n": 0}
            original = distiller.loss

            def failing(*args):
                calls["n"] += 1
                if calls["n"] == fail_at:
                    raise KeyboardInterrupt
                return original(*args)
            monkeypatch.setattr(distiller, "loss", failing)
        return distiller.run()

    straight = run(tmp_path / "straight")
    with pytest.raises(KeyboardInterrupt):
        run(tmp_path / "killed", fail_at=1 + 8 + 1)  # held-out eval (1 batch), 8 steps, then killed at step 9
    assert (tmp_path / "killed" / "checkpoint.pt").is_file()
    assert resume_step(tmp_path / "killed", 5) == 5  # logged up to step 8, checkpointed at step 5
    resumed = run(tmp_path / "killed")
    assert resume_step(tmp_path / "killed", 5) == 0  # finished: no checkpoint
    assert not (tmp_path / "killed" / "checkpoint.pt").exists()
    assert abs(resumed["heldout"]["loss"] - straight["heldout"]["loss"]) < 1e-6
    assert [r["step"] for r in read_log(tmp_path / "killed")] == [r["step"] for r in read_log(tmp_path / "straight")]
    with pytest.raises(UserError, match="distillation steps must be >= 0"):
        DistillConfig(steps=-1)


def test_corpus_files_glue_sentences_and_batches(tmp_path, glue):
    (tmp_path / "a.txt").write_text("one\n\n two \n", encoding="utf-8")
    assert read_text_files([tmp_path / "a.txt"]) == ["one", "two"]
    with pytest.raises(UserError, match="corpus file not found"):
        read_text_files([tmp_path / "missing.txt"])
    sentences = glue_sentences(glue, ["rte"])
    assert len(sentences) == len(set(sentences)) > 2490  # premises and hypotheses of the RTE training set
    train, held = split_heldout(texts(50), 10)
    assert len(train) == 40 and len(held) == 10 and split_heldout(texts(50), 10) == (train, held)
    teacher = load_teacher(str(save_tiny_model(tmp_path / "m")))
    corpus = TokenizedCorpus.of(teacher.tokenizer, train, 16)
    stream = BatchStream(corpus, 8, seed=1)
    first = [b["input_ids"] for _, b in zip(range(7), iter(stream), strict=False)]
    again = [b["input_ids"] for _, b in zip(range(2), iter(BatchStream(corpus, 8, seed=1, position=5)), strict=False)]
    assert all(torch.equal(a, b) for a, b in zip(first[5:], again, strict=True))
