"""How far generated slices are from real ones: KID with its real-vs-real floor, and a two-sample test.

KID (kernel inception distance, Bińkowski et al. 2018) as the keras.io DDIM
example computes it: the squared maximum mean discrepancy between two sets of
feature vectors under the polynomial kernel (a·b / d + 1)³, with the unbiased
estimator (a set's kernel with itself leaves out the diagonal). It is reported
as mean and standard deviation over random subsets, and always next to its
floor: the KID between two disjoint sets of real slices of the same size,
which is what "as close as real data gets" reads here. Values depend on the
feature extractor; only InceptionV3 features compare with the literature.

Features: LiteMedSAM's frozen encoder, average-pooled (medical, offline, the
default) or InceptionV3 with ImageNet weights where they can be loaded.

The two-sample test needs no ImageNet: a cross-validated classifier is asked
to tell real from generated. ROC AUC 0.5 means it cannot; 1.0 means every
generated slice gives itself away.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np

from lib.common import keras_weights

FEATURES = ("litemedsam", "inception")
INCEPTION_SIZE = 299
INCEPTION_FILE = "inception_v3/inception_v3_weights_tf_dim_ordering_tf_kernels_notop.h5"  # under WEIGHTS_URL


def polynomial_kernel(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(a·b / d + 1)³ for every pair of rows."""
    return (a @ b.T / a.shape[1] + 1.0) ** 3


def kid(real: np.ndarray, generated: np.ndarray) -> float:
    """Unbiased squared MMD between the two feature sets (may be slightly negative for equal distributions)."""
    real, generated = np.asarray(real, np.float64), np.asarray(generated, np.float64)
    n, m = len(real), len(generated)
    if n < 2 or m < 2:
        raise ValueError("KID needs at least two feature vectors on each side")
    k_rr, k_gg = polynomial_kernel(real, real), polynomial_kernel(generated, generated)
    within_real = (k_rr.sum() - np.trace(k_rr)) / (n * (n - 1))
    within_generated = (k_gg.sum() - np.trace(k_gg)) / (m * (m - 1))
    return float(within_real + within_generated - 2.0 * polynomial_kernel(real, generated).mean())


def kid_subsets(real: np.ndarray, generated: np.ndarray, subsets: int = 10, size: int | None = None,
                seed: int = 0) -> tuple[float, float]:
    """(mean, standard deviation) of KID over random subsets of `size` from each side (default: the smaller set)."""
    size = min(len(real), len(generated), size or len(generated))
    rng = np.random.default_rng(seed)
    values = [kid(real[rng.choice(len(real), size, replace=False)],
                  generated[rng.choice(len(generated), size, replace=False)]) for _ in range(subsets)]
    return float(np.mean(values)), float(np.std(values))


def kid_floor(first: np.ndarray, second: np.ndarray, subsets: int = 10, size: int | None = None,
              seed: int = 0) -> tuple[float, float]:
    """KID between two disjoint sets of real features at the subset size the generated set is scored at."""
    return kid_subsets(first, second, subsets, size, seed)


def two_sample_auc(real: np.ndarray, generated: np.ndarray, real_groups: Sequence[str] | None = None,
                   folds: int = 5, seed: int = 0) -> float:
    """Cross-validated ROC AUC of a logistic regression telling real (0) from generated (1) features.

    Duplicate groups of the real slices stay in one fold, so a slice and its near copy never
    sit on both sides of a split."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import roc_auc_score
    from sklearn.model_selection import StratifiedGroupKFold, cross_val_predict
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    x = np.concatenate([real, generated])
    y = np.r_[np.zeros(len(real), int), np.ones(len(generated), int)]
    groups = list(real_groups) if real_groups is not None else [f"r{i}" for i in range(len(real))]
    groups += [f"g{i}" for i in range(len(generated))]
    model = make_pipeline(StandardScaler(), LogisticRegression(C=0.1, max_iter=2000))
    split = StratifiedGroupKFold(min(folds, len(real), len(generated)), shuffle=True, random_state=seed)
    prob = cross_val_predict(model, x, y, groups=groups, cv=split, method="predict_proba")[:, 1]
    return float(roc_auc_score(y, prob))


def features(images: Sequence[np.ndarray], kind: str = "litemedsam") -> np.ndarray:
    """Feature vectors of grey uint8 slices: LiteMedSAM's average-pooled encoder map, or InceptionV3's pool.

    Raises SystemExit in one line when InceptionV3's ImageNet weights cannot be loaded (offline)."""
    if kind == "litemedsam":
        from lib.common import medsam

        return medsam.pooled_embeddings(list(images), how="avg")
    if kind == "inception":
        return _inception(images)
    raise ValueError(f"features must be one of {FEATURES}, not {kind!r}")


def check(kind: str) -> None:
    """Fail before training when the features cannot be had (InceptionV3's ImageNet file offline)."""
    if kind == "inception":
        inception_weights()


def inception_weights() -> Path:
    """InceptionV3's no-top ImageNet file, cached or downloaded; SystemExit in one line saying what to do."""
    target, why = keras_weights.fetch(INCEPTION_FILE)
    if why is not None:
        raise SystemExit(f"error: InceptionV3's ImageNet weights could not be downloaded ({why}): put "
                         f"{target.name} from {keras_weights.WEIGHTS_URL + INCEPTION_FILE} in {target.parent}/, "
                         "or use --kid-features litemedsam (offline, medical)")
    return target


def _inception(images: Sequence[np.ndarray]) -> np.ndarray:
    import keras

    model = keras.applications.InceptionV3(include_top=False, weights=str(inception_weights()), pooling="avg",
                                           input_shape=(INCEPTION_SIZE, INCEPTION_SIZE, 3))
    batch = np.stack([cv2.resize(np.asarray(image, np.float32), (INCEPTION_SIZE, INCEPTION_SIZE))
                      for image in images])
    batch = keras.applications.inception_v3.preprocess_input(np.repeat(batch[..., None], 3, axis=-1))
    return np.asarray(model.predict(batch, verbose=0))
