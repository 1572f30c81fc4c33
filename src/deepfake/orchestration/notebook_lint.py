"""Keep the committed notebooks thin and clean.

``python -m deepfake.orchestration.notebook_lint notebooks`` fails (exit 1) on a notebook that
has outputs or execution counts, lacks exactly one ``parameters`` cell written
``name: type = value  # help``, or defines a function or class (code that cells
would copy belongs in the package). ``--strip`` removes outputs in place.
"""

from __future__ import annotations

import argparse
import ast
import sys
from pathlib import Path

import nbformat

PARAM_LINE = r"^[A-Za-z_]\w*: (int|float|str|bool) = .+  # .+$"


def problems(path: Path) -> list[str]:
    import re

    nb = nbformat.read(str(path), as_version=4)
    found: list[str] = []
    code = [c for c in nb.cells if c.cell_type == "code"]
    if any(c.get("outputs") or c.get("execution_count") for c in code):
        found.append("has outputs or execution counts (run `make format` to strip them)")
    tagged = [c for c in code if "parameters" in c.get("metadata", {}).get("tags", [])]
    if len(tagged) != 1:
        found.append(f"has {len(tagged)} cells tagged 'parameters'; exactly one is required")
    else:
        import papermill

        seen = set(papermill.inspect_notebook(str(path)))
        for line in tagged[0].source.splitlines():
            if line.strip() and not line.lstrip().startswith("#") and not re.match(PARAM_LINE, line):
                found.append(f"parameter line not written 'name: type = value  # help': {line!r}")
            elif re.match(PARAM_LINE, line) and line.split(":")[0] not in seen:
                found.append(f"papermill does not see parameter {line.split(':')[0]!r} (avoid ' = ' in its help)")
    for i, cell in enumerate(code):
        try:
            tree = ast.parse(cell.source)
        except SyntaxError as exc:
            found.append(f"code cell {i} does not parse: {exc.msg}")
            continue
        for node in ast.walk(tree):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef, ast.Lambda)):
                found.append(f"code cell {i} defines {type(node).__name__}: move it into src/deepfake")
    if nb.metadata.get("kernelspec", {}).get("name") != "python3":
        found.append("kernelspec must be python3")
    return found


def strip(path: Path) -> bool:
    nb = nbformat.read(str(path), as_version=4)
    changed = False
    for cell in nb.cells:
        if cell.cell_type == "code" and (cell.get("outputs") or cell.get("execution_count")):
            cell.outputs, cell.execution_count = [], None
            changed = True
        for key in ("execution", "papermill", "collapsed", "scrolled"):
            if key in cell.metadata:
                del cell.metadata[key]
                changed = True
    for key in ("papermill", "widgets"):
        if key in nb.metadata:
            del nb.metadata[key]
            changed = True
    if changed:
        nbformat.write(nb, str(path))
    return changed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m deepfake.orchestration.notebook_lint", description=__doc__)
    parser.add_argument("folder", type=Path)
    parser.add_argument("--strip", action="store_true", help="strip outputs in place")
    args = parser.parse_args(argv)
    paths = sorted(args.folder.glob("*.ipynb"))
    if not paths:
        print(f"no notebooks in {args.folder}", file=sys.stderr)
        return 1
    bad = 0
    for path in paths:
        if args.strip and strip(path):
            print(f"stripped {path}")
        for problem in problems(path):
            print(f"{path}: {problem}", file=sys.stderr)
            bad += 1
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
