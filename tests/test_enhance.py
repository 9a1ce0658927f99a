"""lib.preprocess.musica and lib.preprocess.enhance: inputs whose right answer is known by construction."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from lib.acquire import phantom
from lib.preprocess import clean, enhance, musica

ODD_SHAPES = [(97, 131), (255, 199), (37, 41), (3, 5)]


@pytest.fixture(scope="module")
def slice256() -> dict[str, np.ndarray]:
    """A cleaned 256x256 phantom slice with one tumour: image, head mask, tumour mask."""
    ph = phantom.make_slice(np.random.default_rng(0), n_tumors=1)
    result = clean.clean_image(ph.image, size=256)
    return {"image": result.image, "head": clean.head_mask(result.image),
            "tumour": clean.warp_mask(ph.tumor_mask, result.square_box, 256)}


def noise_image(shape: tuple[int, int], seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, shape, dtype=np.uint8)


# --- MUSICA ---------------------------------------------------------------------


@pytest.mark.parametrize("shape", [(256, 256), *ODD_SHAPES])
def test_pyramid_reconstructs_exactly(shape):
    image = noise_image(shape)
    pyramid = musica.laplacian_pyramid(image, musica.auto_levels(shape))
    assert all(level.dtype == np.float32 for level in pyramid)
    expected = [shape]  # finest detail first, each level half the last (rounded up), residual last
    for _ in pyramid[1:]:
        expected.append(((expected[-1][0] + 1) // 2, (expected[-1][1] + 1) // 2))
    assert [level.shape for level in pyramid] == expected
    np.testing.assert_allclose(musica.reconstruct(pyramid), image, atol=1e-4)


@pytest.mark.parametrize("shape", [(256, 256), *ODD_SHAPES])
def test_unit_gains_and_power_return_the_input(shape):
    image = noise_image(shape, seed=1)
    head = np.ones(shape, bool)
    assert np.array_equal(musica.musica(image, head, gains=1.0, power=1.0), image)
    assert np.array_equal(musica.musica(image, head, gains=[1.0] * 9, power=1.0), image)


def test_default_levels_leave_a_small_residual():
    assert musica.auto_levels((256, 256)) == 5  # residual 8 x 8
    assert len(musica.laplacian_pyramid(noise_image((256, 256)), 5)[-1]) == 8
    with pytest.raises(ValueError, match="levels"):
        musica.laplacian_pyramid(noise_image((16, 16)), 5)


def test_power_law_lifts_faint_detail_more_than_strong():
    detail = np.linspace(-50, 50, 101, dtype=np.float32).reshape(1, -1)
    out = musica.amplify(detail, gain=1.0, power=0.5)
    reference = musica.reference_amplitude(detail)
    assert np.array_equal(np.sign(out), np.sign(detail))
    ratio = np.abs(out[detail != 0]) / np.abs(detail[detail != 0])
    small, large = np.abs(detail[detail != 0]) < 5, np.abs(detail[detail != 0]) > 0.99 * reference
    assert ratio[small].min() > 3.0  # (M / |x|) ** 0.5 with |x| <= 5, M ~ 50
    np.testing.assert_allclose(ratio[large], 1.0, atol=0.01)  # detail at M is kept


def test_gains_scale_levels_linearly_at_power_one():
    detail = np.random.default_rng(2).normal(0, 10, (32, 32)).astype(np.float32)
    np.testing.assert_allclose(musica.amplify(detail, 2.0, 1.0), 2 * detail, rtol=1e-6)
    assert musica.level_gains((0.5, 2.0), 4) == [0.5, 2.0, 2.0, 2.0]
    assert musica.level_gains((0.5, 1.0, 1.5), 2) == [0.5, 1.0]


def test_musica_raises_edge_strength_inside_the_head(slice256):
    image, head = slice256["image"], slice256["head"]
    before = enhance.contrast_stats(image, head)["edge_strength"]
    after = enhance.contrast_stats(musica.musica(image, head), head)["edge_strength"]
    linear = enhance.contrast_stats(musica.musica(image, head, gains=2.0, power=1.0), head)["edge_strength"]
    assert after > 1.1 * before
    assert linear > 1.5 * before


def test_musica_background_is_exactly_zero(slice256):
    image, head = slice256["image"], slice256["head"]
    out = musica.musica(image, head, gains=3.0, power=0.5)
    assert not out[~head].any()
    padded = image.copy()
    padded[:, :40] = 0  # without a head mask, pixels that are exactly 0 are background
    assert not musica.musica(padded, gains=3.0, power=0.5)[:, :40].any()


def test_musica_rejects_bad_input():
    with pytest.raises(ValueError, match="power"):
        musica.musica(noise_image((32, 32)), power=1.5)
    with pytest.raises(ValueError, match="uint8"):
        musica.musica(noise_image((32, 32)).astype(np.float32))


# --- enhance ----------------------------------------------------------------------


@pytest.mark.parametrize("name", list(enhance.STEPS))
def test_each_step_keeps_dtype_and_shape(name, slice256):
    odd = cv2.resize(slice256["image"], (131, 97), interpolation=cv2.INTER_AREA)
    for image in (slice256["image"], odd):
        head = np.ones(image.shape, bool)
        out = enhance.STEPS[name](image, head)
        assert out.dtype == np.uint8 and out.shape == image.shape
        assert not np.array_equal(out, image)  # every step changes a textured slice


@pytest.mark.parametrize("chain", [(), ("musica",), enhance.DEFAULT_CHAIN, tuple(enhance.STEPS)])
def test_enhance_zeroes_the_background(chain, slice256):
    image, head = slice256["image"], slice256["head"]
    out = enhance.enhance(image, head, chain)
    assert out.dtype == np.uint8 and out.shape == image.shape
    assert not out[~head].any()
    assert out[head].any()
    assert image[~head].any()  # the test means something: the input's background was not black


def test_enhance_with_no_steps_keeps_the_head_and_the_input():
    image = noise_image((40, 50))
    head = np.zeros(image.shape, bool)
    head[10:30, 10:40] = True
    original = image.copy()
    out = enhance.enhance(image, head, ())
    assert np.array_equal(out[head], image[head])
    assert np.array_equal(image, original)


def test_parse_chain():
    assert enhance.parse_chain("nlmeans, MUSICA") == ("nlmeans", "musica")
    assert enhance.parse_chain("none") == ()
    with pytest.raises(ValueError, match="'sharpen'.*clahe, gaussian, bilateral, nlmeans, unsharp, musica"):
        enhance.parse_chain("musica,sharpen")
    for bad in ("", "musica,,clahe", "none,musica"):
        with pytest.raises(ValueError, match="known steps"):
            enhance.parse_chain(bad)
    with pytest.raises(ValueError, match="'blur'"):
        enhance.enhance(noise_image((8, 8)), np.ones((8, 8), bool), ("blur",))


# --- measures ---------------------------------------------------------------------


def disk_scene(noise: float, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Brain at 100 with Gaussian noise `noise`, a 15 px tumour at 140, inside a 100 px head on black."""
    yy, xx = np.mgrid[:256, :256]
    head = (yy - 128) ** 2 + (xx - 128) ** 2 < 100**2
    tumour = (yy - 128) ** 2 + (xx - 150) ** 2 < 15**2
    image = np.where(tumour, 140.0, 100.0) + np.random.default_rng(seed).normal(0, noise, head.shape)
    image = np.where(head, np.clip(np.rint(image), 0, 255), 0).astype(np.uint8)
    return image, tumour, head


def test_tumour_cnr_is_contrast_over_ring_noise():
    image, tumour, head = disk_scene(noise=8.0)
    assert enhance.tumour_cnr(image, tumour, head) == pytest.approx(40 / 8, rel=0.1)
    ring = enhance.tumour_ring(tumour, head)
    assert not (ring & tumour).any() and ring.any()
    assert np.isnan(enhance.tumour_cnr(image, np.zeros_like(tumour), head))
    smoothed = enhance.enhance(image, head, ("gaussian",))
    assert enhance.tumour_cnr(smoothed, tumour, head) > 1.5 * enhance.tumour_cnr(image, tumour, head)


def test_edge_strength_ignores_the_head_outline():
    image, tumour, head = disk_scene(noise=0.0)
    flat = np.where(head, 100, 0).astype(np.uint8)
    stats = enhance.contrast_stats(flat, head)
    assert stats["edge_strength"] == 0.0 and stats["rms_contrast"] == 0.0
    stats = enhance.contrast_stats(image, head)  # only the tumour's border is an edge
    assert stats["edge_strength"] > 0
    assert stats["rms_contrast"] == pytest.approx(np.std(image[head]) / np.mean(image[head]), rel=1e-4)
