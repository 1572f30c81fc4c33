"""The monitoring loop end to end, as the README runs it: `deepfake serve --capture`, `deepfake invoke`,
`deepfake monitor` on a baseline-like window and on a shifted one.

The served model is a real gated model with the evaluation that gated it
(tests/monitoring_support.py). The baseline-like window sends the videos the
evaluation scored; the shifted window sends the same videos re-encoded much
smaller and heavily compressed (40 % of their size, x264 CRF 45) and videos
without a face.
"""

from __future__ import annotations

import shutil
import subprocess

import numpy as np
import pandas as pd
import pytest

from deepfake.monitoring.schema import read_monitoring
from deepfake.orchestration.cli import main

pytestmark = pytest.mark.slow


def run_monitor(loop, window: str, out, *extra: str) -> tuple[int, dict]:
    since, until = loop.windows[window]
    code = main(["monitor", "--capture", str(loop.capture), "--model", str(loop.evaluated.model),
                 "--since", since, "--until", until, "--out", str(out), "--set", "min_requests=5", *extra])
    return code, read_monitoring(out)


def assert_figures_are_the_answers(summary: dict, answers: dict[str, dict], folder) -> None:
    """Every figure of monitoring.json is what the requests returned."""
    scored = [a for a in answers.values() if a.get("status") == "ok"]
    counts = summary["counts"]
    assert counts["requests"] == len(answers)
    assert counts["ok"] == len(scored)
    assert counts["no_face"] == sum(a.get("status") == "no_face" for a in answers.values())
    assert counts["error"] == sum("error" in a for a in answers.values()) == 0
    assert counts["called_fake"] == sum(a["label"] == "FAKE" for a in scored)
    assert summary["rates"]["fake_share"] == pytest.approx(counts["called_fake"] / len(scored))
    assert summary["scores"]["p_fake"]["mean"] == pytest.approx(np.mean([a["p_fake"] for a in scored]))
    assert summary["scores"]["p_fake"]["max"] == pytest.approx(max(a["p_fake"] for a in scored))
    assert summary["inputs"]["video_bytes"]["mean"] == pytest.approx(np.mean([a["media"]["bytes"]
                                                                              for a in answers.values()]))
    assert summary["latency_ms"]["max"] == pytest.approx(max(a["latency_ms"] for a in answers.values()))
    rows = pd.read_csv(folder / "requests.csv").set_index("inference_id")
    assert set(rows.index) == set(answers)
    for ident, answer in answers.items():
        assert rows.at[ident, "outcome"] == answer["status"]
        if answer["status"] == "ok":
            assert rows.at[ident, "p_fake"] == pytest.approx(answer["p_fake"])
            assert rows.at[ident, "frames_scored"] == answer["frames_scored"]


@pytest.fixture(scope="module")
def reports(loop, tmp_path_factory):
    """`deepfake monitor` on each window (the baseline-like one with its labels): exit code, summary, folder."""
    out = tmp_path_factory.mktemp("reports")
    return {"baseline": (*run_monitor(loop, "baseline", out / "baseline", "--ground-truth", str(loop.labels),
                                      "--set", "min_labelled=5"), out / "baseline"),
            "shifted": (*run_monitor(loop, "shifted", out / "shifted"), out / "shifted")}


def test_a_baseline_like_window_has_no_violation(loop, reports):
    code, summary, folder = reports["baseline"]
    assert code == 0 and summary["violations"] == []
    assert {c["name"]: c["status"] for c in summary["checks"]} == {
        "model_version": "ok", "no_face_rate": "ok", "error_rate": "ok", "fake_share": "ok", "score_drift": "ok",
        "face_frame_share": "ok", "false_positive_rate": "ok", "catch_rate": "ok", "auc": "ok"}
    assert_figures_are_the_answers(summary, loop.responses["baseline"], folder)
    # the endpoint scores as the evaluation did: the same share called FAKE, the same scores of reals
    baseline = summary["baseline"]
    assert summary["rates"]["fake_share"] == pytest.approx(baseline["fake_share"])
    drift = next(c for c in summary["checks"] if c["name"] == "score_drift")
    assert drift["ks_distance"] <= 0.5 and drift["p_value"] > 0.5
    truth = summary["ground_truth"]
    assert truth["matched_scored"] == baseline["videos_scored"]
    assert truth["false_positive_rate"] == pytest.approx(baseline["false_positive_rate"])
    assert truth["catch_rate"] == pytest.approx(baseline["catch_rate"])
    assert truth["auc"] == pytest.approx(baseline["auc"])


def test_a_shifted_window_has_the_right_violations(loop, reports):
    code, summary, folder = reports["shifted"]
    assert code == 1
    assert_figures_are_the_answers(summary, loop.responses["shifted"], folder)
    checks = {c["name"]: c for c in summary["checks"]}
    found = {v["check"] for v in summary["violations"]}
    # videos without a face, and faces lost to the re-encoding: far above the evaluation's no-face rate
    assert "no_face_rate" in found and checks["no_face_rate"]["value"] > 0.25
    # no error was answered and every answer came from the monitored model
    assert checks["error_rate"]["status"] == checks["model_version"]["status"] == "ok"
    # every other check is in violation exactly when its own figures say so
    alpha = summary["config"]["alpha"]
    for name in ("fake_share", "score_drift", "face_frame_share"):
        check = checks[name]
        if check["status"] == "skipped":
            continue
        effect = (abs(check["value"] - check["baseline"]) if name == "fake_share"
                  else check["ks_distance"] if name == "score_drift" else -check["mean_difference"])
        assert (check["status"] == "violation") == (check["p_value"] < alpha and effect > check["margin"]), check
    # what arrived changed: H.264 (`deepfake invoke --reencode` re-encodes every video it sends) at 40 % of the
    # size, far fewer bits per pixel than the baseline window's MPEG-4 Part 2 clips
    before = reports["baseline"][1]
    inputs = summary["inputs"]
    assert inputs["codecs"] == {"h264": len(loop.responses["shifted"])} and before["inputs"]["codecs"] == {
        "fmp4": len(loop.responses["baseline"])}
    assert "128x96" in inputs["resolutions"] and "320x240" not in inputs["resolutions"]
    assert inputs["video_bytes"]["mean"] < before["inputs"]["video_bytes"]["mean"] / 4


def test_the_reports_read_well_in_a_browser(reports, tmp_path):
    """Both windows' HTML reports open in headless Chromium and render their figures."""
    chromium = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
    if chromium is None:
        pytest.skip("no Chromium to render the reports (apt-get install -y chromium)")
    for window in ("baseline", "shifted"):
        html = reports[window][2] / "monitoring.html"
        png = tmp_path / f"{window}.png"
        subprocess.run([chromium, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
                        f"--screenshot={png}", "--window-size=1400,4600", html.as_uri()],
                       check=True, capture_output=True, timeout=180)
        from deepfake.media.images import read_image

        shot = read_image(png)
        assert shot.shape[:2] == (4600, 1400)
        assert (shot < 200).any(axis=2).mean() > 0.05        # figures and tables drawn, not a blank page
        verdict = "No violation." if window == "baseline" else "violation(s):"
        assert verdict in html.read_text()
