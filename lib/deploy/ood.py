"""Is it a brain MRI slice at all? A check that says why not, before a photo gets "tumour, 0.82".

Why: a classifier answers every input. A colour photo, a screenshot or a page
of text gets a tumour probability like any slice, and a user may believe it.
Two kinds of evidence, each blind where the other sees:

- cheap traits of an MRI slice as 02 sees it: it is grey (an RGB file of a
  slice has equal channels); 02 finds a head in it; the head lies on a dark
  background; its grey levels vary smoothly and noisily, not in flat patches
  of one value as logos, drawings and screens do. These catch colour
  pictures, screens and graphics, but not a grey photo of a cat;
- what LiteMedSAM, a medical image encoder, sees: the slice's pooled
  embedding must lie near the embeddings of real brain MRI slices (cosine
  distance to the nearest of a few dozen reference centres). This catches
  the grey photos, but alone it lets some textured graphics through.
  The embedding is asked only when the traits pass, and first on 02's crop
  shrunk to SHORTCUT_SIZE (128 px: 35 ms on 2 cores, against 124 ms at the
  encoder's own 256): a slice as close to the reference as SHORTCUT_QUANTILE
  of the tuning slices is accepted there; any other is judged at 256 px. So
  the verdicts are the full-size check's (bench/bench_ood.py: the same on
  the 548 held-out navoneel, figshare and scanner slices and the 188 non-MRI
  pictures; one lgg slice and one phantom more accepted) at about a third
  of its cost for 86 % of real slices; 128 px alone had let the camera man
  and another grey photo through.
  A slice of under LOW_SIDE pixels (an old 64x64 scan, a 2 mm volume)
  looks blurred to the encoder once enlarged, so it is compared with
  centres of the tuning slices shrunk to LOW_SIDES instead.

A slice passes when it passes both. Every limit and the reference centres
come from MRI slices only (`python bench/bench_ood.py --choose`, which writes
REFERENCE_FILE), never from the non-MRI pictures the check is scored on. A
slice that fails still gets its prediction: predict.py's `ood` column and the
demo's warning say what failed, so a user can judge.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from lib.common import medsam_encoder
from lib.common.io import to_grey
from lib.preprocess import clean

REFERENCE_FILE = Path(__file__).with_name("ood_reference.json")
DARK = 0.1  # "dark": below this share of the slice's 99th-percentile grey level
RULE_MARGIN = 1.5  # how far past the tuning slices' extremes a trait's limit lies (border_dark: divided by it)
EMBEDDING_MARGIN = 1.15  # the same for the embedding distance
EMBEDDING_QUANTILE = 99.5  # percentile of the tuning slices' (cross-fitted) distances that the margin widens
VIEW_SIZE = 256  # side of 02's crop the reference describes (clean_image's default, no skull stripping)
FULL_SIZE = medsam_encoder.IMAGE_SIZE  # the encoder's own input side: the reference's centres
SHORTCUT_SIZE = medsam_encoder.CHECK_SIZE  # the quick pass: the crop shrunk to this side
SHORTCUT_QUANTILE = 95  # percentile of the tuning slices' (cross-fitted) quick-pass distances accepted outright
CENTRES = 32  # reference centres (k-means of the tuning slices' embeddings)
LOW_SIDE = 96  # a slice whose longest side is shorter is compared with the low-resolution centres
LOW_SIDES = (64, 40)  # longest sides the tuning slices are shrunk to for the low-resolution centres
MODES = ("full", "rules", "off")  # full: traits + embedding; rules: traits only (no LiteMedSAM); off: no check


@dataclass(frozen=True)
class Traits:
    """The cheap measures of one decoded image."""

    colour: float  # mean spread between the RGB channels, grey levels (0 for a grey file)
    head_found: bool  # whether 02's head search found a head
    flat_share: float  # share of head pixels in a patch of one grey value (zero Sobel gradient)
    border_dark: float  # share of the border band that is dark
    outside_ratio: float  # 90th percentile of the grey outside the head / median grey inside it
    side: int  # the longest side in pixels: picks the full or the low-resolution reference


def traits(pixels: np.ndarray, cleaned: clean.CleanResult | None = None) -> Traits:
    """Traits of `pixels` (lib.common.io.read_image(...).pixels); `cleaned` is 02's result when already made."""
    cleaned = cleaned or clean.clean_image(pixels)
    grey = to_grey(pixels).copy()
    clean.remove_white_frame(grey)  # as 02 does first: a white frame or background is packaging, not scene
    clean.remove_white_background(grey)
    head = cleaned.head_mask
    inside = grey[head] if head.any() else grey.ravel()
    outside = grey[~head] if (~head).any() else np.zeros(1, np.uint8)
    top = max(1.0, float(np.percentile(grey, 99)))
    gradient = np.abs(cv2.Sobel(grey, cv2.CV_32F, 1, 0)) + np.abs(cv2.Sobel(grey, cv2.CV_32F, 0, 1))
    return Traits(
        colour=colour_spread(pixels), head_found="no_head_found" not in cleaned.flags,
        flat_share=float((gradient[head] == 0).mean()) if head.any() else 1.0,
        border_dark=float((clean.border_band(grey) < DARK * top).mean()),
        outside_ratio=float(np.percentile(outside, 90)) / max(1.0, float(np.median(inside))),
        side=int(max(pixels.shape[:2])))


def colour_spread(pixels: np.ndarray) -> float:
    """Mean of (largest - smallest channel) over the pixels: 0 for any grey picture, RGB-stored or not."""
    if pixels.ndim == 2:
        return 0.0
    channels = cv2.split(np.ascontiguousarray(pixels))  # OpenCV: numpy's max over a 3-long last axis is slow
    return float(cv2.mean(cv2.subtract(cv2.max(cv2.max(*channels[:2]), channels[2]),
                                       cv2.min(cv2.min(*channels[:2]), channels[2])))[0])


def trait_reasons(found: Traits, limits: dict[str, float]) -> list[str]:
    """Why the traits do not look like a brain MRI slice, one phrase per failed check; [] when they do."""
    out = []
    if found.colour > limits["colour"]:
        out.append(f"a colour image (channels differ by {found.colour:.0f} grey levels; MRI slices are grey)")
    if not found.head_found:
        out.append("no head found")
    if found.flat_share > limits["flat_share"]:
        out.append(f"{100 * found.flat_share:.0f} % of it is flat patches of one grey value (a drawing or screen?)")
    if found.border_dark < limits["border_dark"] and found.outside_ratio > limits["outside_ratio"]:
        out.append("no dark background around the object (an MRI slice shows the head on black)")
    return out


def trait_limits(tuning: list[Traits]) -> dict[str, float]:
    """Limits past the most extreme MRI tuning slice by RULE_MARGIN (lower for border_dark, the only 'at least')."""
    column = {name: np.array([getattr(t, name) for t in tuning], float) for name in Traits.__annotations__}
    return {"colour": max(1.0, float(column["colour"].max())) * RULE_MARGIN,
            "flat_share": float(column["flat_share"].max()) * RULE_MARGIN,
            "border_dark": float(column["border_dark"].min()) / RULE_MARGIN,
            "outside_ratio": float(column["outside_ratio"].max()) * RULE_MARGIN}


# --- the embedding reference ---------------------------------------------------------------------------------


def low_resolution_views(pixels: np.ndarray) -> list[np.ndarray]:
    """The slice shrunk to each of LOW_SIDES (longest side), as a low-resolution scanner would have made it."""
    height, width = pixels.shape[:2]
    return [cv2.resize(pixels, (max(1, round(width * side / max(height, width))),
                                max(1, round(height * side / max(height, width)))), interpolation=cv2.INTER_AREA)
            for side in LOW_SIDES]


def embed(crops: list[np.ndarray], size: int = FULL_SIZE, ir: Path | None = None) -> np.ndarray:
    """LiteMedSAM's pooled embeddings (N, D) of 02's crops with the encoder at `size` px; `ir`: the IR a
    bundle carries for that size (lib.deploy.bundle), else openvino_runtime's cache."""
    return medsam_encoder.pooled_embeddings(crops, ir=ir, size=size)


def embedding_part(pooled: np.ndarray) -> np.ndarray:
    """The average-pooled channels of lib.common.medsam_encoder.pooled_embeddings' vectors, unit length.

    Only the average describes the whole slice (max and asymmetry react to a small lesion, not to what the
    picture is); POOLING puts it first."""
    assert medsam_encoder.POOLING.startswith("avg"), "the OOD reference expects the average pool first"
    part = np.atleast_2d(pooled)[:, : medsam_encoder.EMBED_CHANNELS].astype(np.float64)
    return part / np.maximum(np.linalg.norm(part, axis=1, keepdims=True), 1e-12)


def distances(vectors: np.ndarray, centres: np.ndarray) -> np.ndarray:
    """Cosine distance of each unit vector to its nearest centre."""
    return 1.0 - (vectors @ centres.T).max(axis=1)


def fit_centres(vectors: np.ndarray, k: int = CENTRES, seed: int = 0) -> np.ndarray:
    from sklearn.cluster import KMeans

    centres = KMeans(n_clusters=min(k, len(vectors)), n_init=4, random_state=seed).fit(vectors).cluster_centers_
    return centres / np.linalg.norm(centres, axis=1, keepdims=True)


def cross_fitted(vectors: np.ndarray, seed: int = 0) -> np.ndarray:
    """Each half's distances to centres fitted on the other half, so a limit does not reward slices for
    being their own centre."""
    order = np.random.default_rng(seed).permutation(len(vectors))
    halves = order[::2], order[1::2]
    return np.concatenate([distances(vectors[b], fit_centres(vectors[a], seed=seed)) for a, b in
                           (halves, halves[::-1])])


def embedding_limit(vectors: np.ndarray, seed: int = 0) -> float:
    return float(np.percentile(cross_fitted(vectors, seed), EMBEDDING_QUANTILE)) * EMBEDDING_MARGIN


@dataclass
class Shortcut:
    """The quick pass: centres of the tuning slices' embeddings at `size` px, and the distance within which
    a slice is accepted without the full-size encoder (no margin: only the typical are spared)."""

    size: int
    centres: np.ndarray
    sure: float

    @classmethod
    def build(cls, quick_pooled: np.ndarray, size: int = SHORTCUT_SIZE) -> Shortcut:
        vectors = embedding_part(quick_pooled)
        return cls(size, fit_centres(vectors), float(np.percentile(cross_fitted(vectors), SHORTCUT_QUANTILE)))

    def accepts(self, pooled: np.ndarray) -> bool:
        return float(distances(embedding_part(pooled), self.centres)[0]) <= self.sure


@dataclass
class Reference:
    """What the check compares against: the trait limits, the embedding centres and their limit."""

    limits: dict[str, float]
    centres: np.ndarray  # (k, EMBED_CHANNELS) unit vectors
    embedding_limit: float
    low_centres: np.ndarray  # the same for the tuning slices shrunk to LOW_SIDES
    low_limit: float
    provenance: dict[str, Any]
    shortcut: Shortcut | None = None  # None: every slice that passes the traits is embedded at full size

    @classmethod
    def build(cls, tuning_traits: list[Traits], tuning_pooled: np.ndarray, low_pooled: np.ndarray,
              provenance: dict[str, Any], quick_pooled: np.ndarray | None = None) -> Reference:
        """From the tuning slices' traits and pooled embeddings (full size, and at SHORTCUT_SIZE when given),
        and those of their low_resolution_views."""
        vectors, low = embedding_part(tuning_pooled), embedding_part(low_pooled)
        return cls(limits=trait_limits(tuning_traits), centres=fit_centres(vectors),
                   embedding_limit=embedding_limit(vectors), low_centres=fit_centres(low),
                   low_limit=embedding_limit(low), provenance=provenance,
                   shortcut=None if quick_pooled is None else Shortcut.build(quick_pooled))

    def nearest(self, pooled: np.ndarray, side: int) -> tuple[float, float]:
        """(distance to the nearest centre of the slice's resolution, that resolution's limit)."""
        low = side < LOW_SIDE
        centres, limit = (self.low_centres, self.low_limit) if low else (self.centres, self.embedding_limit)
        return float(distances(embedding_part(pooled), centres)[0]), limit

    def to_json(self) -> dict[str, Any]:
        short = self.shortcut
        return {"provenance": self.provenance, "limits": self.limits, "embedding_limit": self.embedding_limit,
                "low_limit": self.low_limit, "centres": np.round(self.centres, 5).tolist(),
                "low_centres": np.round(self.low_centres, 5).tolist(),
                "shortcut": None if short is None else {"size": short.size, "sure": short.sure,
                                                        "centres": np.round(short.centres, 5).tolist()}}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Reference:
        def unit(rows: list[list[float]]) -> np.ndarray:
            array = np.asarray(rows, float)
            return array / np.linalg.norm(array, axis=1, keepdims=True)

        short = data.get("shortcut")
        return cls(limits=data["limits"], centres=unit(data["centres"]),
                   embedding_limit=float(data["embedding_limit"]), low_centres=unit(data["low_centres"]),
                   low_limit=float(data["low_limit"]), provenance=data["provenance"],
                   shortcut=Shortcut(int(short["size"]), unit(short["centres"]), float(short["sure"])) if short
                   else None)


@functools.cache
def shipped() -> Reference:
    """The reference that ships with the toolkit (REFERENCE_FILE)."""
    return Reference.from_json(json.loads(REFERENCE_FILE.read_text()))


# --- the check -----------------------------------------------------------------------------------------------


def judge(found: Traits, embed_at: Callable[[int], np.ndarray] | None, reference: Reference | None = None
          ) -> list[str]:
    """The shipped check: why the slice does not look like a brain MRI slice ([] when it does).

    `embed_at(size)`: LiteMedSAM's pooled embedding of 02's crop with the encoder at `size` px, asked only
    when the traits pass: first at the shortcut's size, then at FULL_SIZE unless the quick pass is sure.
    None checks the traits alone."""
    reference = reference or shipped()
    out = trait_reasons(found, reference.limits)
    if out or embed_at is None:
        return out
    short = reference.shortcut
    if short is not None and found.side >= LOW_SIDE and short.accepts(embed_at(short.size)):
        return []
    return reasons(found, embed_at(FULL_SIZE), reference)


def reasons(found: Traits, pooled: np.ndarray | None, reference: Reference | None = None) -> list[str]:
    """Every reason the slice does not look like a brain MRI slice by its traits and its full-size embedding
    `pooled` (None skips the embedding); [] when it looks like one. judge() is the shipped check."""
    reference = reference or shipped()
    out = trait_reasons(found, reference.limits)
    if pooled is not None:
        distance, limit = reference.nearest(pooled, found.side)
        if distance > limit:
            out.append(f"unlike the brain MRI slices LiteMedSAM was shown (distance {distance:.3f} > {limit:.3f})")
    return out


def verdict(found: list[str]) -> str:
    """The `ood` cell: '' for a slice that looks like brain MRI, else its reasons in one line."""
    return "not like a brain MRI slice: " + "; ".join(found) if found else ""


def check(pixels: np.ndarray, mode: str = "full") -> str:
    """The verdict on one decoded image (standalone; the Predictor reuses its own 02 result and embedding)."""
    if mode == "off":
        return ""
    cleaned = clean.clean_image(pixels, size=VIEW_SIZE)
    embed_at = (lambda size: embed([cleaned.image], size)) if mode == "full" else None
    return verdict(judge(traits(pixels, cleaned), embed_at))
