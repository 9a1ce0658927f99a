"""lib.deploy.ensemble: combiners, calibrators and the nested protocol on synthetic OOF predictions with known structure."""

import numpy as np
import pytest

from lib.common import metrics
from lib.deploy import ensemble


def synthetic_members(n: int = 300, seed: int = 0) -> ensemble.Members:
    """Member 0 informative, member 1 weakly informative, member 2 noise; 5 folds."""
    rng = np.random.default_rng(seed)
    y = (rng.random(n) < 0.6).astype(int)
    signal = np.column_stack([2.5 * (y - 0.5), 0.6 * (y - 0.5), np.zeros(n)]) + rng.normal(0, 1, (n, 3))
    prob = 1 / (1 + np.exp(-signal))
    return ensemble.Members(ids=[f"s{i}" for i in range(n)], names=["good", "weak", "noise"], prob=prob, y=y,
                            fold=np.arange(n) % 5)


def auc(y: np.ndarray, p: np.ndarray) -> float:
    from sklearn.metrics import roc_auc_score

    return float(roc_auc_score(y, p))


def test_best_and_weighted_follow_member_quality() -> None:
    m = synthetic_members()
    best = ensemble.fit_combiner("best", m.prob, m.y)
    weighted = ensemble.fit_combiner("weighted", m.prob, m.y)
    assert best["weights"] == [1.0, 0.0, 0.0]
    assert weighted["weights"][0] > weighted["weights"][1] > weighted["weights"][2]
    assert sum(weighted["weights"]) == pytest.approx(1)


def test_stacking_learns_to_ignore_noise_and_beats_the_plain_mean() -> None:
    m = synthetic_members()
    stack = ensemble.fit_combiner("stacking", m.prob, m.y)
    assert abs(stack["coef"][2]) < 0.3 * stack["coef"][0]
    stacked = ensemble.cv_combined("stacking", m.prob, m.y, m.fold)
    mean = ensemble.cv_combined("mean", m.prob, m.y, m.fold)
    assert auc(m.y, stacked) > auc(m.y, mean)
    assert ((0 <= stacked) & (stacked <= 1)).all()


def test_calibration_lowers_the_error_of_distorted_probabilities() -> None:
    rng = np.random.default_rng(1)
    true_p = rng.random(2000)
    y = (rng.random(2000) < true_p).astype(int)
    distorted = true_p ** 3  # ranks kept, probabilities far too low
    fold = np.arange(2000) % 5
    before = metrics.expected_calibration_error(y, distorted)
    for kind in ensemble.CALIBRATORS:
        after = metrics.expected_calibration_error(y, ensemble.cv_calibrated(kind, distorted, y, fold))
        assert after < before / 3, kind
    chosen, errors = ensemble.choose_calibrator(distorted, y, fold)
    assert chosen == "platt" or errors["isotonic"] < errors["platt"] - ensemble.ISOTONIC_MARGIN


def test_isotonic_is_chosen_only_where_platt_cannot_fit_the_shape() -> None:
    rng = np.random.default_rng(2)
    raw = rng.random(3000)
    fold = np.arange(3000) % 5
    platt_shape = (rng.random(3000) < ensemble.sigmoid(2 * ensemble.logit(raw) - 1)).astype(int)
    assert ensemble.choose_calibrator(raw, platt_shape, fold)[0] == "platt"
    cliff = (rng.random(3000) < np.where(raw < 0.7, 0.05, 0.95)).astype(int)  # a step Platt can only smooth
    assert ensemble.choose_calibrator(raw, cliff, fold)[0] == "isotonic"


def test_fitted_ensemble_survives_json_and_meets_its_sensitivity_target() -> None:
    m = synthetic_members()
    model = ensemble.fit(m.prob, m.y, m.fold, m.names, target_sensitivity=0.9)
    again = ensemble.Ensemble.from_json(model.to_json())
    np.testing.assert_allclose(again.predict(m.prob), model.predict(m.prob))
    found = (model.predict(m.prob)[m.y == 1] >= model.threshold).mean()
    assert found >= 0.85  # chosen on cross-validated probabilities, applied to the fitted ones
    assert model.combiner["kind"] in ensemble.COMBINERS and model.calibrator["kind"] in ensemble.CALIBRATORS


def test_nested_oof_never_uses_the_held_out_fold() -> None:
    m = synthetic_members()
    oof = ensemble.nested_oof(m)
    assert sorted(oof["id"]) == sorted(m.ids) and oof["id"].is_unique
    # Flip fold 0's labels: fold 0's own predictions and threshold must not move (fitted without it) ...
    flipped = ensemble.Members(m.ids, m.names, m.prob, np.where(m.fold == 0, 1 - m.y, m.y), m.fold)
    again = ensemble.nested_oof(flipped)
    held = oof["fold"] == 0
    np.testing.assert_allclose(again.loc[held, "prob"], oof.loc[held, "prob"])
    assert again.loc[held, "threshold"].iloc[0] == oof.loc[held, "threshold"].iloc[0]
    # ... while the other folds, which did learn from fold 0, do move.
    assert not np.allclose(again.loc[~held, "prob"], oof.loc[~held, "prob"])


@pytest.mark.slow
def test_auc_difference_is_zero_for_identical_models_and_positive_for_a_better_one() -> None:
    m = synthetic_members()
    same = metrics.auc_difference(m.y, m.prob[:, 0], m.prob[:, 0])
    assert same["difference"] == 0 and same["ci"][0] <= 0 <= same["ci"][1]
    better = metrics.auc_difference(m.y, m.prob[:, 0], m.prob[:, 2])
    assert better["difference"] > 0.2 and better["ci"][0] > 0


def test_load_members_excludes_the_metadata_shortcut(tmp_path) -> None:
    m = synthetic_members(n=40)
    for j, name in enumerate(["features", "metadata"]):
        folder = tmp_path / "models" / name
        folder.mkdir(parents=True)
        import pandas as pd

        pd.DataFrame({"id": m.ids, "repeat": 0, "fold": m.fold, "label": m.y, "prob": m.prob[:, j]}).to_csv(
            folder / "oof.csv", index=False)
    loaded = ensemble.load_members(tmp_path)
    assert loaded.names == ["features"]
    np.testing.assert_allclose(loaded.prob[:, 0], m.prob[np.argsort(m.ids), 0])
    with pytest.raises(ValueError, match="cnn"):
        ensemble.load_members(tmp_path, ["features", "cnn"])
