"""Segmentation networks of 08: the U-Net learns bright ellipses, augmentation keeps masks aligned, files round-trip."""

import json
import math
from pathlib import Path

import cv2
import keras
import numpy as np
import pytest

from lib.segment import mask_metrics, unet


def ellipse_slices(rng: np.random.Generator, n: int, size: int = 64) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Textured grey squares with one bright ellipse of random size, position and angle; masks = the ellipses."""
    images, masks = [], []
    for _ in range(n):
        texture = cv2.GaussianBlur(rng.normal(0, 1, (size, size)), (0, 0), 2.0)
        background = 70 + 25 * texture / texture.std() + rng.normal(0, 6, (size, size))
        mask = np.zeros((size, size), np.uint8)
        centre = tuple(int(v) for v in rng.uniform(14, size - 14, 2))
        axes = tuple(int(v) for v in rng.uniform(4, 12, 2))
        cv2.ellipse(mask, centre, axes, float(rng.uniform(0, 180)), 0, 360, 1, -1)
        image = background + rng.uniform(60, 110) * mask
        images.append(np.clip(image, 0, 255).astype(np.uint8))
        masks.append(mask.astype(bool))
    return images, masks


@pytest.fixture(scope="module")
def ellipses() -> dict[str, tuple[list[np.ndarray], list[np.ndarray]]]:
    rng = np.random.default_rng(0)
    return {"train": ellipse_slices(rng, 48), "val": ellipse_slices(rng, 12)}


@pytest.fixture(scope="module")
def trained(ellipses: dict, tmp_path_factory: pytest.TempPathFactory) -> tuple[keras.Model, dict, Path]:
    """A U-Net trained briefly at 64 px, saved to a temporary folder.

    Batches of 4: 12 steps per epoch, so the batch-norm statistics used on validation catch up
    by the third epoch (with 6 steps, validation Dice stays near 0 until the sixth).
    """
    out = tmp_path_factory.mktemp("unet")
    model, history = unet.train(*ellipses["train"], *ellipses["val"], architecture="unet", image_size=64,
                                epochs=10, batch_size=4, patience=4, out_dir=out, seed=0, verbose=0)
    return model, history, out


@pytest.mark.slow
def test_unet_learns_ellipses(trained: tuple, ellipses: dict) -> None:
    model, history, out = trained
    assert len(history["loss"]) == len(history["val_dice"]) >= 2
    assert history["loss"][-1] < history["loss"][0]
    images, masks = ellipses["val"]
    pred = unet.predict(model, images)
    dice = np.mean([mask_metrics.dice(p, t) for p, t in zip(pred, masks)])
    assert dice > 0.7, f"validation Dice {dice:.2f} on bright ellipses; history {history['val_dice']}"
    assert (out / "model.keras").is_file() and (out / "history.csv").is_file()


@pytest.mark.slow
def test_predict_returns_masks_at_the_original_size(trained: tuple, ellipses: dict) -> None:
    model = trained[0]
    images = [cv2.resize(image, (70, 90), interpolation=cv2.INTER_LINEAR) for image in ellipses["val"][0][:3]]
    images.append(np.zeros((40, 100), np.uint8))
    masks = unet.predict(model, images)
    assert [m.shape for m in masks] == [(90, 70)] * 3 + [(40, 100)]
    assert all(m.dtype == bool for m in masks)
    prob = unet.predict_proba(model, images)
    assert all(p.shape == m.shape and p.dtype == np.float32 and 0 <= p.min() <= p.max() <= 1
               for p, m in zip(prob, masks))
    assert unet.predict(model, []) == []


@pytest.mark.slow
def test_saved_model_predicts_the_same(trained: tuple, ellipses: dict) -> None:
    model, _, out = trained
    loaded = unet.load(out / "model.keras")
    images = ellipses["val"][0][:4]
    for before, after in zip(unet.predict_proba(model, images), unet.predict_proba(loaded, images)):
        np.testing.assert_allclose(after, before, atol=1e-5)
    assert loaded.loss is not None  # compiled: can be evaluated or fine-tuned


@pytest.mark.slow
def test_deeplabv3plus_trains_and_keeps_the_shape(ellipses: dict) -> None:
    images, masks = ellipses["train"]
    model, history = unet.train(images[:16], masks[:16], *ellipses["val"], architecture="deeplabv3plus",
                                image_size=64, epochs=1, batch_size=8, verbose=0)
    assert len(history["loss"]) == 1 and np.isfinite(history["loss"]).all()
    assert model.output_shape == (None, 64, 64, 1)
    assert [m.shape for m in unet.predict(model, [np.zeros((50, 80), np.uint8)])] == [(50, 80)]


@pytest.mark.slow
def test_a_time_budget_stops_training_after_the_epoch_that_exceeds_it(ellipses: dict) -> None:
    images, masks = ellipses["train"]
    model, history = unet.train(images[:8], masks[:8], *ellipses["val"], image_size=32, width=4, epochs=5,
                                patience=5, minutes=0.0, verbose=0)
    assert len(history["loss"]) == 1  # budget 0: the first epoch ends past it
    _, longer = unet.train(images[:8], masks[:8], *ellipses["val"], image_size=32, width=4, epochs=2,
                           patience=5, minutes=60, verbose=0)
    assert len(longer["loss"]) == 2


class KillAtEpoch(keras.callbacks.Callback):
    """Raises KeyboardInterrupt as epoch `epoch` (from 0) begins: a run killed between two checkpoints."""

    def __init__(self, epoch: int) -> None:
        super().__init__()
        self.epoch = epoch

    def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
        if epoch == self.epoch:
            raise KeyboardInterrupt


@pytest.mark.slow
def test_a_killed_run_resumes_after_its_last_epoch_and_ends_as_the_uninterrupted_one(
        ellipses: dict, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture) -> None:
    data = (*[part[:12] for part in ellipses["train"]], *[part[:4] for part in ellipses["val"]])
    options = {"image_size": 32, "width": 4, "epochs": 8, "batch_size": 4, "patience": 1, "verbose": 0}
    whole, whole_history = unet.train(*data, out_dir=tmp_path / "whole", **options)
    made = unet.callbacks
    monkeypatch.setattr(unet, "callbacks", lambda *args: [*made(*args), KillAtEpoch(4)])
    with pytest.raises(KeyboardInterrupt):
        unet.train(*data, out_dir=tmp_path / "killed", **options)
    assert not (tmp_path / "killed" / "model.keras").exists()
    assert len(list((tmp_path / "killed" / "checkpoint").glob("epoch-4.weights.h5"))) == 1
    monkeypatch.setattr(unet, "callbacks", made)
    resumed, history = unet.train(*data, out_dir=tmp_path / "killed", **options)
    assert "resuming after epoch 4" in capsys.readouterr().out
    assert history.keys() == whole_history.keys()
    for key, values in whole_history.items():
        np.testing.assert_allclose(history[key], values, rtol=1e-4, atol=1e-5, err_msg=key)
    # Killed after epoch 4 of 8; the whole run stopped early: the resumed one stops at the same epoch only
    # if EarlyStopping's count came back, and its learning rates match only if ReduceLROnPlateau's did.
    assert 5 <= len(history["loss"]) == len(whole_history["loss"]) < 8
    csv = (tmp_path / "killed" / "history.csv").read_text().splitlines()
    assert len(csv) == 1 + len(history["loss"])  # one header, every epoch once
    images = data[2]
    for a, b in zip(unet.predict_proba(whole, images), unet.predict_proba(resumed, images)):
        np.testing.assert_allclose(b, a, atol=1e-4)

    def no_training(*args: object, **kwargs: object) -> None:
        raise AssertionError(f"trained again from epoch {kwargs['initial_epoch']}")

    monkeypatch.setattr(keras.Model, "fit", no_training)
    again, again_history = unet.train(*data, out_dir=tmp_path / "killed", **options)
    assert "already trained" in capsys.readouterr().out and again_history == history
    for a, b in zip(unet.predict_proba(resumed, images), unet.predict_proba(again, images)):
        np.testing.assert_allclose(b, a, atol=1e-6)
    (tmp_path / "killed" / "model.keras").rename(tmp_path / "kept.keras")
    with pytest.raises(AssertionError, match="trained again from epoch 0"):  # finished, but its model is gone: afresh
        unet.train(*data, out_dir=tmp_path / "killed", **options)
    (tmp_path / "kept.keras").rename(tmp_path / "killed" / "model.keras")
    with pytest.raises(AssertionError, match="trained again from epoch 0"):  # --force: afresh although finished
        unet.train(*data, out_dir=tmp_path / "killed", fresh=True, **options)
    with pytest.raises(AssertionError, match="trained again from epoch 0"):  # another seed is another run
        unet.train(*data, out_dir=tmp_path / "killed", seed=1, **options)
    assert "other options or slices" in capsys.readouterr().out


def test_a_checkpoint_is_standard_json_and_keeps_a_nan_epoch(tmp_path: Path) -> None:
    """state.json holds null for NaN; a rerun with the same options (a NaN one too) still matches and
    reads the NaN epoch back as NaN."""
    from lib.common.keras_checkpoint import STATE_FILE, EpochCheckpoint
    from tests.test_io import refuse

    identity = {"seed": 0, "min_delta": float("nan")}
    first = EpochCheckpoint(tmp_path, identity, carried=[])
    first.history = {"loss": [0.5, math.nan]}
    first._write(epochs_done=2, weights=None, best_weights=None, stopped=False, callbacks={})
    json.loads((tmp_path / STATE_FILE).read_text(), parse_constant=refuse)
    again = EpochCheckpoint(tmp_path, identity, carried=[])
    assert again.epochs_done == 2 and again.history["loss"][0] == 0.5 and math.isnan(again.history["loss"][1])


def test_build_rejects_unknown_architectures_and_odd_sizes() -> None:
    with pytest.raises(ValueError, match="architecture"):
        unet.build("segformer")
    with pytest.raises(ValueError, match="multiple of 16"):
        unet.build("unet", image_size=100)


def squares(size: int = 8) -> tuple[np.ndarray, np.ndarray]:
    """Truth: a 4x4 square; prediction 0.8 on a 4x4 square shifted 2 px right (half overlapping), 0.2 elsewhere."""
    truth = np.zeros((1, size, size, 1), np.float32)
    truth[0, 2:6, 1:5] = 1
    pred = np.full((1, size, size, 1), 0.2, np.float32)
    pred[0, 2:6, 3:7] = 0.8
    return truth, pred


def test_dice_and_loss_match_hand_computed_values() -> None:
    truth, pred = squares()
    # hard Dice: 8 shared pixels of 16 + 16
    assert float(unet.dice_coefficient(truth, pred)) == pytest.approx(0.5)
    empty = np.zeros_like(truth)
    both = float(unet.dice_coefficient(np.concatenate([truth, empty]), np.concatenate([pred, empty])))
    assert both == pytest.approx(0.75)  # (0.5 + 1) / 2: both empty counts 1
    assert float(unet.dice_coefficient(truth, empty)) == 0.0
    assert float(unet.dice_coefficient(truth, pred, threshold=0.9)) == 0.0
    # soft Dice: overlap 8 * 0.8 (+ 8 * 0.2 where truth meets background); sum of pred = 16*0.8 + 48*0.2
    overlap = 8 * 0.8 + 8 * 0.2
    soft = (2 * overlap + 1) / (16 + 16 * 0.8 + 48 * 0.2 + 1)
    # cross-entropy: 8 + 40 pixels right with p = 0.8, 8 + 8 pixels wrong with p = 0.2
    bce = (48 * -np.log(0.8) + 16 * -np.log(0.2)) / 64
    assert float(unet.dice_bce_loss(truth, pred)[0]) == pytest.approx(1 - soft + bce, rel=1e-5)
    perfect = float(unet.dice_bce_loss(truth, truth)[0])
    assert perfect < 1e-3
    # one loss per image, which Keras averages over the batch (times each sample weight)
    batch = np.asarray(unet.dice_bce_loss(np.concatenate([truth, truth]), np.concatenate([pred, truth])))
    assert batch == pytest.approx([1 - soft + bce, perfect], rel=1e-4, abs=1e-6)


def disc_batch(n: int = 6, size: int = 48) -> tuple[np.ndarray, np.ndarray]:
    """Masks with a disc off-centre; images exactly mask * 255 (as 0..1 floats)."""
    rng = np.random.default_rng(3)
    masks = np.zeros((n, size, size, 1), np.float32)
    for mask in masks:
        cv2.circle(mask, tuple(int(v) for v in rng.uniform(14, 34, 2)), int(rng.uniform(5, 10)), 1.0, -1)
    return masks.copy(), masks


def test_paired_augment_keeps_image_and_mask_aligned() -> None:
    images, masks = disc_batch()
    geometry_only = unet.PairedAugment(seed=1, brightness=0, contrast=0, noise_sd=0)
    aug_images, aug_masks = geometry_only(images, masks)
    assert set(np.unique(aug_masks)) <= {0.0, 1.0}
    assert not np.array_equal(aug_masks, masks)  # something moved
    np.testing.assert_array_equal(aug_images > 0.5, aug_masks > 0.5)  # same geometry, same interpolation
    aug_images, aug_masks = unet.PairedAugment(seed=2)(images, masks)  # with intensity changes and noise
    assert set(np.unique(aug_masks)) <= {0.0, 1.0} and 0 <= aug_images.min() <= aug_images.max() <= 1
    disagree = ((aug_images > 0.5) != (aug_masks > 0.5)).sum(axis=(1, 2, 3))
    assert (disagree <= 0.1 * aug_masks.sum(axis=(1, 2, 3)) + 4).all(), disagree
    np.testing.assert_array_equal(images, masks)  # the inputs are not modified


def test_paired_augment_is_seeded_and_off_is_identity() -> None:
    images, masks = disc_batch()
    first = unet.PairedAugment(seed=5)(images, masks)
    second = unet.PairedAugment(seed=5)(images, masks)
    for a, b in zip(first, second):
        np.testing.assert_array_equal(a, b)
    out = unet.PairedAugment(seed=5)(images, masks, training=False)
    assert out[0] is images and out[1] is masks
    still = unet.PairedAugment(seed=5, flip=None, rotation_deg=0, zoom=0, translation=0, brightness=0, contrast=0,
                               noise_sd=0)(images, masks)
    np.testing.assert_array_equal(still[0], images)
    np.testing.assert_array_equal(still[1], masks)


def test_slice_sequence_resizes_shuffles_and_augments_on_request() -> None:
    rng = np.random.default_rng(4)
    images = [rng.integers(0, 256, (90, 70), dtype=np.uint8) for _ in range(5)]
    masks = [np.zeros((90, 70), bool) for _ in range(5)]
    for i, mask in enumerate(masks):
        mask[10 + i:50, 20:60] = True
    before = [image.copy() for image in images]
    plain = unet.SliceSequence(images, masks, image_size=32, batch_size=2)
    assert len(plain) == 3
    x, y = plain[0]
    assert x.shape == y.shape == (2, 32, 32, 1) and x.dtype == y.dtype == np.float32
    assert 0 <= x.min() <= x.max() <= 1 and set(np.unique(y)) == {0.0, 1.0}
    expected = cv2.resize(images[0].astype(np.float32), (32, 32), interpolation=cv2.INTER_AREA) / 255
    np.testing.assert_allclose(x[0, :, :, 0], expected, atol=1e-6)
    assert plain[2][0].shape == (1, 32, 32, 1)  # the short last batch
    np.testing.assert_array_equal(plain[0][0], x)  # no augmentation: the same batch every time
    shuffled = unet.SliceSequence(images, masks, image_size=32, batch_size=5, shuffle=True, augment=True, seed=1)
    first = shuffled.order.copy()
    shuffled.on_epoch_end()
    assert sorted(shuffled.order) == list(range(5)) and not np.array_equal(first, shuffled.order)
    assert not np.array_equal(shuffled[0][0], shuffled[0][0])  # a new random draw for every batch
    for image, original in zip(images, before):
        np.testing.assert_array_equal(image, original)
    with pytest.raises(ValueError, match="masks"):
        unet.SliceSequence(images, masks[:2])
    weighed = unet.SliceSequence(images, masks, image_size=32, batch_size=5, shuffle=True, seed=1,
                                 weights=[1, 2, 3, 4, 5])
    x, y, w = weighed[0]  # Keras' (x, y, sample_weight): each slice keeps its own weight in any order
    np.testing.assert_array_equal(w, weighed.order + 1)
    np.testing.assert_array_equal(x, weighed.x[weighed.order])
    assert len(unet.SliceSequence(images, masks, image_size=32, weights=[1] * 5)[0]) == 2  # all 1: no weights
    with pytest.raises(ValueError, match="2 weights"):
        unet.SliceSequence(images, masks, weights=[1, 2])


def test_mask_geometry_survives_the_network_resize_round_trip_exactly() -> None:
    """A 256 px mask made of 2x2 blocks goes to the 128 px network frame and back unchanged."""
    rng = np.random.default_rng(0)
    small = np.zeros((128, 128), np.uint8)
    for _ in range(5):
        cv2.ellipse(small, (int(rng.integers(20, 108)), int(rng.integers(20, 108))),
                    (int(rng.integers(4, 20)), int(rng.integers(4, 20))), float(rng.integers(0, 180)), 0, 360, 1, -1)
    mask = np.kron(small, np.ones((2, 2), np.uint8)).astype(bool)
    frame = unet.prepare_masks([mask], 128)[0, :, :, 0] > 0.5
    np.testing.assert_array_equal(frame, small.astype(bool))
    back = unet.resize_back(frame.astype(np.float32), (256, 256)) > 0.5  # the path of unet.predict
    np.testing.assert_array_equal(back, mask)
