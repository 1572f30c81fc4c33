"""S3 as a Processing job sees it: what an ``S3Prefix`` input downloads and where, how an output folder
is uploaded, and the upload of the input data before an execution.

An ``S3Prefix`` input holds every object whose key starts with the prefix; the
local name of each is its key less the prefix (and a leading ``/``), or its
base name when the prefix is the whole key. An output folder goes to
``<S3Uri>/<relative path>``.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from deepfake.core import paths
from deepfake.core.errors import PipelineError

SINGLE_PUT_MAX = 5 * 1024**3 - 1      # bytes: larger files would get a multipart ETag, which is not an MD5


def split_uri(uri: str) -> tuple[str, str]:
    if not isinstance(uri, str) or not uri.startswith("s3://") or len(uri) <= 5:
        raise PipelineError(f"{uri!r} is not an s3:// URI")
    return paths.split_s3(uri)


@dataclass(frozen=True)
class S3Object:
    key: str
    etag: str
    size: int


class Storage:
    """One S3 client (moto, or the configured endpoint) and the few operations the executor needs."""

    def __init__(self, client: Any) -> None:
        self.client = client

    def list(self, uri: str) -> list[S3Object]:
        """Every object under the prefix of ``uri``, sorted by key."""
        bucket, prefix = split_uri(uri)
        found = []
        for page in self.client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
            found += [S3Object(o["Key"], o["ETag"].strip('"'), o["Size"]) for o in page.get("Contents", [])]
        return sorted(found, key=lambda o: o.key)

    def download(self, uri: str, objects: Iterable[S3Object], folder: Path) -> list[str]:
        """Download ``objects`` (listed under ``uri``) into ``folder``; returns their local names."""
        bucket, prefix = split_uri(uri)
        names = []
        for obj in objects:
            name = local_name(prefix, obj.key)
            if not name or name.endswith("/"):
                continue                                  # a "folder" marker object
            target = folder / name
            target.parent.mkdir(parents=True, exist_ok=True)
            self.client.download_file(bucket, obj.key, str(target))
            names.append(name)
        return names

    def upload_file(self, path: Path, uri: str) -> None:
        from boto3.s3.transfer import TransferConfig

        bucket, key = split_uri(uri)
        self.client.upload_file(str(path), bucket, key, Config=TransferConfig(multipart_threshold=SINGLE_PUT_MAX))

    def upload_tree(self, folder: Path, uri: str) -> int:
        """Every file under ``folder`` to ``<uri>/<relative path>``; returns how many."""
        count = 0
        for path in sorted(p for p in folder.rglob("*") if p.is_file()):
            self.upload_file(path, join_uri(uri, path.relative_to(folder).as_posix()))
            count += 1
        return count

    def sync_up(self, folder: Path, uri: str) -> tuple[int, int]:
        """Upload ``folder`` to ``uri``, skipping files whose MD5 is the object's ETag; (uploaded, unchanged)."""
        if not folder.is_dir():
            raise PipelineError(f"input folder {folder} does not exist")
        existing = {o.key: o.etag for o in self.list(uri.rstrip("/") + "/")}
        uploaded = unchanged = 0
        for path in sorted(p for p in folder.rglob("*") if p.is_file() and not _hidden(p, folder)):
            target = join_uri(uri, path.relative_to(folder).as_posix())
            if existing.get(split_uri(target)[1]) == _md5(path):
                unchanged += 1
                continue
            self.upload_file(path, target)
            uploaded += 1
        return uploaded, unchanged

    def read_json(self, uri: str) -> Any:
        bucket, key = split_uri(uri)
        try:
            body = self.client.get_object(Bucket=bucket, Key=key)["Body"].read()
        except self.client.exceptions.NoSuchKey:
            raise PipelineError(f"{uri} does not exist") from None
        try:
            return json.loads(body)
        except json.JSONDecodeError as exc:
            raise PipelineError(f"{uri} is not JSON: {exc}") from None

    def exists(self, uri: str) -> bool:
        bucket, key = split_uri(uri)
        return any(o.key == key for o in self.list(uri))

    def ensure_bucket(self, bucket: str) -> None:
        from botocore.exceptions import ClientError

        try:
            self.client.head_bucket(Bucket=bucket)
        except ClientError:
            self.client.create_bucket(Bucket=bucket)


def local_name(prefix: str, key: str) -> str:
    rest = key[len(prefix):].lstrip("/")
    return rest or key.rsplit("/", 1)[-1]


def join_uri(uri: str, rel: str) -> str:
    return f"{uri.rstrip('/')}/{rel}" if rel else uri


def _md5(path: Path) -> str:
    h = hashlib.md5(usedforsecurity=False)
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _hidden(path: Path, root: Path) -> bool:
    return any(part.startswith(".") for part in path.relative_to(root).parts)
