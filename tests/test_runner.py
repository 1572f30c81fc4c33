"""The local runner on small stand-in notebooks: caching, failures, the gate, registration.

The real notebooks run end to end in test_notebooks.py; here each step is a tiny
notebook with the same name and wiring, so the runner's own behaviour is checked
in seconds.
"""

import json

import pytest
from notebook_factory import make_notebook

from deepfake.orchestration import runner, steps
from deepfake.orchestration.cli import main
from deepfake.orchestration.registry import LocalRegistry

pytestmark = pytest.mark.slow

LOG = "import pathlib\npathlib.Path(output_dir).mkdir(parents=True, exist_ok=True)\n" \
      "open(log_file, 'a').write('{name}\\n')\n"
BODIES = {
    "explore": "pathlib.Path(output_dir, 'videos.csv').write_text('ok')",
    "extract": "pathlib.Path(output_dir, 'faces.csv').write_text(str(frames_per_video))",
    "train": "pathlib.Path(output_dir, 'model.tar.gz').write_bytes(b'weights %d' % epochs)",
    "evaluate": "import json\nif fail: raise RuntimeError('evaluation exploded')\n"
                "pathlib.Path(output_dir, 'evaluation.json').write_text(json.dumps("
                "{'metrics': {'video_auc': auc, 'frame_auc': 0.9}, 'counts': {'videos_scored': 4}}))\n"
                "pathlib.Path(output_dir, 'model.tar.gz').write_bytes(pathlib.Path(model_dir, 'model.tar.gz').read_bytes())",
}
EXTRA = {"extract": "\nframes_per_video: int = 16  # frames", "train": "\nepochs: int = 6  # epochs",
         "evaluate": "\nauc: float = 0.95  # fake metric\nfail: bool = False  # fail on purpose"}


@pytest.fixture()
def env(tmp_path, monkeypatch):
    nbdir = tmp_path / "notebooks"
    log = tmp_path / "executions.log"
    for s in steps.STEPS:
        params = "\n".join(f'{p}: str = ""  # input' for p in s.inputs)
        params += f'\noutput_dir: str = "out"  # output\nlog_file: str = "{log}"  # test log' + EXTRA.get(s.name, "")
        make_notebook(nbdir / s.notebook, params, LOG.format(name=s.name) + BODIES[s.name])
    data = tmp_path / "data"
    data.mkdir()
    (data / "a.mp4").write_bytes(b"video")
    monkeypatch.setenv("DEEPFAKE_NOTEBOOKS", str(nbdir))
    monkeypatch.setenv("DEEPFAKE_REGISTRY", str(tmp_path / "registry"))
    monkeypatch.setattr(runner, "_DATA_FINGERPRINTS", {})
    monkeypatch.setattr(runner, "code_fingerprint", lambda: "the package code")

    def run(run_id, *sets, **kw):
        return runner.run_pipeline(data, run_id, "default", sets, runs_root=tmp_path / "runs", stream=False, **kw)

    def executed():
        return log.read_text().split() if log.exists() else []

    return run, executed, tmp_path


def test_full_run_registers_then_everything_is_reused(env):
    run, executed, tmp = env
    assert run("r1") == 0
    assert executed() == ["explore", "extract", "train", "evaluate"]
    for s in steps.STEPS:
        assert (tmp / "runs/r1" / s.name / s.notebook).is_file()
        assert (tmp / "runs/r1" / s.name / s.notebook.replace(".ipynb", ".html")).is_file()
    versions = LocalRegistry().list("deepfake-detector")
    assert [v.status for v in versions] == ["PendingManualApproval"]
    assert json.loads((tmp / "runs/r1/run.json").read_text())["registered"]["version"] == 1

    assert run("r2") == 0
    assert executed() == ["explore", "extract", "train", "evaluate"]  # nothing ran again
    assert (tmp / "runs/r2/train/model.tar.gz").read_bytes() == b"weights 6"
    record = json.loads((tmp / "runs/r2/train/step.json").read_text())
    assert record["cached_from"].endswith("r1/train")


def test_changed_parameter_reruns_that_step_and_what_follows(env):
    run, executed, _ = env
    assert run("r1") == 0
    assert run("r2", "train.epochs=2") == 0
    assert executed()[4:] == ["train", "evaluate"]


def test_changed_code_or_force_reruns_everything(env, monkeypatch):
    run, executed, _ = env
    assert run("r1") == 0
    monkeypatch.setattr(runner, "code_fingerprint", lambda: "different code")
    assert run("r2") == 0
    assert len(executed()) == 8
    assert run("r3", force=True) == 0
    assert len(executed()) == 12


def test_failing_step_exits_non_zero_and_keeps_executed_notebook(env, capsys):
    run, executed, tmp = env
    assert run("r1", "evaluate.fail=true") == 1
    out = capsys.readouterr().out
    assert "evaluate" in out and "RuntimeError" in out and "evaluation exploded" in out
    assert (tmp / "runs/r1/evaluate/04_evaluate.ipynb").is_file()
    assert not (tmp / "runs/r1/evaluate/step.json").exists()
    assert run("r1") == 0  # fixed parameters: the finished steps are reused, evaluate reruns
    assert executed()[4:] == ["evaluate"]


def test_quality_gate_blocks_registration(env, capsys):
    run, _, _ = env
    assert run("r1", "evaluate.auc=0.6") == 3
    assert "below the threshold" in capsys.readouterr().out
    assert LocalRegistry().list("deepfake-detector") == []


def test_bad_overrides_are_clear_errors(env, tmp_path, capsys):
    run, _, _ = env
    with pytest.raises(Exception, match="unknown step"):
        run("r1", "trian.epochs=2")
    with pytest.raises(Exception, match="known parameters"):
        run("r1", "train.epoch=2")
    assert main(["run", "--data", str(tmp_path / "nowhere")]) == 2
    assert "does not exist" in capsys.readouterr().err
