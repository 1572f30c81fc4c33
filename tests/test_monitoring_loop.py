"""The monitoring loop end to end, as README's four commands run it: `deepfake serve --capture`, `deepfake
invoke` of the evaluated videos, `deepfake monitor` of that window, then `deepfake invoke` of a shifted window
and `deepfake monitor` of it (tests/monitoring_support.py runs the commands as written, in a shell).

The served model is a real gated model with the evaluation that gated it: by default a small one
(tests/monitoring_support.py, 21 clips); ``make demo`` runs this module on the model it has just trained
(``--loop-run runs/demo --loop-data data/demo``). The baseline-like window sends the videos the evaluation
scored; the shifted window sends the same videos re-encoded much smaller and heavily compressed (40 % of their
size, x264 CRF 45) and 8 videos without a face (`deepfake invoke --no-face 8`).
"""

from __future__ import annotations

import shutil
import subprocess

import numpy as np
import pandas as pd
import pytest

from deepfake.monitoring.schema import read_monitoring

pytestmark = pytest.mark.slow
# the checks a window without enough data for them skips (their minimums: docs/monitoring.md); every other check
# runs on either window of either model
MAY_SKIP = {"score_drift", "false_positive_rate", "catch_rate", "auc"}


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
def reports(loop):
    """README's `deepfake monitor` of each window: exit code, monitoring.json, its folder."""
    return {name: (code, read_monitoring(folder), folder) for name, (code, folder) in loop.reports.items()}


def test_readme_runs_the_loop_in_four_commands_and_the_windows_hold_what_each_step_sent(loop, reports):
    # each window is what its step sent, and only that: 4.'s start time leaves 2.'s requests out
    for name, (_, _, folder) in reports.items():
        assert set(pd.read_csv(folder / "requests.csv")["inference_id"]) == set(loop.responses[name]), name
    assert set(loop.responses["baseline"]) == set(loop.evaluated.videos["video_id"].astype(str))
    assert all(i.startswith("shifted-") for i in loop.responses["shifted"])
    assert sum(i.startswith("shifted-no-face-") for i in loop.responses["shifted"]) == 8


def test_a_baseline_like_window_has_no_violation(loop, reports):
    code, summary, folder = reports["baseline"]
    assert code == 0 and summary["violations"] == []
    statuses = {c["name"]: c["status"] for c in summary["checks"]}
    assert set(statuses) == {"model_version", "no_face_rate", "error_rate", "fake_share", "score_drift",
                             "face_frame_share", "false_positive_rate", "catch_rate", "auc"}
    assert {n for n, s in statuses.items() if s != "ok"} <= MAY_SKIP and set(statuses.values()) <= {"ok", "skipped"}
    if loop.evaluated.monitor_args:                    # the small evaluation's minimums let every check run
        assert set(statuses.values()) == {"ok"}, statuses
    assert_figures_are_the_answers(summary, loop.responses["baseline"], folder)
    # the endpoint scores as the evaluation did: the same share called FAKE, the same scores of reals
    baseline = summary["baseline"]
    assert summary["rates"]["fake_share"] == pytest.approx(baseline["fake_share"])
    drift = next(c for c in summary["checks"] if c["name"] == "score_drift")
    if drift["status"] == "ok":
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
    assert "no_face_rate" in found and checks["no_face_rate"]["value"] > 0.15
    # no error was answered and every answer came from the monitored model
    assert checks["error_rate"]["status"] == checks["model_version"]["status"] == "ok"
    # the expected violations of this model (the demo's calls the compressed videos FAKE)
    assert loop.evaluated.shifted_violations <= found, {n: c["reason"] for n, c in checks.items()}
    # every other check is in violation exactly when its own figures say so
    alpha = summary["config"]["alpha"]
    for name in ("fake_share", "score_drift", "face_frame_share"):
        check = checks[name]
        if check["status"] == "skipped":
            assert name in MAY_SKIP, check
            continue
        effect = (abs(check["value"] - check["baseline"]) if name == "fake_share"
                  else check["ks_distance"] if name == "score_drift" else -check["mean_difference"])
        assert (check["status"] == "violation") == (check["p_value"] < alpha and effect > check["margin"]), check
    # what arrived changed: every video H.264 (`deepfake invoke --reencode` re-encodes what it sends) at 40 % of
    # the size, none at a resolution of the baseline window, far fewer bytes than the same videos there
    before = reports["baseline"][1]
    inputs = summary["inputs"]
    assert inputs["codecs"] == {"h264": len(loop.responses["shifted"])}
    assert not set(inputs["resolutions"]) & set(before["inputs"]["resolutions"]), inputs["resolutions"]
    sizes = {window: {ident.removeprefix("shifted-"): answer["media"]["bytes"]
                      for ident, answer in loop.responses[window].items() if "no-face-" not in ident}
             for window in ("baseline", "shifted")}
    assert sizes["shifted"].keys() == sizes["baseline"].keys()
    assert np.mean(list(sizes["shifted"].values())) < np.mean(list(sizes["baseline"].values())) / 4


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
