"""The four real notebooks: parameters match the stage configs, and the whole
local pipeline runs through the real `deepfake` command on tiny demo data."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from deepfake.core import paths
from deepfake.core.files import sha256_file
from deepfake.data.manifest import read_manifest, read_sidecar
from deepfake.media.extraction import ExtractConfig
from deepfake.modeling.artifact import read_artifact_config
from deepfake.orchestration import steps
from deepfake.orchestration.notebook import notebook_parameters
from deepfake.scoring.schema import validate_evaluation
from deepfake.stages.calibrate import CalibrateConfig
from deepfake.stages.evaluate import EvalConfig
from deepfake.stages.explore import ExploreConfig
from deepfake.stages.train import TrainConfig

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = {"explore": (ExploreConfig,), "extract": (ExtractConfig,), "train": (TrainConfig,),
           "evaluate": (EvalConfig, CalibrateConfig)}
# Parameters a notebook takes beyond its stage configs and its input/output wiring: the shard, recalibration,
# the data's digest, packed crops (where they go, grouped for which mode, where a later step finds them), the
# checkpoint and the sharded evaluation's logits.
EXTRA = {"explore": {"data_digest"}, "extract": {"shard", "pack_mb", "mode", "crops_dir"},
         "train": {"crops_dir", "checkpoint_dir"}, "evaluate": {"recalibrate", "crops_dir", "logits_dir"}}


@pytest.mark.parametrize("step", steps.STEPS, ids=lambda s: s.name)
def test_notebook_parameters_are_the_stage_config_plus_wiring(step):
    declared = notebook_parameters(ROOT / "notebooks" / step.notebook)
    wiring = set(step.inputs) | {"output_dir"}
    fields = {name for config in CONFIGS[step.name] for name in config.field_names()}
    assert set(declared) == fields | wiring | EXTRA.get(step.name, set())
    for config in CONFIGS[step.name]:
        defaults = config()
        for name in config.field_names():
            assert declared[name]["default"] == getattr(defaults, name), f"{step.notebook}: {name} default differs"
            assert declared[name]["help"], f"{step.notebook}: {name} has no help comment"


def test_papermill_help_documents_every_parameter():
    out = subprocess.run([str(Path(sys.executable).parent / "papermill"), "--help-notebook",
                          str(ROOT / "notebooks" / "03_train.ipynb")], capture_output=True, text=True, check=True)
    assert "epochs" in out.stdout and "unfreeze_blocks" in out.stdout


def _deepfake(*args, cwd, env_extra):
    env = {**os.environ, **env_extra}
    return subprocess.run([str(Path(sys.executable).parent / "deepfake"), *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=900)


@pytest.fixture(scope="module")
def tracked(tiny_data, tmp_path_factory):
    """The tiny pipeline three times into one MLflow store: t1; t2 unchanged (every step reused, the model
    already registered); t3 as README's tracking-detector line writes it, with another frame-to-video
    aggregation too (extraction, training and evaluation rerun)."""
    root = tmp_path_factory.mktemp("tracked")
    env = {"DEEPFAKE_REGISTRY": str(root / "registry"), "DEEPFAKE_HOME": str(ROOT),
           "DEEPFAKE_RUNS": str(root / "runs"), "MLFLOW_TRACKING_URI": f"sqlite:///{root / 'mlflow.db'}"}
    runs = {}
    t3 = ("--set", "extract.detector=mtcnn-track", "--set", "evaluate.aggregation=median")
    for run_id, more in (("t1", ()), ("t2", ()), ("t3", t3)):
        runs[run_id] = _deepfake("run", "--data", str(tiny_data), "--run-id", run_id, "--profile", "tiny",
                                 "--threshold", "0", *more, cwd=root, env_extra=env)
        assert runs[run_id].returncode == 0, runs[run_id].stdout[-3000:] + runs[run_id].stderr[-3000:]
    return root, env, runs


@pytest.mark.slow
def test_local_pipeline_runs_the_four_notebooks_and_registers(tiny_data, tracked):
    root, env, runs = tracked
    proc, run_dir = runs["t1"], root / "runs" / "t1"
    for s in steps.STEPS:
        assert (run_dir / s.name / s.notebook).is_file()
        assert (run_dir / s.name / s.notebook.replace(".ipynb", ".html")).is_file()
    assert (run_dir / "explore" / paths.VIDEOS_MANIFEST).is_file()
    assert (run_dir / "extract" / paths.FACES_MANIFEST).is_file()
    assert (run_dir / "train" / "model" / "model.safetensors").is_file()
    assert (run_dir / "train" / "model.tar.gz").is_file()
    assert (run_dir / "train" / "figures" / "pseudo_fakes.png").is_file()    # the gallery of every family
    evaluation = json.loads((run_dir / "evaluate" / paths.EVALUATION).read_text())
    validate_evaluation(evaluation)
    assert evaluation["training"]["mode"] == "self_blend" and evaluation["fakes"] == "all"
    assert evaluation["protocol"]["follows"] == "official" and evaluation["protocol"]["moved"]["videos"] == 0
    assert f"dataset: dfdc layout at {tiny_data}: 12 videos" in proc.stdout                 # what was read
    assert "dfdc_train_part_0/: 12 videos (6 real, 6 fake)" in proc.stdout
    assert "splits follow the official protocol: train " in proc.stdout                   # and how it was split
    for s in steps.STEPS:                                     # every report hides its code, none only some
        report = (run_dir / s.name / s.notebook.replace(".ipynb", ".html")).read_text()
        assert "from deepfake" not in report and "config = " not in report, s.name
        for block in report.split("application/vnd.jupyter.stderr")[1:]:   # progress is no red error block
            assert "videos to do" not in block.split("</div>", 1)[0], s.name
    assert "metrics (test split + the fakes of every split)" in proc.stdout and "registered model" in proc.stdout
    assert "unseen-manipulation video AUC" in proc.stdout and "video ECE" in proc.stdout
    gated = read_artifact_config(run_dir / "evaluate" / paths.MODEL_ARCHIVE)   # what was registered
    assert gated["scoring"] == evaluation["scoring"]
    # the threshold is chosen on the val split's real videos, which training scored with the saved model
    assert (run_dir / "train" / paths.VAL_PREDICTIONS).is_file()
    assert evaluation["operating_point"]["method"] == "target_fpr"
    assert gated["operating_point"]["threshold"] == evaluation["threshold"] == gated["scoring"]["threshold"]
    # every sidecar names the files its table was made from, with their sha256
    videos_csv, faces_csv = run_dir / "explore" / paths.VIDEOS_MANIFEST, run_dir / "extract" / paths.FACES_MANIFEST
    assert list(read_sidecar(videos_csv)["inputs"]) == [str(tiny_data / "dfdc_train_part_0" / "metadata.json")]
    assert read_sidecar(faces_csv)["inputs"] == {str(videos_csv): sha256_file(videos_csv)}
    assert read_sidecar(run_dir / "train" / paths.HISTORY)["inputs"] == {str(faces_csv): sha256_file(faces_csv)}
    predictions = read_sidecar(run_dir / "evaluate" / paths.VIDEO_PREDICTIONS)["inputs"]
    assert str(faces_csv) in predictions and str(run_dir / "train" / "model" / "model.safetensors") in predictions
    listed = json.loads(_deepfake("registry", "list", "--json", cwd=root, env_extra=env).stdout)
    assert [v["status"] for v in listed] == ["PendingManualApproval"] * 2          # t1's model, then t3's

    # t3 detected with mtcnn-track: its faces, the model it trained and the model it registered say so
    t3_dir = root / "runs" / "t3"
    assert read_sidecar(t3_dir / "extract" / paths.FACES_MANIFEST)["config"]["detector"] == "mtcnn-track"
    assert read_artifact_config(t3_dir / "evaluate" / paths.MODEL_ARCHIVE)["extract"]["detector"] == "mtcnn-track"
    assert gated["extract"]["detector"] == "mtcnn"

    again = runs["t2"]                  # unchanged and fully cached: the same model is not registered again
    assert again.stdout.count("reused from cache") == 4
    assert "model already registered: deepfake-detector v1" in again.stdout and "registered model" not in again.stdout
    assert f"mlflow ui --backend-store-uri {env['MLFLOW_TRACKING_URI']}" in again.stdout   # works from any folder


def as_celebdf(demo: Path, out: Path, listed: int = 2) -> Path:
    """The videos of a demo dataset in Celeb-DF v2's layout: Celeb-real/, Celeb-synthesis/ (a fake of
    ``id<i>_0000`` is ``id<i>_id<n>_0000``) and a testing list naming a real and a fake of each of the first
    ``listed`` originals (Celeb-DF's convention: 1 = real, 0 = fake)."""
    meta = json.loads((demo / "dfdc_train_part_0" / "metadata.json").read_text())
    reals = sorted(name for name, info in meta.items() if info["label"] == "REAL")
    names = {real: f"Celeb-real/id{i}_0000.mp4" for i, real in enumerate(reals)}
    fakes = sorted(name for name, info in meta.items() if info["label"] == "FAKE")
    for n, fake in enumerate(fakes):
        i = reals.index(meta[fake]["original"])
        names[fake] = f"Celeb-synthesis/id{i}_id{50 + n}_0000.mp4"
    for source, name in names.items():
        (out / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(demo / "dfdc_train_part_0" / source, out / name)
    test = [f"1 {names[r]}" for r in reals[:listed]]
    test += [f"0 {names[f]}" for f in fakes if reals.index(meta[f]["original"]) < listed][:listed]
    (out / "List_of_testing_videos.txt").write_text("\n".join(test) + "\n")
    return out


@pytest.mark.slow
def test_dataset_mode_then_cross_dataset_evaluation_with_the_model(tiny_data, tmp_path):
    """`--set train.mode=dataset` trains on the dataset's fakes; `--model` evaluates that model on another
    dataset, README's command on a Celeb-DF tree (made with two manipulations it never saw), without training
    or registering, every video scored, the Celeb-DF test list kept as given."""
    from deepfake.demo.build import build_demo_dataset

    env = {"DEEPFAKE_REGISTRY": str(tmp_path / "registry"), "DEEPFAKE_HOME": str(ROOT),
           "DEEPFAKE_RUNS": str(tmp_path / "runs")}
    proc = _deepfake("run", "--data", str(tiny_data), "--run-id", "d", "--profile", "tiny", "--no-register",
                     "--set", "train.mode=dataset", cwd=tmp_path, env_extra=env)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    trained = json.loads((tmp_path / "runs" / "d" / "evaluate" / paths.EVALUATION).read_text())
    assert trained["training"]["mode"] == "dataset" and trained["fakes"] == "split"
    assert trained["training"]["manipulations_seen"]

    other = build_demo_dataset(tmp_path / "other", n_videos=8, seed=2, methods=("blendswap", "warp"),
                               progress=False)
    celebdf = as_celebdf(other, tmp_path / "celebdf")
    model = tmp_path / "runs" / "d" / "evaluate" / paths.MODEL_ARCHIVE
    cross = _deepfake("run", "--data", "celebdf", "--model", str(model.relative_to(tmp_path)), "--run-id", "x",
                      "--profile", "tiny", cwd=tmp_path, env_extra=env)
    assert cross.returncode == 0, cross.stdout[-3000:] + cross.stderr[-3000:]
    assert "3 steps" in cross.stdout and "nothing is registered" in cross.stdout
    run_dir = tmp_path / "runs" / "x"
    assert not (run_dir / "train").exists()
    evaluation = json.loads((run_dir / "evaluate" / paths.EVALUATION).read_text())
    assert evaluation["split"] == "all"
    assert evaluation["model"]["archive_sha256"] == sha256_file(model)        # the model by content, not path
    assert evaluation["counts"]["videos_scored"] == 8                       # every video of the other dataset
    manipulations = {r["manipulation"]: r["seen_in_training"] for r in evaluation["per_manipulation"]}
    assert manipulations == {"none": None, "celebdf": False}
    assert f"dataset: celebdf layout at {celebdf}: 8 videos" in cross.stdout
    videos = read_manifest(run_dir / "explore" / paths.VIDEOS_MANIFEST)
    listed = [line.split()[1] for line in (celebdf / "List_of_testing_videos.txt").read_text().splitlines()]
    assert evaluation["protocol"]["follows"] == "official" and evaluation["protocol"]["splits"]["test"] == len(listed)
    assert sorted(videos.loc[videos["split"] == "test", "path"]) == sorted(listed)   # exactly the official list
    extracted = read_sidecar(run_dir / "extract" / paths.FACES_MANIFEST)["config"]
    settings = read_artifact_config(model)["extract"]
    assert {k: v for k, v in extracted.items() if k != "workers"} == {k: v for k, v in settings.items()
                                                                      if k != "workers"}
    assert not list((tmp_path / "registry").rglob("version.json"))           # nothing registered


@pytest.mark.slow
def test_runs_are_compared_in_mlflow(tiny_data, tracked):
    """One MLflow run per pipeline run with each step's run nested in it: settings, video AUC, per-epoch
    curves, figures and reports; the registry names the run its model came from."""
    from mlflow.tracking import MlflowClient

    from deepfake.core.vocabulary import EXPERIMENT

    root, env, _ = tracked
    client = MlflowClient(env["MLFLOW_TRACKING_URI"])
    experiment = client.get_experiment_by_name(EXPERIMENT).experiment_id
    parents = {r.info.run_name: r for r in client.search_runs(
        [experiment], "tags.`deepfake.kind` = 'pipeline'", order_by=["attributes.start_time ASC"])}
    assert list(parents) == ["t1", "t2", "t3"] and all(r.info.status == "FINISHED" for r in parents.values())
    t1, t2, t3 = parents["t1"], parents["t2"], parents["t3"]
    assert (t1.data.params["evaluate.aggregation"], t3.data.params["evaluate.aggregation"]) == ("mean", "median")
    assert t1.data.params["train.epochs"] == t3.data.params["train.epochs"] == "1"
    assert t1.data.tags["deepfake.data"] == str(tiny_data)
    assert t1.data.tags["mlflow.source.git.commit"] and t1.data.tags["deepfake.kit_version"]
    for run_id, parent in (("t1", t1), ("t3", t3)):
        evaluation = json.loads((root / "runs" / run_id / "evaluate" / paths.EVALUATION).read_text())
        assert parent.data.metrics["test.video_auc"] == pytest.approx(evaluation["metrics"]["video_auc"])
        assert parent.data.tags["deepfake.evaluated_on"] == "test split + the fakes of every split"
        assert parent.data.tags["deepfake.model_sha256"] == evaluation["model"]["sha256"]
        assert parent.data.tags["deepfake.model_version"] == evaluation["model"]["version"]
        (dataset,) = parent.inputs.dataset_inputs
        videos = root / "runs" / run_id / "explore" / paths.VIDEOS_MANIFEST
        assert (dataset.dataset.name, dataset.dataset.digest) == (tiny_data.name, sha256_file(videos)[:12])

    def children(parent):
        found = client.search_runs([experiment], f"tags.mlflow.parentRunId = '{parent.info.run_id}'")
        named = {r.info.run_name: r for r in found}
        assert all(name.startswith(parent.info.run_name + "/") for name in named)    # t1/train: run and step
        return {name.split("/", 1)[1]: r for name, r in named.items()}

    steps_t1, steps_t2, steps_t3 = children(t1), children(t2), children(t3)
    assert set(steps_t1) == set(steps_t2) == set(steps_t3) == {s.name for s in steps.STEPS}
    artifacts = {name: {a.path for a in client.list_artifacts(r.info.run_id)} for name, r in steps_t1.items()}
    assert {"figures", "report"} <= artifacts["explore"] and {"figures", "model", "report"} <= artifacts["train"]
    assert {"figures/roc.png", "figures/confusion.png"} <= {
        a.path for a in client.list_artifacts(steps_t3["evaluate"].info.run_id, "figures")}
    assert "report/04_evaluate.html" in {a.path for a in client.list_artifacts(steps_t3["evaluate"].info.run_id,
                                                                               "report")}
    history = client.get_metric_history(steps_t1["train"].info.run_id, "train_loss")
    assert [m.step for m in history] == [1]                                   # one value per epoch
    evaluation = json.loads((root / "runs" / "t1" / "evaluate" / paths.EVALUATION).read_text())
    for row in evaluation["per_manipulation"]:                                # per manipulation too
        assert f"test.manipulation.{row['manipulation']}.accuracy" in steps_t1["evaluate"].data.metrics
    trained = read_artifact_config(root / "runs" / "t1" / "train" / paths.MODEL_DIR)
    assert steps_t1["train"].data.tags["deepfake.model_sha256"] == trained["weights_sha256"]
    assert steps_t1["train"].data.tags["deepfake.model_archive_sha256"] == sha256_file(
        root / "runs" / "t1" / "train" / paths.MODEL_ARCHIVE)
    assert client.get_experiment(experiment).tags["mlflow.experimentKind"] == "custom_model_development"
    # t2 reused every step: its runs name the runs that made the files, and carry their settings
    assert steps_t2["train"].data.tags["deepfake.reused_run"] == steps_t1["train"].info.run_id
    assert steps_t2["train"].data.params["epochs"] == "1" and t2.data.params["train.epochs"] == "1"
    # the registry and MLflow agree on where each version came from
    versions = [json.loads(p.read_text()) for p in sorted((root / "registry").rglob("version.json"))]
    assert [v["source"]["mlflow_run_id"] for v in versions] == [t1.info.run_id, t3.info.run_id]
    assert versions[0]["source"]["mlflow_step_run_id"] == steps_t1["evaluate"].info.run_id
    assert t1.data.tags["deepfake.registered"] == "deepfake-detector v1"
    assert t2.data.tags["deepfake.registered"] == "deepfake-detector v1 (already registered)"


@pytest.mark.slow
def test_mlflow_ui_opens_the_printed_address_on_the_runs_table_with_their_dataset(tracked, tiny_data, tmp_path):
    """What a data scientist sees: `mlflow ui` on the store, the address the run printed, in headless Chromium:
    the runs table (not the GenAI view's traces) with every pipeline run and the Dataset column filled."""
    import re
    import time
    import urllib.request

    from aws_server import free_port

    chromium = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
    if chromium is None:
        pytest.skip("no Chromium to open mlflow ui (apt-get install -y chromium)")
    root, env, runs = tracked
    (address,) = re.findall(r"then open (http://\S+)", runs["t2"].stdout)
    port = free_port()
    address = address.replace("127.0.0.1:5000", f"127.0.0.1:{port}")
    ui = subprocess.Popen([str(Path(sys.executable).parent / "mlflow"), "ui", "--backend-store-uri",
                           env["MLFLOW_TRACKING_URI"], "--port", str(port), "--workers", "1"],
                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=tmp_path)
    try:
        deadline = time.monotonic() + 300
        while True:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=5)
                break
            except OSError:
                assert ui.poll() is None and time.monotonic() < deadline, "mlflow ui did not start"
                time.sleep(2)
        dom = subprocess.run([chromium, "--headless", "--no-sandbox", "--disable-gpu", "--virtual-time-budget=30000",
                              "--dump-dom", address], capture_output=True, text=True, timeout=300, check=True).stdout
    finally:
        ui.terminate()
        ui.wait(timeout=60)
    assert all(f">{run_id}<" in dom for run_id in ("t1", "t2", "t3")), address
    videos = root / "runs" / "t1" / "explore" / paths.VIDEOS_MANIFEST
    assert f"{tiny_data.name} ({sha256_file(videos)[:12]})" in dom                # the Dataset column


@pytest.mark.slow
def test_the_reports_read_well_in_a_browser(tracked, tmp_path):
    """The four HTML reports of a real run, opened in headless Chromium: each renders (a screenshot of
    substance) and shows tables, not Python dicts, NaN or the old `undefined` column."""
    chromium = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
    if chromium is None:
        pytest.skip("no Chromium to render the reports (apt-get install -y chromium)")
    root, _, _ = tracked
    for step in steps.STEPS:
        html = root / "runs" / "t1" / step.name / step.notebook.replace(".ipynb", ".html")
        text = html.read_text()
        assert "{'" not in text and ">NaN<" not in text and ">undefined<" not in text, html
        png = tmp_path / f"{step.name}.png"
        subprocess.run([chromium, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
                        f"--screenshot={png}", "--window-size=1280,3000", html.as_uri()],
                       capture_output=True, timeout=120, check=True)
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 50_000, png
    evaluate_html = (root / "runs" / "t1" / "evaluate" / "04_evaluate.html").read_text()
    assert "videos evaluated" in evaluate_html and "AUC vs reals" in evaluate_html


@pytest.mark.slow
@pytest.mark.parametrize("step", steps.STEPS, ids=lambda s: s.name)
def test_plain_papermill_rejects_an_unknown_parameter_with_the_known_ones(step, tmp_path):
    """papermill alone only warns about an unknown parameter: the notebook's config cell refuses it."""
    proc = subprocess.run([str(Path(sys.executable).parent / "papermill"), str(ROOT / "notebooks" / step.notebook),
                           str(tmp_path / "out.ipynb"), "-p", "output_dir", str(tmp_path / "out"), "-p", "bogus", "3",
                           "-k", "python3"], capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert proc.returncode != 0
    assert "ConfigError" in proc.stderr and "no parameter(s) bogus" in proc.stderr
    assert "output_dir" in proc.stderr.rsplit("known parameters: ", 1)[1]          # the message, not the code


@pytest.mark.slow
def test_the_explore_notebooks_own_commands_run_as_written(tiny_data, tmp_path):
    """The commands the explore notebook documents, run as written from notebooks/ (only the data folder is
    tiny): a dataset to train on; a small one to score with `-p mode evaluate`, which without it is refused
    with the cause and that fix. Outputs land in the output_dir given, relative to the project folder."""
    import re

    notebook = ROOT / "notebooks" / "01_explore_data.ipynb"
    intro = "".join(json.loads(notebook.read_text())["cells"][0]["source"])
    (command,) = re.findall(r"`(papermill [^`]+)`", intro)
    extra = re.search(r"add `(-p mode evaluate)`", intro).group(1)
    project = tmp_path / "project"
    (project / "notebooks").mkdir(parents=True)
    shutil.copy(notebook, project / "notebooks")
    from test_catalogs import make_dfdc

    small = make_dfdc(tmp_path / "small")                                  # two originals: too few to train on
    env = {**os.environ, "DEEPFAKE_HOME": str(project)}

    def papermill(line, data):
        args = line.replace("/data/dfdc", str(data)).split()
        return subprocess.run([str(Path(sys.executable).parent / args[0]), *args[1:]], capture_output=True,
                              text=True, timeout=600, cwd=project / "notebooks", env=env)

    out = project / "runs" / "mine" / "explore"
    assert papermill(command, tiny_data).returncode == 0
    assert read_manifest(out / paths.VIDEOS_MANIFEST)["split"].tolist().count("test") > 0
    refused = papermill(command, small)
    assert refused.returncode != 0 and "Why: the 6 videos come from 2 original(s)" in refused.stderr
    assert "-p mode evaluate" in refused.stderr.rsplit("DataError", 1)[1]
    assert papermill(f"{command} {extra}", small).returncode == 0
    assert len(read_manifest(out / paths.VIDEOS_MANIFEST)) == 6
    assert sorted(p.name for p in project.iterdir()) == ["notebooks", "runs"]   # nothing outside output_dir


@pytest.mark.slow
def test_plain_papermill_logs_the_step_to_mlflow(tiny_data, tmp_path):
    """Run by hand with papermill, a notebook logs its step nested in a run named after its run folder."""
    from mlflow.tracking import MlflowClient

    from deepfake.core.vocabulary import EXPERIMENT

    store = f"sqlite:///{tmp_path / 'mlflow.db'}"
    out = tmp_path / "runs" / "mine" / "explore"
    proc = subprocess.run([str(Path(sys.executable).parent / "papermill"), str(ROOT / "notebooks" / "01_explore_data.ipynb"),
                           str(tmp_path / "out.ipynb"), "-p", "data_dir", str(tiny_data), "-p", "output_dir", str(out),
                           "-k", "python3"], capture_output=True, text=True, timeout=300, cwd=tmp_path,
                          env={**os.environ, "MLFLOW_TRACKING_URI": store})
    assert proc.returncode == 0, proc.stderr[-3000:]
    client = MlflowClient(store)
    experiment = client.get_experiment_by_name(EXPERIMENT).experiment_id
    (parent,) = client.search_runs([experiment], "tags.`deepfake.kind` = 'pipeline'")
    (child,) = client.search_runs([experiment], f"tags.mlflow.parentRunId = '{parent.info.run_id}'")
    assert parent.info.run_name == "mine" and child.info.run_name == "mine/explore"
    assert sorted(p.name for p in out.parent.iterdir()) == ["explore"]     # nothing written beside the step
    assert parent.data.tags["deepfake.data"] == str(tiny_data) and parent.data.params["explore.seed"] == "0"
    assert child.data.metrics["videos"] == 12 and child.data.params["data_dir"] == str(tiny_data)
    assert {"figures", "outputs"} <= {a.path for a in client.list_artifacts(child.info.run_id)}
