"""A window's figures as CloudWatch metrics, for dashboards and the alarm on violations.

The scheduled monitoring job (``pipelines/deepfake/monitor_step.py``) publishes
them; the deployment template's alarm watches ``VIOLATIONS_METRIC`` in
``NAMESPACE`` for the stage's endpoint (``deploy/endpoint-config-template.yml``
spells the same names; ``tests/test_deploy.py`` holds them together).
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

NAMESPACE = "DeepfakeKit/Monitoring"
ENDPOINT_DIMENSION = "EndpointName"
CHECK_DIMENSION = "Check"
VIOLATIONS_METRIC = "Violations"            # checks in violation in the window: the alarm's metric
CHECK_METRIC = "CheckViolation"             # 1 when the check (dimension Check) is in violation, else 0
MAX_PER_CALL = 1000                         # PutMetricData's limit of metrics per call

# metric name -> (where in monitoring.json, unit)
FIGURES: dict[str, tuple[tuple[str, ...], str]] = {
    "Requests": (("counts", "requests"), "Count"),
    "ScoredRequests": (("counts", "ok"), "Count"),
    "NoFaceRequests": (("counts", "no_face"), "Count"),
    "ErrorRequests": (("counts", "error"), "Count"),
    "CalledFake": (("counts", "called_fake"), "Count"),
    "NoFaceRate": (("rates", "no_face_rate"), "None"),
    "ErrorRate": (("rates", "error_rate"), "None"),
    "FakeShare": (("rates", "fake_share"), "None"),
    "MeanPFake": (("scores", "p_fake", "mean"), "None"),
    "FaceFrameShare": (("faces", "face_frame_share", "mean"), "None"),
    "LatencyP50": (("latency_ms", "p50"), "Milliseconds"),
    "AUC": (("ground_truth", "auc"), "None"),
    "CatchRate": (("ground_truth", "catch_rate"), "None"),
    "FalsePositiveRate": (("ground_truth", "false_positive_rate"), "None"),
}


def cloudwatch_metrics(summary: Mapping[str, Any], endpoint: str, when: datetime) -> list[dict[str, Any]]:
    """``MetricData`` for PutMetricData: every figure the window has, one 0/1 per check, and the violations."""
    dims = [{"Name": ENDPOINT_DIMENSION, "Value": endpoint}]
    out = []
    for name, (path, unit) in FIGURES.items():
        value = _get(summary, path)
        if value is not None:
            out.append({"MetricName": name, "Dimensions": dims, "Timestamp": when, "Value": float(value), "Unit": unit})
    for check in summary["checks"]:
        if check["name"] == "score_drift" and check.get("ks_distance") is not None:
            out.append({"MetricName": "ScoreDriftKSDistance", "Dimensions": dims, "Timestamp": when,
                        "Value": float(check["ks_distance"]), "Unit": "None"})
        if check["status"] != "skipped":
            out.append({"MetricName": CHECK_METRIC, "Timestamp": when, "Unit": "Count",
                        "Dimensions": [*dims, {"Name": CHECK_DIMENSION, "Value": check["name"]}],
                        "Value": 1.0 if check["status"] == "violation" else 0.0})
    out.append({"MetricName": VIOLATIONS_METRIC, "Dimensions": dims, "Timestamp": when,
                "Value": float(len(summary["violations"])), "Unit": "Count"})
    return out


def publish(client: Any, summary: Mapping[str, Any], endpoint: str, when: datetime,
            namespace: str = NAMESPACE) -> int:
    """Put the window's metrics in CloudWatch (``client``: boto3's cloudwatch); returns how many."""
    data = cloudwatch_metrics(summary, endpoint, when)
    for start in range(0, len(data), MAX_PER_CALL):
        client.put_metric_data(Namespace=namespace, MetricData=data[start:start + MAX_PER_CALL])
    return len(data)


def _get(doc: Any, path: tuple[str, ...]) -> Any:
    for key in path:
        if not isinstance(doc, Mapping):
            return None
        doc = doc.get(key)
    return doc if isinstance(doc, (int, float)) and not isinstance(doc, bool) else None
