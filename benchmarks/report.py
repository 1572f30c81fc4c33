"""Rows, targets, the printed table and the JSON file.

A row compares one figure of ours with its reference (the physical limit, the
same work without the kit's machinery, or a peer's figure). The pass marker is
information for the reader, never an assertion: a benchmark on a shared or
slower machine must still print its table.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

# Kinds of target: what the pass marker checks.
RATIO_AT_MOST = "ratio<="     # ours / reference <= value (a time against its limit)
RATIO_AT_LEAST = "ratio>="    # ours / reference >= value (a throughput against its limit)
VALUE_BELOW = "ours<"         # ours < value, in the row's unit
VALUE_AT_MOST = "ours<="      # ours <= value, in the row's unit
EXCESS_AT_MOST = "ours-ref<="  # ours - reference <= value, in the row's unit (an overhead)


@dataclass(frozen=True)
class Target:
    kind: str       # one of the kinds above
    value: float    # the bound, a ratio or a quantity in the row's unit

    def text(self, unit: str) -> str:
        if self.kind == RATIO_AT_MOST:
            return f"<= {self.value:g}x"
        if self.kind == RATIO_AT_LEAST:
            return f">= {self.value:g}x"
        if self.kind == VALUE_BELOW:
            return f"< {self.value:g} {unit}"
        if self.kind == VALUE_AT_MOST:
            return f"<= {self.value:g} {unit}"
        if self.kind == EXCESS_AT_MOST:
            return f"<= ref + {self.value:g} {unit}"
        raise ValueError(f"unknown target kind {self.kind!r}")

    def met(self, ours: float, reference: float | None) -> bool | None:
        if self.kind == VALUE_BELOW:
            return ours < self.value
        if self.kind == VALUE_AT_MOST:
            return ours <= self.value
        if reference is None or not reference > 0:
            return None
        if self.kind == RATIO_AT_MOST:
            return ours / reference <= self.value
        if self.kind == RATIO_AT_LEAST:
            return ours / reference >= self.value
        if self.kind == EXCESS_AT_MOST:
            return ours - reference <= self.value
        raise ValueError(f"unknown target kind {self.kind!r}")


@dataclass
class Row:
    item: int                          # the item number (benchmarks.run.ITEMS)
    metric: str                        # what was measured, on what
    unit: str                          # unit of ours and reference: "s", "img/s", "videos/s"
    ours: float | None                 # None: skipped (see note)
    reference: float | None            # the limit or peer, in the same unit
    reference_label: str               # what the reference is: "decode-only", "DFDC peer (GPU)", ...
    target: Target | None
    device: str = "cpu"
    note: str = ""                     # faces found, why skipped, ...
    samples: dict[str, list[float]] = field(default_factory=dict)  # every timing behind the figures

    @property
    def ratio(self) -> float | None:
        if self.ours is None or self.reference is None or not self.reference > 0:
            return None
        return self.ours / self.reference

    @property
    def passed(self) -> bool | None:
        if self.ours is None or self.target is None:
            return None
        return self.target.met(self.ours, self.reference)

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["target"] = None if self.target is None else {**asdict(self.target), "text": self.target.text(self.unit)}
        out["ratio"] = self.ratio
        out["passed"] = self.passed
        return out


def skipped(item: int, metric: str, unit: str, reason: str, device: str = "cpu") -> Row:
    """A row that says what could not be measured and why (it stays visible in the table)."""
    return Row(item, metric, unit, None, None, "", None, device=device, note=f"skipped: {reason}")


def format_table(rows: Sequence[Row], machine: Mapping[str, Any]) -> str:
    """One Markdown table (readable in a terminal, pasteable into the README), machine first."""
    lines = [f"Machine: {describe_machine(machine)}", ""]
    header = ["#", "metric", "device", "ours", "reference", "ratio", "target", "pass"]
    lines.append("| " + " | ".join(header) + " |")
    lines.append("|" + "|".join("---:" if h in ("ours", "ratio") else "---" for h in header) + "|")
    for row in rows:
        ref = "-" if row.reference is None else f"{_num(row.reference)} {row.unit} {row.reference_label}"
        ours = "-" if row.ours is None else f"{_num(row.ours)} {row.unit}"
        ratio = "-" if row.ratio is None else f"{row.ratio:.2f}x"
        target = "-" if row.target is None else row.target.text(row.unit)
        mark = {True: "pass", False: "FAIL", None: "-"}[row.passed]
        metric = f"{row.metric} ({row.note})" if row.note else row.metric
        lines.append("| " + " | ".join([str(row.item), metric, row.device, ours, ref, ratio, target, mark]) + " |")
    return "\n".join(lines)


def describe_machine(machine: Mapping[str, Any]) -> str:
    cuda = machine.get("cuda_device") or "no CUDA GPU"
    load = machine.get("load_average")
    load_text = f", load average {load[0]:.1f} at start" if load else ""
    return (f"{machine.get('cpu_model', 'unknown CPU')}, {machine.get('cores_used')} of "
            f"{machine.get('cpu_count')} cores, {machine.get('memory_gib', '?')} GiB; torch {machine.get('torch')}, "
            f"OpenCV {machine.get('opencv')}, Python {machine.get('python')}; {cuda}{load_text}")


def write_results(path: Path, rows: Sequence[Row], machine: Mapping[str, Any], settings: Mapping[str, Any],
                  extra: Mapping[str, Any]) -> Path:
    """The JSON file of the run (atomic: a killed run leaves no half file); the table goes beside it as .md."""
    doc = {"machine": dict(machine), "settings": dict(settings), **dict(extra),
           "rows": [_finite(r.to_dict()) for r in rows]}
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.partial")
    tmp.write_text(json.dumps(doc, indent=2, sort_keys=False) + "\n")
    os.replace(tmp, path)
    path.with_suffix(".md").write_text(format_table(rows, machine) + "\n")
    return path


def _num(value: float) -> str:
    if value >= 100:
        return f"{value:.0f}"
    if value >= 10:
        return f"{value:.1f}"
    return f"{value:.2f}"


def _finite(value: Any) -> Any:
    """NaN and infinities become null: JSON has no spelling for them."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return value
