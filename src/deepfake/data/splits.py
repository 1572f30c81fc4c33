"""Train/val/test splits: the dataset's official protocol, or the kit's grouped one; and the leak check.

A fake shares its face, background and motion with its source video, so a fake
in test whose source is in train measures memory rather than detection. The kit
keeps each original's videos (one ``original_id``) together wherever it assigns
splits itself, and :func:`check_leaks` names every original that straddles splits.

:func:`ensure_splits` follows one of two protocols (``PROTOCOLS``):

- ``official`` (default): a dataset that names a test split (Celeb-DF's testing
  list, FaceForensics++'s split files, a ``split`` column or field) keeps it
  **exactly**, so figures compare with published ones. Videos the dataset leaves
  unsplit go to the train side, following their original's given train or val
  split where it has one; when the dataset names no val split, val is carved from
  the train side's originals (``val_fraction : 1 - val_fraction - test_fraction``,
  grouped). An original the dataset itself puts in more than one split (a Celeb-DF
  real beside the listed fake made from it) stays so, and is reported.
- ``grouped``: every original's videos in one split. Given splits are kept where
  they name ``train`` and ``test`` (or ``test`` alone), a video the dataset leaves
  unsplit joins its original's split (into test too), the rest are assigned by the
  fractions; given splits that straddle an original are refused.

Either way, a dataset that names no test split (none at all, or DFDC's training
parts, where every video says ``train``) is re-split: every original assigned
afresh. The table's ``attrs["protocol"]`` records what the split follows and why,
what moved (against the given splits, and for ``grouped`` against the official
protocol) and the originals shared between splits; :func:`describe_protocol` says it.

Assignment is a greedy pass over groups (shuffled by ``seed``, larger first)
that keeps each split's share of real and of fake videos near its fraction,
then a repair step that gives each split both labels where the groups allow.
"""

from __future__ import annotations

import logging
from collections import Counter
from typing import Any

import numpy as np
import pandas as pd

from deepfake.core.errors import ConfigError, DataError, SplitLeakError
from deepfake.core.vocabulary import LABEL_NAMES, LABELS, SPLITS, TEST, TRAIN, VAL

log = logging.getLogger(__name__)
REQUIRED = ("label", "original_id", "split")

OFFICIAL, GROUPED = "official", "grouped"
PROTOCOLS = (OFFICIAL, GROUPED)
RESPLIT = "re-split"                 # what a split follows when the dataset names no test split
PROTOCOL_ATTR = "protocol"           # DataFrame.attrs key (and videos.csv sidecar key) of the record
_EXAMPLES = 10                       # moved videos and shared originals named in the record


_REPAIR_ORDER = ("train", "test", "val")  # who gets a missing label first when groups are scarce


def _split_column(df: pd.DataFrame) -> pd.Series:
    """Split values as clean strings, ``""`` for missing (a CSV round trip turns "" into NaN)."""
    return df["split"].astype(object).where(df["split"].notna(), "").astype(str).str.strip()


def _check(df: pd.DataFrame) -> None:
    missing = [c for c in REQUIRED if c not in df.columns]
    if missing:
        raise DataError(f"videos table lacks column(s) {', '.join(missing)}; "
                        f"has {', '.join(map(str, df.columns))}")


def _fractions(val_fraction: float, test_fraction: float) -> dict[str, float]:
    if not (0 <= val_fraction < 1 and 0 <= test_fraction < 1 and val_fraction + test_fraction < 1):
        raise ConfigError(f"val_fraction={val_fraction} and test_fraction={test_fraction} must be in [0, 1) "
                          "with a sum below 1")
    return {"train": 1.0 - val_fraction - test_fraction, "val": val_fraction, "test": test_fraction}


def ensure_splits(df: pd.DataFrame, val_fraction: float = 0.15, test_fraction: float = 0.2,
                  seed: int = 0, protocol: str = OFFICIAL) -> pd.DataFrame:
    """A copy of ``df`` whose every row has a split, by ``protocol`` (rules in the module doc); its
    ``attrs["protocol"]`` records what the split follows."""
    _check(df)
    if protocol not in PROTOCOLS:
        raise ConfigError(f"protocol={protocol!r} is unknown; use one of {', '.join(PROTOCOLS)}")
    fractions = _fractions(val_fraction, test_fraction)
    split = _split_column(df)
    bad = sorted(set(split) - set(SPLITS) - {""})
    if bad:
        raise DataError(f"unknown split value(s) {', '.join(map(repr, bad))}; "
                        f"use {', '.join(SPLITS)} or empty")
    labels = pd.to_numeric(df["label"], errors="coerce")
    if not labels.isin(list(LABELS.values())).all():
        raise DataError(f"labels must be 0 (real) or 1 (fake); found {sorted(set(df['label'].astype(str)))}")
    groups = df["original_id"].astype(str).to_numpy()
    labels = labels.astype(int).to_numpy()
    given = split.to_numpy(dtype=object)
    rng = np.random.default_rng(seed)

    if TEST not in set(given):
        values, follows = _grouped(given, groups, labels, fractions, rng), RESPLIT
        names = sorted(set(given) - {""})
        reason = (f"the dataset names no test split ({_counted(given)}): every original was assigned afresh, "
                  f"grouped by original (val_fraction {val_fraction}, test_fraction {test_fraction}, seed {seed})"
                  if names else
                  f"the dataset gives no splits: every original was assigned, grouped by original "
                  f"(val_fraction {val_fraction}, test_fraction {test_fraction}, seed {seed})")
        official = values
    else:
        official = _official(given, groups, labels, fractions, np.random.default_rng(seed))
        if protocol == OFFICIAL:
            values, follows = official, OFFICIAL
            reason = "the dataset's own test split, kept exactly; " + (
                "its val split kept" if VAL in set(given) else
                f"val carved from the train side's originals (val_fraction {val_fraction}, seed {seed})")
        else:
            values, follows = _grouped(given, groups, labels, fractions, rng), GROUPED
            reason = ("each original's videos in one split: given splits kept, a video the dataset leaves "
                      f"unsplit joins its original's split, the rest assigned (seed {seed})")

    out = df.copy()
    out["split"] = values.astype(str)
    if follows != OFFICIAL:
        check_leaks(out)
    out.attrs[PROTOCOL_ATTR] = _record(out, given, official, protocol, follows, reason)
    return out


def _counted(values: np.ndarray) -> str:
    counts = Counter(str(v) or "none" for v in values)
    return ", ".join(f"{name}: {counts[name]} videos" for name in (*SPLITS, "none") if counts.get(name))


def _official(given: np.ndarray, groups: np.ndarray, labels: np.ndarray, fractions: dict[str, float],
              rng: np.random.Generator) -> np.ndarray:
    """The official protocol: given splits kept, unsplit videos to the train side, val carved when not given."""
    values = given.copy()
    test_groups = set(groups[values == TEST])
    side = pd.Series(values[np.isin(values, [TRAIN, VAL])], index=groups[np.isin(values, [TRAIN, VAL])])
    side = side[~side.index.duplicated()]                          # a group's given train or val split
    follow = (values == "") & np.isin(groups, side.index.to_numpy())
    values[follow] = side.reindex(groups[follow]).to_numpy()
    if VAL not in set(given) and fractions[VAL] > 0:
        pool = np.isin(values, ["", TRAIN]) & ~np.isin(groups, list(test_groups))
        values[pool] = _assign_groups(groups[pool], labels[pool], [TRAIN, VAL], fractions, rng)
    values[values == ""] = TRAIN                  # unsplit videos of an original with a listed test video
    return values


def _grouped(given: np.ndarray, groups: np.ndarray, labels: np.ndarray, fractions: dict[str, float],
             rng: np.random.Generator) -> np.ndarray:
    """The grouped protocol (and the re-split of a dataset that names no test split)."""
    present = set(given) - {""}
    empty = given == ""
    values = given.copy()
    if {TRAIN, TEST} <= present:
        open_splits = [s for s in SPLITS if fractions[s] > 0]
    elif TEST in present and empty.any():
        open_splits = [TRAIN] + ([VAL] if VAL not in present and fractions[VAL] > 0 else [])
    else:
        values = np.full(len(given), "", dtype=object)
        present = set()
        open_splits = [s for s in SPLITS if fractions[s] > 0]
    if present:  # videos without a split follow their group's given split
        group_split = pd.Series(values[~empty], index=groups[~empty])
        group_split = group_split[~group_split.index.duplicated()]
        follow = empty & np.isin(groups, group_split.index.to_numpy())
        values[follow] = group_split.reindex(groups[follow]).to_numpy()
    pool = values == ""
    if pool.any():
        values[pool] = _assign_groups(groups[pool], labels[pool], open_splits, fractions, rng)
    return values


def _assign_groups(groups: np.ndarray, labels: np.ndarray, open_splits: list[str], fractions: dict[str, float],
                   rng: np.random.Generator) -> np.ndarray:
    """A split from ``open_splits`` for each row, whole groups at a time, near the fractions per label."""
    names = np.array(sorted(set(groups)), dtype=object)
    index = {g: i for i, g in enumerate(names)}
    counts = np.zeros((len(names), len(LABELS)), dtype=np.int64)
    np.add.at(counts, ([index[g] for g in groups], labels), 1)
    weights = np.array([fractions[s] for s in open_splits])
    chosen = _assign(counts, weights / weights.sum(), rng,
                     repair_order=[open_splits.index(s) for s in _REPAIR_ORDER if s in open_splits])
    chosen_split = {g: open_splits[c] for g, c in zip(names, chosen, strict=True)}
    return np.array([chosen_split[g] for g in groups], dtype=object)


def _record(out: pd.DataFrame, given: np.ndarray, official: np.ndarray, protocol: str, follows: str,
            reason: str) -> dict[str, Any]:
    """What the split follows, what moved and which originals the splits share (JSON-ready)."""
    final = out["split"].to_numpy(dtype=object)
    reference = np.where(given != "", given, official)       # the given split, else the official protocol's
    moved = np.flatnonzero(final != reference)
    ids = out["video_id"].astype(str).to_numpy() if "video_id" in out.columns else out.index.astype(str).to_numpy()
    spread = out.assign(_s=final).groupby("original_id")["_s"].agg(lambda s: sorted(set(s)))
    shared = spread[spread.map(len) > 1]
    return {
        "protocol": protocol,
        "follows": follows,
        "reason": reason,
        "given": {name: int(n) for name, n in Counter(str(v) or "none" for v in given).items()},
        "splits": {s: int((final == s).sum()) for s in SPLITS},
        "moved": {"videos": int(len(moved)),
                  "by": {f"{a or 'none'}->{b}": int(n)
                         for (a, b), n in sorted(Counter(zip(reference[moved], final[moved], strict=True)).items())},
                  "examples": [{"video_id": ids[i], "from": reference[i] or "none", "to": final[i]}
                               for i in moved[:_EXAMPLES]]},
        "shared_originals": {"originals": int(len(shared)),
                             "examples": [{"original_id": str(g), "splits": list(s)}
                                          for g, s in shared.head(_EXAMPLES).items()]},
    }


def describe_protocol(record: dict[str, Any]) -> list[str]:
    """Lines that say which protocol the split follows, why, what moved and what the splits share."""
    follows = record["follows"]
    title = {OFFICIAL: "the official protocol", GROUPED: "the grouped protocol (protocol=grouped)",
             RESPLIT: "a re-split"}[follows]
    counts = ", ".join(f"{s} {record['splits'][s]}" for s in SPLITS)
    lines = [f"splits follow {title}: {counts} videos", f"  {record['reason']}"]
    moved = record["moved"]
    if moved["videos"]:
        against = " against the official protocol" if follows == GROUPED else ""
        by = ", ".join(f"{k.replace('->', ' -> ')}: {n}" for k, n in moved["by"].items())
        lines.append(f"  moved{against}: {moved['videos']} video(s) ({by}; e.g. "
                     + ", ".join(f"{m['video_id']} {m['from']} -> {m['to']}" for m in moved["examples"][:3]) + ")")
    shared = record["shared_originals"]
    if shared["originals"]:
        lines.append(f"  {shared['originals']} original(s) have videos in more than one split, as the dataset's "
                     "own split has them (e.g. "
                     + ", ".join(f"{e['original_id']}: {'+'.join(e['splits'])}" for e in shared["examples"][:3])
                     + "); protocol=grouped keeps each original in one split instead")
    return lines


def _assign(counts: np.ndarray, fractions: np.ndarray, rng: np.random.Generator,
            repair_order: list[int]) -> np.ndarray:
    """Split index per group: greedy toward each split's share of each label, then the label repair."""
    n_groups, n_splits = len(counts), len(fractions)
    target = np.outer(fractions, counts.sum(axis=0).astype(float))
    scale = np.where(target > 0, target, 1.0)  # chi-square weights: splits fill in proportion
    current = np.zeros((n_splits, counts.shape[1]))
    where = np.full(n_groups, -1)
    order = rng.permutation(n_groups)
    order = order[np.argsort(-counts[order].sum(axis=1), kind="stable")]
    for g in order:
        # Change in squared distance to the targets if the group joins each split; the first minimum wins.
        after = (current + counts[g] - target) ** 2 - (current - target) ** 2
        best = int(np.argmin((after / scale).sum(axis=1)))
        where[g] = best
        current[best] += counts[g]
    _repair(counts, where, repair_order, order)
    return where


def _repair(counts: np.ndarray, where: np.ndarray, repair_order: list[int], order: np.ndarray) -> None:
    """Move single groups so every split holds each label, when another split can spare one."""
    rank = np.empty_like(order)
    rank[order] = np.arange(len(order))
    has = counts > 0
    for label in range(counts.shape[1]):
        for s in repair_order:
            if has[where == s, label].any():
                continue
            best = None
            for d in repair_order:
                in_d = np.flatnonzero(where == d)
                if d == s or not len(in_d):
                    continue
                held = has[in_d].sum(axis=0)  # groups of d holding each label
                cands = in_d[has[in_d, label]]
                # A donor gives a group only if it keeps every label it had.
                ok = ((held - has[cands] >= 1) | (held == 0)).all(axis=1)
                for g in cands[ok]:
                    key = (int(counts[g].sum()), int(rank[g]))
                    if best is None or key < best[0]:
                        best = (key, g)
            if best is not None:
                where[best[1]] = s


def check_leaks(df: pd.DataFrame) -> None:
    """Raise SplitLeakError naming every ``original_id`` whose videos lie in more than one split."""
    _check(df)
    frame = pd.DataFrame({"original_id": df["original_id"].astype(str).to_numpy(),
                          "split": _split_column(df).to_numpy()})
    frame = frame[frame["split"] != ""]
    spread = frame.groupby("original_id")["split"].agg(lambda s: sorted(set(s)))
    leaks = spread[spread.map(len) > 1]
    if len(leaks):
        shown = "; ".join(f"{g} in {', '.join(s)}" for g, s in leaks.head(10).items())
        more = f" and {len(leaks) - 10} more" if len(leaks) > 10 else ""
        raise SplitLeakError(
            f"{len(leaks)} original video(s) straddle splits, so test scores would measure memory: "
            f"{shown}{more}. Keep each original with its fakes in one split (ensure_splits does)",
            leaks={str(g): list(s) for g, s in leaks.items()})


def split_summary(df: pd.DataFrame) -> pd.DataFrame:
    """Videos per split and label (plus originals per split), for notebooks and the data profile."""
    _check(df)
    split = _split_column(df).replace("", "(none)")
    label = df["label"].astype(int).map(LABEL_NAMES)
    table = pd.crosstab(split, label).reindex(columns=list(LABELS), fill_value=0)
    order = [s for s in (*SPLITS, "(none)") if s in table.index]
    table = table.reindex(order)
    table["total"] = table.sum(axis=1)
    table["originals"] = df.assign(_split=split.to_numpy()).groupby("_split")["original_id"].nunique() \
        .reindex(order).fillna(0).astype(int)
    table.loc["total"] = [*table[[*LABELS, "total"]].sum(), df["original_id"].nunique()]
    table.index.name, table.columns.name = "split", None
    return table
