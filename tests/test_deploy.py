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
import yaml
from aws_server import ROLE_ARN, moto_server
from serving_support import make_model, serve

from deepfake.core.vocabulary import ACCEPTED_TYPES
from deepfake.serving.packaging import package_model
from deepfake.serving.requests import MAX_DECODE_MEGAPIXELS

pytestmark = pytest.mark.aws

DEPLOY = Path(__file__).resolve().parents[1] / "deploy"
TEMPLATE = DEPLOY / "endpoint-config-template.yml"
IMAGE = "763104351884.dkr.ecr.us-east-1.amazonaws.com/pytorch-inference:2.5.1-cpu-py311-ubuntu22.04-sagemaker"
PROJECT = "deepfake"
BUCKET = "deepfake-artifacts"


@pytest.fixture(scope="module")
def aws(tmp_path_factory):
    with moto_server(tmp_path_factory.mktemp("aws")) as server:
        server.client("s3").create_bucket(Bucket=BUCKET)   # the project's artifact bucket: monitoring code, captures
        yield server


def register(sm, group, n, *, content_types=ACCEPTED_TYPES, evaluation=True, model_data=None):
    """``n`` model packages in ``group`` (created in order), all PendingManualApproval; returns their ARNs.

    Each records its evaluation as the pipeline does (``ModelMetrics``: the ``evaluation.json`` beside the
    model's evaluate outputs) unless ``evaluation`` is False."""
    if not sm.list_model_package_groups(NameContains=group)["ModelPackageGroupSummaryList"]:
        sm.create_model_package_group(ModelPackageGroupName=group)
    arns = []
    for i in range(n):
        prefix = f"s3://models/{group}/{i + 1}"
        metrics = {"ModelMetrics": {"ModelQuality": {"Statistics": {
            "ContentType": "application/json", "S3Uri": f"{prefix}/evaluate/evaluation.json"}}}} if evaluation else {}
        arns.append(sm.create_model_package(
            ModelPackageGroupName=group, ModelPackageDescription=f"model {i + 1}",
            ModelApprovalStatus="PendingManualApproval",
            InferenceSpecification={
                "Containers": [{"Image": IMAGE, "ModelDataUrl": model_data or f"{prefix}/model.tar.gz",
                                "Environment": {"SAGEMAKER_PROGRAM": "inference.py"}}],
                "SupportedContentTypes": list(content_types),
                "SupportedResponseMIMETypes": ["application/json"],
                "SupportedRealtimeInferenceInstanceTypes": ["ml.m5.large"],
            }, **metrics)["ModelPackageArn"])
        time.sleep(0.01)  # distinct creation times
    return arns


def set_status(sm, arn, status):
    sm.update_model_package(ModelPackageArn=arn, ModelApprovalStatus=status)


def run_build(aws, out: Path, group: str, *extra: str) -> subprocess.CompletedProcess:
    cmd = [sys.executable, str(DEPLOY / "build.py"), "--model-execution-role", ROLE_ARN,
           "--model-package-group-name", group, "--sagemaker-project-id", "p-123",
           "--sagemaker-project-name", PROJECT, "--s3-bucket", BUCKET,
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
        # the version the registry gave it: the session's AWS server may hold other tests' packages of the group
        assert config["Tags"]["deepfake:model-package-version"] == arns[3].rsplit("/", 1)[1]
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


@pytest.mark.filterwarnings("ignore:Tried to parse AWS:UserWarning")   # the schedule and alarm: cfn-lint checks them
def test_staging_stack(aws, built, staging_endpoint):
    _, arns = built
    sm = aws.client("sagemaker")
    endpoint = sm.describe_endpoint(EndpointName=staging_endpoint)
    assert endpoint["EndpointStatus"] == "InService"
    config = sm.describe_endpoint_config(EndpointConfigName=endpoint["EndpointConfigName"])
    capture = config["DataCaptureConfig"]
    # Captured requests are face videos: staging samples them as prod does, not all of them.
    assert capture["EnableCapture"] is True and capture["InitialSamplingPercentage"] == 20
    assert capture["DestinationS3Uri"] == "s3://deepfake-artifacts/datacapture-staging"
    assert not config.get("AsyncInferenceConfig")  # NoValue: real-time only
    (variant,) = config["ProductionVariants"]
    model = sm.describe_model(ModelName=variant["ModelName"])
    assert model["PrimaryContainer"]["ModelPackageName"] == arns[3]


def test_without_a_role_the_stage_stack_makes_one_that_reads_only_the_stage_prefixes(aws, tmp_path):
    """The model role reads the model data, pulls the image and reads the stage config's S3InputPrefixes only;
    the same prefixes reach the container, which refuses any other s3_uri (deepfake.serving.requests)."""
    sm = aws.client("sagemaker")
    (arn,) = register(sm, "scoped-role", 1)
    set_status(sm, arn, "Approved")
    staging = json.loads((DEPLOY / "staging-config.json").read_text())
    staging["Parameters"]["S3InputPrefixes"] = "s3://uploads/staging/, s3://samples"
    (tmp_path / "staging.json").write_text(json.dumps(staging))
    cmd = run_build(aws, tmp_path, "scoped-role", "--import-staging-config", str(tmp_path / "staging.json"))
    result = subprocess.run([*cmd.args[:3], "", *cmd.args[4:]], env=aws.subprocess_env(), capture_output=True,
                            text=True, timeout=120)                                      # --model-execution-role ""
    assert result.returncode == 0, result.stderr
    params = _read(tmp_path / "staging-config-export.json")["Parameters"]
    assert params["S3InputPrefixes"] == "s3://uploads/staging/,s3://samples"
    assert params["S3InputArns"] == "arn:aws:s3:::uploads/staging/*,arn:aws:s3:::samples/*"
    assert params["ModelDataObjectArn"] == "arn:aws:s3:::models/scoped-role/1/model.tar.gz"
    assert params["ImageRepositoryArn"] == "arn:aws:ecr:us-east-1:763104351884:repository/pytorch-inference"

    name = deploy_stack(aws, "scoped-staging", _read(tmp_path / "staging-config-export.json"))
    model = sm.describe_model(ModelName=sm.describe_endpoint_config(EndpointConfigName=sm.describe_endpoint(
        EndpointName=name)["EndpointConfigName"])["ProductionVariants"][0]["ModelName"])
    assert model["PrimaryContainer"]["Environment"]["DEEPFAKE_S3_INPUT_PREFIXES"] == params["S3InputPrefixes"]
    role = model["ExecutionRoleArn"]
    assert role != ROLE_ARN and ":role/deepfake/" in role                              # the stack's own, on the path
    iam = aws.client("iam")
    role_name = role.rsplit("/", 1)[1]
    (policy_name,) = iam.list_role_policies(RoleName=role_name)["PolicyNames"]
    document = iam.get_role_policy(RoleName=role_name, PolicyName=policy_name)["PolicyDocument"]
    import ast

    if isinstance(document, str):                                  # moto keeps a stack policy as its Python repr
        document = json.loads(document) if document.startswith("{\"") else ast.literal_eval(document)
    # moto leaves a statement whose condition is false (AWS::NoValue, here OutputKey) in the list as null, which
    # CloudFormation drops
    statements = {st["Sid"]: st for st in document["Statement"] if st is not None}
    assert "OutputKey" not in statements                                                 # no OutputKmsKeyId
    assert statements["S3Input"]["Resource"] == ["arn:aws:s3:::uploads/staging/*", "arn:aws:s3:::samples/*"]
    assert statements["ModelData"]["Resource"] == params["ModelDataObjectArn"]
    reads = [st for st in statements.values() if "s3:GetObject" in st["Action"]]
    assert {r for st in reads for r in ([st["Resource"]] if isinstance(st["Resource"], str) else st["Resource"])} == {
        params["ModelDataObjectArn"], *params["S3InputArns"].split(",")}               # nothing else is readable


def test_the_stage_configs_name_no_s3_input_by_default():
    for stage in ("staging", "prod"):
        assert _read(DEPLOY / f"{stage}-config.json")["Parameters"]["S3InputPrefixes"] == ""


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


KMS_KEY = "arn:aws:kms:us-east-1:123456789012:key/1234abcd-12ab-34cd-56ef-1234567890ab"


@pytest.mark.filterwarnings("ignore:Tried to parse AWS:UserWarning")
def test_a_locked_down_account_s_endpoint_runs_in_its_vpc_with_its_keys_and_index(aws, built, tmp_path):
    """build.py passes the account's VPC, keys and index to both stages (the KMS key of what the endpoint writes
    defaults to the bucket's own); the stack gives them to the Model, the endpoint config and data capture."""
    s3 = aws.client("s3")
    s3.create_bucket(Bucket="locked-down-artifacts")
    s3.put_bucket_encryption(Bucket="locked-down-artifacts", ServerSideEncryptionConfiguration={"Rules": [
        {"ApplyServerSideEncryptionByDefault": {"SSEAlgorithm": "aws:kms", "KMSMasterKeyID": KMS_KEY}}]})
    index = "https://pypi.internal.example/simple/"
    result = run_build(aws, tmp_path, "deepfake-detector", "--s3-bucket", "locked-down-artifacts",
                       "--subnet-ids", "subnet-0a1b2c3d, subnet-4e5f6a7b", "--security-group-ids", "sg-0a1b2c3d",
                       "--volume-kms-key-id", "alias/endpoint-volumes", "--pip-index-url", index)
    assert result.returncode == 0, result.stderr
    config = _read(tmp_path / "prod-config-export.json")
    assert {k: config["Parameters"][k] for k in ("SubnetIds", "SecurityGroupIds", "OutputKmsKeyId",
                                                   "VolumeKmsKeyId", "PipIndexUrl")} == {
        "SubnetIds": "subnet-0a1b2c3d,subnet-4e5f6a7b", "SecurityGroupIds": "sg-0a1b2c3d",
        "OutputKmsKeyId": KMS_KEY, "VolumeKmsKeyId": "alias/endpoint-volumes", "PipIndexUrl": index}
    config["Parameters"].update(EnableAsyncInference="true", EnableNetworkIsolation="true")
    name = deploy_stack(aws, "deepfake-locked-down", config)
    sm = aws.client("sagemaker")
    endpoint_config = sm.describe_endpoint_config(
        EndpointConfigName=sm.describe_endpoint(EndpointName=name)["EndpointConfigName"])
    assert endpoint_config["KmsKeyId"] == "alias/endpoint-volumes"
    assert endpoint_config["DataCaptureConfig"]["KmsKeyId"] == KMS_KEY
    assert endpoint_config["AsyncInferenceConfig"]["OutputConfig"]["KmsKeyId"] == KMS_KEY
    model = sm.describe_model(ModelName=endpoint_config["ProductionVariants"][0]["ModelName"])
    assert model["VpcConfig"] == {"Subnets": ["subnet-0a1b2c3d", "subnet-4e5f6a7b"], "SecurityGroupIds": ["sg-0a1b2c3d"]}
    environment = model["PrimaryContainer"]["Environment"]
    assert environment["PIP_INDEX_URL"] == index and environment["DEEPFAKE_MAX_S3_BYTES"] == str(1024 ** 3)
    assert float(environment["DEEPFAKE_MAX_DECODE_MEGAPIXELS"]) > 60 * MAX_DECODE_MEGAPIXELS   # an hour, not 60 s

    half = run_build(aws, tmp_path, "deepfake-detector", "--subnet-ids", "subnet-0a1b2c3d")
    assert half.returncode == 2 and "--subnet-ids and --security-group-ids go together" in half.stderr


def test_what_the_emulator_skips_is_in_the_template_as_cloudformation_reads_it():
    """What moto's CloudFormation skips (auto scaling) or ignores (RetainAllVariantProperties, the Model's
    EnableNetworkIsolation, Rules), read from the template; cfn-lint checks the resources' schemas."""
    from cfnlint.decode import decode_str

    template, problems = decode_str(TEMPLATE.read_text())
    assert not problems
    resources = template["Resources"]
    assert resources["Model"]["Properties"]["EnableNetworkIsolation"] == {"Fn::If": ["IsolateNetwork", True, False]}
    scale_to_zero = template["Rules"]["OnlyAsynchronousEndpointsScaleToZero"]
    assert scale_to_zero["RuleCondition"] == {"Fn::Equals": [{"Ref": "AutoScalingMinCapacity"}, "0"]}
    endpoint = resources["Endpoint"]["Properties"]
    assert endpoint["RetainAllVariantProperties"] == {"Fn::If": ["UseAutoScaling", True, False]}
    assert endpoint["ExcludeRetainedVariantProperties"]["Fn::If"][1] == [{"VariantPropertyType": "DataCaptureConfig"}]
    policy, alarm = resources["ScaleFromZeroPolicy"], resources["BacklogWithoutCapacityAlarm"]
    assert policy["Condition"] == alarm["Condition"] == "ScaleOnBacklog"
    assert template["Conditions"]["ScaleOnBacklog"] == {"Fn::And": [{"Condition": "UseAutoScaling"},
                                                                    {"Condition": "UseAsyncInference"}]}
    step = policy["Properties"]["StepScalingPolicyConfiguration"]
    assert policy["Properties"]["PolicyType"] == "StepScaling" and step["AdjustmentType"] == "ChangeInCapacity"
    assert step["StepAdjustments"] == [{"MetricIntervalLowerBound": 0, "ScalingAdjustment": 1}]
    watched = alarm["Properties"]
    assert (watched["Namespace"], watched["MetricName"]) == ("AWS/SageMaker", "HasBacklogWithoutCapacity")
    assert watched["Dimensions"] == [{"Name": "EndpointName", "Value": {"Fn::GetAtt": ["Endpoint", "EndpointName"]}}]
    assert watched["ComparisonOperator"] == "GreaterThanOrEqualToThreshold" and watched["Threshold"] == 1
    assert watched["AlarmActions"] == [{"Ref": "ScaleFromZeroPolicy"}]


ASYNC_OUTPUT = "s3://deepfake-artifacts/async-inference-staging"     # build.py's AsyncOutputPath of staging


@pytest.fixture(scope="module")
def local_endpoint(aws, tmp_path_factory):
    """The real model behind `deepfake serve`, answering the Runtime API's real-time and asynchronous calls."""
    work = tmp_path_factory.mktemp("staging-model")
    archive = package_model(make_model(work / "model"), work / "model.tar.gz")
    with serve(archive, log=work / "serve.log", env=aws.subprocess_env(), args=("--async-output", ASYNC_OUTPUT)) as url:
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
@pytest.mark.filterwarnings("ignore:Tried to parse AWS:UserWarning")
def test_staging_test_of_an_asynchronous_endpoint_reads_its_answer_from_s3(aws, built, local_endpoint, tmp_path):
    """An asynchronous staging endpoint answers no InvokeEndpoint: the video goes to S3, InvokeEndpointAsync names
    where the answer will be, and the test reads and checks it there."""
    out, _ = built
    config = _read(out / "staging-config-export.json")
    config["Parameters"]["EnableAsyncInference"] = "true"
    name = deploy_stack(aws, "deepfake-staging-async", config)
    results_file = tmp_path / "test-results.json"
    result = run_staging_test(aws, built, local_endpoint, results_file, "--endpoint-name", name, "--video", "auto")
    assert result.returncode == 0, result.stdout + result.stderr
    results = _read(results_file)
    assert results["status"] == "passed" and results["response"]["status"] == "ok"
    request = results["request"]
    assert request["asynchronous"] is True and request["input_location"].startswith(f"{ASYNC_OUTPUT}/inputs/")
    assert request["output_location"].startswith(f"{ASYNC_OUTPUT}/") and request["output_location"].endswith(".out")
    bucket, _, key = request["output_location"].removeprefix("s3://").partition("/")
    assert json.loads(aws.client("s3").get_object(Bucket=bucket, Key=key)["Body"].read()) == results["response"]


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


# -- monitoring: the schedule, its job, its metrics and alarm --------------------------------------------------------

def test_build_exports_the_monitoring_job_of_each_stage(aws, built):
    """Both stages monitor: the job's code is uploaded once (content-addressed), and each stage's parameters
    say where its capture's model, evaluation and reports are."""
    out, arns = built
    picked = _read(out / "model-package-export.json")
    assert picked["EvaluationUri"] == "s3://models/deepfake-detector/4/evaluate"
    codes = set()
    for stage in ("staging", "prod"):
        params = _read(out / f"{stage}-config-export.json")["Parameters"]
        assert params["EnableMonitoring"] == "true"
        assert params["MonitoringModelDataUrl"] == picked["ModelDataUrl"]
        assert params["MonitoringEvaluationUri"] == picked["EvaluationUri"]
        assert params["MonitoringImageUri"] == IMAGE
        assert params["MonitoringOutputPath"] == f"s3://{BUCKET}/monitoring-{stage}"
        codes.add(params["MonitoringCodeUri"])
    (code,) = codes
    assert code.startswith(f"s3://{BUCKET}/monitoring/code/") and code.endswith("/")
    listed = aws.client("s3").list_objects_v2(Bucket=BUCKET, Prefix=code[len(f"s3://{BUCKET}/"):])["Contents"]
    names = {o["Key"].split("/code/")[1].split("/", 1)[1] for o in listed}
    assert {"monitor_step.py", "run_step.py", "requirements.txt", "BUNDLE.json",
            "kit/src/deepfake/monitoring/monitor.py", "kit/src/deepfake/serving/capture.py"} <= names
    assert not any(n.startswith("kit/src/deepfake/stages/") for n in names)      # only what the job imports
    requirements = next(o["Key"] for o in listed if o["Key"].endswith("requirements.txt"))
    assert "scipy" in aws.client("s3").get_object(Bucket=BUCKET, Key=requirements)["Body"].read().decode()


def test_build_refuses_to_monitor_a_model_without_its_evaluation(aws, tmp_path):
    sm = aws.client("sagemaker")
    (arn,) = register(sm, "no-evaluation", 1, evaluation=False)
    set_status(sm, arn, "Approved")
    result = run_build(aws, tmp_path, "no-evaluation")
    assert result.returncode == 2
    assert "registers no evaluation" in result.stderr and "EnableMonitoring to false" in result.stderr


def test_monitoring_is_off_without_the_parameter(aws, built):
    out, _ = built
    config = _read(out / "staging-config-export.json")
    config["Parameters"] = {k: v for k, v in config["Parameters"].items() if not k.startswith(("Monitoring",
                                                                                              "EnableMonitoring"))}
    deploy_stack(aws, "deepfake-unmonitored", config)
    resources = aws.client("cloudformation").list_stack_resources(StackName="deepfake-unmonitored")
    assert not [r for r in resources["StackResourceSummaries"] if r["LogicalResourceId"].startswith("Monitoring")]


class _Cfn(yaml.SafeLoader):
    """YAML with CloudFormation's short forms (``!Sub``, ``!Ref``, ...) as ``{"Fn::Sub": ...}``."""


def _cfn_tag(loader, suffix, node):
    name = "Ref" if suffix == "Ref" else "Condition" if suffix == "Condition" else f"Fn::{suffix}"
    if isinstance(node, yaml.ScalarNode):
        value = loader.construct_scalar(node)
        value = value.split(".", 1) if suffix == "GetAtt" else value
    elif isinstance(node, yaml.SequenceNode):
        value = loader.construct_sequence(node, deep=True)
    else:
        value = loader.construct_mapping(node, deep=True)
    return {name: value}


_Cfn.add_multi_constructor("!", _cfn_tag)


def template() -> dict:
    return yaml.load(TEMPLATE.read_text(), Loader=_Cfn)  # noqa: S506 - a safe loader with CloudFormation's tags


def sub(text: str, values: dict) -> str:
    """``Fn::Sub`` of a string: every ``${Name}`` and ``${Resource.Attribute}`` from ``values``."""
    import re

    def one(match):
        if match.group(1) not in values:
            raise KeyError(f"${{{match.group(1)}}} has no value")
        return str(values[match.group(1)])

    return re.sub(r"\$\{([^}!]+)\}", one, text)


def resolve(node, values: dict, conditions: dict):
    """A template value as CloudFormation resolves it: ``Ref``, ``Fn::GetAtt``, ``Fn::Sub`` (with its variable map), ``Fn::Join``,
    ``Fn::Split``, ``Fn::Select``, ``Fn::If`` and the template's conditions (``Fn::Equals``, ``Fn::Not``, ``Fn::And``, ``Fn::Or``) over ``values``
    (a ``CommaDelimitedList`` parameter's value a list)."""
    if isinstance(node, list):
        return [resolve(n, values, conditions) for n in node]
    if not isinstance(node, dict):
        return node
    if len(node) != 1 or not next(iter(node)).startswith(("Ref", "Condition", "Fn::")):
        return {k: resolve(v, values, conditions) for k, v in node.items()}
    (function, arg), = node.items()
    if function == "Ref":
        return values[arg]
    if function == "Fn::GetAtt":
        return values[".".join(arg)]
    if function == "Condition":
        return resolve(conditions[arg], values, conditions)
    if function == "Fn::If":
        return resolve(arg[1] if resolve({"Condition": arg[0]}, values, conditions) else arg[2], values, conditions)
    if function == "Fn::Sub":
        text, variables = (arg, {}) if isinstance(arg, str) else arg
        return sub(text, {**values, **{k: resolve(v, values, conditions) for k, v in variables.items()}})
    args = resolve(arg, values, conditions)
    if function == "Fn::Join":
        return args[0].join(args[1])
    if function == "Fn::Split":
        return args[1].split(args[0])
    if function == "Fn::Select":
        return args[1][int(args[0])]
    if function == "Fn::Equals":
        return args[0] == args[1]
    if function == "Fn::Not":
        return not args[0]
    if function == "Fn::And":
        return all(args)
    if function == "Fn::Or":
        return any(args)
    raise NotImplementedError(function)


NO_VALUE = object()


def stack_values(parameters: dict, **attributes) -> dict:
    """What the template's ``Ref``/``${...}`` resolve to: the parameters over their defaults, the pseudo
    parameters, and the resource attributes given."""
    declared = template()["Parameters"]
    values = {k: str(v.get("Default", "")) for k, v in declared.items()} | parameters
    values |= {k: values[k].split(",") for k, v in declared.items() if v["Type"] == "CommaDelimitedList"}
    return values | {"AWS::Partition": "aws", "AWS::Region": "us-east-1", "AWS::AccountId": "123456789012",
                     "AWS::NoValue": NO_VALUE} | attributes


def monitoring_request(values: dict) -> dict:
    """The CreateProcessingJob request the schedule sends, as EventBridge Scheduler fills it in."""
    target = template()["Resources"]["MonitoringSchedule"]["Properties"]["Target"]
    text = resolve(target["Input"], values, template()["Conditions"])
    return json.loads(text.replace("<aws.scheduler.execution-id>", "d32c5kddcf5bb8c3")
                      .replace("<aws.scheduler.scheduled-time>", "2026-12-07T01:10:00Z"))


def role_statements(role: str, values: dict) -> dict:
    """A role of the template's inline policy, its statements by Sid as the stack's values leave them."""
    policy = template()["Resources"][role]["Properties"]["Policies"][0]["PolicyDocument"]
    statements = resolve(policy["Statement"], values, template()["Conditions"])
    return {s["Sid"]: s for s in statements if s is not NO_VALUE}


STAGE = {"SageMakerProjectName": PROJECT, "StageName": "staging", "ModelPackageName": "arn:aws:sagemaker:us-east-1:"
         "123456789012:model-package/deepfake-detector/1", "ModelDataObjectArn": "arn:aws:s3:::models/model.tar.gz",
         "ImageRepositoryArn": "arn:aws:ecr:us-east-1:763104351884:repository/pytorch-inference",
         "DataCaptureUploadPath": f"s3://{BUCKET}/datacapture-staging", "EnableMonitoring": "true",
         "AsyncOutputPath": f"s3://{BUCKET}/async-inference-staging", "MonitoringImageUri": IMAGE,
         "MonitoringCodeUri": f"s3://{BUCKET}/monitoring/code/abc/", "MonitoringModelDataUrl": "s3://models/model.tar.gz",
         "MonitoringEvaluationUri": "s3://models/evaluate", "MonitoringOutputPath": f"s3://{BUCKET}/monitoring-staging"}
ROLES = {"Endpoint.EndpointName": "deepfake-staging",
         "MonitoringJobRole.Arn": "arn:aws:iam::123456789012:role/deepfake/endpoints/monitoring-job",
         "MonitoringSchedulerRole.Arn": "arn:aws:iam::123456789012:role/deepfake/endpoints/monitoring-schedule"}


def test_the_monitoring_job_runs_in_the_stage_s_vpc_with_its_keys_and_index(aws):
    """Service control policies that require a VPC or KMS keys deny a CreateProcessingJob without them: the
    scheduled job gets the stage's subnets, security groups, volume and output keys and package index (as the
    endpoint does), its traffic between instances encrypted; its role may make the job's network interfaces
    and use the keys, the scheduler's role may check them. The request passes SageMaker's API model."""
    sm = aws.client("sagemaker")
    locked = stack_values({**STAGE, "SubnetIds": "subnet-0a1b2c3d,subnet-4e5f6a7b", "SecurityGroupIds": "sg-0a1b2c3d",
                           "VolumeKmsKeyId": "alias/endpoint-volumes", "OutputKmsKeyId": KMS_KEY,
                           "PipIndexUrl": "https://pypi.internal.example/simple/"}, **ROLES)
    request = monitoring_request(locked)
    assert request["NetworkConfig"] == {
        "EnableInterContainerTrafficEncryption": True, "EnableNetworkIsolation": False,
        "VpcConfig": {"Subnets": ["subnet-0a1b2c3d", "subnet-4e5f6a7b"], "SecurityGroupIds": ["sg-0a1b2c3d"]}}
    assert request["ProcessingResources"]["ClusterConfig"]["VolumeKmsKeyId"] == "alias/endpoint-volumes"
    assert request["ProcessingOutputConfig"]["KmsKeyId"] == KMS_KEY
    assert request["Environment"] == {"PIP_INDEX_URL": "https://pypi.internal.example/simple/"}
    sm.create_processing_job(**request)
    job = sm.describe_processing_job(ProcessingJobName=request["ProcessingJobName"])
    assert job["NetworkConfig"]["VpcConfig"]["Subnets"] == ["subnet-0a1b2c3d", "subnet-4e5f6a7b"]
    job_role, scheduler = role_statements("MonitoringJobRole", locked), role_statements("MonitoringSchedulerRole", locked)
    assert "ec2:CreateNetworkInterface" in job_role["JobInTheVpc"]["Action"]
    assert {"kms:Decrypt", "kms:GenerateDataKey"} <= set(job_role["JobKmsKeys"]["Action"])
    assert "ec2:DescribeSubnets" in scheduler["JobInTheVpc"]["Action"]
    assert "kms:CreateGrant" in scheduler["JobKmsKeys"]["Action"]

    open_account = stack_values(STAGE, **ROLES)
    request = monitoring_request(open_account)
    assert request["NetworkConfig"] == {"EnableInterContainerTrafficEncryption": True, "EnableNetworkIsolation": False}
    assert "VolumeKmsKeyId" not in request["ProcessingResources"]["ClusterConfig"]
    assert "KmsKeyId" not in request["ProcessingOutputConfig"] and "Environment" not in request
    sm.create_processing_job(**{**request, "ProcessingJobName": "dfmon-staging-open"})
    assert not {"JobInTheVpc", "JobKmsKeys"} & (role_statements("MonitoringJobRole", open_account).keys()
                                                | role_statements("MonitoringSchedulerRole", open_account).keys())


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore:Tried to parse AWS:UserWarning")
def test_the_schedule_runs_the_monitoring_job_on_what_deepfake_serve_captured(aws, loop, tmp_path):
    """The staging stack of a pipeline-registered model; the schedule as the template defines it, created on
    the emulator; its CreateProcessingJob request as EventBridge Scheduler sends it (validated by SageMaker's
    API model); the job run here as SageMaker runs it, on the capture `deepfake serve` wrote, uploaded where
    the endpoint's data capture writes; its reports in S3 and its metrics in CloudWatch, the ones the
    template's alarm watches."""
    from datetime import datetime, timedelta

    from deepfake.monitoring.metrics import NAMESPACE, VIOLATIONS_METRIC
    from deepfake.monitoring.schema import validate_monitoring
    from deepfake.serving.capture import parse_time
    from pipelines.local.jobs import COMPLETED, log_tail, run_job
    from pipelines.local.s3 import Storage

    sm, s3 = aws.client("sagemaker"), aws.client("s3")
    s3.create_bucket(Bucket="pipeline-outputs")
    evaluate = "s3://pipeline-outputs/runs/exec-1/evaluate"
    s3.upload_file(str(loop.evaluated.model), "pipeline-outputs", "runs/exec-1/gated/model.tar.gz")
    for name in ("evaluation.json", "video_predictions.csv"):
        s3.upload_file(str(loop.evaluated.evaluation / name), "pipeline-outputs", f"runs/exec-1/evaluate/{name}")
    sm.create_model_package_group(ModelPackageGroupName="monitored")
    sm.create_model_package(
        ModelPackageGroupName="monitored", ModelApprovalStatus="Approved",
        InferenceSpecification={"Containers": [{"Image": IMAGE, "ModelDataUrl":
                                                "s3://pipeline-outputs/runs/exec-1/gated/model.tar.gz"}],
                                "SupportedContentTypes": ["video/mp4"], "SupportedResponseMIMETypes": ["application/json"]},
        ModelMetrics={"ModelQuality": {"Statistics": {"ContentType": "application/json",
                                                      "S3Uri": f"{evaluate}/evaluation.json"}}})["ModelPackageArn"]
    assert run_build(aws, tmp_path, "monitored").returncode == 0
    config = _read(tmp_path / "staging-config-export.json")
    config["Parameters"]["MonitoringWindow"] = "2h"          # both windows of the loop, whatever the clock says
    endpoint = deploy_stack(aws, "monitored-staging", config)
    params = {**{k: v.get("Default", "") for k, v in template()["Parameters"].items()}, **config["Parameters"]}
    cfn = aws.client("cloudformation").list_stack_resources(StackName="monitored-staging")["StackResourceSummaries"]
    role = {r["LogicalResourceId"]: r["PhysicalResourceId"] for r in cfn}
    iam = aws.client("iam")
    values = stack_values(config["Parameters"], **{
        "AWS::Region": aws.region, "Endpoint.EndpointName": endpoint,
        "MonitoringJobRole.Arn": iam.get_role(RoleName=role["MonitoringJobRole"])["Role"]["Arn"],
        "MonitoringSchedulerRole.Arn": iam.get_role(RoleName=role["MonitoringSchedulerRole"])["Role"]["Arn"]})

    # the capture, where the endpoint's DataCaptureConfig writes it: <destination>/<endpoint>/AllTraffic/...
    local = loop.capture / "deepfake-staging"
    for path in local.rglob("*.jsonl"):
        bucket, _, prefix = params["DataCaptureUploadPath"][5:].partition("/")
        s3.upload_file(str(path), bucket, f"{prefix}/{endpoint}/{path.relative_to(local).as_posix()}")

    # the schedule, created on the emulator as the template defines it
    resources = template()["Resources"]
    schedule = resources["MonitoringSchedule"]["Properties"]
    target = schedule["Target"]
    scheduler = aws.client("scheduler")
    scheduler.create_schedule(
        Name="monitored-staging-monitoring", ScheduleExpression=params["MonitoringScheduleExpression"],
        ScheduleExpressionTimezone=schedule["ScheduleExpressionTimezone"], State=schedule["State"],
        FlexibleTimeWindow=schedule["FlexibleTimeWindow"],
        Target={"Arn": sub(target["Arn"]["Fn::Sub"], values), "RoleArn": values["MonitoringSchedulerRole.Arn"],
                "RetryPolicy": target["RetryPolicy"],
                "Input": resolve(target["Input"], values, template()["Conditions"])})
    created = scheduler.get_schedule(Name="monitored-staging-monitoring")
    assert created["Target"]["Arn"] == "arn:aws:scheduler:::aws-sdk:sagemaker:createProcessingJob"
    assert created["ScheduleExpression"] == "cron(10 * * * ? *)"

    # an invocation: EventBridge Scheduler fills in its context attributes and calls CreateProcessingJob
    last = parse_time(loop.windows["shifted"][1])
    scheduled = (last.replace(minute=0, second=0) + timedelta(hours=1, minutes=10)).strftime("%Y-%m-%dT%H:%M:%SZ")
    request = json.loads(created["Target"]["Input"].replace("<aws.scheduler.execution-id>", "d32c5kddcf5bb8c3")
                         .replace("<aws.scheduler.scheduled-time>", scheduled))
    sm.create_processing_job(**request)
    job = sm.describe_processing_job(ProcessingJobName="dfmon-staging-d32c5kddcf5bb8c3")
    assert job["AppSpecification"]["ContainerArguments"][:2] == [
        "--capture", f"{params['DataCaptureUploadPath']}/{endpoint}/"]

    # the job itself, run here as SageMaker runs a Processing job (code input downloaded, paths mapped)
    result = run_job(request, folder=tmp_path / "job", storage=Storage(s3), env=aws.env,
                     timeout_s=request["StoppingCondition"]["MaxRuntimeInSeconds"])
    assert result.status == COMPLETED, result.failure_reason + log_tail(result.instances[0].log, 40)
    assert result.instances[0].message.startswith("CompletedWithViolations: ")
    hour = datetime.strptime(scheduled, "%Y-%m-%dT%H:%M:%SZ").strftime("%Y/%m/%d/%H")
    out_bucket, _, out_prefix = params["MonitoringOutputPath"][5:].partition("/")
    keys = {o["Key"] for o in s3.list_objects_v2(Bucket=out_bucket, Prefix=out_prefix)["Contents"]}
    assert {f"{out_prefix}/{hour}/{n}" for n in ("monitoring.json", "monitoring.html", "requests.csv")} <= keys
    summary = json.loads(s3.get_object(Bucket=out_bucket, Key=f"{out_prefix}/{hour}/monitoring.json")["Body"].read())
    validate_monitoring(summary)
    sent = sum(len(r) for r in loop.responses.values())
    assert summary["counts"]["requests"] == sent and "no_face_rate" in {v["check"] for v in summary["violations"]}

    # CloudWatch: the Violations metric of this endpoint, the one the template's alarm watches
    alarm = resources["MonitoringViolationsAlarm"]["Properties"]
    assert params["MonitoringMetricsNamespace"] == NAMESPACE and alarm["MetricName"] == VIOLATIONS_METRIC
    (dimension,) = alarm["Dimensions"]
    cw = aws.client("cloudwatch")
    dims = [{"Name": dimension["Name"], "Value": endpoint}]
    stats = cw.get_metric_statistics(Namespace=NAMESPACE, MetricName=VIOLATIONS_METRIC, Dimensions=dims,
                                     StartTime=datetime.now() - timedelta(hours=1),
                                     EndTime=datetime.now() + timedelta(hours=1), Period=3600,
                                     Statistics=[alarm["Statistic"]])["Datapoints"]
    assert [d[alarm["Statistic"]] for d in stats] == [float(len(summary["violations"]))]
    assert float(len(summary["violations"])) >= float(alarm["Threshold"])     # the alarm would fire
    cw.put_metric_alarm(AlarmName=sub(alarm["AlarmName"]["Fn::Sub"], values), Namespace=NAMESPACE,
                        MetricName=alarm["MetricName"], Dimensions=dims, Statistic=alarm["Statistic"],
                        Period=int(params["MonitoringAlarmPeriod"]), EvaluationPeriods=alarm["EvaluationPeriods"],
                        DatapointsToAlarm=alarm["DatapointsToAlarm"], Threshold=float(alarm["Threshold"]),
                        ComparisonOperator=alarm["ComparisonOperator"], TreatMissingData=alarm["TreatMissingData"])
    assert cw.describe_alarms(AlarmNames=["deepfake-staging-monitoring-violations"])["MetricAlarms"]
    names = {m["MetricName"] for m in cw.list_metrics(Namespace=NAMESPACE, Dimensions=dims)["Metrics"]}
    assert {"Requests", "NoFaceRate", "FakeShare", "CheckViolation", VIOLATIONS_METRIC} <= names
