"""Timing helpers: repeated wall-clock measurements and their percentiles."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np


def timed(fn: Callable[[], Any]) -> tuple[float, Any]:
    """Seconds of one call of ``fn`` (wall clock) and its result."""
    start = time.perf_counter()
    result = fn()
    return time.perf_counter() - start, result


def repeat(fn: Callable[[], Any], reps: int, warmup: int = 1) -> list[float]:
    """Wall-clock seconds of ``reps`` calls after ``warmup`` untimed ones (first-call caches, lazy imports)."""
    for _ in range(warmup):
        fn()
    return [timed(fn)[0] for _ in range(reps)]


def interleave(fns: Sequence[Callable[[], Any]], reps: int, warmup: int = 1) -> tuple[list[list[float]], list[Any]]:
    """Time several functions in turns (a, b, a, b, ...), so a change of machine load hits them alike.

    Returns the seconds of each function's ``reps`` calls and each one's last result.
    """
    last: list[Any] = [None] * len(fns)
    for i, fn in enumerate(fns):
        for _ in range(warmup):
            last[i] = fn()
    out: list[list[float]] = [[] for _ in fns]
    for _ in range(reps):
        for i, fn in enumerate(fns):
            took, last[i] = timed(fn)
            out[i].append(took)
    return out, last


def p50(values: Sequence[float]) -> float:
    return float(np.percentile(values, 50))


def p95(values: Sequence[float]) -> float:
    return float(np.percentile(values, 95))


def rounded(values: Sequence[float]) -> list[float]:
    return [round(float(v), 4) for v in values]


def say(text: str) -> None:
    """Progress on stderr, so stdout carries the table alone."""
    print(text, file=sys.stderr, flush=True)
