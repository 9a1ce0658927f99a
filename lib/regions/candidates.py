"""One tumour-candidate box per slice, with a confidence: the box prompt for SAM.

Why: LiteMedSAM segments what a box points at. A box drawn round the whole
head overlaps every tumour and tells SAM nothing, so the aim is a tight box
round the one region that most looks like a tumour, and a score low enough
to mean "probably none" when nothing does.

How, in order (`find`), on a copy WORK_SIZE pixels a side (for speed):

1. Brain domain. `lib.preprocess.clean.strip_skull` peels the bright scalp rim off the
   head, but on slices through the skull base it keeps the face (orbits,
   sinuses, nasal cavity), whose fat, air and mucosa are the most contrasted
   blobs in the head. The domain is therefore the convex hull of the large
   regions of calm brain-grey tissue (grey level near the brain's mode, low
   local variance) inside the stripped head. A tumour is not calm, but it
   sits inside or against calm brain, so the hull keeps it.
2. Intensities in robust units: z = (blurred grey - domain median) / domain
   spread (IQR / 1.349). Tumours here are mostly brighter than brain (T1
   contrast-enhanced, FLAIR, T2), some darker (necrosis, cysts, T1).
3. A tree of candidate regions: the domain is thresholded at several z levels
   above and below the median (plus the boundaries between the caller's
   intensity clusters, when given), each mask opened to cut thin bridges, and
   its connected components are the candidates. Higher levels nest inside
   lower ones, so every component knows its parent's size.
4. Features of each component (FEATURES): polarity and level, size, contrast
   to a ring round it, spread, stability across levels, edge strength, shape
   (elongation, ellipse fill, box extent), distance from the domain's rim and
   centre.
5. A logistic scorer over the standardised features (SCORER: mean, scale and
   weight of each) ranks the components; the best is the candidate. Its
   logit, rescaled by PRESENCE (fitted on tumour and tumour-free phantoms),
   is the slice's score: the probability that a tumour is there at all. The
   box, mapped back to the image and padded by BOX_PAD_PX, is the answer when
   that score reaches MIN_SCORE.

Left-right asymmetry (z minus its mirror image about the domain's better
principal axis, times how symmetric the slice is) was tried as a feature and
dropped: tumours do score higher on it than other regions, but contrast, size
and position already say the same, so it barely moved the hit rate or the
tumour / tumour-free separation, at a cost in time per slice. Many figshare
slices are sagittal, coronal or rotated, where no midline helps anyway.

The scorer was fitted (`fit_scorer`, run by `bench/bench_candidates.py --fit`)
on the 253 phantoms plus the figshare pituitary block (cheng_1121-1320), and
is measured on the meningioma and glioma blocks, which it never saw. It finds
most meningiomas but fewer than half of the gliomas, whose faint, mixed
signal loses to facial structures the hull lets in and to the ventricles.
Measured (bench/results/candidates.json): docs/results.md.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from lib.preprocess.clean import strip_skull

Box = tuple[int, int, int, int]

# --- parameters ------------------------------------------------------------------

# Candidates are sought on a copy whose longest side is this; lengths below
# are in its pixels (half those of a 256 px cleaned slice). At 256 the
# held-out hit rate was 0.74 instead of 0.71 and the mean IoU 0.01 higher,
# within the noise of 400 slices, at 36 ms a slice instead of 15.
WORK_SIZE = 128
# Gaussian blur before thresholding: JPEG noise and single bright vessels
# must not split a tumour.
SMOOTH_SIGMA = 1.0
# Thresholds in robust SDs above (bright) and below (dark) the brain median.
# Eight bright and six dark levels reach a best-candidate IoU of 0.66 on
# figshare, five and four only 0.60 (measured at 256 px): tumours merge with
# their neighbours at one level and fall apart at the next, so the steps
# must be fine.
BRIGHT_LEVELS = (0.5, 1.0, 1.5, 2.0, 2.5, 3.0, 4.0, 5.0)
DARK_LEVELS = (0.5, 1.0, 1.5, 2.0, 2.5, 3.0)
# Opening radius per level: cuts vessels and thin bridges to the rim. At
# 256 px, radius 2 (this one) gave a best-candidate IoU of 0.60, radius 4 0.56.
OPEN_RADIUS = 1
# Components smaller than this (work px) are specks: the smallest figshare
# tumour has 77 px at 256, 19 at 128.
MIN_AREA_PX = 8
# ... and larger than this share of the domain are the brain itself.
MAX_AREA_SHARE = 0.35
# Ring round a component where its surroundings are measured (work px).
RING_PX = 3
# The returned box is the component's bounding box grown by this (image px):
# thresholding cuts a tumour's soft edge. Measured on figshare at 256 px:
# 0 px gives mean IoU 0.46, 1 px 0.47, 2 px 0.47, 4 px 0.42.
BOX_PAD_PX = 1

# Brain domain: calm tissue has a grey level within CALM_BAND robust SDs of
# the brain's mode and a local SD (CALM_WINDOW px square) under CALM_STD times
# the median local SD of the stripped head. Its regions, after an erosion of
# DOMAIN_ERODE px cuts them from facial muscle, span the hull when they are at
# least DOMAIN_KEEP of the largest. Keeping only the largest lost phantom
# tumours that split the brain (phantom hit 0.72 instead of 0.84); keeping
# those over 0.2 let the face back in (held-out hit 0.05 lower). Measured:
# the domain is 59 % of the head on figshare, 67 % on phantoms; 2.5 % of
# figshare tumours (5.5 % of meningiomas, which sit on the brain's surface)
# and 13 % of phantom tumours lose more than half their area to it. The
# stripped head as domain: held-out hit 0.62, the whole head 0.65, this 0.70.
CALM_BAND = 2.5
CALM_WINDOW = 5
CALM_STD = 2.0
DOMAIN_ERODE = 2
DOMAIN_KEEP = 0.5
# A hull that keeps less than this share of the stripped head is a failure
# (a slice with little brain); the stripped head is used instead.
DOMAIN_MIN_SHARE = 0.3
# Smallest robust SD in grey levels: a flat synthetic head has none. The
# least spread measured was 3.7 on figshare and 11 on the phantoms.
MIN_SPREAD = 4.0

# Below this score the best component is reported with box None. 0.5
# maximises hit rate minus false-candidate rate on the phantoms: 0.72 - 0.34
# (0.4: 0.76 - 0.45; 0.6: 0.63 - 0.26). With no cut, figshare's hit rate is
# 0.76 instead of 0.70.
MIN_SCORE = 0.5

# Candidate features, in the scorer's order.
FEATURES = (
    "bright",  # 1: brighter than brain, 0: darker
    "level",  # threshold, robust SDs from the median
    "log_area",  # log(area / domain area)
    "log_area_sq",  # its square: the size prior peaks
    "log_contrast",  # log(mean z inside - mean z in the ring), polarity-signed, >= 0.05
    "bright_log_contrast",  # bright * log_contrast: enhancement counts more than darkness
    "mean",  # mean z inside, polarity-signed
    "std",  # SD of z inside
    "log_stability",  # log(area / parent's area at the previous level): 0 for sharp edges
    "edge",  # mean gradient on the outline (z per px)
    "elongation",  # sqrt(minor / major axis variance): 1 round, 0 a line (vessels)
    "ellipse_fill",  # area / area of the moments' ellipse: 1 solid, low ragged or ring
    "extent",  # area / box area
    "rim_share",  # share of the ring outside the domain (scalp, dura, face)
    "depth",  # mean distance to the domain's edge / the largest such distance
    "centre_distance",  # centroid to domain centroid / equivalent radius
)

# Logistic scorer: feature -> (mean, scale, weight); a region's logit is
# SCORER_BIAS + sum(weight * clip((value - mean) / scale, +-FEATURE_CLIP)).
# Fitted on the regions of the phantoms and of the figshare pituitary block
# (LogisticRegression, C=FIT_C; positives: box IoU >= FIT_POSITIVE_IOU) and
# printed by `python bench/bench_candidates.py --fit`. Size (a peak at about
# 1 % of the brain), contrast and compactness carry most of the weight.
SCORER_BIAS = -6.6206
SCORER = {
    "bright": (0.4590, 0.4983, +0.0480),
    "level": (1.3497, 0.8580, -0.2751),
    "log_area": (-5.0220, 1.2324, -0.0608),
    "log_area_sq": (26.7394, 11.5569, -1.8163),
    "log_contrast": (0.3923, 0.6859, +1.2233),
    "bright_log_contrast": (0.1904, 0.5658, +1.4197),
    "mean": (2.2174, 1.2738, +0.1476),
    "std": (0.5115, 0.4652, -0.6115),
    "log_stability": (-2.0409, 1.6827, +0.2426),
    "edge": (0.6885, 0.4986, -0.5184),
    "elongation": (0.5477, 0.2021, +0.8877),
    "ellipse_fill": (0.8989, 0.1521, +0.4254),
    "extent": (0.5577, 0.1338, +0.5614),
    "rim_share": (0.1598, 0.1742, -0.6896),
    "depth": (0.3104, 0.2676, -0.8457),
    "centre_distance": (0.7036, 0.2713, -0.7029),
}
# Slice score = sigmoid(slope * best component's logit + intercept): Platt
# scaling fitted on the phantoms, 155 with a tumour and 98 without, so 0.5
# is the more-likely-than-not cut at that mix.
PRESENCE = (0.8952, 1.7466)
FIT_C = 0.1
FIT_POSITIVE_IOU = 0.5
# Standardised features are clipped to +-this before the weights apply: a
# region far outside anything seen in training (a flat synthetic head, a
# 40-SD blob) must not get an extrapolated score.
FEATURE_CLIP = 6.0


@dataclass
class Candidate:
    """The tumour candidate of one slice."""

    box: Box | None  # x0 y0 x1 y1 (x1, y1 exclusive), image pixels; None: no candidate
    score: float  # probability-like confidence in [0, 1]
    reason: str  # one line: which cue won, with numbers
    head_area: int = 0  # head pixels, for the box's area share in `evaluate`


@dataclass
class Components:
    """Every candidate region of one slice, one row each."""

    features: np.ndarray  # (n, len(FEATURES))
    boxes: np.ndarray  # (n, 4) x0 y0 x1 y1 in image pixels


@dataclass
class Level:
    """The regions found at one threshold level (work pixels)."""

    table: dict[str, np.ndarray]  # feature name -> value per kept region
    boxes: np.ndarray  # (kept, 4)
    labels: np.ndarray  # connected-component label map of the level
    areas: np.ndarray  # area of each label


# --- brain domain ----------------------------------------------------------------


def _disk(radius: int) -> np.ndarray:
    return cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * radius + 1, 2 * radius + 1))


def _percentiles(values: np.ndarray, percents: tuple[float, ...]) -> list[float]:
    """Percentiles of uint8 values from their histogram (much faster than np.percentile)."""
    cumulative = np.cumsum(np.bincount(values.ravel(), minlength=256))
    return [float(np.searchsorted(cumulative, p / 100.0 * values.size)) for p in percents]


def calm_tissue(image: np.ndarray, region: np.ndarray) -> np.ndarray:
    """Pixels of `region` that look like healthy brain: the mode's grey level, smooth texture.

    Facial fat, air, bone and mucosa are far from the mode or rough; so are
    most tumours, which is why the hull of this mask, not the mask, is used.
    """
    grey = image.astype(np.float32)
    window = (CALM_WINDOW, CALM_WINDOW)
    mean = cv2.blur(grey, window)
    local_sd = np.sqrt(np.maximum(cv2.blur(grey * grey, window) - mean * mean, 0))
    typical_sd = float(np.median(local_sd[region]))
    smooth = region & (local_sd < typical_sd)
    if not smooth.any():
        return region
    levels = np.clip(mean[smooth], 0, 255).astype(np.uint8)
    histogram = np.convolve(np.bincount(levels, minlength=256), np.ones(7) / 7, "same")
    q1, q3 = _percentiles(levels, (25, 75))
    spread = max((q3 - q1) / 1.349, 3.0)
    return region & (np.abs(mean - np.argmax(histogram)) < CALM_BAND * spread) & (local_sd < CALM_STD * typical_sd)


def brain_domain(image: np.ndarray, head: np.ndarray) -> np.ndarray:
    """Where candidates are sought: the hull of the large calm regions inside the stripped head."""
    stripped = strip_skull(image, head)
    if not stripped.any():
        return head.copy()
    cores = cv2.erode(calm_tissue(image, stripped).astype(np.uint8), _disk(DOMAIN_ERODE))
    count, labels, stats, _ = cv2.connectedComponentsWithStats(cores, connectivity=8)
    if count <= 1:
        return stripped
    areas = stats[1:, cv2.CC_STAT_AREA]
    large = np.isin(labels, 1 + np.flatnonzero(areas >= DOMAIN_KEEP * areas.max())).astype(np.uint8)
    outline, _ = cv2.findContours(cv2.dilate(large, _disk(DOMAIN_ERODE + 1)), cv2.RETR_EXTERNAL,
                                  cv2.CHAIN_APPROX_SIMPLE)
    hull = np.zeros(image.shape, np.uint8)
    cv2.fillPoly(hull, [cv2.convexHull(np.concatenate(outline))], 1)
    domain = (hull > 0) & stripped
    if np.count_nonzero(domain) < DOMAIN_MIN_SHARE * np.count_nonzero(stripped):
        return stripped
    return domain


def standardise(image: np.ndarray, domain: np.ndarray) -> tuple[np.ndarray, float, float]:
    """Blurred grey levels in robust SDs from the domain's median; also (median, spread)."""
    blurred = cv2.GaussianBlur(image, (0, 0), SMOOTH_SIGMA)
    q1, median, q3 = _percentiles(blurred[domain], (25, 50, 75))
    spread = max((q3 - q1) / 1.349, MIN_SPREAD)
    return (blurred.astype(np.float32) - median) / spread, median, spread


# --- candidate regions and their features -----------------------------------------------


def threshold_levels(
    image: np.ndarray, domain: np.ndarray, median: float, spread: float, labels: np.ndarray | None
) -> list[tuple[int, tuple[float, ...]]]:
    """(sign, ascending levels) for bright (+1) and dark (-1) components.

    With a cluster map, the grey level halfway between each pair of adjacent
    cluster means (k-means' own boundary in 1D) joins the fixed levels.
    """
    bright, dark = set(BRIGHT_LEVELS), set(DARK_LEVELS)
    inside = domain & (labels >= 0) if labels is not None else None
    if inside is not None and inside.any():
        k = int(labels[inside].max()) + 1
        counts = np.bincount(labels[inside], minlength=k)
        sums = np.bincount(labels[inside], weights=image[inside].astype(np.float64), minlength=k)
        means = sums[counts > 0] / counts[counts > 0]
        for boundary in (means[1:] + means[:-1]) / 2:
            level = round(float((boundary - median) / spread), 2)
            if level >= min(BRIGHT_LEVELS):
                bright.add(level)
            elif -level >= min(DARK_LEVELS):
                dark.add(-level)
    return [(1, tuple(sorted(bright))), (-1, tuple(sorted(dark)))]


def to_work_size(image: np.ndarray, head: np.ndarray, labels: np.ndarray | None) -> tuple:
    """(image, head, labels, scale) on the copy whose longest side is at most WORK_SIZE."""
    scale = min(1.0, WORK_SIZE / max(image.shape))
    if scale == 1.0:
        return image, head, labels, scale
    size = (max(1, round(image.shape[1] * scale)), max(1, round(image.shape[0] * scale)))
    small = cv2.resize(image, size, interpolation=cv2.INTER_AREA)
    small_head = cv2.resize(head.astype(np.uint8), size, interpolation=cv2.INTER_NEAREST) > 0
    if labels is not None:
        labels = cv2.resize(labels.astype(np.int16), size, interpolation=cv2.INTER_NEAREST)
    return small, small_head, labels, scale


def component_table(image: np.ndarray, head: np.ndarray, labels: np.ndarray | None = None) -> Components:
    """Every candidate region of the slice with its features (see FEATURES) and box in image pixels."""
    small, small_head, small_labels, scale = to_work_size(image, head, labels)
    domain = brain_domain(small, small_head)
    area = int(np.count_nonzero(domain))
    if area < MIN_AREA_PX:
        return Components(np.zeros((0, len(FEATURES))), np.zeros((0, 4), int))
    z, median, spread = standardise(small, domain)
    depth = cv2.distanceTransform(domain.astype(np.uint8), cv2.DIST_L2, 3)
    moments = cv2.moments(domain.astype(np.uint8), binaryImage=True)
    context = {
        "domain": domain, "area": area, "depth": depth / max(float(depth.max()), 1.0),
        "gradient": cv2.magnitude(cv2.Sobel(z, cv2.CV_32F, 1, 0), cv2.Sobel(z, cv2.CV_32F, 0, 1)) / 8,
        "centre": (moments["m10"] / area, moments["m01"] / area), "radius": np.sqrt(area / np.pi),
    }
    features, boxes = [], []
    for sign, levels in threshold_levels(small, domain, median, spread, small_labels):
        previous = None
        for threshold in levels:
            previous = level_components(z, sign, threshold, context, previous)
            features.append(np.stack([previous.table[name] for name in FEATURES], axis=1))
            boxes.append(previous.boxes)
    boxes = np.concatenate(boxes).astype(np.float64) / scale
    # Back to image pixels, rounded outwards.
    boxes = np.concatenate([np.floor(boxes[:, :2] + 1e-6), np.ceil(boxes[:, 2:] - 1e-6)], axis=1).astype(int)
    return Components(np.concatenate(features), boxes)


def level_components(z: np.ndarray, sign: int, level: float, context: dict, previous: Level | None) -> Level:
    """Components of {sign * z > level} in the domain, with their features and boxes.

    Dark components (sign -1) are handled as bright ones of -z. Sums over
    each component come from np.bincount over its label, so a level costs the
    same whether it has two components or two hundred. `previous` is the
    looser level of the same polarity, whose regions hold these ones.
    """
    domain, domain_area = context["domain"], context["area"]
    zs = z if sign > 0 else -z
    mask = cv2.morphologyEx(((zs > level) & domain).astype(np.uint8), cv2.MORPH_OPEN, _disk(OPEN_RADIUS))
    count, labels, stats, _ = cv2.connectedComponentsWithStats(mask, connectivity=8)
    areas = stats[:, cv2.CC_STAT_AREA].astype(np.float64)
    pixels = np.flatnonzero(labels)
    owner = labels.ravel()[pixels]
    rows, cols = np.divmod(pixels, labels.shape[1])
    cols, rows = cols.astype(np.float64), rows.astype(np.float64)

    def total(values: np.ndarray) -> np.ndarray:
        """Sum over each component; `values` is a full map or one value per labelled pixel."""
        flat = values.ravel()
        return np.bincount(owner, weights=flat if flat.size == pixels.size else flat[pixels], minlength=count)

    keep = np.flatnonzero((areas >= MIN_AREA_PX) & (areas <= MAX_AREA_SHARE * domain_area))
    keep = keep[keep > 0]
    a = areas[keep]
    mean = total(zs)[keep] / a
    sd = np.sqrt(np.maximum(total(zs * zs)[keep] / a - mean**2, 0))

    # Ring: pixels within RING_PX, given to the highest label that reaches them.
    reach = cv2.dilate(labels.astype(np.uint16), _disk(RING_PX)).astype(np.intp)
    ring = (reach > 0) & (labels == 0)
    ring_in, ring_out = ring & domain, ring & ~domain
    n_in = np.bincount(reach[ring_in], minlength=count)[keep].astype(np.float64)
    n_out = np.bincount(reach[ring_out], minlength=count)[keep].astype(np.float64)
    ring_mean = np.bincount(reach[ring_in], weights=zs[ring_in], minlength=count)[keep] / np.maximum(n_in, 1)
    outline = (mask > 0) & (cv2.erode(mask, np.ones((3, 3), np.uint8)) == 0)
    perimeter = np.bincount(labels[outline], minlength=count)[keep]
    edge = np.bincount(labels[outline], weights=context["gradient"][outline], minlength=count)[keep]

    cx, cy = total(cols)[keep] / a, total(rows)[keep] / a
    cxx = total(cols * cols)[keep] / a - cx**2
    cyy = total(rows * rows)[keep] / a - cy**2
    cxy = total(cols * rows)[keep] / a - cx * cy
    det = np.maximum(cxx * cyy - cxy**2, 1e-6)
    half_trace = (cxx + cyy) / 2
    root = np.sqrt(np.maximum(half_trace**2 - det, 0))
    major, minor = half_trace + root, np.maximum(half_trace - root, 1e-6)
    x, y, w, h = (stats[keep, i] for i in range(4))

    if previous is None:
        parent = np.full(len(keep), float(domain_area))
    else:
        first = np.zeros(count, np.int64)
        first[owner[::-1]] = pixels[::-1]  # one pixel of each component
        parent = previous.areas[previous.labels.ravel()[first[keep]]]
    bright = np.full(len(keep), float(sign > 0))
    log_area = np.log(a / domain_area)
    log_contrast = np.log(np.maximum(mean - ring_mean, 0.05))
    table = {
        "bright": bright,
        "level": np.full(len(keep), float(level)),
        "log_area": log_area,
        "log_area_sq": log_area**2,
        "log_contrast": log_contrast,
        "bright_log_contrast": bright * log_contrast,
        "mean": mean,
        "std": sd,
        "log_stability": np.log(np.clip(a / np.maximum(parent, 1), 0.01, 1.0)),
        "edge": edge / np.maximum(perimeter, 1),
        "elongation": np.sqrt(minor / major),
        "ellipse_fill": np.minimum(a / (4 * np.pi * np.sqrt(det)), 1.5),
        "extent": a / (w * h),
        "rim_share": n_out / np.maximum(n_in + n_out, 1),
        "depth": total(context["depth"])[keep] / a,
        "centre_distance": np.hypot(cx - context["centre"][0], cy - context["centre"][1]) / context["radius"],
    }
    box = np.stack([x, y, x + w, y + h], axis=1).reshape(-1, 4)
    return Level(table, box, labels, areas)


# --- scoring and the answer ------------------------------------------------------------


def logits(features: np.ndarray) -> np.ndarray:
    """The scorer's logit of each component (rows of `features`, FEATURES order): higher is more tumour-like."""
    mean, scale, weight = (np.array([SCORER[name][i] for name in FEATURES]) for i in range(3))
    return SCORER_BIAS + np.clip((features - mean) / scale, -FEATURE_CLIP, FEATURE_CLIP) @ weight


def _sigmoid(x: np.ndarray | float) -> np.ndarray | float:
    return 1.0 / (1.0 + np.exp(-np.clip(x, -30, 30)))


def presence(best_logit: float) -> float:
    """Probability that the slice holds a tumour, from its best component's logit (PRESENCE)."""
    slope, intercept = PRESENCE
    return float(_sigmoid(slope * best_logit + intercept))


def find(image: np.ndarray, head: np.ndarray, labels: np.ndarray | None = None) -> Candidate:
    """The best tumour candidate of a cleaned slice, or box None when the best scores under MIN_SCORE.

    image: uint8 grey (H, W); head: bool mask of the same shape
    (`lib.preprocess.clean.head_mask`); labels: optional cluster map from
    `lib.regions.cluster.fit(image, head, k).labels` (-1 outside the head), whose
    boundaries become extra threshold levels.
    """
    if image.shape[:2] != head.shape or (labels is not None and labels.shape != head.shape):
        raise ValueError(f"image {image.shape}, head {head.shape} and labels must have the same shape")
    head_area = int(np.count_nonzero(head))
    if head_area == 0:
        return Candidate(None, 0.0, "empty head mask", 0)
    table = component_table(image, head, labels)
    if len(table.boxes) == 0:
        return Candidate(None, 0.0, "no region stands out from the brain at any level", head_area)
    ranked = logits(table.features)
    best = int(np.argmax(ranked))
    row = dict(zip(FEATURES, table.features[best]))
    confidence = presence(ranked[best])
    runner_up = presence(np.partition(ranked, -2)[-2]) if len(ranked) > 1 else 0.0
    polarity = "bright" if row["bright"] else "dark"
    why = (f"{polarity} region at {'+' if row['bright'] else '-'}{row['level']:.1f} SD: "
           f"{np.exp(row['log_area']):.1%} of brain, contrast {np.exp(row['log_contrast']):.1f} SD to its ring, "
           f"score {confidence:.2f} (next region {runner_up:.2f}, {len(ranked)} regions)")
    if confidence < MIN_SCORE:
        return Candidate(None, confidence, f"none: best is a {why} < {MIN_SCORE}", head_area)
    return Candidate(pad_box(tuple(table.boxes[best]), image.shape), confidence, why, head_area)


def pad_box(box: Box, shape: tuple[int, ...]) -> Box:
    """Grow a box by BOX_PAD_PX on each side, clipped to the image."""
    x0, y0, x1, y1 = (int(v) for v in box)
    return (max(x0 - BOX_PAD_PX, 0), max(y0 - BOX_PAD_PX, 0),
            min(x1 + BOX_PAD_PX, shape[1]), min(y1 + BOX_PAD_PX, shape[0]))


def fit_scorer(features: np.ndarray, ious: np.ndarray) -> tuple[float, dict[str, tuple[float, float, float]]]:
    """(SCORER_BIAS, SCORER) fitted on components of training slices and their box IoUs with the truth.

    Logistic regression on standardised features; a component whose box has
    IoU >= FIT_POSITIVE_IOU with the true box is a positive. Print the result
    into the constants above (bench/bench_candidates.py --fit does).
    """
    from sklearn.linear_model import LogisticRegression

    mean, scale = features.mean(axis=0), features.std(axis=0) + 1e-9
    model = LogisticRegression(C=FIT_C, max_iter=5000).fit((features - mean) / scale, ious >= FIT_POSITIVE_IOU)
    table = {name: (float(m), float(s), float(w)) for name, m, s, w in zip(FEATURES, mean, scale, model.coef_[0])}
    return float(model.intercept_[0]), table


def fit_presence(best_logits: np.ndarray, has_tumour: np.ndarray) -> tuple[float, float]:
    """PRESENCE (slope, intercept): Platt scaling of each slice's best logit against whether it has a tumour."""
    from sklearn.linear_model import LogisticRegression

    model = LogisticRegression(C=1e6).fit(np.asarray(best_logits).reshape(-1, 1), np.asarray(has_tumour, bool))
    return float(model.coef_[0, 0]), float(model.intercept_[0])


# --- boxes and evaluation --------------------------------------------------------------


def box_text(box: Box | None) -> str:
    """'x0 y0 x1 y1', or '' for no box (the manifest's spelling)."""
    return "" if box is None else " ".join(str(int(v)) for v in box)


def parse_box_text(text: str) -> Box | None:
    """Inverse of box_text; '' (or only spaces) is None."""
    parts = str(text).split()
    if not parts:
        return None
    if len(parts) != 4:
        raise ValueError(f"a box is four integers 'x0 y0 x1 y1', got {text!r}")
    x0, y0, x1, y1 = (int(p) for p in parts)
    return x0, y0, x1, y1


def mask_box(mask: np.ndarray) -> Box | None:
    """Bounding box of a bool mask (x1, y1 exclusive), None when it is empty."""
    if not mask.any():
        return None
    x, y, w, h = cv2.boundingRect(mask.astype(np.uint8))
    return x, y, x + w, y + h


def box_hit(box: Box | None, mask: np.ndarray) -> bool:
    """Does the box hold at least one pixel of the mask?"""
    if box is None:
        return False
    x0, y0, x1, y1 = box
    return bool(mask[max(y0, 0) : max(y1, 0), max(x0, 0) : max(x1, 0)].any())


def _area(box: Box) -> int:
    return max(box[2] - box[0], 0) * max(box[3] - box[1], 0)


def box_iou(box: Box | None, mask: np.ndarray) -> float:
    """IoU of the box with the mask's bounding box; 0 when either is missing."""
    truth = mask_box(mask)
    if box is None or truth is None:
        return 0.0
    overlap = (max(min(box[2], truth[2]) - max(box[0], truth[0]), 0)
               * max(min(box[3], truth[3]) - max(box[1], truth[1]), 0))
    union = _area(box) + _area(truth) - overlap
    return overlap / union if union > 0 else 0.0


def evaluate(results: list[tuple[Candidate, np.ndarray]]) -> dict[str, float]:
    """Box quality over (candidate, true mask) pairs.

    Tumour slices (non-empty mask): hit_rate (the box holds a tumour pixel),
    hit_rate_iou30 (box IoU >= 0.3), mean / median box IoU (no box counts 0),
    no_candidate (share without a box), box_area_share (mean box area over
    head area, boxes only). Tumour-free slices (empty mask):
    false_candidate_rate (share that got a box anyway).
    """
    tumour = [(c, m) for c, m in results if m.any()]
    free = [c for c, m in results if not m.any()]
    out: dict[str, float] = {"n_tumour": len(tumour), "n_tumour_free": len(free)}
    if tumour:
        ious = np.array([box_iou(c.box, m) for c, m in tumour])
        shares = [_area(c.box) / c.head_area for c, _ in tumour if c.box is not None and c.head_area > 0]
        out.update({
            "hit_rate": float(np.mean([box_hit(c.box, m) for c, m in tumour])),
            "hit_rate_iou30": float(np.mean(ious >= 0.3)),
            "mean_box_iou": float(ious.mean()),
            "median_box_iou": float(np.median(ious)),
            "no_candidate": float(np.mean([c.box is None for c, _ in tumour])),
            "box_area_share": float(np.mean(shares)) if shares else 0.0,
        })
    if free:
        out["false_candidate_rate"] = float(np.mean([c.box is not None for c in free]))
    return out
