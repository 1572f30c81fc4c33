"""The four real notebooks: parameters match the stage configs, and the whole
local pipeline runs through the real `deepfake` command on tiny demo data."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from deepfake.core import paths
from deepfake.core.files import sha256_file
from deepfake.data.manifest import read_sidecar
from deepfake.media.extraction import ExtractConfig
from deepfake.modeling.artifact import read_artifact_config
from deepfake.orchestration import steps
from deepfake.orchestration.notebook import notebook_parameters
from deepfake.scoring.schema import validate_evaluation
from deepfake.stages.evaluate import EvalConfig
from deepfake.stages.explore import ExploreConfig
from deepfake.stages.train import TrainConfig

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
    from deepfake.demo.build import build_demo_dataset

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
    assert (run_dir / "train" / "figures" / "self_blends.png").is_file()     # the gallery of triplets
    evaluation = json.loads((run_dir / "evaluate" / paths.EVALUATION).read_text())
    validate_evaluation(evaluation)
    assert evaluation["training"]["mode"] == "self_blend" and evaluation["fakes"] == "all"
    report = (run_dir / "evaluate" / "04_evaluate.html").read_text()
    assert "load_artifact" not in report  # the evaluation report hides code
    assert "metrics (test split + the fakes of every split)" in proc.stdout and "registered model" in proc.stdout
    assert "unseen-manipulation video AUC" in proc.stdout and "video ECE" in proc.stdout
    gated = read_artifact_config(run_dir / "evaluate" / paths.MODEL_ARCHIVE)   # what was registered
    assert gated["scoring"] == evaluation["scoring"]
    # every sidecar names the files its table was made from, with their sha256
    videos_csv, faces_csv = run_dir / "explore" / paths.VIDEOS_MANIFEST, run_dir / "extract" / paths.FACES_MANIFEST
    assert list(read_sidecar(videos_csv)["inputs"]) == [str(tiny_data / "dfdc_train_part_0" / "metadata.json")]
    assert read_sidecar(faces_csv)["inputs"] == {str(videos_csv): sha256_file(videos_csv)}
    assert read_sidecar(run_dir / "train" / paths.HISTORY)["inputs"] == {str(faces_csv): sha256_file(faces_csv)}
    predictions = read_sidecar(run_dir / "evaluate" / paths.VIDEO_PREDICTIONS)["inputs"]
    assert str(faces_csv) in predictions and str(run_dir / "train" / "model" / "model.safetensors") in predictions
    listed = _deepfake("registry", "list", "--json", cwd=tmp_path, env_extra=env)
    assert json.loads(listed.stdout)[0]["status"] == "PendingManualApproval"

    again = _deepfake("run", "--data", str(tiny_data), "--run-id", "t2", "--profile", "tiny", "--no-register",
                      cwd=tmp_path, env_extra={**env, "DEEPFAKE_RUNS": str(runs)})
    assert again.returncode == 0, again.stderr[-2000:]
    assert again.stdout.count("reused from cache") == 4


@pytest.mark.slow
def test_dataset_mode_then_cross_dataset_evaluation_with_the_model(tiny_data, tmp_path):
    """`--set train.mode=dataset` trains on the dataset's fakes; `--model` evaluates that model on another
    dataset (made with two manipulations it never saw) without training or registering."""
    from deepfake.demo.build import build_demo_dataset

    env = {"DEEPFAKE_REGISTRY": str(tmp_path / "registry"), "DEEPFAKE_HOME": str(ROOT),
           "DEEPFAKE_RUNS": str(tmp_path / "runs")}
    proc = _deepfake("run", "--data", str(tiny_data), "--run-id", "d", "--profile", "tiny", "--no-register",
                     "--set", "train.mode=dataset", cwd=tmp_path, env_extra=env)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    trained = json.loads((tmp_path / "runs" / "d" / "evaluate" / paths.EVALUATION).read_text())
    assert trained["training"]["mode"] == "dataset" and trained["fakes"] == "split"
    assert trained["training"]["manipulations_seen"]

    build_demo_dataset(tmp_path / "other", n_videos=8, seed=2, methods=("blendswap", "warp"),
                               progress=False)
    model = tmp_path / "runs" / "d" / "evaluate" / paths.MODEL_ARCHIVE
    cross = _deepfake("run", "--data", "other", "--model", str(model.relative_to(tmp_path)), "--run-id", "x",
                      "--profile", "tiny", cwd=tmp_path, env_extra=env)
    assert cross.returncode == 0, cross.stdout[-3000:] + cross.stderr[-3000:]
    assert "3 steps" in cross.stdout and "nothing is registered" in cross.stdout
    run_dir = tmp_path / "runs" / "x"
    assert not (run_dir / "train").exists()
    evaluation = json.loads((run_dir / "evaluate" / paths.EVALUATION).read_text())
    assert evaluation["split"] == "all"
    assert evaluation["counts"]["videos_scored"] == 8                       # every video of the other dataset
    manipulations = {r["manipulation"]: r["seen_in_training"] for r in evaluation["per_manipulation"]}
    assert manipulations == {"none": None, "blendswap": False, "warp": False}
    extracted = read_sidecar(run_dir / "extract" / paths.FACES_MANIFEST)["config"]
    settings = read_artifact_config(model)["extract"]
    assert {k: v for k, v in extracted.items() if k != "workers"} == {k: v for k, v in settings.items()
                                                                      if k != "workers"}
    assert not list((tmp_path / "registry").rglob("version.json"))           # nothing registered
