"""The identity of a training run's data: a hash that changes when any slice or mask does.

Why here and not in a checkpoint module: both the PyTorch (lib.common.torch_checkpoint) and the Keras
(lib.common.keras_checkpoint) checkpoints name their run with it, and neither framework should be
imported to compute a hash.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

import numpy as np


def fingerprint(*arrays: np.ndarray) -> str:
    """SHA-1 of the arrays' shapes and bytes: the same slices and masks give the same string."""
    digest = hashlib.sha1()
    for array in arrays:
        array = np.ascontiguousarray(array)
        digest.update(str((array.shape, array.dtype.str)).encode())
        digest.update(array.tobytes())
    return digest.hexdigest()


def loss_weights(weights: Sequence[float] | None, n: int) -> np.ndarray | None:
    """Per-slice loss weights as float32, or None where there are none or all are 1.

    Why None for all ones: the loss is then the plain mean, and a run is fingerprinted (and so resumed)
    exactly as a run without weights. Both segmentation engines (Keras, PyTorch) take weights this way."""
    if weights is None:
        return None
    array = np.asarray(weights, np.float32)
    if len(array) != n:
        raise ValueError(f"{len(array)} weights for {n} slices")
    return None if np.all(array == 1) else array
