"""Integration: stage 01 (phantom and folder) then stage 02, as `make all` runs them."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from lib.common import manifest
from lib.common.io import read_image, read_mask
from tests.conftest import ROOT, shared_data

pytestmark = pytest.mark.slow  # runs the numbered stages in subprocesses


def stage(script: str, *args: str) -> subprocess.CompletedProcess:
    result = subprocess.run([sys.executable, str(ROOT / "scripts" / script), *args],
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-2000:]
    return result


@pytest.fixture(scope="module")
def phantom_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("phantom")
    stage("01_download.py", "--source", "phantom", "--n", "24", "--seed", "3", "--out", str(root / "01"))
    stage("02_clean.py", "--in", str(root / "01"), "--out", str(root / "02"), "--size", "128")
    return root


def test_phantom_import_has_true_masks_and_balance(phantom_run: Path) -> None:
    df = manifest.read(phantom_run / "01")
    assert len(df) == 24 and (df["status"] == "ok").all()
    assert df["label"].value_counts()["tumor"] == round(24 * 155 / 253)
    for row in df.itertuples():
        tumour = read_mask(phantom_run / "01" / row.mask_path)
        brain = read_mask(phantom_run / "01" / row.brain_mask_path)
        assert tumour.shape == brain.shape == (int(row.height), int(row.width))
        assert tumour.any() == (row.label == "tumor")
        assert not (tumour & ~brain).any()


def test_phantoms_are_deterministic_for_a_seed(phantom_run: Path, tmp_path: Path) -> None:
    stage("01_download.py", "--source", "phantom", "--n", "24", "--seed", "3", "--out", str(tmp_path / "again"))
    assert list(manifest.read(tmp_path / "again")["sha256"]) == list(manifest.read(phantom_run / "01")["sha256"])


def test_clean_outputs_follow_the_contract(phantom_run: Path) -> None:
    df = manifest.read(phantom_run / "02")
    upstream = manifest.read(phantom_run / "01")
    assert list(df["id"]) == list(upstream["id"])
    assert set(upstream.columns) <= set(df.columns)  # every earlier column carried forward
    for row in df.itertuples():
        image = read_image(phantom_run / "02" / row.image_path).pixels
        mask = read_mask(phantom_run / "02" / row.mask_path)
        assert image.shape == mask.shape == (128, 128)
        assert row.crop_mode in ("hard", "soft") and row.crop_reason
        # the cleaned tumour mask is the source mask through the same geometry
        source = read_mask(phantom_run / "02" / row.source_mask_path)
        assert mask.any() == source.any()
        assert (phantom_run / "02" / row.source_path).resolve().is_relative_to((phantom_run / "01").resolve())


def test_clean_keeps_the_brain_and_writes_the_report(phantom_run: Path) -> None:
    metrics = json.loads((phantom_run / "02" / "metrics.json").read_text())
    assert metrics["crop_vs_true_brain"]["brain_kept_min"] >= 0.995
    assert metrics["crop_vs_true_brain"]["background_removed_mean"] > 0.3
    for name in ("report.html", "qc/cdf_raw.png", "qc/cdf_clean.png", "qc/histogram_summary.csv",
                 "qc/contact_000.png"):
        assert (phantom_run / "02" / name).is_file(), name
    assert "not a medical device" in (phantom_run / "02" / "report.html").read_text()


def test_clean_rerun_skips_and_input_is_untouched(phantom_run: Path) -> None:
    before = {p: p.stat().st_mtime_ns for p in (phantom_run / "01").rglob("*")}
    image = phantom_run / "02" / manifest.read(phantom_run / "02")["image_path"][0]
    stamp = image.stat().st_mtime_ns
    stage("02_clean.py", "--in", str(phantom_run / "01"), "--out", str(phantom_run / "02"), "--size", "128")
    assert image.stat().st_mtime_ns == stamp
    assert {p: p.stat().st_mtime_ns for p in (phantom_run / "01").rglob("*")} == before


def test_interrupted_clean_resumes_from_the_checkpoint(phantom_run: Path, tmp_path: Path) -> None:
    out = tmp_path / "02"
    stage("02_clean.py", "--in", str(phantom_run / "01"), "--out", str(out), "--size", "128")
    # Simulate a kill after 10 items: only a checkpoint with 10 rows and their images remain.
    df = manifest.read(out)
    manifest.write(df.head(10), out, partial=True)
    (out / manifest.MANIFEST).unlink()
    for rel in df["image_path"][10:]:
        (out / rel).unlink()
    kept = {rel: (out / rel).stat().st_mtime_ns for rel in df["image_path"][:10]}
    stage("02_clean.py", "--in", str(phantom_run / "01"), "--out", str(out), "--size", "128")
    assert manifest.read(out).equals(df)
    assert {rel: (out / rel).stat().st_mtime_ns for rel in kept} == kept


def test_a_changed_size_redoes_every_item(phantom_run: Path, tmp_path: Path) -> None:
    out = tmp_path / "02"
    stage("02_clean.py", "--in", str(phantom_run / "01"), "--out", str(out), "--size", "128")
    stage("02_clean.py", "--in", str(phantom_run / "01"), "--out", str(out), "--size", "64")
    first = manifest.read(out)["image_path"][0]
    assert read_image(out / first).pixels.shape == (64, 64)


def test_bad_files_become_error_rows_and_the_rest_is_cleaned(tmp_path: Path) -> None:
    src = tmp_path / "src"
    (src / "yes").mkdir(parents=True)
    (src / "no").mkdir()
    (src / "yes" / "empty.jpg").write_bytes(b"")
    (src / "no" / "text.png").write_text("hello")
    from lib.common.io import write_png

    head = np.zeros((120, 100), np.uint8)
    head[20:100, 15:85] = 120
    write_png(src / "no" / "head.png", head)
    stage("01_download.py", "--source", "folder", "--path", str(src), "--out", str(tmp_path / "01"))
    stage("02_clean.py", "--in", str(tmp_path / "01"), "--out", str(tmp_path / "02"))
    df = manifest.read(tmp_path / "02").set_index("id")
    assert df.loc["no_head", "status"] == "ok"
    assert df.loc["yes_empty", "status"] == "error" and "empty" in df.loc["yes_empty", "error"]
    assert df.loc["no_text", "status"] == "error"


def test_empty_input_manifest_is_refused(tmp_path: Path) -> None:
    manifest.write_rows([], tmp_path / "01")
    result = subprocess.run([sys.executable, str(ROOT / "scripts/02_clean.py"), "--in", str(tmp_path / "01"),
                             "--out", str(tmp_path / "02")], capture_output=True, text=True, timeout=120)
    assert result.returncode != 0 and "lists no images" in result.stderr and "Traceback" not in result.stderr


def test_navoneel_every_file_cleaned_or_flagged(tmp_path: Path) -> None:
    src = shared_data("navoneel")
    stage("01_download.py", "--source", "folder", "--path", str(src), "--out", str(tmp_path / "01"))
    stage("02_clean.py", "--in", str(tmp_path / "01"), "--out", str(tmp_path / "02"))
    df = manifest.read(tmp_path / "02")
    assert len(df) == 253
    assert ((df["status"] == "ok") | (df["error"] != "")).all()
    metrics = json.loads((tmp_path / "02" / "metrics.json").read_text())
    assert metrics["flags"].get("white_background", 0) >= 1 and metrics["flags"].get("white_frame", 0) >= 1
