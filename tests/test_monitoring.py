"""`deepfake monitor`: a window of captured traffic against the served model's evaluation.

The model and its evaluation are the kit's own (tests/monitoring_support.py);
captured windows are written by the kit's capture writer from the responses of
the endpoint's own scoring code, or built record by record for the checks.
"""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from aws_server import moto_server

from deepfake.core.errors import ConfigError, ManifestError, MonitoringError
from deepfake.core.files import read_json
from deepfake.monitoring.baseline import (
    Baseline,
    MonitoredModel,
    evaluation_location,
    load_baseline,
    monitored_model,
)
from deepfake.monitoring.checks import MonitorConfig, run_checks
from deepfake.monitoring.ground_truth import read_ground_truth
from deepfake.monitoring.monitor import monitor
from deepfake.monitoring.schema import read_monitoring, validate_monitoring
from deepfake.monitoring.sources import parse_window
from deepfake.monitoring.traffic import traffic_table
from deepfake.orchestration.cli import main
from deepfake.scoring.rule import ScoringRule
from deepfake.serving.capture import CapturedEvent, CaptureSettings, CaptureWriter
from deepfake.serving.handlers import predict
from deepfake.serving.predictor import Predictor
from deepfake.serving.requests import parse_request

START = datetime(2026, 12, 1, 10, 0, tzinfo=timezone.utc)
WINDOW = ("2026-12-01T09:00:00Z", "2026-12-01T13:00:00Z")
SMALL = MonitorConfig(min_requests=5, min_labelled=5)


@pytest.fixture(scope="module")
def responses(evaluated):
    """The endpoint's answer to every evaluated video (the handlers' own scoring), by video id."""
    predictor = Predictor.from_path(evaluated.model)
    return {row.video_id: (Path(row.path).read_bytes(), predict(parse_request(Path(row.path).read_bytes(), "video/mp4"),
                                                                  predictor))
            for row in evaluated.videos.itertuples()}


def write_window(folder: Path, answers: dict, start: datetime = START, step_s: int = 90) -> Path:
    writer = CaptureWriter(CaptureSettings(destination=str(folder), endpoint="ep"))
    for i, (inference_id, (body, response)) in enumerate(answers.items()):
        writer.capture(output=json.dumps(response).encode(), output_type="application/json",
                       when=start + timedelta(seconds=step_s * i), input=body, input_type="video/mp4",
                       inference_id=inference_id)
    writer.close()
    return folder


@pytest.fixture(scope="module")
def baseline_window(evaluated, responses, tmp_path_factory):
    capture = write_window(tmp_path_factory.mktemp("capture"), responses)
    out = tmp_path_factory.mktemp("out")
    return capture, monitor(str(capture), str(evaluated.model), parse_window(*WINDOW), out, config=SMALL)


@pytest.mark.slow
def test_the_baseline_is_the_evaluation(evaluated):
    model = monitored_model(str(evaluated.model))
    assert evaluation_location(str(evaluated.model)) == str(evaluated.evaluation)
    assert evaluation_location(str(evaluated.evaluation / "model")) == str(evaluated.evaluation)
    baseline = load_baseline(str(evaluated.evaluation), model)
    evaluation = read_json(evaluated.evaluation / "evaluation.json")
    videos = pd.read_csv(evaluated.evaluation / "video_predictions.csv")
    assert baseline.threshold == evaluation["threshold"] == model.rule.threshold
    assert baseline.false_positive_rate == evaluation["metrics"]["video_false_positive_rate"]
    assert baseline.catch_rate == evaluation["metrics"]["video_recall"]
    assert baseline.videos_total == evaluation["counts"]["videos_total"]
    assert list(baseline.real_p_fake) == sorted(videos.loc[videos["label"] == 0, "p_fake"])
    assert baseline.fake_share == pytest.approx((videos["p_fake"] >= baseline.threshold).mean())


@pytest.mark.slow
def test_a_model_the_evaluation_did_not_gate_is_refused(evaluated, tmp_path):
    from serving_support import make_model

    other_rule = make_model(tmp_path / "m", frames=4, threshold=0.3)     # other weights, other threshold
    with pytest.raises(MonitoringError, match="measured model"):
        load_baseline(str(evaluated.evaluation), monitored_model(str(other_rule)))
    trained = monitored_model(str(evaluated.evaluation.parent / "train" / "model"))   # same weights, ungated
    with pytest.raises(MonitoringError, match="monitor the gated model"):
        load_baseline(str(evaluated.evaluation), trained)
    with pytest.raises(MonitoringError, match="give --evaluation"):
        monitor(str(tmp_path), str(other_rule), parse_window(*WINDOW), tmp_path / "out")


@pytest.mark.slow
def test_a_baseline_like_window_has_no_violation_and_its_figures_are_the_responses(evaluated, responses,
                                                                                    baseline_window):
    capture, result = baseline_window
    summary = result.summary
    assert result.violations == [] and {c["status"] for c in summary["checks"]} == {"ok"}
    answers = [r for _, r in responses.values()]
    scored = [r for r in answers if r["status"] == "ok"]
    assert summary["counts"]["requests"] == len(answers) and summary["counts"]["ok"] == len(scored)
    assert summary["counts"]["called_fake"] == sum(r["label"] == "FAKE" for r in scored)
    assert summary["scores"]["p_fake"]["mean"] == pytest.approx(np.mean([r["p_fake"] for r in scored]))
    assert summary["inputs"]["codecs"] == {"fmp4": len(answers)}
    assert summary["inputs"]["input_bytes"]["max"] == max(len(b) for b, _ in responses.values())
    drift = next(c for c in summary["checks"] if c["name"] == "score_drift")
    assert drift["statistic"] == "ks_2samp" and drift["p_value"] > 0.5
    requests = pd.read_csv(result.folder / "requests.csv")
    by_id = dict(zip(requests["inference_id"], requests["p_fake"], strict=True))
    assert all(by_id[k] == pytest.approx(r["p_fake"]) for k, (_, r) in responses.items() if r["status"] == "ok")
    assert sum(p["requests"] for p in summary["periods"]) == len(answers) and len(summary["periods"]) == 4
    assert read_monitoring(result.folder) == summary
    page = result.report_path.read_text()
    assert page.count("data:image/png;base64,") == 6 and "No violation." in page


def _event(i: int, response: dict, when: datetime = START, inference_id: str | None = None) -> CapturedEvent:
    return CapturedEvent(event_id=f"e{i}", inference_time=when + timedelta(seconds=i), inference_id=inference_id,
                         output_type="application/json", output=json.dumps(response).encode())


def _answer(p_fake: float | None, *, version: str = "v1", sampled: int = 4, scored: int = 4,
            threshold: float = 0.5) -> dict:
    if p_fake is None:
        return {"status": "no_face", "label": None, "p_fake": None, "frames_sampled": sampled, "frames_scored": 0,
                "faces_found": 0, "model_version": version, "threshold": threshold, "media": {"kind": "video"}}
    return {"status": "ok", "label": "FAKE" if p_fake >= threshold else "REAL", "p_fake": p_fake,
            "frames_sampled": sampled, "frames_scored": scored, "faces_found": scored, "model_version": version,
            "threshold": threshold, "media": {"kind": "video", "width": 320, "height": 240, "codec": "h264"}}


def _baseline(**changes) -> Baseline:
    rng = np.random.default_rng(0)
    reals = tuple(sorted(rng.uniform(0.0, 0.45, 60)) + [0.7] * 6)
    fields = dict(source="eval", model_version="v1", threshold=0.5, aggregation="mean", created=None, split="test",
                  fakes="split", videos_total=100, videos_scored=98, videos_no_face=2, videos_failed=0,
                  real_p_fake=reals, fake_p_fake=(0.8,) * 32, called_fake=38, face_frame_share=(1.0,) * 98,
                  faces_per_frame=1.0, false_positive_rate=0.09, catch_rate=1.0, auc=0.97)
    return Baseline(**{**fields, **changes})


MODEL = MonitoredModel(source="m", version="v1", rule=ScoringRule(1.0, "mean", 0.5), frames_per_video=4)


def _statuses(events, baseline=None, config=SMALL, labels=None) -> dict[str, str]:
    checks = run_checks(traffic_table(events), baseline or _baseline(), MODEL, config, labels)
    return {c["name"]: c["status"] for c in checks}


def test_each_check_fires_on_its_own_shift():
    rng = np.random.default_rng(1)
    normal = [*rng.uniform(0.0, 0.45, 24), *[0.8] * 16]                    # 40 videos, 40 % called FAKE
    same = [_event(i, _answer(p)) for i, p in enumerate(normal)]
    assert set(_statuses(same).values()) == {"ok"}
    no_face = same[:30] + [_event(100 + i, _answer(None)) for i in range(10)]
    assert _statuses(no_face)["no_face_rate"] == "violation"
    errors = same + [_event(200 + i, {"error": "InvalidInputError", "message": "bad", "status": 400}) for i in range(8)]
    assert _statuses(errors)["error_rate"] == "violation"
    all_fake = [_event(i, _answer(0.9)) for i in range(40)]
    assert _statuses(all_fake)["fake_share"] == "violation"
    shifted = [_event(i, _answer(0.2 + p / 2 if p < 0.45 else p)) for i, p in enumerate(normal)]
    assert _statuses(shifted)["score_drift"] == "violation"
    fewer_faces = [_event(i, _answer(p, scored=1)) for i, p in enumerate(normal)]
    assert _statuses(fewer_faces)["face_frame_share"] == "violation"
    other = same + [_event(300, _answer(0.1, version="v2"))]
    assert _statuses(other)["model_version"] == "violation"
    unreadable = same + [CapturedEvent("x", START, output=b"not json", output_type="text/plain")]
    assert set(_statuses(unreadable).values()) == {"ok"}


def test_small_windows_and_noise_are_not_violations():
    few = [_event(i, _answer(None)) for i in range(3)]
    statuses = _statuses(few)
    assert statuses["no_face_rate"] == "skipped" and statuses["score_drift"] == "skipped"
    # 2 no-face answers in 40 against 2 % in evaluation: within the margin, no violation
    mostly = [_event(i, _answer(0.2)) for i in range(38)] + [_event(50 + i, _answer(None)) for i in range(2)]
    assert _statuses(mostly)["no_face_rate"] == "ok"
    # the expected share called FAKE follows the traffic's prevalence when it is given
    reals = [_event(i, _answer(p)) for i, p in enumerate(np.random.default_rng(2).uniform(0, 0.45, 40))]
    assert _statuses(reals)["fake_share"] == "violation"            # against the evaluation's 38 % called FAKE
    assert _statuses(reals, config=SMALL.replace(fake_prevalence=0.0))["fake_share"] == "ok"   # FPR 9 %


def test_ground_truth_checks(tmp_path):
    rng = np.random.default_rng(3)
    reals = [_event(i, _answer(p), inference_id=f"r{i}") for i, p in enumerate(rng.uniform(0, 0.45, 20))]
    missed = [_event(100 + i, _answer(p), inference_id=f"f{i}") for i, p in enumerate(rng.uniform(0.1, 0.55, 20))]
    labels = pd.DataFrame({"join_id": [f"r{i}" for i in range(20)] + [f"f{i}" for i in range(20)],
                           "truth": [0] * 20 + [1] * 20})
    statuses = _statuses(reals + missed, labels=labels)
    assert statuses["catch_rate"] == "violation" and statuses["auc"] == "violation"
    assert statuses["false_positive_rate"] == "ok"
    assert "catch_rate" not in _statuses(reals + missed)


def test_ground_truth_as_csv_or_sagemaker_jsonl(tmp_path):
    (tmp_path / "labels.csv").write_text("inference_id,label\nclip-1,REAL\nclip-2,fake\nclip-3,1\nclip-1,1\n")
    table = read_ground_truth(str(tmp_path / "labels.csv"))
    assert dict(zip(table["join_id"], table["truth"], strict=True)) == {"clip-1": 1, "clip-2": 1, "clip-3": 1}
    hour = tmp_path / "gt" / "2026" / "12" / "01" / "14"
    hour.mkdir(parents=True)
    (hour / "labels.jsonl").write_text("\n".join(json.dumps(
        {"groundTruthData": {"data": str(label), "encoding": "CSV"}, "eventMetadata": {"eventId": ident},
         "eventVersion": "0"}) for ident, label in (("a", 0), ("b", 1))) + "\n")
    table = read_ground_truth(str(tmp_path / "gt"))
    assert dict(zip(table["join_id"], table["truth"], strict=True)) == {"a": 0, "b": 1}
    (tmp_path / "bad.csv").write_text("video,label\nx,1\n")
    with pytest.raises(MonitoringError, match="needs the columns inference_id"):
        read_ground_truth(str(tmp_path / "bad.csv"))
    (tmp_path / "bad2.csv").write_text("inference_id,label\nx,maybe\n")
    with pytest.raises(MonitoringError, match=r"bad2.csv:2: label 'maybe'"):
        read_ground_truth(str(tmp_path / "bad2.csv"))


def test_windows():
    now = datetime(2026, 12, 1, 12, tzinfo=timezone.utc)
    assert parse_window(None, None, now).since == now - timedelta(hours=24)
    assert parse_window("90m", "2026-12-01T12:00:00Z").since == datetime(2026, 12, 1, 10, 30, tzinfo=timezone.utc)
    assert parse_window("2026-12-01T11:00:00+01:00", "now", now).since == datetime(2026, 12, 1, 10, tzinfo=timezone.utc)
    with pytest.raises(ConfigError, match="window is empty"):
        parse_window("2026-12-02T00:00:00Z", "2026-12-01T00:00:00Z")
    with pytest.raises(ConfigError, match="not an ISO 8601 time"):
        parse_window("yesterday", None)


@pytest.mark.slow
def test_the_schema_catches_a_broken_summary(baseline_window):
    _, result = baseline_window
    broken = json.loads(json.dumps(result.summary))
    broken["counts"]["requests"] += 1
    broken["checks"][1]["status"] = "violation"
    del broken["rates"]
    with pytest.raises(ManifestError) as err:
        validate_monitoring(broken)
    message = str(err.value)
    assert "missing key 'rates'" in message
    del broken["checks"]
    with pytest.raises(ManifestError, match="missing key 'checks'"):
        validate_monitoring(broken)


@pytest.mark.slow
def test_cli_exit_codes_and_ground_truth(evaluated, responses, baseline_window, no_face_clip, tmp_path, capsys):
    capture, _ = baseline_window
    labels = tmp_path / "labels.csv"
    truth = dict(zip(evaluated.videos["video_id"], evaluated.videos["label"], strict=True))
    labels.write_text("inference_id,label\n" + "".join(f"{k},{v}\n" for k, v in truth.items()))
    args = ["monitor", "--capture", str(capture), "--model", str(evaluated.model), "--since", WINDOW[0],
            "--until", WINDOW[1], "--set", "min_requests=5", "--set", "min_labelled=5"]
    assert main([*args, "--ground-truth", str(labels), "--out", str(tmp_path / "a")]) == 0
    summary = read_monitoring(tmp_path / "a")
    assert summary["ground_truth"]["matched_scored"] == len(truth)
    evaluation = read_json(evaluated.evaluation / "evaluation.json")
    assert summary["ground_truth"]["auc"] == pytest.approx(evaluation["metrics"]["video_auc"])
    assert summary["ground_truth"]["false_positive_rate"] == pytest.approx(
        evaluation["metrics"]["video_false_positive_rate"])
    assert "ok        catch_rate" in capsys.readouterr().out
    # the same window with videos in which no face is found: a violation, exit 1
    body = no_face_clip.read_bytes()
    blank = predict(parse_request(body, "video/mp4"), Predictor.from_path(evaluated.model))
    assert blank["status"] == "no_face"
    write_window(tmp_path / "blank", {**responses, **{f"blank-{i}": (body, blank) for i in range(8)}})
    code = main([*args, "--capture", str(tmp_path / "blank"), "--out", str(tmp_path / "b")])
    assert code == 1 and "1 violation(s): no_face_rate" in capsys.readouterr().err
    assert main(["monitor", "--capture", str(tmp_path / "nowhere"), "--model", str(evaluated.model)]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert main([*args, "--set", "alpha=2", "--out", str(tmp_path / "c")]) == 2


@pytest.mark.slow
@pytest.mark.aws
def test_capture_model_and_evaluation_in_s3(evaluated, baseline_window, tmp_path):
    """The endpoint's S3 capture prefix, the model's S3 URI and its evaluation beside it, read as SageMaker
    would leave them."""
    capture, local = baseline_window
    (tmp_path / "aws").mkdir()
    with moto_server(tmp_path / "aws") as aws, aws.environment():
        s3 = aws.client("s3")
        s3.create_bucket(Bucket="bucket")
        for path in capture.rglob("*.jsonl"):
            s3.upload_file(str(path), "bucket", f"datacapture-staging/{path.relative_to(capture).as_posix()}")
        for name in ("model.tar.gz", "evaluation.json", "video_predictions.csv"):
            s3.upload_file(str(evaluated.evaluation / name), "bucket", f"pipeline/evaluate/{name}")
        result = monitor("s3://bucket/datacapture-staging/ep/", "s3://bucket/pipeline/evaluate/model.tar.gz",
                         parse_window(*WINDOW), tmp_path / "out", config=SMALL)
    assert result.summary["counts"] == local.summary["counts"]
    assert result.summary["baseline"]["source"] == "s3://bucket/pipeline/evaluate"
    assert [c["status"] for c in result.summary["checks"]] == [c["status"] for c in local.summary["checks"]]


def test_cloudwatch_metrics_of_a_window():
    from deepfake.monitoring.metrics import CHECK_METRIC, VIOLATIONS_METRIC, cloudwatch_metrics

    summary = {"counts": {"requests": 40, "ok": 30, "no_face": 10, "error": 0, "called_fake": 3},
               "rates": {"no_face_rate": 0.25, "error_rate": 0.0, "fake_share": 0.1},
               "scores": {"p_fake": {"mean": 0.2}}, "faces": {"face_frame_share": None}, "latency_ms": None,
               "ground_truth": None,
               "checks": [{"name": "no_face_rate", "status": "violation"}, {"name": "auc", "status": "skipped"},
                          {"name": "score_drift", "status": "ok", "ks_distance": 0.12}],
               "violations": [{"check": "no_face_rate"}]}
    when = datetime(2026, 12, 1, 13, 10, tzinfo=timezone.utc)
    data = cloudwatch_metrics(summary, "deepfake-prod", when)
    by = {(m["MetricName"], tuple(d["Value"] for d in m["Dimensions"])): m["Value"] for m in data}
    assert by[(VIOLATIONS_METRIC, ("deepfake-prod",))] == 1.0 and by[("NoFaceRate", ("deepfake-prod",))] == 0.25
    assert by[(CHECK_METRIC, ("deepfake-prod", "no_face_rate"))] == 1.0
    assert by[(CHECK_METRIC, ("deepfake-prod", "score_drift"))] == 0.0
    assert (CHECK_METRIC, ("deepfake-prod", "auc")) not in by and ("AUC", ("deepfake-prod",)) not in by
    assert by[("ScoreDriftKSDistance", ("deepfake-prod",))] == 0.12
    assert all(m["Timestamp"] == when for m in data)


def test_the_job_reads_its_settings_string():
    from pipelines.deepfake.monitor_step import settings

    assert settings("") == {} and settings("alpha=0.001, fake_prevalence=0.02") == {
        "alpha": "0.001", "fake_prevalence": "0.02"}
    with pytest.raises(ConfigError, match="is not KEY=VALUE"):
        settings("alpha")
    assert MonitorConfig.from_dict(settings("alpha=0.001")).alpha == 0.001


def test_invoke_says_what_it_needs(tmp_path, capsys):
    assert main(["invoke", "--url", "http://127.0.0.1:9", "--endpoint", "e", str(tmp_path / "a.mp4")]) == 2
    assert "not both or neither" in capsys.readouterr().err
    assert main(["invoke", "--data", str(tmp_path)]) == 2
    assert "--data and --evaluation go together" in capsys.readouterr().err
    assert main(["invoke"]) == 2 and "nothing to send" in capsys.readouterr().err
    (tmp_path / "a.mp4").write_bytes(b"x")
    assert main(["invoke", "--url", "http://127.0.0.1:9", str(tmp_path / "a.mp4")]) == 2
    assert "cannot reach http://127.0.0.1:9" in capsys.readouterr().err
    assert main(["invoke", "--reencode", "half", str(tmp_path / "a.mp4")]) == 2
    assert "must be SCALE:CRF" in capsys.readouterr().err
    assert main(["invoke", "--no-face", "-1"]) == 2
    assert "--no-face -1: give a number of videos, 0 or more" in capsys.readouterr().err
