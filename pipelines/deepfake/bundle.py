"""The code every pipeline step runs, shipped to S3 under its content hash.

A step's container gets one Processing input holding ``run_step.py``, the extra
requirements and the kit (``src/deepfake``, the step notebooks and
``pyproject.toml``). The S3 prefix is the sha256 of those files, so an upsert
with unchanged code writes the same step arguments and SageMaker's step cache
still hits; a change to any of them moves every step to a new prefix.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import deepfake
from deepfake.core import paths
from deepfake.core.errors import PipelineError

# Part of the hash: bump it when the layout below changes.
BUNDLE_FORMAT = "1"
ENTRY_POINT = "run_step.py"
REQUIREMENTS = "requirements.txt"
KIT_DIR = "kit"                      # pip-installable copy of the kit inside the bundle
MARKER = "BUNDLE.json"               # written last: a prefix holding it is complete
# pyproject.toml names a readme; a fixed one keeps doc edits from busting the cache.
README = b"deepfake-kit, shipped by the SageMaker pipeline.\n"
_SKIP_DIRS = {"__pycache__", ".ipynb_checkpoints"}
_SKIP_SUFFIXES = {".pyc", ".pyo"}

HERE = Path(__file__).resolve().parent


@dataclass(frozen=True)
class CodeBundle:
    files: Mapping[str, bytes]       # posix path inside the bundle -> content
    sha256: str

    def uri(self, bucket: str, prefix: str) -> str:
        """``s3://bucket/prefix/code/<sha256>/``: the step input that holds the bundle."""
        return f"s3://{bucket}/{_key_prefix(prefix, self.sha256)}"


def build_bundle(notebooks: Iterable[str]) -> CodeBundle:
    """Collect the entry point, requirements, kit source and the named notebooks."""
    files: dict[str, bytes] = {
        ENTRY_POINT: _read(HERE / ENTRY_POINT),
        REQUIREMENTS: _read(HERE / REQUIREMENTS),
        f"{KIT_DIR}/pyproject.toml": _read(_pyproject()),
        f"{KIT_DIR}/README.md": README,
    }
    package = Path(deepfake.__file__).resolve().parent
    for path in _tree(package):
        files[f"{KIT_DIR}/src/deepfake/{path.relative_to(package).as_posix()}"] = path.read_bytes()
    nb_dir = paths.notebooks_dir()
    for name in notebooks:
        files[f"{KIT_DIR}/notebooks/{name}"] = _read(nb_dir / name, what="notebook")
    return CodeBundle(files=files, sha256=content_hash(files))


def content_hash(files: Mapping[str, bytes]) -> str:
    """sha256 over the sorted paths and the sha256 of each file."""
    h = hashlib.sha256(f"deepfake-bundle {BUNDLE_FORMAT}\n".encode())
    for name in sorted(files):
        h.update(f"{name}\0{hashlib.sha256(files[name]).hexdigest()}\n".encode())
    return h.hexdigest()


def upload_bundle(bundle: CodeBundle, s3_client: Any, bucket: str, prefix: str) -> str:
    """Upload the bundle unless its prefix already holds it; returns its S3 URI."""
    from botocore.exceptions import ClientError

    key_prefix = _key_prefix(prefix, bundle.sha256)
    try:
        s3_client.head_object(Bucket=bucket, Key=key_prefix + MARKER)
        return bundle.uri(bucket, prefix)
    except ClientError as exc:
        code = exc.response.get("Error", {}).get("Code", "")
        if code not in ("404", "NoSuchKey", "NotFound"):
            raise _s3_error(exc, bucket) from None
    try:
        for name, data in sorted(bundle.files.items()):
            s3_client.put_object(Bucket=bucket, Key=key_prefix + name, Body=data)
        marker = {"sha256": bundle.sha256, "kit_version": deepfake.__version__,
                  "files": sorted(bundle.files)}
        s3_client.put_object(Bucket=bucket, Key=key_prefix + MARKER,
                             Body=json.dumps(marker, indent=1).encode())
    except ClientError as exc:
        raise _s3_error(exc, bucket) from None
    return bundle.uri(bucket, prefix)


def _key_prefix(prefix: str, sha256: str) -> str:
    return "/".join(p for p in (prefix.strip("/"), "code", sha256) if p) + "/"


def _pyproject() -> Path:
    path = paths.project_dir() / "pyproject.toml"
    if not path.is_file():
        raise PipelineError(
            f"cannot find the kit's pyproject.toml at {path}; run from the checkout or set DEEPFAKE_HOME to it"
        )
    return path


def _tree(root: Path) -> list[Path]:
    out = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if d not in _SKIP_DIRS and not d.startswith("."))
        for name in sorted(filenames):
            if not name.startswith(".") and Path(name).suffix not in _SKIP_SUFFIXES:
                out.append(Path(dirpath) / name)
    return out


def _read(path: Path, what: str = "file") -> bytes:
    if not path.is_file():
        raise PipelineError(f"{what} {path} does not exist; the pipeline ships it to every step")
    return path.read_bytes()


def _s3_error(exc: Exception, bucket: str) -> PipelineError:
    return PipelineError(f"cannot upload the step code to s3://{bucket}: {exc}; check that the bucket "
                         "exists and the credentials may write to it (docs/sagemaker.md)")
