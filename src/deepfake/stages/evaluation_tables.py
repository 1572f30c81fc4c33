"""The tables an evaluation derives from the face logits: faces -> frames -> videos, and
its report pieces (unscored videos, per manipulation, generalisation, worst errors).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, Protocol

import numpy as np
import pandas as pd

from deepfake.core.errors import ConfigError, DataError, ManifestError, ModelError
from deepfake.core.vocabulary import STATUS_OK
from deepfake.data.dataset import read_rgb
from deepfake.data.faces_table import require_crops
from deepfake.scoring.aggregate import available
from deepfake.scoring.metrics import (
    predicted_labels,
    roc_auc,
)
from deepfake.scoring.operating_point import REPORTED_FPRS, metric_name, tpr_at_fpr
from deepfake.scoring.rule import ScoringRule

# Columns carried from the frame table to the video table when present.
VIDEO_COLUMNS = ("video_id", "label", "manipulation", "original_id", "split")


# Identity columns carried from faces.csv into the prediction tables when present.
ID_COLUMNS = ("video_id", "frame_idx", "face_idx", "label", "manipulation", "original_id", "split", "path")


class CropScorer(Protocol):
    """What evaluation needs of ``deepfake.modeling.artifact.LoadedModel``."""

    def predict_logits(self, crops: Sequence[np.ndarray]) -> np.ndarray: ...


def score_faces(loaded: CropScorer, faces_df: pd.DataFrame, rule: ScoringRule, batch_size: int = 64) -> pd.DataFrame:
    """One row per face crop with the model's ``logit`` and the rule's calibrated ``p_fake``.

    Only rows with ``status == "ok"`` are scored; crops are read from ``abs_path``.
    Columns: ``video_id, frame_idx, face_idx, label, manipulation`` (then
    ``original_id, split, path`` when present), ``logit`` and ``p_fake``.
    """
    if int(batch_size) < 1:
        raise ConfigError(f"batch_size={batch_size!r} must be at least 1")
    batch_size = int(batch_size)
    faces = faces_df
    if "status" in faces.columns:
        faces = faces[faces["status"].astype(str) == STATUS_OK]
    _require(faces, ("video_id", "frame_idx", "face_idx", "label", "manipulation", "abs_path"),
             hint="read faces with deepfake.data.faces_table.read_faces, which adds abs_path")
    require_crops(faces, "the evaluated rows")
    crop_paths = faces["abs_path"].astype(str).tolist()
    logits: list[np.ndarray] = []
    for start in range(0, len(crop_paths), batch_size):
        crops = [read_rgb(p) for p in crop_paths[start:start + batch_size]]
        out = np.asarray(loaded.predict_logits(crops), dtype=np.float32).reshape(-1)
        if out.size != len(crops):
            raise ModelError(f"the model returned {out.size} scores for {len(crops)} crops; "
                             "predict_logits must return one logit per crop")
        logits.append(out)
    z = np.concatenate(logits) if logits else np.zeros(0, dtype=np.float32)
    if z.size and not np.isfinite(z).all():
        raise ModelError(f"the model returned {int((~np.isfinite(z)).sum())} non-finite logits; "
                         "it cannot score these crops")
    out_df = faces[[c for c in ID_COLUMNS if c in faces.columns]].reset_index(drop=True).copy()
    out_df["label"] = out_df["label"].astype(int)
    out_df["logit"] = z
    out_df["p_fake"] = rule.face_probabilities(z)
    return out_df


LOGIT_KEYS = ("video_id", "frame_idx", "face_idx")     # one face: what joins a shard's logits to its row


def attach_logits(faces_df: pd.DataFrame, face_logits: pd.DataFrame, rule: ScoringRule) -> pd.DataFrame:
    """:func:`score_faces`'s table from logits already computed (the pipeline's sharded score step):
    the same rows in the same order, each face's ``logit`` looked up, ``p_fake`` by the rule."""
    faces = faces_df
    if "status" in faces.columns:
        faces = faces[faces["status"].astype(str) == STATUS_OK]
    _require(face_logits, (*LOGIT_KEYS, "logit"), hint="read them with deepfake.stages.evaluate.read_face_logits")
    keys = faces[list(LOGIT_KEYS)].astype({"video_id": str}).reset_index(drop=True)
    table = face_logits[[*LOGIT_KEYS, "logit"]].astype({"video_id": str}).drop_duplicates(list(LOGIT_KEYS))
    joined = keys.merge(table, on=list(LOGIT_KEYS), how="left", validate="one_to_one")
    missing = joined["logit"].isna()
    if missing.any():
        first = joined[missing].iloc[0]
        raise DataError(f"{int(missing.sum())} evaluated face(s) have no logit from the score step's shards (e.g. "
                        f"video {first['video_id']!r}, frame {first['frame_idx']}); every crop the evaluation "
                        "reads must be scored: check the score step's instances and its crops input")
    z = joined["logit"].to_numpy(dtype=np.float32)
    out_df = faces[[c for c in ID_COLUMNS if c in faces.columns]].reset_index(drop=True).copy()
    out_df["label"] = out_df["label"].astype(int)
    out_df["logit"] = z
    out_df["p_fake"] = rule.face_probabilities(z)
    return out_df


def frame_predictions(face_preds: pd.DataFrame, rule: ScoringRule) -> pd.DataFrame:
    """One row per frame: the rule's frame score (its most fake face, ``face_idx`` names it) and ``n_faces``."""
    rows = []
    for _video_id, group in face_preds.groupby("video_id", sort=True):
        frames = rule.frames(group["frame_idx"].to_numpy(), group["p_fake"].to_numpy())
        best = group.iloc[frames.best_face].copy()
        best["n_faces"] = frames.n_faces
        best["p_fake"] = frames.p_fake
        rows.append(best)
    if not rows:
        return face_preds.iloc[0:0].assign(n_faces=pd.Series(dtype="int64"))
    frames_df = pd.concat(rows, ignore_index=True)
    cols = [c for c in frames_df.columns if c not in ("n_faces", "p_fake", "logit")]
    return frames_df[[*cols, "n_faces", "p_fake"]]


def video_predictions(frames: pd.DataFrame, rule: ScoringRule) -> pd.DataFrame:
    """One row per video: ``p_fake`` by the rule, ``p_fake_<strategy>`` for every strategy,
    and ``predicted`` (1 = fake at the rule's threshold)."""
    keep = [c for c in VIDEO_COLUMNS if c in frames.columns]
    rows = []
    for video_id, group in frames.groupby("video_id", sort=True):
        if "label" in group and group["label"].nunique() > 1:
            raise DataError(f"video {video_id!r} has frames with different labels "
                            f"{sorted(group['label'].unique().tolist())}; a video has one label")
        p = group["p_fake"].to_numpy()
        row = {c: group[c].iloc[0] for c in keep}
        row["n_frames"] = int(len(group))
        row["p_fake"] = rule.video_probability(p)
        for name in available():
            row[f"p_fake_{name}"] = rule.with_(aggregation=name).video_probability(p)
        rows.append(row)
    videos = pd.DataFrame(rows, columns=[*keep, "n_frames", "p_fake", *(f"p_fake_{n}" for n in available())])
    videos["predicted"] = rule.is_fake(videos["p_fake"].to_numpy()).astype(int)
    return videos


def unscored_videos(faces_df: pd.DataFrame) -> list[dict[str, Any]]:
    """Videos with no face row (``status != ok`` only): ``video_id, status, reason``, sorted by id."""
    status = faces_df["status"].astype(str)
    scored = set(faces_df.loc[status == STATUS_OK, "video_id"])
    rest = faces_df[(status != STATUS_OK) & ~faces_df["video_id"].isin(scored)]
    out = []
    for video_id, group in rest.groupby("video_id", sort=True):
        reason = group["reason"].iloc[0] if "reason" in group.columns else None
        out.append({
            "video_id": str(video_id),
            "status": str(group["status"].iloc[0]),
            "reason": "" if reason is None or (isinstance(reason, float) and math.isnan(reason)) else str(reason),
        })
    return out


def per_manipulation(videos: pd.DataFrame, threshold: float = 0.5,
                     seen: Sequence[str] | None = None) -> list[dict[str, Any]]:
    """Per manipulation: video count, accuracy at ``threshold``, AUC of its fakes against all reals
    evaluated, the catch rate at 1, 5 and 10 % false positives on those reals (``tpr_at_fpr_<pct>``), and
    whether the model saw it in training (``seen``: the manipulations it trained on; None = unknown)."""
    reals = videos[videos["label"] == 0]
    rows = []
    for (label, manipulation), group in videos.groupby(["label", "manipulation"], sort=True):
        note = ""
        auc = None
        catch: dict[str, float | None] = {_tpr_key(f): None for f in REPORTED_FPRS}
        if int(label) == 0:
            note = "real videos: each manipulation's AUC is measured against them"
        elif reals.empty:
            note = "no real video evaluated to measure this manipulation against"
        else:
            both = pd.concat([reals, group])
            auc = roc_auc(both["label"].to_numpy(), both["p_fake"].to_numpy())
            catch = {_tpr_key(f): tpr_at_fpr(both["label"], both["p_fake"], f) for f in REPORTED_FPRS}
        p = group["p_fake"].to_numpy()
        rows.append({
            "manipulation": str(manipulation),
            "label": int(label),
            "n_videos": int(len(group)),
            "seen_in_training": None if int(label) == 0 or seen is None else str(manipulation) in seen,
            "accuracy": float(np.mean(predicted_labels(p, threshold) == int(label))),
            "auc": auc,
            **catch,
            "mean_p_fake": float(np.mean(p)),
            "note": note,
        })
    return rows


def _tpr_key(fpr: float) -> str:
    return metric_name(fpr).removeprefix("video_")


def generalisation_metrics(videos: pd.DataFrame, seen: Sequence[str] | None
                           ) -> tuple[dict[str, float | None], dict[str, str]]:
    """``unseen_video_auc`` (reals against every manipulation the model never trained on) and
    ``seen_video_auc`` (against the ones it did), with the reason where one is undefined."""
    reals = videos[videos["label"] == 0]
    fakes = videos[videos["label"] == 1]
    metrics: dict[str, float | None] = {}
    undefined: dict[str, str] = {}
    for name, unseen in (("unseen_video_auc", True), ("seen_video_auc", False)):
        if seen is None:
            metrics[name] = None
            undefined[name] = "the model does not record which manipulations it trained on"
            continue
        part = fakes[~fakes["manipulation"].isin(list(seen))] if unseen else fakes[fakes["manipulation"].isin(list(seen))]
        if part.empty or reals.empty:
            metrics[name] = None
            what = "unseen" if unseen else "seen"
            undefined[name] = (f"no fake of a manipulation {what} in training was evaluated" if part.empty
                               else "no real video was evaluated")
            continue
        both = pd.concat([reals, part])
        metrics[name] = roc_auc(both["label"].to_numpy(), both["p_fake"].to_numpy())
    return metrics, undefined


def worst_errors(videos: pd.DataFrame, n: int = 12) -> pd.DataFrame:
    """The ``n`` misclassified videos with the largest ``|p_fake - label|``, worst first."""
    wrong = videos[videos["predicted"] != videos["label"]].copy()
    wrong["error"] = (wrong["p_fake"] - wrong["label"]).abs()
    return wrong.sort_values(["error", "video_id"], ascending=[False, True]).head(n).reset_index(drop=True)


def _require(df: pd.DataFrame, columns: Sequence[str], *, hint: str) -> None:
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise ManifestError(f"the faces table lacks column(s) {', '.join(missing)}; "
                            f"has {', '.join(map(str, df.columns))}; {hint}")
