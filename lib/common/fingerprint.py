"""The identity of a training run's data: a hash that changes when any slice or mask does.

Why here and not in a checkpoint module: both the PyTorch (lib.common.torch_checkpoint) and the Keras
(lib.common.keras_checkpoint) checkpoints name their run with it, and neither framework should be
imported to compute a hash.
"""

from __future__ import annotations

import hashlib

import numpy as np


def fingerprint(*arrays: np.ndarray) -> str:
    """SHA-1 of the arrays' shapes and bytes: the same slices and masks give the same string."""
    digest = hashlib.sha1()
    for array in arrays:
        array = np.ascontiguousarray(array)
        digest.update(str((array.shape, array.dtype.str)).encode())
        digest.update(array.tobytes())
    return digest.hexdigest()
