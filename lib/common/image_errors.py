"""What every image reader shares: the one-line error and the robust window.

Why a module of its own: lib.common.io (photos, PNG, TIFF) and lib.common.scanner_files (DICOM, NIfTI)
both raise ImageReadError and window high-bit-depth values the same way, and io hands scanner files to
scanner_files; with these here, neither has to import the other's module at load time.
"""

from __future__ import annotations

import os

import numpy as np

# Percentiles used to window 16-bit and float images down to 8 bits.
WINDOW_PERCENTILES = (0.5, 99.5)


class ImageReadError(ValueError):
    """A file that cannot be used as an image; the message is one line."""

    def __init__(self, path: str | os.PathLike, reason: str, advice: str):
        self.path, self.reason = str(path), reason
        super().__init__(f"{path}: {reason}; {advice}")


def first_line(err: BaseException) -> str:
    """An exception's message cut to its first line (its type's name when empty): error rows stay one line."""
    text = str(err).strip() or type(err).__name__
    return text.splitlines()[0]


def window(values: np.ndarray, low: float, high: float) -> np.ndarray:
    """Linear map of [low, high] to 0..255, clipped, as uint8 (an empty window is widened to one level)."""
    high = high if high > low else low + 1.0
    return np.clip(np.rint((values - low) * (255.0 / (high - low))), 0, 255).astype(np.uint8)
