"""lib.preprocess.clean: each test builds a slice whose right answer is known by construction."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from lib.common.io import read_image
from lib.preprocess import clean

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
NAVONEEL = DATA / "navoneel"


def synthetic_head(
    shape: tuple[int, int] = (240, 320),
    centre: tuple[int, int] | None = None,
    axes: tuple[int, int] = (80, 100),
    scalp: int = 200,
    bone: int = 30,
    brain: int = 110,
    seed: int = 0,
) -> dict[str, np.ndarray]:
    """A head on black: bright scalp ring, dark bone ring, textured brain inside.

    Returns the uint8 image and the true masks: head (everything inside the
    scalp's outer edge) and brain.
    """
    rng = np.random.default_rng(seed)
    height, width = shape
    centre = centre or (width // 2, height // 2)

    def ellipse(scale: float) -> np.ndarray:
        canvas = np.zeros(shape, np.uint8)
        size = (round(axes[0] * scale), round(axes[1] * scale))
        cv2.ellipse(canvas, centre, size, 0, 0, 360, 1, thickness=-1)
        return canvas > 0

    head, inside_scalp, brain_mask = ellipse(1.0), ellipse(0.92), ellipse(0.86)
    image = np.zeros(shape, np.float32)
    image[head] = scalp
    image[inside_scalp] = bone
    texture = cv2.GaussianBlur(rng.normal(0, 25, shape).astype(np.float32), (0, 0), 3)
    image[brain_mask] = brain + texture[brain_mask]
    image += rng.normal(0, 3, shape)
    image = np.clip(image, 0, 255).astype(np.uint8)
    return {"image": image, "head": head, "brain": brain_mask}


def box_contains(box: tuple[int, int, int, int], mask: np.ndarray) -> bool:
    """Is every pixel of `mask` inside the box (x0 y0 x1 y1, exclusive ends)?"""
    x0, y0, x1, y1 = box
    inside = np.zeros_like(mask)
    inside[y0:y1, x0:x1] = True
    return not (mask & ~inside).any()


def tightness(box: tuple[int, int, int, int], mask: np.ndarray) -> float:
    """Box area over the area of the mask's own bounding box (1.0: no background kept)."""
    x, y, w, h = cv2.boundingRect(mask.astype(np.uint8))
    x0, y0, x1, y1 = box
    return (x1 - x0) * (y1 - y0) / (w * h)


# Padding is PAD_FRACTION of the head size on each side; a crop that keeps less
# background than this (plus rounding) has removed "most of the background".
TIGHT = (1 + 2 * clean.PAD_FRACTION) ** 2 + 0.15


# --- crop ---------------------------------------------------------------------


def test_head_on_black_is_cropped_tightly_without_flags() -> None:
    case = synthetic_head()
    result = clean.clean_image(case["image"], size=128)
    assert result.flags == []
    assert result.crop_mode == "hard" and "solidity" in result.crop_reason
    assert box_contains(result.crop_box, case["head"])
    assert tightness(result.crop_box, case["head"]) < TIGHT
    assert result.image.shape == (128, 128) and result.image.dtype == np.uint8
    # the head mask found is the true head, up to the blur at its edge
    found, true = result.head_mask, case["head"]
    assert (found & true).sum() / (found | true).sum() > 0.95


def test_rgb_input_gives_grey_output_of_the_requested_size() -> None:
    grey = synthetic_head()["image"]
    rgb = np.repeat(grey[..., None], 3, axis=2)
    result = clean.clean_image(rgb, size=96)
    assert result.image.shape == (96, 96) and result.image.dtype == np.uint8
    assert np.array_equal(result.image, clean.clean_image(grey, size=96).image)


def test_square_box_is_centred_on_the_crop_box_and_square() -> None:
    result = clean.clean_image(synthetic_head(axes=(60, 100))["image"])
    x0, y0, x1, y1 = result.crop_box
    sx0, sy0, sx1, sy1 = result.square_box
    assert sx1 - sx0 == sy1 - sy0 == max(x1 - x0, y1 - y0)
    assert abs((sx0 + sx1) - (x0 + x1)) <= 1 and abs((sy0 + sy1) - (y0 + y1)) <= 1


def test_uneven_lighting_switches_to_soft_crop() -> None:
    case = synthetic_head()
    height, width = case["image"].shape
    # a lit film: the background brightens from 0 on the left to 150 on the right,
    # so any global threshold either cuts the head or takes the bright background
    light = np.linspace(0, 150, width, dtype=np.float32)[None, :]
    image = np.clip(case["image"] + light, 0, 255).astype(np.uint8)
    result = clean.clean_image(image)
    assert result.crop_mode == "soft"
    assert "edge support" in result.crop_reason and "-> adaptive" in result.crop_reason
    assert box_contains(result.crop_box, case["head"])
    assert tightness(result.crop_box, case["head"]) < TIGHT


def test_multiplicative_bias_field_keeps_the_dark_side() -> None:
    case = synthetic_head(scalp=150, bone=20, brain=110)
    width = case["image"].shape[1]
    # receive-coil bias: across the head, brightness falls from 100 % to 5 %
    x = np.arange(width, dtype=np.float32)[None, :]
    gain = 0.05 + 0.95 * np.clip((x - 80) / 160, 0, 1)
    image = np.clip(case["image"] * gain + 3, 0, 255).astype(np.uint8)
    result = clean.clean_image(image)
    assert result.crop_mode in ("hard", "soft") and result.crop_reason
    assert box_contains(result.crop_box, case["brain"])
    assert tightness(result.crop_box, case["head"]) < TIGHT


def test_head_cut_by_the_border_is_flagged_and_padded_black() -> None:
    case = synthetic_head(centre=(290, 120))  # right side of the head is outside the image
    result = clean.clean_image(case["image"], size=128)
    assert "head_touches_border" in result.flags
    assert box_contains(result.crop_box, case["brain"])
    assert result.crop_box[2] == case["image"].shape[1]
    # the square reaches past the right edge; that part of the output is black
    assert result.square_box[2] > case["image"].shape[1]
    outside = ~clean.warp_mask(np.ones(case["image"].shape, bool), result.square_box, 128)
    assert outside.any() and result.image[outside].max() == 0


def test_blank_image_keeps_everything_and_says_no_head() -> None:
    blank = np.zeros((100, 150), np.uint8)
    result = clean.clean_image(blank, size=64)
    assert "no_head_found" in result.flags
    assert result.crop_box == (0, 0, 150, 100)
    assert result.image.shape == (64, 64)
    assert "no head" in result.crop_reason


# --- cleanup ------------------------------------------------------------------


def test_white_background_becomes_black() -> None:
    case = synthetic_head(scalp=170)
    image = case["image"].copy()
    outline = cv2.dilate(case["head"].astype(np.uint8), np.ones((5, 5), np.uint8)) > 0
    image[~outline] = 250  # a white page, with a thin dark seam around the head
    result = clean.clean_image(image, size=128)
    assert "white_background" in result.flags
    assert box_contains(result.crop_box, case["head"])
    assert tightness(result.crop_box, case["head"]) < TIGHT
    corners = result.image[[0, 0, -1, -1], [0, -1, 0, -1]]
    assert corners.max() < 20


def test_white_background_touching_a_bright_scalp_keeps_the_brain() -> None:
    case = synthetic_head(scalp=240)
    image = case["image"].copy()
    image[~case["head"]] = 255
    result = clean.clean_image(image)
    assert "white_background" in result.flags
    assert box_contains(result.crop_box, case["brain"])
    assert tightness(result.crop_box, case["head"]) < TIGHT


def test_white_frame_is_removed_and_not_taken_for_head() -> None:
    case = synthetic_head()
    image = case["image"].copy()
    cv2.rectangle(image, (2, 2), (image.shape[1] - 3, image.shape[0] - 3), 255, thickness=3)
    result = clean.clean_image(image, size=128)
    assert "white_frame" in result.flags
    assert box_contains(result.crop_box, case["head"])
    assert tightness(result.crop_box, case["head"]) < TIGHT
    # nothing bright is left away from the head (a few pixels of margin for resampling)
    near_head = cv2.dilate(case["head"].astype(np.uint8), np.ones((7, 7), np.uint8)) > 0
    assert result.image[~clean.warp_mask(near_head, result.square_box, 128)].max() < 30


def test_text_in_a_corner_is_erased() -> None:
    case = synthetic_head(shape=(260, 420), axes=(90, 115))
    image = case["image"].copy()
    # text inside the square that will be cut out, but clear of the head
    cv2.putText(image, "L 12", (95, 40), cv2.FONT_HERSHEY_SIMPLEX, 0.6, 255, 2)
    text = (image > 200) & ~case["head"]
    assert text.sum() > 50
    result = clean.clean_image(image, size=256)
    assert "text_removed" in result.flags
    warped_text = clean.warp_mask(text, result.square_box, 256)
    assert warped_text.sum() > 20  # the text did fall inside the output square ...
    assert result.image[warped_text].max() < 30  # ... and is gone
    assert box_contains(result.crop_box, case["head"])


def test_an_image_that_fails_to_clean_gets_an_error_row_naming_it(tmp_path: Path,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    from lib.common.io import write_png
    from lib.preprocess import run_clean

    write_png(tmp_path / "raw" / "odd slice.png", np.full((64, 64), 90, np.uint8))

    def broken(*args: object, **kwargs: object) -> None:
        raise RuntimeError("cannot crop")

    monkeypatch.setattr(clean, "clean_image", broken)
    row = run_clean._clean_job(({"id": "odd", "source_path": "raw/odd slice.png", "status": "ok"},
                                {"out": str(tmp_path), "size": 64, "skull_strip": False}))
    assert row["status"] == "error" and "odd slice.png" in row["error"] and "cannot crop" in row["error"]


def test_clean_image_does_not_modify_its_input() -> None:
    image = synthetic_head()["image"]
    cv2.rectangle(image, (2, 2), (image.shape[1] - 3, image.shape[0] - 3), 255, thickness=2)
    before = image.copy()
    clean.clean_image(image, skull_strip=True)
    assert np.array_equal(image, before)


# --- skull stripping ---------------------------------------------------------------


def test_skull_strip_removes_the_ring_and_keeps_the_brain() -> None:
    case = synthetic_head()
    plain = clean.clean_image(case["image"], size=256)
    stripped = clean.clean_image(case["image"], size=256, skull_strip=True)
    assert "skull_stripped" in stripped.flags and "skull_stripped" not in plain.flags
    assert stripped.square_box == plain.square_box
    outer_ring = case["head"] & (cv2.erode(case["head"].astype(np.uint8), np.ones((7, 7), np.uint8)) == 0)
    ring = clean.warp_mask(outer_ring, stripped.square_box, 256)
    brain_core = cv2.erode(case["brain"].astype(np.uint8), np.ones((9, 9), np.uint8)) > 0
    core = clean.warp_mask(brain_core, stripped.square_box, 256)
    assert plain.image[ring].mean() > 150  # the scalp is there before ...
    assert (stripped.image[ring] == 0).mean() > 0.95  # ... and gone after
    assert np.array_equal(stripped.image[core], plain.image[core])  # the brain is untouched


# --- geometry -----------------------------------------------------------------------


def random_blobs(shape: tuple[int, int], seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    field = cv2.GaussianBlur(rng.normal(0, 1, shape).astype(np.float32), (0, 0), 6)
    return field > 0.05


@pytest.mark.parametrize("square_box", [(-20, 10, 108, 138), (30, -5, 158, 123)])
def test_warp_then_unwarp_is_exact_at_scale_one(square_box: tuple[int, int, int, int]) -> None:
    mask = random_blobs((150, 170), seed=1)
    warped = clean.warp_mask(mask, square_box, 128)
    back = clean.unwarp_mask(warped, square_box, mask.shape)
    inside = clean.unwarp_mask(np.ones((128, 128), bool), square_box, mask.shape)
    assert np.array_equal(back, mask & inside)


@pytest.mark.parametrize("size", [64, 100, 300])
def test_warp_then_unwarp_differs_only_at_the_mask_border(size: int) -> None:
    mask = random_blobs((180, 200), seed=2)
    square_box = (-10, 5, 190, 205)
    back = clean.unwarp_mask(clean.warp_mask(mask, square_box, size), square_box, mask.shape)
    # one output pixel is this many source pixels; differences stay within that of an edge
    reach = int(np.ceil(200 / size))
    kernel = np.ones((2 * reach + 1, 2 * reach + 1), np.uint8)
    # outside the source is black padding, so the image edge is a mask edge too
    eroded = cv2.erode(mask.astype(np.uint8), kernel, borderType=cv2.BORDER_CONSTANT, borderValue=0)
    edge_band = (cv2.dilate(mask.astype(np.uint8), kernel) > 0) & (eroded == 0)
    inside = clean.unwarp_mask(np.ones((size, size), bool), square_box, mask.shape)
    differs = (back != mask) & inside
    assert not (differs & ~edge_band).any()


def test_image_and_mask_take_the_same_geometric_step() -> None:
    image = np.zeros((90, 140), np.uint8)
    image[20:50, 60:100] = 255
    mask = image > 0
    square_box = (30, -15, 150, 105)
    warped_image = clean.warp_to_square(image, square_box, 64, cv2.INTER_AREA)
    warped_mask = clean.warp_mask(mask, square_box, 64)
    # every mask pixel lands on a bright pixel and every fully bright pixel is in the mask
    assert warped_image[warped_mask].min() > 100
    assert not ((warped_image == 255) & ~warped_mask).any()


# --- phantoms (lib.acquire.phantom, when present) ----------------------------------------------


def _phantom_module():
    return pytest.importorskip("lib.acquire.phantom", reason="lib.acquire.phantom is not written yet")


def test_phantom_crops_keep_the_brain() -> None:
    phantom = _phantom_module()
    rng = np.random.default_rng(2024)
    for index in range(40):
        ph = phantom.make_slice(rng, int(rng.integers(0, 3)))
        result = clean.clean_image(ph.image)
        brain = ph.brain_mask.astype(bool)
        x0, y0, x1, y1 = result.crop_box
        kept = brain[y0:y1, x0:x1].sum() / max(brain.sum(), 1)
        assert kept >= 0.995, f"phantom {index} ({ph.info}): crop keeps {kept:.4f} of the brain"


@pytest.mark.parametrize("artefact", ["white_background", "white_frame"])
def test_phantom_artefacts_are_flagged(artefact: str) -> None:
    phantom = _phantom_module()
    rng = np.random.default_rng(7)
    for _ in range(5):
        ph = phantom.make_slice(rng, 1, force={artefact: True})
        result = clean.clean_image(ph.image)
        assert artefact in result.flags, f"{artefact} not flagged for {ph.info}"


# --- real data --------------------------------------------------------------------------


def _navoneel() -> Path:
    if not NAVONEEL.is_dir():
        pytest.skip(f"real data {NAVONEEL} is absent (only machines with ../shared have it); skipping")
    return NAVONEEL


def test_navoneel_known_cases() -> None:
    root = _navoneel()
    expected = {
        "no/No16.jpg": "white_background",
        "yes/Y167.JPG": "white_background",
        "yes/Y89.JPG": "white_frame",
        "yes/Y10.jpg": "white_frame",
    }
    for name, flag in expected.items():
        assert flag in clean.clean_image(read_image(root / name).pixels).flags, name
    # the 1920x1080 slice: the crop keeps the head, not the wide canvas and scale bar around it
    big = read_image(root / "no" / "no 9.png").pixels
    result = clean.clean_image(big)
    x0, y0, x1, y1 = result.crop_box
    assert (x1 - x0) * (y1 - y0) < 0.55 * big.shape[0] * big.shape[1]


def test_navoneel_every_file_is_cleaned() -> None:
    """Every real file gives a 256 px slice with a head; speed is bench/bench_clean.py's job."""
    root = _navoneel()
    files = sorted(p for p in root.rglob("*") if p.suffix.lower() in {".jpg", ".jpeg", ".png"})
    assert len(files) >= 250
    pixels = [read_image(path).pixels for path in files]
    results = [clean.clean_image(p) for p in pixels]
    for path, result in zip(files, results):
        assert result.image.shape == (256, 256) and result.image.dtype == np.uint8, path
        assert set(result.flags) <= set(clean.FLAGS), path
        assert "no_head_found" not in result.flags, path
