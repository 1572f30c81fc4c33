"""What the data must hold depends on what the run does with it: check_trainable per mode."""

from __future__ import annotations

import pandas as pd
import pytest

from deepfake.core.errors import ConfigError, DataError
from deepfake.stages.explore import ExploreConfig, check_trainable


def table(rows):
    """``rows``: (split, label) per video."""
    return pd.DataFrame({"video_id": [f"v{i}" for i in range(len(rows))], "split": [s for s, _ in rows],
                         "label": [label for _, label in rows]})


BOTH = table([("train", 0), ("train", 1), ("val", 0), ("val", 1), ("test", 0), ("test", 1)])
REALS_ONLY = table([("train", 0), ("train", 0), ("val", 0), ("test", 0)])


def test_dataset_mode_needs_both_classes():
    assert "both classes" in check_trainable(BOTH, "dataset")
    with pytest.raises(DataError, match="no fake videos at all.*mode 'self_blend'"):
        check_trainable(REALS_ONLY, "dataset")


def test_self_blend_accepts_real_videos_alone_and_says_why():
    message = check_trainable(REALS_ONLY, "self_blend")
    assert "4 real videos are enough to train" in message and "false alarms only" in message
    assert "never trained on" in check_trainable(BOTH, "self_blend")
    assert "used too" in check_trainable(BOTH, "both")
    no_val_reals = table([("train", 0), ("val", 1), ("test", 0)])
    with pytest.raises(DataError, match="split 'val' has no real videos"):
        check_trainable(no_val_reals, "self_blend")
    with pytest.raises(DataError, match="split 'test' is empty"):
        check_trainable(table([("train", 0), ("val", 0)]), "self_blend")


def test_evaluate_mode_takes_any_labelled_videos():
    assert "6 videos" not in check_trainable(BOTH, "evaluate")
    assert "3 real and 3 fake videos to evaluate" in check_trainable(BOTH, "evaluate")
    assert "AUC is undefined" in check_trainable(REALS_ONLY, "evaluate")
    with pytest.raises(ConfigError, match="mode='train' is unknown"):
        check_trainable(BOTH, "train")
    with pytest.raises(ConfigError, match="mode"):
        ExploreConfig(mode="train")
