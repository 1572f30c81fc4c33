"""The four real notebooks: parameters match the stage configs, and the whole
local pipeline runs through the real `deepfake` command on tiny demo data."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from deepfake import paths, steps
from deepfake.evaluate import EvalConfig, validate_evaluation
from deepfake.explore import ExploreConfig
from deepfake.extract import ExtractConfig
from deepfake.notebook import notebook_parameters
from deepfake.train import TrainConfig

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = {"explore": ExploreConfig, "extract": ExtractConfig, "train": TrainConfig, "evaluate": EvalConfig}
# Parameters a notebook takes beyond its stage config and its input/output wiring.
EXTRA = {"extract": {"shard"}}


@pytest.mark.parametrize("step", steps.STEPS, ids=lambda s: s.name)
def test_notebook_parameters_are_the_stage_config_plus_wiring(step):
    declared = notebook_parameters(ROOT / "notebooks" / step.notebook)
    config = CONFIGS[step.name]
    wiring = set(step.inputs) | {"output_dir"}
    assert set(declared) == set(config.field_names()) | wiring | EXTRA.get(step.name, set())
    defaults = config()
    for name in config.field_names():
        assert declared[name]["default"] == getattr(defaults, name), f"{step.notebook}: {name} default differs"
        assert declared[name]["help"], f"{step.notebook}: {name} has no help comment"


def test_papermill_help_documents_every_parameter():
    out = subprocess.run([str(Path(sys.executable).parent / "papermill"), "--help-notebook",
                          str(ROOT / "notebooks" / "03_train.ipynb")], capture_output=True, text=True, check=True)
    assert "epochs" in out.stdout and "unfreeze_blocks" in out.stdout


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory):
    from deepfake.demo_data import build_demo_dataset

    return build_demo_dataset(tmp_path_factory.mktemp("data") / "demo", n_videos=12, seed=1)


def _deepfake(*args, cwd, env_extra):
    env = {**os.environ, **env_extra}
    return subprocess.run([str(Path(sys.executable).parent / "deepfake"), *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=900)


@pytest.mark.slow
def test_local_pipeline_runs_the_four_notebooks_and_registers(tiny_data, tmp_path):
    env = {"DEEPFAKE_REGISTRY": str(tmp_path / "registry"), "DEEPFAKE_HOME": str(ROOT)}
    runs = tmp_path / "runs"
    proc = _deepfake("run", "--data", str(tiny_data), "--run-id", "t1", "--profile", "tiny",
                     "--threshold", "0", cwd=tmp_path, env_extra={**env, "DEEPFAKE_RUNS": str(runs)})
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    run_dir = runs / "t1"
    for s in steps.STEPS:
        assert (run_dir / s.name / s.notebook).is_file()
        assert (run_dir / s.name / s.notebook.replace(".ipynb", ".html")).is_file()
    assert (run_dir / "explore" / paths.VIDEOS_MANIFEST).is_file()
    assert (run_dir / "extract" / paths.FACES_MANIFEST).is_file()
    assert (run_dir / "train" / "model" / "model.safetensors").is_file()
    assert (run_dir / "train" / "model.tar.gz").is_file()
    evaluation = json.loads((run_dir / "evaluate" / paths.EVALUATION).read_text())
    validate_evaluation(evaluation)
    report = (run_dir / "evaluate" / "04_evaluate.html").read_text()
    assert "load_artifact" not in report  # the evaluation report hides code
    assert "metrics (test split)" in proc.stdout and "registered model" in proc.stdout
    listed = _deepfake("registry", "list", "--json", cwd=tmp_path, env_extra=env)
    assert json.loads(listed.stdout)[0]["status"] == "PendingManualApproval"

    again = _deepfake("run", "--data", str(tiny_data), "--run-id", "t2", "--profile", "tiny", "--no-register",
                      cwd=tmp_path, env_extra={**env, "DEEPFAKE_RUNS": str(runs)})
    assert again.returncode == 0, again.stderr[-2000:]
    assert again.stdout.count("reused from cache") == 4
