"""The segmentation models 08 can train, and how to load one: read by 07, 09, predict.py and the demo.

Why a module of its own: deployment must load an 08 model without importing the
training runner (lib.segment.run_unet_train) and everything it drags in. Two
families, each with one engine module offering load, predict, predict_proba and
WARMUP_EPOCHS:

- `unet`, `deeplabv3plus`: Keras networks trained from scratch (lib.segment.unet), saved as model.keras;
- `litemedsam`: the pretrained LiteMedSAM fine-tuned (lib.segment.medsam_tuning, PyTorch), saved as model.pt.
"""

from __future__ import annotations

from types import ModuleType

TUNED = "litemedsam"  # the fine-tuned LiteMedSAM (lib.segment.medsam_tuning, PyTorch)
ARCHITECTURES = ("unet", "deeplabv3plus", TUNED)  # the first two: Keras, from scratch (lib.segment.unet)


def model_file(architecture: str) -> str:
    """The file 08 saves its model in: model.pt for the fine-tuned LiteMedSAM (PyTorch), else model.keras."""
    return "model.pt" if architecture == TUNED else "model.keras"


def engine(architecture: str) -> ModuleType:
    """The module that loads and runs a model of `architecture`: lib.segment.medsam_tuning or lib.segment.unet.

    Imported on first use, so that Keras is not loaded for a PyTorch model (lib.common.frameworks
    keeps the order right when both are)."""
    if architecture == TUNED:
        from lib.segment import medsam_tuning

        return medsam_tuning
    from lib.segment import unet

    return unet
