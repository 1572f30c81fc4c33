"""SageMaker data capture: records in SageMaker's own layout read back, the kit's writer, the server capturing."""

from __future__ import annotations

import base64
import json
import random
import re
import threading
import wsgiref.simple_server
from datetime import datetime, timezone

import pytest
import requests

from deepfake.core.errors import ConfigError, MonitoringError
from deepfake.serving.capture import (
    INFERENCE_ID_HEADER,
    CaptureSettings,
    CaptureWriter,
    capture_record,
    hour_of_path,
    hours_between,
    parse_record,
    parse_time,
)
from deepfake.serving.server import make_app

# Records as SageMaker writes them (the shapes of the examples in AWS's documentation and of a capture
# quoted in sagemaker-python-sdk issue 2629): a CSV request, a JSON request whose response was base64
# (its content type was not among the JSON content types) with the caller's inferenceId, and an image
# request (base64) with a JSON response. Keys, order and encodings are SageMaker's.
SAGEMAKER_LINES = [
    '{"captureData":{"endpointInput":{"observedContentType":"text/csv","mode":"INPUT","data":"69,0,153.7,109\\n",'
    '"encoding":"CSV"},"endpointOutput":{"observedContentType":"text/csv; charset=utf-8","mode":"OUTPUT",'
    '"data":"0.0254181120544672","encoding":"CSV"}},"eventMetadata":{"eventId":"aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee",'
    '"inferenceTime":"2022-02-14T17:25:49Z"},"eventVersion":"0"}',
    '{"captureData":{"endpointInput":{"observedContentType":"application/json","mode":"INPUT",'
    '"data":"{\\"longitude\\": [-122.44], \\"latitude\\": [37.8]}","encoding":"JSON"},"endpointOutput":'
    '{"observedContentType":"text/html; charset=utf-8","mode":"OUTPUT",'
    '"data":"eyJtZWRpYW5faG91c2VfdmFsdWUiOiBbNDc4MDQ2LjY2LCAyMDY1NTEuMDFdfQ==","encoding":"BASE64"}},'
    '"eventMetadata":{"eventId":"fffc6319-59a6-446f-b30f-46c6ed1aac64","inferenceId":"c7f0edc0-9397-4cd3-a948-bd7b639da2f5",'
    '"inferenceTime":"2021-09-12T08:03:35Z"},"eventVersion":"0"}',
    '{"captureData":{"endpointInput":{"observedContentType":"image/png","mode":"INPUT","data":"iVBORw0KGgo=",'
    '"encoding":"BASE64"},"endpointOutput":{"observedContentType":"application/json","mode":"OUTPUT",'
    '"data":"[0.91, 0.09]","encoding":"JSON"}},"eventMetadata":{"eventId":"8f45e35c-fa44-40d2-8ed3-1bcab3a596f3",'
    '"inferenceTime":"2022-10-10T14:51:15Z"},"eventVersion":"0"}',
]
FILE_NAME = re.compile(r"^\d{2}-\d{2}-\d{3}-[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}\.jsonl$")


def test_records_in_sagemakers_layout_are_read(tmp_path):
    hour = tmp_path / "datacapture" / "image-classification-2022-10-10" / "AllTraffic" / "2022" / "10" / "10" / "14"
    hour.mkdir(parents=True)
    path = hour / "51-15-820-d0e7fdc2-c1ba-4e01-a9ad-7ed9b7a96b75.jsonl"
    path.write_text("\n".join(SAGEMAKER_LINES) + "\n")
    assert hour_of_path(str(path)) == datetime(2022, 10, 10, 14, tzinfo=timezone.utc)
    csv, json_in, image = (parse_record(line, f"{path}:{i + 1}")
                           for i, line in enumerate(path.read_text().splitlines()))
    assert csv.input == b"69,0,153.7,109\n" and csv.output == b"0.0254181120544672"
    assert csv.inference_id is None and csv.join_id == "aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee"
    assert csv.inference_time == datetime(2022, 2, 14, 17, 25, 49, tzinfo=timezone.utc)
    assert json.loads(json_in.input) == {"longitude": [-122.44], "latitude": [37.8]}
    assert json_in.output_json() == {"median_house_value": [478046.66, 206551.01]}
    assert json_in.join_id == "c7f0edc0-9397-4cd3-a948-bd7b639da2f5"
    assert image.input.startswith(b"\x89PNG") and image.input_type == "image/png"
    assert image.output_json() == [0.91, 0.09]


@pytest.mark.parametrize("line, message", [
    ("not json", "not a JSON object"),
    ('{"eventMetadata": {}}', "needs captureData and eventMetadata"),
    ('{"captureData": {}, "eventMetadata": {"eventId": "x"}}', "no inferenceTime"),
    ('{"captureData": {}, "eventMetadata": {"inferenceTime": "yesterday"}}', "not an ISO 8601 time"),
    ('{"captureData": {"endpointOutput": {"data": "%%%", "encoding": "BASE64"}}, '
     '"eventMetadata": {"inferenceTime": "2022-02-14T17:25:49Z"}}', "not valid base64"),
    ('{"captureData": {"endpointOutput": {"data": "x", "encoding": "XML"}}, '
     '"eventMetadata": {"inferenceTime": "2022-02-14T17:25:49Z"}}', "encoding 'XML' is none of"),
])
def test_a_bad_record_names_its_file_and_line(line, message):
    with pytest.raises(MonitoringError, match=message) as err:
        parse_record(line, "capture/x.jsonl:7")
    assert "capture/x.jsonl:7" in str(err.value)


def test_record_round_trip_and_encodings():
    when = datetime(2026, 12, 1, 13, 5, 9, 250000, tzinfo=timezone.utc)
    video = bytes(range(256)) * 4
    response = json.dumps({"status": "ok", "p_fake": 0.25}).encode()
    record = capture_record(output=response, output_type="application/json", inference_time=when, input=video,
                            input_type="video/mp4", inference_id="clip-7")
    assert list(record) == ["captureData", "eventMetadata", "eventVersion"] and record["eventVersion"] == "0"
    assert record["captureData"]["endpointInput"]["encoding"] == "BASE64"
    assert record["captureData"]["endpointInput"]["mode"] == "INPUT"
    assert record["captureData"]["endpointOutput"] == {"observedContentType": "application/json", "mode": "OUTPUT",
                                                        "data": response.decode(), "encoding": "JSON"}
    assert record["eventMetadata"]["inferenceTime"] == "2026-12-01T13:05:09Z"
    event = parse_record(json.dumps(record))
    assert event.input == video and event.output == response and event.inference_id == "clip-7"
    output_only = capture_record(output=response, output_type="application/json", inference_time=when)
    assert "endpointInput" not in output_only["captureData"] and "inferenceId" not in output_only["eventMetadata"]
    assert parse_record(json.dumps(output_only)).input is None
    # a JSON request is kept as text, a body without a content type as base64 under octet-stream
    s3 = capture_record(output=response, output_type="application/json", inference_time=when,
                        input=b'{"s3_uri": "s3://b/k.mp4"}', input_type="application/json")
    assert s3["captureData"]["endpointInput"]["encoding"] == "JSON"
    raw = capture_record(output=response, output_type="application/json", inference_time=when, input=b"\x00\x01")
    assert raw["captureData"]["endpointInput"]["observedContentType"] == "application/octet-stream"


def test_times_and_hours():
    assert parse_time("2026-12-01T13:05:09Z") == parse_time("2026-12-01T14:05:09+01:00")
    assert parse_time("2026-12-01T13:05:09.123Z").microsecond == 123000
    assert parse_time("2026-12-01T13:05:09").tzinfo == timezone.utc
    hours = hours_between(parse_time("2026-12-01T13:30:00Z"), parse_time("2026-12-01T15:00:00Z"))
    assert [h.hour for h in hours] == [13, 14]


def test_writer_layout_hours_and_sampling(tmp_path):
    writer = CaptureWriter(CaptureSettings(destination=str(tmp_path), endpoint="ep"))
    first = datetime(2026, 12, 1, 13, 59, 58, tzinfo=timezone.utc)
    a = writer.capture(output=b"{}", output_type="application/json", when=first, input=b"v", input_type="video/mp4")
    b = writer.capture(output=b"{}", output_type="application/json", when=first, input=b"w", input_type="video/mp4")
    c = writer.capture(output=b"{}", output_type="application/json", when=first.replace(hour=14, minute=0))
    writer.close()
    assert a == b != c
    assert a.parent == tmp_path / "ep" / "AllTraffic" / "2026" / "12" / "01" / "13" and FILE_NAME.match(a.name)
    assert a.name.startswith("59-58-000-") and c.parent.name == "14"
    assert [parse_record(line).input for line in a.read_text().splitlines()] == [b"v", b"w"]

    outputs_only = CaptureWriter(CaptureSettings(destination=str(tmp_path / "o"), capture_input=False))
    path = outputs_only.capture(output=b"{}", output_type="application/json", when=first, input=b"v")
    assert parse_record(path.read_text()).input is None

    never = CaptureWriter(CaptureSettings(destination=str(tmp_path / "n"), sampling_percentage=0))
    assert never.capture(output=b"{}", output_type="application/json", when=first) is None
    half = CaptureWriter(CaptureSettings(destination=str(tmp_path / "h"), sampling_percentage=30),
                         rng=random.Random(0))
    assert 250 < sum(half.sample() for _ in range(1000)) < 350
    with pytest.raises(ConfigError, match="between 0 and 100"):
        CaptureSettings(destination=str(tmp_path), sampling_percentage=101)
    with pytest.raises(ConfigError, match="without '/'"):
        CaptureSettings(destination=str(tmp_path), endpoint="a/b")


@pytest.mark.parametrize("capture_input", [True, False])
def test_the_server_captures_what_it_received_and_answered(predictor, face_clip, tmp_path, capture_input):
    """Every answered request, errors too, in the capture layout; input bytes only when asked."""
    writer = CaptureWriter(CaptureSettings(destination=str(tmp_path), endpoint="staging", capture_input=capture_input))
    httpd = wsgiref.simple_server.make_server("127.0.0.1", 0, make_app(predictor, capture=writer),
                                              handler_class=_QuietHandler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{httpd.server_port}"
    try:
        video = face_clip.read_bytes()
        ok = requests.post(f"{url}/endpoints/staging/invocations", data=video, timeout=60,
                           headers={"Content-Type": "video/mp4", INFERENCE_ID_HEADER: "clip-1"})
        bad = requests.post(f"{url}/invocations", data=b"a,b", headers={"Content-Type": "text/csv"}, timeout=10)
    finally:
        httpd.shutdown()
        httpd.server_close()
    assert ok.status_code == 200 and bad.status_code == 415
    files = sorted((tmp_path / "staging" / "AllTraffic").rglob("*.jsonl"))
    assert len(files) == 1 and FILE_NAME.match(files[0].name)
    events = [parse_record(line) for line in files[0].read_text().splitlines()]
    assert [e.inference_id for e in events] == ["clip-1", None]
    assert events[0].output_json() == ok.json() and events[0].output_type == "application/json"
    assert events[1].output_json() == bad.json() and events[1].output_json()["error"] == "UnsupportedContentTypeError"
    if capture_input:
        assert events[0].input == video and events[0].input_type == "video/mp4" and events[1].input == b"a,b"
    else:
        assert events[0].input is None and events[1].input is None


class _QuietHandler(wsgiref.simple_server.WSGIRequestHandler):
    def log_message(self, *args):
        pass


def test_base64_payload_is_standard_base64():
    record = capture_record(output=b"{}", output_type="application/json", inference_time=datetime.now(timezone.utc),
                            input=b"\xfb\xff", input_type="video/mp4")
    assert record["captureData"]["endpointInput"]["data"] == base64.b64encode(b"\xfb\xff").decode()
