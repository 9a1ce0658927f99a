"""Stage 08 on the small phantom run: trains on true masks or on 07's pseudo-labels, scores against truth."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from lib.common import manifest
from lib.common.io import read_mask
from tests.test_enhance_cluster_stages import run  # noqa: F401 - the shared module fixture
from tests.test_pipeline import stage
from tests.test_sam_label import labelled  # noqa: F401 - 07 with true-box prompts on that run

pytestmark = pytest.mark.slow  # runs stage 08 in subprocesses

QUICK = ("--image-size", "64", "--epochs", "3", "--batch-size", "4")
ROOT = Path(__file__).resolve().parents[1]


def test_truth_masks_train_and_the_test_part_is_scored(run: Path, tmp_path: Path) -> None:  # noqa: F811
    done = stage("08_unet_train.py", "--in", str(run / "04"), "--out", str(tmp_path / "08"), "--masks", "truth",
                 *QUICK, "--refine", "sam")
    out = tmp_path / "08"
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["epochs_run"] == 3 and metrics["masks"] == "truth"
    assert sum(metrics["split"].values()) == len(manifest.ok_rows(manifest.read(run / "04")))
    per_image = pd.read_csv(out / "per_image.csv")
    assert len(per_image) == metrics["split"]["test"] and per_image["dice"].between(0, 1).all()
    low, high = metrics["test"]["dice_ci"]  # bootstrap interval of the mean over the tumour slices
    assert low <= metrics["test"]["dice_mean"] <= high
    for row in per_image.itertuples():
        assert read_mask(out / row.pred_mask_path).shape == (256, 256)  # the slice's size, not the network's 64
    assert (out / "model.keras").is_file() and (out / "history.csv").is_file()
    assert (out / "training.png").is_file() and "not a medical device" in (out / "report.html").read_text()
    # --refine sam: every test slice has SAM's verdict; where SAM's outline was not kept, the score is unchanged
    assert metrics["refine"] == "sam" and sum(metrics["refine_status"].values()) == len(per_image)
    kept = per_image["refine_status"] == "accepted"
    assert np.allclose(per_image.loc[~kept, "dice"], per_image.loc[~kept, "dice_unrefined"], atol=1e-4)
    assert (per_image.loc[per_image["pred_pixels"] == 0, "refine_status"] == "nothing to refine").all()
    assert metrics["unscored"] is None and "not scored" not in (out / "report.html").read_text()
    # the summary names which Dice is which: the headline is the refined one, the network's own follows
    assert f"refined by SAM: Dice mean {metrics['test']['dice_mean']} " in done.stdout
    assert f"the network's own masks: Dice mean {metrics['dice_mean_unrefined']};" in done.stdout


def test_pseudo_labels_train_without_seeing_a_true_mask(labelled: Path, tmp_path: Path) -> None:  # noqa: F811
    stage("08_unet_train.py", "--in", str(labelled), "--out", str(tmp_path / "08"), "--masks", "pseudo", *QUICK)
    metrics = json.loads((tmp_path / "08" / "metrics.json").read_text())
    accepted = manifest.read(labelled)["sam_status"].eq("accepted")
    no_tumour = manifest.read(labelled)["label"].eq("no_tumor")
    assert metrics["trained_on"] + metrics["validated_on"] <= int((accepted | no_tumour).sum())
    assert "dice_mean" in metrics["test"]
    rerun = stage("08_unet_train.py", "--in", str(labelled), "--out", str(tmp_path / "08"), "--masks", "pseudo", *QUICK)
    assert "already trained by an earlier run" in rerun.stdout  # the Keras checkpoint: nothing retrained
    again = json.loads((tmp_path / "08" / "metrics.json").read_text())
    assert again["test"] == metrics["test"] and again["epochs_run"] == metrics["epochs_run"]


def test_tumour_slices_without_a_true_mask_are_outlined_but_not_scored(
        labelled: Path, tmp_path: Path) -> None:  # noqa: F811
    """Like navoneel: pseudo-labels to train on, no true tumour masks at all."""
    unmasked = tmp_path / "07_unmasked"
    unmasked.mkdir()
    manifest.write(manifest.rebase(manifest.read(labelled), labelled, unmasked).assign(mask_path=""), unmasked)
    out = tmp_path / "08"
    result = stage("08_unet_train.py", "--in", str(unmasked), "--out", str(out), "--masks", "pseudo", *QUICK,
                   "--refine", "sam")
    metrics = json.loads((out / "metrics.json").read_text())  # standard JSON: a mean over no slices is null
    assert metrics["test"]["tumour_images"] == 0 and metrics["test"]["dice_mean"] is None
    unscored = pd.read_csv(out / "unscored.csv")
    test_tumours = metrics["split"]["test"] - metrics["test"]["tumour_free_images"]
    assert len(unscored) == test_tumours == metrics["unscored"]["tumour_images"] > 0
    for row in unscored.itertuples():
        assert int(read_mask(out / row.pred_mask_path).sum()) == row.pred_pixels
    assert metrics["unscored"]["with_mask"] == int((unscored["pred_pixels"] > 0).sum())
    # --refine sam reaches them too: a verdict per slice; where SAM's outline was not kept, the network's mask stays
    verdicts = unscored["refine_status"].value_counts().to_dict()
    assert metrics["unscored"]["refine_status"] == verdicts and sum(verdicts.values()) == len(unscored)
    kept = unscored["refine_status"] == "accepted"
    assert (unscored.loc[~kept, "pred_pixels"] == unscored.loc[~kept, "pred_pixels_unrefined"]).all()
    assert (unscored.loc[unscored["pred_pixels_unrefined"] == 0, "refine_status"] == "nothing to refine").all()
    assert "overlays_unscored.png); SAM's outline per slice: " + ", ".join(f"{k} {v}" for k, v in verdicts.items()) \
        in result.stdout
    assert (out / "overlays_unscored.png").is_file() and "not scored" in (out / "report.html").read_text()
    assert f"{test_tumours} test tumour slices without a true mask, not scored" in result.stdout


def test_fine_tuned_litemedsam_is_an_08_architecture(run: Path, tmp_path: Path) -> None:  # noqa: F811
    out = tmp_path / "08"
    stage("08_unet_train.py", "--in", str(run / "04"), "--out", str(out), "--masks", "truth",
          "--architecture", "litemedsam", "--tune", "top", "--epochs", "1", "--batch-size", "4")
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["architecture"] == "litemedsam" and metrics["image_size"] == 256 and metrics["tune"] == "top"
    assert metrics["backend"].startswith("torch/") and metrics["epochs_run"] == 1
    from lib.common import medsam

    native = medsam.bf16_native(medsam.default_device())  # --precision auto: bfloat16 where native
    assert metrics["precision"] == ("bfloat16" if native else "float32")
    assert (out / "model.pt").is_file() and not (out / "model.keras").exists()
    per_image = pd.read_csv(out / "per_image.csv")
    assert len(per_image) == metrics["split"]["test"] and per_image["dice"].between(0, 1).all()
    for row in per_image.itertuples():
        assert read_mask(out / row.pred_mask_path).shape == (256, 256)
    # bench_segmenters scores the same test slices with the same predictions as 08 did, also per group
    groups = per_image[["id"]].assign(kind=["odd" if i % 2 else "even" for i in range(len(per_image))])
    groups.to_csv(tmp_path / "groups.csv", index=False)
    bench = subprocess.run([sys.executable, str(ROOT / "bench" / "bench_segmenters.py"), "--in", str(run / "04"),
                            "--models", str(out), "--json", str(tmp_path / "segmenters.json"),
                            "--groups", str(tmp_path / "groups.csv"), "--group-column", "kind",
                            "--per-image", str(tmp_path / "bench_per_image.csv")],
                           capture_output=True, text=True, timeout=600)
    assert bench.returncode == 0, bench.stderr[-2000:]
    table = json.loads((tmp_path / "segmenters.json").read_text())
    assert table["test_slices"] == len(per_image)
    for key in ("dice_mean", "iou_mean", "missed", "false_positive_images"):
        assert abs(table["variants"]["08"][key] - metrics["test"][key]) < 1e-3, key
    assert np.allclose(table["variants"]["08"]["dice_ci"], metrics["test"]["dice_ci"], atol=1e-3)
    rescored = pd.read_csv(tmp_path / "bench_per_image.csv").merge(per_image, on="id", suffixes=("", "_08"))
    assert len(rescored) == len(per_image) and np.allclose(rescored["dice"], rescored["dice_08"], atol=1e-3)
    for kind, part in rescored.groupby("group"):
        tumour = part[part["true_pixels"] > 0]
        assert table["by_group"]["08"][kind]["images"] == len(part)
        assert tumour.empty or abs(table["by_group"]["08"][kind]["dice_mean"] - tumour["dice"].mean()) < 1e-6


def test_refit_tests_a_model_trained_on_training_and_validation_slices(run: Path, tmp_path: Path) -> None:  # noqa: F811
    import torch

    out = tmp_path / "08"
    stage("08_unet_train.py", "--in", str(run / "04"), "--out", str(out), "--masks", "truth",
          "--architecture", "litemedsam", "--epochs", "1", "--batch-size", "4", "--refit")
    metrics = json.loads((out / "metrics.json").read_text())
    both = metrics["trained_on"] + metrics["validated_on"]
    assert metrics["refit"] == {"epochs": metrics["best_epoch"], "slices": both, "epochs_from": "validation"}
    assert metrics["best_val_dice"] is not None  # the early-stopping run's, kept in search/
    search = pd.read_csv(out / "search" / "history.csv")
    refit = pd.read_csv(out / "history.csv")
    assert "val_dice" in search and "val_dice" not in refit and len(refit) == metrics["refit"]["epochs"]
    first, tested = (torch.load(path, weights_only=True) for path in (out / "search" / "model.pt", out / "model.pt"))
    assert any(not torch.equal(first[k], tested[k]) for k in tested)  # two models, the refit one tested
    assert len(pd.read_csv(out / "per_image.csv")) == metrics["split"]["test"]
    rerun = stage("08_unet_train.py", "--in", str(run / "04"), "--out", str(out), "--masks", "truth",
                  "--architecture", "litemedsam", "--epochs", "1", "--batch-size", "4", "--refit")
    assert rerun.stdout.count("already trained by an earlier run") == 2  # both runs' checkpoints: nothing retrained
    again = json.loads((out / "metrics.json").read_text())
    assert again["test"] == metrics["test"] and again["refit"] == metrics["refit"]


def test_refit_epochs_trains_on_training_and_validation_without_an_early_stopping_run(
        run: Path, tmp_path: Path) -> None:  # noqa: F811
    out = tmp_path / "08"
    result = stage("08_unet_train.py", "--in", str(run / "04"), "--out", str(out), "--masks", "truth",
                   "--architecture", "litemedsam", "--batch-size", "4", "--refit-epochs", "2")
    metrics = json.loads((out / "metrics.json").read_text())
    both = metrics["trained_on"] + metrics["validated_on"]
    assert metrics["refit"] == {"epochs": 2, "slices": both, "epochs_from": "--refit-epochs"}
    assert metrics["epochs_run"] == 0 and metrics["best_val_dice"] is None and not (out / "search").exists()
    assert len(pd.read_csv(out / "history.csv")) == 2 and "no validation run" in result.stdout
    # the summary counts the refit's slices and epochs, not the absent first run's
    assert f"{both} training + validation slices, 2 epochs," in result.stdout
    assert len(pd.read_csv(out / "per_image.csv")) == metrics["split"]["test"]


def test_an_ensemble_trains_a_network_per_seed_and_tests_the_mean_of_their_maps(
        run: Path, tmp_path: Path) -> None:  # noqa: F811
    from lib.common.io import read_image
    from lib.segment import mask_metrics, unet

    out = tmp_path / "08"
    args = ("08_unet_train.py", "--in", str(run / "04"), "--out", str(out), "--masks", "truth", *QUICK,
            "--ensemble", "2", "--seed", "3")
    stage(*args)
    metrics = json.loads((out / "metrics.json").read_text())
    folders = ["seed-3", "seed-4"]
    assert metrics["ensemble"]["seeds"] == [3, 4] and metrics["ensemble"]["folders"] == folders
    members = [unet.load(out / folder / "model.keras") for folder in folders]
    assert all((out / folder / "history.csv").is_file() for folder in folders) and not (out / "model.keras").exists()
    per_image = pd.read_csv(out / "per_image.csv")
    tumour = per_image[per_image["true_pixels"] > 0]
    for folder in folders:  # each member is also scored alone, and says how long it trained
        history = pd.read_csv(out / folder / "history.csv")
        trained = metrics["ensemble"]["training"][folder]
        assert metrics["ensemble"]["member_epochs"][folder] == len(history) == trained["epochs_run"]
        assert trained["best_val_dice"] == round(history["val_dice"][trained["best_epoch"] - 1], 4)
        assert abs(metrics["ensemble"]["member_dice_mean"][folder] - tumour[f"dice_{folder}"].mean()) < 1e-4
    # no member's training numbers stand for the ensemble's; the curves are every member's
    assert all(metrics[key] is None for key in ("epochs_run", "best_epoch", "best_val_dice", "refit"))
    assert (out / "training.png").is_file()
    differ = 0
    for row in per_image.head(6).to_dict("records"):  # the tested mask is the mean of the members' maps
        image = read_image(out / row["image_path"]).pixels
        maps = [unet.predict_proba(model, [image])[0] for model in members]
        agree = np.mean(read_mask(out / row["pred_mask_path"]) == (np.mean(maps, axis=0) > 0.5))
        assert agree > 0.999, row["id"]
        truth = read_mask(out / row["mask_path"]) if isinstance(row["mask_path"], str) else np.zeros(image.shape, bool)
        for folder, prob in zip(folders, maps):
            assert abs(row[f"dice_{folder}"] - mask_metrics.dice(prob > 0.5, truth)) < 0.01
        differ += not np.allclose(maps[0], maps[1], atol=1e-3)
    assert differ  # two seeds, two networks
    rerun = stage(*args)
    assert rerun.stdout.count("already trained by an earlier run") == 2
    assert "each member's epochs below" in rerun.stdout  # not member 1's count as if it were the ensemble's
    again = json.loads((out / "metrics.json").read_text())
    assert again["test"] == metrics["test"] and again["ensemble"] == metrics["ensemble"]
    result = subprocess.run([sys.executable, str(ROOT / "scripts" / "08_unet_train.py"), "--in", str(run / "04"),
                             "--out", str(tmp_path / "none"), "--ensemble", "0"], capture_output=True, text=True)
    assert result.returncode != 0 and "--ensemble 0: give the number of networks" in result.stderr


def test_refit_is_refused_for_networks_trained_from_scratch(run: Path, tmp_path: Path) -> None:  # noqa: F811
    result = subprocess.run([sys.executable, str(ROOT / "scripts" / "08_unet_train.py"), "--in", str(run / "04"),
                             "--out", str(tmp_path / "08"), "--masks", "truth", "--refit"],
                            capture_output=True, text=True, timeout=600)
    assert result.returncode != 0 and "--refit is for --architecture litemedsam" in result.stderr
    result = subprocess.run([sys.executable, str(ROOT / "scripts" / "08_unet_train.py"), "--in", str(run / "04"),
                             "--out", str(tmp_path / "08"), "--masks", "truth", "--architecture", "litemedsam",
                             "--refit-epochs", "-1"], capture_output=True, text=True, timeout=600)
    assert result.returncode != 0 and "--refit-epochs -1: give a number of epochs" in result.stderr
    assert not (tmp_path / "08").exists()  # refused before anything was written


def test_extra_mask_folders_train_and_score_on_folders_only_test(run: Path, tmp_path: Path) -> None:  # noqa: F811
    from tests.test_mask_sources import phantom_tree

    extra = phantom_tree(tmp_path / "figshare_like", [*range(1, 13), *range(101, 113)], patient_slices=1)
    unseen = phantom_tree(tmp_path / "elsewhere", list(range(1, 7)), free=(5, 6))
    out = tmp_path / "08"
    done = stage("08_unet_train.py", "--in", str(run / "04"), "--out", str(out), "--masks", "truth", *QUICK,
                 "--extra-masks", str(extra), "--score-on", str(unseen), "--leave-out", "2", "--truth-weight", "2")
    metrics = json.loads((out / "metrics.json").read_text())
    assert set(metrics["sources"]) == {"input", "figshare_like", "elsewhere"}
    assert "cheng_0101-cheng_0112" in metrics["sources"]["figshare_like"]["rule"]
    assert metrics["sources"]["elsewhere"]["rule"] == "scored only" and metrics["weights"]["truth"] == 2
    used = pd.read_csv(out / "sources.csv")
    assert set(used.loc[used["source"] == "elsewhere", "part"]) == {"test"}  # never trained on
    held = used[(used["source"] == "figshare_like") & (used["id"] >= "cheng_0101")]
    assert set(held["part"]) == {"test"}  # the left-out block
    assert metrics["trained_on"] >= int(((used["part"] == "train") & (used["source"] == "figshare_like")).sum())
    elsewhere = metrics["test_by_source"]["elsewhere"]
    assert elsewhere["tumour_images"] == 4 and elsewhere["tumour_free_images"] == 2
    assert set(metrics["test_by_kind"]["figshare_like"]) == {"pituitary"}  # block 2's type, from index.csv
    per_image = pd.read_csv(out / "per_image.csv")
    assert (out / "predictions" / "elsewhere" / "cheng_0001.png").is_file()
    assert len(per_image[per_image["role"] != "score"]) == metrics["test"]["images"]  # pooled: trained sources
    assert "elsewhere (never trained on)" in done.stdout and "By source" in (out / "report.html").read_text()
    scores = {int(area): dice for area, dice in metrics["min_area_scores"].items()}  # --min-area auto: on validation
    assert metrics["min_area"] in scores and scores[metrics["min_area"]] >= max(scores.values()) - 0.005
    lineage = json.loads((out / "lineage.json").read_text())
    assert {"extra_masks_1", "score_on_1"} <= set(lineage["inputs"])
