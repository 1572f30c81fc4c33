"""One monitoring run: a window of captured traffic against the served model's evaluation.

:func:`monitor` is what ``deepfake monitor`` and the scheduled SageMaker job
(``pipelines/deepfake/monitor_step.py``) both call. It writes, into one folder:

- ``monitoring.json``: figures, baseline, checks and violations (docs/monitoring.md);
- ``monitoring.html``: the report, figures embedded;
- ``requests.csv``: one row per captured request of the window (no payloads).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from deepfake.core import paths
from deepfake.core.errors import MonitoringError
from deepfake.core.files import write_json
from deepfake.monitoring.baseline import Baseline, evaluation_location, load_baseline, monitored_model
from deepfake.monitoring.checks import MonitorConfig, run_checks
from deepfake.monitoring.ground_truth import read_ground_truth
from deepfake.monitoring.schema import MONITORING, REPORT, validate_monitoring
from deepfake.monitoring.sources import CaptureRead, Window, read_events
from deepfake.monitoring.summary import build_summary
from deepfake.monitoring.traffic import traffic_table
from deepfake.reporting.monitor_report import write_report

REQUESTS = "requests.csv"


@dataclass(frozen=True)
class MonitorResult:
    summary: dict[str, Any]
    folder: Path

    @property
    def violations(self) -> list[dict[str, Any]]:
        return list(self.summary["violations"])

    @property
    def json_path(self) -> Path:
        return self.folder / MONITORING

    @property
    def report_path(self) -> Path:
        return self.folder / REPORT


def monitor(capture: str, model: str, window: Window, out_dir: str | os.PathLike[str], *,
            evaluation: str | None = None, ground_truth: str | None = None,
            config: MonitorConfig | None = None) -> MonitorResult:
    """Read the window's capture, compare it with the model's evaluation, write the three files."""
    config = config or MonitorConfig()
    served = monitored_model(str(model))
    where = evaluation or evaluation_location(str(model))
    if where is None:
        raise MonitoringError(
            f"no {paths.EVALUATION} beside model {model}; give --evaluation with the folder (or S3 prefix) of the "
            f"evaluation that gated it (it holds {paths.EVALUATION} and {paths.VIDEO_PREDICTIONS})")
    baseline = load_baseline(str(where), served)
    labelled = read_ground_truth(ground_truth) if ground_truth else None
    found = CaptureRead(str(capture), window)
    table = traffic_table(read_events(str(capture), window, found))
    checks = run_checks(table, baseline, served, config, labelled)
    summary = build_summary(table, found, served, baseline, config, checks, labelled, ground_truth)
    validate_monitoring(summary, source="the monitoring summary")
    folder = paths.ensure_dir(out_dir)
    write_json(folder / MONITORING, summary)
    table.drop(columns=["source"]).to_csv(folder / REQUESTS, index=False)
    write_report(summary, table, reference(baseline), folder / REPORT)
    return MonitorResult(summary, folder)


def reference(baseline: Baseline) -> dict[str, np.ndarray]:
    """The evaluation's values the report draws beside the window's."""
    return {"real_p_fake": np.asarray(baseline.real_p_fake, dtype=float),
            "fake_p_fake": np.asarray(baseline.fake_p_fake, dtype=float),
            "real_called_real": baseline.real_called_real,
            "face_frame_share": np.asarray(baseline.face_frame_share, dtype=float)}
