"""06 --synthetic: generated slices join a fold's training part only, from a generator that never saw the fold."""

import argparse
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from lib.classify import kfold, run_classify_kfold, synthetic, tabular
from lib.classify.fold import Fold
from lib.common import manifest, splits
from lib.synth import run_ddim_train
from tests.test_classify import toy
from tests.test_pipeline import stage

MARK = -99.0  # a feature value no real row has: marks a generated row inside a fold's arrays


def test_generated_rows_reach_the_training_part_only(tmp_path: Path, monkeypatch) -> None:
    data, folds = toy()
    asked, seen = [], []

    def generated(repeat: int, k: int, inner_size: int) -> tuple[np.ndarray, np.ndarray]:
        asked.append(inner_size)
        n = inner_size // 2
        return np.full((n, data.x.shape[1]), MARK), np.arange(n) % 2

    def spy(fold: Fold, settings: dict):
        seen.append(fold)
        return tabular.run_fold(fold, settings)

    monkeypatch.setattr(kfold, "runner", lambda family: spy)
    data.synthetic = generated
    cv = kfold.cross_validate("features", data, folds, {}, tmp_path, progress=lambda s: None)
    assert len(seen) == folds["folds"] == len(asked)
    for fold, inner_size in zip(seen, asked):
        marked = (fold.train_x == MARK).all(axis=1)
        assert marked.sum() == inner_size // 2 and len(fold.train_x) == inner_size + inner_size // 2
        for part in (fold.val_x, fold.test_x):
            assert not (part == MARK).any()  # never validated on, never tested on
    assert sorted(cv.oof["id"]) == sorted(data.ids)  # only real slices are scored


def generator_folder(root: Path, trained: pd.DataFrame, fold: dict | None, labels: list[str]) -> Path:
    """A minimal 05 folder: trained_on.csv, metrics.json and a samples manifest (no images needed to plan)."""
    root.mkdir(parents=True)
    trained.to_csv(root / synthetic.TRAINED_ON, index=False)
    (root / "metrics.json").write_text(json.dumps({"fold": fold}))
    ids = [f"s{i}" for i in range(len(labels))]
    manifest.write(pd.DataFrame({"id": ids, "image_path": [f"images/{i}.png" for i in ids], "label": labels,
                                 "status": "ok", "error": ""}), root / "samples")
    return root


def test_a_generator_that_saw_a_folds_slices_is_refused_by_id_and_by_hash(tmp_path: Path) -> None:
    data, folds = toy()
    rows = pd.DataFrame({"id": data.ids, "label": np.where(data.y, "tumor", "no_tumor"), "dup_group": data.groups,
                         "sha256": [f"h{i}" for i in range(len(data.ids))]})
    parts = {(0, k): splits.fold_parts(folds, data.ids, data.y, data.groups, 0, k) for k in range(folds["folds"])}
    made = [generator_folder(tmp_path / f"fold{k}", rows.iloc[inner][["id", "label", "sha256"]],
                             {"fold": k, "repeat": 0}, ["tumor", "no_tumor"])
            for k, (inner, _, _) in ((k, parts[(0, k)]) for k in range(folds["folds"]))]
    generators = [synthetic.Generator.load(f) for f in made]
    chosen = synthetic.plan(generators, rows, parts)
    assert all(chosen[(0, k)].folder == made[k] for k in range(folds["folds"]))  # each fold gets its own
    with pytest.raises(SystemExit, match="no --synthetic generator may serve repeat 0 fold 1"):
        synthetic.plan(generators[:1], rows, parts)  # fold 0's generator trained on fold 1's test slices
    copies = rows.iloc[parts[(0, 2)][2]][["sha256"]].assign(id=lambda t: "copy_" + t["sha256"], label="tumor")
    elsewhere = synthetic.Generator.load(generator_folder(tmp_path / "other", copies, None, ["tumor"]))
    assert elsewhere.leaked(rows.iloc[parts[(0, 2)][2]])  # other ids, same content: still a leak
    with pytest.raises(SystemExit, match="fold 2"):
        synthetic.plan([elsewhere], rows, {(0, 2): parts[(0, 2)]})


def test_05_with_a_fold_trains_on_exactly_06s_inner_training_part(tmp_path: Path) -> None:
    data, folds = toy()
    table = pd.DataFrame({"id": data.ids, "label": np.where(data.y, "tumor", "no_tumor"), "dup_group": data.groups,
                          "status": "ok", "error": "", "image_path": [f"{i}.png" for i in data.ids]})
    path = tmp_path / "splits.json"
    path.write_text(json.dumps(folds))
    args = argparse.Namespace(conditional=True, splits=path, fold=1, repeat=0, in_dir=tmp_path, val_fraction=0.2,
                              seed=0)
    rows, train, val, fold = run_ddim_train.choose_parts(table, args)
    inner, held, test = splits.fold_parts(folds, data.ids, data.y, data.groups, 0, 1)
    assert set(rows["id"].iloc[train]) == {data.ids[i] for i in inner}
    assert set(rows["id"].iloc[val]) == {data.ids[i] for i in held}
    assert not set(rows["id"]) & {data.ids[i] for i in test}  # the fold's test slices are not even loaded
    assert fold["fold"] == 1 and fold["digest"] == splits.digest(folds)
    args.conditional = False  # tumour slices only: still none of the fold's validation or test slices
    rows, train, _, _ = run_ddim_train.choose_parts(table, args)
    assert set(rows["id"].iloc[train]) == {data.ids[i] for i in inner if data.y[i]}


@pytest.mark.slow
def test_06_reports_each_model_with_and_without_generated_slices(tiny_bundle: Path, tmp_path: Path) -> None:
    run = tiny_bundle.parent
    generators = []
    for k in range(3):
        out = tmp_path / f"05_fold{k}"
        stage("05_ddim_train.py", "--in", str(run / "02"), "--out", str(out), "--conditional", "--splits",
              str(run / "06" / "splits.json"), "--fold", str(k), "--size", "16", "--widths", "8", "16",
              "--block-depth", "1", "--epochs", "1", "--samples", "12", "--steps", "3", "--kid-features", "none")
        generators.append(str(out))
    out = tmp_path / "06"
    stage("06_classify_kfold.py", "--in", str(run / "04"), "--out", str(out), "--models", "cnn,features",
          "--folds", "3", "--epochs", "1", "--image-size", "32", "--synthetic", *generators,
          "--synthetic-ratio", "0.5")
    found = json.loads((out / "metrics.json").read_text())
    assert {"cnn", "cnn+ddim", "features", "features+ddim"} <= set(found["models"])
    for family in ("cnn", "features"):
        effect = found["synthetic"]["effects"][family]
        low, high = effect["ci"]
        assert low <= effect["difference"] <= high
        assert effect["difference"] == pytest.approx(effect["with"] - effect["without"], abs=1e-9)
        added = effect["added"]
        assert len(added) == 3 and all(sum(v.values()) > 0 for v in added.values())
        oof = pd.read_csv(out / "models" / f"{family}+ddim" / "oof.csv")
        assert set(oof["id"]) == set(manifest.read(run / "04")["id"])  # only real slices are scored
    assert all("made for this fold" in text for text in found["synthetic"]["generators"].values())
    assert "Generated training slices" in (out / "report.html").read_text()
    with pytest.raises(SystemExit, match="no --synthetic generator may serve"):  # one fold's generator only
        run_classify_kfold.plan_generators([Path(generators[0])], manifest.ok_rows(manifest.read(run / "04")),
                                           json.loads((out / "splits.json").read_text()))


def test_a_model_trained_with_generated_slices_deploys_like_its_family() -> None:
    from lib.deploy import bundle

    assert kfold.base_family("cnn" + synthetic.SUFFIX) == "cnn" and kfold.base_family("features") == "features"
    assert bundle.member_kind("cnn" + synthetic.SUFFIX) == bundle.KERAS_KIND
    assert bundle.member_kind("fusion" + synthetic.SUFFIX) == "fusion"
