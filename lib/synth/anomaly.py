"""Use 2 of the DDIM (issue 30): does a slice "match the learned tumour space"? An anomaly score, measured.

A DDIM trained on tumour slices denoises what looks like its training data
better than what does not. The score of a slice is the denoising error at one
fixed noise level (ANOMALY_TIME), averaged over a few noise draws: the mean
absolute error of the slice the network's noise estimate implies. A lower
error should mean more tumour-like, so the tumour score is minus the error.
A class-conditional model scores the likelihood-ratio analogue: the error
when told "no tumour" minus the error when told "tumour".

Honesty: the slices scored must be ones the model never trained on (05's
held-out tumour slices and the tumour-free slices, which a tumour-only model
never sees); `roc` reports ROC AUC with a bootstrap interval.
"""

from __future__ import annotations

from typing import Any

import keras
import numpy as np

from lib.common import metrics
from lib.synth import diffusion

ANOMALY_TIME = 0.3  # diffusion time of the fixed noise level: noise rate about 0.5, the head still visible
DRAWS = 4  # noise draws averaged per slice


def denoising_error(network: keras.Model, images: np.ndarray, labels: np.ndarray | None = None,
                    time: float = ANOMALY_TIME, draws: int = DRAWS, seed: int = 0, batch_size: int = 64) -> np.ndarray:
    """Per slice (N,): mean absolute error of the implied slice at diffusion time `time`, over `draws` noise draws."""
    rng, errors = np.random.default_rng(seed), np.zeros(len(images))
    times = np.full(len(images), time, np.float32)
    for _ in range(draws):
        for start in range(0, len(images), batch_size):
            stop = min(start + batch_size, len(images))
            part = None if labels is None else labels[start:stop]
            inputs, _, signal_rates = diffusion.noisy_inputs(images[start:stop], rng, part, times[start:stop])
            predicted = np.asarray(network.predict_on_batch(inputs))
            implied = (inputs[0] - np.sqrt(inputs[1]) * predicted) / signal_rates
            errors[start:stop] += np.abs(implied - images[start:stop]).mean(axis=(1, 2, 3)) / draws
    return errors


def tumour_score(network: keras.Model, images: np.ndarray, conditional: bool, seed: int = 0) -> np.ndarray:
    """Higher = more tumour-like: minus the error of a tumour-only model, or the conditional error ratio's log."""
    if not conditional:
        return -denoising_error(network, images, seed=seed)
    as_free = denoising_error(network, images, np.zeros(len(images), np.int32), seed=seed)
    as_tumour = denoising_error(network, images, np.ones(len(images), np.int32), seed=seed)
    return np.log(as_free) - np.log(as_tumour)


def roc(y: np.ndarray, score: np.ndarray) -> dict[str, Any]:
    """ROC AUC of the score for tumour (1) vs no tumour (0), with its 95 % bootstrap interval."""
    from sklearn.metrics import roc_auc_score

    y = np.asarray(y, int)
    if y.min() == y.max():
        return {"roc_auc": None, "roc_auc_ci": [None, None], "tumour": int(y.sum()), "no_tumour": int((1 - y).sum())}
    return {"roc_auc": float(roc_auc_score(y, score)),
            "roc_auc_ci": list(metrics.bootstrap_interval(y, score, roc_auc_score)),
            "tumour": int(y.sum()), "no_tumour": int((1 - y).sum())}
