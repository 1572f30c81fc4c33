"""The local runner on small stand-in notebooks: caching, failures, the gate, registration.

The real notebooks run end to end in test_notebooks.py; here each step is a tiny
notebook with the same name and wiring, so the runner's own behaviour is checked
in seconds.
"""

import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from notebook_factory import make_notebook
from test_evaluate import Brightness, make_faces

import deepfake
from deepfake.core.errors import ConfigError, LockedError
from deepfake.core.locks import LOCK_FILE
from deepfake.orchestration import cache, runner, steps
from deepfake.orchestration.cli import main
from deepfake.orchestration.registry import LocalRegistry
from deepfake.stages.evaluate import EvalConfig, evaluate

pytestmark = pytest.mark.slow

LOG = "import pathlib\npathlib.Path(output_dir).mkdir(parents=True, exist_ok=True)\n" \
      "open(log_file, 'a').write('{name}\\n')\n"
BODIES = {
    "explore": "pathlib.Path(output_dir, 'videos.csv').write_text('ok')",
    "extract": "import time\nwhile hold and not pathlib.Path(hold).exists(): time.sleep(0.05)\n"
               "pathlib.Path(output_dir, 'faces.csv').write_text(str(frames_per_video))",
    "train": "pathlib.Path(output_dir, 'model.tar.gz').write_bytes(b'weights %d' % epochs)",
    "evaluate": "import json\nif fail: raise RuntimeError('evaluation exploded')\n"
                "evaluation = json.loads(pathlib.Path(template).read_text())\n"
                "evaluation['metrics']['video_auc'] = auc\n"
                "pathlib.Path(output_dir, 'evaluation.json').write_text(json.dumps(evaluation))\n"
                "pathlib.Path(output_dir, 'model.tar.gz').write_bytes(pathlib.Path(model_dir, 'model.tar.gz').read_bytes())",
}
# What each stand-in imports of the kit, as its real notebook does: the step's code for its cache key.
KIT_IMPORTS = {
    "explore": "from deepfake.stages import explore as _stage",
    "extract": "from deepfake.stages import extract as _stage",
    "train": "from deepfake.stages import train as _stage",
    "evaluate": "from deepfake.reporting import evaluate_report as _report\nfrom deepfake.stages import evaluate as _stage",
}
EXTRA = {"extract": "\nframes_per_video: int = 16  # frames\nhold: str = ''  # wait for this file to exist (a slow step)", "train": "\nepochs: int = 6  # epochs",
         "evaluate": "\nauc: float = 0.95  # fake metric\nfail: bool = False  # fail on purpose"
                     "\ntemplate: str = ''  # a valid evaluation.json to start from"}


@pytest.fixture()
def env(tmp_path, monkeypatch):
    nbdir = tmp_path / "notebooks"
    log = tmp_path / "executions.log"
    for s in steps.STEPS:
        params = "\n".join(f'{p}: str = ""  # input' for p in s.inputs)
        params += f'\noutput_dir: str = "out"  # output\nlog_file: str = "{log}"  # test log' + EXTRA.get(s.name, "")
        make_notebook(nbdir / s.notebook, params, KIT_IMPORTS[s.name], LOG.format(name=s.name) + BODIES[s.name])
    data = tmp_path / "data"
    data.mkdir()
    (data / "a.mp4").write_bytes(b"video")
    monkeypatch.setenv("DEEPFAKE_NOTEBOOKS", str(nbdir))
    monkeypatch.setenv("DEEPFAKE_REGISTRY", str(tmp_path / "registry"))
    monkeypatch.setattr(cache, "_DATA_FINGERPRINTS", {})
    template = tmp_path / "evaluation.json"                   # a schema-valid evaluation, scored by Brightness
    evaluate(Brightness(), make_faces(tmp_path / "faces"), tmp_path / "template", EvalConfig(operating_point="fixed"))
    shutil.copy(tmp_path / "template" / "evaluation.json", template)
    monkeypatch.setitem(runner.PROFILES, "default", {"evaluate": {"template": str(template)}})
    code = tmp_path / "code" / "deepfake"                     # a copy of the package the tests may edit
    shutil.copytree(Path(deepfake.__file__).parent, code, ignore=shutil.ignore_patterns("__pycache__"))
    monkeypatch.setattr(cache, "CODE_ROOT", code)

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
    registered = json.loads((tmp / "runs/r2/run.json").read_text())["registered"]
    assert registered["version"] == 1 and registered["existing"]         # the same model: no second version
    assert len(LocalRegistry().list("deepfake-detector")) == 1
    record = json.loads((tmp / "runs/r2/train/step.json").read_text())
    assert record["cached_from"].endswith("r1/train")


def test_changed_parameter_reruns_that_step_and_what_follows(env):
    run, executed, _ = env
    assert run("r1") == 0
    assert run("r2", "train.epochs=2") == 0
    assert executed()[4:] == ["train", "evaluate"]


def test_a_rerun_in_the_same_folder_starts_afresh_unless_it_resumes_its_own_key(env):
    """Outputs of other settings (an upgraded kit, a changed parameter) are cleared before the step runs
    again in the same run folder; what an interrupted run of the same key left is kept for it to resume."""
    run, _, tmp = env
    assert run("r1") == 0
    extract = tmp / "runs/r1/extract"
    (extract / ".parts").mkdir()
    (extract / ".parts" / "stale.csv").write_text("made with other settings")
    assert run("r1", "extract.frames_per_video=8") == 0
    assert not (extract / ".parts").exists() and (extract / "faces.csv").read_text() == "8"
    record = json.loads((extract / "step.json").read_text())
    assert record["status"] == "finished"
    (extract / ".parts").mkdir()                                   # an interrupted run of this very key
    (extract / ".parts" / "done.csv").write_text("finished part")
    (extract / "step.json").write_text(json.dumps({**record, "status": "running"}))
    assert run("r1", "extract.frames_per_video=8") == 0
    assert (extract / ".parts" / "done.csv").read_text() == "finished part"


def test_changed_code_or_force_reruns_everything(env):
    run, executed, tmp = env
    assert run("r1") == 0
    edit(tmp / "code/deepfake/core/errors.py", "class DeepfakeError(Exception):")   # every step imports it
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
    failed = json.loads((tmp / "runs/r1/evaluate/step.json").read_text())
    assert failed["status"] == "failed" and "evaluation exploded" in failed["error"]   # never reused as cached
    assert run("r1") == 0  # fixed parameters: the finished steps are reused, evaluate reruns
    assert executed()[4:] == ["evaluate"]


def test_quality_gate_blocks_registration(env, capsys):
    run, _, _ = env
    assert run("r1", "evaluate.auc=0.6") == 3
    assert "below the threshold" in capsys.readouterr().out
    assert LocalRegistry().list("deepfake-detector") == []


def test_the_gate_may_use_any_metric_of_the_evaluation(env, capsys):
    """A lower-is-better metric (the share of real videos called fake) gates at or below the threshold;
    a name that is no metric of evaluation.json is refused with the list."""
    run, _, _ = env
    assert run("r1", gate_metric="video_false_positive_rate", threshold=-0.1) == 3
    assert "video_false_positive_rate 0.0000 is above the threshold -0.1" in capsys.readouterr().out
    assert run("r2", gate_metric="video_false_positive_rate", threshold=0.1) == 0
    assert "video_false_positive_rate 0.0000 <= 0.1: passed" in capsys.readouterr().out
    with pytest.raises(ConfigError, match="video_tpr_at_fpr_5"):
        run("r3", gate_metric="video_recal")


def test_bad_overrides_are_clear_errors(env, tmp_path, capsys):
    run, _, _ = env
    with pytest.raises(Exception, match="unknown step"):
        run("r1", "trian.epochs=2")
    with pytest.raises(Exception, match="known parameters"):
        run("r1", "train.epoch=2")
    assert main(["run", "--data", str(tmp_path / "nowhere")]) == 2
    assert "does not exist" in capsys.readouterr().err


def edit(path, anchor):
    """Change one function or class of the package copy, as a developer would (a new comment line)."""
    text = path.read_text()
    assert anchor in text
    path.write_text(text.replace(anchor, anchor + "\n    # edited by the test", 1))


def test_a_step_reruns_only_when_the_code_it_imports_changes(env):
    """Editing a plotting function of the evaluation report reruns the evaluation only; editing the crop
    path reruns the extraction and every step after it; the exploration, which imports neither, is reused."""
    run, executed, tmp = env
    assert run("r1") == 0
    edit(tmp / "code/deepfake/reporting/evaluate_report.py", "def plot_roc(")
    assert run("r2") == 0
    assert executed()[4:] == ["evaluate"]
    edit(tmp / "code/deepfake/media/crops.py", "def square_crop(")
    assert run("r3") == 0
    assert executed()[5:] == ["extract", "train", "evaluate"]


def test_an_evaluation_only_run_refuses_another_detector_than_the_model_s(model_dir, tmp_path):
    """`deepfake run --model M --set extract.detector=...`: the model would be evaluated on faces found
    otherwise than its training faces; the model's own settings are taken as they are."""
    from deepfake.core.errors import ConfigError
    from deepfake.orchestration.run_settings import step_parameters

    external = {steps.TRAIN_STEP: model_dir}
    with pytest.raises(ConfigError, match="extract.detector=mtcnn-track: the model was trained on faces found with"):
        step_parameters(tmp_path / "data", tmp_path / "run", "default", {"extract": {"detector": "mtcnn-track"}},
                        external=external)
    params = step_parameters(tmp_path / "data", tmp_path / "run", "default", {"extract": {"detector": "mtcnn"}},
                             external=external)
    assert params["extract"]["detector"] == "mtcnn"


def _wait_for(condition, what, timeout=120.0):
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def _files(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_two_runs_of_one_id_at_once_one_runs_and_the_other_refuses_changing_nothing(env):
    run, executed, tmp = env
    go = tmp / "go"
    codes = []
    first = threading.Thread(target=lambda: codes.append(run("r1", f"extract.hold={go}")))
    first.start()
    try:
        _wait_for(lambda: "extract" in executed(), "the first run's extract step")
        before = _files(tmp / "runs/r1")
        with pytest.raises(LockedError, match=r"^run r1 \(.*runs/r1\) is in use by pid \d+ on host .+ since .+; "
                                              "wait for it to finish, or start this run with another --run-id$"):
            run("r1", "train.epochs=2")
        assert _files(tmp / "runs/r1") == before
    finally:
        go.touch()
        first.join()
    assert codes == [0] and executed() == ["explore", "extract", "train", "evaluate"]
    assert run("r2", f"extract.hold={go}") == 0          # a single run of the same settings (reused from r1)
    ignore = {"run.json"}                                # names its run id and folder
    assert {k for k in _files(tmp / "runs/r1") if k not in ignore} == {k for k in _files(tmp / "runs/r2")
                                                                      if k not in ignore}
    assert not list((tmp / "runs").rglob(LOCK_FILE))


def _output_within(proc: subprocess.Popen, seconds: float, what: str) -> str:
    """The command's output once it exits; one that has not exited after ``seconds`` (2 cores shared with another
    test worker can be slow) is killed and the test fails with what it printed."""
    try:
        return proc.communicate(timeout=seconds)[0]
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        state = (f"this worker's SIGINT handler {signal.getsignal(signal.SIGINT)!r}, blocked signals "
                 f"{sorted(signal.pthread_sigmask(signal.SIG_BLOCK, []))}")
        pytest.fail(f"deepfake run had not exited {seconds:.0f} s {what} ({state}); it printed:\n"
                    f"{proc.communicate()[0]}")


def _cli_run(tmp: Path, *extra: str, env: dict[str, str] | None = None) -> subprocess.Popen:
    command = [sys.executable, "-m", "deepfake", "run", "--data", str(tmp / "data"), "--run-id", "r1", "--no-register",
               "--set", f"extract.hold={tmp / 'go'}", "--set", f"evaluate.template={tmp / 'evaluation.json'}", *extra]
    variables = {**os.environ, "DEEPFAKE_NOTEBOOKS": str(tmp / "notebooks"), "DEEPFAKE_RUNS": str(tmp / "runs"),
                 "DEEPFAKE_REGISTRY": str(tmp / "registry"), **(env or {})}
    return subprocess.Popen(command, env=variables, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True, preexec_fn=_as_a_shell_starts_it)


def _as_a_shell_starts_it() -> None:
    """A command a shell runs in the foreground sees Ctrl-C: SIGINT at its default and no signal blocked, whatever
    earlier tests of this worker process left in the signal state the child would inherit."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    signal.pthread_sigmask(signal.SIG_SETMASK, [])


def test_ctrl_c_and_kill_keep_what_was_done_end_the_mlflow_run_and_the_same_command_resumes(env):
    """Ctrl-C reaches the whole process group (the runner and its kernel): exit 130, a word on what was kept
    and how to resume, no kernel noise in the terminal, the MLflow run KILLED. SIGKILL leaves the lock and a
    RUNNING MLflow run behind: the next run of the id takes the lock over with a line saying so, ends that
    MLflow run as KILLED and reuses the finished steps."""
    from mlflow.tracking import MlflowClient

    _, executed, tmp = env
    store = f"sqlite:///{tmp / 'mlflow.db'}"
    tracked = {"MLFLOW_TRACKING_URI": store}

    def pipeline_runs():
        client = MlflowClient(tracking_uri=store)
        experiment = client.get_experiment_by_name("deepfake-detector")
        found = client.search_runs([experiment.experiment_id], "tags.`deepfake.kind` = 'pipeline'",
                                   order_by=["attributes.start_time ASC"])
        return [r.info.status for r in found]

    proc = _cli_run(tmp, env=tracked)
    _wait_for(lambda: "extract" in executed(), "the extract step")
    os.killpg(proc.pid, signal.SIGINT)
    out = _output_within(proc, 300, "after Ctrl-C")
    assert proc.returncode == 130, out
    assert "run r1 interrupted (Ctrl-C) during step extract: kept finished steps explore, and what step extract " \
           "had finished" in out
    assert "run the same command again to resume from there" in out
    assert "IPKernelApp" not in out and "without encryption" not in out and "Traceback" not in out
    assert pipeline_runs() == ["KILLED"]

    proc = _cli_run(tmp, env=tracked)
    _wait_for(lambda: executed().count("extract") == 2, "the second run's extract step")
    os.killpg(proc.pid, signal.SIGKILL)
    proc.communicate(timeout=60)
    assert pipeline_runs() == ["KILLED", "RUNNING"]

    (tmp / "go").touch()
    proc = _cli_run(tmp, env=tracked)
    out, _ = proc.communicate(timeout=300)
    assert proc.returncode == 0, out
    assert "taking over the lock of pid" in out and "that process is gone" in out
    assert pipeline_runs() == ["KILLED", "KILLED", "FINISHED"]
    assert executed() == ["explore", "extract", "extract", "extract", "train", "evaluate"]   # explore reused


def test_sigterm_stops_a_run_as_ctrl_c_does(env, capsys):
    run, executed, tmp = env

    def stop_when_extracting():
        _wait_for(lambda: "extract" in executed(), "the extract step")
        os.kill(os.getpid(), signal.SIGTERM)

    threading.Thread(target=stop_when_extracting, daemon=True).start()
    assert run("r1", f"extract.hold={tmp / 'go'}") == 128 + signal.SIGTERM
    assert "run r1 stopped by SIGTERM during step extract: kept finished steps explore" in capsys.readouterr().out
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL                    # the runner's handler is gone
    assert not (tmp / "runs/r1" / LOCK_FILE).exists()


def test_help_shows_the_gate_threshold_and_the_summary_says_undefined_with_why(capsys):
    with pytest.raises(SystemExit):
        main(["run", "--help"])
    assert f"(default: {steps.GATE_THRESHOLD})" in " ".join(capsys.readouterr().out.split())
    metrics = {f"{level}_{name}": 0.5 for level in ("video", "frame") for name in ("auc", "precision")}
    metrics["video_precision"] = None
    runner.print_metrics({"split": "test", "fakes": "split", "metrics": metrics,
                          "undefined_metrics": {"video_precision": "nothing is predicted fake"}})
    out = capsys.readouterr().out
    assert "precision=undefined" in out and "None" not in out
    assert "undefined: video_precision (nothing is predicted fake)" in out
