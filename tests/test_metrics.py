import json
import math

import numpy as np
import pytest
from sklearn import metrics as skm
from sklearn.calibration import calibration_curve

from deepfake.core.errors import ConfigError, DataError
from deepfake.scoring import metrics

# A small case worked out by hand (see each test): scores sorted 0.9(f) 0.6(r) 0.4(f) 0.1(r).
Y = [0, 0, 1, 1]
P = [0.1, 0.6, 0.4, 0.9]


def test_hand_computed_values():
    # 3 of the 4 real/fake pairs are ordered right.
    assert metrics.roc_auc(Y, P) == pytest.approx(0.75)
    # ROC points (0,0) (0,.5) (.5,.5) (.5,1) (1,1): it meets fpr = 1 - tpr at (.5, .5).
    assert metrics.eer(Y, P) == pytest.approx(0.5)
    # Precision at each fake: 1/1 then 2/3, each weighted by a recall step of 1/2.
    assert metrics.average_precision(Y, P) == pytest.approx(0.5 * 1 + 0.5 * 2 / 3)
    assert metrics.log_loss(Y, P) == pytest.approx(-(math.log(0.9) + math.log(0.4) + math.log(0.9) + math.log(0.4)) / 4)
    assert metrics.accuracy(Y, P) == 0.5
    # Each sample alone in its bin: gaps .1, .6 (fake at .4), .6 (real at .6), .1.
    assert metrics.expected_calibration_error(Y, P) == pytest.approx(1.4 / 4)
    assert metrics.confusion_matrix(Y, P).tolist() == [[1, 1], [1, 1]]


def test_ties_count_one_half():
    assert metrics.roc_auc([0, 1], [0.5, 0.5]) == 0.5
    # pairs (r, f): (.2,.5) 1, (.2,.8) 1, (.5,.5) 1/2, (.5,.8) 1
    assert metrics.roc_auc([0, 0, 1, 1], [0.2, 0.5, 0.5, 0.8]) == pytest.approx(3.5 / 4)
    assert metrics.eer([0, 1], [0.5, 0.5]) == pytest.approx(0.5)


def test_eer_interpolates_between_roc_points():
    # Points (0,0) (.5,1) (1,1): fpr = t/2 and fnr = 1 - t meet at t = 2/3.
    assert metrics.eer([0, 0, 1], [0.3, 0.6, 0.6]) == pytest.approx(1 / 3)
    assert metrics.eer([0, 0, 1, 1], [0.1, 0.2, 0.8, 0.9]) == 0.0
    assert metrics.eer([0, 0, 1, 1], [0.8, 0.9, 0.1, 0.2]) == 1.0


def test_threshold_is_inclusive_and_checked():
    assert metrics.predicted_labels([0.49, 0.5, 0.51]).tolist() == [0, 1, 1]
    assert metrics.accuracy([0, 1], [0.3, 0.7], threshold=0.8) == 0.5
    with pytest.raises(ConfigError, match="threshold"):
        metrics.accuracy([0, 1], [0.3, 0.7], threshold=1.5)


def test_log_loss_clips_certain_mistakes():
    value = metrics.log_loss([1, 0], [0.0, 1.0])
    assert math.isfinite(value)
    assert value == pytest.approx(-math.log(metrics.LOG_LOSS_EPS))


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("decimals", [1, 2, 6])   # 1 decimal: many ties
def test_agrees_with_sklearn(seed, decimals):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(5, 80))
    y = rng.integers(0, 2, n)
    y[:2] = [0, 1]
    p = np.round(np.clip(rng.normal(0.35 + 0.3 * y, 0.25), 0, 1), decimals)

    assert metrics.roc_auc(y, p) == pytest.approx(skm.roc_auc_score(y, p))
    assert metrics.average_precision(y, p) == pytest.approx(skm.average_precision_score(y, p))
    assert metrics.log_loss(y, p) == pytest.approx(skm.log_loss(y, p))
    for drop in (True, False):
        for ours, theirs in zip(metrics.roc_curve(y, p, drop_intermediate=drop),
                                skm.roc_curve(y, p, drop_intermediate=drop)):
            np.testing.assert_allclose(ours, theirs)
    for ours, theirs in zip(metrics.precision_recall_curve(y, p), skm.precision_recall_curve(y, p)):
        np.testing.assert_allclose(ours, theirs)
    pred = (p >= 0.5).astype(int)
    np.testing.assert_array_equal(metrics.confusion_matrix(y, p), skm.confusion_matrix(y, pred, labels=[0, 1]))
    m = metrics.binary_metrics(y, p)
    assert m["accuracy"] == pytest.approx(skm.accuracy_score(y, pred))
    if m["precision"] is not None:
        assert m["precision"] == pytest.approx(skm.precision_score(y, pred))
    assert m["recall"] == pytest.approx(skm.recall_score(y, pred))
    assert m["f1"] == pytest.approx(skm.f1_score(y, pred))

    curve = metrics.reliability_curve(y, p, 10)
    fraction, mean_p = calibration_curve(y, p, n_bins=10, strategy="uniform")
    used = curve.counts > 0
    np.testing.assert_allclose(curve.accuracy[used], fraction)
    np.testing.assert_allclose(curve.confidence[used], mean_p)
    assert curve.counts.sum() == n and np.isnan(curve.accuracy[~used]).all()


def test_eer_agrees_with_roc_curve_crossing():
    rng = np.random.default_rng(3)
    y = rng.integers(0, 2, 500)
    p = np.clip(rng.normal(0.4 + 0.2 * y, 0.2), 0, 1)
    fpr, tpr, _ = skm.roc_curve(y, p)
    nearest = fpr[np.argmin(np.abs(fpr - (1 - tpr)))]
    assert metrics.eer(y, p) == pytest.approx(nearest, abs=0.01)


def test_single_class_metrics_are_none_with_a_reason():
    m = metrics.binary_metrics([1, 1, 1], [0.2, 0.7, 0.9])
    assert m["auc"] is None and m["eer"] is None
    assert "both real and fake" in m["undefined"]["auc"]
    assert m["ap"] == 1.0 and m["recall"] == pytest.approx(2 / 3)
    assert (m["n"], m["n_real"], m["n_fake"]) == (3, 0, 3)

    m = metrics.binary_metrics([0, 0], [0.1, 0.2])
    for key in ("auc", "eer", "ap", "recall", "precision", "f1"):
        assert m[key] is None and m["undefined"][key]
    assert m["accuracy"] == 1.0 and m["log_loss"] is not None
    json.dumps(m)   # JSON-ready: Python types only

    with pytest.raises(DataError, match="both real and fake"):
        metrics.roc_curve([1, 1], [0.1, 0.2])
    with pytest.raises(DataError, match="fake samples"):
        metrics.precision_recall_curve([0, 0], [0.1, 0.2])


def test_precision_undefined_when_nothing_is_called_fake():
    m = metrics.binary_metrics([0, 1], [0.1, 0.2])
    assert m["precision"] is None and "nothing is predicted fake" in m["undefined"]["precision"]
    assert m["recall"] == 0.0 and m["f1"] == 0.0


@pytest.mark.parametrize(("y", "p", "match"), [
    ([], [], "empty"),
    ([0, 1], [0.5], "2 labels but 1 scores"),
    ([0, 2], [0.5, 0.5], "0 \\(real\\) or 1 \\(fake\\)"),
    (["a", "b"], [0.5, 0.5], "0 \\(real\\) or 1 \\(fake\\)"),
    ([0, 1], [0.5, float("nan")], "finite"),
    ([0, 1], [0.5, 1.2], "\\[0, 1\\]"),
    ([[0, 1]], [[0.5, 0.5]], "one-dimensional"),
])
def test_bad_inputs_raise_data_error(y, p, match):
    with pytest.raises(DataError, match=match):
        metrics.binary_metrics(y, p)


def test_accepts_bools_and_floats_and_lists():
    assert metrics.roc_auc([False, True], [0.1, 0.9]) == 1.0
    assert metrics.roc_auc(np.array([0.0, 1.0]), [0.1, 0.9]) == 1.0
    # Ranking metrics take any finite score, not only probabilities.
    assert metrics.roc_auc([0, 1], [-3.0, 7.0]) == 1.0


def test_ece_bins_and_edges():
    # 0.9 sits on an inner edge: it falls in the lower bin (0.8, 0.9], as sklearn.
    curve = metrics.reliability_curve([1], [0.9], n_bins=10)
    assert curve.counts.tolist() == [0] * 8 + [1, 0]
    np.testing.assert_allclose(curve.centers, np.arange(10) / 10 + 0.05)
    assert metrics.expected_calibration_error([0, 1], [0.0, 1.0]) == 0.0
    assert metrics.expected_calibration_error([0, 1], [0.5, 0.5], n_bins=1) == 0.0
    with pytest.raises(ConfigError, match="n_bins"):
        metrics.reliability_curve([0], [0.5], n_bins=0)
