"""Run one notebook the way every runner of the kit does.

The local runner, the SageMaker Processing entry point and the tests all call
:func:`run_notebook`, so a notebook behaves the same everywhere: parameters are
checked against its ``parameters`` cell (papermill alone only warns about an
unknown one), the executed copy is written even when a cell fails, and an HTML
report is rendered beside it (and added to the step's MLflow run when its notebook logged one).
"""

from __future__ import annotations

import logging
import os
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from deepfake.core.config import coerce_value
from deepfake.core.errors import ConfigError, NotebookError
from deepfake.core.locks import FolderLock
from deepfake.orchestration import tracking

log = logging.getLogger(__name__)
_TYPES = {"int": int, "float": float, "str": str, "bool": bool}
KERNEL_LOG = "kernel.log"   # in the step's folder: what its kernel wrote to stderr (kept only when not empty)
# nbconvert's stylesheet breaks printed lines inside words ("they t / est"): break between words, and
# inside one only when it is longer than the line (a path).
READABLE_OUTPUT = "<style>.jp-OutputArea-output pre { word-break: normal; overflow-wrap: anywhere; }</style>\n"


@dataclass(frozen=True)
class NotebookResult:
    executed: Path
    html: Path | None


def notebook_parameters(notebook: str | os.PathLike[str]) -> dict[str, dict[str, Any]]:
    """The parameters a notebook declares: ``{name: {"type", "default", "help"}}``.

    ``default`` is the literal value of the parameters cell, evaluated safely.
    """
    import ast

    import papermill

    path = Path(notebook)
    if not path.is_file():
        raise ConfigError(f"notebook {path} does not exist")
    found = papermill.inspect_notebook(str(path))
    if not found:
        raise ConfigError(f"notebook {path} has no cell tagged 'parameters'")
    params = {}
    for name, info in found.items():
        try:
            default = ast.literal_eval(info["default"])
        except (ValueError, SyntaxError) as exc:
            raise ConfigError(
                f"notebook {path.name}: parameter {name} has a default that is not a literal: {info['default']}"
            ) from exc
        params[name] = {"type": info.get("inferred_type_name") or "None", "default": default,
                        "help": info.get("help") or ""}
    return params


def check_parameters(notebook: str | os.PathLike[str], parameters: dict[str, Any]) -> dict[str, Any]:
    """Reject unknown names and coerce values to the declared types (CLI and job args are strings)."""
    declared = notebook_parameters(notebook)
    unknown = sorted(set(parameters) - set(declared))
    if unknown:
        raise ConfigError(
            f"notebook {Path(notebook).name} has no parameter(s) {', '.join(unknown)}; "
            f"known parameters: {', '.join(declared)}"
        )
    return {k: coerce(k, v, declared[k]["type"]) for k, v in parameters.items()}


def coerce(name: str, value: Any, type_name: str) -> Any:
    """A parameter's value as the type its ``parameters`` cell declares (``int``, ``float``, ``str``, ``bool``)."""
    return coerce_value(name, value, _TYPES.get(type_name, object), what="parameter")


def run_notebook(
    notebook: str | os.PathLike[str],
    out_dir: str | os.PathLike[str],
    parameters: dict[str, Any],
    *,
    step: str,
    hide_code: bool = False,
    kernel_name: str = "python3",
    log_output: bool = False,
    cwd: str | os.PathLike[str] | None = None,
) -> NotebookResult:
    """Execute ``notebook`` into ``out_dir`` with papermill and render its HTML report.

    The folder is locked meanwhile (:class:`~deepfake.core.locks.FolderLock`): a second process writing the
    same step's folder is refused. The kernel talks to papermill over IPC (Unix sockets), not TCP, and
    what it writes to its own stderr goes to ``out_dir/kernel.log`` (removed when empty).
    """

    notebook = Path(notebook)
    out_dir = Path(out_dir)
    params = check_parameters(notebook, parameters)
    with FolderLock(out_dir, what=f"step {step}'s output folder {out_dir}",
                    hint="wait for that process to finish, or write this step to another folder"):
        return _execute(notebook, out_dir, params, step=step, hide_code=hide_code, kernel_name=kernel_name,
                        log_output=log_output, cwd=cwd)


def _execute(notebook: Path, out_dir: Path, params: dict[str, Any], *, step: str, hide_code: bool,
             kernel_name: str, log_output: bool, cwd: str | os.PathLike[str] | None) -> NotebookResult:
    import papermill
    from papermill.exceptions import PapermillExecutionError

    executed = out_dir / notebook.name
    kernel_log = out_dir / KERNEL_LOG
    started = time.time()
    try:
        with open(kernel_log, "ab") as log_file:
            papermill.execute_notebook(
                str(notebook), str(executed), parameters=params, kernel_name=kernel_name,
                language="python", progress_bar=False, log_output=log_output,
                cwd=str(cwd or notebook.parent), kernel_manager_class=_kernel_manager(log_file.fileno()),
            )
    except PapermillExecutionError as exc:
        html = _render_quietly(executed, hide_code=False)
        raise NotebookError(
            f"step {step}: cell In [{exc.exec_count}] of {notebook.name} raised {exc.ename}: "
            f"{_strip_ansi(str(exc.evalue))}\n  executed notebook kept at {executed}"
            + (f"\n  report: {html}" if html else ""),
            step=step, executed_path=executed, cell=exc.exec_count, ename=exc.ename,
        ) from None
    finally:
        if kernel_log.is_file() and not kernel_log.stat().st_size:
            kernel_log.unlink()
    html = render_html(executed, hide_code=hide_code)
    if "output_dir" in params:                       # the step's MLflow run, when its notebook logged one
        tracking.log_report(params["output_dir"], executed, html, since=started)
    return NotebookResult(executed=executed, html=html)


def _kernel_manager(stderr: int) -> type:
    """Jupyter's kernel manager for a step's kernel: on the IPC transport (Unix sockets reachable by this
    user only, where TCP on localhost is open to every local user; ipykernel's warning "Kernel is running
    over TCP without encryption" is gone with it), its own stderr (warnings, C libraries' messages, a
    traceback when Ctrl-C stops it) written to ``stderr``, the step's kernel log, not the user's terminal."""
    from jupyter_client.manager import AsyncKernelManager

    class StepKernelManager(AsyncKernelManager):
        transport = "ipc"

        async def _async_launch_kernel(self, kernel_cmd: list[str], **kw: Any) -> None:
            await super()._async_launch_kernel(kernel_cmd, **{**kw, "stderr": stderr})

    return StepKernelManager


def render_html(executed: str | os.PathLike[str], *, hide_code: bool = False) -> Path:
    """HTML beside the executed notebook; ``hide_code`` leaves only prose and outputs."""
    import nbformat
    from nbconvert import HTMLExporter

    executed = Path(executed)
    nb = nbformat.read(str(executed), as_version=4)
    exporter = HTMLExporter(exclude_input=hide_code, exclude_input_prompt=hide_code,
                            exclude_output_prompt=hide_code)
    body, _ = exporter.from_notebook_node(nb)
    body = body.replace("</head>", READABLE_OUTPUT + "</head>", 1)
    out = executed.with_suffix(".html")
    from deepfake.core.files import atomic_write_text

    atomic_write_text(out, body)
    return out


def _render_quietly(executed: Path, *, hide_code: bool) -> Path | None:
    """Best effort on the failure path: the executed notebook matters more than its HTML."""
    if not executed.is_file():
        return None
    try:
        return render_html(executed, hide_code=hide_code)
    except Exception as exc:  # noqa: BLE001 - never hide the notebook's own error behind this one
        log.warning("could not render %s: %s", executed, exc)
        return None


def _strip_ansi(text: str) -> str:
    return re.sub(r"\x1b\[[0-9;]*m", "", text)
