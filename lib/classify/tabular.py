"""Classifiers on tables: handcrafted features, LiteMedSAM embeddings, both fused, file metadata.

Why three families share this module: each is a feature matrix plus a
scikit-learn classifier. The classifier is chosen on the fold's inner
validation part (never on the outer test part): logistic regression at a few
strengths and gradient boosting, the best validation ROC AUC wins.

`fusion` averages the probabilities of a features head and an embeddings
head, each chosen on validation as above. The two see different things
(hand-measured asymmetry and texture vs. what a medical encoder learned), so
their errors differ: on navoneel the average beats both heads, while one
logistic regression on the joined columns does not (the 768 embedding
columns drown the 57 features). Measured: docs/results.md.

`metadata` is a warning, not a model: on the Kaggle set the tumour and
no-tumour files were made differently (size, format, colour mode), so a
classifier on file properties alone scores well there and near chance
elsewhere. Every image model is reported next to it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import joblib
import numpy as np
import pandas as pd
from sklearn.base import clone
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from lib.classify.fold import Fold, FoldResult
from lib.classify.fold import rebalance as rebalance_training

LOGISTIC_C = (0.01, 0.1, 1.0)  # inverse regularisation strengths tried (few samples: strong is often best)
BOOSTING = dict(max_iter=200, learning_rate=0.05, max_leaf_nodes=15, l2_regularization=1.0)
MODEL_FILE = "model.joblib"
METADATA_COLUMNS = ("width", "height", "file_size")  # numeric; format and mode are one-hot encoded
# One-hot columns are fixed lists, so two data sets always give the same columns.
METADATA_CATEGORIES = {
    "format": ("JPEG", "PNG", "BMP", "TIFF", "WEBP", "GIF", "MPO"),
    "mode": ("L", "LA", "P", "RGB", "RGBA", "CMYK", "I;16", "I"),
}


def candidates(family: str, class_weight: str | None) -> dict[str, Any]:
    """The classifiers a family chooses from, by name."""
    boosting = HistGradientBoostingClassifier(**BOOSTING, class_weight=class_weight, random_state=0)
    if family == "metadata":
        return {"boosting": boosting}  # the shortcut baseline as described: gradient boosting
    models: dict[str, Any] = {
        f"logistic C={c}": make_pipeline(StandardScaler(), LogisticRegression(C=c, max_iter=5000,
                                                                             class_weight=class_weight))
        for c in LOGISTIC_C
    }
    if family == "features":
        models["boosting"] = boosting
    return models


def run_fold(fold: Fold, settings: dict[str, Any]) -> FoldResult:
    """Fit each candidate on train, keep the best on validation, predict validation, test and extra."""
    family = settings.get("family", "features")
    if family == "fusion":
        return run_fusion(fold, settings)
    rebalance = settings.get("rebalance", "class_weight")
    x, y, weights = rebalance_training(fold.train_x, fold.train_y, rebalance, fold.seed)
    class_weight = "balanced" if weights is not None else None
    scores, fitted = {}, {}
    for name, model in candidates(family, class_weight).items():
        fitted[name] = clone(model).fit(x, y)
        prob = fitted[name].predict_proba(fold.val_x)[:, 1]
        scores[name] = roc_auc_score(fold.val_y, prob) if len(set(fold.val_y)) == 2 else 0.5
    best = max(scores, key=scores.get)
    model = fitted[best]
    save(model, fold.out_dir)
    extra = getattr(fold, "extra_x", None)
    return FoldResult(
        val_prob=model.predict_proba(fold.val_x)[:, 1], test_prob=model.predict_proba(fold.test_x)[:, 1],
        history={"chosen": [best], **{f"val_auc {k}": [v] for k, v in scores.items()}},
        **({"extra_prob": model.predict_proba(extra)[:, 1]} if extra is not None else {}),
    )


def run_fusion(fold: Fold, settings: dict[str, Any]) -> FoldResult:
    """Mean probability of a features head (the first settings['feature_columns'] columns) and an embeddings head."""
    split = int(settings["feature_columns"])
    parts = [
        run_fold(_columns(fold, slice(0, split), "features"), {**settings, "family": "features"}),
        run_fold(_columns(fold, slice(split, None), "embeddings"), {**settings, "family": "medsam_embed"}),
    ]
    features, embeddings = parts
    history = {f"{head} {k}": v for head, part in zip(("features", "embeddings"), parts)
               for k, v in part.history.items()}
    return FoldResult(val_prob=_average(features.val_prob, embeddings.val_prob),
                      test_prob=_average(features.test_prob, embeddings.test_prob), history=history,
                      extra_prob=_average(features.extra_prob, embeddings.extra_prob))


def _average(a: np.ndarray | None, b: np.ndarray | None) -> np.ndarray | None:
    return None if a is None or b is None else (a + b) / 2


def _columns(fold: Fold, columns: slice, head: str) -> Fold:
    """The fold restricted to one head's columns; the head's model is saved in out_dir/<head>."""
    extra = None if fold.extra_x is None else fold.extra_x[:, columns]
    out_dir = None if fold.out_dir is None else Path(fold.out_dir) / head
    return Fold(fold.train_x[:, columns], fold.train_y, fold.val_x[:, columns], fold.val_y, fold.test_x[:, columns],
                out_dir, fold.seed, extra)


def save(model: Any, out_dir: Path | None) -> None:
    """The fold's fitted classifier as out_dir/model.joblib (scikit-learn's own format; load only trusted files)."""
    if out_dir is not None:
        Path(out_dir).mkdir(parents=True, exist_ok=True)
        joblib.dump(model, Path(out_dir) / MODEL_FILE)


def load(path: Path) -> Any:
    """A classifier saved by `save` (a file or the folder holding model.joblib)."""
    path = Path(path)
    return joblib.load(path / MODEL_FILE if path.is_dir() else path)


def metadata_matrix(df: pd.DataFrame) -> np.ndarray:
    """File properties only (width, height, size, one-hot format and colour mode)."""
    numeric = df[list(METADATA_COLUMNS)].astype(float)
    numeric["log_file_size"] = np.log1p(numeric["file_size"])
    numeric["aspect"] = numeric["width"] / numeric["height"].clip(lower=1)
    for column, values in METADATA_CATEGORIES.items():
        for value in values:
            numeric[f"{column}={value}"] = (df[column].astype(str) == value).astype(float)
    return numeric.to_numpy(float)
