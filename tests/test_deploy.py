"""deploy/: build.py against an AWS API emulator, the template as a stack, the staging test on `deepfake serve`.

Everything runs on loopback: moto plays the SageMaker, CloudFormation and S3
APIs (its endpoints are InService at once and serve nothing), and the staging
test invokes the real model through ``deepfake serve`` with the real
sagemaker-runtime client.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest
from aws_server import ROLE_ARN, moto_server
from serving_support import make_model, serve

from deepfake.core.vocabulary import ACCEPTED_TYPES
from deepfake.serving.packaging import package_model

pytestmark = pytest.mark.aws

DEPLOY = Path(__file__).resolve().parents[1] / "deploy"
TEMPLATE = DEPLOY / "endpoint-config-template.yml"
IMAGE = "763104351884.dkr.ecr.us-east-1.amazonaws.com/pytorch-inference:2.5.1-cpu-py311-ubuntu22.04-sagemaker"
PROJECT = "deepfake"


@pytest.fixture(scope="module")
def aws(tmp_path_factory):
    with moto_server(tmp_path_factory.mktemp("aws")) as server:
        yield server


def register(sm, group, n, *, content_types=ACCEPTED_TYPES):
    """``n`` model packages in ``group`` (created in order), all PendingManualApproval; returns their ARNs."""
    if not sm.list_model_package_groups(NameContains=group)["ModelPackageGroupSummaryList"]:
        sm.create_model_package_group(ModelPackageGroupName=group)
    arns = []
    for i in range(n):
        arns.append(sm.create_model_package(
            ModelPackageGroupName=group, ModelPackageDescription=f"model {i + 1}",
            ModelApprovalStatus="PendingManualApproval",
            InferenceSpecification={
                "Containers": [{"Image": IMAGE, "ModelDataUrl": f"s3://models/{group}/{i + 1}/model.tar.gz",
                                "Environment": {"SAGEMAKER_PROGRAM": "inference.py"}}],
                "SupportedContentTypes": list(content_types),
                "SupportedResponseMIMETypes": ["application/json"],
                "SupportedRealtimeInferenceInstanceTypes": ["ml.m5.large"],
            })["ModelPackageArn"])
        time.sleep(0.01)  # distinct creation times
    return arns


def set_status(sm, arn, status):
    sm.update_model_package(ModelPackageArn=arn, ModelApprovalStatus=status)


def run_build(aws, out: Path, group: str, *extra: str) -> subprocess.CompletedProcess:
    cmd = [sys.executable, str(DEPLOY / "build.py"), "--model-execution-role", ROLE_ARN,
           "--model-package-group-name", group, "--sagemaker-project-id", "p-123",
           "--sagemaker-project-name", PROJECT, "--s3-bucket", "deepfake-artifacts",
           "--export-staging-config", str(out / "staging-config-export.json"),
           "--export-staging-params", str(out / "staging-params-export.json"),
           "--export-staging-tags", str(out / "staging-tags-export.json"),
           "--export-prod-config", str(out / "prod-config-export.json"),
           "--export-prod-params", str(out / "prod-params-export.json"),
           "--export-prod-tags", str(out / "prod-tags-export.json"),
           "--export-model-package", str(out / "model-package-export.json"), *extra]
    return subprocess.run(cmd, env=aws.subprocess_env(), capture_output=True, text=True, timeout=120)


@pytest.fixture(scope="module")
def built(aws, tmp_path_factory):
    """Seven packages, two approved, one rejected after approval, paginated two at a time."""
    sm = aws.client("sagemaker")
    arns = register(sm, "deepfake-detector", 7)
    for i in (1, 3, 4):
        set_status(sm, arns[i], "Approved")
    set_status(sm, arns[4], "Rejected")  # approved, then pulled: must not deploy
    set_status(sm, arns[0], "Rejected")
    out = tmp_path_factory.mktemp("build")
    result = run_build(aws, out, "deepfake-detector", "--export-cfn-params-tags", "--page-size", "1")
    assert result.returncode == 0, result.stderr
    return out, arns


def _read(path):
    return json.loads(Path(path).read_text())


def test_build_picks_the_latest_approved_package(built):
    out, arns = built
    picked = _read(out / "model-package-export.json")
    assert picked["ModelPackageArn"] == arns[3]
    assert picked["ModelDataUrl"] == "s3://models/deepfake-detector/4/model.tar.gz" and picked["Image"] == IMAGE
    for stage in ("staging", "prod"):
        config = _read(out / f"{stage}-config-export.json")
        seed = _read(DEPLOY / f"{stage}-config.json")
        params = config["Parameters"]
        assert params["ModelPackageName"] == arns[3] and params["StageName"] == stage
        assert params["ModelExecutionRoleArn"] == ROLE_ARN and params["SageMakerProjectName"] == PROJECT
        assert params["DataCaptureUploadPath"] == f"s3://deepfake-artifacts/datacapture-{stage}"
        assert seed["Parameters"].items() <= params.items()
        assert config["Tags"]["sagemaker:deployment-stage"] == stage
        assert config["Tags"]["sagemaker:project-id"] == "p-123"
        assert config["Tags"]["deepfake:model-package-version"] == "4"
        assert _read(out / f"{stage}-params-export.json") == [
            {"ParameterKey": k, "ParameterValue": v} for k, v in params.items()]
        assert _read(out / f"{stage}-tags-export.json") == [{"Key": k, "Value": v} for k, v in config["Tags"].items()]


def test_build_fails_clearly_without_an_approved_package(aws, tmp_path):
    sm = aws.client("sagemaker")
    arns = register(sm, "nothing-approved", 2)
    set_status(sm, arns[0], "Rejected")
    result = run_build(aws, tmp_path, "nothing-approved")
    assert result.returncode == 2
    assert "no approved model package in model package group 'nothing-approved'" in result.stderr
    assert not (tmp_path / "staging-config-export.json").exists()


def test_build_refuses_a_package_that_cannot_serve_videos(aws, tmp_path):
    """The seed's package was registered with a content type its handler could not serve."""
    sm = aws.client("sagemaker")
    (arn,) = register(sm, "wrong-content-type", 1, content_types=["text/csv"])
    set_status(sm, arn, "Approved")
    result = run_build(aws, tmp_path, "wrong-content-type")
    assert result.returncode == 2
    assert "cannot serve the video endpoint" in result.stderr and "video/mp4" in result.stderr


def test_template_passes_cfn_lint():
    lint = Path(sys.executable).with_name("cfn-lint")
    result = subprocess.run([str(lint), str(TEMPLATE)], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr


def test_deploy_build_lints_with_the_pinned_cfn_lint():
    """The deploy build installs the kit's exact cfn-lint, the one these tests lint with: a new release's
    rules cannot block a deployment before they block a test."""
    from importlib import metadata

    import tomllib

    dev = tomllib.loads((DEPLOY.parent / "pyproject.toml").read_text())["project"]["optional-dependencies"]["dev"]
    assert f"cfn-lint=={metadata.version('cfn-lint')}" in dev
    install = "\n".join(yaml_commands(DEPLOY / "buildspec.yml", "install"))
    assert 'requirement("cfn-lint")' in install and "cfn-lint>" not in install


def yaml_commands(buildspec: Path, phase: str) -> list[str]:
    import yaml

    return yaml.safe_load(buildspec.read_text())["phases"][phase]["commands"]


def deploy_stack(aws, name, config):
    cfn = aws.client("cloudformation")
    cfn.create_stack(StackName=name, TemplateBody=TEMPLATE.read_text(),
                     Parameters=[{"ParameterKey": k, "ParameterValue": v} for k, v in config["Parameters"].items()],
                     Tags=[{"Key": k, "Value": v} for k, v in config["Tags"].items()])
    for _ in range(100):
        stack = cfn.describe_stacks(StackName=name)["Stacks"][0]
        if not stack["StackStatus"].endswith("IN_PROGRESS"):
            break
        time.sleep(0.1)
    assert stack["StackStatus"] == "CREATE_COMPLETE", stack.get("StackStatusReason")
    resources = cfn.list_stack_resources(StackName=name)["StackResourceSummaries"]
    (endpoint,) = [r for r in resources if r["ResourceType"] == "AWS::SageMaker::Endpoint"]
    # moto ignores EndpointName: the real name is the last part of the endpoint's ARN.
    return endpoint["PhysicalResourceId"].split("/")[-1]


@pytest.fixture(scope="module")
def staging_endpoint(aws, built):
    out, _ = built
    return deploy_stack(aws, "deepfake-staging", _read(out / "staging-config-export.json"))


def test_staging_stack(aws, built, staging_endpoint):
    _, arns = built
    sm = aws.client("sagemaker")
    endpoint = sm.describe_endpoint(EndpointName=staging_endpoint)
    assert endpoint["EndpointStatus"] == "InService"
    config = sm.describe_endpoint_config(EndpointConfigName=endpoint["EndpointConfigName"])
    capture = config["DataCaptureConfig"]
    assert capture["EnableCapture"] is True and capture["InitialSamplingPercentage"] == 100
    assert capture["DestinationS3Uri"] == "s3://deepfake-artifacts/datacapture-staging"
    assert not config.get("AsyncInferenceConfig")  # NoValue: real-time only
    (variant,) = config["ProductionVariants"]
    model = sm.describe_model(ModelName=variant["ModelName"])
    assert model["PrimaryContainer"]["ModelPackageName"] == arns[3]


# moto's CloudFormation skips the Application Auto Scaling resources (cfn-lint checks them).
@pytest.mark.filterwarnings("ignore:Tried to parse AWS:UserWarning")
def test_prod_stack_with_auto_scaling_and_async_inference(aws, built):
    out, _ = built
    config = _read(out / "prod-config-export.json")
    config["Parameters"]["EnableAsyncInference"] = "true"
    name = deploy_stack(aws, "deepfake-prod", config)
    sm = aws.client("sagemaker")
    endpoint_config = sm.describe_endpoint_config(
        EndpointConfigName=sm.describe_endpoint(EndpointName=name)["EndpointConfigName"])
    output = endpoint_config["AsyncInferenceConfig"]["OutputConfig"]
    assert output["S3OutputPath"] == "s3://deepfake-artifacts/async-inference-prod"
    assert output["S3FailurePath"] == "s3://deepfake-artifacts/async-inference-prod/failures"
    assert endpoint_config["DataCaptureConfig"]["InitialSamplingPercentage"] == 20


@pytest.fixture(scope="module")
def local_endpoint(tmp_path_factory):
    work = tmp_path_factory.mktemp("staging-model")
    archive = package_model(make_model(work / "model"), work / "model.tar.gz")
    with serve(archive, log=work / "serve.log") as url:
        yield url


def run_staging_test(aws, built, local_endpoint, results: Path, *extra: str) -> subprocess.CompletedProcess:
    out, _ = built
    cmd = [sys.executable, str(DEPLOY / "test" / "test.py"),
           "--import-build-config", str(out / "staging-config-export.json"),
           "--export-test-results", str(results), "--runtime-endpoint-url", local_endpoint, *extra]
    return subprocess.run(cmd, env=aws.subprocess_env(), capture_output=True, text=True, timeout=180)


@pytest.mark.slow
def test_staging_test_passes_against_the_local_endpoint(aws, built, staging_endpoint, local_endpoint, tmp_path):
    """The endpoint moto created is described; the real model behind `deepfake serve` answers the invocation."""
    results_file = tmp_path / "test-results.json"
    result = run_staging_test(aws, built, local_endpoint, results_file, "--endpoint-name", staging_endpoint,
                              "--video", "auto")
    assert result.returncode == 0, result.stdout + result.stderr
    results = _read(results_file)
    assert results["status"] == "passed" and results["endpoint_name"] == staging_endpoint
    assert [c["name"] for c in results["checks"]] == ["endpoint_in_service", "invoke", "response_schema",
                                                      "face_found", "label"]
    assert results["response"]["status"] == "ok" and results["response"]["label"] in ("REAL", "FAKE")
    assert results["request"]["video"].endswith("single_face.mp4")


@pytest.mark.slow
def test_staging_test_fails_the_stage(aws, built, staging_endpoint, local_endpoint, no_face_clip, face_clip,
                                      tmp_path):
    # The endpoint does not exist (the template's name: moto named the real one otherwise).
    missing = run_staging_test(aws, built, local_endpoint, tmp_path / "a.json", "--video", str(face_clip))
    assert missing.returncode == 1
    assert _read(tmp_path / "a.json")["status"] == "failed"
    assert "cannot describe endpoint 'deepfake-staging'" in missing.stdout

    # A video without a face gets no score: the staging test needs a scored answer.
    no_face = run_staging_test(aws, built, local_endpoint, tmp_path / "b.json", "--endpoint-name", staging_endpoint,
                               "--video", str(no_face_clip))
    assert no_face.returncode == 1
    checks = {c["name"]: c["passed"] for c in _read(tmp_path / "b.json")["checks"]}
    assert checks == {"endpoint_in_service": True, "invoke": True, "response_schema": True, "face_found": False}

    # The label is checked when one is expected.
    first = run_staging_test(aws, built, local_endpoint, tmp_path / "c.json", "--endpoint-name", staging_endpoint,
                             "--video", str(face_clip))
    label = _read(tmp_path / "c.json")["response"]["label"]
    other = {"REAL": "FAKE", "FAKE": "REAL"}[label]
    wrong = run_staging_test(aws, built, local_endpoint, tmp_path / "d.json", "--endpoint-name", staging_endpoint,
                             "--video", str(face_clip), "--expect-label", other)
    assert first.returncode == 0 and wrong.returncode == 1
    assert _read(tmp_path / "d.json")["checks"][-1] == {
        "name": "label", "passed": False, "detail": _read(tmp_path / "d.json")["checks"][-1]["detail"]}
