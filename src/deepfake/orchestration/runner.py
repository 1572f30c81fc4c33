"""``deepfake run``: the four notebooks in order, locally, the way SageMaker runs them.

Each step writes ``runs/<run-id>/<step>/`` with the executed notebook, its HTML
report and the step's outputs, plus ``step.json`` recording its cache key and
status (running, failed, finished). A step whose notebook, the ``src/deepfake``
code it imports, parameters and inputs are unchanged since a finished run is
reused (hard-linked) instead of run again. A step run again in the same folder
resumes what an interrupted or failed run of the same key left (extraction's
finished parts); outputs of another key (other settings, other code) are cleared
first, so an upgraded kit never meets parts it did not make.
"""

from __future__ import annotations

import logging
import os
import shutil
import signal
import sys
import threading
import time
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from deepfake.core import paths
from deepfake.core.errors import ConfigError, DataError, NotebookError, QualityGateError
from deepfake.core.files import write_json
from deepfake.core.locks import LOCK_FILE, FolderLock
from deepfake.data.splits import describe_protocol
from deepfake.orchestration import step_outputs, steps, tracking
from deepfake.orchestration.cache import (
    STEP_RECORD,
    _find_cached,
    _link_or_copy,
    _model_fingerprint,
    _retarget,
    cache_key,
    step_record,
)
from deepfake.orchestration.notebook import run_notebook
from deepfake.orchestration.registry import DEFAULT_GROUP
from deepfake.orchestration.run_settings import PROFILES, existing_model, parse_overrides, step_parameters
from deepfake.scoring.schema import evaluated_on, gate_comparison, gate_passes, read_evaluation
from deepfake.stages.explore import describe


@dataclass(frozen=True)
class StepOutcome:
    step: steps.Step
    out_dir: Path
    cached: bool
    seconds: float
    html: Path | None
    cached_from: Path | None = None      # the finished step folder it was reused from


def run_pipeline(
    data_dir: str | os.PathLike[str],
    run_id: str | None = None,
    profile: str = "default",
    overrides: Iterable[str] = (),
    *,
    force: bool = False,
    register: bool = True,
    group: str | None = None,
    threshold: float | None = None,
    runs_root: str | os.PathLike[str] | None = None,
    stream: bool = True,
    model: str | os.PathLike[str] | None = None,
    gate_metric: str = steps.GATE_METRIC,
) -> int:
    """Run every step, gate on the evaluation and register a passing model; returns the exit code.

    With ``model`` (a model folder or ``model.tar.gz``) nothing is trained: the
    data is explored, extracted with the model's own extraction settings and
    every video evaluated with it (the cross-dataset protocol); nothing is registered.
    ``gate_metric`` is any metric of ``evaluation.json`` (lower-is-better ones gate at or below the threshold).
    """
    gate_comparison(gate_metric)
    data = paths.resolve(data_dir)
    if not data.is_dir():
        raise DataError(f"dataset folder {data} does not exist; build the demo data with `make demo-data`")
    if profile not in PROFILES:
        raise ConfigError(f"unknown profile {profile!r}; profiles: {', '.join(PROFILES)}")
    external = {steps.TRAIN_STEP: existing_model(model)} if model else {}
    run_id = run_id or datetime.now().strftime("%Y%m%d-%H%M%S")
    run_dir = (Path(runs_root) if runs_root else paths.runs_dir()) / run_id
    with FolderLock(run_dir, what=f"run {run_id} ({run_dir})",
                    hint="wait for it to finish, or start this run with another --run-id"), _sigterm_interrupts():
        params_by_step = step_parameters(data, run_dir, profile, parse_overrides(overrides), external=external)
        todo = [s for s in steps.STEPS if s.name not in external]
        what = f"evaluating model {external[steps.TRAIN_STEP]}" if external else f"profile {profile}"
        _say(f"run {run_id}: {len(todo)} steps, data {data}, {what}, folder {run_dir}")
        keys = {name: _model_fingerprint(path) for name, path in external.items()}
        tracking.start_pipeline(run_dir, run_id, data=data,
                                params={"profile": profile, "overrides": " ".join(overrides),
                                        "model": str(model or "")})
        done: list[StepOutcome] = []
        try:
            outcomes = _run_steps(todo, params_by_step, run_dir, data, keys, force=force, stream=stream, done=done)
        except NotebookError as exc:
            if exc.ename != "KeyboardInterrupt":
                _say(f"FAILED {exc}")
                tracking.finish_pipeline(run_dir, failed=True)
                return 1
            return _interrupted(run_dir, run_id, done, todo, signal.SIGINT)
        except KeyboardInterrupt as stop:
            return _interrupted(run_dir, run_id, done, todo, getattr(stop, "signum", signal.SIGINT))
        except BaseException:
            tracking.finish_pipeline(run_dir, failed=True)
            raise
        return _conclude(run_dir, run_id, profile, outcomes, evaluation_only=bool(external),
                         register=register, group=group, threshold=threshold, gate_metric=gate_metric)


class _Stopped(KeyboardInterrupt):
    """The run was stopped by a signal (Ctrl-C's SIGINT, or SIGTERM)."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


@contextmanager
def _sigterm_interrupts() -> Iterator[None]:
    """SIGTERM (``kill``, a scheduler's stop) stops the run as Ctrl-C does: steps kept, MLflow run KILLED."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def stop(signum: int, _frame: Any) -> None:
        raise _Stopped(signum)

    before = signal.signal(signal.SIGTERM, stop)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, before)


def _interrupted(run_dir: Path, run_id: str, done: list[StepOutcome], todo: list[steps.Step], signum: int) -> int:
    """Say what a stopped run kept and how to resume; the MLflow run ends as KILLED. Exit 128 + signal."""
    tracking.finish_pipeline(run_dir, killed=True)
    finished = [o.step.name for o in done]
    stopped = next((s.name for s in todo if s.name not in finished), None)
    how = "interrupted (Ctrl-C)" if signum == signal.SIGINT else f"stopped by {signal.Signals(signum).name}"
    kept = f"finished steps {', '.join(finished)}" if finished else "no finished step"
    during = f" during step {stopped}" if stopped else ""
    parts = f", and what step {stopped} had finished (e.g. extraction's videos)" if stopped else ""
    _say(f"run {run_id} {how}{during}: kept {kept}{parts} in {run_dir}; "
         "run the same command again to resume from there")
    return 128 + signum


def _conclude(run_dir: Path, run_id: str, profile: str, outcomes: list[StepOutcome], *, evaluation_only: bool,
              register: bool, group: str | None, threshold: float | None, gate_metric: str = steps.GATE_METRIC
              ) -> int:
    """After the steps: print the metrics, gate and register, end the MLflow run, write ``run.json``."""
    evaluation = read_evaluation(run_dir / steps.EVALUATION_STEP / paths.EVALUATION)
    summary = {"run_id": run_id, "run_dir": str(run_dir), "profile": profile,
               "reports": {o.step.name: str(o.html) for o in outcomes if o.html},
               "metrics": evaluation["metrics"], "registered": None}
    print_metrics(evaluation)
    code = 0
    if evaluation_only:
        _say("evaluation-only run (--model): nothing is registered")
    elif register:
        code = _gate(summary, run_dir, evaluation, group, threshold, run_id, gate_metric)
    summary["tracking"] = tracking.run_ids(run_dir)
    compare = tracking.finish_pipeline(run_dir, gate=summary.get("gate_failed"),
                                       registered=summary["registered"])
    write_json(run_dir / "run.json", summary)
    _report(summary)
    if compare:
        _say(compare)
    return code


def _run_steps(todo: list[steps.Step], params_by_step: Mapping[str, dict[str, Any]], run_dir: Path, data: Path,
               keys: dict[str, str], *, force: bool, stream: bool, done: list[StepOutcome] | None = None
               ) -> list[StepOutcome]:
    """Run (or reuse) each step in order; a failing notebook raises NotebookError. ``done`` gets each
    finished step as it finishes (what an interrupted run kept)."""
    handler = _stream_notebook_output() if stream else None
    outcomes: list[StepOutcome] = done if done is not None else []
    try:
        for i, step in enumerate(todo, 1):
            _say(f"[{i}/{len(todo)}] {step.name}: {step.title} ...")
            outcome = _run_step(step, params_by_step[step.name], run_dir, data, keys, force=force,
                                log_output=stream)
            outcomes.append(outcome)
            if outcome.cached:                      # the step's run in this pipeline run names the one it reuses
                tracking.log_step(step.name, outcome.out_dir, cached_from=str(outcome.cached_from))
            how = "reused from cache" if outcome.cached else "done"
            _say(f"[{i}/{len(todo)}] {step.name}: {how} in {outcome.seconds:.1f}s")
            profile = step_outputs.read_json(outcome.out_dir / paths.DATA_PROFILE)
            if profile:                             # what the data step read, and how it split it
                for line in describe(profile).splitlines():
                    _say(f"    {line}")
    finally:
        if handler is not None:
            logging.getLogger("papermill").removeHandler(handler)
    return outcomes


def _gate(summary: dict[str, Any], run_dir: Path, evaluation: Mapping[str, Any], group: str | None,
          threshold: float | None, run_id: str, metric: str = steps.GATE_METRIC) -> int:
    """The quality gate and registration; the run's exit code (3: the gate held the model back)."""
    try:
        mv, new = gate_and_register(run_dir, evaluation, group or DEFAULT_GROUP,
                                    steps.GATE_THRESHOLD if threshold is None else threshold, run_id, metric)
    except QualityGateError as exc:
        _say(f"quality gate: {exc}")
        summary["gate_failed"] = str(exc)
        return 3
    summary["registered"] = {"group": mv.group, "version": mv.version, "status": mv.status,
                              "artifact": mv.artifact, "sha256": mv.sha256, "existing": not new}
    return 0


def _report(summary: Mapping[str, Any]) -> None:
    _say("reports:")
    for name, html in summary["reports"].items():
        _say(f"  {name:<9} {html}")
    if summary["registered"]:
        r = summary["registered"]
        if r["existing"]:
            _say(f"model already registered: {r['group']} v{r['version']} ({r['status']}) holds this artifact "
                 f"(sha256 {r['sha256'][:12]}...); no new version")
        else:
            _say(f"registered model: {r['group']} v{r['version']} ({r['status']}) {r['artifact']}")
        _say(f"  approve it with: deepfake registry approve {r['version']} --group {r['group']}")


def gate_and_register(run_dir: Path, evaluation: Mapping[str, Any], group: str, threshold: float,
                      run_id: str, metric: str = steps.GATE_METRIC):
    """The quality gate of the pipeline: register only a model whose metric reaches the threshold.

    Returns (version, True when registered now); a model already in the group (same sha256, e.g. a rerun
    of a fully cached pipeline) is not registered again: its version comes back with False.
    """
    from deepfake.orchestration.registry import LocalRegistry

    value = evaluation.get("metrics", {}).get(metric)
    comparison = gate_comparison(metric)
    if not isinstance(value, (int, float)):
        raise QualityGateError(f"{metric} is missing or undefined in evaluation.json "
                               f"({value!r}); model not registered")
    if not gate_passes(metric, value, threshold):
        side = "below" if comparison == ">=" else "above"
        raise QualityGateError(f"{metric} {value:.4f} is {side} the threshold {threshold}; "
                               "model not registered")
    artifact = run_dir / steps.MODEL_STEP / paths.MODEL_ARCHIVE
    _say(f"quality gate: {metric} {value:.4f} {comparison} {threshold}: passed")
    return LocalRegistry().register_new(
        group, artifact, evaluation["metrics"],
        source={"run_id": run_id, "evaluation": str(run_dir / "evaluate" / paths.EVALUATION),
                "report": str(run_dir / "evaluate" / "04_evaluate.html"), **tracking.run_ids(run_dir)},
    )


def print_metrics(evaluation: Mapping[str, Any]) -> None:
    metrics = evaluation.get("metrics", {})
    if evaluation.get("protocol"):
        for line in describe_protocol(evaluation["protocol"])[:1]:
            _say(line)
    _say(f"metrics ({evaluated_on(evaluation)}):")
    for level in ("video", "frame"):
        row = {k[len(level) + 1:]: v for k, v in metrics.items() if k.startswith(level + "_")}
        if row:
            cells = "  ".join(f"{k}={_fmt(v)}" for k, v in row.items())
            _say(f"  {level:<6} {cells}")
    undefined = evaluation.get("undefined_metrics") or {}
    if undefined:
        reasons: dict[str, list[str]] = {}
        for key, why in undefined.items():
            reasons.setdefault(str(why), []).append(key)
        _say("  undefined: " + "; ".join(f"{', '.join(keys)} ({why})" for why, keys in reasons.items()))
    training = evaluation.get("training") or {}
    seen = training.get("manipulations_seen")
    _say(f"  generalisation: unseen-manipulation video AUC {_fmt(metrics.get('unseen_video_auc'))} "
         f"(trained {training.get('mode', 'in an unrecorded mode')}, fakes seen: "
         f"{', '.join(seen) if seen else ('none' if seen is not None else 'not recorded')}); real videos called "
         f"fake {_fmt(metrics.get('video_false_positive_rate'))}")
    _say(f"  calibration: video ECE {_fmt(metrics.get('video_ece_uncalibrated'))} before, "
         f"{_fmt(metrics.get('video_ece'))} after temperature scaling")
    counts = evaluation.get("counts", {})
    if counts:
        _say("  counts " + "  ".join(f"{k}={v}" for k, v in counts.items()))


def _run_step(step: steps.Step, params: dict[str, Any], run_dir: Path, data: Path,
              keys: dict[str, str], *, force: bool, log_output: bool) -> StepOutcome:
    notebook = paths.notebooks_dir() / step.notebook
    out_dir = run_dir / step.name
    key = cache_key(step, notebook, params, data, keys)
    keys[step.name] = key
    started = time.perf_counter()
    if not force:
        cached = _find_cached(key, run_dir.parent)
        if cached is not None:
            if cached.resolve() != out_dir.resolve():
                if out_dir.exists():
                    shutil.rmtree(out_dir)
                shutil.copytree(cached, out_dir, copy_function=_link_or_copy,
                                ignore=shutil.ignore_patterns(LOCK_FILE))
                _retarget(out_dir, params)
            return StepOutcome(step, out_dir, True, time.perf_counter() - started, _html(out_dir, notebook),
                               cached_from=cached)
    record = out_dir / STEP_RECORD
    if out_dir.exists() and step_record(out_dir).get("key") != key:
        # Outputs made with other settings or code (an upgraded kit, a changed parameter) are not resumed;
        # an interrupted run of this very key is: its finished parts are kept.
        shutil.rmtree(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    started_record = {"step": step.name, "key": key, "notebook": step.notebook, "parameters": params}
    write_json(record, {**started_record, "status": "running"})
    try:
        result = run_notebook(notebook, out_dir, params, step=step.name, hide_code=step.hide_code,
                              log_output=log_output)
    except BaseException as exc:
        write_json(record, {**started_record, "status": "failed", "error": f"{type(exc).__name__}: {exc}"})
        raise
    seconds = time.perf_counter() - started
    write_json(record, {**started_record, "status": "finished", "seconds": round(seconds, 2),
                        "finished": datetime.now(timezone.utc).isoformat(timespec="seconds")})
    return StepOutcome(step, out_dir, False, seconds, result.html)


def _html(out_dir: Path, notebook: Path) -> Path | None:
    html = out_dir / (notebook.stem + ".html")
    return html if html.is_file() else None


def _fmt(v: Any) -> str:
    if v is None:
        return "undefined"
    return f"{v:.4f}" if isinstance(v, float) else str(v)


def _say(text: str) -> None:
    print(text, flush=True)


class _NotebookOutput(logging.Filter):
    """Only what cells print (progress lines), not papermill's own cell bookkeeping."""

    def filter(self, record: logging.LogRecord) -> bool:
        msg = record.getMessage().strip()
        if not msg or msg.count("\n") > 0 or msg.startswith(("<", "{", "[", "Empty DataFrame")):
            return False  # tables, figures and dicts belong in the report, not the log
        return not msg.startswith(("Executing Cell", "Ending Cell", "Executing notebook", "Input Notebook",
                                   "Output Notebook", "Kernel", "Working directory"))


def _stream_notebook_output() -> logging.Handler:
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(logging.Formatter("    %(message)s"))
    handler.addFilter(_NotebookOutput())
    logger = logging.getLogger("papermill")
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    return handler
