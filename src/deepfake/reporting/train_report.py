"""Figures and tables of the training report (03_train).
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np
import pandas as pd

from deepfake.core import paths
from deepfake.core.errors import DataError
from deepfake.core.vocabulary import LABEL_NAMES, REAL, SPLITS, STATUS_OK
from deepfake.data.pseudofakes import families, parse_mix
from deepfake.reporting.figures import PANEL_INCHES, Figure, _image_grid, new_figure, readable, save


def plot_pseudo_fakes(images: Sequence[np.ndarray], captions: Sequence[str], *,
                      save_to: str | os.PathLike[str] | None = None) -> Figure:
    """One row per real crop: the crop, then each pseudo-fake family's fake and where it changed the crop
    (:func:`pseudo_fake_examples`)."""
    if not images:
        fig, ax = new_figure(size=(6.0, 1.2))
        ax.axis("off")
        ax.text(0.5, 0.5, "no landmarks in faces.csv: re-run face extraction to see the pseudo-fakes",
                ha="center", va="center")
        return save(fig, save_to)
    ncols = 1 + 2 * len(families())
    return _image_grid(list(images), captions, ncols=ncols,
                       title="Pseudo-fakes of each family: real crop, then each family's fake and its change mask",
                       tile=(PANEL_INCHES * 0.8, PANEL_INCHES * 0.8 + 0.3), save_to=save_to)


def plot_training_curves(history: pd.DataFrame, x: str = "epoch", *,
                         save_to: str | os.PathLike[str] | None = None) -> Figure:
    """Loss columns on the left, accuracy/AUC columns on the right, against ``x`` (or the row number)."""
    loss = [c for c in history.columns if "loss" in str(c)]
    score = [c for c in history.columns if any(k in str(c) for k in ("acc", "auc"))]
    if not loss and not score:
        raise DataError(f"the history table has no loss, accuracy or AUC column; columns: "
                        f"{', '.join(map(str, history.columns))}")
    xs = history[x].to_numpy() if x in history.columns else np.arange(1, len(history) + 1)
    fig, axes = new_figure(1, 2, size=(10.0, 3.8))
    for ax, cols, ylabel in ((axes[0], loss, "loss"), (axes[1], score, "score")):
        for c in cols:
            ax.plot(xs, history[c].to_numpy(dtype=float), marker="o", label=str(c))
        ax.set_xlabel(x if x in history.columns else "epoch")
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3)
        if cols:
            ax.legend()
    axes[0].set_title("Loss")
    axes[1].set_title("Accuracy / AUC")
    return save(fig, save_to)


def history_table(history: pd.DataFrame) -> pd.DataFrame:
    """The epochs of ``history.csv``, one row each: losses and accuracies to 4 digits, the learning rate as
    the small number it is."""
    table = history.set_index("epoch") if "epoch" in history.columns else history
    return readable(table)


def training_counts(faces: pd.DataFrame, mode: str = "dataset") -> pd.DataFrame:
    """Face crops and videos per split and label, and what training ``mode`` does with each: in ``self_blend``
    the dataset's fakes are never trained on (they test generalisation), which the table says."""
    ok = faces[faces["status"] == STATUS_OK]
    table = ok.assign(label=ok["label"].map(LABEL_NAMES)).groupby(["split", "label"]).agg(
        videos=("video_id", "nunique"), crops=("path", "size"))
    order = {split: i for i, split in enumerate(SPLITS)}
    table = table.sort_index(key=lambda level: level.map(order) if level.name == "split" else level)
    roles = {"train": "trained on", "val": "validation (early stopping, calibration)"}
    uses_fakes = mode != "self_blend"

    def role(split: str, label: str) -> str:
        if split not in roles:
            return "not used in training: evaluation"
        if label == LABEL_NAMES[REAL]:
            return roles[split] + (", with its pseudo-fakes as fakes" if mode in ("self_blend", "both") else "")
        return roles[split] if uses_fakes else "not used (mode self_blend): only evaluation scores them"

    table["use"] = [role(split, label) for split, label in table.index]
    return readable(table)


def pseudo_fake_examples(faces: pd.DataFrame, extract_settings: dict, image_size: int, n: int = 4,
                         seed: int = 0) -> tuple[list[np.ndarray], list[str]]:
    """``n`` real crops of the train split, each followed by every family's pseudo-fake of it and its mask,
    for the training report. Empty when the faces table has no landmarks (an older kit, a detector without)."""
    from deepfake.data.dataset import read_rgb
    from deepfake.data.faces_table import crop_landmarks
    from deepfake.data.pseudofakes import get_family
    from deepfake.media.preprocess import resize_crop

    ok = faces[(faces["status"] == STATUS_OK) & (faces["label"] == REAL)]
    if "landmarks" not in ok.columns or not ok["landmarks"].astype(str).str.len().gt(0).all() or ok.empty:
        return [], []
    train = ok[ok["split"] == "train"] if (ok["split"] == "train").any() else ok
    picks = train.groupby("video_id").head(1).sample(min(n, train["video_id"].nunique()), random_state=seed)
    marks = crop_landmarks(picks, float(extract_settings.get("margin", 0.3)), image_size)
    images: list[np.ndarray] = []
    captions: list[str] = []
    for i, (row, lm) in enumerate(zip(picks.itertuples(index=False), marks, strict=True)):
        real = resize_crop(read_rgb(row.abs_path), image_size)
        images.append(real)
        captions.append(f"{row.video_id} real")
        for family in families():
            fake = get_family(family)(real, lm, np.random.default_rng([seed, i]))
            images += [fake.image, (np.repeat(fake.mask[..., None], 3, axis=2) * 255).astype(np.uint8)]
            captions += [family, f"{family} change"]
    return images, captions


def family_validation_table(model_dir: str | os.PathLike[str]) -> pd.DataFrame:
    """Crop-level validation AUC of the val split's reals against each pseudo-fake family, trained on or not."""
    from deepfake.core.files import read_json

    folder = paths.resolve(model_dir)
    config = read_json(folder / "config.json" if (folder / "config.json").is_file() else folder / "model" / "config.json")
    trained = set(parse_mix((config.get("training") or {}).get("pseudo_fakes") or "sbi")) \
        if (config.get("training") or {}).get("pseudo_fakes") else set()
    rows = [{"family": name, "trained on": "yes" if name in trained else "no", "validation AUC": auc}
            for name, auc in (config.get("validation_by_family") or {}).items()]
    return readable(pd.DataFrame(rows, columns=["family", "trained on", "validation AUC"]).set_index("family"))


def calibration_table(model_dir: str | os.PathLike[str]) -> pd.DataFrame:
    """The temperature training fitted, and the validation log loss and ECE before and after it."""
    from deepfake.core.files import read_json

    folder = paths.resolve(model_dir)
    config = read_json(folder / "config.json" if (folder / "config.json").is_file() else folder / "model" / "config.json")
    cal = config.get("calibration") or {}
    rows = [("temperature", cal.get("temperature")), ("validation log loss before", cal.get("nll_before")),
            ("validation log loss after", cal.get("nll_after")), ("validation ECE before", cal.get("ece_before")),
            ("validation ECE after", cal.get("ece_after"))]
    return readable(pd.DataFrame(rows, columns=["calibration", "value"]).set_index("calibration"))
