"""lib.synth (stage 05): the diffusion schedule, KID, a tiny DDIM that learns and samples, and the stage itself."""

import argparse
import json
import subprocess
import sys
from pathlib import Path

import cv2
import keras
import numpy as np
import pandas as pd
import pytest

from lib.acquire import phantom
from lib.common import manifest
from lib.synth import anomaly, diffusion, realism, run_ddim_train
from tests.conftest import ROOT


def phantom_slices(count: int, size: int, seed: int = 0) -> np.ndarray:
    """Normalised grey phantom slices (N, size, size, 1), as 05 feeds them to the network."""
    rng = np.random.default_rng(seed)
    slices = []
    for _ in range(count):
        image = phantom.make_slice(rng, 1).image
        grey = image if image.ndim == 2 else image.mean(axis=2)
        slices.append(cv2.resize(grey.astype(np.float32) / 255.0, (size, size), interpolation=cv2.INTER_AREA))
    x = np.stack(slices)[..., None]
    return (x - x.mean()) / x.std()


def test_the_schedule_keeps_signal_and_noise_on_the_unit_circle_and_noise_rising() -> None:
    times = np.linspace(0.0, 1.0, 101)
    noise, signal = diffusion.rates(times)
    np.testing.assert_allclose(signal ** 2 + noise ** 2, 1.0, atol=1e-6)
    assert (np.diff(noise) > 0).all() and (np.diff(signal) < 0).all()
    assert signal[0] == pytest.approx(diffusion.MAX_SIGNAL, abs=1e-6)
    assert signal[-1] == pytest.approx(diffusion.MIN_SIGNAL, abs=1e-6)


def test_kid_is_near_zero_for_one_distribution_and_clearly_above_for_a_shifted_one() -> None:
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(200, 16)), rng.normal(size=(200, 16))
    shifted = rng.normal(loc=0.5, size=(200, 16))
    same = realism.kid(a, b)
    assert abs(same) < 0.01
    assert realism.kid(a, shifted) > 10 * abs(same) + 0.01
    mean, std = realism.kid_subsets(a, shifted, subsets=5, size=50)
    assert mean > 0 and std >= 0
    with pytest.raises(ValueError, match="at least two"):
        realism.kid(a[:1], b)


def test_the_two_sample_test_tells_shifted_features_apart_and_not_equal_ones() -> None:
    rng = np.random.default_rng(1)
    real = rng.normal(size=(60, 8))
    assert realism.two_sample_auc(real, rng.normal(size=(60, 8))) < 0.7
    assert realism.two_sample_auc(real, rng.normal(loc=1.0, size=(60, 8))) > 0.95


def test_a_tiny_ddim_learns_the_noise_and_samples_deterministically_for_a_seed() -> None:
    keras.utils.set_random_seed(0)
    x = phantom_slices(32, 16)
    network = diffusion.build_network(16, (8, 16), block_depth=1)
    diffusion.compile_network(network, total_steps=40)
    history = network.fit(diffusion.NoisyBatches(x, None, 8, seed=0), epochs=10, verbose=0).history
    assert history["loss"][-1] < 0.8 * history["loss"][0], history["loss"]  # predicting 0 would give ~0.8
    first, again = diffusion.sample(network, 4, 5, seed=3), diffusion.sample(network, 4, 5, seed=3)
    assert first.shape == (4, 16, 16, 1) and np.array_equal(first, again)
    assert not np.array_equal(first, diffusion.sample(network, 4, 5, seed=4))
    assert np.isfinite(diffusion.image_loss(network, x[:8], None, seed=0))


def test_a_conditional_ddim_takes_a_class_per_slice() -> None:
    network = diffusion.build_network(16, (8, 16), block_depth=1, conditional=True)
    labels = np.array([0, 1, 0, 1], np.int32)
    slices = diffusion.sample(network, 4, 2, seed=0, labels=labels)
    assert slices.shape == (4, 16, 16, 1)
    inputs, noise, _ = diffusion.noisy_inputs(phantom_slices(4, 16), np.random.default_rng(0), labels)
    assert len(inputs) == 3 and inputs[2].shape == (4, 1) and noise.shape == (4, 16, 16, 1)
    with pytest.raises(ValueError, match="divisible"):
        diffusion.build_network(18, (8, 16, 32))


def test_the_anomaly_score_is_one_number_per_slice_and_its_auc_has_an_interval() -> None:
    x = phantom_slices(6, 16)
    for conditional in (False, True):
        network = diffusion.build_network(16, (8, 16), block_depth=1, conditional=conditional)
        score = anomaly.tumour_score(network, x, conditional, seed=0)
        assert score.shape == (6,) and np.isfinite(score).all()
        np.testing.assert_array_equal(score, anomaly.tumour_score(network, x, conditional, seed=0))
    y = np.array([1, 1, 1, 0, 0, 0])
    found = anomaly.roc(y, np.array([0.9, 0.8, 0.7, 0.1, 0.2, 0.75]))
    assert found["roc_auc"] == pytest.approx(8 / 9) and found["roc_auc_ci"][0] <= found["roc_auc"] <= 1.0
    assert anomaly.roc(np.ones(3), np.zeros(3))["roc_auc"] is None  # one class: no AUC, said so


def stage_args(in_dir: Path, out: Path, **changes) -> argparse.Namespace:
    """05's options for a tiny run (what scripts/05_ddim_train.py parses)."""
    options = dict(in_dir=in_dir, out=out, force=False, workers=1, size=16, conditional=False, epochs=3,
                   batch_size=8, widths=[8, 16], block_depth=1, learning_rate=1e-3, val_fraction=0.25, steps=4,
                   samples=6, kid_features="none", kid_subsets=3, grid_every=0, time_budget=None, seed=0)
    return argparse.Namespace(**{**options, **changes})


@pytest.mark.slow
def test_an_interrupted_run_resumes_after_its_last_epoch_and_ends_as_the_uninterrupted_one(
        tiny_bundle: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cleaned = tiny_bundle.parent / "02"
    whole = run_ddim_train.run(stage_args(cleaned, tmp_path / "whole"))
    real_end = run_ddim_train.ImageLoss.on_epoch_end

    def killed_after_epoch_2(self, epoch, logs=None):
        real_end(self, epoch, logs)
        if epoch == 1:
            raise KeyboardInterrupt  # the checkpoint of epoch 1 is written; epoch 2's never is

    monkeypatch.setattr(run_ddim_train.ImageLoss, "on_epoch_end", killed_after_epoch_2)
    with pytest.raises(KeyboardInterrupt):
        run_ddim_train.run(stage_args(cleaned, tmp_path / "killed"))
    monkeypatch.setattr(run_ddim_train.ImageLoss, "on_epoch_end", real_end)
    resumed = run_ddim_train.run(stage_args(cleaned, tmp_path / "killed"))
    assert resumed["epochs_run"] == whole["epochs_run"] == 3
    for key in ("loss", "val_loss"):
        assert resumed["final"][key] == pytest.approx(whole["final"][key], rel=1e-3), key


@pytest.mark.slow
def test_the_stage_writes_samples_other_stages_can_read_and_scores_them(tiny_bundle: Path, tmp_path: Path) -> None:
    out = tmp_path / "05"
    done = subprocess.run([sys.executable, str(ROOT / "scripts" / "05_ddim_train.py"), "--in",
                           str(tiny_bundle.parent / "02"), "--out", str(out), "--size", "16", "--widths", "8", "16",
                           "--block-depth", "1", "--epochs", "2", "--samples", "8", "--steps", "4",
                           "--grid-every", "1", "--kid-subsets", "3"], capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-2000:]
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["epochs_run"] == 2 and metrics["train_slices"] > metrics["val_slices"] > 0
    assert {"loss", "val_loss", "image_loss", "val_image_loss"} <= set(metrics["final"])
    scores = metrics["realism"]
    assert scores["features"] == "litemedsam" and scores["kid_std"] >= 0
    assert 0.0 <= scores["two_sample_auc"] <= 1.0 and np.isfinite(scores["floor_mean"])
    rows = manifest.read(out / "samples")
    assert len(rows) == 8 and (rows["label"] == "tumor").all() and rows["origin"].str.startswith("synthetic").all()
    for path in rows["image_path"]:
        assert cv2.imread(str(manifest.resolve(out / "samples", path)), cv2.IMREAD_GRAYSCALE).shape == (16, 16)
    assert (out / "grids" / "epoch-0002.png").is_file() and (out / "samples_grid.png").is_file()
    assert "KID floor" in (out / "report.html").read_text()
    found = metrics["anomaly"]  # held-out tumour slices and every tumour-free one, none trained on
    assert found["no_tumour"] > 0 and found["tumour"] == metrics["val_slices"]
    assert 0.0 <= found["roc_auc"] <= 1.0
    lineage = json.loads((out / "lineage.json").read_text())
    assert lineage["stage"] == "05_ddim_train" and lineage["settings"]["size"] == 16


def test_too_few_slices_stop_in_one_line(tmp_path: Path) -> None:
    rows = pd.DataFrame({"id": ["a", "b"], "label": ["tumor", "tumor"], "status": ["ok", "ok"], "error": ["", ""],
                         "image_path": ["a.png", "b.png"], "dup_group": ["g0", "g1"]})
    with pytest.raises(SystemExit, match="only 2 usable tumor slices"):
        run_ddim_train.real_rows(rows, conditional=False)


def test_inception_kid_offline_stops_in_one_line_before_training(tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    from lib.common import keras_weights

    def no_network(*args, **kwargs):
        raise OSError("network is unreachable (test)")

    monkeypatch.setenv("KERAS_HOME", str(tmp_path))
    monkeypatch.setattr(keras_weights.socket, "create_connection", no_network)
    with pytest.raises(SystemExit) as err:
        realism.check("inception")
    message = str(err.value)
    assert "\n" not in message and "could not be downloaded" in message and "--kid-features litemedsam" in message
    assert str(tmp_path / "models") in message
    realism.check("litemedsam")  # the offline default needs no download
