"""How close a predicted tumour mask is to the true one: Dice, IoU, HD95, and detection terms.

Why three overlap numbers: Dice and IoU reward the bulk of the tumour and
barely notice a stray island far away; the 95th-percentile Hausdorff distance
(HD95, in pixels) is the one that does. Per image, not pooled over pixels, so a
small tumour counts as much as a large one.

Conventions (those of MedPy and the BraTS/MSD challenges):
- both masks empty (no tumour, none predicted): Dice = IoU = 1, HD95 = 0;
- one empty, the other not: Dice = IoU = 0, HD95 undefined (NaN), and the
  image counts in the detection terms as a miss or a false positive.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy import ndimage

from lib.common import metrics


def _bool(mask: np.ndarray) -> np.ndarray:
    mask = np.asarray(mask)
    return mask > (127 if mask.dtype == np.uint8 and mask.max() > 1 else 0)


def dice(pred: np.ndarray, truth: np.ndarray) -> float:
    """2 |P & T| / (|P| + |T|); 1 when both are empty."""
    p, t = _bool(pred), _bool(truth)
    total = int(p.sum()) + int(t.sum())
    return 1.0 if total == 0 else 2.0 * int((p & t).sum()) / total


def iou(pred: np.ndarray, truth: np.ndarray) -> float:
    """|P & T| / |P | T|; 1 when both are empty."""
    p, t = _bool(pred), _bool(truth)
    union = int((p | t).sum())
    return 1.0 if union == 0 else int((p & t).sum()) / union


def _surface(mask: np.ndarray) -> np.ndarray:
    """Boundary pixels: in the mask, with a 4-neighbour outside it (or on the image edge)."""
    return mask & ~ndimage.binary_erosion(mask, border_value=0)


def hd95(pred: np.ndarray, truth: np.ndarray, spacing: float = 1.0) -> float:
    """95th-percentile symmetric Hausdorff distance between the two boundaries (pixels x spacing).

    The larger of the two directed 95th percentiles, as MedPy's hd95.
    """
    p, t = _bool(pred), _bool(truth)
    if not p.any() and not t.any():
        return 0.0
    if not p.any() or not t.any():
        return float("nan")
    sp, st = _surface(p), _surface(t)
    to_t = ndimage.distance_transform_edt(~st, sampling=spacing)[sp]
    to_p = ndimage.distance_transform_edt(~sp, sampling=spacing)[st]
    return float(max(np.percentile(to_t, 95), np.percentile(to_p, 95)))


def score(pred: np.ndarray, truth: np.ndarray) -> dict[str, float]:
    """Every per-image number at once."""
    p, t = _bool(pred), _bool(truth)
    return {"dice": dice(p, t), "iou": iou(p, t), "hd95": hd95(p, t),
            "true_pixels": int(t.sum()), "pred_pixels": int(p.sum())}


def summary(per_image: pd.DataFrame) -> dict[str, float | int | tuple[float, float]]:
    """Means over images with a true tumour (the Dice mean with its bootstrap interval,
    `dice_ci`), plus detection terms over all images.

    `per_image` has the columns of `score` (one row per image). Tumour-free
    images enter only the detection terms: a predicted mask there is a false
    positive, an empty prediction on a tumour a miss.
    """
    tumour = per_image["true_pixels"] > 0
    found = per_image["pred_pixels"] > 0
    on_tumour = per_image[tumour]
    out = {
        "images": int(len(per_image)),
        "tumour_images": int(tumour.sum()),
        "dice_mean": float(on_tumour["dice"].mean()) if len(on_tumour) else float("nan"),
        "dice_ci": dice_interval(on_tumour["dice"]),
        "dice_median": float(on_tumour["dice"].median()) if len(on_tumour) else float("nan"),
        "iou_mean": float(on_tumour["iou"].mean()) if len(on_tumour) else float("nan"),
        "hd95_median": float(on_tumour["hd95"].median()) if len(on_tumour) else float("nan"),
        "missed": int((tumour & ~found).sum()),
        "false_positive_images": int((~tumour & found).sum()),
        "tumour_free_images": int((~tumour).sum()),
    }
    return out


def dice_interval(dice_per_image: pd.Series | np.ndarray) -> tuple[float, float]:
    """Bootstrap 95 % interval of the mean Dice, resampling images.

    Why: on a test part of ~90 slices a handful of hard slices moves the mean by
    several points (figshare: four glioma slices of one patient, where the
    fine-tuned LiteMedSAM marks other tissue, cost it 0.04), so a mean alone
    invites reading too much into a 0.01 gain.
    Neighbouring slices of one patient are correlated, so the true interval is,
    if anything, wider.
    """
    values = np.asarray(dice_per_image, float)
    if len(values) == 0:
        return float("nan"), float("nan")
    return metrics.bootstrap_interval(np.ones(len(values), bool), values, lambda _, v: float(v.mean()))
