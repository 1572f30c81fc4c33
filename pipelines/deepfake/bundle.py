"""The code each pipeline step runs, shipped to S3 under its content hash.

A step's container gets one Processing input holding ``run_step.py``, the
requirements that step needs and the part of the kit it runs: its notebook,
``pyproject.toml`` and the modules of ``src/deepfake`` that the notebook and
``run_step.py`` import (their closure, :mod:`deepfake.core.imports`). The S3
prefix is the sha256 of those files, so an upsert with unchanged code writes the
same step arguments and SageMaker's step cache still hits, and a change moves
only the steps whose code it touches: editing a plot of the evaluation report
reruns the evaluation, not the extraction and the training.

The requirements are derived too: the kit's own requirements (pyproject.toml)
of the third-party packages that code imports, plus the notebook kernel, less
the image's torch and numpy; the bundle ships the requirements lock
(``infra/image/requirements.lock``, :mod:`pipelines.deepfake.image`) that pins them
and everything they pull, so a step installs the versions CI tests.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import deepfake
from deepfake.core import dependencies, imports, paths
from deepfake.core.errors import PipelineError
from deepfake.orchestration.tracking import git_commit

# Part of the hash: bump it when the layout below changes.
BUNDLE_FORMAT = "3"
ENTRY_POINT = "run_step.py"
REQUIREMENTS = "requirements.txt"
LOCK = "requirements.lock"           # the pins of every requirement (run_step.py's constraints)
KIT_DIR = "kit"                      # pip-installable copy of the kit inside the bundle
MARKER = "BUNDLE.json"               # written last: a prefix holding it is complete
# Executes the notebooks: not imported by the kit's code, so not found in its import graph.
KERNEL = ("ipykernel",)
NETWORK_MODULE = "deepfake.modeling.network"      # a step whose code imports it builds networks
# pyproject.toml names a readme; a fixed one keeps doc edits from busting the cache.
README = b"deepfake-kit, shipped by the SageMaker pipeline.\n"

HERE = Path(__file__).resolve().parent


@dataclass(frozen=True)
class CodeBundle:
    files: Mapping[str, bytes]       # posix path inside the bundle -> content
    sha256: str

    def uri(self, bucket: str, prefix: str) -> str:
        """``s3://bucket/prefix/code/<sha256>/``: the step input that holds the bundle."""
        return f"s3://{bucket}/{_key_prefix(prefix, self.sha256)}"


def build_bundle(notebook: str, backbone: str | None = None) -> CodeBundle:
    """The entry point, the requirements, the notebook and the kit modules one step runs. A step that builds
    networks also installs what ``backbone`` needs beyond the kit's core (timm for ``timm/<model>``)."""
    entry = _read(HERE / ENTRY_POINT)
    nb_path = paths.notebooks_dir() / notebook
    modules = notebook_step_modules(notebook)
    package = Path(deepfake.__file__).resolve().parent
    extra = backbone_packages(modules, backbone)
    files: dict[str, bytes] = {
        ENTRY_POINT: entry,
        REQUIREMENTS: step_requirements(modules, extra).encode("utf-8"),
        LOCK: _read(_lock()),
        f"{KIT_DIR}/pyproject.toml": _read(_pyproject()),
        f"{KIT_DIR}/README.md": README,
        f"{KIT_DIR}/src/deepfake/py.typed": _read(package / "py.typed"),
        f"{KIT_DIR}/notebooks/{notebook}": _read(nb_path, what="notebook"),
    }
    for path in imports.closure_files(modules):
        files[f"{KIT_DIR}/src/deepfake/{path.relative_to(package).as_posix()}"] = path.read_bytes()
    return CodeBundle(files=files, sha256=content_hash(files))


def build_script_bundle(entry: str, backbone: str | None = None) -> CodeBundle:
    """A script step's code (no notebook): ``entry`` beside this folder's ``run_step.py`` (whose
    install and exit-message helpers it uses), the kit modules both import, and their requirements
    (with what ``backbone`` needs when the script builds networks, as :func:`build_bundle`)."""
    scripts = {name: _read(HERE / name) for name in dict.fromkeys((entry, ENTRY_POINT))}
    modules = script_step_modules(entry)
    package = Path(deepfake.__file__).resolve().parent
    files: dict[str, bytes] = {
        **scripts,
        REQUIREMENTS: step_requirements(modules, backbone_packages(modules, backbone)).encode("utf-8"),
        LOCK: _read(_lock()),
        f"{KIT_DIR}/pyproject.toml": _read(_pyproject()),
        f"{KIT_DIR}/README.md": README,
        f"{KIT_DIR}/src/deepfake/py.typed": _read(package / "py.typed"),
    }
    for path in imports.closure_files(modules):
        files[f"{KIT_DIR}/src/deepfake/{path.relative_to(package).as_posix()}"] = path.read_bytes()
    return CodeBundle(files=files, sha256=content_hash(files))


def backbone_packages(modules: Iterable[str], backbone: str | None) -> list[str]:
    """The distribution that builds ``backbone``, for steps whose code builds networks (training, evaluation);
    none for other steps or no backbone."""
    if not backbone or NETWORK_MODULE not in imports.closure(modules):
        return []
    from deepfake.modeling.network import get_backbone

    return [get_backbone(backbone).package]


def notebook_step_modules(notebook: str) -> set[str]:
    """The kit modules a notebook step imports: its notebook's and ``run_step.py``'s."""
    entry = _read(HERE / ENTRY_POINT).decode("utf-8")
    return imports.notebook_modules(_existing(paths.notebooks_dir() / notebook)) | imports.imports_of_code(entry)


def script_step_modules(entry: str) -> set[str]:
    """The kit modules a script step imports: ``entry``'s and ``run_step.py``'s."""
    modules: set[str] = set()
    for name in dict.fromkeys((entry, ENTRY_POINT)):
        modules |= imports.imports_of_code(_read(HERE / name).decode("utf-8"))
    return modules


def step_requirements(modules: Iterable[str], extra: Iterable[str] = ()) -> str:
    """What the image lacks to run these modules: the kit's requirements of their third-party imports
    (core dependencies only), the packages whose files they read (``DATA_PACKAGES``, an extra's too: the
    ImageNet weights of every backbone a training step may be asked for), ``extra`` distributions (an
    extra's backbone package) and the notebook kernel, never the image's torch and numpy."""
    core = dependencies.core_distributions()
    used = dependencies.distributions_of(imports.third_party(modules))
    data = dependencies.distributions_of(imports.data_packages(modules))
    wanted = {*(d for d in used if d in core), *data, *map(dependencies.normalize, extra), *KERNEL}
    names = sorted(wanted - set(dependencies.IMAGE_PACKAGES))
    lines = ["# What the AWS PyTorch framework image lacks to run this step's notebook (derived from the",
             "# kit's pyproject.toml); run_step.py keeps the image's own torch and numpy as constraints.",
             *(dependencies.requirement(n) for n in names)]
    return "\n".join(lines) + "\n"


def combined_sha256(bundles: Iterable[CodeBundle]) -> str:
    """One hash of several steps' code (the model package records it)."""
    return hashlib.sha256("".join(sorted(b.sha256 for b in bundles)).encode()).hexdigest()


def content_hash(files: Mapping[str, bytes]) -> str:
    """sha256 over the sorted paths and the sha256 of each file."""
    h = hashlib.sha256(f"deepfake-bundle {BUNDLE_FORMAT}\n".encode())
    for name in sorted(files):
        h.update(f"{name}\0{hashlib.sha256(files[name]).hexdigest()}\n".encode())
    return h.hexdigest()


def upload_bundle(bundle: CodeBundle, s3_client: Any, bucket: str, prefix: str,
                  put_arguments: Mapping[str, str] | None = None) -> str:
    """Upload the bundle unless its prefix already holds it; returns its S3 URI. ``put_arguments`` go with
    each ``PutObject`` (SSE-KMS with the account's key: ``AccountSettings.s3_put_arguments``)."""
    from botocore.exceptions import ClientError

    key_prefix = _key_prefix(prefix, bundle.sha256)
    try:
        s3_client.head_object(Bucket=bucket, Key=key_prefix + MARKER)
        return bundle.uri(bucket, prefix)
    except ClientError as exc:
        code = exc.response.get("Error", {}).get("Code", "")
        if code not in ("404", "NoSuchKey", "NotFound"):
            raise _s3_error(exc, bucket) from None
    try:
        for name, data in sorted(bundle.files.items()):
            s3_client.put_object(Bucket=bucket, Key=key_prefix + name, Body=data, **(put_arguments or {}))
        marker = {"sha256": bundle.sha256, "kit_version": deepfake.__version__,
                  "files": sorted(bundle.files),
                  # the commit that first shipped this code (not hashed: the same code keeps its prefix)
                  "git_commit": (git_commit() or ("",))[0]}
        s3_client.put_object(Bucket=bucket, Key=key_prefix + MARKER,
                             Body=json.dumps(marker, indent=1).encode(), **(put_arguments or {}))
    except ClientError as exc:
        raise _s3_error(exc, bucket) from None
    return bundle.uri(bucket, prefix)


def _key_prefix(prefix: str, sha256: str) -> str:
    return "/".join(p for p in (prefix.strip("/"), "code", sha256) if p) + "/"


def _pyproject() -> Path:
    path = paths.project_dir() / "pyproject.toml"
    if not path.is_file():
        raise PipelineError(
            f"cannot find the kit's pyproject.toml at {path}; run from the checkout or set DEEPFAKE_HOME to it"
        )
    return path


def _lock() -> Path:
    from pipelines.deepfake.image import lock_path

    path = lock_path()
    if not path.is_file():
        raise PipelineError(f"cannot find the requirements lock at {path}; run from the checkout "
                            "(or set DEEPFAKE_HOME to it), or `make lock` to make it")
    return path


def _existing(path: Path) -> Path:
    if not path.is_file():
        raise PipelineError(f"notebook {path} does not exist; the pipeline ships it to its step")
    return path


def _read(path: Path, what: str = "file") -> bytes:
    if not path.is_file():
        raise PipelineError(f"{what} {path} does not exist; the pipeline ships it to every step")
    return path.read_bytes()


def _s3_error(exc: Exception, bucket: str) -> PipelineError:
    return PipelineError(f"cannot upload the step code to s3://{bucket}: {exc}; check that the bucket "
                         "exists and the credentials may write to it (docs/sagemaker.md)")
