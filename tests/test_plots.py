import matplotlib
import numpy as np
import pandas as pd
import pytest
from test_evaluate import Brightness, make_faces

from deepfake.core.errors import DataError, ManifestError
from deepfake.reporting import evaluate_report, explore_report, extract_report, figures, train_report

PNG = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def faces(tmp_path_factory):
    return make_faces(tmp_path_factory.mktemp("faces"))


@pytest.fixture(scope="module")
def predictions(faces, tmp_path_factory):
    from deepfake.scoring.rule import ScoringRule
    from deepfake.stages.evaluation_tables import frame_predictions, score_faces, video_predictions

    rule = ScoringRule()
    frames = frame_predictions(score_faces(Brightness(), faces[faces["split"] == "test"], rule), rule)
    videos = video_predictions(frames, rule)
    # A threshold between the fakes' scores: the two least fake-looking fakes become errors.
    threshold = float(np.sort(videos.loc[videos["label"] == 1, "p_fake"])[2])
    return frames, videos, threshold


def _is_png(path):
    return path.is_file() and path.stat().st_size > 1000 and path.read_bytes()[:8] == PNG


def test_data_figures(faces, tmp_path):
    videos = faces.drop_duplicates("video_id")
    figs = {
        "label.png": explore_report.plot_counts(videos, "label"),
        "split_label.png": explore_report.plot_counts(videos, "split", hue="label", save_to=None),
        "manipulation.png": explore_report.plot_counts(videos, "manipulation", title="Manipulations"),
        "rate.png": extract_report.plot_detection_rate(faces, by="manipulation"),
        "frames.png": explore_report.plot_frame_grid([np.full((40, 60, 3), v, np.uint8) for v in (0, 90, 180)],
                                            titles=["a", "b", "c"], ncols=2),
        "gallery.png": extract_report.plot_crop_gallery(list(faces.loc[faces["status"] == "ok", "abs_path"][:5]),
                                               captions=[f"crop {i}" for i in range(5)]),
    }
    for name, fig in figs.items():
        assert isinstance(fig, matplotlib.figure.Figure)
        figures.save(fig, tmp_path / "sub" / name)
        assert _is_png(tmp_path / "sub" / name), name


def test_training_curves(tmp_path):
    history = pd.DataFrame({"epoch": [1, 2, 3], "train_loss": [0.7, 0.5, 0.4], "val_loss": [0.69, 0.6, 0.55],
                            "val_accuracy": [0.5, 0.7, 0.8], "val_auc": [0.6, 0.8, 0.85], "lr": [1e-3] * 3})
    train_report.plot_training_curves(history, save_to=tmp_path / "curves.png")
    assert _is_png(tmp_path / "curves.png")
    with pytest.raises(DataError, match="no loss, accuracy or AUC column"):
        train_report.plot_training_curves(pd.DataFrame({"epoch": [1], "lr": [0.1]}))


def test_evaluation_figures(predictions, faces, tmp_path):
    frames, videos, threshold = predictions
    curves = {"frame": (frames["label"], frames["p_fake"]), "video": (videos["label"], videos["p_fake"])}
    calls = {
        "hist.png": lambda p: figures.plot_score_histogram(videos, save_to=p),
        "roc.png": lambda p: evaluate_report.plot_roc(curves, save_to=p),
        "pr.png": lambda p: evaluate_report.plot_pr_curve(curves, save_to=p),
        "reliability.png": lambda p: evaluate_report.plot_reliability(frames["label"], frames["p_fake"], save_to=p),
        "confusion.png": lambda p: evaluate_report.plot_confusion_matrix(videos["label"], videos["p_fake"], threshold, save_to=p),
        "worst.png": lambda p: evaluate_report.plot_worst_errors(videos, faces, n=4, threshold=threshold, save_to=p),
    }
    for name, call in calls.items():
        fig = call(tmp_path / name)
        assert isinstance(fig, figures.Figure)
        assert _is_png(tmp_path / name), name


def test_worst_errors_gallery_shows_wrong_videos_only(predictions, faces):
    _, videos, threshold = predictions
    fig = evaluate_report.plot_worst_errors(videos, faces, n=12, threshold=threshold)
    wrong = videos[(videos["p_fake"] >= threshold).astype(int) != videos["label"]]
    shown = [ax for ax in fig.axes if ax.images]
    assert len(shown) == len(wrong) == 2
    assert all(ax.get_title().split("\n")[0] in set(wrong["video_id"]) for ax in shown)
    empty = evaluate_report.plot_worst_errors(videos, faces, threshold=0.5)   # the brightness scorer makes no mistake at 0.5
    assert not any(ax.images for ax in empty.axes)


def test_undefined_curves_do_not_crash(tmp_path):
    fig = evaluate_report.plot_roc({"video": ([1, 1], [0.2, 0.9])}, save_to=tmp_path / "roc.png")
    assert "undefined" in fig.axes[0].get_legend().get_texts()[-1].get_text()
    evaluate_report.plot_pr_curve({"video": ([0, 0], [0.2, 0.9])}, save_to=tmp_path / "pr.png")
    assert _is_png(tmp_path / "roc.png") and _is_png(tmp_path / "pr.png")


def test_figures_render_in_notebooks_without_pyplot():
    fig = evaluate_report.plot_confusion_matrix([0, 1, 1], [0.2, 0.7, 0.4])
    assert fig._repr_png_()[:8] == PNG


def test_bad_inputs_are_named():
    with pytest.raises(ManifestError, match="lacks column\\(s\\) split"):
        explore_report.plot_counts(pd.DataFrame({"label": [0]}), "split")
    with pytest.raises(DataError, match="empty"):
        explore_report.plot_frame_grid([])
    with pytest.raises(DataError, match="one caption per image"):
        extract_report.plot_crop_gallery([np.zeros((8, 8, 3), np.uint8)], captions=["a", "b"])


def test_score_histograms_say_what_they_show_and_never_blend_the_classes(faces, predictions):
    """Detector confidence is labelled as such and spans the scores there are (all at or above the floor);
    real and fake bars stand side by side, so every coloured bar is one the legend names."""
    _, videos, _ = predictions
    fig = extract_report.plot_detector_scores(faces, min_score=0.9)
    ax = fig.axes[0]
    assert ax.get_xlabel() == "face detector confidence" and ax.get_xlim() == (0.9, 1.0)
    assert "min_score 0.9 (faces below are dropped)" in [t.get_text() for t in ax.get_legend().get_texts()]
    for fig in (extract_report.plot_detector_scores(faces, min_score=0.9), figures.plot_score_histogram(videos)):
        ax = fig.axes[0]
        bars = [p for p in ax.patches if p.get_height() > 0]
        colours = {matplotlib.colors.to_hex(p.get_facecolor(), keep_alpha=True) for p in bars}
        assert colours <= {matplotlib.colors.to_hex(c, keep_alpha=True) for c in figures.LABEL_COLORS.values()}
        lefts = sorted((p.get_x(), p.get_x() + p.get_width()) for p in bars)
        assert all(a1 <= b0 + 1e-9 for (_, a1), (b0, _) in zip(lefts, lefts[1:], strict=False))   # no overlap
    assert figures.plot_score_histogram(videos).axes[0].get_xlabel() == "fake probability (p_fake)"


def test_the_training_table_says_what_each_mode_does_with_the_fakes(faces):
    table = train_report.training_counts(faces, "self_blend")
    assert table.loc[("train", "fake"), "use"] == "not used (mode self_blend): only evaluation scores them"
    assert table.loc[("test", "real"), "use"] == "not used in training: evaluation"
    assert train_report.training_counts(faces, "dataset").loc[("train", "fake"), "use"] == "trained on"
    assert list(dict.fromkeys(split for split, _ in table.index)) == ["train", "test"]
