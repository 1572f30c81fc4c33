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
and the pipeline fail, with the reason in the job's exit message.

Only the standard library is imported before the install.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib
import json
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

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
    parser.add_argument("--tracking-uri", default=None, metavar="URI",
                        help="MLflow tracking URI of the notebook's run (a SageMaker MLflow tracking server's "
                             "ARN); empty: no tracking; not given: MLFLOW_TRACKING_URI as it is")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    return start(f"step {args.step}", args.install) or run(args)


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
    except subprocess.CalledProcessError as exc:
        return fail(f"{what}: pip install failed (exit {exc.returncode}): {' '.join(exc.cmd)}", EXIT_INSTALL)
    return 0


def run(args: argparse.Namespace) -> int:
    from deepfake.core.errors import DeepfakeError, NotebookError
    from deepfake.orchestration import steps
    from deepfake.orchestration.notebook import run_notebook

    params = dict(args.param)
    try:
        step = steps.step(args.step)
        if args.shard_param:
            params[args.shard_param] = current_host()
        if args.tracking_uri is not None:
            track(args.tracking_uri, args.report_dir, params.get("data_dir"))
        log.info("step %s: %s with %s", step.name, step.notebook, json.dumps(params, sort_keys=True))
        started = time.perf_counter()
        result = run_notebook(args.notebooks_dir / step.notebook, args.report_dir, params, step=step.name,
                              hide_code=step.hide_code, log_output=True)
    except NotebookError as exc:
        return fail(str(exc), EXIT_NOTEBOOK)
    except DeepfakeError as exc:
        return fail(f"step {args.step}: {exc}", EXIT_CONFIG)
    log.info("step %s done in %.0fs: %s, %s", step.name, time.perf_counter() - started, result.executed,
             result.html)
    return 0


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
    if plan.requirements:
        install_requirements(requirements)
    if plan.kit:
        install_kit(kit)
    importlib.invalidate_caches()                        # this process imports the kit next
    log.info("installed %s in %.0fs", "the requirements and the kit" if plan.requirements else "the kit",
             time.perf_counter() - started)


def install_requirements(requirements: Path) -> None:
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
        _pip("-r", str(requirements), "-c", str(constraints))


def install_kit(kit: Path, *pip_args: str) -> None:
    """``pip install --no-deps`` of a copy: the input mount may be read-only and pip builds in place."""
    with tempfile.TemporaryDirectory(prefix="deepfake-kit-") as tmp:
        source = Path(tmp) / "kit"
        shutil.copytree(kit, source)
        _pip("--no-deps", *pip_args, str(source))


def _pip(*args: str) -> None:
    cmd = [sys.executable, "-m", "pip", "install", "--no-input", "--disable-pip-version-check", *args]
    subprocess.run(cmd, check=True, env={**os.environ, "PIP_ROOT_USER_ACTION": "ignore"})


def pinned_constraints() -> list[str]:
    """``name==version`` for each package of KEEP that the image has."""
    out = []
    for name in KEEP:
        try:
            out.append(f"{name}=={metadata.version(name)}")
        except metadata.PackageNotFoundError:
            continue
    return out


def track(uri: str, report_dir: Path, data_dir: str | None) -> None:
    """Point the notebook's MLflow tracking at ``uri`` (empty: off). The jobs of one pipeline execution
    share no folder, so the pipeline's run is named after the execution, and tagged with the data's S3
    URI, the code's sha256 and its git commit, all read from this job's own configuration: arguments carrying them would
    change with every execution and defeat SageMaker's step cache."""
    from deepfake.core import paths
    from deepfake.orchestration import tracking

    os.environ["MLFLOW_TRACKING_URI"] = uri or tracking.OFF
    config = Path(str(paths.SAGEMAKER_ROOT)) / "config" / "processingjobconfig.json"
    if not uri or not config.is_file():
        return
    job = json.loads(config.read_text())
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
    """Log the failure and leave it as the job's exit message, which SageMaker shows as its reason."""
    log.error("%s", message)
    exit_message(message)
    return code


def exit_message(message: str) -> None:
    """Leave ``message`` as the job's exit message (``/opt/ml/output/message``), which SageMaker shows."""
    try:
        from deepfake.core import paths

        target = Path(str(paths.SAGEMAKER_ROOT)) / "output" / "message"
    except ImportError:                                  # the kit failed to install
        target = None
    if target is not None:
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(message.encode("utf-8")[:EXIT_MESSAGE_LIMIT])
        except OSError as exc:
            log.warning("could not write the exit message to %s: %s", target, exc)


if __name__ == "__main__":
    sys.exit(main())
