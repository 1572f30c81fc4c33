"""Captured requests as one table: a row per request with what its response and its request say.

A response (docs/inference.md) is one of: ``status: ok`` (scored: ``p_fake``,
``label``), ``status: no_face`` (not scored), or an error ``{"error", "message",
"status": <HTTP status>}``. Anything else is ``unreadable`` and counted as such.
The request's bytes, when captured, give its size and container; the response
gives the video's resolution, duration, codec, size and the latency.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np
import pandas as pd

from deepfake.core.errors import DeepfakeError, MonitoringError
from deepfake.core.vocabulary import RESPONSE_LABELS, STATUS_NO_FACE, STATUS_OK, VIDEO_TYPES
from deepfake.serving.capture import CapturedEvent, media_type
from deepfake.serving.requests import sniff

OK, NO_FACE, ERROR, UNREADABLE = STATUS_OK, STATUS_NO_FACE, "error", "unreadable"
OUTCOMES = (OK, NO_FACE, ERROR, UNREADABLE)
FAKE_LABEL = RESPONSE_LABELS[1]

COLUMNS = ("time", "event_id", "inference_id", "join_id", "outcome", "error", "http_status", "model_version",
           "p_fake", "label", "called_fake", "threshold", "frames_sampled", "frames_scored", "faces_found",
           "face_frame_share", "faces_per_frame", "media_kind", "width", "height", "frame_count", "duration_s", "fps",
           "codec", "video_bytes", "bits_per_pixel", "input_type", "container", "input_bytes", "latency_ms", "source")


def traffic_table(events: Iterable[CapturedEvent]) -> pd.DataFrame:
    """One row per captured request (columns ``COLUMNS``), in time order."""
    rows = [event_row(e) for e in events]
    table = pd.DataFrame(rows, columns=list(COLUMNS))
    if table.empty:
        return table.astype({"time": "datetime64[ns, UTC]"})
    table["time"] = pd.to_datetime(table["time"], utc=True)
    return table.sort_values(["time", "event_id"], kind="stable").reset_index(drop=True)


def event_row(event: CapturedEvent) -> dict[str, Any]:
    row: dict[str, Any] = {k: None for k in COLUMNS}
    row.update(time=event.inference_time, event_id=event.event_id, inference_id=event.inference_id,
               join_id=event.join_id, source=event.source)
    row.update(_request(event))
    try:
        response = event.output_json()
    except MonitoringError:
        return {**row, "outcome": UNREADABLE}
    if not isinstance(response, Mapping):
        return {**row, "outcome": UNREADABLE}
    if "error" in response and "status" in response and isinstance(response.get("status"), int):
        return {**row, "outcome": ERROR, "error": str(response["error"]), "http_status": int(response["status"])}
    status = response.get("status")
    if status not in (OK, NO_FACE):
        return {**row, "outcome": UNREADABLE}
    media = response.get("media") if isinstance(response.get("media"), Mapping) else {}
    sampled, scored = _int(response.get("frames_sampled")), _int(response.get("frames_scored"))
    faces = _int(response.get("faces_found"))
    width, height, frame_count = _int(media.get("width")), _int(media.get("height")), _int(media.get("frame_count"))
    size = _int(media.get("bytes"))
    row.update(outcome=status, model_version=response.get("model_version"), threshold=_float(response.get("threshold")),
               frames_sampled=sampled, frames_scored=scored, faces_found=faces,
               face_frame_share=scored / sampled if sampled and scored is not None else None,
               faces_per_frame=faces / scored if scored and faces is not None else None,
               media_kind=media.get("kind"), width=width, height=height, frame_count=frame_count,
               duration_s=_float(media.get("duration_s")), fps=_float(media.get("fps")),
               codec=media.get("codec") or None, video_bytes=size,
               bits_per_pixel=8 * size / (width * height * frame_count) if size and width and height and frame_count
               else None,
               latency_ms=_float(response.get("latency_ms")))
    if status == OK:
        p = _float(response.get("p_fake"))
        row.update(p_fake=p, label=response.get("label"), called_fake=response.get("label") == FAKE_LABEL)
    return row


def _request(event: CapturedEvent) -> dict[str, Any]:
    if event.input is None:
        return {"input_type": media_type(event.input_type) or None}
    kind = media_type(event.input_type)
    container = kind if kind in VIDEO_TYPES or kind.startswith("image/") else None
    if container is None:
        try:
            container = sniff(event.input)
        except DeepfakeError:
            container = "unknown"
    return {"input_type": kind or None, "container": container, "input_bytes": len(event.input)}


def counts(table: pd.DataFrame) -> dict[str, Any]:
    """Requests by outcome and errors by kind."""
    by = table["outcome"].value_counts() if len(table) else pd.Series(dtype=int)
    errors = table[table["outcome"] == ERROR]
    kinds = errors.groupby(["error", "http_status"]).size() if len(errors) else pd.Series(dtype=int)
    return {
        "requests": int(len(table)),
        **{outcome: int(by.get(outcome, 0)) for outcome in OUTCOMES},
        "called_fake": int(table["called_fake"].fillna(False).astype(bool).sum()) if len(table) else 0,
        "error_kinds": [{"error": str(e), "http_status": int(s), "requests": int(n)} for (e, s), n in kinds.items()],
    }


def stats(values: Any) -> dict[str, float | int] | None:
    """Count, mean and quantiles of the finite values; None when there is none."""
    arr = pd.to_numeric(pd.Series(values, dtype=object), errors="coerce").to_numpy(dtype=float)
    arr = arr[np.isfinite(arr)]
    if arr.size == 0:
        return None
    q = np.quantile(arr, [0.05, 0.5, 0.95])
    return {"n": int(arr.size), "mean": float(arr.mean()), "min": float(arr.min()), "p05": float(q[0]),
            "p50": float(q[1]), "p95": float(q[2]), "max": float(arr.max())}


def tally(values: Any) -> dict[str, int]:
    """How often each value occurs (missing values left out), most frequent first."""
    series = pd.Series(values, dtype=object).dropna()
    return {str(k): int(v) for k, v in series.value_counts().items()}


def _int(value: Any) -> int | None:
    try:
        return None if value is None or isinstance(value, bool) else int(value)
    except (TypeError, ValueError):
        return None


def _float(value: Any) -> float | None:
    try:
        out = None if value is None or isinstance(value, bool) else float(value)
    except (TypeError, ValueError):
        return None
    return out if out is None or np.isfinite(out) else None
