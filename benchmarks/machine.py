"""What the figures were measured on: they mean little without the machine and its load."""

from __future__ import annotations

import os
import platform
import subprocess
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]


def machine_info() -> dict[str, Any]:
    """CPU model, cores, memory, library versions, CUDA device and the load when the run started."""
    import cv2
    import torch

    import deepfake

    cuda = torch.cuda.is_available()
    return {
        "cpu_model": _cpu_model(),
        "cpu_count": os.cpu_count(),
        "cores_used": cores_used(),
        "memory_gib": _memory_gib(),
        "load_average": load_average(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        # OpenMP spin-waits badly when the cores are shared: the setting changes torch's figures a lot.
        "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY"),
        "opencv": cv2.__version__,
        "cuda_device": torch.cuda.get_device_name(0) if cuda else None,
        "cuda_version": torch.version.cuda if cuda else None,
        "kit_version": deepfake.__version__,
        "git_commit": _git_commit(),
        "started": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }


def cores_used() -> int:
    """The cores this process may run on (its affinity mask), which is what the figures got."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows
        return os.cpu_count() or 1


def pin_cores(n: int) -> list[int]:
    """Restrict this process and every process it starts to its first ``n`` allowed cores."""
    allowed = sorted(os.sched_getaffinity(0))
    if not 1 <= n <= len(allowed):
        raise ValueError(f"--cpus {n} is not between 1 and the {len(allowed)} cores this process may use")
    chosen = allowed[:n]
    os.sched_setaffinity(0, chosen)
    return chosen


def load_average() -> list[float] | None:
    try:
        return [round(v, 2) for v in os.getloadavg()]
    except OSError:
        return None


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _memory_gib() -> float | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return round(int(line.split()[1]) / 1024**2, 1)
    except (OSError, ValueError, IndexError):
        pass
    return None


def _git_commit() -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True,
                             timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    if out.returncode != 0:
        return None
    return out.stdout.strip() or None
