"""Build small real notebooks for tests of the notebook machinery."""

from __future__ import annotations

from pathlib import Path

import nbformat


def make_notebook(path: Path, params: str, *body: str) -> Path:
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    cell = nbformat.v4.new_code_cell(params)
    cell.metadata["tags"] = ["parameters"]
    nb.cells = [nbformat.v4.new_markdown_cell("# test"), cell] + [nbformat.v4.new_code_cell(b) for b in body]
    path.parent.mkdir(parents=True, exist_ok=True)
    nbformat.write(nb, str(path))
    return path
