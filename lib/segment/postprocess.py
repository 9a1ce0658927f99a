"""Masks cleaned of specks: connected parts smaller than `min_area` pixels are dropped.

Why: a segmenter trained on few tumours marks small bright spots (vessels, fat,
the pituitary gland) on tumour-free slices, and such a mask makes the demo show a
tumour the classifier denies. How small a part may be is chosen on the validation
slices (choose_min_area): each slice's Dice with the BraTS convention of
lib.segment.mask_metrics (a tumour-free slice scores 1 when its mask stays empty,
0 otherwise), so dropping specks is paid for only where it costs real tumours.
"""

from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np

from lib.segment import mask_metrics

MIN_AREAS = (0, 16, 32, 64, 128, 256, 512)  # pixels of the clean slice (256 px square by default)
TOLERANCE = 0.005  # a larger min_area within this of the best validation score wins: fewer specks, same Dice


def drop_small(mask: np.ndarray, min_area: int) -> np.ndarray:
    """`mask` (bool) without its 8-connected parts of fewer than `min_area` pixels."""
    mask = np.asarray(mask, bool)
    if min_area <= 0 or not mask.any():
        return mask
    count, labels, stats, _ = cv2.connectedComponentsWithStats(mask.astype(np.uint8), connectivity=8)
    keep = stats[:, cv2.CC_STAT_AREA] >= min_area
    keep[0] = False
    return keep[labels]


def choose_min_area(masks: Sequence[np.ndarray], truths: Sequence[np.ndarray],
                    areas: Sequence[int] = MIN_AREAS) -> tuple[int, dict[int, float]]:
    """(the min_area to use, mean validation Dice per candidate area): the largest area within TOLERANCE of
    the best: on a tumour-free slice a speck is all that can go wrong."""
    scores = {int(a): float(np.mean([mask_metrics.dice(drop_small(m, a), t) for m, t in zip(masks, truths)]))
              for a in areas}
    best = max(scores.values())
    return max(a for a, s in scores.items() if s >= best - TOLERANCE), scores
