"""environment.yml (SageMaker Studio) must install what pyproject.toml declares."""

from pathlib import Path

import tomllib
import yaml

ROOT = Path(__file__).resolve().parents[1]


def test_environment_yml_matches_pyproject():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    extras = project["optional-dependencies"]
    wanted = set(project["dependencies"]) | set(extras["demo"]) | set(extras["aws"]) | set(extras["backbones"])
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    pip = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict))
    assert "-e ." in pip
    assert set(pip) - {"-e ."} == wanted


def test_pins_that_move_are_pinned():
    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    assert "torch==2.13.0" in deps
    assert any(d.startswith("opencv-python-headless") and "<5" in d for d in deps)
    assert not any(d.startswith(("torchvision", "timm", "opencv-python>", "opencv-python=")) for d in deps)
