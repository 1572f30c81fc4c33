"""The benchmark code runs end to end on a tiny clip (`--quick`), so it cannot rot.

No assertion is about a time: the machine running the tests may be slow or
shared. What is checked is that every item ran (or said why it was skipped),
and the structure of the printed table and of the JSON file.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# The benchmarks are run as `make bench` runs them (python -m from the repository root): the
# package is not installed, so the tests start it the same way instead of importing it.
ROW_KEYS = {"item", "metric", "unit", "ours", "reference", "reference_label", "target", "device", "note",
            "samples", "ratio", "passed"}


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
    folder = tmp_path_factory.mktemp("bench")
    out = folder / "bench.json"
    env = {**os.environ, "DEEPFAKE_BENCH_GPU_ROWS_ON": "cpu"}   # the GPU rows' code too, on the CPU
    proc = subprocess.run([sys.executable, "-m", "benchmarks.run", "--quick", "--out", str(out),
                           "--work", str(folder / "work")], cwd=ROOT, capture_output=True, text=True, timeout=900,
                          env=env)
    return proc, out


@pytest.mark.slow
def test_quick_run_prints_one_table_and_writes_the_json(quick_run):
    proc, out = quick_run
    assert proc.returncode == 0, proc.stderr[-3000:]
    doc = json.loads(out.read_text())
    assert doc["errors"] == []
    machine = doc["machine"]
    for key in ("cpu_model", "cpu_count", "cores_used", "torch", "cuda_device", "load_average"):
        assert key in machine
    assert doc["settings"]["quick"] is True and doc["settings"]["items"] == [1, 2, 3, 4, 5, 6]

    rows = doc["rows"]
    assert {r["item"] for r in rows} == {1, 2, 3, 4, 5, 6}
    for row in rows:
        assert set(row) == ROW_KEYS
        if row["ours"] is None:  # only an unavailable part may be skipped, and it says why
            assert row["note"].startswith("skipped:")
            continue
        assert row["ours"] > 0 and row["reference"] > 0
        assert row["ratio"] == pytest.approx(row["ours"] / row["reference"])
        if row["target"] is None:                    # information only
            assert row["passed"] is None
            continue
        assert row["target"]["text"] and row["passed"] == _met(row["target"], row["ours"], row["reference"])
    measured = [r for r in rows if r["ours"] is not None]
    assert {r["item"] for r in measured} >= {1, 3, 4, 5, 6}
    # the detector did real work: the clip is of a real face
    extraction = next(r for r in rows if r["item"] == 1)
    assert "faces in 0/" not in extraction["note"]
    assert any(r["reference_label"] == "DFDC budget (GPU)" for r in rows if r["item"] == 2)
    dry = [r for r in rows if "dry run of the GPU rows" in r["device"]]
    assert {r["item"] for r in dry} == {2, 4} and any("local endpoint" in r["metric"] for r in dry)
    streamed = [r for r in rows if r["item"] == 4 and "streamed from tar shards" in r["metric"]]
    assert {r["note"].split(",")[0] for r in streamed} == {"mode dataset", "mode self_blend"}   # both paths timed
    assert any(r["reference_label"] == "CPU path, same host" for r in dry)

    # stdout is the table alone: machine line, header, one line per row
    lines = proc.stdout.strip().splitlines()
    assert lines[0].startswith("Machine: ") and "torch" in lines[0]
    table = [line for line in lines if line.startswith("|")]
    assert table[0].split("|")[1:-1] == [" # ", " metric ", " device ", " ours ", " reference ", " ratio ",
                                         " target ", " pass "]
    assert len(table) == 2 + len(rows)
    assert out.with_suffix(".md").read_text().strip() == proc.stdout.strip()


def _met(target, ours, reference):
    kind, value = target["kind"], target["value"]
    return {"ratio<=": ours / reference <= value, "ratio>=": ours / reference >= value,
            "ours<": ours < value, "ours<=": ours <= value, "ours-ref<=": ours - reference <= value}[kind]


def test_only_rejects_unknown_items():
    proc = subprocess.run([sys.executable, "-m", "benchmarks.run", "--only", "1,9"], cwd=ROOT, capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode != 0 and "--only '1,9'" in proc.stderr and "1, 2, 3, 4, 5, 6" in proc.stderr


def test_quality_table_puts_the_choices_side_by_side_against_the_targets():
    """benchmarks.quality's figures and table on made-up predictions (the real run trains for minutes:
    `make quality`): per-manipulation AUC, catch rates, the model's own threshold, recalibration."""
    code = """
import numpy as np, pandas as pd
from benchmarks.quality import figures, table
rng = np.random.default_rng(0)
rows = [{"video_id": f"r{i}", "label": 0, "manipulation": "none", "p_fake": float(p)}
        for i, p in enumerate(rng.uniform(0.0, 0.3, 24))]
for m, hi in (("blendswap", 0.9), ("warp", 0.4), ("lipsync", 0.6)):
    rows += [{"video_id": f"{m}{i}", "label": 1, "manipulation": m, "p_fake": float(p)}
             for i, p in enumerate(rng.uniform(0.1, hi, 8))]
videos = pd.DataFrame(rows)
videos["predicted"] = (videos["p_fake"] >= 0.25).astype(int)
rule = {"temperature": 1.0, "aggregation": "mean", "threshold": 0.25}
def result(auc):
    return {"demo": {"metrics": {"unseen_video_auc": auc, "video_false_positive_rate": 0.1}, "threshold": 0.25},
            "held-out": {"metrics": {"video_ece": 0.3}, "scoring": rule}, "held-out_videos": videos,
            "train": {"validation_by_family": {"sbi": 0.99, "warp": 0.7}}, "step_seconds": {"train": 200.0}}
print(table({"sbi": figures(result(0.95)), "dataset": figures(result(0.5))}))
"""
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    lines = proc.stdout.splitlines()
    assert lines[0] == "| measure | sbi | dataset | target |"
    demo = next(line for line in lines if line.startswith("| demo: video AUC"))
    assert "| 0.950 ✓ | 0.500 | >= 0.9 |" in demo                 # the baseline is never marked
    for method in ("blendswap", "warp", "lipsync"):
        assert any(line.startswith(f"| held-out: video AUC, {method}") for line in lines)
    assert any("after recalibration on the other 1/3" in line for line in lines)
    assert any(line.startswith("| validation AUC vs warp pseudo-fakes") for line in lines)
    assert "Recalibration sample: 8 real + 8 fake; measured on 16 real + 16 fake; 20 random thirds" in proc.stdout
    assert any(line.startswith("| held-out 2/3: ECE a perfectly calibrated model") for line in lines)
