"""Sampling frames in one pass from real encoded clips (mp4v, H.264, MJPG), and failures."""

from __future__ import annotations

import tempfile
import threading

import av
import cv2
import numpy as np
import pytest

from deepfake.core.errors import ConfigError, VideoDecodeError
from deepfake.media import video
from deepfake.media.encode import write_video
from deepfake.media.video import frame_indices, iter_frames, probe, sample_frames, sample_frames_from_bytes


class CountingCapture:
    """A real capture that counts calls and can report a false frame count.

    It wraps rather than subclasses ``cv2.VideoCapture``: Python subclasses of
    OpenCV's binding classes crash the interpreter when garbage-collected.
    """

    def __init__(self, path: str, frame_count: float | None = None) -> None:
        self._cap = cv2.VideoCapture(path, cv2.CAP_FFMPEG)
        self.frame_count = frame_count
        self.grabs = 0
        self.retrieves = 0
        self.sets: list[int] = []

    def isOpened(self):
        return self._cap.isOpened()

    def release(self):
        self._cap.release()

    def grab(self):
        self.grabs += 1
        return self._cap.grab()

    def retrieve(self, *args):
        self.retrieves += 1
        return self._cap.retrieve(*args)

    def set(self, prop, value):
        self.sets.append(prop)
        return self._cap.set(prop, value)

    def get(self, prop):
        if prop == cv2.CAP_PROP_FRAME_COUNT and self.frame_count is not None:
            return self.frame_count
        return self._cap.get(prop)


@pytest.fixture
def captures(monkeypatch):
    """Route video.open_capture through CountingCapture; returns (opened list, settings dict)."""
    opened: list[CountingCapture] = []
    settings: dict = {"frame_count": None}

    def open_capture(path):
        cap = CountingCapture(str(path), settings["frame_count"])
        opened.append(cap)
        return cap

    monkeypatch.setattr(video, "open_capture", open_capture)
    return opened, settings


# --- which frames -----------------------------------------------------------------------------

def test_even_indices_spread_over_the_whole_video():
    idx = frame_indices(300, 16)
    assert len(idx) == 16 and idx == sorted(set(idx))
    gaps = np.diff(idx)
    assert gaps.max() - gaps.min() <= 1
    assert idx[0] <= 300 / 16 and idx[-1] >= 300 - 300 / 16   # covers the start and the end segment
    assert idx[-1] < 299                                      # but not the very last frame


def test_short_video_gives_every_frame():
    assert frame_indices(10, 16) == list(range(10))
    assert frame_indices(0, 16) == []


def test_stride_indices():
    assert frame_indices(100, 5, 10) == [0, 10, 20, 30, 40]
    assert frame_indices(100, 0, 30) == [0, 30, 60, 90]
    assert frame_indices(25, 16, 10) == [0, 10, 20]


@pytest.mark.parametrize("args", [(-1, 16, 0), (10, -1, 0), (10, 4, -2), (10, 0, 0)])
def test_bad_index_arguments_raise(args):
    with pytest.raises(ConfigError):
        frame_indices(*args)


# --- decoding real clips ------------------------------------------------------------------------

def test_probe_reads_the_header(face_clip):
    info = probe(face_clip)
    assert (info.width, info.height, info.frame_count, info.fps) == (320, 240, 12, 25.0)
    assert info.duration_s == pytest.approx(0.48)
    assert info.path == str(face_clip)


def test_sample_frames_mp4v(face_clip):
    s = sample_frames(face_clip, n_frames=4)
    assert s.indices == frame_indices(12, 4)
    assert len(s.frames) == 4 and not s.truncated
    assert all(f.shape == (240, 320, 3) and f.dtype == np.uint8 for f in s.frames)
    assert s.info.frame_count == 12


@pytest.mark.parametrize("codec", ["h264", "mp4v", "MJPG"])
def test_roundtrip_keeps_rgb_order_and_codec(tmp_path, codec):
    red = np.zeros((64, 96, 3), np.uint8)
    red[..., 0] = 220
    path = tmp_path / ("red.avi" if codec == "MJPG" else "red.mp4")
    write_video(path, [red] * 6, fps=10, codec=codec)
    s = sample_frames(path, n_frames=3)
    r, g, b = (s.frames[1][..., c].mean() for c in range(3))
    assert r > 180 and g < 40 and b < 40
    assert s.info.fps == pytest.approx(10.0) and s.info.frame_count == 6
    with av.open(str(path)) as container:
        name = container.streams.video[0].codec_context.name
    assert name == {"h264": "h264", "mp4v": "mpeg4", "MJPG": "mjpeg"}[codec]


def test_h264_face_clip_decodes(write_clip):
    path = write_clip(codec="h264", frames=10)
    s = sample_frames(path, n_frames=5)
    assert s.indices == frame_indices(10, 5) and s.frames[0].shape == (240, 320, 3)


def test_decoder_threads_do_not_change_the_frames(write_clip):
    path = write_clip(codec="h264", frames=20)
    default = sample_frames(path, n_frames=5)
    for threads in (1, 2):
        reader = iter_frames(path, n_frames=5, decode_threads=threads)
        got = list(reader)
        assert [i for i, _ in got] == default.indices == reader.indices
        assert all(np.array_equal(a, b) for (_, a), b in zip(got, default.frames, strict=True))
    with pytest.raises(ConfigError, match="decode_threads"):
        iter_frames(path, n_frames=5, decode_threads=0)


def test_one_sequential_pass_retrieves_only_wanted_frames(write_clip, captures):
    path = write_clip(frames=30)
    opened, _ = captures
    s = sample_frames(path, n_frames=5)
    assert len(opened) == 1                        # one open, one pass
    cap = opened[0]
    assert cap.retrieves == 5                      # colour conversion only at the wanted frames
    assert cap.grabs == s.indices[-1] + 1          # stops after the last wanted frame
    assert cap.sets == []                          # never seeks


def test_stride_stops_once_enough_frames(write_clip, captures):
    path = write_clip(frames=30)
    opened, _ = captures
    s = sample_frames(path, n_frames=3, stride=4)
    assert s.indices == [0, 4, 8]
    assert opened[0].grabs == 9 and opened[0].retrieves == 3


def test_overstated_frame_count_returns_what_exists(face_clip, captures):
    _, settings = captures
    settings["frame_count"] = 24                   # the header says 24, the stream has 12
    s = sample_frames(face_clip, n_frames=4)
    assert s.indices == [i for i in frame_indices(24, 4) if i < 12]
    assert s.truncated and s.info.frame_count == 12


def test_unknown_frame_count_is_counted_first(face_clip, captures):
    opened, settings = captures
    settings["frame_count"] = 0
    s = sample_frames(face_clip, n_frames=4)
    assert s.indices == frame_indices(12, 4) and s.info.frame_count == 12
    assert len(opened) == 2                        # a counting pass, then the sampling pass


def test_understated_count_does_not_cut_a_stride(face_clip, captures):
    _, settings = captures
    settings["frame_count"] = 5
    s = sample_frames(face_clip, n_frames=0, stride=2)
    assert s.indices == [0, 2, 4, 6, 8, 10]
    assert s.info.frame_count == 12 and not s.truncated


def test_prefetching_reader_matches_and_stops_cleanly(face_clip):
    plain = sample_frames(face_clip, n_frames=6)
    reader = iter_frames(face_clip, n_frames=6, prefetch=2)
    got = list(reader)
    assert [i for i, _ in got] == plain.indices == reader.indices
    assert all(np.array_equal(a, b) for (_, a), b in zip(got, plain.frames))
    for idx, _ in iter_frames(face_clip, n_frames=12, prefetch=1):
        if idx == 2:
            break
    assert not [t for t in threading.enumerate() if t.name.startswith("decode ")]


def test_reader_reads_once(face_clip):
    reader = iter_frames(face_clip, n_frames=2, prefetch=0)
    list(reader)
    with pytest.raises(RuntimeError):
        list(reader)


# --- files that are not (whole) videos ----------------------------------------------------------

@pytest.mark.parametrize("kind, words", [
    ("empty", "empty (0 bytes)"),
    ("text", "not a readable video"),
    ("truncated", "not a readable video"),
])
def test_corrupt_files_raise_naming_the_file(corrupt_files, kind, words):
    path = corrupt_files[kind]
    with pytest.raises(VideoDecodeError) as err:
        sample_frames(path)
    assert str(path) in str(err.value) and words in err.value.reason
    assert err.value.path == str(path)
    with pytest.raises(VideoDecodeError):
        probe(path)


def test_missing_file_and_folder(tmp_path):
    with pytest.raises(VideoDecodeError, match="file not found"):
        sample_frames(tmp_path / "nope.mp4")
    with pytest.raises(VideoDecodeError, match="folder"):
        sample_frames(tmp_path)


def test_truncated_file_returns_wanted_frames_that_decode(corrupt_files):
    path = corrupt_files["truncated_tail"]
    assert probe(path).frame_count == 30           # the header still announces all frames
    s = sample_frames(path, n_frames=3)            # wants 5, 15, 25
    assert s.indices == [5] and s.truncated
    assert 6 <= s.info.frame_count < 15


def test_truncated_file_without_any_wanted_frame_raises(corrupt_files):
    path = corrupt_files["truncated_tail"]
    with pytest.raises(VideoDecodeError, match="none of the sampled frames") as err:
        sample_frames(path, n_frames=1)            # wants frame 15 only
    assert str(path) in str(err.value)


# --- bytes in, files out ------------------------------------------------------------------------

def test_sample_from_bytes_cleans_up(face_clip, tmp_path, monkeypatch):
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    s = sample_frames_from_bytes(face_clip.read_bytes(), ".mp4", n_frames=3)
    assert s.indices == frame_indices(12, 3) and "bytes" in s.info.path
    with pytest.raises(VideoDecodeError, match="bytes"):
        sample_frames_from_bytes(b"GIF89a not a video")
    with pytest.raises(VideoDecodeError, match="empty"):
        sample_frames_from_bytes(b"")
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(ConfigError):
        sample_frames_from_bytes(b"x", suffix="/../evil")


def test_write_video_rejects_bad_input(tmp_path):
    frame = np.zeros((32, 48, 3), np.uint8)
    with pytest.raises(ConfigError, match="FourCC"):
        write_video(tmp_path / "a.mp4", [frame], codec="hevc-ish")
    with pytest.raises(ConfigError, match="even"):
        write_video(tmp_path / "a.mp4", [np.zeros((33, 48, 3), np.uint8)], codec="h264")
    with pytest.raises(ConfigError, match="no frames"):
        write_video(tmp_path / "a.mp4", [], codec="h264")
    with pytest.raises(ConfigError, match="must all be"):
        write_video(tmp_path / "a.mp4", [frame, np.zeros((16, 16, 3), np.uint8)], codec="mp4v")
    with pytest.raises(ConfigError, match="cannot write"):
        write_video(tmp_path / "a.txt", [frame], codec="mp4v")
    assert list(tmp_path.iterdir()) == []           # no half-written file left behind


def test_probe_names_the_codec_and_size(face_clip):
    info = probe(face_clip)
    assert info.codec == "fmp4" and info.size_bytes == face_clip.stat().st_size


def test_reencode_smaller_and_compressed(face_clip, tmp_path):
    """What a transcoder does to an upload: the same frames, smaller, H.264 at a high constant rate factor."""
    from deepfake.media.encode import reencode

    small = reencode(face_clip, tmp_path / "small.mp4", scale=0.5, crf=45)
    before, after = probe(face_clip), probe(small)
    assert (after.width, after.height, after.codec) == (160, 120, "h264")
    assert after.frame_count == before.frame_count and after.fps == before.fps
    assert after.size_bytes < before.size_bytes / 3
    with pytest.raises(ConfigError, match="crf=60"):
        write_video(tmp_path / "x.mp4", [np.zeros((8, 8, 3), np.uint8)], codec="h264", crf=60)
    with pytest.raises(ConfigError, match="needs codec h264"):
        write_video(tmp_path / "x.avi", [np.zeros((8, 8, 3), np.uint8)], codec="MJPG", crf=30)
    with pytest.raises(ConfigError, match="scale=2"):
        reencode(face_clip, tmp_path / "big.mp4", scale=2)
