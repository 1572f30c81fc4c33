"""The SageMaker Pipeline: the kit's notebooks as Processing steps, a gate, registration.

Every entry of ``deepfake.orchestration.steps.STEPS`` becomes one ProcessingStep that runs the
step's notebook with papermill (``run_step.py``) in an AWS PyTorch framework image,
wired to the outputs of the steps it reads, exactly as ``deepfake run`` wires run
folders. After evaluation a ConditionStep compares ``metrics.<GATE_METRIC>`` of
``evaluation.json`` with the ``MetricThreshold`` parameter: a passing model is
registered in the model package group, a failing one ends in a FailStep that says
by how much it missed.

Before them an ``inventory`` step (never cached) lists ``InputDataUrl`` and writes the
listing's digest; exploration gets it as an argument, so the step cache reruns
exploration and extraction when the data under the prefix changed.

S3 layout under ``s3://<default_bucket>/<base_job_prefix>/``::

    data/                          default InputDataUrl
    code/<sha256>/                 run_step.py, requirements.txt, kit/ (see bundle.py)
    runs/<execution id>/<step>/output/   the notebook's output_dir
    runs/<execution id>/<step>/report/   executed notebook + HTML, uploaded as written

The SDK is imported inside the functions: ``import sagemaker`` fails without an
AWS region, and importing this module should not depend on AWS settings.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from deepfake import __version__
from deepfake.core import paths
from deepfake.core.errors import ConfigError, PipelineError
from deepfake.core.vocabulary import APPROVAL_STATUSES, MODEL_GROUP
from deepfake.data.shards import EVAL_GROUP, TRAIN_GROUP
from deepfake.orchestration import steps
from deepfake.orchestration.notebook import check_parameters
from deepfake.scoring.schema import gate_comparison
from pipelines.deepfake.account import AccountSettings, takes_account_settings
from pipelines.deepfake.bundle import build_bundle, build_script_bundle, combined_sha256, upload_bundle
from pipelines.deepfake.inventory_step import LISTING as INVENTORY_LISTING
from pipelines.deepfake.resources import StepResources, step_resources

log = logging.getLogger(__name__)

# Defaults, overridable through get_pipeline's arguments (``--kwargs``).
PIPELINE_NAME = "DeepfakePipeline"
MODEL_PACKAGE_GROUP = MODEL_GROUP
BASE_JOB_PREFIX = "deepfake"
PROCESSING_INSTANCE_TYPE = "ml.m5.xlarge"     # 4 vCPU, 16 GiB: explore, extract, evaluate
TRAINING_INSTANCE_TYPE = "ml.g4dn.xlarge"     # 1 T4 GPU: the steps marked gpu (train)
INFERENCE_INSTANCE_TYPES = ("ml.m5.large", "ml.m5.xlarge", "ml.c5.xlarge", "ml.c5.2xlarge")  # CPU image
VOLUME_SIZE_GB = 100                          # EBS per instance of the scoring pipeline (resources.py: this one's)
CACHE_EXPIRY = "P30D"                         # reuse a finished step with the same arguments for 30 days
FRAMEWORK_VERSION = "2.5.1"                   # AWS PyTorch framework image; numpy<2 inside
PY_VERSION = "py311"
INVENTORY_INSTANCE_TYPE = "ml.t3.medium"      # listing a prefix needs no more


# Step and parameter names of the definition (notebook steps are named after STEPS).
GATE_STEP = "gate"
REGISTER_STEP = "register"
FAIL_STEP = "gate-failed"
EVALUATION_PROPERTY_FILE = "EvaluationReport"
INVENTORY_STEP = "inventory"
LISTING_PROPERTY_FILE = "DataListing"
INVENTORY_ENTRY_POINT = "inventory_step.py"
SCORE_STEP = "score"
SCORE_ENTRY_POINT = "score_faces_step.py"
TRACKING_PARAMETER = "MlflowTrackingServerArn"
CODE_CHANNEL = "code"
DATA_CHANNEL = "data"
REPORT_CHANNEL = "report"
CROPS_CHANNEL = "crops"
CHECKPOINT_CHANNEL = "checkpoints"
ENTRY_POINT = "run_step.py"
PACK_MB = 256                                 # extraction packs its crops into tar shards of about this size

# What the pipeline wires beyond a local run's folders. A local run keeps every crop beside faces.csv and
# scores in the evaluation; here extraction packs its crops into tar shards grouped by the step that reads
# them (deepfake.data.shards), training reads its group, a sharded score step the evaluation's, and the
# evaluation merges the score step's face logits.
#   notebook parameter -> (step, output channel, folder of it): a File-mode input
CHANNEL_INPUTS: Mapping[str, Mapping[str, tuple[str, str, str]]] = {
    "train": {"crops_dir": ("extract", CROPS_CHANNEL, TRAIN_GROUP)},
    "evaluate": {"logits_dir": (SCORE_STEP, SCORE_STEP, "")},
}
#   notebook parameter -> (step, output channel): its S3 URI as the parameter (the step reads a few objects)
S3_ARGUMENTS: Mapping[str, Mapping[str, tuple[str, str]]] = {
    "evaluate": {"crops_dir": ("extract", CROPS_CHANNEL)},       # the worst errors' crops, by ranged GETs
}
#   notebook parameter -> output channel
CHANNEL_OUTPUTS: Mapping[str, Mapping[str, str]] = {
    "extract": {"crops_dir": CROPS_CHANNEL},
    "train": {"checkpoint_dir": CHECKPOINT_CHANNEL},             # per pipeline, uploaded as written, restored
}
PIPELINE_SETTINGS: Mapping[str, Mapping[str, Any]] = {"extract": {"pack_mb": PACK_MB}}
PIPELINE_LINKED: Mapping[tuple[str, str], str] = {("extract", "mode"): "TrainingMode"}   # -> a run parameter

_NAME = re.compile(r"^[a-zA-Z0-9](-*[a-zA-Z0-9])*$")
# An ECR image: by digest (repository@sha256:...) as the kit's CodeBuild passes it, or by tag.
_IMAGE = re.compile(r"^\d{12}\.dkr\.ecr\.[a-z0-9-]+\.amazonaws\.com(\.cn)?/[a-z0-9._/-]+(@sha256:[0-9a-f]{64}|:[\w.-]+)$")
# A step's DisplayName in the pipeline definition schema (aws-sagemaker-mlops/...-JSON-schema: StepName).
_DISPLAY_NAME = re.compile(r"[^A-Za-z0-9_-]+")
DISPLAY_NAME_MAX = 64
_BUCKET = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")
_ROLE = re.compile(r"^arn:aws[a-z-]*:iam::\d{12}:role/[\w+=,.@/-]+$")


@dataclass(frozen=True)
class Parameters:
    """The pipeline parameters a user may change at each execution."""

    input_data: Any
    processing_type: Any
    processing_count: Any
    training_type: Any
    threshold: Any
    approval: Any
    run: Mapping[str, Any]            # RUN_PARAMETERS name -> pipeline parameter
    tracking: Any = None              # MLflow tracking server ARN; empty: no tracking
    evaluation_count: Any = 1         # instances of the sharded evaluation scoring

    def all(self) -> list[Any]:
        return [self.input_data, self.processing_type, self.processing_count, self.evaluation_count,
                self.training_type, *self.run.values(), self.threshold, self.approval,
                *([self.tracking] if self.tracking else [])]


@takes_account_settings
def get_pipeline(
    region: str,
    role: str | None = None,
    default_bucket: str | None = None,
    model_package_group_name: str = MODEL_PACKAGE_GROUP,
    pipeline_name: str = PIPELINE_NAME,
    base_job_prefix: str = BASE_JOB_PREFIX,
    sagemaker_project_name: str | None = None,
    processing_instance_type: str = PROCESSING_INSTANCE_TYPE,
    training_instance_type: str = TRAINING_INSTANCE_TYPE,
    inference_instance_types: Sequence[str] = INFERENCE_INSTANCE_TYPES,
    volume_size_gb: int | None = None,
    upload_code: bool = True,
    profile: str = "default",
    processing_image_uri: str | None = None,
    training_image_uri: str | None = None,
    inference_image_uri: str | None = None,
    resources: str | Mapping[str, Any] = "demo",
    sagemaker_session: Any = None,
    gate_metric: str = steps.GATE_METRIC,
    **account: Any,
) -> Any:
    """The deepfake pipeline (a ``sagemaker.mlops.workflow.pipeline.Pipeline``).

    ``upload_code=False`` builds the same definition without any AWS call: the code
    URIs are computed from the local files, nothing is uploaded. The image of a step
    (CPU or GPU) follows ``processing_instance_type`` / ``training_instance_type``;
    the instance-type pipeline parameters default to them. ``profile`` bakes a parameter
    profile of ``deepfake run`` (``deepfake.orchestration.run_settings.PROFILES``: ``demo``,
    ``tiny``) into the step arguments, and its values of the run parameters become their defaults.
    ``processing_image_uri`` / ``training_image_uri`` run the CPU / GPU steps in the kit's own image
    (``infra/image/Dockerfile``, built and pushed by the model-build CodeBuild, passed by digest), whose
    steps install nothing; ``inference_image_uri`` is the registered model's serving image. Empty: the
    AWS PyTorch images, and each step pip-installs its requirements, pinned by the lock.
    ``gate_metric`` is the metric of ``evaluation.json`` the quality gate compares with ``MetricThreshold``
    (``>=``, or ``<=`` for a lower-is-better one such as ``video_false_positive_rate``).
    ``account``: a locked-down account's VPC, KMS keys and package index
    (:class:`pipelines.deepfake.account.AccountSettings`: ``subnets``, ``security_group_ids``, ...).
    ``resources`` sizes each step's volume and maximum run time (:mod:`pipelines.deepfake.resources`:
    ``demo``, ``dfdc``, or ``{step: {"volume_gb": N, "max_runtime_s": S}}``); ``volume_size_gb`` gives
    every step one volume instead.
    """
    try:
        gate_comparison(gate_metric)
    except ConfigError as exc:
        raise PipelineError(str(exc)) from None
    _check_arguments(region=region, role=role, default_bucket=default_bucket,
                     model_package_group_name=model_package_group_name, pipeline_name=pipeline_name,
                     base_job_prefix=base_job_prefix, processing_instance_type=processing_instance_type,
                     training_instance_type=training_instance_type,
                     inference_instance_types=inference_instance_types, volume_size_gb=volume_size_gb,
                     images=(processing_image_uri, training_image_uri, inference_image_uri))
    account_settings = AccountSettings.from_arguments(calls_s3=steps_calling_s3(), **account)
    settings = profile_settings(profile)
    sizes = step_resources(resources, volume_size_gb)
    if default_bucket is None and not upload_code:
        raise PipelineError("default_bucket is required to build the definition without AWS access; "
                            'pass it in --kwargs, e.g. {"default_bucket": "my-bucket"}')
    from sagemaker.core.workflow.functions import JsonGet
    from sagemaker.mlops.workflow.pipeline import Pipeline

    session = sagemaker_session or get_session(region, default_bucket)
    bucket = default_bucket or session.default_bucket()
    backbone = settings.get(steps.TRAIN_STEP, {}).get("backbone")             # what training and evaluation build
    bundles = {s.name: build_bundle(s.notebook, backbone) for s in steps.STEPS}   # each step ships only what it runs
    bundles[INVENTORY_STEP] = build_script_bundle(INVENTORY_ENTRY_POINT)
    bundles[SCORE_STEP] = build_script_bundle(SCORE_ENTRY_POINT, backbone)
    if upload_code:
        s3 = session.boto_session.client("s3")
        code_uris = {name: upload_bundle(b, s3, bucket, base_job_prefix, account_settings.s3_put_arguments())
                     for name, b in bundles.items()}
    else:
        code_uris = {name: b.uri(bucket, base_job_prefix) for name, b in bundles.items()}
    params = pipeline_parameters(bucket, base_job_prefix, processing_instance_type, training_instance_type,
                                 settings)
    images = {False: processing_image_uri or _image(region, processing_instance_type, "training"),
              True: training_image_uri or _image(region, training_instance_type, "training")}

    evaluation = _property_file()
    listing = _property_file(LISTING_PROPERTY_FILE, INVENTORY_STEP, INVENTORY_LISTING)
    inventory = _inventory_step(params, listing, session=session, role=role, image=images[False],
                                code_uri=code_uris[INVENTORY_STEP], bucket=bucket, prefix=base_job_prefix,
                                resources=sizes[INVENTORY_STEP], account=account_settings)
    digest = JsonGet(step_name=inventory.name, property_file=listing, json_path="digest")
    built: dict[str, Any] = {}
    for step in steps.STEPS:
        if step.name == steps.EVALUATION_STEP:
            built[SCORE_STEP] = _score_step(built, params, session=session, role=role, image=images[False],
                                            code_uri=code_uris[SCORE_STEP], bucket=bucket, prefix=base_job_prefix,
                                            resources=sizes[SCORE_STEP], account=account_settings,
                                            batch_size=settings.get(step.name, {}).get("batch_size"))
        built[step.name] = _notebook_step(
            step, built, params, session=session, role=role, image=images[step.gpu], code_uri=code_uris[step.name],
            bucket=bucket, prefix=base_job_prefix, resources=sizes[step.name], settings=settings.get(step.name, {}),
            account=account_settings,
            property_files=[evaluation] if step.name == steps.EVALUATION_STEP else None, digest=digest,
            checkpoints=_checkpoint_uri(bucket, base_job_prefix, pipeline_name, step.name),
        )
    gate = _gate_step(built, evaluation, params, session=session, role=role, region=region,
                      group=model_package_group_name, inference_instance_types=inference_instance_types,
                      code_sha256=combined_sha256(bundles.values()), pipeline_name=pipeline_name,
                      project=sagemaker_project_name, step_images=images, gate_metric=gate_metric,
                      inference_image=inference_image_uri or _image(region, inference_instance_types[0], "inference"),
                      digest=digest)
    return Pipeline(name=pipeline_name, parameters=params.all(), steps=[inventory, *built.values(), gate],
                    sagemaker_session=session)


def get_session(region: str, default_bucket: str | None) -> Any:
    """A PipelineSession: steps are recorded into the definition instead of started."""
    import boto3
    from sagemaker.core.workflow.pipeline_context import PipelineSession

    from pipelines._utils import validate_sdk_config_once

    validate_sdk_config_once()

    return PipelineSession(boto_session=boto3.Session(region_name=region), default_bucket=default_bucket)


def get_pipeline_custom_tags(new_tags: list[dict[str, str]], region: str,
                             sagemaker_project_arn: str | None = None) -> list[dict[str, str]]:
    """The given tags plus the SageMaker project's own tags (as the project templates do)."""
    if not sagemaker_project_arn:
        return new_tags
    import boto3
    from botocore.exceptions import BotoCoreError, ClientError

    try:
        response = boto3.client("sagemaker", region_name=region).list_tags(ResourceArn=sagemaker_project_arn)
    except (BotoCoreError, ClientError) as exc:
        log.warning("could not read the tags of project %s: %s", sagemaker_project_arn,
                    " ".join(str(exc).split())[:200])
        return new_tags
    keys = {t["Key"] for t in new_tags}
    return [*new_tags, *(t for t in response.get("Tags", []) if t["Key"] not in keys)]


def profile_settings(profile: str) -> Mapping[str, Mapping[str, Any]]:
    """Step -> notebook parameter -> value of a ``deepfake run`` profile (nothing for ``default``)."""
    if profile == "default":
        return {}
    from deepfake.orchestration.run_settings import PROFILES

    if profile not in PROFILES:
        raise PipelineError(f"profile {profile!r} is not a profile of deepfake run; profiles: {', '.join(PROFILES)}")
    return PROFILES[profile]


def pipeline_parameters(bucket: str, prefix: str, processing_instance_type: str,
                        training_instance_type: str, settings: Mapping[str, Mapping[str, Any]] | None = None
                        ) -> Parameters:
    from sagemaker.core.workflow.parameters import (
        ParameterBoolean,
        ParameterFloat,
        ParameterInteger,
        ParameterString,
    )

    kinds = {int: ParameterInteger, float: ParameterFloat, str: ParameterString, bool: ParameterBoolean}
    run = {}
    for name, (step_name, param, kind, default) in steps.RUN_PARAMETERS.items():
        default = kind((settings or {}).get(step_name, {}).get(param, default))
        run[name] = kinds[kind](name=name, default_value=default)
    return Parameters(
        input_data=ParameterString("InputDataUrl", default_value=f"s3://{bucket}/{prefix}/data/"),
        processing_type=ParameterString("ProcessingInstanceType", default_value=processing_instance_type),
        processing_count=ParameterInteger("ProcessingInstanceCount", default_value=1),
        evaluation_count=ParameterInteger("EvaluationInstanceCount", default_value=1),
        training_type=ParameterString("TrainingInstanceType", default_value=training_instance_type),
        threshold=ParameterFloat("MetricThreshold", default_value=float(steps.GATE_THRESHOLD)),
        approval=ParameterString("ModelApprovalStatus", default_value="PendingManualApproval",
                                 enum_values=list(APPROVAL_STATUSES)),
        run=run,
        # A SageMaker MLflow tracking server's (or MLflow app's) ARN: each step logs its run there.
        tracking=ParameterString(TRACKING_PARAMETER, default_value=""),
    )


def step_parameters(step: steps.Step, params: Parameters | None = None,
                    settings: Mapping[str, Any] | None = None, digest: Any = "",
                    built: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The papermill parameters of ``step`` in SageMaker, the container paths included.

    Run parameters are pipeline variables (strings at run time, typed again by
    ``run_step.py`` against the notebook); without ``params`` they are their defaults.
    ``settings`` (a profile's values for this step) are fixed arguments, as text. A step of
    ``steps.READS_S3`` gets the dataset's S3 URI and ``digest``, the listing's (the inventory's JsonGet);
    the pipeline's own wiring (``CHANNEL_INPUTS``, ``S3_ARGUMENTS``, ``CHANNEL_OUTPUTS``) comes on top.
    """
    run_params = {param for step_name, param, _kind, _default in steps.RUN_PARAMETERS.values()
                  if step_name == step.name}
    out: dict[str, Any] = {k: str(v) for k, v in (settings or {}).items() if k not in run_params}
    for param, source in step.inputs.items():
        out[param] = paths.sagemaker_processing_dir("input", DATA_CHANNEL if source == steps.DATA else source)
    if step.name in steps.READS_S3:
        out[steps.READS_S3[step.name]] = "s3://bucket/data/" if params is None else params.input_data
        out[steps.DIGEST_PARAMETER] = digest
    for param in CHANNEL_INPUTS.get(step.name, {}):
        out[param] = paths.sagemaker_processing_dir("input", _channel(param))
    for param, (source, channel) in S3_ARGUMENTS.get(step.name, {}).items():
        out[param] = f"s3://bucket/runs/x/{source}/{channel}" if built is None else output_uri(built[source], channel)
    for param, channel in CHANNEL_OUTPUTS.get(step.name, {}).items():
        out[param] = paths.sagemaker_processing_dir("output", channel)
    out.update({k: str(v) for k, v in PIPELINE_SETTINGS.get(step.name, {}).items()})
    for (name, param), run_name in PIPELINE_LINKED.items():
        if name == step.name:
            out[param] = steps.RUN_PARAMETERS[run_name][3] if params is None else params.run[run_name].to_string()
    out["output_dir"] = paths.sagemaker_processing_dir("output", step.name)
    linked = {(source, source_param): param for (name, param), (source, source_param) in steps.LINKED.items()
              if name == step.name}
    for name, (step_name, param, _kind, default) in steps.RUN_PARAMETERS.items():
        value = default if params is None else params.run[name].to_string()
        if step_name == step.name:
            out[param] = value
        elif (step_name, param) in linked:            # e.g. exploration checks the data for the training mode
            out[linked[(step_name, param)]] = value
    return out


def _notebook_step(step: steps.Step, built: Mapping[str, Any], params: Parameters, *, session: Any,
                   role: str, image: str, code_uri: str, bucket: str, prefix: str, resources: StepResources,
                   property_files: list[Any] | None, settings: Mapping[str, Any], account: AccountSettings,
                   digest: Any = "", checkpoints: Any = None) -> Any:
    from sagemaker.core.shapes import ProcessingInput, ProcessingOutput, ProcessingS3Input, ProcessingS3Output
    from sagemaker.core.workflow.functions import Join
    from sagemaker.mlops.workflow.steps import CacheConfig, ProcessingStep

    sharded_param = steps.SHARDED.get(step.name)
    _check_notebook(step, sharded=sharded_param is not None, settings=settings)
    processor = _processor(step.name, ENTRY_POINT, role=role, image=image, session=session, prefix=prefix,
                           instance_type=params.training_type if step.gpu else params.processing_type,
                           instance_count=params.processing_count if sharded_param else 1,
                           resources=resources, account=account)

    def s3_input(name: str, uri: Any, sharded: bool = False) -> Any:
        return ProcessingInput(input_name=name, s3_input=ProcessingS3Input(
            s3_uri=uri, local_path=paths.sagemaker_processing_dir("input", name), s3_data_type="S3Prefix",
            s3_input_mode="File",
            s3_data_distribution_type="ShardedByS3Key" if sharded else "FullyReplicated"))

    inputs = [s3_input(CODE_CHANNEL, code_uri)]
    for param, source in step.inputs.items():
        name = DATA_CHANNEL if source == steps.DATA else source
        if any(i.input_name == name for i in inputs) or steps.READS_S3.get(step.name) == param:
            continue
        uri = params.input_data if source == steps.DATA else output_uri(built[source], source)
        inputs.append(s3_input(name, uri, sharded=param == sharded_param))
    for param, (source, channel, folder) in CHANNEL_INPUTS.get(step.name, {}).items():
        uri = output_uri(built[source], source if channel == source else channel)
        inputs.append(s3_input(_channel(param), _join_uri(uri, folder)))

    def s3_output(name: str, local: str, mode: str) -> Any:
        return ProcessingOutput(output_name=name, s3_output=ProcessingS3Output(
            s3_uri=_run_uri(bucket, prefix, step.name, "output" if name == step.name else name),
            local_path=local, s3_upload_mode=mode))

    report_dir = paths.sagemaker_processing_dir("output", REPORT_CHANNEL)
    outputs = [s3_output(step.name, paths.sagemaker_processing_dir("output", step.name), "EndOfJob"),
               # Continuous: the executed notebook reaches S3 even when the job fails.
               s3_output(REPORT_CHANNEL, report_dir, "Continuous")]
    arguments: list[Any] = ["--step", step.name, "--report-dir", report_dir]
    for channel in CHANNEL_OUTPUTS.get(step.name, {}).values():
        local = paths.sagemaker_processing_dir("output", channel)
        if channel == CHECKPOINT_CHANNEL:          # one place per pipeline: a rerun resumes from it
            outputs.append(ProcessingOutput(output_name=channel, s3_output=ProcessingS3Output(
                s3_uri=checkpoints, local_path=local, s3_upload_mode="Continuous")))
            arguments += ["--restore", Join(on="=", values=[local, checkpoints])]
        else:
            outputs.append(s3_output(channel, local, "EndOfJob"))

    if sharded_param:
        arguments += ["--shard-param", steps.SHARD_PARAMETER]
    if params.tracking is not None:
        arguments += ["--tracking-uri", params.tracking]
    for name, value in step_parameters(step, params, settings, digest, built).items():
        arguments += ["--param", name, value]
    step_args = processor.run(inputs=inputs, outputs=outputs, arguments=arguments)
    return ProcessingStep(
        name=step.name, step_args=step_args, display_name=display_name(step.title),
        description=f"{step.title}: notebooks/{step.notebook} run with papermill",
        property_files=property_files, cache_config=CacheConfig(enable_caching=True, expire_after=CACHE_EXPIRY),
        retry_policies=_retry_policies(),
    )


def display_name(title: str) -> str:
    """``"Data exploration"`` -> ``"Data-exploration"``: the schema's StepName pattern, which a title's
    spaces break (the title stays in the step's Description)."""
    return _DISPLAY_NAME.sub("-", title).strip("-")[:DISPLAY_NAME_MAX]


def _score_step(built: Mapping[str, Any], params: Parameters, *, session: Any, role: str, image: str,
                code_uri: str, bucket: str, prefix: str, resources: StepResources, account: AccountSettings,
                batch_size: Any) -> Any:
    """The evaluation's face logits, on ``EvaluationInstanceCount`` instances: each scores its share of the
    extraction's ``eval`` tar shards (ShardedByS3Key) with the trained model (``score_faces_step.py``)."""
    from sagemaker.core.shapes import ProcessingInput, ProcessingOutput, ProcessingS3Input, ProcessingS3Output
    from sagemaker.mlops.workflow.steps import CacheConfig, ProcessingStep

    extract, train = built["extract"], built[steps.TRAIN_STEP]
    channels = {CODE_CHANNEL: (code_uri, False), "faces": (output_uri(extract, "extract"), False),
                CROPS_CHANNEL: (_join_uri(output_uri(extract, CROPS_CHANNEL), EVAL_GROUP), True),
                "model": (output_uri(train, steps.TRAIN_STEP), False)}
    inputs = [ProcessingInput(input_name=name, s3_input=ProcessingS3Input(
        s3_uri=uri, local_path=paths.sagemaker_processing_dir("input", name), s3_data_type="S3Prefix",
        s3_input_mode="File", s3_data_distribution_type="ShardedByS3Key" if sharded else "FullyReplicated"))
        for name, (uri, sharded) in channels.items()]
    out_dir = paths.sagemaker_processing_dir("output", SCORE_STEP)
    processor = _processor(SCORE_STEP, SCORE_ENTRY_POINT, role=role, image=image, session=session, prefix=prefix,
                           instance_type=params.processing_type, instance_count=params.evaluation_count,
                           resources=resources, account=account)
    arguments = ["--faces-dir", paths.sagemaker_processing_dir("input", "faces"),
                 "--crops-dir", paths.sagemaker_processing_dir("input", CROPS_CHANNEL),
                 "--model-dir", paths.sagemaker_processing_dir("input", "model"), "--out-dir", out_dir]
    if batch_size is not None:
        arguments += ["--batch-size", str(batch_size)]
    step_args = processor.run(inputs=inputs, arguments=arguments, outputs=[ProcessingOutput(
        output_name=SCORE_STEP, s3_output=ProcessingS3Output(
            s3_uri=_run_uri(bucket, prefix, SCORE_STEP, "output"), local_path=out_dir, s3_upload_mode="EndOfJob"))])
    return ProcessingStep(
        name=SCORE_STEP, step_args=step_args, display_name=display_name("Evaluation scoring"),
        description="face logits of the evaluation's crops, sharded over EvaluationInstanceCount instances",
        cache_config=CacheConfig(enable_caching=True, expire_after=CACHE_EXPIRY), retry_policies=_retry_policies())


def _channel(param: str) -> str:
    """The input or output channel a folder parameter becomes: ``crops_dir`` -> ``crops``."""
    return param.removesuffix("_dir")


def _join_uri(uri: Any, folder: str) -> Any:
    from sagemaker.core.workflow.functions import Join

    return Join(on="/", values=[uri, folder]) if folder else uri


def _checkpoint_uri(bucket: str, prefix: str, pipeline_name: str, step_name: str) -> str:
    """Where a step's checkpoint lives across executions: one per pipeline and step."""
    return f"s3://{bucket}/{prefix}/{CHECKPOINT_CHANNEL}/{pipeline_name}/{step_name}"


def output_uri(processing_step: Any, channel: str) -> Any:
    """The S3 URI of a step's output channel, resolved at run time (cached steps included)."""
    return processing_step.properties.ProcessingOutputConfig.Outputs[channel].S3Output.S3Uri


def _gate_step(built: Mapping[str, Any], evaluation: Any, params: Parameters, *, session: Any, role: str,
               region: str, group: str, inference_instance_types: Sequence[str], code_sha256: str,
               pipeline_name: str, project: str | None, step_images: Mapping[bool, str], inference_image: str,
               digest: Any, gate_metric: str = steps.GATE_METRIC) -> Any:
    from sagemaker.core.model_metrics import MetricsSource, ModelMetrics
    from sagemaker.core.workflow.conditions import ConditionGreaterThanOrEqualTo, ConditionLessThanOrEqualTo
    from sagemaker.core.workflow.execution_variables import ExecutionVariables
    from sagemaker.core.workflow.functions import Join, JsonGet
    from sagemaker.mlops.workflow.condition_step import ConditionStep
    from sagemaker.mlops.workflow.fail_step import FailStep
    from sagemaker.mlops.workflow.model_step import ModelStep
    from sagemaker.serve.model_builder import ModelBuilder

    from deepfake.core.vocabulary import ACCEPTED_TYPES, RESPONSE_TYPES

    evaluate = built[steps.EVALUATION_STEP]
    gated = built[steps.MODEL_STEP]
    metric = JsonGet(step_name=evaluate.name, property_file=evaluation, json_path=f"metrics.{gate_metric}")
    lower = gate_comparison(gate_metric) == "<="
    evaluation_uri = Join(on="/", values=[output_uri(evaluate, steps.EVALUATION_STEP), paths.EVALUATION])
    report = Path(steps.step(steps.EVALUATION_STEP).notebook).with_suffix(".html").name
    report_uri = Join(on="/", values=[output_uri(evaluate, REPORT_CHANNEL), report])
    builder = ModelBuilder(
        s3_model_data_url=Join(on="/", values=[output_uri(gated, steps.MODEL_STEP), paths.MODEL_ARCHIVE]),
        image_uri=inference_image,
        role_arn=role, sagemaker_session=session, instance_type=inference_instance_types[0],
        # The serving code is inside model.tar.gz (code/inference.py); nothing to upload or repack.
        env_vars={"SAGEMAKER_PROGRAM": "inference.py"}, dependencies={}, log_level=logging.WARNING,
    )
    metadata = {"EvaluationReport": report_uri, "GateMetric": gate_metric,
                "KitVersion": __version__, "CodeSha256": code_sha256, "Pipeline": pipeline_name,
                # the MLflow run of this execution (deepfake.orchestration.tracking names it so)
                "MlflowRunName": ExecutionVariables.PIPELINE_EXECUTION_ID,
                # the runtime that trained and evaluated it: the kit's image by digest, or the AWS image's tag
                "ProcessingImage": step_images[False], "TrainingImage": step_images[True],
                # the data it was trained and evaluated on: the prefix and its listing's digest (inventory step)
                "DataUrl": params.input_data, "DataDigest": digest}
    if project:
        metadata["SageMakerProjectName"] = project
    register = ModelStep(name=REGISTER_STEP, display_name=display_name("Register the model"), step_args=builder.register(
        model_package_group_name=group,
        content_types=list(ACCEPTED_TYPES), response_types=list(RESPONSE_TYPES),
        inference_instances=list(inference_instance_types), transform_instances=list(inference_instance_types),
        model_metrics=ModelMetrics(model_statistics=MetricsSource(content_type="application/json",
                                                                  s3_uri=evaluation_uri)),
        approval_status=params.approval, customer_metadata_properties=metadata,
        description=f"Deepfake-video detector; registered by {pipeline_name} at {gate_metric} "
                    f"{gate_comparison(gate_metric)} threshold",
    ))
    fail = FailStep(name=FAIL_STEP, display_name=display_name("Quality gate failed"), error_message=Join(on=" ", values=[
        f"quality gate: {gate_metric}", metric, "is above" if lower else "is below", "the threshold",
        params.threshold,
        "(MetricThreshold); the model was not registered",
    ]))
    return ConditionStep(
        name=GATE_STEP, display_name=display_name("Quality gate"),
        description=f"register the model when {gate_metric} {gate_comparison(gate_metric)} MetricThreshold",
        conditions=[(ConditionLessThanOrEqualTo if lower else ConditionGreaterThanOrEqualTo)(
            left=metric, right=params.threshold)],
        if_steps=[register], else_steps=[fail],
    )


def _property_file(name: str = EVALUATION_PROPERTY_FILE, output: str = steps.EVALUATION_STEP,
                   path: str = paths.EVALUATION) -> Any:
    from sagemaker.core.workflow.properties import PropertyFile

    return PropertyFile(name=name, output_name=output, path=path)


def _inventory_step(params: Parameters, listing: Any, *, session: Any, role: str, image: str, code_uri: str,
                    bucket: str, prefix: str, resources: StepResources, account: AccountSettings) -> Any:
    """The first step: the listing of ``InputDataUrl`` and its digest (``inventory_step.py``); never cached."""
    from sagemaker.core.shapes import ProcessingInput, ProcessingOutput, ProcessingS3Input, ProcessingS3Output
    from sagemaker.mlops.workflow.steps import ProcessingStep

    code_dir = paths.sagemaker_processing_dir("input", CODE_CHANNEL)
    out_dir = paths.sagemaker_processing_dir("output", INVENTORY_STEP)
    processor = _processor(INVENTORY_STEP, INVENTORY_ENTRY_POINT, role=role, image=image, session=session,
                           prefix=prefix, instance_type=INVENTORY_INSTANCE_TYPE, instance_count=1,
                           resources=resources, account=account)
    step_args = processor.run(
        inputs=[ProcessingInput(input_name=CODE_CHANNEL, s3_input=ProcessingS3Input(
            s3_uri=code_uri, local_path=code_dir, s3_data_type="S3Prefix", s3_input_mode="File",
            s3_data_distribution_type="FullyReplicated"))],
        outputs=[ProcessingOutput(output_name=INVENTORY_STEP, s3_output=ProcessingS3Output(
            s3_uri=_run_uri(bucket, prefix, INVENTORY_STEP, "output"), local_path=out_dir, s3_upload_mode="EndOfJob"))],
        arguments=["--data-url", params.input_data, "--out-dir", out_dir])
    return ProcessingStep(name=INVENTORY_STEP, step_args=step_args, display_name=display_name("Data inventory"),
                          description="list InputDataUrl (nothing downloaded): its digest keys the steps' cache",
                          property_files=[listing], retry_policies=_retry_policies())


def _processor(name: str, entry_point: str, *, role: str, image: str, session: Any, prefix: str,
               instance_type: Any, instance_count: Any, resources: StepResources, account: AccountSettings) -> Any:
    """The Processor of every step: its instances, volume and maximum run time, and the account's VPC, KMS
    keys and package index (:class:`AccountSettings`)."""
    from sagemaker.core.processing import Processor

    return Processor(
        role=role, image_uri=image, instance_type=instance_type, instance_count=instance_count,
        entrypoint=["python3", f"{paths.sagemaker_processing_dir('input', CODE_CHANNEL)}/{entry_point}"],
        volume_size_in_gb=resources.volume_gb, max_runtime_in_seconds=resources.max_runtime_s,
        base_job_name=f"{prefix}-{name}", env={"PYTHONUNBUFFERED": "1", **account.environment()},
        sagemaker_session=session, **account.processor_arguments())


def steps_calling_s3() -> dict[str, str]:
    """Step -> what it reads from S3 from inside its job, beyond its input channels (so it needs a network:
    :class:`AccountSettings` refuses network isolation naming these), from the pipeline's wiring."""
    out = {INVENTORY_STEP: "lists InputDataUrl"}
    out.update({name: "lists InputDataUrl and downloads only what it reads" for name in steps.READS_S3})
    out.update({name: "restores its checkpoint" for name, channels in CHANNEL_OUTPUTS.items()
                if CHECKPOINT_CHANNEL in channels.values()})
    out.update({name: "reads " + ", ".join(f"{source}'s {channel}" for source, channel in params.values())
                + " by ranged GETs" for name, params in S3_ARGUMENTS.items()})
    return out


def _retry_policies() -> list[Any]:
    """Retry what is not the notebook's fault: no capacity, a SageMaker internal error."""
    from sagemaker.mlops.workflow.retry import SageMakerJobExceptionTypeEnum, SageMakerJobStepRetryPolicy

    return [SageMakerJobStepRetryPolicy(
        exception_types=[SageMakerJobExceptionTypeEnum.CAPACITY_ERROR,
                         SageMakerJobExceptionTypeEnum.INTERNAL_ERROR],
        interval_seconds=60, backoff_rate=2.0, max_attempts=3)]


def _image(region: str, instance_type: str, scope: str) -> str:
    from sagemaker.core import image_uris

    return image_uris.retrieve("pytorch", region, version=FRAMEWORK_VERSION, py_version=PY_VERSION,
                               image_scope=scope, instance_type=instance_type)


def _run_uri(bucket: str, prefix: str, step_name: str, channel: str) -> Any:
    from sagemaker.core.workflow.execution_variables import ExecutionVariables
    from sagemaker.core.workflow.functions import Join

    return Join(on="/", values=["s3:/", bucket, prefix, "runs", ExecutionVariables.PIPELINE_EXECUTION_ID,
                                step_name, channel])


def _check_notebook(step: steps.Step, *, sharded: bool, settings: Mapping[str, Any]) -> None:
    """Fail at definition time, not an hour into an execution, when a notebook lacks a parameter."""
    params = step_parameters(step, settings=settings)
    if sharded:
        params[steps.SHARD_PARAMETER] = "algo-1"
    try:
        check_parameters(paths.notebooks_dir() / step.notebook, params)
    except ConfigError as exc:
        raise PipelineError(f"step {step.name}: {exc}") from None


def _check_arguments(**kw: Any) -> None:
    problems = []
    if not isinstance(kw["region"], str) or not re.fullmatch(r"[a-z]{2}(-[a-z]+)+-\d", kw["region"]):
        problems.append(f"region {kw['region']!r} is not an AWS region name such as us-east-1")
    if not kw["role"]:
        problems.append("role is missing: pass the SageMaker execution role ARN (--role-arn, or role in --kwargs)")
    elif not _ROLE.match(str(kw["role"])):
        problems.append(f"role {kw['role']!r} is not an IAM role ARN (arn:aws:iam::ACCOUNT:role/NAME)")
    if kw["default_bucket"] is not None and not _BUCKET.match(str(kw["default_bucket"])):
        problems.append(f"default_bucket {kw['default_bucket']!r} is not an S3 bucket name")
    for key in ("pipeline_name", "model_package_group_name", "base_job_prefix"):
        if not isinstance(kw[key], str) or not _NAME.match(kw[key]):
            problems.append(f"{key} {kw[key]!r} must be letters, digits and single hyphens")
    types = [kw["processing_instance_type"], kw["training_instance_type"]]
    if isinstance(kw["inference_instance_types"], str) or not kw["inference_instance_types"]:
        problems.append(f"inference_instance_types {kw['inference_instance_types']!r} must be a non-empty list")
    else:
        types += list(kw["inference_instance_types"])
    problems += [f"instance type {t!r} is not a SageMaker instance type such as ml.m5.xlarge"
                 for t in types if not isinstance(t, str) or not t.startswith("ml.")]
    problems += [f"image URI {image!r} is not an ECR image (ACCOUNT.dkr.ecr.REGION.amazonaws.com/REPOSITORY"
                 "@sha256:DIGEST, or :TAG)" for image in kw["images"] if image and not _IMAGE.match(str(image))]
    if kw["volume_size_gb"] is not None and (not isinstance(kw["volume_size_gb"], int) or kw["volume_size_gb"] < 1):
        problems.append(f"volume_size_gb {kw['volume_size_gb']!r} must be a positive integer (GiB)")
    reserved = {CODE_CHANNEL, DATA_CHANNEL, REPORT_CHANNEL, CROPS_CHANNEL, CHECKPOINT_CHANNEL, GATE_STEP, REGISTER_STEP,
                FAIL_STEP, INVENTORY_STEP, SCORE_STEP}
    problems += [f"step name {s.name!r} clashes with a channel or step of the pipeline"
                 for s in steps.STEPS if s.name in reserved]
    if problems:
        raise PipelineError("; ".join(problems))
