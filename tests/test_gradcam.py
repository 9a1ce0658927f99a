"""Grad-CAM (lib.deploy.gradcam): the map points at the evidence, on every Keras backend."""

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import keras
import numpy as np
import pytest

from lib.classify import cnn
from lib.deploy import gradcam

ROOT = Path(__file__).resolve().parents[1]
SIZE = 32


def squares(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """uint8 noise slices (n, 32, 32); every odd one has a bright 8 px square in the LEFT half (class 1)."""
    rng = np.random.default_rng(seed)
    x = rng.normal(60, 20, (n, SIZE, SIZE)).clip(0, 255)
    y = np.arange(n) % 2
    for i in np.flatnonzero(y):
        row, col = rng.integers(2, SIZE - 10), rng.integers(2, SIZE // 2 - 8)
        x[i, row:row + 8, col:col + 8] = 220
    return x.astype(np.uint8), y


def tiny_model() -> keras.Model:
    """Three small convolutions (last one 8x8), global average pooling, one sigmoid unit."""
    inputs = keras.Input((SIZE, SIZE, 1), name="image")
    x = keras.layers.Rescaling(1 / 255)(inputs)
    for width in (8, 16):
        x = keras.layers.Conv2D(width, 3, padding="same", activation="relu")(x)
        x = keras.layers.MaxPooling2D()(x)
    x = keras.layers.Conv2D(16, 3, padding="same", activation="relu", name="last_conv")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    return keras.Model(inputs, keras.layers.Dense(1, activation="sigmoid", name="tumour")(x))


@pytest.fixture(scope="module")
def trained() -> tuple[keras.Model, np.ndarray, np.ndarray]:
    """The tiny model fitted on 200 square / no-square slices (a few seconds); model, inputs, labels."""
    keras.utils.set_random_seed(0)
    grey, y = squares(200, seed=0)
    x = cnn.prepare_images(grey, SIZE)
    model = tiny_model()
    cnn.compile_model(model, 1e-2)
    model.fit(x, y.astype(np.float32), epochs=10, batch_size=16, verbose=0)
    return model, x, y


def test_classifier_learns_the_squares(trained):
    model, x, y = trained
    assert ((cnn.predict(model, x, 64) > 0.5) == y).mean() > 0.9


def test_heatmap_points_at_the_square(trained):
    model, x, y = trained
    assert gradcam.last_conv_layer(model) == "last_conv"
    for image in x[y == 1][:10]:
        for flip in (False, True):  # the square in the left half, then mirrored into the right half
            heat = gradcam.heatmap(model, image[:, ::-1] if flip else image)
            assert heat.shape == (SIZE, SIZE) and heat.dtype == np.float32
            assert np.isfinite(heat).all() and heat.min() >= 0 and 0.5 < heat.max() <= 1
            left, right = heat[:, :SIZE // 2].sum(), heat[:, SIZE // 2:].sum()
            assert (right > left) if flip else (left > right)


def test_heatmap_is_zero_when_gradients_vanish(trained):
    model, x, y = trained
    dead = tiny_model()
    dead.set_weights(model.get_weights())
    tumour = dead.get_layer("tumour")
    tumour.set_weights([np.zeros_like(w) for w in tumour.get_weights()])  # constant output, zero gradient
    heat = gradcam.heatmap(dead, x[1])
    assert heat.shape == (SIZE, SIZE) and not heat.any()


def test_last_conv_layer_of_the_project_cnn():
    model = cnn.get_model(SIZE)
    shape = model.get_layer(gradcam.last_conv_layer(model)).output.shape
    assert len(shape) == 4 and shape[1] > 1 and shape[2] > 1
    later = model.layers[[layer.name for layer in model.layers].index(gradcam.last_conv_layer(model)) + 1:]
    assert all(len(layer.output.shape) != 4 or layer.output.shape[1] == 1 for layer in later)


def test_heatmap_of_the_project_cnn_skips_augmentation():
    keras.utils.set_random_seed(1)
    model = cnn.get_model(SIZE)
    image = cnn.prepare_images(squares(2, seed=1)[0], SIZE)[1]
    first, second = gradcam.heatmap(model, image), gradcam.heatmap(model, image)
    assert first.shape == (SIZE, SIZE) and np.isfinite(first).all()
    np.testing.assert_array_equal(first, second)  # augmenter (random noise, flips) in training mode would differ


def test_overlay_colours_the_hot_part():
    grey = np.full((40, 60), 100, np.uint8)
    heat = np.zeros((8, 8), np.float32)
    heat[:, 4:] = 1.0  # right half hot
    out = gradcam.overlay(grey, heat)
    assert out.shape == (40, 60, 3) and out.dtype == np.uint8
    hot, cold = out[:, 45:].astype(int), out[:, :15].astype(int)
    assert hot[..., 0].mean() > hot[..., 2].mean() + 30  # JET: red where hot
    assert cold[..., 2].mean() > cold[..., 0].mean() + 30  # blue where cold
    assert np.abs(hot - 100).max() > 30
    np.testing.assert_array_equal(gradcam.overlay(np.stack([grey] * 3, axis=2), heat), out)


OTHER_BACKEND = """
import json, sys
import keras, numpy as np
from lib.deploy import gradcam
model = keras.saving.load_model(sys.argv[1])
heat = gradcam.heatmap(model, np.load(sys.argv[2]))
np.save(sys.argv[3], heat)
print(json.dumps({"backend": keras.backend.backend(), "shape": heat.shape, "max": float(heat.max())}))
"""


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["torch", "jax"])
def test_other_backend_gives_the_same_map(trained, backend, tmp_path):
    if importlib.util.find_spec(backend) is None:
        pytest.skip(f"{backend} is not installed in this environment, so KERAS_BACKEND={backend} cannot run")
    model, x, y = trained
    image = x[y == 1][0]
    model.save(tmp_path / "model.keras")
    np.save(tmp_path / "image.npy", image)
    env = {**os.environ, "KERAS_BACKEND": backend, "PYTHONPATH": str(ROOT), "CUDA_VISIBLE_DEVICES": ""}
    paths = [str(tmp_path / name) for name in ("model.keras", "image.npy", "heat.npy")]
    run = subprocess.run([sys.executable, "-c", OTHER_BACKEND, *paths], cwd=ROOT, env=env, capture_output=True,
                         text=True, timeout=120)
    assert run.returncode == 0, run.stderr[-3000:]
    result = json.loads(run.stdout.strip().splitlines()[-1])
    assert result["backend"] == backend and result["shape"] == [SIZE, SIZE] and 0.5 < result["max"] <= 1
    heat = np.load(tmp_path / "heat.npy")
    assert np.isfinite(heat).all()
    np.testing.assert_allclose(heat, gradcam.heatmap(model, image), atol=1e-3)
