"""A local model registry that mirrors the SageMaker Model Registry.

A model package group holds numbered versions; each version records the
artifact (a copy of ``model.tar.gz`` kept inside the registry, with its
sha256), the evaluation metrics and an approval status that starts as
``PendingManualApproval``. ``deepfake serve``/``predict`` use the latest
approved version, as the deployment does in AWS.
"""

from __future__ import annotations

import fcntl
import shutil
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from deepfake.core import paths
from deepfake.core.errors import RegistryError
from deepfake.core.files import read_json, sha256_file, write_json
from deepfake.core.vocabulary import APPROVAL_STATUSES, APPROVED, MODEL_GROUP, PENDING

DEFAULT_GROUP = MODEL_GROUP
STATUSES = APPROVAL_STATUSES


@dataclass(frozen=True)
class ModelVersion:
    group: str
    version: int
    status: str
    artifact: str            # absolute path of the registered model.tar.gz
    sha256: str
    metrics: dict[str, Any] = field(default_factory=dict)
    created: str = ""
    description: str = ""
    source: dict[str, Any] = field(default_factory=dict)   # run id, evaluation.json, report paths

    @property
    def arn(self) -> str:
        return f"local:model-package/{self.group}/{self.version}"


class LocalRegistry:
    def __init__(self, root: str | Path | None = None) -> None:
        self.root = Path(root) if root is not None else paths.registry_dir()

    def register(self, group: str, artifact: str | Path, metrics: Mapping[str, Any], *,
                 status: str = PENDING, description: str = "",
                 source: Mapping[str, Any] | None = None) -> ModelVersion:
        _check_status(status)
        artifact = _artifact(artifact)
        with self._locked(group) as gdir:
            return self._add(gdir, group, artifact, metrics, status, description, source)

    def register_new(self, group: str, artifact: str | Path, metrics: Mapping[str, Any], *,
                     status: str = PENDING, description: str = "",
                     source: Mapping[str, Any] | None = None) -> tuple[ModelVersion, bool]:
        """:meth:`register` unless a version of ``group`` already holds this artifact (same sha256): then that
        version and False. Looked up and registered under the group's lock, so two runs registering one
        model at once make one version, and two models two versions."""
        _check_status(status)
        artifact = _artifact(artifact)
        with self._locked(group) as gdir:
            existing = self.find(group, sha256_file(artifact))
            if existing is not None:
                return existing, False
            return self._add(gdir, group, artifact, metrics, status, description, source), True

    def _add(self, gdir: Path, group: str, artifact: Path, metrics: Mapping[str, Any], status: str,
             description: str, source: Mapping[str, Any] | None) -> ModelVersion:
        """The next version of ``group`` (the caller holds its lock)."""
        version = 1 + max((v.version for v in self._read_all(gdir, group)), default=0)
        vdir = gdir / f"v{version:04d}"
        vdir.mkdir(parents=True)
        kept = vdir / artifact.name
        shutil.copy2(artifact, kept)
        mv = ModelVersion(group=group, version=version, status=status, artifact=str(kept),
                          sha256=sha256_file(kept), metrics=dict(metrics),
                          created=datetime.now(timezone.utc).isoformat(timespec="seconds"),
                          description=description, source=dict(source or {}))
        write_json(vdir / "version.json", asdict(mv))
        return mv

    def list(self, group: str = DEFAULT_GROUP) -> list[ModelVersion]:
        gdir = self.root / group
        if not gdir.is_dir():
            return []
        return self._read_all(gdir, group)

    def find(self, group: str, sha256: str) -> ModelVersion | None:
        """The version of ``group`` whose artifact has this sha256 (the earliest), or None."""
        return next((mv for mv in self.list(group) if mv.sha256 == sha256), None)

    def get(self, group: str, version: int) -> ModelVersion:
        for mv in self.list(group):
            if mv.version == version:
                return mv
        known = ", ".join(str(v.version) for v in self.list(group)) or "none"
        raise RegistryError(f"group {group!r} has no version {version}; versions: {known}")

    def set_status(self, group: str, version: int, status: str, description: str = "") -> ModelVersion:
        _check_status(status)
        with self._locked(group) as gdir:
            mv = self.get(group, version)
            updated = ModelVersion(**{**asdict(mv), "status": status,
                                      "description": description or mv.description})
            write_json(gdir / f"v{version:04d}" / "version.json", asdict(updated))
        return updated

    def approve(self, group: str, version: int, description: str = "") -> ModelVersion:
        return self.set_status(group, version, APPROVED, description)

    def reject(self, group: str, version: int, description: str = "") -> ModelVersion:
        return self.set_status(group, version, "Rejected", description)

    def latest_approved(self, group: str = DEFAULT_GROUP) -> ModelVersion:
        approved = [v for v in self.list(group) if v.status == APPROVED]
        if not approved:
            raise RegistryError(
                f"no approved version in model package group {group!r} at {self.root}; "
                f"approve one with `deepfake registry approve VERSION --group {group}`"
            )
        mv = approved[-1]
        if sha256_file(mv.artifact) != mv.sha256:
            raise RegistryError(f"artifact {mv.artifact} of {group} v{mv.version} does not match its sha256")
        return mv

    def _read_all(self, gdir: Path, group: str) -> list[ModelVersion]:
        out = [ModelVersion(**read_json(p)) for p in sorted(gdir.glob("v*/version.json"))]
        return sorted(out, key=lambda v: v.version)

    @contextmanager
    def _locked(self, group: str) -> Iterator[Path]:
        """The group's folder under its lock (flock: another process waits until it is released)."""
        if not group or "/" in group or group.startswith("."):
            raise RegistryError(f"invalid model package group name {group!r}")
        gdir = self.root / group
        gdir.mkdir(parents=True, exist_ok=True)
        with open(gdir / ".lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                yield gdir
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)


def _artifact(path: str | Path) -> Path:
    artifact = Path(path)
    if not artifact.is_file():
        raise RegistryError(f"cannot register {artifact}: no such file (expected a model.tar.gz)")
    return artifact


def _check_status(status: str) -> None:
    if status not in STATUSES:
        raise RegistryError(f"unknown approval status {status!r}; use one of {', '.join(STATUSES)}")
