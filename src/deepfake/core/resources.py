"""The CPU cores and the memory this process may use, and how extraction shares the cores between workers
and threads.
"""

from __future__ import annotations

import os


def usable_cores() -> int:
    """The CPUs this process may run on: its affinity mask (a container, a pinned run), not the machine's count."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows
        return os.cpu_count() or 1


MEMORY_ENV = "DEEPFAKE_MEMORY_BYTES"     # the memory this process may use, where the machine's figure is not it
CGROUP_LIMITS = ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes")


def memory_bytes() -> int:
    """The memory this process may use: the machine's, or less where a container's limit (cgroup) or
    ``DEEPFAKE_MEMORY_BYTES`` says so (``pipeline-local`` sets it to the emulated instance's memory)."""
    try:
        found = [int(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))]
    except (ValueError, OSError, AttributeError):
        found = [8 << 30]
    for path in CGROUP_LIMITS:
        try:
            with open(path) as fh:
                text = fh.read().strip()
        except OSError:
            continue
        if text.isdigit():
            found.append(int(text))
    if os.environ.get(MEMORY_ENV, "").isdigit():
        found.append(int(os.environ[MEMORY_ENV]))
    return min(found)


def threads_per_worker(workers: int = 1) -> int:
    """Each of ``workers`` processes' share of the usable cores."""
    return max(1, usable_cores() // max(1, workers))


def decoder_threads(workers: int = 1) -> int:
    """FFmpeg threads of one worker's decoder: its share of the cores, less the one that detects.

    On 2 cores a single-threaded decoder and the detection thread fill both,
    with 5-10% less CPU than FFmpeg's default (a thread per core) and the same
    wall time (measured on the benchmark clips); with more cores the decoder
    gets the rest.
    """
    return max(1, threads_per_worker(workers) - 1)


# Device nodes a CUDA GPU needs (Linux, containers with a GPU mounted; /dev/dxg: WSL 2).
GPU_DEVICE_NODES = ("/dev/nvidiactl", "/dev/nvidia0", "/dev/dxg")


def cuda_possible() -> bool:
    """Whether a CUDA GPU can be reachable here, without importing torch: False where no GPU device node exists."""
    return any(os.path.exists(node) for node in GPU_DEVICE_NODES)
