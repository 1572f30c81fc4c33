"""Experiment tracking: what a step's folder gives MLflow, and a store that cannot be reached.

The real runs (the tiny pipeline twice, a notebook under plain papermill) are in test_notebooks.py.
"""

import logging
import socket

import pandas as pd
import pytest
from test_evaluate import Brightness, make_faces

from deepfake.core import paths
from deepfake.core.files import sha256_file
from deepfake.orchestration import step_outputs, tracking
from deepfake.stages.evaluate import EvalConfig, evaluate


@pytest.fixture()
def step_dir(tmp_path):
    """A step folder as training and evaluation leave it: history, a model archive, evaluation.json, figures."""
    out = tmp_path / "runs" / "r1" / "evaluate"
    evaluate(Brightness(), make_faces(tmp_path / "faces"), out, EvalConfig(operating_point="fixed"))
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
    assert evaluation["split"] == "test" and "video_auc" not in by_key     # named with the split they describe
    assert by_key["test.video_auc"] == [(0, evaluation["metrics"]["video_auc"])]
    assert {"test.manipulation.swap.auc", "test.manipulation.reenact.accuracy", "test.manipulation.none.n_videos",
            "test.aggregation.median.auc", "test.counts.videos_failed"} <= set(by_key)
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


@pytest.mark.slow
def test_a_notebook_run_by_hand_writes_only_its_folder_and_names_its_runs(tmp_path, monkeypatch):
    """Two steps logged by hand into one run folder: one pipeline run found by its folder (no tracking.json
    above the steps), step runs named ``<run>/<step>``, the experiment opens on its runs table in
    ``mlflow ui`` 3.x, the model's version and sha256 and the dataset are recorded."""
    from mlflow.tracking import MlflowClient

    from deepfake.core.vocabulary import EXPERIMENT
    from deepfake.data.manifest import write_manifest

    store = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", store)
    monkeypatch.setattr(tracking, "_off", [])
    monkeypatch.setattr(tracking, "_stores", {})
    run_dir = tmp_path / "runs" / "mine"
    explore, evaluate_dir = run_dir / "explore", run_dir / "evaluate"
    videos = write_manifest(pd.DataFrame({"video_id": ["a", "b"], "path": ["a.mp4", "b.mp4"], "label": [0, 1],
                                          "original_id": ["a", "a"], "manipulation": ["none", "swap"],
                                          "split": ["test", "test"]}), explore / paths.VIDEOS_MANIFEST,
                            extra={"data_dir": str(tmp_path / "data" / "demo")})
    faces = make_faces(tmp_path / "faces")
    write_manifest(faces, tmp_path / "faces" / paths.FACES_MANIFEST, inputs=[videos])
    model = Brightness()
    model.sha256 = "ab" * 32
    evaluate(model, faces, evaluate_dir, EvalConfig(operating_point="fixed"))
    write_manifest(pd.read_csv(evaluate_dir / paths.VIDEO_PREDICTIONS), evaluate_dir / paths.VIDEO_PREDICTIONS,
                   inputs=[tmp_path / "faces" / paths.FACES_MANIFEST])
    tracking.log_step("explore", explore, {"seed": 0})
    logged = tracking.log_step("evaluate", evaluate_dir, {"threshold": 0.5})
    assert not (run_dir / tracking.RECORD).exists()                    # only the steps' own folders were written
    client = MlflowClient(store)
    experiment = client.get_experiment_by_name(EXPERIMENT)
    assert experiment.tags["mlflow.experimentKind"] == "custom_model_development"
    runs = {r.info.run_name: r for r in client.search_runs([experiment.experiment_id])}
    assert set(runs) == {"mine", "mine/explore", "mine/evaluate"}
    assert runs["mine/evaluate"].info.run_id == logged.run_id
    assert runs["mine/explore"].data.tags[tracking.PARENT_ID] == runs["mine"].info.run_id == logged.parent_id
    for name in ("mine", "mine/evaluate"):
        tags = runs[name].data.tags
        assert tags["deepfake.model_version"] == "brightness-1" and tags["deepfake.model_sha256"] == "ab" * 32
        assert tags["deepfake.evaluated_on"] == "test split" and "test.video_auc" in runs[name].data.metrics
    digest = sha256_file(videos)[:12]
    for name in ("mine", "mine/explore", "mine/evaluate"):
        (found,) = runs[name].inputs.dataset_inputs
        assert (found.dataset.name, found.dataset.digest) == ("demo", digest), name
