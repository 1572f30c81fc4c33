"""What each step of a local run is given: parameter profiles, ``--set`` overrides, the settings one step
takes from another, and the wiring of inputs and outputs between the steps' folders.

``deepfake run`` (:mod:`deepfake.orchestration.runner`) and the benchmarks read them
here; the SageMaker pipeline takes its defaults from the same profiles.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from deepfake.core import paths
from deepfake.core.errors import ConfigError
from deepfake.orchestration import steps
from deepfake.orchestration.notebook import check_parameters, notebook_parameters

# Parameter profiles on top of the notebooks' own defaults. "demo" fits `make demo`
# in minutes on 2 CPU cores; "sbi" is the published SBI recipe, for a GPU; "tiny" is for tests.
PROFILES: Mapping[str, Mapping[str, Mapping[str, Any]]] = {
    "default": {},
    # Self-blended training on the demo's real videos only, fully fine-tuned at 160 px; evaluated on
    # the test split's reals and every fake of the demo, none of which it has seen.
    "demo": {
        "extract": {"frames_per_video": 12, "face_size": 160, "workers": 2},
        "train": {"mode": "self_blend", "epochs": 10, "image_size": 160, "batch_size": 32, "unfreeze_blocks": -1,
                  "backbone_lr_mult": 0.3, "warmup_epochs": 1.0, "patience": 4},
        "evaluate": {},
    },
    # Self-Blended Images (Shiohara & Yamasaki, CVPR 2022) as published, for a GPU: EfficientNet-B4 with AdvProp
    # ImageNet weights at 380 px, 16 reals + 16 self-blends a batch, SAM over SGD (lr 0.001, momentum 0.9, no weight
    # decay), 100 epochs at the full rate, then a linear decay over the last 25; 32 frames a video, as its tests;
    # float32 as SBI's code (TF32 convolutions on Ampere and later), which also lets SAM run on a T4 (no bfloat16).
    # Where the kit still differs from the paper: docs/architecture.md, "The SBI recipe on a GPU".
    "sbi": {
        "extract": {"frames_per_video": 32, "face_size": 380},
        "train": {"mode": "self_blend", "pseudo_fakes": "sbi", "backbone": "efficientnet-b4", "image_size": 380,
                  "batch_size": 32,
                  "epochs": 100, "optimizer": "sam", "lr": 0.001, "momentum": 0.9, "sam_rho": 0.05,
                  "lr_schedule": "constant_linear", "warmup_epochs": 0.0, "weight_decay": 0.0, "backbone_lr_mult": 1.0,
                  "unfreeze_blocks": -1, "label_smoothing": 0.0, "patience": 0, "num_workers": 4,
                  "amp": False},
        "evaluate": {},
    },
    "tiny": {
        "extract": {"frames_per_video": 3, "face_size": 64, "workers": 1},
        "train": {"epochs": 1, "image_size": 64, "batch_size": 8},
        "evaluate": {},
    },
    # The scale test (make test-scale): thousands of short videos, a few frames each, crops of 112 px (training
    # reads 64): extraction keeps one file per crop until it packs them, and an instance's ~2,600 crops (15 to
    # 45 MB written, measured) must fit beside its ~30 MB of videos on a 90-"GB" volume; two short epochs that
    # stream their crops from the tar shards (a cache budget of 1 MB) and checkpoint after each.
    "scale": {
        "extract": {"frames_per_video": 6, "face_size": 112, "workers": 1},
        "train": {"epochs": 2, "image_size": 64, "batch_size": 16, "max_train_batches": 6, "cache_budget_mb": 1},
        "evaluate": {"batch_size": 128},
    },
}


def step_parameters(data: Path, run_dir: Path, profile: str, overrides: Mapping[str, Mapping[str, Any]],
                    *, external: Mapping[str, Path] | None = None) -> dict[str, dict[str, Any]]:
    """Every step's papermill parameters: profile, overrides, linked settings, then the wiring of inputs
    and outputs. ``external`` maps a step to an existing output that stands in for it (``--model``)."""
    external = dict(external or {})
    unknown = sorted(set(overrides) - {s.name for s in steps.STEPS})
    if unknown:
        raise ConfigError(f"--set names unknown step(s) {', '.join(unknown)}; steps: "
                          f"{', '.join(s.name for s in steps.STEPS)}")
    declared = {s.name: notebook_parameters(paths.notebooks_dir() / s.notebook) for s in steps.STEPS}
    chosen: dict[str, dict[str, Any]] = {}
    for step in steps.STEPS:
        chosen[step.name] = {**PROFILES[profile].get(step.name, {}), **overrides.get(step.name, {})}
        if external:
            model_settings = _evaluate_only(step.name, external[steps.TRAIN_STEP], declared)
            _refuse_other_detection(step.name, model_settings, overrides.get(step.name, {}))
            chosen[step.name] = {**model_settings, **overrides.get(step.name, {})}
    for (name, param), (source, source_param) in steps.LINKED.items():
        if param in declared[name] and param not in chosen[name] and source_param in declared[source]:
            chosen[name][param] = chosen[source].get(source_param, declared[source][source_param]["default"])
    out: dict[str, dict[str, Any]] = {}
    for step in steps.STEPS:
        if step.name in external:
            continue
        params = dict(chosen[step.name])
        for param, source in step.inputs.items():
            params[param] = str(data if source == steps.DATA else external.get(source, run_dir / source))
        params["output_dir"] = str(run_dir / step.name)
        out[step.name] = check_parameters(paths.notebooks_dir() / step.notebook, params)
    return out


def _evaluate_only(step: str, model: Path, declared: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
    """An evaluation-only run's settings for ``step``: extraction as the model was trained, every video."""
    values = {k: v for k, v in steps.EVALUATE_ONLY.get(step, {}).items() if k in declared[step]}
    if step == "extract":
        from deepfake.modeling.artifact import read_artifact_config

        settings = read_artifact_config(model).get("extract") or {}
        values.update({k: v for k, v in settings.items() if k in declared[step] and k != "workers"})
    return values


def _refuse_other_detection(step: str, model: Mapping[str, Any], overrides: Mapping[str, Any]) -> None:
    """--model with --set extract.detector (or another detection setting) unlike the model's: the model
    would be evaluated on faces detected otherwise than its training faces."""
    from deepfake.media.extraction import DETECTION_SETTINGS

    for name in DETECTION_SETTINGS:
        if step == "extract" and name in overrides and name in model and str(overrides[name]) != str(model[name]):
            raise ConfigError(f"--set extract.{name}={overrides[name]}: the model was trained on faces found with "
                              f"{name}={model[name]!r}, and a model is evaluated and served only on faces found "
                              "the way its training faces were; drop the --set, or train a model with it")


def existing_model(model: str | os.PathLike[str]) -> Path:
    path = paths.resolve(model)
    if not path.exists():
        raise ConfigError(f"--model {model}: {path} does not exist; give a model folder or a model.tar.gz")
    return path


def parse_overrides(items: Iterable[str]) -> dict[str, dict[str, Any]]:
    """``train.epochs=3`` -> ``{"train": {"epochs": "3"}}`` (typed later against the notebook)."""
    out: dict[str, dict[str, Any]] = {}
    for item in items:
        key, sep, value = item.partition("=")
        step_name, dot, param = key.partition(".")
        if not sep or not dot or not param:
            raise ConfigError(f"--set {item!r} is not STEP.PARAM=VALUE (e.g. train.epochs=3)")
        out.setdefault(step_name, {})[param] = value
    return out
