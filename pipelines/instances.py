"""What a SageMaker instance type gives a job: cores, memory, GPUs, and what an hour of it costs.

Read by ``pipeline-local`` (each job's memory cap is its instance's memory) and by the
run plan (``run-pipeline --plan``: instance counts, wall time and cost). Prices are
on-demand SageMaker Processing prices in us-east-1 in USD per instance-hour, as listed
on https://aws.amazon.com/sagemaker/pricing/ when this table was written: an assumption
the plan states, not a quote; other regions and savings plans differ.
"""

from __future__ import annotations

from dataclasses import dataclass

from deepfake.core.errors import PipelineError

GIB = 1024**3
VOLUME_PRICE_GB_MONTH = 0.14          # USD per GB-month of ML storage (general purpose SSD), us-east-1
HOURS_PER_MONTH = 730


@dataclass(frozen=True)
class InstanceType:
    name: str
    vcpus: int
    memory_gib: float
    gpus: int                          # NVIDIA GPUs (T4 on g4dn, A10G on g5)
    usd_per_hour: float                # on-demand Processing price, us-east-1 (module docstring)

    @property
    def memory_bytes(self) -> int:
        return int(self.memory_gib * GIB)


INSTANCE_TYPES: dict[str, InstanceType] = {t.name: t for t in (
    InstanceType("ml.t3.medium", 2, 4, 0, 0.05),
    InstanceType("ml.t3.large", 2, 8, 0, 0.10),
    InstanceType("ml.m5.large", 2, 8, 0, 0.115),
    InstanceType("ml.m5.xlarge", 4, 16, 0, 0.23),
    InstanceType("ml.m5.2xlarge", 8, 32, 0, 0.461),
    InstanceType("ml.m5.4xlarge", 16, 64, 0, 0.922),
    InstanceType("ml.c5.xlarge", 4, 8, 0, 0.204),
    InstanceType("ml.c5.2xlarge", 8, 16, 0, 0.408),
    InstanceType("ml.c5.4xlarge", 16, 32, 0, 0.816),
    InstanceType("ml.g4dn.xlarge", 4, 16, 1, 0.736),
    InstanceType("ml.g4dn.2xlarge", 8, 32, 1, 0.94),
    InstanceType("ml.g5.xlarge", 4, 16, 1, 1.408),
    InstanceType("ml.g5.2xlarge", 8, 32, 1, 1.515),
)}


def instance_type(name: str) -> InstanceType:
    """The table's entry for ``name``; PipelineError listing the known types otherwise."""
    try:
        return INSTANCE_TYPES[name]
    except KeyError:
        raise PipelineError(f"instance type {name!r} is not in the kit's table (pipelines/instances.py); "
                            f"known: {', '.join(INSTANCE_TYPES)}") from None
