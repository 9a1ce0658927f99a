"""Cheng's figshare brain-tumour set: its MATLAB files turned into an images/ + masks/ tree with index.csv.

Why: the set (figshare 1512427, 3064 T1 contrast-enhanced slices of 233 patients,
each with a manual tumour mask; CC BY 4.0, cite Cheng et al., PLoS ONE 2015 and
2016) is the public source of true masks that 08 trains on besides its own
pseudo-labels (`--extra-masks`). It ships as MATLAB v7.3 files (HDF5): per slice
`cjdata/image` (int16), `cjdata/tumorMask`, `cjdata/label` (1 meningioma,
2 glioma, 3 pituitary) and `cjdata/PID` (the patient). Kaggle re-hosts the same
files as `ashkhagan/figshare-brain-tumor-dataset` (FIGSHARE_DATASET), which
01's `--source figshare` downloads.

The tree written matches `../shared/data/figshare_seg`: images/cheng_NNNN.png
(8-bit, the slice scaled from its own 0.5th to 99.5th percentile),
masks/cheng_NNNN.png (0/255), NNNN the file's number, and index.csv with the
tumour type and the patient, which keeps a patient's slices on one side of a split.
HDF5 stores MATLAB's column-major arrays transposed, so both arrays are transposed back.
"""

from __future__ import annotations

import re
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from lib.common.io import write_png

FIGSHARE_DATASET = "ashkhagan/figshare-brain-tumor-dataset"
LABEL_NAMES = {1: "meningioma", 2: "glioma", 3: "pituitary"}
_NUMBER = re.compile(r"(\d+)\.mat$", re.IGNORECASE)


class MatError(ValueError):
    """A MATLAB file that is not one of Cheng's slices."""


def holds_mat(root: Path) -> bool:
    """Whether `root` holds Cheng's .mat files (loose or in the zip parts the figshare download comes as)."""
    return Path(root).is_dir() and (any(Path(root).rglob("*.mat")) or any(Path(root).rglob("brainTumorData*.zip")))


def read_slice(path: Path) -> dict[str, object]:
    """One .mat file: image (float), mask (bool), label (int), patient (str)."""
    import h5py  # HDF5 reader; only this source needs it

    try:
        with h5py.File(path, "r") as f:
            data = f["cjdata"]
            image = np.asarray(data["image"], np.float32).T
            mask = np.asarray(data["tumorMask"]).T > 0
            label = int(np.asarray(data["label"]).ravel()[0])
            patient = "".join(chr(int(c)) for c in np.asarray(data["PID"]).ravel())
    except (OSError, KeyError) as err:
        raise MatError(f"{path}: not a figshare slice ({err}); expected MATLAB v7.3 with cjdata/image, "
                       "tumorMask, label and PID") from None
    if image.shape != mask.shape:
        raise MatError(f"{path}: image {image.shape} and tumorMask {mask.shape} differ")
    return {"image": image, "mask": mask, "label": label, "patient": patient}


def to_uint8(image: np.ndarray) -> np.ndarray:
    """8-bit grey from the slice's own 0.5th-99.5th percentiles: bright vessels do not darken the rest."""
    low, high = np.percentile(image, (0.5, 99.5))
    scaled = (image - low) / max(float(high - low), 1e-6)
    return (np.clip(scaled, 0, 1) * 255).round().astype(np.uint8)


def convert(root: Path, dest: Path) -> Path:
    """Write dest/images, dest/masks and dest/index.csv from every .mat under `root`; returns dest.

    Zip parts (brainTumorDataPublic_*.zip) are read in place. A rerun skips slices already written."""
    files = _mat_files(Path(root), dest / "mat")
    if not files:
        raise MatError(f"{root}: no .mat files found; download the figshare set (01 --source figshare)")
    rows = []
    for path in tqdm(files, desc="01 figshare .mat -> png", unit="img"):
        number = int(_NUMBER.search(path.name).group(1))
        name = f"cheng_{number:04d}.png"
        found = read_slice(path)
        if not (dest / "masks" / name).is_file():
            write_png(dest / "images" / name, to_uint8(found["image"]))
            write_png(dest / "masks" / name, found["mask"].astype(np.uint8) * 255)
        rows.append({"file": name, "figshare_index": number, "label": found["label"],
                     "label_name": LABEL_NAMES.get(found["label"], "unknown"), "patient": found["patient"]})
    pd.DataFrame(rows).sort_values("figshare_index").to_csv(dest / "index.csv", index=False)
    return dest


def _mat_files(root: Path, unzip_to: Path) -> list[Path]:
    """The numbered .mat files under root, the zip parts' contents extracted once into `unzip_to`."""
    for part in sorted(root.rglob("brainTumorData*.zip")):
        with zipfile.ZipFile(part) as archive:
            for member in archive.namelist():
                if member.lower().endswith(".mat") and not (unzip_to / Path(member).name).is_file():
                    unzip_to.mkdir(parents=True, exist_ok=True)
                    (unzip_to / Path(member).name).write_bytes(archive.read(member))
    found = {p.name: p for p in [*root.rglob("*.mat"), *unzip_to.glob("*.mat")] if _NUMBER.search(p.name)}
    return sorted(found.values(), key=lambda p: int(_NUMBER.search(p.name).group(1)))
