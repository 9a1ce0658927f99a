"""Grad-CAM heat maps for the Keras 3 tumour classifiers (lib.classify.cnn): where does the network look?

Why: a classifier that scores well can still be right for the wrong reason (the
skull outline, a scanner label, the image border). Grad-CAM (Selvaraju et al.
2017) shows which part of the slice drives the tumour score: each channel of
the last spatial feature map is weighted by the mean gradient of the score with
respect to it, the weighted sum is clipped at zero and scaled to 0..1. It is a
coarse sanity check (a 96 px input gives a 3x3 map that is only interpolated up),
not an explanation or a segmentation.

The score is the tumour unit's logit (before the sigmoid) when the output layer
is a one-unit sigmoid Dense, as in lib.classify.cnn; otherwise the model's first output
value. The logit avoids the vanishing gradients of a saturated sigmoid.

Backend-agnostic: the model is split into two Keras models at the chosen layer
(image -> feature map, feature map -> score), so the gradient is always that of
a plain function of one tensor; only `_gradient` knows the backend
(tensorflow, torch or jax). Every layer runs with training=False, so the
augmentation layers and dropout are the identity.
"""

from __future__ import annotations

from typing import Any, Callable

import cv2
import keras
import numpy as np
from keras import ops

_NOT_FEATURES = (keras.layers.InputLayer, keras.layers.Rescaling, keras.Model)  # Model: the augmenter (Sequential)


def last_conv_layer(model: keras.Model) -> str:
    """Name of the last layer with a 4-D output (N, h, w, c) whose h and w are both above 1."""
    for layer in reversed(model.layers):
        if isinstance(layer, _NOT_FEATURES):
            continue
        shape = getattr(layer, "output", None)
        shape = None if shape is None else tuple(shape.shape)
        if shape is not None and len(shape) == 4 and (shape[1] or 0) > 1 and (shape[2] or 0) > 1:
            return layer.name
    raise ValueError(f"model {model.name!r} has no 4-D feature map with a spatial size above 1")


def _score_function(model: keras.Model, layer: str) -> tuple[keras.Model, Callable[[Any], Any]]:
    """(image -> feature map model, feature map -> summed tumour score function)."""
    features = model.get_layer(layer).output
    out = model.layers[-1]
    if isinstance(out, keras.layers.Dense) and out.units == 1 and out.activation is keras.activations.sigmoid:
        head = keras.Model(features, out.input)  # up to the tumour unit; its logit is computed below

        def score(fmap: Any) -> Any:
            logit = ops.matmul(head(fmap, training=False), out.kernel)
            return ops.sum(logit + out.bias if out.use_bias else logit)
    else:
        head = keras.Model(features, model.outputs[0])

        def score(fmap: Any) -> Any:
            return ops.sum(ops.reshape(head(fmap, training=False), (-1,))[0])

    inputs = model.inputs[0] if len(model.inputs) == 1 else model.inputs  # the structure that model() takes
    return keras.Model(inputs, features), score


_SPLITS: dict[tuple[int, str], tuple[keras.Model, keras.Model, Callable[[Any], Any]]] = {}


def _split(model: keras.Model, layer: str) -> tuple[keras.Model, Callable[[Any], Any]]:
    """_score_function, built once per model and layer (the demo asks for the same models again and again)."""
    key = (id(model), layer)
    cached = _SPLITS.get(key)
    if cached is None or cached[0] is not model:  # an id can be reused once a model is gone
        cached = _SPLITS[key] = (model, *_score_function(model, layer))
    return cached[1], cached[2]


def _gradient(f: Callable[[Any], Any], x: np.ndarray) -> np.ndarray:
    """d f(x) / d x for a scalar function f of one tensor, with the active Keras backend."""
    backend = keras.backend.backend()
    if backend == "tensorflow":
        import tensorflow as tf

        x = tf.convert_to_tensor(x)
        with tf.GradientTape() as tape:
            tape.watch(x)
            y = f(x)
        grad = tape.gradient(y, x)
    elif backend == "torch":
        import torch

        x = ops.convert_to_tensor(x).detach().requires_grad_(True)
        (grad,) = torch.autograd.grad(f(x), x)
    elif backend == "jax":
        import jax

        grad = jax.grad(f)(ops.convert_to_tensor(x))
    else:
        raise NotImplementedError(f"Grad-CAM needs gradients; backend {backend!r} is not supported")
    return ops.convert_to_numpy(grad)


def heatmap(model: keras.Model, image: np.ndarray, layer: str | None = None) -> np.ndarray:
    """Grad-CAM of the tumour score for one model input (size, size, 1): float32 (size, size) in 0..1.

    `layer` is the feature-map layer (default: last_conv_layer). All zeros where the
    gradients vanish (no NaN).
    """
    features, score = _split(model, layer or last_conv_layer(model))
    x = np.asarray(image, np.float32)[None]
    fmap = ops.convert_to_numpy(features(x, training=False))
    grads = _gradient(score, fmap)
    weights = grads.mean(axis=(0, 1, 2))  # one weight per channel
    cam = np.maximum((fmap[0] * weights).sum(axis=-1), 0.0)
    top = cam.max()
    cam = cam / top if np.isfinite(top) and top > 0 else np.zeros_like(cam)
    height, width = x.shape[1:3]
    return cv2.resize(cam.astype(np.float32), (width, height), interpolation=cv2.INTER_LINEAR).clip(0, 1)


def overlay(grey: np.ndarray, heat: np.ndarray, alpha: float = 0.4) -> np.ndarray:
    """uint8 RGB (H, W, 3): the grey slice with the heat map (0..1, any size) in JET colours on top."""
    grey = np.asarray(grey)
    rgb = grey if grey.ndim == 3 else cv2.cvtColor(grey.astype(np.uint8), cv2.COLOR_GRAY2RGB)
    heat = cv2.resize(np.asarray(heat, np.float32), (rgb.shape[1], rgb.shape[0]), interpolation=cv2.INTER_LINEAR)
    colour = cv2.applyColorMap(np.uint8(255 * np.clip(heat, 0, 1)), cv2.COLORMAP_JET)
    colour = cv2.cvtColor(colour, cv2.COLOR_BGR2RGB)
    return cv2.addWeighted(rgb.astype(np.uint8), 1 - alpha, colour, alpha, 0)
