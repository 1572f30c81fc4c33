"""Which originals, fakes, splits and names the demo dataset has: a pure function of its parameters.
"""

from __future__ import annotations

import string
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from deepfake.core.errors import DataError
from deepfake.demo.manipulations import get_method

MIN_VIDEOS = 6                     # 3 originals (one per split) and their fakes
REAL_FRACTION = 0.5                # half real: self-blended training learns from reals alone, and the


                                   # test needs enough reals to measure false alarms (DFDC: 1 in 6 is real)
TEST_FRACTION = 0.3                # of the originals: 5 of 16 at the default 48 videos, enough for an AUC
VAL_FRACTION = 0.125               # of the originals
DEFAULT_METHODS = ("faceswap", "reenact", "face2face")
CLIP_FRAMES = (24, 40)             # frames per clip (1-1.6 s): extraction stays fast
LONG_VIDEO = 200                   # frames: a real video this long gives twice as many clips


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
