"""A denoising diffusion implicit model (DDIM) of grey brain slices, in backend-agnostic Keras 3.

The recipe is the keras.io "Denoising Diffusion Implicit Models" example that
the original project trained, written for this project:
- a cosine schedule: at diffusion time t in [0, 1] a slice is
  signal_rate * image + noise_rate * noise, with signal² + noise² = 1 and the
  signal rate falling from MAX_SIGNAL to MIN_SIGNAL;
- a residual U-Net that, given the noisy slice and its noise variance (a
  sinusoidal embedding), predicts the noise; optionally a class embedding
  (tumour / no tumour), so one model generates either class;
- the noise loss (mean absolute error) trained with Keras' own `fit`, the
  noisy inputs made on the fly by `NoisyBatches`; no custom train_step, so the
  same code trains on TensorFlow, PyTorch and JAX;
- an exponential moving average of the weights (the optimizer's `use_ema`),
  which `fit` writes into the model when it ends: the weights that sample;
- deterministic DDIM sampling (eta = 0) in a chosen number of steps.

The image loss the original reported is the mean absolute error of the
slice the network's noise estimate implies, (noisy - noise_rate * noise) /
signal_rate, against the real one (`image_loss`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import keras
import numpy as np
from keras import layers, ops

MIN_SIGNAL = 0.02  # signal rate at t = 1: almost pure noise
MAX_SIGNAL = 0.95  # at t = 0: a little noise even at the start, so the network never sees an exact image
EMBEDDING_DIMS = 32
EMBEDDING_MAX_FREQUENCY = 1000.0
WIDTHS = (32, 64, 96, 128)
BLOCK_DEPTH = 2
LEARNING_RATE = 1e-3
WEIGHT_DECAY = 1e-4
EMA_MOMENTUM = 0.999
CLASSES = 2  # conditional models: 0 no tumour, 1 tumour


# --- schedule --------------------------------------------------------------------------


def rates(times: np.ndarray | float) -> tuple[np.ndarray, np.ndarray]:
    """(noise_rate, signal_rate) at diffusion times in [0, 1]: a cosine schedule, squares summing to 1."""
    start, end = math.acos(MAX_SIGNAL), math.acos(MIN_SIGNAL)
    angles = start + np.asarray(times, np.float32) * (end - start)
    return np.sin(angles).astype(np.float32), np.cos(angles).astype(np.float32)


# --- network ---------------------------------------------------------------------------


@keras.saving.register_keras_serializable(package="brainmri")
class SinusoidalEmbedding(layers.Layer):
    """Noise variance (B, 1, 1, 1) -> (B, 1, 1, dims): sines and cosines at geometrically spaced frequencies,
    so the network can tell small noise levels apart as well as large ones."""

    def __init__(self, dims: int = EMBEDDING_DIMS, max_frequency: float = EMBEDDING_MAX_FREQUENCY, **kwargs) -> None:
        super().__init__(**kwargs)
        self.dims, self.max_frequency = dims, max_frequency

    def call(self, variance):
        frequencies = ops.exp(ops.linspace(0.0, math.log(self.max_frequency), self.dims // 2))
        angles = 2.0 * math.pi * frequencies * ops.cast(variance, "float32")
        return ops.concatenate([ops.sin(angles), ops.cos(angles)], axis=-1)

    def get_config(self) -> dict:
        return {**super().get_config(), "dims": self.dims, "max_frequency": self.max_frequency}


def _residual_block(x, width: int):
    """Two 3x3 convolutions around a group norm, added to the input (projected where the width changes)."""
    residual = x if x.shape[-1] == width else layers.Conv2D(width, 1)(x)
    x = layers.GroupNormalization(groups=min(8, x.shape[-1]), center=False, scale=False)(x)
    x = layers.Conv2D(width, 3, padding="same", activation="swish")(x)
    x = layers.Conv2D(width, 3, padding="same")(x)
    return layers.Add()([x, residual])


def build_network(size: int, widths: Sequence[int] = WIDTHS, block_depth: int = BLOCK_DEPTH,
                  conditional: bool = False) -> keras.Model:
    """The noise-predicting U-Net: [noisy (S, S, 1), noise variance (1, 1, 1)(, class (1,))] -> noise (S, S, 1)."""
    if size % 2 ** (len(widths) - 1):
        raise ValueError(f"size {size} must be divisible by {2 ** (len(widths) - 1)} for {len(widths)} widths")
    noisy = keras.Input((size, size, 1), name="noisy")
    variance = keras.Input((1, 1, 1), name="noise_variance")
    inputs = [noisy, variance]
    embedding = layers.UpSampling2D(size, interpolation="nearest")(SinusoidalEmbedding()(variance))
    parts = [layers.Conv2D(widths[0], 1)(noisy), embedding]
    if conditional:
        label = keras.Input((1,), dtype="int32", name="label")
        inputs.append(label)
        classes = layers.Reshape((1, 1, EMBEDDING_DIMS))(layers.Embedding(CLASSES, EMBEDDING_DIMS)(label))
        parts.append(layers.UpSampling2D(size, interpolation="nearest")(classes))
    x = layers.Concatenate()(parts)
    skips = []
    for width in widths[:-1]:
        for _ in range(block_depth):
            x = _residual_block(x, width)
            skips.append(x)
        x = layers.AveragePooling2D(2)(x)
    for _ in range(block_depth):
        x = _residual_block(x, widths[-1])
    for width in reversed(widths[:-1]):
        x = layers.UpSampling2D(2, interpolation="bilinear")(x)
        for _ in range(block_depth):
            x = _residual_block(layers.Concatenate()([x, skips.pop()]), width)
    noise = layers.Conv2D(1, 1, kernel_initializer="zeros", name="noise")(x)
    return keras.Model(inputs, noise, name="ddim_unet")


def ema_momentum(total_steps: int) -> float:
    """EMA_MOMENTUM, or less for short runs: the average spans about the last tenth of training.

    Why: Keras' EMA starts from the initial weights and is not bias-corrected, so at 0.999 a CPU
    run of a few hundred steps would sample with weights still close to the untrained ones."""
    return float(min(EMA_MOMENTUM, max(0.0, 1.0 - 10.0 / max(int(total_steps), 1))))


def compile_network(network: keras.Model, total_steps: int, learning_rate: float = LEARNING_RATE) -> None:
    """AdamW with an EMA of the weights (written into the model when `fit` ends), noise loss = MAE."""
    network.compile(optimizer=keras.optimizers.AdamW(learning_rate, weight_decay=WEIGHT_DECAY, use_ema=True,
                                                     ema_momentum=ema_momentum(total_steps)),
                    loss="mean_absolute_error")


# --- training data -------------------------------------------------------------------


def noisy_inputs(images: np.ndarray, rng: np.random.Generator, labels: np.ndarray | None = None,
                 times: np.ndarray | None = None) -> tuple[list[np.ndarray], np.ndarray, np.ndarray]:
    """([noisy, noise variance(, labels)], noise, signal rates) for normalised images (N, S, S, 1)."""
    count = len(images)
    times = rng.uniform(0.0, 1.0, count).astype(np.float32) if times is None else times
    noise_rates, signal_rates = (r.reshape(-1, 1, 1, 1) for r in rates(times))
    noise = rng.standard_normal(images.shape).astype(np.float32)
    inputs = [signal_rates * images + noise_rates * noise, noise_rates ** 2]
    if labels is not None:
        inputs.append(np.asarray(labels, np.int32).reshape(-1, 1))
    return inputs, noise, signal_rates


class NoisyBatches(keras.utils.PyDataset):
    """Batches of (noisy inputs, noise) drawn afresh every epoch; `fixed` draws the same ones every time
    (validation: comparable losses from epoch to epoch). Training batches are mirrored left-right at random."""

    def __init__(self, images: np.ndarray, labels: np.ndarray | None, batch_size: int, seed: int,
                 fixed: bool = False) -> None:
        super().__init__()
        self.images, self.labels, self.batch_size = images, labels, int(batch_size)
        self.seed, self.fixed, self.epoch = int(seed), fixed, 0
        self.order = np.arange(len(images))

    def __len__(self) -> int:
        return math.ceil(len(self.images) / self.batch_size)

    def on_epoch_end(self) -> None:
        self.epoch += 1

    def _rng(self, index: int) -> np.random.Generator:
        return np.random.default_rng([self.seed, 0 if self.fixed else self.epoch, index])

    def __getitem__(self, index: int):
        rng = self._rng(index)
        order = self.order if self.fixed else np.random.default_rng([self.seed, self.epoch]).permutation(self.order)
        picked = order[index * self.batch_size:(index + 1) * self.batch_size]
        images = self.images[picked]
        if not self.fixed:
            flip = rng.random(len(images)) < 0.5
            images = np.where(flip[:, None, None, None], images[:, :, ::-1], images)
        labels = None if self.labels is None else self.labels[picked]
        inputs, noise, _ = noisy_inputs(images, rng, labels)
        return tuple(inputs), noise


def image_loss(network: keras.Model, images: np.ndarray, labels: np.ndarray | None, seed: int,
               batch_size: int = 64) -> float:
    """Mean absolute error of the slices implied by the network's noise estimates (normalised units)."""
    rng, errors = np.random.default_rng(seed), []
    for start in range(0, len(images), batch_size):
        batch = images[start:start + batch_size]
        part = None if labels is None else labels[start:start + batch_size]
        inputs, _, signal_rates = noisy_inputs(batch, rng, part)
        noise_rates = np.sqrt(inputs[1])
        predicted = np.asarray(network.predict_on_batch(inputs))
        implied = (inputs[0] - noise_rates * predicted) / signal_rates
        errors.append(np.abs(implied - batch).mean(axis=(1, 2, 3)))
    return float(np.concatenate(errors).mean())


# --- sampling --------------------------------------------------------------------------


def sample(network: keras.Model, count: int, steps: int, seed: int, labels: np.ndarray | None = None,
           batch_size: int = 64) -> np.ndarray:
    """`count` normalised slices (N, S, S, 1) by deterministic DDIM in `steps` steps from seeded noise.

    The same network, seed, count and steps give the same slices (no other randomness).
    """
    size = int(network.inputs[0].shape[1])
    noisy = np.random.default_rng(seed).standard_normal((count, size, size, 1)).astype(np.float32)
    out = []
    for start in range(0, count, batch_size):
        part = None if labels is None else np.asarray(labels[start:start + batch_size], np.int32).reshape(-1, 1)
        out.append(_reverse(network, noisy[start:start + batch_size], steps, part))
    return np.concatenate(out) if out else noisy


def _reverse(network: keras.Model, noisy: np.ndarray, steps: int, labels: np.ndarray | None) -> np.ndarray:
    """From pure noise back to t = 0 in `steps` equal steps: estimate the slice, re-noise it one step less."""
    images = noisy
    for step in range(steps):
        time = 1.0 - step / steps
        noise_rate, signal_rate = rates(time)
        inputs = [noisy, np.full((len(noisy), 1, 1, 1), noise_rate ** 2, np.float32)]
        predicted = np.asarray(network.predict_on_batch(inputs + ([labels] if labels is not None else [])))
        images = (noisy - noise_rate * predicted) / signal_rate
        next_noise, next_signal = rates(time - 1.0 / steps)
        noisy = next_signal * images + next_noise * predicted
    return images
