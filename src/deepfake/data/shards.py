"""Face crops packed into tar shards, grouped by the step that reads them.

Millions of small crop files are slow everywhere a large dataset goes: S3
lists, uploads and downloads them one object at a time, and a training epoch
that reads them in random order is bound by the volume's IOPS. So the
pipeline's extraction packs its crops into plain tar files of about
``shard_bytes`` each (the layout WebDataset reads: one member per crop, named
after it), a video's crops never split between two, and writes an index
(``crops.csv`` beside its ``faces.csv``: each crop's tar, byte offset and size).

The tars are grouped by the step that reads them, so each step's input holds
only its own crops (:func:`crop_group`): ``train`` holds what training learns
from and validates on, ``eval`` what the evaluation scores: the test split,
plus, when training never sees the dataset's fakes (``self_blend``), the other
splits' fakes, which the evaluation scores as unseen manipulations.

A crop in a tar is named by a reference ``<tar path>#<offset>:<size>`` in the
faces table's ``abs_path`` (:func:`deepfake.data.faces_table.read_faces`
resolves it); :func:`read_crop_bytes` reads it with one seek, and reading a
tar's crops in offset order is one sequential pass (:mod:`deepfake.data.stream`).
"""

from __future__ import annotations

import io
import os
import re
import shutil
import tarfile
from collections.abc import Iterable
from pathlib import Path

import pandas as pd

from deepfake.core import paths
from deepfake.core.errors import ConfigError, ManifestError
from deepfake.core.files import atomic_write_text
from deepfake.core.vocabulary import STATUS_OK

CROP_INDEX = "crops.csv"                 # beside a faces.csv whose crops were packed
INDEX_COLUMNS = ["path", "tar", "offset", "size"]
TRAIN_GROUP, EVAL_GROUP = "train", "eval"
GROUPS = (TRAIN_GROUP, EVAL_GROUP)
# What the crops are grouped for: a training mode of deepfake.stages.train, or "evaluate" (an existing model
# scores every video: every crop goes to the evaluation).
PACK_MODES = ("self_blend", "dataset", "both", "evaluate")
_REF = re.compile(r"^(?P<tar>.+\.tar)#(?P<offset>\d+):(?P<size>\d+)$")


def crop_group(faces_df: pd.DataFrame, mode: str) -> pd.Series:
    """``train`` or ``eval`` for each row: which step reads its crop (module docstring)."""
    if mode not in PACK_MODES:
        raise ConfigError(f"mode={mode!r} is unknown; crops are packed for one of {', '.join(PACK_MODES)}")
    split = faces_df["split"].astype(str)
    fake = pd.to_numeric(faces_df["label"], errors="coerce") == 1
    if mode == "evaluate":
        to_eval = pd.Series(True, index=faces_df.index)
    elif mode == "self_blend":
        to_eval = (split == "test") | fake
    else:
        to_eval = split == "test"
    return to_eval.map({True: EVAL_GROUP, False: TRAIN_GROUP})


def pack(faces_df: pd.DataFrame, table_dir: str | os.PathLike[str], crops_dir: str | os.PathLike[str], *,
         mode: str, shard_bytes: int, name: str = "crops", remove_files: bool = True) -> pd.DataFrame:
    """Pack the crops of ``faces_df`` (a faces table of ``table_dir``: ``path`` relative to it) into
    ``crops_dir/<group>/<name>-<group>-<n>.tar`` and write ``table_dir/crops.csv``; returns the index.

    Each video's crop files are removed once they are in a tar (``remove_files``), so packing needs
    little more room than the crops themselves.
    """
    if shard_bytes < 1:
        raise ConfigError(f"shard_bytes={shard_bytes} must be positive")
    table_dir, crops_dir = Path(table_dir), Path(crops_dir)
    ok = faces_df[faces_df["status"].astype(str) == STATUS_OK]
    groups = crop_group(ok, mode)
    rows: list[dict[str, object]] = []
    for group in GROUPS:
        part = ok[groups == group]
        writer = _ShardWriter(crops_dir, group, f"{name}-{group}", shard_bytes)
        try:
            for _video, crops in part.groupby("video_id", sort=False):
                writer.roll_if_full()
                for rel in crops["path"]:
                    path = table_dir / str(rel)
                    offset, size = writer.add(str(rel), path.read_bytes())
                    rows.append({"path": str(rel), "tar": writer.rel, "offset": offset, "size": size})
                if remove_files:
                    for rel in crops["path"]:
                        (table_dir / str(rel)).unlink(missing_ok=True)
        finally:
            writer.close()
    index = pd.DataFrame(rows, columns=INDEX_COLUMNS)
    atomic_write_text(table_dir / CROP_INDEX, index.to_csv(index=False))
    if remove_files:
        shutil.rmtree(table_dir / "crops", ignore_errors=True)
    return index


class _ShardWriter:
    """Tar files of about ``limit`` bytes, one after the other: ``<group>/<stem>-00000.tar``, ..."""

    def __init__(self, root: Path, group: str, stem: str, limit: int) -> None:
        self.root, self.group, self.stem, self.limit = root, group, stem, limit
        self.count = 0
        self.tar: tarfile.TarFile | None = None
        self.rel = ""

    def roll_if_full(self) -> None:
        if self.tar is not None and self.tar.offset >= self.limit:
            self.close()

    def add(self, member: str, data: bytes) -> tuple[int, int]:
        """Append a member; returns the offset of its data in the tar and its size."""
        if self.tar is None:
            self.rel = f"{self.group}/{self.stem}-{self.count:05d}.tar"
            path = self.root / self.rel
            path.parent.mkdir(parents=True, exist_ok=True)
            self.tar = tarfile.open(path, "w", format=tarfile.PAX_FORMAT)
            self.count += 1
        info = tarfile.TarInfo(member)
        info.size = len(data)
        header = len(info.tobuf(self.tar.format, self.tar.encoding, self.tar.errors))
        offset = self.tar.offset + header
        self.tar.addfile(info, io.BytesIO(data))
        return offset, len(data)

    def close(self) -> None:
        if self.tar is not None:
            self.tar.close()
            self.tar = None


def tar_ref(tar: str | os.PathLike[str], offset: int, size: int) -> str:
    """The reference of a crop inside a tar shard, as ``abs_path`` holds it."""
    return f"{tar}#{int(offset)}:{int(size)}"


def parse_ref(ref: str) -> tuple[str, int, int] | None:
    """``(tar, offset, size)`` of a tar reference; None for a plain file path."""
    match = _REF.match(str(ref))
    return (match["tar"], int(match["offset"]), int(match["size"])) if match else None


def read_crop_bytes(ref: str | os.PathLike[str]) -> bytes:
    """The bytes of a crop: a file, or a member of a tar shard (one seek, one read), local or in S3 (one
    ranged GET: a step reads a few crops of tars it never downloads)."""
    parsed = parse_ref(str(ref))
    if parsed is None:
        return Path(ref).read_bytes()
    tar, offset, size = parsed
    if paths.is_s3(tar):
        from deepfake.data.listing import s3_client

        bucket, key = paths.split_s3(tar)
        data = s3_client().get_object(Bucket=bucket, Key=key, Range=f"bytes={offset}-{offset + size - 1}")["Body"].read()
    else:
        with open(tar, "rb") as fh:
            fh.seek(offset)
            data = fh.read(size)
    if len(data) != size:
        raise ManifestError(f"tar shard {tar} ends before the crop at byte {offset} ({size} bytes): the shard is "
                            "truncated; download it again or re-run face extraction")
    return data


def is_packed(table_dir: str | os.PathLike[str]) -> bool:
    return (Path(table_dir) / CROP_INDEX).is_file()


def resolve_packed(table_dir: str | os.PathLike[str], crop_paths: Iterable[str],
                   crops_dirs: Iterable[str | os.PathLike[str]]) -> list[str]:
    """``abs_path`` of each crop path of a packed table: its tar reference where the tar is in one of
    ``crops_dirs`` (the group's folder or above it; a step's input holds only its group's tars), else ''.
    An ``s3://`` crops root (the extraction's crops output) names every tar where it is in S3."""
    index = pd.read_csv(Path(table_dir) / CROP_INDEX, dtype={"path": str, "tar": str}, keep_default_na=False)
    remote = next((str(d).rstrip("/") for d in crops_dirs if paths.is_s3(str(d))), None)
    if remote is not None:                          # the crops' S3 root: every tar by its key, nothing downloaded
        refs = {row.path: tar_ref(f"{remote}/{row.tar}", row.offset, row.size) for row in index.itertuples()}
        return [refs.get(str(p), "") if p else "" for p in crop_paths]
    found: dict[str, Path] = {}
    for folder in crops_dirs:
        if Path(folder).is_dir():
            for tar in Path(folder).rglob("*.tar"):
                found.setdefault(tar.name, tar.resolve())
    refs = {}
    for row in index.itertuples(index=False):
        tar = found.get(Path(row.tar).name)
        if tar is not None:
            refs[row.path] = tar_ref(tar, row.offset, row.size)
    return [refs.get(str(p), "") if p else "" for p in crop_paths]
