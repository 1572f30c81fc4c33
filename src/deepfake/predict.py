"""Scoring one video or image with a model artifact: the code behind CLI, server and handler.

A served video must score exactly as it did in evaluation, so nothing here is
new preprocessing: frames are sampled and faces cropped by
:func:`deepfake.extract.extract_video_faces` with the artifact's own
``ExtractConfig``; each crop goes through the same image encoding as the saved
crops (:func:`~deepfake.extract.encode_crop` / :func:`~deepfake.extract.decode_crop`);
a frame takes the score of its most fake-looking face, as in
:func:`deepfake.evaluate.frame_predictions`; and the frames are combined by the
artifact's aggregation strategy (:func:`deepfake.aggregate.aggregate`).

Scoring is pipelined: a decode thread runs ahead while faces are detected and
cropped, and crops are classified in small batches as they come
(``CLASSIFY_BATCH``), so the model works while the video is still decoding
instead of after the last frame. Small batches are also faster per crop on a
CPU (the activations of a few 224 px crops stay in cache). Scores do not
depend on this: a crop gets the same probability whether it is classified
while decoding or afterwards (same crops, same batches, same order). Against
the evaluation, which reads the saved crops in batches of 32, a probability
can differ in its last float32 bits (~5e-8 on the benchmark clip): torch's CPU
kernels round a little differently for other batch sizes and thread counts
(not for other crops in a batch of the same size).

A video in which no face is found gets ``status: "no_face"`` and no
probability at all: a made-up 0.5 would look like an answer. The response
schema is documented in ``docs/inference.md``.
"""

from __future__ import annotations

import argparse
import concurrent.futures as cf
import json
import os
import sys
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from deepfake import paths
from deepfake.aggregate import aggregate, get_strategy
from deepfake.detectors import FaceDetector
from deepfake.errors import DeepfakeError, ImageDecodeError, ModelError
from deepfake.extract import (
    ExtractConfig,
    Face,
    build_detector,
    decode_crop,
    decoder_threads,
    encode_crop,
    extract_video_faces,
    faces_from_frames,
)
from deepfake.model import LoadedModel, load_artifact
from deepfake.video import video_bytes_as_file

LABELS = ("REAL", "FAKE")            # response labels for p_fake below / at or above the threshold
DEFAULT_THRESHOLD = 0.5              # p_fake at or above it is FAKE: the evaluation's default (EvalConfig.threshold)
STATUS_OK = "ok"
STATUS_NO_FACE = "no_face"
# File suffixes that `deepfake predict` reads as images; everything else is read as a video.
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp")
# Crops per forward pass. On 2 CPU cores EfficientNet-Lite0 costs ~15-20 ms a crop in batches of 2-4
# and ~55 ms in batches of 32 (cache misses), and a small batch leaves little to do after the last frame.
# Torch keeps the thread count load_artifact gave it (every usable core): with OpenMP threads waiting
# passively (deepfake/__init__.py), 2 threads beside the decode and detection threads scored the 1080p
# benchmark clip 10-15% faster than 1.
CLASSIFY_BATCH = 4


class Predictor:
    """A loaded model plus the exact extraction settings it was trained with.

    Thread-safe: each thread gets its own face detector (detectors hold state),
    and the model itself is only read. Build one per process and share it.
    """

    def __init__(self, loaded: LoadedModel, *, threshold: float | None = None) -> None:
        self.loaded = loaded
        config = loaded.config
        if not config.get("extract"):
            raise ModelError(
                f"model {loaded.path} has no extract settings in its config.json, so videos cannot be "
                "prepared the way its training crops were; save it with config['extract'] = ExtractConfig(...).to_dict()"
            )
        # `workers` only parallelises extraction over many videos; a request is one video.
        self.extract_config = ExtractConfig.from_dict({**config["extract"], "workers": 1})
        self.aggregation = str(config.get("aggregation") or "mean")
        get_strategy(self.aggregation)
        if threshold is None:
            threshold = config.get("threshold")
        self.threshold = float(DEFAULT_THRESHOLD if threshold is None else threshold)
        self._local = threading.local()

    @classmethod
    def from_path(cls, path: str | os.PathLike[str], *, device: str = "cpu") -> Predictor:
        """Load a model folder or ``model.tar.gz`` and wrap it."""
        return cls(load_artifact(path, device=device))

    @property
    def version(self) -> str:
        return str(self.loaded.version)

    def describe(self) -> dict[str, Any]:
        """What this predictor serves: shown by ``/ping`` and logged at start."""
        cfg = self.extract_config
        return {
            "model_version": self.version,
            "aggregation": self.aggregation,
            "threshold": self.threshold,
            "frames_per_video": cfg.frames_per_video,
            "detector": cfg.detector,
            "face_size": cfg.face_size,
            "image_size": int(self.loaded.config["image_size"]),
        }

    # -- entry points -----------------------------------------------------------------------------

    def predict_video(self, video: str | os.PathLike[str] | bytes, *, suffix: str = ".mp4") -> dict[str, Any]:
        """Score a video file, or a video's bytes (written to a temporary ``suffix`` file for FFmpeg).

        Raises VideoDecodeError when the video cannot be read.
        """
        if isinstance(video, (bytes, bytearray, memoryview)):
            return self._predict_video_bytes(bytes(video), suffix)
        with _StreamScorer(self) as scorer:
            result = extract_video_faces(video, self.detector(), self.extract_config, on_frame=scorer.add,
                                         decode_threads=decoder_threads())
            scores = scorer.finish()
        info = result.info
        return self._response(result.faces, scores, frames_sampled=len(result.frame_indices), media={
            "kind": "video", "frame_count": info.frame_count, "fps": round(float(info.fps), 3),
            "width": info.width, "height": info.height, "duration_s": info.duration_s,
            "truncated": bool(result.truncated),
        })

    def predict_image(self, rgb: np.ndarray) -> dict[str, Any]:
        """Score one RGB image as a one-frame video (frame index 0)."""
        image = np.asarray(rgb)
        faces = faces_from_frames([image], [0], self.detector(), self.extract_config)
        return self._response(faces, self.score_faces(faces), frames_sampled=1, media={
            "kind": "image", "width": int(image.shape[1]), "height": int(image.shape[0])})

    def predict_file(self, path: str | os.PathLike[str]) -> dict[str, Any]:
        """Score a file: an image by its suffix (``IMAGE_SUFFIXES``), else a video."""
        p = Path(path)
        if p.suffix.lower() in IMAGE_SUFFIXES:
            return self.predict_image(read_image(p))
        return self.predict_video(p)

    def score_faces(self, faces: Sequence[Face]) -> np.ndarray:
        """Fake probability of each face, its crop round-tripped through the saved-crop encoding."""
        crops = [decode_crop(encode_crop(face.crop, self.extract_config)) for face in faces]
        if not crops:
            return np.zeros(0, dtype=np.float64)
        scores = np.asarray(self.loaded.predict_crops(crops, batch_size=CLASSIFY_BATCH), dtype=np.float64).reshape(-1)
        if scores.size != len(crops):
            raise ModelError(f"the model returned {scores.size} scores for {len(crops)} face crops")
        return scores

    def detector(self) -> FaceDetector:
        """The face detector of the calling thread (detectors are not thread-safe)."""
        detector = getattr(self._local, "detector", None)
        if detector is None:
            detector = self._local.detector = build_detector(self.extract_config)
        return detector

    # -- internals --------------------------------------------------------------------------------

    def _predict_video_bytes(self, data: bytes, suffix: str) -> dict[str, Any]:
        with video_bytes_as_file(data, suffix) as tmp:
            return self.predict_video(tmp)

    def _response(self, faces: Sequence[Face], scores: np.ndarray, *, frames_sampled: int,
                  media: dict[str, Any]) -> dict[str, Any]:
        base = {
            "model_version": self.version,
            "aggregation": self.aggregation,
            "threshold": self.threshold,
            "frames_sampled": int(frames_sampled),
            "media": media,
        }
        if not faces:
            return {
                "status": STATUS_NO_FACE, "label": None, "p_fake": None,
                "frames_scored": 0, "faces_found": 0, "frame_scores": [], **base,
                "message": (f"no face with detector confidence >= {self.extract_config.min_score} in "
                            f"{frames_sampled} sampled frame(s); the input is not scored"),
            }
        if len(scores) != len(faces):
            raise ModelError(f"{len(scores)} scores for {len(faces)} faces; every face needs one score")
        by_frame: dict[int, list[float]] = {}
        for face, score in zip(faces, scores, strict=True):
            by_frame.setdefault(face.frame_idx, []).append(float(score))
        frame_scores = [{"frame_idx": int(idx), "p_fake": max(s), "faces": len(s)} for idx, s in sorted(by_frame.items())]
        p_fake = aggregate([f["p_fake"] for f in frame_scores], self.aggregation)
        label = LABELS[int(p_fake >= self.threshold)]
        relation = ">=" if label == "FAKE" else "<"
        return {
            "status": STATUS_OK, "label": label, "p_fake": float(p_fake),
            "frames_scored": len(frame_scores), "faces_found": len(faces), "frame_scores": frame_scores, **base,
            "message": (f"{label}: p_fake {p_fake:.4f} {relation} threshold {self.threshold:g} "
                        f"({self.aggregation} of {len(frame_scores)} frame(s) with a face)"),
        }


class _StreamScorer:
    """Classifies faces on its own thread, ``CLASSIFY_BATCH`` at a time, as extraction hands them over.

    Detection of the next frame and classification of the last crops then run
    side by side (both release the GIL), with decoding ahead of both. The
    batches are the ones :meth:`Predictor.score_faces` makes from the whole
    list, in the same order, so a streamed video scores exactly as one scored
    at the end.
    """

    def __init__(self, predictor: Predictor) -> None:
        self.predictor = predictor
        self.pending: list[Face] = []
        self.batches: list[cf.Future[np.ndarray]] = []
        self.pool = cf.ThreadPoolExecutor(1, thread_name_prefix="classify")

    def __enter__(self) -> _StreamScorer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.pool.shutdown(wait=True, cancel_futures=True)

    def add(self, faces: Sequence[Face]) -> None:
        self.pending.extend(faces)
        while len(self.pending) >= CLASSIFY_BATCH:
            batch, self.pending = self.pending[:CLASSIFY_BATCH], self.pending[CLASSIFY_BATCH:]
            self.batches.append(self.pool.submit(self.predictor.score_faces, batch))

    def finish(self) -> np.ndarray:
        """Scores of every face handed over, in order, once the last (partial) batch is classified."""
        if self.pending:
            self.batches.append(self.pool.submit(self.predictor.score_faces, self.pending))
            self.pending = []
        scores = [batch.result() for batch in self.batches]
        return np.concatenate(scores) if scores else np.zeros(0, dtype=np.float64)


# -- helpers shared with the server and the handler ----------------------------------------------

def decode_image(data: bytes, what: str = "the image") -> np.ndarray:
    """JPEG/PNG/... bytes -> RGB uint8 (EXIF orientation applied by OpenCV)."""
    buf = np.frombuffer(data, np.uint8) if data else None
    bgr = cv2.imdecode(buf, cv2.IMREAD_COLOR) if buf is not None else None
    if bgr is None:
        raise ImageDecodeError(f"{what} ({len(data)} bytes) cannot be decoded as an image; send a JPEG or PNG file")
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def read_image(path: str | os.PathLike[str]) -> np.ndarray:
    p = Path(path)
    if not p.is_file():
        raise ImageDecodeError(f"image {p} does not exist or is not a file")
    return decode_image(p.read_bytes(), f"image {p}")


def resolve_model(model: str | os.PathLike[str] | None, group: str | None = None) -> tuple[Path, str]:
    """The artifact to load and where it came from: ``model`` itself, or the registry's latest approved.

    Raises RegistryError when ``model`` is None and ``group`` has no approved version.
    """
    if model:
        return paths.resolve(model), f"path {paths.resolve(model)}"
    from deepfake.registry import DEFAULT_GROUP, LocalRegistry

    registry = LocalRegistry()
    mv = registry.latest_approved(group or DEFAULT_GROUP)
    return Path(mv.artifact), f"registry {mv.group} v{mv.version} ({registry.root})"


# -- deepfake predict -----------------------------------------------------------------------------

def predict_command(args: argparse.Namespace) -> int:
    """``deepfake predict VIDEO...``: one line per input; exit 1 if any input failed (others still scored)."""
    source, where = resolve_model(args.model, args.group)
    predictor = Predictor.from_path(source)
    print(f"model {predictor.version} from {where}; aggregation {predictor.aggregation}, "
          f"threshold {predictor.threshold:g}", file=sys.stderr)
    width = max(12, *(len(str(i)) for i in args.inputs))
    if not args.json:
        print(f"{'input':<{width}}  {'label':<5}  {'p_fake':>7}  {'frames':>6}  {'faces':>5}  status")
    failed = 0
    for item in args.inputs:
        try:
            result = predictor.predict_file(item)
        except (DeepfakeError, OSError) as exc:
            failed += 1
            if args.json:
                print(json.dumps({"input": str(item), "status": "error", "label": None, "p_fake": None,
                                  "error": type(exc).__name__, "message": str(exc)}))
            else:
                print(f"{str(item):<{width}}  {'-':<5}  {'-':>7}  {'-':>6}  {'-':>5}  error: {exc}")
            continue
        if args.json:
            print(json.dumps({"input": str(item), **result}))
        else:
            p = "-" if result["p_fake"] is None else f"{result['p_fake']:.4f}"
            print(f"{str(item):<{width}}  {result['label'] or '-':<5}  {p:>7}  {result['frames_scored']:>6}  "
                  f"{result['faces_found']:>5}  {result['status']}")
    if failed:
        print(f"{failed} of {len(args.inputs)} input(s) could not be scored", file=sys.stderr)
    return 1 if failed else 0
