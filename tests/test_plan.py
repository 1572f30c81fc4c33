"""The run plan's arithmetic on DFDC's published figures (the example docs/sagemaker.md works through)."""

from __future__ import annotations

import pytest

from pipelines.deepfake.plan import Assumptions, dfdc_shape, example_settings, format_plan, plan_run, refusals
from pipelines.instances import GIB


@pytest.fixture(scope="module")
def dfdc():
    return dfdc_shape()


def test_dfdc_fits_the_dfdc_profile_on_16_extraction_instances(dfdc):
    plans = {p.name: p for p in plan_run(dfdc, example_settings("dfdc", 16, 4))}
    assert not refusals(list(plans.values()))
    assert plans["inventory"].download_bytes == 0
    assert plans["explore"].download_bytes < 2 * GIB                      # index files and 200 probed videos
    assert plans["extract"].download_bytes == pytest.approx(dfdc.total_bytes / 16)
    assert "streamed from tar shards" in plans["train"].note              # the decoded crops exceed its memory
    text = format_plan(dfdc, list(plans.values()))
    assert "470.0 GB" in text and "119,154 videos (19,154 real, 100,000 fake" in text and "REFUSED" not in text


def test_a_step_whose_share_does_not_fit_its_volume_is_refused_with_what_to_change(dfdc):
    plans = plan_run(dfdc, example_settings("dfdc", 8, 4))
    problems = refusals(plans)
    assert len(problems) == 1 and problems[0].startswith("step extract needs")
    assert "its volume is 60 GB" in problems[0]
    assert "ProcessingInstanceCount" in format_plan(dfdc, plans)
    demo = refusals(plan_run(dfdc, example_settings("demo", 16, 1)))      # the demo's volumes and run times
    assert any(p.startswith("step extract needs 34 GB") for p in demo) and any("score takes about" in p for p in demo)


def test_the_plan_follows_its_assumptions(dfdc):
    settings = example_settings("dfdc", 16, 4)
    base = {p.name: p for p in plan_run(dfdc, settings)}
    slower = {p.name: p for p in plan_run(dfdc, settings, Assumptions(extract_s_per_video=2.4))}
    assert slower["extract"].hours > base["extract"].hours and slower["extract"].usd > base["extract"].usd
    assert slower["train"] == base["train"]
