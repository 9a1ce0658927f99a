"""Integration: stages 03_enhance and 04_cluster on a small phantom run, as `make all` chains them."""

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from lib.common import manifest
from lib.common.io import read_image, read_mask
from lib.regions import cluster, features
from tests.test_pipeline import stage

pytestmark = pytest.mark.slow  # runs stages 03 and 04 in subprocesses


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("stages")
    stage("01_download.py", "--source", "phantom", "--n", "16", "--seed", "5", "--out", str(root / "01"))
    stage("02_clean.py", "--in", str(root / "01"), "--out", str(root / "02"))
    stage("03_enhance.py", "--in", str(root / "02"), "--out", str(root / "03"))
    stage("04_cluster.py", "--in", str(root / "03"), "--out", str(root / "04"), "--sweep-images", "6",
          "--regions", "watershed,chanvese")
    return root


def test_enhance_writes_enhanced_slices_with_black_background(run: Path) -> None:
    df = manifest.read(run / "03")
    assert (df["status"] == "ok").all() and len(df) == 16
    for row in df.itertuples():
        enhanced = read_image(run / "03" / row.image_path).pixels
        cleaned = read_image(run / "03" / row.clean_image_path).pixels
        head = read_mask(run / "03" / row.head_mask_path)
        assert enhanced.shape == cleaned.shape == head.shape
        assert (enhanced[~head] == 0).all()
        assert not np.array_equal(enhanced[head], cleaned[head])  # the chain did something
        assert (run / "03" / row.clean_image_path).resolve().is_relative_to((run / "02").resolve())
    metrics = json.loads((run / "03" / "metrics.json").read_text())
    assert metrics["edge_strength"]["images"] == 16
    assert metrics["tumour_cnr"]["images"] == int((df["label"] == "tumor").sum())
    for name in ("report.html", "qc/contrast.csv", "qc/cdf_before.png", "qc/cdf_after.png", "qc/contact_000.png"):
        assert (run / "03" / name).is_file(), name


def test_cluster_records_k_and_why(run: Path) -> None:
    choice = json.loads((run / "04" / "k_choice.json").read_text())
    assert 2 <= choice["k"] <= 20 and choice["reason"] and len(choice["images"]) == 6
    df = manifest.read(run / "04")
    assert (df["k"].astype(int) == choice["k"]).all()
    assert (run / "04" / "qc" / "k_sweep_mean.png").is_file()


def test_cluster_maps_use_the_palette_in_intensity_order(run: Path) -> None:
    df = manifest.read(run / "04")
    row = df.iloc[0]
    labels = read_image(run / "04" / row.cluster_labels_path).pixels.astype(int) - 1
    colours = read_image(run / "04" / row.cluster_path).pixels
    image = read_image(run / "04" / row.image_path).pixels
    k = int(row.k)
    assert labels.max() == k - 1 and labels.min() == -1
    means = [image[labels == c].mean() for c in range(k) if (labels == c).any()]
    assert means == sorted(means)
    for c in range(k):
        if (labels == c).any():
            assert (colours[labels == c] == cluster.PALETTE[c]).all()


def test_candidates_and_features_are_written(run: Path) -> None:
    df = manifest.read(run / "04")
    for row in df.itertuples():
        if row.cand_box:
            x0, y0, x1, y1 = (int(v) for v in row.cand_box.split())
            assert 0 <= x0 < x1 <= 256 and 0 <= y0 < y1 <= 256
        assert 0.0 <= float(row.cand_score) <= 1.0
        assert (run / "04" / row.watershed_path).is_file() and (run / "04" / row.chanvese_path).is_file()
    table = pd.read_csv(run / "04" / "features.csv")
    assert list(table["id"]) == list(df["id"])
    assert list(table.columns[2:]) == list(features.COLUMNS)
    assert np.isfinite(table[list(features.COLUMNS)].to_numpy(float)).all()
    metrics = json.loads((run / "04" / "metrics.json").read_text())
    truth = metrics["candidates_vs_truth"]
    assert 0.0 <= truth["hit_rate"] <= 1.0
    tumours = df[df["label"] == "tumor"]
    assert truth["hit_rate"] == pytest.approx(tumours["cand_hit"].replace("", "0").astype(int).mean(), abs=1e-6)


def test_rerun_skips_finished_slices_and_keeps_inputs(run: Path) -> None:
    before = {p: p.stat().st_mtime_ns for p in (run / "03").rglob("*") if p.is_file()}
    first = run / "04" / "features" / f"{manifest.read(run / '04')['id'][0]}.json"
    stamp = first.stat().st_mtime_ns
    stage("04_cluster.py", "--in", str(run / "03"), "--out", str(run / "04"), "--sweep-images", "6",
          "--regions", "watershed,chanvese")
    assert first.stat().st_mtime_ns == stamp
    assert {p: p.stat().st_mtime_ns for p in (run / "03").rglob("*") if p.is_file()} == before


def test_a_corrupt_slice_becomes_an_error_row(run: Path, tmp_path: Path) -> None:
    broken = tmp_path / "02"
    shutil.copytree(run / "02", broken)
    victim = manifest.read(broken).iloc[2]
    (broken / victim.image_path).write_bytes(b"not an image")
    stage("03_enhance.py", "--in", str(broken), "--out", str(tmp_path / "03"))
    df = manifest.read(tmp_path / "03")
    failed = df[df["status"] == "error"]
    assert list(failed["id"]) == [victim.id]
    assert victim.image_path.split("/")[-1] in failed["error"].iloc[0]
    assert (df["status"] == "ok").sum() == 15


def test_bad_options_fail_with_one_line(run: Path, tmp_path: Path) -> None:
    import subprocess
    import sys

    from tests.conftest import ROOT

    for script, args, needle in (
        ("03_enhance.py", ["--chain", "musica,sharpen"], "sharpen"),
        ("04_cluster.py", ["--k", "1"], "--k 1"),
        ("04_cluster.py", ["--regions", "snakes"], "snakes"),
    ):
        done = subprocess.run([sys.executable, str(ROOT / "scripts" / script), "--in", str(run / "03"),
                               "--out", str(tmp_path / script), *args], capture_output=True, text=True)
        assert done.returncode != 0
        assert needle in done.stderr and "Traceback" not in done.stderr, done.stderr[-500:]
