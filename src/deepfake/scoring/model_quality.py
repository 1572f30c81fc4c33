"""Video-level metrics in the SageMaker Model Monitor model-quality format.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from deepfake.scoring.metrics import (
    binary_metrics,
    confusion_matrix,
    precision_recall_curve,
    roc_curve,
)


def sagemaker_model_quality(y_true: Any, p_fake: Any, threshold: float = 0.5) -> dict[str, Any]:
    """``binary_classification_metrics`` in the SageMaker Model Monitor model-quality format.

    ``ModelMetrics(model_statistics=MetricsSource(...))`` shows it in SageMaker
    Studio. Standard deviations are the string ``"NaN"`` (Model Monitor's value
    below 200 samples); a metric undefined for the data is left out.
    """
    y = np.asarray(y_true, dtype=int)
    p = np.asarray(p_fake, dtype=float)
    (tn, fp), (fn, tp) = confusion_matrix(y, p, threshold).tolist()
    m = binary_metrics(y, p, threshold)
    values: dict[str, float | None] = {
        "accuracy": m["accuracy"],
        "precision": m["precision"],
        "recall": m["recall"],
        "f1": m["f1"],
        "auc": m["auc"],
        "true_positive_rate": m["recall"],
        "false_negative_rate": None if m["recall"] is None else fn / (tp + fn),
        "true_negative_rate": tn / (tn + fp) if tn + fp else None,
        "false_positive_rate": fp / (tn + fp) if tn + fp else None,
    }
    out: dict[str, Any] = {
        # Model Monitor layout: outer key the true label, inner key the predicted label.
        "confusion_matrix": {"0": {"0": tn, "1": fp}, "1": {"0": fn, "1": tp}},
    }
    out.update({k: {"value": float(v), "standard_deviation": "NaN"} for k, v in values.items() if v is not None})
    if m["auc"] is not None:
        fpr, tpr, _ = roc_curve(y, p)
        out["receiver_operating_characteristic_curve"] = {
            "false_positive_rates": fpr.tolist(), "true_positive_rates": tpr.tolist()}
    if m["n_fake"]:
        precision, recall, _ = precision_recall_curve(y, p)
        out["precision_recall_curve"] = {"precisions": precision.tolist(), "recalls": recall.tolist()}
    return out
