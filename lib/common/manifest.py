"""The manifest: one CSV row per image, the contract between stages.

Every stage folder holds a `manifest.csv`. A stage reads the previous one,
keeps all of its columns and adds its own. Columns whose name ends in `_path`
hold file paths *relative to the folder of the manifest that holds them*, so a
stage folder can be moved, zipped or attached to a Kaggle kernel as a data set
and still resolve; `rebase` rewrites them when a row moves to another folder.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pandas as pd

from lib.common.io import atomic_path

MANIFEST = "manifest.csv"
# Rows written so far by an unfinished run; renamed to MANIFEST at the end, so
# a file-based `make` rule on manifest.csv never sees a half-finished stage.
PARTIAL = "manifest.partial.csv"

LABELS = ("tumor", "no_tumor", "unknown")

# Written by 01_download for every image.
DOWNLOAD_COLUMNS = [
    "id",  # unique, file-system safe, stable for a given source tree
    "source_path",  # the imported original (copied byte for byte)
    "origin",  # where it came from: data set handle or folder, and its name there
    "label",  # tumor / no_tumor / unknown
    "mask_path",  # true tumour mask (0/255), empty when none is known
    "brain_mask_path",  # true brain mask, phantoms only
    "sha256",  # of the file bytes
    "phash",  # 64-bit DCT perceptual hash, hex
    "dup_group",  # exact and near duplicates share it (see lib.common.dedup)
    "dup_exact",  # number of byte-identical files, itself included
    "format",  # real format from the content, not the extension
    "mode",  # colour mode stored in the file (L, RGB, RGBA, P, I;16 ...)
    "width",
    "height",
    "file_size",
    "status",  # ok / error
    "error",  # one-line reason when status is error
]
# Added by 01 for slices of a DICOM or NIfTI file (lib.common.scanner_files); empty for plain images.
VOLUME_COLUMNS = [
    "volume_path",  # the imported scanner file the slice comes from
    "slice_index",  # its place in the file (0-based)
    "slice_count",  # slices in that file
    "spacing_mm",  # "rows columns between-slices" voxel size in mm, empty when the file does not say
]


def is_path_column(column: str) -> bool:
    return column.endswith("_path")


def read(stage_dir: str | os.PathLike) -> pd.DataFrame:
    """Read a stage's manifest with every column as text (empty stays '')."""
    path = Path(stage_dir) / MANIFEST
    if not path.is_file():
        raise FileNotFoundError(
            f"{path}: no manifest here; run the previous stage first or point --in at its output folder"
        )
    return _read_csv(path)


def read_partial(stage_dir: str | os.PathLike) -> pd.DataFrame | None:
    """Rows of a finished or interrupted earlier run in `stage_dir`, if any."""
    for name in (MANIFEST, PARTIAL):
        path = Path(stage_dir) / name
        if path.is_file():
            return _read_csv(path)
    return None


def _read_csv(path: Path) -> pd.DataFrame:
    try:
        return pd.read_csv(path, dtype=str, keep_default_na=False)
    except pd.errors.EmptyDataError:  # a stage that found nothing writes an empty table
        return pd.DataFrame(columns=["id", "status"])


def write(df: pd.DataFrame, stage_dir: str | os.PathLike, partial: bool = False) -> Path:
    """Write atomically; the final write removes the partial checkpoint."""
    stage_dir = Path(stage_dir)
    path = stage_dir / (PARTIAL if partial else MANIFEST)
    with atomic_path(path) as tmp:
        df.to_csv(tmp, index=False)
    if not partial:
        (stage_dir / PARTIAL).unlink(missing_ok=True)
    return path


def rebase(df: pd.DataFrame, from_dir: str | os.PathLike, to_dir: str | os.PathLike) -> pd.DataFrame:
    """Rewrite relative `*_path` columns so they resolve from `to_dir`."""
    out = df.copy()
    src, dst = Path(from_dir).resolve(), Path(to_dir).resolve()
    for column in filter(is_path_column, out.columns):
        out[column] = [_rebase_one(value, src, dst) for value in out[column]]
    return out


def _rebase_one(value: str, src: Path, dst: Path) -> str:
    if not value or os.path.isabs(value):
        return value
    return os.path.relpath(src / value, dst)


def resolve(stage_dir: str | os.PathLike, value: str) -> Path:
    """Absolute path of a `*_path` cell of the manifest in `stage_dir`."""
    return (Path(stage_dir) / value).resolve()


def relative(stage_dir: str | os.PathLike, path: str | os.PathLike) -> str:
    """The `*_path` cell for `path` in the manifest of `stage_dir`."""
    return os.path.relpath(Path(path).resolve(), Path(stage_dir).resolve())


def slice_path(row: Mapping[str, Any], images: str = "clean") -> str:
    """The slice a model sees, relative to the row's folder: 02's clean slice (the default, and what
    08 trains on) or, with images="enhanced" or before 03 ran, image_path (03's enhanced slice)."""
    if images == "clean" and row.get("clean_image_path"):
        return row["clean_image_path"]
    return row["image_path"]


def ok_rows(df: pd.DataFrame) -> pd.DataFrame:
    """Rows the previous stage handled successfully."""
    return df[df["status"] == "ok"] if "status" in df.columns else df


def error_list(df: pd.DataFrame) -> dict[str, str]:
    """{id: one-line reason} for every row whose status is error (for metrics.json)."""
    failed = df[df["status"] == "error"]
    return dict(zip(failed["id"], failed["error"]))


def frame(rows: list[dict], columns: list[str] | None = None) -> pd.DataFrame:
    """Table from row dicts: `columns` first (those present), any others after."""
    df = pd.DataFrame(rows).fillna("")
    if columns:
        df = df[[c for c in columns if c in df.columns] + [c for c in df.columns if c not in columns]]
    return df


def write_rows(rows: list[dict], stage_dir: str | os.PathLike, columns: list[str] | None = None) -> pd.DataFrame:
    """Write the final manifest from row dicts; return it."""
    df = frame(rows, columns)
    write(df, stage_dir)
    return df
