"""Every AWS API call the kit's code makes is allowed by the policy of the role that runs it.

The calls are parsed from the code: in each file that runs on AWS, every method called on a boto3
client (and every paginator asked for) that is an operation of the services that file's clients
talk to, mapped to its IAM action (S3's object calls to their actions). What the SageMaker SDK calls on
the code's behalf (``Pipeline.upsert``, ``start``) is listed from the SDK's own source, the part a
parse of the kit cannot see. Each action must be allowed by the role's document in ``infra/policies``
(the endpoint's model role: the statements of the stage template's ``ModelRole``).
"""

from __future__ import annotations

import fnmatch
import re
from pathlib import Path

import pytest

from pipelines import cicd

ROOT = Path(__file__).resolve().parents[1]
ENDPOINT_ROLE = "endpoint model role (deploy/endpoint-config-template.yml ModelRole)"
MONITORING_ROLE = "monitoring job role (deploy/endpoint-config-template.yml MonitoringJobRole)"
ROLE_RESOURCES = {ENDPOINT_ROLE: "ModelRole", MONITORING_ROLE: "MonitoringJobRole"}

# file -> (the role it runs as, the services its clients call)
CODE = {
    "pipelines/deepfake/score_step.py": ("sagemaker-pipeline", ("sagemaker", "s3")),   # a Processing job
    "pipelines/deepfake/run_step.py": ("sagemaker-pipeline", ("sagemaker", "s3", "codeartifact")),  # its index
    "pipelines/run_pipeline.py": ("model-build", ("sagemaker",)),                      # the model-build CodeBuild
    "pipelines/deepfake/bundle.py": ("model-build", ("s3",)),
    "pipelines/deepfake/pipeline.py": ("model-build", ("sagemaker", "s3")),
    "pipelines/deepfake/scoring.py": ("model-build", ("s3",)),                       # its code upload, as pipeline.py
    "deploy/build.py": ("deploy-build", ("sagemaker", "s3")),                        # the bucket's KMS key
    "deploy/test/test.py": ("staging-test", ("sagemaker", "sagemaker-runtime", "s3")),   # async requests via S3
    "src/deepfake/serving/handlers.py": (ENDPOINT_ROLE, ("s3",)),
    "src/deepfake/modeling/pretrained.py": ("sagemaker-pipeline", ("s3",)),          # ImageNetWeightsUri, in training
    "src/deepfake/data/listing.py": ("sagemaker-pipeline", ("s3",)),     # inventory and explore list InputDataUrl
    "src/deepfake/data/shards.py": ("sagemaker-pipeline", ("s3",)),      # evaluate reads crops by ranged GETs
    "pipelines/deepfake/monitor_step.py": (MONITORING_ROLE, ("s3", "cloudwatch")),   # the scheduled monitoring job
    "src/deepfake/monitoring/storage.py": (MONITORING_ROLE, ("s3",)),
}
# Files that mention a client but make no call on AWS as any of the stack's roles.
LOCAL_ONLY = {"src/deepfake/serving/server.py": "deepfake serve runs on your machine; the client in its docstring "
                                                "is its caller's",
              "src/deepfake/serving/invoke.py": "deepfake invoke calls an endpoint with its user's credentials",
              "src/deepfake/orchestration/calibration.py": "deepfake calibrate reads and registers a model package "
                                                           "with its user's credentials (docs/sagemaker.md lists "
                                                           "the permissions)"}
# What sagemaker.mlops.workflow.pipeline.Pipeline.upsert/start do for run-pipeline (SDK 3.27: describe, create
# or update with tags, start), and what SageMaker Pipelines does as the pipeline role for each step.
SDK = {
    "model-build": ("sagemaker:DescribePipeline", "sagemaker:CreatePipeline", "sagemaker:UpdatePipeline",
                    "sagemaker:AddTags", "sagemaker:StartPipelineExecution"),
    "sagemaker-pipeline": ("sagemaker:CreateProcessingJob", "sagemaker:DescribeProcessingJob",
                           "sagemaker:StopProcessingJob", "sagemaker:CreateModelPackage", "iam:PassRole"),
}
# S3 calls whose IAM action is not their operation's name; transfer methods of the client.
S3_ACTIONS = {"head_object": "s3:GetObject", "download_file": "s3:GetObject", "download_fileobj": "s3:GetObject",
              "upload_file": "s3:PutObject", "upload_fileobj": "s3:PutObject", "list_objects_v2": "s3:ListBucket",
              "list_objects": "s3:ListBucket", "head_bucket": "s3:ListBucket",
              "get_bucket_encryption": "s3:GetEncryptionConfiguration"}
# What a call makes AWS check on the caller's behalf: a CodeArtifact token needs an STS bearer token.
IMPLIED = {"codeartifact:GetAuthorizationToken": ("sts:GetServiceBearerToken",)}
# What S3 asks KMS on the caller's behalf for an object under a customer managed key (SSE-KMS): a locked-down
# account's bucket (the stack's ArtifactKmsKeyArn, the stage's OutputKmsKeyId).
SSE_KMS = {"s3:GetObject": "kms:Decrypt", "s3:PutObject": "kms:GenerateDataKey"}
ARTIFACT_KEY = "${UsedArtifactKmsKeyArn}"      # the one key the stack's CodeBuild and CodePipeline roles may use
ARTIFACT_KEY_ROLES = ("model-build", "deploy-build", "staging-test", "codepipeline")


def operations(service: str) -> dict[str, str]:
    """snake_case method -> IAM action of a boto3 service."""
    import botocore.session
    from botocore import xform_name

    model = botocore.session.get_session().get_service_model(service)
    prefix = model.signing_name or model.endpoint_prefix
    return {xform_name(op): f"{prefix}:{op}" for op in model.operation_names}


def calls(path: Path, services: tuple[str, ...]) -> set[str]:
    text = path.read_text(encoding="utf-8")
    names = set(re.findall(r"\.([a-z][a-z0-9_]*)\(", text)) | set(re.findall(r"get_paginator\(\"([a-z0-9_]+)\"\)", text))
    out = set()
    for service in services:
        ops = operations(service)
        for name in names:
            if service == "s3" and name in S3_ACTIONS:
                out.add(S3_ACTIONS[name])
            elif name in ops:
                out.add(ops[name])
    return out | {implied for action in out for implied in IMPLIED.get(action, ())}


def role_statements(role: str) -> list[dict]:
    """The role's statements (a stage template role's conditional ones as when their condition holds)."""
    if role in ROLE_RESOURCES:
        template = cicd.load_template(ROOT / "deploy" / "endpoint-config-template.yml")
        resource = template["Resources"][ROLE_RESOURCES[role]]
        statements = resource["Properties"]["Policies"][0]["PolicyDocument"]["Statement"]
        return [s["Fn::If"][1] if "Fn::If" in s else s for s in statements]
    return cicd.policy_documents()[role]["Statement"]


def statement_actions(statement: dict) -> list[str]:
    actions = statement["Action"]
    return actions if isinstance(actions, list) else [actions]


def allowed_actions(role: str) -> list[str]:
    return [action for statement in role_statements(role) for action in statement_actions(statement)]


def test_the_parse_sees_the_calls_it_must():
    assert "sagemaker:ListModelPackages" in calls(ROOT / "deploy" / "build.py", ("sagemaker",))     # a paginator
    assert "sagemaker:InvokeEndpoint" in calls(ROOT / "deploy" / "test" / "test.py", ("sagemaker-runtime",))
    assert {"s3:GetObject"} <= calls(ROOT / "src" / "deepfake" / "serving" / "handlers.py", ("s3",))
    assert {"codeartifact:GetAuthorizationToken", "codeartifact:GetRepositoryEndpoint", "sts:GetServiceBearerToken"} \
        <= calls(ROOT / "pipelines" / "deepfake" / "run_step.py", ("codeartifact",))
    assert "s3:GetEncryptionConfiguration" in calls(ROOT / "deploy" / "build.py", ("s3",))
    assert "sagemaker:InvokeEndpointAsync" in calls(ROOT / "deploy" / "test" / "test.py", ("sagemaker-runtime",))


@pytest.mark.parametrize("path", sorted(CODE))
def test_every_call_of_the_code_is_allowed_to_the_role_that_runs_it(path):
    role, services = CODE[path]
    made = calls(ROOT / path, services) | set(SDK.get(role, ()) if path == "pipelines/run_pipeline.py"
                                              or role == "sagemaker-pipeline" else ())
    allowed = allowed_actions(role)
    missing = sorted(a for a in made if not any(fnmatch.fnmatchcase(a, pattern) for pattern in allowed))
    assert not missing, f"{path} runs as {role}, whose policy lacks {missing}"


def test_every_file_that_makes_aws_calls_is_listed():
    """A new file with a boto3 client must say which role runs it (pipelines/local only runs here)."""
    found = set()
    for folder in ("src", "pipelines", "deploy"):
        for path in (ROOT / folder).rglob("*.py"):
            rel = path.relative_to(ROOT).as_posix()
            text = path.read_text(encoding="utf-8")
            if rel.startswith("pipelines/local/") or rel == "pipelines/cicd.py" or rel in LOCAL_ONLY:
                continue
            if re.search(r"(boto3|boto_session)\.client\(|sagemaker_client|\bs3_client\b", text):
                found.add(rel)
    assert found <= set(CODE), sorted(found - set(CODE))


@pytest.mark.parametrize("path", sorted(CODE))
def test_a_role_may_use_the_kms_key_of_the_objects_it_reads_and_writes(path):
    """In a locked-down account the bucket's objects are under a customer managed key: each S3 object call of the
    code needs the KMS action S3 asks for it; the stack's CodeBuild and CodePipeline roles may use the artifact
    key only."""
    role, services = CODE[path]
    made = calls(ROOT / path, tuple(s for s in services if s == "s3"))
    needed = sorted({SSE_KMS[action] for action in made if action in SSE_KMS})
    granted = [s for s in role_statements(role) if any(a.startswith("kms:") for a in statement_actions(s))]
    allowed = [a for s in granted for a in statement_actions(s)]
    missing = [a for a in needed if not any(fnmatch.fnmatchcase(a, pattern) for pattern in allowed)]
    assert not missing, f"{path} runs as {role}, which may not {missing} on the key of the objects it reads or writes"
    if role in ARTIFACT_KEY_ROLES:
        assert {s["Resource"] for s in granted} <= {ARTIFACT_KEY}, f"{role}'s KMS rights reach beyond the artifact key"
