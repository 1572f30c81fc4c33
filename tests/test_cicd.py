"""The CI/CD stack (infra/cicd.yml): lint, its roles against infra/policies, its approval rule, the files it names.

moto's CloudFormation skips CodePipeline and CodeBuild resources (a stack test would pass with nothing
created), so the stack is checked as data here and its deploy pipeline is walked stage by stage by
``pipeline-local --deploy`` (tests/test_pipeline_local.py); the approval rule is matched by the AWS API
emulator's EventBridge against events in the real schema.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from aws_server import ACCOUNT, REGION, moto_server

from pipelines import cicd

ROOT = Path(__file__).resolve().parents[1]
TEMPLATE = cicd.load_template()
GROUP = "deepfake-detector"


def test_the_stack_template_passes_cfn_lint_and_deploys_without_a_bucket():
    lint = Path(sys.executable).with_name("cfn-lint")
    result = subprocess.run([str(lint), str(cicd.TEMPLATE)], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    # `aws cloudformation deploy` sends a template inline up to 51,200 bytes; above that it needs --s3-bucket.
    assert cicd.TEMPLATE.stat().st_size < 51_200


def test_the_roles_hold_exactly_the_policy_documents_of_infra_policies():
    assert cicd.template_policies(TEMPLATE) == cicd.generated_resources(), "run `make policies`"
    for role in cicd.ROLES:
        resource = TEMPLATE["Resources"][role.logical_id]
        assert resource["Condition"] == role.condition                       # an ARN given: nothing created
        assert role.parameter in TEMPLATE["Parameters"]
        assert TEMPLATE["Parameters"][role.parameter]["Default"] == ""
    documents = cicd.policy_documents()
    assert set(documents) == {r.policy for r in cicd.ROLES} | {cicd.BOUNDARY_POLICY}
    for name, doc in documents.items():                                  # least privilege: no action wildcards
        for statement in doc["Statement"]:
            actions = statement["Action"] if isinstance(statement["Action"], list) else [statement["Action"]]
            assert statement["Effect"] == "Allow" and not any(a.endswith(":*") or a == "*" for a in actions), name


def test_a_policy_is_printed_with_its_variables_for_a_role_made_elsewhere():
    doc = cicd.concrete_policy("staging-test", {"ProjectName": "fraud", "AWS::Partition": "aws",
                                                "AWS::Region": REGION, "AWS::AccountId": ACCOUNT,
                                                "ArtifactBucket": "fraud-artifacts",
                                                "UsedArtifactKmsKeyArn": f"arn:aws:kms:{REGION}:{ACCOUNT}:key/k"})
    text = json.dumps(doc)
    assert "${" not in text and f"arn:aws:sagemaker:{REGION}:{ACCOUNT}:endpoint/fraud-staging" in text
    proc = subprocess.run([sys.executable, "-m", "pipelines.cicd", "policy", "staging-test", "--set", "ProjectName=x"],
                          capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert proc.returncode == 1 and "needs --set" in proc.stderr and "ArtifactBucket=..." in proc.stderr


def test_the_deploy_pipeline_has_the_stages_of_the_seed_in_order():
    actions = cicd.pipeline_actions(TEMPLATE)
    assert [(a.stage, a.provider) for a in actions] == [
        ("Source", "CodeStarSourceConnection"), ("Build", "CodeBuild"), ("DeployStaging", "CloudFormation"),
        ("TestStaging", "CodeBuild"), ("ApproveDeployment", "Manual"), ("DeployProd", "CloudFormation")]
    assert [a.buildspec for a in actions if a.buildspec] == ["deploy/buildspec.yml", "deploy/test/buildspec.yml"]
    build = cicd.pipeline_actions(TEMPLATE, cicd.BUILD_PIPELINE)
    assert [(a.stage, a.buildspec) for a in build] == [("Source", None), ("Build", "buildspec.yml")]


def model_package_event(group: str, status: str, version: int = 3) -> dict:
    """An EventBridge event of SageMaker's "Model Package State Change", as the service sends it."""
    arn = f"arn:aws:sagemaker:{REGION}:{ACCOUNT}:model-package/{group}/{version}"
    return {
        "version": "0", "id": "6a7e8feb-b491-4cf7-a9f1-bf3703467718",
        "detail-type": "SageMaker Model Package State Change", "source": "aws.sagemaker", "account": ACCOUNT,
        "time": "2026-12-06T12:00:00Z", "region": REGION, "resources": [arn],
        "detail": {"ModelPackageGroupName": group, "ModelPackageVersion": version, "ModelPackageArn": arn,
                   "ModelPackageDescription": "Deepfake-video detector", "CreationTime": 1765022400000,
                   "InferenceSpecification": {"Containers": [{"Image": "image", "ModelDataUrl": "s3://b/model.tar.gz"}],
                                              "SupportedContentTypes": ["video/mp4"],
                                              "SupportedResponseMIMETypes": ["application/json"]},
                   "ModelApprovalStatus": status, "ModelPackageStatus": "Completed",
                   "CreatedBy": {"UserProfileName": "pipelines"}},
    }


@pytest.fixture(scope="module")
def eventbridge(tmp_path_factory):
    """A rule on the emulator's default bus whose matches land in a queue (moto runs SQS targets; its
    TestEventPattern answers nothing), so the emulator's own pattern matching decides."""
    with moto_server(tmp_path_factory.mktemp("aws")) as aws:
        events, sqs = aws.client("events"), aws.client("sqs")
        queue = sqs.create_queue(QueueName="deployments")["QueueUrl"]
        arn = sqs.get_queue_attributes(QueueUrl=queue, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]

        def matches(pattern: dict, event: dict) -> bool:
            events.put_rule(Name="rule", EventPattern=json.dumps(pattern))
            events.put_targets(Rule="rule", Targets=[{"Id": "queue", "Arn": arn}])
            sent = events.put_events(Entries=[{"Source": event["source"], "DetailType": event["detail-type"],
                                               "Detail": json.dumps(event["detail"]), "Resources": event["resources"]}])
            assert sent["FailedEntryCount"] == 0
            received = sqs.receive_message(QueueUrl=queue, MaxNumberOfMessages=10).get("Messages", [])
            for message in received:
                sqs.delete_message(QueueUrl=queue, ReceiptHandle=message["ReceiptHandle"])
            return bool(received)

        yield matches


@pytest.mark.aws
@pytest.mark.parametrize(("group", "status", "deploys"), [
    (GROUP, "Approved", True),
    (GROUP, "Rejected", False),
    (GROUP, "PendingManualApproval", False),
    ("another-group", "Approved", False),
])
def test_only_an_approved_version_of_the_project_group_starts_a_deployment(eventbridge, group, status, deploys):
    assert eventbridge(cicd.approval_pattern(TEMPLATE, GROUP), model_package_event(group, status)) is deploys


@pytest.mark.aws
def test_the_rule_of_the_aws_template_would_redeploy_on_a_rejection(eventbridge):
    """What the test above guards against: sagemaker-custom-project-templates' rule (its issue 15)."""
    theirs = {"source": ["aws.sagemaker"], "detail-type": ["SageMaker Model Package State Change"],
              "detail": {"ModelPackageGroupName": [GROUP],
                         "ModelApprovalStatus": [{"anything-but": "PendingManualApproval"}]}}
    assert eventbridge(theirs, model_package_event(GROUP, "Rejected")) is True


def test_every_file_the_stages_name_is_in_the_repository():
    actions = [*cicd.pipeline_actions(TEMPLATE, cicd.BUILD_PIPELINE), *cicd.pipeline_actions(TEMPLATE)]
    buildspecs = [a.buildspec for a in actions if a.buildspec]
    assert buildspecs and all((ROOT / b).is_file() for b in buildspecs)
    produced = set()
    for buildspec in buildspecs:
        spec = yaml.safe_load((ROOT / buildspec).read_text())
        variables = spec.get("env", {}).get("variables", {})
        produced |= {variables.get(f.strip("${}"), f) for f in spec.get("artifacts", {}).get("files", [])}
        commands = "\n".join(c for phase in spec["phases"].values() for c in phase.get("commands", []))
        named = set(re.findall(r"(?<![\w/$.-])((?:deploy|infra|pipelines|tests|notebooks)/[\w./-]+\.\w+)", commands))
        missing = sorted(n for n in named if not (ROOT / n).is_file())
        assert not missing, f"{buildspec} names {missing}"
    for action in actions:                                  # the CloudFormation actions read the build's outputs
        for key in ("TemplatePath", "TemplateConfiguration"):
            if key in action.configuration:
                artifact, _, name = action.configuration[key].partition("::")
                assert artifact == "BuildArtifact" and name in produced, (action.name, key, name)
    for name in ("infra/image/Dockerfile", "infra/image/build.sh", "infra/image/requirements.lock",
                 "deploy/endpoint-config-template.yml", "deploy/staging-config.json", "deploy/prod-config.json"):
        assert (ROOT / name).is_file(), name


DOCKER_STAND_IN = '''#!{python}
"""docker, as infra/image/build.sh uses it, where no Docker engine runs: each call is recorded; a push
puts a manifest into the emulator's ECR repository, which gives the image its digest."""
import json, os, sys
import boto3
args = sys.argv[1:]
with open(os.environ["DOCKER_CALLS"], "a") as log:
    log.write(json.dumps(args) + "\\n")
if args[0] == "login":
    sys.stdin.read()
elif args[0] == "push":
    repository, tag = args[1].split("/", 1)[1].rsplit(":", 1)
    manifest = {{"schemaVersion": 2, "mediaType": "application/vnd.docker.distribution.manifest.v2+json",
                "config": {{"digest": "sha256:" + "0" * 64, "size": 1, "mediaType": "x"}}, "layers": [], "tag": tag}}
    boto3.client("ecr").put_image(repositoryName=repository, imageTag=tag, imageManifest=json.dumps(manifest))
'''


@pytest.mark.aws
@pytest.mark.slow
@pytest.mark.skipif(shutil.which("aws") is None, reason="the AWS CLI (on every CodeBuild image) is not installed")
def test_the_model_build_builds_each_image_once_and_names_it_by_digest(tmp_path):
    from pipelines.deepfake.image import tag

    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "docker").write_text(DOCKER_STAND_IN.format(python=sys.executable))
    (bin_dir / "docker").chmod(0o755)
    calls, uris = tmp_path / "docker-calls.jsonl", tmp_path / "image-uris.json"
    repository = f"{ACCOUNT}.dkr.ecr.{REGION}.amazonaws.com/deepfake-kit"
    with moto_server(tmp_path) as aws:
        ecr = aws.client("ecr")
        ecr.create_repository(repositoryName="deepfake-kit")
        env = aws.subprocess_env(PATH=f"{bin_dir}:{Path(sys.executable).parent}:{os.environ['PATH']}",
                                 DOCKER_CALLS=str(calls), IMAGE_URIS_FILE=str(uris), IMAGE_REPOSITORY_URI=repository,
                                 AWS_REGION=REGION, PYTHON=sys.executable)
        first = subprocess.run(["bash", "infra/image/build.sh"], cwd=ROOT, env=env, capture_output=True, text=True,
                               timeout=600)
        assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]
        builds = [json.loads(line) for line in calls.read_text().splitlines() if line.startswith('["build"')]
        assert len(builds) == 3
        by_tag = {b[b.index("-t") + 1].rsplit(":", 1)[1]: b for b in builds}
        assert set(by_tag) == {f"{tag()}-{flavour}" for flavour in ("cpu", "gpu", "serving")}
        assert "BASE_IMAGE=" in " ".join(by_tag[f"{tag()}-cpu"]) and "pytorch-training:2.5.1-cpu-py311" in " ".join(
            by_tag[f"{tag()}-cpu"])
        assert "pytorch-training:2.5.1-gpu-py311" in " ".join(by_tag[f"{tag()}-gpu"])
        assert "pytorch-inference:2.5.1-cpu-py311" in " ".join(by_tag[f"{tag()}-serving"])
        assert "INSTALL_KIT=false" in by_tag[f"{tag()}-serving"] and "INSTALL_KIT=true" in by_tag[f"{tag()}-cpu"]
        digests = {d["imageTags"][0]: d["imageDigest"] for d in ecr.describe_images(repositoryName="deepfake-kit")
                   ["imageDetails"]}
        assert json.loads(uris.read_text()) == {
            "processing_image_uri": f"{repository}@{digests[tag() + '-cpu']}",
            "training_image_uri": f"{repository}@{digests[tag() + '-gpu']}",
            "inference_image_uri": f"{repository}@{digests[tag() + '-serving']}"}

        calls.unlink()
        again = subprocess.run(["bash", "infra/image/build.sh"], cwd=ROOT, env=env, capture_output=True, text=True,
                               timeout=600)
        assert again.returncode == 0, again.stderr[-3000:]
        assert not any(line.startswith('["build"') for line in calls.read_text().splitlines())   # tags exist
        assert again.stdout.count("is already in the repository") == 3
