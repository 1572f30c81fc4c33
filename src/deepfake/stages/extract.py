"""Face extraction over a videos table: resumable, parallel, sharded.

Runs the one crop path (:mod:`deepfake.media.extraction`) over every video and
is built to survive long runs on many videos:

- *Resumable.* Each video's rows go to ``.parts/<video_id>.csv``, written
  atomically after its crops; a rerun skips videos that have a part (status rows
  included) and ``faces.csv`` is assembled from the parts at the end, so a killed
  run loses no finished video. A video whose file is missing gets a
  ``decode_error`` row but no part: the next run looks for it again.
  Parts are only reused with the same settings (``workers`` aside); otherwise
  the run stops and says so.
- *Parallel.* ``workers > 1`` spreads videos over processes (spawned, so no
  forked OpenCV or tqdm threads), each building its detector once and keeping
  to its share of the cores (:mod:`deepfake.core.resources`). Within a video a
  decode thread feeds frames to detection, so decoding and detection overlap
  in every worker. On 2 cores one worker already keeps both busy.
- *Sharded.* SageMaker's ``ShardedByS3Key`` gives each instance only some of
  the files: with ``shard=NAME`` only videos whose file is present are
  processed, into ``shard-NAME/``; :func:`deepfake.data.faces_table.read_faces`
  reads all shards.
- *Packed.* :func:`pack_crops` ends an extraction for a large dataset: its
  crop files go into tar shards grouped by the step that reads them
  (:mod:`deepfake.data.shards`), and the per-video parts are removed (the
  table holds every row), so the output is a few large objects, not millions.
"""

from __future__ import annotations

import concurrent.futures as cf
import hashlib
import multiprocessing
import os
import re
import shutil
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pandas as pd

from deepfake.core.errors import ConfigError, ManifestError, VideoDecodeError
from deepfake.core.files import atomic_write_text, read_json, write_json
from deepfake.core.paths import CROPS_DIR, FACES_MANIFEST, resolve
from deepfake.core.progress import PROGRESS_MODES, Progress
from deepfake.core.resources import decoder_threads, threads_per_worker
from deepfake.core.vocabulary import STATUS_DECODE_ERROR, STATUS_NO_FACE, STATUS_OK
from deepfake.data.faces_table import FACES_COLUMNS, META_COLUMNS, PART_COLUMNS, _format_box, format_landmarks
from deepfake.data.manifest import DATA_KEY, data_identity, sources, write_manifest
from deepfake.data.shards import pack
from deepfake.data.splits import PROTOCOL_ATTR
from deepfake.media.detectors import FaceDetector
from deepfake.media.extraction import ExtractConfig, build_detector, encode_crop, extract_video_faces

# Layout of the per-video part files; parts of another layout are extracted again.
PARTS_FORMAT = 2
PARTS_DIR = ".parts"


def extract_faces(videos_df: pd.DataFrame, data_dir: str | os.PathLike[str], out_dir: str | os.PathLike[str],
                  config: ExtractConfig, *, shard: str | None = None, progress: bool | str = True) -> pd.DataFrame:
    """Extract faces of every video in ``videos_df`` into ``out_dir``; returns the faces table.

    ``videos_df`` needs ``video_id`` and ``path`` (relative to ``data_dir``, or to its
    folder when ``data_dir`` is a CSV catalog);
    ``original_id``, ``label``, ``manipulation`` and ``split`` are copied to every
    row (``original_id`` defaults to ``video_id``, the others to empty). Writes
    ``crops/<video_id>/<frame_idx>_<face_idx>.<fmt>`` and ``faces.csv`` + ``faces.json``
    (into ``shard-<shard>/`` when sharded). ``progress``: True (a bar on a terminal,
    a plain line every 30 s elsewhere), False, ``"bar"`` or ``"lines"``.
    """
    if progress not in PROGRESS_MODES:
        raise ConfigError(f"progress must be True, False, 'bar' or 'lines'; got {progress!r}")
    table = _videos_table(videos_df)
    data_root = resolve(data_dir)
    if data_root.is_file():  # a CSV catalog: its paths are relative to its folder (catalogs.dataset_root)
        data_root = data_root.parent
    folder = shard_folder(out_dir, shard)
    parts = folder / PARTS_DIR
    _claim_parts(parts, config)

    jobs: list[tuple[str, Path]] = []
    not_in_shard = 0
    for video_id, rel in zip(table["video_id"], table["path"], strict=True):
        src = data_root / str(rel)
        if shard and not src.is_file():
            not_in_shard += 1
        else:
            jobs.append((video_id, src))
    todo = [(vid, src) for vid, src in jobs if not _part_path(parts, vid).is_file()]
    bar = Progress(len(todo), len(jobs) - len(todo), progress, label="extract faces", counted="faces")
    try:
        if config.workers == 1 or len(todo) <= 1:
            _run_here(todo, folder, config, bar)
        else:
            _run_pool(todo, folder, config, bar)
    finally:
        bar.close()

    df = _assemble(table, jobs, folder)
    counts = df["status"].value_counts()
    write_manifest(df, folder / FACES_MANIFEST, config=config.to_dict(), inputs=sources(videos_df), extra={
        DATA_KEY: data_identity(videos_df),                 # the dataset these faces came from (its listing)
        "shard": shard,
        # the content of the table the faces came from (the caller may pass it in memory)
        "videos_sha256": hashlib.sha256(table.to_csv(index=False).encode("utf-8")).hexdigest(),
        "videos_in_table": int(len(table)),
        "videos": len(jobs),
        "skipped_not_in_shard": not_in_shard,
        "resumed_videos": len(jobs) - len(todo),
        "faces": int(counts.get(STATUS_OK, 0)),
        "no_face_videos": int(counts.get(STATUS_NO_FACE, 0)),
        "decode_error_videos": int(counts.get(STATUS_DECODE_ERROR, 0)),
        PROTOCOL_ATTR: videos_df.attrs.get(PROTOCOL_ATTR),   # what the splits follow, for the evaluation to say
    })
    return df


def shard_folder(out_dir: str | os.PathLike[str], shard: str | None = None) -> Path:
    """Where an extraction writes: ``out_dir``, or ``out_dir/shard-<shard>`` for one instance's shard."""
    return resolve(out_dir) / f"shard-{_safe_name(shard)}" if shard else resolve(out_dir)


def pack_crops(out_dir: str | os.PathLike[str], crops_dir: str | os.PathLike[str], *, shard: str | None = None,
               mode: str, shard_mb: int) -> pd.DataFrame | None:
    """Pack the crops of an extraction (one shard's) into tar shards of about ``shard_mb`` MB under
    ``crops_dir``, grouped for ``mode`` (:func:`deepfake.data.shards.crop_group`); returns the index.
    ``shard_mb`` 0 packs nothing (None): the crops stay one file each."""
    if shard_mb < 0:
        raise ConfigError(f"pack_mb={shard_mb} must be 0 (one file per crop) or a size in MB")
    if not shard_mb:
        return None
    folder = shard_folder(out_dir, shard)
    faces = _read_part(folder / FACES_MANIFEST)
    index = pack(faces, folder, crops_dir, mode=mode, shard_bytes=shard_mb * 1024**2,
                 name=_safe_name(shard) if shard else "crops")
    shutil.rmtree(folder / PARTS_DIR, ignore_errors=True)      # faces.csv holds every row now
    return index


def _run_here(todo: list[tuple[str, Path]], folder: Path, config: ExtractConfig, bar: Progress) -> None:
    if not todo:
        return
    detector = build_detector(config)
    for video_id, src in todo:
        bar.update(*_process_video(video_id, src, folder, config, detector, decoder_threads(1)))


_WORKER_DETECTOR: FaceDetector | None = None
_WORKER_DECODE_THREADS: int | None = None


def _init_worker(config_dict: dict[str, Any], workers: int) -> None:
    """Per worker process: one detector for all its videos, and its share of the cores.

    Both thread pools of a worker get the share: OpenCV's (resizing, colour
    conversion, the detector's nets) and FFmpeg's (decoding). Left at their
    defaults, each worker would run one thread per core in each pool, and
    ``workers`` processes would fight over the same cores.
    """
    global _WORKER_DETECTOR, _WORKER_DECODE_THREADS
    cv2.setNumThreads(threads_per_worker(workers))
    _WORKER_DECODE_THREADS = decoder_threads(workers)
    _WORKER_DETECTOR = build_detector(ExtractConfig.from_dict(config_dict))


def _worker_job(video_id: str, src: str, folder: str, config_dict: dict[str, Any]) -> tuple[str, int]:
    if _WORKER_DETECTOR is None:
        raise RuntimeError("extraction worker used before _init_worker ran")
    return _process_video(video_id, Path(src), Path(folder), ExtractConfig.from_dict(config_dict), _WORKER_DETECTOR,
                          _WORKER_DECODE_THREADS)


def _run_pool(todo: list[tuple[str, Path]], folder: Path, config: ExtractConfig, bar: Progress) -> None:
    workers = min(config.workers, len(todo))
    settings = config.to_dict()
    with cf.ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"),
                                initializer=_init_worker, initargs=(settings, workers)) as pool:
        futures = [pool.submit(_worker_job, vid, str(src), str(folder), settings) for vid, src in todo]
        try:
            for fut in cf.as_completed(futures):
                bar.update(*fut.result())
        except BaseException:
            for fut in futures:
                fut.cancel()  # running videos still finish and keep their parts
            raise


def _process_video(video_id: str, src: Path, folder: Path, config: ExtractConfig, detector: FaceDetector,
                   decode_threads: int | None = None) -> tuple[str, int]:
    """Extract one video; write its crops, then its part file. Returns (status, faces)."""
    crop_rel = f"{CROPS_DIR}/{_safe_name(video_id)}"
    shutil.rmtree(folder / crop_rel, ignore_errors=True)  # leftovers of a killed attempt
    if not src.is_file():
        # no part: a file that is missing now may be there on the next run
        return STATUS_DECODE_ERROR, 0
    try:
        result = extract_video_faces(src, detector, config, decode_threads=decode_threads)
    except VideoDecodeError as exc:
        rows = [_status_row(video_id, STATUS_DECODE_ERROR, exc.reason)]
    else:
        rows = []
        note = (f"truncated: the stream ends after {result.info.frame_count} frames" if result.truncated else "")
        if result.faces:
            (folder / crop_rel).mkdir(parents=True, exist_ok=True)
        for face in result.faces:
            rel = f"{crop_rel}/{face.frame_idx}_{face.face_idx}.{config.image_format}"
            (folder / rel).write_bytes(encode_crop(face.crop, config))
            rows.append({"video_id": video_id, "frame_idx": face.frame_idx, "face_idx": face.face_idx,
                         "box": _format_box(face.box), "score": round(face.score, 4),
                         "landmarks": format_landmarks(face.landmarks), "path": rel,
                         "status": STATUS_OK, "reason": note})
        if not rows:
            searched = len(result.frame_indices)
            reason = f"no face scoring >= {config.min_score} in {searched} sampled frames"
            rows = [_status_row(video_id, STATUS_NO_FACE, f"{reason}; {note}" if note else reason)]
    part = pd.DataFrame(rows, columns=PART_COLUMNS)
    atomic_write_text(_part_path(folder / PARTS_DIR, video_id), part.to_csv(index=False))
    return rows[0]["status"], sum(r["status"] == STATUS_OK for r in rows)


def _status_row(video_id: str, status: str, reason: str) -> dict[str, Any]:
    return {"video_id": video_id, "frame_idx": -1, "face_idx": -1, "box": "", "score": np.nan, "landmarks": "",
            "path": "", "status": status, "reason": reason}


def _videos_table(videos_df: pd.DataFrame) -> pd.DataFrame:
    missing = [c for c in ("video_id", "path") if c not in videos_df.columns]
    if missing:
        raise ManifestError(f"the videos table lacks column(s) {', '.join(missing)}; has {', '.join(map(str, videos_df.columns))}")
    table = videos_df.reset_index(drop=True).copy()
    table["video_id"] = table["video_id"].astype(str)
    dupes = table["video_id"][table["video_id"].duplicated()].unique()
    if len(dupes):
        raise ManifestError(f"video_id must be unique in the videos table; repeated: {', '.join(map(str, dupes[:10]))}")
    if "original_id" not in table.columns:
        table["original_id"] = table["video_id"]
    for col in META_COLUMNS:
        if col not in table.columns:
            table[col] = pd.NA if col == "label" else ""
    return table


def _assemble(table: pd.DataFrame, jobs: Iterable[tuple[str, Path]], folder: Path) -> pd.DataFrame:
    """faces.csv from the parts, in videos-table order; missing files become status rows."""
    pieces = []
    for video_id, _src in jobs:
        part = _part_path(folder / PARTS_DIR, video_id)
        if part.is_file():
            df = _read_part(part)
            df["video_id"] = video_id
        else:
            df = pd.DataFrame([_status_row(video_id, STATUS_DECODE_ERROR, "file not found")], columns=PART_COLUMNS)
        pieces.append(df)
    if pieces:
        rows = pd.concat(pieces, ignore_index=True)
    else:
        rows = pd.DataFrame({c: pd.Series(dtype=object) for c in PART_COLUMNS})
    meta = table[["video_id", *META_COLUMNS]]
    out = rows.merge(meta, on="video_id", how="left", validate="many_to_one")
    out["frame_idx"] = out["frame_idx"].astype("int64")
    out["face_idx"] = out["face_idx"].astype("int64")
    out["score"] = out["score"].astype("float64")
    return out[FACES_COLUMNS]


def _read_part(path: Path) -> pd.DataFrame:
    return pd.read_csv(path, dtype={c: str for c in PART_COLUMNS if c not in ("frame_idx", "face_idx", "score")},
                       keep_default_na=False, na_values={"score": [""]})


def _claim_parts(parts: Path, config: ExtractConfig) -> None:
    """Reuse parts only if they were made with the same settings."""
    stamp = parts / "config.json"
    wanted = {**config.result_settings(), "parts_format": PARTS_FORMAT}
    if stamp.is_file() and any(parts.glob("*.csv")):
        made = read_json(stamp)
        if made.get("parts_format") != PARTS_FORMAT and {k: v for k, v in made.items() if k != "parts_format"} \
                == config.result_settings():
            # same settings, older part layout (no landmarks): extract those videos again
            print(f"{parts.parent}: faces extracted by an older kit lack landmarks; extracting them again",
                  file=sys.stderr)
            shutil.rmtree(parts)
            parts.mkdir(parents=True)
            write_json(stamp, wanted)
            return
        if made != wanted:
            changed = sorted(k for k in set(made) | set(wanted) if made.get(k) != wanted.get(k))
            diff = ", ".join(f"{k} {made.get(k)!r} -> {wanted.get(k)!r}" for k in changed)
            raise ConfigError(
                f"{parts.parent} holds faces extracted with other settings ({diff}); "
                f"use another output folder, or delete {parts} to start over"
            )
    elif not stamp.is_file() or read_json(stamp) != wanted:
        write_json(stamp, wanted)


def _part_path(parts: Path, video_id: str) -> Path:
    return parts / f"{_safe_name(video_id)}.csv"


def _safe_name(name: object) -> str:
    """A file name for ``name``; changed names get a hash so two ids never share a file."""
    text = str(name)
    safe = re.sub(r"[^A-Za-z0-9._-]", "_", text).strip(".") or "_"
    if safe != text:
        safe = f"{safe[:80]}-{hashlib.sha1(text.encode('utf-8')).hexdigest()[:8]}"
    return safe
