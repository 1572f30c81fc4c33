"""``make bench``: every figure of issues 6 and 11, side by side in one run, as one table and one JSON file.

    python -m benchmarks.run                 # the full run: 10-s 1080p and 720p clips
    python -m benchmarks.run --quick         # a tiny clip, few repetitions (what the test runs)
    python -m benchmarks.run --only 1,3      # some items only
    python -m benchmarks.run --cpus 2        # pin to 2 cores (the issue's CPU targets are for 2 cores)

The table goes to stdout (Markdown), progress to stderr, the JSON (machine,
settings, every row with its raw timings) to ``--out`` and the table beside
it as ``.md``. Pass markers are information, never a failure: the exit code
is 1 only when an item could not run at all.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from datetime import datetime
from pathlib import Path

from benchmarks.clips import FULL_CLIPS, QUICK_CLIPS, ClipSpec, make_clip
from benchmarks.machine import load_average, machine_info, pin_cores
from benchmarks.report import Row, format_table, skipped, write_results
from benchmarks.timing import say
from deepfake.orchestration import steps

RESULTS = Path(__file__).resolve().parent / "results"
STEP_NAMES = tuple(s.name for s in steps.STEPS)
ITEMS = {1: "face extraction vs decode-only", 2: "end-to-end scoring", 3: "notebook overhead",
         4: "training input pipeline", 5: "extraction scaling over workers", 6: "face recall vs the reference MTCNN"}


@dataclass(frozen=True)
class Settings:
    clips: tuple[ClipSpec, ...]        # the first one is the headline clip (the DFDC-budget rows)
    frames: int                        # frames sampled per video (32: the DFDC winner's count)
    reps: int                          # timed runs behind each in-process figure (medians)
    requests: int                      # HTTP requests per clip behind the endpoint's p50/p95
    cli_runs: int                      # `deepfake predict` processes per clip
    notebook_videos: int               # demo videos for the notebook steps (8 is the minimum)
    notebook_clip_frames: int | None   # frames per demo clip; None: the demo's own 24-40
    notebook_reps: int                 # runs of the steps each way
    notebook_steps: tuple[str, ...]    # pipeline steps to time, in order (each reads the one before)
    train_image_size: int              # px; TrainConfig's default is 224
    train_batch_size: int              # crops per step; TrainConfig's default is 32
    train_batches: int                 # timed batches per measurement
    gpu_train_batches: int             # timed batches per measurement on a GPU (batch 128)
    scaling_videos: int                # videos in the workers=1 vs workers=2 extraction
    recall_videos: int                 # demo videos (half real, half fake) behind the selectable detector's recall


FULL = Settings(clips=FULL_CLIPS, frames=32, reps=3, requests=20, cli_runs=2,
                notebook_videos=8, notebook_clip_frames=None, notebook_reps=3, notebook_steps=STEP_NAMES,
                train_image_size=224, train_batch_size=32, train_batches=4, gpu_train_batches=20,
                scaling_videos=4, recall_videos=16)
QUICK = Settings(clips=QUICK_CLIPS, frames=8, reps=1, requests=3, cli_runs=1,
                 notebook_videos=8, notebook_clip_frames=4, notebook_reps=1, notebook_steps=STEP_NAMES[:1],
                 train_image_size=64, train_batch_size=4, train_batches=2, gpu_train_batches=2,
                 scaling_videos=2, recall_videos=8)


class Bench:
    """One run: the settings, the clips (made once), the work folder."""

    def __init__(self, settings: Settings, work: Path) -> None:
        self.settings = settings
        self.work = work
        self._clips: list[tuple[str, Path]] | None = None

    @property
    def clips(self) -> list[tuple[str, Path]]:
        if self._clips is None:
            self._clips = []
            for spec in self.settings.clips:
                say(f"clip {spec.label}: {spec.width}x{spec.height}, {spec.frames} frames at {spec.fps:g} fps, H.264")
                self._clips.append((spec.label, make_clip(spec, self.work / "clips")))
        return self._clips

    @property
    def headline(self) -> str:
        return self.settings.clips[0].label

    def item1(self) -> list[Row]:
        from benchmarks.extraction import bench_extraction

        return bench_extraction(self.clips, self.settings.frames, self.settings.reps)

    def item2(self) -> list[Row]:
        from benchmarks.scoring import bench_scoring, make_model

        s = self.settings
        model = make_model(self.work / "model", s.frames)
        return bench_scoring(self.clips, model, s.frames, s.reps, s.requests, s.cli_runs, self.headline, self.work)

    def item3(self) -> list[Row]:
        from benchmarks.notebooks import bench_notebooks

        s = self.settings
        return bench_notebooks(self.work, s.notebook_videos, s.notebook_clip_frames, s.notebook_reps,
                               s.notebook_steps)

    def item4(self) -> list[Row]:
        from benchmarks.scoring import gpu_rows_device
        from benchmarks.training import bench_training, cuda_configs, packed_crops, rows_needed, write_crops
        from deepfake.stages.train import TrainConfig

        s = self.settings
        crops = write_crops(self.clips[0][1], self.work / "train-crops", s.frames)
        config = TrainConfig(image_size=s.train_image_size, batch_size=s.train_batch_size, device="cpu")
        rows = [bench_training(crops, config.replace(mode=mode), s.train_batches, s.reps)
                for mode in ("dataset", "self_blend")]
        for mode in ("dataset", "self_blend"):           # the same loop beyond its cache budget: streamed
            # no cache, as past cache_budget_mb (the --quick run's tiny crops would fit any budget of 1 MB or more)
            streaming = config.replace(mode=mode, cache_crops=False)
            packed = packed_crops(crops, rows_needed(streaming, s.train_batches), self.work / f"train-tars-{mode}")
            rows.append(bench_training(packed, streaming, s.train_batches, s.reps))
        where = gpu_rows_device()
        for gpu, target in cuda_configs(config.replace(mode="dataset"), where):
            import torch

            label = (f"cuda {torch.cuda.get_device_name(0)} (AMP, channels-last)" if where == "cuda"
                     else f"{where} (dry run of the GPU rows)")
            rows.append(bench_training(crops, gpu, s.gpu_train_batches, s.reps, device_label=label, target=target))
        return rows

    def item5(self) -> list[Row]:
        from benchmarks.extraction import bench_scaling

        return bench_scaling(self.clips, self.settings.frames, self.settings.scaling_videos, self.work)

    def item6(self) -> list[Row]:
        from benchmarks.detection import bench_candidate, bench_recall

        s = self.settings
        return (bench_recall(self.clips[0], s.frames)
                + bench_candidate(self.clips[0], s.frames, self.work, s.recall_videos, s.notebook_clip_frames))


def parse_only(text: str | None) -> list[int]:
    if not text:
        return sorted(ITEMS)
    try:
        items = sorted({int(part) for part in text.split(",") if part.strip()})
    except ValueError:
        items = []
    if not items or any(i not in ITEMS for i in items):
        raise SystemExit(f"--only {text!r}: give item numbers among {', '.join(map(str, ITEMS))}, e.g. --only 1,3")
    return items


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.run", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="a tiny clip and few repetitions (seconds, not minutes)")
    parser.add_argument("--only", default=None, metavar="1,3",
                        help="items to run: " + "; ".join(f"{k} {v}" for k, v in ITEMS.items()))
    parser.add_argument("--out", default=None, metavar="PATH",
                        help="JSON file to write (default benchmarks/results/bench-<time>.json); the table goes beside it as .md")
    parser.add_argument("--work", default=None, metavar="DIR",
                        help="folder for clips, models and step outputs (default benchmarks/results/work; clips are reused)")
    parser.add_argument("--cpus", type=int, default=None, metavar="N", help="pin the run and its processes to N cores")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    items = parse_only(args.only)
    if args.cpus is not None:
        try:
            pin_cores(args.cpus)
        except ValueError as exc:
            raise SystemExit(str(exc)) from None
    settings = QUICK if args.quick else FULL
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    out = Path(args.out) if args.out else RESULTS / f"bench-{stamp}{'-quick' if args.quick else ''}.json"
    work = Path(args.work) if args.work else RESULTS / "work"
    work.mkdir(parents=True, exist_ok=True)
    # The steps of item 3 log to MLflow as every run does (its cost is part of both ways), into a store of
    # the benchmark's own: benchmark runs do not mix with the user's experiments in the project's mlflow.db.
    os.environ.setdefault("MLFLOW_TRACKING_URI", f"sqlite:///{(work / 'mlflow.db').resolve()}")

    machine = machine_info()
    bench = Bench(settings, work)
    runs: dict[int, Callable[[], list[Row]]] = {1: bench.item1, 2: bench.item2, 3: bench.item3, 4: bench.item4,
                                                5: bench.item5, 6: bench.item6}
    rows: list[Row] = []
    errors: list[dict[str, object]] = []
    started = time.perf_counter()
    for item in items:
        item_start = time.perf_counter()
        try:
            rows += runs[item]()
        except Exception as exc:  # noqa: BLE001 - one broken item must not lose the others' figures
            say(f"item {item} ({ITEMS[item]}) failed: {type(exc).__name__}: {exc}")
            errors.append({"item": item, "error": type(exc).__name__, "message": str(exc)})
            rows.append(skipped(item, ITEMS[item], "-", f"error {type(exc).__name__}, see the JSON"))
        say(f"item {item} took {time.perf_counter() - item_start:.1f} s")
    machine["load_average_end"] = load_average()
    run_settings = {"quick": args.quick, "items": items, **asdict(settings),
                    "clips": [{**asdict(c), "label": c.label, "frames": c.frames} for c in settings.clips]}
    write_results(out, rows, machine, run_settings, {"errors": errors,
                                                     "seconds": round(time.perf_counter() - started, 1)})
    print(format_table(rows, machine))
    say(f"results: {out} (table: {out.with_suffix('.md')})")
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
