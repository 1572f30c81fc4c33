"""The deployment half, run on what an execution registered: the deploy pipeline of infra/cicd.yml, walked here.

The walk reads the model-deploy pipeline's stages from the template itself, in its order (a renamed or
reordered stage changes the walk), and runs each action with the real deployment code:

- **the trigger**: the approval rule's event pattern (``ModelApprovedRule``) is matched by the local
  API's EventBridge against the event SageMaker sends for the approved package; no match, no walk;
- **Source**: the repository's ``deploy/`` folder is the source artifact;
- **CodeBuild** actions run their buildspec's ``build`` phase (and ``finally``) in bash, in a folder
  holding their primary input, with the project's environment variables from the template, the
  artifacts of their other inputs as ``CODEBUILD_SRC_DIR_<name>``, and collect the ``artifacts``
  files as their output; the ``install`` phase is skipped (this environment has the tools);
- **CloudFormation** actions create the stage's stack from the build's template and template
  configuration on the local API;
- **Manual** approval asks (or takes ``approval="approve"``/``"reject"``): a rejection stops before prod;
- after the last stage, one request to the prod endpoint.

The local API's endpoints serve nothing, so requests to the staging and prod endpoints go to
``deepfake serve`` running the exact ``model.tar.gz`` of the package the build picked
(``AWS_ENDPOINT_URL_SAGEMAKER_RUNTIME``), and since moto's CloudFormation ignores ``EndpointName``, the
walk also creates the endpoint under the template's name from the stack's endpoint config.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from deepfake.core.errors import DeployError
from deepfake.core.vocabulary import APPROVED
from pipelines import cicd
from pipelines.local.jobs import stop_group
from pipelines.local.s3 import split_uri
from pipelines.local.server import Aws, free_port

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
TEMPLATE = DEPLOY / "endpoint-config-template.yml"
STACK_WAIT_S = 60.0
SERVE_START_S = 120.0                 # torch import and model load on a busy 2-core machine
COMMAND_TIMEOUT_S = 600
APPROVALS = ("approve", "reject", "ask")
SUCCEEDED, FAILED, REJECTED, NOT_STARTED = "Succeeded", "Failed", "Rejected", "NotStarted"


@dataclass
class StageRun:
    stage: str
    action: str
    provider: str
    status: str = NOT_STARTED
    detail: str = ""
    seconds: float = 0.0


@dataclass
class Walk:
    stages: list[StageRun]
    folder: Path
    package: dict[str, Any] = field(default_factory=dict)     # model-package-export.json of the build
    prod_response: dict[str, Any] = field(default_factory=dict)

    @property
    def status(self) -> str:
        done = [s.status for s in self.stages if s.status != NOT_STARTED]
        return done[-1] if done else NOT_STARTED

    @property
    def passed(self) -> bool:
        """No stage failed (a rejection at the approval is a decision, not a failure), and when prod was
        deployed, the request to it passed."""
        ran = [s for s in self.stages if s.status != NOT_STARTED]
        if not ran or any(s.status == FAILED for s in ran):
            return False
        if all(s.status == SUCCEEDED for s in self.stages):
            return self.prod_response.get("status") == "passed"
        return True

    def report(self) -> str:
        lines = [f"  {s.stage:<18} {s.action:<22} {s.status:<10} {s.seconds:6.1f}s  {s.detail}" for s in self.stages]
        return "\n".join(lines)


def approve(aws: Aws, arn: str) -> None:
    aws.client("sagemaker").update_model_package(ModelPackageArn=arn, ModelApprovalStatus=APPROVED,
                                                 ApprovalDescription="approved by pipeline-local --approve")


def walk_deploy(aws: Aws, *, group: str, bucket: str, folder: Path, project: str = "deepfake-local",
                approval: str = "ask", stop_before: str | None = None, video: str = "auto",
                template: Path = cicd.TEMPLATE, say: Callable[[str], None] = print) -> Walk:
    """Walk the deploy pipeline of ``template`` for the latest approved package of ``group``."""
    if approval not in APPROVALS:
        raise DeployError(f"approval {approval!r} is not one of {', '.join(APPROVALS)}")
    stack = cicd.load_template(template)
    actions = cicd.pipeline_actions(stack)
    walk = Walk([StageRun(a.stage, a.name, a.provider) for a in actions], folder)
    folder.mkdir(parents=True, exist_ok=True)
    if not approval_starts_deployment(aws, stack, group):
        raise DeployError(f"the approval rule of {template.name} does not match the approval of the latest package "
                          f"of {group}: nothing starts the deploy pipeline")
    say(f"the approval rule matches: walking {cicd.DEPLOY_PIPELINE} of {template.name}")
    values = {"ProjectName": project, "ModelPackageGroupName": group, "ArtifactBucket": bucket}
    artifacts: dict[str, Path] = {}
    with contextlib.ExitStack() as stack_of_servers:
        runtime: dict[str, str] = {}
        for action, run in zip(actions, walk.stages, strict=True):
            if stop_before and action.stage == stop_before:
                break
            started = time.perf_counter()
            try:
                if action.provider in ("CodeStarSourceConnection", "CodeCommit"):
                    artifacts[action.outputs[0]] = _source(folder / action.outputs[0])
                    run.status, run.detail = SUCCEEDED, "deploy/ of this checkout"
                elif action.provider == "CodeBuild":
                    _codebuild(aws, action, artifacts, folder, values, runtime, video)
                    run.status, run.detail = SUCCEEDED, action.buildspec or ""
                    if action.outputs and (artifacts[action.outputs[0]] / "model-package-export.json").is_file():
                        walk.package = json.loads((artifacts[action.outputs[0]] / "model-package-export.json")
                                                  .read_text())
                elif action.provider == "CloudFormation":
                    endpoint = _cloudformation(aws, action, artifacts, values)
                    run.status, run.detail = SUCCEEDED, f"stack {cicd.resolve(action.configuration['StackName'], values)}"\
                                                        f", endpoint {endpoint}"
                    if "url" not in runtime:                  # the package's model, behind deepfake serve
                        runtime["url"] = stack_of_servers.enter_context(_serve_package(aws, walk.package, folder))
                elif action.provider == "Manual":
                    decision = _decide(approval, action, say)
                    run.status, run.detail = (SUCCEEDED, "approved") if decision else (REJECTED, "rejected: prod is "
                                                                                                  "not deployed")
                else:
                    raise DeployError(f"action {action.name}: provider {action.provider} cannot be walked here")
            except DeployError as exc:
                run.status, run.detail = FAILED, str(exc)
            run.seconds = time.perf_counter() - started
            say(f"  {run.stage}: {run.status} ({run.detail[:300]})")
            if run.status != SUCCEEDED:
                break
        else:
            walk.prod_response = _prod_request(aws, artifacts, folder, runtime, video, say)
    return walk


def approval_starts_deployment(aws: Aws, template: Mapping[str, Any], group: str) -> bool:
    """Send SageMaker's state-change event of the group's latest approved package through the local
    EventBridge, on a rule with the template's pattern whose target is a queue: did it match?"""
    sm = aws.client("sagemaker")
    latest = sm.list_model_packages(ModelPackageGroupName=group, ModelApprovalStatus=APPROVED,
                                    SortBy="CreationTime", SortOrder="Descending")["ModelPackageSummaryList"]
    if not latest:
        return False
    package = sm.describe_model_package(ModelPackageName=latest[0]["ModelPackageArn"])
    detail = {k: package.get(k) for k in ("ModelPackageGroupName", "ModelPackageVersion", "ModelPackageArn",
                                         "ModelApprovalStatus", "ModelPackageStatus")}
    events, sqs = aws.client("events"), aws.client("sqs")
    queue = sqs.create_queue(QueueName="deepfake-local-deployments")["QueueUrl"]
    arn = sqs.get_queue_attributes(QueueUrl=queue, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    events.put_rule(Name="deepfake-local-model-approved", EventPattern=json.dumps(cicd.approval_pattern(template, group)))
    events.put_targets(Rule="deepfake-local-model-approved", Targets=[{"Id": "queue", "Arn": arn}])
    events.put_events(Entries=[{"Source": "aws.sagemaker", "DetailType": "SageMaker Model Package State Change",
                                "Detail": json.dumps(detail, default=str), "Resources": [detail["ModelPackageArn"]]}])
    received = sqs.receive_message(QueueUrl=queue, MaxNumberOfMessages=10).get("Messages", [])
    for message in received:
        sqs.delete_message(QueueUrl=queue, ReceiptHandle=message["ReceiptHandle"])
    return bool(received)


def _source(target: Path) -> Path:
    if target.exists():
        shutil.rmtree(target)
    shutil.copytree(DEPLOY, target / "deploy", ignore=shutil.ignore_patterns("__pycache__"))
    return target


def _codebuild(aws: Aws, action: cicd.Action, artifacts: dict[str, Path], folder: Path, values: Mapping[str, str],
               runtime: Mapping[str, str], video: str) -> None:
    spec = yaml.safe_load((ROOT / str(action.buildspec)).read_text())
    primary = action.configuration.get("PrimarySource") or action.inputs[0]
    work = folder / f"{action.name}-build"
    if work.exists():
        shutil.rmtree(work)
    shutil.copytree(artifacts[primary], work)
    env = aws.subprocess_env()
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env.update({k: str(v) for k, v in (spec.get("env", {}).get("variables") or {}).items()})
    env.update({k: str(cicd.resolve(v, values)) for k, v in (action.environment or {}).items()})
    env.update({f"CODEBUILD_SRC_DIR_{name}": str(artifacts[name]) for name in action.inputs if name != primary})
    env.update(CODEBUILD_SRC_DIR=str(work), TEST_VIDEO=video)
    if "url" in runtime:
        env["AWS_ENDPOINT_URL_SAGEMAKER_RUNTIME"] = runtime["url"]
    build = spec["phases"]["build"]
    script = "set -eo pipefail\n" + "\n".join(build.get("commands", []))
    proc = subprocess.run(["bash", "-c", script], cwd=work, env=env, capture_output=True, text=True,
                          timeout=COMMAND_TIMEOUT_S)
    if build.get("finally"):
        subprocess.run(["bash", "-c", "\n".join(build["finally"])], cwd=work, env=env, capture_output=True, text=True,
                       timeout=COMMAND_TIMEOUT_S)
    (folder / f"{action.name}.log").write_text(proc.stdout + proc.stderr)
    if proc.returncode != 0:
        raise DeployError(f"{action.buildspec} failed (exit {proc.returncode}): "
                          f"{(proc.stderr.strip() or proc.stdout.strip())[-1200:]}")
    # Its artifact files become its output artifact; a build without one (the staging test) leaves them in the walk's folder.
    for name in action.outputs or ("",):
        target = folder / name
        target.mkdir(parents=True, exist_ok=True)
        for item in spec.get("artifacts", {}).get("files", []):
            produced = work / _expand(item, env)
            if produced.is_file():
                shutil.copy2(produced, target / produced.name)
        if name:
            artifacts[name] = target


def _expand(text: str, env: Mapping[str, str]) -> str:
    return re.sub(r"\$\{?(\w+)\}?", lambda m: env.get(m.group(1), ""), text)


def _cloudformation(aws: Aws, action: cicd.Action, artifacts: Mapping[str, Path], values: Mapping[str, str]) -> str:
    config = action.configuration
    template_artifact, _, template_file = config["TemplatePath"].partition("::")
    config_artifact, _, config_file = config["TemplateConfiguration"].partition("::")
    stage_config = json.loads((artifacts[config_artifact] / config_file).read_text())
    name = cicd.resolve(config["StackName"], values)
    real = create_stack(aws, name, stage_config, artifacts[template_artifact] / template_file)
    intended = f"{stage_config['Parameters']['SageMakerProjectName']}-{stage_config['Parameters']['StageName']}"
    sm = aws.client("sagemaker")
    if real != intended:                     # moto named the endpoint itself: give it the template's name too
        with contextlib.suppress(sm.exceptions.ClientError):
            sm.delete_endpoint(EndpointName=intended)
        sm.create_endpoint(EndpointName=intended,
                           EndpointConfigName=sm.describe_endpoint(EndpointName=real)["EndpointConfigName"])
    return intended


@contextlib.contextmanager
def _serve_package(aws: Aws, package: Mapping[str, Any], folder: Path) -> Iterator[str]:
    if not package.get("ModelDataUrl"):
        raise DeployError("the build recorded no model package (model-package-export.json) to serve")
    model = folder / "model.tar.gz"
    bucket_name, key = split_uri(package["ModelDataUrl"])
    aws.client("s3").download_file(bucket_name, key, str(model))
    with serve(model, folder / "serve.log") as url:
        yield url


def _decide(approval: str, action: cicd.Action, say: Callable[[str], None]) -> bool:
    if approval != "ask":
        return approval == "approve"
    say(f"  {action.stage}: {action.configuration.get('CustomData', '')}")
    if not sys.stdin.isatty():
        say("  no terminal to ask: rejected (pass --prod approve to deploy prod)")
        return False
    return input("  approve the deployment to prod? [y/N] ").strip().lower() in ("y", "yes")


def _prod_request(aws: Aws, artifacts: Mapping[str, Path], folder: Path, runtime: Mapping[str, str], video: str,
                  say: Callable[[str], None]) -> dict[str, Any]:
    """One request to the prod endpoint, with the staging test's client and checks."""
    config = next((p / "prod-config-export.json" for p in artifacts.values() if (p / "prod-config-export.json").is_file()),
                  None)
    if config is None or "url" not in runtime:
        raise DeployError("no prod config or served model to send the prod request to")
    results = folder / "prod-request.json"
    proc = subprocess.run([sys.executable, str(DEPLOY / "test" / "test.py"), "--import-build-config", str(config),
                           "--export-test-results", str(results), "--video", video],
                          env={**aws.subprocess_env(), "AWS_ENDPOINT_URL_SAGEMAKER_RUNTIME": runtime["url"]},
                          capture_output=True, text=True, timeout=COMMAND_TIMEOUT_S)
    outcome = json.loads(results.read_text()) if results.is_file() else {"status": "failed", "error": proc.stderr[-1500:]}
    say(f"  request to prod ({outcome.get('endpoint_name')}): {outcome.get('status')}")
    return outcome


def create_stack(aws: Aws, name: str, config: dict[str, Any], template: Path = TEMPLATE) -> str:
    """Create (or replace) the stage's stack; returns its endpoint's name."""
    cfn = aws.client("cloudformation")
    if any(s["StackName"] == name for s in cfn.list_stacks(StackStatusFilter=["CREATE_COMPLETE"])["StackSummaries"]):
        cfn.delete_stack(StackName=name)
    cfn.create_stack(StackName=name, TemplateBody=template.read_text(), Capabilities=["CAPABILITY_IAM"],
                     Parameters=[{"ParameterKey": k, "ParameterValue": str(v)} for k, v in config["Parameters"].items()],
                     Tags=[{"Key": k, "Value": str(v)} for k, v in config["Tags"].items()])
    deadline = time.monotonic() + STACK_WAIT_S
    while True:
        stack = cfn.describe_stacks(StackName=name)["Stacks"][0]
        if not stack["StackStatus"].endswith("IN_PROGRESS") or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    if stack["StackStatus"] != "CREATE_COMPLETE":
        raise DeployError(f"stack {name} is {stack['StackStatus']}: {stack.get('StackStatusReason', '')}")
    resources = cfn.list_stack_resources(StackName=name)["StackResourceSummaries"]
    endpoints = [r for r in resources if r["ResourceType"] == "AWS::SageMaker::Endpoint"]
    if not endpoints:
        raise DeployError(f"stack {name} created no AWS::SageMaker::Endpoint")
    return endpoints[0]["PhysicalResourceId"].split("/")[-1]


@contextlib.contextmanager
def serve(model: Path, log: Path) -> Iterator[str]:
    """``deepfake serve --model model`` on a free loopback port until the block ends; yields its URL."""
    port = free_port()
    with open(log, "wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "deepfake.orchestration.cli", "serve", "--model", str(model),
                                 "--host", "127.0.0.1", "--port", str(port)], stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_ping(proc, url, log)
        yield url
    finally:
        if proc.poll() is None:
            stop_group(proc, signal.SIGINT)


def _wait_ping(proc: subprocess.Popen[bytes], url: str, log: Path) -> None:
    deadline = time.monotonic() + SERVE_START_S
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise DeployError(f"deepfake serve exited with {proc.returncode}; see {log}")
        try:
            with urllib.request.urlopen(f"{url}/ping", timeout=2) as reply:
                if reply.status == 200:
                    return
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(0.3)
    raise DeployError(f"deepfake serve did not answer /ping within {SERVE_START_S:.0f}s; see {log}")

