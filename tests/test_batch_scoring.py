"""Scoring a video archive (deepfake.serving.batch, `deepfake score`): the endpoint's scores, no made-up ones,
one row per video, resumable, the same table with one worker or several, from shards or from one folder."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

import pandas as pd
import pytest

from deepfake.core.vocabulary import (
    FAKE,
    LABELS,
    RESPONSE_LABELS,
    STATUS_DECODE_ERROR,
    STATUS_ERROR,
    STATUS_NO_FACE,
    STATUS_OK,
)
from deepfake.data.manifest import read_manifest, read_sidecar
from deepfake.serving import batch


@pytest.fixture(scope="module")
def archive(tmp_path_factory, write_clip, face_photos, no_face_clip, corrupt_files):
    """Four faces at two depths, a video without a face, a file that is not a video, a non-video file."""
    root = tmp_path_factory.mktemp("archive")
    for i, (name, _photo) in enumerate(face_photos[:4]):
        write_clip(root / ("day1" if i % 2 else "day2") / f"{name}.mp4", photo=name)
    shutil.copy(no_face_clip, root / "day1" / "empty_room.mp4")
    shutil.copy(corrupt_files["text"], root / "broken.mp4")
    (root / "notes.txt").write_text("not a video: not listed\n")
    return root


def test_every_video_gets_a_row_and_unscored_ones_say_why(archive, predictor, tmp_path):
    table, summary = batch.score_folder(archive, predictor, tmp_path / "predictions.csv", workers=1, progress=False)
    keys = batch.archive_videos(archive)
    assert list(table["video_key"]) == keys and "notes.txt" not in keys and len(keys) == 6
    assert list(table.columns) == list(batch.PREDICTION_COLUMNS)
    by_key = table.set_index("video_key")
    assert by_key.loc["broken.mp4", "status"] == STATUS_DECODE_ERROR and by_key.loc["broken.mp4", "reason"]
    assert by_key.loc["day1/empty_room.mp4", "status"] == STATUS_NO_FACE
    unscored = table[table["status"] != STATUS_OK]
    assert unscored["p_fake"].isna().all() and unscored["label"].isna().all()      # no made-up scores
    scored = table[table["status"] == STATUS_OK]
    assert len(scored) == 4 and scored["p_fake"].between(0, 1).all() and (scored["frames_scored"] > 0).all()
    assert set(scored["label"]) <= set(LABELS.values()) and (table["model_version"] == predictor.version).all()
    # the same answer as the endpoint's code for the same file
    one = predictor.predict_video(archive / scored["video_key"].iloc[0])
    assert scored["p_fake"].iloc[0] == pytest.approx(one["p_fake"], abs=1e-6)
    assert scored["label"].iloc[0] == (FAKE if one["label"] == RESPONSE_LABELS[FAKE] else 1 - FAKE)
    assert summary["statuses"] == {STATUS_DECODE_ERROR: 1, STATUS_NO_FACE: 1, STATUS_OK: 4}
    assert summary["scored"] == 4 and summary["videos"] == 6 and not summary["missing"]
    written = read_manifest(tmp_path / "predictions.csv")
    assert list(written["video_key"]) == keys
    assert read_sidecar(tmp_path / "predictions.csv")["summary"]["statuses"] == summary["statuses"]
    assert "decode_error" in (tmp_path / "predictions.md").read_text()


def test_parallel_workers_and_shards_give_the_single_worker_table(archive, predictor, tmp_path):
    single, _ = batch.score_folder(archive, predictor, tmp_path / "one.csv", workers=1, progress=False)
    parallel, _ = batch.score_folder(archive, predictor, tmp_path / "two.csv", workers=3, progress=False)
    pd.testing.assert_frame_equal(parallel, single, check_exact=False, atol=1e-6)
    keys = batch.archive_videos(archive)
    parts = tmp_path / "parts"
    for index, host in enumerate(("algo-1", "algo-2")):           # as ShardedByS3Key deals them
        batch.score_videos(archive, predictor, parts, keys=keys[index::2], name=host, progress=False)
    assert {p.name.split("-")[1] for p in parts.glob(batch.PART_GLOB)} == {"algo"}
    merged = batch.merge_predictions(batch.read_parts(parts), predictor.version, keys)
    pd.testing.assert_frame_equal(merged, single, check_exact=False, atol=1e-6)


def test_a_rerun_skips_scored_videos_and_retries_errors(archive, predictor, tmp_path):
    out = tmp_path / "predictions.csv"
    first, _ = batch.score_folder(archive, predictor, out, progress=False)
    parts = batch.parts_dir_for(out)
    before = sorted(p.name for p in parts.glob(batch.PART_GLOB))
    again, summary = batch.score_folder(archive, predictor, out, progress=False)
    assert summary["this_run"] == {"videos": 6, "skipped": 6, "scored": 0, "statuses": {}}
    assert sorted(p.name for p in parts.glob(batch.PART_GLOB)) == before
    pd.testing.assert_frame_equal(again, first)
    # an `error` row (not a verdict on the video) is scored again; rows of another model are not reused
    rows = batch.read_parts(parts)
    rows.loc[rows["video_key"] == "day1/empty_room.mp4", "status"] = STATUS_ERROR
    assert "day1/empty_room.mp4" not in batch.scored_keys(rows, predictor.version)
    assert batch.scored_keys(rows, "another-model") == set()


def test_deepfake_score_command(archive, model_dir, tmp_path):
    cmd = [sys.executable, "-m", "deepfake.orchestration.cli", "score", "--data", str(archive), "--model",
           str(model_dir), "--out", str(tmp_path / "p.csv"), "--workers", "2"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=os.environ.copy())
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "| ok | 4 |" in proc.stdout and "predictions:" in proc.stdout
    assert "score" in proc.stderr                                           # the progress bar
    assert len(read_manifest(tmp_path / "p.csv")) == 6
    missing = subprocess.run([*cmd[:5], str(tmp_path / "nowhere"), *cmd[6:]], capture_output=True, text=True,
                             timeout=300)
    assert missing.returncode == 2 and "archive folder" in missing.stderr and "does not exist" in missing.stderr


def test_two_scorings_into_one_out_at_once_the_second_refuses_and_changes_nothing(archive, model_dir, tmp_path):
    """A `deepfake score --out p.csv` holds p.parts/ while it writes; a second one into the same table exits 2
    naming it and writes nothing."""
    from test_locks import holder_process

    out = tmp_path / "p.csv"
    holder = holder_process(batch.parts_dir_for(out))         # as a running `deepfake score --out p.csv` does
    try:
        proc = subprocess.run([sys.executable, "-m", "deepfake.orchestration.cli", "score", "--data", str(archive),
                               "--model", str(model_dir), "--out", str(out)], capture_output=True, text=True,
                              timeout=300)
    finally:
        holder.kill()
        holder.wait()
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert f"batch scoring into {out} is in use by pid {holder.pid} on host" in proc.stderr
    assert "wait for it to finish, or give this one another --out" in proc.stderr
    assert not out.exists() and not list(batch.parts_dir_for(out).glob(batch.PART_GLOB))
