"""Step caching as SageMaker Pipelines does it.

A step with ``CacheConfig.Enabled`` is reused from an earlier successful
execution of the same pipeline when its cache key attributes are unchanged
and that execution finished within ``ExpireAfter``: for a Processing step
SageMaker's key is ``AppSpecification``, ``Environment`` and
``ProcessingInputs``, expressions evaluated (so a cached step's downstream
steps see the same input URIs and hit too). Like SageMaker, the key never
looks inside an input: data that changes under the same S3 prefix hits the
cache unless a step argument says it changed (the deepfake pipeline's
``inventory`` step passes the listing's digest to exploration for this).
The reused step's properties are the earlier execution's: its outputs stay
where that execution wrote them.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Callable, Mapping
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

from deepfake.core.errors import PipelineError
from deepfake.core.files import read_json, write_json

KEY_ATTRIBUTES: Mapping[str, tuple[str, ...]] = {"Processing": ("AppSpecification", "Environment", "ProcessingInputs")}
_DURATION = re.compile(r"^P?(?:(\d+)Y)?(?:(\d+)M)?(?:(\d+)W)?(?:(\d+)D)?(?:T(?:(\d+)H)?(?:(\d+)M)?(?:(\d+)S)?)?$",
                       re.IGNORECASE)


def cache_key(pipeline: str, step: str, step_type: str, arguments: Mapping[str, Any]) -> str:
    attributes = {name: arguments.get(name) for name in KEY_ATTRIBUTES.get(step_type, ())}
    doc = {"pipeline": pipeline, "step": step, "type": step_type, "attributes": attributes}
    return hashlib.sha256(json.dumps(doc, sort_keys=True, default=str).encode()).hexdigest()


def parse_duration(text: str | None) -> timedelta | None:
    """``ExpireAfter`` (ISO 8601: ``P30D``, ``PT1H``; also ``30d``, ``T16m``) as a timedelta; None: never expires."""
    if not text:
        return None
    match = _DURATION.match(str(text).strip())
    if not match or not any(match.groups()):
        raise PipelineError(f"CacheConfig ExpireAfter {text!r} is not an ISO 8601 duration such as P30D or PT1H")
    years, months, weeks, days, hours, minutes, seconds = (int(g or 0) for g in match.groups())
    return timedelta(days=365 * years + 30 * months + 7 * weeks + days, hours=hours, minutes=minutes,
                     seconds=seconds)


class StepCache:
    """Finished steps by cache key, one JSON record each, under ``folder/<pipeline>/<step>/``."""

    def __init__(self, folder: Path, persist: Callable[[], object] | None = None) -> None:
        # persist: keeps what a step wrote where the next command finds it (the local moto server's S3
        # lives in memory: its objects are saved before the record that points at them)
        self.folder = folder
        self.persist = persist

    def lookup(self, pipeline: str, step: str, key: str, expire_after: str | None) -> dict[str, Any] | None:
        path = self._path(pipeline, step, key)
        if not path.is_file():
            return None
        record = read_json(path)
        ttl = parse_duration(expire_after)
        finished = datetime.fromisoformat(record["finished"])
        if ttl is not None and datetime.now(timezone.utc) - finished > ttl:
            return None
        return record

    def store(self, pipeline: str, step: str, key: str, record: Mapping[str, Any]) -> None:
        """Record a step as soon as it succeeds (not when its execution ends): a killed execution's rerun
        reuses the steps it finished, as SageMaker's step cache does."""
        if self.persist is not None:
            self.persist()
        write_json(self._path(pipeline, step, key), {**record, "finished": datetime.now(timezone.utc).isoformat()})

    def _path(self, pipeline: str, step: str, key: str) -> Path:
        return self.folder / _safe(pipeline) / _safe(step) / f"{key}.json"


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]", "_", name)
