"""SageMaker inference handlers (``model_fn``, ``input_fn``, ``predict_fn``, ``output_fn``).

The SageMaker PyTorch serving container imports ``code/inference.py`` of the
model archive (a shim re-exporting these, written by :mod:`deepfake.serving.packaging`),
and ``deepfake serve`` runs the same request parsing, prediction and response
rendering behind its own HTTP server, so a request behaves the same locally
and on an endpoint.

Requests (``docs/inference.md``): video bytes (``video/mp4`` and the other
containers FFmpeg reads), one image (``image/jpeg``, ``image/png``),
``application/octet-stream`` (the type is sniffed from the first bytes), or
``application/json`` ``{"s3_uri": "s3://bucket/key"}`` naming a video too large
for the real-time payload limit. Bad requests raise
:class:`~deepfake.core.errors.InvalidInputError` subclasses, which carry their HTTP
status. Inside the SageMaker inference toolkit, which answers 500 to any
exception but its own, the handlers re-raise them as the toolkit's
``GenericInferenceToolkitError`` with the same status, so a bad video gets a
4xx on AWS too.
"""

from __future__ import annotations

import json
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path, PurePosixPath
from typing import Any

from deepfake.core import paths
from deepfake.core.errors import (
    ConfigError,
    DeepfakeError,
    ImageDecodeError,
    InvalidInputError,
    PayloadTooLargeError,
    VideoDecodeError,
)
from deepfake.media.images import decode_image
from deepfake.media.video import frame_indices, probe
from deepfake.serving.predictor import IMAGE_SUFFIXES, Predictor, scoring_device
from deepfake.serving.requests import (
    MAX_DECODE_ENV,
    MAX_S3_BYTES_ENV,
    ImageRequest,
    Request,
    S3Request,
    VideoRequest,
    error_body,
    http_status,
    max_decode_megapixels,
    max_s3_bytes,
    parse_request,
    render_response,
    too_slow_for_real_time,
)


def model_fn(model_dir: str) -> Predictor:
    """Load the model archive's files (extracted by SageMaker into ``model_dir``), on the instance's GPU if it has one."""
    with _toolkit_errors():
        return Predictor.from_path(model_dir or paths.sagemaker_model_dir(), device=scoring_device("auto"))


def input_fn(request_body: bytes | bytearray | str, content_type: str | None) -> Request:
    with _toolkit_errors():
        return parse_request(request_body, content_type)


def predict_fn(data: Request, model: Predictor) -> dict[str, Any]:
    with _toolkit_errors():
        return predict(data, model)


def output_fn(prediction: dict[str, Any], accept: str | None) -> tuple[bytes, str]:
    with _toolkit_errors():
        return render_response(prediction, accept)


def predict(request: Request, predictor: Predictor) -> dict[str, Any]:
    """Score a parsed request; a video or image that cannot be decoded raises InvalidInputError (400).

    The response gets ``latency_ms``: how long the scoring took (an S3 download included), so an endpoint's
    captured responses say it (SageMaker's data capture records no time but the request's)."""
    started = time.perf_counter()
    try:
        if isinstance(request, VideoRequest):
            result = predictor.predict_video(request.data, suffix=request.suffix)
        elif isinstance(request, ImageRequest):
            result = predictor.predict_image(request.rgb)
        elif isinstance(request, S3Request):
            result = _predict_s3(request, predictor)
        else:
            raise InvalidInputError(f"cannot score a {type(request).__name__}; parse the body with input_fn first")
    except (VideoDecodeError, ImageDecodeError) as exc:
        raise InvalidInputError(str(exc)) from exc
    result["latency_ms"] = round(1000 * (time.perf_counter() - started), 1)
    return result


def _predict_s3(request: S3Request, predictor: Predictor) -> dict[str, Any]:
    suffix = PurePosixPath(request.key).suffix.lower()
    suffix = suffix if 1 < len(suffix) <= 6 and suffix[1:].isalnum() else ".mp4"
    with tempfile.TemporaryDirectory(prefix="deepfake-s3-") as tmp:
        local = Path(tmp) / f"input{suffix}"
        _download(request, local)
        if suffix in IMAGE_SUFFIXES:
            result = predictor.predict_image(decode_image(local.read_bytes(), request.uri))
        else:
            try:
                check_decoding(local, request.uri, predictor.extract_config.frames_per_video,
                               predictor.extract_config.stride)
                result = predictor.predict_video(local)
            except VideoDecodeError as exc:
                raise VideoDecodeError(request.uri, exc.reason) from None
    result["media"] = {**result.get("media", {}), "s3_uri": request.uri}
    return result


def _download(request: S3Request, local: Path) -> None:
    try:
        import boto3
        from botocore.exceptions import BotoCoreError, ClientError
    except ImportError as exc:
        raise ConfigError("reading videos from S3 needs boto3 (pip install boto3; SageMaker images have it)") from exc
    s3 = boto3.client("s3")
    try:
        size = int(s3.head_object(Bucket=request.bucket, Key=request.key)["ContentLength"])
        limit = max_s3_bytes()
        if size > limit:
            raise PayloadTooLargeError(f"{request.uri} is {size} bytes, " + too_slow_for_real_time(
                "the video", f"{limit} bytes, {MAX_S3_BYTES_ENV}"))
        s3.download_file(request.bucket, request.key, str(local))
    except ClientError as exc:
        error = exc.response.get("Error", {})
        code = str(error.get("Code", ""))
        if code in ("404", "NoSuchKey", "NoSuchBucket", "NotFound"):
            raise InvalidInputError(f"{request.uri} does not exist ({code}); upload the video there first") from None
        if code in ("403", "AccessDenied", "Forbidden"):
            raise InvalidInputError(
                f"the endpoint may not read {request.uri} ({code}); put the video in a bucket its execution "
                "role can read (s3:GetObject)") from None
        raise InvalidInputError(f"cannot download {request.uri}: {code} {error.get('Message', '')}".strip()) from None
    except BotoCoreError as exc:
        raise InvalidInputError(f"cannot download {request.uri}: {exc}") from None


def check_decoding(path: Path, uri: str, frames_per_video: int, stride: int) -> None:
    """Refuse (413) a video whose sampled frames need more decoding than fits the request's time: the stream is
    decoded up to its last sampled frame, whose index the container's header gives before anything is decoded
    (a header without a frame count leaves the byte bound alone to decide)."""
    info = probe(path)
    if info.frame_count <= 0:
        return
    decoded = max(frame_indices(info.frame_count, frames_per_video, stride)) + 1
    megapixels = decoded * info.width * info.height / 1e6
    limit = max_decode_megapixels()
    if megapixels > limit:
        length = f"{info.duration_s:.1f} s" if info.duration_s else f"{info.frame_count} frames"
        raise PayloadTooLargeError(
            f"{uri} is {length} of {info.width}x{info.height} video; scoring it decodes {decoded} frames "
            f"({megapixels:,.1f} megapixels), " + too_slow_for_real_time(
                "the video", f"{limit:,g} megapixels, {MAX_DECODE_ENV}"))


@contextmanager
def _toolkit_errors() -> Iterator[None]:
    """Inside the SageMaker inference toolkit, turn kit errors into its HTTP errors (else re-raise)."""
    try:
        yield
    except DeepfakeError as exc:
        toolkit_error = _toolkit_error_class()
        if toolkit_error is None:
            raise
        status = http_status(exc)
        raise toolkit_error(status, json.dumps(error_body(exc, status)), type(exc).__name__) from exc


_TOOLKIT_ERRORS = False   # set by the model archive's code/inference.py, which only the toolkit imports


def use_toolkit_errors(enabled: bool = True) -> None:
    """Raise the SageMaker inference toolkit's HTTP errors (called by code/inference.py in the container).

    Having ``sagemaker_inference`` installed is not the same as being served by it,
    so the switch is explicit: the local server and the CLI keep the kit's errors.
    """
    global _TOOLKIT_ERRORS
    _TOOLKIT_ERRORS = enabled


def _toolkit_error_class() -> type[Exception] | None:
    if not _TOOLKIT_ERRORS:
        return None
    try:
        from sagemaker_inference.errors import GenericInferenceToolkitError
    except ImportError:
        return None
    return GenericInferenceToolkitError
