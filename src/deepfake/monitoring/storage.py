"""Files in a local folder or under an S3 prefix, read the same way.

Monitoring reads an endpoint's capture, an evaluation and ground truth from
wherever they are: a folder on this machine (``deepfake serve --capture``, a run
folder) or S3 (the endpoint's ``DestinationS3Uri``, a pipeline's outputs). boto3
is imported only for an ``s3://`` location.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from deepfake.core import paths
from deepfake.core.errors import MonitoringError

READ_CHUNK = 1 << 20            # bytes per read of a streamed S3 object


def is_s3(location: str | os.PathLike[str]) -> bool:
    return paths.is_s3(str(location))


def list_files(location: str | os.PathLike[str], suffix: str = "") -> list[str]:
    """Every file under ``location`` (a folder or an S3 prefix; a file is itself) ending in ``suffix``, sorted.

    A local location that does not exist is an error; an S3 prefix with no object is an empty list
    (an endpoint that has not been called yet)."""
    text = str(location)
    if is_s3(text):
        bucket, prefix = paths.split_s3(text)
        if not bucket:
            raise MonitoringError(f"{text!r} names no bucket; give s3://bucket/prefix")
        client = _s3()
        keys: list[str] = []
        try:
            for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
                keys += [o["Key"] for o in page.get("Contents", []) if o["Key"].endswith(suffix)]
        except Exception as exc:  # noqa: BLE001 - botocore's errors, named in the message
            raise MonitoringError(f"cannot list {text}: {exc}") from exc
        return [f"s3://{bucket}/{key}" for key in sorted(keys)]
    path = Path(text)
    if path.is_file():
        return [str(path)]
    if not path.is_dir():
        raise MonitoringError(f"{path} does not exist; give the capture folder of `deepfake serve --capture` "
                              "or the endpoint's S3 capture prefix")
    return sorted(str(p) for p in path.rglob(f"*{suffix}") if p.is_file())


def iter_lines(location: str) -> Iterator[bytes]:
    """The lines of one file (local or S3), streamed: a capture file of videos can be large."""
    if is_s3(location):
        bucket, key = paths.split_s3(location)
        try:
            body = _s3().get_object(Bucket=bucket, Key=key)["Body"]
        except Exception as exc:  # noqa: BLE001
            raise MonitoringError(f"cannot read {location}: {exc}") from exc
        yield from body.iter_lines(chunk_size=READ_CHUNK, keepends=False)
        return
    with open(location, "rb") as fh:
        for line in fh:
            yield line.rstrip(b"\r\n")


def read_bytes(location: str | os.PathLike[str]) -> bytes:
    text = str(location)
    if is_s3(text):
        bucket, key = paths.split_s3(text)
        try:
            return _s3().get_object(Bucket=bucket, Key=key)["Body"].read()
        except Exception as exc:  # noqa: BLE001
            raise MonitoringError(f"cannot read {text}: {exc}") from exc
    try:
        return Path(text).read_bytes()
    except OSError as exc:
        raise MonitoringError(f"cannot read {text}: {exc}") from exc


def exists(location: str | os.PathLike[str]) -> bool:
    text = str(location)
    if not is_s3(text):
        return Path(text).is_file()
    bucket, key = paths.split_s3(text)
    try:
        _s3().head_object(Bucket=bucket, Key=key)
        return True
    except Exception:  # noqa: BLE001 - absent or unreadable: the caller says what it looked for
        return False


def download(location: str, target: Path) -> Path:
    """A local copy of an S3 object (a local file is returned as it is)."""
    if not is_s3(location):
        return Path(location)
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_bytes(read_bytes(location))
    return target


def join(location: str | os.PathLike[str], name: str) -> str:
    text = str(location)
    return f"{text.rstrip('/')}/{name}" if is_s3(text) else str(Path(text) / name)


def parent(location: str | os.PathLike[str]) -> str:
    text = str(location)
    if is_s3(text):
        return text.rstrip("/").rsplit("/", 1)[0]
    return str(Path(text).parent)


def _s3() -> Any:
    try:
        import boto3
    except ImportError as exc:
        raise MonitoringError("reading s3:// locations needs boto3 (pip install boto3)") from exc
    return boto3.client("s3")
