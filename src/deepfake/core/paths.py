"""The one module that knows where things live.

Local runs resolve relative paths against the project folder (``DEEPFAKE_HOME``
or the checkout this package was installed from), so a notebook's defaults work
whatever folder Jupyter started in. SageMaker containers get absolute paths as
parameters; the only place that spells the container layout is
:data:`SAGEMAKER_ROOT` below.
"""

from __future__ import annotations

import os
from pathlib import Path, PurePosixPath

# The SageMaker container contract's root, spelled once for the whole kit.
SAGEMAKER_ROOT = PurePosixPath(os.environ.get("DEEPFAKE_SAGEMAKER_ROOT", "/opt/ml"))


# File names inside a step's output folder: the contract between stages.
VIDEOS_MANIFEST = "videos.csv"
DATA_PROFILE = "data_profile.json"
FACES_MANIFEST = "faces.csv"
CROPS_DIR = "crops"
MODEL_DIR = "model"
MODEL_ARCHIVE = "model.tar.gz"   # the SageMaker model artifact, written by training beside model/
HISTORY = "history.csv"
EVALUATION = "evaluation.json"
FRAME_PREDICTIONS = "frame_predictions.csv"
VIDEO_PREDICTIONS = "video_predictions.csv"
VAL_PREDICTIONS = "val_predictions.csv"   # the val split's faces scored by the trained model (training writes it)
FIGURES_DIR = "figures"


def project_dir() -> Path:
    """The folder that holds ``notebooks/`` and ``data/`` for local runs."""
    env = os.environ.get("DEEPFAKE_HOME")
    if env:
        return Path(env).expanduser().resolve()
    here = Path(__file__).resolve()
    for parent in here.parents:
        if (parent / "notebooks").is_dir() and (parent / "pyproject.toml").is_file():
            return parent
    return Path.cwd().resolve()


def resolve(path: str | os.PathLike[str]) -> Path:
    """An absolute local path; a relative one is taken from the project folder."""
    p = Path(path).expanduser()
    return p if p.is_absolute() else project_dir() / p


def is_s3(uri: str) -> bool:
    return str(uri).startswith("s3://")


def split_s3(uri: str) -> tuple[str, str]:
    """``s3://bucket/a/b`` -> ``("bucket", "a/b")``; the caller has checked :func:`is_s3`."""
    bucket, _, key = uri[len("s3://"):].partition("/")
    return bucket, key


def notebooks_dir() -> Path:
    return Path(os.environ.get("DEEPFAKE_NOTEBOOKS", project_dir() / "notebooks"))


def runs_dir() -> Path:
    return Path(os.environ.get("DEEPFAKE_RUNS", project_dir() / "runs"))


def registry_dir() -> Path:
    return Path(os.environ.get("DEEPFAKE_REGISTRY", project_dir() / "registry"))


def sagemaker_processing_dir(kind: str, name: str) -> str:
    """Where a Processing job mounts an input or output channel (``kind``: input|output)."""
    return str(SAGEMAKER_ROOT / "processing" / kind / name)


def sagemaker_model_dir() -> Path:
    return Path(os.environ.get("SM_MODEL_DIR", str(SAGEMAKER_ROOT / "model")))


def ensure_dir(path: str | os.PathLike[str]) -> Path:
    p = resolve(path)
    p.mkdir(parents=True, exist_ok=True)
    return p
