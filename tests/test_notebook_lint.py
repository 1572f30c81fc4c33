from pathlib import Path

import nbformat
from notebook_factory import make_notebook

from deepfake.orchestration.notebook_lint import main, problems, strip

ROOT = Path(__file__).resolve().parents[1]


def test_committed_notebooks_are_clean_and_thin():
    assert main([str(ROOT / "notebooks")]) == 0


def test_outputs_functions_and_bad_parameter_lines_are_reported(tmp_path):
    nb_path = make_notebook(tmp_path / "n.ipynb", "frames = 3", "def helper():\n    return 1")
    nb = nbformat.read(str(nb_path), as_version=4)
    nb.cells[2].outputs = [nbformat.v4.new_output("stream", text="hi")]
    nb.cells[2].execution_count = 1
    nbformat.write(nb, str(nb_path))
    found = " | ".join(problems(nb_path))
    assert "outputs" in found and "FunctionDef" in found and "frames = 3" in found
    assert strip(nb_path)
    assert not any("outputs" in p for p in problems(nb_path))
