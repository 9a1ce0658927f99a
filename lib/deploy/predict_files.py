"""Predict a file or a folder of slices with a bundle; one CSV row per file, bad files included.

Why a row per bad file instead of a stop: a folder from the wild holds text
files, truncated JPEGs and 16-bit TIFFs next to good slices; the user needs
every good prediction plus a list of what to fix. The CSV is checkpointed
every CHECKPOINT files and a rerun skips files it already predicted, so a long
run that is killed resumes where it stopped.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm import tqdm

from lib.common.io import ImageReadError, write_png, write_text_atomic
from lib.deploy.predictor import Predictor

COLUMNS = ["file", "prob_tumor", "label_pred", "threshold", "mask_path", "mask_hidden_pixels", "error"]
CHECKPOINT = 50  # files between writes of the CSV


def list_inputs(path: Path) -> list[Path]:
    """The file itself, or every non-hidden file under the folder (sorted); SystemExit when there is none."""
    path = Path(path)
    if path.is_file():
        return [path]
    if not path.is_dir():
        raise SystemExit(f"error: {path} not found; give an image file or a folder of them")
    files = sorted(p for p in path.rglob("*") if p.is_file() and not any(part.startswith(".")
                                                                         for part in p.relative_to(path).parts))
    if not files:
        raise SystemExit(f"error: {path} holds no files; put MRI slices (JPEG/PNG/TIFF/BMP) in it")
    return files


def mask_name(file: Path, root: Path) -> str:
    """A unique PNG name for a file's mask: its path under the input folder, '/' as '__'."""
    rel = file.relative_to(root) if root.is_dir() else Path(file.name)
    return "__".join(rel.with_suffix("").parts) + ".png"


def predict_one(predictor: Predictor, file: Path, root: Path, masks: Path | None, sam: bool) -> dict:
    """One CSV row: the prediction, or the error in one line with the file's name."""
    row = {"file": str(file), "prob_tumor": np.nan, "label_pred": "", "threshold": predictor.ensemble.threshold,
           "mask_path": "", "mask_hidden_pixels": 0, "error": ""}
    try:
        result = predictor.predict_file(file, segment=masks is not None)
    except ImageReadError as err:
        return {**row, "error": str(err)}
    except Exception as err:  # noqa: BLE001 - e.g. a slice with no head to crop: report it, go on
        return {**row, "error": f"{file}: {type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}"}
    row.update(prob_tumor=round(result.prob, 6), label_pred=result.label, mask_hidden_pixels=result.hidden_pixels)
    if masks is not None and result.mask is not None:
        if sam:
            result.mask, _ = predictor.refine_with_sam(result.prepared, result.mask)
        path = masks / mask_name(file, root)
        write_png(path, result.source_mask().astype(np.uint8) * 255)
        row["mask_path"] = str(path)
    return row


def predict_all(predictor: Predictor, source: Path, out_csv: Path, masks: Path | None = None, sam: bool = False,
                force: bool = False) -> pd.DataFrame:
    """Predict every input file into out_csv (resuming an earlier run unless `force`); returns the table."""
    files = list_inputs(source)
    done = _finished(out_csv, masks) if not force else {}
    rows = [done[str(f)] for f in files if str(f) in done]
    todo = [f for f in files if str(f) not in done]
    if done:
        print(f"resuming: {len(rows)} of {len(files)} files were predicted by an earlier run")
    for n, row in enumerate(_rows(predictor, todo, source, masks, sam), start=1):
        rows.append(row)
        if n % CHECKPOINT == 0:
            _write(rows, out_csv)
    table = _write(rows, out_csv)
    return table


def _rows(predictor: Predictor, files: list[Path], root: Path, masks: Path | None, sam: bool) -> Iterator[dict]:
    for file in tqdm(files, desc="predict", unit="slice", disable=len(files) < 2):
        yield predict_one(predictor, file, root, masks, sam)


def _finished(out_csv: Path, masks: Path | None) -> dict[str, dict]:
    """Rows of an earlier run that need no redo: predicted without error, with the mask when masks are asked."""
    if not out_csv.is_file():
        return {}
    old = pd.read_csv(out_csv, keep_default_na=False)
    keep = old["error"].eq("") & (old["mask_path"].ne("") if masks is not None else True)
    return {r["file"]: r for r in old[keep].to_dict("records")}


def _write(rows: list[dict], out_csv: Path) -> pd.DataFrame:
    table = pd.DataFrame(rows, columns=COLUMNS)
    write_text_atomic(out_csv, table.to_csv(index=False))
    return table
