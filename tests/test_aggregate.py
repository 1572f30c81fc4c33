import numpy as np
import pytest

from deepfake.core.errors import ConfigError, DataError
from deepfake.scoring import aggregate as agg


def test_registry_lists_the_strategies():
    assert {"mean", "median", "max", "confident_fake"} <= set(agg.available())


def test_simple_strategies():
    s = [0.1, 0.2, 0.9]
    assert agg.aggregate(s) == pytest.approx(0.4)
    assert agg.aggregate(s, "median") == pytest.approx(0.2)
    assert agg.aggregate(s, "max") == pytest.approx(0.9)
    assert agg.aggregate(np.array([[0.5]])) == 0.5
    assert isinstance(agg.aggregate(np.float32([0.3]), "mean"), float)


def test_confident_fake_averages_confident_fakes_first():
    # 5 of 10 frames above 0.8 (> 40% and >= 3): their mean, not the overall 0.5.
    s = [0.9] * 4 + [0.86] + [0.1] * 5
    assert agg.aggregate(s, "confident_fake") == pytest.approx(np.mean([0.9] * 4 + [0.86]))


def test_confident_fake_needs_enough_fake_frames():
    # Exactly 40% confident fakes is not more than 40%: falls through to the mean.
    s = [0.9] * 4 + [0.5] * 6
    assert agg.aggregate(s, "confident_fake") == pytest.approx(np.mean(s))
    # 2 of 3 frames confidently fake: over 40% but fewer than MIN_FAKE_FRAMES (3).
    s = [0.95, 0.95, 0.1]
    assert agg.aggregate(s, "confident_fake") == pytest.approx(np.mean(s))
    assert agg.confident_fake(np.array(s), min_fake_frames=2) == pytest.approx(0.95)


def test_confident_fake_averages_confident_reals_when_nearly_all():
    s = [0.1] * 10 + [0.05] * 9 + [0.95]     # 19 of 20 (> 90%) below 0.2
    assert agg.aggregate(s, "confident_fake") == pytest.approx(np.mean([0.1] * 10 + [0.05] * 9))
    s = [0.1] * 9 + [0.95]                   # exactly 90%: not more, so the mean
    assert agg.aggregate(s, "confident_fake") == pytest.approx(np.mean(s))


def test_no_made_up_score_for_empty_input():
    with pytest.raises(DataError, match="empty"):
        agg.aggregate([])
    with pytest.raises(DataError, match="probabilities"):
        agg.aggregate([0.2, 1.5])
    with pytest.raises(DataError, match="probabilities"):
        agg.aggregate([0.2, float("nan")])
    with pytest.raises(ConfigError, match="available: confident_fake, max, mean, median"):
        agg.aggregate([0.2], "vote")


def test_register_adds_a_strategy():
    @agg.register("test_min")
    def minimum(scores):
        return float(np.min(scores))

    try:
        assert agg.aggregate([0.3, 0.7], "test_min") == 0.3
    finally:
        agg.STRATEGIES.remove("test_min")
