"""SageMaker inference handlers (``model_fn``, ``input_fn``, ``predict_fn``, ``output_fn``).

The SageMaker PyTorch serving container imports ``code/inference.py`` of the
model archive (a shim re-exporting these, written by :mod:`deepfake.package`),
and ``deepfake serve`` runs the same request parsing, prediction and response
rendering behind its own HTTP server, so a request behaves the same locally
and on an endpoint.

Requests (``docs/inference.md``): video bytes (``video/mp4`` and the other
containers FFmpeg reads), one image (``image/jpeg``, ``image/png``),
``application/octet-stream`` (the type is sniffed from the first bytes), or
``application/json`` ``{"s3_uri": "s3://bucket/key"}`` naming a video too large
for the real-time payload limit. Bad requests raise
:class:`~deepfake.errors.InvalidInputError` subclasses, which carry their HTTP
status. Inside the SageMaker inference toolkit, which answers 500 to any
exception but its own, the handlers re-raise them as the toolkit's
``GenericInferenceToolkitError`` with the same status, so a bad video gets a
4xx on AWS too.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np

from deepfake import paths
from deepfake.errors import (
    ConfigError,
    DeepfakeError,
    ImageDecodeError,
    InvalidInputError,
    PayloadTooLargeError,
    UnsupportedContentTypeError,
    VideoDecodeError,
)
from deepfake.predict import IMAGE_SUFFIXES, Predictor, decode_image

# SageMaker's real-time InvokeEndpoint payload limit (6 MB); larger videos go through
# {"s3_uri": ...} or an asynchronous endpoint, which raises the limit with DEEPFAKE_MAX_PAYLOAD_BYTES.
MAX_PAYLOAD_BYTES = 6 * 1024 * 1024
MAX_PAYLOAD_ENV = "DEEPFAKE_MAX_PAYLOAD_BYTES"
# Largest S3 video an endpoint downloads for one request: 1 GB, SageMaker's asynchronous payload limit.
MAX_S3_VIDEO_BYTES = 1024 * 1024 * 1024

from deepfake.content_types import (  # noqa: E402 - re-exported: the handlers' public constants
    ACCEPTED_TYPES,
    IMAGE_TYPES,
    JSON_TYPE,
    OCTET_STREAM,
    RESPONSE_TYPES,
    VIDEO_TYPES,
)

JSON_KEYS = ("s3_uri",)


@dataclass(frozen=True)
class VideoRequest:
    data: bytes
    suffix: str              # ".mp4", ".mov", ...: the temporary file's suffix for FFmpeg
    content_type: str


@dataclass(frozen=True)
class ImageRequest:
    rgb: np.ndarray
    content_type: str


@dataclass(frozen=True)
class S3Request:
    uri: str
    bucket: str
    key: str


Request = VideoRequest | ImageRequest | S3Request


# -- the SageMaker handlers -------------------------------------------------------------------------

def model_fn(model_dir: str) -> Predictor:
    """Load the model archive's files (extracted by SageMaker into ``model_dir``)."""
    with _toolkit_errors():
        return Predictor.from_path(model_dir or paths.sagemaker_model_dir())


def input_fn(request_body: bytes | bytearray | str, content_type: str | None) -> Request:
    with _toolkit_errors():
        return parse_request(request_body, content_type)


def predict_fn(data: Request, model: Predictor) -> dict[str, Any]:
    with _toolkit_errors():
        return predict(data, model)


def output_fn(prediction: dict[str, Any], accept: str | None) -> tuple[bytes, str]:
    with _toolkit_errors():
        return render_response(prediction, accept)


# -- the work behind them (the local server calls these directly) ----------------------------------

def max_payload_bytes() -> int:
    """The request size limit: ``DEEPFAKE_MAX_PAYLOAD_BYTES`` or SageMaker's real-time 6 MB."""
    env = os.environ.get(MAX_PAYLOAD_ENV, "").strip()
    if not env:
        return MAX_PAYLOAD_BYTES
    if not env.isdigit() or int(env) < 1:
        raise ConfigError(f"{MAX_PAYLOAD_ENV}={env!r} must be a positive number of bytes")
    return int(env)


def media_type(content_type: str | None) -> str:
    """``"Video/MP4; codecs=avc1"`` -> ``"video/mp4"``; empty when not given."""
    return (content_type or "").split(";", 1)[0].strip().lower()


def parse_request(body: bytes | bytearray | memoryview | str, content_type: str | None,
                  max_bytes: int | None = None) -> Request:
    """Check and decode a request body by its content type (sniffed when absent or octet-stream)."""
    data = body.encode("utf-8") if isinstance(body, str) else bytes(body)
    limit = max_payload_bytes() if max_bytes is None else max_bytes
    if len(data) > limit:
        raise PayloadTooLargeError(payload_too_large_message(len(data), limit))
    kind = media_type(content_type)
    if kind and kind not in ACCEPTED_TYPES:
        raise UnsupportedContentTypeError(
            f"content type {kind!r} is not supported; send one of {', '.join(ACCEPTED_TYPES)}")
    if not data:
        raise InvalidInputError(f"the request body is empty (content type {kind or 'not given'}); "
                                "send the video or image bytes, or JSON {\"s3_uri\": \"s3://bucket/key\"}")
    if not kind or kind == OCTET_STREAM:
        kind = sniff(data)
    if kind in VIDEO_TYPES:
        return VideoRequest(data, VIDEO_TYPES[kind], kind)
    if kind in IMAGE_TYPES:
        try:
            return ImageRequest(decode_image(data, f"the {kind} body"), kind)
        except ImageDecodeError as exc:
            raise InvalidInputError(str(exc)) from None
    return parse_json_request(data)


def sniff(data: bytes) -> str:
    """The content type of a body sent without one, from its first bytes."""
    head = data[:16]
    if head.startswith(b"\xff\xd8\xff"):
        return "image/jpeg"
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return "image/png"
    if head[4:8] == b"ftyp":
        return "video/quicktime" if head[8:12] == b"qt  " else "video/mp4"
    if head.startswith(b"RIFF") and head[8:12] == b"AVI ":
        return "video/x-msvideo"
    if head.startswith(b"\x1a\x45\xdf\xa3"):
        return "video/x-matroska"
    if head.startswith(b"\x00\x00\x01\xba"):
        return "video/mpeg"
    if head.lstrip()[:1] == b"{":
        return JSON_TYPE
    raise UnsupportedContentTypeError(
        f"the body ({len(data)} bytes, starting {head[:8].hex()}) is not a recognisable MP4, MOV, AVI, MKV/WebM, "
        f"MPEG, JPEG or PNG file; set its Content-Type to one of {', '.join(ACCEPTED_TYPES)}")


def parse_json_request(data: bytes) -> S3Request:
    """``{"s3_uri": "s3://bucket/key"}``: a video (or image, by its suffix) in S3."""
    try:
        doc = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InvalidInputError(f"the application/json body is not valid JSON: {exc}") from None
    if not isinstance(doc, dict) or "s3_uri" not in doc:
        raise InvalidInputError(
            'the application/json body must be an object {"s3_uri": "s3://bucket/key"} naming a video in S3; '
            f"got {_preview(doc)}")
    unknown = sorted(set(doc) - set(JSON_KEYS))
    if unknown:
        raise InvalidInputError(f"unknown key(s) {', '.join(unknown)} in the JSON request; known keys: "
                                f"{', '.join(JSON_KEYS)}")
    uri = doc["s3_uri"]
    if not isinstance(uri, str) or not paths.is_s3(uri):
        raise InvalidInputError(f"s3_uri must be a string like 's3://bucket/key'; got {_preview(uri)}")
    bucket, _, key = uri[len("s3://"):].partition("/")
    if not bucket or not key or key.endswith("/"):
        raise InvalidInputError(f"s3_uri {uri!r} must name an object: s3://bucket/path/to/video.mp4")
    return S3Request(uri, bucket, key)


def predict(request: Request, predictor: Predictor) -> dict[str, Any]:
    """Score a parsed request; a video or image that cannot be decoded raises InvalidInputError (400)."""
    try:
        if isinstance(request, VideoRequest):
            return predictor.predict_video(request.data, suffix=request.suffix)
        if isinstance(request, ImageRequest):
            return predictor.predict_image(request.rgb)
        if isinstance(request, S3Request):
            return _predict_s3(request, predictor)
    except (VideoDecodeError, ImageDecodeError) as exc:
        raise InvalidInputError(str(exc)) from exc
    raise InvalidInputError(f"cannot score a {type(request).__name__}; parse the body with input_fn first")


def check_accept(accept: str | None) -> str:
    """The response type for an ``Accept`` header: JSON, or a 406 error naming what is offered."""
    offers = [media_type(part) for part in (accept or "").split(",") if media_type(part)]
    if not offers or any(o in (JSON_TYPE, "application/*", "*/*") for o in offers):
        return JSON_TYPE
    err = UnsupportedContentTypeError(
        f"cannot answer with {accept!r}: responses are {', '.join(RESPONSE_TYPES)}; set Accept to application/json")
    err.status = 406  # Not Acceptable: the response type asked for, not the body, is unsupported
    raise err


def render_response(prediction: dict[str, Any], accept: str | None) -> tuple[bytes, str]:
    content_type = check_accept(accept)
    return json.dumps(prediction, allow_nan=False).encode("utf-8"), content_type


def http_status(exc: BaseException) -> int:
    """The HTTP status for an error: its own for bad input, 400 for undecodable media, else 500."""
    if isinstance(exc, InvalidInputError):
        return int(exc.status)
    if isinstance(exc, (VideoDecodeError, ImageDecodeError)):
        return 400
    return 500


def error_body(exc: BaseException, status: int | None = None) -> dict[str, Any]:
    """The JSON an error is answered with (``docs/inference.md``)."""
    code = http_status(exc) if status is None else status
    message = str(exc) if isinstance(exc, DeepfakeError) else "internal error; see the server log"
    return {"error": type(exc).__name__ if isinstance(exc, DeepfakeError) else "InternalError",
            "message": message, "status": code}


def payload_too_large_message(size: int, limit: int) -> str:
    return (f"the request body is {size} bytes, above the {limit}-byte limit of a real-time request; "
            'upload the video to S3 and send JSON {"s3_uri": "s3://bucket/key"}, or use an asynchronous endpoint')


# -- internals --------------------------------------------------------------------------------------

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
        if size > MAX_S3_VIDEO_BYTES:
            raise PayloadTooLargeError(
                f"{request.uri} is {size} bytes, above the {MAX_S3_VIDEO_BYTES}-byte limit for one video")
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


def _preview(value: Any, limit: int = 80) -> str:
    text = json.dumps(value) if not isinstance(value, bytes) else repr(value)
    return text if len(text) <= limit else text[:limit] + "..."


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
