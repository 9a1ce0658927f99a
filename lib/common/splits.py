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

import hashlib
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


VAL_SHARE = 0.2  # inner validation part of each training fold (1 of 5 inner groups)


def inner_split(y: np.ndarray, groups: np.ndarray, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Indices (inner train, validation) of a training fold, groups kept together."""
    splitter = StratifiedGroupKFold(n_splits=round(1 / VAL_SHARE), shuffle=True, random_state=seed)
    train, val = next(splitter.split(np.zeros(len(y)), y, groups))
    return train, val


def fold_parts(splits: dict[str, Any], ids: list[str], y: np.ndarray, groups: np.ndarray, repeat: int,
               k: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Positions into `ids` of fold k's inner train, inner validation and test parts.

    Why one function: 06 trains on these parts, and 05 (with --splits / --fold) trains a generator on the
    inner train part only, so its images can go into fold k's training without having seen that fold's
    validation or test slices. Both must cut the folds identically."""
    position = {i: n for n, i in enumerate(ids)}
    fold_of = splits["assignments"][repeat]
    test = np.array([position[i] for i, f in fold_of.items() if f == k and i in position], int)
    train = np.array([position[i] for i, f in fold_of.items() if f != k and i in position], int)
    y, groups = np.asarray(y), np.asarray(groups)
    inner, val = inner_split(y[train], groups[train], seed=splits["seed"] + 100 * repeat + k)
    return train[inner], train[val], test


def digest(splits: dict[str, Any]) -> str:
    """A short fingerprint of the fold assignments: says whether two stages used the same folds."""
    text = json.dumps(as_json(splits), sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def fold_pairs(splits: dict[str, Any], repeat: int = 0) -> list[tuple[list[str], list[str]]]:
    """[(train ids, test ids)] for each fold of one repeat."""
    fold_of = splits["assignments"][repeat]
    return [([i for i, f in fold_of.items() if f != k], [i for i, f in fold_of.items() if f == k])
            for k in range(splits["folds"])]


# --- segmentation: train / validation / test by contiguous index ranges -------------------

PARTS = ("train", "val", "test")
UNUSED = "unused"  # segmentation_parts with leave_out: a near-duplicate of a held-out slice, in no part
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
    """Sizes of train, val, test for a block of n: rounded shares, at least one val and test from n = 3
    (none where a share is 0)."""
    total = sum(shares)
    val = max(1, round(n * shares[1] / total)) if n >= 3 and shares[1] else 0
    test = max(1, round(n * shares[2] / total)) if n >= 3 and shares[2] else 0
    return [n - val - test, val, test]


RULES = ("ranges", "groups")


def by_groups(ids: list[str], groups: list[str], labels: list[str], shares: tuple[float, float, float] = PART_SHARES,
              seed: int = SEED) -> dict[str, str]:
    """{id: part}: whole groups (duplicates, a patient) drawn at random per label, cut by `shares`.

    Why per label: tumour and tumour-free slices both reach every part, as by_index_ranges keeps every
    tumour type in every part. A group takes the label of its first member."""
    label_of: dict[str, str] = {}
    members: dict[str, list[str]] = {}
    for item_id, group, label in zip(ids, groups, labels):
        label_of.setdefault(group, label)
        members.setdefault(group, []).append(item_id)
    part_of: dict[str, str] = {}
    rng = np.random.default_rng(seed)
    for label in sorted(set(label_of.values())):
        chosen = sorted(g for g, lab in label_of.items() if lab == label)
        order = [chosen[i] for i in rng.permutation(len(chosen))]
        for group, name in zip(order, np.repeat(PARTS, _part_counts(len(order), shares))):
            part_of.update(dict.fromkeys(members[group], str(name)))
    return part_of


def segmentation_parts(ids: list[str], groups: list[str], labels: list[str], leave_out: int | None = None,
                       shares: tuple[float, float, float] = PART_SHARES, rule: str = "ranges",
                       blocks: list[str] | None = None) -> tuple[dict[str, str], str]:
    """({id: part}, the rule as said in reports) for one source of mask-labelled slices.

    rule "ranges": by_index_ranges (patient runs of consecutive indices); "groups": by_groups.
    `leave_out` k (from 1, "ranges" only) holds out the k-th block whole as the test part, the
    blocks named by `blocks` (one name per id, e.g. figshare's index_block) or else the runs of
    index_blocks, and cuts the other blocks into training and validation: a score on a range the
    network never saw (figshare's blocks are tumour types). Slices elsewhere in a duplicate group
    of a held-out slice are UNUSED rather than trained on."""
    if rule not in RULES:
        raise ValueError(f"split rule {rule!r}: give one of {', '.join(RULES)}")
    if rule == "groups":
        return by_groups(ids, groups, labels, shares), "groups" + (" (--leave-out applies to ranges only)"
                                                                   if leave_out else "")
    if not leave_out:
        return by_index_ranges(ids, groups, shares), "ranges"
    held_blocks = _named_blocks(ids, blocks) if blocks else [b for b in index_blocks(ids) if _is_run(b)]
    if not 1 <= leave_out <= len(held_blocks):
        raise ValueError(f"leave-out block {leave_out}: this source has {len(held_blocks)} blocks of consecutive "
                         f"indices; give 1 to {len(held_blocks)}")
    held = set(held_blocks[leave_out - 1])
    group_of = dict(zip(ids, groups))
    held_groups = {group_of[item_id] for item_id in held}
    rest = [item_id for item_id in ids if item_id not in held]
    kept = [item_id for item_id in rest if group_of[item_id] not in held_groups]
    part_of = (dict.fromkeys(rest, UNUSED) | by_index_ranges(kept, [group_of[i] for i in kept], (*shares[:2], 0.0))
               | dict.fromkeys(held, "test"))
    unused = len(rest) - len(kept)
    return part_of, (f"ranges, block {leave_out} ({block_name(sorted(held, key=_index_key))}) left out"
                     + (f"; {unused} near-duplicates of its slices unused" if unused else ""))


def _is_run(block: list[str]) -> bool:
    """Whether a block of index_blocks is one run of consecutive numbers (not a pool of short runs)."""
    numbers = [_index_key(item_id)[1] for item_id in block]
    return len(block) >= MIN_RUN and numbers == list(range(numbers[0], numbers[0] + len(block)))


def _named_blocks(ids: list[str], names: list[str]) -> list[list[str]]:
    """Ids per block name, the blocks in the order of their first index."""
    members: dict[str, list[str]] = {}
    for item_id, name in sorted(zip(ids, names), key=lambda pair: _index_key(pair[0])):
        members.setdefault(name, []).append(item_id)
    return list(members.values())


def block_name(block: list[str]) -> str:
    """A block of consecutive indices as people name it: "cheng_0121-cheng_0320"."""
    return f"{block[0]}-{block[-1]}"
