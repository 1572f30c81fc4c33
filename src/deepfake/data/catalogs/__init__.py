"""Dataset layouts -> one videos table.

Every catalog turns a dataset folder into the same table (``videos.csv``)::

    video_id, path, label, original_id, manipulation, split

``path`` is relative to the dataset root, ``label`` is ``0`` real / ``1``
fake (:data:`LABELS`), ``original_id`` is a real video's own id and a fake's
source id, ``manipulation`` is ``none`` for real videos, ``split`` is
``train``/``val``/``test`` or ``""`` where the dataset does not say
(:func:`deepfake.data.splits.ensure_splits` fills it). Rows are sorted by path.

``load_catalog("auto", root)`` tries the layouts in the order of
:data:`DETECTION_ORDER` and uses the first that matches.
"""

from __future__ import annotations

import inspect
import logging
import os
from pathlib import Path
from typing import Any

import pandas as pd

from deepfake.core import paths
from deepfake.core.errors import CatalogError
from deepfake.data.catalogs import celebdf, dfdc, faceforensics, generic
from deepfake.data.catalogs.table import COLUMNS, VIDEO_EXTENSIONS, Catalog

__all__ = ["CATALOGS", "COLUMNS", "DETECTION_ORDER", "VIDEO_EXTENSIONS", "Catalog",
           "available",
           "dataset_root", "detect_kind", "load_catalog"]

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
    """The first catalog whose layout ``root`` has; CatalogError listing what was looked for otherwise."""
    path = _existing(root)
    for name in DETECTION_ORDER:
        if CATALOGS[name].detect(path):
            return name
    looked = "; ".join(f"{name}: {CATALOGS[name].layout}" for name in DETECTION_ORDER)
    raise CatalogError(f"no known dataset layout in {path}. Looked for -- {looked}. "
                       "Arrange the data like one of these, or write a labels.csv (path,label)")


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
    table = catalog.load(path, **options)
    table.attrs["inputs"] = [str(p) for p in catalog.index_files(path)]   # the sidecar records their sha256
    return table
