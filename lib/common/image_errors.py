"""What every image reader shares: the one-line error and the robust window.

Why a module of its own: lib.common.io (photos, PNG, TIFF) and lib.common.scanner_files (DICOM, NIfTI)
both raise ImageReadError and window high-bit-depth values the same way, and io hands scanner files to
scanner_files; with these here, neither has to import the other's module at load time.
"""

from __future__ import annotations

import os

# Percentiles used to window 16-bit and float images down to 8 bits.
WINDOW_PERCENTILES = (0.5, 99.5)


class ImageReadError(ValueError):
    """A file that cannot be used as an image; the message is one line."""

    def __init__(self, path: str | os.PathLike, reason: str, advice: str):
        self.path, self.reason = str(path), reason
        super().__init__(f"{path}: {reason}; {advice}")
