"""Dataset layouts -> one videos table.

Every catalog turns a dataset folder into the same table (``videos.csv``)::

    video_id, path, label, original_id, manipulation, split

``path`` is relative to the dataset root, ``label`` is ``0`` real / ``1``
fake (:data:`LABELS`), ``original_id`` is a real video's own id and a fake's
source id, ``manipulation`` is ``none`` for real videos, ``split`` is
``train``/``val``/``test`` or ``""`` where the dataset does not say
(:func:`deepfake.data.splits.ensure_splits` fills it). Rows are sorted by path.

``load_catalog("auto", root)`` tries the layouts in the order of
:data:`DETECTION_ORDER` and uses the first that matches at the root.

A dataset is read whole or refused: a root with no layout of its own but
datasets in its subfolders, or one whose layout leaves out video files that lie
outside that layout's folders (another dataset beside it), is an error listing
what was found and how to choose (the subfolder, or the ``catalog`` option). The
table's ``attrs["layout"]`` says what was read (:func:`describe_layout` prints
it): the layout, the videos per source folder and the video files left out, why.
"""

from __future__ import annotations

import inspect
import logging
import os
from pathlib import Path, PurePosixPath
from typing import Any

import pandas as pd

from deepfake.core import paths
from deepfake.core.errors import CatalogError
from deepfake.core.vocabulary import LABEL_NAMES
from deepfake.data.catalogs import celebdf, dfdc, faceforensics, generic
from deepfake.data.catalogs.table import COLUMNS, VIDEO_EXTENSIONS, Catalog, find_videos, relpath

__all__ = ["CATALOGS", "COLUMNS", "DETECTION_ORDER", "VIDEO_EXTENSIONS", "Catalog",
           "available", "dataset_root", "describe_layout", "detect_kind", "layouts_in", "load_catalog"]

log = logging.getLogger(__name__)

AUTO = "auto"

CATALOGS: dict[str, Catalog] = {c.name: c for c in (
    dfdc.CATALOG,
    faceforensics.CATALOG,
    celebdf.CATALOG,
    generic.CSV_CATALOG,
    generic.FOLDERS_CATALOG,
)}

# What "auto" tries, in order: an explicit labels CSV wins, then the published
# layouts (most specific markers first), then plain real/fake folders.
DETECTION_ORDER = ("csv", "faceforensics", "celebdf", "dfdc", "folders")


def available() -> list[str]:
    """Kinds ``load_catalog`` accepts, ``auto`` last."""
    return [*CATALOGS, AUTO]


def _existing(root: str | os.PathLike[str]) -> Path:
    path = paths.resolve(root)
    if not path.exists():
        raise CatalogError(f"dataset path {path} does not exist")
    return path


def detect_kind(root: str | os.PathLike[str]) -> str:
    """The first catalog whose layout ``root`` has; CatalogError saying what was found below it, or what was
    looked for, otherwise."""
    path = _existing(root)
    for name in DETECTION_ORDER:
        if CATALOGS[name].detect(path):
            return name
    below = [(kind, folder) for kind, folder in layouts_in(path) if folder != path]
    if below:
        raise CatalogError(f"{path} is not a dataset folder itself, but {_found(below, path)}. "
                           f"{_choose(path, below)}")
    looked = "; ".join(f"{name}: {CATALOGS[name].layout}" for name in DETECTION_ORDER)
    raise CatalogError(f"no known dataset layout in {path}. Looked for -- {looked}. "
                       "Arrange the data like one of these, or write a labels.csv (path,label)")


def layouts_in(root: str | os.PathLike[str], depth: int = 3) -> list[tuple[str, Path]]:
    """(kind, folder) of every dataset layout at ``root`` or up to ``depth`` folder levels below it; the search
    does not look inside a folder where it found one."""
    found: list[tuple[str, Path]] = []
    level = [paths.resolve(root)]
    for _ in range(depth + 1):
        below = []
        for folder in level:
            kinds = [name for name in DETECTION_ORDER if CATALOGS[name].detect(folder)]
            found += [(name, folder) for name in kinds]
            if not kinds and folder.is_dir():
                below += sorted(d for d in folder.iterdir() if d.is_dir() and not d.name.startswith("."))
        level = below
    return found


def dataset_root(root: str | os.PathLike[str]) -> Path:
    """The folder the table's paths are relative to: ``root``, or its folder when it is a CSV file."""
    path = paths.resolve(root)
    return path.parent if path.is_file() else path


def load_catalog(kind: str, root: str | os.PathLike[str], **options: Any) -> pd.DataFrame:
    """The videos table of the dataset at ``root``, read as layout ``kind`` (or ``auto``).

    A relative ``root`` is taken from the project folder (:func:`deepfake.core.paths.resolve`).

    ``options`` go to the layout's reader: ``allow_missing`` (dfdc, celebdf,
    csv: drop listed files that are absent, with a warning, instead of
    raising) and ``compression`` (faceforensics, default ``c23``).

    With ``auto``, video files under the root that the detected layout does not
    own are an error (several datasets in one folder); with a named ``kind`` they
    are left out and listed in ``attrs["layout"]``.
    """
    name = str(kind).strip().lower()
    if name != AUTO and name not in CATALOGS:
        raise CatalogError(f"unknown catalog {kind!r}; available: {', '.join(available())}")
    path = _existing(root)
    if name == AUTO:
        name = detect_kind(path)
        log.info("detected the %s layout in %s", name, path)
    catalog = CATALOGS[name]
    accepted = [p for p in inspect.signature(catalog.load).parameters.values()
                if p.kind is inspect.Parameter.KEYWORD_ONLY]
    unknown = sorted(set(options) - {p.name for p in accepted})
    if unknown:
        raise CatalogError(f"option(s) {', '.join(unknown)} not accepted by the {name} catalog (for {path}); "
                           f"it accepts: {', '.join(p.name for p in accepted) or 'no options'}")
    try:
        table = catalog.load(path, **options)
    except CatalogError as exc:
        below = [(k, f) for k, f in layouts_in(path) if f != path] if path.is_dir() else []
        if not below:
            raise
        raise CatalogError(f"{exc}. {path} is not a {name} dataset folder, but {_found(below, path)}. "
                           f"{_choose(path, below)}") from None
    table.attrs["inputs"] = [str(p) for p in catalog.index_files(path)]   # the sidecar records their sha256
    table.attrs[LAYOUT_ATTR] = _layout(name, path, table, chosen=kind != AUTO)
    return table


LAYOUT_ATTR = "layout"      # DataFrame.attrs key: what load_catalog read (see describe_layout)
_EXAMPLES = 5               # video files named in a message or summary
_FOLDERS_SHOWN = 20         # source folders listed one a line by describe_layout


def _layout(name: str, path: Path, table: pd.DataFrame, *, chosen: bool) -> dict[str, Any]:
    """What was read from ``path`` as ``name``; with ``auto`` (not ``chosen``), refuse a partial read."""
    catalog = CATALOGS[name]
    root = dataset_root(path)
    read = set(table["path"])
    unread = [relpath(v, root) for v in find_videos(root)]
    unread = [rel for rel in unread if rel not in read]
    foreign = [rel for rel in unread if not catalog.owns(root, rel)]
    if foreign and not chosen:
        raise CatalogError(_several(name, root, table, foreign))
    folders: dict[str, dict[str, int]] = {}
    for rel, label in zip(table["path"], table["label"], strict=True):
        counts = folders.setdefault(PurePosixPath(rel).parent.as_posix(), {"real": 0, "fake": 0})
        counts[LABEL_NAMES[int(label)]] += 1
    left_out = [{"videos": len(group), "why": why, "examples": group[:_EXAMPLES]}
                for group, why in ((sorted(set(unread) - set(foreign)), catalog.left_out),
                                   (foreign, f"outside the {name} layout's folders (catalog={name} was chosen)"))
                if group]
    return {"kind": name, "root": str(path), "description": catalog.layout, "videos": int(len(table)),
            "folders": dict(sorted(folders.items())), "left_out": left_out}


def describe_layout(layout: dict[str, Any]) -> list[str]:
    """Lines that say what was read: the layout and its root, the videos per source folder, what was left out."""
    folders = layout["folders"]
    total = {k: sum(c[k] for c in folders.values()) for k in ("real", "fake")}
    lines = [f"dataset: {layout['kind']} layout at {layout['root']}: {layout['videos']} videos "
             f"({total['real']} real, {total['fake']} fake) in {len(folders)} folder(s)"]
    shown = list(folders.items())
    for folder, counts in shown[:_FOLDERS_SHOWN]:
        lines.append(f"  {folder}/: {counts['real'] + counts['fake']} videos "
                     f"({counts['real']} real, {counts['fake']} fake)")
    if len(shown) > _FOLDERS_SHOWN:
        rest = shown[_FOLDERS_SHOWN:]
        lines.append(f"  ... and {len(rest)} more folders ({sum(sum(c.values()) for _, c in rest)} videos)")
    for group in layout.get("left_out", []):
        lines.append(f"  left out: {group['videos']} video file(s) {group['why']} "
                     f"(e.g. {', '.join(group['examples'])})")
    return lines


def _several(name: str, root: Path, table: pd.DataFrame, foreign: list[str]) -> str:
    """The refusal of a folder that holds more than one dataset: what is where, and how to choose."""
    groups: dict[tuple[str, str], list[str]] = {}
    others = [k for k in DETECTION_ORDER if k != name and CATALOGS[k].detect(root)]
    for rel in foreign:
        kind = next((k for k in others if CATALOGS[k].owns(root, rel)), None)
        folder = root
        if kind is None:
            parts = PurePosixPath(rel).parts[:-1]
            folder = root / parts[0] if parts else root
            for i in range(1, len(parts) + 1):
                here = [k for k in DETECTION_ORDER if CATALOGS[k].detect(root / Path(*parts[:i]))]
                if here:
                    folder, kind = root / Path(*parts[:i]), here[0]
                    break
        groups.setdefault((str(folder), kind or ""), []).append(rel)
    where = "; ".join(f"{len(files)} in {folder}" + (f" (the {kind} layout)" if kind else " (no known layout)")
                      + f", e.g. {files[0]}" for (folder, kind), files in sorted(groups.items()))
    found = [(kind, Path(folder)) for folder, kind in groups if kind and Path(folder) != root]
    return (f"{root} holds more than one dataset: read as {name} ({CATALOGS[name].layout}) it gives "
            f"{len(table)} videos, and {len(foreign)} more video files lie outside that layout: {where}. "
            f"{_choose(root, found, [name, *(k for f, k in groups if k and Path(f) == root)])}")


def _found(found: list[tuple[str, Path]], root: Path) -> str:
    return "holds " + "; ".join(f"the {kind} layout in {folder}" for kind, folder in found)


def _choose(root: Path, found: list[tuple[str, Path]], root_kinds: list[str] = ()) -> str:
    """How to choose: a dataset folder below ``root`` as the data, or one layout of the root itself."""
    ways = []
    subs = [(kind, folder) for kind, folder in found if folder != root]
    if subs:
        ways.append("point the data folder at one dataset (deepfake run --data FOLDER; a notebook's data_dir): "
                    + ", ".join(f"{folder} ({kind})" for kind, folder in subs))
    if root_kinds:
        ways.append("read this folder as one layout alone, with the rest listed as left out: "
                    + " or ".join(f"catalog={k} (deepfake run --set explore.catalog={k})" for k in root_kinds))
    return "To choose, " + "; or ".join(ways) + "."
