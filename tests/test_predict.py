"""Predictor and `deepfake predict`: the training preprocessing, the response schema, no made-up scores."""

from __future__ import annotations

import json
import subprocess
import sys
import threading

import cv2
import numpy as np
import pandas as pd
import pytest
from serving_support import FRAMES_PER_VIDEO, make_model

from deepfake.core.errors import ConfigError, ModelError, VideoDecodeError
from deepfake.media.extraction import extract_video_faces
from deepfake.modeling.artifact import load_artifact
from deepfake.orchestration.cli import main
from deepfake.orchestration.registry import LocalRegistry
from deepfake.serving.packaging import package_model
from deepfake.serving.predictor import Predictor, scoring_device
from deepfake.stages.evaluation_tables import frame_predictions

RESPONSE_KEYS = {"status", "label", "p_fake", "frames_scored", "faces_found", "frame_scores", "model_version",
                 "aggregation", "threshold", "frames_sampled", "media", "message"}


@pytest.fixture(scope="module")
def face_result(predictor, face_clip):
    return predictor.predict_video(face_clip)


def test_video_response_follows_the_schema(predictor, face_result):
    result = face_result
    assert set(result) == RESPONSE_KEYS
    assert result["status"] == "ok"
    assert 0.0 <= result["p_fake"] <= 1.0
    assert result["label"] == ("FAKE" if result["p_fake"] >= result["threshold"] else "REAL")
    assert result["frames_sampled"] == FRAMES_PER_VIDEO
    assert 1 <= result["frames_scored"] == len(result["frame_scores"]) <= result["faces_found"]
    assert [f["frame_idx"] for f in result["frame_scores"]] == sorted(f["frame_idx"] for f in result["frame_scores"])
    assert result["p_fake"] == pytest.approx(np.mean([f["p_fake"] for f in result["frame_scores"]]))
    assert result["model_version"] == predictor.version and result["aggregation"] == "mean"
    assert result["media"]["kind"] == "video" and result["media"]["width"] == 320
    json.dumps(result, allow_nan=False)  # JSON-ready as it is


def test_bytes_score_like_the_file(predictor, face_clip, face_result):
    from_file = face_result
    from_bytes = predictor.predict_video(face_clip.read_bytes(), suffix=".mp4")
    assert from_bytes["frame_scores"] == from_file["frame_scores"]
    assert from_bytes["p_fake"] == from_file["p_fake"]


def test_crops_score_as_the_saved_jpeg_crops(predictor, face_clip, tmp_path):
    """The evaluation reads JPEG crops from disk: a served crop goes through the same encoding."""
    faces = extract_video_faces(face_clip, predictor.detector(), predictor.extract_config).faces
    saved = []
    for face in faces:
        path = tmp_path / f"{face.frame_idx}.jpg"
        cv2.imwrite(str(path), cv2.cvtColor(face.crop, cv2.COLOR_RGB2BGR),
                    [cv2.IMWRITE_JPEG_QUALITY, predictor.extract_config.jpeg_quality])
        saved.append(cv2.cvtColor(cv2.imread(str(path)), cv2.COLOR_BGR2RGB))
    expected = predictor.loaded.predict_logits(saved)
    assert np.array_equal(predictor.face_logits(faces), expected)


def test_crops_classified_while_decoding_score_as_at_the_end(predictor, face_clip, monkeypatch):
    """Streamed micro-batches (here 3 + 1 crops) give exactly the scores of the whole list, frame by frame."""
    monkeypatch.setattr(predictor.loaded, "micro_batch", 3)
    streamed = predictor.predict_video(face_clip)
    faces = extract_video_faces(face_clip, predictor.detector(), predictor.extract_config).faces
    assert len(faces) == 4
    at_the_end = predictor.rule.face_probabilities(predictor.face_logits(faces))
    assert [f["p_fake"] for f in streamed["frame_scores"]] == at_the_end.tolist()   # exact, not approx
    assert not [t for t in threading.enumerate() if t.name.startswith(("classify", "decode "))]


def test_a_failing_video_leaves_no_thread_behind(predictor, corrupt_files):
    with pytest.raises(VideoDecodeError):
        predictor.predict_video(corrupt_files["truncated"])
    assert not [t for t in threading.enumerate() if t.name.startswith(("classify", "decode "))]


def test_no_face_gives_no_probability(predictor, no_face_clip):
    result = predictor.predict_video(no_face_clip)
    assert result["status"] == "no_face"
    assert result["p_fake"] is None and result["label"] is None
    assert result["frames_scored"] == result["faces_found"] == 0 and result["frame_scores"] == []
    assert result["frames_sampled"] == FRAMES_PER_VIDEO
    assert "not scored" in result["message"]


def test_image(predictor, face_photos):
    name, photo = face_photos[-1]
    result = predictor.predict_image(photo)
    assert result["status"] == "ok", name
    assert result["frames_scored"] == 1 and result["frame_scores"][0]["frame_idx"] == 0
    assert result["media"] == {"kind": "image", "width": photo.shape[1], "height": photo.shape[0]}
    blank = predictor.predict_image(np.full((240, 320, 3), 128, np.uint8))
    assert blank["status"] == "no_face" and blank["p_fake"] is None


def test_undecodable_video_raises(predictor, corrupt_files):
    with pytest.raises(VideoDecodeError, match="text.mp4"):
        predictor.predict_video(corrupt_files["text"])
    with pytest.raises(VideoDecodeError, match="bytes of .mp4 video"):
        predictor.predict_video(b"definitely not a video")
    with pytest.raises(VideoDecodeError, match="empty"):
        predictor.predict_video(b"")


def test_frame_takes_its_most_fake_face_and_the_artifact_aggregation(tmp_path, multi_face_clip):
    """Several faces per frame: the frame score is evaluate.frame_predictions' (max), the video the artifact's rule."""
    model = make_model(tmp_path / "model", aggregation="max", temperature=0.5, frames=2, max_faces=3, min_score=0.8)
    predictor = Predictor.from_path(model)
    result = predictor.predict_video(multi_face_clip)
    assert result["aggregation"] == "max"
    assert result["faces_found"] > result["frames_scored"], "the clip should show several faces per frame"

    faces = extract_video_faces(multi_face_clip, predictor.detector(), predictor.extract_config).faces
    face_df = pd.DataFrame({"video_id": "v", "frame_idx": [f.frame_idx for f in faces],
                            "face_idx": [f.face_idx for f in faces], "label": 1,
                            "p_fake": predictor.rule.face_probabilities(predictor.face_logits(faces))})
    frames = frame_predictions(face_df, predictor.rule)
    assert [f["p_fake"] for f in result["frame_scores"]] == frames["p_fake"].tolist()
    assert [f["faces"] for f in result["frame_scores"]] == frames["n_faces"].tolist()
    assert result["p_fake"] == frames["p_fake"].max()


def test_model_without_extract_settings_is_refused(model_dir):
    loaded = load_artifact(model_dir)
    loaded.config = {**loaded.config, "extract": None}
    with pytest.raises(ModelError, match="no extract settings"):
        Predictor(loaded)


def test_a_model_that_does_not_name_its_detector_is_refused(model_dir):
    """Serving detects as training did: a config.json without the detector would get today's default."""
    loaded = load_artifact(model_dir)
    loaded.config = {**loaded.config, "extract": {k: v for k, v in loaded.config["extract"].items() if k != "detector"}}
    with pytest.raises(ModelError, match="does not record its extraction's detector"):
        Predictor(loaded)


def test_a_model_loaded_in_the_background_scores_the_same(model_dir, face_clip, face_result):
    background = Predictor.from_path(model_dir, background=True)
    assert background.version == face_result["model_version"]        # from the files, before torch
    assert background.predict_video(face_clip) == face_result


def test_weights_that_do_not_load_stop_the_cli_with_the_reason(model_dir, face_clip, tmp_path, capsys):
    broken = tmp_path / "broken"
    broken.mkdir()
    for name in ("config.json", "model_card.md"):
        (broken / name).write_bytes((model_dir / name).read_bytes())
    config = json.loads((broken / "config.json").read_text())
    (broken / "model.safetensors").write_bytes(b"not safetensors")
    config.pop("weights_sha256")                          # the files agree; the weights just do not load
    (broken / "config.json").write_text(json.dumps(config))
    with pytest.raises(ModelError, match="cannot be read as safetensors"):
        Predictor.from_path(broken, background=True).predict_video(face_clip)
    assert main(["predict", str(face_clip), str(face_clip), "--model", str(broken), "--json"]) == 2
    err = capsys.readouterr()
    assert "cannot be read as safetensors" in err.err and err.out == ""


def test_auto_device_is_the_cpu_here_without_importing_torch():
    code = ("import sys; from deepfake.serving.predictor import scoring_device; "
            "print(scoring_device('auto'), 'torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert out == ["cpu", "False"]


def test_asking_for_a_gpu_without_one_is_a_clear_error(model_dir, face_clip, capsys):
    with pytest.raises(ConfigError, match="no NVIDIA GPU"):
        scoring_device("cuda")
    assert main(["predict", str(face_clip), "--model", str(model_dir), "--device", "cuda"]) == 2
    assert "no NVIDIA GPU" in capsys.readouterr().err


def test_cli_scores_every_input_and_reports_failures(model_dir, face_result, face_clip, no_face_clip, corrupt_files,
                                                     capsys):
    code = main(["predict", str(face_clip), str(corrupt_files["text"]), str(no_face_clip),
                 "--model", str(model_dir), "--json"])
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert code == 1
    assert [r["input"] for r in lines] == [str(face_clip), str(corrupt_files["text"]), str(no_face_clip)]
    assert lines[0]["status"] == "ok" and lines[0]["p_fake"] == face_result["p_fake"]
    assert lines[1]["status"] == "error" and lines[1]["p_fake"] is None and "text.mp4" in lines[1]["message"]
    assert lines[2]["status"] == "no_face" and lines[2]["p_fake"] is None


def test_cli_table(model_dir, face_clip, no_face_clip, capsys):
    assert main(["predict", str(face_clip), str(no_face_clip), "--model", str(model_dir)]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].split() == ["input", "label", "p_fake", "frames", "faces", "status"]
    assert out[1].split()[-1] == "ok" and out[1].split()[1] in ("REAL", "FAKE")
    assert out[2].split()[1:] == ["-", "-", "0", "0", "no_face"]


def test_cli_uses_the_latest_approved_registry_version(model_dir, face_result, face_clip, tmp_path, monkeypatch,
                                                       capsys):
    monkeypatch.setenv("DEEPFAKE_REGISTRY", str(tmp_path / "registry"))
    assert main(["predict", str(face_clip), "--group", "g"]) == 2
    assert "no approved version" in capsys.readouterr().err
    registry = LocalRegistry()
    archive = package_model(model_dir, tmp_path / "model.tar.gz")
    registry.register("g", archive, {"video_auc": 0.9})
    registry.approve("g", 1)
    assert main(["predict", str(face_clip), "--group", "g", "--json"]) == 0
    captured = capsys.readouterr()
    assert "registry g v1" in captured.err
    assert json.loads(captured.out)["p_fake"] == face_result["p_fake"]
