"""Shared test set-up: import `lib` from the repository root, find ../shared."""

import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

SHARED_DATA = ROOT.parent / "shared" / "data"


def shared_data(name: str) -> Path:
    """Path of a real data set under ../shared/data, or skip the test with why."""
    path = SHARED_DATA / name
    if not path.is_dir():
        pytest.skip(f"real data {path} is absent (only developer and CI machines have ../shared); skipping")
    return path


def pytest_configure(config: pytest.Config) -> None:
    """Build LiteMedSAM (PyTorch) before any test imports Keras.

    PyTorch's first model build crashes (segmentation fault) in a process where
    TensorFlow has already started; built first, both live together. Stages
    avoid the problem by embedding in a separate process (lib.classify_stage).
    """
    try:
        from lib import medsam

        medsam.load()
    except Exception:  # noqa: BLE001 - absent package: the medsam tests skip and say why
        pass
