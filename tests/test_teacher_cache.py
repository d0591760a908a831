"""The teacher cache: a student distilled from the cached teacher outputs follows exactly the path of one
distilled from the live teacher (losses, held-out losses, weights), in fp32 and bf16; a resumed run reads the
right batches; a cache made for other batches is refused in one line."""

from __future__ import annotations

import json

import pytest
import torch

from basics.errors import UserError
from mtl.corpus import TokenizedCorpus
from mtl.distill import Distiller, read_log
from mtl.teacher import load_teacher, make_student
from mtl.teacher_cache import write_teacher_cache
from tests.test_distill import chosen, config, corpora, save_tiny_mlm_model, save_tiny_model

pytestmark = pytest.mark.usefixtures("one_thread")


def distil(teacher, train, held, cfg, out, cache=None):
    student = make_student(teacher, chosen(teacher))
    summary = Distiller(teacher, student, train, held, cfg, out, teacher_cache=cache).run()
    return summary, read_log(out), student


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_cached_teacher_gives_the_same_distillation(tmp_path, precision):
    teacher = load_teacher(str(save_tiny_model(tmp_path / "teacher")))
    train, held = corpora(teacher.tokenizer)
    cfg = config(steps=12, precision=precision, eval_every=5, eval_batch_size=8)
    live, live_log, live_student = distil(teacher, train, held, cfg, tmp_path / "live")
    cache = write_teacher_cache(teacher, train, held, cfg, tmp_path / "cache")
    assert json.loads((tmp_path / "cache" / "cache.json").read_text())["batches"] == {"train": 12, "heldout": 4}
    cached, cached_log, cached_student = distil(teacher, train, held, cfg, tmp_path / "cached", cache)
    assert cached["heldout_before"] == live["heldout_before"] and cached["heldout"] == live["heldout"]
    strip = lambda log: [{k: v for k, v in r.items() if k != "seconds"} for r in log]  # noqa: E731
    assert strip(cached_log) == strip(live_log)
    for (name, a), (_, b) in zip(live_student.encoder.state_dict().items(), cached_student.encoder.state_dict().items()):
        assert torch.equal(a, b), name


def test_cache_is_reused_and_checked(tmp_path):
    teacher = load_teacher(str(save_tiny_model(tmp_path / "teacher")))
    train, held = corpora(teacher.tokenizer)
    cfg = config(steps=6)
    write_teacher_cache(teacher, train, held, cfg, tmp_path / "cache")
    first = (tmp_path / "cache" / "train-00000.safetensors").stat().st_mtime_ns
    cache = write_teacher_cache(teacher, train, held, cfg, tmp_path / "cache")  # finished: not redone
    assert (tmp_path / "cache" / "train-00000.safetensors").stat().st_mtime_ns == first
    with pytest.raises(UserError, match="made for other seed;"):
        Distiller(teacher, make_student(teacher, chosen(teacher)), train, held, config(steps=6, seed=2), teacher_cache=cache)
    other_train, _ = corpora(teacher.tokenizer)
    other_train.ids = other_train.ids[1:]
    with pytest.raises(UserError, match="made for other train"):
        cache.check(teacher, other_train, held, cfg)
    # a batch that holds other texts than the cached one is refused, not silently compared with the wrong outputs
    with pytest.raises(UserError, match="holds other texts"):
        cache.outputs("train", 1, torch.zeros(2, 3, dtype=torch.long))
    # an unfinished cache (no cache.json) is rebuilt
    (tmp_path / "cache" / "cache.json").unlink()
    (tmp_path / "cache" / "train-00003.safetensors").unlink()
    write_teacher_cache(teacher, train, held, cfg, tmp_path / "cache")
    assert (tmp_path / "cache" / "train-00003.safetensors").is_file()


def test_resumed_run_reads_the_right_cached_batches(tmp_path):
    teacher = load_teacher(str(save_tiny_model(tmp_path / "teacher")))
    train, held = corpora(teacher.tokenizer)
    cfg = config(steps=10, checkpoint_every=4)
    cache = write_teacher_cache(teacher, train, held, cfg, tmp_path / "cache")
    whole, _, _ = distil(teacher, train, held, cfg, tmp_path / "whole", cache)

    class Stop(Exception):
        pass

    student = make_student(teacher, chosen(teacher))
    distiller = Distiller(teacher, student, train, held, cfg, tmp_path / "resumed", teacher_cache=cache)
    calls = {"n": 0}
    original = distiller.loss

    def loss(*args, **kwargs):  # killed after step 6 (checkpoint at 4)
        calls["n"] += 1
        if calls["n"] > 1 + 6:  # 1 held-out batch before training
            raise Stop
        return original(*args, **kwargs)

    distiller.loss = loss
    with pytest.raises(Stop):
        distiller.run()
    student = make_student(teacher, chosen(teacher))
    resumed = Distiller(teacher, student, train, held, cfg, tmp_path / "resumed", teacher_cache=cache).run()
    assert resumed["heldout"] == whole["heldout"]


def test_cache_serves_the_hidden_objective_only(tmp_path):
    teacher = load_teacher(str(save_tiny_mlm_model(tmp_path / "mlm")))
    train, held = corpora(teacher.tokenizer)
    with pytest.raises(UserError, match="hidden objective only"):
        write_teacher_cache(teacher, train, held, config(steps=4), tmp_path / "cache")


def test_zero_steps_with_no_training_text_only_measures_the_heldout_loss(tmp_path):
    """A search that distils 0 steps (its error is a fine-tune of the bare extraction) tokenizes no training text:
    the cache holds the held-out batches only, and the held-out loss equals the live teacher's."""
    teacher = load_teacher(str(save_tiny_model(tmp_path / "teacher")))
    _, held = corpora(teacher.tokenizer)
    train = TokenizedCorpus.of(teacher.tokenizer, [], 16)
    assert len(train) == 0
    cfg = config(steps=0, eval_batch_size=8)
    live, live_log, student = distil(teacher, train, held, cfg, tmp_path / "live")
    cache = write_teacher_cache(teacher, train, held, cfg, tmp_path / "cache")
    assert json.loads((tmp_path / "cache" / "cache.json").read_text())["batches"] == {"train": 0, "heldout": 4}
    cached, _, _ = distil(teacher, train, held, cfg, tmp_path / "cached", cache)
    assert live["steps"] == 0 and cached["heldout"] == live["heldout"] == live["heldout_before"]
    untouched = make_student(teacher, chosen(teacher))
    for (name, a), (_, b) in zip(student.encoder.state_dict().items(), untouched.encoder.state_dict().items()):
        assert torch.equal(a, b), name
