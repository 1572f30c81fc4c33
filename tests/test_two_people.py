"""A video with two people where only one is swapped: both faces are scored and the frame takes the most
fake one, so the video is not judged on the real person (the old default kept one face: the larger, real one)."""

from __future__ import annotations

import numpy as np
import pytest
from serving_support import make_model

from deepfake.demo.manipulations import manipulate
from deepfake.demo.tracking import FaceImage, FaceTrack, detect_landmarks, tracking_detector
from deepfake.media.encode import write_video
from deepfake.media.extraction import ExtractConfig, build_detector, extract_video_faces
from deepfake.serving.predictor import Predictor

WIDTH, HEIGHT, FRAMES = 640, 320, 8


def _two_people(photos: dict) -> list[np.ndarray]:
    """Grace Hopper large on the left, the astronaut smaller on the right, the camera drifting."""
    import cv2

    left = cv2.resize(photos["mpl_grace_hopper"], (240, 300), interpolation=cv2.INTER_AREA)
    right = cv2.resize(photos["skimage_astronaut"], (180, 180), interpolation=cv2.INTER_AREA)
    frames = []
    for t in range(FRAMES):
        frame = np.full((HEIGHT, WIDTH, 3), 90, np.uint8)
        frame[10:310, 30 + t:270 + t] = left
        frame[70:250, 400 - t:580 - t] = right
        frames.append(frame)
    return frames


@pytest.fixture(scope="module")
def swapped_clip(face_photos, tmp_path_factory):
    photos = dict(face_photos)
    frames = _two_people(photos)
    detector = tracking_detector()
    marks, boxes = [], []
    for frame in frames:                                   # track the person on the right only
        right = max(detect_landmarks(detector, frame, long_side=640), key=lambda f: f["box"][0])
        marks.append(right["landmarks"])
        boxes.append(right["box"])
    track = FaceTrack(np.array(marks), np.array(boxes), np.ones(FRAMES, bool))
    donor_name = next(n for n in photos if n.startswith("pyfeat_0_f"))
    donor_faces = detect_landmarks(detector, photos[donor_name], long_side=640)
    donor = FaceImage(donor_name, photos[donor_name], donor_faces[0]["landmarks"])
    fake = manipulate("faceswap", frames, track, np.random.default_rng(0), donor=donor)
    return write_video(tmp_path_factory.mktemp("two") / "swapped.mp4", fake, fps=25, codec="h264")


def test_both_people_are_scored_and_the_frame_takes_the_most_fake_face(swapped_clip, tmp_path):
    predictor = Predictor.from_path(make_model(tmp_path / "model", frames=4))
    assert predictor.extract_config.max_faces == ExtractConfig().max_faces == 3
    result = predictor.predict_video(swapped_clip)
    assert result["faces_found"] == 8 and all(f["faces"] == 2 for f in result["frame_scores"])

    faces = extract_video_faces(swapped_clip, predictor.detector(), predictor.extract_config).faces
    swapped = [f for f in faces if (f.box[0] + f.box[2]) / 2 > WIDTH / 2]
    assert len(swapped) == 4                               # the swapped face is scored in every frame
    p = predictor.rule.face_probabilities(predictor.face_logits(faces))
    for frame in result["frame_scores"]:
        here = [float(q) for f, q in zip(faces, p, strict=True) if f.frame_idx == frame["frame_idx"]]
        assert frame["p_fake"] == max(here)


def test_one_face_per_frame_would_only_see_the_real_person(swapped_clip):
    config = ExtractConfig(frames_per_video=4, max_faces=1)
    one = extract_video_faces(swapped_clip, build_detector(config), config).faces
    assert len(one) == 4 and all((f.box[0] + f.box[2]) / 2 < WIDTH / 2 for f in one)
