"""Requests to the model: content types, size limits, sniffing, S3 references, errors as HTTP.

Shared by the SageMaker handlers (:mod:`deepfake.serving.handlers`) and the
local server (:mod:`deepfake.serving.server`), so both accept and refuse the
same requests with the same statuses. Accepted types: docs/inference.md.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from typing import Any

import numpy as np

from deepfake.core import paths
from deepfake.core.errors import (
    ConfigError,
    DeepfakeError,
    ForbiddenInputError,
    ImageDecodeError,
    InvalidInputError,
    PayloadTooLargeError,
    UnsupportedContentTypeError,
    VideoDecodeError,
)
from deepfake.core.vocabulary import (
    ACCEPTED_TYPES,
    FORM_TYPE,
    IMAGE_TYPES,
    JSON_TYPE,
    OCTET_STREAM,
    RESPONSE_TYPES,
    VIDEO_TYPES,
)
from deepfake.media.images import decode_image

# SageMaker's real-time InvokeEndpoint payload limit (6 MB); larger videos go through
# {"s3_uri": ...} or an asynchronous endpoint, which raises the limit with DEEPFAKE_MAX_PAYLOAD_BYTES.
MAX_PAYLOAD_BYTES = 6 * 1024 * 1024
MAX_PAYLOAD_ENV = "DEEPFAKE_MAX_PAYLOAD_BYTES"


# An {"s3_uri": ...} request is bounded by what a real-time endpoint scores within SageMaker's 60-second
# invocation limit; an asynchronous endpoint (1 GB, an hour) raises both bounds through its environment.
# Decoding dominates: the whole stream up to the last sampled frame is decoded, about 500 megapixels a
# second on 2 CPU cores (docs/benchmarks.md: 1.23 s for 10 s of 1080p at 30 fps). 18,000 megapixels
# (about 36 s of decoding: 4.8 minutes of 1080p at 30 fps, 11 of 720p) leaves time for the download, the
# face detection and the model. The byte bound keeps a request from downloading what it will refuse.
MAX_S3_BYTES_ENV = "DEEPFAKE_MAX_S3_BYTES"
MAX_S3_BYTES = 128 * 1024 * 1024                 # real time: ~5 min of 1080p at DFDC's ~3 Mbit/s
MAX_DECODE_ENV = "DEEPFAKE_MAX_DECODE_MEGAPIXELS"
MAX_DECODE_MEGAPIXELS = 18_000                   # real time: frames decoded x width x height / 1e6
JSON_KEYS = ("s3_uri",)
# The S3 prefixes an ``s3_uri`` request may name, comma-separated (the stage config's S3InputPrefixes,
# an environment variable of the endpoint's model); unset or empty: the endpoint reads no S3 input, so
# a caller cannot make it fetch objects its role could read elsewhere in the account.
S3_PREFIXES_ENV = "DEEPFAKE_S3_INPUT_PREFIXES"


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


def max_payload_bytes() -> int:
    """The request size limit: ``DEEPFAKE_MAX_PAYLOAD_BYTES`` or SageMaker's real-time 6 MB."""
    return _positive_env(MAX_PAYLOAD_ENV, MAX_PAYLOAD_BYTES, "bytes")


def max_s3_bytes() -> int:
    """The largest S3 video one request downloads: ``DEEPFAKE_MAX_S3_BYTES`` or the real-time bound."""
    return _positive_env(MAX_S3_BYTES_ENV, MAX_S3_BYTES, "bytes")


def max_decode_megapixels() -> float:
    """The most decoding one S3 video may need: ``DEEPFAKE_MAX_DECODE_MEGAPIXELS`` or the real-time bound."""
    return _positive_env(MAX_DECODE_ENV, MAX_DECODE_MEGAPIXELS, "megapixels", kind=float)


def too_slow_for_real_time(what: str, limit_name: str) -> str:
    """The end of a 413 message for a video a real-time request cannot score in time."""
    return (f"more than a real-time request can score within SageMaker's 60-second invocation limit "
            f"({limit_name}); send it to the deployment's asynchronous endpoint (EnableAsyncInference=true, "
            f"videos up to 1 GB), or score {what} with `deepfake score` or the scoring pipeline")


def _positive_env(name: str, default: int, unit: str, kind: type = int) -> Any:
    env = os.environ.get(name, "").strip()
    if not env:
        return default
    try:
        value = kind(env)
    except ValueError:
        value = 0
    if not value > 0:
        raise ConfigError(f"{name}={env!r} must be a positive {'whole ' if kind is int else ''}number of {unit}")
    return value


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
    if kind == FORM_TYPE:               # no type chosen (curl's default for --data-binary): sniffed
        kind = ""
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
    bucket, key = paths.split_s3(uri)
    if not bucket or not key or key.endswith("/"):
        raise InvalidInputError(f"s3_uri {uri!r} must name an object: s3://bucket/path/to/video.mp4")
    check_s3_allowed(uri)
    return S3Request(uri, bucket, key)


def s3_input_prefixes() -> list[str]:
    """The allowed prefixes of ``DEEPFAKE_S3_INPUT_PREFIXES``, each ending in ``/`` (a bucket, or a folder in one)."""
    out = []
    for item in os.environ.get(S3_PREFIXES_ENV, "").split(","):
        item = item.strip()
        if not item:
            continue
        bucket, _ = paths.split_s3(item) if paths.is_s3(item) else ("", "")
        if not bucket:
            raise ConfigError(f"{S3_PREFIXES_ENV} entry {item!r} is not an S3 prefix like s3://bucket/videos/")
        out.append(item if item.endswith("/") else item + "/")
    return out


def check_s3_allowed(uri: str) -> None:
    """Refuse (403) an ``s3_uri`` outside the endpoint's allowed prefixes."""
    allowed = s3_input_prefixes()
    if not allowed:
        raise ForbiddenInputError(
            f"this endpoint reads no S3 input ({S3_PREFIXES_ENV} is empty), so {uri} is refused; send the video "
            "bytes, or name the prefixes it may read in the stage config's S3InputPrefixes")
    if not any(uri.startswith(prefix) for prefix in allowed):
        raise ForbiddenInputError(
            f"{uri} is outside the S3 prefixes this endpoint may read ({', '.join(allowed)}); upload the video under "
            "one of them, or add its prefix to the stage config's S3InputPrefixes")


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


def _preview(value: Any, limit: int = 80) -> str:
    text = json.dumps(value) if not isinstance(value, bytes) else repr(value)
    return text if len(text) <= limit else text[:limit] + "..."
