"""The captured requests of a time window, from a capture folder or an endpoint's S3 capture prefix.

A window is ``[since, until)`` in UTC. Only the hour folders
(``yyyy/mm/dd/hh``) that the window touches are read, and each record is kept
when its ``inferenceTime`` falls in the window. A line that cannot be read is
counted and named (file and line), never guessed at: the rest of the window is
still read.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone

from deepfake.core.errors import ConfigError, MonitoringError
from deepfake.monitoring import storage
from deepfake.serving.capture import CAPTURE_SUFFIX, CapturedEvent, hour_of_path, parse_record, parse_time

DEFAULT_SPAN = "24h"                   # --since when not given: the day before --until
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhdw])\s*$")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}
MAX_PROBLEMS = 20                      # unreadable lines named in the output (all are counted)


@dataclass(frozen=True)
class Window:
    since: datetime                    # UTC, included
    until: datetime                    # UTC, excluded

    def __contains__(self, when: datetime) -> bool:
        return self.since <= when < self.until

    def touches_hour(self, hour: datetime) -> bool:
        return hour < self.until and hour + timedelta(hours=1) > self.since

    @property
    def hours(self) -> float:
        return (self.until - self.since).total_seconds() / 3600

    def to_dict(self) -> dict[str, str]:
        return {"since": _iso(self.since), "until": _iso(self.until)}


ALIGN = ("hour", "day")


def parse_window(since: str | None, until: str | None, now: datetime | None = None,
                 align: str | None = None) -> Window:
    """``--since`` / ``--until``: ISO 8601 times (UTC unless they say otherwise), ``now``, or for
    ``--since`` a span before ``--until`` (``90m``, ``24h``, ``7d``). Defaults: the 24 hours before now.

    ``align`` (``hour``, ``day``) moves the end back to the start of its hour or day: a job started at
    13:10 for the last complete hour gets ``[12:00, 13:00)``."""
    end = _point(until, now) if until else (now or datetime.now(timezone.utc))
    if align is not None:
        if align not in ALIGN:
            raise ConfigError(f"align={align!r} must be one of {', '.join(ALIGN)}")
        end = end.replace(minute=0, second=0, microsecond=0)
        end = end.replace(hour=0) if align == "day" else end
    span = _duration(since if since is not None else DEFAULT_SPAN)
    start = end - span if span is not None else _point(since, now)  # type: ignore[arg-type]
    if start >= end:
        raise ConfigError(f"the window is empty: --since {_iso(start)} is not before --until {_iso(end)}")
    return Window(start, end)


@dataclass
class CaptureRead:
    """What reading a window found: its events and what could not be read."""

    location: str
    window: Window
    files: int = 0
    unreadable: int = 0
    problems: list[str] = field(default_factory=list)

    def problem(self, text: str) -> None:
        self.unreadable += 1
        if len(self.problems) < MAX_PROBLEMS:
            self.problems.append(text)


def capture_files(location: str, window: Window) -> list[str]:
    """The capture files under ``location`` whose hour folder the window touches (a file outside the
    ``yyyy/mm/dd/hh`` layout is read whatever its place)."""
    files = storage.list_files(location, CAPTURE_SUFFIX)
    keep = []
    for path in files:
        hour = hour_of_path(path[len(str(location)):] or path)
        if hour is None or window.touches_hour(hour):
            keep.append(path)
    return keep


def read_events(location: str, window: Window, found: CaptureRead | None = None) -> Iterator[CapturedEvent]:
    """The captured requests of the window, file by file (payloads decoded); ``found`` collects the counts."""
    found = found if found is not None else CaptureRead(str(location), window)
    for path in capture_files(location, window):
        found.files += 1
        for n, line in enumerate(storage.iter_lines(path), 1):
            if not line.strip():
                continue
            try:
                event = parse_record(line, f"{path}:{n}")
            except MonitoringError as exc:
                found.problem(str(exc))
                continue
            if event.inference_time in window:
                yield event


def _point(text: str, now: datetime | None) -> datetime:
    if text.strip().lower() == "now":
        return now or datetime.now(timezone.utc)
    return parse_time(text, "time")


def _duration(text: str) -> timedelta | None:
    match = _DURATION.match(str(text))
    if not match:
        return None
    return timedelta(**{_UNITS[match.group(2)]: float(match.group(1))})


def _iso(when: datetime) -> str:
    return when.astimezone(timezone.utc).isoformat(timespec="seconds").replace("+00:00", "Z")
