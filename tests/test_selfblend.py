"""Self-blended pseudo-fakes: the published recipe on five landmarks, deterministic for a seed."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from deepfake.core.errors import DataError, InvalidInputError
from deepfake.data.selfblend import SelfBlendConfig, face_hull, hull_mask, self_blend
from deepfake.media.crops import landmarks_in_crop, square_crop
from deepfake.media.detectors import detect_faces, get_detector

SIZE = 160


@pytest.fixture(scope="module")
def crop_and_marks(face_photos):
    """A real 160 px face crop (Grace Hopper) and its five MTCNN landmarks in crop pixels."""
    photo = dict(face_photos)["mpl_grace_hopper"]
    det = detect_faces(get_detector("mtcnn"), photo)[0]
    crop = square_crop(photo, det.box, 0.3, SIZE)
    return crop, landmarks_in_crop(np.array(det.landmarks), det.box, 0.3, SIZE)


def test_landmarks_land_on_the_face_in_the_crop(crop_and_marks):
    _crop, marks = crop_and_marks
    assert marks.shape == (5, 2) and (marks > 0).all() and (marks < SIZE).all()
    left_eye, right_eye, nose, mouth_left, mouth_right = marks
    assert left_eye[0] < nose[0] < right_eye[0]
    assert max(left_eye[1], right_eye[1]) < nose[1] < min(mouth_left[1], mouth_right[1])


def test_hull_covers_the_landmarks_and_the_forehead_variant_reaches_higher(crop_and_marks):
    _crop, marks = crop_and_marks
    with_forehead = hull_mask((SIZE, SIZE), face_hull(marks, forehead=True))
    without = hull_mask((SIZE, SIZE), face_hull(marks, forehead=False))
    for x, y in marks:
        assert without[int(y), int(x)] == 1.0 and with_forehead[int(y), int(x)] == 1.0
    assert np.argmax(with_forehead.any(axis=1)) < np.argmax(without.any(axis=1))   # top row is higher
    assert with_forehead.sum() > without.sum() > 0.1 * SIZE * SIZE
    wide = hull_mask((SIZE, SIZE), face_hull(marks, forehead=False, width=1.15))
    narrow = hull_mask((SIZE, SIZE), face_hull(marks, forehead=False, width=0.85))
    assert wide.sum() > without.sum() > narrow.sum()


def test_self_blend_is_deterministic_and_changes_only_the_face(crop_and_marks):
    crop, marks = crop_and_marks
    a = self_blend(crop, marks, np.random.default_rng(7))
    b = self_blend(crop, marks, np.random.default_rng(7))
    c = self_blend(crop, marks, np.random.default_rng(8))
    assert np.array_equal(a.image, b.image) and np.array_equal(a.mask, b.mask)
    assert not np.array_equal(a.image, c.image)
    assert a.image.shape == crop.shape and a.image.dtype == np.uint8
    assert a.mask.min() >= 0.0 and 0.25 <= a.mask.max() <= 1.0 + 1e-6
    diff = np.abs(a.image.astype(int) - crop.astype(int)).sum(axis=2)
    assert diff[a.mask < 1e-4].max() <= 1       # outside the mask the target is untouched (rounding only)
    assert diff[a.mask > 0.5].mean() > 1.0      # inside, the shifted and resampled source shows


def test_blend_ratios_scale_the_mask(crop_and_marks):
    crop, marks = crop_and_marks
    half = self_blend(crop, marks, np.random.default_rng(1), SelfBlendConfig(blend_ratios=(0.5,)))
    assert half.mask.max() == pytest.approx(0.5, abs=1e-6)


def test_missing_or_bad_landmarks_say_what_to_do(crop_and_marks):
    crop, marks = crop_and_marks
    with pytest.raises(DataError, match="re-run face extraction"):
        self_blend(crop, None, np.random.default_rng(0))
    with pytest.raises(DataError, match="5 MTCNN landmarks"):
        self_blend(crop, marks[:3], np.random.default_rng(0))
    with pytest.raises(InvalidInputError, match="uint8 RGB"):
        self_blend(crop.astype(np.float32), marks, np.random.default_rng(0))


@pytest.mark.parametrize("family", ["sbi", "fwa", "warp"])
def test_every_pseudo_fake_family_changes_the_face_only_and_is_seeded(family, crop_and_marks):
    """Each family changes the face region (its mask says where), leaves the corners alone, and is a pure
    function of the crop, its landmarks and the generator's seed."""
    from deepfake.data.pseudofakes import get_family

    crop, marks = crop_and_marks
    synth = get_family(family)
    fake = synth(crop, marks, np.random.default_rng(5))
    again = synth(crop, marks, np.random.default_rng(5))
    assert fake.family == family and np.array_equal(fake.image, again.image)
    assert fake.image.shape == crop.shape and fake.image.dtype == np.uint8
    assert fake.mask.shape == crop.shape[:2] and 0 <= fake.mask.min() and fake.mask.max() <= 1
    changed = np.abs(fake.image.astype(int) - crop.astype(int)).max(axis=2) > 2
    assert changed.any()
    corner = changed[:8, :8].any() or changed[-8:, :8].any() or changed[:8, -8:].any()
    assert not corner
    centre = tuple(np.round(marks[2]).astype(int))                    # the nose is inside the changed region
    assert fake.mask[centre[1], centre[0]] > 0 or family == "warp"


def test_the_warp_family_leaves_no_seam(crop_and_marks):
    """A local warp fades to nothing at the face outline: along the hull the crop is unchanged."""
    from deepfake.data.pseudofakes import warp

    crop, marks = crop_and_marks
    for seed in range(6):
        fake = warp(crop, marks, np.random.default_rng(seed))
        hull = hull_mask(crop.shape[:2], face_hull(marks, forehead=True))
        edge = (cv2.dilate(hull, np.ones((3, 3), np.uint8)) - cv2.erode(hull, np.ones((3, 3), np.uint8))) > 0
        diff = np.abs(fake.image.astype(int) - crop.astype(int)).max(axis=2)
        assert np.percentile(diff[edge], 95) <= 6, seed
