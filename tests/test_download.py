"""Stage 01 on messy local trees, and the Kaggle path failing fast offline."""

import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from lib.acquire import run_download, sources
from lib.common import manifest
from lib.common.io import write_png
from lib.common.stage import Progress
from tests.conftest import ROOT, shared_data


def _picture(seed: int, size: int = 96) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return (rng.random((size // 8, size // 8)) * 255).astype(np.uint8).repeat(8, 0).repeat(8, 1)


def _messy_tree(root: Path) -> None:
    """Nested twice like the Kaggle zip, odd names, a lying extension, a copy, junk."""
    for base in (root / "brain", root / "brain" / "brain_tumor_dataset"):
        (base / "yes").mkdir(parents=True)
        (base / "no").mkdir()
        Image.fromarray(_picture(1)).save(base / "yes" / "Y1.jpg", format="JPEG")
        Image.fromarray(_picture(2)).convert("RGBA").save(base / "no" / "no 9.jpg", format="PNG")  # lies
        Image.fromarray(_picture(3)).save(base / "no" / "N3.JPG", format="JPEG")
    (root / "brain" / "yes" / "Y1 copy.jpg").write_bytes((root / "brain" / "yes" / "Y1.jpg").read_bytes())
    (root / "brain" / "no" / "notes.jpg").write_text("not an image")
    (root / "brain" / "no" / ".DS_Store").write_bytes(b"\0")


def run_stage(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(ROOT / "scripts" / "01_download.py"), *args],
                          capture_output=True, text=True, timeout=300)


@pytest.mark.slow
def test_folder_import_describes_every_file(tmp_path: Path) -> None:
    _messy_tree(tmp_path / "src")
    out = tmp_path / "01"
    result = run_stage("--source", "folder", "--path", str(tmp_path / "src"), "--out", str(out), "--workers", "1")
    assert result.returncode == 0, result.stderr
    df = manifest.read(out).set_index("id")
    # the shallowest class tree wins; hidden files are skipped; junk is an error row
    assert sorted(df.index) == ["no_N3", "no_no_9", "no_notes", "yes_Y1", "yes_Y1_copy"]
    assert df.loc["no_no_9", "format"] == "PNG" and df.loc["no_no_9", "mode"] == "RGBA"
    assert df.loc["no_notes", "status"] == "error" and "not a readable image" in df.loc["no_notes", "error"]
    assert df.loc["yes_Y1", "dup_group"] == df.loc["yes_Y1_copy", "dup_group"]
    assert df.loc["yes_Y1", "dup_exact"] == "2"
    assert df.loc["yes_Y1", "label"] == "tumor" and df.loc["no_N3", "label"] == "no_tumor"
    copied = out / df.loc["no_no_9", "source_path"]
    assert copied.read_bytes() == (tmp_path / "src" / "brain" / "no" / "no 9.jpg").read_bytes()
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["errors"] == 1 and metrics["duplicates"]["exact_duplicate_groups"] == 1
    assert "no_notes" in result.stdout  # the error is shown, not only stored


@pytest.mark.slow
def test_rerun_skips_finished_files_and_keeps_the_input(tmp_path: Path) -> None:
    _messy_tree(tmp_path / "src")
    before = {p: p.stat().st_mtime_ns for p in (tmp_path / "src").rglob("*")}
    out = tmp_path / "01"
    args = ("--source", "folder", "--path", str(tmp_path / "src"), "--out", str(out), "--workers", "1")
    assert run_stage(*args).returncode == 0
    stamp = (out / "raw" / "yes" / "Y1.jpg").stat().st_mtime_ns
    first = manifest.read(out)
    time.sleep(0.05)
    assert run_stage(*args).returncode == 0
    assert (out / "raw" / "yes" / "Y1.jpg").stat().st_mtime_ns == stamp  # not copied again
    assert manifest.read(out).equals(first)
    assert run_stage(*args, "--force").returncode == 0
    assert (out / "raw" / "yes" / "Y1.jpg").stat().st_mtime_ns != stamp
    assert {p: p.stat().st_mtime_ns for p in (tmp_path / "src").rglob("*")} == before


@pytest.mark.slow
def test_images_and_masks_tree_keeps_masks(tmp_path: Path) -> None:
    src = tmp_path / "seg"
    for i in range(3):
        write_png(src / "images" / f"case_{i}.png", _picture(i))
        write_png(src / "masks" / f"case_{i}.png", (_picture(i) > 128).astype(np.uint8) * 255)
    out = tmp_path / "01"
    assert run_stage("--source", "folder", "--path", str(src), "--out", str(out)).returncode == 0
    df = manifest.read(out)
    assert list(df["id"]) == ["case_0", "case_1", "case_2"] and set(df["label"]) == {"tumor"}
    assert all((out / p).is_file() for p in df["mask_path"])


@pytest.mark.slow
def test_unknown_layout_and_empty_folder_fail_with_advice(tmp_path: Path) -> None:
    (tmp_path / "pics").mkdir()
    result = run_stage("--source", "folder", "--path", str(tmp_path / "pics"), "--out", str(tmp_path / "o"))
    assert result.returncode == 2 and "--classes" in result.stderr and "Traceback" not in result.stderr
    (tmp_path / "pics" / "yes").mkdir()
    result = run_stage("--source", "folder", "--path", str(tmp_path / "pics"), "--out", str(tmp_path / "o"))
    assert result.returncode == 2 and "hold no files" in result.stderr


@pytest.mark.slow
def test_custom_class_names(tmp_path: Path) -> None:
    for name in ("sick", "fine"):
        write_png(tmp_path / "src" / name / "a.png", _picture(len(name)))
    out = tmp_path / "01"
    result = run_stage("--source", "folder", "--path", str(tmp_path / "src"), "--out", str(out),
                       "--classes", "sick=tumor,fine=no_tumor")
    assert result.returncode == 0, result.stderr
    assert dict(zip(manifest.read(out)["id"], manifest.read(out)["label"])) == {
        "fine_a": "no_tumor", "sick_a": "tumor"}


def test_kaggle_unreachable_fails_fast_with_advice(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sources, "KAGGLE_HOST", ("127.0.0.1", 9))  # nothing listens on discard
    start = time.monotonic()
    with pytest.raises(sources.DownloadError, match="--source folder --path"):
        sources.fetch_kaggle()
    assert time.monotonic() - start < sources.NETWORK_TIMEOUT_S + 1


def _sleep(_: str) -> str:
    time.sleep(30)
    return "never"


@pytest.mark.slow
def test_a_hanging_download_is_stopped_by_the_timeout() -> None:
    start = time.monotonic()
    with pytest.raises(sources.DownloadError, match="more than 1 s"):
        sources._in_subprocess(_sleep, "x", timeout=1)
    assert time.monotonic() - start < 10


@pytest.mark.slow
def test_kaggle_client_is_not_imported_by_the_pipeline() -> None:
    code = "import lib.acquire.run_download, sys; print('kaggle' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.stdout.strip() == "False", result.stderr


@pytest.mark.slow
def test_navoneel_all_files_imported_with_22_exact_groups(tmp_path: Path) -> None:
    src = shared_data("navoneel")
    out = tmp_path / "01"
    result = run_stage("--source", "folder", "--path", str(src), "--out", str(out))
    assert result.returncode == 0, result.stderr
    df = manifest.read(out)
    assert len(df) == 253 and (df["status"] == "ok").all()
    assert df["label"].value_counts().to_dict() == {"tumor": 155, "no_tumor": 98}
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["duplicates"]["exact_duplicate_groups"] == 22
    assert metrics["formats"]["PNG"] == 8  # seven lying no/ files plus no/no 9.png


def test_ids_are_file_system_safe_and_unique() -> None:
    rels = [Path("no/no 9.png"), Path("no/no_9.jpg"), Path("images/Y1.jpg"), Path("yes/Y1.JPG")]
    assert sources.make_ids(rels) == ["no_no_9", "no_no_9-2", "Y1", "yes_Y1"]


def test_the_shallowest_class_tree_wins_and_masks_pair_by_name(tmp_path: Path) -> None:
    for rel in ("yes/a.jpg", "no/b.png", "brain_tumor_dataset/yes/a.jpg", "brain_tumor_dataset/no/b.png"):
        (tmp_path / "zip" / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / "zip" / rel).write_bytes(b"x")
    base, layout = sources.find_layout(tmp_path / "zip", sources.parse_classes(None))
    assert (base, layout) == (tmp_path / "zip", "classes")
    for rel in ("seg/images/s1.png", "seg/masks/s1_mask.png", "seg/images/.hidden.png"):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_bytes(b"x")
    entries = sources.list_folder(tmp_path / "seg", {}, "tumor")
    assert [(e["rel"].as_posix(), e["mask"].name) for e in entries] == [("images/s1.png", "s1_mask.png")]


def test_links_out_of_the_import_folder_are_refused_with_an_error_row(tmp_path: Path) -> None:
    """D3: yes/x.jpg -> a file outside the folder was copied into raw/; now it is an error row, not a copy."""
    src, outside = tmp_path / "src", tmp_path / "outside"
    write_png(src / "no" / "a.png", _picture(1))
    write_png(outside / "secret.png", _picture(2))
    (src / "yes").mkdir()
    (src / "yes" / "x.jpg").symlink_to(outside / "secret.png")
    (src / "yes" / "in.png").symlink_to(Path("..") / "no" / "a.png")  # stays inside: a second name, fine
    (src / "yes" / "gone.png").symlink_to(tmp_path / "missing.png")
    (src / "tumour").symlink_to(outside, target_is_directory=True)  # a class folder on another disk
    (src / "no" / "y.jpg").mkdir()  # a folder with an image's name is no file, and no crash
    out = tmp_path / "01"
    rows = run_download.import_folder(src, out, Progress(out, False, {}), sources.parse_classes(None))
    by_id = {r["id"]: r for r in rows}
    assert sorted(by_id) == ["no_a", "tumour_secret", "yes_gone", "yes_in", "yes_x"]
    assert by_id["yes_in"]["status"] == by_id["no_a"]["status"] == "ok"
    for item_id, words in (("yes_x", "outside the import folder"), ("tumour_secret", "outside the import folder"),
                           ("yes_gone", "a link to nothing")):
        row = by_id[item_id]
        assert row["status"] == "error" and words in row["error"] and row["origin"] in row["error"], row
        assert row["source_path"] == "" and "\n" not in row["error"]
    assert sorted(p.relative_to(out / "raw").as_posix() for p in (out / "raw").rglob("*") if p.is_file()) == [
        "no/a.png", "yes/in.png"]


def test_class_names_must_map_to_a_known_label() -> None:
    assert sources.parse_classes("Ja=tumor, nein=no_tumor") == {"ja": "tumor", "nein": "no_tumor"}
    with pytest.raises(SystemExit, match="label must be tumor, no_tumor or unknown"):
        sources.parse_classes("ja=maybe")
