"""SageMaker data capture: the JSON Lines files an endpoint's ``DataCaptureConfig`` writes, here and there.

A SageMaker endpoint with data capture on writes what it receives and answers
to S3 as JSON Lines, one object per sampled request, under one folder per hour::

    <DestinationS3Uri>/<endpoint>/<variant>/<yyyy>/<mm>/<dd>/<hh>/<mm>-<ss>-<mmm>-<uuid>.jsonl

    {"captureData": {"endpointInput":  {"observedContentType": "video/mp4", "mode": "INPUT",
                                        "data": "<base64>", "encoding": "BASE64"},
                     "endpointOutput": {"observedContentType": "application/json", "mode": "OUTPUT",
                                        "data": "{\\"status\\": \\"ok\\", ...}", "encoding": "JSON"}},
     "eventMetadata": {"eventId": "<uuid>", "inferenceId": "<the caller's InferenceId>",
                       "inferenceTime": "2026-12-01T13:05:09Z"},
     "eventVersion": "0"}

``deepfake serve --capture DIR`` writes exactly this (:class:`CaptureWriter`), so the
monitoring of :mod:`deepfake.monitoring` reads a local folder and an endpoint's S3
prefix with the same parser (:func:`parse_record`). A payload whose content type
is one of the capture's JSON content types (the deployment template lists
``application/json``) is kept as text with ``encoding: JSON``; any other (a video,
an image) as ``BASE64``. ``inferenceId`` is there only when the caller gave one
(``InvokeEndpoint(InferenceId=...)``, the ``X-Amzn-SageMaker-Inference-Id`` header);
with input capture off (``CaptureMode: Output`` only) ``endpointInput`` is absent.
The format and the fields the kit relies on: docs/monitoring.md.

Standard library only: the endpoint's code (``model.tar.gz``) may ship this module.
"""

from __future__ import annotations

import base64
import binascii
import json
import os
import random
import re
import threading
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

from deepfake.core.errors import ConfigError, MonitoringError
from deepfake.core.vocabulary import JSON_TYPE, OCTET_STREAM

VARIANT_NAME = "AllTraffic"      # the production variant of the endpoint (deploy/endpoint-config-template.yml)
CAPTURE_SUFFIX = ".jsonl"
EVENT_VERSION = "0"
INPUT, OUTPUT = "endpointInput", "endpointOutput"
MODES = {INPUT: "INPUT", OUTPUT: "OUTPUT"}
ENCODING_JSON, ENCODING_CSV, ENCODING_BASE64 = "JSON", "CSV", "BASE64"
JSON_CONTENT_TYPES = (JSON_TYPE,)   # CaptureContentTypeHeader.JsonContentTypes of the deployment template
INFERENCE_ID_HEADER = "X-Amzn-SageMaker-Inference-Id"   # InvokeEndpoint's InferenceId, as it travels
TIME_FORMAT = "%Y-%m-%dT%H:%M:%SZ"  # eventMetadata.inferenceTime: UTC, whole seconds, as SageMaker writes it
HOUR_LAYOUT = "%Y/%m/%d/%H"         # the hour folders under <endpoint>/<variant>/
_HOUR_RE = re.compile(r"(?:^|/)(\d{4})/(\d{2})/(\d{2})/(\d{2})(?:/|$)")


@dataclass(frozen=True)
class CaptureSettings:
    """What ``deepfake serve --capture`` records, with the names of the endpoint's ``DataCaptureConfig``."""

    destination: str                   # DestinationS3Uri: a local folder here
    endpoint: str = "local"            # the endpoint's name: the first folder under the destination
    variant: str = VARIANT_NAME        # the production variant: the second folder
    sampling_percentage: int = 100     # InitialSamplingPercentage: share of requests captured, 0-100
    capture_input: bool = True         # CaptureMode Input (the request's bytes: a whole video) besides Output

    def __post_init__(self) -> None:
        if not 0 <= int(self.sampling_percentage) <= 100:
            raise ConfigError(f"capture sampling percentage {self.sampling_percentage} must be between 0 and 100")
        for name in ("endpoint", "variant"):
            value = getattr(self, name)
            if not value or "/" in value or value in (".", ".."):
                raise ConfigError(f"capture {name} {value!r} must be a non-empty name without '/'")

    @property
    def root(self) -> Path:
        """``<destination>/<endpoint>/<variant>``: the folder the hour folders go in."""
        return Path(self.destination) / self.endpoint / self.variant


@dataclass(frozen=True)
class CapturedEvent:
    """One captured request and response, payloads decoded to bytes."""

    event_id: str
    inference_time: datetime                  # UTC
    inference_id: str | None = None           # the caller's InferenceId, when it gave one
    input_type: str | None = None             # observedContentType of the request; None: input not captured
    input: bytes | None = None
    output_type: str | None = None
    output: bytes | None = None
    source: str = ""                          # file (or S3 URI) and line it was read from

    @property
    def join_id(self) -> str:
        """The id ground truth joins on: ``inferenceId``, else ``eventId`` (as SageMaker's merge does)."""
        return self.inference_id or self.event_id

    def output_json(self) -> Any:
        """The response as JSON; MonitoringError when it is not JSON."""
        if self.output is None:
            raise MonitoringError(f"{self.source}: the record has no endpointOutput (captured with Output off?)")
        try:
            return json.loads(self.output.decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise MonitoringError(f"{self.source}: the captured response is not JSON ({exc})") from None


def media_type(content_type: str | None) -> str:
    return (content_type or "").split(";", 1)[0].strip().lower()


def payload(data: bytes, content_type: str | None, mode: str,
            json_types: tuple[str, ...] = JSON_CONTENT_TYPES) -> dict[str, str]:
    """``captureData.endpointInput`` / ``endpointOutput`` for these bytes: JSON types as text, else base64."""
    observed = content_type or OCTET_STREAM
    if media_type(observed) in json_types:
        try:
            return {"observedContentType": observed, "mode": MODES[mode], "data": data.decode("utf-8"),
                    "encoding": ENCODING_JSON}
        except UnicodeDecodeError:
            pass                                            # not text after all: keep the bytes
    return {"observedContentType": observed, "mode": MODES[mode], "data": base64.b64encode(data).decode("ascii"),
            "encoding": ENCODING_BASE64}


def capture_record(*, output: bytes, output_type: str | None, inference_time: datetime,
                   input: bytes | None = None, input_type: str | None = None,
                   inference_id: str | None = None, event_id: str | None = None) -> dict[str, Any]:
    """The JSON object SageMaker writes for one captured request (``input`` None: Output mode only)."""
    data: dict[str, Any] = {}
    if input is not None:
        data[INPUT] = payload(input, input_type, INPUT)
    data[OUTPUT] = payload(output, output_type, OUTPUT)
    metadata = {"eventId": event_id or str(uuid.uuid4())}
    if inference_id:
        metadata["inferenceId"] = inference_id
    metadata["inferenceTime"] = format_time(inference_time)
    return {"captureData": data, "eventMetadata": metadata, "eventVersion": EVENT_VERSION}


def format_time(when: datetime) -> str:
    return _utc(when).strftime(TIME_FORMAT)


def parse_time(text: str, what: str = "time") -> datetime:
    """An ISO 8601 time (``2026-12-01T13:05:09Z``, with or without fraction or offset) as UTC.

    A time without an offset is UTC, as every time SageMaker writes is."""
    value = str(text).strip()
    try:
        when = datetime.fromisoformat(value[:-1] + "+00:00" if value.endswith(("Z", "z")) else value)
    except ValueError:
        raise ConfigError(f"{what} {text!r} is not an ISO 8601 time like 2026-12-01T13:00:00Z") from None
    return _utc(when)


def parse_record(line: str | bytes, source: str = "") -> CapturedEvent:
    """One line of a capture file; MonitoringError names ``source`` and what is wrong."""
    try:
        doc = json.loads(line)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise MonitoringError(f"{source}: not a JSON object ({exc})") from None
    if not isinstance(doc, Mapping) or not isinstance(doc.get("captureData"), Mapping) \
            or not isinstance(doc.get("eventMetadata"), Mapping):
        raise MonitoringError(f"{source}: not a SageMaker capture record (it needs captureData and eventMetadata)")
    meta = doc["eventMetadata"]
    if "inferenceTime" not in meta:
        raise MonitoringError(f"{source}: eventMetadata has no inferenceTime")
    try:
        when = parse_time(meta["inferenceTime"], "inferenceTime")
    except ConfigError as exc:
        raise MonitoringError(f"{source}: {exc}") from None
    decoded = {part: _decode(doc["captureData"].get(part), part, source) for part in (INPUT, OUTPUT)}
    return CapturedEvent(
        event_id=str(meta.get("eventId") or ""), inference_time=when,
        inference_id=str(meta["inferenceId"]) if meta.get("inferenceId") not in (None, "") else None,
        input_type=decoded[INPUT][0], input=decoded[INPUT][1],
        output_type=decoded[OUTPUT][0], output=decoded[OUTPUT][1], source=source)


def _decode(part: Any, name: str, source: str) -> tuple[str | None, bytes | None]:
    if part is None:
        return None, None
    if not isinstance(part, Mapping) or "data" not in part:
        raise MonitoringError(f"{source}: captureData.{name} must be an object with data and encoding")
    encoding = str(part.get("encoding", ENCODING_BASE64)).upper()
    data = part["data"]
    if not isinstance(data, str):
        raise MonitoringError(f"{source}: captureData.{name}.data must be a string")
    if encoding == ENCODING_BASE64:
        try:
            return part.get("observedContentType"), base64.b64decode(data, validate=True)
        except (binascii.Error, ValueError) as exc:
            raise MonitoringError(f"{source}: captureData.{name} is not valid base64 ({exc})") from None
    if encoding in (ENCODING_JSON, ENCODING_CSV):
        return part.get("observedContentType"), data.encode("utf-8")
    raise MonitoringError(f"{source}: captureData.{name}.encoding {encoding!r} is none of "
                          f"{ENCODING_JSON}, {ENCODING_CSV}, {ENCODING_BASE64}")


def hour_folder(when: datetime) -> str:
    """``yyyy/mm/dd/hh`` of a time (UTC): the folder its records go in."""
    return _utc(when).strftime(HOUR_LAYOUT)


def hour_of_path(path: str) -> datetime | None:
    """The hour a capture file's path names (its ``yyyy/mm/dd/hh`` folders), or None."""
    found = _HOUR_RE.findall(path.replace("\\", "/"))
    if not found:
        return None
    y, m, d, h = (int(v) for v in found[-1])
    try:
        return datetime(y, m, d, h, tzinfo=timezone.utc)
    except ValueError:
        return None


def file_name(when: datetime) -> str:
    """``<mm>-<ss>-<mmm>-<uuid>.jsonl``: a new capture file's name, from its first record's time."""
    t = _utc(when)
    return f"{t:%M-%S}-{t.microsecond // 1000:03d}-{uuid.uuid4()}{CAPTURE_SUFFIX}"


@dataclass
class CaptureWriter:
    """Appends sampled requests to capture files: one file per process and hour, a line per request.

    Thread-safe; a forked server worker opens files of its own. Every line is
    written with one ``write`` on an append-only descriptor, so a reader never
    meets half a record from a live server.
    """

    settings: CaptureSettings
    rng: random.Random = field(default_factory=random.Random)
    _lock: threading.Lock = field(default_factory=threading.Lock, init=False, repr=False)
    _fd: int | None = field(default=None, init=False, repr=False)
    _key: tuple[int, str] | None = field(default=None, init=False, repr=False)   # (pid, hour) of the open file

    def sample(self) -> bool:
        """Whether to capture the next request (``sampling_percentage`` of them)."""
        pct = int(self.settings.sampling_percentage)
        return pct >= 100 or (pct > 0 and self.rng.random() * 100 < pct)

    def write(self, record: Mapping[str, Any], when: datetime) -> Path:
        """Append ``record`` (made at ``when``) to this process's file of that hour; returns the file."""
        line = (json.dumps(record, separators=(",", ":")) + "\n").encode("utf-8")
        with self._lock:
            key = (os.getpid(), hour_folder(when))
            if self._key != key or self._fd is None:
                self._open(key, when)
            view = memoryview(line)
            while view:
                written = os.write(self._fd, view)      # type: ignore[arg-type]
                view = view[written:]
            return self._path

    def capture(self, *, output: bytes, output_type: str | None, when: datetime, input: bytes | None = None,
                input_type: str | None = None, inference_id: str | None = None) -> Path | None:
        """Sample, then write one request as SageMaker would; None when it was not sampled."""
        if not self.sample():
            return None
        keep = input if self.settings.capture_input else None
        record = capture_record(output=output, output_type=output_type, inference_time=when, input=keep,
                                input_type=input_type, inference_id=inference_id)
        return self.write(record, when)

    def close(self) -> None:
        with self._lock:
            if self._fd is not None and self._key is not None and self._key[0] == os.getpid():
                os.close(self._fd)
            self._fd, self._key = None, None

    def _open(self, key: tuple[int, str], when: datetime) -> None:
        if self._fd is not None and self._key is not None and self._key[0] == os.getpid():
            os.close(self._fd)                       # the hour changed (a forked worker leaves its parent's)
        folder = self.settings.root / key[1]
        folder.mkdir(parents=True, exist_ok=True)
        self._path = folder / file_name(when)
        self._fd = os.open(self._path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        self._key = key


def hours_between(since: datetime, until: datetime) -> list[datetime]:
    """Every hour (its start) that a window ``[since, until)`` touches, in order."""
    start = _utc(since).replace(minute=0, second=0, microsecond=0)
    end = _utc(until)
    hours = []
    while start < end:
        hours.append(start)
        start += timedelta(hours=1)
    return hours


def _utc(when: datetime) -> datetime:
    return when.replace(tzinfo=timezone.utc) if when.tzinfo is None else when.astimezone(timezone.utc)
