"""Scoring one video or image with a model artifact: the code behind CLI, server and handler.

A served video must score exactly as it did in evaluation, so nothing here is
new preprocessing or a new rule: frames are sampled and faces cropped by
:func:`deepfake.media.extraction.extract_video_faces` with the artifact's own
``ExtractConfig``; each crop goes through the same image encoding as the saved
crops (:func:`~deepfake.media.extraction.encode_crop` / :func:`~deepfake.media.extraction.decode_crop`);
and the face logits become a score and a label through the artifact's
:class:`~deepfake.scoring.rule.ScoringRule` (calibration, most fake face per frame,
aggregation, threshold), the same object the evaluation scores with.

Scoring is pipelined: a decode thread runs ahead while faces are detected and
cropped, and crops are classified in small batches as they come
(``CLASSIFY_BATCH``), so the model works while the video is still decoding
instead of after the last frame. Scores do not depend on this: every forward
pass holds exactly the model's ``micro_batch`` crops
(:meth:`~deepfake.modeling.artifact.LoadedModel.predict_logits`), so a crop gets the same
logit whether it is classified while decoding, afterwards, or among the saved
crops of the evaluation.

A video in which no face is found gets ``status: "no_face"`` and no
probability at all: a made-up 0.5 would look like an answer. The response
schema is documented in ``docs/inference.md``.
"""

from __future__ import annotations

import concurrent.futures as cf
import os
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from deepfake.core.errors import ConfigError, ModelError
from deepfake.core.resources import GPU_DEVICE_NODES, cuda_possible, decoder_threads
from deepfake.core.vocabulary import FAKE, REAL, RESPONSE_LABELS, STATUS_NO_FACE, STATUS_OK
from deepfake.media.detectors import FaceDetector
from deepfake.media.extraction import (
    ExtractConfig,
    Face,
    build_detector,
    check_detection,
    decode_crop,
    detect_batch,
    encode_crop,
    extract_video_faces,
    faces_from_frames,
)
from deepfake.media.images import read_image
from deepfake.media.video import video_bytes_as_file
from deepfake.modeling.artifact_files import ArtifactFiles, micro_batch, read_artifact
from deepfake.scoring.rule import ScoringRule

if TYPE_CHECKING:
    from deepfake.modeling.artifact import LoadedModel

# File suffixes that `deepfake predict` reads as images; everything else is read as a video.
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp")


class Predictor:
    """A loaded model plus the exact extraction settings it was trained with.

    Thread-safe: each thread gets its own face detector (detectors hold state),
    and the model itself is only read. Build one per process and share it.
    """

    def __init__(self, loaded: LoadedModel | cf.Future[LoadedModel], *, files: ArtifactFiles | None = None,
                 device: str = "cpu", rule: ScoringRule | None = None) -> None:
        """``loaded``: the model, or a future of it (:meth:`from_path` with ``background=True``) with the
        ``files`` it is built from and its ``device``: scoring then starts decoding and detecting at once
        and waits for the model only to classify the first crops."""
        if isinstance(loaded, cf.Future):
            if files is None:
                raise ModelError("a Predictor of a model still loading needs the artifact files it loads")
            self._model = loaded
            config, self.version, self.device, source = files.config, files.version, str(device), files.source
        else:
            self._model = cf.Future()
            self._model.set_result(loaded)
            config, self.version, self.device, source = loaded.config, loaded.version, str(loaded.device), loaded.path
        self.config = config
        self.micro_batch = micro_batch(self.device)
        if not config.get("extract"):
            raise ModelError(
                f"model {source} has no extract settings in its config.json, so videos cannot be prepared "
                "the way its training crops were; save it with config['extract'] = ExtractConfig(...).to_dict()"
            )
        # `workers` only parallelises extraction over many videos; a request is one video.
        self.extract_config = ExtractConfig.from_dict({**config["extract"], "workers": 1})
        # a video is searched with the detector the model was trained on, never today's default
        try:
            check_detection(config["extract"], self.extract_config.to_dict(), source, "serving")
        except ConfigError as exc:
            raise ModelError(str(exc)) from exc
        self.rule = rule or ScoringRule.from_model_config(config)
        self._local = threading.local()

    @classmethod
    def from_path(cls, path: str | os.PathLike[str], *, device: str = "cpu", background: bool = False) -> Predictor:
        """Load a model folder or ``model.tar.gz`` and wrap it.

        ``background``: read the config now and build the network (importing torch, ~1 s) on a thread,
        while the caller already decodes a video; a model that cannot load fails at its first crop.
        """
        files = read_artifact(path)
        if not background:
            return cls(_load(files, device))
        future: cf.Future[LoadedModel] = cf.Future()
        threading.Thread(target=_load_into, args=(future, files, device), name="load-model", daemon=True).start()
        return cls(future, files=files, device=device)

    @property
    def loaded(self) -> LoadedModel:
        """The model (waits for one still loading; raises its loading error)."""
        return self._model.result()

    @property
    def aggregation(self) -> str:
        return self.rule.aggregation

    @property
    def threshold(self) -> float:
        return self.rule.threshold

    def describe(self) -> dict[str, Any]:
        """What this predictor serves: shown by ``/ping`` and logged at start."""
        cfg = self.extract_config
        return {
            "model_version": self.version,
            "aggregation": self.aggregation,
            "threshold": self.threshold,
            "temperature": self.rule.temperature,
            "frames_per_video": cfg.frames_per_video,
            "detector": cfg.detector,
            "face_size": cfg.face_size,
            "image_size": int(self.config["image_size"]),
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
                                         decode_threads=decoder_threads(), batch=detect_batch(self.device))
            logits = scorer.finish()
        info = result.info
        return self._response(result.faces, logits, frames_sampled=len(result.frame_indices), media={
            "kind": "video", "frame_count": info.frame_count, "fps": round(float(info.fps), 3),
            "width": info.width, "height": info.height, "duration_s": info.duration_s,
            "truncated": bool(result.truncated), "codec": info.codec, "bytes": info.size_bytes,
        })

    def predict_image(self, rgb: np.ndarray) -> dict[str, Any]:
        """Score one RGB image as a one-frame video (frame index 0)."""
        image = np.asarray(rgb)
        faces = faces_from_frames([image], [0], self.detector(), self.extract_config)
        return self._response(faces, self.face_logits(faces), frames_sampled=1, media={
            "kind": "image", "width": int(image.shape[1]), "height": int(image.shape[0])})

    def predict_file(self, path: str | os.PathLike[str]) -> dict[str, Any]:
        """Score a file: an image by its suffix (``IMAGE_SUFFIXES``), else a video."""
        p = Path(path)
        if p.suffix.lower() in IMAGE_SUFFIXES:
            return self.predict_image(read_image(p))
        return self.predict_video(p)

    def face_logits(self, faces: Sequence[Face]) -> np.ndarray:
        """The model's logit for each face, its crop round-tripped through the saved-crop encoding."""
        crops = [decode_crop(encode_crop(face.crop, self.extract_config)) for face in faces]
        if not crops:
            return np.zeros(0, dtype=np.float32)
        logits = np.asarray(self.loaded.predict_logits(crops), dtype=np.float32).reshape(-1)
        if logits.size != len(crops):
            raise ModelError(f"the model returned {logits.size} scores for {len(crops)} face crops")
        return logits

    def detector(self) -> FaceDetector:
        """The face detector of the calling thread (detectors are not thread-safe)."""
        detector = getattr(self._local, "detector", None)
        if detector is None:
            detector = self._local.detector = build_detector(self.extract_config, self.device)
        return detector

    # -- internals --------------------------------------------------------------------------------

    def _predict_video_bytes(self, data: bytes, suffix: str) -> dict[str, Any]:
        with video_bytes_as_file(data, suffix) as tmp:
            return self.predict_video(tmp)

    def _response(self, faces: Sequence[Face], logits: np.ndarray, *, frames_sampled: int,
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
        if len(logits) != len(faces):
            raise ModelError(f"{len(logits)} scores for {len(faces)} faces; every face needs one score")
        video = self.rule.score_video([face.frame_idx for face in faces], logits)
        frames = video.frames
        frame_scores = [{"frame_idx": int(idx), "p_fake": float(p), "faces": int(n)}
                        for idx, p, n in zip(frames.frame_idx, frames.p_fake, frames.n_faces, strict=True)]
        label = RESPONSE_LABELS[FAKE if video.fake else REAL]
        relation = ">=" if video.fake else "<"
        return {
            "status": STATUS_OK, "label": label, "p_fake": float(video.p_fake),
            "frames_scored": len(frame_scores), "faces_found": len(faces), "frame_scores": frame_scores, **base,
            "message": (f"{label}: p_fake {video.p_fake:.4f} {relation} threshold {self.threshold:g} "
                        f"({self.aggregation} of {len(frame_scores)} frame(s) with a face)"),
        }


class _StreamScorer:
    """Classifies faces on its own thread, a micro-batch at a time, as extraction hands them over.

    Detection of the next frame and classification of the last crops then run
    side by side (both release the GIL), with decoding ahead of both. Every
    forward pass holds the model's ``micro_batch`` crops whatever the grouping,
    so a streamed video scores exactly as one scored at the end.
    """

    def __init__(self, predictor: Predictor) -> None:
        self.predictor = predictor
        self.batch = int(predictor.micro_batch)
        self.pending: list[Face] = []
        self.batches: list[cf.Future[np.ndarray]] = []
        self.pool = cf.ThreadPoolExecutor(1, thread_name_prefix="classify")

    def __enter__(self) -> _StreamScorer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.pool.shutdown(wait=True, cancel_futures=True)

    def add(self, faces: Sequence[Face]) -> None:
        self.pending.extend(faces)
        while len(self.pending) >= self.batch:
            batch, self.pending = self.pending[:self.batch], self.pending[self.batch:]
            self.batches.append(self.pool.submit(self.predictor.face_logits, batch))

    def finish(self) -> np.ndarray:
        """Logits of every face handed over, in order, once the last (partial) batch is classified."""
        if self.pending:
            self.batches.append(self.pool.submit(self.predictor.face_logits, self.pending))
            self.pending = []
        logits = [batch.result() for batch in self.batches]
        return np.concatenate(logits) if logits else np.zeros(0, dtype=np.float32)


def scoring_device(device: str) -> str:
    """``auto``: ``cuda`` when this machine can have a CUDA GPU and torch sees one, else ``cpu`` (decided
    without importing torch where no NVIDIA device exists); other names as given."""
    if str(device).startswith("cuda") and not cuda_possible():
        raise ConfigError(f"device {device!r}: this machine has no NVIDIA GPU (no {' or '.join(GPU_DEVICE_NODES)}); "
                          "use device 'cpu' or 'auto'")
    if device != "auto":
        return str(device)
    if not cuda_possible():
        return "cpu"
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def _load(files: ArtifactFiles, device: str) -> LoadedModel:
    from deepfake.modeling.artifact import load_artifact  # torch: imported when a model is built

    return load_artifact(files, device=device)


def _load_into(future: cf.Future[LoadedModel], files: ArtifactFiles, device: str) -> None:
    try:
        future.set_result(_load(files, device))
    except BaseException as exc:  # noqa: BLE001 - handed to whoever waits for the model
        future.set_exception(exc)
