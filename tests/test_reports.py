"""The reports' tables read well in a browser: named columns, words for labels and counts, a dash for an
undefined value, a sentence instead of an empty table. tests/test_notebooks.py screenshots the four
HTML reports of a real run in headless Chromium."""

import numpy as np
import pandas as pd
import pytest
from test_evaluate import Brightness, make_faces

from deepfake.reporting import evaluate_report, explore_report, extract_report, figures, train_report
from deepfake.stages.evaluate import EvalConfig, evaluate


@pytest.fixture(scope="module")
def evaluation(tmp_path_factory):
    faces = make_faces(tmp_path_factory.mktemp("faces"))
    scorer = Brightness(training={"mode": "dataset", "backbone": "x", "manipulations_seen": ["swap"],
                                  "pseudo_fakes": None})
    return evaluate(scorer, faces, tmp_path_factory.mktemp("evaluation"), EvalConfig(operating_point="fixed"))


def _html(table):
    return table._repr_html_() if hasattr(table, "_repr_html_") else table.to_html()


def test_counts_are_a_table_with_named_rows(evaluation):
    table = evaluate_report.counts_table(evaluation)
    assert list(table.columns) == ["count"] and table.index.name == "what"
    assert table.loc["not scored: failed to decode", "count"] == 1
    assert table.loc["not scored: no face found", "count"] == 1
    assert table.loc["videos evaluated", "count"] == evaluation["counts"]["videos_total"]
    assert "{" not in table.to_html()


def test_per_manipulation_table_has_named_columns_and_whole_notes(evaluation):
    table = evaluate_report.per_manipulation_table(evaluation)
    assert list(table.columns) == ["label", "videos", "seen in training", "accuracy", "AUC vs reals",
                                   "caught at 1% FPR", "caught at 5% FPR", "caught at 10% FPR", "mean p_fake", "note"]
    assert table.index.name == "manipulation" and "undefined" not in table.columns
    assert table.loc["none", "label"] == "real" and table.loc["none", "AUC vs reals"] == "—"
    assert table.loc["swap", "seen in training"] == "yes" and table.loc["reenact", "seen in training"] == "no"
    note = next(r["note"] for r in evaluation["per_manipulation"] if r["manipulation"] == "none")
    assert note and note in table._repr_html_()            # what a notebook shows: never cut to "..."


def test_metric_tables_show_a_dash_not_nan(evaluation):
    metrics = evaluate_report.metrics_table(evaluation)
    assert metrics.loc["frame", "false_positive_rate"] == "—"            # a video-level measure only
    assert "NaN" not in metrics.to_html() and "None" not in metrics.to_html()
    aggregation = evaluate_report.aggregation_table(evaluation)
    assert f"{evaluation['aggregation']} (headline)" in aggregation.index
    assert "NaN" not in evaluate_report.generalisation_table(evaluation).to_html()


def test_an_empty_table_is_a_sentence(evaluation):
    unscored = evaluate_report.unscored_table(evaluation)
    assert set(unscored.index) == {"broken", "blank"} and list(unscored.columns) == ["status", "reason"]
    none = evaluate_report.unscored_table({**evaluation, "unscored_videos": []})
    assert isinstance(none, figures.Note) and "Every video was scored" in _html(none)
    faces = pd.DataFrame({"video_id": ["a"], "label": [1], "manipulation": ["swap"], "split": ["test"],
                          "status": ["ok"], "reason": [""]})
    assert "Every video produced" in repr(extract_report.videos_without_faces(faces))
    failed = extract_report.videos_without_faces(faces.assign(status="no_face", reason="no face in 3 frames"))
    assert failed.loc["a", "label"] == "fake" and failed.loc["a", "reason"] == "no face in 3 frames"


def test_profile_probes_and_history_are_tables():
    profile = {"videos": 64, "originals": 32, "fake_to_real_ratio": 1.0, "probed": 64,
               "duration_s": {"min": 0.72, "median": 1.26, "max": 1.6}, "fps": {"min": 25.0, "median": 25.0, "max": 25.0},
               "resolutions": {"384x384": 50, "512x288": 14}, "unreadable": []}
    table = explore_report.profile_table(profile)
    assert table.loc["duration", "value"] == "0.72 / 1.26 / 1.6 s (min / median / max)"
    assert table.loc["resolutions", "value"] == "384x384 (50 videos), 512x288 (14 videos)"
    assert table.loc["unreadable videos", "value"] == "none" and "{" not in table.to_html()
    probes = pd.DataFrame({"label": [0, 1], "duration_s": [1.0, 2.0], "width": [640, 640], "height": [360, 360],
                           "fps": [25.0, 25.0], "frame_count": [25, 50]})
    assert "label" not in explore_report.probe_summary(probes).columns
    history = pd.DataFrame({"epoch": [1, 2], "train_loss": [0.63502, 0.44224], "lr": [3.3333e-05, 1e-3]})
    epochs = train_report.history_table(history)
    assert epochs.index.name == "epoch" and list(epochs["lr"]) == ["3.333e-05", "0.001"]


def test_a_grid_title_wider_than_its_images_is_wrapped():
    fig = figures._image_grid([np.zeros((8, 8, 3), np.uint8)], ["one"], ncols=6, tile=(2.2, 2.6), save_to=None,
                              title="Most confidently wrong videos (threshold 0.5)")
    assert "\n" in fig._suptitle.get_text()
