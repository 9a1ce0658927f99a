"""lib.regions.candidates: each test builds a slice or a box whose right answer is known by construction."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from lib.acquire import phantom
from lib.preprocess import clean
from lib.regions import candidates

# Artefacts off: the phantom tests are about finding the tumour, not about cleanup.
PLAIN = {name: False for name in phantom.ARTEFACTS}


def synthetic_head(
    shape: tuple[int, int] = (256, 256),
    blob: tuple[int, int, int] | None = (150, 100, 14),
    blob_grey: int = 200,
    seed: int = 0,
) -> dict[str, np.ndarray]:
    """A head on black: bright scalp ring, dark skull, textured grey brain, optionally one bright disc.

    blob: (x, y, radius) of the 'tumour' in pixels, or None for a tumour-free head.
    """
    rng = np.random.default_rng(seed)
    height, width = shape
    centre = (width // 2, height // 2)
    axes = (int(width * 0.38), int(height * 0.45))

    def ellipse(scale: float) -> np.ndarray:
        canvas = np.zeros(shape, np.uint8)
        cv2.ellipse(canvas, centre, (round(axes[0] * scale), round(axes[1] * scale)), 0, 0, 360, 1, -1)
        return canvas > 0

    head, inside_scalp, brain = ellipse(1.0), ellipse(0.92), ellipse(0.86)
    image = np.zeros(shape, np.float32)
    image[head], image[inside_scalp] = 190, 25
    # Brain texture with a robust SD of about 8 grey levels, as on real slices (4 to 47).
    texture = cv2.GaussianBlur(rng.normal(0, 40, shape).astype(np.float32), (0, 0), 1.5)
    image[brain] = 100 + texture[brain]
    tumour = np.zeros(shape, bool)
    if blob is not None:
        x, y, radius = blob
        canvas = np.zeros(shape, np.uint8)
        cv2.circle(canvas, (x, y), radius, 1, -1)
        tumour = canvas > 0
        image[tumour] = blob_grey
        image = cv2.GaussianBlur(image, (0, 0), 0.8)
    image += rng.normal(0, 3, shape)
    return {"image": np.clip(image, 0, 255).astype(np.uint8), "head": head, "tumour": tumour}


def cleaned_phantoms(n_tumors: int, count: int = 10) -> list[tuple[np.ndarray, np.ndarray]]:
    """The first `count` easy plain phantoms through the cleaning stage: (256 px slice, tumour mask).

    Easy: T1c or FLAIR, where tumours are bright and CSF is dark, and (with a
    tumour) a hyperintense one. On T2 the ventricles are the brightest blobs
    in a healthy brain; that is the hard case, measured by the benchmark.
    """
    out = []
    for seed in range(100):
        ph = phantom.make_slice(np.random.default_rng(seed), n_tumors=n_tumors, force=PLAIN)
        if ph.info["sequence"] not in ("T1c", "FLAIR") or ph.info["appearances"] not in ([], ["hyperintense"]):
            continue
        result = clean.clean_image(ph.image, size=256)
        out.append((result.image, clean.warp_mask(ph.tumor_mask, result.square_box, 256)))
        if len(out) == count:
            return out
    raise AssertionError("too few easy phantoms in 100 seeds")


# --- finding ---------------------------------------------------------------------


def test_bright_disc_in_a_plain_head_gets_a_tight_confident_box() -> None:
    # The scorer picks the 2-SD level, which takes in the disc's blurred edge:
    # a 30 px disc gets a 36 px box, IoU 0.65. A whole-head box would get 0.02.
    case = synthetic_head()
    found = candidates.find(case["image"], clean.head_mask(case["image"]))
    assert candidates.box_hit(found.box, case["tumour"])
    assert candidates.box_iou(found.box, case["tumour"]) >= 0.6, found
    assert found.score >= candidates.MIN_SCORE
    assert "bright" in found.reason


def test_box_is_in_image_pixels_for_any_image_size() -> None:
    # 300 x 400 is worked on at WORK_SIZE; the box must come back at full size.
    case = synthetic_head(shape=(300, 400), blob=(260, 120, 18))
    found = candidates.find(case["image"], clean.head_mask(case["image"]))
    assert candidates.box_iou(found.box, case["tumour"]) >= 0.6, found
    x0, y0, x1, y1 = found.box
    assert 0 <= x0 < x1 <= 400 and 0 <= y0 < y1 <= 300


def test_uniform_tumour_free_head_gets_no_box_or_a_low_score() -> None:
    case = synthetic_head(blob=None)
    found = candidates.find(case["image"], clean.head_mask(case["image"]))
    assert found.box is None or found.score < 0.3, found
    with_disc = synthetic_head()
    assert found.score < candidates.find(with_disc["image"], clean.head_mask(with_disc["image"])).score


def test_empty_head_gives_no_candidate() -> None:
    image = np.zeros((64, 64), np.uint8)
    found = candidates.find(image, np.zeros((64, 64), bool))
    assert found.box is None and found.score == 0.0


def test_find_leaves_its_inputs_alone() -> None:
    case = synthetic_head()
    image, head = case["image"].copy(), clean.head_mask(case["image"])
    head_copy = head.copy()
    candidates.find(image, head)
    assert np.array_equal(image, case["image"]) and np.array_equal(head, head_copy)


def test_cluster_labels_add_levels_and_still_find_the_disc() -> None:
    case = synthetic_head()
    head = clean.head_mask(case["image"])
    # Three intensity classes by quantile, -1 outside the head (lib.regions.cluster's convention).
    cuts = np.quantile(case["image"][head], [0.33, 0.9])
    labels = np.where(head, np.digitize(case["image"], cuts), -1).astype(np.int16)
    found = candidates.find(case["image"], head, labels)
    assert candidates.box_iou(found.box, case["tumour"]) >= 0.6, found
    # The two class boundaries (about the brain's median and between brain and disc) become levels.
    domain = case["head"]
    plain = candidates.threshold_levels(case["image"], domain, 100.0, 8.0, None)
    with_labels = candidates.threshold_levels(case["image"], domain, 100.0, 8.0, labels)
    assert sum(map(len, (lv for _, lv in with_labels))) > sum(map(len, (lv for _, lv in plain)))


def test_candidate_hits_the_tumour_on_easy_phantoms(monkeypatch: pytest.MonkeyPatch) -> None:
    # Localisation only: no score cut. Measured: 9 of the first 10, 19 of the first 20.
    monkeypatch.setattr(candidates, "MIN_SCORE", 0.0)
    hits = [candidates.box_hit(candidates.find(image, clean.head_mask(image)).box, mask)
            for image, mask in cleaned_phantoms(1)]
    assert sum(hits) >= 8


def test_easy_tumour_phantoms_score_higher_than_tumour_free_ones() -> None:
    with_tumour = [candidates.find(image, clean.head_mask(image)).score for image, _ in cleaned_phantoms(1, 6)]
    without = [candidates.find(image, clean.head_mask(image)).score for image, _ in cleaned_phantoms(0, 6)]
    assert np.median(with_tumour) > np.median(without) + 0.3


# --- boxes -----------------------------------------------------------------------


def test_mask_box_is_exclusive_at_the_far_end() -> None:
    mask = np.zeros((20, 30), bool)
    mask[5:8, 10:16] = True
    assert candidates.mask_box(mask) == (10, 5, 16, 8)
    assert candidates.mask_box(np.zeros((4, 4), bool)) is None


def test_box_hit_needs_one_tumour_pixel_inside() -> None:
    mask = np.zeros((20, 20), bool)
    mask[10, 10] = True
    assert candidates.box_hit((10, 10, 11, 11), mask)
    assert not candidates.box_hit((0, 0, 10, 10), mask)  # x1, y1 exclusive: stops just short
    assert not candidates.box_hit(None, mask)


def test_box_iou_against_hand_computed_values() -> None:
    mask = np.zeros((20, 20), bool)
    mask[0:10, 0:10] = True  # true box (0, 0, 10, 10), area 100
    assert candidates.box_iou((0, 0, 10, 10), mask) == 1.0
    assert candidates.box_iou((5, 0, 15, 10), mask) == pytest.approx(50 / 150)
    assert candidates.box_iou((0, 0, 20, 20), mask) == pytest.approx(100 / 400)
    assert candidates.box_iou((10, 10, 20, 20), mask) == 0.0
    assert candidates.box_iou(None, mask) == 0.0
    assert candidates.box_iou((0, 0, 5, 5), np.zeros((20, 20), bool)) == 0.0


def test_box_text_round_trip() -> None:
    for box in [(0, 0, 1, 1), (12, 34, 256, 200), None]:
        assert candidates.parse_box_text(candidates.box_text(box)) == box
    assert candidates.box_text((1, 2, 3, 4)) == "1 2 3 4"
    assert candidates.box_text(None) == ""
    with pytest.raises(ValueError):
        candidates.parse_box_text("1 2 3")


def test_pad_box_grows_and_clips() -> None:
    pad = candidates.BOX_PAD_PX
    assert candidates.pad_box((10, 10, 20, 20), (64, 64)) == (10 - pad, 10 - pad, 20 + pad, 20 + pad)
    assert candidates.pad_box((0, 0, 64, 64), (64, 64)) == (0, 0, 64, 64)


def test_evaluate_counts_hits_ious_misses_and_false_candidates() -> None:
    tumour = np.zeros((10, 10), bool)
    tumour[0:4, 0:4] = True  # true box (0, 0, 4, 4)
    empty = np.zeros((10, 10), bool)
    results = [
        (candidates.Candidate((0, 0, 4, 4), 0.9, "", 100), tumour),  # hit, IoU 1, area share 0.16
        (candidates.Candidate((2, 0, 6, 4), 0.8, "", 100), tumour),  # hit, IoU 8 / 24
        (candidates.Candidate((5, 5, 9, 9), 0.7, "", 100), tumour),  # miss, IoU 0
        (candidates.Candidate(None, 0.1, "", 100), tumour),  # no candidate
        (candidates.Candidate((1, 1, 3, 3), 0.6, "", 100), empty),  # false candidate
        (candidates.Candidate(None, 0.1, "", 100), empty),
    ]
    out = candidates.evaluate(results)
    assert out["n_tumour"] == 4 and out["n_tumour_free"] == 2
    assert out["hit_rate"] == pytest.approx(0.5)
    assert out["hit_rate_iou30"] == pytest.approx(0.5)
    assert out["mean_box_iou"] == pytest.approx((1 + 8 / 24) / 4)
    assert out["median_box_iou"] == pytest.approx((0 + 8 / 24) / 2)
    assert out["no_candidate"] == pytest.approx(0.25)
    assert out["box_area_share"] == pytest.approx(0.16)
    assert out["false_candidate_rate"] == pytest.approx(0.5)
