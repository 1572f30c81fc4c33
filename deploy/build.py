"""Build step of the deployment: the latest approved model package -> CloudFormation configs.

Run by CodeBuild (``deploy/buildspec.yml``) whenever a model package of the
group is approved. It lists the group's Approved packages in the SageMaker
Model Registry (every page), takes the newest, checks that it can serve videos
(its ``InferenceSpecification`` must accept ``video/mp4`` and answer
``application/json``: a package registered with a content type the handler
cannot serve would deploy fine and fail on the first request), and writes,
per stage, the template configuration file CodePipeline's CloudFormation
action reads (``{"Parameters": ..., "Tags": ...}``) and, with
``--export-cfn-params-tags``, the same as ``aws cloudformation`` parameter and
tag lists. ``--export-model-package`` records what was picked.

For a stage whose config sets ``EnableMonitoring`` it also uploads the
monitoring job's code (``pipelines/deepfake/monitor_step.py`` and the part of
the kit it runs, under its content hash) and fills in where the job finds the
capture's model and evaluation: the package's ``ModelDataUrl`` and the prefix
of the ``evaluation.json`` registered as its ``ModelMetrics``.

    python deploy/build.py --model-execution-role ARN --model-package-group-name GROUP \\
        --sagemaker-project-id ID --sagemaker-project-name NAME --s3-bucket BUCKET

Needs boto3 and the kit's errors (``pip install --no-deps .`` is enough).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import re
import sys
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

import boto3
from botocore.exceptions import BotoCoreError, ClientError

from deepfake.core.errors import DeployError

log = logging.getLogger("deploy.build")

HERE = Path(__file__).resolve().parent
REQUIRED_CONTENT_TYPE = "video/mp4"        # what the handler must accept (deepfake.serving.handlers.VIDEO_TYPES)
REQUIRED_RESPONSE_TYPE = "application/json"
PAGE_SIZE = 100                            # ListModelPackages page size (the API maximum)
TAG_VALUE_MAX = 256                        # characters in an AWS tag value
MONITORING_CODE_PREFIX = "monitoring"      # S3 prefix of the monitoring job's code bundles
MONITORING_ENTRY = "monitor_step.py"       # the job's entry point, beside run_step.py in pipelines/deepfake/
ENABLED = "true"
# ACCOUNT.dkr.ecr.REGION.amazonaws.com[.cn]/REPOSITORY[:TAG|@DIGEST]
_ECR_IMAGE = re.compile(r"^(\d{12})\.dkr\.ecr\.([a-z0-9-]+)\.amazonaws\.com(?:\.cn)?/([^:@]+)")


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=args.log_level, format="%(levelname)s %(name)s: %(message)s")
    try:
        build(args)
    except (BotoCoreError, ClientError) as exc:
        print(f"build.py: error: the SageMaker API call failed: {exc}", file=sys.stderr)
        return 2
    except DeployError as exc:
        print(f"build.py: error: {exc}", file=sys.stderr)
        return 2
    return 0


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--log-level", default=os.environ.get("LOGLEVEL", "INFO").upper())
    p.add_argument("--model-execution-role", default="",
                   help="IAM role ARN the endpoint's model runs with; empty: each stage's stack creates its own")
    p.add_argument("--permissions-boundary", default="",
                   help="permissions boundary of the roles the stage stacks create (the CI/CD stack's ModelRoleBoundary)")
    p.add_argument("--model-package-group-name", required=True)
    p.add_argument("--sagemaker-project-id", required=True)
    p.add_argument("--sagemaker-project-name", required=True)
    p.add_argument("--s3-bucket", required=True, help="bucket for data capture and asynchronous outputs")
    # A locked-down account's settings, for both stages (empty: not set). CodeBuild passes them from its environment.
    p.add_argument("--subnet-ids", default="", help="comma-separated subnets of the endpoints' VPC")
    p.add_argument("--security-group-ids", default="", help="comma-separated security groups (with --subnet-ids)")
    p.add_argument("--kms-key-id", default="",
                   help="KMS key of what the endpoints write to S3 (captured requests, asynchronous results); "
                        "empty: the bucket's default KMS key when it has one")
    p.add_argument("--volume-kms-key-id", default="", help="KMS key of the endpoint instances' storage volumes")
    p.add_argument("--pip-index-url", default="",
                   help="package index the serving container installs code/requirements.txt from (no credentials)")
    p.add_argument("--import-staging-config", default=str(HERE / "staging-config.json"))
    p.add_argument("--import-prod-config", default=str(HERE / "prod-config.json"))
    p.add_argument("--export-staging-config", default="staging-config-export.json")
    p.add_argument("--export-staging-params", default="staging-params-export.json")
    p.add_argument("--export-staging-tags", default="staging-tags-export.json")
    p.add_argument("--export-prod-config", default="prod-config-export.json")
    p.add_argument("--export-prod-params", default="prod-params-export.json")
    p.add_argument("--export-prod-tags", default="prod-tags-export.json")
    p.add_argument("--export-model-package", default="model-package-export.json",
                   help="JSON record of the package that was picked")
    p.add_argument("--export-cfn-params-tags", action="store_true",
                   help="also write parameter and tag lists for `aws cloudformation create-stack`")
    p.add_argument("--page-size", type=int, default=PAGE_SIZE, help="ListModelPackages page size (1-100)")
    p.add_argument("--monitoring-code-prefix", default=MONITORING_CODE_PREFIX,
                   help="prefix in --s3-bucket for the monitoring job's code (code/<sha256>/ under it)")
    args = p.parse_args(argv)
    if not 1 <= args.page_size <= 100:
        p.error(f"--page-size {args.page_size} must be between 1 and 100")
    if bool(args.subnet_ids.strip()) != bool(args.security_group_ids.strip()):
        p.error("--subnet-ids and --security-group-ids go together: an endpoint in a VPC needs both")
    return args


def build(args: argparse.Namespace) -> dict[str, Any]:
    sm = boto3.client("sagemaker")
    package = latest_approved_package(sm, args.model_package_group_name, args.page_size)
    log.info("latest approved model package: %s (version %s, created %s)", package["ModelPackageArn"],
             package.get("ModelPackageVersion"), package.get("CreationTime"))
    record = describe_package(sm, package["ModelPackageArn"])
    _write_json(args.export_model_package, record)
    account = account_parameters(args, boto3.client("s3"))
    stages = (
        ("staging", args.import_staging_config, args.export_staging_config, args.export_staging_params,
         args.export_staging_tags),
        ("prod", args.import_prod_config, args.export_prod_config, args.export_prod_params, args.export_prod_tags),
    )
    configs = {stage: _read_config(source, stage) for stage, source, *_ in stages}
    code_uri = None
    for stage, config in configs.items():
        if monitoring_enabled(config):
            check_monitorable(record, stage)
    if any(monitoring_enabled(c) for c in configs.values()):
        code_uri = upload_monitoring_code(boto3.client("s3"), args.s3_bucket, args.monitoring_code_prefix)
        log.info("monitoring code: %s", code_uri)
    for stage, _source, config_out, params_out, tags_out in stages:
        config = extend_config(args, record, configs[stage], account, monitoring_code=code_uri)
        _write_json(config_out, config)
        if args.export_cfn_params_tags:
            _write_json(params_out, cfn_parameters(config))
            _write_json(tags_out, cfn_tags(config))
        log.info("%s: wrote %s", stage, config_out)
    return record


def latest_approved_package(sm: Any, group: str, page_size: int = PAGE_SIZE) -> dict[str, Any]:
    """The newest Approved package of ``group`` over every page (ties: the higher version)."""
    paginator = sm.get_paginator("list_model_packages")
    pages = paginator.paginate(ModelPackageGroupName=group, ModelApprovalStatus="Approved",
                               SortBy="CreationTime", SortOrder="Descending",
                               PaginationConfig={"PageSize": page_size})
    approved: list[dict[str, Any]] = []
    try:
        for page in pages:
            approved.extend(page.get("ModelPackageSummaryList", []))
    except ClientError as exc:
        raise DeployError(f"cannot list the model packages of group {group!r}: {exc}") from exc
    if not approved:
        raise DeployError(
            f"no approved model package in model package group {group!r}; approve one in SageMaker Studio "
            f"or with `aws sagemaker update-model-package --model-package-arn ARN --model-approval-status Approved`")
    return max(approved, key=lambda p: (p["CreationTime"], p.get("ModelPackageVersion") or 0))


def describe_package(sm: Any, arn: str) -> dict[str, Any]:
    """What will be deployed, after checking the package can serve videos."""
    desc = sm.describe_model_package(ModelPackageName=arn)
    spec = desc.get("InferenceSpecification") or {}
    containers = spec.get("Containers") or []
    problems = []
    if not containers:
        problems.append("its InferenceSpecification has no container")
    if REQUIRED_CONTENT_TYPE not in (spec.get("SupportedContentTypes") or []):
        problems.append(f"its SupportedContentTypes {spec.get('SupportedContentTypes')} lack {REQUIRED_CONTENT_TYPE}")
    if REQUIRED_RESPONSE_TYPE not in (spec.get("SupportedResponseMIMETypes") or []):
        problems.append(f"its SupportedResponseMIMETypes {spec.get('SupportedResponseMIMETypes')} lack "
                        f"{REQUIRED_RESPONSE_TYPE}")
    if problems:
        raise DeployError(f"model package {arn} cannot serve the video endpoint: {'; '.join(problems)}; "
                          "register the model with the content types of deepfake.serving.handlers")
    container = containers[0]
    return {
        "ModelPackageArn": arn,
        "ModelPackageGroupName": desc.get("ModelPackageGroupName"),
        "ModelPackageVersion": desc.get("ModelPackageVersion"),
        "CreationTime": _iso(desc.get("CreationTime")),
        "ModelApprovalStatus": desc.get("ModelApprovalStatus"),
        "ApprovalDescription": desc.get("ApprovalDescription", ""),
        "Image": container.get("Image"),
        "ModelDataUrl": container.get("ModelDataUrl"),
        "Environment": container.get("Environment", {}),
        "SupportedContentTypes": spec.get("SupportedContentTypes", []),
        "SupportedResponseMIMETypes": spec.get("SupportedResponseMIMETypes", []),
        "SupportedRealtimeInferenceInstanceTypes": spec.get("SupportedRealtimeInferenceInstanceTypes", []),
        "EvaluationUri": evaluation_uri(desc),
    }


def evaluation_uri(desc: dict[str, Any]) -> str | None:
    """The S3 prefix of the evaluation registered with the package (``ModelMetrics.ModelQuality.Statistics``:
    its ``evaluation.json``, beside ``video_predictions.csv``), or None."""
    uri = (((desc.get("ModelMetrics") or {}).get("ModelQuality") or {}).get("Statistics") or {}).get("S3Uri")
    return uri.rsplit("/", 1)[0] if uri and uri.startswith("s3://") and "/" in uri[5:] else None


def monitoring_enabled(config: dict[str, Any]) -> bool:
    return str(config["Parameters"].get("EnableMonitoring", "false")).lower() == ENABLED


def upload_monitoring_code(s3: Any, bucket: str, prefix: str) -> str:
    """Upload the monitoring job's code bundle (once per content) and return its S3 prefix."""
    from pipelines.deepfake.bundle import build_script_bundle, upload_bundle

    return upload_bundle(build_script_bundle(MONITORING_ENTRY), s3, bucket, prefix)


def account_parameters(args: argparse.Namespace, s3: Any) -> dict[str, str]:
    """Template parameters of a locked-down account (VPC, KMS keys, package index), those given or found."""
    key = args.kms_key_id.strip() or bucket_kms_key(s3, args.s3_bucket)
    params = {"SubnetIds": args.subnet_ids, "SecurityGroupIds": args.security_group_ids, "OutputKmsKeyId": key,
              "VolumeKmsKeyId": args.volume_kms_key_id, "PipIndexUrl": args.pip_index_url}
    return {name: ",".join(v.strip() for v in value.split(",") if v.strip()) if name.endswith("Ids") else value.strip()
            for name, value in params.items() if value.strip()}


def bucket_kms_key(s3: Any, bucket: str) -> str:
    """The bucket's default SSE-KMS key, so that captured videos are written under it explicitly ('' if none)."""
    try:
        rules = s3.get_bucket_encryption(Bucket=bucket)["ServerSideEncryptionConfiguration"]["Rules"]
    except ClientError as exc:      # no default encryption configured, or no s3:GetEncryptionConfiguration
        log.info("no KMS key read from bucket %s (%s): captures use its default encryption", bucket,
                 exc.response.get("Error", {}).get("Code"))
        return ""
    for rule in rules:
        default = rule.get("ApplyServerSideEncryptionByDefault", {})
        if default.get("SSEAlgorithm", "").startswith("aws:kms") and default.get("KMSMasterKeyID"):
            log.info("captures and asynchronous results use bucket %s's KMS key %s", bucket, default["KMSMasterKeyID"])
            return str(default["KMSMasterKeyID"])
    return ""


def extend_config(args: argparse.Namespace, package: dict[str, Any], stage_config: dict[str, Any],
                  account: dict[str, str] | None = None, monitoring_code: str | None = None) -> dict[str, Any]:
    """A stage's config plus what this build decided: the package, role, project, S3 paths, the account's
    VPC, keys and index, and tags."""
    stage = stage_config["Parameters"]["StageName"]
    prefixes = [p.strip() for p in str(stage_config["Parameters"].get("S3InputPrefixes", "")).split(",") if p.strip()]
    bad = [p for p in prefixes if not p.startswith("s3://") or len(p) <= len("s3://")]
    if bad:
        raise DeployError(f"{stage} config: S3InputPrefixes {', '.join(bad)} must be s3://bucket/ or s3://bucket/folder/")
    params = {
        **(account or {}),
        "SageMakerProjectName": args.sagemaker_project_name,
        "ModelPackageName": package["ModelPackageArn"],
        "ModelExecutionRoleArn": args.model_execution_role,
        "PermissionsBoundaryArn": args.permissions_boundary,
        "ModelDataObjectArn": s3_arn(package.get("ModelDataUrl") or ""),
        "ImageRepositoryArn": ecr_repository_arn(package.get("Image") or ""),
        "S3InputPrefixes": ",".join(prefixes),
        "S3InputArns": ",".join(s3_arn(p if p.endswith("/") else p + "/") + "*" for p in prefixes),
        "DataCaptureUploadPath": f"s3://{args.s3_bucket}/datacapture-{stage}",
        "AsyncOutputPath": f"s3://{args.s3_bucket}/async-inference-{stage}",
    }
    if monitoring_enabled(stage_config):
        params.update(monitoring_parameters(args, package, stage, monitoring_code))
    tags = {
        "sagemaker:deployment-stage": stage,
        "sagemaker:project-id": args.sagemaker_project_id,
        "sagemaker:project-name": args.sagemaker_project_name,
        "deepfake:model-package-version": str(package.get("ModelPackageVersion")),
        "deepfake:model-data-url": package.get("ModelDataUrl") or "",
        "deepfake:image": package.get("Image") or "",
    }
    for key, value in list(tags.items()):
        if not value or len(value) > TAG_VALUE_MAX:
            log.info("tag %s left out: %s", key, "empty" if not value else f"longer than {TAG_VALUE_MAX} characters")
            del tags[key]
    return {
        "Parameters": {**stage_config["Parameters"], **params},
        "Tags": {**stage_config.get("Tags", {}), **tags},
    }


def check_monitorable(package: dict[str, Any], stage: str) -> None:
    """DeployError unless the package names the evaluation its monitoring compares traffic with."""
    if not package.get("EvaluationUri"):
        raise DeployError(
            f"model package {package['ModelPackageArn']} registers no evaluation (ModelMetrics.ModelQuality."
            "Statistics, the evaluation.json the pipeline attaches): the monitoring job compares traffic with it; "
            f"register the model through the pipeline, or set EnableMonitoring to false in the {stage} config")


def monitoring_parameters(args: argparse.Namespace, package: dict[str, Any], stage: str,
                          code_uri: str | None) -> dict[str, str]:
    """Where the stage's monitoring job finds its code, image, model and evaluation, and writes its reports."""
    check_monitorable(package, stage)
    if not code_uri:
        raise DeployError("the monitoring job's code was not uploaded")
    return {
        "MonitoringCodeUri": code_uri,
        "MonitoringImageUri": package.get("Image") or "",
        "MonitoringModelDataUrl": package.get("ModelDataUrl") or "",
        "MonitoringEvaluationUri": package["EvaluationUri"],
        "MonitoringOutputPath": f"s3://{args.s3_bucket}/monitoring-{stage}",
    }


def s3_arn(uri: str) -> str:
    """``s3://bucket/key`` -> ``arn:aws:s3:::bucket/key`` (what a role's policy names)."""
    if not uri.startswith("s3://"):
        raise DeployError(f"{uri!r} is not an s3:// URI; the model package must name its model data in S3")
    return f"arn:aws:s3:::{uri[len('s3://'):]}"


def ecr_repository_arn(image: str) -> str:
    """The ECR repository of an image URI (by tag or digest), for the role that pulls it."""
    match = _ECR_IMAGE.match(image)
    if not match:
        raise DeployError(f"the package's image {image!r} is not in an ECR registry (ACCOUNT.dkr.ecr.REGION."
                          "amazonaws.com/REPOSITORY); register the model with an ECR image")
    account, region, repository = match.groups()
    partition = "aws-cn" if region.startswith("cn-") else "aws-us-gov" if region.startswith("us-gov-") else "aws"
    return f"arn:{partition}:ecr:{region}:{account}:repository/{repository}"


def cfn_parameters(config: dict[str, Any]) -> list[dict[str, str]]:
    return [{"ParameterKey": k, "ParameterValue": str(v)} for k, v in config["Parameters"].items()]


def cfn_tags(config: dict[str, Any]) -> list[dict[str, str]]:
    return [{"Key": k, "Value": str(v)} for k, v in config["Tags"].items()]


def _read_config(path: str, stage: str) -> dict[str, Any]:
    try:
        config = json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise DeployError(f"{stage} config {path} does not exist") from None
    except json.JSONDecodeError as exc:
        raise DeployError(f"{stage} config {path} is not valid JSON: {exc}") from None
    if not isinstance(config, dict) or not isinstance(config.get("Parameters"), dict) \
            or "StageName" not in config["Parameters"]:
        raise DeployError(f"{stage} config {path} must be {{\"Parameters\": {{\"StageName\": ..., ...}}, "
                          "\"Tags\": {...}}")
    if not isinstance(config.get("Tags", {}), dict):
        raise DeployError(f"{stage} config {path}: Tags must be an object of key: value")
    return config


def _write_json(path: str, doc: Any) -> None:
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.partial")
    tmp.write_text(json.dumps(doc, indent=2, sort_keys=False) + "\n", encoding="utf-8")
    os.replace(tmp, out)


def _iso(value: Any) -> Any:
    return value.isoformat() if isinstance(value, datetime) else value


if __name__ == "__main__":
    sys.exit(main())
