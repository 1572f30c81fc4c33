"""``monitoring.json``: the figures of a window, its baseline, its checks and violations.

The schema is documented in docs/monitoring.md and checked by
:func:`deepfake.monitoring.schema.validate_monitoring`.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timezone
from typing import Any

import pandas as pd

from deepfake import __version__
from deepfake.core.files import json_ready
from deepfake.core.vocabulary import FAKE, REAL
from deepfake.monitoring.baseline import Baseline, MonitoredModel
from deepfake.monitoring.checks import MonitorConfig, violations
from deepfake.monitoring.sources import CaptureRead, Window
from deepfake.monitoring.traffic import ERROR, NO_FACE, OK, OUTCOMES, counts, stats, tally
from deepfake.scoring.metrics import roc_auc

SCHEMA_VERSION = 1
AUTO_DAY_BUCKETS_AFTER_H = 72          # bucket "auto": days for a window longer than this


def build_summary(table: pd.DataFrame, found: CaptureRead, model: MonitoredModel, baseline: Baseline,
                  config: MonitorConfig, checks: Sequence[dict[str, Any]],
                  labelled: pd.DataFrame | None = None, ground_truth_source: str | None = None) -> dict[str, Any]:
    scored = table[table["outcome"] == OK]
    videos = table[table["outcome"].isin([OK, NO_FACE])]
    judged = table[table["outcome"].isin([OK, NO_FACE, ERROR])]
    doc = {
        "schema_version": SCHEMA_VERSION,
        "kit_version": __version__,
        "created": _iso(datetime.now(timezone.utc)),
        "capture": {"location": found.location, "files": found.files, "unreadable_records": found.unreadable,
                    "problems": list(found.problems)},
        "window": {**found.window.to_dict(),
                   "first_request": _iso(table["time"].min()) if len(table) else None,
                   "last_request": _iso(table["time"].max()) if len(table) else None},
        "model": {"source": model.source, "version": model.version, "threshold": model.rule.threshold,
                  "aggregation": model.rule.aggregation, "temperature": model.rule.temperature},
        "baseline": baseline.to_dict(),
        "config": config.to_dict(),
        "counts": counts(table),
        "rates": {
            "no_face_rate": _share((videos["outcome"] == NO_FACE).sum(), len(videos)),
            "error_rate": _share((judged["outcome"] == ERROR).sum(), len(judged)),
            "fake_share": _share(scored["called_fake"].astype(bool).sum(), len(scored)),
        },
        "scores": {
            "p_fake": stats(scored["p_fake"]),
            "called_real": stats(scored.loc[~scored["called_fake"].astype(bool), "p_fake"]),
            "called_fake": stats(scored.loc[scored["called_fake"].astype(bool), "p_fake"]),
        },
        "faces": {
            "face_frame_share": stats(scored["face_frame_share"]),
            "faces_per_frame": stats(scored["faces_per_frame"]),
            "frames_sampled": stats(videos["frames_sampled"]),
        },
        "inputs": {
            "content_types": tally(table["input_type"]),
            "containers": tally(table["container"]),
            "media_kinds": tally(videos["media_kind"]),
            "codecs": tally(videos["codec"]),
            "resolutions": tally(_resolutions(videos)),
            "width": stats(videos["width"]),
            "height": stats(videos["height"]),
            "duration_s": stats(videos["duration_s"]),
            "video_bytes": stats(videos["video_bytes"]),
            "bits_per_pixel": stats(videos["bits_per_pixel"]),
            "input_bytes": stats(table["input_bytes"]),
        },
        "latency_ms": stats(videos["latency_ms"]),
        "periods": periods(table, found.window, config, labelled),
        "ground_truth": ground_truth_summary(scored, videos, labelled, ground_truth_source),
        "checks": list(checks),
        "violations": violations(checks),
    }
    return json_ready(doc)


def bucket_of(window: Window, config: MonitorConfig) -> str:
    if config.bucket != "auto":
        return config.bucket
    return "day" if window.hours > AUTO_DAY_BUCKETS_AFTER_H else "hour"


def periods(table: pd.DataFrame, window: Window, config: MonitorConfig,
            labelled: pd.DataFrame | None) -> list[dict[str, Any]]:
    """The window cut into hours (or days), every period listed, empty ones too."""
    unit = bucket_of(window, config)
    freq = "h" if unit == "hour" else "D"
    start = pd.Timestamp(window.since).floor(freq)
    starts = pd.date_range(start, pd.Timestamp(window.until), freq=freq, inclusive="left")
    keys = table["time"].dt.floor(freq) if len(table) else pd.Series(dtype="datetime64[ns, UTC]")
    merged = None
    if labelled is not None and len(table):
        merged = table.assign(period=keys).merge(labelled, on="join_id", how="inner")
    out = []
    for when in starts:
        rows = table[keys == when] if len(table) else table
        scored = rows[rows["outcome"] == OK]
        videos = rows[rows["outcome"].isin([OK, NO_FACE])]
        entry: dict[str, Any] = {"start": _iso(when), "requests": int(len(rows)),
                                 **{o: int((rows["outcome"] == o).sum()) for o in OUTCOMES},
                                 "called_fake": int(scored["called_fake"].astype(bool).sum()),
                                 "fake_share": _share(scored["called_fake"].astype(bool).sum(), len(scored)),
                                 "no_face_rate": _share((videos["outcome"] == NO_FACE).sum(), len(videos)),
                                 "mean_p_fake": float(scored["p_fake"].astype(float).mean()) if len(scored) else None,
                                 "latency_ms_p50": float(videos["latency_ms"].dropna().astype(float).median())
                                 if videos["latency_ms"].notna().any() else None}
        if merged is not None:
            part = merged[(merged["period"] == when) & (merged["outcome"] == OK)]
            entry.update(_labelled_rates(part))
        out.append(entry)
    return out


def ground_truth_summary(scored: pd.DataFrame, videos: pd.DataFrame, labelled: pd.DataFrame | None,
                         source: str | None) -> dict[str, Any] | None:
    if labelled is None:
        return None
    matched = videos.merge(labelled, on="join_id", how="inner")
    matched_scored = matched[matched["outcome"] == OK]
    unscored = matched[matched["outcome"] == NO_FACE]
    return {
        "source": source, "labels": int(len(labelled)), "matched": int(len(matched)),
        "matched_scored": int(len(matched_scored)),
        "labelled_no_face": {"real": int((unscored["truth"] == REAL).sum()), "fake": int((unscored["truth"] == FAKE).sum())},
        **_labelled_rates(matched_scored),
    }


def _labelled_rates(rows: pd.DataFrame) -> dict[str, Any]:
    reals = rows[rows["truth"] == REAL]
    fakes = rows[rows["truth"] == FAKE]
    auc = roc_auc(rows["truth"].astype(int), rows["p_fake"].astype(float)) if len(reals) and len(fakes) else None
    return {"labelled": int(len(rows)), "labelled_real": int(len(reals)), "labelled_fake": int(len(fakes)),
            "auc": auc,
            "catch_rate": _share(fakes["called_fake"].astype(bool).sum(), len(fakes)),
            "false_positive_rate": _share(reals["called_fake"].astype(bool).sum(), len(reals))}


def _resolutions(videos: pd.DataFrame) -> list[str | None]:
    return [f"{int(w)}x{int(h)}" if pd.notna(w) and pd.notna(h) else None
            for w, h in zip(videos["width"], videos["height"], strict=True)]


def _share(k: Any, n: int) -> float | None:
    return float(k) / n if n else None


def _iso(when: Any) -> str:
    return pd.Timestamp(when).tz_convert("UTC").isoformat().replace("+00:00", "Z")
