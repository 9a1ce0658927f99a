"""Mask metrics against cases worked out by hand."""

import math

import numpy as np
import pandas as pd
import pytest

from lib.segment import mask_metrics


def square(top: int, left: int, side: int = 20, shape: tuple[int, int] = (64, 64)) -> np.ndarray:
    mask = np.zeros(shape, np.uint8)
    mask[top : top + side, left : left + side] = 255
    return mask


def test_shifted_square() -> None:
    truth, pred = square(10, 10), square(12, 10)  # 2 rows lower: 18 x 20 overlap
    assert math.isclose(mask_metrics.dice(pred, truth), 2 * 360 / 800)
    assert math.isclose(mask_metrics.iou(pred, truth), 360 / 440)
    assert mask_metrics.hd95(pred, truth) == 2.0  # top and bottom edges lie 2 px apart, the sides 0-2


def test_single_pixels_four_apart_and_spacing() -> None:
    a, b = np.zeros((16, 16), bool), np.zeros((16, 16), bool)
    a[5, 5], b[5, 9] = True, True
    assert mask_metrics.hd95(a, b) == 4.0
    assert mask_metrics.hd95(a, b, spacing=0.5) == 2.0
    assert mask_metrics.dice(a, b) == 0.0


def test_identical_and_empty_conventions() -> None:
    truth, empty = square(5, 5), np.zeros((64, 64), np.uint8)
    assert mask_metrics.dice(truth, truth) == mask_metrics.iou(truth, truth) == 1.0
    assert mask_metrics.hd95(truth, truth) == 0.0
    assert mask_metrics.dice(empty, empty) == 1.0 and mask_metrics.hd95(empty, empty) == 0.0
    assert mask_metrics.dice(empty, truth) == 0.0 and math.isnan(mask_metrics.hd95(empty, truth))
    assert mask_metrics.dice(truth // 255, truth) == 1.0  # 0/1 and 0/255 masks mean the same


def test_summary_counts_misses_and_false_positives() -> None:
    truth, empty = square(10, 10), np.zeros((64, 64), np.uint8)
    rows = pd.DataFrame([
        mask_metrics.score(truth, truth),       # perfect
        mask_metrics.score(empty, truth),       # missed tumour
        mask_metrics.score(square(0, 0), empty),  # false positive on a tumour-free slice
        mask_metrics.score(empty, empty),       # correct rejection
    ])
    s = mask_metrics.summary(rows)
    assert s["tumour_images"] == 2 and s["dice_mean"] == 0.5
    assert s["missed"] == 1 and s["false_positive_images"] == 1 and s["tumour_free_images"] == 2


def test_dice_interval_brackets_the_mean_and_narrows_with_more_slices() -> None:
    few = np.array([0.9, 0.85, 0.0, 0.95, 0.7, 0.2, 0.88, 0.92])
    low, high = mask_metrics.dice_interval(few)
    assert low < few.mean() < high and 0.0 <= low and high <= 1.0
    many_low, many_high = mask_metrics.dice_interval(np.tile(few, 9))
    assert many_high - many_low < (high - low) / 2  # 9x the slices: about a third of the width
    assert mask_metrics.dice_interval(np.full(6, 0.7)) == pytest.approx((0.7, 0.7))
    assert all(np.isnan(mask_metrics.dice_interval(np.array([]))))


def test_summary_reports_the_dice_interval_over_tumour_slices_only() -> None:
    truth, empty = square(10, 10), np.zeros((64, 64), np.uint8)
    rows = pd.DataFrame([mask_metrics.score(truth, truth), mask_metrics.score(square(12, 12), truth),
                         mask_metrics.score(square(0, 0), empty)])  # the tumour-free slice stays out
    s = mask_metrics.summary(rows)
    dices = rows["dice"][rows["true_pixels"] > 0]
    assert s["dice_ci"][0] == pytest.approx(dices.min()) and s["dice_ci"][1] == pytest.approx(dices.max())
