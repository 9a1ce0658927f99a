"""Shared test set-up: import `lib` from the repository root, find ../shared, keep the checkout clean."""

import os
import sys
import tempfile
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import lib  # noqa: E402, F401 - before any test imports Keras: orders the frameworks (lib.common.frameworks)

SHARED_DATA = ROOT.parent / "shared" / "data"
# Converted networks (lib.common.openvino_runtime) go to a folder of this run, not the user's
# ~/.cache; the stages the tests start inherit it. Set it beforehand to share one across runs.
os.environ.setdefault("BRAINMRI_CACHE_DIR", tempfile.mkdtemp(prefix="brainmri-test-cache-"))


CACHES = {".git", ".venv", "__pycache__", ".pytest_cache", ".ruff_cache"}
STARTED = time.time()
# What a test run keeps for people to look at (the browser test's screenshot); git ignores build/.
ARTIFACTS = Path(os.environ.get("BRAINMRI_TEST_ARTIFACTS") or ROOT / "build" / "test-artifacts")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "slow: runs a stage or a subprocess, or trains a real model for seconds "
                                       "(make test-fast leaves it out)")


def files_written_since(root: Path, since: float) -> list[str]:
    """Files under `root` (caches left out) modified after `since`: what a test run wrote into the checkout."""
    found = []
    for folder, subfolders, files in os.walk(root):
        subfolders[:] = [d for d in subfolders if d not in CACHES]
        found += [os.path.join(folder, f) for f in files if os.path.getmtime(os.path.join(folder, f)) > since]
    return sorted(os.path.relpath(f, root) for f in found)


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """Fail the run when tests wrote into the checkout: they write under tmp_path only."""
    kept = os.path.relpath(ARTIFACTS, ROOT) + os.sep
    written = [f for f in files_written_since(ROOT, STARTED) if not f.endswith((".py", ".md"))
               and not f.startswith(kept)]
    if written:
        print(f"\nerror: the tests wrote {len(written)} files into the checkout, e.g. {written[:5]}; "
              "write under tmp_path instead", file=sys.stderr)
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


@pytest.fixture(scope="session")
def artifacts() -> Path:
    """The folder for files a test run keeps (ARTIFACTS: build/test-artifacts, or $BRAINMRI_TEST_ARTIFACTS)."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    return ARTIFACTS


def shared_data(name: str) -> Path:
    """Path of a real data set under ../shared/data, or skip the test with why."""
    path = SHARED_DATA / name
    if not path.is_dir():
        pytest.skip(f"real data {path} is absent (only developer and CI machines have ../shared); skipping")
    return path


@pytest.fixture(scope="session")
def tiny_bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real bundle from a small phantom run: 01-04, 06 (cnn + features, 3 folds), 08 (U-Net), 09.

    Tiny and short-trained, so its numbers mean nothing; its files and code paths are the real ones.
    """
    from tests.test_pipeline import (
        stage,  # here, not at the top: test_pipeline imports this module
    )

    root = tmp_path_factory.mktemp("bundle_run")
    stage("01_download.py", "--source", "phantom", "--n", "20", "--seed", "11", "--out", str(root / "01"))
    stage("02_clean.py", "--in", str(root / "01"), "--out", str(root / "02"), "--size", "128")
    stage("03_enhance.py", "--in", str(root / "02"), "--out", str(root / "03"))
    stage("04_cluster.py", "--in", str(root / "03"), "--out", str(root / "04"), "--sweep-images", "6")
    stage("06_classify_kfold.py", "--in", str(root / "04"), "--out", str(root / "06"),
          "--models", "cnn,features,metadata", "--folds", "3", "--epochs", "2", "--image-size", "32")
    stage("08_unet_train.py", "--in", str(root / "04"), "--out", str(root / "08"), "--masks", "truth",
          "--image-size", "64", "--epochs", "3", "--batch-size", "4")
    stage("09_ensemble.py", "--in", str(root / "06"), "--unet", str(root / "08"), "--out", str(root / "09"),
          "--bundle", str(root / "bundle"))
    return root / "bundle"
