"""The step runtime, pinned: the requirements lock, the image's tag and the manifest inside the image.

``infra/image/requirements.lock`` pins every package a pipeline step (both pipelines) or the
endpoint installs over the AWS PyTorch image, resolved once for that image's Python and
platform with its numpy kept below 2; the image's own torch and numpy are left out of it. A
step installs what the lock pins (``run_step.py`` passes it as constraints), the kit's image
(``infra/image/Dockerfile``) is built from it, and ``tests/test_step_environments.py``
installs each step's requirements with it into a clean environment and runs the step, so the
versions CI tests are the versions the steps run.

    python -m pipelines.deepfake.image lock                 # resolve the lock again (make lock)
    python -m pipelines.deepfake.image check                # exit 1 if pyproject.toml moved on since
    python -m pipelines.deepfake.image tag                  # <kit version>-<lock sha256[:12]>: the image tag
    python -m pipelines.deepfake.image base --region R      # flavour=AWS image it builds on, one a line
    python -m pipelines.deepfake.image manifest --lock L --out FILE   # what the built image holds (Dockerfile)
"""

from __future__ import annotations

import argparse
import hashlib
import json
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

import deepfake
from deepfake.core import dependencies, paths
from deepfake.core.errors import PipelineError
from pipelines.deepfake import run_step

LOCK = Path("infra") / "image" / "requirements.lock"      # relative to the project folder
PYTHON_VERSION = "3.11"                                     # the images' Python (pipeline.PY_VERSION py311)
PLATFORM = "x86_64-manylinux_2_28"                          # SageMaker instances
INPUTS_MARK = "# inputs-sha256: "
# Flavours of the image (infra/image/build.sh): the AWS image each is built on, as the pipeline picks it.
FLAVOURS = {"cpu": ("training", "processing_instance_type"), "gpu": ("training", "training_instance_type"),
            "serving": ("inference", "inference_instance_types")}
# The image's torch is never asked for: an override that no platform matches drops it and its CUDA wheels.
NO_TORCH = 'torch; python_version < "3"'


def lock_path() -> Path:
    return paths.project_dir() / LOCK


def lock_inputs() -> list[str]:
    """Every requirement a step bundle or the endpoint's ``code/requirements.txt`` names, sorted, once."""
    from deepfake.orchestration import steps
    from deepfake.serving.packaging import requirements as serving_requirements
    from pipelines.deepfake.bundle import notebook_step_modules, script_step_modules, step_requirements
    from pipelines.deepfake.scoring import ENTRY_POINT as SCORING_ENTRY

    texts = [step_requirements(notebook_step_modules(s.notebook)) for s in steps.STEPS]
    texts += [step_requirements(script_step_modules(SCORING_ENTRY)), serving_requirements({})]
    image = set(dependencies.IMAGE_PACKAGES)
    out = {line.strip() for text in texts for line in text.splitlines()
           if line.strip() and not line.startswith("#")}
    return sorted(r for r in out if dependencies.normalize(r.split("<")[0].split(">")[0].split("=")[0]) not in image
                  and r not in dependencies.IMAGE_CONSTRAINTS)


def inputs_sha256(requirements: Sequence[str]) -> str:
    text = "\n".join([*requirements, "--", *dependencies.IMAGE_CONSTRAINTS, NO_TORCH, PYTHON_VERSION, PLATFORM])
    return hashlib.sha256(text.encode()).hexdigest()


def compile_lock(out: Path | None = None) -> Path:
    """Resolve the lock with uv (needs the package index); returns its path."""
    out = out or lock_path()
    requirements = lock_inputs()
    with tempfile.TemporaryDirectory(prefix="deepfake-lock-") as tmp:
        folder = Path(tmp)
        (folder / "requirements.in").write_text("\n".join(requirements) + "\n")
        (folder / "constraints.txt").write_text("\n".join(dependencies.IMAGE_CONSTRAINTS) + "\n")
        (folder / "overrides.txt").write_text(NO_TORCH + "\n")
        cmd = ["uv", "pip", "compile", "requirements.in", "-c", "constraints.txt", "--override", "overrides.txt",
               "--python-version", PYTHON_VERSION, "--python-platform", PLATFORM, "--no-header",
               *(arg for name in dependencies.IMAGE_PACKAGES for arg in ("--no-emit-package", name)),
               "-o", "requirements.lock"]
        proc = subprocess.run(cmd, cwd=folder, capture_output=True, text=True)
        if proc.returncode != 0:
            raise PipelineError(f"uv pip compile failed (exit {proc.returncode}): {proc.stderr.strip()[-2000:]}")
        body = (folder / "requirements.lock").read_text()
    header = [
        "# The step runtime: every package a pipeline step or the endpoint installs over the AWS PyTorch",
        f"# image, resolved for Python {PYTHON_VERSION} on {PLATFORM}, "
        f"{', '.join(dependencies.IMAGE_CONSTRAINTS)}; the image's own",
        f"# {' and '.join(dependencies.IMAGE_PACKAGES)} are left out. Made by `make lock` (python -m pipelines.deepfake.image lock)",
        "# from the requirements the steps derive from pyproject.toml; edit pyproject.toml, never this file.",
        f"{INPUTS_MARK}{inputs_sha256(requirements)}",
    ]
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("\n".join(header) + "\n" + body)
    return out


def check_lock(path: Path | None = None) -> None:
    """Raise PipelineError when the lock was resolved from other requirements than the kit's today."""
    path = path or lock_path()
    if not path.is_file():
        raise PipelineError(f"{path} is missing: run `make lock`")
    recorded = next((line[len(INPUTS_MARK):].strip() for line in path.read_text().splitlines()
                     if line.startswith(INPUTS_MARK)), "")
    if recorded != inputs_sha256(lock_inputs()):
        raise PipelineError(f"{path} was resolved from other requirements than the steps derive from pyproject.toml "
                            "today: run `make lock` and commit it (the image tag and every step's code change)")


def locked() -> dict[str, str]:
    """Normalised name -> pinned version, read from the lock."""
    out = {}
    for line in lock_path().read_text().splitlines():
        if "==" in line and not line.lstrip().startswith("#"):
            name, _, version = line.split(";")[0].strip().partition("==")
            out[dependencies.normalize(name)] = version.strip()
    return out


def tag() -> str:
    """``<kit version>-<sha256 of the lock, 12 digits>``: one image per kit version and runtime."""
    return f"{deepfake.__version__}-{run_step.file_sha256(lock_path())[:12]}"


def manifest(lock: Path | None = None) -> dict[str, object]:
    """What the installed kit (this interpreter's ``deepfake``) holds, for ``run_step.install_plan``."""
    return run_step.image_manifest(lock or lock_path(), Path(deepfake.__file__).resolve().parent,
                                   deepfake.__version__)


def base_image(flavour: str, region: str) -> str:
    """The AWS PyTorch image a flavour is built on: the one the pipeline runs that kind of step in without it."""
    from pipelines.deepfake import pipeline

    scope, kwarg = FLAVOURS[flavour]
    instance_type = {"processing_instance_type": pipeline.PROCESSING_INSTANCE_TYPE,
                     "training_instance_type": pipeline.TRAINING_INSTANCE_TYPE,
                     "inference_instance_types": pipeline.INFERENCE_INSTANCE_TYPES[0]}[kwarg]
    return pipeline._image(region, instance_type, scope)


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m pipelines.deepfake.image", description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="command", required=True)
    sub.add_parser("lock", help="resolve infra/image/requirements.lock again (uv, package index)")
    sub.add_parser("check", help="exit 1 when the lock is older than the requirements")
    sub.add_parser("tag", help="print the image tag")
    b = sub.add_parser("base", help="print each flavour and the AWS image it is built on")
    b.add_argument("--region", required=True)
    m = sub.add_parser("manifest", help="write what the installed kit image holds")
    m.add_argument("--out", type=Path, required=True)
    m.add_argument("--lock", type=Path, default=None, help="the lock the image was built with")
    args = p.parse_args(argv)
    try:
        if args.command == "lock":
            print(f"wrote {compile_lock()}")
        elif args.command == "check":
            check_lock()
            print(f"{lock_path()} is up to date")
        elif args.command == "tag":
            print(tag())
        elif args.command == "base":
            print("\n".join(f"{flavour}={base_image(flavour, args.region)}" for flavour in FLAVOURS))
        else:
            args.out.parent.mkdir(parents=True, exist_ok=True)
            args.out.write_text(json.dumps(manifest(args.lock), indent=1, sort_keys=True) + "\n")
    except PipelineError as exc:
        print(f"image: error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
