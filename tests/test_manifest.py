import json

import pandas as pd
import pytest

from deepfake.core.errors import ManifestError
from deepfake.core.files import sha256_file
from deepfake.data.manifest import read_manifest, read_sidecar, write_manifest


def test_manifest_round_trip_with_sidecar(tmp_path):
    src = tmp_path / "input.bin"
    src.write_bytes(b"abc")
    df = pd.DataFrame({"video_id": ["a", "b"], "label": [0, 1], "box": ["[1, 2, 3, 4]", ""]})
    path = write_manifest(df, tmp_path / "out" / "faces.csv", config={"margin": 0.3}, inputs=[src])
    back = read_manifest(path, required=["video_id", "label"])
    assert back["video_id"].tolist() == ["a", "b"] and back["label"].tolist() == [0, 1]
    meta = read_sidecar(path)
    assert meta["rows"] == 2 and meta["config"] == {"margin": 0.3}
    assert meta["inputs"] == {str(src): sha256_file(src)}
    assert not list((tmp_path / "out").glob(".*tmp"))


def test_missing_columns_and_files_are_named(tmp_path):
    path = write_manifest(pd.DataFrame({"a": [1]}), tmp_path / "t.csv")
    with pytest.raises(ManifestError, match="lacks column.*video_id"):
        read_manifest(path, required=["video_id"])
    with pytest.raises(ManifestError, match="does not exist"):
        read_manifest(tmp_path / "nope.csv")
    assert json.loads((tmp_path / "t.json").read_text())["columns"] == ["a"]


def test_written_files_are_readable_by_others(tmp_path):
    import os
    import stat

    path = write_manifest(pd.DataFrame({"a": [1]}), tmp_path / "t.csv")
    old = os.umask(0o022)
    os.umask(old)
    if old & 0o004 == 0:
        assert path.stat().st_mode & stat.S_IROTH


def test_sidecars_record_the_sha256_of_the_files_a_table_was_read_from(tmp_path):
    """videos.csv -> faces.csv: each stage's sidecar names its input files with their sha256."""
    from deepfake.core.files import sha256_file
    from deepfake.data.manifest import sources, with_sources

    source = tmp_path / "videos.csv"
    source.write_text("video_id\na\n")
    table = with_sources(pd.DataFrame({"video_id": ["a"]}), [source])
    assert sources(table[table["video_id"] == "a"]) == [str(source)]          # kept through a filter
    write_manifest(table, tmp_path / "faces.csv", inputs=sources(table))
    assert read_sidecar(tmp_path / "faces.csv")["inputs"] == {str(source): sha256_file(source)}
