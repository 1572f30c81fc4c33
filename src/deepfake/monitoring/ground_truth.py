"""Labels that arrive after the requests: which captured videos were real and which fake.

Two forms are read, from a file, a folder or an S3 prefix:

- a CSV with a header: an id column (``inference_id``, the ``InferenceId`` the
  caller gave; or ``event_id``) and ``label`` (``0``/``1``, ``real``/``fake``);
- SageMaker's ground-truth JSON Lines, what Model Monitor's merge reads
  (``.jsonl`` under ``<prefix>/yyyy/mm/dd/hh/``)::

      {"groundTruthData": {"data": "1", "encoding": "CSV"},
       "eventMetadata": {"eventId": "<the request's inferenceId, else its eventId>"}, "eventVersion": "0"}

A label is joined to a request by the request's ``inferenceId``, else its
``eventId``, as SageMaker's merge joins them. A later label of the same id
replaces an earlier one (a correction).
"""

from __future__ import annotations

import csv
import io
import json
from typing import Any

import pandas as pd

from deepfake.core.errors import MonitoringError
from deepfake.core.vocabulary import LABELS
from deepfake.monitoring import storage

ID_COLUMNS = ("inference_id", "event_id")
LABEL_COLUMN = "label"
CSV_SUFFIX, JSONL_SUFFIX = ".csv", ".jsonl"


def read_ground_truth(location: str) -> pd.DataFrame:
    """``join_id, truth`` (0 real, 1 fake), one row per id; MonitoringError names the file and line at fault."""
    files = storage.list_files(location)
    files = [f for f in files if f.endswith((CSV_SUFFIX, JSONL_SUFFIX))]
    if not files:
        raise MonitoringError(f"no ground truth at {location}: give a CSV ({', '.join(ID_COLUMNS[:1])},"
                              f"{LABEL_COLUMN}) or SageMaker's ground-truth .jsonl files")
    rows: list[tuple[str, int]] = []
    for path in files:
        rows += _csv_rows(path) if path.endswith(CSV_SUFFIX) else _jsonl_rows(path)
    table = pd.DataFrame(rows, columns=["join_id", "truth"])
    return table.drop_duplicates("join_id", keep="last").reset_index(drop=True)


def label_value(value: Any, where: str) -> int:
    text = str(value).strip().lower()
    if text in LABELS:
        return LABELS[text]
    try:
        number = float(text)
    except ValueError:
        number = float("nan")
    if number in (0.0, 1.0):
        return int(number)
    raise MonitoringError(f"{where}: label {value!r} is none of 0, 1, {', '.join(LABELS)}")


def _csv_rows(path: str) -> list[tuple[str, int]]:
    text = storage.read_bytes(path).decode("utf-8-sig", errors="replace")
    reader = csv.DictReader(io.StringIO(text))
    header = [h.strip() for h in reader.fieldnames or []]
    id_column = next((c for c in ID_COLUMNS if c in header), None)
    if id_column is None or LABEL_COLUMN not in header:
        raise MonitoringError(f"{path}: a ground-truth CSV needs the columns {ID_COLUMNS[0]} (or {ID_COLUMNS[1]}) "
                              f"and {LABEL_COLUMN}; it has {', '.join(header) or 'none'}")
    rows = []
    for n, record in enumerate(reader, 2):
        record = {(k or "").strip(): v for k, v in record.items()}
        ident = (record.get(id_column) or "").strip()
        if not ident:
            raise MonitoringError(f"{path}:{n}: empty {id_column}")
        rows.append((ident, label_value(record.get(LABEL_COLUMN), f"{path}:{n}")))
    return rows


def _jsonl_rows(path: str) -> list[tuple[str, int]]:
    rows = []
    for n, line in enumerate(storage.iter_lines(path), 1):
        if not line.strip():
            continue
        where = f"{path}:{n}"
        try:
            doc = json.loads(line)
            ident = doc["eventMetadata"]["eventId"]
            data = doc["groundTruthData"]["data"]
        except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError):
            raise MonitoringError(f"{where}: not a SageMaker ground-truth record "
                                  '({"groundTruthData": {"data": ...}, "eventMetadata": {"eventId": ...}})') from None
        rows.append((str(ident), label_value(data, where)))
    return rows
