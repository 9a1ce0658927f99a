"""Stage 07: pseudo-label cleanup and rejection, and the stage on the small phantom run with LiteMedSAM."""

import json
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest

from lib.common import manifest
from lib.common.io import read_image, read_mask
from lib.segment import pseudo_label
from tests.conftest import ROOT
from tests.test_enhance_cluster_stages import run  # noqa: F401 - the shared module fixture
from tests.test_pipeline import stage


def disc(shape=(64, 64), centre=(32, 32), radius=10) -> np.ndarray:
    mask = np.zeros(shape, np.uint8)
    cv2.circle(mask, centre, radius, 1, -1)
    return mask.astype(bool)


def test_cleanup_keeps_the_largest_blob_fills_holes_and_stays_in_the_head() -> None:
    mask = disc() | disc(centre=(5, 5), radius=2)
    mask[30:34, 30:34] = False  # a dark core SAM left out
    head = np.ones_like(mask)
    head[:, 40:] = False
    cleaned = pseudo_label.cleanup(mask, head)
    assert cleaned[32, 32] and not cleaned[5, 5]  # hole filled, small island gone
    assert not cleaned[:, 40:].any()  # cut to the head


def test_a_good_mask_is_accepted_and_a_sliver_rejected() -> None:
    good = pseudo_label.label(disc()[None], np.array([0.9]), (22, 22, 43, 43))
    assert good.status == "accepted" and good.quality > 0.7
    sliver = np.zeros((64, 64), bool)
    sliver[22:43, 30:32] = True  # fills a tenth of its box
    bad = pseudo_label.label(sliver[None], np.array([0.9]), (22, 22, 43, 43))
    assert bad.status == "rejected" and "quality" in bad.reason and bad.quality < pseudo_label.MIN_QUALITY
    huge = pseudo_label.label(np.ones((1, 64, 64), bool), np.array([0.99]), (0, 0, 64, 64))
    assert huge.status == "rejected" and "head" in huge.reason
    empty = pseudo_label.label(np.zeros((1, 64, 64), bool), np.array([0.99]), (0, 0, 8, 8))
    assert empty.status == "rejected" and "px" in empty.reason


class ScriptedSAM:
    """A stand-in segmenter that answers every prompt with one fixed mask, and remembers the boxes."""

    def __init__(self, mask: np.ndarray, score: float = 0.9) -> None:
        self.mask, self.score, self.boxes = mask, score, []

    def predict(self, image: np.ndarray, box=None, points=None) -> tuple[np.ndarray, np.ndarray]:
        self.boxes.append(box)
        return self.mask[None], np.array([self.score])


def test_refine_keeps_sams_outline_only_when_it_passes_the_label_check() -> None:
    image = np.zeros((64, 64), np.uint8)
    loose = disc(radius=13) | disc(centre=(5, 5), radius=2)  # the network's mask: too wide, plus a speck
    good = ScriptedSAM(disc(radius=12))
    mask, result = pseudo_label.refine(good, image, loose)
    assert result.status == "accepted" and np.array_equal(mask, disc(radius=12))
    assert good.boxes == [(19, 19, 46, 46)]  # the box of the largest blob, not of the speck too
    sliver = np.zeros((64, 64), bool)
    sliver[20:45, 30:32] = True
    mask, result = pseudo_label.refine(ScriptedSAM(sliver), image, loose)
    assert result.status == "rejected" and np.array_equal(mask, loose)  # the network's own mask stays
    silent = ScriptedSAM(disc())
    mask, result = pseudo_label.refine(silent, image, np.zeros((64, 64), bool))
    assert result is None and not mask.any() and silent.boxes == []


@pytest.fixture(scope="module")
def labelled(run: Path) -> Path:  # noqa: F811
    stage("07_sam_label.py", "--in", str(run / "04"), "--out", str(run / "07"), "--prompt", "truth")
    return run / "07"


@pytest.mark.slow
def test_truth_prompts_give_masks_that_match_the_phantom_tumours(labelled: Path, run: Path) -> None:  # noqa: F811
    df = manifest.read(labelled)
    tumour = df[(df["status"] == "ok") & (df["label"] == "tumor")]
    assert len(tumour) > 0 and set(tumour["sam_status"]) <= {"accepted", "rejected"}
    assert set(df.loc[df["label"] == "no_tumor", "sam_status"]) <= {"skipped"}
    accepted = tumour[tumour["sam_status"] == "accepted"]
    for row in accepted.itertuples():
        mask = read_mask(labelled / row.pred_mask_path)
        assert mask.shape == read_image(labelled / row.clean_image_path).pixels.shape[:2]
    metrics = json.loads((labelled / "metrics.json").read_text())
    assert metrics["dice_vs_truth"]["accepted_mean"] > 0.75
    assert len(accepted) >= 0.7 * len(tumour)
    assert list((labelled / "qc").glob("overlays_*.png")) and (labelled / "report.html").is_file()


@pytest.mark.slow
def test_rejections_are_recorded_not_silent(run: Path, tmp_path: Path) -> None:  # noqa: F811
    stage("07_sam_label.py", "--in", str(run / "04"), "--out", str(tmp_path / "07"), "--prompt", "truth",
          "--min-quality", "1.01")
    df = manifest.read(tmp_path / "07")
    tumour = df[(df["status"] == "ok") & (df["label"] == "tumor")]
    assert (tumour["sam_status"] == "rejected").all() and (tumour["pred_mask_path"] == "").all()
    assert tumour["sam_reason"].str.contains("quality").all()
    assert json.loads((tmp_path / "07" / "metrics.json").read_text())["rejection_rate"] == 1.0


@pytest.mark.slow
def test_boxes_from_a_file_and_a_missing_file(run: Path, tmp_path: Path) -> None:  # noqa: F811
    df = manifest.read(run / "04")
    first = df[df["label"] == "tumor"]["id"].iloc[0]
    boxes = tmp_path / "boxes.csv"
    pd.DataFrame({"id": [first], "box": ["10 10 60 60"]}).to_csv(boxes, index=False)
    stage("07_sam_label.py", "--in", str(run / "04"), "--out", str(tmp_path / "07"), "--prompt", "file",
          "--boxes", str(boxes))
    out = manifest.read(tmp_path / "07").set_index("id")
    assert out.loc[first, "prompt_box"] == "10 10 60 60"
    others = out[(out["label"] == "tumor") & (out.index != first)]
    assert (others["sam_status"] == "no_prompt").all()
    done = subprocess.run([sys.executable, str(ROOT / "scripts" / "07_sam_label.py"), "--in", str(run / "04"),
                           "--out", str(tmp_path / "x"), "--prompt", "file"], capture_output=True, text=True)
    assert done.returncode != 0 and "--boxes" in done.stderr.strip().splitlines()[-1]


@pytest.mark.slow
def test_an_engine_without_weights_stops_in_one_line(run: Path, tmp_path: Path) -> None:  # noqa: F811
    missing = tmp_path / "no_sam_checkpoint"
    done = subprocess.run([sys.executable, str(ROOT / "scripts" / "07_sam_label.py"), "--in", str(run / "04"),
                           "--out", str(tmp_path / "07"), "--engine", "transformers", "--sam-preset", str(missing)],
                          capture_output=True, text=True, timeout=120)
    last = done.stderr.strip().splitlines()[-1]
    assert done.returncode != 0 and last.startswith("error:") and str(missing) in last
    assert "Traceback" not in done.stderr and not (tmp_path / "07" / "masks").exists()


@pytest.mark.slow
def test_self_training_prompts_come_from_the_segmenters_largest_blob(run: Path, tmp_path: Path) -> None:  # noqa: F811
    """Round 2: each slice's box is the largest blob of the 08 model's mask. The model here is a fixed
    brightness threshold saved as model.keras (training a tiny U-Net that reliably draws takes minutes;
    08's own tests and the figshare runs cover training)."""
    import keras

    from lib.regions import candidates
    from lib.segment import unet

    inputs = keras.Input((64, 64, 1))
    bright = keras.layers.Conv2D(1, 1, activation="sigmoid", kernel_initializer=keras.initializers.Constant(40.0),
                                 bias_initializer=keras.initializers.Constant(-24.0))(inputs)  # P > 0.5 above 0.6
    (tmp_path / "08").mkdir()
    keras.Model(inputs, bright).save(tmp_path / "08" / "model.keras")
    stage("07_sam_label.py", "--in", str(run / "04"), "--out", str(tmp_path / "07"), "--prompt", "unet",
          "--unet", str(tmp_path / "08"))
    df = manifest.read(tmp_path / "07")
    tumour = df[(df["status"] == "ok") & (df["label"] == "tumor")]
    assert (tumour["prompt_source"] == "unet").all()
    model = unet.load(tmp_path / "08" / "model.keras")
    images = [read_image(tmp_path / "07" / p).pixels for p in tumour["clean_image_path"]]
    expected = [candidates.mask_box(pseudo_label.largest_component(m)) for m in unet.predict(model, images)]
    assert any(box is not None for box in expected)
    for row, box in zip(tumour.to_dict("records"), expected):
        assert row["prompt_box"] == candidates.box_text(box)
        assert (row["sam_status"] == "no_prompt") == (box is None)
    done = subprocess.run([sys.executable, str(ROOT / "scripts" / "07_sam_label.py"), "--in", str(run / "04"),
                           "--out", str(tmp_path / "x"), "--prompt", "unet", "--unet", str(tmp_path / "none")],
                          capture_output=True, text=True)
    last = done.stderr.strip().splitlines()[-1]
    assert done.returncode != 0 and last.startswith("error:") and "--unet" in last and "Traceback" not in done.stderr
