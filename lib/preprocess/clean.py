"""Clean up a 2D brain MRI slice and crop it to the head.

Why: public MRI collections are screenshots as much as scans. Heads sit on
white pages or inside white frames, corners carry burned-in letters and
rulers, lighting is uneven, and sizes run from 150 px to 1920x1080. A model
fed such images learns the packaging. This module turns each one into the same
thing, an 8-bit grey square `size` pixels a side holding the head and little
else, and records what it had to fix.

Steps, in order:

1. Cleanup: thin white lines along the edges (a frame) are blacked out, a
   white page around the head becomes black; once the head is known, small
   marks clear of it (text, letters, rulers, grey edge lines) are erased.
   Each fix adds a flag.
2. Head mask, on a copy whose longest side is WORK_SIZE (for speed). 'hard'
   mode is a two-level Otsu threshold, right for evenly lit slices; 'soft'
   mode keeps pixels brighter than their local mean (an adaptive threshold),
   right for uneven lighting. Hard is tried first; when its mask is not
   head-shaped (low solidity: a broken rim, a bite out of the head) or its
   outline does not run along real edges (it cut through shading or a dim
   rectangle behind the slice), soft takes over. The reason is kept, with
   the measured quantity.
3. Crop box: the head's bounding box plus PAD_FRACTION of the head size, in
   source pixels. Losing brain is worse than keeping background, so every
   rounding goes outwards.
4. One geometric step, `warp_to_square`: cut the square around the crop box
   (black outside the image) and resize it to `size`. Masks go through the
   same function with nearest-neighbour sampling, so they line up exactly.
5. Optional morphological skull stripping: peel the bright rim off the head.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from lib.common.io import to_grey

# --- parameters ------------------------------------------------------------------

# The head is searched on a copy whose longest side is at most this. Larger is
# slower; smaller loses thin dark gaps and makes the box coarser (it is still
# rounded outwards, so coarser means a little more background, never less head).
WORK_SIZE = 256
# Output side in pixels when the caller does not say.
DEFAULT_SIZE = 256

# Grey level from which a pixel counts as white (pages, frames).
WHITE_LEVEL = 200
# A frame line is a row/column that is set over at least this share of its length ...
FRAME_LINE_FILL = 0.7
# ... found within this share of the side from the edge ...
FRAME_SEARCH = 0.08
# ... after a black margin of at most this share of the side ...
FRAME_MARGIN = 0.02
# ... at most this thick (share of the side; thicker white is a background) ...
FRAME_MAX_THICKNESS = 0.04
# ... and within FRAME_INSIDE_PX lines inside it, some line is set over at most
# FRAME_INSIDE_FILL of its length (a frame encloses a dark picture).
FRAME_INSIDE_PX = 3
FRAME_INSIDE_FILL = 0.3
# Pixels blacked out just inside a frame (JPEG ringing beside the line).
FRAME_EXTRA_PX = 1
# Border band, as a share of the shorter side: where background is sampled and
# where a white page must sit.
BORDER_BAND = 0.03
# A white page fills at least this share of the border band ...
WHITE_BG_MIN_BORDER_SHARE = 0.2
# ... its regions that reach the band cover at least this share of the image ...
WHITE_BG_MIN_AREA = 0.03
# ... and their median grey is at least this (paper is flat white; bright
# tissue that reaches the border is darker and textured).
PAGE_LEVEL = 230

# Gaussian sigma (work pixels) before thresholding: JPEG noise must not split the head.
BLUR_SIGMA = 1.5
# Foreground lies above the background level (this percentile of the border
# band) plus FLOOR_SHARE of the range from there to the brightest tissue.
BACKGROUND_PERCENTILE = 25
FLOOR_SHARE = 0.05
# Soft mode: a pixel is foreground when brighter than the mean over a window of
# LOCAL_WINDOW of the work side by SOFT_OFFSET of the image's grey range.
LOCAL_WINDOW = 0.25
SOFT_OFFSET = 0.03
# Closing radius as a share of the head's size: bridges breaks in the rim of
# the head; larger also glues nearby text and rulers onto it.
CLOSE_FRACTION = 0.03
# Hard mode is trusted when its filled mask is at least this solid (area / hull area) ...
SOLIDITY_MIN = 0.80
# ... and at least this share of its outline lies on an edge steeper than
# EDGE_SLOPE of the grey range per pixel (not on smooth shading).
EDGE_SUPPORT_MIN = 0.6
EDGE_SLOPE = 0.02
# Smallest head, as a share of the image; less than that is "no head found".
MIN_HEAD_AREA = 0.01
# The head touches the border when it covers at least this share of an edge.
TOUCH_SHARE = 0.02

# Padding on each side of the head box, as a share of the head's longer side.
PAD_FRACTION = 0.05

# Marks: foreground regions farther than MARK_GAP (share of the head size) from
# the head's convex hull and smaller than MARK_MAX_AREA of the head area.
MARK_GAP = 0.01
MARK_MAX_AREA = 0.10
# Erased marks must cover at least this many work pixels to count as text.
TEXT_MIN_PIXELS = 12

# Skull stripping: the rim searched for scalp and skull, as a share of the
# head's equivalent radius, and the opening radius that detaches leftovers.
STRIP_RIM = 0.15
STRIP_OPEN = 0.03
# The brain must keep between these shares of the head, else the head is eroded instead.
STRIP_KEEP = (0.35, 0.95)

FLAGS = (
    "white_background", "white_frame", "text_removed",
    "skull_stripped", "no_head_found", "head_touches_border",
)

Box = tuple[int, int, int, int]


@dataclass
class CleanResult:
    """A cleaned square slice and what is needed to map masks onto it."""

    image: np.ndarray  # uint8 grey, size x size
    crop_box: Box  # x0 y0 x1 y1 (x1, y1 exclusive) in source pixels, clipped to the image
    square_box: Box  # square around crop_box's centre, source pixels, may extend past the image
    crop_mode: str  # 'hard' or 'soft'
    crop_reason: str  # why that mode, with the measured quantity
    flags: list[str]  # among FLAGS, in FLAGS order
    head_mask: np.ndarray  # bool, source size: the head region found (after cleanup)


# --- geometry --------------------------------------------------------------------


def warp_to_square(array: np.ndarray, square_box: Box, size: int, interpolation: int) -> np.ndarray:
    """Cut `square_box` out of `array` (black outside the source) and resize to size x size.

    The one geometric step of this module: the image goes through it with
    INTER_AREA, masks with nearest-neighbour, so both land on the same pixels.
    """
    if array.dtype == bool:
        return warp_to_square(array.astype(np.uint8), square_box, size, interpolation) > 0
    x0, y0, x1, y1 = square_box
    height, width = array.shape[:2]
    cx0, cy0, cx1, cy1 = max(x0, 0), max(y0, 0), min(x1, width), min(y1, height)
    if cx1 <= cx0 or cy1 <= cy0:
        return np.zeros((size, size) + array.shape[2:], dtype=array.dtype)
    square = cv2.copyMakeBorder(
        array[cy0:cy1, cx0:cx1], cy0 - y0, y1 - cy1, cx0 - x0, x1 - cx1, cv2.BORDER_CONSTANT, value=0
    )
    if square.shape[:2] == (size, size):
        return square
    return cv2.resize(square, (size, size), interpolation=interpolation)


def warp_mask(mask: np.ndarray, square_box: Box, size: int) -> np.ndarray:
    """Bool mask in source pixels -> bool mask on the size x size output.

    INTER_NEAREST_EXACT samples pixel centres, as INTER_AREA does for the image;
    plain INTER_NEAREST would shift the mask by up to one source pixel.
    """
    warped = warp_to_square(mask.astype(np.uint8), square_box, size, cv2.INTER_NEAREST_EXACT)
    return warped > 0


def unwarp_mask(mask: np.ndarray, square_box: Box, source_shape: tuple[int, int]) -> np.ndarray:
    """Map a size x size mask back to source pixels (nearest); inverse of warp_mask up to resampling."""
    x0, y0, x1, y1 = square_box
    height, width = source_shape[:2]
    square = mask.astype(np.uint8)
    if square.shape[:2] != (y1 - y0, x1 - x0):
        square = cv2.resize(square, (x1 - x0, y1 - y0), interpolation=cv2.INTER_NEAREST_EXACT)
    out = np.zeros((height, width), dtype=bool)
    cx0, cy0, cx1, cy1 = max(x0, 0), max(y0, 0), min(x1, width), min(y1, height)
    if cx1 > cx0 and cy1 > cy0:
        out[cy0:cy1, cx0:cx1] = square[cy0 - y0 : cy1 - y0, cx0 - x0 : cx1 - x0] > 0
    return out


def square_around(box: Box) -> Box:
    """The square with the same centre as `box` and its longer side."""
    x0, y0, x1, y1 = box
    side = max(x1 - x0, y1 - y0, 1)
    sx0, sy0 = (x0 + x1 - side) // 2, (y0 + y1 - side) // 2
    return sx0, sy0, sx0 + side, sy0 + side


# --- cleanup before the head is known ---------------------------------------------


def remove_white_frame(grey: np.ndarray) -> bool:
    """Black out thin white lines along the image edges, in place; True if any.

    Everything from the edge to just inside the line goes. Wide white bands
    are left to `remove_white_background`.
    """
    depths = edge_line_depths(grey >= WHITE_LEVEL)
    black_out_edges(grey, depths)
    return any(depths)


def edge_line_depths(binary: np.ndarray) -> tuple[int, int, int, int]:
    """Depth in pixels (top, bottom, left, right) of a thin line along each edge; 0 for none."""
    on = binary.astype(np.uint8)
    rows = cv2.reduce(on, 1, cv2.REDUCE_AVG, dtype=cv2.CV_32F).ravel()
    cols = cv2.reduce(on, 0, cv2.REDUCE_AVG, dtype=cv2.CV_32F).ravel()
    return _line_depth(rows), _line_depth(rows[::-1]), _line_depth(cols), _line_depth(cols[::-1])


def _line_depth(fill: np.ndarray) -> int:
    """Pixels to black out from one edge; `fill` is the share set in each line, edge first.

    A head that touches the edge is not a line: it is not set over most of a
    row, or it is not followed by an almost empty line.
    """
    side = len(fill)
    lines = np.flatnonzero(fill[: max(3, int(round(FRAME_SEARCH * side)))] >= FRAME_LINE_FILL)
    if len(lines) == 0 or lines[0] > max(2, FRAME_MARGIN * side):
        return 0
    end = lines[0]
    while end + 1 < side and fill[end + 1] >= FRAME_LINE_FILL:
        end += 1
    too_thick = end - lines[0] + 1 > max(2, FRAME_MAX_THICKNESS * side)
    inside = fill[end + 1 : end + 1 + FRAME_INSIDE_PX]
    if too_thick or len(inside) == 0 or inside.min() > FRAME_INSIDE_FILL:
        return 0
    return int(end + 1 + FRAME_EXTRA_PX)


def black_out_edges(array: np.ndarray, depths: tuple[int, int, int, int]) -> None:
    """Set `depths` (top, bottom, left, right) pixels along each edge to 0, in place."""
    top, bottom, left, right = depths
    height, width = array.shape[:2]
    array[:top] = 0
    array[height - bottom :] = 0
    array[:, :left] = 0
    array[:, width - right :] = 0


def border_band(array: np.ndarray) -> np.ndarray:
    """Pixels within BORDER_BAND of the edges, flattened (corners counted twice)."""
    band = max(2, int(round(BORDER_BAND * min(array.shape[:2]))))
    parts = (array[:band], array[-band:], array[:, :band], array[:, -band:])
    return np.concatenate([part.ravel() for part in parts])


def remove_white_background(grey: np.ndarray) -> bool:
    """Turn large white regions that reach the border band black, in place; True if any.

    MRI background is black; a white page around the head would be read as
    tissue by every later step. The cheap border test comes first, so most
    images pay almost nothing.
    """
    white = grey >= WHITE_LEVEL
    if border_band(white).mean() < WHITE_BG_MIN_BORDER_SHARE:
        return False
    height, width = grey.shape
    band = max(2, int(round(BORDER_BAND * min(height, width))))
    count, labels, stats, _ = cv2.connectedComponentsWithStats(white.astype(np.uint8), connectivity=4)
    x, y, w, h = (stats[:, i] for i in range(4))
    page = (x < band) | (y < band) | (x + w > width - band) | (y + h > height - band)
    page[0] = False
    if stats[page, cv2.CC_STAT_AREA].sum() < WHITE_BG_MIN_AREA * height * width:
        return False
    background = page[labels]
    if np.median(grey[background]) < PAGE_LEVEL:
        return False
    # JPEG ringing leaves a light seam along the page edge; take it too.
    seam = cv2.dilate(background.astype(np.uint8), np.ones((3, 3), np.uint8)) > 0
    grey[background | (seam & (grey >= WHITE_LEVEL // 2))] = 0
    return True


# --- head mask -------------------------------------------------------------------


def _disk(radius: int) -> np.ndarray:
    return cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * radius + 1, 2 * radius + 1))


def _percentile(values: np.ndarray, percent: float) -> float:
    """Percentile of uint8 values from their histogram (much faster than np.percentile)."""
    hist = np.bincount(values.ravel(), minlength=256)
    return float(np.searchsorted(np.cumsum(hist), percent / 100.0 * values.size))


def background_floor(blurred: np.ndarray) -> float:
    """Grey level just above the background, which is sampled on the border band."""
    background = _percentile(border_band(blurred), BACKGROUND_PERCENTILE)
    top = _percentile(blurred, 99.5)
    return background + FLOOR_SHARE * max(top - background, 1.0)


def hard_foreground(blurred: np.ndarray) -> np.ndarray:
    """Two-level Otsu threshold: for evenly lit slices.

    Otsu's level on a whole slice splits dark from bright tissue; Otsu again
    on the pixels below it splits background from dark tissue.
    """
    level, _ = cv2.threshold(blurred, 0, 255, cv2.THRESH_BINARY + cv2.THRESH_OTSU)
    darker = blurred[blurred <= level].reshape(-1, 1)
    low, _ = cv2.threshold(darker, 0, 255, cv2.THRESH_BINARY + cv2.THRESH_OTSU)
    return blurred > max(low, background_floor(blurred))


def soft_foreground(blurred: np.ndarray, hard: np.ndarray) -> np.ndarray:
    """Local-contrast (adaptive) threshold: for uneven lighting.

    A pixel is foreground when it is brighter than the mean of its
    neighbourhood by SOFT_OFFSET of the range. Smooth shading (a bias field, a
    lit film, a grey rectangle behind the slice) never is; the head's edge
    always is. Where the hard mask meets the image edge, the outline is closed
    along that edge so a head cut by the border can still be filled.
    """
    window = max(3, int(LOCAL_WINDOW * max(blurred.shape)) | 1)
    local = cv2.boxFilter(blurred, cv2.CV_32F, (window, window), borderType=cv2.BORDER_REFLECT)
    offset = max(2.0, SOFT_OFFSET * (_percentile(blurred, 99.5) - _percentile(blurred, 0.5)))
    soft = blurred > local + offset
    for edge in (np.s_[0, :], np.s_[-1, :], np.s_[:, 0], np.s_[:, -1]):
        soft[edge] |= hard[edge]
    return soft


def edge_support(blurred: np.ndarray, head: np.ndarray) -> float:
    """Share of the head's outline (away from the image edge) that runs along a real edge.

    A threshold that cut through smooth shading or a dim rectangle behind the
    slice leaves an outline with no edge under it.
    """
    outline = head & (cv2.erode(head.astype(np.uint8), np.ones((3, 3), np.uint8)) == 0)
    outline[:2], outline[-2:], outline[:, :2], outline[:, -2:] = False, False, False, False
    if not outline.any():
        return 1.0
    # Sobel's 3x3 kernels weigh a unit slope 8 times; back to grey levels per pixel.
    slope = cv2.magnitude(cv2.Sobel(blurred, cv2.CV_32F, 1, 0), cv2.Sobel(blurred, cv2.CV_32F, 0, 1)) / 8
    strong = EDGE_SLOPE * (_percentile(blurred, 99.5) - _percentile(blurred, 0.5))
    return float((slope[outline] > strong).mean())


def largest_filled(
    foreground: np.ndarray, close_fraction: float = CLOSE_FRACTION
) -> tuple[np.ndarray, float]:
    """Largest region of `foreground`, gaps closed, holes filled; and its solidity.

    A 3x3 opening first drops specks and 1-2 px lines (rulers, text strokes).
    The closing, sized to the foreground, bridges breaks in the rim of the
    head; an opening as wide then cuts off what the closing glued on (a letter
    beside the skull) before the largest region is taken.
    """
    cleaned = cv2.morphologyEx(foreground.astype(np.uint8), cv2.MORPH_OPEN, np.ones((3, 3), np.uint8))
    radius = int(round(close_fraction * np.sqrt(np.count_nonzero(cleaned))))
    if radius > 0:
        cleaned = cv2.morphologyEx(cleaned, cv2.MORPH_CLOSE, _disk(radius))
        contours, _ = cv2.findContours(cleaned, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
        cleaned[:] = 0
        cv2.drawContours(cleaned, contours, -1, 1, thickness=cv2.FILLED)
        cleaned = cv2.morphologyEx(cleaned, cv2.MORPH_OPEN, _disk(radius))
    contours, _ = cv2.findContours(cleaned, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    filled = np.zeros(foreground.shape, np.uint8)
    if not contours:
        return filled > 0, 0.0
    biggest = max(contours, key=cv2.contourArea)
    cv2.drawContours(filled, [biggest], -1, 1, thickness=cv2.FILLED)
    hull_area = cv2.contourArea(cv2.convexHull(biggest))
    solidity = cv2.contourArea(biggest) / hull_area if hull_area > 0 else 0.0
    return filled > 0, float(solidity)


@dataclass
class HeadSearch:
    """What `find_head` saw on the work-size image."""

    head: np.ndarray  # bool, filled head region
    foreground: np.ndarray  # bool, hard-thresholded pixels (head, marks, noise): where marks are sought
    lines: tuple[int, int, int, int]  # thin lines along the edges (top, bottom, left, right depth)
    mode: str  # 'hard' or 'soft'
    reason: str


def find_head(small: np.ndarray) -> HeadSearch:
    """Head mask on the work-size grey image: hard mode, or soft when hard is not head-shaped.

    Thin straight lines along the border (a grey frame, a scale bar) are taken
    out of the foreground first, so the head cannot grow into them.
    """
    blurred = cv2.GaussianBlur(small, (0, 0), BLUR_SIGMA)
    min_area = MIN_HEAD_AREA * small.size
    hard = hard_foreground(blurred)
    lines = edge_line_depths(hard)
    black_out_edges(hard, lines)
    head, solidity = largest_filled(hard)
    area = np.count_nonzero(head)
    support = edge_support(blurred, head) if area else 0.0
    measured = f"otsu mask solidity {solidity:.2f}, edge support {support:.2f}"
    if area >= min_area and solidity >= SOLIDITY_MIN and support >= EDGE_SUPPORT_MIN:
        return HeadSearch(head, hard, lines, "hard", f"{measured} -> otsu")
    if area < min_area:
        why = f"otsu mask area {area / small.size:.3f} < {MIN_HEAD_AREA:.3f} of the image"
    elif solidity < SOLIDITY_MIN:
        why = f"otsu mask solidity {solidity:.2f} < {SOLIDITY_MIN:.2f}"
    else:
        why = f"otsu mask edge support {support:.2f} < {EDGE_SUPPORT_MIN:.2f}"
    soft = soft_foreground(blurred, hard)
    black_out_edges(soft, lines)
    soft_head, soft_solidity = largest_filled(soft)
    soft_area = np.count_nonzero(soft_head)
    if soft_area < min_area or (soft_solidity < SOLIDITY_MIN and soft_area < area):
        # The adaptive mask is no better: keep the larger, Otsu's.
        return HeadSearch(head, hard, lines, "hard", f"{why}; adaptive mask no better -> otsu")
    return HeadSearch(soft_head, hard, lines, "soft", f"{why} -> adaptive (solidity {soft_solidity:.2f})")


# --- cleanup once the head is known --------------------------------------------------


def find_marks(foreground: np.ndarray, head: np.ndarray) -> np.ndarray:
    """Small foreground regions clear of the head: burned-in text, letters, arrows.

    "Clear" is measured from the head's convex hull, so a head mask that
    missed a dark part of the head can never get that part erased.
    """
    contours, _ = cv2.findContours(head.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    hull = np.zeros(head.shape, np.uint8)
    cv2.fillPoly(hull, [cv2.convexHull(np.concatenate(contours))], 1)
    area = np.count_nonzero(head)
    gap = max(1, int(round(MARK_GAP * np.sqrt(area))))
    near_head = cv2.dilate(hull, _disk(gap)) > 0
    if not np.count_nonzero(foreground & ~near_head) >= TEXT_MIN_PIXELS:
        return np.zeros_like(head)
    count, labels, stats, _ = cv2.connectedComponentsWithStats(foreground.astype(np.uint8), connectivity=8)
    touching = np.bincount(labels[near_head], minlength=count) > 0
    marks = (stats[:, cv2.CC_STAT_AREA] < MARK_MAX_AREA * area) & ~touching
    marks[0] = False
    return marks[labels]


def erase_marks(grey: np.ndarray, small: np.ndarray, marks: np.ndarray, head: np.ndarray) -> None:
    """Paint the marks (work-size mask) over with the background around them, in place."""
    cover = cv2.dilate(marks.astype(np.uint8), _disk(2))
    ring = (cv2.dilate(cover, _disk(3)) > 0) & (cover == 0) & ~head
    level = int(np.median(small[ring])) if ring.any() else 0
    grey[_to_source(cover > 0, grey.shape)] = level


# --- skull stripping -------------------------------------------------------------


def strip_skull(small: np.ndarray, head: np.ndarray) -> np.ndarray:
    """Brain mask inside `head`: peel the rim (scalp, skull) off the head.

    Bright pixels within STRIP_RIM of the head's edge and connected to it are
    scalp or skull; so are the dark pixels (bone, air) that lie under them.
    An opening detaches what is left of them; the largest region, filled, is
    the brain. If that keeps an implausible share of the head, erode instead.
    """
    area = float(np.count_nonzero(head))
    radius = np.sqrt(area / np.pi)
    rim_px = max(2, int(round(STRIP_RIM * radius)))
    inner = cv2.erode(head.astype(np.uint8), _disk(rim_px)) > 0
    rim = head & ~inner
    bright, _ = cv2.threshold(small[head].reshape(-1, 1), 0, 255, cv2.THRESH_BINARY + cv2.THRESH_OTSU)
    brain = head & ~_connected_to_edge(head, rim & (small > bright))
    dark = 0.5 * float(np.median(small[brain])) if brain.any() else 0.0
    brain &= ~_connected_to_edge(brain, rim & (small < dark))
    open_px = max(1, int(round(STRIP_OPEN * radius)))
    opened = cv2.morphologyEx(brain.astype(np.uint8), cv2.MORPH_OPEN, _disk(open_px)) > 0
    brain, _ = largest_filled(opened, close_fraction=0.0)
    if not STRIP_KEEP[0] * area <= np.count_nonzero(brain) <= STRIP_KEEP[1] * area:
        brain = inner
    return brain


def _connected_to_edge(region: np.ndarray, candidates: np.ndarray) -> np.ndarray:
    """Pixels of `candidates` connected (through candidates) to the edge of `region`."""
    edge = region & ~(cv2.erode(region.astype(np.uint8), np.ones((3, 3), np.uint8)) > 0)
    count, labels = cv2.connectedComponents(candidates.astype(np.uint8), connectivity=8)
    hit = np.bincount(labels[edge & candidates], minlength=count) > 0
    hit[0] = False
    return hit[labels]


# --- the whole step --------------------------------------------------------------


def clean_image(pixels: np.ndarray, size: int = DEFAULT_SIZE, skull_strip: bool = False) -> CleanResult:
    """Clean one slice and crop it to the head.

    pixels: uint8 grey HxW or RGB HxWx3 as returned by lib.common.io.read_image(...).pixels.
    """
    grey = to_grey(pixels).copy()
    flags = set()
    if remove_white_frame(grey):
        flags.add("white_frame")
    if remove_white_background(grey):
        flags.add("white_background")

    small = shrink(grey)
    search = find_head(small)
    head, mode, reason = search.head, search.mode, search.reason
    if any(search.lines):
        black_out_edges(grey, _lines_to_source(search.lines, small.shape, grey.shape))
        flags.add("text_removed")
    if np.count_nonzero(head) < MIN_HEAD_AREA * small.size:
        flags.add("no_head_found")
        head = np.ones_like(head)
        reason = f"no head found: {reason}; whole image kept"
    else:
        marks = find_marks(search.foreground, head)
        if np.count_nonzero(marks) >= TEXT_MIN_PIXELS:
            erase_marks(grey, small, marks, head)
            flags.add("text_removed")
        if _touches_border(head):
            flags.add("head_touches_border")
        if skull_strip:
            grey[~_to_source(strip_skull(small, head), grey.shape)] = 0
            flags.add("skull_stripped")

    crop_box = head_box(head, grey.shape)
    square_box = square_around(crop_box)
    return CleanResult(
        image=warp_to_square(grey, square_box, size, cv2.INTER_AREA),
        crop_box=crop_box,
        square_box=square_box,
        crop_mode=mode,
        crop_reason=reason,
        flags=[flag for flag in FLAGS if flag in flags],
        head_mask=_to_source(head, grey.shape),
    )


def shrink(grey: np.ndarray) -> np.ndarray:
    """Copy whose longest side is at most WORK_SIZE (INTER_AREA averages, so nothing aliases)."""
    height, width = grey.shape
    scale = WORK_SIZE / max(height, width)
    if scale >= 1.0:
        return grey
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    return cv2.resize(grey, size, interpolation=cv2.INTER_AREA)


def _to_source(mask: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Work-size bool mask -> source-size bool mask (nearest)."""
    if mask.shape == shape:
        return mask.copy()
    return cv2.resize(mask.astype(np.uint8), (shape[1], shape[0]), interpolation=cv2.INTER_NEAREST_EXACT) > 0


def _lines_to_source(
    lines: tuple[int, int, int, int], small_shape: tuple[int, int], shape: tuple[int, int]
) -> tuple[int, int, int, int]:
    """Edge-line depths (top, bottom, left, right) from work pixels to source pixels, rounded up."""
    fy, fx = shape[0] / small_shape[0], shape[1] / small_shape[1]
    return tuple(int(np.ceil(depth * f)) for depth, f in zip(lines, (fy, fy, fx, fx)))


def head_box(head: np.ndarray, shape: tuple[int, int]) -> Box:
    """Bounding box of the work-size head mask in source pixels: padded, rounded outwards, clipped."""
    height, width = shape
    fy, fx = height / head.shape[0], width / head.shape[1]
    x, y, w, h = cv2.boundingRect(head.astype(np.uint8))
    x0, x1, y0, y1 = x * fx, (x + w) * fx, y * fy, (y + h) * fy
    pad = PAD_FRACTION * max(x1 - x0, y1 - y0)
    return (
        max(0, int(np.floor(x0 - pad))),
        max(0, int(np.floor(y0 - pad))),
        min(width, int(np.ceil(x1 + pad))),
        min(height, int(np.ceil(y1 + pad))),
    )


def _touches_border(head: np.ndarray) -> bool:
    """Does the head cover at least TOUCH_SHARE of some edge of the image?"""
    edges = (head[0], head[-1], head[:, 0], head[:, -1])
    return max(edge.mean() for edge in edges) >= TOUCH_SHARE


def head_mask(grey: np.ndarray) -> np.ndarray:
    """Filled head region of an already cleaned slice, same shape, bool.

    Later stages (enhancement, clustering, candidates, features) work inside
    the head only; this is the one definition they share.
    """
    return _to_source(find_head(shrink(grey)).head, grey.shape)
