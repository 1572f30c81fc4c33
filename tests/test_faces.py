"""Square crops (margin, centring, border padding) and ranking of detections."""

from __future__ import annotations

import numpy as np
import pytest

from deepfake.core.errors import ConfigError, DataError
from deepfake.demo.face_sources import multi_face_photo
from deepfake.media.crops import crop_window, rank, select, square_crop
from deepfake.media.detectors import Detection, get_detector


def _marked(height=200, width=300, box=(100, 60, 140, 100)):
    """A black image with a white box: the crop's white share shows the margin."""
    img = np.zeros((height, width, 3), np.uint8)
    x0, y0, x1, y1 = box
    img[y0:y1, x0:x1] = 255
    return img, box


def test_margin_is_added_on_each_side():
    assert crop_window((100, 60, 140, 100), margin=0.5) == (80, 40, 160, 120)   # 40 px box -> 80 px window
    assert crop_window((100, 60, 140, 100), margin=0.0) == (100, 60, 140, 100)
    img, box = _marked()
    crop = square_crop(img, box, margin=0.5, size=None)
    assert crop.shape == (80, 80, 3)
    white = crop[..., 0] > 128
    assert white[20:60, 20:60].all() and white.sum() == 40 * 40   # the face, centred, at its own scale


def test_crop_is_resized_to_size():
    img, box = _marked()
    crop = square_crop(img, box, margin=0.5, size=160)
    assert crop.shape == (160, 160, 3) and crop.dtype == np.uint8
    assert crop[80, 80, 0] == 255 and crop[5, 5, 0] == 0


def test_non_square_box_gives_a_square_on_the_longer_side():
    left, top, right, bottom = crop_window((100, 50, 120, 110), margin=0.25)   # 20 x 60 box
    assert right - left == bottom - top == 90
    assert (left + right) / 2 == 110 and (top + bottom) / 2 == 80


@pytest.mark.parametrize("pad", ["black", "edge"])
def test_border_crops_are_padded_not_shifted(pad):
    img = np.full((100, 100, 3), 200, np.uint8)
    img[:10, :10] = (255, 0, 0)                     # face box in the top-left corner
    crop = square_crop(img, (0, 0, 10, 10), margin=1.0, size=None, pad=pad)
    assert crop.shape == (30, 30, 3)
    assert (crop[10:20, 10:20] == (255, 0, 0)).all()  # the face stays in the centre
    corner = crop[:10, :10]
    if pad == "black":
        assert (corner == 0).all()
    else:
        assert (corner == (255, 0, 0)).all()          # the border pixel repeated


def test_crop_errors():
    img, box = _marked()
    with pytest.raises(ConfigError, match="margin"):
        square_crop(img, box, margin=-0.1)
    with pytest.raises(ConfigError, match="pad"):
        square_crop(img, box, pad="mirror")
    with pytest.raises(DataError, match="outside"):
        square_crop(img, (500, 500, 520, 520), margin=0.1)


def test_rank_by_score_then_area():
    small_sure = Detection((0, 0, 10, 10), 0.999)
    big_sure = Detection((0, 0, 50, 50), 0.998)       # ties with small_sure at 2 decimals: area decides
    big_unsure = Detection((0, 0, 90, 90), 0.80)
    assert rank([big_unsure, small_sure, big_sure]) == [big_sure, small_sure, big_unsure]


def test_select_filters_and_limits():
    dets = [Detection((0, 0, 10, 10), 0.95), Detection((0, 0, 20, 20), 0.5), Detection((0, 0, 30, 30), 0.97)]
    assert select(dets, max_faces=1, min_score=0.9) == [dets[2]]
    assert select(dets, max_faces=5, min_score=0.9) == [dets[2], dets[0]]
    assert select(dets, max_faces=None, min_score=0.0) == [dets[2], dets[0], dets[1]]
    assert select([], 1, 0.9) == []
    with pytest.raises(ConfigError):
        select(dets, max_faces=-1)


def test_select_on_a_real_multi_face_photo():
    photo = multi_face_photo()
    found = get_detector("mtcnn").detect(photo)
    assert len(found) == 5
    best_two = select(found, max_faces=2, min_score=0.9)
    largest = sorted(found, key=lambda d: d.area, reverse=True)[:2]
    assert best_two == largest                       # all near-certain: the two largest faces win
    crops = [square_crop(photo, d.box, 0.3, 64) for d in best_two]
    assert all(c.shape == (64, 64, 3) for c in crops)
