"""Train/val/test splits grouped by original video, and the check that they do not leak.

A fake shares its face, background and motion with its source video, so a fake
in test whose source is in train measures memory rather than detection. Every
assignment here moves whole groups (all videos with one ``original_id``), and
:func:`check_leaks` refuses a table where a group straddles splits.

Which splits :func:`ensure_splits` keeps from the table:

- the given splits name ``train`` and ``test``: kept; groups without a split
  are spread over train/val/test by the fractions;
- they name ``test`` but no ``train`` (Celeb-DF's testing list): the test set
  is kept as published and groups without a split go to train (and val, unless
  the table names val too);
- otherwise (none given, or only ``train`` as in DFDC's training parts): every
  group is assigned afresh.

Within a group, videos without a split follow the group's given split.
Assignment is a greedy pass over groups (shuffled by ``seed``, larger first)
that keeps each split's share of real and of fake videos near its fraction,
then a repair step that gives each split both labels where the groups allow.
"""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd

from deepfake.core.errors import ConfigError, DataError, SplitLeakError
from deepfake.core.vocabulary import LABEL_NAMES, LABELS, SPLITS

log = logging.getLogger(__name__)
REQUIRED = ("label", "original_id", "split")




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
                  seed: int = 0) -> pd.DataFrame:
    """A copy of ``df`` whose every row has a split, grouped by ``original_id`` (rules in the module doc)."""
    _check(df)
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

    given = set(split) - {""}
    empty = split == ""
    if {"train", "test"} <= given:
        open_splits = [s for s in SPLITS if fractions[s] > 0]
    elif "test" in given and empty.any():
        open_splits = ["train"] + (["val"] if "val" not in given and fractions["val"] > 0 else [])
    else:
        if given:
            log.info("split column names only %s: assigning every group afresh", ", ".join(sorted(given)))
        split = pd.Series("", index=df.index)
        given = set()
        open_splits = [s for s in SPLITS if fractions[s] > 0]

    values = split.to_numpy(dtype=object).copy()
    if given:  # videos without a split follow their group's given split
        group_split = pd.Series(values[~empty.to_numpy()], index=groups[~empty.to_numpy()])
        group_split = group_split[~group_split.index.duplicated()]
        follow = empty.to_numpy() & np.isin(groups, group_split.index.to_numpy())
        values[follow] = group_split.reindex(groups[follow]).to_numpy()

    pool = values == ""
    if pool.any():
        names = np.array(sorted(set(groups[pool])), dtype=object)
        index = {g: i for i, g in enumerate(names)}
        counts = np.zeros((len(names), len(LABELS)), dtype=np.int64)
        np.add.at(counts, ([index[g] for g in groups[pool]], labels[pool]), 1)
        weights = np.array([fractions[s] for s in open_splits])
        chosen = _assign(counts, weights / weights.sum(), np.random.default_rng(seed),
                         repair_order=[open_splits.index(s) for s in _REPAIR_ORDER if s in open_splits])
        chosen_split = {g: open_splits[c] for g, c in zip(names, chosen, strict=True)}
        values[pool] = [chosen_split[g] for g in groups[pool]]

    out = df.copy()
    out["split"] = values.astype(str)
    check_leaks(out)
    return out


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
