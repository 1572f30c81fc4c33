"""`deepfake serve`: real gunicorn over real HTTP, the SageMaker Runtime client, bad input, one score everywhere."""

from __future__ import annotations

import json
import shutil
import subprocess
import threading
import wsgiref.simple_server
from concurrent.futures import ThreadPoolExecutor

import boto3
import cv2
import pytest
import requests
from botocore.config import Config
from botocore.exceptions import ClientError
from serving_support import make_model, serve

from deepfake.serving.capture import parse_record
from deepfake.serving.packaging import package_model
from deepfake.serving.predictor import Predictor
from deepfake.serving.server import make_app


@pytest.fixture(scope="module")
def archive(tmp_path_factory):
    work = tmp_path_factory.mktemp("serve")
    return package_model(make_model(work / "model"), work / "model.tar.gz")


@pytest.fixture(scope="module")
def predictor(archive):
    return Predictor.from_path(archive)


@pytest.fixture(scope="module")
def face_result(predictor, face_clip):
    return predictor.predict_video(face_clip)


@pytest.fixture(scope="module")
def capture_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("capture")


@pytest.fixture(scope="module")
def server(archive, tmp_path_factory, capture_dir):
    """`deepfake serve` with two gunicorn workers, capturing every request; the log is kept for failures."""
    log = tmp_path_factory.mktemp("serve-log") / "serve.log"
    with serve(archive, workers=2, log=log, args=("--capture", str(capture_dir), "--endpoint-name", "ep")) as url:
        yield url


def runtime_client(url):
    return boto3.client("sagemaker-runtime", endpoint_url=url, region_name="us-east-1",
                        aws_access_key_id="testing", aws_secret_access_key="testing",
                        config=Config(retries={"max_attempts": 1}, read_timeout=60))


def test_app_runs_under_wsgiref(predictor):
    """make_app is a plain WSGI callable (no model call here: routing only)."""
    httpd = wsgiref.simple_server.make_server("127.0.0.1", 0, make_app(predictor),
                                              handler_class=_QuietHandler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{httpd.server_port}"
        ping = requests.get(f"{url}/ping", timeout=10)
        assert ping.status_code == 200 and ping.json()["model_version"] == predictor.version
        assert requests.get(f"{url}/nowhere", timeout=10).status_code == 404
        assert requests.get(f"{url}/invocations", timeout=10).status_code == 405
        reply = requests.post(f"{url}/invocations", data=b"a,b", headers={"Content-Type": "text/csv"}, timeout=10)
        assert reply.status_code == 415 and reply.json()["error"] == "UnsupportedContentTypeError"
    finally:
        httpd.shutdown()
        httpd.server_close()


@pytest.mark.skipif(shutil.which("curl") is None, reason="no curl")
def test_curl_as_the_readme_writes_it_and_without_a_content_type(predictor, face_clip, face_result):
    """README's curl line, and the same without -H: curl then sends application/x-www-form-urlencoded, which is
    sniffed like a missing type (docs/inference.md), not refused with 415."""
    httpd = wsgiref.simple_server.make_server("127.0.0.1", 0, make_app(predictor), handler_class=_QuietHandler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        url = f"localhost:{httpd.server_port}/invocations"
        for headers in (["-H", "Content-Type: video/mp4"], []):
            out = subprocess.run(["curl", "-s", *headers, "--data-binary", f"@{face_clip}", url],
                                 capture_output=True, text=True, timeout=120, check=True).stdout
            answer = json.loads(out)
            assert answer.pop("latency_ms") > 0 and answer == face_result, headers
    finally:
        httpd.shutdown()
        httpd.server_close()


class _QuietHandler(wsgiref.simple_server.WSGIRequestHandler):
    def log_message(self, *args):
        pass


@pytest.mark.slow
def test_ping_and_a_video(server, face_clip, face_result):
    ping = requests.get(f"{server}/ping", timeout=10)
    assert ping.status_code == 200 and ping.json()["model_version"] == face_result["model_version"]
    reply = requests.post(f"{server}/invocations", data=face_clip.read_bytes(),
                          headers={"Content-Type": "video/mp4", "Accept": "application/json"}, timeout=60)
    assert reply.status_code == 200 and reply.headers["Content-Type"] == "application/json"
    answer = reply.json()
    assert answer.pop("latency_ms") > 0 and answer == face_result


@pytest.mark.slow
def test_concurrent_requests(server, face_clip, no_face_clip, face_photos, face_result):
    """Videos, an image, a no-face video and pings at once over two workers: every answer right."""
    photo = cv2.imencode(".png", cv2.cvtColor(face_photos[-1][1], cv2.COLOR_RGB2BGR))[1].tobytes()
    jobs = [("video/mp4", face_clip.read_bytes())] * 4 + [("image/png", photo), ("video/mp4", no_face_clip.read_bytes())]

    def post(job):
        kind, body = job
        return requests.post(f"{server}/invocations", data=body, headers={"Content-Type": kind}, timeout=120)

    def ping(_):
        return requests.get(f"{server}/ping", timeout=30)

    with ThreadPoolExecutor(max_workers=6) as pool:
        posted = pool.map(post, jobs)
        pings = pool.map(ping, range(6))
        replies, pinged = list(posted), list(pings)
    assert [r.status_code for r in replies + pinged] == [200] * (len(jobs) + 6)
    videos = [r.json() for r in replies[:4]]
    assert all(v["p_fake"] == face_result["p_fake"] for v in videos)
    assert replies[4].json()["media"]["kind"] == "image" and replies[4].json()["status"] == "ok"
    assert replies[5].json()["status"] == "no_face" and replies[5].json()["p_fake"] is None


BAD_REQUESTS = [
    ("unsupported type", {"Content-Type": "text/csv"}, b"a,b\n1,2\n", 415),
    ("too large", {"Content-Type": "video/mp4"}, b"\x00" * (6 * 1024 * 1024 + 1), 413),
    ("undecodable video", {"Content-Type": "video/mp4"}, b"\x00\x00\x00\x18ftypmp42" + b"\x01" * 4000, 400),
    ("text as video", {"Content-Type": "video/quicktime"}, b"this is a text file, not a video\n" * 20, 400),
    ("empty body", {"Content-Type": "video/mp4"}, b"", 400),
    ("bad JSON", {"Content-Type": "application/json"}, b'{"s3_uri": ', 400),
    ("JSON without s3_uri", {"Content-Type": "application/json"}, b'{"video": "x.mp4"}', 400),
    ("broken image", {"Content-Type": "image/jpeg"}, b"\xff\xd8\xff\xe0 truncated", 400),
    ("unknown bytes", {"Content-Type": "application/octet-stream"}, b"MZ\x90\x00 an executable", 415),
    ("unacceptable Accept", {"Content-Type": "video/mp4", "Accept": "text/csv"}, b"\x00" * 10, 406),
]


@pytest.mark.slow
@pytest.mark.parametrize(("case", "headers", "body", "status"), BAD_REQUESTS, ids=[c[0] for c in BAD_REQUESTS])
def test_bad_input_gets_a_4xx_and_the_server_keeps_serving(server, face_clip, face_result, case, headers, body,
                                                           status):
    reply = requests.post(f"{server}/invocations", data=body, headers=headers, timeout=60)
    assert reply.status_code == status, reply.text
    doc = reply.json()
    assert doc["status"] == status and doc["message"] and doc["error"]
    assert requests.get(f"{server}/ping", timeout=10).status_code == 200
    good = requests.post(f"{server}/invocations", data=face_clip.read_bytes(),
                         headers={"Content-Type": "video/mp4"}, timeout=60)
    assert good.status_code == 200 and good.json()["p_fake"] == face_result["p_fake"]


@pytest.mark.slow
def test_chunked_upload_and_routes(server, face_clip, face_result):
    def chunks():
        data = face_clip.read_bytes()
        for i in range(0, len(data), 4096):
            yield data[i:i + 4096]

    reply = requests.post(f"{server}/invocations", data=chunks(), headers={"Content-Type": "video/mp4"}, timeout=60)
    assert reply.status_code == 200 and reply.json()["p_fake"] == face_result["p_fake"]
    too_big = (b"\x00" * 1024 * 1024 for _ in range(7))
    assert requests.post(f"{server}/invocations", data=too_big, headers={"Content-Type": "video/mp4"},
                         timeout=60).status_code == 413
    assert requests.get(f"{server}/invocations", timeout=10).status_code == 405
    assert requests.post(f"{server}/predict", data=b"x", timeout=10).status_code == 404
    params = requests.get(f"{server}/execution-parameters", timeout=10).json()
    assert params["MaxPayloadInMB"] == 6 and params["BatchStrategy"] == "SINGLE_RECORD"


@pytest.mark.slow
def test_the_real_sagemaker_runtime_client(server, face_clip, face_result):
    client = runtime_client(server)
    reply = client.invoke_endpoint(EndpointName="deepfake-staging", Body=face_clip.read_bytes(),
                                   ContentType="video/mp4", Accept="application/json")
    assert reply["ContentType"] == "application/json" and reply["InvokedProductionVariant"] == "AllTraffic"
    answer = json.loads(reply["Body"].read())
    assert answer.pop("latency_ms") > 0 and answer == face_result
    with pytest.raises(ClientError) as info:
        client.invoke_endpoint(EndpointName="deepfake-staging", Body=b"a,b", ContentType="text/csv")
    error = info.value.response
    assert error["Error"]["Code"] == "ModelError" and error["ResponseMetadata"]["HTTPStatusCode"] == 424
    assert error["OriginalStatusCode"] == 415 and "text/csv" in error["OriginalMessage"]


def test_every_worker_captures_its_requests(server, capture_dir, face_clip, no_face_clip, face_result):
    """`deepfake serve --capture`: both gunicorn workers append to files of their own in SageMaker's layout,
    and each record holds the bytes sent, the caller's InferenceId and the answer."""
    client = runtime_client(server)
    clips = {f"capture-{i}": (face_clip if i % 2 else no_face_clip).read_bytes() for i in range(8)}
    with ThreadPoolExecutor(4) as pool:
        replies = dict(zip(clips, pool.map(
            lambda item: json.loads(client.invoke_endpoint(EndpointName="ep", Body=item[1], ContentType="video/mp4",
                                                           InferenceId=item[0])["Body"].read()),
            clips.items()), strict=True))
    events = {}
    for path in (capture_dir / "ep" / "AllTraffic").rglob("*.jsonl"):
        for n, line in enumerate(path.read_text().splitlines(), 1):
            event = parse_record(line, f"{path}:{n}")
            events[event.inference_id] = event
    assert set(clips) <= set(events)
    for inference_id, body in clips.items():
        assert events[inference_id].input == body and events[inference_id].output_json() == replies[inference_id]
    assert replies["capture-1"]["p_fake"] == face_result["p_fake"] and replies["capture-0"]["status"] == "no_face"
