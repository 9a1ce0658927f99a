"""lib.common.metrics against values computed by hand."""

import numpy as np
import pytest

from lib.common import metrics

# 4 tumours, 4 without; probabilities chosen so every count is easy to check.
Y = np.array([1, 1, 1, 1, 0, 0, 0, 0], bool)
P = np.array([0.9, 0.8, 0.6, 0.3, 0.7, 0.4, 0.2, 0.1])


def test_counts_and_rates_at_a_threshold() -> None:
    m = metrics.at_threshold(Y, P, 0.5)
    assert m["confusion"] == {"tp": 3, "fp": 1, "tn": 3, "fn": 1}
    assert m["sensitivity"] == pytest.approx(3 / 4)
    assert m["specificity"] == pytest.approx(3 / 4)
    assert m["precision"] == pytest.approx(3 / 4)
    assert m["f1"] == pytest.approx(2 * 3 / (2 * 3 + 1 + 1))
    assert m["accuracy"] == pytest.approx(6 / 8)


def test_threshold_is_the_highest_that_meets_the_sensitivity() -> None:
    # all 4 tumours needed -> the lowest tumour score; 3 of 4 (0.75) -> the third highest
    assert metrics.threshold_for_sensitivity(Y, P, 1.0) == pytest.approx(0.3)
    assert metrics.threshold_for_sensitivity(Y, P, 0.75) == pytest.approx(0.6)
    assert metrics.at_threshold(Y, P, metrics.threshold_for_sensitivity(Y, P, 0.95))["sensitivity"] == 1.0


def test_auc_and_calibration_by_hand() -> None:
    s = metrics.summary(Y, P, threshold=0.5, rounds=200)
    # pairs (tumour, none) ranked right: 0.9,0.8 beat all 4; 0.6 beats 3; 0.3 beats 2 -> 13 of 16
    assert s["roc_auc"] == pytest.approx(13 / 16)
    low, high = s["roc_auc_ci"]
    assert low <= s["roc_auc"] <= high and high <= 1.0
    assert s["brier"] == pytest.approx(np.mean((P - Y) ** 2))
    # bins of width 0.1: every bin holds one slice, so ECE = mean |y - p|
    assert s["ece"] == pytest.approx(np.mean(np.abs(Y - P)))
    assert s["operating"]["confusion"]["tp"] == 3


def test_perfect_ranking_has_a_tight_interval() -> None:
    y = np.array([0] * 20 + [1] * 20, bool)
    p = np.linspace(0, 1, 40)
    s = metrics.summary(y, p, threshold=0.5, rounds=200)
    assert s["roc_auc"] == 1.0 and s["roc_auc_ci"] == (1.0, 1.0)
    assert s["pr_auc"] == pytest.approx(1.0)


def test_one_class_only_gives_nan_auc_not_an_error() -> None:
    s = metrics.summary(np.ones(5, bool), np.full(5, 0.7), threshold=0.5, rounds=50)
    assert np.isnan(s["roc_auc"]) and s["operating"]["sensitivity"] == 1.0
    # such a value prints as "n/a" in tables and cards, whether NaN in memory or null read back from JSON
    assert metrics.number_text(s["roc_auc"]) == metrics.number_text(None) == "n/a"
    assert metrics.interval_text(s["roc_auc_ci"]) == metrics.interval_text([None, None]) == ""
    assert metrics.number_text(0.12345) == "0.123" and metrics.interval_text((0.1, 0.25)) == "[0.100, 0.250]"
    assert metrics.interval_text(np.array([0.1, 0.25])) == "[0.100, 0.250]" and metrics.interval_text(None) == ""
    assert metrics.rounded(None) is None and metrics.rounded(0.12345) == 0.123
    # the one rate that exists keeps its interval; the others have none
    found = metrics.summary(np.ones(40, bool), np.linspace(0, 1, 40), threshold=0.5, rounds=200)["operating"]
    low, high = found["sensitivity_ci"]
    assert low < found["sensitivity"] < high and "specificity_ci" not in found and "precision_ci" not in found
