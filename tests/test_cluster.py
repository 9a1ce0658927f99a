"""lib.regions.cluster: each test builds a slice whose classes are known by construction."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest

from lib.common.io import write_png
from lib.preprocess.clean import head_mask
from lib.regions import cluster, run_cluster

SIZE = 128


def head_disc(size: int = SIZE, radius: int | None = None) -> np.ndarray:
    """Bool disc in the middle of the image: the 'head'."""
    mask = np.zeros((size, size), np.uint8)
    cv2.circle(mask, (size // 2, size // 2), radius or int(size * 0.43), 1, thickness=-1)
    return mask > 0


def classes_image(levels: list[int], noise: float = 6.0, seed: int = 0, size: int = SIZE) -> dict[str, np.ndarray]:
    """Head disc split into vertical bands, one grey level per band, Gaussian noise; black outside.

    Returns the image, the head and the true class of each pixel (-1 outside),
    classes numbered in the order of `levels`.
    """
    rng = np.random.default_rng(seed)
    head = head_disc(size)
    columns = np.indices((size, size))[1]
    band = np.clip(columns * len(levels) // size, 0, len(levels) - 1)
    image = np.asarray(levels, np.float32)[band] + rng.normal(0, noise, (size, size))
    image[~head] = 0
    truth = np.where(head, band, -1)
    return {"image": np.clip(image, 0, 255).astype(np.uint8), "head": head, "truth": truth}


# --- fit -----------------------------------------------------------------------


def test_labels_follow_intensity_and_recover_the_classes() -> None:
    # Levels given out of order: cluster numbers must follow brightness, not band position.
    levels = [200, 40, 120]
    case = classes_image(levels)
    result = cluster.fit(case["image"], case["head"], k=3)
    assert result.labels.dtype == np.int16 and result.means.dtype == np.float32
    assert np.all(np.diff(result.means) > 0)
    assert np.allclose(result.means, sorted(levels), atol=3)
    rank = np.argsort(np.argsort(levels))  # band index -> intensity rank
    inside = case["head"]
    assert np.mean(result.labels[inside] == rank[case["truth"][inside]]) > 0.99
    assert result.centers.shape == (3, 1)
    assert np.all(np.diff(result.centers[:, 0]) > 0)


def test_minus_one_exactly_outside_the_head() -> None:
    case = classes_image([40, 120, 200])
    head = case["head"].copy()
    head[:, : SIZE // 3] = False  # a head that is not the bright region
    labels = cluster.fit(case["image"], head, k=4).labels
    assert np.array_equal(labels == -1, ~head)


def test_palette_order_follows_intensity() -> None:
    case = classes_image([30, 90, 150, 210])
    labels = cluster.fit(case["image"], case["head"], k=4).labels
    rgb = cluster.colourise(labels)
    assert rgb.shape == labels.shape + (3,) and rgb.dtype == np.uint8
    brightest = case["image"] == case["image"][case["head"]].max()
    darkest_inside = case["head"] & (case["image"] == case["image"][case["head"]].min())
    assert np.all(rgb[brightest] == cluster.PALETTE[3])  # last colour used for k=4
    assert np.all(rgb[darkest_inside] == 0)  # darkest cluster is black
    assert np.all(rgb[~case["head"]] == 0)


def test_palette_has_twenty_distinct_colours_starting_black() -> None:
    assert cluster.PALETTE.shape[0] >= 20 and cluster.PALETTE.dtype == np.uint8
    assert len({tuple(c) for c in cluster.PALETTE}) == len(cluster.PALETTE)
    assert tuple(cluster.PALETTE[0]) == (0, 0, 0)


def test_fit_is_reproducible_from_the_seed() -> None:
    # A continuum (no true classes) is where k-means restarts really differ.
    rng = np.random.default_rng(3)
    head = head_disc()
    image = np.where(head, rng.integers(0, 256, (SIZE, SIZE)), 0).astype(np.uint8)
    first, again = (cluster.fit(image, head, k=7, seed=5) for _ in range(2))
    assert np.array_equal(first.labels, again.labels)
    assert np.array_equal(first.centers, again.centers) and first.inertia == again.inertia
    other = cluster.fit(image, head, k=7, seed=6, sample=500)
    assert not np.array_equal(first.centers, other.centers)


@pytest.mark.parametrize("features", ["intensity+position", "intensity+texture"])
def test_extra_feature_modes_run_and_keep_the_contract(features: str) -> None:
    case = classes_image([40, 120, 200])
    result = cluster.fit(case["image"], case["head"], k=3, features=features)
    assert result.centers.shape == (3, 3)
    assert np.array_equal(result.labels == -1, ~case["head"])
    assert np.all(np.diff(result.means) > 0)
    # Intensity still leads: the well-separated classes are found.
    inside = case["head"]
    assert np.mean(result.labels[inside] == case["truth"][inside]) > 0.9


def test_unknown_feature_mode_and_empty_head_are_refused() -> None:
    case = classes_image([40, 200])
    with pytest.raises(ValueError, match="features"):
        cluster.fit(case["image"], case["head"], features="colour")
    with pytest.raises(ValueError, match="no head"):
        cluster.fit(case["image"], np.zeros_like(case["head"]))


@pytest.mark.parametrize("grey", [0, 255])
def test_a_blank_slice_is_refused_in_words_that_say_why_and_what_to_do(grey: int) -> None:
    blank = np.full((SIZE, SIZE), grey, np.uint8)
    with pytest.raises(ValueError, match=r"no head in this slice .*blank or uniform image.*remove it") as caught:
        cluster.fit(blank, head_mask(blank))
    assert "\n" not in str(caught.value)


def test_04_error_row_for_a_blank_slice_names_the_file(tmp_path: Path) -> None:
    write_png(tmp_path / "images" / "blank.png", np.zeros((SIZE, SIZE), np.uint8))
    row = {"id": "blank", "status": "ok", "error": "", "image_path": "images/blank.png"}
    options = {"k": 5, "features": "intensity", "regions": (), "candidate_on": "enhanced"}
    done = run_cluster._cluster_job((row, options, str(tmp_path)))
    assert done["status"] == "error"
    assert done["error"].startswith(f"{(tmp_path / 'images' / 'blank.png').resolve()}: no head in this slice")


# --- choosing k ------------------------------------------------------------------


@pytest.mark.parametrize("levels", [[40, 120, 200], [30, 80, 130, 180, 230]])
def test_choose_k_finds_the_true_number_of_classes(levels: list[int]) -> None:
    case = classes_image(levels, noise=8, size=160)
    table = cluster.sweep(case["image"], case["head"], ks=range(2, 13), sample=1500)
    assert list(table.columns) == ["k", "wcss", "bcss", "silhouette", "calinski_harabasz"]
    assert np.all(np.diff(table["wcss"]) <= 1e-6 * table["wcss"].iloc[0])  # WCSS never rises with k
    k, reason = cluster.choose_k(table)
    assert k == len(levels), reason
    assert f"k={k}" in reason


def test_choose_k_uses_the_elbow_when_there_are_no_separate_classes() -> None:
    # A smooth ramp has no classes: the silhouette stays below the strong level,
    # so the rule must fall back to the WCSS elbow and say so.
    head = head_disc()
    ramp = np.tile(np.linspace(20, 235, SIZE), (SIZE, 1))
    image = np.where(head, ramp, 0).astype(np.uint8)
    k, reason = cluster.choose_k(cluster.sweep(image, head, ks=range(2, 13), sample=1500))
    assert "elbow" in reason and 3 <= k <= 6


def test_mean_sweep_normalises_each_image() -> None:
    # The same image at double contrast has 4x the sums of squares; after
    # normalisation the two sweeps agree and the mean equals either one.
    case = classes_image([40, 120], noise=10)
    low = cluster.sweep(case["image"], case["head"], ks=range(2, 6), sample=800)
    high = low.assign(wcss=low["wcss"] * 4, bcss=low["bcss"] * 4, calinski_harabasz=low["calinski_harabasz"] * 3)
    mean = cluster.mean_sweep([low, high])
    assert list(mean.columns) == list(low.columns) and list(mean["k"]) == [2, 3, 4, 5]
    assert np.allclose(mean["wcss"] + mean["bcss"], 1.0)
    assert np.allclose(mean["wcss"], cluster.mean_sweep([low])["wcss"])
    assert mean["calinski_harabasz"].max() == pytest.approx(1.0)


def test_plot_sweep_writes_a_png(tmp_path: Path) -> None:
    table = pd.DataFrame({"k": [2, 3, 4, 5], "wcss": [10.0, 2.0, 1.5, 1.2], "bcss": [5.0, 13.0, 13.5, 13.8],
                          "silhouette": [0.5, 0.6, 0.55, 0.5], "calinski_harabasz": [1.0, 2.0, 2.5, 3.0]})
    path = cluster.plot_sweep(table, tmp_path / "sweep.png", "test")
    assert path.is_file() and cv2.imread(str(path)) is not None


# --- region-based alternatives ---------------------------------------------------------


def bright_disc_case(seed: int = 0) -> dict[str, np.ndarray]:
    """Dark head disc with a bright off-centre disc inside it, noisy."""
    rng = np.random.default_rng(seed)
    head = head_disc()
    disc = np.zeros((SIZE, SIZE), np.uint8)
    cv2.circle(disc, (SIZE // 2 + 12, SIZE // 2 - 8), 22, 1, thickness=-1)
    disc = disc > 0
    image = np.where(head, 70.0, 0.0) + np.where(disc, 110.0, 0.0) + rng.normal(0, 20, (SIZE, SIZE))
    image[~head] = 0
    return {"image": np.clip(image, 0, 255).astype(np.uint8), "head": head, "disc": disc}


def test_watershed_regions_stay_inside_the_head_and_follow_the_disc() -> None:
    case = bright_disc_case()
    regions = cluster.watershed_regions(case["image"], case["head"], cluster.fit(case["image"], case["head"], k=2))
    assert regions.shape == case["image"].shape and regions.dtype == np.int32
    assert np.all(regions[~case["head"]] == 0) and np.all(regions[case["head"]] > 0)
    # The region holding the disc's centre covers the disc and little else.
    inner = regions == regions[SIZE // 2 - 8, SIZE // 2 + 12]
    iou = np.count_nonzero(inner & case["disc"]) / np.count_nonzero(inner | case["disc"])
    assert iou > 0.8


def test_chan_vese_separates_a_bright_disc() -> None:
    case = bright_disc_case()
    # Noise this strong leaves speckle in a plain threshold; Chan-Vese's smoothing does not.
    found = cluster.chan_vese(case["image"], case["head"])
    assert found.shape == case["head"].shape and found.dtype == bool
    assert not (found & ~case["head"]).any()
    iou = np.count_nonzero(found & case["disc"]) / np.count_nonzero(found | case["disc"])
    assert iou > 0.9
