"""Enhance a cleaned slice: a configurable chain of denoising and contrast steps.

Why: later stages (clustering, candidate detection, features) look for a
tumour as a region that differs from the brain around it. Enhancement should
widen that difference relative to the brain's own variation, which is what
`tumour_cnr` measures, without smearing edges away (`contrast_stats`). Which
steps help is a question for measurement, not taste: bench/bench_enhance.py
--choose scores candidate chains on real slices with true tumour masks, and
DEFAULT_CHAIN records the winner and its numbers.

Every step is `step(image, head) -> image`: uint8 grey in, uint8 grey out,
same shape; `head` is the bool head mask from `lib.preprocess.clean.head_mask`. A chain
is a tuple of step names, parsed from text like "nlmeans,musica" so stage
scripts can take it as an option. `enhance` runs a chain and sets the
background outside the head to exactly 0.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from functools import cache

import cv2
import numpy as np

from lib.preprocess.musica import musica

# --- parameters ------------------------------------------------------------------

# CLAHE (contrast-limited adaptive histogram equalisation). Clip limit: how far
# a tile's histogram may be stretched; higher gives more local contrast and
# more amplified noise. Tiles: grid per side; more tiles = more local.
CLAHE_CLIP_LIMIT = 2.0
CLAHE_TILES = 8
# Gaussian blur sigma in pixels: larger removes more noise and more fine detail.
GAUSSIAN_SIGMA = 0.8
# Bilateral filter: neighbourhood diameter (px), and the grey-level sigma below
# which neighbours are averaged (edges steeper than that are kept).
BILATERAL_DIAMETER = 5
BILATERAL_SIGMA_GREY = 20.0
BILATERAL_SIGMA_SPACE = 2.0
# Non-local means: filter strength h (grey levels; higher removes more noise and
# more texture); patch and search window sides in px. The search window sets the
# cost (quadratic); 21 is OpenCV's default, 11 is about three times faster.
NLMEANS_H = 5.0
NLMEANS_PATCH = 7
NLMEANS_SEARCH = 11
# Unsharp mask: sigma of the blur whose difference is added back (px; the size of
# detail sharpened) and the amount added (0 = no change).
UNSHARP_SIGMA = 2.0
UNSHARP_AMOUNT = 0.7

# Edge strength is measured this many px inside the head's outline, so the step
# from head to black background (the largest edge in the slice) never counts.
EDGE_MARGIN_PX = 4
# Tumour CNR compares the tumour with a ring of brain around it: the ring starts
# RING_GAP_PX outside the tumour (skipping the blurred border, which belongs to
# neither) and is RING_WIDTH_PX wide.
RING_GAP_PX = 2
RING_WIDTH_PX = 8

Step = Callable[[np.ndarray, np.ndarray], np.ndarray]


# --- steps -----------------------------------------------------------------------


@cache
def _clahe() -> cv2.CLAHE:
    """One CLAHE object per process (creating it costs more than applying it at 256 px)."""
    return cv2.createCLAHE(clipLimit=CLAHE_CLIP_LIMIT, tileGridSize=(CLAHE_TILES, CLAHE_TILES))


def clahe(image: np.ndarray, head: np.ndarray) -> np.ndarray:
    """Local histogram equalisation: lifts contrast in flat, dim regions."""
    return _clahe().apply(image)


def gaussian(image: np.ndarray, head: np.ndarray) -> np.ndarray:
    """Light Gaussian blur: removes pixel noise and JPEG grain before amplification."""
    return cv2.GaussianBlur(image, (0, 0), GAUSSIAN_SIGMA)


def bilateral(image: np.ndarray, head: np.ndarray) -> np.ndarray:
    """Edge-preserving smoothing: averages only neighbours of similar grey."""
    return cv2.bilateralFilter(image, BILATERAL_DIAMETER, BILATERAL_SIGMA_GREY, BILATERAL_SIGMA_SPACE)


def nlmeans(image: np.ndarray, head: np.ndarray) -> np.ndarray:
    """Non-local means: averages similar patches; keeps texture and edges, the slowest step."""
    return cv2.fastNlMeansDenoising(image, None, NLMEANS_H, NLMEANS_PATCH, NLMEANS_SEARCH)


def unsharp(image: np.ndarray, head: np.ndarray) -> np.ndarray:
    """Unsharp mask: image + amount * (image - blurred), saturated to 0..255."""
    blurred = cv2.GaussianBlur(image, (0, 0), UNSHARP_SIGMA)
    return cv2.addWeighted(image, 1.0 + UNSHARP_AMOUNT, blurred, -UNSHARP_AMOUNT, 0)


def musica_step(image: np.ndarray, head: np.ndarray) -> np.ndarray:
    """MUSICA with its default levels, gains and power (see lib.preprocess.musica)."""
    return musica(image, head)


STEPS: dict[str, Step] = {
    "clahe": clahe,
    "gaussian": gaussian,
    "bilateral": bilateral,
    "nlmeans": nlmeans,
    "unsharp": unsharp,
    "musica": musica_step,
}

# Chosen by `python bench/bench_enhance.py --choose` (bench/results/enhance_chains.json):
# the best median tumour-CNR gain on 600 figshare T1-CE slices among chains that
# reach 200 images/s on 2 processes. Medians: CNR gain over no enhancement on
# figshare / on 155 phantoms, edge strength (none: 8.7), share of head clipped:
#   gaussian,musica   x1.24 / x1.09, edge  9.2, clipped 5%, 865 images/s   <- chosen
#   bilateral,musica  x1.23 / x1.07, edge  9.6, clipped 6%
#   nlmeans,musica    x1.22 / x1.07, edge  9.8, clipped 6%, 23 images/s: too slow
#   musica            x1.20 / x1.07, edge 10.4, clipped 6%
#   musica,clahe      x1.13 / x0.97, edge 16.0 (CLAHE lifts noise as much as tumour)
#   gaussian          x1.08 / x1.03, edge  6.9 (smoothing alone loses edges)
#   clahe x0.97, unsharp x0.85: they raise the ring's variation more than the tumour's contrast.
# The light blur takes the pixel noise that MUSICA's power law would lift, for
# about 0.2 ms of the chain's ~1 ms per slice (speed: bench/results/enhance.json).
DEFAULT_CHAIN: tuple[str, ...] = ("gaussian", "musica")


# --- chains ----------------------------------------------------------------------


def parse_chain(text: str) -> tuple[str, ...]:
    """'nlmeans,musica' -> ('nlmeans', 'musica'); 'none' -> (). ValueError names an unknown step."""
    names = tuple(part.strip().lower() for part in text.split(","))
    return () if names == ("none",) else check_chain(names)


def check_chain(chain: Sequence[str]) -> tuple[str, ...]:
    """The chain as a tuple, or ValueError naming the first unknown step and listing the known ones."""
    for name in chain:
        if name not in STEPS:
            what = f"unknown enhancement step {name!r}" if name else "empty step name"
            raise ValueError(f"{what}; known steps: {', '.join(STEPS)} (or 'none' for no enhancement)")
    return tuple(chain)


def enhance(image: np.ndarray, head: np.ndarray, chain: Sequence[str] = DEFAULT_CHAIN) -> np.ndarray:
    """Run the steps of `chain` in order; the background outside `head` ends at exactly 0."""
    if image.dtype != np.uint8 or image.ndim != 2:
        raise ValueError(f"enhance needs a uint8 grey 2D image, got {image.dtype} {image.shape}")
    if head.shape != image.shape:
        raise ValueError(f"head mask {head.shape} does not match the image {image.shape}")
    out = image
    for name in check_chain(chain):
        out = STEPS[name](out, head)
    out = out.copy() if out is image else out
    out[~head.astype(bool)] = 0
    return out


# --- measures --------------------------------------------------------------------


def _disk(radius: int) -> np.ndarray:
    return cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * radius + 1, 2 * radius + 1))


def contrast_stats(image: np.ndarray, head: np.ndarray) -> dict[str, float]:
    """How much contrast a slice has inside the head.

    rms_contrast: std / mean of the grey inside the head (global contrast).
    edge_strength: mean Sobel gradient magnitude, in grey levels per pixel, at
        least EDGE_MARGIN_PX inside the head's outline (local contrast of the
        anatomy; the outline itself does not count).
    clipped: share of head pixels at 0 or 255 (detail lost to saturation).
    """
    head = head.astype(bool, copy=False)
    values = image[head].astype(np.float32)
    mean = float(values.mean()) if values.size else 0.0
    inner = cv2.erode(head.astype(np.uint8), _disk(EDGE_MARGIN_PX)) > 0
    # Sobel's 3x3 kernels weigh a unit slope 8 times; back to grey levels per pixel.
    slope = cv2.magnitude(cv2.Sobel(image, cv2.CV_32F, 1, 0), cv2.Sobel(image, cv2.CV_32F, 0, 1)) / 8
    return {
        "rms_contrast": float(values.std() / mean) if mean > 0 else 0.0,
        "edge_strength": float(slope[inner].mean()) if inner.any() else 0.0,
        "clipped": float(np.mean((values == 0) | (values == 255))) if values.size else 0.0,
    }


def tumour_ring(tumour: np.ndarray, head: np.ndarray) -> np.ndarray:
    """Bool ring of tissue RING_GAP_PX to RING_GAP_PX + RING_WIDTH_PX outside the tumour, inside the head."""
    mask = tumour.astype(np.uint8)
    inner = cv2.dilate(mask, _disk(RING_GAP_PX)) > 0
    outer = cv2.dilate(mask, _disk(RING_GAP_PX + RING_WIDTH_PX)) > 0
    return outer & ~inner & head


def tumour_cnr(image: np.ndarray, tumour: np.ndarray, head: np.ndarray) -> float:
    """Contrast-to-noise ratio |mean tumour - mean ring| / std ring; nan when undefined.

    The ring's std is the brain's own variation (noise and anatomy) that a
    tumour must stand out from; smoothing lowers it, amplification raises
    both the numerator and it. Nan for an empty tumour or ring, or a flat ring.
    """
    head = head.astype(bool, copy=False)
    tumour = tumour.astype(bool, copy=False) & head
    ring = tumour_ring(tumour, head)
    if not tumour.any() or np.count_nonzero(ring) < 2:
        return float("nan")
    ring_values = image[ring].astype(np.float32)
    spread = float(ring_values.std())
    if spread == 0:
        return float("nan")
    return abs(float(image[tumour].astype(np.float32).mean()) - float(ring_values.mean())) / spread
