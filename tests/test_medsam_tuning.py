"""The fine-tuned LiteMedSAM of 08 --architecture litemedsam: head-box prompts, real learning, saved weights."""

from pathlib import Path

import numpy as np
import pytest

from lib.acquire import phantom
from lib.segment import mask_metrics

medsam_tuning = pytest.importorskip("lib.segment.medsam_tuning", reason="needs PyTorch (requirements.txt)")
medsam = medsam_tuning.medsam  # lib.common.medsam, importable once PyTorch is


def _available() -> None:
    try:
        medsam.weights_resource()
    except Exception as err:  # noqa: BLE001 - the message says what is missing
        pytest.skip(f"LiteMedSAM weights unavailable: {err}")


def test_the_prompt_is_the_heads_box_never_the_tumours() -> None:
    frames = np.zeros((2, 256, 256), np.float32)
    frames[0, 40:200, 30:220] = 0.5  # head
    frames[0, 90:110, 100:120] = 1.0  # a bright tumour inside it does not change the box
    boxes = medsam_tuning.head_boxes(frames)
    assert boxes[0].tolist() == [30, 40, 220, 200]
    assert boxes[1].tolist() == [0, 0, 256, 256]  # blank slice: the whole frame


def test_frames_keep_the_aspect_ratio_and_masks_follow_their_slice() -> None:
    mask = np.zeros((100, 200), bool)
    mask[20:60, 50:150] = True
    framed = medsam_tuning.frame_masks([mask])[0]
    assert framed[128:].sum() == 0  # 100 x 200 -> 128 x 256, the rest is padding
    assert framed.sum() == pytest.approx(mask.sum() * (256 / 200) ** 2, rel=0.05)
    image = np.where(mask, 200, 50).astype(np.uint8)
    frame = medsam_tuning.frame_images([image])[0]
    assert frame.shape == (256, 256) and frame.max() == pytest.approx(1.0) and frame[128:].max() == 0


def in_pytorch(model: object) -> object:
    """The model predicting in PyTorch, as it trained: the same weights give the same masks to the pixel.
    (A saved or loaded model predicts through OpenVINO on a CPU, within tolerance: tested on its own below.)"""
    model.compiled = None
    return model


def load_in_pytorch(path: Path, precision: str = "auto") -> object:
    return in_pytorch(medsam_tuning.load(path, precision))


def _mean_dice(model: object, images: list, masks: list) -> float:
    """Mean Dice of the model's masks (one pass, no flip averaging: half the CPU time)."""
    probs = medsam_tuning.predict_proba(model, images, flip=False)
    return float(np.mean([mask_metrics.score(p > 0.5, t)["dice"] for p, t in zip(probs, masks)]))


@pytest.fixture(scope="module")
def tuned(tmp_path_factory: pytest.TempPathFactory) -> tuple:
    _available()
    rng = np.random.default_rng(0)
    slices = [phantom.make_slice(rng, 1) for _ in range(4)]  # RGB, odd sizes, one tumour each
    images, masks = [s.image for s in slices], [s.tumor_mask for s in slices]
    untrained = medsam_tuning.build().eval()
    before = _mean_dice(untrained, images, masks)
    out = tmp_path_factory.mktemp("tuned")
    model, history = medsam_tuning.train(images, masks, images[:2], masks[:2], epochs=4, batch_size=2, out_dir=out,
                                         tune="all")  # the whole model; "top" is tested below and in 08's test
    return model, history, out, images, masks, before


@pytest.mark.slow
def test_fine_tuning_learns_the_phantom_tumours(tuned: tuple) -> None:
    model, history, _, images, masks, before = tuned
    after = _mean_dice(model, images, masks)
    assert after > before + 0.1, (before, after)  # measured 0.12 -> 0.41 after 8 steps on the CPU
    assert len(history["val_dice"]) == 4 and history["loss"][-1] < history["loss"][0]
    assert history["learning_rate"][-1] < history["learning_rate"][0]  # cosine schedule


@pytest.mark.slow
def test_saved_weights_give_the_same_masks_at_each_slices_own_size(tuned: tuple) -> None:
    model, _, out, images, _, _ = tuned
    assert (out / "model.pt").is_file() and (out / "history.csv").is_file()
    again = load_in_pytorch(out)
    first, second = medsam_tuning.predict(in_pytorch(model), images[:2]), medsam_tuning.predict(again, images[:2])
    for image, a, b in zip(images, first, second):
        assert a.dtype == bool and a.shape == image.shape[:2]
        assert (a == b).mean() > 0.999


@pytest.mark.slow
def test_bfloat16_runs_where_asked_or_native_and_draws_the_float32_masks(tuned: tuple) -> None:
    _, _, out, images, _, _ = tuned
    assert medsam_tuning.uses_bf16("auto", "cpu") == medsam.bf16_native("cpu")
    assert not medsam_tuning.uses_bf16("float32") and medsam_tuning.uses_bf16("bfloat16")
    with pytest.raises(ValueError, match="precision must be one of"):
        medsam_tuning.uses_bf16("fp8")
    exact, fast = medsam_tuning.load(out, "float32"), medsam_tuning.load(out, "bfloat16")
    assert not exact.bf16 and fast.bf16
    first = medsam_tuning.predict_proba(exact, images[:2], flip=False)
    second = medsam_tuning.predict_proba(fast, images[:2], flip=False)
    for a, b in zip(first, second):
        assert (a > 0.5).any() and np.abs(a - b).mean() < 0.02  # a mask to compare, not two empty ones
        assert mask_metrics.dice(a > 0.5, b > 0.5) > 0.9


@pytest.mark.slow
def test_a_loaded_model_predicts_through_openvino_with_pytorchs_masks(tuned: tuple) -> None:
    """On a CPU, load() compiles the saved model with OpenVINO (4.5x PyTorch bfloat16's speed, bench/bench_tuned_predict.py)."""
    import hashlib

    from lib.common import openvino_runtime

    if not openvino_runtime.available():
        pytest.skip("OpenVINO is not installed (pip install -r requirements.txt)")
    _, _, out, images, _, _ = tuned
    loaded = medsam_tuning.load(out, "float32")
    assert loaded.compiled is not None
    digest = hashlib.sha256((out / "model.pt").read_bytes()).hexdigest()[:12]
    assert openvino_runtime.ir_path(f"litemedsam-tuned-{digest}").is_file()  # new weights, new key
    fast = medsam_tuning.predict_proba(loaded, images[:2])
    loaded.compiled = None  # the same weights in PyTorch
    exact = medsam_tuning.predict_proba(loaded, images[:2])
    for a, b in zip(exact, fast):
        assert (a > 0.5).any() and np.abs(a - b).max() < 1e-3


def test_a_missing_model_file_says_how_to_make_one(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="08 --architecture litemedsam"):
        medsam_tuning.load(tmp_path)


def test_tuning_the_top_keeps_the_lower_encoder_stages_as_pretrained() -> None:
    _available()
    import torch

    rng = np.random.default_rng(1)
    slices = [phantom.make_slice(rng, 1) for _ in range(2)]
    images, masks = [s.image for s in slices], [s.tumor_mask for s in slices]
    pretrained = {k: v.clone() for k, v in medsam_tuning.build().state_dict().items()}
    model, _ = medsam_tuning.train(images, masks, images[:1], masks[:1], epochs=1, batch_size=2, tune="top")
    tuned = model.state_dict()

    def changed(prefix: str) -> bool:  # weights or BatchNorm statistics
        return any(not torch.equal(pretrained[k], tuned[k]) for k in tuned if k.startswith(prefix))

    encoder = "net.image_encoder."
    assert not any(changed(encoder + part) for part in ("patch_embed.", "layers.0.", "layers.1.", "layers.2."))
    assert changed(encoder + "layers.3.") and changed(encoder + "neck.") and changed("net.mask_decoder.")
    with pytest.raises(ValueError, match="'all' or 'top'"):
        medsam_tuning.frozen_parts(model, "bottom")


@pytest.mark.slow
def test_refit_trains_a_fresh_model_on_every_slice_for_the_epochs_given(tmp_path: Path) -> None:
    _available()
    rng = np.random.default_rng(2)
    slices = [phantom.make_slice(rng, 1) for _ in range(4)]
    images, masks = [s.image for s in slices], [s.tumor_mask for s in slices]
    before = _mean_dice(medsam_tuning.build().eval(), images, masks)
    model, history = medsam_tuning.refit(images, masks, epochs=4, batch_size=2, out_dir=tmp_path, tune="top")
    assert len(history["loss"]) == 4 and not any(key.startswith("val_") for key in history)  # nothing to validate on
    assert history["learning_rate"][-1] < history["learning_rate"][0]
    assert _mean_dice(model, images, masks) > before + 0.3, before  # measured 0.15 -> 0.76 on the CPU
    again = load_in_pytorch(tmp_path)  # the last weights, as returned
    assert all((a == b).mean() > 0.999 for a, b in
               zip(medsam_tuning.predict(in_pytorch(model), images[:2]), medsam_tuning.predict(again, images[:2])))
    with pytest.raises(ValueError, match="one epoch"):
        medsam_tuning.refit(images, masks, epochs=0)


@pytest.mark.slow
def test_a_killed_run_resumes_after_its_last_epoch_and_ends_as_the_uninterrupted_one(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _available()
    rng = np.random.default_rng(3)
    slices = [phantom.make_slice(rng, 1) for _ in range(2)]
    images, masks = [s.image for s in slices], [s.tumor_mask for s in slices]
    options = {"epochs": 2, "batch_size": 2, "tune": "top", "warmup_epochs": 0}
    _, whole = medsam_tuning.train(images, masks, images[:1], masks[:1], out_dir=tmp_path / "whole", **options)

    epochs_run, real_epoch = [], medsam_tuning._Run.epoch

    def killed_in_epoch_2(run: object) -> tuple[float, float]:
        epochs_run.append(1)
        if len(epochs_run) == 2:
            raise KeyboardInterrupt  # as a kill between two epochs' checkpoints
        return real_epoch(run)

    monkeypatch.setattr(medsam_tuning._Run, "epoch", killed_in_epoch_2)
    out = tmp_path / "killed"
    with pytest.raises(KeyboardInterrupt):
        medsam_tuning.train(images, masks, images[:1], masks[:1], out_dir=out, **options)
    assert (out / "checkpoint.pt").is_file() and not (out / "model.pt").exists()
    monkeypatch.setattr(medsam_tuning._Run, "epoch", real_epoch)
    model, resumed = medsam_tuning.train(images, masks, images[:1], masks[:1], out_dir=out, **options)
    for key in whole:  # the resumed epoch drew the same batches and augmentation from the same weights
        assert resumed[key] == pytest.approx(whole[key], rel=1e-4, abs=1e-6), key

    monkeypatch.setattr(medsam_tuning._Run, "epoch", killed_in_epoch_2)  # must not be called again
    epochs_run.clear()
    again, history = medsam_tuning.train(images, masks, images[:1], masks[:1], out_dir=out, **options)
    assert not epochs_run and history == resumed  # finished: the saved model, nothing trained
    assert all((a == b).all() for a, b in zip(medsam_tuning.predict(in_pytorch(model), images),
                                              medsam_tuning.predict(in_pytorch(again), images)))
    with pytest.raises(KeyboardInterrupt):  # --force: trains afresh although the run finished
        medsam_tuning.train(images, masks, images[:1], masks[:1], out_dir=out, fresh=True, **options)
    epochs_run.clear()
    with pytest.raises(KeyboardInterrupt):  # another seed is another run: afresh, not from epoch 1's checkpoint
        medsam_tuning.train(images, masks, images[:1], masks[:1], out_dir=out, seed=1, **options)


def test_slice_weights_scale_each_slices_share_of_the_loss() -> None:
    import torch

    logits = torch.randn(3, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    target = (torch.rand(3, 1, 8, 8, generator=torch.Generator().manual_seed(1)) > 0.5).float()
    plain = medsam_tuning.dice_bce(logits, target)
    assert float(medsam_tuning.dice_bce(logits, target, torch.ones(3))) == pytest.approx(float(plain))
    alone = [float(medsam_tuning.dice_bce(logits[i:i + 1], target[i:i + 1])) for i in range(3)]
    weighed = float(medsam_tuning.dice_bce(logits, target, torch.tensor([2.0, 0.0, 1.0])))
    assert weighed == pytest.approx((2 * alone[0] + alone[2]) / 3, rel=1e-5)
    assert medsam_tuning.loss_weights([1, 1, 1], 3) is None  # all ones: the plain mean, the same checkpoint as before
    with pytest.raises(ValueError, match="2 weights for 3 slices"):
        medsam_tuning.loss_weights([1, 2], 3)
