"""Item 3: what running a pipeline step as a notebook costs over running its code directly.

Each local pipeline step runs twice on the same tiny demo dataset with the
"tiny" profile of ``deepfake run``: once through papermill
(:func:`deepfake.orchestration.notebook.run_notebook`, as the local runner and SageMaker run
it, HTML report included) and once as the same code in a plain Python process
(:mod:`benchmarks.notebook_script`). Each way has its own chain of output
folders, so every step reads what the same way wrote before it.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Sequence
from functools import partial
from pathlib import Path

from benchmarks.report import EXCESS_AT_MOST, Row, Target
from benchmarks.timing import p50, rounded, say, timed
from deepfake.core import paths
from deepfake.core.errors import ConfigError, NotebookError
from deepfake.demo.build import build_demo_dataset
from deepfake.orchestration import steps
from deepfake.orchestration.notebook import run_notebook
from deepfake.orchestration.run_settings import step_parameters

OVERHEAD_TARGET = Target(EXCESS_AT_MOST, 2.0)   # papermill adds at most 2 s to a step
PROFILE = "tiny"                                # deepfake.orchestration.run_settings.PROFILES: small images, one epoch
ROOT = Path(__file__).resolve().parents[1]
SCRIPT_TIMEOUT_S = 900


def bench_notebooks(work: Path, n_videos: int, clip_frames: int | None, reps: int,
                    step_names: Sequence[str]) -> list[Row]:
    """Seconds of each step in ``step_names`` (the first ones of the pipeline) through papermill and as a script."""
    chosen = [steps.step(name) for name in step_names]
    if tuple(chosen) != steps.STEPS[:len(chosen)]:
        raise ConfigError(f"notebook steps {list(step_names)} must be the first steps of the pipeline, in order "
                          f"({', '.join(s.name for s in steps.STEPS)}): each step reads the one before")
    say(f"[3] demo data: {n_videos} videos")
    data = build_demo_dataset(work / "notebook-data", n_videos=n_videos, seed=0, clip_frames=clip_frames,
                              progress=False)
    import nbconvert  # noqa: F401 - imported once per `deepfake run`, not once per step: keep it out of the timing
    import papermill  # noqa: F401

    times: dict[str, dict[str, list[float]]] = {s.name: {"papermill_s": [], "script_s": []} for s in chosen}
    for rep in range(reps):
        chains = {way: work / f"notebook-{way}-{rep}" for way in ("papermill", "script")}
        for folder in chains.values():
            shutil.rmtree(folder, ignore_errors=True)
        params = {way: step_parameters(data, folder, PROFILE, {}) for way, folder in chains.items()}
        for step in chosen:
            notebook = paths.notebooks_dir() / step.notebook
            say(f"[3] step {step.name}: plain script, then papermill")
            script_s, _ = timed(partial(_run_script, notebook, params["script"][step.name],
                                        chains["script"] / step.name))
            papermill_s, _ = timed(partial(run_notebook, notebook, chains["papermill"] / step.name,
                                           params["papermill"][step.name], step=step.name, hide_code=step.hide_code))
            times[step.name]["script_s"].append(script_s)
            times[step.name]["papermill_s"].append(papermill_s)
    rows = []
    for step in chosen:
        t = times[step.name]
        rows.append(Row(3, f"pipeline step {step.name} ({step.notebook}) through papermill", "s",
                        p50(t["papermill_s"]), p50(t["script_s"]), "same code as a script", OVERHEAD_TARGET,
                        note=f"profile {PROFILE}, {n_videos} videos",
                        samples={k: rounded(v) for k, v in t.items()}))
    return rows


def _run_script(notebook: Path, parameters: dict, out_dir: Path) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    params_file = out_dir.with_name(f"{out_dir.name}.parameters.json")  # beside the step folder, not in it
    params_file.write_text(json.dumps(parameters))
    env = {**os.environ, "MPLBACKEND": "Agg"}
    proc = subprocess.run([sys.executable, "-m", "benchmarks.notebook_script", str(notebook), str(params_file)],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=SCRIPT_TIMEOUT_S)
    out_dir.with_name(f"{out_dir.name}.script.log").write_text(proc.stdout + proc.stderr)
    if proc.returncode != 0:
        raise NotebookError(f"{notebook.name} as a plain script failed (exit {proc.returncode}): "
                            f"{proc.stderr.strip()[-800:]}", step=notebook.stem)
