"""The schema of ``monitoring.json`` (docs/monitoring.md), checked like ``evaluation.json``'s.

:func:`validate_monitoring` lists every problem in one ``ManifestError``;
:func:`read_monitoring` reads and checks a file (or the folder holding it).
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from deepfake.core.errors import ConfigError, ManifestError
from deepfake.core.files import read_json
from deepfake.monitoring.checks import CHECK_STATUSES, VIOLATION
from deepfake.monitoring.summary import SCHEMA_VERSION
from deepfake.monitoring.traffic import OUTCOMES
from deepfake.serving.capture import parse_time

MONITORING = "monitoring.json"
REPORT = "monitoring.html"

_TOP_LEVEL: dict[str, type | tuple[type, ...]] = {
    "schema_version": int, "kit_version": str, "created": str, "capture": dict, "window": dict, "model": dict,
    "baseline": dict, "config": dict, "counts": dict, "rates": dict, "scores": dict, "faces": dict,
    "inputs": dict, "latency_ms": (dict, type(None)), "periods": list, "ground_truth": (dict, type(None)),
    "checks": list, "violations": list,
}
_CHECK_KEYS = ("name", "status", "what", "compared_with", "statistic", "value", "baseline", "margin", "p_value", "n",
               "reason")
_RATES = ("no_face_rate", "error_rate", "fake_share")


def read_monitoring(path: str | os.PathLike[str]) -> dict[str, Any]:
    p = Path(path)
    if p.is_dir():
        p = p / MONITORING
    doc = read_json(p)
    validate_monitoring(doc, source=str(p))
    return doc


def validate_monitoring(doc: Any, *, source: str = "monitoring") -> None:
    """ManifestError listing every way ``doc`` departs from the schema."""
    if not isinstance(doc, Mapping):
        raise ManifestError(f"{source} must be a JSON object; got {type(doc).__name__}")
    problems = [f"missing key {k!r}" for k in _TOP_LEVEL if k not in doc]
    problems += [f"{k!r} must be {_kind(t)}; got {type(doc[k]).__name__}" for k, t in _TOP_LEVEL.items()
                 if k in doc and not isinstance(doc[k], t)]
    if problems:
        raise ManifestError(f"{source} does not follow the monitoring schema: " + "; ".join(problems))
    if doc["schema_version"] != SCHEMA_VERSION:
        problems.append(f"schema_version is {doc['schema_version']}; this kit reads {SCHEMA_VERSION}")
    for key in ("since", "until"):
        try:
            parse_time(str(doc["window"].get(key)), f"window.{key}")
        except ConfigError as exc:
            problems.append(str(exc))
    counts = doc["counts"]
    for key in ("requests", "called_fake", *OUTCOMES):
        if not _is_int(counts.get(key)):
            problems.append(f"counts.{key} must be an integer")
    if all(_is_int(counts.get(k)) for k in ("requests", *OUTCOMES)) \
            and counts["requests"] != sum(counts[o] for o in OUTCOMES):
        problems.append(f"counts.requests {counts['requests']} is not the sum of {', '.join(OUTCOMES)}")
    problems += [f"rates.{k} must be a number in [0, 1] or null" for k in _RATES
                 if k not in doc["rates"] or not _is_rate(doc["rates"][k])]
    names = []
    for i, check in enumerate(doc["checks"]):
        if not isinstance(check, Mapping) or not set(_CHECK_KEYS) <= set(check):
            problems.append(f"checks[{i}] must have {', '.join(_CHECK_KEYS)}")
            continue
        names.append(check["name"])
        if check["status"] not in CHECK_STATUSES:
            problems.append(f"checks[{i}].status {check['status']!r} is none of {', '.join(CHECK_STATUSES)}")
        for key in ("value", "baseline", "p_value"):
            if not _is_number(check[key]):
                problems.append(f"checks[{i}].{key} must be a finite number or null")
    failing = sorted(c["name"] for c in doc["checks"] if isinstance(c, Mapping) and c.get("status") == VIOLATION)
    listed = sorted(v.get("check") for v in doc["violations"] if isinstance(v, Mapping))
    if failing != listed:
        problems.append(f"violations {listed} do not match the checks in violation {failing}")
    for i, period in enumerate(doc["periods"]):
        if not isinstance(period, Mapping) or "start" not in period or not _is_int(period.get("requests")):
            problems.append(f"periods[{i}] must have start and requests")
    if problems:
        raise ManifestError(f"{source} does not follow the monitoring schema: " + "; ".join(problems))


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return value is None or (isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value))


def _is_rate(value: Any) -> bool:
    return value is None or (_is_number(value) and 0.0 <= value <= 1.0)


def _kind(kind: type | tuple[type, ...]) -> str:
    kinds = kind if isinstance(kind, tuple) else (kind,)
    return " or ".join("null" if k is type(None) else k.__name__ for k in kinds)
