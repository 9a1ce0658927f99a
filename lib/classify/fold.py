"""One fold of the k-fold classification stage (06_classify_kfold): what a model gets and gives back.

Why: every model family (custom CNN, ImageNet backbones, handcrafted
features ...) plugs into the same outer loop. The loop hands a `Fold` to a
family's `run_fold(fold, settings)` and gets a `FoldResult`; nothing else
crosses the boundary. The three parts of a fold have separate jobs:

- train: fit the weights;
- val (inner validation, carved out of the training fold): early stopping and
  the operating threshold, nothing else;
- test (the outer fold): predicted once at the very end, never used to train
  or to choose anything, so the k test predictions give an honest estimate;
- extra (optional): images from another collection, predicted like test.

Also here: the two ways to handle class imbalance that every family shares
(`class_weights`, `oversample`, chosen by `rebalance`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

REBALANCE_MODES = ("class_weight", "oversample", "none")


@dataclass
class Fold:
    train_x: np.ndarray  # images (N, H, W) uint8 grey
    train_y: np.ndarray  # labels (N,) int 0/1, 1 = tumour
    val_x: np.ndarray  # inner validation: early stopping and the operating threshold
    val_y: np.ndarray
    test_x: np.ndarray  # the outer fold: predicted once at the end, never used to train or choose
    out_dir: Path  # save the fold's model here (e.g. out_dir / "model.keras")
    seed: int = 0
    extra_x: np.ndarray | None = None  # outside images (another collection) to predict too, or None


@dataclass
class FoldResult:
    val_prob: np.ndarray  # P(tumour) of each validation image, float in [0, 1]
    test_prob: np.ndarray  # P(tumour) of each test image
    history: dict[str, list[float]] = field(default_factory=dict)  # per-epoch curves: loss, val_loss, auc ...
    extra_prob: np.ndarray | None = None  # P(tumour) of each fold.extra_x image (None without extra_x)


def class_weights(y: np.ndarray) -> dict[int, float]:
    """Weights n / (2 n_c) so that both classes carry the same total weight."""
    y = np.asarray(y).astype(int)
    counts = np.bincount(y, minlength=2)
    return {c: float(len(y) / (2 * counts[c])) if counts[c] else 1.0 for c in (0, 1)}


def oversample(x: np.ndarray, y: np.ndarray, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Repeat randomly drawn minority examples until both classes are equally many; shuffle."""
    y = np.asarray(y).astype(int)
    rng = np.random.default_rng(seed)
    counts = np.bincount(y, minlength=2)
    index = np.arange(len(y))
    if counts.min() > 0 and counts[0] != counts[1]:
        minority = int(np.argmin(counts))
        extra = rng.choice(np.flatnonzero(y == minority), size=counts.max() - counts.min(), replace=True)
        index = np.concatenate([index, extra])
    index = rng.permutation(index)
    return x[index], y[index]


def rebalance(x: np.ndarray, y: np.ndarray, mode: str, seed: int = 0) -> tuple[np.ndarray, np.ndarray, dict | None]:
    """Training arrays and class weights (or None) for mode 'class_weight', 'oversample' or 'none'."""
    if mode not in REBALANCE_MODES:
        raise ValueError(f"rebalance must be one of {REBALANCE_MODES}, got {mode!r}")
    if mode == "oversample":
        x, y = oversample(x, y, seed)
    return x, y, class_weights(y) if mode == "class_weight" else None
