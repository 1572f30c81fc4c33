"""Sending videos to an endpoint, each with an ``InferenceId``: ``deepfake invoke``.

Traffic with ids is what makes monitoring's ground truth joinable: the id the
caller sends is the capture's ``inferenceId`` (docs/monitoring.md). A local
``deepfake serve`` is called over HTTP (``/invocations`` with the
``X-Amzn-SageMaker-Inference-Id`` header SageMaker's runtime sends); a SageMaker
endpoint through boto3's ``sagemaker-runtime`` ``InvokeEndpoint(InferenceId=...)``.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from dataclasses import dataclass
from typing import Any

from deepfake.core.errors import ConfigError, DeepfakeError
from deepfake.core.vocabulary import JSON_TYPE
from deepfake.serving.capture import INFERENCE_ID_HEADER

TIMEOUT_S = 300                     # one video's answer, on a busy CPU endpoint


@dataclass(frozen=True)
class Target:
    """Where requests go: ``url`` of a ``deepfake serve``, or the ``endpoint`` name of a SageMaker endpoint."""

    url: str | None = None
    endpoint: str | None = None

    def __post_init__(self) -> None:
        if bool(self.url) == bool(self.endpoint):
            raise ConfigError("give either the URL of a deepfake serve (--url) or a SageMaker endpoint name "
                              "(--endpoint), not both or neither")


def invoke(target: Target, body: bytes, content_type: str, inference_id: str | None = None) -> tuple[int, Any]:
    """One request: ``(HTTP status, the JSON answer)``; an error answer is returned, not raised."""
    if target.url:
        return _http(target.url, body, content_type, inference_id)
    return _sagemaker(str(target.endpoint), body, content_type, inference_id)


def _http(url: str, body: bytes, content_type: str, inference_id: str | None) -> tuple[int, Any]:
    headers = {"Content-Type": content_type, "Accept": JSON_TYPE}
    if inference_id:
        headers[INFERENCE_ID_HEADER] = inference_id
    request = urllib.request.Request(f"{url.rstrip('/')}/invocations", data=body, headers=headers, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=TIMEOUT_S) as reply:
            return reply.status, json.loads(reply.read().decode("utf-8"))
    except urllib.error.HTTPError as exc:
        return exc.code, _json_or_text(exc.read())
    except (urllib.error.URLError, OSError) as exc:
        raise DeepfakeError(f"cannot reach {url}: {exc}; is `deepfake serve` running there?") from None


def _sagemaker(endpoint: str, body: bytes, content_type: str, inference_id: str | None) -> tuple[int, Any]:
    try:
        import boto3
        from botocore.exceptions import ClientError
    except ImportError as exc:
        raise ConfigError("calling a SageMaker endpoint needs boto3 (pip install boto3)") from exc
    kwargs = {"InferenceId": inference_id} if inference_id else {}
    try:
        reply = boto3.client("sagemaker-runtime").invoke_endpoint(
            EndpointName=endpoint, Body=body, ContentType=content_type, Accept=JSON_TYPE, **kwargs)
    except ClientError as exc:
        response = exc.response
        status = int(response.get("OriginalStatusCode") or response["ResponseMetadata"].get("HTTPStatusCode", 500))
        return status, _json_or_text(str(response.get("OriginalMessage") or response.get("Error", {}).get("Message", "")))
    return 200, json.loads(reply["Body"].read().decode("utf-8"))


def _json_or_text(data: bytes | str) -> Any:
    text = data.decode("utf-8", errors="replace") if isinstance(data, bytes) else data
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return {"error": "Unreadable", "message": text}
