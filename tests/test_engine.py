"""The study engine: job graphs, locks, results folders, and a tiny phase-transition study run on the
local backend with 1 and 2 workers, killed with SIGKILL, shared by two schedulers, continued from a
results folder on a fresh output folder, and run on a local Ray cluster."""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

import mtl.run
from basics.errors import UserError
from experiments import phase_transition as pt
from experiments.engine.backends import InlineBackend, LocalBackend
from experiments.engine.cost import CostModel
from experiments.engine.jobs import Job, JobGraph
from experiments.engine.locks import RunLock
from experiments.engine.options import (
    EngineOptions,
    add_engine_flags,
    engine_options,
    make_backend,
    parse_duration,
    plan_text,
    run_study_graph,
)
from experiments.engine.results_dir import ResultsDir
from experiments.engine.scheduler import Scheduler, StudyFailed, raise_if_failed
from mtl.config import TrainConfig, save_config
from mtl.rundir import RunDir
from tests.conftest import REPO
from tests.tiny_run import tiny_setup

# ---------------------------------------------------------------- steps used as jobs (module level: picklable)


def write_file(path: str, text: str) -> None:
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text(text)


def fail() -> None:
    raise RuntimeError("planted failure")


def die() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


def step(name: str, tmp: Path, action=write_file, deps=(), where="scheduler", **kw) -> Job:
    args = (str(tmp / f"{name}.txt"), name) if action is write_file else ()
    return Job(name, deps=tuple(deps), action=action, args=args, where=where, **kw)


# ---------------------------------------------------------------- graph, locks, results folder


def test_graph_orders_by_dependencies_and_refuses_cycles(tmp_path):
    graph = JobGraph([step("b", tmp_path, deps=["a"]), step("a", tmp_path), step("c", tmp_path, deps=["a", "b"])])
    assert [j.name for j in graph.order()] == ["a", "b", "c"]
    assert graph.dependents("a") == ["b", "c"]
    with pytest.raises(ValueError, match="cycle"):
        JobGraph([step("x", tmp_path, deps=["y"]), step("y", tmp_path, deps=["x"])]).order()
    with pytest.raises(ValueError, match="unknown job"):
        JobGraph([step("x", tmp_path, deps=["nope"])]).validate()
    config = TrainConfig.of(tasks=["rte"], output_dir=str(tmp_path / "run"))
    with pytest.raises(UserError, match="write the same run directory"):
        JobGraph([Job("r1", config=config), Job("r2", config=config)]).validate()


def test_only_keeps_the_matching_jobs_and_what_they_depend_on(tmp_path):
    graph = JobGraph([step("scores", tmp_path), step("cand/a/error", tmp_path, deps=["scores"]),
                      step("cand/a/latency", tmp_path, deps=["scores"]), step("cand/b/error", tmp_path, deps=["scores"]),
                      step("select", tmp_path, deps=["cand/a/error", "cand/a/latency", "cand/b/error"])])
    assert [j.name for j in graph.only(["cand/*/error"]).order()] == ["scores", "cand/a/error", "cand/b/error"]
    assert [j.name for j in graph.only(["cand/a/*", "scores"]).order()] == ["scores", "cand/a/error", "cand/a/latency"]
    assert len(graph.only(["select"])) == 5
    with pytest.raises(UserError, match=r"--only cand/\*/reference matches no job"):
        graph.only(["cand/*/error", "cand/*/reference"])
    parser = argparse.ArgumentParser()
    add_engine_flags(parser)
    assert engine_options(parser.parse_args(["--only", "cand/*/error, select"])).only == ("cand/*/error", "select")


def test_lock_is_exclusive_and_a_dead_owners_lock_is_taken_over(tmp_path):
    mine = RunLock(tmp_path)
    assert mine.acquire()
    other = RunLock(tmp_path)
    other.pid = mine.pid + 10**6  # another process of this host
    assert not other.acquire()  # a live owner (this process) holds it
    mine.release()
    assert not (tmp_path / ".lock").exists()
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    (tmp_path / ".lock").write_text(json.dumps({"host": mine.host, "pid": int(dead.stdout), "started": 0}))
    assert mine.acquire()  # the owner's pid is gone: stale
    remote = RunLock(tmp_path, stale_after=0.5)
    remote.host, remote.pid = "other-host", 1
    assert not remote.acquire()
    time.sleep(0.7)  # no heartbeat from this host's owner for longer than stale_after
    assert remote.acquire() and remote.holder().host == "other-host"


def test_results_dir_mirrors_small_artifacts_and_restores_them(tmp_path):
    out, results = tmp_path / "out", tmp_path / "results"
    run = RunDir(out / "tickets" / "rte" / "dense-seed1")
    run.path.mkdir(parents=True)
    save_config(TrainConfig.of(tasks=["rte"], output_dir=str(run.path)), run.config_path)
    run.results_path.write_text(json.dumps({"metrics": {"rte": {"accuracy": 60.0}}}))
    run.metrics_path.write_text(json.dumps({"rte": {"accuracy": 60.0}}))
    (run.model_dir).mkdir()
    (run.model_dir / "heads.safetensors").write_bytes(b"weights")
    rd = ResultsDir(results, out)
    copied = rd.publish_run(run)
    assert sorted(p.name for p in copied) == ["config.yaml", "metrics.json", "results.json"]
    assert not (results / "tickets" / "rte" / "dense-seed1" / "model").exists()  # no weights
    fresh = RunDir(tmp_path / "elsewhere" / "tickets" / "rte" / "dense-seed1")
    assert ResultsDir(results, tmp_path / "elsewhere").restore_run(fresh)
    assert fresh.finished and fresh.metrics() == {"rte": {"accuracy": 60.0}}
    step_out = out / "candidates" / "a.json"  # a step's output, measured again elsewhere and copied in since
    step_out.parent.mkdir()
    step_out.write_text("stale")
    rd.publish_files([step_out])
    (results / "candidates" / "a.json").write_text("measured elsewhere")
    os.utime(step_out, (1, 1))
    assert rd.restore_files([step_out]) == [step_out] and step_out.read_text() == "measured elsewhere"
    step_out.write_text("rerun here since")  # newer than the results folder's copy: kept, and published
    assert rd.restore_files([step_out]) == [] and step_out.read_text() == "rerun here since"


def count_finished(path: str, target: str) -> None:
    Path(target).write_text(str(len(list(Path(path).glob("*/metrics.json")))))


def test_report_only_reads_the_runs_finished_elsewhere_from_the_results_folder(tmp_path):
    results, out = tmp_path / "results", tmp_path / "out"
    copy = RunDir(results / "runs" / "a")  # finished on another machine; this output folder has never seen it
    copy.path.mkdir(parents=True)
    save_config(TrainConfig.of(tasks=["rte"], output_dir=str(out / "runs" / "a")), copy.config_path)
    copy.results_path.write_text(json.dumps({"metrics": {"rte": {"accuracy": 60.0}}}))
    copy.metrics_path.write_text(json.dumps({"rte": {"accuracy": 60.0}}))
    jobs = [Job("runs/a", config=TrainConfig.of(tasks=["rte"], output_dir=str(out / "runs" / "a"))),
            Job("report", deps=("runs/a",), action=count_finished, args=(str(out / "runs"), str(tmp_path / "n")))]
    options = EngineOptions(backend="inline", results_dir=results)
    assert run_study_graph(out, "name: s\n", jobs, options, report_only=("report",)) == 0
    assert (tmp_path / "n").read_text() == "1" and RunDir(out / "runs" / "a").finished


@pytest.mark.parametrize("backend", ["inline", "local"])
def test_a_failed_job_fails_alone(tmp_path, backend):
    jobs = [step("ok", tmp_path), step("bad", tmp_path, action=fail, where="worker"),
            step("after-bad", tmp_path, deps=["bad"]), step("after-ok", tmp_path, deps=["ok"]),
            step("report", tmp_path, deps=["after-bad", "after-ok"], after_failures=True)]
    if backend == "local":  # a worker killed outright is that job's failure too
        jobs.append(step("killed", tmp_path, action=die, where="worker"))
    chosen = InlineBackend(tmp_path / "logs") if backend == "inline" else LocalBackend(2, tmp_path / "logs")
    report = Scheduler(JobGraph(jobs), chosen, log_dir=tmp_path / "logs", say=lambda line: None).run()
    status = {name: r.status for name, r in report.records.items()}
    assert status["bad"] == "failed" and status["after-bad"] == "not-run"
    assert status["ok"] == status["after-ok"] == status["report"] == "ran" and (tmp_path / "report.txt").is_file()
    assert "planted failure" in report.records["bad"].error and not report.ok
    if backend == "local":
        assert status["killed"] == "failed" and "killed by signal 9" in report.records["killed"].error


def test_backend_choice_and_missing_ray(tmp_path, monkeypatch):
    with pytest.raises(UserError, match="unknown backend 'slurm'"):
        EngineOptions(backend="slurm")
    with pytest.raises(UserError, match="--ray-address needs --backend ray"):
        EngineOptions(ray_address="auto")
    monkeypatch.setitem(sys.modules, "ray", None)  # as if Ray were not installed
    with pytest.raises(UserError, match=r"--backend ray needs Ray: pip install '\.\[ray\]'"):
        make_backend(EngineOptions(backend="ray"), tmp_path)


# ---------------------------------------------------------------- skipped runs: a run that would repeat another


def skip_if_file(path: str) -> str | None:
    """A training job's skip (module level): the text of ``path`` if it exists (why not to train), else None."""
    return Path(path).read_text() if Path(path).is_file() else None


def broken_skip() -> str | None:
    raise KeyError("no mask")


def test_a_run_whose_skip_gives_a_reason_is_not_trained_and_counts_as_done(tmp_path, monkeypatch):
    def trainer(config, on_step=None):
        raise RuntimeError(f"trained {Path(config.output.output_dir).name}")

    monkeypatch.setattr(mtl.run, "run_training", trainer)
    config = lambda name: TrainConfig.of(tasks=["rte"], output_dir=str(tmp_path / name))  # noqa: E731
    reason = tmp_path / "why.txt"
    jobs = [Job("inputs", action=write_file, args=(str(reason), "its mask keeps every unit")),
            Job("runs/same", deps=("inputs",), config=config("same"), skip=skip_if_file, skip_args=(str(reason),)),
            Job("runs/other", deps=("inputs",), config=config("other"), skip=skip_if_file,
                skip_args=(str(tmp_path / "absent.txt"),)),
            Job("runs/broken", deps=("inputs",), config=config("broken"), skip=broken_skip),
            step("report", tmp_path, deps=("runs/same",))]
    said = []
    report = Scheduler(JobGraph(jobs), InlineBackend(tmp_path / "logs"), log_dir=tmp_path / "logs", say=said.append).run()
    status = {name: r.status for name, r in report.records.items()}
    assert status == {"inputs": "ran", "runs/same": "skipped", "runs/other": "failed", "runs/broken": "failed",
                      "report": "ran"}
    assert report.records["runs/same"].error == "its mask keeps every unit"
    assert "[skipped] runs/same: its mask keeps every unit" in said and not (tmp_path / "same").exists()
    assert "trained other" in report.records["runs/other"].error  # no reason: it is trained
    assert "could not tell whether to train it: KeyError" in "\n".join(said)
    assert "1 skipped" in report.summary()
    plan = plan_text(JobGraph(jobs), EngineOptions(jobs=1, dry_run=True), None)
    assert "runs/same: skipped (as its inputs are now: its mask keeps every unit)" in plan
    assert "runs/other: to train ~" in plan and "runs/broken: to train ~" in plan
    with pytest.raises(ValueError, match="only a training job can be skipped"):
        Job("a-step", action=fail, skip=broken_skip)


# ---------------------------------------------------------------- a time limit: start only what would finish


class FixedCost(CostModel):
    """Estimated seconds by job name (training jobs only)."""

    def __init__(self, seconds: dict[str, float]) -> None:
        super().__init__()
        self.fixed = seconds

    def seconds(self, job: Job) -> float | None:
        return self.fixed.get(job.name) if job.is_training else None


def test_a_time_limit_starts_only_the_runs_that_would_finish_within_it(tmp_path, monkeypatch):
    trained = []

    def trainer(config, on_step=None):
        run = RunDir(config.output.output_dir)
        run.path.mkdir(parents=True, exist_ok=True)
        save_config(config, run.config_path)
        run.results_path.write_text(json.dumps({"metrics": {"rte": {"accuracy": 60.0}}}))
        run.metrics_path.write_text(json.dumps({"rte": {"accuracy": 60.0}}))
        trained.append(run.path.name)
        return mtl.run.RunOutcome(mtl.run.RunResult.from_dict({"metrics": {"rte": {"accuracy": 60.0}}}))

    monkeypatch.setattr(mtl.run, "run_training", trainer)
    config = lambda name: TrainConfig.of(tasks=["rte"], output_dir=str(tmp_path / name))  # noqa: E731
    jobs = [Job("runs/long", config=config("long")), Job("runs/short", config=config("short")),
            Job("runs/after-long", deps=("runs/long",), config=config("after-long")),
            Job("runs/unknown", config=config("unknown")),
            step("report", tmp_path, deps=("runs/short", "runs/after-long"), after_failures=True)]
    cost = FixedCost({"runs/long": 3600.0, "runs/short": 1.0, "runs/after-long": 1.0})
    said = []
    report = Scheduler(JobGraph(jobs), InlineBackend(tmp_path / "logs"), log_dir=tmp_path / "logs", cost=cost,
                       say=said.append, time_limit=600.0, status_every=0.0).run()
    status = {name: r.status for name, r in report.records.items()}
    assert status == {"runs/long": "not-run", "runs/short": "ran", "runs/after-long": "not-run",
                      "runs/unknown": "ran", "report": "ran"}  # no estimate: started
    assert sorted(trained) == ["short", "unknown"]
    assert ("[left] runs/long: would not finish within the time limit (10m00s): needs ~1h00m, " in "\n".join(said))
    assert re.search(r"^\[study\] .*; ETA .*, time limit in (9m5\ds|10m00s)$", said[0]), said[0]
    # runs left at the limit are not counted as failures
    assert any("0 failed, 2 left at the time limit" in line for line in said), said
    assert report.records["runs/after-long"].error == "needs runs/long, which was left at the time limit"
    with pytest.raises(StudyFailed, match="runs/long: would not finish within the time limit"):
        raise_if_failed(report)
    trained.clear()
    again = Scheduler(JobGraph(jobs), InlineBackend(tmp_path / "logs"), log_dir=tmp_path / "logs", cost=cost,
                      say=said.append, time_limit=2 * 3600.0).run()  # the next call, with time enough
    assert again.ok and trained == ["long", "after-long"]


def nap(path: str, seconds: float) -> None:
    time.sleep(seconds)
    Path(path).write_text("slept")


def test_past_the_time_limit_no_worker_job_starts_but_the_scheduler_steps_still_run(tmp_path):
    """A worker step has no estimate: it starts while time is left, never after the limit has passed."""
    jobs = [Job("slow", action=nap, args=(str(tmp_path / "slow.txt"), 0.6), where="worker"),
            step("candidate", tmp_path, deps=("slow",), where="worker"),
            step("after-candidate", tmp_path, deps=("candidate",), where="worker"),
            step("report", tmp_path, deps=("slow",))]
    said = []
    report = Scheduler(JobGraph(jobs), InlineBackend(tmp_path / "logs"), log_dir=tmp_path / "logs",
                       say=said.append, time_limit=0.3, status_every=0.0).run()
    status = {name: r.status for name, r in report.records.items()}
    assert status == {"slow": "ran", "candidate": "not-run", "after-candidate": "not-run", "report": "ran"}
    assert not (tmp_path / "candidate.txt").exists() and (tmp_path / "report.txt").exists()
    assert "[left] candidate: the time limit (0m00s) has passed; run the same command again to run it" in said
    assert report.records["after-candidate"].error == "needs candidate, which was left at the time limit"
    again = Scheduler(JobGraph(jobs), InlineBackend(tmp_path / "logs"), log_dir=tmp_path / "logs",
                      say=said.append, time_limit=60.0).run()
    assert again.ok and (tmp_path / "after-candidate.txt").read_text() == "after-candidate"


def test_a_steps_own_estimate_counts_in_the_time_limit_the_eta_and_the_plan(tmp_path):
    jobs = [step("big", tmp_path, where="worker", seconds=3600.0),
            step("resumable", tmp_path, where="worker", seconds=3600.0, resumable=True),
            step("small", tmp_path, where="worker", seconds=1.0)]
    said = []
    report = Scheduler(JobGraph(jobs), InlineBackend(tmp_path / "logs"), log_dir=tmp_path / "logs",
                       say=said.append, time_limit=600.0, status_every=0.0).run()
    status = {name: r.status for name, r in report.records.items()}
    assert status == {"big": "not-run", "resumable": "ran", "small": "ran"}  # a resumable step goes on next time
    assert "[left] big: would not finish within the time limit (10m00s): needs ~1h00m, " in "\n".join(said)
    assert re.search(r"^\[study\] .* 0/3 done, .*; ETA 2h00m, time limit in", said[0]), said[0]  # 3 steps, 1 slot
    plan = plan_text(JobGraph(jobs), EngineOptions(jobs=2, dry_run=True), None)
    assert "big: step (worker) ~1h00m" in plan and "resumable: step (worker) ~1h00m (resumable)" in plan
    assert "2.0 core-hours, about 1h00m with 2 run(s) at a time" in plan
    with pytest.raises(ValueError, match="seconds and resumable are for steps"):
        Job("a-run", config=TrainConfig.of(tasks=["rte"], output_dir=str(tmp_path / "run")), seconds=60.0)


@pytest.mark.parametrize("text, seconds", [("2h30m", 9000), ("90m", 5400), ("45s", 45), ("5400", 5400),
                                           ("1h5m30s", 3930), ("0.5h", 1800)])
def test_durations_of_the_time_limit(text, seconds):
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "soon", "2d", "h", "-5m"])
def test_a_bad_time_limit_is_refused(text):
    with pytest.raises(argparse.ArgumentTypeError, match="not a duration"):
        parse_duration(text)
    with pytest.raises(UserError, match="--time-limit must be positive"):
        EngineOptions(time_limit=0.0)


# ---------------------------------------------------------------- deferred runs: a config chosen by a sweep

LRS = (3e-3, 1e-4)
PLACEHOLDER_LR = 5e-4


def sweep_config(root: Path, out: Path, lr: float, seed: int) -> TrainConfig:
    return TrainConfig.of(tasks=["tinysent"], model=str(root / "model"), task_def=[str(root / "data" / "tasks.yaml")],
                          cache_dir=str(root / "cache"), precision="fp32", num_threads=1, batch_size=8, epochs=1,
                          eval_batch_size=16, max_seq_length=32, save_model=False, progress=False, lr=lr, seed=seed,
                          max_train_samples=48, deterministic=True, output_dir=str(out / f"lr{lr:g}-seed{seed}"))


def chosen_config(root: str, out: str, seed: int) -> TrainConfig:
    """The seed's run at the learning rate whose seed-1 run scored best on dev, in ``chosen-seedK`` (module level:
    a deferred job's resolve)."""
    scores = {lr: RunDir(Path(out) / f"lr{lr:g}-seed1").metrics()["tinysent"]["accuracy"] for lr in LRS}
    best = max(LRS, key=lambda lr: (scores[lr], -lr))
    return sweep_config(Path(root), Path(out), best, seed).replace(output_dir=str(Path(out) / f"chosen-seed{seed}"))


def moved_config(root: str, out: str) -> TrainConfig:
    return sweep_config(Path(root), Path(out), LRS[0], 5)


def nothing_to_choose() -> TrainConfig:
    raise UserError("no finished sweep run to choose from")


def deferred_graph(root: Path, out: Path) -> JobGraph:
    sweep = [Job(f"sweep/lr{lr:g}", config=sweep_config(root, out, lr, 1)) for lr in LRS]
    placeholder = sweep_config(root, out, PLACEHOLDER_LR, 2).replace(output_dir=str(out / "chosen-seed2"))
    chosen = Job("chosen/seed2", deps=tuple(j.name for j in sweep), config=placeholder,
                 resolve=chosen_config, resolve_args=(str(root), str(out), 2))
    return JobGraph([*sweep, chosen])


def test_a_deferred_run_trains_the_config_its_dependencies_chose(tmp_path, monkeypatch):
    tiny_setup(tmp_path)
    out, results = tmp_path / "out", tmp_path / "results"
    say = []
    report = Scheduler(deferred_graph(tmp_path, out), InlineBackend(tmp_path / "logs"), log_dir=tmp_path / "logs",
                       results=ResultsDir(results, out), say=say.append).run()
    assert report.ok and report.records["chosen/seed2"].status == "ran"
    scores = {lr: RunDir(out / f"lr{lr:g}-seed1").metrics()["tinysent"]["accuracy"] for lr in LRS}
    best = max(LRS, key=lambda lr: (scores[lr], -lr))
    chosen = RunDir(out / "chosen-seed2")
    assert chosen.finished and chosen.config().optim.lr == best != PLACEHOLDER_LR  # trained at the chosen rate
    assert (results / "chosen-seed2" / "results.json").is_file()  # published like any run
    assert any("chosen/seed2" in line for line in say)

    def no_training(config, on_step=None):
        raise AssertionError(f"trained {config.output.output_dir} again")

    monkeypatch.setattr(mtl.run, "run_training", no_training)
    again = Scheduler(deferred_graph(tmp_path, out), InlineBackend(tmp_path / "logs"), log_dir=tmp_path / "logs",
                      say=lambda line: None).run()
    assert again.ok and {r.status for r in again.records.values()} == {"finished-before"}
    fresh = tmp_path / "fresh"  # a new machine: every run, the deferred one too, comes from the results folder
    restored = Scheduler(deferred_graph(tmp_path, fresh), InlineBackend(tmp_path / "logs"), log_dir=tmp_path / "logs",
                         results=ResultsDir(results, fresh), say=lambda line: None).run()
    assert restored.ok and {r.status for r in restored.records.values()} == {"restored"}
    assert RunDir(fresh / "chosen-seed2").finished
    # a resolve that finds nothing to choose from: that job fails as a user mistake; the others are unaffected
    graph = JobGraph([Job("sweep", config=sweep_config(tmp_path, out, LRS[0], 1)),
                      Job("chosen", deps=("sweep",), config=sweep_config(tmp_path, out, LRS[0], 3),
                          resolve=nothing_to_choose)])
    bad = Scheduler(graph, InlineBackend(tmp_path / "logs"), log_dir=tmp_path / "logs", say=lambda line: None).run()
    assert bad.records["chosen"].status == "failed" and bad.user_errors == ["chosen: no finished sweep run to choose from"]
    with pytest.raises(ValueError, match="needs the jobs its config depends on"):
        Job("lonely", config=sweep_config(tmp_path, out, LRS[0], 4), resolve=nothing_to_choose)
    moving = Job("moving", deps=("sweep",), config=sweep_config(tmp_path, out, LRS[0], 6), resolve=moved_config,
                 resolve_args=(str(tmp_path), str(out)))
    with pytest.raises(ValueError, match="a deferred run's directory is fixed"):
        moving.resolved()


# ---------------------------------------------------------------- a run of a model a step builds


def build_student(source: str, target: str, scale: float) -> None:
    """A step that builds a "student" folder from ``source``: its weights times ``scale`` (module level: picklable)."""
    from transformers import AutoModel

    shutil.rmtree(target, ignore_errors=True)
    shutil.copytree(source, target)
    if scale != 1.0:
        encoder = AutoModel.from_pretrained(target)
        with torch.no_grad():
            encoder.embeddings.word_embeddings.weight.mul_(scale)
        encoder.save_pretrained(target)


def student_graph(root: Path, out: Path, scale: float) -> JobGraph:
    student = root / "student"
    config = sweep_config(root, out, LRS[1], 1).replace(model=str(student), output_dir=str(out / "run"))
    return JobGraph([Job("models/student", action=build_student, args=(str(root / "model"), str(student), scale)),
                     Job("runs/student", deps=("models/student",), config=config)])


def test_a_run_restored_before_its_model_is_built_is_checked_once_it_is(tmp_path, monkeypatch):
    tiny_setup(tmp_path)
    results = tmp_path / "results"

    def study(out: Path, scale: float):
        return Scheduler(student_graph(tmp_path, out, scale), InlineBackend(tmp_path / "logs"),
                         log_dir=tmp_path / "logs", results=ResultsDir(results, out), say=lambda line: None).run()

    assert study(tmp_path / "first", 1.0).ok
    assert (results / "run" / "results.json").is_file()

    def no_training(config, on_step=None):
        raise AssertionError(f"trained {config.output.output_dir} again")

    monkeypatch.setattr(mtl.run, "run_training", no_training)
    shutil.rmtree(tmp_path / "student")  # a new machine: the student is not built yet when the run is restored
    same = study(tmp_path / "same", 1.0)  # built again, the same weights: the run is the study's run
    assert same.ok and same.records["runs/student"].status == "restored"
    shutil.rmtree(tmp_path / "student")
    other = study(tmp_path / "other", 0.5)  # built again with other weights: refused, not taken for its run
    assert not other.ok and other.records["runs/student"].status == "failed"
    assert other.user_errors and "model: " in other.user_errors[0]
    assert "holds other weights than the run trained from" in other.user_errors[0]


# ---------------------------------------------------------------- a tiny phase-transition study


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    root = tmp_path_factory.mktemp("engine")
    options = tiny_setup(root)
    options = options[:options.index("--tasks")] + options[options.index("--tasks") + 2:]
    return root, [*options, "--task", "tinysent", "--sparsities", "0.3", "--seeds", "1,2", "--deterministic",
                  "--status-every", "600"]


def metrics_of(out: Path) -> dict[str, dict]:
    return {p.parent.name: json.loads(p.read_text()) for p in sorted(out.glob("*/metrics.json"))}


def engine_records(out: Path) -> list[dict]:
    return json.loads((out / "logs" / "engine.json").read_text())["jobs"]


def test_one_and_two_workers_give_identical_results(tiny, capsys):
    root, args = tiny
    for jobs in (1, 2):
        assert pt.main([*args, "--epochs", "1", "--jobs", str(jobs), "--output-dir", str(root / f"jobs{jobs}")]) == 0
    one, two = metrics_of(root / "jobs1"), metrics_of(root / "jobs2")
    assert len(one) == 8 and one == two  # dense x2, winning / random / losing x2 seeds
    reports = [json.loads((root / f"jobs{j}" / "phase_transition.json").read_text())["rows"] for j in (1, 2)]
    assert reports[0] == reports[1]
    overheads = [r["overhead"] for r in engine_records(root / "jobs2") if r["overhead"] is not None]
    assert sorted(overheads)[len(overheads) // 2] < 2.0  # median dispatch-to-start, the fork server warm


def test_a_study_continues_from_a_results_folder_without_training(tiny, monkeypatch, capsys):
    root, args = tiny
    first = [*args, "--epochs", "1", "--results-dir", str(root / "results")]
    assert pt.main([*first, "--output-dir", str(root / "first")]) == 0
    assert (root / "results" / "super_ticket.safetensors").is_file()
    assert (root / "results" / "dense-seed1" / "importance.safetensors").is_file()
    assert not list((root / "results").rglob("checkpoint.pt")) and not list((root / "results").rglob("model"))

    def no_training(config, on_step=None):
        raise AssertionError(f"trained {config.output.output_dir} again")

    monkeypatch.setattr(mtl.run, "run_training", no_training)
    assert pt.main([*first, "--output-dir", str(root / "fresh"), "--backend", "inline"]) == 0
    records = {r["name"]: r["status"] for r in engine_records(root / "fresh")}
    assert [n for n, s in records.items() if s == "restored"] == [n for n in records if "seed" in n and "/" not in n]
    assert metrics_of(root / "fresh") == metrics_of(root / "first")
    # a changed option is still refused, for a run found in the results folder too
    code = pt.main([*args, "--epochs", "2", "--results-dir", str(root / "results"), "--output-dir", str(root / "third"),
                    "--backend", "inline"])
    assert code == 2 and "was made with other options: epochs: 1.0 -> 2.0" in capsys.readouterr().err


def _cli(args: list[str]) -> list[str]:
    return [sys.executable, "-m", "experiments.phase_transition", *args]


def test_a_killed_study_resumes_its_runs_from_their_checkpoints(tiny):
    root, args = tiny
    out = root / "killed"
    long = [*args, "--epochs", "30", "--checkpoint-every", "5", "--jobs", "1", "--seeds", "1", "--ticket-kinds", "winning",
            "--output-dir", str(out)]
    proc = subprocess.Popen(_cli(long), cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    checkpoint = out / "dense-seed1" / "checkpoint.pt"
    deadline = time.time() + 120
    while not checkpoint.is_file() and time.time() < deadline:
        time.sleep(0.2)
    assert checkpoint.is_file(), "the first run never wrote a checkpoint"
    os.killpg(proc.pid, signal.SIGKILL)  # scheduler, fork server and worker at once
    proc.wait()
    assert not (out / "dense-seed1" / "metrics.json").exists() and (out / "dense-seed1" / ".lock").exists()
    done = subprocess.run(_cli(long), cwd=REPO, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "[start] dense-seed1 (resuming)" in done.stdout  # the stale lock was taken over, the checkpoint used
    assert "resuming" in (out / "dense-seed1" / "train.log").read_text()
    assert len(metrics_of(out)) == 2 and not list(out.rglob(".lock"))  # dense and winning-0.30


def test_two_schedulers_on_one_folder_split_the_work(tiny):
    root, args = tiny
    out = root / "shared"
    cmd = _cli([*args, "--epochs", "1", "--jobs", "1", "--output-dir", str(out)])
    procs = [subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    outs = [p.communicate(timeout=600) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], [o[1][-1500:] for o in outs]
    reports = [json.loads(p.read_text()) for p in sorted((out / "logs").glob("engine-*.json"))]
    assert len(reports) == 2
    trained = [r["name"] for rep in reports for r in rep["jobs"] if r["status"] == "ran" and "seed" in r["name"]
               and not r["name"].startswith("masks/")]
    assert sorted(trained) == sorted(set(trained)) and len(trained) == 8  # each run trained exactly once
    assert all(trained_by for trained_by in ([r for r in rep["jobs"] if r["status"] == "ran"] for rep in reports))


def test_dry_run_prints_the_graph_with_its_cost(tiny, capsys):
    root, args = tiny
    assert pt.main([*args, "--epochs", "2", "--output-dir", str(root / "dry"), "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "dense-seed1: to train ~" in out and "masks/random-0.30-seed2: step (scheduler)" in out
    assert "phase_transition: step (scheduler) <- 8 job(s)" in out and "estimated cost of what is left" in out
    assert not (root / "dry" / "dense-seed1").exists()


def test_dry_run_says_which_tasks_have_no_data_to_estimate(tmp_path, monkeypatch):
    glue = tmp_path / "glue"
    (glue / "RTE").mkdir(parents=True)
    (glue / "RTE" / "train.tsv").write_text("index\tsentence1\tsentence2\tlabel\n" + "0\ta\tb\tentailment\n" * 30)
    runs = [Job(f"runs/{t}", config=TrainConfig.of(tasks=[t], epochs=1, glue_dir=str(glue),
                                                      output_dir=str(tmp_path / t))) for t in ("rte", "mrpc", "cola")]
    text = plan_text(JobGraph(runs), EngineOptions(jobs=1, dry_run=True), None)
    assert "runs/rte: to train ~0m01s" in text and "runs/mrpc: to train ~?" in text
    assert f"(2 run(s) without an estimate)\nno training data counted for cola, mrpc (not in {glue}" in text
    monkeypatch.delenv("GLUE_DIR", raising=False)
    hub = plan_text(JobGraph([Job("runs/x", config=TrainConfig.of(tasks=["rte"], output_dir=str(tmp_path / "x")))]),
                    EngineOptions(jobs=1, dry_run=True), None)
    assert "no training data counted for rte (read from the Hugging Face hub: not counted)" in hub


def _glue_with(tmp_path, rows: int) -> Path:
    glue = tmp_path / "glue"
    for task, header, line in (("RTE", "index\tsentence1\tsentence2\tlabel\n", "0\ta\tb\tentailment\n"),
                               ("MRPC", "Quality\t#1 ID\t#2 ID\t#1 String\t#2 String\n", "1\t1\t2\ta\tb\n")):
        (glue / task).mkdir(parents=True, exist_ok=True)
        (glue / task / "train.tsv").write_text(header + line * rows)
    return glue


def _finished(tmp_path, name: str, tasks: list[str], model: str, seconds: float, examples: int, glue: Path,
              wall: float | None = None, cuda: str | None = None) -> RunDir:
    run = RunDir(tmp_path / name)
    run.path.mkdir(parents=True)
    save_config(TrainConfig.of(tasks=tasks, model=model, glue_dir=str(glue), output_dir=str(run.path)), run.config_path)
    metrics = {t: {"accuracy": 60.0} for t in tasks}
    result = {"metrics": metrics, "train_seconds": seconds, "train_examples": examples,
              "machine": {"threads": 1, "cuda": cuda}}
    run.results_path.write_text(json.dumps(result if wall is None else {**result, "wall_seconds": wall}))
    run.metrics_path.write_text(json.dumps(metrics))
    return run


def test_the_cost_model_learns_from_the_closest_finished_runs(tmp_path):
    glue = _glue_with(tmp_path, 100)

    def job(tasks, model="minilm", epochs=1):
        return Job(f"runs/{model}-{'-'.join(tasks)}", config=TrainConfig.of(
            tasks=tasks, model=model, epochs=epochs, glue_dir=str(glue), output_dir=str(tmp_path / "todo")))

    cost = CostModel()
    table = 100 / cost.rates["rte"] * 1.1
    assert cost.seconds(job(["rte"])) == pytest.approx(table)  # nothing measured: the table
    # single-task runs of two models: each model is costed from its own runs, a third from their mean
    cost.learn([_finished(tmp_path, "a1", ["rte"], "minilm", 10.0, 100, glue),
                _finished(tmp_path, "b1", ["rte"], "/students/small", 2.0, 100, glue)])
    assert cost.seconds(job(["rte"])) == pytest.approx(10.0 * 1.1)
    assert cost.seconds(job(["rte"], "/students/small", epochs=3)) == pytest.approx(3 * 2.0 * 1.1)
    assert cost.seconds(job(["rte"], "/students/other")) == pytest.approx(100 * (0.1 + 0.02) / 2 * 1.1)
    # learning incrementally averages (a run learnt twice counts once)
    cost.learn([_finished(tmp_path, "a2", ["rte"], "minilm", 30.0, 100, glue)])
    cost.learn([RunDir(tmp_path / "a2")])
    assert cost.seconds(job(["rte"])) == pytest.approx(100 * (0.1 + 0.3) / 2 * 1.1)
    # a multi-task run: from the per-task rates until a run of the same model and tasks has finished
    from_tasks = cost.seconds(job(["rte", "mrpc"]))
    assert from_tasks == pytest.approx((100 * 0.2 + 100 / cost.rates["mrpc"]) * 1.1)
    cost.learn([_finished(tmp_path, "m1", ["rte", "mrpc"], "minilm", 50.0, 200, glue)])
    assert cost.seconds(job(["rte", "mrpc"], epochs=2)) == pytest.approx(2 * 200 * 0.25 * 1.1)
    assert cost.seconds(job(["mrpc", "rte"])) == pytest.approx(from_tasks)  # another order: another run
    # the median: a paused run (hours it did not compute) does not move the estimate
    cost.learn([_finished(tmp_path, f"p{i}", ["mrpc"], "minilm", seconds, 100, glue)
                for i, seconds in enumerate((10.0, 10.0, 600.0))])
    assert cost.seconds(job(["mrpc"])) == pytest.approx(10.0 * 1.1)
    # a run's own wall time (evaluation and start-up included) replaces the assumed 10 % overhead
    cost.learn([_finished(tmp_path, "w1", ["mrpc"], "/students/small", 4.0, 100, glue, wall=4.5)])
    assert cost.seconds(job(["mrpc"], "/students/small")) == pytest.approx(4.5)


def test_the_cost_model_learns_only_from_runs_on_its_kind_of_machine(tmp_path):
    glue = _glue_with(tmp_path, 100)
    job = Job("runs/next", config=TrainConfig.of(tasks=["rte"], epochs=1, glue_dir=str(glue),
                                                   output_dir=str(tmp_path / "next")))
    runs = [_finished(tmp_path, "gpu", ["rte"], "minilm", 1.0, 100, glue, cuda="NVIDIA H200"),
            _finished(tmp_path, "cpu", ["rte"], "minilm", 40.0, 100, glue)]
    cpu, gpu, other = CostModel(), CostModel(accelerator="NVIDIA H200"), CostModel(accelerator="NVIDIA A100")
    for cost in (cpu, gpu, other):
        cost.learn(runs)
    assert cpu.seconds(job) == pytest.approx(40.0 * 1.1)  # not the median of 1 and 40
    assert gpu.seconds(job) == pytest.approx(1.0 * 1.1)
    assert other.seconds(job) == pytest.approx(100 / other.rates["rte"] * 1.1)  # nothing measured there: the table


def test_the_cost_of_a_run_comes_first_from_the_other_seeds_of_its_row(tmp_path):
    glue = _glue_with(tmp_path, 100)

    def config(name, lr, seed, mask=None):
        return TrainConfig.of(tasks=["rte"], lr=lr, seed=seed, epochs=1, glue_dir=str(glue), output_dir=str(tmp_path / name),
                              **({"mask": mask} if mask else {}))

    runs = []
    for name, lr, seconds in (("slow", 1e-4, 30.0), ("fast", 5e-5, 10.0), ("fast2", 5e-5, 12.0)):
        run = _finished(tmp_path, name, ["rte"], "minilm", seconds, 100, glue)
        save_config(config(name, lr, 1), run.config_path)
        runs.append(run)
    cost = CostModel()
    cost.learn(runs)
    # seed 2 of the lr 5e-5 row, gated by a mask: that row's runs (median of 10 and 12), not the slow row
    job = Job("runs/next", config=config("next", 5e-5, 2, mask=str(tmp_path / "m.safetensors")))
    assert cost.seconds(job) == pytest.approx(11.0 * 1.1)
    # a row not run yet: the model's runs on the task (median of 30, 10, 12)
    assert cost.seconds(Job("runs/other", config=config("other", 2e-5, 1))) == pytest.approx(12.0 * 1.1)


def test_the_same_study_on_a_local_ray_cluster(tiny):
    pytest.importorskip("ray")
    root, args = tiny
    assert pt.main([*args, "--epochs", "1", "--jobs", "1", "--output-dir", str(root / "ray-reference")]) == 0
    assert pt.main([*args, "--epochs", "1", "--backend", "ray", "--jobs", "2", "--output-dir", str(root / "ray")]) == 0
    assert metrics_of(root / "ray") == metrics_of(root / "ray-reference")
    assert (root / "ray" / "super_ticket.safetensors").is_file()
