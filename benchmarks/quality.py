"""``make quality``: does the model the demo trains catch manipulations it has never seen, and can its
scores be trusted? One table, the demo's recipe side by side with the same recipe trained on the
dataset's fakes (``train.mode=dataset``, what the kit did before self-blending).

    python -m benchmarks.quality               # both modes (~10 min on 2 cores; less when runs are cached)
    python -m benchmarks.quality --modes self_blend

Two test sets:

- ``demo``: the demo's test split (real clips of people also in train) plus, for a model that trained
  on no fake, every fake of the demo (face swap, re-render, expression transfer): all unseen;
- ``held-out``: a second dataset built like the demo with another seed (new clips, camera moves and
  noise of the same real people) and two manipulations the demo never makes, a Poisson-blended
  full-resolution face swap (``blendswap``) and a geometric warp of the face (``warp``): both
  unseen by either model, evaluated with ``deepfake run --model`` (the cross-dataset protocol).

The runs go through the kit's own runner, so a run whose notebooks, code, parameters and data are
unchanged (``make demo`` ran first) is reused. Targets are the issue's; the pass column is
information, never an assertion. The table goes to stdout and, with the figures, to
``benchmarks/results/quality.{json,md}``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from benchmarks.machine import machine_info
from benchmarks.report import describe_machine
from benchmarks.timing import say
from deepfake.core import paths
from deepfake.demo.build import build_demo_dataset
from deepfake.orchestration import steps
from deepfake.orchestration.runner import run_pipeline

RESULTS = Path(__file__).resolve().parent / "results"
DEMO = "data/demo"
HELD_OUT = "data/held-out"
HELD_OUT_METHODS = ("blendswap", "warp")     # manipulations the demo data never makes
HELD_OUT_VIDEOS = 34                         # 17 real, 17 fake
HELD_OUT_SEED = 1
MODES = ("self_blend", "dataset")

# (test set, metric of evaluation.json, what it means, target as (kind, value) or None)
ROWS: tuple[tuple[str, str, str, tuple[str, float] | None], ...] = (
    ("demo", "unseen_video_auc", "video AUC, reals vs unseen manipulations", (">=", 0.90)),
    ("demo", "seen_video_auc", "video AUC, reals vs manipulations seen in training", None),
    ("demo", "video_ece", "video ECE after calibration", ("<=", 0.08)),
    ("demo", "video_ece_uncalibrated", "video ECE before calibration", None),
    ("demo", "video_false_positive_rate", "real videos called fake (threshold 0.5)", ("<=", 0.10)),
    ("held-out", "unseen_video_auc", "video AUC, reals vs unseen manipulations", None),
    ("held-out", "video_ece", "video ECE after calibration", None),
    ("held-out", "video_false_positive_rate", "real videos called fake (threshold 0.5)", None),
)


def run_mode(mode: str, force: bool, detector: str | None = None) -> dict[str, Any]:
    """Train (or reuse) the demo recipe in ``mode`` (faces found by ``detector``, None: the default), then
    evaluate its gated model on the held-out set (extracted with the model's own detector)."""
    run_id = f"quality-{mode}" + (f"-{detector}" if detector else "")
    started = time.perf_counter()
    sets = [f"train.mode={mode}"] + ([f"extract.detector={detector}"] if detector else [])
    code = run_pipeline(DEMO, run_id, "demo", sets, force=force, register=False, stream=False)
    if code != 0:
        raise SystemExit(f"the demo run in mode {mode} failed (exit {code}); see runs/{run_id}/")
    demo_seconds = time.perf_counter() - started
    model = paths.runs_dir() / run_id / steps.MODEL_STEP / paths.MODEL_ARCHIVE
    code = run_pipeline(HELD_OUT, f"{run_id}-held-out", "demo", [], force=force, stream=False, model=model)
    if code != 0:
        raise SystemExit(f"the held-out evaluation of mode {mode} failed (exit {code})")
    evaluations = {name: json.loads((paths.runs_dir() / rid / "evaluate" / paths.EVALUATION).read_text())
                   for name, rid in (("demo", run_id), ("held-out", f"{run_id}-held-out"))}
    steps_s = {}
    record = paths.runs_dir() / run_id
    for s in steps.STEPS:
        info = json.loads((record / s.name / "step.json").read_text())
        steps_s[s.name] = info.get("seconds")
    return {"evaluations": evaluations, "wall_s": demo_seconds, "step_seconds": steps_s}


def table(results: dict[str, dict[str, Any]]) -> str:
    modes = list(results)
    head = "| test set | measure | " + " | ".join(_title(m) for m in modes) + " | target | pass (self_blend) |"
    lines = [head, "|" + "---|" * (4 + len(modes))]
    for test_set, key, what, target in ROWS:
        values = [results[m]["evaluations"][test_set]["metrics"].get(key) for m in modes]
        mark = ""
        if target and "self_blend" in results:
            ours = results["self_blend"]["evaluations"][test_set]["metrics"].get(key)
            mark = "n/a" if ours is None else ("pass" if _met(ours, target) else "FAIL")
        goal = f"{target[0]} {target[1]:g}" if target else ""
        lines.append(f"| {test_set} | {what} | " + " | ".join(_fmt(v) for v in values) + f" | {goal} | {mark} |")
    counts = []
    for test_set in ("demo", "held-out"):
        c = results[modes[0]]["evaluations"][test_set]["counts"]
        counts.append(f"{test_set}: {c['real_videos']} real, {c['fake_videos']} fake videos")
    timing = "; ".join(f"{_title(m)}: training {results[m]['step_seconds'].get('train') or 0:.0f} s, "
                       f"whole demo run {sum(v or 0 for v in results[m]['step_seconds'].values()):.0f} s"
                       for m in modes)
    return "\n".join(lines) + "\n\n" + "; ".join(counts) + "\n\n" + timing + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.quality", description=__doc__.splitlines()[0])
    parser.add_argument("--modes", default=",".join(MODES), help="training modes to compare (comma-separated)")
    parser.add_argument("--force", action="store_true", help="rerun every step instead of reusing cached runs")
    parser.add_argument("--detector", default=None,
                        help="face detector of the training faces (extract.detector; default: the kit's default), "
                             "e.g. mtcnn-track; the held-out set is extracted with the model's own")
    parser.add_argument("--out", type=Path, default=None, help="default benchmarks/results/quality[-DETECTOR].json")
    args = parser.parse_args(argv)
    args.out = args.out or RESULTS / (f"quality-{args.detector}.json" if args.detector else "quality.json")
    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    say("building the demo data and the held-out set (skipped when complete)")
    build_demo_dataset(DEMO, n_videos=64, progress=False)
    build_demo_dataset(HELD_OUT, n_videos=HELD_OUT_VIDEOS, seed=HELD_OUT_SEED, methods=HELD_OUT_METHODS,
                       progress=False)
    results = {}
    for mode in modes:
        say(f"mode {mode}: demo recipe, then the held-out set")
        results[mode] = run_mode(mode, args.force, args.detector)
    machine = machine_info()
    detector = f"Training faces found by detector {args.detector}.\n\n" if args.detector else ""
    text = f"Machine: {describe_machine(machine)}\n\n" + detector + table(results)
    print(text)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"machine": machine, "results": results}, indent=1, default=str) + "\n")
    args.out.with_suffix(".md").write_text(text)
    say(f"figures in {args.out}")
    return 0


def _met(value: float, target: tuple[str, float]) -> bool:
    return value >= target[1] if target[0] == ">=" else value <= target[1]


def _fmt(value: Any) -> str:
    return "undefined" if value is None else f"{value:.3f}"


def _title(mode: str) -> str:
    return {"self_blend": "self_blend (ours)", "dataset": "dataset fakes"}.get(mode, mode)


if __name__ == "__main__":
    sys.exit(main())
