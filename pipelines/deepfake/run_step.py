"""Entry point of every SageMaker Processing step: run one notebook of the kit.

The pipeline starts ``python3 run_step.py --step NAME --param KEY VALUE ...`` in an
AWS PyTorch framework image, from the code input that holds this file, the extra
requirements and the kit (see ``bundle.py``). This script installs what the image
lacks (never its torch or numpy: they are pinned as constraints), installs the
shipped kit, then runs the step's notebook through ``deepfake.orchestration.notebook.run_notebook``,
the same call the local runner makes: parameters arrive as strings and are typed by
the notebook's parameters cell, the executed notebook and its HTML report land in
the report output even when a cell fails, and a failure exits non-zero so the step
and the pipeline fail, with the reason in the job's exit message.

Only the standard library is imported before the install.
"""

from __future__ import annotations

import argparse
import importlib
import json
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import time
from importlib import metadata
from pathlib import Path

log = logging.getLogger("run_step")

HERE = Path(__file__).resolve().parent
KIT = HERE / "kit"                                   # bundle.KIT_DIR
REQUIREMENTS = HERE / "requirements.txt"             # bundle.REQUIREMENTS
MARKER = HERE / "BUNDLE.json"                        # bundle.MARKER: the code's sha256 and git commit
KEEP = ("torch", "numpy")                            # the image's builds; pip must not replace them
EXIT_MESSAGE_LIMIT = 1024                            # bytes SageMaker keeps of the exit message

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
    try:
        install(KIT, REQUIREMENTS)
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


def install(kit: Path, requirements: Path) -> None:
    """pip-install the extra requirements, then the shipped kit without its dependencies."""
    started = time.perf_counter()
    install_requirements(requirements)
    install_kit(kit)
    importlib.invalidate_caches()                        # this process imports the kit next
    log.info("installed the requirements and the kit in %.0fs", time.perf_counter() - started)


def install_requirements(requirements: Path) -> None:
    with tempfile.TemporaryDirectory(prefix="deepfake-install-") as tmp:
        constraints = Path(tmp) / "constraints.txt"
        constraints.write_text("".join(f"{line}\n" for line in pinned_constraints()))
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
