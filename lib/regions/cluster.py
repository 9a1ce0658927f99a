"""Split the head of a 2D MRI slice into intensity classes (stage 04_cluster).

Why: a tumour on T1 contrast-enhanced MRI is, first of all, a region whose
grey level differs from the tissue around it. K-means on the grey levels
inside the head gives k classes (background-like dark, CSF, grey and white
matter, bright enhancement ...) that later stages use as candidate regions
and as features, and that a person can check at a glance in false colour.

What is here:

- `fit`: k-means on a random sample of head pixels (fast), then every head
  pixel goes to its nearest centre. For pure intensity that is a 256-entry
  lookup table from grey level to cluster, so assignment costs one index per
  pixel. Clusters are numbered by increasing mean grey level, so cluster 0 is
  the darkest and the colours of `PALETTE` always mean the same thing.
- `sweep`, `mean_sweep`, `choose_k`, `plot_sweep`: how many classes? WCSS,
  BCSS, silhouette and Calinski-Harabasz for k = 2..20, averaged over many
  slices, and a rule that picks k (the silhouette peak when classes are
  clearly separate, else the WCSS elbow; see `choose_k`).
- `watershed_regions`, `chan_vese`: two region-based alternatives, seeded by
  or compared with the clusters (scikit-image does the work).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import cv2
import matplotlib

matplotlib.use("Agg")  # files only; never open a window
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402
from scipy.spatial.distance import cdist  # noqa: E402
from skimage.filters import sobel, threshold_otsu  # noqa: E402
from skimage.segmentation import morphological_chan_vese, watershed  # noqa: E402

from lib.common.report import save_figure  # noqa: E402

# --- parameters ------------------------------------------------------------------

# Number of clusters when the caller does not say. Measured by
# `python bench/bench_cluster.py --choose`: choose_k on the mean of 100
# normalised sweeps (k = 2..20) per cleaned set; bench/results/k_choice.json.
#   figshare T1-CE  k=5  elbow distance 0.667, WCSS share 0.071; silhouette max 0.630 (k=2)
#   navoneel        k=5  elbow distance 0.686, WCSS share 0.058; silhouette max 0.653 (k=2)
#   phantoms        k=5  elbow distance 0.690, WCSS share 0.058; silhouette max 0.633 (k=3)
#   all 300 slices  k=5  elbow distance 0.681, WCSS share 0.062 (k=4: 0.096, k=6: 0.044)
# Per slice the rule says 5 for 57-70% of slices, 6 for 22-30%, 4 for 0-18%.
DEFAULT_K = 5

# Head pixels k-means is fitted on. 2000 pins the centres to about one grey
# level; OpenCV's k-means costs ~1 ms per 1000 pixels and restart, so more is
# slower and changes nothing visible.
SAMPLE = 2000
# Pixels per image for `sweep` (the same sample for every k, so curves are smooth).
SWEEP_SAMPLE = 3000
# Silhouette needs all pairwise distances: O(n^2), so it is measured on a
# subsample of this many of the sweep's pixels (one distance matrix for all k;
# sklearn then costs ~12 ms per k at 1000).
SILHOUETTE_SAMPLE = 1000

# K-means restarts (k-means++ seeds); the lowest WCSS wins. One restart can
# stall in a poor local minimum on multi-modal histograms; 3 rarely does.
N_INIT = 3
# Restarts per k in `sweep`: 19 fits per image, so fewer; 2 keeps WCSS monotone in k.
SWEEP_N_INIT = 2
# Lloyd iterations stop after this many or when no centre moves more than
# KMEANS_EPS (grey levels, or scaled feature units).
KMEANS_ITERATIONS = 100
KMEANS_EPS = 0.01

# Extra features are scaled so that their spread over the head is this share of
# the spread of intensity: intensity stays the main cue, position makes
# clusters spatially compact, texture separates smooth from speckled tissue.
POSITION_WEIGHT = 0.5
TEXTURE_WEIGHT = 0.5
# Window (pixels) of the local standard deviation, and Gaussian sigma before
# the gradient: texture at the scale of a few pixels, not of JPEG noise.
TEXTURE_WINDOW = 5
GRADIENT_SIGMA = 1.0
FEATURES = ("intensity", "intensity+position", "intensity+texture")

# `choose_k` trusts the silhouette's maximum from this value up. Kaufman and
# Rousseeuw call 0.7 "strong structure", but cleaned slices reach it by merely
# splitting the grey-level continuum into dark and bright (k=2 or 3; per-slice
# maximum: median 0.64-0.68, highest 0.80, 1 slice of 300 >= 0.8), while
# synthetic slices with classes 50+ grey levels apart and noise sigma <= 10
# reach 0.80-0.93.
SILHOUETTE_STRONG = 0.8

# Watershed: markers are the cores of cluster regions (pixels whose whole
# (2r+1)^2 neighbourhood lies in one cluster, r = MARKER_RADIUS) with at least
# MARKER_MIN_AREA pixels; fewer, larger markers mean fewer, larger regions.
MARKER_RADIUS = 1
MARKER_MIN_AREA = 20
# Gaussian sigma before the Sobel gradient the watershed floods.
WATERSHED_SIGMA = 1.0

# Morphological Chan-Vese: iterations (it starts from an Otsu split and settles
# within 10 on real slices; each costs ~10 ms at 256 px) and smoothing passes
# per iteration (larger: rounder outlines, small bright spots dropped).
CV_ITERATIONS = 20
CV_SMOOTHING = 1

# Cluster colours in order of intensity: darkest black, then the conventional
# false-colour ramp, then more distinct colours for large k.
PALETTE = np.array(
    [
        (0, 0, 0),  # 0 black (darkest)
        (128, 0, 128),  # purple
        (0, 0, 255),  # blue
        (0, 255, 255),  # cyan
        (135, 206, 250),  # light blue
        (0, 200, 0),  # green
        (255, 255, 0),  # yellow
        (255, 105, 180),  # pink
        (255, 140, 0),  # orange
        (255, 0, 0),  # red
        (128, 0, 0),  # maroon
        (139, 69, 19),  # brown
        (128, 128, 0),  # olive
        (0, 128, 128),  # teal
        (0, 0, 128),  # navy
        (191, 255, 0),  # lime
        (255, 0, 255),  # magenta
        (255, 215, 0),  # gold
        (250, 128, 114),  # salmon
        (230, 190, 255),  # lavender
        (128, 128, 128),  # grey
        (170, 255, 195),  # mint
        (255, 250, 200),  # beige
        (255, 255, 255),  # white
    ],
    dtype=np.uint8,
)

SWEEP_COLUMNS = ["k", "wcss", "bcss", "silhouette", "calinski_harabasz"]


@dataclass
class Clustering:
    """Cluster labels of one slice and what they were fitted to."""

    labels: np.ndarray  # (H, W) int16, -1 outside the head, 0..k-1 by increasing mean intensity
    means: np.ndarray  # (k,) float32 mean grey level of each cluster over the head, ascending
    centers: np.ndarray  # (k, n_features) float32 centres in feature space, same order
    inertia: float  # WCSS on the fitted sample, in feature units squared

    @property
    def k(self) -> int:
        return len(self.means)


# --- k-means ---------------------------------------------------------------------


def kmeans(points: np.ndarray, k: int, seed: int, attempts: int = N_INIT) -> tuple[float, np.ndarray, np.ndarray]:
    """OpenCV k-means++ with `attempts` restarts: (WCSS, labels, centres).

    OpenCV's is about 5x faster than scikit-learn's on a few thousand points
    (no per-call thread-pool set-up). Its random generator is per thread and
    seeded here, so the result depends on `seed` only.
    """
    cv2.setRNGSeed(seed)
    criteria = (cv2.TERM_CRITERIA_EPS + cv2.TERM_CRITERIA_MAX_ITER, KMEANS_ITERATIONS, KMEANS_EPS)
    wcss, labels, centres = cv2.kmeans(
        np.ascontiguousarray(points, dtype=np.float32), k, None, criteria, attempts, cv2.KMEANS_PP_CENTERS
    )
    return float(wcss), labels.ravel(), centres


def head_sample(head: np.ndarray, size: int, seed: int) -> np.ndarray:
    """Positions in `image[head]` of up to `size` random head pixels (all of them when fewer)."""
    count = int(np.count_nonzero(head))
    if count <= size:
        return np.arange(count)
    return np.random.default_rng(seed).choice(count, size, replace=False)


def head_features(image: np.ndarray, head: np.ndarray, features: str) -> np.ndarray:
    """(head pixels, n_features) float32, in `image[head]` order: grey level, then scaled extras.

    Column 0 is always the grey level, so centres stay readable. Extra columns
    are scaled to POSITION_WEIGHT / TEXTURE_WEIGHT of the grey level's
    standard deviation over the head, so one setting suits every slice.
    """
    if features not in FEATURES:
        raise ValueError(f"features={features!r}; expected one of {', '.join(FEATURES)}")
    grey = image.astype(np.float32)
    columns = [grey]
    if features == "intensity+position":
        rows, cols = np.indices(image.shape, dtype=np.float32)
        columns += [rows, cols]
        weight = POSITION_WEIGHT
    elif features == "intensity+texture":
        mean = cv2.blur(grey, (TEXTURE_WINDOW, TEXTURE_WINDOW))
        local_std = np.sqrt(np.maximum(cv2.blur(grey * grey, (TEXTURE_WINDOW, TEXTURE_WINDOW)) - mean * mean, 0))
        smooth = cv2.GaussianBlur(grey, (0, 0), GRADIENT_SIGMA)
        gradient = cv2.magnitude(cv2.Sobel(smooth, cv2.CV_32F, 1, 0), cv2.Sobel(smooth, cv2.CV_32F, 0, 1))
        columns += [local_std, gradient]
        weight = TEXTURE_WEIGHT
    table = np.stack([c[head] for c in columns], axis=1)
    if table.shape[1] > 1:
        spread = table.std(axis=0) + 1e-6
        table[:, 1:] *= weight * spread[0] / spread[1:]
    return table


def fit(
    image: np.ndarray,
    head: np.ndarray,
    k: int = DEFAULT_K,
    features: str = "intensity",
    sample: int = SAMPLE,
    seed: int = 0,
) -> Clustering:
    """K-means clusters of the head pixels, numbered by increasing mean grey level.

    Fitted on `sample` random head pixels, then every head pixel is assigned
    to its nearest centre. When the sample holds fewer distinct values than
    `k` (a flat synthetic image), fewer clusters come back.
    """
    if image.shape != head.shape:
        raise ValueError(f"image {image.shape} and head {head.shape} differ in shape")
    if not head.any():
        raise ValueError("no head in this slice (an empty head mask: a blank or uniform image), nothing to cluster; "
                         "look at the image, and remove it from the input or export it again")
    grey = image[head]
    picked = head_sample(head, sample, seed)
    k = min(k, int(np.count_nonzero(np.bincount(grey[picked], minlength=256))))
    if features == "intensity":
        inertia, _, centres = kmeans(grey[picked].astype(np.float32).reshape(-1, 1), k, seed)
        # Nearest centre for every grey level, then one table look-up per pixel.
        lut = np.abs(np.arange(256, dtype=np.float32)[:, None] - centres[:, 0][None, :]).argmin(axis=1)
        raw = lut[grey]
    else:
        table = head_features(image, head, features)
        inertia, _, centres = kmeans(table[picked], k, seed)
        raw = cdist(table, centres, "sqeuclidean").argmin(axis=1)
    return ordered(image, head, raw, centres, inertia)


def ordered(image: np.ndarray, head: np.ndarray, raw: np.ndarray, centres: np.ndarray, inertia: float) -> Clustering:
    """Renumber clusters by the mean grey level of their head pixels (darkest = 0)."""
    k = len(centres)
    counts = np.bincount(raw, minlength=k)
    sums = np.bincount(raw, weights=image[head].astype(np.float64), minlength=k)
    means = np.where(counts > 0, sums / np.maximum(counts, 1), centres[:, 0])
    order = np.argsort(means, kind="stable")
    rank = np.empty(k, np.int16)
    rank[order] = np.arange(k, dtype=np.int16)
    labels = np.full(image.shape, -1, np.int16)
    labels[head] = rank[raw]
    return Clustering(labels, means[order].astype(np.float32), centres[order].astype(np.float32), inertia)


# --- how many clusters -------------------------------------------------------------


def sweep(
    image: np.ndarray, head: np.ndarray, ks: range = range(2, 21), sample: int = SWEEP_SAMPLE, seed: int = 0
) -> pd.DataFrame:
    """Cluster-quality measures of intensity k-means for each k, on one pixel sample.

    wcss: within-cluster sum of squares (falls with k); bcss: total SS - WCSS
    (rises); silhouette: cohesion vs separation in [-1, 1] (peaks at a
    natural k), on SILHOUETTE_SAMPLE pixels; calinski_harabasz: BCSS/(k-1)
    over WCSS/(n-k). k values above the sample's number of distinct grey
    levels give NaN rows.
    """
    # Imported here: sklearn.metrics takes ~3 s to import and only sweeps need it.
    from sklearn.metrics import calinski_harabasz_score, silhouette_score

    grey = image[head][head_sample(head, sample, seed)]
    points = grey.astype(np.float32).reshape(-1, 1)
    total = float(((points - points.mean()) ** 2).sum())
    distinct = int(np.count_nonzero(np.bincount(grey, minlength=256)))
    # Silhouette on a fixed subsample, its distance matrix computed once for every k.
    subset = np.random.default_rng(seed).permutation(len(points))[:SILHOUETTE_SAMPLE]
    distances = np.abs(points[subset] - points[subset].T).astype(np.float64)
    rows = []
    for k in ks:
        if k > distinct or k >= len(points):
            rows.append({"k": k, "wcss": np.nan, "bcss": np.nan, "silhouette": np.nan, "calinski_harabasz": np.nan})
            continue
        wcss, labels, _ = kmeans(points, k, seed, SWEEP_N_INIT)
        rows.append({
            "k": k,
            "wcss": wcss,
            "bcss": total - wcss,
            "silhouette": float(silhouette_score(distances, labels[subset], metric="precomputed")),
            "calinski_harabasz": float(calinski_harabasz_score(points, labels)),
        })
    return pd.DataFrame(rows, columns=SWEEP_COLUMNS)


def mean_sweep(tables: list[pd.DataFrame]) -> pd.DataFrame:
    """Average of several sweeps after normalising each per image.

    WCSS and BCSS become shares of the image's total sum of squares (they add
    to 1), Calinski-Harabasz is divided by its maximum over k; the silhouette
    is already on a common scale. Without this, high-contrast slices would
    outvote the rest.
    """
    normalised = []
    for table in tables:
        t = table.copy()
        total = t["wcss"] + t["bcss"]
        t["wcss"], t["bcss"] = t["wcss"] / total, t["bcss"] / total
        t["calinski_harabasz"] = t["calinski_harabasz"] / t["calinski_harabasz"].max()
        normalised.append(t)
    return pd.concat(normalised).groupby("k", as_index=False)[SWEEP_COLUMNS[1:]].mean()[SWEEP_COLUMNS]


def elbow(ks: np.ndarray, wcss: np.ndarray) -> tuple[int, float]:
    """Kneedle elbow of a falling curve: the k farthest below the chord from first to last point.

    Both axes are scaled to [0, 1] first, so the rule ignores units and
    normalisation; it does depend on the range of k (DEFAULT_K was measured
    on 2..20). Returns k and its distance below the chord.
    """
    x = (ks - ks[0]) / (ks[-1] - ks[0])
    y = (wcss - wcss.min()) / max(wcss.max() - wcss.min(), 1e-12)
    gap = (1.0 - x) - y  # the chord runs from (0, 1) to (1, 0)
    best = int(np.argmax(gap))
    return int(ks[best]), float(gap[best])


def choose_k(table: pd.DataFrame) -> tuple[int, str]:
    """Number of clusters from a sweep (one image's or `mean_sweep`'s) and a one-line reason.

    Rule: the silhouette maximum when it shows strong structure (at least
    SILHOUETTE_STRONG), else the WCSS elbow (`elbow`). Why both: when classes
    are separated by clear gaps, the silhouette peaks exactly at their number,
    even when one class is small (the elbow then overshoots by splitting the
    big class). Real tissue is a continuum, not separate classes: there the
    silhouette peaks at k=2 or 3 (dark vs bright; below 0.8 on 299 of 300
    cleaned slices), which says nothing about tissue classes, while the elbow
    marks where extra clusters stop paying for themselves. Calinski-Harabasz
    only rises with k on one-dimensional grey levels, so it is shown, not used.
    """
    t = table.dropna().sort_values("k")
    best = t.loc[t["silhouette"].idxmax()]
    if best["silhouette"] >= SILHOUETTE_STRONG:
        k = int(best["k"])
        return k, f"silhouette maximum {best['silhouette']:.3f} at k={k} (>= {SILHOUETTE_STRONG}: separate classes)"
    k, gap = elbow(t["k"].to_numpy(float), t["wcss"].to_numpy(float))
    row = t[t["k"] == k].iloc[0]
    share = row["wcss"] / (row["wcss"] + row["bcss"])
    return k, (
        f"WCSS elbow at k={k} (distance {gap:.3f} below the chord, WCSS share {share:.3f})"
        f"; silhouette maximum {best['silhouette']:.3f} at k={int(best['k'])} < {SILHOUETTE_STRONG}"
    )


def plot_sweep(table: pd.DataFrame, path: Path, title: str) -> Path:
    """WCSS, BCSS, silhouette and Calinski-Harabasz against k, chosen k marked."""
    k, reason = choose_k(table)
    fig, axes = plt.subplots(1, 4, figsize=(16, 3.6))
    for ax, column, name in zip(axes, SWEEP_COLUMNS[1:], ("WCSS", "BCSS", "silhouette", "Calinski-Harabasz")):
        ax.plot(table["k"], table[column], "o-", ms=3)
        ax.axvline(k, color="tab:red", ls="--", lw=1)
        ax.set(xlabel="k", title=name)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
    fig.suptitle(f"{title}\n{reason}", fontsize=10)
    fig.tight_layout()
    return save_figure(fig, Path(path))


# --- pictures --------------------------------------------------------------------


def colourise(labels: np.ndarray) -> np.ndarray:
    """(H, W, 3) uint8 RGB: cluster i gets PALETTE[i], -1 (outside the head) black.

    Labels past the palette wrap round its colours after black.
    """
    index = np.where(labels < 0, 0, labels).astype(np.intp)
    wrapped = np.where(index >= len(PALETTE), 1 + (index - 1) % (len(PALETTE) - 1), index)
    return PALETTE[wrapped]


# --- region-based alternatives ------------------------------------------------------


def cluster_markers(labels: np.ndarray) -> np.ndarray:
    """int32 markers: the cores of cluster regions, each connected core numbered 1..n.

    A core pixel's whole neighbourhood lies in one cluster, so cores of
    different clusters never touch and one connected-components pass numbers
    them all. Cores smaller than MARKER_MIN_AREA are noise and dropped.
    """
    kernel = np.ones((2 * MARKER_RADIUS + 1,) * 2, np.uint8)
    core = (cv2.erode(labels, kernel) == cv2.dilate(labels, kernel)) & (labels >= 0)
    count, regions, stats, _ = cv2.connectedComponentsWithStats(core.astype(np.uint8), connectivity=8)
    keep = stats[:, cv2.CC_STAT_AREA] >= MARKER_MIN_AREA
    keep[0] = False
    numbers = np.zeros(count, np.int32)
    numbers[keep] = np.arange(1, np.count_nonzero(keep) + 1)
    return numbers[regions]


def watershed_regions(image: np.ndarray, head: np.ndarray, clustering: Clustering) -> np.ndarray:
    """int32 regions: watershed of the gradient inside the head, flooded from cluster cores.

    Why: k-means labels ignore space, so one class breaks into speckle along
    noisy edges; flooding the gradient from the cluster cores gives connected
    regions whose borders sit on real edges. 0 outside the head.
    """
    smooth = cv2.GaussianBlur(image, (0, 0), WATERSHED_SIGMA)
    markers = cluster_markers(clustering.labels)
    regions = watershed(sobel(smooth), markers, mask=head)
    return regions.astype(np.int32)


def chan_vese(image: np.ndarray, head: np.ndarray, iterations: int = CV_ITERATIONS) -> np.ndarray:
    """bool: the brighter phase of a two-phase morphological Chan-Vese fit inside the head.

    Why: unlike a threshold, Chan-Vese trades region means against outline
    length, so noisy pixels do not break the region apart. It runs on the
    head's bounding box, starting from an Otsu split of the head; pixels
    outside the head are set to the dark phase's starting mean so the black
    background does not drag that mean down.
    """
    result = np.zeros(image.shape, bool)
    if not head.any():
        return result
    x, y, w, h = cv2.boundingRect(head.astype(np.uint8))
    box = np.s_[y : y + h, x : x + w]
    crop, inside = image[box].astype(np.float64) / 255.0, head[box]
    values = crop[inside]
    level = threshold_otsu(values) if np.ptp(values) > 0 else values[0]
    start = inside & (crop > level)
    dark = values[values <= level]
    crop[~inside] = dark.mean() if len(dark) else 0.0
    phase = morphological_chan_vese(crop, iterations, init_level_set=start, smoothing=CV_SMOOTHING).astype(bool)
    phase &= inside
    rest = inside & ~phase
    if phase.any() and rest.any() and crop[phase].mean() < crop[rest].mean():
        phase = rest
    result[box] = phase
    return result
