"""The Processing entry point, run locally as the container runs it, on small real notebooks.

``run_step.py`` is started as a subprocess with ``--no-install`` (the kit is
already installed here) and ``DEEPFAKE_SAGEMAKER_ROOT`` pointing at a temporary
folder that stands in for the container's root (resource config, exit message).
"""

import json
import os
import shutil
import subprocess
import sys
from importlib import metadata
from pathlib import Path, PurePosixPath

import pip
import pytest
from aws_server import free_port
from notebook_factory import make_notebook

from deepfake.core import paths
from deepfake.core.dependencies import requirement
from deepfake.orchestration import steps
from pipelines.deepfake import run_step
from pipelines.deepfake.bundle import ENTRY_POINT, KIT_DIR, build_bundle

RUN_STEP = Path(run_step.__file__)
SHARDED = next(iter(steps.SHARDED))             # the step that scales out (extract)
PARAMS = (
    'data_dir: str = "data"  # dataset\n'
    'videos_dir: str = "videos"  # explore output\n'
    'output_dir: str = "out"  # where to write\n'
    'frames_per_video: int = 16  # frames per video\n'
    f'{steps.SHARD_PARAMETER}: str = ""  # this instance\'s part\n'
    'rate: float = 0.5  # a float\n'
    'fast: bool = False  # a flag'
)
RECORD = ("import json, pathlib\n"
          "pathlib.Path(output_dir).mkdir(parents=True, exist_ok=True)\n"
          "values = dict(frames_per_video=frames_per_video, shard=shard, rate=rate, fast=fast)\n"
          "pathlib.Path(output_dir, 'params.json').write_text(json.dumps(\n"
          "    {k: [type(v).__name__, v] for k, v in values.items()}))")


@pytest.fixture()
def container(tmp_path):
    """A stand-in container root with this instance's resource config."""
    root = tmp_path / "ml"
    (root / "config").mkdir(parents=True)
    (root / "config" / "resourceconfig.json").write_text(
        json.dumps({"current_host": "algo-2", "hosts": ["algo-1", "algo-2"]}))
    return root


def notebooks(tmp_path, *body):
    folder = tmp_path / "notebooks"
    make_notebook(folder / steps.step(SHARDED).notebook, PARAMS, *body)
    return folder


def run(tmp_path, container, nb_dir, *args):
    cmd = [sys.executable, str(RUN_STEP), "--no-install", "--step", SHARDED, "--notebooks-dir", str(nb_dir),
           "--report-dir", str(tmp_path / "report"), "--param", "output_dir", str(tmp_path / "out"), *args]
    env = {**os.environ, "DEEPFAKE_SAGEMAKER_ROOT": str(container)}
    return subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)


@pytest.mark.slow
def test_string_arguments_are_typed_by_the_parameters_cell_and_the_shard_is_the_host(tmp_path, container):
    nb_dir = notebooks(tmp_path, RECORD)
    result = run(tmp_path, container, nb_dir, "--param", "frames_per_video", "8", "--param", "rate", "1",
                 "--param", "fast", "true", "--shard-param", steps.SHARD_PARAMETER)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    recorded = json.loads((tmp_path / "out" / "params.json").read_text())
    assert recorded == {"frames_per_video": ["int", 8], "shard": ["str", "algo-2"], "rate": ["float", 1.0],
                        "fast": ["bool", True]}
    notebook = steps.step(SHARDED).notebook
    report = tmp_path / "report" / "algo-2"                      # a sharded step's report, under its host's keys
    assert (report / notebook).is_file() and (report / Path(notebook).with_suffix(".html").name).is_file()
    assert not (container / "output" / "message").exists()


@pytest.mark.slow
def test_a_failing_cell_keeps_the_executed_notebook_and_exits_non_zero(tmp_path, container):
    """The exit message (SageMaker keeps 1 KB of it and fails a job whose message is not UTF-8) names the cell and
    the error, shortened without splitting a character, and where the executed notebook is in S3."""
    report = container / "processing" / "output" / "report"
    uri = "s3://b/deepfake/runs/exec1234abcd/extract/report"
    (container / "config" / "processingjobconfig.json").write_text(json.dumps({"ProcessingOutputConfig": {"Outputs": [
        {"OutputName": "report", "S3Output": {"LocalPath": "/opt/ml/processing/output/report", "S3Uri": uri}}]}}))
    nb_dir = notebooks(tmp_path, "print('before the failure')", "raise RuntimeError('no faces in shard: ' + 'é' * 700)")
    result = run(tmp_path, container, nb_dir, "--report-dir", str(report))
    assert result.returncode == run_step.EXIT_NOTEBOOK
    notebook = steps.step(SHARDED).notebook
    executed = json.loads((report / notebook).read_text())
    outputs = [o for cell in executed["cells"] if cell["cell_type"] == "code" for o in cell.get("outputs", [])]
    assert any(o.get("ename") == "RuntimeError" for o in outputs)
    assert any("before the failure" in "".join(o.get("text", "")) for o in outputs)
    assert (report / Path(notebook).with_suffix(".html").name).is_file()
    data = (container / "output" / "message").read_bytes()
    assert len(data) <= run_step.EXIT_MESSAGE_LIMIT
    message = data.decode("utf-8")                                  # strict: no character split
    assert message.startswith(f"step {SHARDED}: cell") and "raised RuntimeError: no faces in shard: éé" in message
    assert f"éé{run_step.ELLIPSIS}\n  executed notebook kept at {uri}/{notebook}\n" in message
    assert message.endswith(f"{uri}/{Path(notebook).with_suffix('.html').name}\n")


@pytest.mark.parametrize("size", [1000, 1021, 1022, 1023, 1024, 1025, 3000])
def test_the_exit_message_is_cut_at_1024_bytes_on_a_character_boundary(size):
    for char in ("é", "€", "😀"):                                   # 2, 3 and 4 bytes in UTF-8
        text = "x" * (size % 7) + char * (size // len(char.encode()))
        data = run_step.fit_exit_message(text)
        assert len(data) <= run_step.EXIT_MESSAGE_LIMIT and data.endswith(b"\n")
        kept = data.decode("utf-8")
        assert kept == f"{text}\n" or kept.rstrip("\n").endswith(run_step.ELLIPSIS)
    where = "\n  executed notebook kept at s3://b/p/report/02_extract_faces.ipynb"
    kept = run_step.fit_exit_message("step extract: cell In [5] raised ValueError: " + "é" * 2000 + where).decode()
    assert kept.endswith(f"{run_step.ELLIPSIS}{where}\n")           # the error is shortened, never where to look


@pytest.mark.slow
def test_the_install_says_which_index_failed_and_leaves_its_exit_message(tmp_path):
    """A job with no route to its package index (a locked-down VPC) fails at install with exit 3, and the exit
    message says so, although the kit, which spells the container layout, is not installed."""
    bundle = tmp_path / "code"                       # a bundle's layout, with what this failure reads of it
    (bundle / KIT_DIR / "src" / "deepfake" / "core").mkdir(parents=True)
    shutil.copy(RUN_STEP, bundle / ENTRY_POINT)
    shutil.copy(paths.__file__, bundle / KIT_DIR / "src" / "deepfake" / "core" / "paths.py")
    (bundle / "requirements.txt").write_text(f"{requirement('papermill')}\n")
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
    (tmp_path / "pip-only").mkdir()
    (tmp_path / "pip-only" / "pip").symlink_to(Path(pip.__file__).parent)      # pip, and not one package more
    root = tmp_path / "ml"
    dead = f"http://user:secret@127.0.0.1:{free_port()}/simple/"
    env = {**os.environ, "PYTHONPATH": str(tmp_path / "pip-only"), "DEEPFAKE_SAGEMAKER_ROOT": str(root),
           "PIP_INDEX_URL": dead, "PIP_RETRIES": "0", "PIP_TIMEOUT": "2"}
    result = subprocess.run([str(venv / "bin" / "python"), str(bundle / ENTRY_POINT), "--step", steps.STEPS[0].name,
                             "--report-dir", str(root / "report")], env=env, capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == run_step.EXIT_INSTALL, result.stdout[-2000:] + result.stderr[-2000:]
    message = (root / "output" / "message").read_text()
    assert message.startswith(f"step {steps.STEPS[0].name}: pip install failed")
    assert dead.replace("user:secret@", "") in message and "secret" not in message
    assert "pip_index_url or codeartifact_repository_arn" in message


def test_codeartifact_gives_pip_its_endpoint_with_a_fresh_token():
    """The token is fetched in the job (the definition never holds it), with the parameters of the real API."""
    import boto3
    from botocore.stub import Stubber

    arn = "arn:aws:codeartifact:eu-west-1:123456789012:repository/acme/pypi-store"
    client = boto3.client("codeartifact", region_name="eu-west-1", aws_access_key_id="x", aws_secret_access_key="x")
    with Stubber(client) as stub:
        stub.add_response("get_authorization_token", {"authorizationToken": "tok/en+=", "expiration": 0},
                          {"domain": "acme", "domainOwner": "123456789012", "durationSeconds": run_step.TOKEN_SECONDS})
        stub.add_response("get_repository_endpoint", {
            "repositoryEndpoint": "https://acme-123456789012.d.codeartifact.eu-west-1.amazonaws.com/pypi/pypi-store/"},
            {"domain": "acme", "domainOwner": "123456789012", "repository": "pypi-store", "format": "pypi"})
        url = run_step.codeartifact_index_url(arn, client)
    assert url == ("https://aws:tok%2Fen%2B%3D@acme-123456789012.d.codeartifact.eu-west-1.amazonaws.com"
                   "/pypi/pypi-store/simple/")
    assert run_step.index_name(url) == "https://acme-123456789012.d.codeartifact.eu-west-1.amazonaws.com/pypi/pypi-store/simple/"
    with pytest.raises(run_step.InstallError, match="is not a CodeArtifact repository ARN"):
        run_step.codeartifact_index_url("arn:aws:s3:::bucket")


@pytest.mark.slow
@pytest.mark.parametrize(("args", "expected"), [
    (["--param", "frames_per_video", "many"], "frames_per_video='many' is not a valid int"),
    (["--param", "frame_per_video", "8"], "has no parameter(s) frame_per_video"),
])
def test_bad_parameters_exit_2_naming_them(tmp_path, container, args, expected):
    result = run(tmp_path, container, notebooks(tmp_path, RECORD), *args)
    assert result.returncode == run_step.EXIT_CONFIG
    assert expected in result.stdout
    assert expected in (container / "output" / "message").read_text()


@pytest.mark.slow
def test_shard_outside_sagemaker_is_a_clear_error(tmp_path, container):
    (container / "config" / "resourceconfig.json").unlink()
    result = run(tmp_path, container, notebooks(tmp_path, RECORD), "--shard-param", steps.SHARD_PARAMETER)
    assert result.returncode == run_step.EXIT_CONFIG
    assert "resourceconfig.json is missing" in result.stdout


def test_unknown_step_lists_the_steps(tmp_path, container):
    cmd = [sys.executable, str(RUN_STEP), "--no-install", "--step", "clean", "--report-dir", str(tmp_path)]
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=120,
                            env={**os.environ, "DEEPFAKE_SAGEMAKER_ROOT": str(container)})
    assert result.returncode == run_step.EXIT_CONFIG
    assert "unknown step 'clean'" in result.stdout and ", ".join(s.name for s in steps.STEPS) in result.stdout


def test_the_image_torch_and_numpy_are_pinned():
    pins = run_step.pinned_constraints()
    assert f"torch=={metadata.version('torch')}" in pins
    assert f"numpy=={metadata.version('numpy')}" in pins


def test_requirements_leave_torch_and_numpy_to_the_image():
    text = build_bundle(steps.STEPS[0].notebook).files["requirements.txt"].decode()
    lines = [line.split("#")[0].strip() for line in text.splitlines()]
    names = {line.split("=")[0].split(">")[0].split("<")[0].split("[")[0].strip().lower() for line in lines if line}
    assert "papermill" in names and not names & {"torch", "numpy", "torchvision"}


def write_bundle(folder: Path, notebook: str) -> Path:
    """A step's code bundle as the container's code input holds it."""
    for name, data in build_bundle(notebook).files.items():
        path = folder / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    return folder


@pytest.mark.slow
def test_the_shipped_kit_installs_with_pip_and_no_index(tmp_path, monkeypatch):
    """The bundle's kit folder is what run_step.py pip-installs in the container, with the image's setuptools:
    nothing comes from the index (here a dead one), which a locked-down job may not reach."""
    bundle = write_bundle(tmp_path / "bundle", steps.step("train").notebook)
    monkeypatch.setenv("PIP_INDEX_URL", f"http://127.0.0.1:{free_port()}/simple/")
    monkeypatch.setenv("PIP_RETRIES", "0")
    site = tmp_path / "site"
    run_step.install_kit(bundle / KIT_DIR, "--quiet", "--target", str(site))
    assert (site / "deepfake" / "orchestration" / "steps.py").read_bytes() == Path(steps.__file__).read_bytes()
    assert (site / "deepfake" / "orchestration" / "notebook.py").is_file()


def test_tracking_names_the_pipeline_run_after_the_execution_read_from_the_job(tmp_path, container, monkeypatch):
    """The jobs of one execution share no folder: the pipeline run's name (the execution id), the data's S3
    URI and the code's commit come from the job's own configuration, never from arguments that would change
    with each execution and defeat the step cache. An empty tracking URI turns tracking off."""
    from deepfake.core import paths
    from deepfake.orchestration import tracking

    data, report = "/opt/ml/processing/input/data", "/opt/ml/processing/output/report"
    (container / "config" / "processingjobconfig.json").write_text(json.dumps({
        "ProcessingInputs": [{"InputName": "data", "S3Input": {"LocalPath": data, "S3Uri": "s3://b/deepfake/data/"}},
                             {"InputName": "code", "S3Input": {"LocalPath": "/opt/ml/processing/input/code",
                                                               "S3Uri": "s3://b/deepfake/code/abc/"}}],
        "ProcessingOutputConfig": {"Outputs": [
            {"OutputName": "report", "S3Output": {"LocalPath": report,
                                                  "S3Uri": "s3://b/deepfake/runs/exec1234abcd/explore/report"}}]},
    }))
    marker = tmp_path / "BUNDLE.json"
    marker.write_text(json.dumps({"sha256": "c0de", "git_commit": "f00d"}))
    monkeypatch.setattr(paths, "SAGEMAKER_ROOT", PurePosixPath(container))
    monkeypatch.setattr(run_step, "MARKER", marker)
    for name in ("MLFLOW_TRACKING_URI", tracking.RUN_NAME_ENV, tracking.RUN_TAGS_ENV):
        monkeypatch.setenv(name, "")      # recorded, so what track() sets is undone after the test
        monkeypatch.delenv(name)
    arn = "arn:aws:sagemaker:us-east-1:123456789012:mlflow-tracking-server/team"
    run_step.track(arn, Path(report), data)
    assert os.environ["MLFLOW_TRACKING_URI"] == arn and os.environ[tracking.RUN_NAME_ENV] == "exec1234abcd"
    assert json.loads(os.environ[tracking.RUN_TAGS_ENV]) == {
        "deepfake.data": "s3://b/deepfake/data/", "deepfake.code_sha256": "c0de", tracking.GIT_COMMIT: "f00d"}
    run_step.track("", Path(report), data)
    assert os.environ["MLFLOW_TRACKING_URI"] == tracking.OFF


def bundle_dir(tmp_path, files):
    """A code input laid out as bundle.py lays it: the lock and kit/src/deepfake/<files>."""
    code = tmp_path / "code"
    (code / "requirements.lock").parent.mkdir(parents=True, exist_ok=True)
    (code / "requirements.lock").write_text("pandas==3.0.6\n")
    for name, text in files.items():
        path = code / "kit" / "src" / "deepfake" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return code


def test_an_image_holding_the_same_lock_and_kit_files_installs_nothing_and_says_so(tmp_path):
    code = bundle_dir(tmp_path, {"__init__.py": "__version__ = '9'\n", "core/paths.py": "X = 1\n"})
    image = tmp_path / "image"                      # the installed package: more modules than the step ships
    for name, text in {"__init__.py": "__version__ = '9'\n", "core/paths.py": "X = 1\n", "extra.py": ""}.items():
        (image / name).parent.mkdir(parents=True, exist_ok=True)
        (image / name).write_text(text)
    manifest = tmp_path / "image.json"
    manifest.write_text(json.dumps(run_step.image_manifest(code / "requirements.lock", image, "9")))

    plan = run_step.install_plan(code, manifest)
    assert (plan.requirements, plan.kit) == (False, False)
    assert "nothing to install" in plan.reason and "kit 9" in plan.reason

    (code / "kit" / "src" / "deepfake" / "core" / "paths.py").write_text("X = 2\n")        # the code moved on
    plan = run_step.install_plan(code, manifest)
    assert (plan.requirements, plan.kit) == (False, True)
    assert "core/paths.py" in plan.reason and "shipped kit only" in plan.reason

    (code / "requirements.lock").write_text("pandas==3.0.7\n")                            # the runtime moved on
    plan = run_step.install_plan(code, manifest)
    assert (plan.requirements, plan.kit) == (True, True) and "requirements lock" in plan.reason


@pytest.mark.parametrize("content", [None, "{not json", '{"kit_version": "9"}'])
def test_without_a_readable_image_manifest_a_step_installs_everything(tmp_path, content):
    code = bundle_dir(tmp_path, {"__init__.py": ""})
    manifest = tmp_path / "image.json"
    if content is not None:
        manifest.write_text(content)
    plan = run_step.install_plan(code, manifest)
    assert (plan.requirements, plan.kit) == (True, True)
    assert str(manifest) in plan.reason and ("none" in plan.reason if content is None else "unreadable" in plan.reason)


@pytest.mark.slow
def test_the_bundle_ships_the_requirements_lock_and_the_lock_is_current():
    from pipelines.deepfake.bundle import LOCK
    from pipelines.deepfake.image import check_lock, lock_path, locked

    check_lock()                                    # resolved from the requirements the steps derive today
    bundle = build_bundle(steps.step(SHARDED).notebook)
    assert bundle.files[LOCK] == lock_path().read_bytes()
    pins = locked()
    assert "torch" not in pins and "numpy" not in pins          # the image's own
    for line in bundle.files["requirements.txt"].decode().splitlines():
        if line and not line.startswith("#"):
            from packaging.requirements import Requirement

            req = Requirement(line)
            assert req.specifier.contains(pins[req.name.lower()], prereleases=True), line


@pytest.mark.aws
def test_restore_downloads_an_earlier_checkpoint_and_nothing_is_fine(tmp_path):
    """--restore FOLDER=URI: what a Continuous output left in S3 (a training checkpoint) comes back before the
    notebook runs; a first run finds nothing there and goes on."""
    moto = pytest.importorskip("moto")
    import boto3

    from deepfake.core.errors import ConfigError

    with moto.mock_aws():
        s3 = boto3.client("s3", region_name="us-east-1")
        s3.create_bucket(Bucket="ckpt")
        assert run_step.restore(f"{tmp_path / 'first'}=s3://ckpt/checkpoints/p/train") == 0
        s3.put_object(Bucket="ckpt", Key="checkpoints/p/train/checkpoint.pt", Body=b"state")
        assert run_step.restore(f"{tmp_path / 'again'}=s3://ckpt/checkpoints/p/train") == 1
        assert (tmp_path / "again" / "checkpoint.pt").read_bytes() == b"state"
    with pytest.raises(ConfigError, match="FOLDER=s3://"):
        run_step.restore(str(tmp_path))
