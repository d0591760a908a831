"""A results folder: the small artifacts of every finished run, meant to be committed.

It mirrors the study's output folder, file for file, without weights or checkpoints
(:meth:`mtl.rundir.RunDir.small_artifacts`), plus the files the study's steps write (super tickets,
shared masks, reports). A study started on another machine with the same results folder copies a
finished run back into its output folder and does not train it again: tables need no weights.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterable
from pathlib import Path

from basics.io import atomic_write
from mtl.rundir import RunDir


class ResultsDir:
    """``root`` mirrors ``study_out`` (paths outside ``study_out`` are not copied)."""

    def __init__(self, root: Path, study_out: Path) -> None:
        self.root = Path(root).expanduser()
        self.study_out = Path(study_out).expanduser()

    def _mirror(self, path: Path) -> Path | None:
        try:
            rel = Path(path).resolve().relative_to(self.study_out.resolve())
        except ValueError:
            return None
        return self.root / rel

    def publish_files(self, files: Iterable[Path]) -> list[Path]:
        """Copy ``files`` (under the study's output folder) into the results folder; return the copies."""
        copied = []
        for path in files:
            path = Path(path)
            target = self._mirror(path)
            if target is None or not path.is_file():
                continue
            if target.is_file() and target.read_bytes() == path.read_bytes():
                continue
            atomic_write(target, lambda tmp, src=path: shutil.copyfile(src, tmp))
            copied.append(target)
        return copied

    def restore_files(self, files: Iterable[Path]) -> list[Path]:
        """Copy back into the study's output folder the ``files`` (paths there) that are missing there but
        present in the results folder (a step's outputs: a step that finds them does not redo its work), or
        that differ there and are older than the results folder's copy (what another machine measured and
        was copied in since: otherwise the stale copy would be published over it)."""
        restored = []
        for path in map(Path, files):
            source = self._mirror(path)
            if source is None or not source.is_file():
                continue
            if path.is_file() and (path.stat().st_mtime >= source.stat().st_mtime
                                   or path.read_bytes() == source.read_bytes()):
                continue
            atomic_write(path, lambda tmp, src=source: shutil.copyfile(src, tmp))
            restored.append(path)
        return restored

    def publish_run(self, run: RunDir) -> list[Path]:
        """A finished run's small artifacts, ``metrics.json`` last (its presence marks the copy complete)."""
        files = [run.path / p for p in run.small_artifacts()]
        files.sort(key=lambda p: p.name == "metrics.json")
        return self.publish_files(files)

    def finished_copy(self, run: RunDir) -> RunDir | None:
        """The run's copy in the results folder, if it holds a finished run."""
        target = self._mirror(run.path)
        if target is None:
            return None
        copy = RunDir(target)
        return copy if copy.finished else None

    def restore_run(self, run: RunDir) -> bool:
        """Copy a finished run's small artifacts from the results folder into its run directory (which
        must not hold a finished run); True when it did."""
        copy = self.finished_copy(run)
        if copy is None or run.finished:
            return False
        files = sorted(copy.small_artifacts(), key=lambda p: p.name == "metrics.json")
        for rel in files:
            target = run.path / rel
            atomic_write(target, lambda tmp, src=copy.path / rel: shutil.copyfile(src, tmp))
        run.checkpoint_path.unlink(missing_ok=True)  # the copy is finished: an older checkpoint is moot
        return True
