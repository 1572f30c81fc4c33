"""Experiment tracking: what a step's folder gives MLflow, and a store that cannot be reached.

The real runs (the tiny pipeline twice, a notebook under plain papermill) are in test_notebooks.py.
"""

import logging
import socket

import pytest
from test_evaluate import Brightness, make_faces

from deepfake.core import paths
from deepfake.orchestration import step_outputs, tracking
from deepfake.stages.evaluate import evaluate


@pytest.fixture()
def step_dir(tmp_path):
    """A step folder as training and evaluation leave it: history, a model archive, evaluation.json, figures."""
    out = tmp_path / "runs" / "r1" / "evaluate"
    evaluate(Brightness(), make_faces(tmp_path / "faces"), out)
    (out / paths.HISTORY).write_text("epoch,train_loss,train_acc,lr\n1,0.7,0.5,0.001\n2,0.5,0.8,0.0005\n")
    (out / paths.MODEL_ARCHIVE).write_bytes(b"weights")
    (out / paths.FIGURES_DIR).mkdir()
    (out / paths.FIGURES_DIR / "roc.png").write_bytes(b"png")
    return out


def test_a_step_folder_gives_metrics_per_epoch_per_manipulation_and_its_files(step_dir):
    found = step_outputs.metrics(step_dir)
    by_key = {}
    for key, value, step in found:
        by_key.setdefault(key, []).append((step, value))
    assert by_key["train_loss"] == [(1, 0.7), (2, 0.5)] and by_key["lr"] == [(1, 0.001), (2, 0.0005)]
    evaluation = step_outputs.read_json(step_dir / paths.EVALUATION)
    assert by_key["video_auc"] == [(0, evaluation["metrics"]["video_auc"])]
    assert {"manipulation.swap.auc", "manipulation.reenact.accuracy", "manipulation.none.n_videos",
            "aggregation.median.auc", "counts.videos_failed"} <= set(by_key)
    assert not any(k.endswith(("seen_in_training", ".label")) for k in by_key)
    kept = {(p.name, folder) for p, folder in step_outputs.files(step_dir, "train")}
    assert {("figures", "figures"), (paths.EVALUATION, "outputs"), (paths.MODEL_ARCHIVE, "model")} <= kept
    assert (paths.MODEL_ARCHIVE, "model") not in {(p.name, f) for p, f in step_outputs.files(step_dir, "evaluate")}


def test_a_store_that_cannot_be_reached_never_fails_the_run_and_says_so_once(step_dir, monkeypatch, caplog):
    with socket.socket() as s:                                  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"http://127.0.0.1:{port}")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setattr(tracking, "_off", [])
    monkeypatch.setattr(tracking, "_stores", {})
    run_dir = step_dir.parent
    with caplog.at_level(logging.WARNING, logger=tracking.__name__):
        tracking.start_pipeline(run_dir, "r1", data="/data", params={"profile": "tiny"})
        logged = tracking.log_step("evaluate", step_dir, {"threshold": 0.5})
        tracking.log_report(step_dir, step_dir / paths.EVALUATION, since=0)
        assert tracking.finish_pipeline(run_dir, failed=False) is None
    assert "MLflow tracking is off" in repr(logged) and logged.run_id is None
    said = [r for r in caplog.records if "MLflow tracking is off" in r.getMessage()]
    assert len(said) == 1 and f"127.0.0.1:{port}" in said[0].getMessage()
    assert tracking.run_ids(run_dir) == {}
    # a step of that run in a process of its own (a notebook's kernel) does not try the store again
    monkeypatch.setattr(tracking, "_off", [])
    monkeypatch.setattr(tracking, "_connect", lambda uri: pytest.fail("the step tried the store again"))
    with caplog.at_level(logging.WARNING, logger=tracking.__name__):
        assert "off for this run" in repr(tracking.log_step("evaluate", step_dir, {"threshold": 0.5}))
    assert len([r for r in caplog.records if "MLflow tracking is off" in r.getMessage()]) == 1


def test_where_runs_go(monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "off")
    assert tracking.tracking_uri() is None
    monkeypatch.delenv("MLFLOW_TRACKING_URI")
    assert tracking.tracking_uri() == f"sqlite:///{paths.project_dir() / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "sqlite:///exp/mlflow.db")      # relative: from the project folder
    assert tracking.tracking_uri() == f"sqlite:///{paths.project_dir() / 'exp' / 'mlflow.db'}"
    arn = "arn:aws:sagemaker:us-east-1:123456789012:mlflow-tracking-server/team"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", arn)
    assert tracking.tracking_uri() == arn
