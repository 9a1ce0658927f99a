"""Numbers that say how good a tumour / no-tumour prediction is, with their uncertainty.

Why this module: ~250 slices give wide error bars, so every headline number
comes with a bootstrap 95 % interval; and a missed tumour costs more than a
false alarm, so the operating threshold is chosen for a target sensitivity on
validation data, then reported at that threshold (and at 0.5 for reference).
scikit-learn computes the curves; this module only assembles them.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np
from sklearn.metrics import average_precision_score, brier_score_loss, roc_auc_score

BOOTSTRAP_ROUNDS = 1000  # resamples per interval; 1000 puts the 2.5 % tail on 25 draws
CONFIDENCE = 0.95
CALIBRATION_BINS = 10  # equal-width probability bins for the expected calibration error
TARGET_SENSITIVITY = 0.95  # default operating point: miss at most 1 tumour in 20


def confusion(y: np.ndarray, prob: np.ndarray, threshold: float) -> dict[str, int]:
    """Counts at `threshold` (a probability >= threshold predicts tumour)."""
    y, pred = np.asarray(y, bool), np.asarray(prob) >= threshold
    return {"tp": int((y & pred).sum()), "fp": int((~y & pred).sum()),
            "tn": int((~y & ~pred).sum()), "fn": int((y & ~pred).sum())}


def _ratio(num: int, den: int) -> float:
    return num / den if den else float("nan")


def at_threshold(y: np.ndarray, prob: np.ndarray, threshold: float) -> dict[str, Any]:
    """Sensitivity, specificity, precision, F1, accuracy and the confusion matrix."""
    c = confusion(y, prob, threshold)
    sensitivity = _ratio(c["tp"], c["tp"] + c["fn"])
    precision = _ratio(c["tp"], c["tp"] + c["fp"])
    f1 = _ratio(2 * c["tp"], 2 * c["tp"] + c["fp"] + c["fn"])
    return {
        "threshold": float(threshold), "sensitivity": sensitivity,
        "specificity": _ratio(c["tn"], c["tn"] + c["fp"]), "precision": precision, "f1": f1,
        "accuracy": _ratio(c["tp"] + c["tn"], sum(c.values())), "confusion": c,
    }


def threshold_for_sensitivity(y: np.ndarray, prob: np.ndarray, target: float = TARGET_SENSITIVITY) -> float:
    """The highest threshold that still finds `target` of the tumours in (y, prob).

    Highest, because among thresholds meeting the sensitivity target it gives
    the fewest false alarms. Chosen on validation data, applied elsewhere.
    """
    y, prob = np.asarray(y, bool), np.asarray(prob, float)
    positives = np.sort(prob[y])[::-1]
    if len(positives) == 0:
        return 0.5
    needed = int(np.ceil(target * len(positives)))
    return float(positives[max(needed, 1) - 1])


def expected_calibration_error(y: np.ndarray, prob: np.ndarray, bins: int = CALIBRATION_BINS) -> float:
    """Mean |observed tumour rate - mean predicted probability| over equal-width bins, weighted by count."""
    y, prob = np.asarray(y, float), np.asarray(prob, float)
    which = np.minimum((prob * bins).astype(int), bins - 1)
    error = 0.0
    for b in range(bins):
        inside = which == b
        if inside.any():
            error += inside.mean() * abs(y[inside].mean() - prob[inside].mean())
    return float(error)


def bootstrap_interval(
    y: np.ndarray, prob: np.ndarray, statistic: Callable[[np.ndarray, np.ndarray], float],
    rounds: int = BOOTSTRAP_ROUNDS, seed: int = 0,
) -> tuple[float, float]:
    """Percentile interval of `statistic` over resamples drawn within each class.

    Resampling within class keeps both classes in every draw, so AUCs are defined.
    """
    y, prob = np.asarray(y, bool), np.asarray(prob, float)
    rng = np.random.default_rng(seed)
    pos, neg = np.flatnonzero(y), np.flatnonzero(~y)
    values = []
    for _ in range(rounds):
        idx = np.concatenate([rng.choice(pos, len(pos)), rng.choice(neg, len(neg))])
        values.append(statistic(y[idx], prob[idx]))
    values = np.asarray(values, float)
    values = values[np.isfinite(values)]
    if len(values) == 0:
        return float("nan"), float("nan")
    tail = (1 - CONFIDENCE) / 2 * 100
    low, high = np.percentile(values, [tail, 100 - tail])
    return float(low), float(high)


def auc_difference(y: np.ndarray, a: np.ndarray, b: np.ndarray) -> dict[str, Any]:
    """ROC AUC of a minus that of b on the same slices, with a paired bootstrap 95 % interval.

    Why paired: both models score the same slices, so each resample draws the same slices for both;
    the interval is of the difference itself, much narrower than two separate intervals suggest."""
    both = np.column_stack([a, b])
    diff = lambda yy, pp: roc_auc_score(yy, pp[:, 0]) - roc_auc_score(yy, pp[:, 1])  # noqa: E731
    low, high = bootstrap_interval(np.asarray(y, bool), both, diff)
    return {"difference": float(diff(np.asarray(y, bool), both)), "ci": [low, high]}


def _at(threshold: float, key: str) -> Callable[[np.ndarray, np.ndarray], float]:
    return lambda y, p: at_threshold(y, p, threshold)[key]


def summary(y: np.ndarray, prob: np.ndarray, threshold: float | np.ndarray,
            rounds: int = BOOTSTRAP_ROUNDS) -> dict[str, Any]:
    """Everything a model is reported with: ranking, operating point, 0.5, calibration; 95 % intervals.

    `threshold` is the operating threshold chosen elsewhere (on validation
    data): one number, or one per prediction (each outer fold has its own).
    """
    y, prob = np.asarray(y, bool), np.asarray(prob, float)
    both = y.any() and (~y).any()
    out: dict[str, Any] = {"n": int(len(y)), "positives": int(y.sum())}
    for name, fn in (("roc_auc", roc_auc_score), ("pr_auc", average_precision_score)):
        out[name] = float(fn(y, prob)) if both else float("nan")
        out[f"{name}_ci"] = bootstrap_interval(y, prob, fn, rounds) if both else (float("nan"),) * 2
    # Per-prediction thresholds: decide on the margin prob - threshold at 0 (same decisions).
    margin = prob - np.asarray(threshold, float)
    out["operating"] = at_threshold(y, margin, 0.0)
    out["operating"]["threshold"] = float(np.median(threshold))
    # With one class only (an all-tumour external set), the rate of that class still has an interval.
    present = {"sensitivity": y.any(), "specificity": (~y).any(), "precision": both, "f1": both}
    for key, defined in present.items():
        if defined:
            out["operating"][f"{key}_ci"] = bootstrap_interval(y, margin, _at(0.0, key), rounds)
    out["at_0.5"] = at_threshold(y, prob, 0.5)
    out["brier"] = float(brier_score_loss(y, prob))
    out["ece"] = expected_calibration_error(y, prob)
    return out


# --- text for tables, cards and summaries --------------------------------------------------


def number_text(value: float | None, digits: int = 3) -> str:
    """A metric with `digits` decimals, or "n/a" where it is undefined.

    Why: an undefined metric (precision when nothing was called tumour, an AUC on one class) is NaN
    in memory and null in our JSON files (lib.common.io.write_json_atomic); both must print, not crash."""
    return f"{value:.{digits}f}" if value is not None and math.isfinite(value) else "n/a"


def interval_text(values: Any) -> str:
    """A confidence interval as "[low, high]", or "" where it is missing or undefined (see number_text)."""
    if values is None or len(values) != 2 or any(v is None or not math.isfinite(v) for v in values):
        return ""
    low, high = values
    return f"[{low:.3f}, {high:.3f}]"


def rounded(value: float | None, digits: int = 3) -> float | None:
    """`round` for table cells that may hold None (an undefined metric read back from JSON)."""
    return None if value is None else round(value, digits)
