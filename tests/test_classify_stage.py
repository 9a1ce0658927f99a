"""Integration: stage 06 on the small phantom run of the 03/04 tests."""

import json
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from lib.common import manifest
from tests.conftest import ROOT
from tests.test_enhance_cluster_stages import run  # noqa: F401 - the shared module fixture
from tests.test_pipeline import stage

pytestmark = pytest.mark.slow  # runs stage 06 in subprocesses


@pytest.fixture(scope="module")
def classified(run: Path) -> Path:  # noqa: F811
    stage("06_classify_kfold.py", "--in", str(run / "04"), "--out", str(run / "06"),
          "--models", "features,metadata", "--folds", "3")
    return run / "06"


def test_every_model_predicts_every_image_once_out_of_fold(classified: Path, run: Path) -> None:  # noqa: F811
    ids = set(manifest.read(run / "04")["id"])
    folds = json.loads((classified / "splits.json").read_text())["assignments"][0]
    for model in ("features", "metadata"):
        oof = pd.read_csv(classified / "models" / model / "oof.csv")
        assert set(oof["id"]) == ids and oof["id"].is_unique
        assert (oof["fold"] == oof["id"].map(folds)).all()  # both models used the saved folds
        assert oof["prob"].between(0, 1).all()


def test_metrics_comparison_and_report(classified: Path) -> None:
    summary = json.loads((classified / "metrics.json").read_text())["models"]
    for model in ("features", "metadata"):
        m = summary[model]
        assert {"roc_auc", "roc_auc_ci", "pr_auc", "operating", "at_0.5", "brier", "ece"} <= set(m)
        assert {"sensitivity", "specificity", "precision", "f1", "confusion"} <= set(m["operating"])
        for plot in m["plots"]:
            assert (classified / plot).is_file()
    lines = (classified / "comparison.md").read_text().splitlines()
    aucs = [float(line.split("|")[2]) for line in lines[2:]]
    assert aucs == sorted(aucs, reverse=True) and len(aucs) == 2
    assert "not a medical device" in (classified / "report.html").read_text()


def test_rerun_reuses_finished_models(classified: Path, run: Path) -> None:  # noqa: F811
    result = stage("06_classify_kfold.py", "--in", str(run / "04"), "--out", str(classified),
                   "--models", "features,metadata", "--folds", "3")
    assert result.stdout.count("reusing") == 2


def test_unknown_model_fails_in_one_line(run: Path, tmp_path: Path) -> None:  # noqa: F811
    done = subprocess.run([sys.executable, str(ROOT / "scripts" / "06_classify_kfold.py"), "--in", str(run / "04"),
                           "--out", str(tmp_path / "06"), "--models", "cnn,svm"], capture_output=True, text=True)
    assert done.returncode != 0 and "svm" in done.stderr and "Traceback" not in done.stderr


def test_missing_backbone_weights_stop_the_stage_before_training(run: Path, tmp_path: Path) -> None:  # noqa: F811
    missing = tmp_path / "nowhere" / "efficientnetv2-b0_notop.h5"
    done = subprocess.run([sys.executable, str(ROOT / "scripts" / "06_classify_kfold.py"), "--in", str(run / "04"),
                           "--out", str(tmp_path / "06"), "--models", "features,efficientnetv2b0",
                           "--weights", str(missing)], capture_output=True, text=True)
    assert done.returncode != 0 and "Traceback" not in done.stderr
    message = done.stderr.strip().splitlines()[-1]  # lines above it are TensorFlow's start-up chatter
    assert message.startswith("error:") and str(missing) in message and "not found" in message
    assert not (tmp_path / "06" / "models").exists()  # nothing trained, not even the features model


def test_external_sets_are_scored_each_and_the_inside_winner_is_judged_outside(
        run: Path, tmp_path: Path) -> None:  # noqa: F811
    tumours = tmp_path / "tumours" / "04_cluster"  # an all-tumour set, as figshare is
    rows = manifest.read(run / "04")
    rows = manifest.rebase(rows[rows["label"] == "tumor"], run / "04", tumours)
    tumours.mkdir(parents=True)
    manifest.write(rows, tumours)
    (tumours / "features.csv").write_text((run / "04" / "features.csv").read_text())
    out = tmp_path / "06"
    done = stage("06_classify_kfold.py", "--in", str(run / "04"), "--out", str(out), "--models", "features,metadata",
                 "--folds", "3", "--external", str(tumours), str(run / "04"))
    summary = json.loads((out / "metrics.json").read_text())
    features = summary["models"]["features"]["external"]
    assert set(features) == {"tumours", run.name}  # named by their data set's folder
    assert features["tumours"]["images"] == features["tumours"]["tumours"] == len(rows)
    assert features["tumours"]["specificity"] is None and features["tumours"]["roc_auc"] is None
    low, high = features["tumours"]["sensitivity_ci"]
    assert low <= features["tumours"]["sensitivity"] <= high
    both = features[run.name]
    assert 0 <= both["roc_auc"] <= 1 and both["specificity"] is not None
    selection = summary["selection"]
    assert selection["inside"] in ("features", "metadata") and selection["outside"]["tumours"]["by"] == "sensitivity"
    assert selection["outside"][run.name]["by"] == "roc_auc"
    assert len(selection["verdicts"]) == 2 and all(v in done.stdout for v in selection["verdicts"])
    header = (out / "comparison.md").read_text().splitlines()[0]
    assert "tumours_sensitivity" in header and f"{run.name}_roc_auc" in header
