"""Random geometry applied identically to a slice and its mask, plus image-only intensity changes.

PairedAugment draws ONE random affine transform per slice (flip, rotation,
zoom, translation) and applies it with one bilinear interpolation (OpenCV) to
the image and its mask stacked as two channels, so the mask moves exactly
with the image; the mask is then re-binarised at 0.5. One composed warp
instead of a chain of Keras Random* layers: one interpolation blurs the mask
edge once, not four times. Brightness, contrast and noise change the image
only. NumPy and OpenCV only, so the Keras networks (lib.segment.unet) and the
fine-tuned LiteMedSAM (lib.segment.medsam_tuning, PyTorch) share it.
"""

from __future__ import annotations

import cv2
import numpy as np

FLIP = "horizontal"  # left-right mirror is anatomically plausible; "both" adds up-down
ROTATION_DEG = 15.0  # +- degrees
ZOOM = 0.1  # +- fraction of the side
TRANSLATION = 0.08  # +- fraction of the side
BRIGHTNESS = 0.1  # +- fraction of the grey range
CONTRAST = 0.2  # factor 1 +- this around the slice's mean
NOISE_SD = 0.015  # of the grey range (about 4 grey levels)


class PairedAugment:
    """Random geometry applied identically to image and mask, plus image-only intensity changes.

    Call it on a batch: `augment(images, masks)` with float32 (B, H, W, C) images in 0..1 and
    (B, H, W, 1) 0/1 masks gives new arrays (the inputs are not modified); with training=False it
    returns the inputs untouched. Seeded by its own numpy generator, so a run is reproducible
    whatever else draws random numbers.
    """

    def __init__(self, seed: int = 0, flip: str | None = FLIP, rotation_deg: float = ROTATION_DEG,
                 zoom: float = ZOOM, translation: float = TRANSLATION, brightness: float = BRIGHTNESS,
                 contrast: float = CONTRAST, noise_sd: float = NOISE_SD) -> None:
        if flip not in (None, "horizontal", "both"):
            raise ValueError(f"flip {flip!r}: None, 'horizontal' or 'both'")
        self.rng = np.random.default_rng(seed)
        self.flip, self.rotation_deg, self.zoom, self.translation = flip, rotation_deg, zoom, translation
        self.brightness, self.contrast, self.noise_sd = brightness, contrast, noise_sd

    def __call__(self, images: np.ndarray, masks: np.ndarray,
                 training: bool = True) -> tuple[np.ndarray, np.ndarray]:
        if not training or len(images) == 0:
            return images, masks
        images, masks = np.asarray(images, np.float32), np.asarray(masks, np.float32)
        images, masks = self.geometry(images, masks)
        return self.intensity(images), masks

    def transforms(self, n: int, height: int, width: int) -> np.ndarray:
        """(n, 2, 3) output-to-input affine matrices (x, y), about the slice's centre.

        Forward (input -> output): flip, rotate, zoom about the centre, then translate.
        """
        centre = np.array([(width - 1) / 2, (height - 1) / 2])
        out = np.zeros((n, 2, 3))
        for i in range(n):
            inverse = np.linalg.inv(self._draw_forward())
            shift = self.rng.uniform(-self.translation, self.translation, 2) * (width, height)
            out[i, :, :2] = inverse
            out[i, :, 2] = centre - inverse @ (centre + shift)
        return out

    def _draw_forward(self) -> np.ndarray:
        """The random 2x2 linear part (x, y) of one slice's transform."""
        flip_x = self.flip is not None and self.rng.random() < 0.5
        flip_y = self.flip == "both" and self.rng.random() < 0.5
        angle = np.deg2rad(self.rng.uniform(-self.rotation_deg, self.rotation_deg))
        scale = self.rng.uniform(1 - self.zoom, 1 + self.zoom)
        rotation = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
        return scale * rotation @ np.diag([-1.0 if flip_x else 1.0, -1.0 if flip_y else 1.0])

    def geometry(self, images: np.ndarray, masks: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """One transform per slice on the stacked [image, mask] channels, one bilinear interpolation;
        outside the slice is 0 (background, no tumour). Masks re-binarised at 0.5.

        cv2.warpAffine, not keras.ops.image.affine_transform: the same pixels on every backend, and
        Keras' torch version (map_coordinates per image) takes 1.5 s per batch of 16 at 128 px on a
        2-core CPU, against 0.03 s with TensorFlow and 0.015 s here.
        """
        height, width, channels = images.shape[1:]
        transforms = self.transforms(len(images), height, width)
        if np.allclose(transforms, [[1, 0, 0], [0, 1, 0]], atol=1e-9):
            return images.copy(), masks.copy()
        stacked = np.concatenate([images, masks], axis=-1)
        warped = np.stack([cv2.warpAffine(s, t, (width, height), flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
                                          borderMode=cv2.BORDER_CONSTANT, borderValue=0)
                           for s, t in zip(stacked, transforms)]).reshape(stacked.shape)
        return warped[..., :channels], (warped[..., channels:] > 0.5).astype(np.float32)

    def intensity(self, images: np.ndarray) -> np.ndarray:
        """Contrast about each slice's mean, brightness shift, Gaussian noise; clipped to 0..1."""
        n = len(images)
        mean = images.mean(axis=(1, 2, 3), keepdims=True)
        factor = self.rng.uniform(1 - self.contrast, 1 + self.contrast, (n, 1, 1, 1))
        shift = self.rng.uniform(-self.brightness, self.brightness, (n, 1, 1, 1))
        out = (images - mean) * factor + mean + shift
        if self.noise_sd > 0:
            out = out + self.rng.normal(0, self.noise_sd, images.shape)
        return np.clip(out, 0, 1).astype(np.float32)
