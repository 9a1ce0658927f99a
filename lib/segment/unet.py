"""Tumour segmentation networks trained from scratch (stage 08): a U-Net and a small DeepLabV3+.

Why from scratch: offline there are no pretrained Keras encoders to fetch,
and they train on a 2-core CPU within make all. A pretrained encoder does
help on real slices: 08 --architecture litemedsam (lib.segment.medsam_tuning) beats
these networks on figshare, but it needs a GPU. Both networks have about
150 k weights (width 16) and are built mostly from separable convolutions,
so an epoch takes seconds, not minutes, on a CPU (measured: docs/results.md).

`unet` follows the keras.io Oxford-pets U-Net: a stride-2 entry convolution;
down blocks of separable convolutions, batch norm and ReLU with a strided 1x1
residual shortcut and max pooling; up blocks of two convolutions (separable
here, transposed in pets: see _unet_up) and 2x upsampling, again with a
residual; filters width, 2 width, 4 width, 8 width. Unlike the pets model it
CONCATENATES the encoder features of the same resolution after every up
block, and the input image itself before the last convolution. Why: the
pets decoder rebuilds the full-size mask from the 1/16 bottleneck alone (a
cell is 16 px of a 128 px slice); its residuals carry only the decoder's own
upsampled features, so where exactly inside a cell an edge lies has to
survive the pooling in the channels, and in practice the masks come out
blobby. The skips (as in the original U-Net) hand the decoder the sharp
early features, and the raw image at full size lets the last layer snap the
mask to the tumour's intensity edge.

`deeplabv3plus`: residual separable-conv blocks down to 1/8 of the input
(output stride 8; the last block is dilated instead of strided), ASPP (a 1x1 branch,
three atrous separable branches, image pooling), and the V3+ decoder that
fuses the ASPP output, bilinearly upsampled to 1/4, with the encoder's 1/4
features, then upsamples the logits 4x bilinearly. The atrous rates are the
paper's (6, 12, 18) scaled to the feature map: they were chosen for a 32 px
map (512 px at stride 16), and on the 16 px map of a 128 px slice a rate 18
kernel sees only zero padding; scaled, they are (3, 6, 9).

Loss: soft Dice + binary cross-entropy. Dice alone ignores tumour-free
images and gives noisy gradients early on; cross-entropy alone is dominated
by the ~97 % background pixels and under-segments small tumours. The metric
("dice") is the hard Dice per image at threshold 0.5 with the BraTS
convention (both masks empty = 1), as lib.segment.mask_metrics computes it later.

Augmentation (lib.segment.paired_augment) moves image and mask with one warp. It runs
in the data pipeline (SliceSequence), on training batches only; validation,
prediction and the saved model never see it.

Backend-agnostic Keras 3 (`keras`, `keras.ops`): runs with
KERAS_BACKEND=tensorflow or torch. On a torch CPU, training is many times
slower (depthwise-convolution backward passes): use TensorFlow there, torch
on a GPU. Models take grey float32 (N, S, S, 1) in 0..1 and give P(tumour) per
pixel, (N, S, S, 1); `predict` resizes back to each slice's own size.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import cv2
import keras
import numpy as np
from keras import layers, ops

from lib.common.fingerprint import fingerprint, loss_weights
from lib.common.keras_checkpoint import CHECKPOINT_DIR, EpochCheckpoint, TimeBudget
from lib.segment.paired_augment import PairedAugment

# --- hyper-parameters ------------------------------------------------------------

ARCHITECTURES = ("unet", "deeplabv3plus")
IMAGE_SIZE = 128  # input side in pixels; must be a multiple of 16
WIDTH = 16  # filters of the first level; the U-Net has width * (1, 2, 4, 8)
EPOCHS = 40  # upper limit; early stopping usually ends sooner
BATCH_SIZE = 16
PATIENCE = 8  # epochs without a better validation Dice before stopping
LR_PATIENCE = 4  # epochs without a lower validation loss before the learning rate halves
LEARNING_RATE = 1e-3
MIN_LEARNING_RATE = 1e-5
WARMUP_EPOCHS = 3  # early stopping watches from here: an empty prediction scores 1 on tumour-free slices
BN_MOMENTUM = 0.9  # Keras' 0.99 is too slow for ~25 steps per epoch: inference statistics would lag
PRIOR = 0.05  # initial P(tumour) of every pixel (the logits' bias): tumours cover a few % of a slice,
# and starting at 0.5 everywhere wastes the first epochs unlearning the background (as in RetinaNet)
DICE_SMOOTH = 1.0  # added to both sides of the soft Dice: finite on empty masks, smooth gradients
ASPP_RATES = (6, 12, 18)  # DeepLabV3 atrous rates for a 32 px feature map; scaled to ours

SERIAL_PACKAGE = "brain_unet"  # keras.saving registry package of the custom loss and metric


# --- loss and metric -------------------------------------------------------------


def _image_axes(x: Any) -> tuple[int, ...]:
    """Every axis but the batch axis."""
    return tuple(range(1, len(x.shape)))


@keras.saving.register_keras_serializable(package=SERIAL_PACKAGE)
def dice_bce_loss(y_true: Any, y_pred: Any) -> Any:
    """Soft Dice loss (per image, smoothed by DICE_SMOOTH) + binary cross-entropy, averaged over the batch.

    y_true: 0/1 masks, y_pred: probabilities, both (B, H, W, 1). One loss per image, shape (B,): Keras
    averages them over the batch, each times its sample weight where the batches carry one (08's weights).
    """
    y_true = ops.cast(y_true, y_pred.dtype)
    axes = _image_axes(y_pred)
    overlap = ops.sum(y_true * y_pred, axis=axes)
    total = ops.sum(y_true, axis=axes) + ops.sum(y_pred, axis=axes)
    soft_dice = (2.0 * overlap + DICE_SMOOTH) / (total + DICE_SMOOTH)
    bce = ops.mean(keras.losses.binary_crossentropy(y_true, y_pred), axis=axes[:-1])
    return 1.0 - soft_dice + bce


@keras.saving.register_keras_serializable(package=SERIAL_PACKAGE)
def dice_per_image(y_true: Any, y_pred: Any, threshold: float = 0.5) -> Any:
    """Hard Dice of each image, shape (B,): prediction > threshold vs truth > 0.5; 1 where both are empty."""
    truth = ops.cast(y_true > 0.5, "float32")
    pred = ops.cast(y_pred > threshold, "float32")
    axes = _image_axes(pred)
    overlap = ops.sum(truth * pred, axis=axes)
    total = ops.sum(truth, axis=axes) + ops.sum(pred, axis=axes)
    return ops.where(total > 0, 2.0 * overlap / ops.maximum(total, 1.0), 1.0)


@keras.saving.register_keras_serializable(package=SERIAL_PACKAGE)
def dice_coefficient(y_true: Any, y_pred: Any, threshold: float = 0.5) -> Any:
    """Mean over the batch of the hard Dice per image (dice_per_image); a scalar."""
    return ops.mean(dice_per_image(y_true, y_pred, threshold))


def dice_metric() -> keras.metrics.Metric:
    """The "dice" metric of `train`: dice_per_image averaged over all images of the epoch.

    Per image rather than per batch, so a short last batch weighs no more than its images.
    """
    return keras.metrics.MeanMetricWrapper(dice_per_image, name="dice")


# --- model building blocks -------------------------------------------------------


def _bn(x: Any) -> Any:
    return layers.BatchNormalization(momentum=BN_MOMENTUM)(x)


def _conv_bn_relu(x: Any, filters: int, kernel: int = 3, strides: int = 1, dilation: int = 1,
                  separable: bool = False) -> Any:
    """(Separable) convolution without bias, batch norm, ReLU."""
    conv = layers.SeparableConv2D if separable else layers.Conv2D
    x = conv(filters, kernel, strides=strides, dilation_rate=dilation, padding="same", use_bias=False)(x)
    return layers.Activation("relu")(_bn(x))


def _unet_down(x: Any, filters: int) -> Any:
    """Pets-style down block: [ReLU, separable conv, BN] x 2, max pool /2, plus a strided 1x1 shortcut."""
    shortcut = layers.Conv2D(filters, 1, strides=2, padding="same")(x)
    for _ in range(2):
        x = layers.Activation("relu")(x)
        x = _bn(layers.SeparableConv2D(filters, 3, padding="same", use_bias=False)(x))
    x = layers.MaxPooling2D(3, strides=2, padding="same")(x)
    return layers.Add()([x, shortcut])


def _unet_up(x: Any, filters: int, skip: Any) -> Any:
    """Pets-style up block ([ReLU, conv, BN] x 2, bilinear upsampling x2, plus a 1x1 shortcut), then
    the encoder's features of the new resolution concatenated (the U-Net skip).

    Separable convolutions where pets has stride-1 Conv2DTranspose (which is a plain 3x3
    convolution): a quarter of the weights and of the time per epoch on a CPU. The shortcut's 1x1
    convolution runs before the upsampling (both are linear, so the result is the same) at a
    quarter of the cost.
    """
    shortcut = layers.UpSampling2D(2, interpolation="bilinear")(layers.Conv2D(filters, 1)(x))
    for _ in range(2):
        x = layers.Activation("relu")(x)
        x = _bn(layers.SeparableConv2D(filters, 3, padding="same", use_bias=False)(x))
    x = layers.UpSampling2D(2, interpolation="bilinear")(x)
    x = layers.Add()([x, shortcut])
    return layers.Concatenate()([x, skip])


def _logits(x: Any) -> Any:
    """1x1 convolution to one logit per pixel, biased to P(tumour) = PRIOR."""
    bias = keras.initializers.Constant(math.log(PRIOR / (1 - PRIOR)))
    return layers.Conv2D(1, 1, bias_initializer=bias, name="logits")(x)


def _mask_head(logits: Any) -> Any:
    """Sigmoid in float32 (safe under mixed precision), named "mask"."""
    return layers.Activation("sigmoid", dtype="float32", name="mask")(logits)


def _input(image_size: int) -> tuple[Any, Any]:
    """The model input (0..1) and the same image rescaled to -1..1 (zero-centred for He-style init)."""
    inputs = keras.Input((image_size, image_size, 1), name="image")
    return inputs, layers.Rescaling(2.0, offset=-1.0)(inputs)


def build_unet(image_size: int = IMAGE_SIZE, width: int = WIDTH) -> keras.Model:
    """U-Net with pets-style residual blocks and concatenating skips; encoder down to 1/16."""
    inputs, image = _input(image_size)
    x = _conv_bn_relu(image, width, strides=2)  # 1/2
    skips = [x]
    for level in (2, 4, 8):  # 1/4, 1/8, 1/16
        x = _unet_down(x, width * level)
        skips.append(x)
    skips = skips[:-1][::-1] + [image]  # 1/8, 1/4, 1/2 encoder features, then the full-size image
    for level, skip in zip((8, 4, 2, 1), skips):
        x = _unet_up(x, width * level, skip)
    x = _conv_bn_relu(x, width, separable=True)  # at full size, on decoder features + image
    return keras.Model(inputs, _mask_head(_logits(x)), name="unet")


def _residual_block(x: Any, filters: int, strides: int = 1, dilation: int = 1) -> Any:
    """Residual block of two 3x3 convolutions (the first strided, if any) + a 1x1 shortcut where the shape changes.

    Unstrided convolutions are separable and dilated, as in DeepLabV3+'s Xception encoder: about
    a third of the weights and 25 % less time per epoch than plain ResNet convolutions.
    """
    shortcut = x
    if strides != 1 or x.shape[-1] != filters:
        shortcut = _bn(layers.Conv2D(filters, 1, strides=strides, use_bias=False)(x))
    if strides > 1:
        x = _conv_bn_relu(x, filters, strides=strides)
    else:
        x = _conv_bn_relu(x, filters, dilation=dilation, separable=True)
    x = _bn(layers.SeparableConv2D(filters, 3, dilation_rate=dilation, padding="same", use_bias=False)(x))
    return layers.Activation("relu")(layers.Add()([x, shortcut]))


def aspp_rates(feature_side: int) -> tuple[int, ...]:
    """ASPP_RATES scaled from a 32 px feature map to `feature_side`; at least 1, below the side, distinct."""
    rates = (max(1, round(r * feature_side / 32)) for r in ASPP_RATES)
    return tuple(sorted({r for r in rates if r < feature_side})) or (1,)


def _aspp(x: Any, filters: int) -> Any:
    """Atrous spatial pyramid pooling: 1x1, atrous separable 3x3 at each rate, image pooling; 1x1 fusion."""
    side = int(x.shape[1])
    branches = [_conv_bn_relu(x, filters, kernel=1)]
    branches += [_conv_bn_relu(x, filters, dilation=r, separable=True) for r in aspp_rates(side)]
    pooled = layers.GlobalAveragePooling2D(keepdims=True)(x)
    pooled = _conv_bn_relu(pooled, filters, kernel=1)
    branches.append(layers.UpSampling2D(side)(pooled))  # 1x1 -> side x side: a broadcast
    return _conv_bn_relu(layers.Concatenate()(branches), filters, kernel=1)


def build_deeplabv3plus(image_size: int = IMAGE_SIZE, width: int = WIDTH) -> keras.Model:
    """DeepLabV3+ with a small residual encoder (output stride 8), ASPP and the 1/4 decoder."""
    inputs, image = _input(image_size)
    x = _conv_bn_relu(image, width, strides=2)  # 1/2
    low = _residual_block(x, width * 2, strides=2)  # 1/4: the decoder's low-level features
    x = _residual_block(low, width * 4, strides=2)  # 1/8
    x = _residual_block(x, width * 8, dilation=2)  # 1/8, wider field of view without losing resolution
    x = _aspp(x, width * 4)
    x = layers.UpSampling2D(2, interpolation="bilinear")(x)  # 1/4
    low = _conv_bn_relu(low, width, kernel=1)  # few channels, so the ASPP features dominate (48 vs 256 in the paper)
    x = layers.Concatenate()([x, low])
    for _ in range(2):
        x = _conv_bn_relu(x, width * 4, separable=True)
    logits = _logits(x)
    logits = layers.UpSampling2D(4, interpolation="bilinear")(logits)
    return keras.Model(inputs, _mask_head(logits), name="deeplabv3plus")


def build(architecture: str, image_size: int = IMAGE_SIZE, width: int = WIDTH) -> keras.Model:
    """One of ARCHITECTURES: grey (S, S, 1) float32 in 0..1 in, P(tumour) (S, S, 1) out. Not compiled."""
    if architecture not in ARCHITECTURES:
        raise ValueError(f"architecture {architecture!r}: choose one of {ARCHITECTURES}")
    if image_size % 16:
        raise ValueError(f"image_size {image_size}: must be a multiple of 16 (the encoder halves it 4 times)")
    builder = build_unet if architecture == "unet" else build_deeplabv3plus
    return builder(image_size, width)


# --- data ------------------------------------------------------------------------


def _grey(image: np.ndarray) -> np.ndarray:
    image = np.asarray(image)
    return image.mean(axis=2) if image.ndim == 3 else image


def _binary(mask: np.ndarray) -> np.ndarray:
    """bool, uint8 0/1 or 0/255 (JPEG noise tolerated), or float 0..1 masks as bool."""
    mask = np.asarray(mask)
    if mask.ndim == 3:
        mask = mask.max(axis=2)
    if mask.dtype == np.uint8 and mask.max() > 1:
        return mask > 127
    return mask > 0.5 if mask.dtype.kind == "f" else mask > 0


def prepare_images(images: Sequence[np.ndarray], size: int) -> np.ndarray:
    """Grey (H, W) or RGB (H, W, 3) slices in 0..255, any size, as float32 (N, size, size, 1) in 0..1.

    INTER_AREA: the proper filter for shrinking (no aliasing of the noise).
    """
    out = np.zeros((len(images), size, size, 1), np.float32)
    for i, image in enumerate(images):
        grey = _grey(image).astype(np.float32)
        out[i, :, :, 0] = cv2.resize(grey, (size, size), interpolation=cv2.INTER_AREA) / 255.0
    return out


def prepare_masks(masks: Sequence[np.ndarray], size: int) -> np.ndarray:
    """Masks of any size as float32 0/1 (N, size, size, 1): area-resized, then > 0.5.

    Area + threshold keeps the boundary where half the pixel is tumour, which
    nearest-neighbour only approximates when shrinking.
    """
    out = np.zeros((len(masks), size, size, 1), np.float32)
    for i, mask in enumerate(masks):
        area = cv2.resize(_binary(mask).astype(np.float32), (size, size), interpolation=cv2.INTER_AREA)
        out[i, :, :, 0] = area > 0.5
    return out


class SliceSequence(keras.utils.PyDataset):
    """Batches (x (B, S, S, 1) float32 in 0..1, y (B, S, S, 1) float32 0/1) of slices and their masks.

    Slices and masks of any size are resized once, here (prepare_images, prepare_masks); the
    caller's arrays are not modified. With `weights` (one per slice, not all 1) batches carry each
    slice's loss weight as a third element. `shuffle` draws a new order every epoch; `augment` (True
    or a PairedAugment) augments every batch it serves, so use it for training batches only.
    """

    def __init__(self, images: Sequence[np.ndarray], masks: Sequence[np.ndarray], image_size: int = IMAGE_SIZE,
                 batch_size: int = BATCH_SIZE, shuffle: bool = False, augment: bool | PairedAugment = False,
                 seed: int = 0, weights: Sequence[float] | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if len(images) != len(masks):
            raise ValueError(f"{len(images)} images but {len(masks)} masks")
        self.w = loss_weights(weights, len(images))
        self.x = prepare_images(images, image_size)
        self.y = prepare_masks(masks, image_size)
        self.batch_size, self.shuffle, self.seed = int(batch_size), shuffle, int(seed)
        self.augment = PairedAugment(seed=seed + 1) if augment is True else (augment or None)
        self.start_epoch(0)

    def start_epoch(self, epoch: int) -> None:
        """Draw epoch `epoch`'s order and augmentation from (seed, epoch) alone.

        Why: a run resumed at this epoch (lib.common.keras_checkpoint) then serves exactly the
        batches the uninterrupted run would have served."""
        self.epoch = int(epoch)
        rng = np.random.default_rng([self.seed, self.epoch])
        self.order = rng.permutation(len(self.x)) if self.shuffle else np.arange(len(self.x))
        if self.augment is not None:
            self.augment.rng = np.random.default_rng([self.seed, self.epoch, 1])

    def __len__(self) -> int:
        return math.ceil(len(self.x) / self.batch_size)

    def __getitem__(self, index: int) -> tuple[np.ndarray, ...]:
        rows = self.order[index * self.batch_size:(index + 1) * self.batch_size]
        x, y = self.x[rows], self.y[rows]
        batch = self.augment(x, y) if self.augment is not None else (x, y)
        return batch if self.w is None else (*batch, self.w[rows])  # Keras' (x, y, sample_weight)

    def on_epoch_end(self) -> None:
        self.start_epoch(self.epoch + 1)


# --- training, prediction, files ---------------------------------------------------


def compile_model(model: keras.Model, learning_rate: float = LEARNING_RATE) -> None:
    """Adam on dice_bce_loss, with the per-image hard Dice as metric "dice"."""
    model.compile(optimizer=keras.optimizers.Adam(learning_rate), loss=dice_bce_loss, metrics=[dice_metric()])


def callbacks(patience: int, out_dir: Path | None, minutes: float | None = None) -> list[keras.callbacks.Callback]:
    """Early stopping on val_dice (best weights restored), LR halving on a val_loss plateau, CSV log,
    and a wall-time budget when `minutes` is given."""
    found = [keras.callbacks.EarlyStopping(monitor="val_dice", mode="max", patience=patience,
                                           restore_best_weights=True, start_from_epoch=WARMUP_EPOCHS),
             keras.callbacks.ReduceLROnPlateau(monitor="val_loss", factor=0.5, patience=min(LR_PATIENCE, patience),
                                               min_lr=MIN_LEARNING_RATE)]
    if out_dir is not None:
        found.append(keras.callbacks.CSVLogger(str(Path(out_dir) / "history.csv")))
    if minutes is not None:
        found.append(TimeBudget(minutes))
    return found


def train(train_images: Sequence[np.ndarray], train_masks: Sequence[np.ndarray],
          val_images: Sequence[np.ndarray], val_masks: Sequence[np.ndarray], architecture: str = "unet",
          image_size: int = IMAGE_SIZE, epochs: int = EPOCHS, batch_size: int = BATCH_SIZE,
          patience: int = PATIENCE, out_dir: Path | None = None, seed: int = 0, verbose: str | int = "auto",
          *, width: int = WIDTH, learning_rate: float = LEARNING_RATE,
          minutes: float | None = None, fresh: bool = False,
          weights: Sequence[float] | None = None) -> tuple[keras.Model, dict[str, list[float]]]:
    """Train `architecture` from scratch; (the model with its best-val_dice weights, the curves per epoch).

    Training batches are shuffled and augmented, validation batches are not. Early stopping
    watches val_dice from epoch WARMUP_EPOCHS on (with fewer epochs, the last one is kept);
    `minutes` caps the wall time (TimeBudget), best weights restored all the same.
    With out_dir: out_dir/model.keras (the returned model), out_dir/history.csv, and a checkpoint
    after every epoch (out_dir/checkpoint/, lib.common.keras_checkpoint): a rerun with the same options
    and slices resumes after the last finished epoch and ends as the uninterrupted run would;
    once finished, it returns the saved model at once. `fresh` ignores the checkpoint (08 --force).
    `weights` (one per training slice) weigh each slice's loss; validation is unweighted.
    """
    if len(train_images) == 0 or len(val_images) == 0:
        raise ValueError("train needs at least one training and one validation slice")
    keras.utils.set_random_seed(seed)
    train_seq = SliceSequence(train_images, train_masks, image_size, batch_size, shuffle=True, augment=True,
                              seed=seed, weights=weights)
    val_seq = SliceSequence(val_images, val_masks, image_size, batch_size)
    model = build(architecture, image_size, width)
    compile_model(model, learning_rate)
    found = callbacks(patience, out_dir, minutes)
    if out_dir is None:  # shuffle=False: the sequence shuffles, by (seed, epoch), not Python's random
        fit = model.fit(train_seq, validation_data=val_seq, epochs=int(epochs), callbacks=found, shuffle=False,
                        verbose=verbose)
        return model, {k: [float(v) for v in values] for k, values in fit.history.items()}
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    options = {"architecture": architecture, "image_size": image_size, "epochs": int(epochs), "seed": seed,
               "batch_size": batch_size, "patience": patience, "width": width, "learning_rate": learning_rate,
               "minutes": minutes, "slices": fingerprint(train_seq.x, train_seq.y, val_seq.x, val_seq.y,
                                   *(() if train_seq.w is None else (train_seq.w,)))}
    checkpoint = EpochCheckpoint(out_dir / CHECKPOINT_DIR, options, found, fresh)
    if checkpoint.finished and (out_dir / "model.keras").is_file():
        print(f"{out_dir}: already trained by an earlier run with these options and slices (--force to retrain)")
        return load(out_dir / "model.keras"), checkpoint.history
    if checkpoint.finished:  # its model.keras is gone and the checkpoint keeps no weights once finished
        checkpoint = EpochCheckpoint(out_dir / CHECKPOINT_DIR, options, found, fresh=True)
    checkpoint.restore(model)
    train_seq.start_epoch(checkpoint.epochs_done)
    for logger in found:
        if isinstance(logger, keras.callbacks.CSVLogger):
            logger.append = checkpoint.epochs_done > 0
    model.fit(train_seq, validation_data=val_seq, initial_epoch=checkpoint.epochs_done,
              epochs=checkpoint.epochs_done if checkpoint.stopped else int(epochs), callbacks=[*found, checkpoint],
              shuffle=False, verbose=verbose)
    model.save(out_dir / "model.keras")
    checkpoint.finish()
    return model, checkpoint.history


def predict_proba(model: keras.Model, images: Sequence[np.ndarray], batch_size: int = BATCH_SIZE) -> list[np.ndarray]:
    """P(tumour) maps, float32, each at its slice's own (H, W): the model's map resized back bilinearly.

    Up to one batch goes through predict_on_batch, Keras' compiled step without predict's per-call
    data pipeline: a few ms for a single slice (the demo, scripts/predict.py) instead of ~40.
    """
    if len(images) == 0:
        return []
    x = prepare_images(images, int(model.input_shape[1]))
    prob = np.asarray(model.predict_on_batch(x) if len(x) <= batch_size
                      else model.predict(x, batch_size=batch_size, verbose=0))
    return [resize_back(p[:, :, 0], np.shape(image)[:2]) for p, image in zip(prob, images)]


def resize_back(prob: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """A network-frame probability map at a slice's own (H, W), bilinear, clipped to 0..1.

    For an integer upscale of a 0/1 map, bilinear then > 0.5 equals nearest
    neighbour exactly (the nearest sample always weighs more than half).
    """
    return np.clip(cv2.resize(np.asarray(prob, np.float32), (int(shape[1]), int(shape[0])),
                              interpolation=cv2.INTER_LINEAR), 0, 1)


def predict(model: keras.Model, images: Sequence[np.ndarray], threshold: float = 0.5,
            batch_size: int = BATCH_SIZE) -> list[np.ndarray]:
    """Tumour masks, bool, each at its slice's own (H, W): resized probability > threshold.

    Thresholding after the resize (not before) gives smooth boundaries instead of
    blown-up model pixels.
    """
    return [p > threshold for p in predict_proba(model, images, batch_size)]


def custom_objects() -> dict[str, Any]:
    """The loss and metric functions a saved model refers to."""
    return {"dice_bce_loss": dice_bce_loss, "dice_per_image": dice_per_image, "dice_coefficient": dice_coefficient}


def load(path: Path | str) -> keras.Model:
    """A model saved by `train` (model.keras), compiled with its loss and metric."""
    return keras.saving.load_model(Path(path), custom_objects=custom_objects())
