"""The interface every promptable segmenter (SAM family) implements: box or points in, masks and scores out.

Why a module of its own: the engines (lib.segment.segmenters' LiteMedSAM,
lib.segment.sam_keras_hub, lib.segment.sam_transformers) subclass `Segmenter`,
and lib.segment.segmenters picks one by name; with the base class here, neither
side imports the other's module, so there is no import cycle.

SAM's image encoder costs ~100x its prompt decoder, so a segmenter keeps the
embedding of the last image it saw: several prompts on one slice encode it once.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import Any

import numpy as np

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
