"""Temperature scaling: recovers the temperature that made the logits, never changes the ranking."""

from __future__ import annotations

import numpy as np
import pytest

from deepfake.core.errors import DataError
from deepfake.modeling.calibration import fit_temperature, log_loss, probabilities


def test_probabilities_are_a_stable_sigmoid():
    z = np.array([-800.0, -2.0, 0.0, 2.0, 800.0])
    p = probabilities(z)
    assert p.tolist() == pytest.approx([0.0, 1 / (1 + np.exp(2)), 0.5, 1 / (1 + np.exp(-2)), 1.0])
    assert probabilities(z, 2.0)[3] == pytest.approx(1 / (1 + np.exp(-1)))
    assert log_loss(np.array([0.0]), np.array([1])) == pytest.approx(np.log(2))


def test_fit_recovers_the_temperature_of_overconfident_logits():
    rng = np.random.default_rng(0)
    true_logits = rng.normal(0, 2, 20000)
    labels = (rng.random(20000) < probabilities(true_logits)).astype(int)
    fit = fit_temperature(true_logits * 3.0, labels)        # 3x overconfident
    assert fit.temperature == pytest.approx(3.0, rel=0.05)
    assert fit.nll_after < fit.nll_before
    assert fit.nll_after == pytest.approx(log_loss(true_logits, labels), rel=1e-3)
    assert fit_temperature(true_logits / 2.0, labels).temperature == pytest.approx(0.5, rel=0.05)


def test_fit_needs_both_classes_and_finite_logits():
    with pytest.raises(DataError, match="real and fake"):
        fit_temperature(np.array([1.0, 2.0]), np.array([1, 1]))
    with pytest.raises(DataError, match="non-finite"):
        fit_temperature(np.array([np.nan, 2.0]), np.array([0, 1]))
    with pytest.raises(DataError, match="one label per logit"):
        fit_temperature(np.array([1.0]), np.array([0, 1]))
