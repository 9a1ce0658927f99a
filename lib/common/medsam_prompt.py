"""LiteMedSAM's prompt encoder and mask decoder without PyTorch: a box and points -> a mask, through OpenVINO.

Why: the demo lets a user draw a box or click points, and refines the
U-Net's mask with SAM. With the encoder already run by OpenVINO
(lib.common.medsam_encoder), the decoder was the last reason the demo and a
Hugging Face Space loaded PyTorch (about 500 MB resident; a CPU-only wheel
that only PyTorch's own index serves). Its IR takes any prompt: SAM's own
ONNX export writes a box as two corner points labelled 2 and 3, and a
prompt without a box ends with one padding point labelled -1, so one
network with a variable number of points reproduces lib.common.medsam's
route token for token (the same masks: tests/test_medsam_prompt.py).
A child process with PyTorch converts it once where no bundle carries it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import cv2
import numpy as np

from lib.common import medsam_encoder, openvino_runtime

DECODER_KEY = f"litemedsam-decoder-{medsam_encoder.WEIGHTS_SHA256[:12]}"  # the IR's name in the cache
PAD, BOX_START, BOX_END = -1, 2, 3  # SAM's labels beyond 0 (background) and 1 (object)
INPUT_SHAPES = ((1, medsam_encoder.EMBED_CHANNELS, medsam_encoder.EMBED_SIZE, medsam_encoder.EMBED_SIZE),
                (1, -1, 2), (1, -1))  # maps, point coordinates (256 frame), labels


def box_to_frame(box_xyxy: Sequence[float], original_shape: Sequence[int]) -> np.ndarray:
    """A box in original pixels -> the 256 frame, scaled and truncated as upstream."""
    scale = medsam_encoder.IMAGE_SIZE / max(int(original_shape[0]), int(original_shape[1]))
    return np.array([int(v * scale) for v in box_xyxy], dtype=np.float32)


def prompt_points(original_shape: Sequence[int], box: Sequence[float] | None = None,
                  points: np.ndarray | Sequence[Sequence[float]] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(coords (1, N, 2), labels (1, N)) float32 in the 256 frame, in the order SAM's prompt encoder makes its
    tokens: the points (x, y, label 1 tumour / 0 background, original pixels), a padding point when there is
    no box, then the box's corners."""
    if box is None and (points is None or len(points) == 0):
        raise ValueError("give a box, points, or both")
    rows = np.zeros((0, 3), np.float32)
    if points is not None and len(points):
        rows = np.asarray(points, dtype=np.float32).reshape(-1, 3).copy()
        rows[:, :2] *= medsam_encoder.IMAGE_SIZE / max(int(original_shape[0]), int(original_shape[1]))
    if box is None:
        rows = np.vstack([rows, [0.0, 0.0, PAD]])
    else:
        x0, y0, x1, y1 = box_to_frame(box, original_shape)
        rows = np.vstack([rows, [x0, y0, BOX_START], [x1, y1, BOX_END]])
    rows = rows.astype(np.float32)
    return rows[None, :, :2], rows[None, :, 2]


def ensure_ir() -> Path:
    """The decoder's IR, converted first by a child process with PyTorch when this machine has none."""
    return medsam_encoder.convert_in_child("export_decoder()", openvino_runtime.ir_path(DECODER_KEY), "mask decoder")


_COMPILED: dict[Path, Callable[..., list[np.ndarray]]] = {}


def decoder(ir: Path | None = None) -> Callable[..., list[np.ndarray]]:
    """The compiled decoder: (maps, coords, labels) -> [mask logits (1, 1, 256, 256), predicted IoU (1, 1)].

    float32: it costs a few milliseconds, and bfloat16 would move the mask's border. `ir`: the IR a bundle
    carries (lib.deploy.bundle); without it, openvino_runtime's cache (converted first where missing)."""
    path = Path(ir) if ir is not None and Path(ir).is_file() else ensure_ir()
    if path not in _COMPILED:
        _COMPILED[path] = openvino_runtime.compile_ir(path, INPUT_SHAPES, False, medsam_encoder.NUM_THREADS,
                                                      all_outputs=True)
    return _COMPILED[path]


def decode(maps: np.ndarray, original_shape: Sequence[int], box: Sequence[float] | None = None,
           points: np.ndarray | Sequence[Sequence[float]] | None = None,
           ir: Path | None = None) -> tuple[np.ndarray, float]:
    """lib.common.medsam.predict_prompt without PyTorch: (bool mask of original_shape[:2], predicted IoU) for
    a box and/or points on one slice's encoder maps (256, 64, 64)."""
    coords, labels = prompt_points(original_shape, box, points)
    logits, iou = decoder(ir)(np.asarray(maps, np.float32).reshape(INPUT_SHAPES[0]), coords, labels)
    height, width = int(original_shape[0]), int(original_shape[1])
    new_h, new_w = medsam_encoder.resized_shape((height, width))
    resized = cv2.resize(logits[0, 0, :new_h, :new_w], (width, height), interpolation=cv2.INTER_LINEAR)
    return resized > 0, float(iou.reshape(-1)[0])  # sigmoid > 0.5, as upstream
