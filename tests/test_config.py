from dataclasses import dataclass

import pytest

from deepfake.core.config import StageConfig
from deepfake.core.errors import ConfigError


@dataclass(frozen=True)
class Demo(StageConfig):
    frames: int = 16  # frames per video
    margin: float = 0.3  # share of the box
    detector: str = "mtcnn"  # registry name
    amp: bool = True  # CUDA only
    size: tuple = (224, 224)  # pixels


def test_unknown_key_lists_known_ones():
    with pytest.raises(ConfigError) as err:
        Demo.from_dict({"frams": 3})
    msg = str(err.value)
    assert "frams" in msg and "frames" in msg and "detector" in msg


def test_strings_from_papermill_and_cli_are_coerced():
    cfg = Demo.from_dict({"frames": "8", "margin": "0.5", "amp": "false", "size": "[160, 160]"})
    assert cfg == Demo(frames=8, margin=0.5, amp=False, size=(160, 160))


def test_bad_value_names_the_setting():
    with pytest.raises(ConfigError, match="frames='many'"):
        Demo.from_dict({"frames": "many"})
    with pytest.raises(ConfigError, match="frames=2.5"):
        Demo.from_dict({"frames": 2.5})


def test_from_namespace_picks_fields_and_round_trips():
    ns = {"frames": 4, "output_dir": "x", "detector": "haar"}
    cfg = Demo.from_namespace(ns)
    assert cfg.frames == 4 and cfg.detector == "haar"
    assert Demo.from_dict(cfg.to_dict()) == cfg
    assert cfg.replace(frames=5).frames == 5
