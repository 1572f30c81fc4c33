import json

import nbformat
import pytest
from notebook_factory import make_notebook

from deepfake.core.errors import ConfigError, NotebookError
from deepfake.orchestration.notebook import check_parameters, notebook_parameters, run_notebook

PARAMS = 'output_dir: str = "out"  # where to write\nframes: int = 4  # frames per video\nrate: float = 0.5  # a rate\nfast: bool = False  # a flag'


@pytest.fixture()
def nb(tmp_path):
    return make_notebook(
        tmp_path / "step.ipynb", PARAMS,
        "import json, pathlib\npathlib.Path(output_dir).mkdir(parents=True, exist_ok=True)\n"
        "pathlib.Path(output_dir, 'p.json').write_text(json.dumps([frames, rate, fast]))\nprint('SECRET_CODE_LINE')",
        "frames * 2",
        "from deepfake.core.progress import Progress\nProgress(2, 0, True, label='extract faces').close()",
    )


def test_parameters_are_inspected_with_types_defaults_and_help(nb):
    params = notebook_parameters(nb)
    assert params["frames"] == {"type": "int", "default": 4, "help": "frames per video"}
    assert params["fast"]["type"] == "bool" and params["rate"]["default"] == 0.5


def test_unknown_parameter_lists_the_known_ones(nb):
    with pytest.raises(ConfigError) as err:
        check_parameters(nb, {"frame": 3})
    assert "frame" in str(err.value) and "frames, rate, fast" in str(err.value)


def test_string_values_are_typed_like_the_parameters_cell(nb):
    assert check_parameters(nb, {"frames": "8", "rate": "1", "fast": "true"}) == {"frames": 8, "rate": 1.0,
                                                                                   "fast": True}
    with pytest.raises(ConfigError, match="frames='x'"):
        check_parameters(nb, {"frames": "x"})


@pytest.mark.slow
def test_run_writes_executed_copy_and_html_without_code(nb, tmp_path):
    out = tmp_path / "run"
    res = run_notebook(nb, out, {"output_dir": str(out), "frames": "6"}, step="s", hide_code=True)
    assert json.loads((out / "p.json").read_text()) == [6, 0.5, False]
    executed = nbformat.read(str(res.executed), as_version=4)
    assert any("injected-parameters" in c.metadata.get("tags", []) for c in executed.cells)
    html = res.html.read_text()
    assert "SECRET_CODE_LINE" in html  # the printed output stays
    assert "pathlib.Path(output_dir)" not in html  # the code does not
    progress = [o for c in executed.cells if "Progress(" in c.source for o in c.outputs]
    assert {o["name"] for o in progress} == {"stdout"}                     # progress lines are no red error block
    assert "extract faces: 2 videos to do" in "".join(o["text"] for o in progress)


@pytest.mark.slow
def test_failing_cell_keeps_executed_copy_and_names_step_cell_error(tmp_path):
    nb = make_notebook(tmp_path / "bad.ipynb", 'output_dir: str = "o"  # out', "x = 1", "raise ValueError('boom 42')")
    out = tmp_path / "run"
    with pytest.raises(NotebookError) as err:
        run_notebook(nb, out, {"output_dir": str(out)}, step="train")
    e = err.value
    assert e.step == "train" and e.ename == "ValueError" and e.cell == 4  # In [4]: the injected parameters cell counts too
    assert "boom 42" in str(e) and "bad.ipynb" in str(e)
    assert (out / "bad.ipynb").is_file() and e.executed_path == str(out / "bad.ipynb")
