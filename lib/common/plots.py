"""Plots of a classifier's out-of-fold predictions: ROC, PR, confusion, calibration, training curves.

Each function writes one PNG (through lib.common.report.save_figure) and returns its
path, so a stage can list them in its report.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
from sklearn.metrics import precision_recall_curve, roc_curve

from lib.common.report import plt, save_figure


def roc_pr(y: np.ndarray, prob: np.ndarray, operating: Mapping[str, float], path: Path, title: str) -> Path:
    """ROC and precision-recall curves side by side, the operating point marked on both."""
    fig, (roc_ax, pr_ax) = plt.subplots(1, 2, figsize=(9, 4), layout="constrained")  # room for the suptitle
    fpr, tpr, _ = roc_curve(y, prob)
    roc_ax.plot(fpr, tpr, color="tab:red")
    roc_ax.plot([0, 1], [0, 1], ":", color="grey")
    roc_ax.plot(1 - operating["specificity"], operating["sensitivity"], "ko", label="operating point")
    roc_ax.set(xlabel="1 - specificity", ylabel="sensitivity", title="ROC")
    precision, recall, _ = precision_recall_curve(y, prob)
    pr_ax.plot(recall, precision, color="tab:blue")
    pr_ax.axhline(np.mean(y), ls=":", color="grey")
    pr_ax.plot(operating["sensitivity"], operating["precision"], "ko", label="operating point")
    pr_ax.set(xlabel="recall (sensitivity)", ylabel="precision", title="Precision-recall", ylim=(0, 1.02))
    for ax in (roc_ax, pr_ax):
        ax.grid(alpha=0.3)
        ax.legend(loc="lower left", fontsize=8)
    fig.suptitle(title)
    return save_figure(fig, path)


def confusion(counts: Mapping[str, int], path: Path, title: str) -> Path:
    """2x2 confusion matrix at the operating threshold."""
    table = np.array([[counts["tn"], counts["fp"]], [counts["fn"], counts["tp"]]])
    fig, ax = plt.subplots(figsize=(3.6, 3.2))
    ax.imshow(table, cmap="Blues")
    for (r, c), value in np.ndenumerate(table):
        ax.text(c, r, str(value), ha="center", va="center", fontsize=14,
                color="white" if value > table.max() / 2 else "black")
    ax.set(xticks=[0, 1], yticks=[0, 1], xticklabels=["no tumour", "tumour"], yticklabels=["no tumour", "tumour"],
           xlabel="predicted", ylabel="true", title=title)
    return save_figure(fig, path)


def calibration(y: np.ndarray, prob: np.ndarray, path: Path, title: str, bins: int = 10) -> Path:
    """Observed tumour rate per predicted-probability bin (reliability diagram)."""
    edges = np.linspace(0, 1, bins + 1)
    which = np.clip(np.digitize(prob, edges) - 1, 0, bins - 1)
    mean_p = [prob[which == b].mean() for b in range(bins) if (which == b).any()]
    rate = [np.mean(y[which == b]) for b in range(bins) if (which == b).any()]
    fig, ax = plt.subplots(figsize=(4, 4))
    ax.plot([0, 1], [0, 1], ":", color="grey")
    ax.plot(mean_p, rate, "o-", color="tab:red")
    ax.set(xlabel="predicted probability", ylabel="observed tumour rate", title=title, xlim=(0, 1), ylim=(0, 1))
    ax.grid(alpha=0.3)
    return save_figure(fig, path)


def training_curves(histories: Sequence[Mapping[str, Sequence[float]]], path: Path, title: str,
                    labels: Sequence[str] | None = None) -> Path | None:
    """Per-epoch curves of every fold or run (`labels`, default "fold i"); None when no model had epochs."""
    labels = labels or [f"fold {i}" for i in range(len(histories))]
    keys = sorted({k for h in histories for k, v in h.items() if len(v) > 1 and isinstance(v[0], (int, float))})
    if not keys:
        return None
    fig, axes = plt.subplots(1, len(keys), figsize=(3.5 * len(keys), 3), squeeze=False,
                             layout="constrained")  # the suptitle clears the axis titles
    for ax, key in zip(axes[0], keys):
        for label, history in zip(labels, histories):
            if key in history:
                ax.plot(history[key], label=label, alpha=0.8)
        ax.set(title=key, xlabel="epoch")
        ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=7)
    fig.suptitle(title)
    return save_figure(fig, path)
