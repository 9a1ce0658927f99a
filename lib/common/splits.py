"""Cross-validation folds that keep duplicates together, saved so every model uses the same ones.

Why: the Kaggle tumour set holds exact and near-duplicate images. A random
split puts copies of one image in training and test, and the test score
measures memory. Folds here are StratifiedGroupKFold over the manifest's
`dup_group` (exact + near duplicates, see lib.common.dedup), so a group never
straddles two folds, and both classes keep their share in each fold.
Repeats use different seeds. The folds are written to splits.json once and
read back by every model, so models are compared on identical folds.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from sklearn.model_selection import StratifiedGroupKFold

from lib.common.io import as_json, write_json_atomic

FOLDS = 5
REPEATS = 1
SEED = 0


def make(ids: list[str], labels: list[str], groups: list[str], folds: int = FOLDS,
         repeats: int = REPEATS, seed: int = SEED) -> dict[str, Any]:
    """{'folds', 'repeats', 'seed', 'assignments': [{id: fold}, ...] one per repeat}."""
    y = np.array([label == "tumor" for label in labels])
    if len(ids) < folds or min(y.sum(), (~y).sum()) < folds:
        raise ValueError(f"{len(ids)} images ({int(y.sum())} tumour) are too few for {folds} folds; "
                         f"use --folds {max(2, min(y.sum(), (~y).sum()))} or add images")
    assignments = []
    for repeat in range(repeats):
        splitter = StratifiedGroupKFold(n_splits=folds, shuffle=True, random_state=seed + repeat)
        fold_of: dict[str, int] = {}
        for fold, (_, test) in enumerate(splitter.split(np.zeros(len(ids)), y, groups)):
            fold_of.update({ids[i]: fold for i in test})
        assignments.append(fold_of)
    return {"folds": folds, "repeats": repeats, "seed": seed, "assignments": assignments}


def from_manifest(df: pd.DataFrame, folds: int = FOLDS, repeats: int = REPEATS, seed: int = SEED) -> dict[str, Any]:
    """Folds for the labelled ok rows of a manifest (groups from dup_group, else each image alone)."""
    rows = df[(df["status"] == "ok") & df["label"].isin(["tumor", "no_tumor"])]
    groups = rows["dup_group"] if "dup_group" in rows.columns else rows["id"]
    return make(list(rows["id"]), list(rows["label"]), list(groups), folds, repeats, seed)


def load_or_make(path: Path, df: pd.DataFrame, folds: int, repeats: int, seed: int) -> dict[str, Any]:
    """Reuse splits.json when it covers the same images and settings; else write a new one."""
    wanted = from_manifest(df, folds, repeats, seed)
    if path.is_file():
        saved = json.loads(path.read_text())
        if saved == as_json(wanted):
            return saved
    write_json_atomic(path, wanted)
    return wanted


def fold_pairs(splits: dict[str, Any], repeat: int = 0) -> list[tuple[list[str], list[str]]]:
    """[(train ids, test ids)] for each fold of one repeat."""
    fold_of = splits["assignments"][repeat]
    return [([i for i, f in fold_of.items() if f != k], [i for i, f in fold_of.items() if f == k])
            for k in range(splits["folds"])]


# --- segmentation: train / validation / test by contiguous index ranges -------------------

PARTS = ("train", "val", "test")
PART_SHARES = (0.7, 0.1, 0.2)
MIN_RUN = 10  # shorter runs of consecutive indices are pooled per prefix (see index_blocks)
_TRAILING_NUMBER = re.compile(r"^(.*?)(\d+)\D*$")


def _index_key(item_id: str) -> tuple[str, int]:
    match = _TRAILING_NUMBER.match(item_id)
    return (match.group(1), int(match.group(2))) if match else (item_id, 0)


def index_blocks(ids: list[str], min_run: int = MIN_RUN) -> list[list[str]]:
    """Runs of consecutive numbers under one prefix (cheng_0121..cheng_0320 is one run), in order.

    Runs shorter than `min_run` carry no patient structure (e.g. Kaggle's
    yes_Y1, no_2, yes_Y3 ... interleave two classes): a prefix's short runs are
    pooled into one block, in index order, so each prefix still reaches every part.
    """
    runs: dict[str, list[list[str]]] = {}
    previous: tuple[str, int] | None = None
    for item_id in sorted(ids, key=_index_key):
        key = _index_key(item_id)
        if previous is None or key[0] != previous[0] or key[1] - previous[1] > 1:
            runs.setdefault(key[0], []).append([])
        runs[key[0]][-1].append(item_id)
        previous = key
    blocks: list[list[str]] = []
    for prefix_runs in runs.values():
        blocks += [run for run in prefix_runs if len(run) >= min_run]
        pooled = [item_id for run in prefix_runs if len(run) < min_run for item_id in run]
        if pooled:
            blocks.append(pooled)
    return blocks


def by_index_ranges(ids: list[str], groups: list[str] | None = None,
                    shares: tuple[float, float, float] = PART_SHARES) -> dict[str, str]:
    """{id: 'train' | 'val' | 'test'}: each block of consecutive indices cut in order by `shares`.

    Why not at random: in the figshare set a patient's slices are runs of
    consecutive indices, so a random split puts neighbouring slices of one
    tumour on both sides and the test Dice measures memory. Cutting every
    block (tumour type) in order keeps each type in every part and a patient
    on one side, except where a cut falls inside a run. Members of one
    duplicate group all go where the group's first member went.
    """
    part_of: dict[str, str] = {}
    for block in index_blocks(ids):
        counts = _part_counts(len(block), shares)
        for item_id, name in zip(block, np.repeat(PARTS, counts)):
            part_of[item_id] = str(name)
    if groups is not None:
        first: dict[str, str] = {}
        for item_id, group in sorted(zip(ids, groups), key=lambda pair: _index_key(pair[0])):
            part_of[item_id] = first.setdefault(group, part_of[item_id])
    return part_of


def _part_counts(n: int, shares: tuple[float, float, float]) -> list[int]:
    """Sizes of train, val, test for a block of n: rounded shares, at least one val and test from n = 3."""
    total = sum(shares)
    val = max(1, round(n * shares[1] / total)) if n >= 3 else 0
    test = max(1, round(n * shares[2] / total)) if n >= 3 else 0
    return [n - val - test, val, test]
