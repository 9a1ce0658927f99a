"""Handcrafted per-image features for the tumour / no-tumour classifier.

Why: a few hundred labelled slices are too few to train a deep network from
scratch, but plenty for a linear model or a small forest over a few dozen
well-chosen numbers. Each number here measures one thing a radiologist looks
at: how the grey levels inside the head are spread (`hist_`), how rough the
texture is (`glcm_`), how many edges there are (`edge_`), whether one side of
the head differs from the other (`asym_`, the strongest clue on a single
slice: healthy brains are nearly mirror-symmetric, most tumours sit on one
side), whether there are bright blobs of a given size (`log_`), how the
brightest tissue class is laid out (`clu_`) and the head's outline (`shape_`).

Every feature is computed inside the head mask (`lib.preprocess.clean.head_mask`), so
background, frames and burned-in text never count, and every one is unchanged
when the slice is flipped left-right (radiological vs neurological convention
must not matter): GLCMs are averaged over angles, the mirror axis of the
asymmetry features is the head's own axis, and every asymmetry measure is
symmetric in its two sides. An empty or flat head gets defined values (those
of a flat image, zeros for spreads), never NaN.

The `clu_` features describe a cluster map: lib.regions.cluster's labels when the
caller passes them, else the head's grey quartiles (4 bins by quantile), so
this module never depends on lib.regions.cluster. With quartiles the dark and bright
shares are 1/4 by construction (up to ties); the layout features still work.

Intensities stay in grey levels (0-255): the cleaned slices are windowed to
8 bits already, and a later StandardScaler takes care of units. Where a
feature would mostly follow the window (asymmetry), a `_rel` twin divides it
by the head's grey spread (p99 - p1).

Usage:
    head = lib.preprocess.clean.head_mask(image)
    row = features.extract(image, head)            # dict: column -> float
    row = features.extract(image, head, labels)    # with lib.regions.cluster labels
"""

from __future__ import annotations

import cv2
import numpy as np
from skimage.feature import graycomatrix, graycoprops

# --- parameters ------------------------------------------------------------------

# Percentiles of the head's grey levels reported as hist_pNN.
PERCENTILES = (5, 25, 50, 75, 95, 99)

# GLCM grey levels: level 0 marks pixels outside the head, the head is
# quantised into levels 1..GLCM_LEVELS-1 over its own p1..p99 range (so the
# texture does not follow the window). More levels: finer but noisier matrices.
GLCM_LEVELS = 32
# Pixel offsets; 1 sees noise and fine texture, 3 sees gyri and lesion edges.
GLCM_DISTANCES = (1, 3)
# Averaged over these angles: 0 and 90 map onto themselves under a left-right
# flip and 45 <-> 135 swap, so the mean is flip-invariant exactly.
GLCM_ANGLES = (0.0, np.pi / 4, np.pi / 2, 3 * np.pi / 4)
GLCM_PROPS = ("contrast", "dissimilarity", "homogeneity", "energy", "correlation", "ASM")

# Band along the head's outline (pixels) left out of the edge, asymmetry and
# blob features: scalp and skull make the strongest edges and ridges in any
# slice, tumour or not.
RIM_PX = 6
# Canny runs on the slice blurred by this sigma, with hysteresis thresholds on
# the slope (grey levels per px) as shares of the head's grey spread (p99 - p1):
# contrast-relative, so the edge density does not follow the window. Lower
# thresholds count noise as edges.
CANNY_SIGMA = 1.0
CANNY_LOW, CANNY_HIGH = 0.03, 0.06

# Mirror axis: the head's principal axis closer to vertical, unless it leans
# more than this (then the head is taken as upright) ...
MAX_TILT_DEG = 20.0
# ... or the head is too round for an axis to mean anything (axis ratio).
MIN_ELONGATION = 1.05
# The |left - mirrored right| map is blurred by this sigma before its peak is
# taken: a tumour is a patch, not a pixel; larger ignores smaller tumours.
ASYM_SIGMA = 4.0
# Histograms of the two halves use this many bins over 0..255.
ASYM_BINS = 32
# Mirror images are sampled this many pixels at a time (a speed setting only:
# blocks of 8k float64 values stay under malloc's 128 kB mmap threshold).
SAMPLE_BLOCK = 8192
# asym_area counts pixels whose blurred difference exceeds this share of the
# head's grey spread.
ASYM_LEVEL = 0.15

# Laplacian-of-Gaussian scales (pixels at 256 px a side): blobs of diameter
# about 2.8 sigma answer most. The blob map is kept RIM_PX + 2 sigma inside
# the head so the bright scalp ring never counts as a blob.
LOG_SIGMAS = (2, 4, 8)

# Without cluster labels, the head's grey levels are cut at these quantiles
# into len + 1 bins standing in for clusters (darkest = 0).
QUANTILE_CUTS = (0.25, 0.50, 0.75)
# Connected pieces of the brightest cluster smaller than this (pixels) are
# noise, not counted; pieces are sought RIM_PX inside the head (the scalp is
# a bright ring in T1 and would always be the largest piece).
MIN_COMPONENT_PX = 10

# --- columns ---------------------------------------------------------------------

COLUMNS: dict[str, str] = {
    "hist_mean": "mean grey level in the head (0-255); tumours and oedema shift it up (T2) or down (T1)",
    "hist_std": "standard deviation of grey in the head; a lesion of its own brightness widens it",
    "hist_skewness": "skewness of the head's grey histogram (0 if flat); a small bright tumour gives a right tail",
    "hist_kurtosis": "excess kurtosis of the head's grey histogram (0 if flat); heavy tails from a focal lesion",
    **{
        f"hist_p{p}": f"{p}th percentile of grey in the head (0-255)"
        + ("; the top percentiles catch enhancing tumour" if p >= 95 else "")
        for p in PERCENTILES
    },
    "hist_entropy": "Shannon entropy of the head's 256-bin grey histogram (bits, 0-8); more tissue classes, more bits",
    **{
        f"glcm_{prop.lower()}_d{d}": f"GLCM {prop} at distance {d} px, mean over 0/45/90/135 deg, head only "
        f"({GLCM_LEVELS - 1} levels over the head's p1-p99, pairs touching the background dropped); "
        + {
            "contrast": "mean squared level difference of neighbours; tumours add coarse texture",
            "dissimilarity": "mean absolute level difference of neighbours",
            "homogeneity": "inverse difference moment (1 = flat); lower when texture is rough",
            "energy": "sqrt of ASM; high for few repeated grey pairs (uniform tissue)",
            "correlation": "linear dependence of neighbours' levels (1 if flat); high for large smooth regions",
            "ASM": "angular second moment (sum of squared GLCM entries, 0-1); uniformity",
        }[prop]
        for d in GLCM_DISTANCES
        for prop in GLCM_PROPS
    },
    "edge_sobel_mean": f"mean Sobel gradient magnitude (grey levels / px), {RIM_PX} px inside the head; "
    "lesion borders add edges",
    "edge_sobel_std": "standard deviation of that gradient magnitude; a few strong lesion borders raise it",
    "edge_sobel_rel": "edge_sobel_mean / head grey spread (p99 - p1): edge strength independent of the window",
    "edge_canny_density": f"Canny edge pixels / head pixels, {RIM_PX} px inside the head (thresholds relative "
    "to the grey spread); more structure, more edges",
    "asym_mad": "mean |grey - mirrored grey| over the head (mirror about the head's midline, outline band "
    "left out; grey levels); a one-sided tumour raises it",
    "asym_mad_rel": "asym_mad / head grey spread (p99 - p1)",
    "asym_mean_diff": "|mean grey of the left half - mean grey of the right half| (grey levels)",
    "asym_hist_chi2": f"chi-square distance between the {ASYM_BINS}-bin grey histograms of the two halves "
    "(0 = same, 1 = disjoint)",
    "asym_peak": f"max of the |grey - mirrored grey| map blurred by sigma {ASYM_SIGMA:g} px (grey levels); "
    "a tumour is a local asymmetry peak",
    "asym_peak_rel": "asym_peak / head grey spread (p99 - p1)",
    "asym_peak_ratio": "asym_peak / asym_mad (1 if symmetric): how focal the asymmetry is; a tumour is focal, "
    "a tilted or unevenly lit head is not",
    "asym_area": f"share of the head whose blurred |grey - mirrored grey| exceeds {ASYM_LEVEL:g} of the grey spread",
    "asym_shape": "1 - IoU of the head mask and its mirror image: asymmetry of the outline (pose, mass effect)",
    **{
        f"log_s{s}_{stat}": f"{name} of the scale-normalised negative LoG (-sigma^2 LoG, grey levels) at sigma "
        f"{s} px, {RIM_PX}+{2 * s} px inside the head; {why}"
        for s in LOG_SIGMAS
        for stat, name, why in (
            ("mean", "mean", "bright vs dark structure at that scale"),
            ("std", "standard deviation", "how much blob-like structure there is"),
            ("max", "maximum", f"the brightest blob about {2.8 * s:.0f} px across; tumours make strong ones"),
        )
    },
    "clu_dark_share": "area share of the head in the darkest cluster (labels 0; else the lowest grey quartile "
    "when no labels are given); CSF, necrosis, hypointense lesions",
    "clu_bright_share": "area share of the head in the brightest cluster (else the top grey quartile)",
    "clu_bright_mean": "mean grey of the brightest cluster (0-255)",
    "clu_bright_contrast": "mean grey of the brightest cluster - mean grey of the rest of the head (grey levels)",
    "clu_bright_components": f"number of connected pieces (>= {MIN_COMPONENT_PX} px, 8-connected, {RIM_PX} px "
    "inside the head) of the brightest cluster; a tumour is one big piece, normal tissue many small",
    "clu_bright_largest_share": "area of the largest such piece / area of the brightest cluster inside the head",
    "clu_bright_largest_head_share": "area of the largest such piece / head area",
    "clu_bright_compactness": "area^2 / (2 pi polar second moment) of the largest piece: 1 for a disk, "
    "lower for elongated or ragged shapes (gyri, rings); 0 if none",
    "shape_head_share": "head area / image area; a crop far from 1/2-3/4 hints at an odd slice or a bad crop",
    "shape_aspect": "minor / major axis length of the head's inertia ellipse (<= 1)",
    "shape_solidity": "head area / convex hull area; bites and bulges lower it",
    "shape_tilt_deg": f"|angle| of the mirror axis from vertical (deg, 0 when the head leans > {MAX_TILT_DEG:g} "
    "deg or is round)",
}


def columns_markdown() -> str:
    """COLUMNS as a markdown table, for the stage's report and the README."""
    lines = ["| column | what it measures |", "|---|---|"]
    lines += [f"| `{name}` | {doc.replace('|', chr(92) + '|')} |" for name, doc in COLUMNS.items()]
    return "\n".join(lines) + "\n"


# --- the whole step --------------------------------------------------------------


def extract(image: np.ndarray, head: np.ndarray, labels: np.ndarray | None = None) -> dict[str, float]:
    """All features of one cleaned slice, keyed and ordered like COLUMNS.

    image: uint8 grey HxW; head: bool HxW; labels: int HxW cluster map, -1
    outside the head, 0..k-1 by increasing mean grey (lib.regions.cluster); without
    it the head's grey quartiles stand in for clusters.
    """
    if image.ndim != 2 or image.dtype != np.uint8 or head.shape != image.shape:
        raise ValueError(f"need a uint8 grey image and a head mask of its shape, got {image.dtype} "
                         f"{image.shape} and {head.shape}")
    if labels is not None and labels.shape != image.shape:
        raise ValueError(f"labels {labels.shape} do not match the image {image.shape}")
    image, head = np.ascontiguousarray(image), head.astype(bool, copy=False)
    if labels is None:
        labels = quantile_labels(image, head)
    depth = cv2.distanceTransform(head.astype(np.uint8), cv2.DIST_L2, cv2.DIST_MASK_5)
    inner = inside(head, depth, RIM_PX)
    spread = grey_spread(image, head)
    values = {
        **histogram_features(image, head),
        **glcm_features(image, head),
        **edge_features(image, inner, spread),
        **asymmetry_features(image, head, spread),
        **log_features(image, head, depth),
        **cluster_features(image, head, inner, labels),
        **shape_features(head),
    }
    # Every branch above defines its degenerate cases; this is the last guard.
    return {name: float(values[name]) if np.isfinite(values[name]) else 0.0 for name in COLUMNS}


def inside(head: np.ndarray, depth: np.ndarray, margin: float) -> np.ndarray:
    """Head pixels more than `margin` px from its outline; the head itself if that leaves nothing.

    From one distance transform instead of one erosion per radius: large
    elliptic erosions are slow in OpenCV. The 5x5 chamfer distance is within
    a few per cent of Euclidean, and flip-symmetric like its mask.
    """
    core = depth > margin
    return core if core.any() else head


def grey_spread(image: np.ndarray, head: np.ndarray) -> float:
    """p99 - p1 of the head's grey levels, at least 1: the unit of the `_rel` features."""
    if not head.any():
        return 1.0
    low, high = hist_percentiles(np.bincount(image[head], minlength=256), (1, 99))
    return max(high - low, 1.0)


def hist_percentiles(hist: np.ndarray, percents: tuple[float, ...]) -> list[float]:
    """Percentiles of uint8 values from their 256-bin histogram (much faster than np.percentile)."""
    cumulative = np.cumsum(hist)
    return [float(np.searchsorted(cumulative, p / 100.0 * cumulative[-1])) for p in percents]


# --- hist_ -----------------------------------------------------------------------


def histogram_features(image: np.ndarray, head: np.ndarray) -> dict[str, float]:
    """Moments, percentiles and entropy of the head's grey levels, all from one bincount."""
    hist = np.bincount(image[head], minlength=256).astype(np.float64)
    total = hist.sum()
    if total == 0:
        return {name: 0.0 for name in COLUMNS if name.startswith("hist_")}
    share = hist / total
    grey = np.arange(256.0)
    mean = float(share @ grey)
    centred = grey - mean
    var = float(share @ centred**2)
    std = np.sqrt(var)
    flat = std < 1e-9
    nonzero = share[share > 0]
    return {
        "hist_mean": mean,
        "hist_std": std,
        "hist_skewness": 0.0 if flat else float(share @ centred**3) / std**3,
        "hist_kurtosis": 0.0 if flat else float(share @ centred**4) / var**2 - 3.0,
        **dict(zip((f"hist_p{p}" for p in PERCENTILES), hist_percentiles(hist, PERCENTILES))),
        "hist_entropy": float(-(nonzero * np.log2(nonzero)).sum()),
    }


# --- glcm_ -----------------------------------------------------------------------


def glcm_features(image: np.ndarray, head: np.ndarray) -> dict[str, float]:
    """GLCM properties of the head's bounding box, background pairs dropped, mean over angles.

    Level 0 is the background; rows and columns 0 of the co-occurrence
    matrices are cut off before graycoprops (which renormalises), so only
    pairs of two head pixels count. The matrices are symmetric (i->j and j->i
    both counted), which together with the angle average makes the result
    flip-invariant.
    """
    flat = {"contrast": 0.0, "dissimilarity": 0.0, "homogeneity": 1.0, "energy": 1.0, "correlation": 1.0, "ASM": 1.0}
    names = [(prop, d) for d in GLCM_DISTANCES for prop in GLCM_PROPS]
    if not head.any():
        return {f"glcm_{prop.lower()}_d{d}": flat[prop] for prop, d in names}
    x, y, w, h = cv2.boundingRect(head.astype(np.uint8))
    box, box_head = image[y : y + h, x : x + w], head[y : y + h, x : x + w]
    low, high = hist_percentiles(np.bincount(box[box_head], minlength=256), (1, 99))
    scaled = (box.astype(np.float32) - low) / max(high - low, 1.0)
    levels = 1 + np.rint(np.clip(scaled, 0, 1) * (GLCM_LEVELS - 2)).astype(np.uint8)
    levels[~box_head] = 0
    matrices = graycomatrix(levels, GLCM_DISTANCES, GLCM_ANGLES, levels=GLCM_LEVELS, symmetric=True)[1:, 1:]
    values = {}
    for prop in GLCM_PROPS:
        per_pair = graycoprops(matrices, prop)  # (distances, angles)
        empty = matrices.sum(axis=(0, 1)) == 0
        per_pair[empty] = flat[prop]
        for i, d in enumerate(GLCM_DISTANCES):
            values[f"glcm_{prop.lower()}_d{d}"] = float(per_pair[i].mean())
    return values


# --- edge_ -----------------------------------------------------------------------


def edge_features(image: np.ndarray, inner: np.ndarray, spread: float) -> dict[str, float]:
    """Sobel gradient statistics and Canny edge density away from the head's outline."""
    if not inner.any():
        return {name: 0.0 for name in COLUMNS if name.startswith("edge_")}
    # Sobel's 3x3 kernels weigh a unit slope 8 times; back to grey levels per pixel.
    gx = cv2.Sobel(image, cv2.CV_32F, 1, 0)
    gy = cv2.Sobel(image, cv2.CV_32F, 0, 1)
    magnitude = cv2.magnitude(gx, gy)[inner] / 8.0
    blurred = cv2.GaussianBlur(image, (0, 0), CANNY_SIGMA)
    # Canny's thresholds are in Sobel units, 8 per grey level per px.
    edges = cv2.Canny(blurred, 8 * CANNY_LOW * spread, 8 * CANNY_HIGH * spread, L2gradient=True) > 0
    mean = float(magnitude.mean())
    return {
        "edge_sobel_mean": mean,
        "edge_sobel_std": float(magnitude.std()),
        "edge_sobel_rel": mean / spread,
        "edge_canny_density": float(edges[inner].mean()),
    }


# --- asym_ -----------------------------------------------------------------------


def mirror_axis(head: np.ndarray) -> tuple[float, float, float]:
    """Centre (x, y) and tilt of the head's midline (radians from vertical; a left-right flip negates it).

    The midline runs through the head's centroid along whichever principal
    axis of the head is closer to vertical (heads are longer than wide, but
    a crop may make them wider). A round head, or one leaning more than
    MAX_TILT_DEG, gets a vertical axis: a wrong tilt would make a healthy
    brain look asymmetric. Under a left-right flip the centre mirrors and the
    tilt changes sign, so the mirror image is flipped with the slice.
    """
    m = cv2.moments(head.astype(np.uint8), binaryImage=True)
    if m["m00"] == 0:
        return (head.shape[1] - 1) / 2.0, (head.shape[0] - 1) / 2.0, 0.0
    cx, cy = m["m10"] / m["m00"], m["m01"] / m["m00"]
    mu20, mu02, mu11 = m["mu20"], m["mu02"], m["mu11"]
    spread = np.hypot(mu20 - mu02, 2 * mu11)
    major, minor = mu20 + mu02 + spread, mu20 + mu02 - spread
    if minor <= 0 or np.sqrt(major / minor) < MIN_ELONGATION:
        return cx, cy, 0.0
    theta = 0.5 * np.arctan2(2 * mu11, mu20 - mu02)  # major axis from the x axis, (-90, 90] deg
    # Tilt of the axis nearer vertical: the major one for a tall head, the minor one for a wide head.
    tilt = np.sign(theta) * np.pi / 2 - theta if abs(theta) > np.pi / 4 else -theta
    return cx, cy, float(tilt) if abs(np.degrees(tilt)) <= MAX_TILT_DEG else 0.0


def mirror_sample(
    arrays: list[np.ndarray], rows: np.ndarray, cols: np.ndarray, axis: tuple[float, float, float]
) -> list[np.ndarray]:
    """Values of each uint8 or bool array at the mirror images of the pixels (rows, cols); 0 beyond the edges.

    Mirror about the line through (cx, cy) leaning `tilt` from vertical, with
    bilinear sampling in float64: cv2.warpAffine's fixed-point sampling is not
    exactly flip-symmetric, and only the head's pixels are needed. Done in
    blocks of SAMPLE_BLOCK pixels, whose temporaries stay small enough for
    malloc to reuse (whole-head temporaries cost a page fault per 4 kB each
    time: 3x slower).
    """
    height, width = arrays[0].shape
    padded = []
    for array in arrays:
        # One zero row/column before, two after: every bilinear neighbour of a clipped point exists.
        ring = np.zeros((height + 3, width + 3), np.uint8)
        ring[1 : height + 1, 1 : width + 1] = array  # uint8 or bool: exact, and 8x smaller than float64
        padded.append(ring.ravel())
    samples = [np.empty(len(rows)) for _ in arrays]
    for start in range(0, len(rows), SAMPLE_BLOCK):
        block = slice(start, start + SAMPLE_BLOCK)
        corners, weights = _mirror_weights(rows[block], cols[block], axis, (height, width))
        for flat, out in zip(padded, samples):
            out[block] = sum(flat.take(index) * weight for index, weight in zip(corners, weights))
    return samples


def _mirror_weights(
    rows: np.ndarray, cols: np.ndarray, axis: tuple[float, float, float], shape: tuple[int, int]
) -> tuple[tuple[np.ndarray, ...], tuple[np.ndarray, ...]]:
    """Flat indices into the padded arrays of the 4 bilinear neighbours of each mirror point, and their weights."""
    cx, cy, tilt = axis
    height, width = shape
    # Reflection p -> c + (2 u u^T - I)(p - c), u the unit vector along the axis, as x = a col + b row + e.
    ux, uy = np.sin(tilt), np.cos(tilt)
    a, b, d = 2 * ux * ux - 1, 2 * ux * uy, 2 * uy * uy - 1
    # Clipped to one pixel beyond the array, onto the zero ring of the padded arrays.
    x = np.clip(a * cols + (b * rows + (cx - a * cx - b * cy)), -1.0, float(width))
    y = np.clip(b * cols + (d * rows + (cy - b * cx - d * cy)), -1.0, float(height))
    x0, y0 = np.floor(x), np.floor(y)
    fx, fy = x - x0, y - y0
    stride = width + 3
    top_left = (y0.astype(np.intp) + 1) * stride + x0.astype(np.intp) + 1
    corners = (top_left, top_left + 1, top_left + stride, top_left + stride + 1)
    weights = ((1 - fx) * (1 - fy), fx * (1 - fy), (1 - fx) * fy, fx * fy)
    return corners, weights


def asymmetry_features(image: np.ndarray, head: np.ndarray, spread: float) -> dict[str, float]:
    """Left-right differences about the head's own midline; symmetric in the two sides by construction.

    Compared: each pixel with its mirror image inside the region where the
    head overlaps its own mirror, RIM_PX away from that region's outline (an
    outline that is a pixel off would otherwise dominate).
    """
    values = {name: 0.0 for name in COLUMNS if name.startswith("asym_")}
    if not head.any():
        return values
    axis = mirror_axis(head)
    rows, cols = np.nonzero(head)
    mirrored_head, mirrored_grey = mirror_sample([head, image], rows, cols, axis)
    shared = mirrored_head > 0.5
    # 1 - |head & mirror| / |head | mirror|, with |mirror| = |head| (a reflection keeps areas).
    values["asym_shape"] = 1.0 - np.count_nonzero(shared) / max(2 * len(rows) - np.count_nonzero(shared), 1)
    overlap = np.zeros(head.shape, np.uint8)
    overlap[rows[shared], cols[shared]] = 1
    depth = cv2.distanceTransform(overlap, cv2.DIST_L2, cv2.DIST_MASK_5)
    keep = depth[rows, cols] > RIM_PX
    if not keep.any():
        keep = shared
    if not keep.any():
        return values
    rows, cols = rows[keep], cols[keep]
    grey = image[rows, cols]
    diff = np.abs(grey - mirrored_grey[keep])
    diff_map = np.zeros(head.shape, np.float32)
    diff_map[rows, cols] = diff
    region = np.zeros(head.shape, np.float32)
    region[rows, cols] = 1
    # Blur inside the region only (normalised convolution), so the zeros
    # outside do not pull the map down near the outline.
    weight = cv2.GaussianBlur(region, (0, 0), ASYM_SIGMA)[rows, cols]
    blurred = cv2.GaussianBlur(diff_map, (0, 0), ASYM_SIGMA)[rows, cols] / np.maximum(weight, 1e-6)
    mad = float(diff.mean())
    peak = float(blurred.max())

    side = (cols - axis[0]) * np.cos(axis[2]) - (rows - axis[1]) * np.sin(axis[2])  # signed distance to the axis
    left, right = grey[side < -0.5], grey[side > 0.5]
    if len(left) and len(right):
        values["asym_mean_diff"] = abs(float(left.mean()) - float(right.mean()))
        values["asym_hist_chi2"] = chi_square(np.bincount(left // (256 // ASYM_BINS), minlength=ASYM_BINS),
                                              np.bincount(right // (256 // ASYM_BINS), minlength=ASYM_BINS))
    values.update({
        "asym_mad": mad,
        "asym_mad_rel": mad / spread,
        "asym_peak": peak,
        "asym_peak_rel": peak / spread,
        "asym_peak_ratio": peak / mad if mad > 1e-9 else 1.0,
        "asym_area": float((blurred > ASYM_LEVEL * spread).mean()),
    })
    return values


def chi_square(a: np.ndarray, b: np.ndarray) -> float:
    """0.5 * sum (p - q)^2 / (p + q) of the normalised histograms: 0 same, 1 disjoint, symmetric in a, b."""
    p, q = a / max(a.sum(), 1), b / max(b.sum(), 1)
    total = p + q
    used = total > 0
    return float(0.5 * ((p[used] - q[used]) ** 2 / total[used]).sum())


# --- log_ ------------------------------------------------------------------------


def log_features(image: np.ndarray, head: np.ndarray, depth: np.ndarray) -> dict[str, float]:
    """Bright-blob responses, -sigma^2 * Laplacian of the Gaussian-blurred slice, per scale.

    Scale normalisation (sigma^2) makes a blob answer about as strongly at
    its own scale whatever its size, so the scales are comparable.
    """
    values = {}
    grey = image.astype(np.float32)
    for sigma in LOG_SIGMAS:
        region = inside(head, depth, RIM_PX + 2 * sigma)
        if region.any():
            response = -(sigma**2) * cv2.Laplacian(cv2.GaussianBlur(grey, (0, 0), sigma), cv2.CV_32F)
            inner = response[region].astype(np.float64)
            stats = (inner.mean(), inner.std(), inner.max())
        else:
            stats = (0.0, 0.0, 0.0)
        values.update({f"log_s{sigma}_{name}": float(v) for name, v in zip(("mean", "std", "max"), stats)})
    return values


# --- clu_ ------------------------------------------------------------------------


def quantile_labels(image: np.ndarray, head: np.ndarray) -> np.ndarray:
    """Stand-in cluster map: the head's grey levels cut at QUANTILE_CUTS; -1 outside the head.

    Lets extract run without lib.regions.cluster; a flat head lands in one bin.
    """
    if not head.any():
        return np.full(image.shape, -1, dtype=np.int32)
    cuts = hist_percentiles(np.bincount(image[head], minlength=256), tuple(100 * q for q in QUANTILE_CUTS))
    bin_of_grey = np.searchsorted(np.asarray(cuts), np.arange(256), side="left").astype(np.int32)
    return np.where(head, bin_of_grey[image], -1)


def cluster_features(image: np.ndarray, head: np.ndarray, inner: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    """Shares of the darkest and brightest clusters and the layout of the brightest one."""
    values = {name: 0.0 for name in COLUMNS if name.startswith("clu_")}
    labels = np.where(head, labels, -1)
    area = np.count_nonzero(labels >= 0)
    if area == 0:
        return values
    top = int(labels.max())
    bright = labels == top
    values["clu_dark_share"] = np.count_nonzero(labels == 0) / area
    values["clu_bright_share"] = np.count_nonzero(bright) / area
    values["clu_bright_mean"] = float(image[bright].mean())
    rest = (labels >= 0) & ~bright
    values["clu_bright_contrast"] = values["clu_bright_mean"] - float(image[rest].mean()) if rest.any() else 0.0

    pieces = (bright & inner).astype(np.uint8)
    count, piece_labels, stats, _ = cv2.connectedComponentsWithStats(pieces, connectivity=8)
    sizes = stats[1:, cv2.CC_STAT_AREA]
    kept = np.flatnonzero(sizes >= MIN_COMPONENT_PX)
    values["clu_bright_components"] = float(len(kept))
    if len(kept):
        largest = 1 + kept[np.argmax(sizes[kept])]
        largest_area = float(sizes[largest - 1])
        values["clu_bright_largest_share"] = largest_area / max(np.count_nonzero(pieces), 1)
        values["clu_bright_largest_head_share"] = largest_area / area
        values["clu_bright_compactness"] = compactness(piece_labels == largest)
    return values


def compactness(mask: np.ndarray) -> float:
    """area^2 / (2 pi (mu20 + mu02)): 1 for a disk, lower for any other shape.

    From moments rather than a traced perimeter: stable on pixel noise and
    exactly flip-invariant.
    """
    m = cv2.moments(mask.astype(np.uint8), binaryImage=True)
    polar = m["mu20"] + m["mu02"]
    return float(min(m["m00"] ** 2 / (2 * np.pi * polar), 1.0)) if polar > 0 else 1.0


# --- shape_ ----------------------------------------------------------------------


def shape_features(head: np.ndarray) -> dict[str, float]:
    """Size, elongation, solidity and tilt of the head mask."""
    m = cv2.moments(head.astype(np.uint8), binaryImage=True)
    if m["m00"] == 0:
        return {name: 0.0 for name in COLUMNS if name.startswith("shape_")}
    spread = np.hypot(m["mu20"] - m["mu02"], 2 * m["mu11"])
    major, minor = m["mu20"] + m["mu02"] + spread, m["mu20"] + m["mu02"] - spread
    contours, _ = cv2.findContours(head.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    hull_area = cv2.contourArea(cv2.convexHull(np.concatenate(contours)))
    return {
        "shape_head_share": m["m00"] / head.size,
        "shape_aspect": float(np.sqrt(max(minor, 0.0) / major)) if major > 0 else 1.0,
        "shape_solidity": min(m["m00"] / hull_area, 1.0) if hull_area > 0 else 1.0,
        "shape_tilt_deg": abs(np.degrees(mirror_axis(head)[2])),
    }
