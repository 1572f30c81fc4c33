"""One writer per folder: a lock file that names its holder and that the kernel frees when the holder dies.

A run folder (``runs/<id>/``), a step's output folder and a batch-scoring
output take a :class:`FolderLock` while a process writes them. A second process
meets :class:`~deepfake.core.errors.LockedError` naming the folder, the holder
(pid, host, since when) and what to do, before it changes anything.

The lock is ``fcntl.flock`` on ``<folder>/.lock``: the kernel releases it when
the holder exits, however it exits (Ctrl-C, SIGKILL, a crash), so a lock left
by a process that is gone is taken over with a line saying so. The file holds
the holder as JSON for the message, and is removed when the lock is released.
On a folder shared between hosts (NFS) a holder on another host cannot be
checked: its lock is refused, and the message says which file to remove once
that process is known to be gone.
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
import sys
import time
from datetime import datetime, timezone
from pathlib import Path
from types import TracebackType
from typing import Any

from deepfake.core.errors import LockedError

LOCK_FILE = ".lock"   # inside the locked folder; copies of a folder (the step cache) leave it out


class FolderLock:
    """``with FolderLock(folder, what="run demo", hint="wait, or use another --run-id"):`` one writer at a time.

    ``what`` names the folder's use in messages; ``hint`` says what to do when it is busy;
    ``wait_s``: seconds to wait for a busy lock before refusing (0: refuse at once).
    """

    def __init__(self, folder: str | os.PathLike[str], *, what: str, hint: str, wait_s: float = 0.0) -> None:
        self.folder = Path(folder)
        self.path = self.folder / LOCK_FILE
        self.what = what
        self.hint = hint
        self.wait_s = wait_s
        self._fd: int | None = None

    def __enter__(self) -> FolderLock:
        self.acquire()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.release()

    def acquire(self) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        deadline = time.monotonic() + self.wait_s
        while True:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                if time.monotonic() < deadline:
                    time.sleep(0.1)
                    continue
                raise LockedError(f"{self.what} is in use by {describe(read_holder(self.path))}; {self.hint}") from None
            if not _same_file(fd, self.path):       # released and removed by its holder meanwhile: lock the new one
                os.close(fd)
                continue
            break
        previous = _read(fd)
        if previous and previous.get("host") != socket.gethostname():
            os.close(fd)
            raise LockedError(f"{self.what} is locked by {describe(previous)}, on another host, which this host "
                              f"cannot check; {self.hint} (if that process is gone, remove {self.path})")
        if previous:
            print(f"{self.what}: taking over the lock of {describe(previous)}: that process is gone",
                  file=sys.stderr, flush=True)
        holder = {"pid": os.getpid(), "host": socket.gethostname(),
                  "since": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                  "command": " ".join(sys.argv)[:300]}
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(holder).encode(), 0)
        self._fd = fd

    def release(self) -> None:
        if self._fd is None:
            return
        fd, self._fd = self._fd, None
        try:
            if _same_file(fd, self.path):
                self.path.unlink()
        except OSError:
            pass
        finally:
            os.close(fd)                            # closing the last descriptor frees the flock


def read_holder(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The holder recorded in a lock file (empty when there is none or it cannot be read)."""
    try:
        text = Path(path).read_text()
    except OSError:
        return {}
    return _parse(text)


def describe(holder: dict[str, Any]) -> str:
    """``pid 123 on host h since 2026-12-08T10:00:00+00:00 (deepfake run ...)``."""
    if not holder:
        return "another process"
    command = f" ({holder['command']})" if holder.get("command") else ""
    return f"pid {holder.get('pid', '?')} on host {holder.get('host', '?')} since {holder.get('since', '?')}{command}"


def _read(fd: int) -> dict[str, Any]:
    size = os.fstat(fd).st_size
    return _parse(os.pread(fd, size, 0).decode(errors="replace")) if size else {}


def _parse(text: str) -> dict[str, Any]:
    try:
        value = json.loads(text)
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


def _same_file(fd: int, path: Path) -> bool:
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return False
    own = os.fstat(fd)
    return (st.st_dev, st.st_ino) == (own.st_dev, own.st_ino)
