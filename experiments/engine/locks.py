"""One lock file per run, so two schedulers on one folder never train the same run twice.

``RUN/.lock`` is created atomically (``O_CREAT | O_EXCL``) and holds the owner's host, pid and start
time; the owner refreshes its modification time (:meth:`RunLock.heartbeat`). A lock is *stale* when its
owner is on this host and its pid is gone, or when it has not been refreshed for ``stale_after``
seconds (an owner on another host that died); a stale lock is taken over.
"""

from __future__ import annotations

import json
import os
import socket
import time
from dataclasses import dataclass
from pathlib import Path

LOCK_NAME = ".lock"
STALE_AFTER = 600.0  # seconds without a heartbeat after which another host's lock is stale


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # it exists, owned by someone else
        return True
    return True


@dataclass(frozen=True)
class LockInfo:
    host: str
    pid: int
    started: float
    age: float  # seconds since the last heartbeat

    def describe(self) -> str:
        return f"{self.host} pid {self.pid}"


class RunLock:
    """The lock of one run directory, taken by this process (``owner``: host and pid)."""

    def __init__(self, run_dir: Path, stale_after: float = STALE_AFTER) -> None:
        self.path = Path(run_dir) / LOCK_NAME
        self.stale_after = stale_after
        self.host = socket.gethostname()
        self.pid = os.getpid()
        self.held = False

    def holder(self) -> LockInfo | None:
        """Who holds the lock now (None: nobody, or the file vanished / is half written)."""
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
            age = time.time() - self.path.stat().st_mtime
            return LockInfo(str(data["host"]), int(data["pid"]), float(data["started"]), age)
        except (OSError, ValueError, KeyError, TypeError):
            return None

    def is_stale(self, info: LockInfo) -> bool:
        if info.host == self.host:
            return not pid_alive(info.pid)
        return info.age > self.stale_after

    def acquire(self) -> bool:
        """Take the lock (taking over a stale one); False if a live owner holds it."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        for _ in range(2):
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                info = self.holder()
                if info is None:  # being written right now, or unreadable: treat a very old file as stale
                    try:
                        if time.time() - self.path.stat().st_mtime < 5:
                            return False
                    except FileNotFoundError:
                        continue
                elif (info.host, info.pid) == (self.host, self.pid):
                    self.held = True
                    return True
                elif not self.is_stale(info):
                    return False
                self.path.unlink(missing_ok=True)  # stale: take it over
                continue
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                json.dump({"host": self.host, "pid": self.pid, "started": time.time()}, f)
            self.held = True
            return True
        return False

    def heartbeat(self) -> None:
        if self.held:
            try:
                os.utime(self.path)
            except OSError:
                pass

    def release(self) -> None:
        if self.held:
            info = self.holder()
            if info is not None and (info.host, info.pid) == (self.host, self.pid):
                self.path.unlink(missing_ok=True)
            self.held = False
