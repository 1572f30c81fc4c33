"""One writer per folder: a second process is refused with the holder named, a dead holder's lock is taken over."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time

import pytest

from deepfake.core.errors import LockedError
from deepfake.core.locks import LOCK_FILE, FolderLock, read_holder

HOLD = ("import sys, time\nfrom deepfake.core.locks import FolderLock\n"
        "with FolderLock(sys.argv[1], what='w', hint='h'):\n    print('held', flush=True)\n    time.sleep(120)\n")


def holder_process(folder):
    proc = subprocess.Popen([sys.executable, "-c", HOLD, str(folder)], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "held"
    return proc


def test_a_folder_held_by_another_process_is_refused_with_its_holder_and_what_to_do(tmp_path):
    proc = holder_process(tmp_path / "run")
    try:
        with pytest.raises(LockedError) as caught, FolderLock(tmp_path / "run", what="run x (runs/x)",
                                                             hint="wait, or use another --run-id"):
            pass
        message = str(caught.value)
        assert message.startswith(f"run x (runs/x) is in use by pid {proc.pid} on host {socket.gethostname()} since ")
        assert message.endswith("; wait, or use another --run-id")
        assert read_holder(tmp_path / "run" / LOCK_FILE)["pid"] == proc.pid      # the holder's record untouched
        with pytest.raises(LockedError):                                         # waiting a little does not help
            FolderLock(tmp_path / "run", what="run x", hint="h", wait_s=0.3).acquire()
    finally:
        proc.kill()
        proc.wait()


def test_a_lock_whose_holder_was_killed_is_taken_over_with_a_line_saying_so(tmp_path, capsys):
    proc = holder_process(tmp_path / "out")
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert read_holder(tmp_path / "out" / LOCK_FILE)["pid"] == proc.pid           # left behind
    with FolderLock(tmp_path / "out", what="batch scoring into p.csv", hint="h"):
        assert read_holder(tmp_path / "out" / LOCK_FILE)["pid"] == os.getpid()
    err = capsys.readouterr().err
    assert f"batch scoring into p.csv: taking over the lock of pid {proc.pid} on host" in err
    assert "that process is gone" in err
    assert not (tmp_path / "out" / LOCK_FILE).exists()                           # released: removed


def test_a_holder_on_another_host_is_not_taken_over(tmp_path):
    (tmp_path / "shared").mkdir()
    holder = {"pid": 1, "host": "other-host", "since": "2026-01-01T00:00:00+00:00"}
    (tmp_path / "shared" / LOCK_FILE).write_text(json.dumps(holder))
    with pytest.raises(LockedError, match=f"on another host, .* remove {tmp_path / 'shared' / LOCK_FILE}"):
        FolderLock(tmp_path / "shared", what="run y", hint="h").acquire()
    assert json.loads((tmp_path / "shared" / LOCK_FILE).read_text()) == holder


def test_waiting_gets_a_lock_released_meanwhile(tmp_path):
    proc = holder_process(tmp_path / "f")
    started = time.monotonic()
    subprocess.Popen([sys.executable, "-c", f"import os, time; time.sleep(0.5); os.kill({proc.pid}, 9)"])
    with FolderLock(tmp_path / "f", what="f", hint="h", wait_s=60):
        assert time.monotonic() - started < 60
    proc.wait()
