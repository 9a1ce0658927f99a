"""A job as a Colab notebook: the same code and the same kernels/jobs.py run as a Kaggle kernel, on Colab's GPU.

Cells: what it is (research only), settings, the project unpacked and its
pins installed, the GPU shown, the data fetched (kagglehub with the user's
Kaggle token, a Google Drive folder, or phantoms), the job run, the bundle
zipped and offered as a download. Environment variables let a test run the
very same cells on phantoms with the test profile and no installs:
BRAINMRI_PROFILE, BRAINMRI_DATA, BRAINMRI_ROOT, BRAINMRI_SKIP_INSTALL.
"""

from __future__ import annotations

from pathlib import Path

import nbformat
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

NAVONEEL = "navoneel/brain-mri-images-for-brain-tumor-detection"

INTRO = """# Brain-tumour MRI toolkit: the `{job}` job on a Colab GPU

Tumour / no tumour for 2D brain MRI slices, and the tumour's outline. **For research and education only:
not a medical device, not for diagnosis.**

1. *Runtime → Change runtime type → GPU* (it also runs on the CPU, slowly).
2. To use the Kaggle data set, add your Kaggle API token as the Colab secret `KAGGLE_API_TOKEN`
   (key icon on the left; token from https://www.kaggle.com/settings/api), or set `DATA` below to a
   Google Drive folder of class folders (`yes/`, `no/`), or to `"phantom"`.
3. *Runtime → Run all*. The last cell downloads the bundle; serve it at home with
   `make demo BUNDLE=<unzipped folder>`.

What the job runs: {summary} (profile `{profile}`, kernels/profiles/{profile}.mk)."""

SETTINGS = """import os, subprocess, sys
from pathlib import Path

JOB = {job!r}
PROFILE = os.environ.get("BRAINMRI_PROFILE", {profile!r})
# "kaggle": navoneel's slices via kagglehub; "drive:<folder>": class folders on your Google Drive;
# "phantom": generated slices with true masks; any other text: a local folder of class folders.
DATA = os.environ.get("BRAINMRI_DATA", "kaggle")
WORK = Path(os.environ.get("BRAINMRI_ROOT", "/content/brainmri"))  # input/ (data) and working/ (outputs)"""

UNPACK = """import base64, io, zipfile

PAYLOAD = "{payload}"
src = WORK / "working" / "brainmri_src"
zipfile.ZipFile(io.BytesIO(base64.b64decode(PAYLOAD))).extractall(src)
if not os.environ.get("BRAINMRI_SKIP_INSTALL"):  # the project's pinned versions (a few minutes)
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "-r", str(src / "requirements.txt")],
                   check=True)
print("project unpacked in", src)"""

GPU = """import shutil

if shutil.which("nvidia-smi"):
    subprocess.run(["nvidia-smi", "-L"])
else:
    print("no GPU: Runtime -> Change runtime type -> GPU (the job still runs on the CPU, slowly)")"""

FETCH = """inputs = WORK / "input"
inputs.mkdir(parents=True, exist_ok=True)
source = "attached"


def attach(folder, name):
    link = inputs / name
    if not link.exists():
        link.symlink_to(Path(folder).resolve(), target_is_directory=True)


if DATA == "kaggle":
    try:
        from google.colab import userdata
        os.environ.setdefault("KAGGLE_API_TOKEN", userdata.get("KAGGLE_API_TOKEN"))
    except Exception:  # not on Colab, or no such secret: kagglehub looks in ~/.kaggle itself
        pass
    import kagglehub
    attach(kagglehub.dataset_download({navoneel!r}), "navoneel")
elif DATA.startswith("drive:"):
    from google.colab import drive
    drive.mount("/content/drive")
    attach(DATA[len("drive:"):], "drive")
elif DATA == "phantom":
    source = "phantom"
else:
    attach(DATA, Path(DATA).name)
print("data:", DATA)"""

RUN = """done = subprocess.run([sys.executable, str(src / "kernels" / "jobs.py"), "run", JOB, "--profile", PROFILE,
                       "--root", str(WORK), "--source", source, "--installed"])
assert done.returncode == 0, "the job failed: its message is above"
"""

DOWNLOAD = """import shutil

results = WORK / "working"
bundle = results / "bundle"
archive = shutil.make_archive(str(WORK / f"brainmri-{JOB}"), "zip", bundle if bundle.is_dir() else results / "data")
try:
    from google.colab import files
    files.download(archive)
except ImportError:
    print("results zipped at", archive)"""


def cells(job: str, profile: str, payload: str, summary: str) -> list:
    """The notebook's cells, in order."""
    return [new_markdown_cell(INTRO.format(job=job, profile=profile, summary=summary)),
            new_code_cell(SETTINGS.format(job=job, profile=profile)),
            new_code_cell(UNPACK.format(payload=payload)),
            new_code_cell(GPU),
            new_code_cell(FETCH.format(navoneel=NAVONEEL)),
            new_code_cell(RUN),
            new_code_cell(DOWNLOAD)]


def write(job: str, profile: str, payload: str, path: Path) -> Path:
    """Write the validated notebook for `job` to `path`."""
    from kernels.jobs import JOBS

    notebook = new_notebook(cells=cells(job, profile, payload, JOBS[job].summary),
                            metadata={"accelerator": "GPU", "colab": {"name": path.name, "provenance": []},
                                      "kernelspec": {"name": "python3", "display_name": "Python 3"},
                                      "language_info": {"name": "python"}})
    nbformat.validate(notebook)
    path.parent.mkdir(parents=True, exist_ok=True)
    nbformat.write(notebook, str(path))
    return path
