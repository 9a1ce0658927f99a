"""Cross-validation folds that keep duplicates together, saved so every model uses the same ones.

Why: the Kaggle tumour set holds exact and near-duplicate images. A random
split puts copies of one image in training and test, and the test score
measures memory. Folds here are StratifiedGroupKFold over the manifest's
`dup_group` (exact + near duplicates, see lib.dedup), so a group never
straddles two folds, and both classes keep their share in each fold.
Repeats use different seeds. The folds are written to splits.json once and
read back by every model, so models are compared on identical folds.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from sklearn.model_selection import StratifiedGroupKFold

from lib.io import write_json_atomic

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
        if saved == json.loads(json.dumps(wanted)):
            return saved
    write_json_atomic(path, wanted)
    return wanted


def fold_pairs(splits: dict[str, Any], repeat: int = 0) -> list[tuple[list[str], list[str]]]:
    """[(train ids, test ids)] for each fold of one repeat."""
    fold_of = splits["assignments"][repeat]
    return [([i for i, f in fold_of.items() if f != k], [i for i, f in fold_of.items() if f == k])
            for k in range(splits["folds"])]
