import numpy as np
import pytest

from deepfake.core.errors import ConfigError, InvalidInputError
from deepfake.data import augment
from deepfake.data.augment import TrainAugment


def image(h=48, w=40, seed=0):
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, (h, w, 3), dtype=np.uint8)


def test_same_seed_same_output_and_seeds_differ():
    aug = TrainAugment(p_flip=0.5, p_color=1.0, p_downscale=1.0, p_jpeg=1.0, p_cutout=1.0)
    img = image()
    a = aug(img, np.random.default_rng(7))
    b = aug(img, np.random.default_rng(7))
    assert np.array_equal(a, b)
    others = [aug(img, np.random.default_rng(s)) for s in range(8, 12)]
    assert any(not np.array_equal(a, o) for o in others)


@pytest.mark.parametrize("seed", range(6))
def test_train_augment_keeps_shape_dtype_and_input(seed):
    img = image(50, 37)
    before = img.copy()
    out = TrainAugment(p_color=1.0, p_downscale=1.0, p_jpeg=1.0, p_cutout=1.0)(img, np.random.default_rng(seed))
    assert out.shape == img.shape and out.dtype == np.uint8
    assert np.array_equal(img, before)  # the input is never modified in place


def test_all_probabilities_zero_is_identity_copy():
    img = image()
    aug = TrainAugment(p_flip=0, p_color=0, p_downscale=0, p_jpeg=0, p_cutout=0)
    out = aug(img, np.random.default_rng(0))
    assert np.array_equal(out, img) and out is not img


def test_operations_shapes_and_identities():
    img = image(30, 20)
    rng = np.random.default_rng(0)
    assert np.array_equal(augment.hflip(augment.hflip(img)), img)
    assert np.array_equal(augment.hflip(img)[:, 0], img[:, -1])
    for fn in (augment.adjust_brightness, augment.adjust_contrast, augment.adjust_saturation):
        assert np.array_equal(fn(img, 1.0), img)
    assert np.array_equal(augment.adjust_hue(img, 0.0), img)
    for out in (
        augment.color_jitter(img, rng),
        augment.jpeg_recompress(img, 50),
        augment.downscale_upscale(img, 0.5),
        augment.cutout(img, rng, 0.3),
    ):
        assert out.shape == img.shape and out.dtype == np.uint8


def test_hue_rotates_red_to_green_and_saturation_zero_is_grey():
    red = np.zeros((4, 4, 3), np.uint8)
    red[..., 0] = 255
    green = augment.adjust_hue(red, 1 / 3)
    assert np.abs(green[0, 0].astype(int) - [0, 255, 0]).max() <= 2
    grey = augment.adjust_saturation(image(), 0.0)
    assert np.abs(grey[..., 0].astype(int) - grey[..., 2]).max() <= 1


def test_jpeg_recompression_is_lossy_but_close():
    smooth = np.tile(np.linspace(0, 255, 64, dtype=np.uint8)[None, :, None], (64, 1, 3))
    out = augment.jpeg_recompress(smooth, 30)
    diff = np.abs(out.astype(int) - smooth)
    assert diff.mean() < 8


def test_cutout_fills_one_square_with_mean_colour():
    img = image(40, 40)
    out = augment.cutout(img, np.random.default_rng(3), 0.25)
    changed = np.any(out != img, axis=2)
    ys, xs = np.nonzero(changed)
    assert ys.max() - ys.min() < 10 and xs.max() - xs.min() < 10
    fill = out[ys[0], xs[0]]
    assert np.allclose(fill, img.reshape(-1, 3).mean(0), atol=1)


@pytest.mark.parametrize(
    "kwargs",
    [{"p_flip": 1.5}, {"p_jpeg": -0.1}, {"brightness": 1.0}, {"hue": 0.7},
     {"jpeg_quality": (90, 40)}, {"jpeg_quality": (0, 50)}, {"downscale": (0.0, 0.5)}, {"cutout_fraction": (0.2, 1.5)}],
)
def test_bad_settings_raise_config_error(kwargs):
    with pytest.raises(ConfigError):
        TrainAugment(**kwargs)


def test_rejects_non_rgb_uint8():
    with pytest.raises(InvalidInputError, match="uint8"):
        TrainAugment()(np.zeros((8, 8, 3), np.float32), np.random.default_rng(0))
    with pytest.raises(InvalidInputError):
        TrainAugment()(np.zeros((8, 8), np.uint8), np.random.default_rng(0))
