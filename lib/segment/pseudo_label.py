"""From a SAM answer to a pseudo-label: choose a mask, clean it, score it, accept or reject it.

Why each step:
- SAM may return several masks per prompt; the one with the best predicted
  IoU is kept (lib.segment.segmenters sorts them).
- A tumour on one slice is one blob, filled, inside the head: cleanup keeps
  the largest connected component, fills its holes (necrotic cores read dark
  and SAM sometimes leaves them out) and cuts it to the head mask.
- Quality = SAM's predicted IoU x the share of the mask that survived
  cleanup x how well the mask fills its prompt box (a tumour fills much of a
  tight box; a sliver or a mask spilling far outside the box is suspect).
  Pseudo-labels below `min_quality` are rejected, with the reason recorded,
  so the U-Net never trains on them and nobody mistakes them for accepted.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np
from scipy import ndimage

from lib.regions.candidates import Box, mask_box

# Below MIN_QUALITY a pseudo-label is rejected. Figshare, 07 --prompt auto, 600 slices (Dice of the
# labels kept): quality >= 0.3 keeps 512 at 0.620, >= 0.5 450 at 0.666, >= 0.7 329 at 0.732.
MIN_QUALITY = 0.5
MIN_PIXELS = 16  # smaller masks are noise at 256 px
MAX_HEAD_SHARE = 0.5  # a "tumour" over half the head is a failed prompt


@dataclass
class PseudoLabel:
    mask: np.ndarray  # bool (H, W), cleaned
    sam_score: float  # the segmenter's own score of the chosen mask
    quality: float  # in [0, 1]; see the module docstring
    status: str  # "accepted" or "rejected"
    reason: str  # why, in a few words


def largest_component(mask: np.ndarray) -> np.ndarray:
    """The biggest 8-connected blob of a bool mask (empty stays empty)."""
    count, labels, stats, _ = cv2.connectedComponentsWithStats(mask.astype(np.uint8), connectivity=8)
    if count <= 1:
        return np.zeros_like(mask, dtype=bool)
    biggest = 1 + int(np.argmax(stats[1:, cv2.CC_STAT_AREA]))
    return labels == biggest


def blob_box(mask: np.ndarray) -> Box | None:
    """SAM's prompt box from a network's mask: the box of its largest blob (None when empty).

    Why the largest blob and not the whole mask: a speck elsewhere would stretch the box over
    healthy tissue. Used by 07 --prompt unet (self-training) and by `refine`."""
    return mask_box(largest_component(np.asarray(mask, dtype=bool)))


def cleanup(mask: np.ndarray, head: np.ndarray | None = None) -> np.ndarray:
    """Inside the head, largest component, holes filled."""
    mask = np.asarray(mask, dtype=bool)
    if head is not None:
        mask = mask & np.asarray(head, dtype=bool)
    return ndimage.binary_fill_holes(largest_component(mask))


def box_fill(mask: np.ndarray, box: Sequence[float]) -> float:
    """Agreement of mask and box: share of the mask inside the box x share of the box the mask fills,
    the latter divided by pi/4 (an ellipse filling its box scores 1) and capped at 1."""
    area = int(mask.sum())
    if area == 0:
        return 0.0
    x0, y0, x1, y1 = (int(round(v)) for v in box)
    x0, y0 = max(x0, 0), max(y0, 0)
    inside = int(mask[y0:max(y1, y0), x0:max(x1, x0)].sum())
    box_area = max((x1 - x0) * (y1 - y0), 1)
    return (inside / area) * min(inside / box_area / (np.pi / 4), 1.0)


def label(masks: np.ndarray, scores: np.ndarray, box: Sequence[float], head: np.ndarray | None = None,
          min_quality: float = MIN_QUALITY) -> PseudoLabel:
    """The pseudo-label of one prompt's SAM answer (masks best first, as lib.segment.segmenters returns them)."""
    raw = np.asarray(masks[0], dtype=bool)
    score = float(scores[0])
    mask = cleanup(raw, head)
    kept = mask.sum() / raw.sum() if raw.any() else 0.0
    quality = float(np.clip(score, 0, 1) * min(kept, 1.0) * box_fill(mask, box))
    head_area = int(np.asarray(head, bool).sum()) if head is not None else mask.size
    if mask.sum() < MIN_PIXELS:
        return PseudoLabel(mask, score, quality, "rejected", f"mask of {int(mask.sum())} px after cleanup")
    if mask.sum() > MAX_HEAD_SHARE * head_area:
        return PseudoLabel(mask, score, quality, "rejected", f"mask covers {mask.sum() / head_area:.0%} of the head")
    if quality < min_quality:
        return PseudoLabel(mask, score, quality, "rejected", f"quality {quality:.2f} < {min_quality}")
    return PseudoLabel(mask, score, quality, "accepted", f"quality {quality:.2f}")


def refine(segmenter: Any, image: np.ndarray, mask: np.ndarray, head: np.ndarray | None = None,
           min_quality: float = MIN_QUALITY) -> tuple[np.ndarray, PseudoLabel | None]:
    """A trained network's mask redrawn by SAM, prompted with the box of the mask's largest blob.

    Why: a network trained from scratch on a few hundred slices finds most tumours but draws their
    borders loosely, while LiteMedSAM given a tight box draws them well (0.91 mean Dice with true
    boxes on figshare). SAM's outline is kept only when it passes the same check as a pseudo-label
    (`label`); otherwise the network's own mask stays. `segmenter` is any lib.segment.segmenters engine.
    Measured on figshare's test part: Keras U-Net 0.658 -> 0.693; the fine-tuned LiteMedSAM
    (08 litemedsam), whose borders are already SAM's, -0.02 to +0.006.
    Returns (the mask to use, SAM's pseudo-label or None when the network drew nothing).
    """
    mask = np.asarray(mask, dtype=bool)
    box = blob_box(mask)
    if box is None:
        return mask, None
    masks, scores = segmenter.predict(image, box=box)
    result = label(masks, scores, box, head, min_quality)
    return (result.mask if result.status == "accepted" else mask), result
