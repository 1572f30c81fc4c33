"""A dataset's identity and its files, without downloading them: the listing of an S3 prefix or a folder.

The pipeline's step cache keys on a step's arguments, which name the dataset's
S3 prefix, not its content: videos added under the same prefix would bring the
old exploration and extraction back. A :class:`Listing` (every object's key
relative to the prefix, its size and its ETag) has a :attr:`~Listing.digest`
that changes whenever an object is added, removed or rewritten; the pipeline
computes it as it starts and passes it on, and every step's outputs record it.
A local folder gets the same kind of listing, with sizes and no ETags.

:func:`stage` lets a step that reads a few files of a large S3 dataset (the
exploration: the catalog's index files and the videos it probes) work on a
local view of the prefix: the small index files downloaded, every video an
empty placeholder of the same name, so the catalogs see the layout they know,
and :func:`fetch` downloads the videos that are actually read.
"""

from __future__ import annotations

import concurrent.futures as cf
import hashlib
import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

from deepfake.core import paths
from deepfake.core.errors import CatalogError, ConfigError
from deepfake.data.catalogs.table import VIDEO_EXTENSIONS

# What the catalogs read besides videos (metadata.json, split lists, labels CSVs): downloaded by stage().
INDEX_SUFFIXES = (".json", ".csv", ".txt")
DOWNLOAD_THREADS = 8


@dataclass(frozen=True)
class StoredObject:
    key: str                  # relative to the listed prefix (or folder), with forward slashes
    size: int                 # bytes
    etag: str = ""            # S3's ETag; empty for a local file
    source_key: str = field(default="", compare=False)   # the S3 key itself

    @property
    def is_video(self) -> bool:
        return PurePosixPath(self.key).suffix.lower() in VIDEO_EXTENSIONS

    @property
    def is_index(self) -> bool:
        return PurePosixPath(self.key).suffix.lower() in INDEX_SUFFIXES


@dataclass(frozen=True)
class Listing:
    """The objects under one S3 prefix (or the files under one folder), sorted by key."""

    source: str
    objects: tuple[StoredObject, ...]

    @property
    def digest(self) -> str:
        """sha256 over every object's relative key, size and ETag: the data's identity."""
        h = hashlib.sha256()
        for o in self.objects:
            h.update(f"{o.key}\0{o.size}\0{o.etag}\n".encode())
        return h.hexdigest()

    @property
    def total_bytes(self) -> int:
        return sum(o.size for o in self.objects)

    def videos(self) -> list[StoredObject]:
        return [o for o in self.objects if o.is_video]

    def record(self) -> dict[str, Any]:
        """What outputs record of the data: where it was, its digest, how many objects and bytes."""
        videos = self.videos()
        return {"source": self.source, "digest": self.digest, "objects": len(self.objects),
                "bytes": self.total_bytes, "videos": len(videos), "video_bytes": sum(o.size for o in videos)}


def list_data(source: str | os.PathLike[str], client: Any = None) -> Listing:
    """The listing of an ``s3://`` prefix (``client``: a boto3 S3 client; default: a new one) or a local folder."""
    text = str(source)
    if paths.is_s3(text):
        return list_s3(text, client)
    root = paths.resolve(text)
    if not root.exists():
        raise CatalogError(f"dataset path {root} does not exist")
    files = [root] if root.is_file() else sorted(p for p in root.rglob("*") if p.is_file())
    base = root.parent if root.is_file() else root
    return Listing(str(root), tuple(StoredObject(p.relative_to(base).as_posix(), p.stat().st_size) for p in files))


def list_s3(uri: str, client: Any = None) -> Listing:
    bucket, prefix = paths.split_s3(uri)
    if not bucket:
        raise ConfigError(f"{uri!r} is not an S3 URI such as s3://bucket/prefix/")
    client = client or s3_client()
    found = []
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        for o in page.get("Contents", []):
            rel = _relative(prefix, o["Key"])
            if rel and not rel.endswith("/"):              # a "folder" marker object holds nothing
                found.append(StoredObject(rel, int(o["Size"]), str(o.get("ETag", "")).strip('"'), o["Key"]))
    return Listing(uri, tuple(sorted(found, key=lambda o: o.key)))


def stage(listing: Listing, folder: str | os.PathLike[str], client: Any = None) -> Path:
    """A local view of an S3 listing in ``folder``: index files downloaded, videos as empty placeholders."""
    root = paths.ensure_dir(folder)
    index = [o for o in listing.objects if o.is_index]
    _download(listing, index, root, client)
    for o in listing.objects:
        if o.is_video:
            target = root / o.key
            target.parent.mkdir(parents=True, exist_ok=True)
            target.touch()
    return root


def fetch(listing: Listing, keys: Iterable[str], folder: str | os.PathLike[str], client: Any = None) -> int:
    """Download the objects of ``keys`` (relative to the listing's prefix) into a staged view; returns bytes."""
    by_key = {o.key: o for o in listing.objects}
    wanted = [by_key[k] for k in dict.fromkeys(keys) if k in by_key]
    _download(listing, wanted, paths.resolve(folder), client)
    return sum(o.size for o in wanted)


def _download(listing: Listing, objects: list[StoredObject], root: Path, client: Any) -> None:
    if not objects:
        return
    bucket, _prefix = paths.split_s3(listing.source)
    client = client or s3_client()

    def get(o: StoredObject) -> None:
        target = root / o.key
        target.parent.mkdir(parents=True, exist_ok=True)
        client.download_file(bucket, o.source_key, str(target))

    with cf.ThreadPoolExecutor(DOWNLOAD_THREADS, thread_name_prefix="s3-get") as pool:
        list(pool.map(get, objects))


def s3_client() -> Any:
    try:
        import boto3
    except ImportError as exc:
        raise ConfigError("reading a dataset from S3 needs boto3 (pip install boto3; SageMaker images have it)"
                          ) from exc
    return boto3.client("s3")


def _relative(prefix: str, key: str) -> str:
    rest = key[len(prefix):].lstrip("/") if key.startswith(prefix) else key
    return rest or key.rsplit("/", 1)[-1]

