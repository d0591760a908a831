"""Every small artifact a study publishes into ``experiments/results/`` can be committed: no ``.gitignore`` rule
hides it (a bare ``runs/`` rule once hid the transfer study's ``runs/`` folder, so finished runs were lost
between machines)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from mtl.rundir import CONFIG, IMPORTANCE, LOG, MASKS, METRICS, RESULTS, STUDY_RUN, WEIGHT_MASKS

REPO = Path(__file__).resolve().parents[1]
STUDY_PATHS = ("experiments/results/S/runs/rte/dense/seed1", "experiments/results/S/tickets/rte/winning-0.40-seed1",
               "experiments/results/S/mtl/per-task-seed1", "experiments/results/S/finetune/ticket/rte/lr1e-4-seed1")


def ignored(paths: list[str]) -> list[str]:
    out = subprocess.run(["git", "-C", str(REPO), "check-ignore", "--no-index", *paths], capture_output=True, text=True)
    if out.returncode not in (0, 1):
        pytest.skip(f"git check-ignore failed: {out.stderr.strip()}")
    return out.stdout.split()


@pytest.mark.skipif(shutil.which("git") is None or not (REPO / ".git").exists(), reason="not a git checkout")
def test_published_artifacts_are_not_git_ignored():
    names = [CONFIG, RESULTS, METRICS, LOG, STUDY_RUN, IMPORTANCE, f"{MASKS}/winning-0.40.safetensors",
             f"{WEIGHT_MASKS}/imp-0.40.safetensors"]  # mtl.rundir.RunDir.small_artifacts
    paths = [f"{folder}/{name}" for folder in STUDY_PATHS for name in names]
    assert ignored(paths) == []
    # model weights and the root runs/ folder stay out
    assert ignored(["runs/x/model/model.safetensors"]) == ["runs/x/model/model.safetensors"]
