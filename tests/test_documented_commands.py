"""Every command README.md's code blocks and the notebooks document is run by a named test, as written on tiny data.

The map below names, for each documented command, the tests that run it: the same command with the data
folder made tiny (and, where a profile would train for minutes, ``--profile tiny``). A command added to the
docs without a test, or a map entry whose test is gone, fails here. ``make`` targets are checked to exist
with their help line; what they run is in the map too (``make demo`` is ``deepfake run --profile demo``).
"""

from __future__ import annotations

import ast
import json
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
COMMAND = re.compile(r"^(?:\.venv/bin/)?(?:[A-Z_]+=\S+ )?(deepfake|papermill|mlflow|curl|pipeline-local|make)\b")

NB = "tests/test_notebooks.py"
# README's monitoring loop: run as written, in one shell (tests/monitoring_support.py), on make demo's model too
LOOP = ("tests/test_monitoring_loop.py::test_a_baseline_like_window_has_no_violation",
        "tests/test_monitoring_loop.py::test_a_shifted_window_has_the_right_violations")
# (pattern of documented commands, the tests that run them as written on tiny data)
RUN_BY: tuple[tuple[str, tuple[str, ...]], ...] = (
    (r"^make (demo|quality|bench|test|test-quick|lint|format|help|policies|lock)$", ("tests/test_documented_commands.py::"
                                                                       "test_documented_make_targets_exist",)),
    (r"^make test-scale$", ("tests/test_scale.py::test_every_step_passes_on_volumes_far_smaller_than_the_archive_"
                            "and_says_what_it_downloaded",)),
    (r"^make pipeline-local$", ("tests/test_pipeline_local.py::"
                                "test_make_pipeline_local_runs_every_step_registers_approves_and_deploys",)),
    (r"^pipeline-local --module-name pipelines\.deepfake\.pipeline ", (
        "tests/test_pipeline_local.py::test_two_extraction_instances_score_their_shards_and_merge_to_the_single_"
        "instance_table",)),
    (r"^deepfake run --data data/demo --profile demo --set train\.mode=dataset$", (
        f"{NB}::test_dataset_mode_then_cross_dataset_evaluation_with_the_model",)),
    (r"^deepfake run --data /data/celebdf --model ", (
        f"{NB}::test_dataset_mode_then_cross_dataset_evaluation_with_the_model",)),
    (r"^deepfake run --data (data/demo|/data/dfdc)( --run-id \w+)?( --profile \w+)?( --set (?!extract\.detector)\S+)*$", (
        f"{NB}::test_local_pipeline_runs_the_four_notebooks_and_registers",
        f"{NB}::test_runs_are_compared_in_mlflow")),
    (r"^deepfake run --data data/demo --run-id \w+ --profile demo --set extract\.detector=mtcnn-track$", (
        f"{NB}::test_local_pipeline_runs_the_four_notebooks_and_registers",)),     # its run t3
    (r"^deepfake extract --data \S+ --out \S+ --set detector=mtcnn-track$", (
        "tests/test_extract.py::test_cli_extract_as_the_readme_writes_it",)),
    (r"^MLFLOW_TRACKING_URI=\S+ deepfake run", (
        "tests/test_tracking.py::test_a_store_that_cannot_be_reached_never_fails_the_run_and_says_so_once",)),
    (r"^\.venv/bin/mlflow ui --backend-store-uri ", (
        f"{NB}::test_mlflow_ui_opens_the_printed_address_on_the_runs_table_with_their_dataset",)),
    (r"^\.venv/bin/deepfake registry (list|approve \d+)$", ("tests/test_registry.py::test_cli_list_approve_reject",)),
    (r"^(\.venv/bin/)?deepfake serve ", ("tests/test_serve.py::test_ping_and_a_video",
                                         "tests/test_serve.py::test_every_worker_captures_its_requests")),
    (r"^curl -s -H 'Content-Type: video/mp4' --data-binary @", (
        "tests/test_serve.py::test_curl_as_the_readme_writes_it_and_without_a_content_type",)),
    (r"^\.venv/bin/deepfake predict ", ("tests/test_predict.py::test_cli_uses_the_latest_approved_registry_version",
                                        "tests/test_predict.py::test_cli_table")),
    (r"^deepfake serve --model runs/demo/evaluate/model\.tar\.gz --capture capture/ &$", LOOP),
    (r"^deepfake (invoke|monitor) ", LOOP),
    (r"^deepfake calibrate --model \S+ --data \S+ --out \S+ --register$", (   # with --folds 3 for its tiny sample
        "tests/test_calibrate.py::test_deepfake_calibrate_writes_and_registers_a_derived_model",)),
    (r"^papermill 01_explore_data\.ipynb out\.ipynb -p data_dir ", (
        f"{NB}::test_the_explore_notebooks_own_commands_run_as_written",)),
)


def documented_commands() -> list[tuple[str, str]]:
    """(where, command) of every command line in README.md's bash blocks and every papermill command of a
    notebook's prose (comments dropped, continuation lines joined, a line of several commands, ``a; b && c``,
    taken command by command)."""
    found = []
    readme = (ROOT / "README.md").read_text()
    for block in re.findall(r"```bash\n(.*?)```", readme, re.S):
        for line in block.replace("\\\n", " ").splitlines():
            for part in re.split(r"\s*(?:;|&&)\s*", re.split(r"\s+#", line)[0].strip()):
                if part and COMMAND.match(part):
                    found.append(("README.md", " ".join(part.split())))
    for notebook in sorted((ROOT / "notebooks").glob("*.ipynb")):
        for cell in json.loads(notebook.read_text())["cells"]:
            if cell["cell_type"] == "markdown":
                found += [(notebook.name, c) for c in re.findall(r"`(papermill [^`\n]+)`", "".join(cell["source"]))]
    return found


def _exists(node: str) -> bool:
    path, _, name = node.partition("::")
    file = ROOT / path
    if not file.is_file():
        return False
    return not name or name in {f.name for f in ast.walk(ast.parse(file.read_text()))
                                if isinstance(f, ast.FunctionDef)}


def test_every_documented_command_is_run_by_a_test():
    commands = documented_commands()
    assert len(commands) > 20 and any(where.endswith(".ipynb") for where, _ in commands)
    unmapped = [f"{where}: {c}" for where, c in commands if not any(re.search(p, c) for p, _ in RUN_BY)]
    assert not unmapped, "documented commands no test runs (add the test, then map it here):\n" + "\n".join(unmapped)
    unused = [p for p, _ in RUN_BY if not any(re.search(p, c) for _, c in commands)]
    assert not unused, f"map entries for commands the docs no longer have: {unused}"
    missing = [node for _, nodes in RUN_BY for node in nodes if not _exists(node)]
    assert not missing, f"tests named in the map that do not exist: {missing}"


@pytest.mark.parametrize("target", ["demo", "quality", "bench", "test", "test-quick", "lint", "format", "help",
                                    "pipeline-local", "demo-data", "policies", "lock", "test-scale"])
def test_documented_make_targets_exist(target):
    """A make target the docs name is defined with its help line (make help lists it)."""
    makefile = (ROOT / "Makefile").read_text()
    assert re.search(rf"^{re.escape(target)}:[^\n]*## \S", makefile, re.M), target
