"""The scoring pipeline: every video under an S3 prefix, scored by an approved model package.

Two Processing steps (Processing, not Batch Transform: a video is larger than
Batch Transform's per-request payload, and a Processing job may run for days)::

    score (ProcessingInstanceCount instances, the archive ShardedByS3Key) ─▶ merge (one instance)

``score`` runs ``score_step.py score`` on each instance: the model package is
``ModelPackageArn`` (empty: the group's latest Approved package; a package that
is not Approved is refused), its ``model.tar.gz`` scores the instance's videos
with the endpoint's code (:mod:`deepfake.serving.batch`), and part files go to
``<OutputUrl>/parts/`` as they are written. The prefix is the same for every
execution, so a rerun skips the videos scored earlier by the same model
version and a job that dies keeps what it finished. ``merge`` makes one table
of the archive's videos and a short report under
``runs/<execution id>/merge/output/``: ``predictions.csv`` (+ ``predictions.json``
with the summary) and ``predictions.md``.

The steps are not cached: an archive grows, and the parts already make a rerun cheap.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from deepfake.core import paths
from deepfake.core.errors import PipelineError
from deepfake.core.vocabulary import MODEL_GROUP
from pipelines.deepfake.account import AccountSettings, takes_account_settings
from pipelines.deepfake.bundle import build_script_bundle, upload_bundle
from pipelines.deepfake.pipeline import (
    BASE_JOB_PREFIX,
    PROCESSING_INSTANCE_TYPE,
    VOLUME_SIZE_GB,
    _image,
    _run_uri,
    display_name,
    get_session,
)

PIPELINE_NAME = "DeepfakeScoring"
ENTRY_POINT = "score_step.py"
SCORE_STEP, MERGE_STEP = "score", "merge"
CODE, VIDEOS, PARTS, SCORING, MERGED = "code", "videos", "parts", "scoring", "merged"   # channel names
WORKERS = 2                          # videos scored at once on one instance (threads sharing one model)
MAX_RUNTIME_S = {SCORE_STEP: 5 * 24 * 3600, MERGE_STEP: 6 * 3600}   # StoppingCondition: an archive may take days


@takes_account_settings
def get_pipeline(
    region: str,
    role: str | None = None,
    default_bucket: str | None = None,
    model_package_group_name: str = MODEL_GROUP,
    pipeline_name: str = PIPELINE_NAME,
    base_job_prefix: str = BASE_JOB_PREFIX,
    processing_instance_type: str = PROCESSING_INSTANCE_TYPE,
    volume_size_gb: int = VOLUME_SIZE_GB,
    upload_code: bool = True,
    processing_image_uri: str | None = None,
    sagemaker_session: Any = None,
    **account: Any,
) -> Any:
    """The scoring pipeline (a ``sagemaker.mlops.workflow.pipeline.Pipeline``); arguments as in ``pipeline.py``.

    Network isolation is refused: ``score`` reads the model registry and S3 from inside its job."""
    account_settings = AccountSettings.from_arguments(
        calls_s3={SCORE_STEP: "reads the registered model and lists ArchiveUrl"}, **account)
    if not role:
        raise PipelineError("role is missing: pass the SageMaker execution role ARN (--role-arn)")
    if default_bucket is None and not upload_code:
        raise PipelineError("default_bucket is required to build the definition without AWS access")
    from sagemaker.core.workflow.functions import Join
    from sagemaker.core.workflow.parameters import ParameterInteger, ParameterString
    from sagemaker.mlops.workflow.pipeline import Pipeline

    session = sagemaker_session or get_session(region, default_bucket)
    bucket = default_bucket or session.default_bucket()
    bundle = build_script_bundle(ENTRY_POINT)
    code_uri = (upload_bundle(bundle, session.boto_session.client("s3"), bucket, base_job_prefix,
                              account_settings.s3_put_arguments()) if upload_code else bundle.uri(bucket, base_job_prefix))
    params = {
        "archive": ParameterString("ArchiveUrl", default_value=f"s3://{bucket}/{base_job_prefix}/archive/"),
        "package": ParameterString("ModelPackageArn", default_value=""),
        "output": ParameterString("OutputUrl", default_value=f"s3://{bucket}/{base_job_prefix}/scores"),
        "count": ParameterInteger("ProcessingInstanceCount", default_value=1),
        "type": ParameterString("ProcessingInstanceType", default_value=processing_instance_type),
        "workers": ParameterInteger("WorkersPerInstance", default_value=WORKERS),
    }
    image = processing_image_uri or _image(region, processing_instance_type, "training")
    common = {"role": role, "image": image, "session": session, "params": params, "code_uri": code_uri,
              "volume_size_gb": volume_size_gb, "account": account_settings}
    score = _step(SCORE_STEP, **common, count=params["count"], inputs={VIDEOS: (params["archive"], True)},
                  outputs={PARTS: (Join(on="/", values=[params["output"], PARTS]), "Continuous"),
                           SCORING: (_run_uri(bucket, base_job_prefix, SCORE_STEP, "output"), "EndOfJob")},
                  arguments=["score", "--videos-dir", _input(VIDEOS), "--archive-url", params["archive"],
                             Join(on="", values=["--model-package-arn=", params["package"]]),
                             "--model-package-group", model_package_group_name,
                             "--parts-url", Join(on="/", values=[params["output"], PARTS]),
                             "--parts-dir", _output(PARTS), "--out-dir", _output(SCORING),
                             "--workers", params["workers"].to_string()])
    merge = _step(MERGE_STEP, **common, count=1,
                  inputs={PARTS: (_output_uri(score, PARTS), False), SCORING: (_output_uri(score, SCORING), False)},
                  outputs={MERGED: (_run_uri(bucket, base_job_prefix, MERGE_STEP, "output"), "EndOfJob")},
                  arguments=["merge", "--parts-dir", _input(PARTS), "--scoring-dir", _input(SCORING),
                             "--out-dir", _output(MERGED)])
    return Pipeline(name=pipeline_name, parameters=list(params.values()), steps=[score, merge],
                    sagemaker_session=session)


def _step(name: str, *, role: str, image: str, session: Any, params: dict[str, Any], code_uri: str,
          volume_size_gb: int, account: AccountSettings, count: Any, inputs: dict[str, tuple[Any, bool]],
          outputs: dict[str, tuple[Any, str]], arguments: list[Any]) -> Any:
    from sagemaker.core.processing import Processor
    from sagemaker.core.shapes import ProcessingInput, ProcessingOutput, ProcessingS3Input, ProcessingS3Output
    from sagemaker.mlops.workflow.steps import ProcessingStep

    processor = Processor(role=role, image_uri=image, instance_type=params["type"], instance_count=count,
                          entrypoint=["python3", f"{_input(CODE)}/{ENTRY_POINT}"], volume_size_in_gb=volume_size_gb,
                          max_runtime_in_seconds=MAX_RUNTIME_S[name],
                          base_job_name=f"scoring-{name}", env={"PYTHONUNBUFFERED": "1", **account.environment()},
                          sagemaker_session=session, **account.processor_arguments())
    channels = [ProcessingInput(input_name=channel, s3_input=ProcessingS3Input(
        s3_uri=uri, local_path=_input(channel), s3_data_type="S3Prefix", s3_input_mode="File",
        s3_data_distribution_type="ShardedByS3Key" if sharded else "FullyReplicated"))
        for channel, (uri, sharded) in {CODE: (code_uri, False), **inputs}.items()]
    results = [ProcessingOutput(output_name=channel, s3_output=ProcessingS3Output(
        s3_uri=uri, local_path=_output(channel), s3_upload_mode=mode)) for channel, (uri, mode) in outputs.items()]
    step_args = processor.run(inputs=channels, outputs=results, arguments=arguments)
    return ProcessingStep(name=name, step_args=step_args, display_name=display_name(f"Archive scoring {name}"),
                          description=f"{Path(ENTRY_POINT).stem} {name}")


def _output_uri(step: Any, channel: str) -> Any:
    return step.properties.ProcessingOutputConfig.Outputs[channel].S3Output.S3Uri


def _input(channel: str) -> str:
    return paths.sagemaker_processing_dir("input", channel)


def _output(channel: str) -> str:
    return paths.sagemaker_processing_dir("output", channel)
