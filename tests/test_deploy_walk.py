"""The deploy pipeline of infra/cicd.yml walked stage by stage on the AWS API emulator (pipelines/local/deploy.py).

A real model is packaged, uploaded and registered as an approved model package (as the model build leaves
it); the walk then runs what CodePipeline would: the approval rule, the deploy build's buildspec, the staging
stack, the staging test's buildspec against ``deepfake serve`` of that package's model, the manual approval
and prod, then one request to prod. ``make pipeline-local`` walks the same after a whole pipeline execution.
"""

from __future__ import annotations

import json

import pytest
from aws_server import REGION, moto_server
from serving_support import make_model

from deepfake.core.vocabulary import ACCEPTED_TYPES
from deepfake.serving.packaging import package_model
from pipelines import cicd
from pipelines.local.deploy import FAILED, NOT_STARTED, REJECTED, SUCCEEDED, walk_deploy
from pipelines.local.server import Aws

pytestmark = [pytest.mark.aws, pytest.mark.slow]

BUCKET, GROUP = "deepfake-walk", "deepfake-detector"
IMAGE = "763104351884.dkr.ecr.us-east-1.amazonaws.com/pytorch-inference:2.5.1-cpu-py311-ubuntu22.04-sagemaker"


@pytest.fixture(scope="module")
def aws(tmp_path_factory):
    work = tmp_path_factory.mktemp("walk")
    archive = package_model(make_model(work / "model"), work / "model.tar.gz")
    with moto_server(work) as server:
        server.client("s3").create_bucket(Bucket=BUCKET)
        server.client("s3").upload_file(str(archive), BUCKET, "models/1/model.tar.gz")
        server.client("s3").put_object(Bucket=BUCKET, Key="models/1/evaluation.json", Body=b"{}")   # for monitoring
        sm = server.client("sagemaker")
        sm.create_model_package_group(ModelPackageGroupName=GROUP)
        arn = sm.create_model_package(
            ModelPackageGroupName=GROUP, ModelApprovalStatus="PendingManualApproval",
            InferenceSpecification={"Containers": [{"Image": IMAGE, "ModelDataUrl": f"s3://{BUCKET}/models/1/model.tar.gz"}],
                                    "SupportedContentTypes": list(ACCEPTED_TYPES),
                                    "SupportedResponseMIMETypes": ["application/json"]},
            ModelMetrics={"ModelQuality": {"Statistics": {"ContentType": "application/json",
                                                          "S3Uri": f"s3://{BUCKET}/models/1/evaluation.json"}}},
        )["ModelPackageArn"]
        sm.update_model_package(ModelPackageArn=arn, ModelApprovalStatus="Approved")
        yield Aws(endpoint=server.endpoint, region=REGION, env=server.env), server


def test_an_approved_model_goes_through_staging_test_and_approval_to_prod(aws, tmp_path):
    local, server = aws
    walk = walk_deploy(local, group=GROUP, bucket=BUCKET, folder=tmp_path, project="walk", approval="approve",
                       say=lambda _line: None)
    stages = [a.stage for a in cicd.pipeline_actions(cicd.load_template())]
    assert [(run.stage, run.status) for run in walk.stages] == [(stage, SUCCEEDED) for stage in stages], walk.report()
    staging = json.loads((tmp_path / "test-results.json").read_text())        # TestStaging's buildspec wrote it
    assert staging["status"] == "passed" and staging["endpoint_name"] == "walk-staging"
    assert walk.prod_response["status"] == "passed" and walk.prod_response["endpoint_name"] == "walk-prod"
    assert walk.passed
    stacks = {s["StackName"]: s["StackStatus"] for s in server.client("cloudformation").describe_stacks()["Stacks"]}
    assert stacks["walk-staging"] == stacks["walk-prod"] == "CREATE_COMPLETE"


def test_a_rejection_at_the_manual_approval_stops_before_prod(aws, tmp_path):
    local, server = aws
    walk = walk_deploy(local, group=GROUP, bucket=BUCKET, folder=tmp_path, project="rejected", approval="reject",
                       stop_before=None, say=lambda _line: None)
    status = {run.stage: run.status for run in walk.stages}
    assert status["TestStaging"] == SUCCEEDED and status["ApproveDeployment"] == REJECTED
    assert status["DeployProd"] == NOT_STARTED and not walk.prod_response and walk.passed
    stacks = {s["StackName"] for s in server.client("cloudformation").describe_stacks()["Stacks"]}
    assert "rejected-staging" in stacks and "rejected-prod" not in stacks
    assert FAILED not in status.values()
