"""Run a notebook's code as a plain Python script: the reference of the notebook-overhead rows.

``python -m benchmarks.notebook_script NOTEBOOK PARAMETERS_JSON`` executes the
code cells in order in one namespace, with the parameters assigned right after
the ``parameters`` cell, exactly where papermill injects them, and in the
notebook's folder, the working directory papermill gives the kernel. So the
same library calls run with the same values, in a fresh interpreter that pays
the same imports as a kernel does; what papermill adds on top (kernel start,
messaging, storing outputs, rendering the HTML report) is the overhead.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

from deepfake.core.errors import ConfigError


def notebook_code(notebook: Path, parameters: dict[str, Any]) -> str:
    """The code cells of ``notebook`` as one script, parameters injected after the parameters cell."""
    doc = json.loads(notebook.read_text(encoding="utf-8"))
    parts = []
    for cell in doc.get("cells", []):
        if cell.get("cell_type") != "code":
            continue
        source = "".join(cell.get("source", []))
        magic = next((line for line in source.splitlines() if line.lstrip().startswith(("%", "!"))), None)
        if magic is not None:
            raise ConfigError(f"{notebook.name} has an IPython-only line {magic!r}; it cannot run as a plain script")
        parts.append(source)
        if "parameters" in cell.get("metadata", {}).get("tags", []):
            parts.append("\n".join(f"{name} = {value!r}" for name, value in parameters.items()))
    return "\n\n".join(parts) + "\n"


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 2:
        print("usage: python -m benchmarks.notebook_script NOTEBOOK PARAMETERS_JSON", file=sys.stderr)
        return 2
    notebook = Path(args[0]).resolve()
    parameters = json.loads(Path(args[1]).read_text(encoding="utf-8"))
    code = compile(notebook_code(notebook, parameters), str(notebook), "exec")
    os.chdir(notebook.parent)
    exec(code, {"__name__": "__main__"})  # noqa: S102 - the kit's own notebook, run as the kernel would run it
    return 0


if __name__ == "__main__":
    sys.exit(main())
