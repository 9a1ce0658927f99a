"""Predict a file or a folder of slices with a bundle; one CSV row per file (per slice of a DICOM or NIfTI
volume, plus one summary row per volume), bad files included.

Why a row per bad file instead of a stop: a folder from the wild holds text
files, truncated JPEGs and 16-bit TIFFs next to good slices; the user needs
every good prediction plus a list of what to fix. The CSV is checkpointed
every CHECKPOINT files and a rerun skips files it already predicted, so a long
run that is killed resumes where it stopped.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from tqdm import tqdm

from lib.common import scanner_files
from lib.common.io import ImageReadError, read_image, read_mask, write_png, write_text_atomic
from lib.deploy.predictor import Prediction, Predictor

COLUMNS = ["file", "slice", "prob_tumor", "label_pred", "ood", "threshold", "mask_path", "mask_hidden_pixels",
           "tumour_slices", "tumour_ml", "error"]
CHECKPOINT = 50  # predicted slices between writes of the CSV
VOLUME_ROW = "volume"  # the `slice` of a scanner file's summary row


def list_inputs(path: Path, skip: list[Path] | None = None) -> list[Path]:
    """The file itself, or every non-hidden file under the folder (sorted), leaving out `skip` (this run's own
    CSV and mask folder: written inside the input folder, they must not come back as inputs next time);
    SystemExit when there is none."""
    path = Path(path)
    if path.is_file():
        return [path]
    if not path.is_dir():
        raise SystemExit(f"error: {path} not found; give an image file or a folder of them")
    skip = [s.resolve() for s in skip or [] if s is not None]
    files = sorted(p for p in path.rglob("*") if p.is_file() and not _hidden(p, path) and not _inside(p, skip))
    if not files:
        raise SystemExit(f"error: {path} holds no files; put MRI slices (JPEG/PNG/TIFF/BMP, DICOM, NIfTI) in it")
    return files


def _hidden(file: Path, root: Path) -> bool:
    return any(part.startswith(".") for part in file.relative_to(root).parts)


def _inside(file: Path, skip: list[Path]) -> bool:
    resolved = file.resolve()
    return any(resolved == s or s in resolved.parents for s in skip)


def mask_name(file: Path, root: Path, slice_index: int | None = None) -> str:
    """A unique PNG name for a file's (or a volume slice's) mask: its path under the input folder with its
    extension kept, '/' as '__' (a.jpg and a.png get a.jpg.png and a.png.png, never one file)."""
    rel = file.relative_to(root) if root.is_dir() else Path(file.name)
    return "__".join(rel.parts) + (f"__s{slice_index:03d}" if slice_index is not None else "") + ".png"


def blank_row(predictor: Predictor, file: Path, slice_index: int | str = "") -> dict:
    return {"file": str(file), "slice": slice_index, "prob_tumor": np.nan, "label_pred": "", "ood": "",
            "threshold": predictor.ensemble.threshold, "mask_path": "", "mask_hidden_pixels": 0,
            "tumour_slices": "", "tumour_ml": np.nan, "error": ""}


def predict_pixels(predictor: Predictor, pixels: np.ndarray, row: dict, mask_path: Path | None,
                   sam: bool) -> tuple[dict, int]:
    """One slice's row, and its mask's area in input pixels (0 without a mask)."""
    result = predictor.predict(pixels, segment=mask_path is not None)
    row, area = prediction_row(result, row), 0
    if mask_path is not None and result.mask is not None:
        if sam:
            result.mask, _ = predictor.refine_with_sam(result.prepared, result.mask)
        mask = result.source_mask()
        write_png(mask_path, mask.astype(np.uint8) * 255)
        row["mask_path"], area = str(mask_path), int(mask.sum())
    return row, area


def prediction_row(result: Prediction, row: dict) -> dict:
    """`row` (from blank_row) with one prediction's columns filled in; the demo's CSV download uses it too."""
    return {**row, "prob_tumor": round(result.prob, 6), "label_pred": result.label, "ood": result.ood,
            "mask_hidden_pixels": result.hidden_pixels}


def predict_one(predictor: Predictor, file: Path, root: Path, masks: Path | None, sam: bool) -> dict:
    """One CSV row: the prediction, or the error in one line with the file's name."""
    row = blank_row(predictor, file)
    try:
        pixels = read_image(file).pixels
        row, _ = predict_pixels(predictor, pixels, row, masks / mask_name(file, root) if masks else None, sam)
    except ImageReadError as err:
        return {**row, "error": str(err)}
    except Exception as err:  # noqa: BLE001 - e.g. a slice with no head to crop: report it, go on
        return {**row, "error": _one_line(file, err)}
    return row


def predict_volume(predictor: Predictor, file: Path, root: Path, masks: Path | None, sam: bool,
                   done: dict[str, dict]) -> list[dict]:
    """A row per slice of a DICOM or NIfTI file, then its summary row: the largest probability, the slices
    called tumour and, with masks, the tumour volume in ml (mask voxels x the file's voxel size)."""
    try:
        volume = scanner_files.read_volume(file)
    except ImageReadError as err:
        return [{**blank_row(predictor, file, VOLUME_ROW), "error": str(err)}]
    rows, voxels = [], 0
    for k, pixels in enumerate(volume.slices):
        cached = done.get(_key(str(file), k))
        if cached is not None:
            rows.append(cached)
            voxels += _cached_area(cached)
            continue
        try:
            row, area = predict_pixels(predictor, pixels, blank_row(predictor, file, k),
                                       masks / mask_name(file, root, k) if masks else None, sam)
        except Exception as err:  # noqa: BLE001 - one bad slice must not lose the rest of the volume
            row, area = {**blank_row(predictor, file, k), "error": _one_line(file, err) + f" (slice {k})"}, 0
        rows.append(row)
        voxels += area
    return rows + [volume_summary(predictor, file, rows, voxels, volume, masks is not None)]


def volume_summary(predictor: Predictor, file: Path, rows: list[dict], voxels: int,
                   volume: scanner_files.Volume, with_masks: bool) -> dict:
    """The summary row of one scanner file."""
    probs = [r["prob_tumor"] for r in rows if r["error"] == ""]
    tumour = [str(r["slice"]) for r in rows if r["label_pred"] == predictor.class_names[1]]
    best = max(probs) if probs else np.nan
    summary = {**blank_row(predictor, file, VOLUME_ROW), "prob_tumor": best,
               "label_pred": predictor.class_names[1] if tumour else (predictor.class_names[0] if probs else ""),
               "tumour_slices": " ".join(tumour), "ood": _volume_ood(rows)}
    if with_masks and volume.voxel_ml is not None:
        summary["tumour_ml"] = round(voxels * volume.voxel_ml, 3)
    if not probs:
        summary["error"] = f"{file}: no slice could be predicted"
    return summary


def _volume_ood(rows: list[dict]) -> str:
    """The summary row's `ood`: how many predicted slices did not look like brain MRI ('' when none)."""
    odd = [r for r in rows if r["error"] == "" and r.get("ood")]
    if not odd:
        return ""
    return f"{len(odd)} of {sum(r['error'] == '' for r in rows)} slices not like a brain MRI slice (see their rows)"


def _cached_area(row: dict) -> int:
    """The mask area of a slice predicted by an earlier run, read back from its PNG."""
    if not row.get("mask_path") or not Path(row["mask_path"]).is_file():
        return 0
    return int(read_mask(row["mask_path"]).sum())


def _one_line(file: Path, err: Exception) -> str:
    return f"{file}: {type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}"


def predict_all(predictor: Predictor, source: Path, out_csv: Path, masks: Path | None = None, sam: bool = False,
                force: bool = False) -> pd.DataFrame:
    """Predict every input file into out_csv (resuming an earlier run unless `force`); returns the table.

    Rows keep the input order on a rerun too: a file predicted before keeps its row and its place, a file
    that failed before is tried again in its place."""
    files = list_inputs(source, skip=[out_csv, masks])
    done = _finished(out_csv, masks) if not force else {}
    if done:
        print(f"resuming: {len(done)} rows were predicted by an earlier run")
    rows: list[dict] = []
    since = 0
    for file in tqdm(files, desc="predict", unit="file", disable=len(files) < 2):
        if scanner_files.kind(file):
            new = predict_volume(predictor, file, source, masks, sam, done)
        else:
            new = [done.get(_key(str(file))) or predict_one(predictor, file, source, masks, sam)]
        rows += new
        since += len(new)
        if since >= CHECKPOINT:
            _write(rows, out_csv)
            since = 0
    return _write(rows, out_csv)


def _key(file: str, slice_index: int | str = "") -> str:
    return f"{file}#{slice_index}"


def _finished(out_csv: Path, masks: Path | None) -> dict[str, dict]:
    """Slice rows of an earlier run that need no redo: predicted without error, with the mask when masks are
    asked. Volume summary rows are always made again (from their slices)."""
    if not out_csv.is_file():
        return {}
    old = pd.read_csv(out_csv, keep_default_na=False, dtype={"slice": str})
    if "ood" not in old.columns:  # a CSV from before the brain-MRI check: its rows lack a verdict, redo them
        return {}
    if "slice" not in old.columns:  # a CSV from before volumes were read
        old["slice"] = ""
    for column in ("prob_tumor", "tumour_ml"):
        old[column] = pd.to_numeric(old.get(column, np.nan), errors="coerce")
    keep = old["error"].eq("") & old["slice"].ne(VOLUME_ROW) & (old["mask_path"].ne("") if masks is not None else True)
    return {_key(r["file"], int(r["slice"]) if r["slice"] not in ("", None) else ""): r
            for r in old[keep].to_dict("records")}


def table_csv(rows: list[dict]) -> str:
    """The rows as predict.py's CSV text (its columns, in its order)."""
    return pd.DataFrame(rows, columns=COLUMNS).to_csv(index=False)


def _write(rows: list[dict], out_csv: Path) -> pd.DataFrame:
    table = pd.DataFrame(rows, columns=COLUMNS)
    write_text_atomic(out_csv, table.to_csv(index=False))
    return table
