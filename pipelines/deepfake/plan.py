"""A run's plan before it starts: what each step downloads, on how many instances, how much volume it
needs, how long it takes and what it costs; a plan where a step cannot fit is refused.

``run-pipeline --plan`` builds the pipeline definition it would upsert, reads each
Processing step's instances, volume, maximum run time and notebook settings from it
(with the execution's ``--parameters``), lists the dataset's prefix (nothing but the
catalog's small index files is downloaded: they give the videos' labels and splits)
and prints one table. Every figure that is not the data's comes from
:class:`Assumptions`: throughput that ``make bench`` measured (docs/benchmarks.md),
the crop size measured on real faces, on-demand prices (:mod:`pipelines.instances`);
the plan prints them with the table. ``python -m pipelines.deepfake.plan --example
dfdc`` plans DFDC from its published figures (docs/sagemaker.md works it through).
"""

from __future__ import annotations

import argparse
import math
import sys
import tempfile
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

from deepfake.core import paths
from deepfake.core.errors import PipelineError
from deepfake.orchestration import steps
from pipelines.instances import GIB, HOURS_PER_MONTH, VOLUME_PRICE_GB_MONTH, instance_type

MB = 1024**2
SPLITS = ("train", "val", "test")


@dataclass(frozen=True)
class Assumptions:
    """What the plan takes as given, each with where it comes from."""

    # make bench item 1 (2026-11-30, 2 cores): 1.38 s for a 10-s 1080p video at 32 frames, 0.89 s of it
    # decoding; at 16 frames ~1.14 s. One extraction worker on 2 physical cores (an ml.m5.xlarge's 4 vCPUs).
    extract_s_per_video: float = 1.2
    probe_s_per_video: float = 0.05          # exploration: open a video and read its header
    faces_per_frame: float = 1.1             # DFDC: one person in most videos, two in some
    crop_bytes: int = 16 * 1024              # a 224-px face crop, JPEG q95, in its tar (14.1 KB measured, 32 real crops)
    row_bytes: int = 260                     # a faces.csv row (box, landmarks, paths)
    # make bench item 2: the classifier scores 32 crops in 0.48 s on 2 cores; with decoding the JPEG crops
    score_crops_per_s: float = 60.0
    # Training images/s per instance family. CPU: make bench item 4 (25 img/s, 2 cores, 224 px). GPU (a T4):
    # an estimate, not measured: the loader (decode, self-blend) ~100 img/s per core (20 img/s measured per
    # process at load 16 on 2 cores), 3 workers on 4 vCPUs; the T4's step ~380 img/s (the H100's 5722 img/s
    # at batch 256 scaled by FP16 peak). Measure yours with make bench's GPU rows and pass it.
    train_images_per_s: Mapping[str, float] = field(default_factory=lambda: {"gpu": 300.0, "cpu_2cores": 25.0})
    startup_s: float = 240.0                 # instance start, image pull, pip install of the step's requirements
    download_mb_per_s: float = 150.0         # File-mode input from S3 onto the volume
    list_s_per_1000: float = 0.1             # one ListObjectsV2 page
    volume_headroom: float = 1.1             # the volume a step needs: 110 % of what it holds, plus 1 GB
    cache_fraction: float = 0.25             # training caches decoded crops up to this share of memory
    model_bytes: int = 80 * MB               # model, model.tar.gz, checkpoint (weights, optimiser, best)

    def record(self) -> dict[str, Any]:
        return {k: dict(v) if isinstance(v, Mapping) else v for k, v in asdict(self).items()}


@dataclass(frozen=True)
class DataShape:
    """What the plan needs of a dataset: its size and its videos per split and label."""

    source: str
    objects: int
    total_bytes: int
    videos: int
    video_bytes: int
    index_bytes: int                          # the catalog's index files (metadata.json, split lists, CSVs)
    counts: Mapping[str, Mapping[int, int]]   # split -> label (0 real, 1 fake) -> videos

    @property
    def mean_video_bytes(self) -> float:
        return self.video_bytes / max(1, self.videos)

    def n(self, splits: tuple[str, ...] = SPLITS, labels: tuple[int, ...] = (0, 1)) -> int:
        return sum(self.counts.get(s, {}).get(label, 0) for s in splits for label in labels)


@dataclass(frozen=True)
class StepSettings:
    name: str
    instance_type: str
    count: int
    volume_gb: int
    max_runtime_s: int
    params: Mapping[str, Any]                 # the notebook's (or script's) parameters, as text where set


@dataclass(frozen=True)
class StepPlan:
    name: str
    instance_type: str
    count: int
    download_bytes: int                       # per instance
    write_bytes: int                          # per instance
    volume_needed_gb: int
    volume_gb: int
    hours: float
    max_runtime_s: int
    usd: float
    note: str = ""

    @property
    def problems(self) -> list[str]:
        out = []
        if self.volume_needed_gb > self.volume_gb:
            out.append(f"step {self.name} needs {self.volume_needed_gb} GB on each instance (downloads "
                       f"{_gb(self.download_bytes)}, writes {_gb(self.write_bytes)}), its volume is {self.volume_gb} GB")
        if self.hours * 3600 > self.max_runtime_s:
            out.append(f"step {self.name} takes about {self.hours:.1f} h, its maximum run time is "
                       f"{self.max_runtime_s / 3600:.1f} h")
        return out


# -- the data ------------------------------------------------------------------------------------

def data_shape(source: str, client: Any = None) -> DataShape:
    """List ``source`` (an S3 prefix or a folder) and read its catalog from the index files alone."""
    from deepfake.data.listing import list_data, stage
    from deepfake.stages.explore import ExploreConfig, build_videos_table

    listing = list_data(source, client)
    if not listing.objects:
        raise PipelineError(f"no object under {source}; upload the dataset there or set InputDataUrl")
    with tempfile.TemporaryDirectory(prefix="deepfake-plan-") as tmp:
        root = stage(listing, tmp, client) if paths.is_s3(source) else paths.resolve(source)
        videos = build_videos_table(root, ExploreConfig())
    counts = {s: {int(k): int(v) for k, v in g["label"].value_counts().items()} for s, g in videos.groupby("split")}
    by_key = {o.key: o.size for o in listing.objects}
    video_bytes = sum(by_key.get(p, 0) for p in videos["path"])
    return DataShape(source, len(listing.objects), listing.total_bytes, len(videos), video_bytes,
                     sum(o.size for o in listing.objects if o.is_index), counts)


def dfdc_shape() -> DataShape:
    """DFDC's full training set from its published figures: 119,154 ten-second videos (19,154 real,
    100,000 fake) in 50 parts, about 470 GB; no split of its own, so the kit's 65/15/20 by original."""
    reals, fakes = 19_154, 100_000
    share = {"train": 0.65, "val": 0.15, "test": 0.20}
    counts = {s: {0: round(reals * f), 1: round(fakes * f)} for s, f in share.items()}
    return DataShape("DFDC (published figures)", objects=reals + fakes + 50, total_bytes=470 * 10**9,
                     videos=reals + fakes, video_bytes=470 * 10**9 - 50 * 200_000, index_bytes=50 * 200_000,
                     counts=counts)


# -- the settings of a definition ----------------------------------------------------------------

def definition_settings(definition: Mapping[str, Any], overrides: Mapping[str, Any] | None = None
                        ) -> dict[str, StepSettings]:
    """Each Processing step's instances, volume, run time and parameters, as an execution with
    ``overrides`` (pipeline parameters) would run it."""
    from pipelines.local.definition import load_definition, parameter_values
    from pipelines.local.expressions import ExpressionError, Scope, UnsupportedError, evaluate

    loaded = load_definition(dict(definition))
    scope = Scope(parameters=parameter_values(loaded, overrides or {}), execution={"PipelineExecutionId": "plan"})
    out = {}
    for name, step in loaded.steps.items():
        if step.type != "Processing":
            continue
        args = step.arguments
        cluster = {k: evaluate(v, scope) for k, v in args["ProcessingResources"]["ClusterConfig"].items()}
        params: dict[str, Any] = {}
        words = args["AppSpecification"].get("ContainerArguments", [])
        for i, word in enumerate(words[:-2]):
            if word == "--param" and isinstance(words[i + 1], str):
                try:
                    params[words[i + 1]] = evaluate(words[i + 2], scope)
                except (ExpressionError, UnsupportedError):
                    continue                          # a value known only at run time (a step's property, file)
        out[name] = StepSettings(name, str(cluster["InstanceType"]), int(cluster["InstanceCount"]),
                                 int(cluster["VolumeSizeInGB"]),
                                 int((args.get("StoppingCondition") or {}).get("MaxRuntimeInSeconds", 86400)), params)
    return out


def notebook_defaults() -> dict[str, dict[str, Any]]:
    """Every notebook step's parameter defaults (what a step gets where the definition sets nothing)."""
    from deepfake.orchestration.notebook import notebook_parameters

    return {s.name: {k: v["default"] for k, v in notebook_parameters(paths.notebooks_dir() / s.notebook).items()}
            for s in steps.STEPS}


# -- the plan -------------------------------------------------------------------------------------

def plan_run(shape: DataShape, settings: Mapping[str, StepSettings], assume: Assumptions = Assumptions()
             ) -> list[StepPlan]:
    """What each step of the pipeline needs for ``shape`` with ``settings`` (see the module docstring)."""
    defaults = notebook_defaults()

    def param(step: str, name: str, kind: type = int) -> Any:
        got = settings[step].params.get(name, defaults.get(step, {}).get(name)) if step in settings else None
        return kind(got if got is not None else defaults[step][name])

    frames = param("extract", "frames_per_video")
    faces_per_video = frames * min(assume.faces_per_frame, param("extract", "max_faces"))
    crop = assume.crop_bytes * (param("extract", "face_size") / 224) ** 2
    mode = param("train", "mode", str)
    reals_fit = shape.n(("train", "val"), (0,))
    train_videos = reals_fit if mode == "self_blend" else shape.n(("train", "val"))
    eval_videos = shape.videos - train_videos
    tables = shape.videos * faces_per_video * assume.row_bytes
    plans = []

    def add(name: str, download: float, write: float, compute_s: float, note: str = "") -> None:
        s = settings[name]
        spec = instance_type(s.instance_type)
        hours = (assume.startup_s + download / (assume.download_mb_per_s * MB) + compute_s) / 3600
        needed = math.ceil((download + write) * assume.volume_headroom / GIB + 1)
        usd = s.count * hours * (spec.usd_per_hour + s.volume_gb * VOLUME_PRICE_GB_MONTH / HOURS_PER_MONTH)
        plans.append(StepPlan(name, s.instance_type, s.count, int(download), int(write), needed, s.volume_gb,
                              hours, s.max_runtime_s, usd, note))

    listing_s = shape.objects / 1000 * assume.list_s_per_1000
    add("inventory", 0, 0, listing_s, f"lists {shape.objects:,} objects; downloads nothing")
    probes = min(param("explore", "probe_videos") or shape.videos, shape.videos)
    add("explore", shape.index_bytes + probes * shape.mean_video_bytes, shape.videos * 200 + 20 * MB,
        listing_s + probes * assume.probe_s_per_video + shape.videos * 2e-4,
        f"the catalog's index files and the {probes} videos it probes")
    n = settings["extract"].count
    add("extract", shape.total_bytes / n, shape.videos * faces_per_video * crop / n + tables / n,
        shape.videos / n * assume.extract_s_per_video,
        f"its 1/{n} of the archive; {shape.videos * faces_per_video / 1e6:.2f} M crops of "
        f"{crop / 1024:.0f} KB in all, into tar shards")
    train_crops = train_videos * faces_per_video
    fit = shape.n(("train",), (0,)) if mode == "self_blend" else shape.n(("train",))
    images = param("train", "epochs") * fit * faces_per_video * (2 if mode != "dataset" else 1)
    spec = instance_type(settings["train"].instance_type)
    rate = assume.train_images_per_s["gpu"] if spec.gpus else assume.train_images_per_s["cpu_2cores"] * spec.vcpus / 4
    decoded = train_crops * param("train", "image_size") ** 2 * 3
    budget = (param("train", "cache_budget_mb") * MB) or assume.cache_fraction * spec.memory_bytes
    how = ("cached in memory" if decoded <= budget else
           f"streamed from tar shards (decoded {_gb(decoded)} > cache {_gb(budget)})")
    add("train", train_crops * crop + tables, assume.model_bytes, images / rate,
        f"mode {mode}: {train_crops / 1e6:.2f} M crops, {how}; {images / 1e6:.1f} M images at {rate:.0f}/s")
    m = settings["score"].count
    eval_crops = eval_videos * faces_per_video
    add("score", eval_crops * crop / m + tables + assume.model_bytes, eval_crops * 60 / m,
        eval_crops / m / assume.score_crops_per_s,
        f"{eval_crops / 1e6:.2f} M crops (the test split" + (", and the fakes self_blend never trains on)"
                                                                if mode == "self_blend" else ")") + f" over {m}")
    add("evaluate", tables + eval_crops * 60 + assume.model_bytes, 50 * MB, eval_crops * 2e-5 + 600,
        "the score step's face logits; a few crops by ranged GETs")
    return plans


def refusals(plans: list[StepPlan]) -> list[str]:
    return [problem for p in plans for problem in p.problems]


def format_plan(shape: DataShape, plans: list[StepPlan], assume: Assumptions = Assumptions()) -> str:
    lines = [f"plan for {shape.source}: {shape.objects:,} objects, {shape.total_bytes / 1e9:,.1f} GB "
             f"({shape.total_bytes / GIB:,.1f} GiB); {shape.videos:,} videos "
             f"({shape.n(labels=(0,)):,} real, {shape.n(labels=(1,)):,} fake; "
             + ", ".join(f"{s} {shape.n((s,)):,}" for s in SPLITS) + ")", "",
             "| step | instances | downloads each | writes each | volume needed | volume | time | max run time | cost | |",
             "|---|---|---:|---:|---:|---:|---:|---:|---:|---|"]
    for p in plans:
        fits = "ok" if not p.problems else "REFUSED"
        lines.append(f"| {p.name} | {p.count} x {p.instance_type} | {_gb(p.download_bytes)} | {_gb(p.write_bytes)} | "
                     f"{p.volume_needed_gb} GB | {p.volume_gb} GB | {p.hours:.1f} h | {p.max_runtime_s / 3600:.0f} h | "
                     f"${p.usd:.2f} | {fits}: {p.note} |")
    total = sum(p.usd for p in plans)
    wall = sum(p.hours for p in plans)
    lines += ["", f"total: about {wall:.1f} h of wall time (steps one after the other), about ${total:.2f} "
                  "on demand in us-east-1", "",
              "assumptions (pipelines/deepfake/plan.py, pipelines/instances.py; figures of make bench on 2 CPU cores):"]
    lines += [f"  {k}: {v}" for k, v in assume.record().items()]
    problems = refusals(plans)
    if problems:
        lines += ["", "REFUSED: " + "; ".join(problems) + ". Raise the volume (get_pipeline resources), share the "
                  "step over more instances (ProcessingInstanceCount, EvaluationInstanceCount) or allow it more "
                  "time, then plan again."]
    return "\n".join(lines)


def _gb(n: float) -> str:
    """Bytes in the volume's unit (GB of 1024^3 bytes, as VolumeSizeInGB counts them)."""
    return f"{n / GIB:.1f} GB" if n >= 0.1 * GIB else f"{n / MB:.0f} MB"


def example_settings(resources: str = "dfdc", extract_count: int = 16, score_count: int = 4
                     ) -> dict[str, StepSettings]:
    """The pipeline's settings with a resources profile, without building a definition (the example)."""
    from pipelines.deepfake import pipeline
    from pipelines.deepfake.resources import step_resources

    sizes = step_resources(resources)
    types = {"inventory": pipeline.INVENTORY_INSTANCE_TYPE, "train": pipeline.TRAINING_INSTANCE_TYPE}
    counts = {"extract": extract_count, "score": score_count}
    return {name: StepSettings(name, types.get(name, pipeline.PROCESSING_INSTANCE_TYPE), counts.get(name, 1),
                               r.volume_gb, r.max_runtime_s, {}) for name, r in sizes.items()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pipelines.deepfake.plan", description=__doc__.split("\n\n")[0])
    parser.add_argument("--example", choices=["dfdc"], required=True, help="plan a dataset from published figures")
    parser.add_argument("--resources", default="dfdc", help="a resources profile (pipelines/deepfake/resources.py)")
    parser.add_argument("--extract-instances", type=int, default=16, help="ProcessingInstanceCount")
    parser.add_argument("--score-instances", type=int, default=4, help="EvaluationInstanceCount")
    args = parser.parse_args(argv)
    shape = dfdc_shape()
    plans = plan_run(shape, example_settings(args.resources, args.extract_instances, args.score_instances))
    print(format_plan(shape, plans))
    return 1 if refusals(plans) else 0


if __name__ == "__main__":
    sys.exit(main())
