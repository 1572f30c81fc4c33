"""A local AWS API (moto) on loopback for tests that drive the real SDK and boto3.

``moto_server()`` starts ``moto.server.ThreadedMotoServer`` on 127.0.0.1 at a free
port and yields an :class:`AwsServer` whose ``env`` points boto3 and the SageMaker
SDK at it: fake credentials, a region, no retries (moto answers some calls with
500 and retrying them only wastes time), no IAM role validation (moto's
SimulatePrincipalPolicy fails) and no SDK telemetry. Nothing leaves the machine.

    with moto_server() as aws, aws.environment():
        aws.client("s3").create_bucket(Bucket="b")
        ...                                   # code under test, in process

    subprocess.run([...], env=aws.subprocess_env())   # or a console script

Moto keeps its state per server: a module-scoped fixture shares it between tests.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REGION = "us-east-1"
ACCOUNT = "123456789012"                      # moto's default account
ROLE_ARN = f"arn:aws:iam::{ACCOUNT}:role/DeepfakeSageMakerRole"
SDK_CONFIG = "SchemaVersion: '1.0'\nSageMaker:\n  PythonSDK:\n    Modules:\n      TelemetryOptOut: true\n"
# Variables that could point boto3 at a real account; they are removed from the environment.
_REAL_AWS = ("AWS_PROFILE", "AWS_DEFAULT_PROFILE", "AWS_SESSION_TOKEN", "AWS_SECURITY_TOKEN",
             "AWS_ROLE_ARN", "AWS_WEB_IDENTITY_TOKEN_FILE", "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
             "AWS_CONTAINER_CREDENTIALS_FULL_URI")


@dataclass
class AwsServer:
    endpoint: str
    region: str
    env: dict[str, str] = field(default_factory=dict)

    def client(self, service: str) -> Any:
        import boto3

        return boto3.client(service, region_name=self.region, endpoint_url=self.endpoint,
                            aws_access_key_id="testing", aws_secret_access_key="testing")

    @contextmanager
    def environment(self) -> Iterator[None]:
        """Set ``env`` in this process (and drop real-AWS variables) for the block."""
        saved = {k: os.environ.get(k) for k in (*self.env, *_REAL_AWS)}
        try:
            for k in _REAL_AWS:
                os.environ.pop(k, None)
            os.environ.update(self.env)
            yield
        finally:
            for k, v in saved.items():
                if v is None:
                    os.environ.pop(k, None)
                else:
                    os.environ[k] = v

    def subprocess_env(self, **extra: str) -> dict[str, str]:
        """The current environment with ``env`` applied, for a console script under test."""
        base = {k: v for k, v in os.environ.items() if k not in _REAL_AWS}
        return {**base, **self.env, **extra}


def aws_env(endpoint: str, region: str, config_dir: Path) -> dict[str, str]:
    """Environment that sends boto3 and the SageMaker SDK to ``endpoint`` only."""
    config = config_dir / "sagemaker-config.yaml"
    config.write_text(SDK_CONFIG)
    missing = str(config_dir / "no-such-aws-file")
    return {
        "AWS_ENDPOINT_URL": endpoint,
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": region,
        "AWS_REGION": region,
        "AWS_CONFIG_FILE": missing,               # ignore ~/.aws of whoever runs the tests
        "AWS_SHARED_CREDENTIALS_FILE": missing,
        "AWS_EC2_METADATA_DISABLED": "true",
        "AWS_MAX_ATTEMPTS": "1",
        "AWS_RETRY_MODE": "standard",
        "SAGEMAKER_VALIDATE_ROLE": "false",
        "SAGEMAKER_USER_CONFIG_OVERRIDE": str(config),
    }


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def moto_server(config_dir: Path, region: str = REGION) -> Iterator[AwsServer]:
    """A running moto server on 127.0.0.1; ``config_dir`` holds the SDK config it writes."""
    from moto.server import ThreadedMotoServer

    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    endpoint = f"http://127.0.0.1:{port}"
    try:
        yield AwsServer(endpoint=endpoint, region=region, env=aws_env(endpoint, region, Path(config_dir)))
    finally:
        server.stop()
