"""Issue 32's acceptance: the bad-input corpus (tests/bad_inputs.py) through 01, 02, predict.py and the demo.

No crash; one row or message per input that names the file and what is wrong; every input byte-identical
afterwards; predict.py's peak memory under 1.5 GB. Each stage runs once per module (a fixture); the tests
read its outputs.
"""

import hashlib
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from lib.common import manifest
from tests import bad_inputs
from tests.conftest import ROOT

pytestmark = pytest.mark.slow  # runs stages in subprocesses and builds a bundle

PEAK_LIMIT_KB = 1.5 * 1024 * 1024  # 1.5 GB, in the kilobytes ru_maxrss counts on Linux
# Runs a command and prints the peak resident memory of it and its children: RUSAGE_CHILDREN of this small
# process sees only them, not the test run's other stages.
PEAK_WRAPPER = ("import resource, subprocess, sys; code = subprocess.run(sys.argv[1:]).returncode; "
                "print('peak_rss_kb', resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, file=sys.stderr); "
                "sys.exit(code)")
ANCHORS = ("good_png", "good_jpeg", "dicom_plain", "nifti_3d")  # good inputs every reader must predict


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return bad_inputs.build(tmp_path_factory.mktemp("bad_inputs") / "corpus")


@pytest.fixture(scope="module")
def before(corpus: dict[str, Path]) -> dict[str, str]:
    """The corpus (and the link's target beside it) before any stage ran."""
    return snapshot(_root(corpus).parent)


@pytest.fixture(scope="module")
def stages(corpus: dict[str, Path], before: dict[str, str], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """01 then 02 over the corpus; their folders' parent."""
    out = tmp_path_factory.mktemp("bad_stages")
    run(ROOT / "scripts" / "01_download.py", "--source", "folder", "--path", _root(corpus), "--out", out / "01")
    run(ROOT / "scripts" / "02_clean.py", "--in", out / "01", "--out", out / "02")
    return out


@pytest.fixture(scope="module")
def predicted(corpus: dict[str, Path], before: dict[str, str], tiny_bundle: Path,
              tmp_path_factory: pytest.TempPathFactory) -> tuple[pd.DataFrame, int]:
    """predict.py over the corpus folder, with masks: (its CSV, its peak memory in kB)."""
    out = tmp_path_factory.mktemp("bad_predict")
    result = run("-c", PEAK_WRAPPER, sys.executable, ROOT / "scripts" / "predict.py", "--bundle", tiny_bundle,
                 "--in", _root(corpus), "--out", out / "p.csv", "--masks", out / "masks")
    peak = int(result.stderr.rsplit("peak_rss_kb", 1)[1].split()[0])
    return pd.read_csv(out / "p.csv", dtype=str, keep_default_na=False), peak


@pytest.fixture(scope="module")
def answers(corpus: dict[str, Path], before: dict[str, str], tiny_bundle: Path) -> dict[str, Any]:
    """The demo's upload handler on every case, in process: {case: its outputs, or the exception it raised}."""
    from demo import app  # here: only this fixture needs the demo (and its imports)
    from lib.deploy.predictor import Predictor

    demo = app.Demo(Predictor(tiny_bundle), sam_available=False)
    found: dict[str, Any] = {}
    for name, path in corpus.items():
        try:
            found[name] = demo.analyse(str(path))
        except Exception as err:  # noqa: BLE001 - the test reports it
            found[name] = err
    return found


def run(*args: str | Path) -> subprocess.CompletedProcess:
    """A Python child that must end well: exit 0 and no traceback."""
    result = subprocess.run([sys.executable, *map(str, args)], capture_output=True, text=True, timeout=900)
    assert result.returncode == 0 and "Traceback" not in result.stderr, result.stderr[-3000:]
    return result


def snapshot(folder: Path) -> dict[str, str]:
    """Every entry under `folder`: a file's SHA-256, a link's target (never followed), 'folder' for a folder."""
    entries = {}
    for path in sorted(folder.rglob("*")):
        if path.is_symlink():
            entries[str(path)] = f"link -> {os.readlink(path)}"
        elif path.is_dir():
            entries[str(path)] = "folder"
        else:
            entries[str(path)] = hashlib.sha256(path.read_bytes()).hexdigest()
    return entries


def _root(corpus: dict[str, Path]) -> Path:
    return corpus["good_png"].parents[1]  # corpus/yes/good.png


def _names_file(message: str, path: Path) -> bool:
    return path.name in message and "\n" not in message


# --- the tests -----------------------------------------------------------------------------------------


def test_the_corpus_holds_at_least_40_cases_written_here(corpus: dict[str, Path]) -> None:
    assert len(corpus) >= 40
    assert set(bad_inputs.REFUSED) | set(bad_inputs.SLICES) <= set(corpus)
    assert corpus["link_out"].is_symlink() and not corpus["link_out"].resolve().is_relative_to(_root(corpus))
    assert corpus["dir_named_jpg"].is_dir() and corpus["huge_header"].stat().st_size < 1000


def test_01_gives_a_row_naming_the_file_for_every_input(corpus: dict[str, Path], stages: Path) -> None:
    df = manifest.read(stages / "01")
    files = bad_inputs.files(corpus)
    assert set(df["origin"]) == {str(p) for p in files.values()}  # every file, and no folder named x.jpg
    rows = {name: df[df["origin"] == str(path)] for name, path in files.items()}
    for name, count in bad_inputs.SLICES.items():  # a volume: a row per slice, each with its volume
        assert len(rows[name]) == count and rows[name]["volume_path"].ne("").all(), name
    failed = {name for name, found in rows.items() if found["status"].eq("error").any()}
    assert failed == set(bad_inputs.REFUSED)  # the rest, odd encodings included, are read
    for name in failed:
        error = rows[name]["error"].iloc[0]
        assert _names_file(error, files[name]) and bad_inputs.REFUSED[name] in error and "; " in error, error
    assert not (stages / "01" / "raw" / "yes" / "x.jpg").exists()  # the link out was not followed


def test_02_keeps_a_row_per_import_and_says_why_for_each_error(stages: Path) -> None:
    imported, cleaned = manifest.read(stages / "01"), manifest.read(stages / "02")
    assert list(cleaned["id"]) == list(imported["id"])
    failed = cleaned[cleaned["status"] == "error"]
    assert set(failed["id"]) >= set(imported.loc[imported["status"] == "error", "id"])
    for row in failed.itertuples():
        assert _names_file(row.error, Path(row.origin)) or _names_file(row.error, Path(row.source_path)), row.error
    assert all((stages / "02" / p).is_file() for p in cleaned.loc[cleaned["status"] == "ok", "image_path"])


def test_predict_gives_a_row_naming_the_file_for_every_input(corpus: dict[str, Path],
                                                             predicted: tuple[pd.DataFrame, int]) -> None:
    df, _ = predicted
    files = bad_inputs.files(corpus)
    assert set(df["file"]) == {str(p) for p in files.values()}
    rows = {name: df[df["file"] == str(path)] for name, path in files.items()}
    for name, count in bad_inputs.SLICES.items():  # a volume: a row per slice, then its summary row
        assert list(rows[name]["slice"]) == [str(k) for k in range(count)] + ["volume"], name
    for name, found in rows.items():
        for error in found["error"][found["error"] != ""]:
            assert _names_file(error, files[name]), error
    for name in set(bad_inputs.REFUSED) - {"link_out"}:
        assert bad_inputs.REFUSED[name] in rows[name]["error"].iloc[0], name
    for name in ANCHORS:
        assert rows[name]["label_pred"].isin(["tumor", "no_tumor"]).all() and rows[name]["error"].eq("").all()


def test_predict_peak_memory_stays_under_1_5_gb(predicted: tuple[pd.DataFrame, int]) -> None:
    _, peak_kb = predicted
    print(f"predict.py peak memory: {peak_kb} kB ({peak_kb / 1024:.0f} MB)")  # shown with pytest -rP
    assert 0 < peak_kb < PEAK_LIMIT_KB, f"predict.py peaked at {peak_kb / 1024:.0f} MB"


def test_the_demo_answers_every_input_with_a_message(corpus: dict[str, Path], answers: dict[str, Any]) -> None:
    raised = {name: repr(found) for name, found in answers.items() if isinstance(found, Exception)}
    assert not raised
    for name, (crop, verdict, *_, status, _state) in answers.items():
        assert bool(status) != bool(verdict), name  # a verdict, or a line saying why not
        if status:
            assert status.startswith("**Could not analyse this file.**") and _names_file(status, corpus[name])
    for name in set(bad_inputs.REFUSED) - {"link_out"}:
        assert bad_inputs.REFUSED[name] in answers[name][5], (name, answers[name][5])
    assert "a folder, not a file" in answers["dir_named_jpg"][5]
    for name in ANCHORS:
        assert "Tumour probability" in answers[name][1], name


def test_every_input_is_byte_identical_afterwards(corpus: dict[str, Path], before: dict[str, str], stages: Path,
                                                  predicted: tuple[pd.DataFrame, int],
                                                  answers: dict[str, Any]) -> None:
    assert snapshot(_root(corpus).parent) == before  # files, links and the file outside the corpus alike
