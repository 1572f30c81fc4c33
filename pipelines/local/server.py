"""The AWS API the executor talks to: a local moto server it starts, or an endpoint it is given.

Jobs, ``deploy/build.py`` and the staging test are processes of their own: they
reach the same API through :attr:`Aws.env` (endpoint, region, credentials), as a
container reaches AWS through its role. The moto server keeps its state in
memory only, so its S3 objects and Model Registry (groups and packages, with
their approval) are saved to a folder when the command ends and put back when
the next one starts: the step cache survives a rerun of the command, and a
package approved by one command can be used by the next (the scoring pipeline).
"""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from deepfake.core.files import read_json, write_json
from pipelines.local.s3 import Storage

LOCAL_CREDENTIALS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing"}   # moto accepts any
SNAPSHOT_INDEX = "index.json"
REGISTRY = "registry.json"
# CreateModelPackage fields a saved package is created again with.
PACKAGE_FIELDS = ("ModelPackageGroupName", "ModelPackageDescription", "InferenceSpecification", "ModelMetrics",
                  "CustomerMetadataProperties", "MetadataProperties", "Domain", "Task", "SamplePayloadUrl")
# SDK defaults: no telemetry calls, no role checks against IAM (pipelines/_utils.py, tests/aws_server.py).
SDK_CONFIG = "SchemaVersion: '1.0'\nSageMaker:\n  PythonSDK:\n    Modules:\n      TelemetryOptOut: true\n"


@dataclass
class Aws:
    endpoint: str | None                       # None: boto3's own resolution (a real account)
    region: str
    env: dict[str, str] = field(default_factory=dict)
    local: bool = False                        # a moto server this command started

    def client(self, service: str) -> Any:
        import boto3
        from botocore.config import Config

        return boto3.client(service, region_name=self.region, endpoint_url=self.endpoint,
                            aws_access_key_id=self.env.get("AWS_ACCESS_KEY_ID"),
                            aws_secret_access_key=self.env.get("AWS_SECRET_ACCESS_KEY"),
                            config=Config(retries={"max_attempts": 2}))

    def storage(self) -> Storage:
        return Storage(self.client("s3"))

    def subprocess_env(self, base: dict[str, str] | None = None) -> dict[str, str]:
        return {**(os.environ if base is None else base), **self.env}


@contextmanager
def aws_api(endpoint: str | None, region: str, work: Path) -> Iterator[Aws]:
    """A running API: ``endpoint`` as given, else a moto server on 127.0.0.1 for the block."""
    work.mkdir(parents=True, exist_ok=True)
    config = work / "sagemaker-sdk-config.yaml"
    config.write_text(SDK_CONFIG)
    env = {"AWS_DEFAULT_REGION": region, "AWS_REGION": region, "SAGEMAKER_VALIDATE_ROLE": "false",
           "SAGEMAKER_USER_CONFIG_OVERRIDE": str(config)}
    if endpoint:
        env["AWS_ENDPOINT_URL"] = endpoint
        if _loopback(endpoint) and "AWS_ACCESS_KEY_ID" not in os.environ:
            env.update(LOCAL_CREDENTIALS)
        else:
            env.update({k: os.environ[k] for k in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN",
                                                    "AWS_PROFILE") if k in os.environ})
        yield Aws(endpoint=endpoint, region=region, env=env)
        return
    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.ERROR)         # one access line per request otherwise
    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    url = f"http://127.0.0.1:{port}"
    nowhere = str(work / "no-aws-config")
    env.update(LOCAL_CREDENTIALS, AWS_ENDPOINT_URL=url, AWS_CONFIG_FILE=nowhere, AWS_SHARED_CREDENTIALS_FILE=nowhere,
               AWS_EC2_METADATA_DISABLED="true")
    try:
        yield Aws(endpoint=url, region=region, env=env, local=True)
    finally:
        server.stop()


def restore(storage: Storage, folder: Path) -> int:
    """Put the objects saved by :func:`snapshot` back; returns how many."""
    index = folder / SNAPSHOT_INDEX
    if not index.is_file():
        return 0
    saved = read_json(index)
    for bucket in sorted({name.split("/", 1)[0] for name in saved}):
        storage.ensure_bucket(bucket)
    for name in saved:
        storage.upload_file(folder / "objects" / name, f"s3://{name}")      # one PUT: the same ETag as before
    return len(saved)


def save_registry(aws: Aws, folder: Path) -> int:
    """Every model package group and package of the local server, in creation order; returns how many packages."""
    sm = aws.client("sagemaker")
    groups, packages = [], []
    for group in sm.list_model_package_groups(MaxResults=100)["ModelPackageGroupSummaryList"]:
        groups.append(group["ModelPackageGroupName"])
        listed = sm.list_model_packages(ModelPackageGroupName=group["ModelPackageGroupName"], MaxResults=100,
                                        SortBy="CreationTime", SortOrder="Ascending")["ModelPackageSummaryList"]
        for summary in listed:
            desc = sm.describe_model_package(ModelPackageName=summary["ModelPackageArn"])
            packages.append({**{k: desc[k] for k in PACKAGE_FIELDS if desc.get(k)},
                             "ModelApprovalStatus": desc.get("ModelApprovalStatus")})
    write_json(folder / REGISTRY, {"groups": groups, "packages": packages})
    return len(packages)


def restore_registry(aws: Aws, folder: Path) -> int:
    """Create the saved groups and packages again (same order: same versions and ARNs); returns how many."""
    path = folder / REGISTRY
    if not path.is_file():
        return 0
    saved = read_json(path)
    sm = aws.client("sagemaker")
    for group in saved["groups"]:
        sm.create_model_package_group(ModelPackageGroupName=group)
    for package in saved["packages"]:
        status = package.pop("ModelApprovalStatus", None)
        arn = sm.create_model_package(**package)["ModelPackageArn"]
        if status:
            sm.update_model_package(ModelPackageArn=arn, ModelApprovalStatus=status)
    return len(saved["packages"])


def snapshot(storage: Storage, folder: Path) -> int:
    """Save every object of every bucket (only what changed since the last snapshot); returns how many."""
    index = folder / SNAPSHOT_INDEX
    saved: dict[str, str] = read_json(index) if index.is_file() else {}
    now: dict[str, str] = {}
    for bucket in storage.client.list_buckets().get("Buckets", []):
        for obj in storage.list(f"s3://{bucket['Name']}/"):
            name = f"{bucket['Name']}/{obj.key}"
            if obj.key.endswith("/"):
                continue                                  # a "folder" marker: nothing to keep
            target = folder / "objects" / name
            if saved.get(name) != obj.etag or not target.is_file():
                target.parent.mkdir(parents=True, exist_ok=True)
                storage.client.download_file(bucket["Name"], obj.key, str(target))
            now[name] = obj.etag
    for name in set(saved) - set(now):
        (folder / "objects" / name).unlink(missing_ok=True)
    write_json(index, now)
    return len(now)


def _loopback(url: str) -> bool:
    return urlparse(url).hostname in ("127.0.0.1", "localhost", "::1")


def free_port() -> int:
    """A TCP port free on the loopback interface now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])
