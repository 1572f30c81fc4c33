"""Each Processing step's volume and maximum run time: profiles, and the checks of a user's own.

SageMaker gives every instance of a Processing job one ML storage volume
(``VolumeSizeInGB``) that holds its File-mode inputs and what it writes, and
stops the job after ``MaxRuntimeInSeconds`` (its ``StoppingCondition``). A step
sized for the 64-video demo fails on DFDC; one sized for DFDC wastes money on
the demo. So both are settings per step: ``get_pipeline(resources=...)`` takes a
profile name of :data:`PROFILES` or a mapping ``{step: {"volume_gb": N,
"max_runtime_s": S}}`` laid over the ``demo`` profile. ``run-pipeline --plan``
(:mod:`pipelines.deepfake.plan`) says what a dataset needs.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from types import MappingProxyType
from typing import Any

from deepfake.core.errors import PipelineError

MAX_RUNTIME_S = 777_600               # SageMaker's ceiling for a Processing job (9 days)
MAX_VOLUME_GB = 16_384                # and for its volume
HOUR = 3600


@dataclass(frozen=True)
class StepResources:
    volume_gb: int                     # ML storage volume of each instance: File-mode inputs + what it writes
    max_runtime_s: int                 # the job is stopped (and the step fails) after this long


# The demo: 64 small videos; every step fits SageMaker's default 30 GB volume and finishes within hours.
DEMO: Mapping[str, StepResources] = MappingProxyType({
    "inventory": StepResources(volume_gb=5, max_runtime_s=1 * HOUR),
    "explore": StepResources(volume_gb=30, max_runtime_s=2 * HOUR),
    "extract": StepResources(volume_gb=30, max_runtime_s=6 * HOUR),
    "train": StepResources(volume_gb=30, max_runtime_s=12 * HOUR),
    "score": StepResources(volume_gb=30, max_runtime_s=6 * HOUR),
    "evaluate": StepResources(volume_gb=30, max_runtime_s=2 * HOUR),
})

# DFDC's full training set (119,154 videos, ~470 GB) with the pipeline's defaults (16 frames a video,
# 224 px crops) and ProcessingInstanceCount 16, EvaluationInstanceCount 4: the figures run-pipeline --plan
# prints for it (docs/sagemaker.md works them through), rounded up with room to spare.
DFDC: Mapping[str, StepResources] = MappingProxyType({
    "inventory": StepResources(volume_gb=5, max_runtime_s=1 * HOUR),
    "explore": StepResources(volume_gb=30, max_runtime_s=2 * HOUR),
    "extract": StepResources(volume_gb=60, max_runtime_s=48 * HOUR),
    "train": StepResources(volume_gb=60, max_runtime_s=120 * HOUR),
    "score": StepResources(volume_gb=30, max_runtime_s=24 * HOUR),
    "evaluate": StepResources(volume_gb=50, max_runtime_s=4 * HOUR),
})

PROFILES: Mapping[str, Mapping[str, StepResources]] = MappingProxyType({"demo": DEMO, "dfdc": DFDC})
FIELDS = ("volume_gb", "max_runtime_s")


def step_resources(resources: str | Mapping[str, Any], volume_size_gb: int | None = None
                   ) -> dict[str, StepResources]:
    """Step -> its resources: a profile, or a mapping of changes over the demo profile; ``volume_size_gb``
    (the older one-value setting) gives every step that volume."""
    if isinstance(resources, str):
        if resources not in PROFILES:
            raise PipelineError(f"resources {resources!r} is not a profile; profiles: {', '.join(PROFILES)}, "
                                'or a mapping such as {"extract": {"volume_gb": 200}}')
        chosen = dict(PROFILES[resources])
    elif isinstance(resources, Mapping):
        chosen = dict(DEMO)
        for step, changes in resources.items():
            if step not in DEMO:
                raise PipelineError(f"resources names step {step!r}; steps: {', '.join(DEMO)}")
            if not isinstance(changes, Mapping) or set(changes) - set(FIELDS):
                raise PipelineError(f"resources[{step!r}] must be a mapping of {', '.join(FIELDS)}; got {changes!r}")
            chosen[step] = replace(chosen[step], **changes)
    else:
        raise PipelineError(f"resources must be a profile name or a mapping; got {resources!r}")
    if volume_size_gb is not None:
        chosen = {step: replace(r, volume_gb=volume_size_gb) for step, r in chosen.items()}
    problems = []
    for step, r in chosen.items():
        if not isinstance(r.volume_gb, int) or not 1 <= r.volume_gb <= MAX_VOLUME_GB:
            problems.append(f"{step} volume_gb {r.volume_gb!r} must be a whole number of GB in 1-{MAX_VOLUME_GB}")
        if not isinstance(r.max_runtime_s, int) or not 1 <= r.max_runtime_s <= MAX_RUNTIME_S:
            problems.append(f"{step} max_runtime_s {r.max_runtime_s!r} must be whole seconds in 1-{MAX_RUNTIME_S}")
    if problems:
        raise PipelineError("resources: " + "; ".join(problems))
    return chosen
