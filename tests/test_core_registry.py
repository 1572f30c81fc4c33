"""deepfake.core.registry: the one rule for implementations chosen by name."""

import pytest

from deepfake.core.errors import ConfigError, DetectorError
from deepfake.core.registry import Registry
from deepfake.data import pseudofakes
from deepfake.demo import manipulations
from deepfake.media import detectors
from deepfake.scoring import aggregate


def test_add_list_get_and_refuse_an_unknown_name_with_the_available_ones():
    kinds = Registry[object]("widget")

    @kinds.register("b")
    def b():
        pass

    kinds.add("a", len)
    assert kinds.names() == ["a", "b"] == list(kinds) and "a" in kinds and "c" not in kinds
    assert kinds.get("b") is b
    with pytest.raises(ConfigError, match=r"unknown widget 'c'; available: a, b"):
        kinds.get("c")
    kinds.add("a", len)                                   # the same item again is no conflict
    with pytest.raises(ConfigError, match="widget name 'a' is already taken by len"):
        kinds.add("a", max)
    kinds.remove("a")
    assert kinds.names() == ["b"]


@pytest.mark.parametrize(("lookup", "error", "message"), [
    (aggregate.get_strategy, ConfigError, "unknown aggregation 'x'; available: confident_fake, max, mean, median"),
    (manipulations.get_method, ConfigError, "unknown manipulation 'x'; available: blendswap, face2face"),
    (pseudofakes.get_family, ConfigError, "unknown pseudo-fake family 'x'; available: fwa, sbi, warp"),
    (detectors.get_detector, DetectorError, "unknown face detector 'x'; available: dlib-hog, haar, mtcnn"),
])
def test_every_kind_the_kit_chooses_by_name_words_its_refusal_alike(lookup, error, message):
    with pytest.raises(error, match=message):
        lookup("x")
