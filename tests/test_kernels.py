"""kernels/build.py: a stage packed as one Kaggle script really runs."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from kernels import build
from lib.common import manifest
from tests.conftest import ROOT


def test_metadata_is_what_kaggle_expects() -> None:
    meta = build.metadata("02_clean", "me", gpu=True, internet=False, datasets=["a/b"], kernels=["me/x"])
    assert meta["id"] == "me/brainmri-02-clean" and meta["title"] == "brainmri-02-clean"
    assert meta["code_file"] == "brainmri-02-clean.py" and meta["kernel_type"] == "script"
    assert meta["enable_gpu"] is True and meta["dataset_sources"] == ["a/b"] and meta["kernel_sources"] == ["me/x"]


@pytest.mark.slow
def test_packed_stage_runs_outside_the_repository(tmp_path: Path) -> None:
    folder = build.build("01_download", tmp_path / "k", "me", ["--source", "phantom", "--n", "4", "--workers", "1"])
    meta = json.loads((folder / "kernel-metadata.json").read_text())
    run_dir = tmp_path / "elsewhere"
    run_dir.mkdir()
    env = {**os.environ, "PYTHONPATH": ""}
    result = subprocess.run([sys.executable, str(folder / meta["code_file"])], cwd=run_dir, env=env,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert len(manifest.read(run_dir / "data" / "01_download")) == 4
    assert (run_dir / "brainmri_src" / "lib" / "common" / "io.py").is_file()


@pytest.mark.slow
def test_unknown_stage_lists_the_known_ones(tmp_path: Path) -> None:
    result = subprocess.run([sys.executable, str(ROOT / "kernels" / "build.py"), "99_nope", "--user", "me",
                             "--out", str(tmp_path)], capture_output=True, text=True, timeout=60)
    assert result.returncode != 0 and "01_download" in result.stderr
    assert list(tmp_path.iterdir()) == []  # nothing half-written


@pytest.mark.slow
def test_push_without_a_token_says_how_to_get_one(tmp_path: Path) -> None:
    folder = build.build("02_clean", tmp_path / "k", "me", [])
    env = {k: v for k, v in os.environ.items() if not k.startswith("KAGGLE_")}
    env["HOME"] = str(tmp_path)  # no ~/.kaggle here
    code = f"import sys; sys.path.insert(0, {str(ROOT)!r}); from kernels import build; build.push(__import__('pathlib').Path({str(folder)!r}))"
    result = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode != 0 and "KAGGLE_API_TOKEN" in (result.stderr + result.stdout)
