"""The k-fold protocol every classifier goes through, so their numbers can be compared.

For each outer fold (lib.common.splits: grouped, stratified, saved in splits.json):
1. the training part is split again, grouped and stratified, into inner
   train and validation parts (VAL_SHARE);
2. the model family trains on inner train; early stopping, model choice and
   the operating threshold use the validation part only (the threshold is the
   highest one that finds TARGET_SENSITIVITY of its tumours);
3. the outer fold is predicted once, with that threshold: out-of-fold (OOF)
   probabilities and decisions that no choice has seen.
Augmentation lives inside the image models and is active in training only.

A family is a module with `run_fold(fold: lib.classify.fold.Fold, settings) -> FoldResult`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from lib.classify.fold import Fold, FoldResult
from lib.common import metrics
from lib.common.splits import VAL_SHARE, fold_parts, inner_split  # noqa: F401 - the protocol's parts, re-exported

IMAGE_FAMILIES = ("cnn", "vgg16", "resnet50", "efficientnetv2b0", "efficientnetv2s", "convnext_tiny")
TABLE_FAMILIES = ("features", "medsam_embed", "fusion", "metadata")
FAMILIES = IMAGE_FAMILIES + TABLE_FAMILIES
SHORTCUTS = ("metadata",)  # file properties only: a baseline to beat, never a model to ship


@dataclass
class Inputs:
    """What one family trains on, aligned with `ids`; `extra_x` are outside images to predict (or None);
    `synthetic` gives generated slices for a fold's training part (06 --synthetic), or is None."""

    ids: list[str]
    x: np.ndarray
    y: np.ndarray
    groups: np.ndarray
    extra_x: np.ndarray | None = None
    # (repeat, fold, inner-train size) -> generated (x, y) to add to that fold's training part, or None
    synthetic: Callable[[int, int, int], tuple[np.ndarray, np.ndarray]] | None = None


@dataclass
class CrossValidation:
    """OOF rows (id, repeat, fold, label, prob, threshold, decision) and per-fold extras."""

    oof: pd.DataFrame
    histories: list[dict[str, Any]] = field(default_factory=list)
    extra_prob: np.ndarray | None = None  # mean over fold models
    extra_threshold: float | None = None  # median of the fold thresholds


def base_family(name: str) -> str:
    """'cnn' for 'cnn+ddim': a family trained with generated slices (06 --synthetic) is run and deployed like
    the family itself."""
    return name.partition("+")[0]


def runner(family: str) -> Callable[[Fold, dict[str, Any]], FoldResult]:
    """The family's run_fold (imported lazily: Keras and torch load only when needed)."""
    if family == "cnn":
        from lib.classify import cnn

        return cnn.run_fold
    if family in IMAGE_FAMILIES:
        from lib.classify import backbones

        return backbones.run_fold
    if family in TABLE_FAMILIES:
        from lib.classify import tabular

        return tabular.run_fold
    raise ValueError(f"unknown model {family!r}; choose from {', '.join(FAMILIES)}")


def cross_validate(family: str, data: Inputs, splits: dict[str, Any], settings: dict[str, Any],
                   out_dir: Path, target_sensitivity: float = metrics.TARGET_SENSITIVITY,
                   progress: Callable[[str], None] = print) -> CrossValidation:
    """Every repeat and fold of `splits` for one family; returns the OOF table."""
    run = runner(family)
    rows, histories, extras, thresholds = [], [], [], []
    for repeat in range(len(splits["assignments"])):
        for k in range(splits["folds"]):
            inner, val, test = fold_parts(splits, data.ids, data.y, data.groups, repeat, k)
            train_x, train_y = data.x[inner], data.y[inner]
            if data.synthetic is not None:  # generated slices join the training part, never val or test
                extra_x, extra_y = data.synthetic(repeat, k, len(inner))
                train_x, train_y = np.concatenate([train_x, extra_x]), np.concatenate([train_y, extra_y])
            fold = Fold(train_x=train_x, train_y=train_y, val_x=data.x[val], val_y=data.y[val],
                        test_x=data.x[test], out_dir=out_dir / f"repeat{repeat}_fold{k}",
                        seed=splits["seed"] + repeat, extra_x=data.extra_x)
            fold.out_dir.mkdir(parents=True, exist_ok=True)
            result = run(fold, {**settings, "family": family})
            threshold = metrics.threshold_for_sensitivity(data.y[val], result.val_prob, target_sensitivity)
            thresholds.append(threshold)
            histories.append(result.history)
            if result.extra_prob is not None:
                extras.append(result.extra_prob)
            for i, p in zip(test, result.test_prob):
                rows.append({"id": data.ids[i], "repeat": repeat, "fold": k, "label": int(data.y[i]),
                             "prob": float(p), "threshold": threshold, "decision": int(p >= threshold)})
            progress(f"{family}: repeat {repeat} fold {k} done (threshold {threshold:.3f})")
    return CrossValidation(
        oof=pd.DataFrame(rows), histories=histories,
        extra_prob=np.mean(extras, axis=0) if extras else None,
        extra_threshold=float(np.median(thresholds)) if extras else None,
    )


def evaluate(oof: pd.DataFrame) -> dict[str, Any]:
    """Metrics of repeat 0's OOF predictions at their fold thresholds (and the spread over repeats)."""
    first = oof[oof["repeat"] == 0]
    y, prob = first["label"].to_numpy(bool), first["prob"].to_numpy(float)
    out = metrics.summary(y, prob, first["threshold"].to_numpy(float))
    if oof["repeat"].nunique() > 1:
        from sklearn.metrics import roc_auc_score

        out["roc_auc_repeats"] = [float(roc_auc_score(g["label"], g["prob"])) for _, g in oof.groupby("repeat")]
    return out
