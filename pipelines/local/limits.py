"""What SageMaker enforces on a Processing instance, measured here: its volume, its memory, its run time.

On SageMaker an instance's File-mode inputs and everything the job writes share
one ML storage volume of ``VolumeSizeInGB``: a job whose inputs do not fit fails
before it starts, one that fills the volume fails with "No space left on
device"; a job that outgrows the instance's memory is killed; one that runs past
``MaxRuntimeInSeconds`` is stopped. Here each instance is a process tree with a
folder for its root, so the same limits are checked by measuring them:

- the volume: the bytes of every file under the instance's folder (a sparse
  file counts what it allocated), plus files its processes hold open there
  after deleting them (a memory-mapped spill file), sampled every
  :data:`POLL_S` and when the job ends;
- the memory: the proportional set size (PSS, shared pages split between the
  processes sharing them) of the instance's whole process tree: the entry
  point, the notebook kernel it starts (in a session of its own) and any worker;
- the run time: the step's ``MaxRuntimeInSeconds``.

``volume_unit`` is how many bytes stand for one GB of ``VolumeSizeInGB``: 1 GiB
by default; a scale test uses less, so a small synthetic archive meets the
same limits as a real one on real volumes.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from pipelines.instances import GIB, INSTANCE_TYPES

POLL_S = 1.0
MB = 1024**2


@dataclass(frozen=True)
class Limits:
    """How ``pipeline-local`` emulates each instance's limits (``None``: not enforced)."""

    volume_unit: int | None = GIB          # bytes per GB of VolumeSizeInGB
    memory_cap: int | None = None          # bytes per instance; None: its instance type's memory (known types)
    enforce_memory: bool = True

    def volume_bytes(self, volume_gb: int | None) -> int | None:
        if self.volume_unit is None or not volume_gb:
            return None
        return int(volume_gb) * self.volume_unit

    def memory_bytes(self, instance_type: str | None) -> int | None:
        if not self.enforce_memory:
            return None
        if self.memory_cap is not None:
            return self.memory_cap
        known = INSTANCE_TYPES.get(str(instance_type))
        return known.memory_bytes if known else None


def size_text(n: float) -> str:
    """Bytes for people: ``12.3 MB``, ``4.1 GB`` (powers of 1024, as volumes are counted)."""
    for unit, scale in (("GB", GIB), ("MB", MB), ("KB", 1024)):
        if abs(n) >= scale:
            return f"{n / scale:.1f} {unit}"
    return f"{int(n)} B"


def disk_usage(root: Path, pids: Iterable[int] = ()) -> int:
    """Bytes the files under ``root`` occupy, plus deleted files under it that ``pids`` still hold open."""
    seen: set[tuple[int, int]] = set()
    total = 0
    for folder, _dirs, files in os.walk(root):
        for name in files:
            try:
                st = os.lstat(os.path.join(folder, name))
            except FileNotFoundError:
                continue
            total += _count(st, seen)
    prefix = str(root)
    for pid in pids:
        fd_dir = f"/proc/{pid}/fd"
        try:
            fds = os.listdir(fd_dir)
        except OSError:
            continue
        for fd in fds:
            try:
                target = os.readlink(f"{fd_dir}/{fd}")
                if target.startswith(prefix) and target.endswith(" (deleted)"):
                    total += _count(os.stat(f"{fd_dir}/{fd}"), seen)
            except OSError:
                continue
    return total


def _count(st: os.stat_result, seen: set[tuple[int, int]]) -> int:
    key = (st.st_dev, st.st_ino)
    if key in seen or not _regular(st):
        return 0
    seen.add(key)
    return min(st.st_size, st.st_blocks * 512)         # a sparse file counts what it allocated


def _regular(st: os.stat_result) -> bool:
    import stat

    return stat.S_ISREG(st.st_mode)


def process_tree(root_pid: int) -> list[int]:
    """``root_pid`` and every process descending from it (a notebook kernel runs in a session of its own,
    so a process group would miss it)."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as fh:
                stat = fh.read()
        except OSError:
            continue
        fields = stat[stat.rfind(b")") + 2:].split()     # after "pid (comm) ": state, ppid, ...
        children.setdefault(int(fields[1]), []).append(int(entry))
    found, todo = [], [root_pid]
    while todo:
        pid = todo.pop()
        found.append(pid)
        todo += children.get(pid, [])
    return found


def memory_usage(pids: Iterable[int]) -> int:
    """Proportional set size of ``pids``, in bytes (resident size where PSS cannot be read)."""
    total = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/smaps_rollup") as fh:
                total += next(int(line.split()[1]) * 1024 for line in fh if line.startswith("Pss:"))
            continue
        except (OSError, StopIteration, ValueError):
            pass
        try:
            with open(f"/proc/{pid}/statm") as fh:
                total += int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
        except (OSError, ValueError, IndexError):
            continue
    return total
