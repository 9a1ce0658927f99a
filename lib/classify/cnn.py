"""A small CNN trained from scratch for tumour vs no tumour (one fold of 06_classify_kfold).

Why a custom network: with ~250 slices a 20-million-parameter ImageNet
backbone learns the training set by heart, and without internet it cannot
even be pretrained. Four conv blocks with batch norm (about 100 k weights;
the first convolution has stride 2, so a 96 px slice is 24 px after one
block), global average pooling, dropout and L2 weight decay are enough for a
bright or dark mass on a grey head, and a fold of ~200 slices trains in about
half a minute on a 2-core CPU.

Augmentation lives INSIDE the model, right after the input, as Keras
preprocessing layers (flip, rotation, zoom, contrast, brightness, noise).
Keras runs them only when training=True, so `model.predict` on the validation
and test images (and any later inference) always sees the image untouched:
there is no separate augmentation pipeline that could leak into them.

Training: Adam, binary cross-entropy, early stopping on the validation ROC AUC
with the best epoch's weights restored; class imbalance by class weights or by
oversampling the minority class (lib.classify.fold.rebalance). Loss, AUC and accuracy
per epoch go back in the FoldResult's history for the training-curve plots.

Backend-agnostic Keras 3 (`keras`, `keras.ops`): the same code runs with
KERAS_BACKEND=tensorflow or torch (or jax where installed). On a torch CPU,
RandomRotation and RandomZoom are slow in Keras 3.15, so a fold takes several
times longer than on tensorflow (measured: docs/results.md).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import cv2
import keras
import numpy as np

from lib.classify.fold import Fold, FoldResult, rebalance

# --- hyper-parameters ------------------------------------------------------------

IMAGE_SIZE = 96  # input side in pixels (slices are resized); 128 costs ~1.7x the time for no gain on phantoms
EPOCHS = 30  # upper limit; early stopping usually ends sooner
BATCH_SIZE = 16
LEARNING_RATE = 1e-3
REBALANCE = "class_weight"  # 'class_weight', 'oversample' or 'none'
PATIENCE = 8  # epochs without a better validation AUC before stopping
WARMUP_EPOCHS = 5  # epochs before early stopping watches: batch-norm statistics settle first

WIDTHS = (16, 32, 64, 128)  # filters of the conv blocks; each block halves the image
STEM_STRIDE = 2  # the first convolution also halves it: 96 px in, 24 px after the first block
DROPOUT = 0.3  # before the output unit
WEIGHT_DECAY = 1e-4  # L2 on every kernel
BN_MOMENTUM = 0.9  # faster than Keras' 0.99: only ~15 steps per epoch here, and the
# moving statistics must forget their start (mean 0, variance 1) within a few epochs

# Augmentation (training only). Rotation and zoom are fractions (of a full turn, of the side).
FLIP = "horizontal"  # left-right mirror is anatomically plausible; up-down is not
ROTATION = 0.04  # +-0.04 turn = +-14 degrees
ZOOM = 0.1
CONTRAST = 0.2
BRIGHTNESS = 0.1  # fraction of the grey range
NOISE_SD = 0.015  # of the grey range (about 4 grey levels)

DEFAULTS = {"image_size": IMAGE_SIZE, "epochs": EPOCHS, "batch_size": BATCH_SIZE,
            "learning_rate": LEARNING_RATE, "rebalance": REBALANCE}


# --- data ------------------------------------------------------------------------


def settings_with_defaults(settings: dict[str, Any], defaults: dict[str, Any]) -> dict[str, Any]:
    """The defaults, overridden by every setting that is not None."""
    return {**defaults, **{k: v for k, v in settings.items() if v is not None}}


def prepare_images(images: np.ndarray, size: int) -> np.ndarray:
    """Grey slices (N, H, W) or RGB (N, H, W, 3), any size, as float32 (N, size, size, 1) in 0..255.

    Always a new array: the caller's images are never modified.
    """
    out = np.empty((len(images), size, size, 1), np.float32)
    for i, image in enumerate(images):
        image = np.asarray(image)
        if image.ndim == 3:
            image = image.mean(axis=2)
        out[i, :, :, 0] = cv2.resize(image.astype(np.float32), (size, size), interpolation=cv2.INTER_AREA)
    return out


# --- model -----------------------------------------------------------------------


def augmenter() -> keras.Sequential:
    """Random flip, rotation, zoom, contrast, brightness and noise on images in 0..1.

    Every layer is the identity when training=False (predict, evaluate, inference).
    """
    return keras.Sequential([
        keras.layers.RandomFlip(FLIP),
        keras.layers.RandomRotation(ROTATION, fill_mode="constant"),
        keras.layers.RandomZoom(ZOOM, fill_mode="constant"),
        keras.layers.RandomContrast(CONTRAST, value_range=(0, 1)),
        keras.layers.RandomBrightness(BRIGHTNESS, value_range=(0, 1)),
        keras.layers.GaussianNoise(NOISE_SD),
    ], name="augmenter")


def conv_block(x: Any, width: int, strides: int = 1) -> Any:
    """3x3 convolution (with `strides`), batch norm, ReLU, then 2x2 max pooling."""
    x = keras.layers.Conv2D(width, 3, strides=strides, padding="same", use_bias=False, kernel_initializer="he_normal",
                            kernel_regularizer=keras.regularizers.L2(WEIGHT_DECAY))(x)
    x = keras.layers.BatchNormalization(momentum=BN_MOMENTUM)(x)
    x = keras.layers.Activation("relu")(x)
    return keras.layers.MaxPooling2D(2)(x)


def get_model(image_size: int = IMAGE_SIZE) -> keras.Model:
    """Grey image (0..255) in, P(tumour) out; augmentation at the input."""
    inputs = keras.Input((image_size, image_size, 1), name="image")
    x = keras.layers.Rescaling(1 / 255)(inputs)
    x = augmenter()(x)
    x = keras.layers.Rescaling(2.0, offset=-1.0)(x)  # -1..1 with He init: conv outputs near unit variance
    x = conv_block(x, WIDTHS[0], strides=STEM_STRIDE)
    for width in WIDTHS[1:]:
        x = conv_block(x, width)
    x = keras.layers.GlobalAveragePooling2D()(x)
    x = keras.layers.Dropout(DROPOUT)(x)
    outputs = keras.layers.Dense(1, activation="sigmoid", kernel_regularizer=keras.regularizers.L2(WEIGHT_DECAY),
                                 name="tumour")(x)
    return keras.Model(inputs, outputs, name="tumour_cnn")


# --- training --------------------------------------------------------------------


def compile_model(model: keras.Model, learning_rate: float) -> None:
    """Adam on binary cross-entropy; ROC AUC and accuracy as metrics."""
    model.compile(optimizer=keras.optimizers.Adam(learning_rate), loss="binary_crossentropy",
                  metrics=[keras.metrics.AUC(name="auc"), keras.metrics.BinaryAccuracy(name="accuracy")])


def train(model: keras.Model, x: np.ndarray, y: np.ndarray, val: tuple[np.ndarray, np.ndarray],
          s: dict[str, Any], seed: int, patience: int = PATIENCE,
          warmup: int = WARMUP_EPOCHS) -> dict[str, list[float]]:
    """Fit with rebalancing and early stopping on validation AUC (best weights restored); the curves.

    s holds epochs, batch_size and rebalance; x are images or any other model input. The best
    epoch is chosen from epoch `warmup` on (with fewer epochs, the last one is kept).
    """
    x, y, class_weight = rebalance(x, y, s["rebalance"], seed)
    stop = keras.callbacks.EarlyStopping(monitor="val_auc", mode="max", patience=patience,
                                         restore_best_weights=True, start_from_epoch=warmup)
    fit = model.fit(x, y.astype(np.float32), validation_data=(val[0], val[1].astype(np.float32)),
                    epochs=int(s["epochs"]), batch_size=int(s["batch_size"]), class_weight=class_weight,
                    callbacks=[stop], shuffle=True, verbose=0)
    return {k: [float(v) for v in values] for k, values in fit.history.items()}


def predict(model: keras.Model, x: np.ndarray, batch_size: int) -> np.ndarray:
    """P(tumour) of each image, shape (N,); training=False, so no augmentation."""
    if len(x) == 0:
        return np.zeros(0, np.float32)
    return np.asarray(model.predict(x, batch_size=batch_size, verbose=0)).reshape(-1)


def run_fold(fold: Fold, settings: dict[str, Any]) -> FoldResult:
    """Train on the fold's training part, stop on its validation part, predict validation, test and extra."""
    s = settings_with_defaults(settings, DEFAULTS)
    keras.utils.set_random_seed(fold.seed)
    size = int(s["image_size"])
    model = get_model(size)
    compile_model(model, float(s["learning_rate"]))
    val_x = prepare_images(fold.val_x, size)
    history = train(model, prepare_images(fold.train_x, size), np.asarray(fold.train_y), (val_x, fold.val_y),
                    s, fold.seed)
    save(model, fold.out_dir)
    batch = int(s["batch_size"])
    extra = None if fold.extra_x is None else predict(model, prepare_images(fold.extra_x, size), batch)
    return FoldResult(val_prob=predict(model, val_x, batch),
                      test_prob=predict(model, prepare_images(fold.test_x, size), batch),
                      history=history, extra_prob=extra)


def save(model: keras.Model, out_dir: Path | None) -> None:
    """The fold's model as out_dir/model.keras (input: grey float32 (N, size, size, 1) in 0..255)."""
    if out_dir is not None:
        Path(out_dir).mkdir(parents=True, exist_ok=True)
        model.save(Path(out_dir) / "model.keras")
