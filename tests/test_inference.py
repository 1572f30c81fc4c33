"""SageMaker handlers: every accepted content type, every bad request, and the S3 route."""

from __future__ import annotations

import json
import tarfile

import cv2
import pytest
from aws_server import moto_server
from serving_support import make_model

from deepfake.core.errors import (
    ConfigError,
    ForbiddenInputError,
    InvalidInputError,
    PayloadTooLargeError,
    UnsupportedContentTypeError,
)
from deepfake.serving.handlers import input_fn, model_fn, output_fn, predict_fn
from deepfake.serving.packaging import package_model
from deepfake.serving.predictor import Predictor
from deepfake.serving.requests import (
    MAX_DECODE_ENV,
    MAX_PAYLOAD_ENV,
    MAX_S3_BYTES_ENV,
    S3_PREFIXES_ENV,
    ImageRequest,
    S3Request,
    VideoRequest,
)


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    """The model archive extracted the way SageMaker does it (model files and code/ at the root)."""
    work = tmp_path_factory.mktemp("inference")
    archive = package_model(make_model(work / "model"), work / "model.tar.gz")
    extracted = work / "opt-ml-model"
    with tarfile.open(archive) as tar:
        tar.extractall(extracted, filter="data")
    return extracted


@pytest.fixture(scope="module")
def model(model_dir):
    return model_fn(str(model_dir))


@pytest.fixture(scope="module")
def face_result(model, face_clip):
    return model.predict_video(face_clip)


def _jpeg(rgb):
    return cv2.imencode(".jpg", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))[1].tobytes()


def _png(rgb):
    return cv2.imencode(".png", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))[1].tobytes()


def _invoke(model, body, content_type, accept="application/json"):
    payload, response_type = output_fn(predict_fn(input_fn(body, content_type), model), accept)
    assert response_type == "application/json"
    return json.loads(payload)


def test_model_fn_loads_the_extracted_archive(model):
    assert isinstance(model, Predictor)
    assert model.extract_config.frames_per_video == 4


@pytest.mark.parametrize(("content_type", "suffix"), [
    ("video/mp4", ".mp4"), ("video/quicktime", ".mov"), ("video/x-msvideo", ".avi"), ("video/webm", ".webm"),
    ("video/x-matroska", ".mkv"), ("Video/MP4; codecs=\"mp4v\"", ".mp4"),
])
def test_video_types(content_type, suffix):
    request = input_fn(b"\x00\x00\x00\x18ftypmp42 video bytes", content_type)
    assert isinstance(request, VideoRequest) and request.suffix == suffix


def test_video_bytes_end_to_end(model, face_clip, face_result):
    result = _invoke(model, face_clip.read_bytes(), "video/mp4")
    assert result["status"] == "ok" and result["p_fake"] == face_result["p_fake"]
    assert result["frame_scores"] == face_result["frame_scores"]


def test_avi_and_octet_stream_are_sniffed(model, write_clip):
    avi = write_clip(codec="MJPG").read_bytes()
    request = input_fn(avi, "application/octet-stream")
    assert isinstance(request, VideoRequest) and request.suffix == ".avi"
    assert _invoke(model, avi, "application/octet-stream")["status"] == "ok"
    assert isinstance(input_fn(avi, None), VideoRequest)  # no Content-Type at all: sniffed too


@pytest.mark.parametrize("encode", [_jpeg, _png])
def test_images(model, face_photos, encode):
    photo = face_photos[-1][1]
    kind = "image/jpeg" if encode is _jpeg else "image/png"
    request = input_fn(encode(photo), kind)
    assert isinstance(request, ImageRequest) and request.rgb.shape == photo.shape
    assert isinstance(input_fn(encode(photo), "application/octet-stream"), ImageRequest)
    result = _invoke(model, encode(photo), kind)
    assert result["status"] == "ok" and result["frames_scored"] == 1 and result["media"]["kind"] == "image"


def test_no_face_video_answers_without_probability(model, no_face_clip):
    result = _invoke(model, no_face_clip.read_bytes(), "video/mp4", accept="*/*")
    assert result["status"] == "no_face" and result["p_fake"] is None and result["label"] is None


def test_json_request_is_parsed_from_bytes_or_text(monkeypatch):
    monkeypatch.setenv(S3_PREFIXES_ENV, "s3://bucket/videos/")
    # The SageMaker toolkit hands application/json bodies over as str.
    for body in ('{"s3_uri": "s3://bucket/videos/a.mp4"}', b'{"s3_uri": "s3://bucket/videos/a.mp4"}'):
        assert input_fn(body, "application/json") == S3Request("s3://bucket/videos/a.mp4", "bucket", "videos/a.mp4")


@pytest.mark.parametrize(("body", "content_type", "error", "status", "match"), [
    (b"a,b\n1,2\n", "text/csv", UnsupportedContentTypeError, 415, "text/csv"),
    (b"GIF89a....", "image/gif", UnsupportedContentTypeError, 415, "image/gif"),
    (b"just some words", "application/octet-stream", UnsupportedContentTypeError, 415, "not a recognisable"),
    (b"", "video/mp4", InvalidInputError, 400, "empty"),
    (b"{not json", "application/json", InvalidInputError, 400, "not valid JSON"),
    (b'["s3://b/k"]', "application/json", InvalidInputError, 400, "must be an object"),
    (b'{"s3_uri": "s3://b/k", "frames": 3}', "application/json", InvalidInputError, 400, "unknown key"),
    (b'{"s3_uri": "https://b/k"}', "application/json", InvalidInputError, 400, "s3://bucket/key"),
    (b'{"s3_uri": "s3://bucket-only/"}', "application/json", InvalidInputError, 400, "must name an object"),
    (b"\xff\xd8\xff broken jpeg", "image/jpeg", InvalidInputError, 400, "cannot be decoded"),
])
def test_bad_requests(body, content_type, error, status, match):
    with pytest.raises(error, match=match) as info:
        input_fn(body, content_type)
    assert info.value.status == status


@pytest.mark.parametrize(("prefixes", "uri", "match"), [
    (None, "s3://bucket/videos/a.mp4", "reads no S3 input"),                       # unset: no S3 input at all
    ("", "s3://bucket/videos/a.mp4", "reads no S3 input"),
    ("s3://bucket/videos", "s3://bucket/videos-private/a.mp4", "outside the S3 prefixes"),  # a prefix is a folder
    ("s3://bucket/videos/, s3://other/in/", "s3://secrets/keys/a.mp4", "s3://bucket/videos/, s3://other/in/"),
])
def test_an_s3_uri_outside_the_allowed_prefixes_is_refused_with_403(monkeypatch, prefixes, uri, match):
    if prefixes is None:
        monkeypatch.delenv(S3_PREFIXES_ENV, raising=False)
    else:
        monkeypatch.setenv(S3_PREFIXES_ENV, prefixes)
    with pytest.raises(ForbiddenInputError, match=match) as info:
        input_fn(json.dumps({"s3_uri": uri}), "application/json")
    assert info.value.status == 403 and "S3InputPrefixes" in str(info.value)
    monkeypatch.setenv(S3_PREFIXES_ENV, f"s3://{uri.split('/')[2]}/")                 # the whole bucket allowed
    assert isinstance(input_fn(json.dumps({"s3_uri": uri}), "application/json"), S3Request)


def test_a_malformed_prefix_list_is_a_configuration_error(monkeypatch):
    monkeypatch.setenv(S3_PREFIXES_ENV, "bucket/videos/")
    with pytest.raises(ConfigError, match="bucket/videos/"):
        input_fn(b'{"s3_uri": "s3://bucket/videos/a.mp4"}', "application/json")


def test_payload_limit(monkeypatch):
    monkeypatch.setenv(MAX_PAYLOAD_ENV, "1000")
    with pytest.raises(PayloadTooLargeError, match="1001 bytes, above the 1000-byte limit") as info:
        input_fn(b"\x00" * 1001, "video/mp4")
    assert info.value.status == 413 and "s3_uri" in str(info.value)
    assert isinstance(input_fn(b"\x00" * 1000, "video/mp4"), VideoRequest)


@pytest.mark.parametrize("body", [b"not a video at all", b"\x00\x00\x00\x18ftypmp42" + b"\x00" * 64])
def test_undecodable_video_is_a_400(model, body):
    with pytest.raises(InvalidInputError, match="cannot decode video") as info:
        predict_fn(input_fn(body, "video/mp4"), model)
    assert info.value.status == 400


def test_output_fn_accept(face_result):
    for accept in (None, "", "application/json", "*/*", "text/html, application/json;q=0.9", "application/*"):
        payload, content_type = output_fn(face_result, accept)
        assert content_type == "application/json" and json.loads(payload) == face_result
    with pytest.raises(UnsupportedContentTypeError, match="text/csv") as info:
        output_fn(face_result, "text/csv")
    assert info.value.status == 406


def test_errors_become_toolkit_errors_inside_the_sagemaker_toolkit(monkeypatch):
    errors = pytest.importorskip("sagemaker_inference.errors")
    from deepfake.serving import handlers as inference

    with pytest.raises(UnsupportedContentTypeError):  # installed but not serving: the kit's own errors
        input_fn(b"a,b", "text/csv")
    monkeypatch.setattr(inference, "_TOOLKIT_ERRORS", False)
    inference.use_toolkit_errors()  # what the archive's code/inference.py does
    with pytest.raises(errors.GenericInferenceToolkitError) as info:
        input_fn(b"a,b", "text/csv")
    assert info.value.status_code == 415
    assert json.loads(info.value.message)["error"] == "UnsupportedContentTypeError"


@pytest.mark.aws
def test_s3_video(model, face_clip, face_result, tmp_path, monkeypatch):
    monkeypatch.setenv(S3_PREFIXES_ENV, "s3://videos/in")
    with moto_server(tmp_path) as aws, aws.environment():
        s3 = aws.client("s3")
        s3.create_bucket(Bucket="videos")
        s3.upload_file(str(face_clip), "videos", "in/clip.mp4")

        result = _invoke(model, json.dumps({"s3_uri": "s3://videos/in/clip.mp4"}), "application/json")
        assert result["p_fake"] == face_result["p_fake"]
        assert result["media"]["s3_uri"] == "s3://videos/in/clip.mp4"

        with pytest.raises(InvalidInputError, match="does not exist") as info:
            predict_fn(input_fn(b'{"s3_uri": "s3://videos/in/missing.mp4"}', "application/json"), model)
        assert info.value.status == 400
        s3.put_object(Bucket="videos", Key="in/text.mp4", Body=b"not a video")
        with pytest.raises(InvalidInputError, match="s3://videos/in/text.mp4"):
            predict_fn(input_fn(b'{"s3_uri": "s3://videos/in/text.mp4"}', "application/json"), model)

        # A real-time request is bounded by what it can score within SageMaker's 60 s: its bytes (before the
        # download) and its decoding (frames up to the last of 4 sampled of 12, 320x240: 0.8 megapixels).
        request = input_fn(json.dumps({"s3_uri": "s3://videos/in/clip.mp4"}), "application/json")
        monkeypatch.setenv(MAX_S3_BYTES_ENV, str(face_clip.stat().st_size - 1))
        with pytest.raises(PayloadTooLargeError, match="asynchronous endpoint") as info:
            predict_fn(request, model)
        assert info.value.status == 413 and f"{face_clip.stat().st_size} bytes" in str(info.value)
        monkeypatch.setenv(MAX_S3_BYTES_ENV, str(face_clip.stat().st_size))
        monkeypatch.setenv(MAX_DECODE_ENV, "0.5")
        with pytest.raises(PayloadTooLargeError, match=r"320x240 video; scoring it decodes 11 frames \(0.8 megapixels"):
            predict_fn(request, model)
        monkeypatch.setenv(MAX_DECODE_ENV, "1")                     # the async endpoint's raised bounds: scored
        assert predict_fn(request, model)["p_fake"] == face_result["p_fake"]

@pytest.mark.slow      # B4's 64 MB of weights packed, unpacked and loaded twice
def test_an_efficientnet_b4_model_round_trips_through_the_archive_cli_and_handler(face_clip, tmp_path, monkeypatch,
                                                                                  capsys):
    """SBI's backbone (seeded random weights, 64 px input): saved, packaged, then scored by `deepfake predict` and
    by the SageMaker handler from the extracted archive alike, built from the archive alone: nothing downloaded."""
    from deepfake.core.dependencies import requirement
    from deepfake.modeling.network import ADVPROP_NORMALIZATION
    from deepfake.orchestration.cli import main

    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))       # where a download would land
    folder = make_model(tmp_path / "b4", backbone="efficientnet-b4")
    archive = package_model(folder, tmp_path / "model.tar.gz")
    extracted = tmp_path / "opt-ml-model"
    with tarfile.open(archive) as tar:
        tar.extractall(extracted, filter="data")
    config = json.loads((extracted / "config.json").read_text())
    assert config["architecture"] == "efficientnet-b4" and config["normalization"] == ADVPROP_NORMALIZATION
    assert requirement("efficientnet-pytorch") in (extracted / "code" / "requirements.txt").read_text().split()

    assert main(["predict", str(face_clip), "--model", str(folder), "--json"]) == 0
    cli = json.loads(capsys.readouterr().out)
    served = _invoke(model_fn(str(extracted)), face_clip.read_bytes(), "video/mp4")
    assert cli["status"] == served["status"] == "ok" and 0 < served["p_fake"] < 1
    assert served["p_fake"] == cli["p_fake"] and served["frame_scores"] == cli["frame_scores"]
    assert served["model_version"] == cli["model_version"]
    assert not (tmp_path / "torch").exists()
