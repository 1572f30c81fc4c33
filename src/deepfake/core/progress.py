"""Progress over many videos: a tqdm bar on a terminal, a plain line now and then elsewhere.

Face extraction and batch scoring report through it, so papermill and SageMaker
logs get a short line every half minute, never a bar redrawn into a file.
"""

from __future__ import annotations

import sys
import time

from deepfake.core.vocabulary import STATUS_OK

PROGRESS_MODES = (True, False, "bar", "lines")   # auto (bar on a terminal, else lines), off, forced


# Seconds between plain progress lines when stderr is not a terminal (papermill, SageMaker logs).
PROGRESS_LINE_EVERY_S = 30.0


class Progress:
    """A tqdm bar on a terminal; elsewhere a plain line now and then (notebook logs stay short).

    ``label`` starts every line (``extract faces``); ``counted`` names what each
    video yields, summed in the lines (``faces``), or None.
    """

    def __init__(self, total: int, done_before: int, mode: bool | str, *, label: str,
                 counted: str | None = None) -> None:
        self.label = label
        self.counted = counted
        self.total = total
        self.done = 0
        self.count = 0
        self.status: dict[str, int] = {}
        self.start = self.last_line = time.monotonic()
        self.bar = None
        self.lines = False
        if mode is False:
            return
        if mode == "bar" or (mode is True and sys.stderr.isatty()):
            from tqdm.auto import tqdm

            self.bar = tqdm(total=total, unit="video", desc=label, mininterval=1.0, file=sys.stderr)
        else:
            self.lines = True
            resumed = f", {done_before} finished earlier" if done_before else ""
            self._line(f"{label}: {total} videos to do{resumed}")

    def update(self, status: str, count: int = 0) -> None:
        self.done += 1
        self.count += count
        self.status[status] = self.status.get(status, 0) + 1
        if self.bar is not None:
            self.bar.update(1)
        elif self.lines and time.monotonic() - self.last_line >= PROGRESS_LINE_EVERY_S:
            self._line(self._summary())

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
        elif self.lines:
            self._line(self._summary() + " - done" if self.done == self.total else self._summary())

    def _summary(self) -> str:
        rate = self.done / max(time.monotonic() - self.start, 1e-9)
        problems = ", ".join(f"{n} {s.replace('_', ' ')}" for s, n in sorted(self.status.items()) if s != STATUS_OK)
        counted = f", {self.count} {self.counted}" if self.counted else ""
        return (f"{self.label}: {self.done}/{self.total} videos{counted}"
                f"{', ' + problems if problems else ''}, {rate:.2f} videos/s")

    def _line(self, text: str) -> None:
        self.last_line = time.monotonic()
        print(text, file=_line_stream(), flush=True)


def _line_stream():
    """stderr, but stdout inside a notebook's kernel: a report renders stderr as a red error block."""
    in_kernel = type(sys.stderr).__module__.startswith("ipykernel")
    return sys.stdout if in_kernel else sys.stderr
