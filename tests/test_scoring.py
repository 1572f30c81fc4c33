"""The one scoring rule: calibration, most fake face per frame, aggregation, threshold."""

from __future__ import annotations

import numpy as np
import pytest

from deepfake.core.errors import ConfigError, DataError
from deepfake.modeling.calibration import probabilities
from deepfake.scoring.rule import ScoringRule


def test_a_frame_scores_as_its_most_fake_face_and_ties_keep_the_first():
    rule = ScoringRule()
    frames = rule.frames([4, 0, 4, 4, 0], [0.2, 0.1, 0.9, 0.9, 0.3])
    assert frames.frame_idx.tolist() == [0, 4]
    assert frames.p_fake.tolist() == [0.3, 0.9]
    assert frames.best_face.tolist() == [4, 2]        # the first of the two 0.9 faces
    assert frames.n_faces.tolist() == [2, 3]


def test_score_video_applies_temperature_aggregation_and_threshold():
    logits = np.array([2.0, -1.0, 0.5, 3.0])
    rule = ScoringRule(temperature=2.0, aggregation="max", threshold=0.7)
    video = rule.score_video([0, 0, 1, 2], logits)
    p = probabilities(logits, 2.0)
    assert video.frames.p_fake.tolist() == pytest.approx([p[0], p[2], p[3]])
    assert video.p_fake == pytest.approx(p[3]) and video.fake is True
    assert rule.with_(threshold=0.9).score_video([0, 0, 1, 2], logits).fake is False
    assert ScoringRule(aggregation="mean").score_video([0, 1], [0.0, 0.0]).p_fake == pytest.approx(0.5)


def test_rule_from_model_config_and_legacy_artifacts():
    rule = ScoringRule.from_model_config({"scoring": {"temperature": 1.5, "aggregation": "median", "threshold": 0.4}})
    assert rule == ScoringRule(1.5, "median", 0.4)
    assert ScoringRule.from_model_config({"aggregation": "max"}) == ScoringRule(aggregation="max")
    assert ScoringRule.from_model_config({}) == ScoringRule()
    with pytest.raises(ConfigError, match="unknown scoring setting"):
        ScoringRule.from_model_config({"scoring": {"temprature": 2}})


def test_bad_settings_and_inputs_are_named():
    with pytest.raises(ConfigError, match="temperature"):
        ScoringRule(temperature=0)
    with pytest.raises(ConfigError, match="aggregation"):
        ScoringRule(aggregation="vote")
    with pytest.raises(ConfigError, match="threshold"):
        ScoringRule(threshold=1.5)
    with pytest.raises(DataError, match="non-finite"):
        ScoringRule().face_probabilities([np.nan])
    with pytest.raises(DataError, match="every face needs one score"):
        ScoringRule().frames([0, 1], [0.5])
    with pytest.raises(DataError, match="empty"):
        ScoringRule().score_video([], [])
