"""Items 1 and 5: face extraction against the decode-only limit, and its scaling over workers.

The decode-only pass is the floor of extraction on a CPU: the same file, the
same sampled frames, the same single sequential pass (``grab()`` on every
frame, ``retrieve()`` only on the wanted ones), and nothing else. Extraction
can only approach it by hiding detection behind decoding (a decode thread runs
ahead) and by detecting on downscaled frames.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Sequence
from functools import partial
from pathlib import Path

import pandas as pd

from benchmarks.report import RATIO_AT_LEAST, RATIO_AT_MOST, Row, Target
from benchmarks.timing import interleave, p50, rounded, say, timed
from deepfake.core.resources import usable_cores
from deepfake.media.extraction import ExtractConfig, build_detector, extract_video_faces
from deepfake.media.video import probe, sample_frames
from deepfake.stages.extract import extract_faces

EXTRACT_TARGET = Target(RATIO_AT_MOST, 1.3)   # extraction at most 1.3x the decode-only time
SCALING_WORKERS = (2, 4, 8)                   # worker counts compared with 1, up to the usable cores
SCALING_PER_WORKER = 0.7                      # on a host with more than 2 cores: N workers >= 0.7 N x 1 worker


CANDIDATE_DETECTORS = ("mtcnn-track",)       # selectable detectors timed beside the default (issue 18)


def bench_extraction(clips: Sequence[tuple[str, Path]], frames: int, reps: int) -> list[Row]:
    """Item 1: per clip, seconds of face extraction vs the decode-only pass (median of ``reps``, interleaved).

    The default detector and each of CANDIDATE_DETECTORS are timed in the same turns as decoding.
    """
    config = ExtractConfig(frames_per_video=frames)
    configs = [config] + [config.replace(detector=name) for name in CANDIDATE_DETECTORS]
    detectors = [build_detector(c) for c in configs]  # built once, as extraction and serving do
    rows = []
    for name, path in clips:
        say(f"[1] extraction vs decode-only, {name}: {reps} runs each, detectors {', '.join(c.detector for c in configs)}")
        seconds, results = interleave(
            [partial(sample_frames, path, frames)]
            + [partial(extract_video_faces, path, d, c) for d, c in zip(detectors, configs, strict=True)], reps)
        decode_s = seconds[0]
        searched = min(frames, probe(path).frame_count)
        for c, extract_s, result in zip(configs, seconds[1:], results[1:], strict=True):
            with_face = len({f.frame_idx for f in result.faces})
            which = "" if c.detector == config.detector else f", detector {c.detector} (selectable)"
            rows.append(Row(1, f"face extraction, {frames} frames, {name}{which}", "s", p50(extract_s), p50(decode_s),
                            "decode-only", EXTRACT_TARGET,
                            note=f"faces in {with_face}/{searched} frames, {c.detector}",
                            samples={"extract_s": rounded(extract_s), "decode_only_s": rounded(decode_s)}))
    return rows


def bench_scaling(clips: Sequence[tuple[str, Path]], frames: int, videos: int, work: Path) -> list[Row]:
    """Item 5: videos/s of ``extract_faces`` with N workers against 1, on the same videos.

    N is 2, 4 and 8 as far as the usable cores go. On 2 cores the 2-worker row
    is information (one worker already keeps both cores busy with FFmpeg's
    threads); on a bigger host each row's target is 0.7 N. Each run writes
    into a fresh folder (an existing one would be resumed and skip every
    video). Worker start-up (spawned processes, a detector each) is part of
    the measured time: it is part of what a user waits for.
    """
    cores = usable_cores()
    counts = [n for n in SCALING_WORKERS if n <= max(2, cores)]
    videos = max(videos, 2 * counts[-1])
    table, data = _scaling_videos(clips, videos, work)
    seconds, faces = {}, {}
    for workers in (1, *counts):
        say(f"[5] extract_faces over {videos} videos with {workers} worker(s)")
        out = work / f"scaling-faces-w{workers}"
        shutil.rmtree(out, ignore_errors=True)
        config = ExtractConfig(frames_per_video=frames, workers=workers)
        seconds[workers], faces[workers] = timed(lambda c=config, o=out: extract_faces(table, data, o, c,
                                                                                       progress=False))
        shutil.rmtree(out, ignore_errors=True)
    mix = ", ".join(sorted({name for name, _ in clips}))
    one = videos / seconds[1]
    rows = []
    for n in counts:
        target = Target(RATIO_AT_LEAST, round(SCALING_PER_WORKER * n, 2)) if cores > 2 else None
        note = f"{int((faces[n]['status'] == 'ok').sum())} faces; {cores} usable cores" + (
            "; information on 2 cores: one worker already keeps both busy" if target is None else "")
        rows.append(Row(5, f"extraction throughput, {n} workers vs 1, {videos} videos ({mix})", "videos/s",
                        videos / seconds[n], one, "1 worker", target, note=note,
                        samples={"seconds_1_worker": [round(seconds[1], 4)],
                                 f"seconds_{n}_workers": [round(seconds[n], 4)]}))
    return rows


def _scaling_videos(clips: Sequence[tuple[str, Path]], videos: int, work: Path) -> tuple[pd.DataFrame, Path]:
    data = work / "scaling-data"
    shutil.rmtree(data, ignore_errors=True)
    data.mkdir(parents=True)
    records = []
    for i in range(videos):
        name, src = clips[i % len(clips)]
        dst = data / f"v{i:02d}-{name}{src.suffix}"
        _link_or_copy(src, dst)
        records.append({"video_id": dst.stem, "path": dst.name, "label": i % 2, "split": "train"})
    return pd.DataFrame(records), data


def _link_or_copy(src: Path, dst: Path) -> None:
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)
