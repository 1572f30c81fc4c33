"""Experiment tracking with MLflow: one run per pipeline run, a nested run per step.

Data scientists compare runs in MLflow (locally ``mlflow ui --backend-store-uri
sqlite:///mlflow.db``; in SageMaker a managed MLflow tracking server). What a
step logs is read from what it wrote, so a notebook run by hand, by papermill,
by ``deepfake run`` or by a SageMaker Processing job logs the same things:

- the pipeline's run (the parent), named after the run id or the pipeline
  execution id: git commit, data folder or S3 URI, kit version, each step's
  settings as ``<step>.<setting>`` and the evaluation's headline metrics;
- each step's run, nested in it and named ``<run>/<step>`` (``demo/train``): its
  settings; its metrics (the data profile, the extraction's counts, loss, accuracy
  and learning rate per epoch, every metric of ``evaluation.json`` under the name of
  the split it was measured on, ``test.video_auc`` or ``all.video_auc``, per
  manipulation and per aggregation too); its figures, small output tables, the HTML
  report and, for training, the model;
- on every run that made or used a model, the model's version and sha256; on every
  run, the videos table it used as an MLflow dataset input (named after the data
  folder, its digest the table's sha256), so ``mlflow ui`` shows the Dataset column.

The experiment is tagged as model training (``mlflow.experimentKind``: what MLflow
3.x UIs before the GenAI / Model training switch, and Databricks, open it by); MLflow
3.17's ``mlflow ui`` opens every experiment in the view of its global switch, GenAI
by default, so the run's last line gives the address of the runs table
(:func:`runs_table_url`, ``?workflowType=machine_learning``).

Where: ``MLFLOW_TRACKING_URI`` (``off`` turns tracking off), else SQLite
``mlflow.db`` in the project folder with the runs' files in ``mlartifacts/``
beside it. A SageMaker tracking server's ARN needs the ``sagemaker-mlflow`` plugin.

Which pipeline run a step belongs to: ``tracking.json`` of the run folder (the
folder above the step's ``output_dir``), written by the runner; where steps share
no folder (SageMaker) or a person sets it (CI), ``DEEPFAKE_RUN_NAME`` names it and
it is found, or created, by that name; a notebook run by hand finds, or creates, the
run tagged with its run folder and named after it. A step writes only inside its
own ``output_dir`` (its ``tracking.json``).

Tracking never fails a run: the first error turns it off for the process and
says so once.
"""

from __future__ import annotations

import functools
import json
import logging
import os
import shutil
import subprocess
import sys
import time
import warnings
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path, PurePath
from typing import Any, TypeVar

from deepfake import __version__
from deepfake.core import paths
from deepfake.core.dependencies import pip_hint
from deepfake.core.errors import ConfigError
from deepfake.core.files import sha256_file, write_json
from deepfake.core.vocabulary import EXPERIMENT
from deepfake.modeling.artifact_files import CONFIG_FILE, model_version
from deepfake.orchestration import step_outputs, steps
from deepfake.scoring.schema import evaluated_on

log = logging.getLogger(__name__)

OFF = "off"                          # MLFLOW_TRACKING_URI=off turns tracking off
SQLITE = "sqlite:///"                # a SQLite store's URI: this, then the database file's path
DEFAULT_STORE = "mlflow.db"          # the store when nothing is configured, in the project folder
ARTIFACTS_DIR = "mlartifacts"        # beside a SQLite store: the files of its runs
RECORD = "tracking.json"             # run folder: the pipeline's run; step folder: the step's run
RUN_NAME_ENV = "DEEPFAKE_RUN_NAME"   # names the pipeline run when its steps share no folder (SageMaker)
RUN_TAGS_ENV = "DEEPFAKE_RUN_TAGS"   # JSON object: tags of the pipeline run a step cannot see (the data's S3 URI)
# A dead server must not hold a run for minutes (MLflow's own default is 7 retries, 120 s each).
HTTP_DEFAULTS = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2", "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
                 "MLFLOW_HTTP_REQUEST_TIMEOUT": "30"}
PARENT_ID = "mlflow.parentRunId"     # MLflow's tags: nesting and the commit its UI shows
GIT_COMMIT = "mlflow.source.git.commit"
# MLflow 3's experiment kind: its UI opens a model-training experiment on the runs table, others on traces.
EXPERIMENT_KIND = ("mlflow.experimentKind", "custom_model_development")
DATASET_CONTEXT = "mlflow.data.context"   # a dataset input's tag: what the run did with it (the step's name)
RUN_DIR_TAG = "deepfake.run_dir"     # a pipeline run's folder: how a notebook run by hand finds its run
MODEL_TAGS = ("deepfake.model", "deepfake.model_version", "deepfake.model_sha256", "deepfake.model_archive_sha256")

_off: list[str] = []                 # the reason tracking went off in this process, once it has
_stores: dict[str, _Store] = {}
T = TypeVar("T")


@dataclass(frozen=True)
class Logged:
    """What a step logged; a notebook shows it as one line."""

    message: str
    run_id: str | None = None
    parent_id: str | None = None

    def __repr__(self) -> str:
        return self.message


@dataclass(frozen=True)
class _Store:
    uri: str
    client: Any
    experiment_id: str


def tracking_uri() -> str | None:
    """Where runs go, or None when tracking is off; a relative SQLite path is from the project folder."""
    uri = os.environ.get("MLFLOW_TRACKING_URI", "").strip()
    if uri.lower() == OFF:
        return None
    if not uri:
        return f"{SQLITE}{paths.project_dir() / DEFAULT_STORE}"
    db = _sqlite_file(uri)
    if db is not None and not db.is_absolute():
        return f"{SQLITE}{paths.resolve(db)}"
    return uri


def _sqlite_file(uri: str) -> Path | None:
    """The database file of a SQLite tracking URI, None for any other store."""
    return Path(uri[len(SQLITE):]) if uri.startswith(SQLITE) else None


def log_step(step: str, output_dir: str | os.PathLike[str], config: Any = None, *,
             cached_from: str | None = None, **params: Any) -> Logged:
    """Log a step as a run nested in its pipeline's: its settings (``config``, a stage config or a
    mapping, and ``params``), metrics and files. A notebook's last line; the runner's for a step it
    reused (``cached_from``: the files are not logged again, the run names the one that made them)."""
    out = paths.resolve(output_dir)
    if not cached_from:
        (out / RECORD).unlink(missing_ok=True)        # a record of an earlier run is not this run's
    settings = config.to_dict() if hasattr(config, "to_dict") else dict(config or {})
    run_off = step_outputs.read_json(out.parent / RECORD)             # the runner could not reach the store:
    if run_off.get("off") and run_off.get("tracking_uri") == tracking_uri():   # its steps do not try again
        return Logged(f"MLflow tracking is off for this run ({run_off['off']})")
    logged = _log_step(step, out, settings, {k: v for k, v in params.items() if v is not None}, cached_from)
    return logged or Logged(f"MLflow tracking is off{f' ({_off[0]})' if _off else ''}")


def log_report(output_dir: str | os.PathLike[str], *files: str | os.PathLike[str] | None, since: float) -> None:
    """Add the executed notebook and its HTML report to the step's run, when the step logged one after ``since``."""
    record_path = paths.resolve(output_dir) / RECORD
    if record_path.is_file() and record_path.stat().st_mtime >= since:
        _log_report(step_outputs.read_json(record_path), [Path(f) for f in files if f is not None and Path(f).is_file()])


def start_pipeline(run_dir: Path, name: str, *, data: str | os.PathLike[str], params: Mapping[str, Any]) -> None:
    """The runner's pipeline run, recorded in ``run_dir`` for its steps (or the reason tracking is off).

    The caller holds the run folder's lock, so a run an earlier process left RUNNING there (killed,
    its machine restarted) has no owner any more: it ends as KILLED first.
    """
    earlier = step_outputs.read_json(run_dir / RECORD)
    if earlier.get("run_id") and tracking_uri() == earlier.get("tracking_uri"):
        _close_abandoned(earlier["run_id"])
    (run_dir / RECORD).unlink(missing_ok=True)
    uri = tracking_uri()
    if uri is not None and _start(run_dir, name, str(data), params) is None:
        write_json(run_dir / RECORD, {"tracking_uri": uri, "off": _off[0] if _off else "unknown"})


def finish_pipeline(run_dir: Path, *, failed: bool = False, killed: bool = False, gate: str | None = None,
                    registered: Mapping[str, Any] | None = None) -> str | None:
    """End the runner's pipeline run (FINISHED, FAILED, or KILLED when it was stopped), tagged with the
    gate's verdict (``gate``: why it failed) and the registered version (also on the run of the step whose
    model it is). Returns a line saying how to compare the runs, or None without tracking."""
    record = step_outputs.read_json(run_dir / RECORD)
    tags = {"deepfake.gate": gate or "passed"} if gate or registered else {}
    if registered:
        again = " (already registered)" if registered.get("existing") else ""
        tags["deepfake.registered"] = f"{registered['group']} v{registered['version']}{again}"
    status = "KILLED" if killed else "FAILED" if failed else "FINISHED"
    if not record.get("run_id") or _finish(record, step_outputs.read_json(run_dir / steps.MODEL_STEP / RECORD), status,
                                            tags) is None:
        return None
    uri = record["tracking_uri"]
    if _sqlite_file(uri) is not None:
        return f"compare the runs in MLflow: {ui_command(uri)}, then open {runs_table_url(record['experiment_id'])}"
    return f"runs tracked in MLflow at {uri}"


UI_ADDRESS = "http://127.0.0.1:5000"     # where `mlflow ui` listens by default


def runs_table_url(experiment_id: str, address: str = UI_ADDRESS) -> str:
    """The experiment's runs table in ``mlflow ui``. MLflow 3.17's UI opens every experiment in the view of its
    global GenAI / Model training switch, GenAI unless a person switched it (the experiment's kind tag does not
    decide there): ``workflowType=machine_learning`` opens the runs table."""
    return f"{address}/#/experiments/{experiment_id}/runs?workflowType=machine_learning"


def ui_command(uri: str) -> str:
    """``mlflow ui`` on ``uri``, as a line that works from any folder: an absolute store path, and the ``mlflow``
    of this environment when the one on PATH is another (or none)."""
    local = Path(sys.executable).parent / "mlflow"
    on_path = shutil.which("mlflow")
    same = on_path is not None and local.is_file() and Path(on_path).resolve() == local.resolve()
    program = "mlflow" if same or not local.is_file() else str(local)
    return f"{program} ui --backend-store-uri {uri}"


def run_ids(run_dir: Path, step: str = steps.MODEL_STEP) -> dict[str, str]:
    """The MLflow runs of a pipeline run and of one of its steps (the model registry records them)."""
    parent, child = step_outputs.read_json(run_dir / RECORD), step_outputs.read_json(run_dir / step / RECORD)
    if not parent.get("run_id"):
        return {}
    out = {"mlflow_tracking_uri": parent["tracking_uri"], "mlflow_run_id": parent["run_id"]}
    if child.get("run_id") and child.get("parent_run_id") == parent["run_id"]:
        out["mlflow_step_run_id"] = child["run_id"]
    return out


# -- what never fails ---------------------------------------------------------------------------

def _never_fails(fn: Callable[..., T]) -> Callable[..., T | None]:
    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> T | None:
        if _off:
            return None
        try:
            return fn(*args, **kwargs)
        except Exception as exc:  # noqa: BLE001 - tracking never fails a run: it goes off and says so once
            _off.append(f"{type(exc).__name__}: {' '.join(str(exc).split())[:300]}")
            log.warning("MLflow tracking is off for the rest of this process: %s cannot be used (%s); "
                        "the run goes on without it", tracking_uri(), _off[0])
            return None
    return wrapper


@_never_fails
def _log_step(step: str, out: Path, settings: dict[str, Any], params: dict[str, Any],
              cached_from: str | None) -> Logged | None:
    store = _store()
    parent = _parent(store, out.parent) if store else None
    if store is None or parent is None:
        return None
    tags = {PARENT_ID: parent, "deepfake.kind": "step", "deepfake.step": step, "deepfake.output_dir": str(out),
            "deepfake.kit_version": __version__}
    if cached_from:
        tags["deepfake.cached_from"] = cached_from
        earlier = step_outputs.read_json(out / RECORD)
        if earlier.get("tracking_uri") == store.uri and earlier.get("run_id"):
            tags["deepfake.reused_run"] = earlier["run_id"]     # its files, and its settings here
            wiring = {s.name: set(s.inputs) for s in steps.STEPS}.get(step, set())
            settings = {**{k: v for k, v in store.client.get_run(earlier["run_id"]).data.params.items()
                           if k not in wiring}, **settings}
    tags.update(_model_tags(out))
    tags.update(_evaluation_tags(out))
    parent_name = store.client.get_run(parent).info.run_name
    run_id = store.client.create_run(store.experiment_id, run_name=f"{parent_name}/{step}", tags=tags).info.run_id
    metrics = step_outputs.metrics(out)
    _batch(store, run_id, metrics=metrics, params={**settings, **params})
    _log_dataset(store, run_id, out, step, params.get("data_dir") or settings.get("data_dir"))
    _to_parent(store, parent, step, settings, params, out)
    for path, folder in ([] if cached_from else step_outputs.files(out, step)):
        log_files = store.client.log_artifacts if path.is_dir() else store.client.log_artifact
        log_files(run_id, str(path), folder)
    store.client.set_terminated(run_id, "FINISHED")
    write_json(out / RECORD, {"tracking_uri": store.uri, "experiment_id": store.experiment_id, "run_id": run_id,
                              "parent_run_id": parent})
    if store.client.get_run(parent).data.tags.get("deepfake.managed_by") == "step":
        store.client.set_terminated(parent, "FINISHED")   # ended by each of its steps: none knows it is the last
    see = (f"compare the runs: {ui_command(store.uri)}, then open {runs_table_url(store.experiment_id)}"
           if _sqlite_file(store.uri) else f"at {store.uri}")
    return Logged(f"MLflow: step {step} logged as run {parent_name}/{step} ({run_id}, {len(metrics)} metric "
                  f"values),\nnested in pipeline run {parent_name} ({parent}); {see}", run_id, parent)


@_never_fails
def _log_report(record: Mapping[str, Any], files: list[Path]) -> None:
    store = _store()
    if store is not None and record.get("tracking_uri") == store.uri and record.get("run_id"):
        for f in files:
            store.client.log_artifact(record["run_id"], str(f), "report")


@_never_fails
def _start(run_dir: Path, name: str, data: str, params: Mapping[str, Any]) -> str | None:
    store = _store()
    if store is None:
        return None
    run_id = _new_parent(store, name, run_dir, "runner", data)
    write_json(run_dir / RECORD, {"tracking_uri": store.uri, "experiment_id": store.experiment_id, "run_id": run_id})
    _batch(store, run_id, params=params)
    return run_id


@_never_fails
def _finish(record: Mapping[str, Any], step_record: Mapping[str, Any], status: str,
            tags: Mapping[str, str]) -> bool | None:
    store = _store()
    if store is None or record.get("tracking_uri") != store.uri:
        return None
    for key, value in tags.items():
        store.client.set_tag(record["run_id"], key, value)
        if step_record.get("parent_run_id") == record["run_id"]:
            store.client.set_tag(step_record["run_id"], key, value)
    store.client.set_terminated(record["run_id"], status)
    return True


@_never_fails
def _close_abandoned(run_id: str) -> None:
    store = _store()
    if store is not None and store.client.get_run(run_id).info.status == "RUNNING":
        store.client.set_terminated(run_id, "KILLED")
        log.warning("MLflow run %s, left RUNNING by an earlier run of this folder that was stopped, "
                    "is ended as KILLED", run_id)


# -- the store and the pipeline's run -------------------------------------------------------------

def _store() -> _Store | None:
    uri = tracking_uri()
    if uri is None:
        return None
    if uri not in _stores:
        _stores[uri] = _connect(uri)
    return _stores[uri]


def _connect(uri: str) -> _Store:
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")   # no usage reports from inside a job's network
    if uri.startswith(("http://", "https://", "arn:")):
        for key, value in HTTP_DEFAULTS.items():
            os.environ.setdefault(key, value)
    if uri.startswith("arn:"):
        try:
            import sagemaker_mlflow  # noqa: F401 - the plugin that reaches a SageMaker tracking server by its ARN
        except ImportError:
            raise ConfigError(f"{uri} is a SageMaker MLflow ARN and the sagemaker-mlflow plugin is missing: "
                              f"{pip_hint('sagemaker-mlflow')}") from None
    with warnings.catch_warnings():          # mlflow imports tqdm.auto, which warns in a kernel without ipywidgets
        warnings.filterwarnings("ignore", message="IProgress not found")
        from mlflow.tracking import MlflowClient

    logging.getLogger("mlflow.store.db.utils").setLevel(logging.WARNING)   # "Creating initial tables..."
    client = MlflowClient(tracking_uri=uri)
    name = os.environ.get("MLFLOW_EXPERIMENT_NAME") or EXPERIMENT
    experiment = client.get_experiment_by_name(name)
    if experiment is None:
        db = _sqlite_file(uri)                                  # a server picks its own place
        root = (db.parent / ARTIFACTS_DIR / name).as_uri() if db is not None else None
        experiment = client.get_experiment(client.create_experiment(name, artifact_location=root))
    if experiment.lifecycle_stage == "deleted":
        client.restore_experiment(experiment.experiment_id)
    if EXPERIMENT_KIND[0] not in experiment.tags:               # a kind someone chose stays
        client.set_experiment_tag(experiment.experiment_id, *EXPERIMENT_KIND)
    return _Store(uri, client, experiment.experiment_id)


def _parent(store: _Store, run_dir: Path) -> str | None:
    """The pipeline run of the steps in ``run_dir`` (None: the run itself has tracking off)."""
    name = os.environ.get(RUN_NAME_ENV, "").strip()
    if name:
        found = _find_pipeline(store, _equals("attributes.run_name", name))
        return found or _new_parent(store, name, None, "step", None)
    record = step_outputs.read_json(run_dir / RECORD)
    if record.get("tracking_uri") == store.uri and (record.get("off") or record.get("run_id")):
        return record.get("run_id")
    # A notebook run by hand: the run of its run folder, found by its tag (nothing is written outside the step's
    # folder), or a new one named after the folder as the runner would name it.
    found = _find_pipeline(store, _equals(f"tags.`{RUN_DIR_TAG}`", str(run_dir)))
    return found or _new_parent(store, run_dir.name, run_dir, "step", None)


def _find_pipeline(store: _Store, condition: str | None) -> str | None:
    if condition is None:
        return None
    found = store.client.search_runs([store.experiment_id], max_results=1, order_by=["attributes.start_time DESC"],
                                     filter_string=f"tags.`deepfake.kind` = 'pipeline' and {condition}")
    return found[0].info.run_id if found else None


def _equals(key: str, text: str) -> str | None:
    """MLflow's search condition ``key = 'text'`` (its syntax has no escapes: a text holding both quotes
    cannot be searched for)."""
    quote = next((q for q in "'\"" if q not in text), None)
    return None if quote is None else f"{key} = {quote}{text}{quote}"


def _new_parent(store: _Store, name: str, run_dir: Path | None, managed_by: str, data: str | None) -> str:
    tags = {"deepfake.kind": "pipeline", "deepfake.managed_by": managed_by, "deepfake.kit_version": __version__,
            **_git_tags(), **json.loads(os.environ.get(RUN_TAGS_ENV) or "{}")}
    if data:
        tags["deepfake.data"] = data
    if run_dir is not None:
        tags[RUN_DIR_TAG] = str(run_dir)
    return store.client.create_run(store.experiment_id, run_name=name, tags=tags).info.run_id


def _to_parent(store: _Store, parent: str, step: str, settings: Mapping[str, Any], params: Mapping[str, Any],
               out: Path) -> None:
    """The step's settings as ``<step>.<name>`` (a value set by an earlier step run stays), its data folder,
    and the evaluation's headline metrics."""
    current = store.client.get_run(parent).data
    new = {f"{step}.{k}": v for k, v in settings.items() if step_outputs.key(f"{step}.{k}") not in current.params}
    evaluation = step_outputs.read_json(out / paths.EVALUATION)
    on = step_outputs.split_prefix(evaluation)
    headline = [(on + k, v, 0) for k, v in step_outputs.numbers(evaluation.get("metrics", {}))]
    _batch(store, parent, metrics=headline, params=new)
    if params.get("data_dir") and "deepfake.data" not in current.tags:
        store.client.set_tag(parent, "deepfake.data", str(params["data_dir"]))
    if step == steps.EVALUATION_STEP:                  # the model the run's metrics belong to, and their split
        for key, value in {**_model_tags(out), **_evaluation_tags(out)}.items():
            store.client.set_tag(parent, key, value)
    if not store.client.get_run(parent).inputs.dataset_inputs:
        _log_dataset(store, parent, out, "pipeline", params.get("data_dir") or current.tags.get("deepfake.data"))


def _model_tags(out: Path) -> dict[str, str]:
    """The model a step made (training: ``model/``) or used (evaluation: ``evaluation.json``), by version and
    sha256, so a run names it even after its path is overwritten."""
    used = step_outputs.read_json(out / paths.EVALUATION).get("model") or {}
    if used.get("sha256"):
        found = {"model": used.get("path"), "model_version": used.get("version"), "model_sha256": used["sha256"],
                 "model_archive_sha256": used.get("archive_sha256")}
    else:
        config = step_outputs.read_json(out / paths.MODEL_DIR / CONFIG_FILE)
        if not config.get("weights_sha256"):
            return {}
        archive = out / paths.MODEL_ARCHIVE
        found = {"model": str(out / paths.MODEL_DIR), "model_version": model_version(config, config["weights_sha256"]),
                 "model_sha256": config["weights_sha256"],
                 "model_archive_sha256": sha256_file(archive) if archive.is_file() else None}
    return {f"deepfake.{k}": str(v) for k, v in found.items() if v}


def _evaluation_tags(out: Path) -> dict[str, str]:
    evaluation = step_outputs.read_json(out / paths.EVALUATION)
    return {"deepfake.evaluated_on": evaluated_on(evaluation)} if evaluation else {}


def _log_dataset(store: _Store, run_id: str, out: Path, context: str, data_dir: Any) -> None:
    """The videos table the run used, as an MLflow dataset input: named after the data folder, its digest the
    first 12 hex of the table's sha256 (the sha256 the manifests' sidecars record), its rows and columns."""
    from mlflow.entities import Dataset, DatasetInput, InputTag

    table = step_outputs.videos_manifest(out)
    if table is None:
        return
    sidecar = step_outputs.read_json(table.with_suffix(".json"))
    source = str(sidecar.get("data_dir") or data_dir or table.parent)
    columns = [{"type": "long" if c == "label" else "string", "name": c} for c in sidecar.get("columns", [])]
    dataset = Dataset(name=PurePath(source).name or source, digest=sha256_file(table)[:12],
                      source_type="s3" if paths.is_s3(source) else "local", source=json.dumps({"uri": source}),
                      schema=json.dumps({"mlflow_colspec": columns}),
                      profile=json.dumps({"num_rows": sidecar.get("rows")}))
    store.client.log_inputs(run_id, [DatasetInput(dataset, [InputTag(DATASET_CONTEXT, context)])])


def git_commit() -> tuple[str, bool] | None:
    """(commit, whether tracked files differ from it) of the checkout the kit runs from, or None."""
    root = paths.project_dir()
    if not (root / ".git").exists():
        return None
    try:
        commit = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True,
                                timeout=10, check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=30, check=True).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return commit, bool(dirty)


def _git_tags() -> dict[str, str]:
    found = git_commit()
    return {GIT_COMMIT: found[0], "deepfake.git_dirty": str(found[1]).lower()} if found else {}


def _batch(store: _Store, run_id: str, *, metrics: Iterable[tuple[str, float, int]] = (),
           params: Mapping[str, Any] | None = None) -> None:
    """Metrics and parameters in MLflow's batch limits (1000 metrics, 100 parameters a call)."""
    from mlflow.entities import Metric, Param

    now = int(time.time() * 1000)
    ms = [Metric(step_outputs.key(k), float(v), now, int(s)) for k, v, s in metrics]
    ps = [Param(step_outputs.key(k), str(v)[:6000]) for k, v in (params or {}).items()]
    for i in range(0, len(ms), 1000):
        store.client.log_batch(run_id, metrics=ms[i:i + 1000])
    for i in range(0, len(ps), 100):
        store.client.log_batch(run_id, params=ps[i:i + 100])
