"""bench/compare_runs.py: timings are ignored, any other change in a manifest or metrics file is reported."""

import importlib.util
import json
from pathlib import Path

import pandas as pd

from tests.conftest import ROOT

spec = importlib.util.spec_from_file_location("compare_runs", ROOT / "bench" / "compare_runs.py")
compare_runs = importlib.util.module_from_spec(spec)
spec.loader.exec_module(compare_runs)


def _run(root: Path, auc: float, seconds: float, label: str) -> Path:
    folder = root / "data" / "06_classify_kfold"
    folder.mkdir(parents=True)
    (folder / "metrics.json").write_text(json.dumps({"models": {"cnn": {"roc_auc": auc, "seconds": seconds}},
                                                     "created": str(seconds)}))
    pd.DataFrame({"id": ["a", "b"], "label": ["tumor", label], "train_seconds": [seconds, 1]}).to_csv(
        folder / "manifest.csv", index=False)
    return root / "data"


def test_runs_that_differ_only_in_timings_compare_equal(tmp_path: Path) -> None:
    before, after = _run(tmp_path / "a", 0.91, 12.0, "no_tumor"), _run(tmp_path / "b", 0.91, 30.5, "no_tumor")
    assert compare_runs.main([str(before), str(after), "--json", str(tmp_path / "r.json")]) == 0
    assert json.loads((tmp_path / "r.json").read_text())["folders"]["06_classify_kfold"]["identical"] == 2


def test_a_changed_metric_and_a_changed_cell_are_both_named(tmp_path: Path) -> None:
    before, after = _run(tmp_path / "a", 0.91, 12.0, "no_tumor"), _run(tmp_path / "b", 0.92, 12.0, "tumor")
    assert compare_runs.main([str(before), str(after), "--json", str(tmp_path / "r.json")]) == 1
    report = json.loads((tmp_path / "r.json").read_text())
    found = report["folders"]["06_classify_kfold"]["differences"]
    assert found["metrics.json"] == [".models.cnn.roc_auc: 0.91 -> 0.92"]
    assert found["manifest.csv"] == ["row 1 label: 'no_tumor' -> 'tumor'"]
    assert report["headlines"]["before"]["06 ROC AUC, each model"] == {"cnn": 0.91}
    assert report["headlines"]["after"]["06 ROC AUC, each model"] == {"cnn": 0.92}


def test_numbers_equal_to_float32_rounding_compare_equal() -> None:
    assert compare_runs.same("13.084118843078613", "13.084117889404297")  # one float32 step apart
    assert not compare_runs.same(0.91, 0.9101) and not compare_runs.same("tumor", "no_tumor")
    assert not compare_runs.same(True, 1.0 + 1e-9)
