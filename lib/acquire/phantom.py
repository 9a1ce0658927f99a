"""Synthetic brain MRI slices that look like the navoneel set, with true masks.

Why: the real collections have no segmentation truth, and the pipeline must
run offline (CI, a laptop on a train). A phantom slice carries its own answer:
the exact tumour and brain masks, drawn at the same geometry as the image. To
be a fair test it must also carry the real set's mess: many canvas sizes,
heads cropped tight or floating in black, four MR contrasts, bias field,
Rician noise, burned-in letters, white backgrounds and frames, RGB files that
are grey, JPEG at any quality and now and then a PNG named `.jpg`.

How, in order (`make_slice`):
1. plan: draw every random choice (canvas, head pose, slice level, contrast,
   artefacts, file format) before any pixel exists;
2. anatomy on a small working raster (the head about `WORK_HEAD_PX` long):
   scalp, skull and CSF rings from the distance to the head outline; folded
   cortex from a gyral phase that winds round the brain in polar coordinates,
   bent by noise (so sulci run from the surface inwards, wander and fork),
   grey matter within a cortical thickness of any CSF; ventricles, deep grey
   nuclei, midline and Sylvian fissures; orbits and globes at low levels;
3. tumours: lobulated blobs placed in the brain; nearby anatomy is pushed
   away (mass effect) before it is drawn; optional oedema spreading in white
   matter; hyper-, hypo-intense or ring-enhancing with a necrotic core;
4. rendering: tissue intensities from a per-contrast table, partial-volume
   blur, smooth multiplicative bias field, Rician noise, windowing to 8 bits;
5. canvas: one resize to the final size for the image and, by the same
   resize, the masks; then the artefacts, all outside the head; then the
   JPEG round trip so `image` holds exactly what the file will decode to.

Everything is vectorised numpy/OpenCV: about 40 ms a slice on one core.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from lib.common.io import write_jpeg, write_png

# --- artefacts and files -------------------------------------------------------

ARTEFACTS = ("white_background", "white_frame", "text", "rgb", "eyes", "neck")
# Chance of each artefact, read off the 253 navoneel files (rounded up a little
# so that a few hundred phantoms show each one several times).
ARTEFACT_PROB = {
    "white_background": 0.03,  # Y10, Y37, Y109: scanned film on white paper
    "white_frame": 0.05,  # Y89 and a few one-sided white edges
    "text": 0.35,  # 'A', 'B', '13', 'W 953 : L 437' ... in corners
    "rgb": 0.82,  # 212 of 253 files are RGB, nearly all grey inside
    "eyes": 0.06,  # slices low enough to cut the orbits
    "neck": 0.03,  # lower head and neck running off the image edge
}
RGB_TINT_PROB = 0.15  # of the RGB files: a faint colour cast (|R-B| up to ~10)
PNG_PROB = 0.04  # 8 of 253 files are PNG ...
PNG_LYING_PROB = 0.75  # ... and 6 of those 8 are named .jpg or .jpeg
JPEG_EXTENSIONS = ((".jpg", 0.74), (".JPG", 0.19), (".jpeg", 0.07))
JPEG_QUALITY = (60, 98)

# --- canvas and head pose ------------------------------------------------------

# (probability, smallest, largest) image height in pixels.
CANVAS_HEIGHT_BANDS = ((0.04, 170, 200), (0.62, 200, 380), (0.22, 380, 700), (0.12, 700, 1150))
PORTRAIT_ASPECT = (0.86, 0.07, 0.68, 1.04)  # width/height: mean, sd, min, max
LANDSCAPE_PROB = 0.10
LANDSCAPE_ASPECT = (1.05, 1.80)
TIGHT_CROP_PROB = 0.70  # most navoneel heads touch or nearly touch the edges
HEAD_FILL_TIGHT = (0.86, 0.99)  # head length / image height
HEAD_FILL_LOOSE = (0.55, 0.86)
HEAD_OVERFLOW = 1.02  # a tight crop may cut 2 % of the head (scalp only)
HEAD_WIDTH_RATIO = (0.74, 0.86)  # head width / head length at mid level
OUTLINE_BUMPS = 1.05  # the outline's bumps and egg shape reach this far beyond the ellipse
ROTATION_SD_DEG, ROTATION_MAX_DEG = 5.0, 15.0
# Working raster: the head is drawn about this many pixels long, then resized.
WORK_HEAD_PX = 256
WORK_MAX_SIDE = 560

# --- anatomy (lengths in head half-lengths: the head runs from v=-1 to v=+1) ---

# Slice level z: 0 = orbits, ~0.4 = basal ganglia, ~0.55 = ventricle bodies, 1 = vertex.
SLICE_LOW = (0.08, 0.28)  # with eyes
SLICE_MID_HIGH = (0.30, 0.95)
SCALP_FAT = (0.035, 0.060)
SKULL_BONE = (0.025, 0.045)
OUTER_CSF = (0.006, 0.022)
CORTEX_THICKNESS = (0.034, 0.046)
SULCI_AROUND = (34, 48)  # gyri (and main sulci) round the brain surface
SULCUS_HALF_WIDTH_PX = (0.6, 1.3)  # at WORK_HEAD_PX; wider = older brain
SULCUS_DEPTH = (0.12, 0.24)
VENTRICLE_SCALE = (0.7, 1.3)
POLAR_THETA, POLAR_DEPTH, POLAR_DEPTH_RANGE = 720, 24, 0.4

# --- MR contrasts --------------------------------------------------------------

SEQUENCES = ("T1", "T1c", "T2", "FLAIR")
SEQUENCE_PROB = (0.15, 0.32, 0.30, 0.23)
# Relative signal before windowing. CSF is dark on T1/FLAIR and bright on T2;
# sinus = the superior sagittal sinus (bright with contrast, flow void on T2).
TISSUE = {
    "T1": dict(csf=0.08, gm=0.33, wm=0.47, deep=0.38, fat=1.00, skin=0.55, bone=0.03, marrow=0.45,
               muscle=0.25, vitreous=0.07, lens=0.30, sinus=0.12),
    "T1c": dict(csf=0.08, gm=0.34, wm=0.45, deep=0.38, fat=1.00, skin=0.55, bone=0.03, marrow=0.45,
                muscle=0.27, vitreous=0.07, lens=0.30, sinus=0.90),
    "T2": dict(csf=1.00, gm=0.42, wm=0.28, deep=0.32, fat=0.75, skin=0.45, bone=0.03, marrow=0.35,
               muscle=0.18, vitreous=1.00, lens=0.12, sinus=0.04),
    "FLAIR": dict(csf=0.06, gm=0.47, wm=0.37, deep=0.42, fat=0.90, skin=0.50, bone=0.03, marrow=0.40,
                  muscle=0.22, vitreous=0.05, lens=0.18, sinus=0.04),
}

# --- tumours -------------------------------------------------------------------

N_TUMORS_TWO_PROB = 0.15  # of tumour slices, share with two tumours
# Area of one tumour as a share of the brain area; two tumours are drawn
# smaller so that the total stays under ~30 %.
TUMOR_AREA_ONE = (0.01, 0.15)
TUMOR_AREA_TWO = (0.01, 0.08)
TUMOR_FRACTION_RANGE = (0.004, 0.30)  # what a slice's tumor_fraction stays within
APPEARANCES = ("hyperintense", "ring", "hypointense")
APPEARANCE_PROB = (0.45, 0.35, 0.20)
# (rim, core) signal per contrast; 'ring' = enhancing rim round a necrotic core.
TUMOR_SIGNAL = {
    "T1": {"hyperintense": (0.70, 0.66), "ring": (0.45, 0.15), "hypointense": (0.20, 0.19)},
    "T1c": {"hyperintense": (0.86, 0.80), "ring": (0.95, 0.14), "hypointense": (0.22, 0.20)},
    "T2": {"hyperintense": (0.75, 0.72), "ring": (0.50, 0.95), "hypointense": (0.17, 0.17)},
    "FLAIR": {"hyperintense": (0.85, 0.80), "ring": (0.75, 0.45), "hypointense": (0.16, 0.16)},
}
EDEMA_PROB = 0.55
EDEMA_SIGNAL = {"T1": 0.36, "T1c": 0.36, "T2": 0.72, "FLAIR": 0.78}
MASS_EFFECT = (0.25, 0.7)  # push at the tumour edge, in tumour radii

# --- image formation -----------------------------------------------------------

BIAS_STRENGTH = (0.05, 0.22)  # sd of the log bias field
COIL_BRIGHT_EDGE = (0.0, 0.3)  # surface-coil brightening towards the scalp
NOISE_SIGMA = (0.006, 0.03)  # Rician noise, in units of the white matter T1 signal
BLUR_SIGMA_PX = (0.6, 1.1)  # partial volume before noise, working pixels
WINDOW_WHITE = (0.85, 1.05)  # 99.7th head percentile maps to this times 255
GAMMA = (0.8, 1.2)

# --- burned-in text ------------------------------------------------------------

TEXT_HEIGHT = (0.025, 0.06)  # of the image height
TEXT_MIN_PX = 7
FONTS = (cv2.FONT_HERSHEY_SIMPLEX, cv2.FONT_HERSHEY_PLAIN, cv2.FONT_HERSHEY_DUPLEX,
         cv2.FONT_HERSHEY_COMPLEX, cv2.FONT_HERSHEY_TRIPLEX)
FRAME_WIDTH = (0.006, 0.02)  # of the shorter side, at least 2 px


@dataclass
class PhantomSlice:
    image: np.ndarray  # uint8, HxW grey or HxWx3 RGB, exactly as saved (artefacts included)
    tumor_mask: np.ndarray  # bool HxW, same geometry as image; all False when no tumour
    brain_mask: np.ndarray  # bool HxW: brain tissue inside the skull (tumour included)
    info: dict  # JSON-serialisable facts (see make_slice)


# === public API ================================================================


def draw_n_tumors(rng: np.random.Generator, has_tumor: bool) -> int:
    """0 without a tumour; else 1, or 2 in N_TUMORS_TWO_PROB of slices."""
    if not has_tumor:
        return 0
    return 2 if rng.random() < N_TUMORS_TWO_PROB else 1


def make_slice(rng: np.random.Generator, n_tumors: int, force: dict[str, bool] | None = None) -> PhantomSlice:
    """Draw one synthetic slice with `n_tumors` (0-2) tumours and its true masks.

    Deterministic for a given rng state. `force` overrides the random choice of
    any artefact in ARTEFACTS (True = always, False = never).

    info holds: sequence, n_tumors, tumor_fraction (tumour pixels / brain
    pixels), appearances and edema (one per tumour),
    artefacts (names from ARTEFACTS present in the image), save_format
    ('jpeg' or 'png'), jpeg_quality (None for PNG), extension, height, width,
    slice_level, rotation_deg, frame_px (width of the white frame, 0 if none).
    The tumour mask is the tumour itself (rim and necrotic core), not its oedema.
    """
    if not 0 <= n_tumors <= 2:
        raise ValueError(f"n_tumors must be 0, 1 or 2, got {n_tumors}")
    plan = _plan(rng, n_tumors, force or {})
    geo = _geometry(plan)
    anatomy = _anatomy(rng, geo, plan)
    tumours: list[dict] = []
    for _ in range(n_tumors):
        tumours.append(_place_tumour(rng, geo, anatomy, plan, tumours))
    _push_anatomy(geo, anatomy, tumours)
    _grey_matter(geo, anatomy)
    work, tumour_alpha = _render(rng, geo, anatomy, tumours, plan)
    image, tumor_mask, brain_mask, head_alpha = _to_canvas(work, anatomy, tumour_alpha, plan)
    image, drawn = _add_artefacts(rng, image, head_alpha, brain_mask, plan)
    image = _as_saved(image, plan)
    return PhantomSlice(image=image, tumor_mask=tumor_mask, brain_mask=brain_mask,
                        info=_info(plan, tumours, drawn, tumor_mask, brain_mask))


def write_slice(ph: PhantomSlice, out_dir: Path, image_rel: str, mask_stem: str) -> dict[str, str]:
    """Write the image in info['save_format'] (whatever its extension says) and 0/255 PNG masks.

    All three files are written atomically. Returns paths relative to out_dir.
    """
    out_dir = Path(out_dir)
    if ph.info["save_format"] == "png":
        write_png(out_dir / image_rel, ph.image)
    else:
        write_jpeg(out_dir / image_rel, ph.image, quality=ph.info["jpeg_quality"])
    paths = {"image": image_rel, "tumor_mask": f"masks/{mask_stem}_tumor.png",
             "brain_mask": f"masks/{mask_stem}_brain.png"}
    write_png(out_dir / paths["tumor_mask"], ph.tumor_mask.astype(np.uint8) * 255)
    write_png(out_dir / paths["brain_mask"], ph.brain_mask.astype(np.uint8) * 255)
    return paths


# === 1. plan: every random choice before any pixel ============================


def _plan(rng: np.random.Generator, n_tumors: int, force: dict[str, bool]) -> dict:
    """Canvas, pose, contrast, artefacts and file format of one slice."""
    unknown = set(force) - set(ARTEFACTS)
    if unknown:
        raise ValueError(f"unknown artefacts in force: {sorted(unknown)}; known: {ARTEFACTS}")
    artefacts = {}
    for name in ARTEFACTS:  # always draw, so forcing one does not shift the others
        drawn = rng.random() < ARTEFACT_PROB[name]
        artefacts[name] = bool(force.get(name, drawn))
    plan = {"n_tumors": n_tumors, "artefacts": artefacts,
            "sequence": SEQUENCES[rng.choice(len(SEQUENCES), p=SEQUENCE_PROB)]}
    z_mid = SLICE_MID_HIGH[0] + rng.beta(1.5, 3.0) * (SLICE_MID_HIGH[1] - SLICE_MID_HIGH[0])
    z_low = rng.uniform(*SLICE_LOW)
    plan["slice_level"] = float(z_low if artefacts["eyes"] else min(z_mid, 0.42) if artefacts["neck"] else z_mid)
    plan.update(_canvas_size(rng))
    short = min(plan["height"], plan["width"])
    plan["frame_px"] = max(2, round(short * rng.uniform(*FRAME_WIDTH)))
    plan.update(_head_pose(rng, plan))
    plan.update(_file_format(rng))
    return plan


def _canvas_size(rng: np.random.Generator) -> dict:
    """Image height from CANVAS_HEIGHT_BANDS; mostly portrait, sometimes landscape."""
    probs = [band[0] for band in CANVAS_HEIGHT_BANDS]
    _, lo, hi = CANVAS_HEIGHT_BANDS[rng.choice(len(probs), p=probs)]
    height = int(rng.integers(lo, hi + 1))
    if rng.random() < LANDSCAPE_PROB:
        aspect = rng.uniform(*LANDSCAPE_ASPECT)
    else:
        mean, sd, low, high = PORTRAIT_ASPECT
        aspect = float(np.clip(rng.normal(mean, sd), low, high))
    return {"height": height, "width": max(150, round(height * aspect))}


def _head_pose(rng: np.random.Generator, plan: dict) -> dict:
    """Head half-length, width ratio, rotation and centre on the canvas (pixels)."""
    height, width, art = plan["height"], plan["width"], plan["artefacts"]
    rotation = float(np.clip(rng.normal(0, ROTATION_SD_DEG), -ROTATION_MAX_DEG, ROTATION_MAX_DEG))
    width_ratio = rng.uniform(*HEAD_WIDTH_RATIO)
    tight = rng.random() < TIGHT_CROP_PROB
    fill = rng.uniform(*(HEAD_FILL_TIGHT if tight else HEAD_FILL_LOOSE))
    if art["neck"]:
        fill = rng.uniform(0.68, 0.82)
    # Frames and white backgrounds need a clear border. (Text goes in whichever
    # corners the head leaves free: an oval always leaves some.)
    inside = art["white_background"] or art["white_frame"]
    margin = 0
    if inside:
        margin = max(2, plan["frame_px"] + 3 if art["white_frame"] else 0,
                     round(0.03 * min(height, width)) if art["white_background"] else 0)
    half = _rotated_half_extent(width_ratio * OUTLINE_BUMPS, rotation)
    a_mid = fill * height / 2
    slack = 1.0 if inside else HEAD_OVERFLOW
    a_mid = min(a_mid, (width / 2 * slack - margin) / half[0], (height / 2 * slack - margin) / half[1])
    a_mid /= OUTLINE_BUMPS
    # Higher slices cut a smaller, rounder head; the crop stays where it was.
    z = plan["slice_level"]
    shrink = 1.0 - 0.32 * max(0.0, (z - 0.62) / 0.38) ** 1.4
    a = a_mid * shrink
    width_ratio = min(0.92, width_ratio + 0.08 * (1 - shrink) / 0.32)
    half = _rotated_half_extent(width_ratio * OUTLINE_BUMPS, rotation)
    room_x = max(0.0, width / 2 - margin - a * half[0])
    room_y = max(0.0, height / 2 - margin - a * half[1])
    cx = width / 2 + rng.uniform(-0.25, 0.25) * room_x  # scans are centred, give or take
    cy = height / 2 + rng.uniform(-0.4, 0.4) * room_y
    if art["neck"]:  # head high, so the neck shows below it
        cy = max(min(cy, height * rng.uniform(0.40, 0.47)), margin + a * half[1])
    return {"a": a, "width_ratio": float(width_ratio), "rotation_deg": rotation, "cx": cx, "cy": cy}


def _rotated_half_extent(width_ratio: float, rotation_deg: float) -> tuple[float, float]:
    """Half width and half height of the box round a unit-length head ellipse."""
    t = math.radians(rotation_deg)
    return (math.hypot(width_ratio * math.cos(t), math.sin(t)),
            math.hypot(width_ratio * math.sin(t), math.cos(t)))


def _file_format(rng: np.random.Generator) -> dict:
    """JPEG at some quality and extension, or (rarely) PNG, usually under a JPEG name."""
    if rng.random() < PNG_PROB:
        lying = rng.random() < PNG_LYING_PROB
        extension = str(rng.choice([".jpg", ".jpeg"])) if lying else ".png"
        return {"save_format": "png", "jpeg_quality": None, "extension": extension}
    names, probs = zip(*JPEG_EXTENSIONS)
    return {"save_format": "jpeg", "jpeg_quality": int(rng.integers(JPEG_QUALITY[0], JPEG_QUALITY[1] + 1)),
            "extension": names[rng.choice(len(names), p=probs)]}


# === 2. anatomy on the working raster ==========================================


def _geometry(plan: dict) -> dict:
    """Working raster size and head coordinates (u across, v front-to-back) per pixel."""
    scale = min(WORK_HEAD_PX / (2 * plan["a"]), WORK_MAX_SIDE / max(plan["height"], plan["width"]))
    h, w = max(32, round(plan["height"] * scale)), max(32, round(plan["width"] * scale))
    sy, sx = h / plan["height"], w / plan["width"]
    t = math.radians(plan["rotation_deg"])
    geo = {"h": h, "w": w, "a": plan["a"] * (sx + sy) / 2,
           "cx": (plan["cx"] + 0.5) * sx - 0.5, "cy": (plan["cy"] + 0.5) * sy - 0.5,
           "cos": math.cos(t), "sin": math.sin(t), "rotation_deg": plan["rotation_deg"],
           "width_ratio": plan["width_ratio"]}
    geo["u"], geo["v"] = _grid(geo, 0)
    return geo


def _grid(geo: dict, pad: int) -> tuple[np.ndarray, np.ndarray]:
    """Head coordinates of every pixel of the working raster, grown by `pad` pixels a side."""
    x = np.arange(-pad, geo["w"] + pad, dtype=np.float32)[None, :] - geo["cx"]
    y = np.arange(-pad, geo["h"] + pad, dtype=np.float32)[:, None] - geo["cy"]
    u = (x * geo["cos"] + y * geo["sin"]) / geo["a"]
    v = (-x * geo["sin"] + y * geo["cos"]) / geo["a"]
    return u, v


def _to_px(geo: dict, u: float, v: float) -> tuple[float, float]:
    """Head coordinates to working-raster pixel coordinates."""
    return (geo["cx"] + geo["a"] * (u * geo["cos"] - v * geo["sin"]),
            geo["cy"] + geo["a"] * (u * geo["sin"] + v * geo["cos"]))


def _noise(rng: np.random.Generator, shape: tuple[int, int], sigma_px: float) -> np.ndarray:
    """Smooth Gaussian random field, about zero mean and unit sd, correlation length ~sigma_px."""
    h, w = shape
    step = max(1.0, sigma_px / 2.0)
    grid = (h, w) if step == 1.0 else (max(2, int(h / step) + 2), max(2, int(w / step) + 2))
    small = rng.standard_normal(grid, dtype=np.float32)
    sigma_small = sigma_px / step
    small = cv2.GaussianBlur(small, (0, 0), sigma_small, borderType=cv2.BORDER_REFLECT)
    small *= 2 * math.sqrt(math.pi) * sigma_small  # blurred white noise has sd 1/(2 sqrt(pi) sigma)
    if small.shape == (h, w):
        return small
    return cv2.resize(small, (w, h), interpolation=cv2.INTER_LINEAR)


def _anatomy(rng: np.random.Generator, geo: dict, plan: dict) -> dict:
    """Signed distances of the head layers and the internal maps, before tumours."""
    anatomy = _layers(rng, geo, plan)
    anatomy["sulci"] = _sulci(rng, geo, anatomy, plan)
    anatomy["cortex_thickness"] = rng.uniform(*CORTEX_THICKNESS)
    anatomy["fissure"] = np.maximum(_fissure(rng, geo, plan), _sylvian(rng, geo, plan))
    anatomy["ventricles"] = _ventricles(rng, geo, plan)
    anatomy["deep"] = _deep_nuclei(rng, geo, plan)
    if plan["artefacts"]["eyes"]:
        _hindbrain(rng, geo, anatomy)
    return anatomy


def _layers(rng: np.random.Generator, geo: dict, plan: dict) -> dict:
    """Head outline; depth below it; skull interior and brain as signed distances."""
    u, v, a = geo["u"], geo["v"], geo["a"]
    shape = {"egg": rng.uniform(0.03, 0.10), "width_ratio": plan["width_ratio"]}  # egg: wider at the back
    angles = np.linspace(-np.pi, np.pi, POLAR_THETA, endpoint=False)
    shape["wobble"] = np.zeros(POLAR_THETA, np.float32)  # a few gentle bumps round the outline
    for k in range(2, 6):
        shape["wobble"] += rng.uniform(0, 0.012) * np.cos(k * angles + rng.uniform(0, 2 * np.pi))
    eyes = None
    if plan["artefacts"]["eyes"]:  # the face bulges over the two globes
        eyes = {"spread": rng.uniform(0.27, 0.32), "radius": rng.uniform(0.10, 0.12), "v": rng.uniform(-0.8, -0.75)}
    shape["eyes"] = eyes
    # Outline on a padded raster, so that the depth below it stays right where
    # a tight crop cuts the head: its scalp and skull go on beyond the edge.
    pad = int(0.1 * a) + 2  # > the most a crop may cut off (HEAD_OVERFLOW, OUTLINE_BUMPS)
    rho, phi = _head_rho(*_grid(geo, pad), shape)
    depth = cv2.distanceTransform((rho < 1).astype(np.uint8), cv2.DIST_L2, 5)[pad:-pad, pad:-pad] / a
    rho, phi = rho[pad:-pad, pad:-pad], phi[pad:-pad, pad:-pad]
    head = np.clip((1 - rho) * a + 0.5, 0, 1)
    slow = _noise(rng, head.shape, 0.25 * a)
    fat = rng.uniform(*SCALP_FAT) * np.clip(1 + 0.25 * slow, 0.7, 1.5)
    bone = rng.uniform(*SKULL_BONE) * np.clip(1 + 0.3 * _noise(rng, head.shape, 0.2 * a), 0.7, 1.6)
    skull_in = depth - fat - bone  # >0 inside the skull
    face = np.zeros_like(depth)  # soft tissue in front of the cranial cavity (low slices)
    if plan["artefacts"]["eyes"]:
        # Orbits and nose take the front: the cranial cavity starts behind them.
        side = np.clip(np.abs(u) / 0.5, 0, 1)
        front = v - (-0.36 - 0.2 * side ** 2) + 0.05 * _noise(rng, head.shape, 0.05 * a)
        face = np.clip((np.minimum(skull_in, -front - bone)) * a + 0.5, 0, 1)
        skull_in = np.minimum(skull_in, front)
    csf = rng.uniform(*OUTER_CSF) * (1 + 0.4 * np.abs(_noise(rng, head.shape, 0.1 * a)))
    brain_depth = skull_in - csf  # >0 in the brain, ~distance to its surface
    brain = np.clip(brain_depth * a + 0.5, 0, 1)
    surface_depth = cv2.distanceTransform((brain > 0.5).astype(np.uint8), cv2.DIST_L2, 5) / a
    return {"head": head, "depth": depth, "fat": fat, "bone_out": fat + bone, "skull_in": skull_in,
            "brain_depth": brain_depth, "brain": brain, "surface_depth": surface_depth, "phi": phi,
            "eyes": eyes, "face": face}


def _head_rho(u: np.ndarray, v: np.ndarray, shape: dict) -> tuple[np.ndarray, np.ndarray]:
    """Normalised radius of the head outline (<1 inside) and the polar angle round it."""
    us = u / (shape["width_ratio"] * (1 + shape["egg"] * v))
    phi = np.arctan2(us, -v)
    rho = np.hypot(us, v) / (1 + shape["wobble"][_angle_index(phi)])
    eyes = shape["eyes"]
    if eyes is not None:
        for side in (1, -1):
            bulge = np.hypot(u - side * eyes["spread"], v - eyes["v"]) / (eyes["radius"] + 0.06)
            rho = np.minimum(rho, bulge)
    return rho, phi


def _angle_index(phi: np.ndarray) -> np.ndarray:
    """Index into a POLAR_THETA-long table over [-pi, pi)."""
    return ((phi + np.pi) * (POLAR_THETA / (2 * np.pi))).astype(np.int32) % POLAR_THETA


def _polar_table(rng: np.random.Generator, n_sulci: float, depth_sigma: float) -> np.ndarray:
    """Band-limited noise over (depth, angle), periodic in angle, ~n_sulci zero crossings round it."""
    white = rng.standard_normal((POLAR_DEPTH, POLAR_THETA), dtype=np.float32)
    # Rice: a blur of sigma crosses zero 1/(pi*sigma*sqrt2) times a pixel.
    sigma = POLAR_THETA / (math.pi * math.sqrt(2) * n_sulci)
    tiled = cv2.GaussianBlur(np.tile(white, (1, 3)), (0, 0), sigmaX=sigma, sigmaY=depth_sigma)
    table = tiled[:, POLAR_THETA:2 * POLAR_THETA]
    return table / (table.std() + 1e-6)


def _sample_polar(table: np.ndarray, phi: np.ndarray, depth: np.ndarray) -> np.ndarray:
    """Read a polar table at each pixel's angle and depth (head units)."""
    map_x = ((phi + np.pi) / (2 * np.pi) * POLAR_THETA - 0.5).astype(np.float32)
    map_y = (np.clip(depth, 0, POLAR_DEPTH_RANGE) / POLAR_DEPTH_RANGE * (POLAR_DEPTH - 1)).astype(np.float32)
    return cv2.remap(table, map_x, map_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_WRAP)


def _zero_lines(field: np.ndarray, half_width_px: np.ndarray | float) -> np.ndarray:
    """Soft lines (0..1) of about 2*half_width pixels along the zero set of a smooth field."""
    gx = cv2.Sobel(field, cv2.CV_32F, 1, 0, ksize=3) / 8
    gy = cv2.Sobel(field, cv2.CV_32F, 0, 1, ksize=3) / 8
    dist_px = np.abs(field) / (np.hypot(gx, gy) + 1e-6)
    return np.clip(half_width_px + 0.5 - dist_px, 0, 1)


def _sulci(rng: np.random.Generator, geo: dict, anatomy: dict, plan: dict) -> np.ndarray:
    """Cortical sulci: CSF lines from the brain surface inwards, one between each two gyri.

    A gyral phase psi grows by 2*pi from one gyrus to the next round the brain;
    noise bends it (so sulci wander and fork), sulci lie where psi = pi, and a
    few shallow ones split gyri where psi = 0.
    """
    depth, phi = anatomy["surface_depth"], anatomy["phi"]
    n_gyri = 2 * round(rng.uniform(*SULCI_AROUND) / 2)  # even: psi is continuous across phi = +-pi
    bend = _polar_table(rng, n_gyri * 0.6, depth_sigma=rng.uniform(3, 5))
    psi = n_gyri * phi + rng.uniform(1.8, 2.6) * _sample_polar(bend, phi, depth)
    psi += 0.8 * _noise(rng, depth.shape, 0.03 * geo["a"])
    gyral = _polar_table(rng, n_gyri * 1.2, depth_sigma=20)  # one depth per sulcus, roughly
    wobble = _sample_polar(gyral, phi, np.zeros_like(depth))
    high = 1 + 0.5 * max(0.0, plan["slice_level"] - 0.6)  # high slices are mostly cortex
    reach = rng.uniform(*SULCUS_DEPTH) * np.exp(0.45 * wobble - 0.1) * high
    if plan["artefacts"]["eyes"]:  # the skull base cuts the front: short sulci there, not a fan
        reach = reach * np.clip(0.35 + (geo["v"] + 0.3) / 0.25, 0.35, 1)
    scale = geo["a"] * 2 / WORK_HEAD_PX
    half = rng.uniform(*SULCUS_HALF_WIDTH_PX) * scale * (1 + 0.8 * np.clip(1 - depth / 0.03, 0, 1))
    fade = np.clip((reach - depth) / 0.03, 0, 1) * (0.45 + 0.55 * np.clip(1 - depth / reach, 0, 1))
    fade *= np.clip((np.hypot(geo["u"], geo["v"]) - 0.3) / 0.15, 0, 1)  # none where the lines would converge
    main = _zero_lines(np.cos(psi / 2), half) * fade
    split = np.clip((wobble - 0.4) * 3, 0, 1) * np.clip((0.45 * reach - depth) / 0.02, 0, 1)
    minor = _zero_lines(np.sin(psi / 2), half) * split
    return np.maximum(main, minor * fade) * anatomy["brain"]


def _draw_tube(canvas: np.ndarray, geo: dict, points: list[tuple[float, float, float]]) -> None:
    """Fill a tube along (u, v, radius) control points, radius interpolated, in place."""
    pts = np.asarray(points, dtype=np.float64)
    length_px = np.hypot(np.diff(pts[:, 0]), np.diff(pts[:, 1])).sum() * geo["a"]
    t = np.linspace(0, 1, max(2, int(length_px)))
    knots = np.linspace(0, 1, len(pts))
    u, v, r = (np.interp(t, knots, pts[:, k]) for k in range(3))
    x, y = _to_px(geo, u, v)
    for xi, yi, ri in zip(np.rint(x * 16).astype(int), np.rint(y * 16).astype(int),
                          np.maximum(16, np.rint(r * geo["a"] * 16)).astype(int)):
        cv2.circle(canvas, (int(xi), int(yi)), int(ri), 255, -1, cv2.LINE_AA, shift=4)


def _ventricle_template(z: float) -> list[list[tuple[float, float, float]]]:
    """Right-side ventricle tubes (u, v, radius) for a slice level; mirrored later."""
    if z < 0.30:  # temporal horns only
        return [[(0.30, -0.18, 0.010), (0.33, -0.08, 0.014), (0.32, 0.0, 0.008)]]
    if z < 0.46:  # frontal horns and atria round the thalami: the butterfly
        return [[(0.045, -0.40, 0.028), (0.075, -0.30, 0.048), (0.075, -0.20, 0.040), (0.055, -0.12, 0.014)],
                [(0.13, 0.10, 0.016), (0.19, 0.22, 0.045), (0.21, 0.32, 0.034), (0.17, 0.44, 0.012)]]
    if z < 0.62:  # bodies: two bananas beside the midline
        return [[(0.045, -0.32, 0.026), (0.08, -0.23, 0.040), (0.095, -0.06, 0.030), (0.11, 0.10, 0.030),
                 (0.14, 0.22, 0.030), (0.14, 0.30, 0.014)]]
    if z < 0.70:  # the roofs of the bodies
        return [[(0.09, -0.18, 0.012), (0.12, 0.0, 0.018), (0.13, 0.18, 0.012)]]
    return []


def _ventricles(rng: np.random.Generator, geo: dict, plan: dict) -> np.ndarray:
    """Lateral (and third) ventricles for the slice level, sized for the patient (0..1 weight)."""
    z = plan["slice_level"]
    size = rng.uniform(*VENTRICLE_SCALE)
    canvas = np.zeros((geo["h"], geo["w"]), np.uint8)
    for side in (1, -1):
        for tube in _ventricle_template(z):
            jitter = [(side * (u * size ** 0.5 + rng.normal(0, 0.006)), v + rng.normal(0, 0.01),
                       r * size * rng.uniform(0.85, 1.15)) for u, v, r in tube]
            _draw_tube(canvas, geo, jitter)
    if 0.30 <= z < 0.46:  # third ventricle: a midline slit between the thalami
        _draw_tube(canvas, geo, [(0, -0.13, 0.011 * size), (0, 0.05, 0.012 * size)])
    return cv2.GaussianBlur(canvas.astype(np.float32) / 255, (0, 0), 0.6)


def _fissure(rng: np.random.Generator, geo: dict, plan: dict) -> np.ndarray:
    """Interhemispheric fissure: midline CSF line, broken by the corpus callosum at mid levels."""
    z = plan["slice_level"]
    canvas = np.zeros((geo["h"], geo["w"]), np.uint8)
    if z < 0.30:
        return canvas.astype(np.float32)
    gap = (-0.45, 0.45) if z < 0.46 else (-0.38, 0.40) if z < 0.62 else None
    spans = [(-1.0, 1.0)] if gap is None else [(-1.0, gap[0]), (gap[1], 1.0)]
    wiggle = rng.normal(0, 0.006, 4)
    width = max(1, round(geo["a"] * 2 / WORK_HEAD_PX * rng.uniform(0.8, 1.8)))
    for v0, v1 in spans:
        vs = np.linspace(v0, v1, 24)
        us = np.interp(vs, np.linspace(-1, 1, 4), wiggle)
        pts = np.array([_to_px(geo, uu, vv) for uu, vv in zip(us, vs)]) * 16
        cv2.polylines(canvas, [np.round(pts).astype(np.int32)], False, 255, width, cv2.LINE_AA, shift=4)
    return canvas.astype(np.float32) / 255 * rng.uniform(0.6, 1.0)


def _sylvian(rng: np.random.Generator, geo: dict, plan: dict) -> np.ndarray:
    """Sylvian fissures: deep lateral sulci running in to the insula, below the ventricle bodies."""
    canvas = np.zeros((geo["h"], geo["w"]), np.uint8)
    if plan["slice_level"] >= 0.52:
        return canvas.astype(np.float32)
    width = plan["width_ratio"] / 0.8
    for side in (1, -1):
        v0 = rng.uniform(-0.15, 0.0)
        path = [(0.75, v0, 0.010), (0.6, v0 + 0.01, 0.006), (0.47, v0 + 0.03, 0.005), (0.39, v0 + 0.07, 0.004),
                (0.37, v0 + 0.16, 0.003)]
        _draw_tube(canvas, geo, [(side * u * width + rng.normal(0, 0.012), v + rng.normal(0, 0.012), r)
                                 for u, v, r in path])
    return canvas.astype(np.float32) / 255 * rng.uniform(0.5, 0.9)


def _deep_nuclei(rng: np.random.Generator, geo: dict, plan: dict) -> np.ndarray:
    """Caudate heads, lentiform nuclei and thalami at basal-ganglia levels (0..1 weight)."""
    z = plan["slice_level"]
    canvas = np.zeros((geo["h"], geo["w"]), np.float32)
    if not 0.30 <= z < 0.56:
        return canvas
    shapes = [((0.13, -0.26), (0.045, 0.075), -15, 1.0),  # caudate head
              ((0.24, -0.06), (0.05, 0.14), -12, 0.9),  # putamen + pallidum
              ((0.085, 0.06), (0.065, 0.10), 8, 0.8)]  # thalamus
    if z >= 0.46:
        shapes = [((0.15, -0.12), (0.03, 0.12), -10, 0.8)]  # caudate body along the ventricle
    for side in (1, -1):
        for (u, v), (au, av), angle, weight in shapes:
            x, y = _to_px(geo, side * (u + rng.normal(0, 0.008)), v + rng.normal(0, 0.01))
            axes = (max(1, round(au * geo["a"] * 16)), max(1, round(av * geo["a"] * 16)))
            cv2.ellipse(canvas, (round(x * 16), round(y * 16)), axes, side * angle + geo["rotation_deg"],
                        0, 360, weight, -1, cv2.LINE_AA, shift=4)
    return cv2.GaussianBlur(canvas, (0, 0), geo["a"] * 0.012)


def _hindbrain(rng: np.random.Generator, geo: dict, anatomy: dict) -> None:
    """Low slices: midbrain (two peduncles) with the cistern in front of it, and the aqueduct."""
    u, v, a = geo["u"], geo["v"], geo["a"]
    mid_r = rng.uniform(0.09, 0.12)
    r = np.hypot(u / 1.2, v - 0.04) * (1 + 0.12 * np.cos(2 * np.arctan2(u, v - 0.04)))  # heart-ish
    notch = np.clip((0.025 - np.hypot(u * 1.5, v - 0.04 + mid_r)) * a + 0.5, 0, 1)  # interpeduncular cistern
    aqueduct = np.clip((0.01 - np.hypot(u, v - 0.04 - 0.55 * mid_r)) * a + 0.5, 0, 1)
    anatomy["ventricles"] = np.maximum.reduce([anatomy["ventricles"], notch, aqueduct])
    anatomy["deep"] = np.maximum(anatomy["deep"], 0.5 * np.clip((mid_r - r) * a + 0.5, 0, 1))


# === 3. tumours ================================================================


def _place_tumour(rng: np.random.Generator, geo: dict, anatomy: dict, plan: dict, placed: list[dict]) -> dict:
    """Choose size, place and look of one tumour; its shape maps on the working raster."""
    brain = anatomy["brain"] > 0.5
    brain_area = float(brain.sum())
    lo, hi = TUMOR_AREA_ONE if plan["n_tumors"] == 1 else TUMOR_AREA_TWO
    # Half log-uniform (many small), half uniform (many large, as in navoneel's yes/).
    target = math.exp(rng.uniform(math.log(lo), math.log(hi))) if rng.random() < 0.5 else rng.uniform(lo, hi)
    radius = math.sqrt(target * brain_area / math.pi)  # pixels
    depth_px = anatomy["surface_depth"] * geo["a"]
    for _ in range(6):
        ok = brain & (depth_px >= 0.45 * radius)
        for other in placed:  # two tumours do not overlap
            (ox, oy), orad = other["center"], other["radius"]
            ok &= np.hypot(np.arange(geo["w"])[None, :] - ox, np.arange(geo["h"])[:, None] - oy) > orad + radius
        candidates = np.flatnonzero(ok)
        if len(candidates):
            break
        radius *= 0.8
    if not len(candidates):  # tiny brain: anywhere inside it
        candidates = np.flatnonzero(brain)
    cy, cx = divmod(int(candidates[rng.integers(len(candidates))]), geo["w"])
    appearance = APPEARANCES[rng.choice(len(APPEARANCES), p=APPEARANCE_PROB)]
    window, r_norm = _lobulated(rng, geo, (cx, cy), radius)
    return {"center": (cx, cy), "radius": radius, "window": window, "r_norm": r_norm, "appearance": appearance,
            "edema": bool(rng.random() < EDEMA_PROB), "push": rng.uniform(*MASS_EFFECT),
            "rim": rng.uniform(0.15, 0.35), "gain": rng.uniform(0.92, 1.08)}


def _lobulated(rng: np.random.Generator, geo: dict, center: tuple[int, int],
               radius: float) -> tuple[tuple[slice, slice], np.ndarray]:
    """Window round the tumour and, inside it, a normalised radius: <1 inside a lobulated blob."""
    reach = int(math.ceil(4.5 * radius)) + 2
    x0, x1 = max(0, center[0] - reach), min(geo["w"], center[0] + reach + 1)
    y0, y1 = max(0, center[1] - reach), min(geo["h"], center[1] + reach + 1)
    dx = np.arange(x0, x1, dtype=np.float32)[None, :] - center[0]
    dy = np.arange(y0, y1, dtype=np.float32)[:, None] - center[1]
    phi = np.arctan2(dy, dx)
    lobes = np.ones((y1 - y0, x1 - x0), np.float32)
    for k in range(2, 7):
        lobes += rng.uniform(0, 0.16) / math.sqrt(k) * np.cos(k * phi + rng.uniform(0, 2 * np.pi))
    rough = rng.uniform(0.04, 0.2) * _noise(rng, lobes.shape, max(2.0, radius / 3))
    return (slice(y0, y1), slice(x0, x1)), np.hypot(dx, dy) / (radius * lobes) + rough


def _push_anatomy(geo: dict, anatomy: dict, tumours: list[dict]) -> None:
    """Mass effect: warp sulci, ventricles, fissure and nuclei radially away from each tumour."""
    if not tumours:
        return
    x = np.arange(geo["w"], dtype=np.float32)[None, :].repeat(geo["h"], 0)
    y = np.arange(geo["h"], dtype=np.float32)[:, None].repeat(geo["w"], 1)
    map_x, map_y = x.copy(), y.copy()
    for t in tumours:
        dx, dy = x - t["center"][0], y - t["center"][1]
        r = np.hypot(dx, dy) + 1e-3
        sigma = 1.8 * t["radius"]
        push = t["push"] * t["radius"] * 1.6 * np.exp(-(r ** 2) / (2 * sigma ** 2))
        map_x -= push * dx / r
        map_y -= push * dy / r
    for key in ("sulci", "fissure", "ventricles", "deep"):
        anatomy[key] = cv2.remap(anatomy[key], map_x, map_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)


def _grey_matter(geo: dict, anatomy: dict) -> None:
    """Cortex: brain within CORTEX_THICKNESS of its surface, of a sulcus or of the fissure."""
    brain = anatomy["brain"] > 0.5
    cortical_csf = np.maximum(anatomy["sulci"], anatomy["fissure"])
    solid = (brain & (cortical_csf < 0.5)).astype(np.uint8)
    dist = cv2.distanceTransform(solid, cv2.DIST_L2, 3)
    thickness = anatomy["cortex_thickness"] * geo["a"]
    anatomy["cortex"] = np.clip(thickness - dist + 0.5, 0, 1)
    anatomy["csf_inner"] = np.maximum(cortical_csf, anatomy["ventricles"])


# === 4. rendering ==============================================================


def _render(rng: np.random.Generator, geo: dict, anatomy: dict, tumours: list[dict],
            plan: dict) -> tuple[np.ndarray, np.ndarray]:
    """Signal image on the working raster (0..1 after windowing) and the tumour alpha."""
    tissue = TISSUE[plan["sequence"]]
    image = _head_signal(rng, geo, anatomy, tissue, plan)
    brain = anatomy["brain"]
    image = image * (1 - brain) + _brain_signal(rng, geo, anatomy, tissue, plan) * brain
    tumour_alpha = np.zeros_like(image)
    for t in tumours:  # each drawn inside its own window
        win = t["window"]
        if t["edema"]:
            halo = _edema(rng, anatomy, t) * brain[win]
            image[win] += (EDEMA_SIGNAL[plan["sequence"]] - image[win]) * halo
        alpha, signal = _tumour_signal(rng, t, plan["sequence"])
        alpha *= brain[win]
        image[win] = image[win] * (1 - alpha) + signal * alpha
        tumour_alpha[win] = np.maximum(tumour_alpha[win], alpha)
    if plan["artefacts"]["eyes"]:
        image = _paint_orbits(rng, geo, anatomy, image, tissue)
    if plan["artefacts"]["neck"]:
        image = _paint_neck(rng, geo, anatomy, image, tissue)
    image = cv2.GaussianBlur(image, (0, 0), rng.uniform(*BLUR_SIGMA_PX))
    image *= _bias_field(rng, geo)
    sigma = rng.uniform(*NOISE_SIGMA) * TISSUE["T1"]["wm"]
    real = image + sigma * rng.standard_normal(image.shape, dtype=np.float32)
    image = np.hypot(real, sigma * rng.standard_normal(image.shape, dtype=np.float32))  # Rician
    image = cv2.GaussianBlur(image, (0, 0), rng.uniform(0.3, 0.7))
    return _window(rng, image, anatomy["head"], sigma), tumour_alpha


def _head_signal(rng: np.random.Generator, geo: dict, anatomy: dict, tissue: dict, plan: dict) -> np.ndarray:
    """Scalp skin and fat, temporal muscle, skull with marrow, outer CSF and sinus."""
    depth, fat_t = anatomy["depth"], anatomy["fat"]
    x = depth / fat_t
    scalp = tissue["skin"] + (tissue["fat"] - tissue["skin"]) * np.clip((x - 0.12) / 0.2, 0, 1)
    scalp *= 1 - rng.uniform(0, 0.35) * _bump((x - 0.5) / 0.2)  # galea
    scalp *= 1 + 0.06 * _noise(rng, depth.shape, 2.0)
    u, v = geo["u"], geo["v"]
    if plan["slice_level"] < 0.55:  # temporalis muscle on the sides
        muscle = _bump((v + 0.1) / 0.6) * np.clip((np.abs(u) / plan["width_ratio"] - 0.6) / 0.3, 0, 1)
        scalp = scalp + (tissue["muscle"] - scalp) * muscle * np.clip((x - 0.35) / 0.3, 0, 1)
    bone_x = (depth - fat_t) / (anatomy["bone_out"] - fat_t)
    marrow = rng.uniform(0, 0.8) * _bump((bone_x - 0.5) / 0.35)
    bone = tissue["bone"] + marrow * (tissue["marrow"] - tissue["bone"])
    image = np.where(depth < fat_t, scalp, np.where(anatomy["skull_in"] < 0, bone, tissue["csf"]))
    if anatomy["eyes"] is not None:  # muscle, fat and sinus walls in front of the skull base
        mottled = tissue["muscle"] * (1.1 + 0.5 * np.clip(_noise(rng, depth.shape, 0.02 * geo["a"]), -1, 1))
        image = image + (mottled - image) * anatomy["face"]
    image = image.astype(np.float32) * anatomy["head"]
    # Superior sagittal sinus: a small triangle at the back of the midline.
    sinus = np.clip((0.028 - np.hypot(u * 1.3, anatomy["skull_in"] - 0.01)) * geo["a"] + 0.5, 0, 1) * (v > 0)
    return image + (tissue["sinus"] - image) * sinus


def _bump(x: np.ndarray) -> np.ndarray:
    """Smooth bump: 1 at 0, falling to 0 at |x| = 1 (a cheap Gaussian)."""
    return np.square(np.clip(1 - np.square(x), 0, 1))


def _brain_signal(rng: np.random.Generator, geo: dict, anatomy: dict, tissue: dict, plan: dict) -> np.ndarray:
    """Grey/white matter with texture, deep nuclei and internal CSF."""
    shape = anatomy["brain"].shape
    fine, coarse = _noise(rng, shape, 1.8), _noise(rng, shape, 10)
    gm = tissue["gm"] * (1 + 0.045 * fine + 0.03 * coarse)
    wm = tissue["wm"] * (1 + 0.03 * fine + 0.03 * coarse)
    wm = wm + (tissue["deep"] - wm) * anatomy["deep"]
    parenchyma = wm + (gm - wm) * anatomy["cortex"]
    csf = anatomy["csf_inner"]
    image = parenchyma * (1 - csf) + tissue["csf"] * csf
    if plan["sequence"] == "T1c":  # enhancing vessels: bright dots in sulci
        image = np.maximum(image, _vessels(rng, anatomy["sulci"], tissue["sinus"]))
    return image.astype(np.float32)


def _vessels(rng: np.random.Generator, sulci: np.ndarray, value: float) -> np.ndarray:
    """A few enhancing cortical vessels: small bright dots on sulci (T1 with contrast)."""
    dots = np.zeros_like(sulci)
    candidates = np.flatnonzero(sulci > 0.6)
    if len(candidates):
        for idx in rng.choice(candidates, size=min(len(candidates), int(rng.integers(6, 24))), replace=False):
            y, x = divmod(int(idx), sulci.shape[1])
            cv2.circle(dots, (x, y), int(rng.integers(1, 3)), value * rng.uniform(0.6, 1.0), -1, cv2.LINE_AA)
    return dots


def _tumour_signal(rng: np.random.Generator, t: dict, sequence: str) -> tuple[np.ndarray, np.ndarray]:
    """Alpha (0..1, soft edge) and signal of one tumour, heterogeneous inside.

    'ring': an irregular enhancing rim round a necrotic core crossed by septa;
    solid tumours: mottled, sometimes with cystic or necrotic spots.
    """
    r_norm, radius = t["r_norm"], t["radius"]
    rim, core = (s * t["gain"] for s in TUMOR_SIGNAL[sequence][t["appearance"]])
    fluid = TUMOR_SIGNAL[sequence]["ring"][1]
    coarse = _noise(rng, r_norm.shape, max(2.0, radius / 3))
    fine = _noise(rng, r_norm.shape, 1.2)
    if t["appearance"] == "ring":
        inner = 1 - t["rim"] * (1 + 0.45 * coarse)
        core_w = np.clip((inner - r_norm) * radius / 1.5 + 0.5, 0, 1)
        septa = 0.8 * _zero_lines(_noise(rng, r_norm.shape, max(2.0, radius / 3.5)), 0.7)
        inside = core * (1 + 0.12 * fine)
        inside = inside + (rim * 0.85 - inside) * septa
        signal = rim * (1 + 0.08 * coarse) * (1 - core_w) + inside * core_w
    else:
        signal = rim + (core - rim) * np.clip(1 - r_norm, 0, 1)
        signal = signal * (1 + 0.10 * coarse + 0.05 * fine)
        if rng.random() < 0.4:  # cystic or necrotic spots
            spots = np.clip((_noise(rng, r_norm.shape, max(1.5, radius / 5)) - 1.0) * 2, 0, 1) * (r_norm < 0.8)
            signal = signal + (fluid - signal) * spots
    edge_px = rng.uniform(1.0, 3.0)  # sharp or infiltrative margin; the mask is its middle
    alpha = np.clip((1 - r_norm) * radius / edge_px + 0.5, 0, 1)
    return alpha.astype(np.float32), signal.astype(np.float32)


def _edema(rng: np.random.Generator, anatomy: dict, t: dict) -> np.ndarray:
    """Oedema weight (0..1): a halo reaching into white matter (finger-like), fading outwards."""
    reach = rng.uniform(1.4, 2.3)
    strength = rng.uniform(0.55, 0.95)
    halo = np.clip((reach - t["r_norm"] - 0.3 * _noise(rng, t["r_norm"].shape, t["radius"] / 2)) / 0.5, 0, 1)
    win = t["window"]
    white = 1 - 0.75 * anatomy["cortex"][win]
    return (strength * halo * white * (1 - anatomy["csf_inner"][win])).astype(np.float32)


def _paint_orbits(rng: np.random.Generator, geo: dict, anatomy: dict, image: np.ndarray,
                  tissue: dict) -> np.ndarray:
    """Globes in orbital fat with optic nerves, and the mottled nasal cavity between them."""
    eyes = anatomy["eyes"]
    spread, eye_r, eye_v = eyes["spread"], eyes["radius"], eyes["v"]
    paint = [("ellipse", (0, eye_v + 0.16), (0.08, 0.26), 0, None)]  # nasal cavity: filled below
    for side in (1, -1):
        paint += [("ellipse", (side * (spread - 0.02), eye_v + 0.11), (eye_r + 0.03, eye_r + 0.07), side * 18,
                   tissue["fat"] * 0.9),  # orbital fat behind and beside the globe, not in front of it
                  ("line", (side * spread, eye_v + 0.08), (side * 0.12, -0.40), 0.022, tissue["muscle"]),
                  ("ellipse", (side * spread, eye_v), (eye_r, eye_r), 0, tissue["vitreous"]),
                  ("ellipse", (side * spread, eye_v - eye_r * 0.8), (eye_r * 0.45, eye_r * 0.16), 0, tissue["lens"])]
    mottle = np.where(_noise(rng, image.shape, 0.02 * geo["a"]) > 0.3, tissue["muscle"] * 1.3, tissue["bone"])
    layers = np.zeros_like(image)
    value = np.zeros_like(image)
    for kind, p, q, extra, signal in paint:
        mask = np.zeros(image.shape, np.uint8)
        x, y = _to_px(geo, *p)
        if kind == "ellipse":
            axes = (max(1, round(q[0] * geo["a"])), max(1, round(q[1] * geo["a"])))
            cv2.ellipse(mask, (round(x), round(y)), axes, extra + geo["rotation_deg"], 0, 360, 255, -1, cv2.LINE_AA)
        else:
            x1, y1 = _to_px(geo, *q)
            cv2.line(mask, (round(x), round(y)), (round(x1), round(y1)), 255,
                     max(1, round(extra * geo["a"])), cv2.LINE_AA)
        m = mask.astype(np.float32) / 255
        value = value * (1 - m) + (mottle if signal is None else signal) * m
        layers = np.maximum(layers, m)
    value = value * (1 + 0.06 * _noise(rng, image.shape, 1.5))
    keep = layers * (anatomy["skull_in"] < 0) * np.clip((anatomy["depth"] - 0.6 * anatomy["fat"]) * geo["a"], 0, 1)
    return (image * (1 - keep) + value * keep).astype(np.float32)


def _paint_neck(rng: np.random.Generator, geo: dict, anatomy: dict, image: np.ndarray,
                tissue: dict) -> np.ndarray:
    """Lower head and neck behind the skull, running to the image edge: muscle under fat and skin."""
    u, v, a = geo["u"], geo["v"], geo["a"]
    half = geo["width_ratio"] * rng.uniform(0.8, 0.95) + 0.03 * _noise(rng, image.shape, 0.3 * a)
    inside = half - np.abs(u)
    neck = np.clip(inside * a + 0.5, 0, 1) * np.clip(v * a + 0.5, 0, 1) * (1 - anatomy["head"])
    bands = 0.5 + 0.5 * np.cos(u * rng.uniform(12, 20) + 0.8 * _noise(rng, image.shape, 0.15 * a))
    muscle = tissue["muscle"] * (1.1 + 0.12 * bands + 0.08 * _noise(rng, image.shape, 2.0))
    subcutaneous = np.clip((rng.uniform(0.05, 0.1) - inside) / 0.04, 0, 1)
    signal = muscle + (tissue["fat"] * 0.9 - muscle) * subcutaneous
    anatomy["head"] = np.maximum(anatomy["head"], neck)
    return (image * (1 - neck) + signal * neck).astype(np.float32)


def _bias_field(rng: np.random.Generator, geo: dict) -> np.ndarray:
    """Smooth multiplicative field: a slow random log-field plus surface-coil brightening."""
    field = rng.uniform(*BIAS_STRENGTH) * _noise(rng, (geo["h"], geo["w"]), 0.6 * geo["a"])
    coil = rng.uniform(*COIL_BRIGHT_EDGE) * (np.hypot(geo["u"] / 0.8, geo["v"]) ** 2 - 0.5)
    return np.exp(field + coil).astype(np.float32)


def _window(rng: np.random.Generator, image: np.ndarray, head: np.ndarray, sigma: float) -> np.ndarray:
    """Map signal to 0..1 as a viewer would: robust white point, black just above the noise."""
    inside = image[head > 0.5]
    white = np.percentile(inside, 99.7) * rng.uniform(*WINDOW_WHITE) if inside.size else 1.0
    black = rng.uniform(0.5, 3.0) * sigma
    out = np.clip((image - black) / max(white - black, 1e-3), 0, 1)
    return out ** rng.uniform(*GAMMA)


# === 5. canvas, artefacts, file ================================================


def _to_canvas(work: np.ndarray, anatomy: dict, tumour_alpha: np.ndarray,
               plan: dict) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """One resize for image and masks, so their geometry matches pixel for pixel.

    Returns the 8-bit image, tumour and brain masks, and the head's alpha (0..1).
    """
    size = (plan["width"], plan["height"])
    down = size[0] < work.shape[1]
    interp = cv2.INTER_AREA if down else cv2.INTER_LINEAR
    stack = np.dstack([work, anatomy["brain"], tumour_alpha, anatomy["head"]]).astype(np.float32)
    big = cv2.resize(stack, size, interpolation=interp)
    image = np.clip(np.rint(big[..., 0] * 255), 0, 255).astype(np.uint8)
    brain = big[..., 1] > 0.5
    tumour = (big[..., 2] > 0.5) & brain
    head = np.clip(big[..., 3], 0, 1)
    return image, tumour, brain, head


def _add_artefacts(rng: np.random.Generator, image: np.ndarray, head_alpha: np.ndarray, brain: np.ndarray,
                   plan: dict) -> tuple[np.ndarray, list[str]]:
    """White background, white frame, corner text, RGB packaging; never over the head."""
    art = plan["artefacts"]
    drawn = [name for name in ("eyes", "neck") if art[name]]
    before = image[brain]
    if art["white_background"]:  # film scanned on paper: air becomes white
        paper = rng.uniform(246, 255) + rng.normal(0, 1.0, image.shape)
        image = np.clip(np.rint(image * head_alpha + paper * (1 - head_alpha)), 0, 255).astype(np.uint8)
        drawn.append("white_background")
    if art["white_frame"]:
        image = _white_frame(rng, image, plan["frame_px"])
        drawn.append("white_frame")
    if art["text"] and _burn_text(rng, image, head_alpha > 0.02, plan):
        drawn.append("text")
    if np.abs(image[brain].astype(int) - before).max(initial=0) > 1:
        raise AssertionError("phantom artefact drawn over the brain")
    if art["rgb"]:
        image = _to_rgb(rng, image)
        drawn.append("rgb")
    return image, sorted(drawn, key=ARTEFACTS.index)


def _white_frame(rng: np.random.Generator, image: np.ndarray, width: int) -> np.ndarray:
    """A bright border `width` pixels wide (the layout kept the head clear of it)."""
    image = image.copy()
    value = int(rng.integers(225, 256))
    image[:width, :] = value
    image[-width:, :] = value
    image[:, :width] = value
    image[:, -width:] = value
    return image


def _text_string(rng: np.random.Generator) -> str:
    """A plausible burned-in annotation: panel letter, image number, window/level, scanner tag."""
    n = int(rng.integers(1, 999))
    options = [
        str(rng.choice(list("ABCDabcRLPF"))),
        str(int(rng.integers(1, 40))),
        f"W {int(rng.integers(300, 4000))} : L {int(rng.integers(100, 2600))}",
        f"Se:{int(rng.integers(1, 12))}",
        f"Im:{int(rng.integers(1, 40))}",
        f"IMAGE {n}",
        f"TR:{int(rng.integers(400, 9000))}.0 ms",
        f"{int(rng.integers(1, 13))}/{int(rng.integers(1, 29))}/{int(rng.integers(1998, 2019))}",
        "512x512",
        f"SL: {rng.uniform(1, 8):.1f}mm",
    ]
    return options[int(rng.integers(len(options)))]


def _burn_text(rng: np.random.Generator, image: np.ndarray, head: np.ndarray, plan: dict) -> bool:
    """Put 1-3 annotations in free corners, in place; True when at least one fits."""
    h, w = image.shape
    keep_out = cv2.dilate(head.astype(np.uint8), np.ones((5, 5), np.uint8)) > 0
    inset = (plan["frame_px"] + 2) if plan["artefacts"]["white_frame"] else int(rng.integers(2, max(3, h // 40)))
    colour = 0 if plan["artefacts"]["white_background"] else int(rng.integers(170, 256))
    corners = list(rng.permutation(4))
    wanted = int(rng.choice([1, 2, 3], p=[0.6, 0.25, 0.15]))
    placed = 0
    for corner in corners:
        if placed == wanted:
            break
        text, font = _text_string(rng), FONTS[int(rng.integers(len(FONTS)))]
        target = max(TEXT_MIN_PX, h * rng.uniform(*TEXT_HEIGHT))
        for shrink in (1.0, 0.7, 0.5, 0.35):
            if _try_text(image, keep_out, text, font, max(TEXT_MIN_PX, target * shrink), int(corner), inset, colour):
                placed += 1
                break
    for corner in corners if placed == 0 else []:  # crowded: one small letter wherever it fits
        if _try_text(image, keep_out, "A", cv2.FONT_HERSHEY_SIMPLEX, TEXT_MIN_PX, int(corner), inset, colour):
            return True
    return placed > 0


def _try_text(image: np.ndarray, keep_out: np.ndarray, text: str, font: int, height_px: float,
              corner: int, inset: int, colour: int) -> bool:
    """Draw text in one corner if its box stays clear of the head; True when drawn."""
    h, w = image.shape
    (tw, th), _ = cv2.getTextSize(text, font, 1.0, 1)
    scale = height_px / max(th, 1)
    thickness = max(1, round(scale * 1.2)) if font != cv2.FONT_HERSHEY_PLAIN else max(1, round(scale))
    (tw, th), base = cv2.getTextSize(text, font, scale, thickness)
    x0 = inset if corner in (0, 2) else w - inset - tw
    y0 = inset + th if corner in (0, 1) else h - inset - base
    top, bottom = y0 - th - 1, y0 + base + 1
    if x0 < 0 or top < 0 or bottom > h or x0 + tw > w or keep_out[top:bottom, max(0, x0 - 1):x0 + tw + 1].any():
        return False
    cv2.putText(image, text, (x0, y0), font, scale, colour, thickness, cv2.LINE_AA)
    return True


def _to_rgb(rng: np.random.Generator, image: np.ndarray) -> np.ndarray:
    """Grey replicated into RGB, now and then with a faint colour cast."""
    rgb = np.repeat(image[..., None], 3, axis=2)
    if rng.random() < RGB_TINT_PROB:
        gains = 1 + rng.normal(0, 0.02, 3)
        rgb = np.clip(np.rint(rgb * gains), 0, 255).astype(np.uint8)
    return rgb


def _as_saved(image: np.ndarray, plan: dict) -> np.ndarray:
    """JPEG round trip at the file's quality, so `image` is what the file decodes to."""
    if plan["save_format"] != "jpeg":
        return image
    array = image if image.ndim == 2 else cv2.cvtColor(image, cv2.COLOR_RGB2BGR)
    ok, buf = cv2.imencode(".jpg", array, [cv2.IMWRITE_JPEG_QUALITY, plan["jpeg_quality"]])
    if not ok:
        raise OSError("JPEG encoding failed")
    decoded = cv2.imdecode(buf, cv2.IMREAD_UNCHANGED)
    return decoded if decoded.ndim == 2 else cv2.cvtColor(decoded, cv2.COLOR_BGR2RGB)


def _info(plan: dict, tumours: list[dict], drawn: list[str], tumor_mask: np.ndarray,
          brain_mask: np.ndarray) -> dict:
    """The JSON-serialisable facts of a slice (see make_slice)."""
    brain_px = max(1, int(brain_mask.sum()))
    return {
        "sequence": plan["sequence"],
        "n_tumors": len(tumours),
        "tumor_fraction": round(float(tumor_mask.sum()) / brain_px, 5),
        "appearances": [t["appearance"] for t in tumours],
        "edema": [t["edema"] for t in tumours],
        "artefacts": drawn,
        "save_format": plan["save_format"],
        "jpeg_quality": plan["jpeg_quality"],
        "extension": plan["extension"],
        "height": int(plan["height"]),
        "width": int(plan["width"]),
        "slice_level": round(plan["slice_level"], 3),
        "rotation_deg": round(plan["rotation_deg"], 2),
        "frame_px": int(plan["frame_px"]) if "white_frame" in drawn else 0,
    }
