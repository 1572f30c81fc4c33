"""The files of a model artifact, read and checked without torch.

What a scorer needs before the weights (the extract settings, the scoring
rule, the version) comes from ``config.json`` alone; :mod:`deepfake.modeling.artifact`
loads the weights into a network. Keeping this part free of torch lets
``deepfake predict`` read a video's frames while torch is still importing.
"""

from __future__ import annotations

import hashlib
import json
import os
import tarfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from deepfake import __version__
from deepfake.core.errors import ModelError

ARTIFACT_FORMAT = 2                      # 2: backbone choice, scoring rule (temperature, aggregation, threshold)
WEIGHTS_FILE = "model.safetensors"
CONFIG_FILE = "config.json"
CARD_FILE = "model_card.md"

# Crops per forward pass when scoring (LoadedModel.predict_logits). On 2 CPU cores Lite0 costs
# ~15-20 ms a crop in batches of 2-4 and ~55 ms in batches of 32 (cache misses); a GPU wants many.
CPU_MICRO_BATCH = 4
CUDA_MICRO_BATCH = 64


def micro_batch(device: str) -> int:
    """Crops in every forward pass on ``device`` (a torch device name)."""
    return CUDA_MICRO_BATCH if str(device).startswith("cuda") else CPU_MICRO_BATCH


@dataclass(frozen=True)
class ArtifactFiles:
    """The checked ``config.json`` and the weights' bytes of one artifact."""

    source: Path
    config: dict[str, Any]
    weights: bytes

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.weights).hexdigest()

    @property
    def version(self) -> str:
        return model_version(self.config, self.sha256)


def model_version(config: Mapping[str, Any], weights_sha256: str) -> str:
    """``<kit version>+<first 12 hex of the weights' sha256>``: what responses, logs and MLflow name a model by."""
    return f"{config.get('kit_version', 'unknown')}+{weights_sha256[:12]}"


def read_artifact(source: str | os.PathLike[str]) -> ArtifactFiles:
    """A model folder or ``model.tar.gz``: its config, checked, and its weights, compared with the recorded sha256."""
    src = Path(source)
    files = read_artifact_files(src)
    out = ArtifactFiles(src, config_of(files, src), files[WEIGHTS_FILE])
    recorded = out.config.get("weights_sha256")
    if recorded and recorded != out.sha256:
        raise ModelError(
            f"{WEIGHTS_FILE} of model {src} has sha256 {out.sha256[:12]}..., but config.json records "
            f"{str(recorded)[:12]}...: the files do not belong together or one is corrupt"
        )
    return out


def read_artifact_files(source: Path) -> dict[str, bytes]:
    """``config.json`` and the weights of a model folder (or its ``model/``) or archive, as bytes."""
    names = (CONFIG_FILE, WEIGHTS_FILE)
    if source.is_dir():
        folder = source
        if not (folder / CONFIG_FILE).is_file() and (folder / "model" / CONFIG_FILE).is_file():
            folder = folder / "model"  # the training output folder holds the artifact in model/
        missing = [n for n in names if not (folder / n).is_file()]
        if missing:
            raise ModelError(
                f"model folder {source} lacks {', '.join(missing)}; point at the folder that training wrote "
                f"(it holds {WEIGHTS_FILE} and {CONFIG_FILE})"
            )
        return {n: (folder / n).read_bytes() for n in names}
    if source.is_file() and source.name.endswith((".tar.gz", ".tgz", ".tar")):
        try:
            with tarfile.open(source, "r:*") as tar:
                members = {m.name.removeprefix("./"): m for m in tar.getmembers() if m.isfile()}
                missing = [n for n in names if n not in members]
                if missing:
                    raise ModelError(
                        f"model archive {source} lacks {', '.join(missing)} at its root; "
                        "build it with deepfake.serving.packaging.package_model"
                    )
                files = {}
                for n in names:
                    fh = tar.extractfile(members[n])
                    files[n] = fh.read() if fh is not None else b""
                return files
        except (tarfile.TarError, OSError, EOFError) as exc:
            raise ModelError(f"model archive {source} cannot be read: {exc}") from exc
    if not source.exists():
        raise ModelError(f"model {source} does not exist; train a model first or give the path of model/ or model.tar.gz")
    raise ModelError(f"model {source} is neither a model folder nor a .tar.gz archive")


def config_of(files: Mapping[str, bytes], source: Path) -> dict[str, Any]:
    """The parsed ``config.json`` of ``files``, checked (the architecture is checked by the loader)."""
    try:
        config = json.loads(files[CONFIG_FILE].decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ModelError(f"{CONFIG_FILE} of model {source} is not valid JSON: {exc}") from exc
    check_config(config, source)
    return config


def check_config(config: Any, source: Path) -> None:
    if not isinstance(config, dict):
        raise ModelError(f"{CONFIG_FILE} of model {source} is not a JSON object")
    fmt = config.get("format")
    if not isinstance(fmt, int):
        raise ModelError(f"{CONFIG_FILE} of model {source} has no artifact format; it was not written by this kit")
    if fmt > ARTIFACT_FORMAT:
        raise ModelError(
            f"model {source} has artifact format {fmt} (kit {config.get('kit_version')}), newer than this kit's "
            f"{ARTIFACT_FORMAT} (kit {__version__}); upgrade deepfake-kit to load it"
        )
    missing = [k for k in ("image_size", "normalization", "label_map") if k not in config]
    if missing:
        raise ModelError(f"{CONFIG_FILE} of model {source} lacks {', '.join(missing)}")
