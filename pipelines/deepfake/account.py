"""What a locked-down AWS account asks of every Processing job: its VPC, its KMS keys, its package index.

Service control policies commonly deny ``CreateProcessingJob`` unless the job runs
in the account's VPC or encrypts its volume and outputs with the account's keys, and
a VPC without internet egress has no route to PyPI, where the steps install what the
image lacks. Both pipelines (``pipeline.py``, ``scoring.py``) take these settings as
``get_pipeline`` keyword arguments (``**account``; ``--kwargs`` keys, the same names), checked here once:

- ``subnets`` + ``security_group_ids``: the jobs' ``NetworkConfig.VpcConfig``;
- ``enable_network_isolation``: refused (:data:`NETWORK_ISOLATION_REFUSED`): an isolated
  job has no network at all, and the steps call AWS from inside their jobs (``calls_s3`` names
  a pipeline's S3 calls);
- ``encrypt_inter_container_traffic``: between the instances of a sharded step;
- ``volume_kms_key`` / ``output_kms_key``: the jobs' storage volumes and their
  S3 outputs (the step code the pipeline uploads is encrypted with the output key too);
- ``pip_index_url``: a mirror or proxy of PyPI the jobs can reach, without
  credentials (the URL is written into the pipeline definition);
- ``codeartifact_repository_arn``: a CodeArtifact repository, whose token each job
  fetches when it installs (``run_step.codeartifact_index_url``).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, fields
from typing import Any
from urllib.parse import urlsplit

from deepfake.core.errors import PipelineError
from pipelines.deepfake.run_step import CODEARTIFACT_ARN, CODEARTIFACT_ENV, INDEX_ENV

_SUBNET = re.compile(r"subnet-[0-9a-f]{8,17}")
_SECURITY_GROUP = re.compile(r"sg-[0-9a-f]{8,17}")
_KMS_KEY = re.compile(r"arn:aws[a-z-]*:kms:[a-z0-9-]+:\d{12}:(key|alias)/[\w/.-]+|alias/[\w/.-]+|(mrk-)?[0-9a-f-]{32,36}")
MAX_SUBNETS, MAX_SECURITY_GROUPS = 16, 5      # VpcConfig's limits
# Why a Processing job of these pipelines cannot run network-isolated, and what gives an account the same assurance
# (docs/sagemaker.md, "Locked-down accounts"). Isolation leaves a container only what SageMaker itself copies in and
# out (its ProcessingInputs and Outputs): no S3, SageMaker or CloudWatch API call, no package index.
NETWORK_ISOLATION_REFUSED = (
    "enable_network_isolation leaves a job no network at all, and these steps call AWS from inside their jobs "
    "(S3: listing and reading the data and weights; SageMaker: the scoring step reads the model registry; "
    "CodeArtifact: the index token; MLflow tracking) and install what the image lacks: run the jobs in your VPC "
    "instead (subnets and security_group_ids, no internet route) with VPC endpoints for S3, the SageMaker API, "
    "CloudWatch Logs and CodeArtifact, and the kit's image (processing_image_uri, training_image_uri) so that "
    "nothing installs; see docs/sagemaker.md, Locked-down accounts")


@dataclass(frozen=True)
class AccountSettings:
    """The settings above; the defaults change nothing in the definition."""

    subnets: tuple[str, ...] = ()
    security_group_ids: tuple[str, ...] = ()
    enable_network_isolation: bool = False
    encrypt_inter_container_traffic: bool = False
    volume_kms_key: str | None = None
    output_kms_key: str | None = None
    pip_index_url: str | None = None
    codeartifact_repository_arn: str | None = None

    @classmethod
    def keys(cls) -> tuple[str, ...]:
        """The ``get_pipeline`` keyword arguments these settings come from (``--kwargs`` keys)."""
        return tuple(f.name for f in fields(cls))

    @classmethod
    def from_arguments(cls, *, subnets: Sequence[str] = (), security_group_ids: Sequence[str] = (),
                       calls_s3: Mapping[str, str] | None = None, **settings: Any) -> AccountSettings:
        """Checked settings (``enable_network_isolation`` true is refused, with the reason and what to do);
        ``calls_s3``: step -> what it reads from S3 from inside its job, beyond its input channels, which the
        refusal names."""
        unknown = sorted(set(settings) - set(cls.keys()))
        if unknown:
            raise PipelineError(f"unknown argument(s) {', '.join(unknown)}; a locked-down account's are "
                                f"{', '.join(cls.keys())}")
        problems = [*_id_problems("subnets", subnets, _SUBNET, MAX_SUBNETS),
                    *_id_problems("security_group_ids", security_group_ids, _SECURITY_GROUP, MAX_SECURITY_GROUPS)]
        if bool(subnets) != bool(security_group_ids) and not problems:
            problems.append("subnets and security_group_ids go together: a job in a VPC needs both")
        for name in ("enable_network_isolation", "encrypt_inter_container_traffic"):
            if not isinstance(settings.get(name, False), bool):
                problems.append(f"{name} {settings[name]!r} must be true or false")
        for name in ("volume_kms_key", "output_kms_key"):
            key = settings.get(name)
            if key is not None and (not isinstance(key, str) or not _KMS_KEY.fullmatch(key)):
                problems.append(f"{name} {key!r} is not a KMS key id, key ARN, alias/NAME or alias ARN")
        problems += _index_problems(settings.get("pip_index_url"), settings.get("codeartifact_repository_arn"))
        if settings.get("enable_network_isolation") is True:
            problems.append(NETWORK_ISOLATION_REFUSED + (" (the steps' own S3 calls: " + ", ".join(
                f"{step} {what}" for step, what in calls_s3.items()) + ")" if calls_s3 else ""))
        if problems:
            raise PipelineError("; ".join(problems))
        return cls(subnets=tuple(subnets), security_group_ids=tuple(security_group_ids), **settings)

    def processor_arguments(self) -> dict[str, Any]:
        """Keyword arguments of the SDK's ``Processor``: ``NetworkConfig``, ``VolumeKmsKeyId``, ``KmsKeyId``."""
        from sagemaker.core.network import NetworkConfig

        out: dict[str, Any] = {"volume_kms_key": self.volume_kms_key, "output_kms_key": self.output_kms_key}
        if self.subnets or self.enable_network_isolation or self.encrypt_inter_container_traffic:
            out["network_config"] = NetworkConfig(
                subnets=list(self.subnets) or None, security_group_ids=list(self.security_group_ids) or None,
                enable_network_isolation=self.enable_network_isolation,
                encrypt_inter_container_traffic=self.encrypt_inter_container_traffic)
        return out

    def environment(self) -> dict[str, str]:
        """The jobs' environment for their package index (``run_step.py`` reads it)."""
        if self.codeartifact_repository_arn:
            return {CODEARTIFACT_ENV: self.codeartifact_repository_arn}
        return {INDEX_ENV: self.pip_index_url} if self.pip_index_url else {}

    def s3_put_arguments(self) -> dict[str, str]:
        """``PutObject`` arguments for what the pipeline uploads itself (the step code)."""
        if not self.output_kms_key:
            return {}
        return {"ServerSideEncryption": "aws:kms", "SSEKMSKeyId": self.output_kms_key}


def takes_account_settings(get_pipeline: Callable[..., Any]) -> Callable[..., Any]:
    """Mark a ``get_pipeline`` whose ``**account`` are these settings: ``--kwargs`` checks their names
    (``pipelines._utils.check_kwargs`` reads ``extra_keys``)."""
    get_pipeline.extra_keys = AccountSettings.keys()     # type: ignore[attr-defined]
    return get_pipeline


def _id_problems(name: str, values: Any, pattern: re.Pattern[str], limit: int) -> list[str]:
    if isinstance(values, str) or not isinstance(values, (list, tuple)):
        return [f"{name} {values!r} must be a list, e.g. [\"{pattern.pattern.split('-')[0]}-0123abcd\"]"]
    bad = [v for v in values if not isinstance(v, str) or not pattern.fullmatch(v)]
    if bad:
        return [f"{name}: {', '.join(map(repr, bad))} not of the form {pattern.pattern.split('-')[0]}-0123abcd"]
    return [f"{name} has {len(values)} entries; SageMaker takes at most {limit}"] if len(values) > limit else []


def _index_problems(url: Any, arn: Any) -> list[str]:
    if url is not None and arn is not None:
        return ["pip_index_url and codeartifact_repository_arn name two indexes; give one"]
    if arn is not None and (not isinstance(arn, str) or not CODEARTIFACT_ARN.fullmatch(arn)):
        return [f"codeartifact_repository_arn {arn!r} is not a CodeArtifact repository ARN "
                "(arn:aws:codeartifact:REGION:ACCOUNT:repository/DOMAIN/REPOSITORY)"]
    if url is None:
        return []
    parts = urlsplit(url) if isinstance(url, str) else None
    if parts is None or parts.scheme not in ("http", "https") or not parts.hostname:
        return [f"pip_index_url {url!r} is not an http(s) URL of a package index (https://HOST/.../simple/)"]
    if parts.username or parts.password:
        return ["pip_index_url carries credentials, which the pipeline definition would store for anyone who "
                "may describe the pipeline: for CodeArtifact give codeartifact_repository_arn (each job fetches "
                "a token), for another index let the jobs' network reach it without credentials"]
    return []
