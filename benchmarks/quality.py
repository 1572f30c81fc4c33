"""``make quality``: does the model the demo trains catch manipulations it has never seen, at its own
threshold, and can its scores be trusted after recalibration? One table, each pseudo-fake choice of
the demo recipe (``train.pseudo_fakes``) side by side, with the same recipe trained on the dataset's
fakes (``train.mode=dataset``, what the kit did before self-blending) as the baseline.

    python -m benchmarks.quality                                # every choice (~40 min on 2 quiet cores)
    python -m benchmarks.quality --choices sbi,warp --no-baseline

Two test sets:

- ``demo``: the demo's test split (real clips of people also in train) plus every fake of the demo
  (face swap, re-render, expression transfer): all unseen by a self-blended model;
- ``held-out``: a second dataset built like the demo with another seed (new clips, camera moves and
  noise of the same real people) and three manipulations neither the demo nor any pseudo-fake family
  makes: a Poisson-blended full-resolution face swap (``blendswap``), a geometric warp of the face
  (``warp``, a beauty filter) and a lip-sync re-render of the mouth faded in without a pasted edge
  (``lipsync``); evaluated with ``deepfake run --model`` (the cross-dataset protocol) at the model's
  own threshold, chosen for 5 % of the demo's validation reals called fake.

Recalibration: a third of the held-out videos (stratified by label, a fixed seed) is the "user's
sample" (:func:`deepfake.stages.calibrate.recalibrate`); ECE, real videos called fake and fakes
caught are measured on the other two thirds, before and after.

The runs go through the kit's own runner, so a run whose notebooks, code, parameters and data are
unchanged is reused. Targets are the issue's; the pass column is information, never an assertion.
The table goes to stdout and, with every figure, to ``benchmarks/results/quality.{json,md}``.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from benchmarks.machine import machine_info
from benchmarks.report import describe_machine
from benchmarks.timing import say
from deepfake.core import paths
from deepfake.core.errors import DataError
from deepfake.data.manifest import read_manifest
from deepfake.demo.build import build_demo_dataset
from deepfake.orchestration import steps
from deepfake.orchestration.runner import run_pipeline
from deepfake.scoring.metrics import expected_calibration_error, roc_auc
from deepfake.scoring.operating_point import tpr_at_fpr
from deepfake.scoring.rule import ScoringRule
from deepfake.stages.calibrate import CalibrateConfig, recalibrate

RESULTS = Path(__file__).resolve().parent / "results"
DEMO = "data/demo"
HELD_OUT = "data/held-out"
HELD_OUT_METHODS = ("blendswap", "warp", "lipsync")   # manipulations neither the demo nor a pseudo-fake makes
HELD_OUT_VIDEOS = 48                                  # 24 real, 24 fake (8 per manipulation)
HELD_OUT_SEED = 1
CHOICES = ("sbi", "fwa", "warp", "sbi:0.5,warp:0.5", "sbi:0.34,fwa:0.33,warp:0.33")
BASELINE = "dataset"                                  # train.mode=dataset: the demo's own fakes
CATCH_FPR = 0.05                                      # catch rate reported at 5 % of real videos called fake
RECALIBRATION_SEED = 0
RECALIBRATION_SPLITS = 20                             # random thirds the recalibration figures average over
TARGETS = {"held_out_auc": (">=", 0.85), "held_out_auc_warp": (">=", 0.75), "held_out_caught": (">=", 0.5),
           "held_out_fpr": ("<=", 0.10), "held_out_ece_after": ("<=", 0.10), "demo_auc": (">=", 0.90)}


def slug(choice: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", choice.lower()).strip("-")


def run_choice(choice: str, force: bool, detector: str | None = None) -> dict[str, Any]:
    """Train (or reuse) the demo recipe with ``choice`` (faces found by ``detector``; None: the default), then
    evaluate its gated model on the held-out set (extracted with the model's own detector)."""
    run_id = f"quality-{slug(choice)}" + (f"-{detector}" if detector else "")
    overrides = ["train.mode=dataset"] if choice == BASELINE else [f"train.pseudo_fakes={choice}"]
    overrides += [f"extract.detector={detector}"] if detector else []
    started = time.perf_counter()
    code = run_pipeline(DEMO, run_id, "demo", overrides, force=force, register=False, stream=False)
    if code != 0:
        raise SystemExit(f"the demo run of {choice} failed (exit {code}); see runs/{run_id}/")
    demo_seconds = time.perf_counter() - started
    model = paths.runs_dir() / run_id / steps.MODEL_STEP / paths.MODEL_ARCHIVE
    code = run_pipeline(HELD_OUT, f"{run_id}-held-out", "demo", [], force=force, stream=False, model=model)
    if code != 0:
        raise SystemExit(f"the held-out evaluation of {choice} failed (exit {code})")
    out: dict[str, Any] = {"choice": choice, "wall_s": demo_seconds}
    for name, rid in (("demo", run_id), ("held-out", f"{run_id}-held-out")):
        folder = paths.runs_dir() / rid / steps.EVALUATION_STEP
        out[name] = json.loads((folder / paths.EVALUATION).read_text())
        out[f"{name}_videos"] = read_manifest(folder / paths.VIDEO_PREDICTIONS)
    out["step_seconds"] = {s.name: json.loads((paths.runs_dir() / run_id / s.name / "step.json").read_text())
                           .get("seconds") for s in steps.STEPS}
    out["train"] = json.loads((paths.runs_dir() / run_id / "train" / paths.MODEL_DIR / "config.json").read_text())
    return out


def figures(result: dict[str, Any]) -> dict[str, Any]:
    """The table's numbers for one choice."""
    demo, held = result["demo"], result["held-out"]
    videos = result["held-out_videos"]
    y, p = videos["label"].astype(int).to_numpy(), videos["p_fake"].to_numpy()
    fig: dict[str, Any] = {
        "demo_auc": demo["metrics"].get("unseen_video_auc") or demo["metrics"].get("video_auc"),
        "demo_fpr": demo["metrics"].get("video_false_positive_rate"),
        "demo_threshold": demo["threshold"],
        "held_out_auc": roc_auc(y, p),
        "held_out_catch_5": tpr_at_fpr(y, p, CATCH_FPR),
        "held_out_caught": float(videos.loc[y == 1, "predicted"].mean()),
        "held_out_fpr": float(videos.loc[y == 0, "predicted"].mean()),
        "held_out_ece": held["metrics"].get("video_ece"),
        "validation_by_family": result["train"].get("validation_by_family"),
        "train_seconds": result["step_seconds"].get("train"),
    }
    reals = videos[y == 0]
    for method in HELD_OUT_METHODS:
        part = pd.concat([reals, videos[videos["manipulation"] == method]])
        fig[f"held_out_auc_{method}"] = roc_auc(part["label"], part["p_fake"])
        fig[f"held_out_catch_5_{method}"] = tpr_at_fpr(part["label"], part["p_fake"], CATCH_FPR)
        fig[f"held_out_caught_{method}"] = float(videos.loc[videos["manipulation"] == method, "predicted"].mean())
    fig.update(recalibration_figures(videos, ScoringRule.from_model_config({"scoring": held["scoring"]})))
    return fig


def recalibration_figures(videos: pd.DataFrame, rule: ScoringRule) -> dict[str, Any]:
    """Recalibrate on a stratified third of the held-out videos and measure on the other two thirds, over
    RECALIBRATION_SPLITS random thirds (one split's ECE on 32 videos is mostly noise). Beside ECE, its noise
    floor: the ECE a perfectly calibrated model with the same recalibrated scores would show on as many
    videos (labels drawn from those scores), which is the least a measurement of that size can show."""
    rng = np.random.default_rng(RECALIBRATION_SEED)
    labels = videos["label"].astype(int).to_numpy()
    out: dict[str, list[float]] = {k: [] for k in ("before", "after", "floor", "fpr", "caught")}
    refused: list[str] = []
    described = ""
    for _ in range(RECALIBRATION_SPLITS):
        third = np.zeros(len(videos), dtype=bool)
        for label in (0, 1):
            idx = np.flatnonzero(labels == label)
            third[rng.permutation(idx)[: max(2, len(idx) // 3)]] = True
        sample, rest = videos[third], videos[~third]
        y = labels[~third]
        before = rest["p_fake"].to_numpy()
        described = (f"{int((sample['label'] == 0).sum())} real + {int((sample['label'] == 1).sum())} fake; "
                     f"measured on {int((y == 0).sum())} real + {int((y == 1).sum())} fake; "
                     f"{RECALIBRATION_SPLITS} random thirds")
        try:
            new_rule, _record = recalibrate(sample, rule, CalibrateConfig())
        except DataError as exc:              # e.g. a third whose reals the model ranks above its fakes
            refused.append(str(exc))
            continue
        after = new_rule.calibrate_video(before)
        called = after >= new_rule.threshold
        out["before"].append(expected_calibration_error(y, before))
        out["after"].append(expected_calibration_error(y, after))
        out["floor"].append(float(np.mean([expected_calibration_error((rng.random(after.size) < after).astype(int),
                                                                     after) for _ in range(20)])))
        out["fpr"].append(float(called[y == 0].mean()))
        out["caught"].append(float(called[y == 1].mean()))
    def mean(key: str) -> float | None:
        return float(np.mean(out[key])) if out[key] else None

    return {"held_out_ece_before": mean("before"), "held_out_ece_after": mean("after"),
            "held_out_ece_floor": mean("floor"), "recalibrated_fpr": mean("fpr"), "recalibrated_caught": mean("caught"),
            "recalibration_sample": described,
            "recalibration_error": (f"refused on {len(refused)} of {RECALIBRATION_SPLITS} thirds: {refused[0]}"
                                    if refused else None)}


ROWS: tuple[tuple[str, str], ...] = (
    ("demo_auc", "demo: video AUC, reals vs unseen manipulations"),
    ("demo_threshold", "threshold chosen (5 % of the demo's val reals)"),
    ("demo_fpr", "demo: real videos called fake at it"),
    ("held_out_auc", "held-out: video AUC, all three manipulations"),
    *((f"held_out_auc_{m}", f"held-out: video AUC, {m}") for m in HELD_OUT_METHODS),
    ("held_out_catch_5", "held-out: fakes caught at 5 % real called fake (ROC)"),
    *((f"held_out_catch_5_{m}", f"held-out: caught at 5 % FPR, {m}") for m in HELD_OUT_METHODS),
    ("held_out_caught", "held-out: fakes caught at the model's own threshold"),
    *((f"held_out_caught_{m}", f"held-out: caught at own threshold, {m}") for m in HELD_OUT_METHODS),
    ("held_out_fpr", "held-out: real videos called fake at the model's own threshold"),
    ("held_out_ece_before", "held-out 2/3: video ECE before recalibration"),
    ("held_out_ece_after", "held-out 2/3: video ECE after recalibration on the other 1/3"),
    ("held_out_ece_floor", "held-out 2/3: ECE a perfectly calibrated model shows on as many videos"),
    ("recalibrated_caught", "held-out 2/3: fakes caught after recalibration (5 % target)"),
    ("recalibrated_fpr", "held-out 2/3: real videos called fake after recalibration"),
    ("train_seconds", "training time, s"),
)


def table(figs: dict[str, dict[str, Any]]) -> str:
    names = list(figs)
    lines = ["| measure | " + " | ".join(names) + " | target |", "|" + "---|" * (len(names) + 2)]
    for key, what in ROWS:
        target = TARGETS.get(key)
        cells = []
        for name in names:
            value = figs[name].get(key)
            mark = "" if target is None or value is None or name == BASELINE else (
                " ✓" if _met(value, target) else " ✗")
            cells.append(_fmt(value) + mark)
        goal = f"{target[0]} {target[1]:g}" if target else ""
        lines.append(f"| {what} | " + " | ".join(cells) + f" | {goal} |")
    fam = sorted({k for f in figs.values() for k in (f.get("validation_by_family") or {})})
    for family in fam:
        cells = [_fmt((figs[n].get("validation_by_family") or {}).get(family)) for n in names]
        lines.append(f"| validation AUC vs {family} pseudo-fakes (crops) | " + " | ".join(cells) + " |  |")
    sample = next(iter(figs.values())).get("recalibration_sample", "")
    errors = "".join(f"Recalibration of {name} failed: {f['recalibration_error']}\n" for name, f in figs.items()
                     if f.get("recalibration_error"))
    return "\n".join(lines) + f"\n\nRecalibration sample: {sample}.\n" + errors


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.quality", description=__doc__.splitlines()[0])
    parser.add_argument("--choices", default=";".join(CHOICES),
                        help="pseudo-fake choices (train.pseudo_fakes), separated by ';'")
    parser.add_argument("--no-baseline", action="store_true", help="skip the dataset-fakes baseline")
    parser.add_argument("--force", action="store_true", help="rerun every step instead of reusing cached runs")
    parser.add_argument("--detector", default=None,
                        help="face detector of the training faces (extract.detector; default: the kit's default), "
                             "e.g. mtcnn-track; the held-out set is extracted with the model's own")
    parser.add_argument("--out", type=Path, default=None, help="default benchmarks/results/quality[-DETECTOR].json")
    args = parser.parse_args(argv)
    args.out = args.out or RESULTS / (f"quality-{args.detector}.json" if args.detector else "quality.json")
    choices = [c.strip() for c in args.choices.split(";") if c.strip()]
    if not args.no_baseline:
        choices.append(BASELINE)
    say("building the demo data and the held-out set (skipped when complete)")
    build_demo_dataset(DEMO, n_videos=64, progress=False)
    build_demo_dataset(HELD_OUT, n_videos=HELD_OUT_VIDEOS, seed=HELD_OUT_SEED, methods=HELD_OUT_METHODS,
                       progress=False)
    started = time.perf_counter()
    figs: dict[str, dict[str, Any]] = {}
    for choice in choices:
        say(f"{choice}: demo recipe, then the held-out set")
        figs[choice] = figures(run_choice(choice, args.force, args.detector))
        say(f"{choice}: held-out AUC {_fmt(figs[choice]['held_out_auc'])}, caught at own threshold "
            f"{_fmt(figs[choice]['held_out_caught'])}")
    machine = machine_info()
    detector = f"Training faces found by detector {args.detector}.\n\n" if args.detector else ""
    text = (f"Machine: {describe_machine(machine)}; {time.perf_counter() - started:.0f} s\n\n" + detector
            + table(figs))
    print(text)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"machine": machine, "figures": figs}, indent=1, default=str) + "\n")
    args.out.with_suffix(".md").write_text(text)
    say(f"figures in {args.out}")
    return 0


def _met(value: float, target: tuple[str, float]) -> bool:
    return value >= target[1] if target[0] == ">=" else value <= target[1]


def _fmt(value: Any) -> str:
    if value is None:
        return "undefined"
    if isinstance(value, float):
        return f"{value:.3f}"
    return str(value)


if __name__ == "__main__":
    sys.exit(main())
