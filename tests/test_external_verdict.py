"""06's judgement of models inside one data set against outside it (lib.classify.run_classify_kfold)."""

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from lib.classify import run_classify_kfold as stage06


def test_an_external_set_with_one_class_gets_sensitivity_with_its_interval() -> None:
    figshare = pd.DataFrame({"label": ["tumor"] * 40})
    phantoms = pd.DataFrame({"label": ["tumor"] * 20 + ["no_tumor"] * 20})
    prob = np.r_[np.linspace(0.2, 1, 40), np.linspace(0.5, 1, 20), np.linspace(0, 0.6, 20)]
    scores = stage06.external_scores([(figshare, Path("runs/figshare/04_cluster")), (phantoms, Path("data/04_x"))],
                                     prob, threshold=0.4)
    assert set(scores) == {"figshare", "data"}
    found = scores["figshare"]
    assert found["sensitivity"] == pytest.approx(np.mean(np.linspace(0.2, 1, 40) >= 0.4))
    assert found["specificity"] is None and found["sensitivity_ci"][0] < found["sensitivity"] < found["sensitivity_ci"][1]
    assert scores["data"]["specificity"] == pytest.approx(np.mean(np.linspace(0, 0.6, 20) < 0.4))
    assert 0.5 < scores["data"]["roc_auc"] <= 1


def _model(auc: float, **outside: dict[str, float | None]) -> dict:
    return {"roc_auc": auc, "external": {src: {"roc_auc": v.get("roc_auc", float("nan")),
                                              "sensitivity": v.get("sensitivity")} for src, v in outside.items()}}


def test_a_model_that_wins_inside_but_loses_outside_is_named() -> None:
    results = {"fusion": _model(0.96, figshare={"sensitivity": 0.80}, phantoms={"roc_auc": 0.70, "sensitivity": 0.9}),
               "features": _model(0.90, figshare={"sensitivity": 0.99}, phantoms={"roc_auc": 0.65, "sensitivity": 1})}
    verdict = stage06.external_verdict(results)
    assert verdict["inside"] == "fusion"
    assert verdict["outside"]["figshare"] == {"best": "features", "by": "sensitivity",
                                              "values": {"fusion": 0.80, "features": 0.99}}
    assert verdict["outside"]["phantoms"]["best"] == "fusion" and verdict["outside"]["phantoms"]["by"] == "roc_auc"
    assert verdict["verdicts"][0].startswith("fusion wins inside (ROC AUC 0.960) but loses on figshare")
    assert "overlap" not in verdict["verdicts"][0]  # no intervals given
    results["fusion"]["external"]["figshare"]["sensitivity_ci"] = [0.7, 0.9]
    results["features"]["external"]["figshare"]["sensitivity_ci"] = [0.85, 1.0]
    assert stage06.external_verdict(results)["verdicts"][0].endswith("; the 95 % intervals overlap")
    assert verdict["verdicts"][1] == "fusion wins inside and on phantoms (roc_auc 0.700)"
    assert stage06.external_verdict({"cnn": _model(0.8)}) == {"inside": "cnn", "outside": {}, "verdicts": []}


def test_the_shortcut_baseline_is_never_the_winner_outside() -> None:
    results = {"features": _model(0.95, figshare={"sensitivity": 0.98}),
               "metadata": _model(0.80, figshare={"sensitivity": 1.0})}  # calls every figshare-like file a tumour
    verdict = stage06.external_verdict(results)
    assert verdict["outside"]["figshare"]["best"] == "features" and "metadata" not in verdict["outside"]["figshare"][
        "values"]


def test_the_verdict_reads_metrics_back_from_json_where_undefined_ones_are_null() -> None:
    results = {"fusion": _model(0.96, figshare={"sensitivity": 0.9, "roc_auc": None}),
               "features": _model(0.90, figshare={"sensitivity": 0.95, "roc_auc": None})}
    assert stage06.external_verdict(results)["outside"]["figshare"]["by"] == "sensitivity"
