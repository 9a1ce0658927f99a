"""Mask-labelled slices from folders besides 08's own input: `--extra-masks` to train on, `--score-on` to test on.

Why: 155 navoneel slices with SAM's guesses are too few and too alike to teach a
segmenter what a tumour looks like elsewhere; every folder of true masks a user
has (figshare's `images/` + `masks/`, an earlier stage folder) should train it,
and a folder it never trained on should score it.

A folder is either
- a stage folder from 02 on (manifest.csv with mask_path, e.g. 02_clean of a mask set): its slices
  are used as they are, already cleaned by 02; or
- a raw source, 01's stage folder (e.g. `01 --source figshare`) or an `images/` + `masks/` tree
  (lib.acquire.sources.list_folder): each slice is cleaned and
  cropped by 02's algorithm with the input's size, and its mask warped into the same frame,
  so that the network sees what the bundle's predictor will feed it. The prepared slices are
  written under 08's folder (sources/<name>/) and reused by a rerun with the same settings.
  An `index.csv` beside them (figshare, lgg) adds its columns: `label_name` becomes the
  tumour type the scores are broken down by, `patient` the group a split keeps together.
Empty masks mean tumour-free slices. Each source is split by its own rule
(lib.common.splits.segmentation_parts).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from lib.acquire import sources
from lib.common import manifest, splits
from lib.common.io import ImageReadError, read_image, read_mask, write_png
from lib.common.stage import read_lineage
from lib.preprocess import clean

PREPARED = "sources"  # 08's subfolder of prepared raw sources
COLUMNS = ("source", "id", "label", "image_path", "mask_path", "head_mask_path", "kind", "group", "block")


class MaskSourceError(ValueError):
    """A folder that holds no usable mask-labelled slices; the message says what it needs."""


def source_name(folder: Path, taken: set[str]) -> str:
    """A short unique name for a source, safe as a folder name: its folder's name ("figshare_seg"), or with its
    parent's for a stage folder ("figshare_02_clean"), numbered when taken."""
    folder = Path(folder).resolve()
    base = f"{folder.parent.name}_{folder.name}" if (folder / manifest.MANIFEST).is_file() else folder.name
    name, k = base, 2
    while name in taken:
        name, k = f"{base}-{k}", k + 1
    return name


def load(folder: Path, name: str, prepared_root: Path, size: int, skull_strip: bool = False) -> pd.DataFrame:
    """The mask-labelled slices of `folder` (COLUMNS, absolute paths), preparing a raw tree first."""
    folder = Path(folder).resolve()  # 08 joins paths to its own folder: absolute ones stay as they are
    prepared_root = Path(prepared_root).resolve()
    stage = manifest.read(folder) if (folder / manifest.MANIFEST).is_file() else None
    if stage is not None and "square_box" in stage.columns:  # 02 or later cleaned it; 01's rows are raw files
        rows = from_stage_folder(folder, stage)
    else:
        rows = prepare_raw(folder, prepared_root / name, size, skull_strip)
    rows = rows.assign(source=name)
    if not (rows["label"] == "tumor").any():
        raise MaskSourceError(f"{folder}: no slice with a tumour mask; give a folder of images/ + masks/ or a "
                              "stage folder whose manifest has mask_path")
    return rows[list(COLUMNS)]


def from_stage_folder(folder: Path, df: pd.DataFrame) -> pd.DataFrame:
    """The ok rows of a stage folder's manifest `df` that have a true mask or a tumour-free label, with absolute
    paths."""
    df = manifest.ok_rows(df)
    if "mask_path" not in df:
        df = df.assign(mask_path="")
    df = df[(df["mask_path"] != "") | (df["label"] == "no_tumor")]
    rows, index = [], index_columns(folder)
    for r in df.to_dict("records"):
        head = r.get("head_mask_path") or ""
        rows.append({"id": r["id"], "label": r["label"], "image_path": str(folder / manifest.slice_path(r)),
                     "mask_path": str(folder / r["mask_path"]) if r["mask_path"] else "",
                     "head_mask_path": str(folder / head) if head else "", "kind": "", "block": "",
                     "group": r.get("dup_group") or r["id"]} | index.get(r["id"], {}))
    return pd.DataFrame(rows, columns=[c for c in COLUMNS if c != "source"])


def raw_entries(root: Path) -> list[dict[str, Any]]:
    """(id, image file, mask file) of a raw source: 01's stage folder or an images/ + masks/ tree."""
    if (root / manifest.MANIFEST).is_file():
        rows = manifest.ok_rows(manifest.read(root))
        if "mask_path" not in rows:
            return []
        return [{"id": r["id"], "src": root / r["source_path"], "group": r.get("dup_group", ""),
                 "mask": root / r["mask_path"] if r["mask_path"] else None} for r in rows.to_dict("records")]
    try:
        entries = sources.list_folder(Path(root), {}, "tumor")
    except sources.DownloadError as err:
        raise MaskSourceError(str(err)) from None
    return [e | {"id": item_id} for item_id, e in zip(sources.make_ids(e["rel"] for e in entries), entries)]


def prepare_raw(root: Path, dest: Path, size: int, skull_strip: bool) -> pd.DataFrame:
    """Clean and crop every image of a raw source as 02 does, its mask warped alike, into `dest`.

    Unreadable files are skipped with a one-line warning each (the rest still trains); a rerun with
    the same settings reuses what was written (dest/settings.json, dest/manifest.csv)."""
    settings = {"root": str(Path(root).resolve()), "size": int(size), "skull_strip": bool(skull_strip),
                "columns": list(COLUMNS)}  # a table of older columns is prepared afresh
    done = dest / manifest.MANIFEST
    if done.is_file() and _read_json(dest / "settings.json") == settings:
        return _absolute(manifest.read(dest), dest)
    entries = [e for e in raw_entries(Path(root)) if e.get("mask")]
    if not entries:
        raise MaskSourceError(f"{root}: no image has a mask of the same name in masks/")
    extra = index_columns(Path(root))
    rows = []
    for entry in tqdm(entries, desc=f"08 prepare {Path(root).name}", unit="img"):
        try:
            rows.append(_prepare_one(entry, entry["id"], dest, size, skull_strip) | extra.get(entry["id"], {}))
        except ImageReadError as err:
            print(f"warning: {entry['src']}: {err}; skipped (fix or remove the file)")
    table = pd.DataFrame(rows).reindex(columns=[c for c in COLUMNS if c != "source"]).fillna("")
    table["group"] = [g or i for g, i in zip(table["group"], table["id"])]
    dest.mkdir(parents=True, exist_ok=True)
    manifest.write(table, dest)
    (dest / "settings.json").write_text(json.dumps(settings))
    return _absolute(table, dest)


def _prepare_one(entry: dict[str, Any], item_id: str, dest: Path, size: int, skull_strip: bool) -> dict[str, Any]:
    """One slice of a raw tree through 02's cleaning; its mask warped into the clean frame."""
    pixels = read_image(entry["src"]).pixels
    truth = read_mask(entry["mask"])
    if truth.shape != pixels.shape[:2]:
        raise ImageReadError(f"mask {entry['mask'].name} is {truth.shape[1]}x{truth.shape[0]}, the image "
                             f"{pixels.shape[1]}x{pixels.shape[0]}")
    result = clean.clean_image(pixels, size=size, skull_strip=skull_strip)
    mask = clean.warp_mask(truth, result.square_box, size)
    paths = {"image_path": f"images/{item_id}.png", "mask_path": f"masks/{item_id}.png" if mask.any() else "",
             "head_mask_path": f"heads/{item_id}.png"}
    write_png(dest / paths["image_path"], result.image)
    write_png(dest / paths["head_mask_path"], clean.head_mask(result.image).astype(np.uint8) * 255)
    if mask.any():
        write_png(dest / paths["mask_path"], mask.astype(np.uint8) * 255)
    return {"id": item_id, "label": "tumor" if mask.any() else "no_tumor", "group": entry.get("group", ""), **paths}


def index_columns(root: Path) -> dict[str, dict[str, str]]:
    """Per file stem, what the data set's index.csv says: tumour type (label_name -> kind), patient (-> group)
    and block of consecutive indices (index_block -> block). Found beside a raw tree, in 01's converted/
    (01 --source figshare), or, for a stage folder, where its lineage says 01 imported from."""
    path = next((p for p in _index_files(Path(root)) if p.is_file()), None)
    if path is None:
        return {}
    index = pd.read_csv(path, dtype=str).fillna("")
    if "file" not in index:
        return {}
    return {Path(r["file"]).stem: {"kind": r.get("label_name", ""), "block": r.get("index_block", ""),
                                   **({"group": r["patient"]} if r.get("patient") else {})}
            for r in index.to_dict("records")}


def _index_files(root: Path) -> list[Path]:
    """Where a source's index.csv may be: beside it, in 01's converted/, or in the folder 01 imported."""
    found = [root / "index.csv", root / "converted" / "index.csv"]
    origin = _first_stage(root)
    if origin is not None:
        folder, settings = origin
        found += [folder / "converted" / "index.csv"]
        if settings.get("path"):
            found += [Path(settings["path"]) / "index.csv", folder / settings["path"] / "index.csv"]
    return found


def _first_stage(folder: Path) -> tuple[Path, dict[str, Any]] | None:
    """(01's folder, its settings) behind a stage folder, following each lineage.json's `in` input."""
    lineage = read_lineage(folder)
    while lineage and lineage.get("stage") != "01_download":
        entry = (lineage.get("inputs") or {}).get("in")
        if not entry or not entry.get("path"):
            return None
        folder, lineage = (folder / entry["path"]).resolve(), entry.get("lineage")
    return (folder, lineage["settings"]) if lineage else None


def _absolute(table: pd.DataFrame, folder: Path) -> pd.DataFrame:
    """Paths relative to `folder` made absolute (empty stays empty)."""
    table = table.copy()
    for column in ("image_path", "mask_path", "head_mask_path"):
        table[column] = [str(folder / p) if p else "" for p in table[column]]
    return table


def _read_json(path: Path) -> Any:
    return json.loads(path.read_text()) if path.is_file() else None


def with_parts(rows: pd.DataFrame, leave_out: int | None = None, rule: str = "auto") -> tuple[pd.DataFrame, str]:
    """One source's rows with its part (lib.common.splits.segmentation_parts) and the rule used.

    "auto" is "ranges" where the source's index.csv names blocks of consecutive indices (figshare:
    a patient is a run of indices), else "groups": navoneel's and the phantoms' numbers are
    consecutive too, but carry no patient, so only duplicates (or index.csv's patients) are kept whole."""
    blocks = rows["block"] if "block" in rows else pd.Series("", index=rows.index)
    named = bool(len(rows)) and bool((blocks != "").all())
    if rule == "auto":
        rule = "ranges" if named else "groups"
    part, said = splits.segmentation_parts(list(rows["id"]), list(rows["group"]), list(rows["label"]), leave_out,
                                           rule=rule, blocks=list(blocks) if named else None)  # else: index runs
    return rows.assign(part=rows["id"].map(part)), said
