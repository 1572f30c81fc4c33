"""Recalibration on a labelled sample: Platt scaling of the video log-odds, the threshold for a target
false-positive rate on the sample's reals, before/after figures cross-validated, and the new rule as every
scorer applies it."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from deepfake.core.errors import ConfigError, DataError
from deepfake.modeling.calibration import fit_platt
from deepfake.scoring.rule import ScoringRule
from deepfake.stages.calibrate import CalibrateConfig, recalibrate, video_logits


def sample(n_real=40, n_fake=40, *, shift=-3.0, spread=1.0, seed=0):
    """Videos whose true log-odds of being fake are z, scored by an overconfident, shifted model:
    p_fake = sigmoid(2 z + shift) (what a detector meeting an unseen manipulation looks like)."""
    rng = np.random.default_rng(seed)
    z = np.r_[rng.normal(-1.5, spread, n_real), rng.normal(1.5, spread, n_fake)]
    y = np.r_[np.zeros(n_real, int), np.ones(n_fake, int)]
    p = 1.0 / (1.0 + np.exp(-(2.0 * z + shift)))
    return pd.DataFrame({"video_id": [f"v{i}" for i in range(len(y))], "label": y, "p_fake": p})


def test_platt_recovers_a_known_scale_and_bias():
    rng = np.random.default_rng(1)
    z = rng.normal(0, 2, 20000)
    y = (rng.random(z.size) < 1 / (1 + np.exp(-(0.5 * z - 1.0)))).astype(int)
    fit = fit_platt(z, y)
    assert fit.scale == pytest.approx(0.5, abs=0.03) and fit.bias == pytest.approx(-1.0, abs=0.05)
    assert fit.nll_after < fit.nll_before
    only_scale = fit_platt(z, y, bias=False)
    assert only_scale.bias == 0.0 and only_scale.scale > 0
    with pytest.raises(DataError, match="all real"):
        fit_platt(z[:5], np.zeros(5))
    with pytest.raises(DataError, match="do not rank fakes above reals"):
        fit_platt(np.r_[np.ones(10), -np.ones(10)], np.r_[np.zeros(10), np.ones(10)])


def test_recalibration_fixes_the_scale_and_sets_the_threshold_on_the_sample_reals():
    videos = sample()
    rule = ScoringRule(temperature=1.3, aggregation="mean", threshold=0.5)
    new_rule, record = recalibrate(videos, rule, CalibrateConfig(target_fpr=0.05))
    assert record["n_real"] == record["n_fake"] == 40 and record["folds"] == 5
    assert record["after"]["ece"] < record["before"]["ece"]
    assert record["after"]["catch_rate"] > record["before"]["catch_rate"]
    assert record["after"]["false_positive_rate"] <= 0.15
    assert new_rule.temperature == 1.3 and new_rule.threshold == record["threshold"]
    calibrated = new_rule.calibrate_video(videos["p_fake"].to_numpy())
    reals = calibrated[videos["label"] == 0]
    assert np.mean(reals >= new_rule.threshold) <= 0.05              # the target, on the sample's reals
    np.testing.assert_allclose(video_logits(calibrated), record["scale"] * video_logits(videos["p_fake"])
                               + record["bias"], rtol=1e-9, atol=1e-9)
    again, _ = recalibrate(videos.assign(p_fake=calibrated), new_rule, CalibrateConfig())
    assert abs(again.video_scale / new_rule.video_scale - 1) < 0.05   # a second fit on top changes little
    temperature, record_t = recalibrate(videos, rule, CalibrateConfig(recalibration="temperature"))
    assert record_t["bias"] == 0.0 and temperature.video_bias == 0.0


def test_recalibration_refuses_a_sample_it_cannot_fit():
    with pytest.raises(DataError, match="1 real and 3 fake"):
        recalibrate(sample(1, 3), ScoringRule())
    with pytest.raises(ConfigError, match="platt, temperature"):
        CalibrateConfig(recalibration="isotonic")
    small = recalibrate(sample(3, 30), ScoringRule())[1]
    assert small["folds"] == 3 and small["warning"] and "needs at least 20" in small["warning"]


def test_the_rule_applies_video_calibration_in_every_scorer():
    rule = ScoringRule(video_scale=0.5, video_bias=-1.0)
    p = rule.video_probability([0.9, 0.7])                           # mean 0.8, then Platt
    assert p == pytest.approx(1 / (1 + np.exp(-(0.5 * np.log(0.8 / 0.2) - 1.0))))
    assert ScoringRule().video_probability([0.9, 0.7]) == 0.8         # identity: unchanged, bit for bit
    assert ScoringRule.from_model_config({"scoring": rule.to_dict()}) == rule
    with pytest.raises(ConfigError, match="video_scale"):
        ScoringRule(video_scale=-1.0)


@pytest.mark.slow
def test_deepfake_calibrate_writes_and_registers_a_derived_model(tmp_path):
    """`deepfake calibrate --model M --data SAMPLE --out NEW --register`: the sample scored through the served
    rule (an evaluation-only run), a new model whose rule is recalibrated and whose record names the sample
    (its videos table and sha256), its size and the parent; registered as a version derived from the
    parent's; `deepfake predict` with it gives the recalibrated probability of the parent's score."""
    import json
    import os
    import subprocess
    import sys

    import torch
    from serving_support import make_model

    from deepfake.core.files import sha256_file
    from deepfake.data.dataset import read_rgb
    from deepfake.data.faces_table import read_faces
    from deepfake.demo.build import build_demo_dataset
    from deepfake.media.preprocess import preprocess
    from deepfake.modeling.artifact import load_artifact, save_artifact
    from deepfake.orchestration.registry import LocalRegistry
    from deepfake.serving.packaging import package_model
    from deepfake.serving.predictor import Predictor

    data = build_demo_dataset(tmp_path / "sample", n_videos=12, seed=3, clip_frames=12, progress=False)
    env = {**os.environ, "DEEPFAKE_RUNS": str(tmp_path / "runs"), "DEEPFAKE_REGISTRY": str(tmp_path / "registry"),
           "MLFLOW_TRACKING_URI": "off"}

    def deepfake(*args):
        proc = subprocess.run([sys.executable, "-m", "deepfake", *args], env=env, cwd=tmp_path,
                              capture_output=True, text=True, timeout=900)
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
        return proc.stdout

    # a parent whose head separates the sample's classes (the centroids of its crops' features), registered
    base = make_model(tmp_path / "base", frames=3)
    deepfake("run", "--model", str(base), "--data", str(data), "--run-id", "features")
    faces = read_faces(tmp_path / "runs" / "features" / "extract")
    faces = faces[faces["status"] == "ok"]
    loaded = load_artifact(base)
    with torch.inference_mode():
        feats = loaded.model.extract_features(preprocess([read_rgb(p) for p in faces["abs_path"]], loaded.image_size,
                                                         loaded.normalization)).mean((2, 3))
        y = torch.as_tensor(faces["label"].to_numpy())
        direction = feats[y == 1].mean(0) - feats[y == 0].mean(0)
        model = loaded.model
        model._fc.weight.copy_(4 * direction[None] / direction.norm() ** 2)
        model._fc.bias.copy_(-(model._fc.weight[0] @ (feats[y == 1].mean(0) + feats[y == 0].mean(0)) / 2))
    parent_dir = save_artifact(model, tmp_path / "parent", loaded.config)
    parent = package_model(parent_dir, tmp_path / "parent.tar.gz")
    registry = LocalRegistry(tmp_path / "registry")
    registered = registry.register("deepfake-detector", parent, {"video_auc": 1.0})

    out = deepfake("calibrate", "--model", registered.artifact, "--data", str(data), "--out", str(tmp_path / "new"),
                   "--folds", "3", "--register")
    assert "recalibrated on" in out and "cross-validation" in out and "derived from v1" in out
    record = json.loads((tmp_path / "new" / "recalibration.json").read_text())
    table = record["sample"]["table"]
    assert record["sample"]["path"] == str(data) and record["sample"]["sha256"] == sha256_file(table)
    assert record["n_real"] + record["n_fake"] == record["n_videos"] and record["folds"] == 3
    assert record["parent"]["weights_sha256"] == json.loads((parent_dir / "config.json").read_text())["weights_sha256"]
    config = json.loads((tmp_path / "new" / "model" / "config.json").read_text())
    assert config["recalibration"]["scale"] == record["scale"]
    assert config["scoring"]["video_scale"] == record["scale"] and config["scoring"]["threshold"] == record["threshold"]
    versions = LocalRegistry(tmp_path / "registry").list("deepfake-detector")
    assert [v.version for v in versions] == [1, 2]
    assert versions[1].source["derived_from"]["version"] == 1
    assert versions[1].source["recalibration_sample"]["sha256"] == record["sample"]["sha256"]
    video = next(iter(sorted((data / "dfdc_train_part_0").glob("*.mp4"))))
    before = Predictor.from_path(parent).predict_video(video)["p_fake"]
    after = Predictor.from_path(tmp_path / "new" / "model.tar.gz").predict_video(video)["p_fake"]
    expected = 1 / (1 + np.exp(-(record["scale"] * np.log(before / (1 - before)) + record["bias"])))
    assert after == pytest.approx(expected, rel=1e-6)

    # the same from a SageMaker model package: registered beside its parent in the package group
    from aws_server import moto_server

    (tmp_path / "aws").mkdir()
    with moto_server(tmp_path / "aws") as aws:
        s3, sm = aws.client("s3"), aws.client("sagemaker")
        s3.create_bucket(Bucket="models")
        s3.upload_file(str(parent), "models", "deepfake/run1/model.tar.gz")
        sm.create_model_package_group(ModelPackageGroupName="detector")
        spec = {"Containers": [{"Image": "123456789012.dkr.ecr.us-east-1.amazonaws.com/pytorch-inference:2.5.1",
                                "ModelDataUrl": "s3://models/deepfake/run1/model.tar.gz"}],
                "SupportedContentTypes": ["video/mp4"], "SupportedResponseMIMETypes": ["application/json"]}
        parent_arn = sm.create_model_package(ModelPackageGroupName="detector", InferenceSpecification=spec,
                                             ModelApprovalStatus="Approved")["ModelPackageArn"]
        env.update(aws.env)
        out = deepfake("calibrate", "--model", parent_arn, "--data", str(data), "--out", str(tmp_path / "sm"),
                       "--folds", "3", "--register")
        packages = sm.list_model_packages(ModelPackageGroupName="detector", SortBy="CreationTime",
                                          SortOrder="Ascending")["ModelPackageSummaryList"]
        assert len(packages) == 2 and f"derived from {parent_arn}" in out
        derived = sm.describe_model_package(ModelPackageName=packages[1]["ModelPackageArn"])
        assert derived["ModelApprovalStatus"] == "PendingManualApproval"
        assert derived["CustomerMetadataProperties"]["DerivedFrom"] == parent_arn
        assert derived["CustomerMetadataProperties"]["RecalibrationSampleSha256"] == record["sample"]["sha256"]
        url = derived["InferenceSpecification"]["Containers"][0]["ModelDataUrl"]
        assert url.startswith("s3://models/deepfake/run1/recalibrated-") and url != spec["Containers"][0]["ModelDataUrl"]
        s3.download_file("models", url.split("/", 3)[3], str(tmp_path / "registered.tar.gz"))
        assert sha256_file(tmp_path / "registered.tar.gz") == sha256_file(tmp_path / "sm" / "model.tar.gz")
