"""One execution of a pipeline definition: its steps in dependency order, their statuses, its record.

Steps run one at a time, each once every step it depends on (``DependsOn``
and the steps whose properties it reads) has succeeded; SageMaker may run
independent steps side by side, which changes nothing but the wall time.
A ConditionStep makes the steps of its chosen branch runnable; the other
branch never runs. When a step fails no further step starts and the execution
fails: with the FailStep's message, or with the failed step's reason.
Everything is recorded in ``<folder>/execution.json``.
"""

from __future__ import annotations

import re
import secrets
import string
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from deepfake.core.errors import PipelineError
from deepfake.core.files import write_json
from pipelines.local.cache import StepCache
from pipelines.local.definition import Definition
from pipelines.local.expressions import ExpressionError, Scope
from pipelines.local.limits import Limits
from pipelines.local.s3 import Storage, join_uri
from pipelines.local.server import Aws
from pipelines.local.steps import (
    EXECUTING,
    FAILED,
    NOT_STARTED,
    STOPPED,
    SUCCEEDED,
    Context,
    Outcome,
    run_step,
)

RECORD = "execution.json"


@dataclass
class StepRecord:
    name: str
    type: str
    status: str = NOT_STARTED
    seconds: float = 0.0
    reason: str = ""
    cached_from: str | None = None
    detail: str = ""
    reports: list[dict[str, str]] = field(default_factory=list)
    properties: dict[str, Any] = field(default_factory=dict)


@dataclass
class Execution:
    id: str
    arn: str
    pipeline: str
    parameters: Mapping[str, Any]
    folder: Path
    status: str = EXECUTING
    reason: str = ""
    seconds: float = 0.0
    steps: dict[str, StepRecord] = field(default_factory=dict)


def new_execution_id() -> str:
    """Twelve lowercase letters and digits, as SageMaker names executions."""
    return "".join(secrets.choice(string.ascii_lowercase + string.digits) for _ in range(12))


def execute(definition: Definition, *, pipeline: str, parameters: Mapping[str, Any], aws: Aws, storage: Storage,
            folder: Path, cache: StepCache | None, execution_id: str | None = None, stop_after: str | None = None,
            say: Callable[[str], None] | None = None, limits: Limits | None = None) -> Execution:
    """Run the definition's steps; returns the finished execution (also written to ``folder/execution.json``).

    ``stop_after``: end the execution (status Stopped) once that step succeeded.
    """
    say = say or _say
    if stop_after is not None and stop_after not in definition.steps:
        raise PipelineError(f"--stop-after {stop_after}: no such step; steps: {', '.join(definition.steps)}")
    started = time.perf_counter()
    execution_id = execution_id or new_execution_id()
    account = _account(definition)
    arn = f"arn:aws:sagemaker:{aws.region}:{account}:pipeline/{pipeline.lower()}/execution/{execution_id}"
    folder = folder / execution_id
    execution = Execution(execution_id, arn, pipeline, dict(parameters), folder,
                          steps={n: StepRecord(n, s.type) for n, s in definition.steps.items()})
    now = datetime.now(timezone.utc).isoformat(timespec="seconds")
    scope = Scope(parameters=parameters, read_json=storage.read_json, execution={
        "PipelineExecutionId": execution_id, "PipelineExecutionArn": arn, "PipelineName": pipeline,
        "PipelineArn": f"arn:aws:sagemaker:{aws.region}:{account}:pipeline/{pipeline.lower()}",
        "StartDateTime": now, "CurrentDateTime": now})
    scope.property_file = _property_files(definition, scope, storage)
    ctx = Context(definition, pipeline, execution_id, scope, storage, aws, folder, cache, account, limits or Limits())
    runnable = set(definition.top_level())
    say(f"execution {execution_id} of {pipeline}: {len(runnable)} top-level steps, folder {folder}")
    while (name := _next_step(definition, execution, runnable)) is not None:
        record = execution.steps[name]
        say(f"  {name} ({record.type}) ...")
        step_started = time.perf_counter()
        outcome = run_step(definition.steps[name], ctx)
        _record(record, outcome, time.perf_counter() - step_started)
        if outcome.status == SUCCEEDED:
            scope.properties[name] = outcome.properties
        runnable |= set(outcome.branch)
        say(f"  {name}: {record.status} in {record.seconds:.1f}s" + (f"  {record.detail}" if record.detail else ""))
        if outcome.status != SUCCEEDED:
            execution.status = FAILED
            if record.type == "Fail":
                execution.reason = outcome.reason
            else:                                     # the step's record has the whole story; one line here
                first = (outcome.properties.get("ExitMessage") or outcome.reason).strip().splitlines() or [""]
                execution.reason = f"step {name} failed: {first[0]}"
            break
        if name == stop_after:
            execution.status, execution.reason = STOPPED, f"stopped after step {name} (--stop-after)"
            break
    else:
        execution.status = SUCCEEDED
    execution.seconds = round(time.perf_counter() - started, 1)
    write_json(folder / RECORD, asdict(execution))
    return execution


def _next_step(definition: Definition, execution: Execution, runnable: set[str]) -> str | None:
    for name, step in definition.steps.items():
        record = execution.steps[name]
        if name in runnable and record.status == NOT_STARTED and all(
                execution.steps[d].status == SUCCEEDED for d in step.depends_on if d in execution.steps):
            return name
    return None


def _record(record: StepRecord, outcome: Outcome, seconds: float) -> None:
    record.status = outcome.status
    record.seconds = round(seconds, 1)
    record.reason = outcome.reason
    record.cached_from = outcome.cached_from
    record.detail = outcome.detail
    record.reports = outcome.reports
    record.properties = outcome.properties


def _property_files(definition: Definition, scope: Scope, storage: Storage) -> Callable[[str, str], Any]:
    """Reads a step's PropertyFile from the S3 output it names (once per execution)."""
    loaded: dict[tuple[str, str], Any] = {}

    def read(step: str, name: str) -> Any:
        if (step, name) in loaded:
            return loaded[(step, name)]
        specs = [p for p in definition.steps[step].spec.get("PropertyFiles", []) if p.get("PropertyFileName") == name]
        if not specs:
            raise ExpressionError(f"step {step} declares no property file {name!r}")
        if step not in scope.properties:
            raise ExpressionError(f"property file {name} of step {step}: the step has not run")
        outputs = scope.properties[step].get("ProcessingOutputConfig", {}).get("Outputs", [])
        match = [o for o in outputs if o["OutputName"] == specs[0]["OutputName"]]
        if not match:
            raise ExpressionError(f"property file {name} of step {step}: no output {specs[0]['OutputName']!r}")
        loaded[(step, name)] = storage.read_json(join_uri(match[0]["S3Output"]["S3Uri"], specs[0]["FilePath"]))
        return loaded[(step, name)]

    return read


def _say(text: str) -> None:
    print(text, flush=True)                           # progress, also when stdout is a file


def _account(definition: Definition) -> str:
    found = re.search(r"arn:aws[a-z-]*:iam::(\d{12}):role/", str(definition.raw))
    return found.group(1) if found else "000000000000"


def report(execution: Execution) -> str:
    """The table printed at the end: each step's status, duration and detail, then where the reports are."""
    lines = [f"execution {execution.id}: {execution.status} in {execution.seconds:.1f}s  ({execution.folder})"]
    if execution.reason:
        lines.append(f"  reason: {execution.reason}")
    width = max(len(n) for n in execution.steps)
    for record in execution.steps.values():
        status = "not run" if record.status == NOT_STARTED else record.status
        cached = f"  (cached from {record.cached_from})" if record.cached_from else ""
        detail = f"  {record.detail}" if record.detail and not record.cached_from else ""
        lines.append(f"  {record.name:<{width}}  {status:<9}  {record.seconds:>7.1f}s{cached}{detail}")
        if record.status == FAILED and record.reason:
            lines += [f"      {line}" for line in record.reason.splitlines()[:20]]
    reports = [(r.name, rep) for r in execution.steps.values() for rep in r.reports]
    if reports:
        lines.append("reports:")
        lines += [f"  {name:<{width}}  {rep['s3']}\n  {'':<{width}}  {rep['local']}" for name, rep in reports]
    return "\n".join(lines)
