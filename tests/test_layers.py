"""The layer rule of docs/architecture.md, checked on every import of the package (function-level ones too)."""

from __future__ import annotations

import shutil
from pathlib import Path

import deepfake
from deepfake.core import imports

PACKAGE = Path(deepfake.__file__).parent


def test_no_import_climbs_a_layer():
    assert imports.climbing_imports() == []


def test_every_module_is_in_a_layer():
    for name in imports.module_files():
        imports.layer(name)   # raises for a module outside the layers


def test_a_climbing_import_is_caught(tmp_path):
    """The check itself: a core module that imports a stage, and a stage that imports serving (a peer)."""
    copy = tmp_path / "deepfake"
    shutil.copytree(PACKAGE, copy, ignore=shutil.ignore_patterns("__pycache__"))
    with open(copy / "core" / "errors.py", "a") as fh:
        fh.write("\n\ndef _late():\n    from deepfake.stages import train  # noqa: F401\n")
    with open(copy / "stages" / "explore.py", "a") as fh:
        fh.write("\nfrom deepfake.serving import predictor  # noqa: E402,F401\n")
    found = imports.climbing_imports(copy)
    assert "deepfake.core.errors -> deepfake.stages.train (stages is a higher layer than core)" in found
    assert "deepfake.stages.explore -> deepfake.serving.predictor (serving is a peer layer than stages)" in found


def test_serving_imports_no_tables_plots_or_notebooks():
    served = imports.closure(["deepfake.serving.handlers"])
    assert not [m for m in served if m.split(".")[1:2] in (["stages"], ["reporting"], ["orchestration"], ["demo"])]
    assert "deepfake.data.catalogs" not in served
    assert not {"pandas", "matplotlib", "papermill", "tqdm"} & set(imports.third_party(["deepfake.serving.handlers"]))


def test_a_notebook_imports_and_its_closure():
    modules = imports.notebook_modules(Path(deepfake.__file__).parents[2] / "notebooks" / "04_evaluate.ipynb")
    assert {"deepfake.stages.evaluate", "deepfake.reporting.evaluate_report"} <= modules
    closure = imports.closure(modules)
    assert "deepfake.scoring.rule" in closure and "deepfake.stages.train" not in closure
