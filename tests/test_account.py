"""pipelines/deepfake/account.py: a locked-down account's settings, checked once for both pipelines."""

from __future__ import annotations

import pytest

from deepfake.core.errors import PipelineError
from pipelines.deepfake.account import AccountSettings


def test_network_isolation_is_refused_with_why_and_what_to_do_instead():
    """An isolated Processing job has no network: the steps' own AWS calls (S3, the model registry, a CodeArtifact
    token, MLflow) and installs would fail inside it; the message names the VPC set-up that replaces it."""
    with pytest.raises(PipelineError) as refused:
        AccountSettings.from_arguments(subnets=["subnet-0a1b2c3d"], security_group_ids=["sg-0a1b2c3d"],
                                       enable_network_isolation=True)
    message = str(refused.value)
    for why in ("no network at all", "S3", "model registry", "CodeArtifact", "MLflow", "install"):
        assert why in message
    for instead in ("subnets and security_group_ids", "VPC endpoints for S3, the SageMaker API, CloudWatch Logs and "
                    "CodeArtifact", "processing_image_uri", "docs/sagemaker.md"):
        assert instead in message


def test_the_refusal_names_the_training_pipeline_s_own_s3_calls():
    """Beyond their input channels, these steps call S3 from inside their jobs; the refusal names each one."""
    from pipelines.deepfake.pipeline import steps_calling_s3

    with pytest.raises(PipelineError) as refused:
        AccountSettings.from_arguments(calls_s3=steps_calling_s3(), enable_network_isolation=True)
    assert ("the steps' own S3 calls: inventory lists InputDataUrl, explore lists InputDataUrl and downloads only "
            "what it reads, train restores its checkpoint, evaluate reads extract's crops by ranged GETs") in str(
        refused.value)
