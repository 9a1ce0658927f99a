"""LiteMedSAM fine-tuned to outline tumours by itself: stage 08's `--architecture litemedsam`.

Why: the Keras networks of lib.segment.unet start from random weights, and a few
hundred slices are not enough for them. LiteMedSAM's encoder has seen about
1.5 million medical image-mask pairs.

The prompt is the box of the whole head (frame pixels above HEAD_LEVEL), never the tumour's,
so the model gets no hint of where the tumour is. It finds the tumour itself, and the box
tells it where the anatomy is, as in its pretraining. AdamW and a cosine learning rate on
Dice + BCE; early stopping on validation Dice, best weights kept. It sees slices exactly as
lib.common.medsam prepares them (longest side 256, min-max, padded), with PairedAugment's geometry
(flip, rotation, zoom, shift) but NOT its brightness, contrast and noise: those lower the test
Dice markedly, because the encoder was pretrained on min-max scaled slices and a brightness shift
lifts the background it reads as 0.

What learns (TUNE): by default only the encoder's last stage, the neck, the prompt encoder and
the mask decoder (`tune="top"`, frozen_parts); `tune="all"` trains the whole model. "top" is the
default because on figshare it scores as well as the whole model while a step costs about a
third of the whole model's on a CPU. The GPU runs behind these choices trained in bfloat16;
on a CPU with AVX512-BF16, bfloat16 (precision "auto") cuts a step more than twice and scores
as float32 does. Gliomas are where every variant falls short. Tried and not kept: a random
gamma after the geometry, frozen encoder BatchNorm statistics, the whole encoder frozen.
Measured: docs/results.md ("Segmentation: LiteMedSAM fine-tuned").

PyTorch, not Keras: the LiteMedSAM encoder is a PyTorch model. CUDA when present, else the
CPU: fine for tests and a tiny run, too slow for real training (use a Kaggle kernel or a GPU).
The fine-tuned weights are saved as model.pt (a state dict, loaded with weights_only=True).
"""

from __future__ import annotations

import copy
import hashlib
import math
import time
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from lib.common import medsam, openvino_runtime
from lib.common.fingerprint import fingerprint, loss_weights
from lib.common.io import to_grey
from lib.common.torch_checkpoint import TrainingCheckpoint
from lib.regions.candidates import mask_box
from lib.segment.paired_augment import PairedAugment

# --- parameters ------------------------------------------------------------------

MODEL_FILE = "model.pt"
FRAME = medsam.IMAGE_SIZE  # 256: the slice as the encoder sees it
HEAD_LEVEL = 0.02  # frame pixels above this (after min-max) count as head for the prompt box
LEARNING_RATE = 1e-4  # MedSAM's fine-tuning rate; 1e-3 destroys the pretrained features
WEIGHT_DECAY = 0.01
MIN_LR_FRACTION = 0.02  # the cosine schedule ends at this fraction of LEARNING_RATE
BATCH_SIZE = 8  # batch 16 took up to 23 GB on an H100 (bf16); 8 is meant for 16 GB Kaggle GPUs (not measured there)
PREDICT_BATCH = 8
WARMUP_EPOCHS = 3  # early stopping watches from here, as lib.segment.unet.WARMUP_EPOCHS
EPOCHS, PATIENCE = 40, 8  # as lib.segment.unet
TUNE = "top"  # what learns by default (frozen_parts): as good as "all" on the GPU, a third of the CPU time
# mean of the slice's and its mirror's maps: +0.03 mean Dice on figshare (0.728 -> 0.761, earlier recipe)
# Not rotations: adding the maps of the slice turned by 90 and 270 degrees lowered validation Dice
# (0.835 -> 0.807 and 0.802 -> 0.779 for two --tune top models on the 2-core CPU; test 0.776 -> 0.755, 0.752 -> 0.739)
FLIP_AVERAGE = True
PRECISIONS = medsam.PRECISIONS  # see uses_bf16
PRECISION = "auto"


# --- slices in the encoder's frame -----------------------------------------------


def frame_images(images: Sequence[np.ndarray]) -> np.ndarray:
    """(N, 256, 256) float32 in 0..1: each slice as lib.common.medsam.preprocess gives it (one grey channel)."""
    return np.stack([medsam.preprocess(to_grey(np.asarray(image)))[0].numpy() for image in images]).astype(np.float32)


def frame_masks(masks: Sequence[np.ndarray]) -> np.ndarray:
    """(N, 256, 256) float32 0/1: each mask resized (nearest) and padded like its slice."""
    out = np.zeros((len(masks), FRAME, FRAME), np.float32)
    for i, mask in enumerate(masks):
        height, width = medsam.resized_shape(np.shape(mask))
        out[i, :height, :width] = cv2.resize(np.asarray(mask, np.uint8), (width, height),
                                             interpolation=cv2.INTER_NEAREST) > 0
    return out


def head_boxes(frames: np.ndarray) -> np.ndarray:
    """(N, 4) float32 prompt boxes (x0, y0, x1, y1) in the frame: the head's extent, the whole frame if blank."""
    boxes = [mask_box(frame > HEAD_LEVEL) or (0, 0, FRAME, FRAME) for frame in frames]
    return np.asarray(boxes, np.float32)


# --- model -----------------------------------------------------------------------


class HeadPromptedSAM(torch.nn.Module):
    """LiteMedSAM with the head box as its only prompt: frames (B, 1, 256, 256) -> logits (B, 1, 256, 256)."""

    # Set by `load`: the OpenVINO route for prediction on a CPU. It holds the weights of the file loaded,
    # so a loaded model that is trained again must set it to None.
    compiled: Callable[..., np.ndarray] | None = None

    def __init__(self, net: medsam.LiteMedSAM, bf16: bool = False) -> None:
        super().__init__()
        self.net, self.bf16 = net, bf16  # bf16: run under bfloat16 autocast (see precision)

    def forward(self, frames: torch.Tensor, boxes: torch.Tensor) -> torch.Tensor:
        embedding = self.net.image_encoder(frames.expand(-1, 3, -1, -1))
        sparse, dense = self.net.prompt_encoder(points=None, boxes=boxes[:, None, :], masks=None)
        logits, _ = self.net.mask_decoder(image_embeddings=embedding, image_pe=self.net.prompt_encoder.get_dense_pe(),
                                          sparse_prompt_embeddings=sparse, dense_prompt_embeddings=dense,
                                          multimask_output=False)
        return logits


def uses_bf16(precision: str = PRECISION, device: str | None = None) -> bool:
    """Whether a model of this precision runs under bfloat16 autocast on `device` (default: the default device).

    Why "auto" takes bfloat16 wherever it is native: the GPU runs in docs/results.md (segmentation)
    trained in it, and on a CPU with AVX512-BF16 a training step takes less than half the float32
    time (bench/bench_medsam_tuning.py). Elsewhere (Kaggle's T4 and P100, older CPUs) it would be
    emulated and slower, so "auto" keeps float32 there.
    """
    return medsam.uses_bf16(precision, device)


def build(precision: str = PRECISION) -> HeadPromptedSAM:
    """A fresh model from LiteMedSAM's packaged weights (ModelUnavailable when they are missing)."""
    return HeadPromptedSAM(medsam.network(), uses_bf16(precision)).to(medsam.default_device())


def load(path: Path | str, precision: str = PRECISION) -> HeadPromptedSAM:
    """A model saved by `train` (model.pt, or its folder), in eval mode."""
    path = Path(path)
    path = path / MODEL_FILE if path.is_dir() else path
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no fine-tuned LiteMedSAM here; train one with 08 --architecture litemedsam")
    model = build(precision)
    model.load_state_dict(torch.load(path, map_location=medsam.default_device(), weights_only=True))
    model.eval()
    model.compiled = _openvino_logits(model, path, precision)
    return model


def _openvino_logits(model: HeadPromptedSAM, path: Path, precision: str) -> Callable[..., np.ndarray] | None:
    """The saved model compiled by OpenVINO for prediction on a CPU (lib.common.medsam.RUNTIME), else None.

    Why: a bundle's fine-tuned LiteMedSAM predicts one slice at a time in the demo and predict.py, where
    PyTorch's encoder dominates. Keyed by the file's hash, so retrained weights are converted anew.
    A failed conversion warns and leaves prediction to PyTorch.
    """
    if not medsam.uses_openvino():
        return None
    family = "litemedsam-tuned-"
    key = family + hashlib.sha256(path.read_bytes()).hexdigest()[:12]
    examples = (torch.zeros(1, 1, FRAME, FRAME), torch.tensor([[0.0, 0.0, FRAME, FRAME]]))
    try:
        return openvino_runtime.compiled(key, lambda: copy.deepcopy(model).cpu(), examples,
                                         uses_bf16(precision, "cpu"), medsam.NUM_THREADS, family=family)
    except Exception as err:  # noqa: BLE001 - PyTorch predicts the same masks, only slower
        warnings.warn(f"OpenVINO could not convert the fine-tuned LiteMedSAM {path} ({err}); predicting in PyTorch")
        return None


# --- training --------------------------------------------------------------------


def dice_bce(logits: torch.Tensor, target: torch.Tensor, weights: torch.Tensor | None = None) -> torch.Tensor:
    """Soft Dice per slice (smoothed by 1, as lib.segment.unet.dice_bce_loss) plus binary cross-entropy,
    each slice's loss times its weight (08 --pseudo-weight / --truth-weight), averaged over the batch."""
    prob = torch.sigmoid(logits)
    inter = (prob * target).sum((1, 2, 3))
    total = prob.sum((1, 2, 3)) + target.sum((1, 2, 3))
    bce = F.binary_cross_entropy_with_logits(logits, target, reduction="none").mean((1, 2, 3))
    per_slice = bce + 1 - (2 * inter + 1) / (total + 1)
    return (per_slice * weights).mean() if weights is not None else per_slice.mean()


def hard_dice(prob: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Dice per slice at 0.5; both masks empty = 1 (the BraTS convention of lib.segment.mask_metrics)."""
    pred = (prob > 0.5).float()
    inter = (pred * target).sum((1, 2, 3))
    total = pred.sum((1, 2, 3)) + target.sum((1, 2, 3))
    return torch.where(total > 0, 2 * inter / total.clamp(min=1), torch.ones_like(total))


def _tensor(array: np.ndarray) -> torch.Tensor:
    return torch.as_tensor(np.asarray(array, np.float32)).reshape(-1, 1, FRAME, FRAME).to(medsam.default_device())


def _logits(model: HeadPromptedSAM, frames: np.ndarray, boxes: np.ndarray | None = None) -> torch.Tensor:
    """The model's logits for frames (N, 256, 256); boxes default to each frame's head box."""
    boxes = head_boxes(frames) if boxes is None else boxes
    if model.compiled is not None:  # a model from `load`, on a CPU
        frames, boxes = np.asarray(frames, np.float32).reshape(-1, 1, 1, FRAME, FRAME), np.asarray(boxes, np.float32)
        return torch.from_numpy(np.concatenate([model.compiled(f, b[None]) for f, b in zip(frames, boxes)]))
    with torch.autocast(medsam.default_device(), dtype=torch.bfloat16, enabled=model.bf16):
        return model(_tensor(frames), torch.as_tensor(boxes).to(medsam.default_device())).float()


@torch.no_grad()
def frame_proba(model: HeadPromptedSAM, frames: np.ndarray, flip: bool = FLIP_AVERAGE,
                batch_size: int = PREDICT_BATCH) -> np.ndarray:
    """P(tumour) (N, 256, 256) in the frame; with `flip`, averaged with the mirrored slice's map."""
    model.eval()
    out = []
    for start in range(0, len(frames), batch_size):
        batch = frames[start:start + batch_size]
        prob = torch.sigmoid(_logits(model, batch))
        if flip:
            prob = (prob + torch.sigmoid(_logits(model, batch[:, :, ::-1].copy())).flip(-1)) / 2
        out.append(prob[:, 0].cpu().numpy())
    return np.concatenate(out) if out else np.zeros((0, FRAME, FRAME), np.float32)


def _evaluate(model: HeadPromptedSAM, frames: np.ndarray, masks: np.ndarray) -> tuple[float, float]:
    """(loss, mean hard Dice) on validation frames, without flip averaging (as training sees them)."""
    prob = torch.as_tensor(frame_proba(model, frames, flip=False))[:, None]
    target = torch.as_tensor(masks)[:, None]
    loss = dice_bce(torch.logit(prob.clamp(1e-6, 1 - 1e-6)), target)
    return float(loss), float(hard_dice(prob, target).mean())


class Schedule:
    """Cosine learning rate from `base` down to MIN_LR_FRACTION of it, over the steps or the time budget.

    With a time budget the schedule follows the clock (whichever ends first), so a run the budget
    stops has annealed: on a lent GPU or Kaggle, `--epochs` is only an upper bound.
    """

    def __init__(self, base: float, steps: int, minutes: float | None) -> None:
        self.base, self.steps, self.seconds = base, max(1, steps), None if minutes is None else 60.0 * minutes
        self.step, self.start = 0, time.perf_counter()

    def next_rate(self) -> float:
        progress = self.step / self.steps
        if self.seconds is not None:
            progress = max(progress, (time.perf_counter() - self.start) / self.seconds)
        self.step += 1
        return self.base * (MIN_LR_FRACTION + (1 - MIN_LR_FRACTION) * 0.5 * (1 + math.cos(math.pi * min(progress, 1))))

    def out_of_time(self) -> bool:
        return self.seconds is not None and self.elapsed() > self.seconds

    def elapsed(self) -> float:
        return time.perf_counter() - self.start

    def resume(self, step: int, elapsed: float) -> None:
        """Continue a checkpointed schedule: its step, and the time it had used (the budget spans both runs)."""
        self.step, self.start = int(step), time.perf_counter() - float(elapsed)


def frozen_parts(model: HeadPromptedSAM, tune: str) -> list[torch.nn.Module]:
    """The encoder parts that keep their pretrained weights (no gradients, fixed BatchNorm statistics).

    "all": none, the whole model learns (the GPU recipe in docs/results.md). "top": all but the
    encoder's last TinyViT stage, so only that stage, the neck, the prompt encoder and the mask
    decoder learn.
    """
    encoder = model.net.image_encoder
    if tune == "all":
        return []
    if tune == "top":
        return [encoder.patch_embed, *encoder.layers[:-1]]
    raise ValueError(f"tune must be 'all' or 'top', not {tune!r}")


class _Run:
    """What train and refit share: framed slices, a fresh model with its frozen parts, AdamW and the schedule."""

    def __init__(self, images: Sequence[np.ndarray], masks: Sequence[np.ndarray], epochs: int, batch_size: int,
                 seed: int, learning_rate: float, minutes: float | None, tune: str, precision: str,
                 weights: Sequence[float] | None = None) -> None:
        torch.manual_seed(seed)
        self.x, self.y = frame_images(images)[..., None], frame_masks(masks)[..., None]
        self.weights = loss_weights(weights, len(self.x))
        self.model, self.batch_size = build(precision), batch_size
        self.frozen = frozen_parts(self.model, tune)
        for part in self.frozen:
            part.requires_grad_(False)
        learning = [weight for weight in self.model.parameters() if weight.requires_grad]
        self.optimizer = torch.optim.AdamW(learning, lr=learning_rate, weight_decay=WEIGHT_DECAY)
        self.schedule = Schedule(learning_rate, int(epochs) * math.ceil(len(self.x) / batch_size), minutes)
        self.augment, self.rng = PairedAugment(seed=seed + 1), np.random.default_rng(seed)
        self.options = {"epochs": int(epochs), "batch_size": batch_size, "seed": seed, "learning_rate": learning_rate,
                        "minutes": minutes, "tune": tune, "bf16": self.model.bf16}

    def checkpoint(self, folder: Path | None, fresh: bool, *validation: np.ndarray,
                   **options: object) -> TrainingCheckpoint:
        """This run's checkpoint in `folder`: its identity is the options and the slices (and validation slices)."""
        weighed = () if self.weights is None else (self.weights,)
        identity = {**self.options, **options, "slices": fingerprint(self.x, self.y, *weighed, *validation)}
        return TrainingCheckpoint(folder, identity, fresh)

    def state(self) -> dict[str, object]:
        """Everything the next epoch depends on: weights, optimizer moments, schedule, random generators."""
        return {"model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
                "step": self.schedule.step, "elapsed": self.schedule.elapsed(),
                "order_rng": self.rng.bit_generator.state, "augment_rng": self.augment.rng.bit_generator.state,
                "torch_rng": torch.get_rng_state()}

    def restore(self, state: dict) -> None:
        """Continue from `state` (see state): the resumed epochs draw what the uninterrupted run would have."""
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.schedule.resume(state["step"], state["elapsed"])
        self.rng.bit_generator.state = state["order_rng"]
        self.augment.rng.bit_generator.state = state["augment_rng"]
        torch.set_rng_state(state["torch_rng"])

    def epoch(self) -> tuple[float, float]:
        """One pass over the slices in random order: (mean loss, mean hard Dice)."""
        losses, dices = [], []
        self.model.train()
        for part in self.frozen:
            part.eval()  # fixed BatchNorm statistics too
        batches = np.array_split(self.rng.permutation(len(self.x)), math.ceil(len(self.x) / self.batch_size))
        for rows in tqdm(batches, desc="batches", unit="batch", leave=False, dynamic_ncols=True):  # minutes on a CPU
            for group in self.optimizer.param_groups:
                group["lr"] = self.schedule.next_rate()
            # geometry only, no brightness or contrast: see the module docstring
            frames, masks = self.augment.geometry(self.x[rows], self.y[rows])
            target = _tensor(masks[..., 0])
            logits = _logits(self.model, frames[..., 0])
            weights = None if self.weights is None else torch.as_tensor(self.weights[rows]).to(target.device)
            loss = dice_bce(logits, target, weights)
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            self.optimizer.step()
            losses.append(loss.item())
            dices.append(float(hard_dice(torch.sigmoid(logits.detach()), target).mean()))
        return float(np.mean(losses)), float(np.mean(dices))

    @property
    def learning_rate(self) -> float:
        return float(self.optimizer.param_groups[0]["lr"])


def train(train_images: Sequence[np.ndarray], train_masks: Sequence[np.ndarray],
          val_images: Sequence[np.ndarray], val_masks: Sequence[np.ndarray], epochs: int = EPOCHS,
          batch_size: int = BATCH_SIZE, patience: int = PATIENCE, out_dir: Path | None = None, seed: int = 0,
          *, learning_rate: float = LEARNING_RATE, minutes: float | None = None,
          warmup_epochs: int = WARMUP_EPOCHS, tune: str = TUNE, precision: str = PRECISION,
          fresh: bool = False, weights: Sequence[float] | None = None) -> tuple[HeadPromptedSAM, dict[str, list[float]]]:
    """Fine-tune LiteMedSAM; (the model with its best-validation-Dice weights, the curves per epoch).

    Same contract as lib.segment.unet.train: early stopping watches val_dice from `warmup_epochs` on,
    `minutes` caps the wall time, and with out_dir: out_dir/model.pt and out_dir/history.csv.
    `tune` ("all" or "top", see frozen_parts) says which parts learn; `precision` see uses_bf16;
    `weights` (one per training slice) weigh each slice's loss (dice_bce).
    With out_dir, out_dir/checkpoint.pt is written after every epoch (lib.common.torch_checkpoint): a
    rerun with the same options and slices resumes after the last finished epoch and draws what
    the uninterrupted run would have; once finished it returns the saved model at once. `fresh`
    ignores the checkpoint (08 --force).
    """
    if len(train_images) == 0 or len(val_images) == 0:
        raise ValueError("train needs at least one training and one validation slice")
    run = _Run(train_images, train_masks, epochs, batch_size, seed, learning_rate, minutes, tune, precision, weights)
    x_val, y_val = frame_images(val_images), frame_masks(val_masks)
    checkpoint = run.checkpoint(out_dir, fresh, x_val, y_val, patience=patience, warmup_epochs=warmup_epochs)
    saved = checkpoint.load()
    if _finished(saved, out_dir):
        return load(out_dir, precision), saved["history"]
    history: dict[str, list[float]] = {k: [] for k in ("loss", "dice", "val_loss", "val_dice", "learning_rate")}
    best, best_state, waited = -1.0, None, 0
    if saved:
        run.restore(saved["run"])
        history, best, best_state, waited = saved["history"], saved["best"], saved["best_state"], saved["waited"]
        print(f"resuming after epoch {len(history['loss'])} of {epochs} ({checkpoint.path})", flush=True)
    for epoch in range(len(history["loss"]), int(epochs)):
        if waited >= patience or run.schedule.out_of_time():
            break
        loss, dice = run.epoch()
        val_loss, val_dice = _evaluate(run.model, x_val, y_val)
        for key, value in zip(history, (loss, dice, val_loss, val_dice, run.learning_rate)):
            history[key].append(float(value))
        print(f"epoch {epoch + 1}/{epochs}: loss {loss:.4f} dice {dice:.4f} val_loss {val_loss:.4f} "
              f"val_dice {val_dice:.4f}", flush=True)
        if epoch <= warmup_epochs or val_dice > best:  # as EarlyStopping(start_from_epoch=warmup_epochs)
            best, waited = val_dice, 0
            best_state = {k: v.detach().clone() for k, v in run.model.state_dict().items()}
        else:
            waited += 1
        checkpoint.save({"run": run.state(), "history": history, "best": best, "best_state": best_state,
                         "waited": waited})
    run.model.load_state_dict(best_state)
    if out_dir is not None:
        _save(run.model, history, Path(out_dir))
        checkpoint.save({"finished": True, "history": history})  # the weights are in model.pt now
    return run.model.eval(), history


def _finished(saved: dict | None, out_dir: Path | None) -> bool:
    """Whether an earlier run with the same identity completed (its model.pt is still there): nothing to train."""
    done = bool(saved and saved.get("finished") and out_dir is not None and (Path(out_dir) / MODEL_FILE).is_file())
    if done:
        print(f"{out_dir}: already trained by an earlier run with these options and slices (--force to retrain)")
    return done


def refit(images: Sequence[np.ndarray], masks: Sequence[np.ndarray], epochs: int, batch_size: int = BATCH_SIZE,
          out_dir: Path | None = None, seed: int = 0, *, learning_rate: float = LEARNING_RATE,
          minutes: float | None = None, tune: str = TUNE, precision: str = PRECISION,
          fresh: bool = False, weights: Sequence[float] | None = None) -> tuple[HeadPromptedSAM, dict[str, list[float]]]:
    """Fine-tune afresh on every labelled slice for a fixed number of epochs; (the last weights, the curves).

    Why: early stopping needs validation slices the model never learns from, but once `train`
    has chosen how many epochs to run (its best epoch), those slices can train too (08 --refit:
    training + validation). On figshare they are 66 slices more (512 instead of 446); the top
    recipe trained on both for a fixed 6 epochs scored 0.784 / 0.792 test Dice (seeds 0 / 1,
    refined 0.799 / 0.815) against a mean of 0.770 (refined 0.790) for four seeds trained on the
    training part alone (CPU scratch script on cached lower-stage outputs, mirror augmentation only).
    Through 08 --refit (CPU, 2 epochs, seed 0): 0.745 (refined 0.751) against 0.720 (0.728) for the
    same run's early-stopped model, which chose the 2 epochs (the refit starts afresh, not from it).
    Nothing is left to validate on, so the last weights are kept and the curves have no val_ columns.
    The cosine schedule spans `epochs` (and `minutes`, whichever ends first), as in `train`, and it
    checkpoints and resumes as `train` does.
    """
    if len(images) == 0 or int(epochs) < 1:
        raise ValueError("refit needs at least one slice and one epoch")
    run = _Run(images, masks, epochs, batch_size, seed, learning_rate, minutes, tune, precision, weights)
    checkpoint = run.checkpoint(out_dir, fresh, refit=True)
    saved = checkpoint.load()
    if _finished(saved, out_dir):
        return load(out_dir, precision), saved["history"]
    history: dict[str, list[float]] = {k: [] for k in ("loss", "dice", "learning_rate")}
    if saved:
        run.restore(saved["run"])
        history = saved["history"]
        print(f"resuming the refit after epoch {len(history['loss'])} of {epochs} ({checkpoint.path})", flush=True)
    for epoch in range(len(history["loss"]), int(epochs)):
        if run.schedule.out_of_time():
            break
        loss, dice = run.epoch()
        for key, value in zip(history, (loss, dice, run.learning_rate)):
            history[key].append(float(value))
        print(f"refit epoch {epoch + 1}/{epochs}: loss {loss:.4f} dice {dice:.4f}", flush=True)
        checkpoint.save({"run": run.state(), "history": history})
    if out_dir is not None:
        _save(run.model, history, Path(out_dir))
        checkpoint.save({"finished": True, "history": history})
    return run.model.eval(), history


def _save(model: HeadPromptedSAM, history: dict[str, list[float]], out_dir: Path) -> None:
    """Write model.pt and the curves; the trained model then predicts as a loaded one does (OpenVINO on a CPU),
    so 08 scores its test and extra sources at the speed the bundle will run at."""
    out_dir.mkdir(parents=True, exist_ok=True)
    torch.save(model.state_dict(), out_dir / MODEL_FILE)
    pd.DataFrame({"epoch": range(len(history["loss"])), **history}).to_csv(out_dir / "history.csv", index=False)
    model.compiled = _openvino_logits(model.eval(), out_dir / MODEL_FILE, "bfloat16" if model.bf16 else "float32")


# --- prediction ------------------------------------------------------------------


def predict_proba(model: HeadPromptedSAM, images: Sequence[np.ndarray], flip: bool = FLIP_AVERAGE) -> list[np.ndarray]:
    """P(tumour) maps, float32, each at its slice's own (H, W): the frame's map cropped to the slice, resized."""
    prob = frame_proba(model, frame_images(images), flip) if len(images) else []
    out = []
    for p, image in zip(prob, images):
        height, width = np.shape(image)[:2]
        new_h, new_w = medsam.resized_shape((height, width))
        out.append(np.clip(cv2.resize(p[:new_h, :new_w], (width, height), interpolation=cv2.INTER_LINEAR), 0, 1))
    return out


def predict(model: HeadPromptedSAM, images: Sequence[np.ndarray], threshold: float = 0.5) -> list[np.ndarray]:
    """Tumour masks, bool, each at its slice's own (H, W)."""
    return [p > threshold for p in predict_proba(model, images)]
