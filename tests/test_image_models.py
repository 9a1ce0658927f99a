"""Image models of 06_classify_kfold: the CNN learns, augmentation stays in training, backbones fail loudly offline."""

from pathlib import Path

import keras
import numpy as np
import pytest

from lib.acquire import phantom
from lib.classify import backbones, cnn
from lib.classify.fold import Fold, rebalance
from lib.common import keras_weights
from lib.preprocess import clean


def phantom_images(rng: np.random.Generator, labels: np.ndarray) -> np.ndarray:
    """Cleaned 64x64 phantom slices, a tumour where the label is 1."""
    return np.stack([clean.clean_image(phantom.make_slice(rng, n_tumors=int(y)).image, size=64).image
                     for y in labels])


@pytest.fixture(scope="module")
def phantom_fold(tmp_path_factory: pytest.TempPathFactory) -> Fold:
    """40 training, 12 validation and 12 test phantoms, both classes in each part."""
    rng = np.random.default_rng(0)
    y = {part: np.arange(n) % 2 for part, n in (("train", 40), ("val", 12), ("test", 12))}
    x = {part: phantom_images(rng, labels) for part, labels in y.items()}
    return Fold(train_x=x["train"], train_y=y["train"], val_x=x["val"], val_y=y["val"], test_x=x["test"],
                out_dir=tmp_path_factory.mktemp("fold"), seed=0)


def disc_images(rng: np.random.Generator, labels: np.ndarray, size: int = 48) -> np.ndarray:
    """Noisy grey squares; a bright disc somewhere in those labelled 1."""
    images = rng.normal(60, 12, (len(labels), size, size))
    rows, cols = np.mgrid[:size, :size]
    for image, label in zip(images, labels):
        if label:
            r, c, radius = rng.uniform(14, size - 14, 2).tolist() + [rng.uniform(5, 9)]
            image[(rows - r) ** 2 + (cols - c) ** 2 <= radius ** 2] += 130
    return np.clip(images, 0, 255).astype(np.uint8)


def test_cnn_learns_a_bright_disc(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    y = {part: rng.permutation(np.arange(n) % 2) for part, n in (("train", 64), ("val", 16), ("test", 32))}
    x = {part: disc_images(rng, labels) for part, labels in y.items()}
    before = {part: images.copy() for part, images in x.items()}
    fold = Fold(x["train"], y["train"], x["val"], y["val"], x["test"], tmp_path, seed=1)
    result = cnn.run_fold(fold, {"image_size": 32, "epochs": 8, "batch_size": 16, "rebalance": "class_weight"})
    for part, images in before.items():
        np.testing.assert_array_equal(x[part], images, err_msg=f"run_fold modified the {part} images")
    assert result.val_prob.shape == (16,) and result.test_prob.shape == (32,)
    assert ((result.test_prob >= 0) & (result.test_prob <= 1)).all()
    loss = result.history["loss"]
    assert len(loss) == len(result.history["val_auc"]) >= 2  # one value per epoch
    assert loss[-1] < loss[0]
    accuracy = ((result.test_prob > 0.5) == y["test"]).mean()
    assert accuracy > 0.8, f"held-out accuracy {accuracy:.2f} on an easy task"
    assert (tmp_path / "model.keras").is_file()


def test_augmentation_is_active_in_training_only() -> None:
    x = np.random.default_rng(2).uniform(0, 255, (4, 32, 32, 1)).astype("float32")
    model = cnn.get_model(32)
    first = keras.ops.convert_to_numpy(model(x, training=False))
    second = keras.ops.convert_to_numpy(model(x, training=False))
    np.testing.assert_array_equal(first, second)
    augment = cnn.augmenter()
    x01 = x / 255
    assert not np.allclose(keras.ops.convert_to_numpy(augment(x01, training=True)), x01)
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(augment(x01, training=False)), x01)


def test_rebalancing_evens_the_classes() -> None:
    x, y = np.arange(10), np.array([1, 1, 0, 0, 0, 0, 0, 0, 0, 0])
    x2, y2, weights = rebalance(x, y, "oversample", seed=0)
    assert weights is None and np.bincount(y2).tolist() == [8, 8] and set(x2[y2 == 1]) == {0, 1}
    _, _, weights = rebalance(x, y, "class_weight")
    assert weights[1] * 2 == pytest.approx(weights[0] * 8)  # both classes weigh the same in total
    with pytest.raises(ValueError, match="rebalance"):
        rebalance(x, y, "smote")


@pytest.mark.slow
def test_backbone_with_random_weights_runs_end_to_end(phantom_fold: Fold) -> None:
    """Phantoms, 1 in 3 training images with a tumour, oversampled; an extra set predicted too."""
    keep = np.flatnonzero((phantom_fold.train_y == 0) | (np.arange(40) % 4 == 1))
    before = {k: getattr(phantom_fold, k).copy() for k in ("train_x", "train_y", "val_x", "val_y", "test_x")}
    fold = Fold(**{**phantom_fold.__dict__, "train_x": phantom_fold.train_x[keep],
                   "train_y": phantom_fold.train_y[keep], "extra_x": phantom_fold.test_x[:5]})
    result = backbones.run_fold(fold, {"backbone": "efficientnetv2b0", "weights": "none", "image_size": 32,
                                       "epochs": 3, "rebalance": "oversample"})
    assert result.val_prob.shape == (12,) and result.test_prob.shape == (12,) and result.extra_prob.shape == (5,)
    assert ((result.test_prob >= 0) & (result.test_prob <= 1)).all()
    assert len(result.history["loss"]) == len(result.history["val_auc"]) == 3
    for name, array in before.items():
        np.testing.assert_array_equal(getattr(phantom_fold, name), array, err_msg=f"{name} was modified")
    assert (phantom_fold.out_dir / "model.keras").is_file()


@pytest.mark.slow
def test_backbone_fine_tunes_its_top_blocks_in_a_second_phase(phantom_fold: Fold) -> None:
    result = backbones.run_fold(phantom_fold, {"backbone": "efficientnetv2b0", "weights": "none", "image_size": 32,
                                               "epochs": 2, "finetune_epochs": 1})
    assert result.history["finetune_from_epoch"] == [2.0]  # phase 2 starts after the head's 2 epochs
    assert len(result.history["loss"]) == 3 and result.test_prob.shape == (12,)


def test_imagenet_offline_fails_fast_with_advice(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def no_network(*args, **kwargs):
        raise OSError("network is unreachable (test)")

    monkeypatch.setenv("KERAS_HOME", str(tmp_path))
    monkeypatch.setattr(keras_weights.socket, "create_connection", no_network)
    with pytest.raises(backbones.WeightsUnavailable) as err:  # no retry loop: the patched socket fails at once
        backbones.check_weights("efficientnetv2b0", "imagenet")
    message = str(err.value)
    assert "\n" not in message and "could not be downloaded" in message
    assert "efficientnetv2-b0_notop.h5" in message and str(tmp_path / "models") in message
    assert "--weights PATH" in message
    with pytest.raises(backbones.WeightsUnavailable):  # run_fold checks before it trains anything
        backbones.run_fold(Fold(*[np.zeros((2, 8, 8), np.uint8), np.array([0, 1])] * 2, np.zeros((1, 8, 8)),
                                tmp_path), {"backbone": "vgg16", "weights": "imagenet"})


def test_imagenet_weights_already_in_the_keras_cache_are_used(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KERAS_HOME", str(tmp_path))
    cached = tmp_path / "models" / "convnext_tiny_notop.h5"
    cached.parent.mkdir()
    cached.write_bytes(b"stand-in")
    assert backbones.check_weights("convnext_tiny", "imagenet") == cached


def test_weights_path_missing_or_mismatched_says_so(tmp_path: Path) -> None:
    missing = tmp_path / "nope.weights.h5"
    with pytest.raises(backbones.WeightsUnavailable, match="not found") as err:
        backbones.check_weights("vgg16", str(missing))
    assert str(missing) in str(err.value)
    garbage = tmp_path / "garbage.weights.h5"
    garbage.write_bytes(b"not a weights file")
    with pytest.raises(backbones.WeightsUnavailable, match="does not fit vgg16"):
        backbones.get_backbone("vgg16", 32, str(garbage))
    with pytest.raises(ValueError, match="unknown backbone"):
        backbones.check_weights("alexnet", "none")
