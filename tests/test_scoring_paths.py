"""One scoring rule everywhere: evaluation, `deepfake predict`, the HTTP server and the SageMaker handler
score the same videos to the same numbers, bit for bit, with a non-default rule (aggregation, threshold,
temperature) read from the model artifact."""

from __future__ import annotations

import json
import subprocess
import tarfile

import pandas as pd
import pytest
from botocore.config import Config
from serving_support import deepfake_cli, make_model, serve

from deepfake.data.faces_table import read_faces
from deepfake.media.extraction import ExtractConfig
from deepfake.modeling.artifact import load_artifact
from deepfake.serving.handlers import input_fn, model_fn, output_fn, predict_fn
from deepfake.serving.packaging import package_model
from deepfake.stages.evaluate import EvalConfig, evaluate
from deepfake.stages.extract import extract_faces

pytestmark = pytest.mark.slow

# Not the defaults anywhere: the aggregation, the threshold, the temperature and a recalibration's Platt map.
RULE = {"aggregation": "median", "threshold": 0.45, "temperature": 0.7, "video_scale": 0.8, "video_bias": -0.3}


@pytest.fixture(scope="module")
def archive(tmp_path_factory):
    work = tmp_path_factory.mktemp("paths")
    model = make_model(work / "model", frames=3, max_faces=3, min_score=0.8, **RULE)
    return package_model(model, work / "model.tar.gz")


@pytest.fixture(scope="module")
def videos(face_clip, multi_face_clip, tmp_path_factory):
    """A one-face clip and a five-person clip (several faces per frame), side by side in one folder."""
    folder = tmp_path_factory.mktemp("videos")
    for name, clip in (("one.mp4", face_clip), ("group.mp4", multi_face_clip)):
        (folder / name).write_bytes(clip.read_bytes())
    return folder


def _by_evaluation(archive, videos, tmp_path):
    loaded = load_artifact(archive)
    table = pd.DataFrame({"video_id": ["group", "one"], "path": ["group.mp4", "one.mp4"], "label": [1, 0],
                          "split": ["test", "test"]})
    extract_faces(table, videos, tmp_path / "faces", ExtractConfig.from_dict(loaded.config["extract"]), progress=False)
    evaluation = evaluate(loaded, read_faces(tmp_path / "faces"), tmp_path / "eval",
                          EvalConfig(operating_point="model", aggregation=RULE["aggregation"], split="all"))
    assert evaluation["scoring"] == RULE
    video_rows = pd.read_csv(tmp_path / "eval" / "video_predictions.csv").set_index("video_id")
    frame_rows = pd.read_csv(tmp_path / "eval" / "frame_predictions.csv")
    return {v: {"p_fake": float(video_rows.loc[v, "p_fake"]),
                "frames": frame_rows.loc[frame_rows["video_id"] == v, "p_fake"].tolist()} for v in ("one", "group")}


def _by_cli(archive, videos):
    proc = subprocess.run([*deepfake_cli(), "predict", str(videos / "one.mp4"), str(videos / "group.mp4"),
                           "--model", str(archive), "--json"], capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stderr[-2000:]
    lines = [json.loads(line) for line in proc.stdout.strip().splitlines()]
    return {r["input"].rsplit("/", 1)[1][:-4]: r for r in lines}


def _by_server(archive, videos):
    import boto3

    out = {}
    with serve(archive) as url:
        client = boto3.client("sagemaker-runtime", endpoint_url=url, region_name="us-east-1",
                              aws_access_key_id="testing", aws_secret_access_key="testing",
                              config=Config(retries={"max_attempts": 1}, read_timeout=120))
        for name in ("one", "group"):
            reply = client.invoke_endpoint(EndpointName="local", Body=(videos / f"{name}.mp4").read_bytes(),
                                           ContentType="video/mp4")
            out[name] = json.loads(reply["Body"].read())
    return out


def _by_handler(archive, videos, tmp_path):
    extracted = tmp_path / "opt-ml-model"          # SageMaker unpacks model.tar.gz into /opt/ml/model
    with tarfile.open(archive) as tar:
        tar.extractall(extracted, filter="data")
    model = model_fn(str(extracted))
    out = {}
    for name in ("one", "group"):
        body, _ = output_fn(predict_fn(input_fn((videos / f"{name}.mp4").read_bytes(), "video/mp4"), model),
                            "application/json")
        out[name] = json.loads(body)
    return out


def test_four_paths_score_identically(archive, videos, tmp_path):
    reference = _by_evaluation(archive, videos, tmp_path)
    served = {"deepfake predict": _by_cli(archive, videos), "deepfake serve": _by_server(archive, videos),
              "SageMaker handler": _by_handler(archive, videos, tmp_path)}
    for path, results in served.items():
        for name, expected in reference.items():
            got = results[name]
            assert got["status"] == "ok", (path, name)
            assert (got["aggregation"], got["threshold"]) == (RULE["aggregation"], RULE["threshold"]), path
            assert [f["p_fake"] for f in got["frame_scores"]] == expected["frames"], (path, name)
            assert got["p_fake"] == expected["p_fake"], (path, name)           # exact: one rule, one model
            assert got["label"] == ("FAKE" if expected["p_fake"] >= RULE["threshold"] else "REAL"), (path, name)
    assert served["deepfake predict"]["group"]["faces_found"] > served["deepfake predict"]["group"]["frames_scored"]
