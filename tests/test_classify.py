"""The k-fold protocol: honest folds, thresholds from validation only, tabular models that learn."""

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from lib.classify import kfold, tabular
from lib.classify.fold import Fold
from lib.common import splits


def toy(n: int = 80, seed: int = 0) -> tuple[kfold.Inputs, dict]:
    """Two informative features plus noise; groups of two copies share a label."""
    rng = np.random.default_rng(seed)
    y = np.repeat(rng.random(n // 2) < 0.6, 2).astype(int)
    x = rng.normal(size=(n, 6))
    x[:, 0] += 2.0 * y
    x[:, 1] -= 1.0 * y
    ids = [f"im{i}" for i in range(n)]
    groups = np.array([f"g{i // 2}" for i in range(n)])
    folds = splits.make(ids, ["tumor" if v else "no_tumor" for v in y], list(groups), folds=4)
    return kfold.Inputs(ids=ids, x=x, y=y, groups=groups), folds


def test_inner_validation_never_shares_a_group_with_inner_training() -> None:
    data, _ = toy()
    train, val = kfold.inner_split(data.y, data.groups, seed=3)
    assert not set(data.groups[train]) & set(data.groups[val])
    assert 0.1 < len(val) / len(data.y) < 0.35
    assert set(data.y[val]) == {0, 1}


def test_cross_validation_predicts_each_image_once_per_repeat(tmp_path: Path) -> None:
    data, folds = toy()
    cv = kfold.cross_validate("features", data, folds, {"rebalance": "class_weight"}, tmp_path, progress=lambda s: None)
    assert sorted(cv.oof["id"]) == sorted(data.ids)
    fold_of = folds["assignments"][0]
    assert (cv.oof["fold"] == cv.oof["id"].map(fold_of)).all()
    result = kfold.evaluate(cv.oof)
    assert result["roc_auc"] > 0.85  # the signal is strong; a broken pipeline lands near 0.5
    assert result["roc_auc_ci"][0] < result["roc_auc"] < result["roc_auc_ci"][1] + 1e-9


def test_threshold_comes_from_validation_not_from_the_test_fold(tmp_path: Path, monkeypatch) -> None:
    data, folds = toy()
    seen = []

    def spy(fold: Fold, settings: dict):
        seen.append(fold)
        return tabular.run_fold(fold, settings)

    monkeypatch.setattr(kfold, "runner", lambda family: spy)
    cv = kfold.cross_validate("features", data, folds, {}, tmp_path, progress=lambda s: None)
    for fold, (_, group) in zip(seen, cv.oof.groupby(["repeat", "fold"])):
        test_rows = {tuple(r) for r in data.x[[data.ids.index(i) for i in group["id"]]]}
        for part in (fold.train_x, fold.val_x):
            assert not test_rows & {tuple(r) for r in part}  # the outer fold never trains or validates
        assert len(set(group["threshold"])) == 1


def test_metadata_matrix_one_hot_encodes_format_and_mode() -> None:
    df = pd.DataFrame({"width": ["100", "200"], "height": ["100", "50"], "file_size": ["1000", "4000"],
                       "format": ["JPEG", "PNG"], "mode": ["L", "RGB"]})
    m = tabular.metadata_matrix(df)
    n_onehot = sum(len(v) for v in tabular.METADATA_CATEGORIES.values())
    assert m.shape == (2, 3 + 2 + n_onehot)
    assert np.isfinite(m).all()
    assert m[:, 5:].sum() == 4  # one format and one mode per file


@pytest.mark.parametrize("rebalance", ["class_weight", "oversample", "none"])
def test_tabular_fold_trains_and_predicts(rebalance: str, tmp_path: Path) -> None:
    data, _ = toy()
    fold = Fold(train_x=data.x[:50], train_y=data.y[:50], val_x=data.x[50:65], val_y=data.y[50:65],
                test_x=data.x[65:], out_dir=tmp_path, seed=0)
    result = tabular.run_fold(fold, {"family": "features", "rebalance": rebalance})
    assert result.test_prob.shape == (15,) and ((result.test_prob >= 0) & (result.test_prob <= 1)).all()
    assert result.history["chosen"][0] in tabular.candidates("features", None)


def test_fusion_averages_a_features_head_and_an_embeddings_head(tmp_path: Path) -> None:
    data, _ = toy()
    noise = np.random.default_rng(1).normal(size=(len(data.y), 6))  # embedding block: uninformative
    x = np.hstack([data.x, noise])
    fold = Fold(train_x=x[:50], train_y=data.y[:50], val_x=x[50:65], val_y=data.y[50:65], test_x=x[65:],
                out_dir=tmp_path, seed=0, extra_x=x[:4])
    settings = {"family": "fusion", "feature_columns": data.x.shape[1]}
    fused = tabular.run_fold(fold, settings)
    alone = [tabular.run_fold(tabular._columns(fold, part, head), {"family": family}) for family, part, head in
             (("features", slice(0, data.x.shape[1]), "features"),
              ("medsam_embed", slice(data.x.shape[1], None), "embeddings"))]
    np.testing.assert_allclose(fused.test_prob, (alone[0].test_prob + alone[1].test_prob) / 2)
    assert fused.extra_prob.shape == (4,)
    assert {"features chosen", "embeddings chosen"} <= set(fused.history)
    # each head's fitted classifier is saved in its own folder and predicts the same after loading
    saved = tabular.load(tmp_path / "features")
    np.testing.assert_allclose(saved.predict_proba(x[65:, :data.x.shape[1]])[:, 1], alone[0].test_prob)
    assert (tmp_path / "embeddings" / tabular.MODEL_FILE).is_file()
