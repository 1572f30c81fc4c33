"""Evaluation on a faces folder generated in the test: crops on disk, faces.csv, read_faces.

Most tests score with :class:`Brightness`, a real scorer whose output is a
known function of the pixels (its logit is that of the mean brightness), so
every metric has a value the test can compute independently; one test runs the
real model artifact.
"""

import json
import math

import cv2
import numpy as np
import pandas as pd
import pytest

from deepfake.core import paths
from deepfake.core.errors import ConfigError, DataError, ImageDecodeError, ManifestError, ModelError
from deepfake.core.files import sha256_file
from deepfake.data.dataset import read_rgb
from deepfake.data.faces_table import FACES_COLUMNS, read_faces
from deepfake.data.manifest import read_manifest, read_sidecar, write_manifest
from deepfake.media.extraction import ExtractConfig
from deepfake.scoring import metrics
from deepfake.scoring.aggregate import available
from deepfake.scoring.rule import ScoringRule
from deepfake.scoring.schema import SCHEMA_VERSION, read_evaluation, validate_evaluation
from deepfake.stages.evaluate import EvalConfig, evaluate, write_gated_model
from deepfake.stages.evaluation_tables import frame_predictions, score_faces

FRAMES = (0, 8, 16)
UNSCORED = {"broken": ("decode_error", "moov atom not found"), "blank": ("no_face", "no face in 3 sampled frames")}


class Brightness:
    """Scores a crop by its mean brightness: bright crops are 'fake' (the logit of brightness / 255).

    ``config`` plays the model artifact's: a training record and a scoring rule. Records its batch sizes.
    """

    version = "brightness-1"

    def __init__(self, training=None, temperature=1.0):
        self.batches = []
        self.config = {"scoring": {"temperature": temperature, "aggregation": "mean", "threshold": 0.5}}
        if training is not None:
            self.config["training"] = training

    def predict_logits(self, crops):
        self.batches.append(len(crops))
        p = np.array([float(c.mean()) / 255.0 for c in crops])
        return np.log(p / (1 - p))


def _face_row(video_id, label, manipulation, split, frame_idx=-1, face_idx=-1, path="", status="ok", reason=""):
    return {"video_id": video_id, "original_id": f"orig_{video_id}", "label": label, "manipulation": manipulation,
            "split": split, "frame_idx": frame_idx, "face_idx": face_idx,
            "box": "[0, 0, 24, 24]" if status == "ok" else "", "score": 0.99 if status == "ok" else float("nan"),
            "path": path, "status": status, "reason": reason}


def _crop(folder, name, level, rng):
    """A 24x24 crop around brightness ``level`` with some texture; returns its path relative to ``folder``."""
    pixels = np.clip(level + rng.integers(-20, 21, (24, 24, 3)), 0, 255).astype(np.uint8)
    rel = f"{paths.CROPS_DIR}/{name}.png"
    (folder / paths.CROPS_DIR).mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(folder / rel), pixels)
    return rel


def make_faces(folder, *, reals=4, fakes=("swap", "swap", "reenact", "reenact"), dark=70, bright=180):
    """A faces folder: test reals and fakes (3 frames, one frame of one fake with 2 faces),
    two unscored test videos, one train video. Returns the table of read_faces."""
    rng = np.random.default_rng(0)
    rows = []
    videos = [(f"real{i}", 0, "none") for i in range(reals)]
    videos += [(f"fake{i}", 1, m) for i, m in enumerate(fakes)]
    for n, (video_id, label, manipulation) in enumerate(videos):
        for frame in FRAMES:
            level = (bright if label else dark) + 5 * n + frame
            rows.append(_face_row(video_id, label, manipulation, "test", frame, 0,
                                  _crop(folder, f"{video_id}_{frame}_0", level, rng)))
            if video_id == "fake1" and frame == 8:    # a second, brighter face in this frame
                rows.append(_face_row(video_id, label, manipulation, "test", frame, 1,
                                      _crop(folder, f"{video_id}_{frame}_1", 250, rng)))
    for video_id, (status, reason) in UNSCORED.items():
        rows.append(_face_row(video_id, 1, "swap", "test", status=status, reason=reason))
    rows.append(_face_row("train0", 1, "swap", "train", 0, 0, _crop(folder, "train0_0_0", 200, rng)))
    write_manifest(pd.DataFrame(rows, columns=FACES_COLUMNS), folder / paths.FACES_MANIFEST)
    return read_faces(folder)


@pytest.fixture()
def faces(tmp_path):
    return make_faces(tmp_path / "faces")


def _strict_json(path):
    def refuse(token):
        raise ValueError(f"non-standard JSON constant {token}")

    return json.loads(path.read_text(), parse_constant=refuse)


def test_score_faces_scores_every_face_in_batches(faces):
    scorer = Brightness()
    preds = score_faces(scorer, faces, ScoringRule(), batch_size=5)
    ok = faces[faces["status"] == "ok"]
    assert len(preds) == len(ok) and sum(scorer.batches) == len(ok)
    assert max(scorer.batches) == 5
    assert list(preds.columns[:6]) == ["video_id", "frame_idx", "face_idx", "label", "manipulation", "original_id"]
    expected = [read_rgb(p).mean() / 255.0 for p in ok["abs_path"]]
    np.testing.assert_allclose(preds["p_fake"], expected)
    assert not set(UNSCORED) & set(preds["video_id"])


def test_frame_score_is_the_max_over_faces(faces):
    preds = score_faces(Brightness(), faces, ScoringRule())
    frames = frame_predictions(preds, ScoringRule())
    two = frames[(frames["video_id"] == "fake1") & (frames["frame_idx"] == 8)].iloc[0]
    faces_there = preds[(preds["video_id"] == "fake1") & (preds["frame_idx"] == 8)]
    assert two["n_faces"] == 2 and two["face_idx"] == 1
    assert two["p_fake"] == faces_there["p_fake"].max()
    assert len(frames) == len(preds) - 1


def test_evaluate_end_to_end(faces, tmp_path):
    out = tmp_path / "eval"
    config = EvalConfig(operating_point="fixed", batch_size=7, n_worst=3)
    ev = evaluate(Brightness(), faces, out, config, model_path="somewhere/model")

    on_disk = _strict_json(out / paths.EVALUATION)
    assert on_disk == json.loads(json.dumps(ev))
    assert read_evaluation(out) == on_disk
    assert ev["schema_version"] == SCHEMA_VERSION
    assert ev["model"] == {"version": "brightness-1", "path": "somewhere/model", "sha256": None,
                           "archive_sha256": None}
    assert (ev["split"], ev["fakes"], ev["aggregation"], ev["threshold"]) == ("test", "split", "mean", 0.5)
    assert ev["scoring"] == {"temperature": 1.0, "aggregation": "mean", "threshold": 0.5, "video_scale": 1.0,
                            "video_bias": 0.0}

    frames = read_manifest(out / paths.FRAME_PREDICTIONS)
    videos = read_manifest(out / paths.VIDEO_PREDICTIONS)
    assert read_sidecar(out / paths.VIDEO_PREDICTIONS)["config"] == config.to_dict()
    # Unscored and train videos are in neither table; every scored video is in both.
    scored = {f"real{i}" for i in range(4)} | {f"fake{i}" for i in range(4)}
    assert set(videos["video_id"]) == scored and set(frames["video_id"]) == scored
    assert len(frames) == 8 * len(FRAMES)

    # Metrics recomputed independently from the tables.
    m = ev["metrics"]
    assert m["video_auc"] == 1.0 and m["frame_auc"] == 1.0 and m["video_eer"] == 0.0
    assert m["video_log_loss"] == pytest.approx(metrics.log_loss(videos["label"], videos["p_fake"]))
    assert m["frame_ece"] == pytest.approx(metrics.expected_calibration_error(frames["label"], frames["p_fake"]))
    means = frames.groupby("video_id")["p_fake"].mean()
    np.testing.assert_allclose(videos.set_index("video_id")["p_fake"], means.loc[videos["video_id"]])
    assert all(isinstance(v, float) or v is None for v in m.values())
    assert m["video_ece_uncalibrated"] == pytest.approx(m["video_ece"])     # temperature 1: nothing to change
    assert m["video_false_positive_rate"] == 0.0
    assert m["unseen_video_auc"] is None and "does not record" in ev["undefined_metrics"]["unseen_video_auc"]
    assert set(ev["undefined_metrics"]) == {"unseen_video_auc", "seen_video_auc"}

    assert set(ev["by_aggregation"]) == set(available())
    assert ev["by_aggregation"]["mean"]["auc"] == m["video_auc"]
    for name in available():
        assert f"p_fake_{name}" in videos.columns

    assert ev["counts"] == {
        "videos_total": 10, "videos_scored": 8, "videos_unscored": 2, "videos_failed": 1, "videos_no_face": 1,
        "videos_other_status": 0, "real_videos": 4, "fake_videos": 4, "frames_scored": 24, "faces_scored": 25,
    }
    assert ev["unscored_videos"] == [
        {"video_id": "blank", "status": "no_face", "reason": UNSCORED["blank"][1]},
        {"video_id": "broken", "status": "decode_error", "reason": UNSCORED["broken"][1]},
    ]

    rows = {r["manipulation"]: r for r in ev["per_manipulation"]}
    assert [r["manipulation"] for r in ev["per_manipulation"]] == ["none", "reenact", "swap"]
    assert rows["swap"]["n_videos"] == 2 and rows["swap"]["auc"] == 1.0 and rows["swap"]["accuracy"] == 1.0
    assert rows["none"]["auc"] is None and "measured against them" in rows["none"]["note"]
    assert rows["swap"]["seen_in_training"] is None and rows["none"]["seen_in_training"] is None

    bcm = ev["binary_classification_metrics"]
    assert bcm["confusion_matrix"] == {"0": {"0": 4, "1": 0}, "1": {"0": 0, "1": 4}}
    assert bcm["auc"] == {"value": 1.0, "standard_deviation": "NaN"}
    roc = bcm["receiver_operating_characteristic_curve"]
    assert roc["false_positive_rates"][0] == 0.0 and roc["true_positive_rates"][-1] == 1.0
    assert ev["worst_errors"] == []


def test_threshold_and_worst_errors(faces, tmp_path):
    # At threshold 0.95 the bright fakes (p ~0.75-0.9) are called real: all fakes are errors.
    ev = evaluate(Brightness(), faces, tmp_path / "eval", EvalConfig(operating_point="fixed", threshold=0.95, n_worst=3))
    assert ev["metrics"]["video_recall"] == 0.0 and ev["metrics"]["video_precision"] is None
    assert "video_precision" in ev["undefined_metrics"]
    assert "precision" not in ev["binary_classification_metrics"]
    worst = ev["worst_errors"]
    assert len(worst) == 3 and all(w["label"] == 1 for w in worst)
    assert [w["p_fake"] for w in worst] == sorted(w["p_fake"] for w in worst)   # least fake-looking fake first
    assert ev["metrics"]["video_auc"] == 1.0      # ranking does not depend on the threshold


def test_headline_aggregation_is_configurable(faces, tmp_path):
    ev = evaluate(Brightness(), faces, tmp_path / "eval", EvalConfig(operating_point="fixed", aggregation="max"))
    assert ev["aggregation"] == "max"
    assert ev["metrics"]["video_log_loss"] == ev["by_aggregation"]["max"]["log_loss"]
    videos = read_manifest(tmp_path / "eval" / paths.VIDEO_PREDICTIONS)
    np.testing.assert_allclose(videos["p_fake"], videos["p_fake_max"])


def test_single_class_split_writes_null_auc_with_reason(tmp_path):
    faces = make_faces(tmp_path / "faces", reals=0)
    ev = evaluate(Brightness(), faces, tmp_path / "eval", EvalConfig(operating_point="fixed"))
    assert ev["metrics"]["video_auc"] is None and ev["metrics"]["frame_auc"] is None
    assert "both real and fake" in ev["undefined_metrics"]["video_auc"]
    assert "auc" not in ev["binary_classification_metrics"]
    assert "receiver_operating_characteristic_curve" not in ev["binary_classification_metrics"]
    assert "no real video" in ev["per_manipulation"][0]["note"]
    assert _strict_json(tmp_path / "eval" / paths.EVALUATION)["metrics"]["video_auc"] is None


def test_real_model_artifact(faces, tmp_path):
    from deepfake.modeling.artifact import load_artifact, save_artifact
    from deepfake.modeling.network import build_model

    torch = pytest.importorskip("torch")
    torch.manual_seed(0)
    model_dir = save_artifact(build_model(image_size=64), tmp_path / "model", {"image_size": 64})
    loaded = load_artifact(model_dir)
    ev = evaluate(loaded, faces, tmp_path / "eval", EvalConfig(operating_point="fixed", batch_size=8))
    validate_evaluation(ev)
    assert ev["model"]["version"] == loaded.version and ev["model"]["path"] == str(model_dir)
    assert ev["model"]["sha256"] == sha256_file(model_dir / "model.safetensors") and ev["model"]["archive_sha256"] is None
    assert ev["model"]["version"].endswith(ev["model"]["sha256"][:12])
    assert ev["counts"]["videos_scored"] == 8

    ok = faces[(faces["status"] == "ok") & (faces["split"] == "test")]
    direct = ScoringRule.from_model_config(loaded.config).face_probabilities(
        loaded.predict_logits([read_rgb(p) for p in ok["abs_path"]]))
    expected = ok.assign(p=direct).groupby(["video_id", "frame_idx"])["p"].max()
    frames = read_manifest(tmp_path / "eval" / paths.FRAME_PREDICTIONS).set_index(["video_id", "frame_idx"])
    np.testing.assert_array_equal(frames["p_fake"].sort_index(), expected.sort_index())   # batches of 8 or 4: same


def test_only_unscorable_videos_is_an_error(tmp_path):
    faces = make_faces(tmp_path / "faces")
    faces = faces[faces["video_id"].isin(list(UNSCORED))]
    with pytest.raises(DataError, match="no video of split 'test' has a face"):
        evaluate(Brightness(), faces, tmp_path / "eval", EvalConfig(operating_point="fixed"))
    assert not (tmp_path / "eval" / paths.EVALUATION).exists()


def test_unknown_split_and_missing_columns(faces, tmp_path):
    with pytest.raises(DataError, match="splits present: test, train"):
        evaluate(Brightness(), faces, tmp_path / "eval", EvalConfig(operating_point="fixed", split="val"))
    ev = evaluate(Brightness(), faces, tmp_path / "all", EvalConfig(operating_point="fixed", split="all"))
    assert ev["counts"]["videos_scored"] == 9
    with pytest.raises(ManifestError, match="abs_path"):
        score_faces(Brightness(), faces.drop(columns="abs_path"), ScoringRule())
    with pytest.raises(ManifestError, match="status"):
        evaluate(Brightness(), faces.drop(columns="status"), tmp_path / "eval", EvalConfig(operating_point="fixed"))
    unlabeled = faces.assign(label=np.where(faces["video_id"] == "real0", np.nan, faces["label"]))
    with pytest.raises(DataError, match="no 0/1 label"):
        evaluate(Brightness(), unlabeled, tmp_path / "eval", EvalConfig(operating_point="fixed"))


def test_model_and_crop_failures_are_named(faces, tmp_path):
    class Short(Brightness):
        def predict_logits(self, crops):
            return super().predict_logits(crops)[:-1]

    class Diverged(Brightness):
        def predict_logits(self, crops):
            return super().predict_logits(crops) * np.inf

    with pytest.raises(ModelError, match="one logit per crop"):
        score_faces(Short(), faces, ScoringRule())
    with pytest.raises(ModelError, match="non-finite logits"):
        score_faces(Diverged(), faces, ScoringRule())
    missing = faces.copy()
    missing.loc[missing.index[0], "abs_path"] = str(tmp_path / "gone.png")
    with pytest.raises(ImageDecodeError, match="gone.png"):
        score_faces(Brightness(), missing, ScoringRule())


def test_eval_config_is_strict():
    assert EvalConfig().to_dict() == {"aggregation": "mean", "operating_point": "target_fpr", "target_fpr": 0.05,
                                      "threshold": 0.5, "batch_size": 64, "split": "test",
                                      "n_worst": 12, "ece_bins": 10, "fakes": "auto"}
    assert EvalConfig.from_dict({"threshold": "0.7"}).threshold == 0.7
    with pytest.raises(ConfigError, match="known settings"):
        EvalConfig.from_dict({"treshold": 0.7})
    with pytest.raises(ConfigError, match="available: confident_fake"):
        EvalConfig(operating_point="fixed", aggregation="vote")
    for bad in ({"threshold": 2.0}, {"batch_size": 0}, {"n_worst": -1}, {"ece_bins": 0}, {"fakes": "some"}):
        with pytest.raises(ConfigError):
            EvalConfig.from_dict(bad)


def test_validate_evaluation_names_each_problem(faces, tmp_path):
    ev = evaluate(Brightness(), faces, tmp_path / "eval", EvalConfig(operating_point="fixed"))
    validate_evaluation(ev)

    broken = json.loads(json.dumps(ev))
    del broken["counts"]
    with pytest.raises(ManifestError, match="missing key 'counts'"):
        validate_evaluation(broken)

    broken = json.loads(json.dumps(ev))
    broken["metrics"]["video_auc"] = "0.9"
    broken["metrics"]["frame_auc"] = math.nan
    del broken["metrics"]["video_eer"]
    broken["counts"]["videos_scored"] = 8.0
    broken["schema_version"] = 99
    broken["unscored_videos"].append({"video_id": "x"})
    with pytest.raises(ManifestError) as info:
        validate_evaluation(broken)
    message = str(info.value)
    for part in ("metrics.video_auc", "metrics.frame_auc", "lacks 'video_eer'", "counts.videos_scored",
                 "schema_version is 99", "unscored_videos[2]"):
        assert part in message

    (tmp_path / "bad.json").write_text("[1, 2]")
    with pytest.raises(ManifestError, match="JSON object"):
        read_evaluation(tmp_path / "bad.json")


SELF_BLEND = {"mode": "self_blend", "backbone": "efficientnet-lite0", "manipulations_seen": [],
              "pseudo_fakes": "self_blend"}


def test_seen_and_unseen_manipulations(faces, tmp_path):
    """A model that trained on 'swap' fakes: swap is seen, reenact unseen, each with its AUC."""
    training = {**SELF_BLEND, "mode": "dataset", "manipulations_seen": ["swap"], "pseudo_fakes": None}
    ev = evaluate(Brightness(training), faces, tmp_path / "eval", EvalConfig(operating_point="fixed"))
    rows = {r["manipulation"]: r for r in ev["per_manipulation"]}
    assert rows["swap"]["seen_in_training"] is True and rows["reenact"]["seen_in_training"] is False
    assert rows["none"]["seen_in_training"] is None
    assert ev["metrics"]["unseen_video_auc"] == rows["reenact"]["auc"] == 1.0
    assert ev["metrics"]["seen_video_auc"] == rows["swap"]["auc"]
    assert ev["training"] == training and ev["fakes"] == "split"      # it saw fakes: only the split's
    with pytest.raises(ConfigError, match="fakes='all'.*trained on fakes"):
        evaluate(Brightness(training), faces, tmp_path / "eval", EvalConfig(operating_point="fixed", fakes="all"))
    with pytest.raises(ConfigError, match="does not record"):
        evaluate(Brightness(), faces, tmp_path / "eval", EvalConfig(operating_point="fixed", fakes="all"))


def test_a_model_that_saw_no_fake_is_tested_on_every_fake(faces, tmp_path):
    """fakes='auto' after self-blended training: the test reals against the fakes of every split."""
    ev = evaluate(Brightness(SELF_BLEND), faces, tmp_path / "eval", EvalConfig(operating_point="fixed"))
    assert ev["fakes"] == "all"
    assert ev["counts"]["fake_videos"] == 5                                 # the 4 test fakes and train0
    assert ev["counts"]["real_videos"] == 4
    assert ev["metrics"]["unseen_video_auc"] == ev["metrics"]["video_auc"]
    assert ev["metrics"]["seen_video_auc"] is None
    assert "no fake of a manipulation seen" in ev["undefined_metrics"]["seen_video_auc"]
    assert all(r["seen_in_training"] is False for r in ev["per_manipulation"] if r["label"] == 1)
    split_only = evaluate(Brightness(SELF_BLEND), faces, tmp_path / "split", EvalConfig(operating_point="fixed", fakes="split"))
    assert split_only["counts"]["fake_videos"] == 4


def test_temperature_changes_calibration_not_ranking(faces, tmp_path):
    plain = evaluate(Brightness(SELF_BLEND), faces, tmp_path / "a", EvalConfig(operating_point="fixed"))
    warm = evaluate(Brightness(SELF_BLEND, temperature=0.25), faces, tmp_path / "b", EvalConfig(operating_point="fixed"))
    assert warm["scoring"]["temperature"] == 0.25
    assert warm["metrics"]["video_auc"] == plain["metrics"]["video_auc"]
    assert warm["metrics"]["video_ece_uncalibrated"] == pytest.approx(plain["metrics"]["video_ece"])
    assert warm["metrics"]["video_ece"] != pytest.approx(plain["metrics"]["video_ece"])
    videos = read_manifest(tmp_path / "b" / paths.VIDEO_PREDICTIONS)
    assert (videos.loc[videos["label"] == 1, "p_fake"] > 0.95).all()        # sharper: logits x 4


def test_the_gated_model_carries_the_evaluated_rule(faces, tmp_path):
    from deepfake.modeling.artifact import load_artifact, read_artifact_config, save_artifact
    from deepfake.modeling.network import build_model

    model_dir = save_artifact(build_model(image_size=32), tmp_path / "model",
                              {"image_size": 32, "scoring": {"temperature": 1.7, "aggregation": "mean",
                                                              "threshold": 0.5}, "training": SELF_BLEND})
    loaded = load_artifact(model_dir)
    ev = evaluate(loaded, faces, tmp_path / "eval", EvalConfig(operating_point="fixed", aggregation="max", threshold=0.6))
    gated = write_gated_model(loaded.path, ev, tmp_path / "eval" / "model")
    config = read_artifact_config(gated)
    assert config["scoring"] == {"temperature": 1.7, "aggregation": "max", "threshold": 0.6, "video_scale": 1.0,
                                 "video_bias": 0.0}
    assert config["metrics"]["video_auc"] == ev["metrics"]["video_auc"]
    assert (gated / "model.safetensors").read_bytes() == (model_dir / "model.safetensors").read_bytes()
    assert load_artifact(gated).version == loaded.version
    assert "`max` of frames" in (gated / "model_card.md").read_text()


def test_the_evaluation_says_which_protocol_its_split_follows(tmp_path):
    """The protocol record of videos.csv travels in faces.csv's sidecar into evaluation.json."""
    from deepfake.data.splits import ensure_splits

    faces = make_faces(tmp_path / "faces")
    videos = faces.drop_duplicates("video_id")[["video_id", "label", "original_id", "split"]]
    record = ensure_splits(videos).attrs["protocol"]
    table = tmp_path / "faces" / paths.FACES_MANIFEST
    write_manifest(read_manifest(table), table, extra={"protocol": record})
    faces = read_faces(tmp_path / "faces")
    ev = evaluate(Brightness(), faces, tmp_path / "eval", EvalConfig(operating_point="fixed"))
    assert ev["protocol"] == record and record["follows"] == "official"
    assert read_evaluation(tmp_path / "eval")["protocol"]["splits"] == record["splits"]
    assert evaluate(Brightness(), make_faces(tmp_path / "bare"), tmp_path / "eval2", EvalConfig(operating_point="fixed"))["protocol"] is None
    with pytest.raises(ManifestError, match="protocol must be null or an object"):
        validate_evaluation({**ev, "protocol": "official"})


def test_faces_detected_otherwise_than_the_training_faces_are_refused(faces, tmp_path):
    scorer = Brightness()
    scorer.config["extract"] = ExtractConfig().to_dict()
    other = ExtractConfig(detector="mtcnn-track").to_dict()
    with pytest.raises(ConfigError, match="detector: model 'mtcnn', faces 'mtcnn-track'"):
        evaluate(scorer, faces, tmp_path / "eval", EvalConfig(operating_point="fixed"), extraction=other)
    assert not (tmp_path / "eval" / paths.EVALUATION).exists()
    evaluate(scorer, faces, tmp_path / "eval", EvalConfig(operating_point="fixed"),
             extraction=ExtractConfig(workers=2).to_dict())


def _val_predictions(levels, label=0):
    """val_predictions.csv rows as training writes them: one face per frame, logits of brightness levels."""
    rows = []
    for v, level in enumerate(levels):
        for frame in FRAMES:
            p = (level + frame) / 255.0
            rows.append({"video_id": f"val{label}_{v}", "label": label, "manipulation": "none" if not label else "x",
                         "frame_idx": frame, "face_idx": 0, "logit": math.log(p / (1 - p))})
    return pd.DataFrame(rows)


def test_the_threshold_is_chosen_for_a_target_share_of_val_reals(faces, tmp_path):
    """operating_point target_fpr: the lowest threshold calling at most target_fpr of the val split's real
    videos fake, scored by the rule the model serves (its temperature, the evaluation's aggregation); the
    gated model records it; too few reals for the target are flagged."""
    levels = list(range(40, 140, 5))                              # 20 real val videos
    val = pd.concat([_val_predictions(levels), _val_predictions([200], label=1)])
    ev = evaluate(Brightness(), faces, tmp_path / "eval", EvalConfig(target_fpr=0.05), val_predictions=val)
    video_p = sorted(((lv + 8) / 255.0 for lv in levels), reverse=True)    # mean over frames 0, 8, 16
    point = ev["operating_point"]
    assert point["method"] == "target_fpr" and point["n_real_videos"] == 20 and point["supported"]
    assert video_p[1] < ev["threshold"] <= video_p[0] and point["achieved_fpr"] == 0.05
    assert ev["scoring"]["threshold"] == ev["threshold"] and point["warning"] is None
    assert ev["metrics"]["video_tpr_at_fpr_5"] is not None
    gated = write_gated_model_config(ev, tmp_path)
    assert gated["operating_point"]["target_fpr"] == 0.05 and gated["scoring"]["threshold"] == ev["threshold"]

    few = evaluate(Brightness(), faces, tmp_path / "few", EvalConfig(target_fpr=0.05),
                   val_predictions=_val_predictions(levels[:5]))
    assert not few["operating_point"]["supported"] and "needs at least 20" in few["operating_point"]["warning"]
    assert few["threshold"] > max((lv + 8) / 255.0 for lv in levels[:5])
    with pytest.raises(ConfigError, match="val_predictions.csv"):
        evaluate(Brightness(), faces, tmp_path / "none", EvalConfig())
    with pytest.raises(ConfigError, match="target_fpr"):
        EvalConfig(target_fpr=0.0)


def write_gated_model_config(ev, tmp_path):
    from deepfake.modeling.artifact import read_artifact_config, save_artifact
    from deepfake.modeling.network import build_model

    model = save_artifact(build_model(image_size=32), tmp_path / "model", {"image_size": 32})
    return read_artifact_config(write_gated_model(model, ev, tmp_path / "gated"))


def test_the_model_operating_point_keeps_the_served_threshold(faces, tmp_path):
    scorer = Brightness()
    scorer.config["scoring"]["threshold"] = 0.61
    scorer.config["operating_point"] = {"method": "target_fpr", "target_fpr": 0.01}
    ev = evaluate(scorer, faces, tmp_path / "eval", EvalConfig(operating_point="model", threshold=0.2))
    assert ev["threshold"] == 0.61 and ev["operating_point"]["chosen_as"]["target_fpr"] == 0.01


def test_catch_rates_at_fixed_false_positive_rates():
    from deepfake.scoring.operating_point import threshold_for_fpr, tpr_at_fpr

    reals = np.linspace(0.0, 0.99, 100)                         # 100 reals
    fakes = np.array([0.5, 0.95, 0.985, 0.995])
    labels = np.r_[np.zeros(100), np.ones(4)]
    scores = np.r_[reals, fakes]
    assert threshold_for_fpr(reals, 0.01).achieved_fpr == 0.01
    assert tpr_at_fpr(labels, scores, 0.01) == 0.5               # above the 2nd-highest real (0.98)
    assert tpr_at_fpr(labels, scores, 0.05) == 0.75              # above the 6th (0.94)
    assert tpr_at_fpr(labels, scores, 0.10) == 0.75
    assert tpr_at_fpr(np.zeros(3), [0.1, 0.2, 0.3], 0.05) is None
    tied = threshold_for_fpr([0.3, 0.3, 0.3, 0.1], 0.25)         # ties: never more than the target flagged
    assert tied.achieved_fpr == 0.0 and tied.threshold > 0.3


def test_too_few_reals_give_a_prediction_bound_not_the_highest_score():
    """With fewer than 1 / target reals the highest score is about their n/(n+1) quantile (a 20 % false-positive
    rate with 4): the threshold is the normal prediction bound of their log-odds (Student's t), never lower."""
    from deepfake.scoring.operating_point import prediction_bound, student_t_quantile, threshold_for_fpr

    assert student_t_quantile(0.95, 3) == pytest.approx(2.3534, abs=1e-3)     # the table's values
    assert student_t_quantile(0.95, 1) == pytest.approx(6.3138, abs=1e-3)
    assert student_t_quantile(0.99, 20) == pytest.approx(2.5280, abs=1e-3)
    reals = [0.002, 0.026, 0.01, 0.006]
    z = np.log(np.array(reals) / (1 - np.array(reals)))
    expected = z.mean() + 2.35336 * z.std(ddof=1) * math.sqrt(1 + 1 / 4)
    assert prediction_bound(reals, 0.05) == pytest.approx(1 / (1 + math.exp(-expected)), rel=1e-4)
    small = threshold_for_fpr(reals, 0.05)
    assert small.estimate == "prediction bound" and small.threshold > 0.026 and not small.supported
    assert "normal prediction bound" in small.warning()
    tight = threshold_for_fpr([0.1, 0.1, 0.1], 0.05)               # no spread: just above the highest score
    assert tight.estimate == "empirical" and tight.threshold > 0.1
    assert threshold_for_fpr(np.linspace(0.01, 0.4, 40), 0.05).estimate == "empirical"


def test_sharded_scoring_merges_to_the_single_instance_evaluation(tmp_path):
    """The pipeline's evaluation at scale: crops packed into tars, instances score their share of the
    tars (face logits), one evaluation merges them: the same evaluation.json as one instance scoring all."""
    import shutil

    from deepfake.data.shards import pack
    from deepfake.modeling.artifact import load_artifact, save_artifact
    from deepfake.modeling.network import build_model
    from deepfake.stages.evaluate import read_face_logits, score_shard

    torch = pytest.importorskip("torch")
    torch.manual_seed(0)
    loaded = load_artifact(save_artifact(build_model(image_size=64), tmp_path / "model", {"image_size": 64}))
    config = EvalConfig(batch_size=8, operating_point="fixed")
    faces = make_faces(tmp_path / "faces")
    single = evaluate(loaded, faces, tmp_path / "single", config)

    pack(faces, tmp_path / "faces", tmp_path / "tars", mode="evaluate", shard_bytes=2000, name="algo-1")
    tars = sorted((tmp_path / "tars").rglob("*.tar"))
    assert len(tars) >= 3
    for i, host in enumerate(("algo-1", "algo-2")):                 # ShardedByS3Key: every other object
        mine = tmp_path / host
        mine.mkdir()
        for tar in tars[i::2]:
            shutil.copy(tar, mine / tar.name)
        shard = read_faces(tmp_path / "faces", crops_dir=mine)
        assert 0 < (shard["abs_path"] != "").sum() < (faces["abs_path"] != "").sum()
        score_shard(loaded, shard, tmp_path / "logits", name=host, batch_size=8)
    merged = evaluate(loaded, read_faces(tmp_path / "faces", crops_dir=tmp_path / "tars"), tmp_path / "merged",
                      config, face_logits=read_face_logits(tmp_path / "logits"))

    assert {k: v for k, v in merged.items() if k != "created"} == {k: v for k, v in single.items() if k != "created"}
    for table in (paths.FRAME_PREDICTIONS, paths.VIDEO_PREDICTIONS):
        assert (tmp_path / "merged" / table).read_bytes() == (tmp_path / "single" / table).read_bytes()
    (tmp_path / "logits" / "face_logits-algo-2.csv").unlink()       # an instance's share missing: said, not guessed
    with pytest.raises(DataError, match="have no logit from the score step's shards"):
        evaluate(loaded, faces, tmp_path / "partial", config, face_logits=read_face_logits(tmp_path / "logits"))
