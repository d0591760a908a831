"""Resume after a crash: a train.py killed with SIGKILL mid-run and resumed ends exactly like a run that was
never interrupted; checkpoints are atomic; --resume refuses a changed config."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch

from basics.errors import UserError
from basics.io import atomic_write, atomic_write_dir
from mtl.checkpoint import load_checkpoint, remove_temporaries
from mtl.config import TrainConfig
from mtl.model import MultiTaskModel
from mtl.trainer import TaskData, Trainer
from tests.conftest import REPO, tiny_bert
from tests.test_trainer import CLS, REG, synthetic
from tests.tiny_run import tiny_setup

RUN = ["--epochs", "6", "--checkpoint-every", "3", "--log-every", "1", "--seed", "5", "--deterministic"]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return tiny_setup(tmp_path_factory.mktemp("tiny"))


def train_main(args, capsys=None):
    """``(exit code, stdout, stderr)`` of train.py run in this process."""
    import train

    code = train.main(args)
    out, err = capsys.readouterr() if capsys is not None else ("", "")
    return code, out, err


def read_run(out):
    results = json.loads((out / "results.json").read_text())
    return {"metrics": json.loads((out / "metrics.json").read_text()), "history": results["history"],
            "steps": results["optimizer_steps"], "log": (out / "metrics.jsonl").read_text()}


def wait_for_step(out, proc, step, timeout=600):
    """Block until metrics.jsonl logs optimizer step ``step`` (the child is then mid-run)."""
    log, deadline = out / "metrics.jsonl", time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"train.py ended before step {step}: {proc.stderr.read()[-2000:]}")
        lines = log.read_text().splitlines() if log.is_file() else []
        if any(json.loads(x).get("step", 0) >= step and "loss" in x for x in lines if x.endswith("}")):
            return
        time.sleep(0.005)
    pytest.fail(f"no step {step} within {timeout}s")


def test_sigkill_mid_run_then_resume_equals_uninterrupted_run(tiny, tmp_path, capsys):
    reference = tmp_path / "reference"
    assert train_main([*tiny, *RUN, "--output-dir", str(reference)])[0] == 0

    out = tmp_path / "killed"
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    proc = subprocess.Popen([sys.executable, str(REPO / "train.py"), *tiny, *RUN, "--output-dir", str(out)],
                            cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        wait_for_step(out, proc, 40)  # of 144: mid-epoch 2
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait(timeout=600)
    assert proc.returncode == -signal.SIGKILL
    assert not (out / "metrics.json").exists()
    step = load_checkpoint(out / "checkpoint.pt")["progress"]["opt_step"]
    assert 39 <= step < 144

    code, stdout, err = train_main(["--output-dir", str(out), "--resume"], capsys)  # options from its config.yaml
    assert code == 0, err
    assert f"resuming {out} from optimizer step {step}" in stdout
    assert read_run(out) == read_run(reference)  # metrics, per-epoch history, step count, the whole log
    assert not (out / "checkpoint.pt").exists()  # removed once the run is complete


# A child train.py that SIGKILLs itself in the middle of the final model/ save, at one of these points:
KILL_DURING_SAVE = """
import os, signal, sys
import transformers.modeling_utils as modeling_utils
import mtl.model
point = os.environ["KILL_AT"]
real_save = modeling_utils.safe_save_file

def half_then_kill(tensors, filename, *args, **kwargs):  # the encoder's weights file half written
    real_save(tensors, filename, *args, **kwargs)
    data = open(filename, "rb").read()
    open(filename, "wb").write(data[: len(data) // 2])
    os.kill(os.getpid(), signal.SIGKILL)

def kill(*args, **kwargs):
    os.kill(os.getpid(), signal.SIGKILL)

if point == "encoder weights":
    modeling_utils.safe_save_file = half_then_kill
elif point == "task heads":
    mtl.model.save_file = kill
elif point == "model.json":
    mtl.model.atomic_write_json = kill
import train
sys.exit(train.main(sys.argv[1:]))
"""


SAVE_RUN = ["--epochs", "2", "--seed", "5", "--deterministic", "--save-model"]


@pytest.fixture(scope="module")
def saved_reference(tiny, tmp_path_factory):
    """An uninterrupted run that saves its model (once for the module)."""
    reference = tmp_path_factory.mktemp("reference") / "run"
    assert train_main([*tiny, *SAVE_RUN, "--output-dir", str(reference)])[0] == 0
    return reference


@pytest.mark.parametrize("point", ["encoder weights", "task heads", "model.json"])
def test_sigkill_during_the_final_model_save_then_resume_completes(point, tiny, saved_reference, tmp_path, capsys):
    """The run is not finished until model/ is whole: killed while saving it, ``--resume`` completes the run, with
    the metrics of a run never interrupted and a model/ that loads; a half-written model/ is never left in place."""
    from mtl.model import load_multitask_model

    args, reference = [*tiny, *SAVE_RUN], saved_reference
    out = tmp_path / "killed"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "KILL_AT": point}
    proc = subprocess.run([sys.executable, "-c", KILL_DURING_SAVE, *args, "--output-dir", str(out)], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-2000:]
    assert not (out / "metrics.json").exists() and (out / "checkpoint.pt").exists()
    assert not (out / "model").exists()  # the half-written model lies in a temporary folder, not in model/

    code, stdout, err = train_main(["--output-dir", str(out), "--resume"], capsys)
    assert code == 0, err
    assert read_run(out) == read_run(reference)
    assert not (out / "checkpoint.pt").exists() and [p.name for p in out.glob(".*")] == []  # no temporaries left
    model, _ = load_multitask_model(out / "model")
    want, _ = load_multitask_model(reference / "model")
    for a, b in zip(model.state_dict().values(), want.state_dict().values(), strict=True):
        assert torch.equal(a, b)


def small_trainer(out, **overrides):
    """A Trainer on two small synthetic tasks (tests/test_trainer.py), dropout on, keep_best on."""
    config = TrainConfig.from_flat({**dict(tasks=["has7", "frac9"], output_dir=str(out), epochs=3, lr=2e-3, batch_size=8,
                                   grad_accum=3, checkpoint_every=2, progress=False, seed=3, log_every=2,
                                   pooling="mean"), **overrides})
    torch.manual_seed(config.optim.seed)
    model = MultiTaskModel(tiny_bert(), [CLS, REG], pooling="mean", head_dropout=0.1)
    data = {t.name: TaskData(t, synthetic(t, 40, 1), {"dev": synthetic(t, 24, 2)}) for t in (CLS, REG)}
    return Trainer(model, data, config, out, pad_id=0)


def test_trainer_resumes_bitwise_from_any_checkpoint(tmp_path, one_thread):
    """In memory, crashes at several batches: gradient accumulation (3) spans epoch ends (10 batches)."""
    full = small_trainer(tmp_path / "full")
    expected = full.train()

    class Crash(Exception):
        pass

    for crash_after in (4, 13, 29):
        out = tmp_path / f"crash{crash_after}"
        crashed = small_trainer(out)
        batches = iter(range(10**6))

        def before_batch(task, crashed=crashed, batches=batches, crash_after=crash_after):
            if crashed.model.training and next(batches) == crash_after:
                raise Crash

        crashed.before_batch = before_batch
        with pytest.raises(Crash):
            crashed.train()
        checkpoint = load_checkpoint(out / "checkpoint.pt") if (out / "checkpoint.pt").exists() else None
        assert (checkpoint is None) == (crash_after < 6)  # the first checkpoint: optimizer step 2 = batch 6
        resumed = small_trainer(out)
        summary = resumed.train(checkpoint)
        assert summary["metrics"] == expected["metrics"] and summary["history"] == expected["history"]
        assert (out / "metrics.jsonl").read_text() == (tmp_path / "full" / "metrics.jsonl").read_text()
        for a, b in zip(resumed.model.state_dict().values(), full.model.state_dict().values(), strict=True):
            assert torch.equal(a, b)


def test_resume_refuses_a_changed_option_and_accepts_free_ones(tiny, tmp_path, capsys):
    out = tmp_path / "run"
    assert train_main([*tiny, "--epochs", "1", "--output-dir", str(out)])[0] == 0
    before = read_run(out)
    code, _, err = train_main([*tiny, "--epochs", "1", "--lr", "0.01", "--output-dir", str(out), "--resume"], capsys)
    assert code == 2 and err.strip().splitlines() == [
        f"error: --resume: options differ from the run in {out / 'config.yaml'} (lr: 0.0001 -> 0.01); "
        "drop them, or use a new --output-dir"]
    # a finished run: nothing to do, nothing rewritten; --num-threads / --progress may differ
    code, stdout, err = train_main(["--output-dir", str(out), "--resume", "--num-threads", "2"], capsys)
    assert code == 0, err
    assert f"nothing to resume: {out} holds a finished run" in stdout
    assert read_run(out) == before


def test_resume_without_checkpoint_starts_from_the_beginning(tiny, tmp_path, capsys):
    out = tmp_path / "new"
    code, stdout, err = train_main([*tiny, "--epochs", "1", "--output-dir", str(out), "--resume"], capsys)
    assert code == 0, err
    assert f"no checkpoint in {out}: starting from the beginning" in stdout
    assert (out / "metrics.json").is_file()


def test_non_finite_loss_names_step_and_task_and_keeps_the_last_good_checkpoint(tiny, tmp_path, capsys):
    out = tmp_path / "run"
    assert train_main([*tiny, "--epochs", "1", "--output-dir", str(out)])[0] == 0  # an earlier, finished run
    code, _, err = train_main([*tiny, "--epochs", "1", "--lr", "1e30", "--max-grad-norm", "0", "--warmup-ratio", "0",
                            "--checkpoint-every", "1", "--output-dir", str(out)], capsys)
    assert code == 2
    assert err.strip().splitlines() == [
        "error: non-finite loss (nan) at step 2, task tinysim, epoch 1; try a lower --lr; "
        f"the last good checkpoint (step 1) is kept in {out / 'checkpoint.pt'}"]
    assert load_checkpoint(out / "checkpoint.pt")["progress"]["opt_step"] == 1
    # the earlier run's results are gone: nothing says this directory holds a finished run
    assert not (out / "metrics.json").exists() and not (out / "results.json").exists()


def test_atomic_write_keeps_the_old_file_when_the_writer_dies(tmp_path):
    path = tmp_path / "checkpoint.pt"
    path.write_text("old")

    def half_then_crash(tmp):
        tmp.write_text("half")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        atomic_write(path, half_then_crash)
    assert path.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["checkpoint.pt"]


def test_atomic_write_dir_replaces_a_folder_whole_or_not_at_all(tmp_path):
    target = tmp_path / "model"
    target.mkdir()
    (target / "old.txt").write_text("old")

    def half_then_crash(folder):
        (folder / "new.txt").write_text("half")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        atomic_write_dir(target, half_then_crash)
    assert [p.name for p in tmp_path.iterdir()] == ["model"] and [p.name for p in target.iterdir()] == ["old.txt"]
    atomic_write_dir(target, lambda folder: (folder / "new.txt").write_text("new"))
    assert [p.name for p in tmp_path.iterdir()] == ["model"] and [p.name for p in target.iterdir()] == ["new.txt"]
    (tmp_path / ".model.abc.tmp").mkdir()  # what a SIGKILL leaves
    (tmp_path / ".metrics.json.abc.tmp").write_text("")
    remove_temporaries(tmp_path)
    assert [p.name for p in tmp_path.iterdir()] == ["model"]


def test_unreadable_checkpoint_is_one_clear_error(tmp_path):
    path = tmp_path / "checkpoint.pt"
    path.write_bytes(b"\x00not a checkpoint")
    with pytest.raises(UserError, match="cannot read checkpoint .* delete it to start the run over"):
        load_checkpoint(path)
    torch.save({"model": {}}, path)
    with pytest.raises(UserError, match="not a training checkpoint"):
        load_checkpoint(path)
