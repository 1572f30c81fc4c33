"""Face extraction: videos -> sampled frames -> detected faces -> square crops on disk.

:func:`faces_from_frames` is the one crop path: extraction for training and
inference on a served video both go through it (and through
:func:`encode_crop`), so a video scores the same in evaluation and serving.

:func:`extract_faces` runs it over a videos table and is built to survive long
runs on many videos:

- *Resumable.* Each video's rows go to ``.parts/<video_id>.csv``, written
  atomically after its crops; a rerun skips videos that have a part (status rows
  included) and ``faces.csv`` is assembled from the parts at the end, so a killed
  run loses no finished video. A video whose file is missing gets a
  ``decode_error`` row but no part: the next run looks for it again.
  Parts are only reused with the same settings (``workers`` aside); otherwise
  the run stops and says so.
- *Parallel.* ``workers > 1`` spreads videos over processes (spawned, so no
  forked OpenCV or tqdm threads), each building its detector once and keeping
  to its share of the cores (:func:`threads_per_worker`). Within a video a
  decode thread feeds frames to detection, so decoding and detection overlap
  in every worker. On 2 cores one worker already keeps both busy (a decoder
  thread and a detection thread): more workers only pay off with more cores.
- *Sharded.* SageMaker's ``ShardedByS3Key`` gives each instance only some of
  the files: with ``shard=NAME`` only videos whose file is present are
  processed, into ``shard-NAME/``; :func:`read_faces` reads all shards.
"""

from __future__ import annotations

import concurrent.futures as cf
import hashlib
import json
import multiprocessing
import os
import re
import shutil
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pandas as pd

from deepfake import detectors
from deepfake.config import StageConfig
from deepfake.detectors import Box, FaceDetector, detect_faces
from deepfake.errors import ConfigError, ImageDecodeError, ManifestError, VideoDecodeError
from deepfake.faces import select, square_crop
from deepfake.manifest import atomic_write_text, read_json, write_json, write_manifest
from deepfake.paths import CROPS_DIR, FACES_MANIFEST, resolve
from deepfake.video import DEFAULT_PREFETCH, VideoInfo, iter_frames

# faces.csv columns (docs/architecture.md), in order.
FACES_COLUMNS = ["video_id", "original_id", "label", "manipulation", "split", "frame_idx", "face_idx", "box",
                 "score", "landmarks", "path", "status", "reason"]
# Columns copied from the videos table; the rest come from extraction.
META_COLUMNS = ["original_id", "label", "manipulation", "split"]
PART_COLUMNS = ["video_id", "frame_idx", "face_idx", "box", "score", "landmarks", "path", "status", "reason"]
# Columns an older faces.csv may lack; they are read as empty (self-blending then asks for a re-extraction).
OPTIONAL_COLUMNS = ("landmarks",)
# Layout of the per-video part files; parts of another layout are extracted again.
PARTS_FORMAT = 2
STATUS_OK = "ok"
STATUS_NO_FACE = "no_face"
STATUS_DECODE_ERROR = "decode_error"
IMAGE_FORMATS = ("jpg", "png")
PARTS_DIR = ".parts"
PROGRESS_MODES = (True, False, "bar", "lines")   # auto (bar on a terminal, else lines), off, forced
# Seconds between plain progress lines when stderr is not a terminal (papermill, SageMaker logs).
PROGRESS_LINE_EVERY_S = 30.0
# Text columns of faces.csv: read as text so ids like "000" keep their zeros.
_TEXT_COLUMNS = ["video_id", "original_id", "manipulation", "split", "box", "landmarks", "path", "status", "reason"]


@dataclass(frozen=True)
class ExtractConfig(StageConfig):
    frames_per_video: int = 16      # frames sampled per video, evenly spaced (with stride: at most this many, 0 = all)
    stride: int = 0                 # 0 = spread frames_per_video over the video; N = every N-th frame from frame 0
    detector: str = "mtcnn"         # face detector name, one of deepfake.detectors.available()
    detect_long_side: int = 640     # px: frames are downscaled to this long side to detect (0 = full size)
    margin: float = 0.3             # context added on EACH side of the face box, as a fraction of its longer side
    face_size: int = 224            # px: side of the saved square crop (the model's input size)
    max_faces: int = 3              # faces kept per frame, best score then largest first (a frame scores as its most fake)
    min_score: float = 0.9          # detections with a lower confidence (0-1) are dropped
    image_format: str = "jpg"       # crop files: jpg (small) or png (lossless)
    jpeg_quality: int = 95          # 1-100; 95 keeps compression traces of the fake itself dominant
    workers: int = 1                # processes over videos; does not change the result

    def __post_init__(self) -> None:
        for name in ("frames_per_video", "stride", "detect_long_side", "face_size", "max_faces", "jpeg_quality",
                     "workers"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
                raise ConfigError(f"{name} must be an integer; got {value!r}")
        for name in ("margin", "min_score"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float, np.number)):
                raise ConfigError(f"{name} must be a number; got {value!r}")
        _require(self.frames_per_video >= 0, "frames_per_video", self.frames_per_video, ">= 0")
        _require(self.stride >= 0, "stride", self.stride, ">= 0 (0 = evenly spaced)")
        _require(self.frames_per_video > 0 or self.stride > 0, "frames_per_video", 0,
                 "> 0 unless stride > 0 (0 = every stride-th frame)")
        if self.detector not in detectors.available():
            raise ConfigError(f"detector {self.detector!r} is unknown; available: {', '.join(detectors.available())}")
        _require(self.detect_long_side >= 0, "detect_long_side", self.detect_long_side, ">= 0 pixels (0 = full size)")
        _require(0 <= self.margin <= 5, "margin", self.margin, "between 0 and 5 (a fraction of the box per side)")
        _require(self.face_size >= 8, "face_size", self.face_size, ">= 8 pixels")
        _require(self.max_faces >= 1, "max_faces", self.max_faces, ">= 1")
        _require(0 <= self.min_score <= 1, "min_score", self.min_score, "between 0 and 1")
        if self.image_format not in IMAGE_FORMATS:
            raise ConfigError(f"image_format {self.image_format!r} is not one of {', '.join(IMAGE_FORMATS)}")
        _require(1 <= self.jpeg_quality <= 100, "jpeg_quality", self.jpeg_quality, "between 1 and 100")
        _require(self.workers >= 1, "workers", self.workers, ">= 1")

    def result_settings(self) -> dict[str, Any]:
        """The settings that change the output (all but ``workers``)."""
        return {k: v for k, v in self.to_dict().items() if k != "workers"}


@dataclass(frozen=True)
class Face:
    frame_idx: int                  # frame number in the video, 0-based
    face_idx: int                   # rank within the frame, 0 = best
    box: Box                        # x0, y0, x1, y1 in full-resolution pixels
    score: float                    # detector confidence, 0-1
    crop: np.ndarray                # RGB uint8, face_size x face_size
    landmarks: tuple[tuple[float, float], ...] | None = None


@dataclass(frozen=True)
class VideoFaces:
    info: VideoInfo
    faces: list[Face]
    frame_indices: tuple[int, ...] = ()   # the frames that were decoded and searched
    truncated: bool = False               # the stream ended before its announced length


def build_detector(config: ExtractConfig) -> FaceDetector:
    return detectors.get_detector(config.detector)


def faces_from_frames(frames: Sequence[np.ndarray], indices: Sequence[int], detector: FaceDetector,
                      config: ExtractConfig) -> list[Face]:
    """Detect, keep the best ``max_faces`` per frame and crop them: the one crop path of the kit."""
    if len(frames) != len(indices):
        raise ConfigError(f"got {len(frames)} frames but {len(indices)} frame indices")
    faces: list[Face] = []
    for frame, frame_idx in zip(frames, indices, strict=True):
        found = detect_faces(detector, frame, config.detect_long_side)
        for face_idx, det in enumerate(select(found, config.max_faces, config.min_score)):
            crop = square_crop(frame, det.box, config.margin, config.face_size)
            faces.append(Face(int(frame_idx), face_idx, det.box, float(det.score), crop, det.landmarks))
    return faces


def extract_video_faces(path: str | os.PathLike[str], detector: FaceDetector, config: ExtractConfig, *,
                        on_frame: Callable[[list[Face]], None] | None = None,
                        decode_threads: int | None = None) -> VideoFaces:
    """Faces of one video; a decode thread runs ahead so decoding overlaps detection.

    ``on_frame`` gets each searched frame's faces as soon as they are cropped
    (an empty list for a frame without a face), while the decode thread goes on:
    the predictor classifies crops there instead of after the last frame.
    ``decode_threads``: FFmpeg threads of the decoder (None: FFmpeg's choice);
    parallel extraction gives each worker its share of the cores.
    Raises :class:`~deepfake.errors.VideoDecodeError` when the video cannot be read.
    """
    reader = iter_frames(path, config.frames_per_video, config.stride, prefetch=DEFAULT_PREFETCH,
                         decode_threads=decode_threads)
    faces: list[Face] = []
    for frame_idx, frame in reader:
        found = faces_from_frames([frame], [frame_idx], detector, config)
        faces.extend(found)
        if on_frame is not None:
            on_frame(found)
    return VideoFaces(reader.info, faces, tuple(reader.indices), reader.truncated)


def encode_crop(crop: np.ndarray, config: ExtractConfig) -> bytes:
    """Encode an RGB crop as the saved crop files are (format and JPEG quality of ``config``)."""
    bgr = cv2.cvtColor(np.ascontiguousarray(crop), cv2.COLOR_RGB2BGR)
    if config.image_format == "jpg":
        params = [cv2.IMWRITE_JPEG_QUALITY, int(config.jpeg_quality)]
    else:
        params = [cv2.IMWRITE_PNG_COMPRESSION, 3]  # zlib level: lossless either way, 3 is fast
    ok, buf = cv2.imencode(f".{config.image_format}", bgr, params)
    if not ok:
        raise ImageDecodeError(f"OpenCV could not encode a {crop.shape} crop as {config.image_format}")
    return buf.tobytes()


def decode_crop(data: bytes) -> np.ndarray:
    """Decode crop bytes (any format OpenCV reads) to RGB uint8."""
    bgr = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR) if data else None
    if bgr is None:
        raise ImageDecodeError(f"{len(data)} bytes are not an image OpenCV can decode")
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


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
    folder = resolve(out_dir) / f"shard-{_safe_name(shard)}" if shard else resolve(out_dir)
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
    bar = _Progress(len(todo), len(jobs) - len(todo), progress)
    try:
        if config.workers == 1 or len(todo) <= 1:
            _run_here(todo, folder, config, bar)
        else:
            _run_pool(todo, folder, config, bar)
    finally:
        bar.close()

    df = _assemble(table, jobs, folder)
    counts = df["status"].value_counts()
    write_manifest(df, folder / FACES_MANIFEST, config=config.to_dict(), extra={
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
    })
    return df


def read_faces(folder: str | os.PathLike[str]) -> pd.DataFrame:
    """The faces table of ``folder`` (its ``faces.csv``, or every ``shard-*/faces.csv``).

    Adds ``abs_path``: the crop's absolute path, empty for status rows.
    """
    root = resolve(folder)
    tables = [root / FACES_MANIFEST] if (root / FACES_MANIFEST).is_file() else sorted(root.glob(f"shard-*/{FACES_MANIFEST}"))
    if not tables:
        raise ManifestError(f"no {FACES_MANIFEST} in {root} nor in its shard-*/ folders; run face extraction first")
    frames = []
    for table in tables:
        df = _read_faces_csv(table)
        base = str(table.parent.resolve())
        df["abs_path"] = [os.path.normpath(os.path.join(base, p)) if p else "" for p in df["path"]]
        frames.append(df)
    return pd.concat(frames, ignore_index=True) if len(frames) > 1 else frames[0]


# --- running over videos ------------------------------------------------------------------------

def _run_here(todo: list[tuple[str, Path]], folder: Path, config: ExtractConfig, bar: _Progress) -> None:
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


def _run_pool(todo: list[tuple[str, Path]], folder: Path, config: ExtractConfig, bar: _Progress) -> None:
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


def usable_cores() -> int:
    """The CPUs this process may run on: its affinity mask (a container, a pinned run), not the machine's count."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows
        return os.cpu_count() or 1


def threads_per_worker(workers: int = 1) -> int:
    """Each of ``workers`` processes' share of the usable cores."""
    return max(1, usable_cores() // max(1, workers))


def decoder_threads(workers: int = 1) -> int:
    """FFmpeg threads of one worker's decoder: its share of the cores, less the one that detects.

    On 2 cores a single-threaded decoder and the detection thread fill both,
    with 5-10% less CPU than FFmpeg's default (a thread per core) and the same
    wall time (measured on the benchmark clips); with more cores the decoder
    gets the rest.
    """
    return max(1, threads_per_worker(workers) - 1)


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


# --- tables ---------------------------------------------------------------------------------------

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


def _read_faces_csv(path: Path) -> pd.DataFrame:
    try:
        df = pd.read_csv(path, dtype={c: str for c in _TEXT_COLUMNS}, keep_default_na=False,
                         na_values={"score": [""], "label": [""]})
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise ManifestError(f"faces table {path} cannot be read: {exc}") from exc
    for column in OPTIONAL_COLUMNS:
        if column not in df.columns:
            df.insert(FACES_COLUMNS.index(column), column, "")
    missing = [c for c in FACES_COLUMNS if c not in df.columns]
    if missing:
        raise ManifestError(f"faces table {path} lacks column(s) {', '.join(missing)}; has {', '.join(df.columns)}")
    return df


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


def _format_box(box: Sequence[int]) -> str:
    return "[" + ", ".join(str(int(v)) for v in box) + "]"


def format_landmarks(landmarks: Sequence[Sequence[float]] | None) -> str:
    """``[[x, y], ...]`` in full-resolution pixels to 0.1 px, or empty for a detector without landmarks."""
    if not landmarks:
        return ""
    return "[" + ", ".join(f"[{float(x):.1f}, {float(y):.1f}]" for x, y in landmarks) + "]"


def parse_landmarks(text: object) -> np.ndarray | None:
    """The (N, 2) float array of a ``landmarks`` cell, or None when it is empty."""
    if text is None or (isinstance(text, float) and np.isnan(text)) or not str(text).strip():
        return None
    try:
        points = np.asarray(json.loads(str(text)), dtype=np.float64)
    except (ValueError, TypeError) as exc:
        raise ManifestError(f"landmarks cell {str(text)[:60]!r} is not a JSON list of [x, y] points") from exc
    if points.ndim != 2 or points.shape[1] != 2:
        raise ManifestError(f"landmarks cell {str(text)[:60]!r} is not a list of [x, y] points")
    return points


def _require(ok: bool, name: str, value: object, rule: str) -> None:
    if not ok:
        raise ConfigError(f"{name} must be {rule}; got {value!r}")


# --- progress -------------------------------------------------------------------------------------

class _Progress:
    """A tqdm bar on a terminal; elsewhere a plain line now and then (notebook logs stay short)."""

    def __init__(self, total: int, done_before: int, mode: bool | str) -> None:
        self.total = total
        self.done = 0
        self.faces = 0
        self.status: dict[str, int] = {}
        self.start = self.last_line = time.monotonic()
        self.bar = None
        self.lines = False
        if mode is False:
            return
        if mode == "bar" or (mode is True and sys.stderr.isatty()):
            from tqdm.auto import tqdm

            self.bar = tqdm(total=total, unit="video", desc="extract faces", mininterval=1.0, file=sys.stderr)
        else:
            self.lines = True
            resumed = f", {done_before} finished earlier" if done_before else ""
            self._line(f"extract faces: {total} videos to do{resumed}")

    def update(self, status: str, faces: int) -> None:
        self.done += 1
        self.faces += faces
        self.status[status] = self.status.get(status, 0) + 1
        if self.bar is not None:
            self.bar.update(1)
        elif self.lines and time.monotonic() - self.last_line >= PROGRESS_LINE_EVERY_S:
            self._line(self._summary())

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
        elif self.lines:
            self._line(self._summary() + " - done" if self.done == self.total else self._summary())

    def _summary(self) -> str:
        rate = self.done / max(time.monotonic() - self.start, 1e-9)
        problems = ", ".join(f"{n} {s.replace('_', ' ')}" for s, n in sorted(self.status.items()) if s != STATUS_OK)
        return (f"extract faces: {self.done}/{self.total} videos, {self.faces} faces"
                f"{', ' + problems if problems else ''}, {rate:.2f} videos/s")

    def _line(self, text: str) -> None:
        self.last_line = time.monotonic()
        print(text, file=sys.stderr, flush=True)
