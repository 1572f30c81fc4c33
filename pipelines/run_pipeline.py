"""``run-pipeline``: print the definition, upsert the pipeline, start it, report the execution.

The SageMaker project template's interface (``--module-name``, ``--role-arn``,
``--tags``, ``--kwargs``, ``--description``) plus ``--wait``, which follows the
execution to its end, prints each step as its status changes, and exits 1 with the
failure reason when it fails, so a CodeBuild build fails with the pipeline.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Sequence
from typing import Any

from deepfake.core.errors import PipelineError
from pipelines._utils import (
    EXIT_FAILED,
    get_pipeline_custom_tags,
    job_failure,
    load_module,
    main_guard,
    parse_kwargs,
    parse_tags,
    pipeline_arguments,
    prepare_sdk,
    resolve_role,
)

TERMINAL = ("Succeeded", "Failed", "Stopped")
PROCESSING_LOG_GROUP = "/aws/sagemaker/ProcessingJobs"    # where SageMaker sends a Processing job's log
POLL_S = 30                      # seconds between two DescribePipelineExecution calls


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="run-pipeline", description=__doc__.split("\n\n")[0])
    parser.add_argument("-n", "--module-name", required=True,
                        help="module whose get_pipeline builds the pipeline, e.g. pipelines.deepfake.pipeline")
    parser.add_argument("-role-arn", "--role-arn", default=None,
                        help="IAM role the pipeline and its steps run as (or role in --kwargs)")
    parser.add_argument("-tags", "--tags", default=None,
                        help='JSON list of tags: [{"Key": "k", "Value": "v"}]')
    parser.add_argument("-kwargs", "--kwargs", action="append", default=None,
                        help='JSON object of get_pipeline arguments: {"region": ..., "default_bucket": ...}; '
                             "repeatable, merged in order (a later key wins)")
    parser.add_argument("-description", "--description", default=None, help="pipeline description")
    parser.add_argument("--parameters", default=None,
                        help='JSON object of pipeline parameters for this execution, e.g. {"Epochs": 2}')
    parser.add_argument("--plan", action="store_true",
                        help="only plan the run: list the data (no download), print each step's download, instances, "
                             "volume, time and cost; exit 1 when a step cannot fit (nothing is upserted or started)")
    parser.add_argument("--wait", action="store_true", help="follow the execution until it ends")
    parser.add_argument("--poll", type=float, default=POLL_S, help="seconds between status checks (--wait)")
    parser.add_argument("--timeout", type=float, default=0,
                        help="give up waiting after this many seconds; 0 waits as long as it runs")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return main_guard("run-pipeline", lambda: run(args))


def run(args: argparse.Namespace) -> int:
    kwargs = parse_kwargs(args.kwargs)
    tags = parse_tags(args.tags)
    overrides = _parse_parameters(args.parameters)
    role = resolve_role(kwargs, args.role_arn)
    kwargs["region"] = prepare_sdk(kwargs.get("region"))
    module = load_module(args.module_name)
    if args.plan and kwargs.get("default_bucket"):
        kwargs.setdefault("upload_code", False)                # a plan uploads nothing
    pipeline = module.get_pipeline(**pipeline_arguments(module, kwargs))
    _check_overrides(overrides, pipeline)
    if args.plan:
        return plan(pipeline, overrides)

    _say("###### Creating/updating a SageMaker Pipeline with the following definition:")
    _say(json.dumps(json.loads(pipeline.definition()), indent=2, sort_keys=True))
    all_tags = get_pipeline_custom_tags(args.module_name, kwargs, tags)
    response = pipeline.upsert(role_arn=role, description=args.description, tags=all_tags or None)
    _say(f"\n###### Created/updated pipeline {pipeline.name}: {response.get('PipelineArn')}")

    execution = pipeline.start(parameters=overrides or None)
    _say(f"###### Execution started: {execution.arn}")
    if not args.wait:
        return 0
    client = pipeline.sagemaker_session.sagemaker_client
    final = wait_for_execution(client, execution.arn, poll_s=args.poll, timeout_s=args.timeout)
    return report(client, final)


def plan(pipeline: Any, overrides: dict[str, Any]) -> int:
    """Print the run's plan (:mod:`pipelines.deepfake.plan`); 1 when a step cannot fit."""
    from pipelines.deepfake.plan import data_shape, definition_settings, format_plan, plan_run, refusals

    definition = json.loads(pipeline.definition())
    defaults = {p["Name"]: p.get("DefaultValue") for p in definition["Parameters"]}
    data = overrides.get("InputDataUrl", defaults.get("InputDataUrl"))
    _say(f"listing {data} (nothing is downloaded but the catalog's index files) ...")
    shape = data_shape(str(data))
    plans = plan_run(shape, definition_settings(definition, overrides))
    _say(format_plan(shape, plans))
    return EXIT_FAILED if refusals(plans) else 0


def wait_for_execution(client: Any, arn: str, *, poll_s: float = POLL_S, timeout_s: float = 0) -> dict[str, Any]:
    """Poll until the execution ends, printing status changes of the execution and its steps."""
    deadline = time.monotonic() + timeout_s if timeout_s > 0 else None
    last_status, step_status = None, {}
    steps_ok = True
    while True:
        described = client.describe_pipeline_execution(PipelineExecutionArn=arn)
        status = described["PipelineExecutionStatus"]
        if steps_ok:
            steps_ok = _print_step_changes(client, arn, step_status)
        if status != last_status:
            _say(f"execution {status}")
            last_status = status
        if status in TERMINAL:
            return described
        if deadline is not None and time.monotonic() + poll_s > deadline:
            raise PipelineError(f"execution {arn} is still {status} after {timeout_s:.0f}s (--timeout); "
                                "it keeps running in SageMaker")
        time.sleep(poll_s)


def report(client: Any, described: dict[str, Any]) -> int:
    """The outcome in a few lines; exit 0 only when the execution succeeded."""
    status = described["PipelineExecutionStatus"]
    _say(f"###### Execution {status}: {described['PipelineExecutionArn']}")
    if status == "Succeeded":
        return 0
    reason = described.get("FailureReason") or "(no reason given)"
    _say(f"failure reason: {reason}")
    try:
        steps = list_steps(client, described["PipelineExecutionArn"])
    except _aws_errors() as exc:
        _say(f"step details unavailable: {_brief(exc)}")
        return EXIT_FAILED
    for step in steps:
        if step.get("StepStatus") in ("Failed", "Stopped"):
            _say(f"step {step['StepName']} {step['StepStatus']}: {step.get('FailureReason', '(no reason given)')}")
            job = step.get("Metadata", {}).get("ProcessingJob", {}).get("Arn")
            if job:
                for line in processing_job_failure(client, job):
                    _say(f"  {line}")
    return EXIT_FAILED


def processing_job_failure(client: Any, arn: str) -> list[str]:
    """What a failed step's Processing job says: its exit message holds the failing cell and error, which the
    step's own FailureReason ("AlgorithmError: See job logs for more information") does not."""
    name = arn.rsplit("/", 1)[-1]
    try:
        described = client.describe_processing_job(ProcessingJobName=name)
    except _aws_errors() as exc:
        return [f"processing job {name}: cannot describe it: {_brief(exc)}"]
    return job_failure(described, f"CloudWatch Logs group {PROCESSING_LOG_GROUP}, log streams {name}/algo-*")


def list_steps(client: Any, arn: str) -> list[dict[str, Any]]:
    steps, token = [], None
    while True:
        page = client.list_pipeline_execution_steps(PipelineExecutionArn=arn, SortOrder="Ascending",
                                                    **({"NextToken": token} if token else {}))
        steps += page.get("PipelineExecutionSteps", [])
        token = page.get("NextToken")
        if not token:
            return steps


def _print_step_changes(client: Any, arn: str, seen: dict[str, str]) -> bool:
    """Print steps whose status changed; False once the service cannot list them."""
    try:
        steps = list_steps(client, arn)
    except _aws_errors() as exc:
        _say(f"(step progress unavailable: {_brief(exc)})")
        return False
    for step in steps:
        name, status = step["StepName"], step.get("StepStatus", "?")
        if seen.get(name) != status:
            seen[name] = status
            cached = " (cached)" if step.get("CacheHitResult") else ""
            _say(f"  step {name}: {status}{cached}")
    return True


def _parse_parameters(text: str | None) -> dict[str, Any]:
    if not text:
        return {}
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise PipelineError(f"--parameters is not valid JSON ({exc.msg} at character {exc.pos}): {text}") from None
    if not isinstance(value, dict):
        raise PipelineError(f'--parameters must be a JSON object such as {{"Epochs": 2}}; got {text}')
    return value


def _check_overrides(overrides: dict[str, Any], pipeline: Any) -> None:
    known = [p.name for p in pipeline.parameters]
    unknown = sorted(set(overrides) - set(known))
    if unknown:
        raise PipelineError(f"--parameters has unknown name(s) {', '.join(unknown)}; "
                            f"the pipeline's parameters: {', '.join(known)}")


def _aws_errors() -> tuple[type[BaseException], ...]:
    from botocore.exceptions import BotoCoreError, ClientError

    return (ClientError, BotoCoreError)


def _brief(exc: BaseException, limit: int = 200) -> str:
    """An AWS error in one short line (some services answer with a whole HTML page)."""
    text = " ".join(str(exc).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _say(text: str) -> None:
    print(text, flush=True)


if __name__ == "__main__":
    sys.exit(main())
