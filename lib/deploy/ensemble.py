"""Combine 06's model families through their out-of-fold predictions, calibrate, pick the operating point.

Why out-of-fold (OOF) predictions: each slice's OOF probability comes from a
fold model that never saw it, so a combiner fitted on them learns how much to
trust each family without learning the training slices by heart.

Combiners: the best single member (the fallback when combining does not
help), the plain mean of the members' probabilities, a weighted mean (weights
from each member's ROC AUC above chance) and stacking (logistic regression on
the members' logits). Two calibrators: Platt (logistic on the
logit) and isotonic. Every choice is made by cross-validation over 06's own
folds, and the reported numbers come from a nested loop: for each outer fold,
the combiner, the calibrator and the threshold are chosen and fitted on the
other folds only, then applied once to the held-out fold.

Everything fitted here is a handful of numbers, kept as JSON (no pickles).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from sklearn.isotonic import IsotonicRegression
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score

from lib.classify import kfold
from lib.common import metrics

COMBINERS = ("best", "mean", "weighted", "stacking")  # in order of preference when they tie
CALIBRATORS = ("platt", "isotonic")
# Isotonic regression is a step function: it ties the scores within each step and so lowers the ROC AUC
# (navoneel, nested: 0.943 against 0.958 with Platt). It is chosen only when it calibrates clearly better.
ISOTONIC_MARGIN = 0.01  # lower cross-validated ECE needed, absolute
NOT_DEPLOYED = kfold.SHORTCUTS  # the file-metadata shortcut is a warning baseline, never an ensemble member
STACKING_C = 1.0  # inverse L2 strength of the stacking logistic regression (few members, ~250 slices)
EPS = 1e-6  # probabilities are clipped to [EPS, 1 - EPS] before a logit


@dataclass
class Members:
    """OOF probabilities of the candidate families, aligned by slice."""

    ids: list[str]
    names: list[str]
    prob: np.ndarray  # (N, M) P(tumour) of each member
    y: np.ndarray  # (N,) 1 = tumour
    fold: np.ndarray  # (N,) 06's outer fold of each slice (repeat 0)


def load_members(classify_dir: Path, names: list[str] | None = None) -> Members:
    """Repeat 0's OOF predictions of `names` (default: every family 06 ran, except the metadata shortcut)."""
    models = Path(classify_dir) / "models"
    available = sorted(p.parent.name for p in models.glob("*/oof.csv"))
    names = names or [n for n in available if n not in NOT_DEPLOYED]
    missing = [n for n in names if n not in available]
    if missing or not names:
        raise ValueError(f"{models}: no OOF predictions for {missing or 'any model'}; run 06_classify_kfold first "
                         f"(found: {', '.join(available) or 'none'})")
    tables = [pd.read_csv(models / n / "oof.csv").query("repeat == 0").set_index("id") for n in names]
    ids = sorted(tables[0].index)
    for name, table in zip(names, tables):
        if sorted(table.index) != ids:
            raise ValueError(f"{models / name / 'oof.csv'} covers other slices than {names[0]}; rerun 06 on one input")
    first = tables[0].loc[ids]
    return Members(ids=ids, names=list(names), prob=np.column_stack([t.loc[ids, "prob"] for t in tables]),
                   y=first["label"].to_numpy(int), fold=first["fold"].to_numpy(int))


# --- combiners and calibrators: fit -> JSON-able dict, apply -> probabilities -------------


def logit(p: np.ndarray) -> np.ndarray:
    p = np.clip(np.asarray(p, float), EPS, 1 - EPS)
    return np.log(p / (1 - p))


def sigmoid(z: np.ndarray) -> np.ndarray:
    return 1 / (1 + np.exp(-np.asarray(z, float)))


def fit_combiner(kind: str, prob: np.ndarray, y: np.ndarray) -> dict[str, Any]:
    """Fit one combiner on member probabilities (N, M); returns its parameters."""
    m = prob.shape[1]
    if kind == "best":
        aucs = [_auc(y, prob[:, j]) for j in range(m)]
        return {"kind": "best", "weights": [float(j == int(np.argmax(aucs))) for j in range(m)]}
    if kind == "mean":
        return {"kind": "mean", "weights": [1 / m] * m}
    if kind == "weighted":
        above = np.array([max(_auc(y, prob[:, j]) - 0.5, 1e-3) for j in range(m)])
        return {"kind": "weighted", "weights": list(above / above.sum())}
    if kind == "stacking":
        model = LogisticRegression(C=STACKING_C, max_iter=1000).fit(logit(prob), y)
        return {"kind": "stacking", "coef": model.coef_[0].tolist(), "intercept": float(model.intercept_[0])}
    raise ValueError(f"unknown combiner {kind!r}; choose from {', '.join(COMBINERS)}")


def combine(params: dict[str, Any], prob: np.ndarray) -> np.ndarray:
    """Apply fitted combiner parameters to member probabilities (N, M)."""
    prob = np.asarray(prob, float)
    if params["kind"] == "stacking":
        return sigmoid(logit(prob) @ np.asarray(params["coef"]) + params["intercept"])
    return prob @ np.asarray(params["weights"])


def fit_calibrator(kind: str, raw: np.ndarray, y: np.ndarray) -> dict[str, Any]:
    """Fit Platt scaling or isotonic regression from raw ensemble probabilities to tumour rates."""
    if kind == "platt":
        model = LogisticRegression(C=1e6, max_iter=1000).fit(logit(raw)[:, None], y)
        return {"kind": "platt", "a": float(model.coef_[0, 0]), "b": float(model.intercept_[0])}
    if kind == "isotonic":
        model = IsotonicRegression(y_min=0, y_max=1, out_of_bounds="clip").fit(raw, y)
        return {"kind": "isotonic", "x": model.X_thresholds_.tolist(), "y": model.y_thresholds_.tolist()}
    if kind == "none":
        return {"kind": "none"}
    raise ValueError(f"unknown calibrator {kind!r}; choose from {', '.join(CALIBRATORS)}")


def calibrate(params: dict[str, Any], raw: np.ndarray) -> np.ndarray:
    """Apply fitted calibrator parameters to raw ensemble probabilities."""
    raw = np.asarray(raw, float)
    if params["kind"] == "platt":
        return sigmoid(params["a"] * logit(raw) + params["b"])
    if params["kind"] == "isotonic":
        return np.interp(raw, params["x"], params["y"])
    return raw


def _auc(y: np.ndarray, prob: np.ndarray) -> float:
    return float(roc_auc_score(y, prob)) if len(set(np.asarray(y).tolist())) == 2 else 0.5


# --- choices by cross-validation over 06's folds -------------------------------------------


def cross_fitted(fit: Callable[[np.ndarray, np.ndarray], dict[str, Any]],
                 apply: Callable[[dict[str, Any], np.ndarray], np.ndarray],
                 x: np.ndarray, y: np.ndarray, fold: np.ndarray) -> np.ndarray:
    """Each row's output from parameters fitted on the other folds' rows."""
    out = np.zeros(len(y))
    for f in np.unique(fold):
        held = fold == f
        out[held] = apply(fit(x[~held], y[~held]), x[held])
    return out


def cv_combined(kind: str, prob: np.ndarray, y: np.ndarray, fold: np.ndarray) -> np.ndarray:
    """Each slice's combined probability from a combiner fitted on the other folds."""
    return cross_fitted(lambda x, t: fit_combiner(kind, x, t), combine, prob, y, fold)


def cv_calibrated(kind: str, raw: np.ndarray, y: np.ndarray, fold: np.ndarray) -> np.ndarray:
    """Each slice's calibrated probability from a calibrator fitted on the other folds."""
    return cross_fitted(lambda x, t: fit_calibrator(kind, x, t), calibrate, raw, y, fold)


def choose_combiner(prob: np.ndarray, y: np.ndarray, fold: np.ndarray) -> tuple[str, dict[str, float]]:
    """The combiner with the best cross-validated ROC AUC (ties go to the simpler one)."""
    scores = {k: _auc(y, cv_combined(k, prob, y, fold)) for k in COMBINERS}
    best = max(COMBINERS, key=lambda k: (round(scores[k], 6), -COMBINERS.index(k)))
    return best, scores


def choose_calibrator(raw: np.ndarray, y: np.ndarray, fold: np.ndarray) -> tuple[str, dict[str, float]]:
    """Platt, unless isotonic's cross-validated expected calibration error is lower by ISOTONIC_MARGIN."""
    errors = {k: metrics.expected_calibration_error(y, cv_calibrated(k, raw, y, fold)) for k in CALIBRATORS}
    return ("isotonic" if errors["isotonic"] < errors["platt"] - ISOTONIC_MARGIN else "platt"), errors


@dataclass
class Ensemble:
    """A fitted ensemble: member names, combiner, calibrator, threshold, and the scores behind each choice."""

    members: list[str]
    combiner: dict[str, Any]
    calibrator: dict[str, Any]
    threshold: float
    target_sensitivity: float
    choices: dict[str, Any]

    def predict(self, prob: np.ndarray) -> np.ndarray:
        """Calibrated P(tumour) from member probabilities (N, M), members in self.members order."""
        return calibrate(self.calibrator, combine(self.combiner, np.atleast_2d(prob)))

    def to_json(self) -> dict[str, Any]:
        return {"members": self.members, "combiner": self.combiner, "calibrator": self.calibrator,
                "threshold": self.threshold, "target_sensitivity": self.target_sensitivity, "choices": self.choices}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Ensemble:
        return cls(**{k: data[k] for k in ("members", "combiner", "calibrator", "threshold", "target_sensitivity",
                                           "choices")})


def fit(prob: np.ndarray, y: np.ndarray, fold: np.ndarray, names: list[str],
        target_sensitivity: float = metrics.TARGET_SENSITIVITY) -> Ensemble:
    """Choose and fit combiner, calibrator and threshold on OOF rows (prob, y) grouped by `fold`.

    The calibrator learns from cross-validated combined probabilities (a combiner
    fitted on all rows would look better on them than it will on new slices);
    the threshold is the highest that finds `target_sensitivity` of the tumours
    among the cross-validated calibrated probabilities.
    """
    kind, combiner_scores = choose_combiner(prob, y, fold)
    raw = cv_combined(kind, prob, y, fold)
    cal_kind, cal_errors = choose_calibrator(raw, y, fold)
    calibrated = cv_calibrated(cal_kind, raw, y, fold)
    return Ensemble(
        members=list(names), combiner=fit_combiner(kind, prob, y), calibrator=fit_calibrator(cal_kind, raw, y),
        threshold=metrics.threshold_for_sensitivity(y, calibrated, target_sensitivity),
        target_sensitivity=target_sensitivity,
        choices={"combiner_cv_roc_auc": combiner_scores, "calibrator_cv_ece": cal_errors},
    )


def nested_oof(members: Members, target_sensitivity: float = metrics.TARGET_SENSITIVITY) -> pd.DataFrame:
    """Honest ensemble predictions: per outer fold, everything is chosen and fitted on the other folds.

    Rows: id, fold, label, prob (calibrated), threshold (that fold's), decision, combiner, calibrator.
    """
    rows = []
    for f in np.unique(members.fold):
        held = members.fold == f
        model = fit(members.prob[~held], members.y[~held], members.fold[~held], members.names, target_sensitivity)
        prob = model.predict(members.prob[held])
        for i, p in zip(np.flatnonzero(held), prob):
            rows.append({"id": members.ids[i], "fold": int(f), "label": int(members.y[i]), "prob": float(p),
                         "threshold": model.threshold, "decision": int(p >= model.threshold),
                         "combiner": model.combiner["kind"], "calibrator": model.calibrator["kind"]})
    return pd.DataFrame(rows)
