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


# A kernel's input history (IPython's ``In``) as papermill leaves it: the parameters cell, then the cell
# it injects, then the config cell.
PARAMETERS_CELL = 'frames: int = 16  # frames per video\ndetector: str = "mtcnn"  # registry name\noutput_dir: str = "o"  # out'


def test_an_injected_parameter_the_notebook_does_not_declare_is_rejected_with_the_known_ones():
    history = ["", PARAMETERS_CELL, "# Parameters\nframes = 3\nbogus = 4\n", "config = Demo.from_namespace(globals())"]
    with pytest.raises(ConfigError) as err:
        Demo.from_namespace({"In": history, "frames": 3, "bogus": 4})
    assert "bogus" in str(err.value) and "known parameters: frames, detector, output_dir" in str(err.value)


def test_declared_injections_and_interactive_kernels_pass():
    injected = ["", PARAMETERS_CELL, "# Parameters\nframes = 3\noutput_dir = '/x'\n", "cfg = ..."]
    assert Demo.from_namespace({"In": injected, "frames": 3}).frames == 3
    # Jupyter: no injected cell, other names in the kernel; a cell that merely starts like one is no injection
    interactive = ["", PARAMETERS_CELL, "import numpy as np\nx = 1", "# Parameters\nprint('hello')", "cfg = ..."]
    assert Demo.from_namespace({"In": interactive, "frames": 4, "np": object(), "x": 1}).frames == 4
    assert Demo.from_namespace({"frames": 5}).frames == 5                          # no kernel at all
