"""The step types the local executor runs, each as SageMaker Pipelines documents it.

- ``Processing``: a Processing job (:mod:`pipelines.local.jobs`), cached per ``CacheConfig``
  (:mod:`pipelines.local.cache`); its properties are its DescribeProcessingJob response.
- ``Condition``: every condition must hold; the ``IfSteps`` run then, else the ``ElseSteps``.
- ``Fail``: the execution fails with the step's ``ErrorMessage``.
- ``RegisterModel`` (``ModelStep`` of ``register()``): ``CreateModelPackage`` with the step's
  arguments against the API, after checking that the S3 objects it names exist.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from deepfake.core.errors import DeepfakeError
from pipelines._utils import job_failure
from pipelines.local.cache import StepCache, cache_key
from pipelines.local.definition import Definition, Step
from pipelines.local.expressions import Scope, condition, evaluate
from pipelines.local.jobs import (
    ALGORITHM_ERROR,
    COMPLETED,
    JobResult,
    job_name,
    local_path,
    log_tail,
    run_job,
)
from pipelines.local.limits import Limits, size_text
from pipelines.local.s3 import Storage, join_uri
from pipelines.local.server import Aws

# SageMaker's statuses of a pipeline execution and of its steps.
SUCCEEDED, FAILED, STOPPED, EXECUTING, NOT_STARTED = "Succeeded", "Failed", "Stopped", "Executing", "NotStarted"


@dataclass
class Context:
    """What every step of one execution shares."""

    definition: Definition
    pipeline: str
    execution_id: str
    scope: Scope
    storage: Storage
    aws: Aws
    folder: Path                                      # this execution's folder (job roots, records)
    cache: StepCache | None                           # None: --no-cache
    account: str = "000000000000"
    limits: Limits = field(default_factory=Limits)    # each instance's volume and memory, as emulated


@dataclass
class Outcome:
    status: str                                       # SUCCEEDED | FAILED
    properties: dict[str, Any] = field(default_factory=dict)
    reason: str = ""
    cached_from: str | None = None                    # the execution whose result was reused
    detail: str = ""                                  # one line for the report
    branch: tuple[str, ...] = ()                      # a condition's chosen steps
    reports: list[dict[str, str]] = field(default_factory=list)   # {"s3": uri, "local": path} of HTML reports


def run_step(step: Step, ctx: Context) -> Outcome:
    runner: Callable[[Step, Context], Outcome] = RUNNERS[step.type]
    try:
        return runner(step, ctx)
    except DeepfakeError as exc:                      # an expression that cannot be evaluated, a bad value
        return Outcome(FAILED, reason=str(exc))


def run_processing(step: Step, ctx: Context) -> Outcome:
    arguments = evaluate(step.arguments, ctx.scope)
    cache = step.spec.get("CacheConfig") or {}
    key = None
    if cache.get("Enabled") and ctx.cache is not None:
        key = cache_key(ctx.pipeline, step.name, step.type, arguments)
        hit = ctx.cache.lookup(ctx.pipeline, step.name, key, cache.get("ExpireAfter"))
        if hit is not None and _outputs_exist(hit["properties"], ctx.storage):
            return Outcome(SUCCEEDED, hit["properties"], cached_from=hit["execution_id"],
                           detail=f"cache hit: execution {hit['execution_id']}", reports=hit.get("reports", []))
    stopping = arguments.get("StoppingCondition") or {}
    result = run_job(arguments, folder=ctx.folder / step.name, storage=ctx.storage, env=ctx.aws.env,
                     timeout_s=stopping.get("MaxRuntimeInSeconds"), limits=ctx.limits)
    properties = _describe(step, arguments, result, ctx)
    reports = _reports(arguments, result)
    count = len(result.instances)
    downloaded = size_text(sum(i.downloaded_bytes for i in result.instances))
    detail = (f"{count} instances, " if count > 1 else "") + f"downloaded {downloaded}" + \
        (f" (at most {size_text(max(i.downloaded_bytes for i in result.instances))} an instance)" if count > 1 else "")
    if result.status != COMPLETED:
        logs = [i for i in result.instances if i.exit_code not in (0, None)] or list(result.instances)
        where = ", ".join(str(i.log) for i in logs)
        lines = job_failure(properties, where)
        if result.failure_reason == ALGORITHM_ERROR and not result.exit_message:
            lines += [f"last lines of {logs[0].log}:", log_tail(logs[0].log)]
        return Outcome(FAILED, properties, reason="\n".join(lines), detail=detail, reports=reports)
    if key is not None and ctx.cache is not None:
        ctx.cache.store(ctx.pipeline, step.name, key, {"execution_id": ctx.execution_id, "properties": properties,
                                                        "reports": reports})
    return Outcome(SUCCEEDED, properties, detail=detail, reports=reports)


def _describe(step: Step, arguments: Mapping[str, Any], result: JobResult, ctx: Context) -> dict[str, Any]:
    """The job's DescribeProcessingJob response: what ``Steps.<name>.*`` reads."""
    name = job_name(ctx.execution_id, step.name, arguments)
    return {
        "ProcessingJobName": name,
        "ProcessingJobArn": f"arn:aws:sagemaker:{ctx.aws.region}:{ctx.account}:processing-job/{name}",
        "ProcessingJobStatus": result.status,
        "ExitMessage": result.exit_message,
        "FailureReason": result.failure_reason,
        **{k: arguments[k] for k in ("AppSpecification", "Environment", "ProcessingInputs", "ProcessingOutputConfig",
                                     "ProcessingResources", "RoleArn", "StoppingCondition", "NetworkConfig")
           if k in arguments},
        "LocalInstances": [{"host": i.host, "root": str(i.root), "exit_code": i.exit_code, "log": str(i.log),
                            "inputs": i.inputs, "downloaded_bytes": i.downloaded, "peak_disk_bytes": i.peak_disk,
                            "peak_memory_bytes": i.peak_memory} for i in result.instances],
    }


def _reports(arguments: Mapping[str, Any], result: JobResult) -> list[dict[str, str]]:
    """The job's reports, with their S3 URIs: every HTML file of its outputs, and Markdown at their top."""
    found = []
    for out in arguments.get("ProcessingOutputConfig", {}).get("Outputs", []):
        for instance in result.instances:
            folder = local_path(instance.root, out["S3Output"]["LocalPath"])
            for report in sorted([*folder.rglob("*.html"), *folder.glob("*.md")]):
                found.append({"s3": join_uri(out["S3Output"]["S3Uri"], report.relative_to(folder).as_posix()),
                              "local": str(report)})
    return found


def _outputs_exist(properties: Mapping[str, Any], storage: Storage) -> bool:
    """A cached step is reused only while what it wrote is still in S3."""
    outputs = properties.get("ProcessingOutputConfig", {}).get("Outputs", [])
    return all(storage.list(o["S3Output"]["S3Uri"]) for o in outputs)


def run_condition(step: Step, ctx: Context) -> Outcome:
    conditions = step.arguments.get("Conditions", [])
    holds = all(condition(c, ctx.scope) for c in conditions)
    branch = "IfSteps" if holds else "ElseSteps"
    names = tuple(s["Name"] for s in step.arguments.get(branch, []))
    compared = "; ".join(f"{evaluate(c['LeftValue'], ctx.scope)!r} {c['Type']} {evaluate(c['RightValue'], ctx.scope)!r}"
                         for c in conditions if "LeftValue" in c)
    return Outcome(SUCCEEDED, {"Outcome": holds}, branch=names,
                   detail=f"{compared + ': ' if compared else ''}{holds}, {branch} {', '.join(names) or '(none)'}")


def run_fail(step: Step, ctx: Context) -> Outcome:
    message = evaluate(step.arguments.get("ErrorMessage", ""), ctx.scope)
    return Outcome(FAILED, {"ErrorMessage": message}, reason=str(message))


def run_register(step: Step, ctx: Context) -> Outcome:
    from botocore.exceptions import BotoCoreError, ClientError, ParamValidationError

    request = evaluate(step.arguments, ctx.scope)
    missing = [uri for uri in _s3_uris(request) if not ctx.storage.exists(uri)]
    if missing:
        return Outcome(FAILED, reason=f"the model package names S3 objects that do not exist: {', '.join(missing)}")
    sm = ctx.aws.client("sagemaker")
    try:
        arn = sm.create_model_package(**request)["ModelPackageArn"]
        described = sm.describe_model_package(ModelPackageName=arn)
    except (ClientError, BotoCoreError, ParamValidationError) as exc:
        return Outcome(FAILED, reason=f"CreateModelPackage failed: {exc}")
    properties = {k: (v.isoformat() if isinstance(v, datetime) else v) for k, v in described.items()
                  if k != "ResponseMetadata"}
    status = properties.get("ModelApprovalStatus", "")
    return Outcome(SUCCEEDED, properties, detail=f"{arn} ({status})")


def _s3_uris(value: Any) -> list[str]:
    """The S3 objects a registration names: model data and metric files."""
    found: list[str] = []
    if isinstance(value, dict):
        for k, v in value.items():
            if k in ("ModelDataUrl", "S3Uri") and isinstance(v, str) and v.startswith("s3://"):
                found.append(v)
            else:
                found += _s3_uris(v)
    elif isinstance(value, list):
        for v in value:
            found += _s3_uris(v)
    return found


RUNNERS: Mapping[str, Callable[[Step, Context], Outcome]] = {
    "Processing": run_processing, "Condition": run_condition, "Fail": run_fail, "RegisterModel": run_register,
}


def now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")
