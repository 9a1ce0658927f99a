"""Phantom slices: known answers by construction (masks, artefacts, files)."""

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest

from lib.acquire import phantom
from lib.common.io import read_image, read_mask, to_grey

# Artefacts switched off unless a test is about them, so each test sees only its own.
PLAIN = {name: False for name in phantom.ARTEFACTS}


def make(seed: int, n_tumors: int = 1, **force: bool) -> phantom.PhantomSlice:
    return phantom.make_slice(np.random.default_rng(seed), n_tumors, force or None)


def grey(ph: phantom.PhantomSlice) -> np.ndarray:
    return to_grey(ph.image).astype(float)


def find(predicate, n_tumors: int = 0, force: dict | None = None, tries: int = 400) -> phantom.PhantomSlice:
    """First slice (seeds 0, 1, ...) whose info satisfies predicate."""
    for seed in range(tries):
        ph = phantom.make_slice(np.random.default_rng(seed), n_tumors, force)
        if predicate(ph.info):
            return ph
    raise AssertionError("no seed gave the wanted slice")


@pytest.fixture(scope="module")
def slices() -> list[tuple[int, phantom.PhantomSlice]]:
    """A spread of ordinary slices: 0, 1 and 2 tumours, all artefacts left to chance."""
    return [(n, make(seed, n)) for seed in range(30) for n in (seed % 3,)]


def test_same_seed_same_slice_other_seed_other_slice() -> None:
    a, b, c = make(5, 1), make(5, 1), make(6, 1)
    assert np.array_equal(a.image, b.image)
    assert np.array_equal(a.tumor_mask, b.tumor_mask) and np.array_equal(a.brain_mask, b.brain_mask)
    assert a.info == b.info
    assert a.image.shape != c.image.shape or not np.array_equal(a.image, c.image)


def test_masks_match_the_image_and_tumour_lies_in_brain(slices) -> None:
    for n, ph in slices:
        assert ph.image.dtype == np.uint8 and ph.image.ndim in (2, 3)
        assert ph.tumor_mask.dtype == bool and ph.brain_mask.dtype == bool
        assert ph.tumor_mask.shape == ph.brain_mask.shape == ph.image.shape[:2]
        assert not (ph.tumor_mask & ~ph.brain_mask).any()
        assert ph.brain_mask.mean() > 0.1  # there is a brain, and a sizeable one
        edges = np.concatenate([ph.brain_mask[0], ph.brain_mask[-1], ph.brain_mask[:, 0], ph.brain_mask[:, -1]])
        assert not edges.any(), "the brain must lie inside the skull, inside the image"
        assert ph.info["n_tumors"] == n


def test_tumour_fraction_is_in_the_documented_range(slices) -> None:
    low, high = phantom.TUMOR_FRACTION_RANGE
    for n, ph in slices:
        fraction = ph.tumor_mask.sum() / ph.brain_mask.sum()
        assert ph.info["tumor_fraction"] == pytest.approx(fraction, abs=1e-4)
        if n == 0:
            assert not ph.tumor_mask.any() and ph.info["tumor_fraction"] == 0
        else:
            assert low <= fraction <= high, (n, fraction)
            assert len(ph.info["appearances"]) == n
            assert set(ph.info["appearances"]) <= set(phantom.APPEARANCES)


def test_info_is_json_and_names_known_artefacts(slices) -> None:
    for _, ph in slices:
        json.dumps(ph.info)
        assert set(ph.info["artefacts"]) <= set(phantom.ARTEFACTS)
        assert ph.info["sequence"] in phantom.SEQUENCES
        assert ph.info["save_format"] in ("jpeg", "png")
        assert ph.info["extension"] in (".jpg", ".jpeg", ".png", ".JPG")
        assert ("rgb" in ph.info["artefacts"]) == (ph.image.ndim == 3)


def test_image_size_varies_across_seeds(slices) -> None:
    shapes = {ph.image.shape[:2] for _, ph in slices}
    heights = [h for h, _ in shapes]
    assert len(shapes) >= 20
    assert min(heights) < 260 and max(heights) > 450
    assert any(h != w for h, w in shapes)


def test_bad_arguments_are_refused() -> None:
    with pytest.raises(ValueError, match="unknown artefacts"):
        make(0, 1, sparkles=True)
    with pytest.raises(ValueError, match="n_tumors"):
        make(0, 3)


def test_draw_n_tumors() -> None:
    rng = np.random.default_rng(0)
    assert {phantom.draw_n_tumors(rng, False) for _ in range(50)} == {0}
    counts = [phantom.draw_n_tumors(rng, True) for _ in range(400)]
    assert set(counts) == {1, 2} and counts.count(1) > counts.count(2)


def test_forced_white_background_whitens_the_border() -> None:
    for seed in range(3):
        ph = make(seed, 1, **{**PLAIN, "white_background": True})
        g = grey(ph)
        border = np.concatenate([g[:2].ravel(), g[-2:].ravel(), g[:, :2].ravel(), g[:, -2:].ravel()])
        assert border.min() >= 200 and "white_background" in ph.info["artefacts"]
        assert g[ph.brain_mask].mean() < 200  # the head itself stays an MR image
        assert grey(make(seed, 1, **PLAIN))[:2].mean() < 30  # and without it the border is black


def test_forced_white_frame_is_bright_with_dark_inside() -> None:
    for seed in range(3):
        ph = make(seed, 1, **{**PLAIN, "white_frame": True})
        g, width = grey(ph), ph.info["frame_px"]
        assert width >= 2 and "white_frame" in ph.info["artefacts"]
        band = np.concatenate([g[:width].ravel(), g[-width:].ravel(), g[:, :width].ravel(), g[:, -width:].ravel()])
        assert np.percentile(band, 5) >= 200
        inner = width + 2  # just inside the frame, in the four corners: background
        for corner in (g[inner:inner + 4, inner:inner + 4], g[inner:inner + 4, -inner - 4:-inner],
                       g[-inner - 4:-inner, inner:inner + 4], g[-inner - 4:-inner, -inner - 4:-inner]):
            assert corner.mean() < 60


def test_forced_text_is_bright_in_a_corner_outside_the_brain() -> None:
    for seed in range(6):
        with_text = make(seed, 1, **{**PLAIN, "text": True})
        without = make(seed, 1, **PLAIN)  # same slice: forcing one artefact leaves the rest alone
        assert "text" in with_text.info["artefacts"] and "text" not in without.info["artefacts"]
        assert np.array_equal(with_text.brain_mask, without.brain_mask)
        written = (grey(with_text) - grey(without)) > 80  # the letters themselves
        assert written.sum() >= 5
        assert not (written & with_text.brain_mask).any()
        h, w = written.shape
        rows, cols = np.nonzero(written)
        assert ((rows < 0.15 * h) | (rows > 0.85 * h)).all(), "text belongs at the top or bottom"
        for band in (written[: h // 2], written[h // 2:]):  # each block starts at a side: a corner
            if band.any():
                used = np.flatnonzero(band.any(axis=0))
                assert used.min() < 0.15 * w or used.max() > 0.85 * w


def test_forced_rgb_and_forced_grey() -> None:
    rgb = make(2, 1, rgb=True)
    assert rgb.image.ndim == 3 and rgb.image.shape[2] == 3 and "rgb" in rgb.info["artefacts"]
    spread = np.abs(rgb.image[..., 0].astype(int) - rgb.image[..., 2].astype(int)).mean()
    assert spread < 12  # grey inside, at most a faint tint
    assert make(2, 1, rgb=False).image.ndim == 2


def test_eyes_and_neck_can_be_forced() -> None:
    eyes = make(1, 0, **{**PLAIN, "eyes": True})
    assert "eyes" in eyes.info["artefacts"] and eyes.info["slice_level"] < 0.3
    neck = make(1, 0, **{**PLAIN, "neck": True})
    g = grey(neck)
    assert "neck" in neck.info["artefacts"]
    assert (g[-1] > 40).any(), "the neck runs off the bottom of the image"
    assert g[-1].mean() > grey(make(1, 0, **PLAIN))[-1].mean()


def test_sequences_give_their_own_csf_contrast() -> None:
    """CSF (ventricles, sulci) is the brightest brain signal on T2, the darkest on T1 and FLAIR."""
    def bright_minus_dark(sequence: str) -> float:
        scores = []
        for seed in range(300):
            ph = phantom.make_slice(np.random.default_rng(seed), 0, PLAIN)
            if ph.info["sequence"] == sequence and 0.35 <= ph.info["slice_level"] <= 0.6:
                v = grey(ph)[ph.brain_mask]
                p1, p50, p99 = np.percentile(v, [1, 50, 99])
                scores.append((p99 - p50) - (p50 - p1))
            if len(scores) == 3:
                return float(np.mean(scores))
        raise AssertionError(f"no {sequence} slice found")

    assert bright_minus_dark("T2") > 40
    for sequence in ("T1", "T1c", "FLAIR"):
        assert bright_minus_dark(sequence) < 0, sequence


def test_write_slice_round_trips(tmp_path: Path) -> None:
    ph = find(lambda info: info["save_format"] == "jpeg", n_tumors=1)
    paths = phantom.write_slice(ph, tmp_path, "raw/yes/Y1" + ph.info["extension"], "yes_Y1")
    assert paths == {"image": "raw/yes/Y1" + ph.info["extension"], "tumor_mask": "masks/yes_Y1_tumor.png",
                     "brain_mask": "masks/yes_Y1_brain.png"}
    loaded = read_image(tmp_path / paths["image"])
    assert loaded.format == "JPEG" and loaded.pixels.shape == ph.image.shape
    # the in-memory image already went through this JPEG quality: re-encoding barely moves it
    assert np.abs(loaded.pixels.astype(int) - ph.image.astype(int)).mean() < 1.5
    assert np.array_equal(read_mask(tmp_path / paths["tumor_mask"]), ph.tumor_mask)
    assert np.array_equal(read_mask(tmp_path / paths["brain_mask"]), ph.brain_mask)
    assert read_image(tmp_path / paths["tumor_mask"]).pixels.max() == 255


def test_png_under_a_jpg_name_is_a_png(tmp_path: Path) -> None:
    ph = find(lambda info: info["save_format"] == "png" and info["extension"] != ".png")
    assert ph.info["jpeg_quality"] is None
    paths = phantom.write_slice(ph, tmp_path, "raw/no/no 1" + ph.info["extension"], "no_no_1")
    loaded = read_image(tmp_path / paths["image"])
    assert loaded.format == "PNG"
    assert np.array_equal(loaded.pixels, ph.image)  # lossless
    assert not read_mask(tmp_path / paths["tumor_mask"]).any()


def test_write_slice_obeys_the_format_not_the_name(tmp_path: Path) -> None:
    ph = make(3, 1)
    as_png = dataclasses.replace(ph, info={**ph.info, "save_format": "png", "jpeg_quality": None})
    phantom.write_slice(as_png, tmp_path, "a.jpeg", "a")
    assert read_image(tmp_path / "a.jpeg").format == "PNG"
    as_jpeg = dataclasses.replace(ph, info={**ph.info, "save_format": "jpeg", "jpeg_quality": 80})
    phantom.write_slice(as_jpeg, tmp_path, "b.png", "b")
    assert read_image(tmp_path / "b.png").format == "JPEG"
