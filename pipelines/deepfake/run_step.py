"""Entry point of every SageMaker Processing step: run one notebook of the kit.

The pipeline starts ``python3 run_step.py --step NAME --param KEY VALUE ...`` in an
AWS PyTorch framework image or the kit's own image built on it (``infra/image/Dockerfile``),
from the code input that holds this file, the requirements, their lock and the kit
(see ``bundle.py``). This script installs what the image lacks, and nothing when the
image already holds it: an image whose manifest (``DEEPFAKE_IMAGE_MANIFEST``) records the
same requirements lock and the same kit files installs nothing and says so; the same lock
with other kit files installs the shipped kit only; anything else (the AWS image) installs
the requirements, pinned by the lock, and the kit, never the image's own torch or numpy.
It then runs the step's notebook through ``deepfake.orchestration.notebook.run_notebook``,
the same call the local runner makes: parameters arrive as strings and are typed by
the notebook's parameters cell, the executed notebook and its HTML report land in
the report output even when a cell fails, and a failure exits non-zero so the step
and the pipeline fail, with the reason in the job's exit message: the failing cell
and error, and the S3 URIs of the executed notebook and its report, in at most the
1 KB SageMaker keeps (``DescribeProcessingJob``'s ``ExitMessage``; ``run-pipeline``
prints it under the step's generic failure reason).

Packages come from pip's index: PyPI, a mirror named by ``PIP_INDEX_URL`` in the
job's environment, or a CodeArtifact repository (``DEEPFAKE_CODEARTIFACT_REPOSITORY``,
its ARN: a token is fetched here for the install, never written into the pipeline
definition). The kit itself installs without build isolation, with the image's
setuptools: an isolated build would fetch setuptools from the index too.

Only the standard library is imported before the install.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib
import importlib.util
import json
import logging
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from types import ModuleType
from typing import Any
from urllib.parse import quote

log = logging.getLogger("run_step")

HERE = Path(__file__).resolve().parent
KIT = HERE / "kit"                                   # bundle.KIT_DIR
REQUIREMENTS = HERE / "requirements.txt"             # bundle.REQUIREMENTS
LOCK = HERE / "requirements.lock"                    # bundle.LOCK: infra/image/requirements.lock
MARKER = HERE / "BUNDLE.json"                        # bundle.MARKER: the code's sha256 and git commit
KEEP = ("torch", "numpy")                            # the image's builds; pip must not replace them
EXIT_MESSAGE_LIMIT = 1024                            # bytes SageMaker keeps of the exit message
# What the kit's image holds (written by infra/image/Dockerfile): its kit files and requirements lock.
IMAGE_MANIFEST_ENV = "DEEPFAKE_IMAGE_MANIFEST"
IMAGE_MANIFEST = "/opt/deepfake/image.json"
KIT_PACKAGE = ("src", "deepfake")                   # the package inside the shipped kit
ELLIPSIS = "…"                                       # marks where a long error was shortened
INDEX_ENV = "PIP_INDEX_URL"                          # pip's own setting: the index packages come from
CODEARTIFACT_ENV = "DEEPFAKE_CODEARTIFACT_REPOSITORY"   # a CodeArtifact repository's ARN: its pypi endpoint
CODEARTIFACT_ARN = re.compile(r"arn:aws[a-z-]*:codeartifact:([a-z0-9-]+):(\d{12}):repository/"
                              r"([a-z][a-z0-9-]{1,49})/([A-Za-z0-9][A-Za-z0-9._-]{1,99})")
TOKEN_SECONDS = 3600                                 # the CodeArtifact token lives as long as the install may

# Exit codes: 0 done, 1 the notebook failed, 2 bad step or parameters, 3 install failed.
EXIT_NOTEBOOK, EXIT_CONFIG, EXIT_INSTALL = 1, 2, 3


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="run_step.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("--step", required=True, help="a step name of deepfake.orchestration.steps.STEPS")
    parser.add_argument("--param", nargs=2, action="append", default=[], metavar=("NAME", "VALUE"),
                        help="a notebook parameter, typed by the notebook's parameters cell")
    parser.add_argument("--report-dir", required=True, type=Path,
                        help="where the executed notebook and its HTML report go")
    parser.add_argument("--shard-param", default=None, metavar="NAME",
                        help="pass this instance's host name (its shard of the input) as parameter NAME")
    parser.add_argument("--notebooks-dir", type=Path, default=KIT / "notebooks",
                        help="folder holding the step notebooks (default: the shipped ones)")
    parser.add_argument("--no-install", dest="install", action="store_false",
                        help="use the kit already installed (local runs and tests)")
    parser.add_argument("--restore", action="append", default=[], metavar="FOLDER=S3URI",
                        help="first download what S3URI holds into FOLDER, if anything (a checkpoint to resume)")
    parser.add_argument("--tracking-uri", default=None, metavar="URI",
                        help="MLflow tracking URI of the notebook's run (a SageMaker MLflow tracking server's "
                             "ARN); empty: no tracking; not given: MLFLOW_TRACKING_URI as it is")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    return start(f"step {args.step}", args.install) or run(args)


class InstallError(Exception):
    """The step's packages cannot be installed (raised before the kit, and its errors, are importable)."""


def start(what: str, install_kit: bool) -> int:
    """Log to stdout (the job's log) and install the shipped kit and its requirements when asked:
    0, or the failure reported for ``what`` and its exit code."""
    logging.basicConfig(level=logging.INFO, stream=sys.stdout,
                        format="%(asctime)s %(name)s %(levelname)s %(message)s")
    if not install_kit:
        return 0
    plan = install_plan(HERE)
    log.info("%s", plan.reason)
    try:
        install(KIT, REQUIREMENTS, plan)
    except InstallError as exc:
        return fail(f"{what}: {exc}", EXIT_INSTALL)
    except subprocess.CalledProcessError as exc:
        return fail(f"{what}: pip install failed (exit {exc.returncode}): {' '.join(exc.cmd[3:])}; "
                    f"packages come from {index_name()}: a job with no route to it (a VPC without a NAT "
                    "gateway or an endpoint of the index) fails here; give get_pipeline pip_index_url or "
                    "codeartifact_repository_arn (docs/sagemaker.md, locked-down accounts)", EXIT_INSTALL)
    return 0


def run(args: argparse.Namespace) -> int:
    from deepfake.core.errors import DeepfakeError, NotebookError
    from deepfake.orchestration import steps
    from deepfake.orchestration.notebook import run_notebook

    params = dict(args.param)
    report_dir = args.report_dir
    try:
        step = steps.step(args.step)
        if args.shard_param:
            params[args.shard_param] = current_host()
            report_dir = args.report_dir / params[args.shard_param]     # each instance's report under its own keys
        if args.tracking_uri is not None:
            track(args.tracking_uri, args.report_dir, params.get("data_dir"))
        for item in args.restore:
            restore(item)
        log.info("step %s: %s with %s", step.name, step.notebook, json.dumps(params, sort_keys=True))
        started = time.perf_counter()
        result = run_notebook(args.notebooks_dir / step.notebook, report_dir, params, step=step.name,
                              hide_code=step.hide_code, log_output=True)
    except NotebookError as exc:
        return fail(str(exc), EXIT_NOTEBOOK)
    except DeepfakeError as exc:
        return fail(f"step {args.step}: {exc}", EXIT_CONFIG)
    log.info("step %s done in %.0fs: %s, %s", step.name, time.perf_counter() - started, result.executed,
             result.html)
    return 0


def restore(item: str) -> int:
    """``FOLDER=S3URI``: download every object under S3URI into FOLDER (an earlier run's checkpoint, written
    there through a Continuous output); nothing there is fine. Returns how many objects."""
    import boto3

    from deepfake.core.errors import ConfigError
    from deepfake.core.paths import split_s3

    folder, sep, uri = item.partition("=")
    if not sep or not uri.startswith("s3://"):
        raise ConfigError(f"--restore {item!r} is not FOLDER=s3://bucket/prefix")
    from botocore.exceptions import BotoCoreError, ClientError

    bucket, prefix = split_s3(uri.rstrip("/") + "/")
    s3 = boto3.client("s3")
    count = 0
    try:
        for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
            for obj in page.get("Contents", []):
                target = Path(folder) / obj["Key"][len(prefix):]
                target.parent.mkdir(parents=True, exist_ok=True)
                s3.download_file(bucket, obj["Key"], str(target))
                count += 1
    except (BotoCoreError, ClientError) as exc:
        raise ConfigError(f"--restore: cannot read {uri}: {exc}") from None
    log.info("restored %d object(s) of %s into %s", count, uri, folder)
    return count


@dataclass(frozen=True)
class InstallPlan:
    requirements: bool           # pip-install requirements.txt, pinned by the lock
    kit: bool                    # pip-install the shipped kit (no dependencies)
    reason: str                  # one line for the job's log


def install_plan(code_dir: Path, manifest: Path | None = None) -> InstallPlan:
    """What this container lacks to run the code in ``code_dir``: nothing when its image's manifest
    records the bundle's requirements lock and every kit file the bundle ships."""
    path = manifest or Path(os.environ.get(IMAGE_MANIFEST_ENV) or IMAGE_MANIFEST)
    try:
        image = json.loads(path.read_text(encoding="utf-8"))
        have_lock, have_kit, version = image["requirements_sha256"], image["kit_files"], image["kit_version"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        detail = "none" if isinstance(exc, FileNotFoundError) else f"unreadable ({type(exc).__name__}: {exc})"
        return InstallPlan(True, True, f"kit image manifest {path}: {detail}; installing the requirements "
                                       "(pinned by requirements.lock) and the shipped kit")
    lock = code_dir / LOCK.name
    want_lock = file_sha256(lock) if lock.is_file() else "(no requirements.lock shipped)"
    if have_lock != want_lock:
        return InstallPlan(True, True, f"the image was built with requirements lock {have_lock[:12]}, the step ships "
                                       f"{want_lock[:12]}; installing the requirements and the shipped kit")
    shipped = kit_files(code_dir.joinpath(KIT.name, *KIT_PACKAGE))
    changed = sorted(name for name, digest in shipped.items() if have_kit.get(name) != digest)
    if changed:
        return InstallPlan(False, True, f"the image holds kit {version} with the step's requirements lock "
                                        f"{want_lock[:12]}, but {len(changed)} of the {len(shipped)} kit files the step "
                                        f"ships differ ({', '.join(changed[:3])}{', ...' if len(changed) > 3 else ''}); "
                                        "installing the shipped kit only")
    return InstallPlan(False, False, f"the image holds kit {version}, requirements lock {want_lock[:12]} and the "
                                     f"{len(shipped)} kit files the step ships: nothing to install")


def image_manifest(lock: Path, package: Path, version: str) -> dict[str, object]:
    """What an image holds, for :func:`install_plan`: written into the image by infra/image/Dockerfile."""
    return {"kit_version": version, "requirements_sha256": file_sha256(lock), "kit_files": kit_files(package)}


def kit_files(package: Path) -> dict[str, str]:
    """sha256 of every file of the ``deepfake`` package under ``package`` (caches left out)."""
    if not package.is_dir():
        return {}
    return {p.relative_to(package).as_posix(): file_sha256(p) for p in sorted(package.rglob("*"))
            if p.is_file() and "__pycache__" not in p.parts and p.suffix != ".pyc"}


def file_sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def install(kit: Path, requirements: Path, plan: InstallPlan | None = None) -> None:
    """pip-install what ``plan`` says the image lacks: the requirements (pinned by the lock), then the
    shipped kit without its dependencies."""
    plan = plan or InstallPlan(True, True, "")
    if not (plan.requirements or plan.kit):
        return
    started = time.perf_counter()
    index = index_environment()
    log.info("installing from %s", index_name(index.get(INDEX_ENV)))
    if plan.requirements:
        install_requirements(requirements, env=index)
    if plan.kit:
        install_kit(kit, env=index)
    importlib.invalidate_caches()                        # this process imports the kit next
    log.info("installed %s in %.0fs", "the requirements and the kit" if plan.requirements else "the kit",
             time.perf_counter() - started)


def install_requirements(requirements: Path, env: dict[str, str] | None = None) -> None:
    """``requirements.txt`` constrained by the lock (less the image's torch and numpy) and the image's own
    torch and numpy: what a step installs is what the lock pins, which CI tests."""
    keep = {name.lower() for name in KEEP}
    locked = []
    if LOCK.is_file():
        locked = [line.strip() for line in LOCK.read_text(encoding="utf-8").splitlines()
                  if line.strip() and not line.lstrip().startswith("#")
                  and line.split("==")[0].strip().lower() not in keep]
    with tempfile.TemporaryDirectory(prefix="deepfake-install-") as tmp:
        constraints = Path(tmp) / "constraints.txt"
        constraints.write_text("".join(f"{line}\n" for line in [*pinned_constraints(), *locked]))
        _pip("-r", str(requirements), "-c", str(constraints), env=env)


def install_kit(kit: Path, *pip_args: str, env: dict[str, str] | None = None) -> None:
    """``pip install --no-deps --no-build-isolation`` of a copy (the input mount may be read-only and pip
    builds in place): the image's setuptools builds it, none is fetched from the index."""
    with tempfile.TemporaryDirectory(prefix="deepfake-kit-") as tmp:
        source = Path(tmp) / "kit"
        shutil.copytree(kit, source)
        _pip("--no-deps", "--no-build-isolation", *pip_args, str(source), env=env)


def _pip(*args: str, env: dict[str, str] | None = None) -> None:
    cmd = [sys.executable, "-m", "pip", "install", "--no-input", "--disable-pip-version-check", *args]
    subprocess.run(cmd, check=True, env={**os.environ, "PIP_ROOT_USER_ACTION": "ignore", **(env or {})})


def index_environment() -> dict[str, str]:
    """pip's index for this install: a CodeArtifact repository's endpoint with a fresh token when the job
    names one (``DEEPFAKE_CODEARTIFACT_REPOSITORY``), else nothing to add (``PIP_INDEX_URL`` or PyPI)."""
    arn = os.environ.get(CODEARTIFACT_ENV, "").strip()
    return {INDEX_ENV: codeartifact_index_url(arn)} if arn else {}


def codeartifact_index_url(arn: str, client: Any = None) -> str:
    """The pip index URL of the CodeArtifact repository ``arn``, with an authorization token in it
    (what ``aws codeartifact login --tool pip`` writes into pip's configuration)."""
    match = CODEARTIFACT_ARN.fullmatch(arn)
    if match is None:
        raise InstallError(f"{CODEARTIFACT_ENV}={arn!r} is not a CodeArtifact repository ARN "
                           "(arn:aws:codeartifact:REGION:ACCOUNT:repository/DOMAIN/REPOSITORY)")
    region, owner, domain, repository = match.groups()
    try:
        from botocore.exceptions import BotoCoreError, ClientError
    except ImportError:
        raise InstallError(f"{CODEARTIFACT_ENV} needs boto3 in the image (the AWS framework images have it)") from None
    try:
        if client is None:
            import boto3

            client = boto3.client("codeartifact", region_name=region)
        token = client.get_authorization_token(domain=domain, domainOwner=owner,
                                               durationSeconds=TOKEN_SECONDS)["authorizationToken"]
        endpoint = client.get_repository_endpoint(domain=domain, domainOwner=owner, repository=repository,
                                                  format="pypi")["repositoryEndpoint"]
    except (BotoCoreError, ClientError) as exc:
        raise InstallError(
            f"cannot read CodeArtifact repository {arn}: {exc}; the job's role needs codeartifact:"
            "GetAuthorizationToken, GetRepositoryEndpoint and ReadFromRepository, and sts:GetServiceBearerToken; "
            f"a job in a VPC needs its endpoints com.amazonaws.{region}.codeartifact.api and "
            f"com.amazonaws.{region}.codeartifact.repositories") from None
    scheme, _, rest = endpoint.partition("://")
    return f"{scheme}://aws:{quote(token, safe='')}@{rest.rstrip('/')}/simple/"


def index_name(url: str | None = None) -> str:
    """The index pip uses, for the log and messages: its URL without credentials."""
    url = url or os.environ.get(INDEX_ENV, "").strip()
    if not url:
        return "PyPI (pip's default index)"
    return re.sub(r"//[^/@]*@", "//", url)


def pinned_constraints() -> list[str]:
    """``name==version`` for each package of KEEP that the image has."""
    out = []
    for name in KEEP:
        try:
            out.append(f"{name}=={metadata.version(name)}")
        except metadata.PackageNotFoundError:
            continue
    return out


def job_config() -> dict[str, Any]:
    """This job's CreateProcessingJob request (``/opt/ml/config/processingjobconfig.json``); empty outside a job."""
    config = Path(str(_paths().SAGEMAKER_ROOT)) / "config" / "processingjobconfig.json"
    try:
        return dict(json.loads(config.read_text()))
    except (OSError, ValueError):
        return {}


def track(uri: str, report_dir: Path, data_dir: str | None) -> None:
    """Point the notebook's MLflow tracking at ``uri`` (empty: off). The jobs of one pipeline execution
    share no folder, so the pipeline's run is named after the execution, and tagged with the data's S3
    URI, the code's sha256 and its git commit, all read from this job's own configuration: arguments carrying them would
    change with every execution and defeat SageMaker's step cache."""
    from deepfake.orchestration import tracking

    os.environ["MLFLOW_TRACKING_URI"] = uri or tracking.OFF
    job = job_config()
    if not uri or not job:
        return
    outputs = {o["S3Output"]["LocalPath"]: o["S3Output"]["S3Uri"] for o in job["ProcessingOutputConfig"]["Outputs"]}
    inputs = {i["S3Input"]["LocalPath"]: i["S3Input"]["S3Uri"] for i in job["ProcessingInputs"] if "S3Input" in i}
    report_uri = outputs.get(str(report_dir), "")
    if report_uri:           # s3://bucket/prefix/runs/<execution id>/<step>/report (pipeline._run_uri)
        os.environ[tracking.RUN_NAME_ENV] = report_uri.rstrip("/").split("/")[-3]
    marker = json.loads(MARKER.read_text()) if MARKER.is_file() else {}
    tags = {key: marker[name] for key, name in (("deepfake.code_sha256", "sha256"), (tracking.GIT_COMMIT, "git_commit"))
            if marker.get(name)}
    if data_dir in inputs:
        tags["deepfake.data"] = inputs[data_dir]
    elif data_dir and data_dir.startswith("s3://"):       # a step that reads the prefix itself (exploration)
        tags["deepfake.data"] = data_dir
    os.environ[tracking.RUN_TAGS_ENV] = json.dumps(tags)


def current_host() -> str:
    """This instance's name in the Processing cluster (``algo-1``, ...), from its resource config."""
    from deepfake.core import paths
    from deepfake.core.errors import ConfigError

    config = Path(str(paths.SAGEMAKER_ROOT)) / "config" / "resourceconfig.json"
    try:
        host = json.loads(config.read_text())["current_host"]
    except (OSError, ValueError, KeyError) as exc:
        raise ConfigError(f"cannot name this instance's shard: {config} is missing or has no "
                          f"current_host ({exc}); --shard-param only works inside a SageMaker job") from None
    return str(host)


def fail(message: str, code: int) -> int:
    """Log the failure and leave it as the job's exit message (``ExitMessage`` of DescribeProcessingJob),
    with the job's local output paths given as the S3 URIs they are uploaded to."""
    log.error("%s", message)
    exit_message(message)
    return code


def exit_message(message: str) -> None:
    """Leave ``message`` as the job's exit message (``/opt/ml/output/message``: ``ExitMessage`` of
    DescribeProcessingJob), with the job's local output paths given as the S3 URIs they are uploaded to."""
    target = Path(str(_paths().SAGEMAKER_ROOT)) / "output" / "message"
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(fit_exit_message(in_s3_terms(message, job_config())))
    except OSError as exc:
        log.warning("could not write the exit message to %s: %s", target, exc)


def fit_exit_message(text: str, limit: int = EXIT_MESSAGE_LIMIT) -> bytes:
    """``text`` as at most ``limit`` bytes of UTF-8 ending in a newline (several instances' messages are
    concatenated), never splitting a character: SageMaker fails a job whose message is not UTF-8. A long error
    is shortened, marked with an ellipsis, before the indented lines under it (where the notebook is)."""
    text = text.rstrip("\n")
    data = f"{text}\n".encode()
    if len(data) <= limit:
        return data
    lines = text.split("\n")
    keep = len(lines)
    while keep > 1 and lines[keep - 1].startswith("  "):
        keep -= 1
    head, tail = "\n".join(lines[:keep]), "".join(f"\n{line}" for line in lines[keep:]) + "\n"
    if len(tail.encode()) > limit // 2:
        head, tail = text, "\n"
    room = limit - len(tail.encode()) - len(ELLIPSIS.encode())
    return head.encode()[:room].decode("utf-8", errors="ignore").encode() + ELLIPSIS.encode() + tail.encode()


def in_s3_terms(message: str, job: dict[str, Any]) -> str:
    """``message`` with each of the job's output folders (as this container sees it) replaced by its S3 URI."""
    root = str(_paths().SAGEMAKER_ROOT)
    for output in job.get("ProcessingOutputConfig", {}).get("Outputs", []):
        spec = output.get("S3Output", {})
        local, uri = spec.get("LocalPath", ""), spec.get("S3Uri", "")
        _, sep, below = local.partition("/processing/")      # SageMaker keeps LocalPath under /opt/ml/processing/
        if sep and isinstance(uri, str) and uri.startswith("s3://"):
            message = message.replace(f"{root}/processing/{below.rstrip('/')}", uri.rstrip("/"))
    return message


def _paths() -> ModuleType:
    """``deepfake.core.paths`` (the one module that spells the container layout), from the shipped kit's file
    when the kit is not installed: an install that failed still leaves its exit message."""
    try:
        from deepfake.core import paths
    except ImportError:
        spec = importlib.util.spec_from_file_location("deepfake_paths", KIT / "src" / "deepfake" / "core" / "paths.py")
        if spec is None or spec.loader is None:
            raise
        paths = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(paths)
    return paths


if __name__ == "__main__":
    sys.exit(main())
