"""A serving-only install scores a video: a fresh virtual environment with only the image's torch and the
archive's own code/requirements.txt (numpy stays 1.x, as in the AWS images), the handlers of the extracted
model.tar.gz, a real video; no pandas, matplotlib or notebook machinery anywhere.

torch comes from where the build took it (``$TORCH_INDEX_URL``, ``deepfake.core.dependencies.torch_install_args``),
so pip finds the wheel the build installed in its cache; on CodeBuild, PyPI's torch would be the CUDA build, gigabytes
downloaded within the test's timeout."""

from __future__ import annotations

import json
import subprocess
import sys
import tarfile

import pytest
import torch
from serving_support import make_model

from deepfake.core.dependencies import torch_install_args
from deepfake.serving.packaging import package_model
from deepfake.serving.predictor import Predictor

pytestmark = pytest.mark.slow

SCRIPT = """
import importlib.util, json, sys
sys.path.insert(0, sys.argv[1] + "/code")             # as the SageMaker toolkit does
import inference                                       # code/inference.py of the archive
missing = [m for m in ("pandas", "matplotlib", "papermill", "sklearn") if importlib.util.find_spec(m)]
model = inference.model_fn(sys.argv[1])
video = open(sys.argv[2], "rb").read()
body, accept = inference.output_fn(inference.predict_fn(inference.input_fn(video, "video/mp4"), model),
                                   "application/json")
import numpy, torch
print(json.dumps({"result": json.loads(body), "installed_extras": missing, "numpy": numpy.__version__,
                  "torch": torch.__version__}))
"""


def test_a_serving_only_install_scores_a_video(tmp_path, face_clip):
    archive = package_model(make_model(tmp_path / "model"), tmp_path / "model.tar.gz")
    model_dir = tmp_path / "opt-ml-model"
    with tarfile.open(archive) as tar:
        tar.extractall(model_dir, filter="data")
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    python = str(venv / "bin" / "python")
    pip = [python, "-m", "pip", "install", "--quiet", "--disable-pip-version-check"]
    for args in (torch_install_args(), ["-r", str(model_dir / "code" / "requirements.txt")]):   # torch first, alone
        install = subprocess.run([*pip, *args], capture_output=True, text=True, timeout=900)
        assert install.returncode == 0, install.stderr[-3000:]
    run = subprocess.run([python, "-c", SCRIPT, str(model_dir), str(face_clip)], capture_output=True, text=True,
                         timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    out = json.loads(run.stdout.strip().splitlines()[-1])
    assert out["installed_extras"] == [] and out["numpy"].startswith("1.")
    assert out["torch"] == torch.__version__          # the build's own torch (2.13.0+cpu here), not another one
    assert out["result"]["status"] == "ok"
    assert out["result"]["p_fake"] == Predictor.from_path(archive).predict_video(face_clip)["p_fake"]
