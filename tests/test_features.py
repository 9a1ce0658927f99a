"""lib.regions.features: each test builds a slice whose right answer is known by construction."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from lib.acquire import phantom
from lib.preprocess import clean
from lib.regions import features

# Features computed with float32 OpenCV filters (Sobel, Gaussian blurs) are
# flip-invariant up to float32 rounding, which the Laplacian amplifies by
# sigma^2; Canny's non-maximum suppression breaks ties in a fixed direction,
# so a flip can move a few edge pixels. Everything else must agree to 1e-6.
FLOAT32_PREFIXES = ("edge_sobel", "log_", "asym_peak")
FLOAT32_RTOL = 1e-4
CANNY_RTOL = 0.02
EXACT_RTOL = 1e-6


def cleaned_phantom(seed: int, n_tumors: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """A phantom slice as the pipeline sees it: cleaned to 256 px grey, and its head mask."""
    ph = phantom.make_slice(np.random.default_rng(seed), n_tumors=n_tumors)
    image = clean.clean_image(ph.image, size=256).image
    return image, clean.head_mask(image)


def symmetric_slice() -> tuple[np.ndarray, np.ndarray]:
    """A healthy phantom made exactly left-right symmetric, head mask included."""
    image, _ = cleaned_phantom(seed=2, n_tumors=0)
    image = np.maximum(image, image[:, ::-1])
    head = clean.head_mask(image)
    return image, head | head[:, ::-1]


def add_disk(image: np.ndarray, centre: tuple[int, int], radius: int, level: int = 235) -> np.ndarray:
    out = image.copy()
    cv2.circle(out, centre, radius, level, thickness=-1)
    return out


def cluster_map(image: np.ndarray, head: np.ndarray, cuts: tuple[int, ...]) -> np.ndarray:
    """Labels like lib.regions.cluster's: grey cut at `cuts`, ordered by brightness, -1 outside the head."""
    return np.where(head, np.searchsorted(np.asarray(cuts), image, side="right"), -1)


def assert_flip_invariant(a: dict[str, float], b: dict[str, float]) -> None:
    for name in features.COLUMNS:
        if name == "edge_canny_density":
            rtol = CANNY_RTOL
        elif name.startswith(FLOAT32_PREFIXES):
            rtol = FLOAT32_RTOL
        else:
            rtol = EXACT_RTOL
        assert a[name] == pytest.approx(b[name], rel=rtol, abs=rtol), name


@pytest.fixture(scope="module")
def tumour_slice() -> tuple[np.ndarray, np.ndarray]:
    return cleaned_phantom(seed=0, n_tumors=1)


# --- contract -----------------------------------------------------------------------


def test_columns_are_grouped_documented_and_returned_in_order(tumour_slice) -> None:
    names = list(features.COLUMNS)
    assert 40 <= len(names) <= 60
    groups = ("hist_", "glcm_", "edge_", "asym_", "log_", "clu_", "shape_")
    assert all(name.startswith(groups) for name in names)
    assert all(len(doc) > 20 for doc in features.COLUMNS.values())
    assert list(features.extract(*tumour_slice)) == names
    table = features.columns_markdown().splitlines()
    assert len(table) == 2 + len(names)
    assert all(f"`{name}`" in row for name, row in zip(names, table[2:]))


@pytest.mark.parametrize("seed,n_tumors", [(0, 1), (1, 0), (4, 2)])
@pytest.mark.parametrize("with_labels", [False, True])
def test_every_value_is_a_finite_float_on_phantoms(seed: int, n_tumors: int, with_labels: bool) -> None:
    image, head = cleaned_phantom(seed, n_tumors)
    labels = cluster_map(image, head, (40, 90, 150)) if with_labels else None
    values = features.extract(image, head, labels)
    assert all(isinstance(v, float) and np.isfinite(v) for v in values.values())


@pytest.mark.parametrize("with_labels", [False, True])
def test_black_image_has_an_empty_head_and_defined_values(with_labels: bool) -> None:
    image = np.zeros((256, 256), np.uint8)
    head = clean.head_mask(image)
    assert not head.any()
    labels = np.full(image.shape, -1) if with_labels else None
    values = features.extract(image, head, labels)
    assert all(np.isfinite(v) for v in values.values())
    assert values["hist_mean"] == 0 and values["shape_head_share"] == 0 and values["asym_mad"] == 0


@pytest.mark.parametrize("with_labels", [False, True])
def test_constant_head_has_no_spread_texture_edges_or_asymmetry(with_labels: bool) -> None:
    image = np.zeros((256, 256), np.uint8)
    cv2.ellipse(image, (128, 128), (80, 100), 0, 0, 360, 120, thickness=-1)
    head = image > 0
    labels = np.where(head, 0, -1) if with_labels else None
    values = features.extract(image, head, labels)
    assert all(np.isfinite(v) for v in values.values())
    assert values["hist_std"] == 0 and values["hist_entropy"] == 0 and values["hist_p50"] == 120
    assert values["glcm_contrast_d1"] == 0 and values["glcm_homogeneity_d3"] == 1
    assert values["edge_sobel_mean"] == 0 and values["edge_canny_density"] == 0
    assert values["asym_mad"] < 1e-9 and values["asym_peak"] < 1e-9 and values["asym_shape"] < 0.01
    assert abs(values["log_s2_max"]) < 1e-3
    assert values["shape_aspect"] == pytest.approx(0.8, abs=0.01)
    # The head mask the pipeline would find (it takes a rim of background too) is fine as well.
    assert all(np.isfinite(v) for v in features.extract(image, clean.head_mask(image), labels).values())


def test_two_level_head_has_known_histogram_halves_and_shape() -> None:
    image = np.zeros((256, 256), np.uint8)
    cv2.ellipse(image, (128, 128), (80, 100), 0, 0, 360, 100, thickness=-1)
    head = image > 0
    image[:, 128:][head[:, 128:]] = 200  # the right half brighter: left and right share no grey level
    values = features.extract(image, head)
    share = np.count_nonzero(image == 200) / np.count_nonzero(head)
    assert values["hist_mean"] == pytest.approx(100 + 100 * share)
    assert values["hist_entropy"] == pytest.approx(1.0, abs=0.01)
    assert values["hist_skewness"] == pytest.approx(0.0, abs=0.05)
    assert values["hist_kurtosis"] == pytest.approx(-2.0, abs=0.01)
    assert (values["hist_p25"], values["hist_p75"]) == (100, 200)
    assert values["asym_mean_diff"] == pytest.approx(100) and values["asym_hist_chi2"] == 1.0
    assert values["asym_mad"] == pytest.approx(100, rel=0.05)  # all but the pixels at the axis
    assert values["shape_head_share"] == pytest.approx(np.pi * 80 * 100 / 256**2, rel=0.02)  # drawn a bit fat
    assert values["shape_aspect"] == pytest.approx(0.8, abs=0.01) and values["shape_solidity"] > 0.98


# --- flip invariance and asymmetry -----------------------------------------------------


def test_any_slice_gives_the_same_features_after_a_left_right_flip(tumour_slice) -> None:
    image, head = tumour_slice
    labels = cluster_map(image, head, (50, 100, 160))
    for lab, flipped_lab in ((None, None), (labels, labels[:, ::-1])):
        a = features.extract(image, head, lab)
        b = features.extract(image[:, ::-1].copy(), head[:, ::-1].copy(), flipped_lab)
        assert_flip_invariant(a, b)
    assert a["asym_mad"] > 1  # a real slice is asymmetric: the check above was not on zeros


def test_a_tilted_head_gets_a_tilted_axis_and_stays_flip_invariant(tumour_slice) -> None:
    image, head = tumour_slice
    centre = (image.shape[1] / 2, image.shape[0] / 2)
    turn = cv2.getRotationMatrix2D(centre, 12, 1.0)
    tilted = cv2.warpAffine(image, turn, image.shape[::-1], flags=cv2.INTER_LINEAR)
    tilted_head = cv2.warpAffine(head.astype(np.uint8), turn, head.shape[::-1], flags=cv2.INTER_NEAREST) > 0
    a = features.extract(tilted, tilted_head)
    b = features.extract(tilted[:, ::-1].copy(), tilted_head[:, ::-1].copy())
    assert_flip_invariant(a, b)
    turned = np.degrees(features.mirror_axis(tilted_head)[2] - features.mirror_axis(head)[2])
    assert abs(turned) == pytest.approx(12, abs=1.5)
    upright = features.extract(image, head)
    # Mirroring about the head's own axis: turning the head does not make it look asymmetric.
    assert a["asym_shape"] < upright["asym_shape"] + 0.02


def test_symmetric_slice_is_flip_invariant_with_near_zero_asymmetry() -> None:
    image, head = symmetric_slice()
    a = features.extract(image, head)
    b = features.extract(image[:, ::-1].copy(), head[:, ::-1].copy())
    assert_flip_invariant(a, b)
    assert a["shape_tilt_deg"] < 0.1
    assert a["asym_mad"] < 0.5 and a["asym_peak"] < 1.0 and a["asym_mean_diff"] < 0.1
    assert a["asym_hist_chi2"] < 1e-3 and a["asym_area"] == 0 and a["asym_shape"] < 1e-3
    # The axis follows the head, not the image: moved sideways, it is just as symmetric.
    x, _, w, _ = cv2.boundingRect(head.astype(np.uint8))
    shift = min(25, x - 1)
    assert x + w + shift < image.shape[1] and shift >= 9
    moved = features.extract(np.roll(image, shift, axis=1), np.roll(head, shift, axis=1))
    assert moved["asym_mad"] < 0.5 and moved["asym_peak"] < 1.0 and moved["asym_shape"] < 1e-3


def test_a_bright_blob_on_one_side_raises_every_asymmetry_feature() -> None:
    image, head = symmetric_slice()
    x, y, w, h = cv2.boundingRect(head.astype(np.uint8))
    centre_x, centre_y = x + w // 2, y + h // 2
    blob = (centre_x - w // 4, centre_y)
    before = features.extract(image, head)
    one_side = features.extract(add_disk(image, blob, 12), head)
    for name in ("asym_mad", "asym_mean_diff", "asym_hist_chi2", "asym_peak", "asym_area", "asym_peak_ratio"):
        assert one_side[name] > before[name], name
    assert one_side["asym_peak"] > before["asym_peak"] + 50
    # The same blob on both sides is symmetric again.
    both = add_disk(image, blob, 12)
    assert features.extract(np.maximum(both, both[:, ::-1]), head)["asym_peak"] < 1.0


def test_a_bright_blob_raises_the_blob_response_at_its_scale(tumour_slice) -> None:
    image, head = tumour_slice
    x, y, w, h = cv2.boundingRect(head.astype(np.uint8))
    centre = (x + w // 2, y + h // 2)
    dim = cv2.GaussianBlur(image, (0, 0), 3)  # smooth the texture, so only our blob is a strong blob
    before = features.extract(dim, head)
    after = features.extract(add_disk(dim, centre, 6, level=255), head)  # ~12 px across: sigma 4 answers
    assert after["log_s4_max"] > before["log_s4_max"] + 20
    assert after["log_s2_max"] > before["log_s2_max"]


# --- cluster statistics ---------------------------------------------------------------


def test_cluster_statistics_of_one_bright_disk_in_a_flat_head() -> None:
    image = np.zeros((256, 256), np.uint8)
    cv2.circle(image, (128, 128), 100, 80, thickness=-1)
    head = image > 0
    cv2.circle(image, (150, 110), 20, 200, thickness=-1)
    labels = cluster_map(image, head, (50, 150))  # 1: flat head, 2: the disk; no pixel is label 0
    values = features.extract(image, head, labels)
    disk_share = 20**2 / 100**2
    assert values["clu_dark_share"] == 0
    assert values["clu_bright_share"] == pytest.approx(disk_share, rel=0.05)
    assert values["clu_bright_mean"] == 200 and values["clu_bright_contrast"] == 120
    assert values["clu_bright_components"] == 1 and values["clu_bright_largest_share"] == 1
    assert values["clu_bright_largest_head_share"] == pytest.approx(disk_share, rel=0.05)
    assert values["clu_bright_compactness"] > 0.97
    # A ring (an enhancing rim) of the same grey is far less compact.
    cv2.circle(image, (150, 110), 12, 80, thickness=-1)
    ring = features.extract(image, head, cluster_map(image, head, (50, 150)))
    assert ring["clu_bright_compactness"] < 0.6


def test_without_labels_the_grey_quartiles_stand_in_for_clusters(tumour_slice) -> None:
    values = features.extract(*tumour_slice)
    assert values["clu_dark_share"] == pytest.approx(0.25, abs=0.03)
    assert values["clu_bright_share"] == pytest.approx(0.25, abs=0.03)
    assert values["clu_bright_mean"] > values["hist_p75"]
