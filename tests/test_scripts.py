"""Scripts as a user meets them: wrong paths refused before anything loads, and no lines but their own."""

import subprocess
import sys
import time
from pathlib import Path

import pytest

from lib.common import stage
from tests.conftest import ROOT
from tests.test_pipeline import stage as run_stage

# Lines TensorFlow printed on every run that reads like a failure or is noise to the user.
NOISE = ("cuInit", "oneDNN", "absl::InitializeLog", "remapper")


def script(name: str, *args: str) -> tuple[subprocess.CompletedProcess, float]:
    """Run scripts/<name>; returns the finished process and its seconds."""
    started = time.monotonic()
    done = subprocess.run([sys.executable, str(ROOT / "scripts" / name), *args], capture_output=True, text=True,
                          timeout=600)
    return done, time.monotonic() - started


@pytest.mark.slow
@pytest.mark.parametrize("missing", ["--in", "--bundle"])
def test_predict_refuses_a_missing_path_at_once_in_one_line(tmp_path: Path, missing: str) -> None:
    """Not after some 9 s of loading models: the check comes before the imports."""
    paths = {"--in": tmp_path, "--bundle": tmp_path}  # both exist...
    paths[missing] = tmp_path / "no" / "such" / "path"  # ...but this one
    done, seconds = script("predict.py", "--bundle", str(paths["--bundle"]), "--in", str(paths["--in"]),
                           "--out", str(tmp_path / "predictions.csv"))
    assert done.returncode != 0
    assert str(paths[missing]) in done.stderr and len(done.stderr.strip().splitlines()) == 1, done.stderr
    assert seconds < 5  # a behaviour check, not a benchmark: loading the models alone takes longer


@pytest.fixture(scope="module")
def cleaned(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("quiet")
    run_stage("01_download.py", "--source", "phantom", "--n", "8", "--seed", "2", "--out", str(root / "01"))
    run_stage("02_clean.py", "--in", str(root / "01"), "--out", str(root / "02"), "--size", "64")
    return root / "02"


@pytest.mark.slow
def test_a_tensorflow_stage_prints_only_its_own_lines_unless_verbose(cleaned: Path, tmp_path: Path) -> None:
    """08 loads TensorFlow, builds and trains a U-Net: every banner, cuInit and remapper line came from such a run."""
    tiny = ["--in", str(cleaned), "--masks", "truth", "--image-size", "32", "--epochs", "1", "--batch-size", "4",
            "--width", "4"]
    quiet, _ = script("08_unet_train.py", *tiny, "--out", str(tmp_path / "quiet"))
    assert quiet.returncode == 0, quiet.stderr[-2000:]
    assert "08_unet_train (" in quiet.stdout  # its own result line stays
    assert [word for word in NOISE if word in quiet.stderr] == [], quiet.stderr[-2000:]
    verbose, _ = script("08_unet_train.py", *tiny, "--out", str(tmp_path / "verbose"), "--verbose")
    assert verbose.returncode == 0, verbose.stderr[-2000:]
    assert [word for word in NOISE if word in verbose.stderr] != []


def test_verbose_is_how_a_stage_ran_not_a_setting(tmp_path: Path) -> None:
    """--verbose must not change a stage's signature: a rerun with it would otherwise redo every item."""
    args = stage.parser("02_clean", "test", previous="01_download").parse_args(["--out", str(tmp_path), "--verbose"])
    assert args.verbose and "verbose" in stage.NOT_SETTINGS
