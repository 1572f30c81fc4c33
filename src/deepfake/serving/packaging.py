"""The SageMaker model archive: ``model.tar.gz`` with the model and the code that serves it.

Layout (what the SageMaker PyTorch serving container expects)::

    model.safetensors, config.json, model_card.md   the model files, at the root
    code/inference.py                                 re-exports deepfake.serving.handlers's handlers
    code/requirements.txt                             installed by the container at start
    code/deepfake/...                                 the modules serving imports (code/ is on sys.path)

The archive is reproducible: entries sorted, fixed times, owners and modes,
and a gzip header without name or time, so the same model and code give the
same sha256 (the registry and the deployment compare archives by hash).
"""

from __future__ import annotations

import gzip
import io
import json
import os
import tarfile
from collections.abc import Iterator
from pathlib import Path

import deepfake
from deepfake.core import dependencies, imports
from deepfake.core.errors import ModelError
from deepfake.media.detectors import detector_package
from deepfake.modeling.artifact import CONFIG_FILE, WEIGHTS_FILE
from deepfake.modeling.network import DEFAULT_BACKBONE, get_backbone
from deepfake.serving import handlers

CODE_DIR = "code"
ARCHIVE_MTIME = 0            # seconds since the epoch on every entry: reproducible archives
GZIP_LEVEL = 6               # zlib level; the weights barely compress, so higher levels only cost time
ENTRY_POINT = '''"""SageMaker entry point of this model archive: the handlers live in the deepfake package beside it."""

from deepfake.serving.handlers import input_fn, model_fn, output_fn, predict_fn, use_toolkit_errors

use_toolkit_errors()  # served by the SageMaker inference toolkit: bad input must answer 4xx, not 500

__all__ = ["input_fn", "model_fn", "output_fn", "predict_fn"]
'''


# What the archive ships: the handlers' module and everything it imports, found in the source
# (deepfake.core.imports). Imported here, so whatever ships this module ships the handlers too.
SERVING_ENTRY = handlers.__name__


def package_model(model_dir: str | os.PathLike[str], out_path: str | os.PathLike[str]) -> Path:
    """Write ``model.tar.gz`` for the model in ``model_dir``; returns its path.

    ``out_path`` is the archive's path, or a folder to write ``model.tar.gz`` into.
    """
    src = Path(model_dir)
    missing = [n for n in (CONFIG_FILE, WEIGHTS_FILE) if not (src / n).is_file()]
    if missing:
        raise ModelError(f"cannot package {src}: it lacks {', '.join(missing)}; give the model/ folder that "
                         "training wrote (deepfake.modeling.artifact.save_artifact)")
    config = _read_config(src / CONFIG_FILE)
    out = Path(out_path)
    if out.is_dir():
        out = out / "model.tar.gz"
    out.parent.mkdir(parents=True, exist_ok=True)

    entries = [(p.name, p.read_bytes()) for p in sorted(src.iterdir())
               if p.is_file() and not p.name.startswith(".") and p.name != CODE_DIR]
    entries.append((f"{CODE_DIR}/inference.py", ENTRY_POINT.encode("utf-8")))
    entries.append((f"{CODE_DIR}/requirements.txt", requirements(config).encode("utf-8")))
    entries += [(f"{CODE_DIR}/{rel}", data) for rel, data in package_sources()]

    tmp = out.with_name(f".{out.name}.partial")
    try:
        with open(tmp, "wb") as raw, \
                gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=ARCHIVE_MTIME, compresslevel=GZIP_LEVEL) as gz, \
                tarfile.open(fileobj=gz, mode="w", format=tarfile.PAX_FORMAT) as tar:
            for name, data in sorted(entries):
                tar.addfile(_tar_info(name, len(data)), io.BytesIO(data))
        os.replace(tmp, out)
    finally:
        tmp.unlink(missing_ok=True)
    return out


def requirements(config: dict) -> str:
    """``code/requirements.txt``: the kit's own requirements of the packages the served code imports.

    Derived, never listed: the third-party imports of the serving closure that
    are core dependencies of the kit (an extra's, like boto3 for S3 requests,
    comes with the image or is asked for by name), with the kit's version ranges,
    less what the image provides; plus the packages of the model's detector and backbone.
    """
    core = dependencies.core_distributions()
    used = dependencies.distributions_of(imports.third_party([SERVING_ENTRY]))
    names = [d for d in used if d in core and d not in dependencies.IMAGE_PACKAGES]
    detector = detector_package((config.get("extract") or {}).get("detector") or "mtcnn")
    backbone = get_backbone(config.get("architecture") or DEFAULT_BACKBONE).package   # timm: an extra's
    for package in (detector, backbone):
        if package and dependencies.normalize(package) not in names:
            names.append(dependencies.normalize(package))
    lines = ["# Installed by the SageMaker PyTorch serving container before it imports code/inference.py;",
             f"# torch and numpy come with the image ({', '.join(dependencies.IMAGE_CONSTRAINTS)} keeps its numpy).",
             *sorted(dependencies.requirement(n) for n in names), *dependencies.IMAGE_CONSTRAINTS]
    return "\n".join(lines) + "\n"


def package_sources() -> Iterator[tuple[str, bytes]]:
    """``(deepfake/<relative path>, bytes)`` of the modules serving imports (and ``py.typed``), sorted."""
    root = Path(deepfake.__file__).resolve().parent
    files = [*imports.closure_files([SERVING_ENTRY]), root / "py.typed"]
    for path in sorted(files):
        yield f"deepfake/{path.relative_to(root).as_posix()}", path.read_bytes()


def _tar_info(name: str, size: int) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.size = size
    info.mtime = ARCHIVE_MTIME
    info.mode = 0o644
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    return info


def _read_config(path: Path) -> dict:
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ModelError(f"cannot package the model: {path} is not valid JSON: {exc}") from exc
    if not isinstance(config, dict):
        raise ModelError(f"cannot package the model: {path} is not a JSON object")
    return config
