"""The CPU cores this process may use, and how extraction shares them between workers and threads.
"""

from __future__ import annotations

import os


def usable_cores() -> int:
    """The CPUs this process may run on: its affinity mask (a container, a pinned run), not the machine's count."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows
        return os.cpu_count() or 1


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
