"""SAM through keras_hub (`SAMImageSegmenter` presets): the Keras-native engine of lib.segment.segmenters.

Why this engine: on a Kaggle kernel the keras-hub SAM presets are attached
like data sets (no internet needed), and the code runs on any Keras 3 backend
(TensorFlow, JAX, PyTorch): only `keras.ops` and numpy here, no tf.* calls.

Why not `SAMImageSegmenter.predict`: it runs the ViT image encoder on every
call, and the encoder costs ~100x the prompt decoder. We run the encoder once
per image (`encode`) and then only the prompt encoder and mask decoder per
prompt (`decode`), the way the original SAM predictor does.

Preprocessing follows the original SAM (and Hugging Face's SamProcessor),
which keras-hub's own preprocessor does not fully do: its image converter
resizes to a square with `crop_to_aspect_ratio=True`, which would cut off
the sides of a non-square slice and shift every prompt. So we

1. resize the longest side to the model's input size (1024 for the SA-1B
   presets; aspect ratio kept, bilinear with antialiasing like PIL);
2. rescale with the preset's own image converter, its resizing turned off
   (the SA-1B presets scale to [0, 1]; ViTDetBackbone subtracts the ImageNet
   mean and divides by the std inside the model);
3. pad bottom and right to the square input with the ImageNet mean, which the
   model's normalisation turns into the zeros the original SAM pads with.

Prompts are scaled into that frame; the 4x-upsampled low-resolution mask
logits (256x256 for the presets) are resized to the padded square, cropped to
the resized image, resized to the original size and thresholded at 0.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import numpy as np

from lib.segment.sam_base import Box, Points, Segmenter, SegmenterUnavailable, to_rgb

DEFAULT_PRESET = "sam_base_sa1b"
IMAGENET_MEAN = (0.485, 0.456, 0.406)  # ViTDetBackbone normalises with this inside the model
MASK_THRESHOLD = 0.0  # SAM's logits threshold
NOT_A_POINT = -1.0  # SAM's label for the padding point added when there is no box


@dataclass(frozen=True)
class Embedding:
    """One image's encoder output and where the image sits in the model's square frame."""

    features: np.ndarray  # (1, e, e, C) image embeddings
    resized: tuple[int, int]  # (h, w) of the image inside the padded square


class KerasHubSegmenter(Segmenter):
    """keras_hub SAM: a preset by name or path, or a ready `SAMBackbone` (tests build a tiny random one)."""

    name = "keras-hub"

    def __init__(self, preset: str | None = None, backbone: Any = None, multimask: bool = True) -> None:
        """`multimask`: SAM's three alternative masks (True) or its single-mask output (False)."""
        super().__init__()
        import keras_hub

        if backbone is None:
            self.model = _load_preset(preset or DEFAULT_PRESET)
        else:
            self.model = keras_hub.models.SAMImageSegmenter(backbone=backbone, preprocessor=None)
        self.backbone = self.model.backbone
        self.multimask = multimask
        self.size = _input_size(self.backbone)
        self.rescale = _rescaler(self.model)

    def encode(self, image: np.ndarray) -> Embedding:
        pixels, resized = preprocess(image, self.size, self.rescale)
        features = self.backbone.image_encoder.predict_on_batch(pixels)
        return Embedding(np.asarray(features), resized)

    def decode(self, embedding: Embedding, shape: tuple[int, int], box: Box | None,
               points: Points | None) -> tuple[np.ndarray, np.ndarray]:
        prompts = prompt_arrays(box, points, shape, embedding.resized)
        encoded = self.backbone.prompt_encoder(**prompts)  # sparse, dense and positional embeddings
        out = self.backbone.mask_decoder(image_embeddings=embedding.features, **encoded)
        logits, scores = _to_numpy(out["masks"])[0], _to_numpy(out["iou_pred"])[0]
        keep = slice(1, None) if self.multimask and len(scores) > 1 else slice(0, 1)
        masks = upsample_logits(logits[keep], self.size, embedding.resized, shape) > MASK_THRESHOLD
        return masks, scores[keep].astype(np.float32)


def preprocess(image: np.ndarray, size: int, rescale: Any) -> tuple[np.ndarray, tuple[int, int]]:
    """(1, size, size, 3) float32 model input and the (h, w) the image was resized to."""
    from keras import ops

    rgb = to_rgb(image).astype(np.float32)  # the 0-255 scale, as float
    resized = resized_shape(rgb.shape[:2], size)
    x = ops.image.resize(rgb[None], resized, interpolation="bilinear", antialias=True,
                         data_format="channels_last")
    x = _to_numpy(rescale(x)).astype(np.float32)
    mean = np.asarray(IMAGENET_MEAN, dtype=np.float32)
    padded = np.broadcast_to(mean, (1, size, size, 3)).copy()
    padded[:, :resized[0], :resized[1]] = x
    return padded, resized


def resized_shape(shape: tuple[int, int], size: int) -> tuple[int, int]:
    """(h, w) with the longest side `size`, rounded half up as SAM's ResizeLongestSide does."""
    h, w = shape
    scale = size / max(h, w)
    return int(h * scale + 0.5), int(w * scale + 0.5)


def prompt_arrays(box: Box | None, points: Points | None, shape: tuple[int, int],
                  resized: tuple[int, int]) -> dict[str, np.ndarray]:
    """Prompt-encoder inputs (batch 1) with coordinates scaled from the image to the model frame.

    Without a box SAM appends a padding point labelled -1 (the prompt
    encoder was trained that way); keras-hub leaves that to the caller.
    """
    sx, sy = resized[1] / shape[1], resized[0] / shape[0]
    out: dict[str, np.ndarray] = {}
    coords = np.zeros((0, 2), np.float32)
    labels = np.zeros((0,), np.float32)
    if points is not None and len(points) > 0:
        rows = np.asarray(points, dtype=np.float32).reshape(-1, 3)
        coords, labels = rows[:, :2] * (sx, sy), rows[:, 2]
    if box is None:
        coords = np.concatenate([coords, np.zeros((1, 2), np.float32)])
        labels = np.concatenate([labels, [NOT_A_POINT]]).astype(np.float32)
    else:
        corners = np.asarray(box, dtype=np.float32).reshape(2, 2) * (sx, sy)
        out["boxes"] = corners[None, None].astype(np.float32)
    out["points"] = coords[None].astype(np.float32)
    out["labels"] = labels[None].astype(np.float32)
    return out


def upsample_logits(logits: np.ndarray, size: int, resized: tuple[int, int],
                    shape: tuple[int, int]) -> np.ndarray:
    """(M, H, W) logits at the image's size from (M, m, m) low-resolution logits of the padded square."""
    from keras import ops

    x = np.transpose(logits.astype(np.float32), (1, 2, 0))[None]  # (1, m, m, M)
    x = ops.image.resize(x, (size, size), interpolation="bilinear", data_format="channels_last")
    x = x[:, :resized[0], :resized[1], :]
    x = ops.image.resize(x, shape, interpolation="bilinear", data_format="channels_last")
    return np.transpose(_to_numpy(x)[0], (2, 0, 1))


def _input_size(backbone: Any) -> int:
    """Side of the square image the encoder takes (SAM's `img_size`)."""
    h, w = backbone.image_encoder.image_shape[:2]
    if h != w or h is None:
        raise ValueError(f"SAM's image encoder needs a fixed square input, got {h} x {w}")
    return int(h)


def _rescaler(model: Any) -> Any:
    """The preset's image converter with its (cropping) resize turned off; 1/255 when there is none."""
    import keras_hub

    converter = getattr(getattr(model, "preprocessor", None), "image_converter", None)
    if converter is None:
        return keras_hub.layers.SAMImageConverter(scale=1.0 / 255.0)
    config = converter.get_config()
    config["image_size"] = None
    return type(converter).from_config(config)


def _to_numpy(x: Any) -> np.ndarray:
    from keras import ops

    return np.asarray(ops.convert_to_numpy(x))


def _load_preset(preset: str) -> Any:
    """`SAMImageSegmenter.from_preset`, any failure turned into one line saying what to do.

    Built-in presets are versioned Kaggle handles: kagglehub serves them from
    its cache (or a Kaggle kernel's attached models) without the network, and
    otherwise fails on its first request (5 s connect timeout), so this is fast
    offline.
    """
    import keras_hub

    try:
        return keras_hub.models.SAMImageSegmenter.from_preset(preset)
    except Exception as err:  # noqa: BLE001 - kagglehub, requests, OSError, ValueError ...: all mean "not here"
        raise SegmenterUnavailable(_unavailable_message(preset, err)) from None


def _unavailable_message(preset: str, err: BaseException) -> str:
    reason = _first_line(err)
    if "://" not in preset and os.path.sep in preset and not os.path.exists(preset):
        reason = "no such folder"
    if "://" in preset:
        what = "handle"
    elif os.path.sep in preset or os.path.exists(preset):
        what = "local folder"
    else:
        what = "preset"
    name = preset if what == "preset" and preset in _builtin_presets() else DEFAULT_PRESET
    return (f"keras-hub SAM {what} {preset!r} could not be loaded ({reason}); on a machine with internet "
            f"(Kaggle credentials KAGGLE_USERNAME/KAGGLE_KEY if asked) run: python -c \"import keras_hub; "
            f"keras_hub.models.SAMImageSegmenter.from_preset('{name}').save_to_preset('sam_preset')\" "
            f"and pass --sam-preset PATH/TO/sam_preset (on Kaggle: attach the model keras/sam to the kernel)")


def _builtin_presets() -> set[str]:
    import keras_hub

    return set(keras_hub.models.SAMImageSegmenter.presets)


def _first_line(err: BaseException) -> str:
    """The error's first line, shortened: the stage prints one line."""
    text = str(err).strip().splitlines()
    line = text[0] if text else ""
    line = f"{type(err).__name__}: {line}" if line else type(err).__name__
    return line if len(line) <= 160 else line[:157] + "..."
