"""SAM through Hugging Face transformers (`SamModel` checkpoints): an engine of lib.segment.segmenters.

Why this engine: many SAM variants exist only as transformers checkpoints
(`facebook/sam-vit-base/large/huge`, MedSAM `flaviagiammarino/medsam-vit-base`,
SlimSAM ...), and the SamProcessor bundled with each checkpoint carries its
own preprocessing, so we reuse it rather than reimplement it: longest side
resized to 1024, rescaled and normalised with the checkpoint's mean and std,
padded bottom-right; masks cropped and upsampled back by
`post_process_masks`.

The image encoder runs once per image (`get_image_embeddings`); each prompt
then runs only the prompt encoder and mask decoder (`image_embeddings=`).
Prompt coordinates are scaled into the resized frame exactly as
SamProcessor does (by reshaped size / original size).

Loading is offline-first: the local folder or the Hugging Face cache is
tried with `local_files_only=True` (no network); only when that fails and
the Hub answers within a few seconds do we download. So an offline machine
gets SegmenterUnavailable in seconds instead of waiting on retries.
"""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import numpy as np
import torch

from lib.segment.sam_base import Box, Points, Segmenter, SegmenterUnavailable, to_rgb

DEFAULT_CHECKPOINT = "facebook/sam-vit-base"
PROBE_TIMEOUT_S = 3.0  # how long the Hub may take to accept a connection before we call it offline
TRUE_VALUES = {"1", "true", "yes", "on"}


@dataclass(frozen=True)
class Embedding:
    """One image's encoder output and the sizes SamProcessor's post-processing needs."""

    features: torch.Tensor  # (1, C, e, e) image embeddings
    original: tuple[int, int]  # (h, w) of the image
    resized: tuple[int, int]  # (h, w) inside the padded square


class TransformersSegmenter(Segmenter):
    """A transformers SamModel + SamProcessor, from a checkpoint or given ready (tests pass tiny random ones)."""

    name = "transformers"

    def __init__(self, checkpoint: str | None = None, model: Any = None, processor: Any = None,
                 multimask: bool = True) -> None:
        """`multimask`: SAM's three alternative masks (True) or its single-mask output (False)."""
        super().__init__()
        if model is None:
            model, loaded_processor = load_checkpoint(checkpoint or DEFAULT_CHECKPOINT)
            processor = loaded_processor if processor is None else processor
        elif processor is None:
            raise ValueError("a ready SamModel needs its SamProcessor (the preprocessing it was trained with)")
        self.model = model.eval()
        self.processor = processor
        self.multimask = multimask

    def encode(self, image: np.ndarray) -> Embedding:
        inputs = self.processor(images=to_rgb(image), return_tensors="pt")
        pixels = inputs["pixel_values"].to(self.model.device, self.model.dtype)
        with torch.inference_mode():
            features = self.model.get_image_embeddings(pixels)
        return Embedding(features, _size(inputs["original_sizes"][0]), _size(inputs["reshaped_input_sizes"][0]))

    def decode(self, embedding: Embedding, shape: tuple[int, int], box: Box | None,
               points: Points | None) -> tuple[np.ndarray, np.ndarray]:
        prompts = prompt_tensors(box, points, embedding.original, embedding.resized, self.model.device)
        with torch.inference_mode():
            out = self.model(image_embeddings=embedding.features, multimask_output=self.multimask, **prompts)
        masks = self.processor.post_process_masks(
            out.pred_masks.float().cpu(), [list(embedding.original)], [list(embedding.resized)])[0]
        return masks[0].numpy().astype(bool), out.iou_scores[0, 0].float().cpu().numpy()


def prompt_tensors(box: Box | None, points: Points | None, original: tuple[int, int],
                   resized: tuple[int, int], device: Any) -> dict[str, torch.Tensor]:
    """SamModel prompt inputs (1 image, 1 prompt) scaled to the resized frame like SamProcessor does.

    Without a box SamModel itself appends SAM's padding point, so unlike
    keras-hub nothing is padded here.
    """
    scale = np.array([resized[1] / original[1], resized[0] / original[0]], dtype=np.float32)
    out: dict[str, torch.Tensor] = {}
    if points is not None and len(points) > 0:
        rows = np.asarray(points, dtype=np.float32).reshape(-1, 3)
        out["input_points"] = torch.from_numpy(rows[:, :2] * scale)[None, None].to(device)
        out["input_labels"] = torch.from_numpy(rows[:, 2].astype(np.int64))[None, None].to(device)
    if box is not None:
        corners = np.asarray(box, dtype=np.float32).reshape(2, 2) * scale
        out["input_boxes"] = torch.from_numpy(corners.reshape(4))[None, None].to(device)
    return out


def _size(value: Any) -> tuple[int, int]:
    h, w = (int(v) for v in value)
    return h, w


def load_checkpoint(checkpoint: str) -> tuple[Any, Any]:
    """(SamModel, SamProcessor) from a local folder, the HF cache, or the Hub when it answers.

    SegmenterUnavailable (one line) otherwise, within seconds offline.
    """
    try:
        return _from_pretrained(checkpoint, local_files_only=True)
    except Exception as err:  # noqa: BLE001 - OSError, HFValidationError, ...: not available locally
        local_error = err
    if _looks_local(checkpoint):
        raise SegmenterUnavailable(_message(checkpoint, "is not a folder with a saved SamModel and SamProcessor",
                                            local_error)) from None
    if _offline():
        raise SegmenterUnavailable(_message(checkpoint, "is not in the Hugging Face cache and HF_HUB_OFFLINE is set",
                                            local_error)) from None
    host = _hub_host()
    if not _reachable(host):
        raise SegmenterUnavailable(_message(checkpoint, f"is not in the Hugging Face cache and {host} is unreachable",
                                            local_error)) from None
    try:
        return _from_pretrained(checkpoint, local_files_only=False)
    except Exception as err:  # noqa: BLE001 - missing repo, gated model, network error ...
        raise SegmenterUnavailable(_message(checkpoint, "could not be downloaded", err)) from None


def _from_pretrained(checkpoint: str, local_files_only: bool) -> tuple[Any, Any]:
    from transformers import SamModel, SamProcessor

    model = SamModel.from_pretrained(checkpoint, local_files_only=local_files_only)
    processor = SamProcessor.from_pretrained(checkpoint, local_files_only=local_files_only)
    return model, processor


def _looks_local(checkpoint: str) -> bool:
    """A path rather than a Hub id ('org/name'): never worth asking the Hub about."""
    return (os.path.isabs(checkpoint) or checkpoint.startswith((".", "~")) or checkpoint.count("/") > 1
            or os.path.sep != "/" and os.path.sep in checkpoint or Path(checkpoint).exists())


def _offline() -> bool:
    return any(os.environ.get(var, "").strip().lower() in TRUE_VALUES
               for var in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"))


def _hub_host() -> str:
    return urlparse(os.environ.get("HF_ENDPOINT", "https://huggingface.co")).hostname or "huggingface.co"


def _reachable(host: str, port: int = 443) -> bool:
    """Whether a TCP connection opens within PROBE_TIMEOUT_S (through the HTTPS proxy when one is set)."""
    proxy = os.environ.get("HTTPS_PROXY") or os.environ.get("https_proxy")
    if proxy:
        parsed = urlparse(proxy if "://" in proxy else f"http://{proxy}")
        host, port = parsed.hostname or host, parsed.port or 80
    try:
        with socket.create_connection((host, port), timeout=PROBE_TIMEOUT_S):
            return True
    except OSError:
        return False


def _message(checkpoint: str, problem: str, err: BaseException) -> str:
    reason = "no such folder" if _looks_local(checkpoint) and not Path(checkpoint).exists() else _first_line(err)
    return (f"transformers SAM checkpoint {checkpoint!r} {problem} ({reason}); on a machine with internet run: "
            f"hf download {checkpoint if not _looks_local(checkpoint) else DEFAULT_CHECKPOINT} "
            f"--local-dir sam_checkpoint and pass --sam-preset PATH/TO/sam_checkpoint "
            f"(or point HF_HOME at a Hugging Face cache that has it)")


def _first_line(err: BaseException) -> str:
    """The error's first line, shortened: the stage prints one line."""
    text = str(err).strip().splitlines()
    line = text[0] if text else ""
    line = f"{type(err).__name__}: {line}" if line else type(err).__name__
    return line if len(line) <= 160 else line[:157] + "..."
