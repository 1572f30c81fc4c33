"""Scoring a video archive: every video under a folder, in parallel, resumable, merged into one table.

Users who deploy a detector also need to scan what they already have. Each
video is scored by :meth:`deepfake.serving.predictor.Predictor.predict_video`,
the code behind the endpoint, so an archive scores exactly as the endpoint
would answer; nothing here decides a score.

- *No made-up scores.* A video without a face (``no_face``), one that cannot be
  decoded (``decode_error``) or that fails otherwise (``error``) gets a row with
  an empty ``p_fake`` and ``label`` and a ``reason``; the summary counts them.
- *Resumable.* Rows go to ``part-<name>-<stamp>-<n>.csv`` files in a parts
  folder, written atomically every :data:`PART_ROWS` videos and when the run
  stops, so a killed run loses at most a part's worth of work. A rerun skips
  every video that has a row from the same model version (``error`` rows are
  tried again).
- *Parallel and sharded.* ``workers`` threads share one predictor (it is
  thread-safe); several machines each score their own files into the same
  parts folder under their own ``name`` (SageMaker's ``ShardedByS3Key``), and
  :func:`merge_predictions` makes one table of them.

``deepfake score`` runs :func:`score_folder` on a local folder; the SageMaker
scoring pipeline (``pipelines/deepfake/scoring.py``) runs :func:`score_videos`
on each instance's shard and :func:`merge_predictions` once after them.
"""

from __future__ import annotations

import concurrent.futures as cf
import os
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pandas as pd

from deepfake.core.errors import DeepfakeError, VideoDecodeError
from deepfake.core.files import atomic_write_text
from deepfake.core.locks import FolderLock
from deepfake.core.progress import Progress
from deepfake.core.vocabulary import (
    FAKE,
    LABEL_NAMES,
    RESPONSE_LABELS,
    STATUS_DECODE_ERROR,
    STATUS_ERROR,
    STATUS_NO_FACE,
    STATUS_OK,
)
from deepfake.data.catalogs.table import find_videos, relpath
from deepfake.data.manifest import read_manifest, write_manifest
from deepfake.serving.predictor import Predictor

PREDICTION_COLUMNS = ("video_key", "status", "p_fake", "label", "frames_scored", "faces_found",
                      "model_version", "reason")
PART_COLUMNS = (*PREDICTION_COLUMNS, "scored_at")
PART_GLOB = "part-*.csv"
PART_ROWS = 25                   # videos per part file: what a killed worker can lose at most
FINAL_STATUSES = (STATUS_OK, STATUS_NO_FACE, STATUS_DECODE_ERROR)   # a rerun keeps these; STATUS_ERROR is retried
_LABEL_OF_RESPONSE = {word: label for label, word in RESPONSE_LABELS.items()}


@dataclass(frozen=True)
class BatchCounts:
    """What one :func:`score_videos` call did."""

    videos: int                  # videos it was given
    skipped: int                 # already scored by this model version (earlier runs)
    scored: int                  # rows written now, whatever their status
    statuses: Mapping[str, int]  # status -> rows written now


def archive_videos(folder: str | os.PathLike[str]) -> list[str]:
    """The video keys of an archive folder: each video's path relative to it (posix), sorted."""
    root = Path(folder)
    if not root.is_dir():
        raise DeepfakeError(f"archive folder {root} does not exist; give the folder that holds the videos")
    return [relpath(p, root) for p in find_videos(root)]


def score_one(predictor: Predictor, folder: Path, key: str) -> dict[str, Any]:
    """The row of one video: the endpoint's answer, or why there is none."""
    row: dict[str, Any] = {"video_key": key, "p_fake": None, "label": None, "frames_scored": 0,
                           "faces_found": 0, "model_version": predictor.version, "reason": ""}
    try:
        result = predictor.predict_video(folder / key)
    except VideoDecodeError as exc:
        return {**row, "status": STATUS_DECODE_ERROR, "reason": exc.reason}
    except (DeepfakeError, OSError) as exc:
        return {**row, "status": STATUS_ERROR, "reason": f"{type(exc).__name__}: {exc}"}
    row.update(status=result["status"], frames_scored=int(result["frames_scored"]),
               faces_found=int(result["faces_found"]))
    if result["status"] == STATUS_OK:
        row.update(p_fake=float(result["p_fake"]), label=_LABEL_OF_RESPONSE[result["label"]])
    else:
        row["reason"] = result.get("message", "")
    return row


def score_videos(folder: str | os.PathLike[str], predictor: Predictor, parts_dir: str | os.PathLike[str], *,
                 keys: Sequence[str] | None = None, done: Iterable[str] = (), workers: int = 1,
                 name: str = "local", progress: bool = True) -> BatchCounts:
    """Score the videos ``keys`` of ``folder`` (default: all) into part files in ``parts_dir``.

    Videos with a row of this model version in ``parts_dir``, or listed in ``done``,
    are skipped. ``name`` tells this worker's parts apart (a SageMaker host name).
    """
    root = Path(folder)
    keys = archive_videos(root) if keys is None else list(keys)
    skip = set(done) | scored_keys(read_parts(parts_dir), predictor.version)
    todo = [k for k in keys if k not in skip]
    writer = _PartWriter(Path(parts_dir), name)
    statuses: dict[str, int] = {}
    bar = Progress(len(todo), len(keys) - len(todo), progress, label="score")
    try:
        for row in _rows(predictor, root, todo, workers):
            writer.add(row)
            statuses[row["status"]] = statuses.get(row["status"], 0) + 1
            bar.update(row["status"])
    finally:
        writer.flush()
        bar.close()
    return BatchCounts(videos=len(keys), skipped=len(keys) - len(todo), scored=sum(statuses.values()),
                       statuses=dict(sorted(statuses.items())))


def _rows(predictor: Predictor, root: Path, keys: Sequence[str], workers: int) -> Iterable[dict[str, Any]]:
    if workers <= 1:
        for key in keys:
            yield score_one(predictor, root, key)
        return
    with cf.ThreadPoolExecutor(workers, thread_name_prefix="score") as pool:
        futures = [pool.submit(score_one, predictor, root, key) for key in keys]
        try:
            for future in cf.as_completed(futures):
                yield future.result()
        finally:
            for future in futures:
                future.cancel()


class _PartWriter:
    """Buffers rows and writes them as an atomic part file every PART_ROWS rows."""

    def __init__(self, folder: Path, name: str) -> None:
        self.folder = folder
        self.stem = f"part-{name}-{datetime.now(timezone.utc):%Y%m%dT%H%M%S}-{os.getpid()}"
        self.rows: list[dict[str, Any]] = []
        self.count = 0

    def add(self, row: dict[str, Any]) -> None:
        self.rows.append({**row, "scored_at": datetime.now(timezone.utc).isoformat(timespec="milliseconds")})
        if len(self.rows) >= PART_ROWS:
            self.flush()

    def flush(self) -> None:
        if not self.rows:
            return
        self.folder.mkdir(parents=True, exist_ok=True)
        self.count += 1
        table = pd.DataFrame(self.rows, columns=list(PART_COLUMNS))
        atomic_write_text(self.folder / f"{self.stem}-{self.count:05d}.csv", table.to_csv(index=False))
        self.rows = []


def read_parts(*folders: str | os.PathLike[str]) -> pd.DataFrame:
    """Every row of the part files in ``folders`` (missing folders are empty), in file order."""
    tables = []
    for folder in folders:
        for path in sorted(Path(folder).glob(PART_GLOB)):
            tables.append(read_manifest(path, required=PART_COLUMNS)[list(PART_COLUMNS)])
    if not tables:
        return pd.DataFrame(columns=list(PART_COLUMNS))
    return pd.concat(tables, ignore_index=True)


def scored_keys(parts: pd.DataFrame, model_version: str) -> set[str]:
    """Videos a rerun skips: a row of this model version with a final status."""
    mine = parts[(parts["model_version"] == model_version) & parts["status"].isin(FINAL_STATUSES)]
    return set(mine["video_key"])


def merge_predictions(parts: pd.DataFrame, model_version: str, keys: Iterable[str] | None = None) -> pd.DataFrame:
    """One row per video (its latest of this model version), sorted by key; ``keys`` limits it to an archive."""
    mine = parts[parts["model_version"] == model_version].copy()
    if keys is not None:
        mine = mine[mine["video_key"].isin(set(keys))]
    mine = mine.sort_values("scored_at", kind="stable").drop_duplicates("video_key", keep="last")
    table = mine.sort_values("video_key").reset_index(drop=True)[list(PREDICTION_COLUMNS)]
    table["p_fake"] = pd.to_numeric(table["p_fake"], errors="coerce").astype(float)
    table["label"] = pd.to_numeric(table["label"], errors="coerce").astype("Int64")
    for column in ("frames_scored", "faces_found"):
        table[column] = pd.to_numeric(table[column]).astype(int)
    return table


def summarize(table: pd.DataFrame, *, model_version: str, missing: Iterable[str] = (),
              extra: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The short report of a scored archive: counts by status and label, and why videos went unscored."""
    scored = table[table["status"] == STATUS_OK]
    unscored = table[table["status"] != STATUS_OK]
    fake = int((scored["label"] == FAKE).sum())
    missing = sorted(missing)
    return {
        "model_version": model_version,
        "videos": int(len(table)) + len(missing),
        "statuses": {str(k): int(v) for k, v in table["status"].value_counts().sort_index().items()},
        "labels": {LABEL_NAMES[int(k)]: int(v) for k, v in scored["label"].value_counts().sort_index().items()},
        "scored": int(len(scored)),
        "flagged_fake_share": round(fake / len(scored), 4) if len(scored) else None,
        "mean_p_fake": round(float(scored["p_fake"].mean()), 4) if len(scored) else None,
        "unscored": [{"video_key": k, "status": s, "reason": r}
                     for k, s, r in unscored[["video_key", "status", "reason"]].head(20).itertuples(index=False)],
        "missing": missing,
        **dict(extra or {}),
    }


def summary_markdown(summary: Mapping[str, Any]) -> str:
    lines = [f"# Archive scoring: {summary['videos']} videos, model {summary['model_version']}", "",
             "| status | videos |", "|---|---|",
             *(f"| {k} | {v} |" for k, v in summary["statuses"].items())]
    share = "-" if summary["flagged_fake_share"] is None else f"{summary['flagged_fake_share']:.1%}"
    labels = ", ".join(f"{k} {v}" for k, v in summary["labels"].items()) or "none"
    mean = "-" if summary["mean_p_fake"] is None else summary["mean_p_fake"]
    lines += ["", f"Scored: {summary['scored']} ({labels}); flagged fake: {share}; mean p_fake {mean}."]
    if summary["unscored"]:
        lines += ["", "Not scored (first 20):", "",
                  *(f"- `{u['video_key']}`: {u['status']}: {u['reason']}" for u in summary["unscored"])]
    if summary["missing"]:
        lines += ["", f"Missing (no row at all: rerun to score them): {len(summary['missing'])}"]
    return "\n".join(lines) + "\n"


def write_predictions(table: pd.DataFrame, out_csv: str | os.PathLike[str], summary: Mapping[str, Any], *,
                      config: Mapping[str, Any] | None = None) -> Path:
    """``out_csv`` + its sidecar (config and summary) + ``<stem>.md``, the short report."""
    out = Path(out_csv)
    out.parent.mkdir(parents=True, exist_ok=True)
    write_manifest(table, out, config=config, extra={"summary": dict(summary)})
    atomic_write_text(out.with_suffix(".md"), summary_markdown(summary))
    return out


def parts_dir_for(out_csv: str | os.PathLike[str]) -> Path:
    """Where ``deepfake score --out X.csv`` keeps its part files: ``X.parts/`` beside it."""
    out = Path(out_csv)
    return out.with_name(out.stem + ".parts")


def score_folder(folder: str | os.PathLike[str], predictor: Predictor, out_csv: str | os.PathLike[str], *,
                 workers: int = 1, progress: bool = True) -> tuple[pd.DataFrame, dict[str, Any]]:
    """Score every video of ``folder`` (resuming from ``<out stem>.parts/``) and write the merged table."""
    started = time.perf_counter()
    keys = archive_videos(folder)
    parts = parts_dir_for(out_csv)
    with FolderLock(parts, what=f"batch scoring into {out_csv}",
                    hint="wait for it to finish, or give this one another --out"):
        counts = score_videos(folder, predictor, parts, keys=keys, workers=workers, progress=progress)
        table = merge_predictions(read_parts(parts), predictor.version, keys)
        summary = summarize(table, model_version=predictor.version, missing=set(keys) - set(table["video_key"]),
                            extra={"this_run": asdict(counts), "seconds": round(time.perf_counter() - started, 1)})
        write_predictions(table, out_csv, summary, config={"archive": str(Path(folder).resolve()),
                                                           "workers": workers, **predictor.describe()})
    return table, summary
