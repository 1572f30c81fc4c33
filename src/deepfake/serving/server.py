"""``deepfake serve``: the model behind gunicorn, on the SageMaker container contract.

Routes:

- ``GET /ping``: 200 once the model is loaded (it is loaded before the port opens);
- ``POST /invocations``: the container contract; the body is parsed, scored
  and answered by the same functions as the SageMaker handlers
  (:mod:`deepfake.serving.handlers`); bad input gets its 4xx and a JSON message;
- ``POST /endpoints/<name>/invocations``: the path the SageMaker Runtime API
  uses, so ``boto3.client("sagemaker-runtime", endpoint_url=...)`` can call this
  server; like SageMaker, it answers a model's 4xx/5xx as a ``ModelError``
  (HTTP 424) carrying ``OriginalStatusCode`` and ``OriginalMessage``;
- ``POST /endpoints/<name>/async-invocations`` (with ``--async-output``): the
  Runtime API's ``InvokeEndpointAsync``, for testing an asynchronous deployment
  here: the input is read from the S3 ``InputLocation``, scored like an
  invocation, and the answer written to ``<output>/<inference id>.out`` (an
  error's to ``<failure path>/<inference id>-error.out``) before the 202 reply,
  where SageMaker queues the request and answers at once;
- ``GET /execution-parameters``: what SageMaker batch transform asks a container.

With a :class:`~deepfake.serving.capture.CaptureWriter` (``deepfake serve --capture DIR``)
every sampled invocation, errors included, is appended to DIR in SageMaker's data
capture layout (:mod:`deepfake.serving.capture`): what the container received and
what it answered (before the Runtime API's ``ModelError`` wrapping), with the
caller's ``X-Amzn-SageMaker-Inference-Id`` as ``inferenceId``.

The model is loaded once in the gunicorn master and shared by the forked
workers (copy on write); a model on a GPU is loaded by each worker instead
(CUDA does not survive a fork; one worker per GPU is the usual set-up). Workers are ``gthread``: a few threads each, so
``/ping`` is answered while a long video is being scored. Every error a
request can cause is answered; a worker never dies of bad input.
"""

from __future__ import annotations

import json
import logging
import re
import time
import uuid
from collections.abc import Callable, Iterable
from datetime import datetime, timezone
from typing import Any

from deepfake.core import paths
from deepfake.core.errors import ConfigError, DeepfakeError, InvalidInputError, PayloadTooLargeError
from deepfake.core.vocabulary import JSON_TYPE
from deepfake.serving.capture import INFERENCE_ID_HEADER, VARIANT_NAME, CaptureWriter
from deepfake.serving.handlers import predict
from deepfake.serving.predictor import Predictor
from deepfake.serving.requests import (
    check_accept,
    error_body,
    http_status,
    max_payload_bytes,
    parse_request,
    payload_too_large_message,
    render_response,
)

log = logging.getLogger("deepfake.serving.server")
THREADS_PER_WORKER = 4         # concurrent requests per worker: /ping stays answered during a long video
GRACEFUL_TIMEOUT_S = 30        # seconds a stopping worker gets to finish its requests
KEEPALIVE_S = 5                # seconds an idle keep-alive connection stays open
READ_CHUNK = 1 << 20           # bytes read from the request body at a time


# An oversized body is read and dropped up to this size, so the client, still sending, gets its 413
# instead of a reset connection; a larger one is left to the server to discard.
DRAIN_LIMIT = 256 * 1024 * 1024
INFERENCE_ID_ENVIRON = "HTTP_" + INFERENCE_ID_HEADER.upper().replace("-", "_")   # the header in WSGI's environ
_ENDPOINT_PATH = re.compile(r"^/endpoints/([^/]+)/invocations$")
_ASYNC_PATH = re.compile(r"^/endpoints/([^/]+)/async-invocations$")
_REASONS = {200: "OK", 202: "Accepted", 400: "Bad Request", 404: "Not Found", 405: "Method Not Allowed", 406: "Not Acceptable",
            411: "Length Required", 413: "Payload Too Large", 415: "Unsupported Media Type",
            424: "Failed Dependency", 500: "Internal Server Error"}


StartResponse = Callable[..., Any]


class InferenceApp:
    """The WSGI application (also runs under ``wsgiref`` or any WSGI server)."""

    def __init__(self, predictor: Predictor, *, max_payload: int | None = None,
                 capture: CaptureWriter | None = None, async_output: str | None = None,
                 async_failure: str | None = None) -> None:
        self.predictor = predictor
        self.max_payload = max_payload_bytes() if max_payload is None else int(max_payload)
        self.capture = capture
        self.async_output = async_output.rstrip("/") if async_output else None
        self.async_failure = (async_failure or f"{self.async_output}/failures").rstrip("/") if async_output else None

    def __call__(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        method = environ.get("REQUEST_METHOD", "GET").upper()
        path = environ.get("PATH_INFO", "") or "/"
        if path == "/ping":
            if method not in ("GET", "HEAD"):
                return self._method_not_allowed(start_response, "GET")
            return _json(start_response, 200, {"status": "ok", **self.predictor.describe()})
        if path == "/execution-parameters":
            if method != "GET":
                return self._method_not_allowed(start_response, "GET")
            return _json(start_response, 200, {"MaxConcurrentTransforms": THREADS_PER_WORKER,
                                               "BatchStrategy": "SINGLE_RECORD",
                                               "MaxPayloadInMB": max(1, self.max_payload // (1024 * 1024))})
        endpoint = _ENDPOINT_PATH.match(path)
        if path == "/invocations" or endpoint:
            if method != "POST":
                return self._method_not_allowed(start_response, "POST")
            status, headers, body = self.invoke(environ)
            if endpoint:
                status, headers, body = _as_runtime_response(status, headers, body)
            start_response(_status_line(status), headers)
            return [body]
        if _ASYNC_PATH.match(path) and self.async_output:
            if method != "POST":
                return self._method_not_allowed(start_response, "POST")
            return self.invoke_async(environ, start_response)
        return _json(start_response, 404, {
            "error": "NotFound", "status": 404,
            "message": f"no route {method} {path}; routes: GET /ping, POST /invocations, "
                       "POST /endpoints/<name>/invocations, GET /execution-parameters"
                       + (", POST /endpoints/<name>/async-invocations" if self.async_output else "")})

    def invoke(self, environ: dict[str, Any], s3_input: str | None = None) -> tuple[int, list[tuple[str, str]], bytes]:
        """One invocation: ``(status, headers, body)``, never an exception. An asynchronous one (``s3_input``)
        reads its body from S3 and its content type and Accept from the Runtime API's headers."""
        started = time.perf_counter()
        received = datetime.now(timezone.utc)
        if s3_input is None:
            content_type, accept = environ.get("CONTENT_TYPE") or None, environ.get("HTTP_ACCEPT")
        else:
            content_type = environ.get("HTTP_X_AMZN_SAGEMAKER_CONTENT_TYPE") or None
            accept = environ.get("HTTP_X_AMZN_SAGEMAKER_ACCEPT")
        body: bytes | None = None
        try:
            # first: a client still sending gets its answer, not a reset
            body = self._read_body(environ) if s3_input is None else _read_s3(s3_input)
            check_accept(accept)
            request = parse_request(body, content_type, self.max_payload)
            prediction = predict(request, self.predictor)
            payload, response_type = render_response(prediction, accept)
            status = 200
        except DeepfakeError as exc:
            status = http_status(exc)
            log.warning("invocation answered %d %s: %s", status, type(exc).__name__, exc)
            payload, response_type = _dumps(error_body(exc, status)), JSON_TYPE
        except Exception as exc:  # a bug must cost one request, never the worker
            status = 500
            log.exception("invocation failed with an unexpected error")
            payload, response_type = _dumps(error_body(exc, status)), JSON_TYPE
        headers = [("Content-Type", response_type), ("Content-Length", str(len(payload))),
                   ("X-Deepfake-Model-Version", self.predictor.version),
                   ("X-Deepfake-Latency-Ms", f"{1000 * (time.perf_counter() - started):.1f}")]
        self._capture(environ, received, body, content_type, payload, response_type)
        return status, headers, payload

    def invoke_async(self, environ: dict[str, Any], start_response: StartResponse) -> list[bytes]:
        """InvokeEndpointAsync: score the S3 input now, write the answer where SageMaker would, reply 202."""
        inference_id = environ.get(INFERENCE_ID_ENVIRON) or str(uuid.uuid4())
        source = environ.get("HTTP_X_AMZN_SAGEMAKER_INPUTLOCATION", "")
        if not paths.is_s3(source):
            return _json(start_response, 400, {"error": "ValidationError", "status": 400,
                                               "message": f"InputLocation {source!r} must be an s3:// URI"})
        output = f"{self.async_output}/{inference_id}.out"
        failure = f"{self.async_failure}/{inference_id}-error.out"
        status, headers, payload = self.invoke(environ, s3_input=source)
        content_type = next(v for k, v in headers if k == "Content-Type")
        try:
            _write_s3(output if status == 200 else failure, payload, content_type)
        except DeepfakeError as exc:
            return _json(start_response, 500, error_body(exc, 500))
        return _json(start_response, 202, {"InferenceId": inference_id, "OutputLocation": output,
                                           "FailureLocation": failure},
                     [("X-Amzn-SageMaker-OutputLocation", output), ("X-Amzn-SageMaker-FailureLocation", failure)])

    def _capture(self, environ: dict[str, Any], received: datetime, body: bytes | None, content_type: str | None,
                 payload: bytes, response_type: str) -> None:
        """Record the invocation in SageMaker's capture layout; a capture that fails costs a log line only."""
        writer = self.capture
        if writer is None:
            return
        try:
            writer.capture(output=payload, output_type=response_type, when=received, input=body,
                           input_type=content_type, inference_id=environ.get(INFERENCE_ID_ENVIRON) or None)
        except OSError as exc:
            log.error("data capture failed, the request was answered: %s", exc)

    def _read_body(self, environ: dict[str, Any]) -> bytes:
        """The body, or PayloadTooLargeError after reading and dropping it (up to ``DRAIN_LIMIT``)."""
        stream = environ["wsgi.input"]
        length_text = environ.get("CONTENT_LENGTH") or ""
        if length_text:
            try:
                length = int(length_text)
            except ValueError:
                raise InvalidInputError(f"Content-Length {length_text!r} is not a number of bytes") from None
            if length > self.max_payload:
                if length <= DRAIN_LIMIT:
                    _drain(stream, length)
                raise PayloadTooLargeError(payload_too_large_message(length, self.max_payload))
            return _read(stream, length)
        # No Content-Length: chunked transfer; read until the end, or one byte past the limit.
        chunks, size = [], 0
        while True:
            chunk = stream.read(READ_CHUNK)
            if not chunk:
                return b"".join(chunks)
            chunks.append(chunk)
            size += len(chunk)
            if size > self.max_payload:
                raise PayloadTooLargeError(payload_too_large_message(size, self.max_payload))

    @staticmethod
    def _method_not_allowed(start_response: StartResponse, allow: str) -> list[bytes]:
        return _json(start_response, 405, {"error": "MethodNotAllowed", "status": 405,
                                           "message": f"use {allow} on this path"}, [("Allow", allow)])


def make_app(predictor: Predictor, *, max_payload: int | None = None, capture: CaptureWriter | None = None,
             async_output: str | None = None, async_failure: str | None = None) -> InferenceApp:
    """The WSGI callable serving ``predictor`` (capturing its traffic with ``capture``; ``async_output``: the S3
    prefix of asynchronous answers)."""
    return InferenceApp(predictor, max_payload=max_payload, capture=capture, async_output=async_output,
                        async_failure=async_failure)


def run_server(app: InferenceApp | Callable[[], InferenceApp], *, host: str = "127.0.0.1", port: int = 8080,
               workers: int = 1, timeout: int = 120) -> None:
    """Serve ``app`` with gunicorn until SIGTERM/SIGINT (blocks; exits the process at the end).

    ``app``: the app, loaded in the master and shared by the forked workers; or a function that builds
    it, called in each worker after the fork (a model on a GPU: CUDA does not survive a fork).
    """
    from gunicorn.app.base import BaseApplication

    if workers < 1:
        raise ConfigError(f"workers={workers} must be at least 1")
    if not 0 < port < 65536:
        raise ConfigError(f"port={port} must be between 1 and 65535")
    if timeout < 1:
        raise ConfigError(f"timeout={timeout} must be at least 1 second")
    options = {
        "bind": f"[{host}]:{port}" if ":" in host else f"{host}:{port}",
        "workers": workers,
        "worker_class": "gthread",
        "threads": THREADS_PER_WORKER,
        "timeout": timeout,
        "graceful_timeout": GRACEFUL_TIMEOUT_S,
        "keepalive": KEEPALIVE_S,
        "preload_app": isinstance(app, InferenceApp),
        "proc_name": "deepfake-serve",
        "accesslog": "-",
        "errorlog": "-",
        "loglevel": "info",
    }

    class _Gunicorn(BaseApplication):
        def load_config(self) -> None:
            for key, value in options.items():
                self.cfg.set(key, value)
            if "control_socket_disable" in self.cfg.settings:  # newer gunicorn: no control socket in ~/.gunicorn
                self.cfg.set("control_socket_disable", True)

        def load(self) -> InferenceApp:
            return app if isinstance(app, InferenceApp) else app()

    _Gunicorn().run()


def _as_runtime_response(status: int, headers: list[tuple[str, str]], body: bytes
                         ) -> tuple[int, list[tuple[str, str]], bytes]:
    """What the SageMaker Runtime API answers for a container's response."""
    if status == 200:
        return status, [*headers, ("x-Amzn-Invoked-Production-Variant", VARIANT_NAME)], body
    original = body.decode("utf-8", errors="replace")
    error = {
        "message": f'Received {"client" if status < 500 else "server"} error ({status}) from primary with '
                   f'message "{original}".',
        "OriginalStatusCode": status,
        "OriginalMessage": original,
    }
    payload = _dumps(error)
    keep = [(k, v) for k, v in headers if k.lower() not in ("content-type", "content-length")]
    return 424, [("Content-Type", JSON_TYPE), ("Content-Length", str(len(payload))),
                 ("x-amzn-ErrorType", "ModelError"), *keep], payload


def _read_s3(uri: str) -> bytes:
    """An asynchronous request's input (SageMaker reads it with the endpoint's role)."""
    import boto3
    from botocore.exceptions import BotoCoreError, ClientError

    bucket, key = paths.split_s3(uri)
    try:
        return bytes(boto3.client("s3").get_object(Bucket=bucket, Key=key)["Body"].read())
    except (BotoCoreError, ClientError) as exc:
        raise InvalidInputError(f"cannot read the asynchronous request's input {uri}: {exc}") from None


def _write_s3(uri: str, payload: bytes, content_type: str) -> None:
    import boto3
    from botocore.exceptions import BotoCoreError, ClientError

    bucket, key = paths.split_s3(uri)
    try:
        boto3.client("s3").put_object(Bucket=bucket, Key=key, Body=payload, ContentType=content_type)
    except (BotoCoreError, ClientError) as exc:
        raise ConfigError(f"cannot write the asynchronous answer to {uri}: {exc}") from None


def _json(start_response: StartResponse, status: int, doc: dict[str, Any],
          extra: list[tuple[str, str]] | None = None) -> list[bytes]:
    payload = _dumps(doc)
    start_response(_status_line(status), [("Content-Type", JSON_TYPE), ("Content-Length", str(len(payload))),
                                          *(extra or [])])
    return [payload]


def _dumps(doc: dict[str, Any]) -> bytes:
    return json.dumps(doc).encode("utf-8")


def _status_line(status: int) -> str:
    return f"{status} {_REASONS.get(status, 'Error')}"


def _read(stream: Any, length: int) -> bytes:
    chunks, left = [], length
    while left > 0:
        chunk = stream.read(min(READ_CHUNK, left))
        if not chunk:
            break
        chunks.append(chunk)
        left -= len(chunk)
    return b"".join(chunks)


def _drain(stream: Any, length: int) -> None:
    left = length
    while left > 0:
        chunk = stream.read(min(READ_CHUNK, left))
        if not chunk:
            return
        left -= len(chunk)
