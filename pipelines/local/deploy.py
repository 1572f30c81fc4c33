"""The deployment half, run on what an execution registered, with the real deployment code.

1. the model package is approved (``UpdateModelPackage``), as a reviewer would;
2. ``deploy/build.py`` picks the group's latest approved package and writes the stage configs;
3. the staging stack (``deploy/endpoint-config-template.yml`` with ``staging-config-export.json``)
   is created through CloudFormation on the API server;
4. the ``model.tar.gz`` the package names is downloaded from S3 and served by ``deepfake serve``;
5. ``deploy/test/test.py`` describes the stack's endpoint and invokes the served model.

The local API's endpoint serves nothing, so step 5 sends its invocation to
``deepfake serve`` (``--runtime-endpoint-url``): the exact artifact of the
registered package, behind the container contract.
"""

from __future__ import annotations

import contextlib
import json
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from deepfake.core.errors import DeployError
from deepfake.core.vocabulary import APPROVED
from pipelines.local.jobs import stop_group
from pipelines.local.s3 import split_uri
from pipelines.local.server import Aws, free_port

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
TEMPLATE = DEPLOY / "endpoint-config-template.yml"
STACK_WAIT_S = 60.0
SERVE_START_S = 120.0                 # torch import and model load on a busy 2-core machine
COMMAND_TIMEOUT_S = 600


@dataclass(frozen=True)
class Deployment:
    endpoint: str                     # the staging endpoint's real name (read from the stack)
    model_data_url: str
    results: dict[str, Any]           # test-results.json of the staging test
    passed: bool


def approve(aws: Aws, arn: str) -> None:
    aws.client("sagemaker").update_model_package(ModelPackageArn=arn, ModelApprovalStatus=APPROVED,
                                                 ApprovalDescription="approved by pipeline-local --approve")


def deploy_staging(aws: Aws, *, group: str, role: str, bucket: str, folder: Path, project: str = "deepfake-local",
                   video: str = "auto", say: Callable[[str], None] = print) -> Deployment:
    folder.mkdir(parents=True, exist_ok=True)
    _run([sys.executable, str(DEPLOY / "build.py"), "--model-execution-role", role, "--model-package-group-name",
          group, "--sagemaker-project-id", "local", "--sagemaker-project-name", project, "--s3-bucket", bucket,
          *_exports(folder)], aws, "deploy/build.py")
    package = json.loads((folder / "model-package-export.json").read_text())
    say(f"  build.py picked {package['ModelPackageArn']} ({package['ModelApprovalStatus']})")
    config = json.loads((folder / "staging-config-export.json").read_text())
    endpoint = create_stack(aws, f"{project}-staging", config)
    say(f"  staging stack created: endpoint {endpoint}")
    model = folder / "model.tar.gz"
    bucket_name, key = split_uri(package["ModelDataUrl"])
    aws.client("s3").download_file(bucket_name, key, str(model))
    results_file = folder / "test-results.json"
    with serve(model, folder / "serve.log") as url:
        say(f"  deepfake serve {model} on {url}")
        proc = subprocess.run([sys.executable, str(DEPLOY / "test" / "test.py"), "--import-build-config",
                               str(folder / "staging-config-export.json"), "--export-test-results", str(results_file),
                               "--endpoint-name", endpoint, "--runtime-endpoint-url", url, "--video", video],
                              env=aws.subprocess_env(), capture_output=True, text=True, timeout=COMMAND_TIMEOUT_S)
    for line in proc.stdout.splitlines():
        say(f"  {line}")
    results = json.loads(results_file.read_text()) if results_file.is_file() else {}
    if proc.returncode != 0 and not results:
        say(proc.stderr[-2000:])
    return Deployment(endpoint, package["ModelDataUrl"], results, proc.returncode == 0)


def _exports(folder: Path) -> list[str]:
    out = []
    for stage in ("staging", "prod"):
        for kind in ("config", "params", "tags"):
            out += [f"--export-{stage}-{kind}", str(folder / f"{stage}-{kind}-export.json")]
    return [*out, "--export-model-package", str(folder / "model-package-export.json"), "--export-cfn-params-tags"]


def create_stack(aws: Aws, name: str, config: dict[str, Any]) -> str:
    """Create (or replace) the stage's stack; returns its endpoint's name."""
    cfn = aws.client("cloudformation")
    if any(s["StackName"] == name for s in cfn.list_stacks(StackStatusFilter=["CREATE_COMPLETE"])["StackSummaries"]):
        cfn.delete_stack(StackName=name)
    cfn.create_stack(StackName=name, TemplateBody=TEMPLATE.read_text(),
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


def _run(cmd: list[str], aws: Aws, what: str) -> None:
    proc = subprocess.run(cmd, env=aws.subprocess_env(), capture_output=True, text=True, timeout=COMMAND_TIMEOUT_S)
    if proc.returncode != 0:
        raise DeployError(f"{what} failed (exit {proc.returncode}): {proc.stderr.strip()[-1500:]}")


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

