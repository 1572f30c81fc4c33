"""A training run's state after each epoch, so a stopped run resumes where it was, to the same bits.

A Processing job can be stopped at any time (its maximum run time, a retry
after a failure, a person), and a DFDC epoch takes hours. After every epoch the
training loop writes one file holding everything the rest of the run depends
on: the weights, the optimiser's and the schedule's state, the best epoch so
far (its weights and record), the history, and every random generator the run
draws from (torch's, numpy's, Python's and the loaders'). A run that starts
again with the same settings and data finds it and carries on from the next
epoch; on the CPU the result is bit for bit the one an uninterrupted run gives.

The file records a fingerprint of the settings and the data (:func:`fingerprint`);
a checkpoint of other settings or data is never resumed: the run starts over
and replaces it. The write is atomic (a temporary file, then a rename), so a
run stopped while saving leaves the previous epoch's checkpoint whole.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from deepfake.core import paths
from deepfake.core.errors import ModelError

CHECKPOINT = "checkpoint.pt"
FORMAT = 1                                # bump when the content below changes


def fingerprint(settings: Mapping[str, Any], inputs: Iterable[str | os.PathLike[str]]) -> str:
    """sha256 of the settings (JSON) and of the content of every input file: what a resumed run must share."""
    h = hashlib.sha256(json.dumps(settings, sort_keys=True, default=str).encode())
    for path in sorted(str(p) for p in inputs):
        h.update(b"\0")
        with open(path, "rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                h.update(chunk)
    return h.hexdigest()


def rng_state(generators: Sequence[torch.Generator] = ()) -> dict[str, Any]:
    """Every random generator a training run draws from: torch's (and CUDA's), numpy's, Python's, and ``generators``."""
    state = {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate(),
             "generators": [g.get_state() for g in generators]}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng(state: Mapping[str, Any], generators: Sequence[torch.Generator] = ()) -> None:
    torch.set_rng_state(state["torch"])
    np.random.set_state(state["numpy"])
    random.setstate(state["python"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    saved = state.get("generators", [])
    if len(saved) != len(generators):
        raise ModelError(f"the checkpoint holds {len(saved)} loader generator states, the run has {len(generators)}")
    for generator, s in zip(generators, saved, strict=True):
        generator.set_state(s)


def save_checkpoint(folder: str | os.PathLike[str], state: Mapping[str, Any]) -> Path:
    """Write ``state`` (with its ``fingerprint``) to ``folder/checkpoint.pt`` atomically; returns the path."""
    out = paths.ensure_dir(folder) / CHECKPOINT
    tmp = out.with_name(f".{CHECKPOINT}.tmp")
    torch.save({"format": FORMAT, **state}, tmp)
    os.replace(tmp, out)
    return out


def load_checkpoint(folder: str | os.PathLike[str], expected: str) -> tuple[dict[str, Any] | None, str]:
    """The checkpoint in ``folder`` when a run of fingerprint ``expected`` wrote it, and a line that says
    what was found: None when there is none, or it belongs to other settings or data (start over)."""
    path = paths.resolve(folder) / CHECKPOINT
    if not path.is_file():
        return None, ""
    try:
        state = torch.load(path, map_location="cpu", weights_only=False)   # our own file: RNG states inside
    except Exception as exc:  # noqa: BLE001 -- a truncated or foreign file: start over, say why
        return None, f"checkpoint {path} cannot be read ({type(exc).__name__}: {exc}); training starts over"
    if not isinstance(state, dict) or state.get("format") != FORMAT or state.get("fingerprint") != expected:
        return None, f"checkpoint {path} was written with other settings or data; training starts over"
    return state, f"resuming from checkpoint {path} after epoch {state.get('epoch')}"
