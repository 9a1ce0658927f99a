"""Stage 01: bring images into a stage folder and describe each one.

Three sources, one result (`raw/` files plus a manifest row per file):
- kaggle:  the navoneel data set through kagglehub (or the kaggle client);
           fails fast with advice when offline or without credentials.
- folder:  a local tree of class folders (yes/ no/ ...) or images/ + masks/
           (Cheng's figshare .mat files are turned into such a tree first, lib.acquire.figshare_mat).
- figshare: Cheng's figshare set of true tumour masks from Kaggle, for 08 --extra-masks.
- phantom: synthetic slices with true tumour and brain masks (lib.acquire.phantom),
           the offline default, so every stage can run and be scored.

Files are copied byte for byte (originals are never touched), then every file
is decoded by content to fill in format, mode, size, hashes and errors. A
DICOM or NIfTI volume becomes one row per slice (volume_rows).
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

import numpy as np

from lib.acquire import figshare_mat, phantom
from lib.acquire.sources import DownloadError, fetch_kaggle, list_folder, make_ids, parse_classes
from lib.common import dedup, manifest, scanner_files
from lib.common.io import ImageReadError, read_image, to_grey, write_json_atomic, write_png
from lib.common.stage import NOT_SETTINGS, Progress, error_row, imap, write_lineage

# Navoneel's class balance: 155 tumour / 98 no tumour.
NAVONEEL_TUMOR_FRACTION = 155 / 253


def import_folder(
    root: Path, out_dir: Path, progress: Progress, classes: dict[str, str], label: str = "tumor", workers: int = 1
) -> list[dict[str, Any]]:
    """Copy a local tree into out_dir/raw and describe every file; a refused file (a link out of the folder)
    is not copied and gets an error row saying why."""
    entries = list_folder(root, classes, label)
    jobs = []
    for item_id, entry in zip(make_ids(e["rel"] for e in entries), entries):
        dest = out_dir / "raw" / entry["rel"]
        mask_dest = out_dir / "raw" / "masks" / entry["mask"].name if entry.get("mask") else None
        row = {
            "id": item_id, "source_path": str(dest.relative_to(out_dir)), "origin": str(entry["src"]),
            "label": entry["label"], "mask_path": str(mask_dest.relative_to(out_dir)) if mask_dest else "",
            "brain_mask_path": "",
        }
        if entry.get("refused"):
            row.update({**_undescribed(), "source_path": "", "mask_path": "", "status": "error",
                        "error": entry["refused"]})
            jobs.append((row, str(out_dir)))
            continue
        if progress.finished(item_id, [dest] + ([mask_dest] if mask_dest else [])) is None:
            _copy(entry["src"], dest)
            if mask_dest:
                _copy(entry["mask"], mask_dest)
        jobs += [(r, str(out_dir)) for r in volume_rows(row, out_dir)]
    return _describe_all(jobs, progress, workers)


def volume_rows(row: dict[str, Any], out_dir: Path) -> list[dict[str, Any]]:
    """One row per slice of a DICOM or NIfTI file (each slice written as a PNG under raw/slices/), or [row].

    Why: every later stage works on 2D slices. The original stays in raw/ byte for byte; each slice row keeps
    it (volume_path), its index and the voxel size, so predict.py and the report can speak of volumes."""
    source = out_dir / row["source_path"]
    if not scanner_files.kind(source):
        return [row]
    try:
        volume = scanner_files.read_volume(source)
    except ImageReadError:
        return [row]  # describe() reads it again and writes the error row
    common = {"volume_path": row["source_path"], "slice_count": len(volume.slices),
              "spacing_mm": " ".join(f"{v:g}" for v in volume.spacing_mm) if volume.spacing_mm else ""}
    if len(volume.slices) == 1:
        return [{**row, **common, "slice_index": 0}]
    rows = []
    for k, pixels in enumerate(volume.slices):
        slice_id = f"{row['id']}_s{k:03d}"
        path = out_dir / "raw" / "slices" / f"{slice_id}.png"
        if not path.is_file():
            write_png(path, pixels)
        rows.append({**row, **common, "id": slice_id, "source_path": str(path.relative_to(out_dir)),
                     "slice_index": k})
    return rows


def _copy(src: Path, dest: Path) -> None:
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(f".{dest.name}.tmp")
    shutil.copyfile(src, tmp)
    os.replace(tmp, dest)


# --- phantom ------------------------------------------------------------------


def generate_phantoms(
    out_dir: Path, progress: Progress, n: int, seed: int = 0,
    tumor_fraction: float = NAVONEEL_TUMOR_FRACTION, workers: int = 1,
) -> list[dict[str, Any]]:
    """Write n phantom slices (like navoneel: yes/ Y<i>, no/ no <i>) with true masks."""
    rng = np.random.default_rng(seed)
    has_tumor = rng.permutation(np.arange(n) < round(n * tumor_fraction))
    jobs = [(seed, i, bool(t), str(out_dir)) for i, t in enumerate(has_tumor)]
    todo = [job for job in jobs if progress.finished(_phantom_id(job[1], job[2])) is None]
    for row in imap(_phantom_one, todo, workers, desc="phantoms"):
        progress.add(row)
    return [progress.rows[_phantom_id(i, t)] for _, i, t, _ in jobs]


def _phantom_id(index: int, has_tumor: bool) -> str:
    return f"yes_Y{index}" if has_tumor else f"no_no_{index}"


def _phantom_one(job: tuple[int, int, bool, str]) -> dict[str, Any]:
    seed, index, has_tumor, out = job
    rng = np.random.default_rng([seed, index])
    ph = phantom.make_slice(rng, phantom.draw_n_tumors(rng, has_tumor))
    item_id = _phantom_id(index, has_tumor)
    name = f"yes/Y{index}" if has_tumor else f"no/no {index}"
    paths = phantom.write_slice(ph, Path(out), f"raw/{name}{ph.info['extension']}", item_id)
    row = {
        "id": item_id, "source_path": paths["image"], "origin": f"phantom:seed={seed}:index={index}",
        "label": "tumor" if has_tumor else "no_tumor",
        "mask_path": paths["tumor_mask"], "brain_mask_path": paths["brain_mask"],
        "phantom_sequence": ph.info.get("sequence", ""),
        "phantom_n_tumors": ph.info.get("n_tumors", 0),
        "phantom_tumor_fraction": round(float(ph.info.get("tumor_fraction", 0.0)), 4),
        "phantom_artefacts": " ".join(ph.info.get("artefacts", [])),
    }
    return describe(row, Path(out))


# --- description and duplicates -------------------------------------------------


def describe(row: dict[str, Any], out_dir: Path) -> dict[str, Any]:
    """Add what the file really is: hashes, format, mode, size; or the error."""
    path = out_dir / row["source_path"]
    row = {**row, **_undescribed(), "file_size": path.stat().st_size if path.exists() else "", "status": "ok"}
    try:
        row["sha256"] = dedup.sha256_file(path)
        image = read_image(path)
    except (ImageReadError, OSError) as err:
        return error_row(row, err)
    row.update(format=image.format, mode=image.mode, width=image.width, height=image.height,
               phash=dedup.phash(to_grey(image.pixels)))
    return row


def _undescribed() -> dict[str, Any]:
    """The columns `describe` fills, empty."""
    return {"sha256": "", "phash": "", "format": "", "mode": "", "width": "", "height": "", "file_size": "",
            "error": ""}


def _describe_job(job: tuple[dict[str, Any], str]) -> dict[str, Any]:
    row, out = job
    if row.get("status") == "error":  # refused before any copy (lib.acquire.sources.refusal): nothing to read
        return row
    return describe(row, Path(out))


def _describe_all(jobs: list[tuple[dict[str, Any], str]], progress: Progress, workers: int) -> list[dict[str, Any]]:
    todo = [(row, out) for row, out in jobs if progress.finished(row["id"], [Path(out) / row["source_path"]]) is None]
    for row in imap(_describe_job, todo, workers, desc="describe"):
        progress.add(row)
    return [progress.rows[row["id"]] for row, _ in jobs]


def add_duplicate_groups(rows: list[dict[str, Any]]) -> dict[str, int]:
    """Fill dup_group / dup_exact in place; return the summary counts."""
    sha = [str(r.get("sha256", "")) for r in rows]
    groups = join_volumes(rows, list(dedup.group_duplicates(sha, [str(r.get("phash", "")) for r in rows])))
    for row, group, exact in zip(rows, groups, dedup.exact_counts(sha)):
        row["dup_group"], row["dup_exact"] = f"g{group:04d}", exact
    return dedup.summary(sha, groups)


def join_volumes(rows: list[dict[str, Any]], groups: list[int]) -> list[int]:
    """Groups merged so that the slices of one scanner file share one: one patient's slices never straddle
    two folds (a neighbouring slice is nearly a copy)."""
    parent = {g: g for g in groups}

    def root(g: int) -> int:
        while parent[g] != g:
            g = parent[g]
        return g

    first: dict[str, int] = {}
    for row, group in zip(rows, groups):
        volume = row.get("volume_path")
        if volume:
            parent[root(group)] = root(first.setdefault(volume, group))
    return [root(g) for g in groups]


# --- the stage ------------------------------------------------------------------


def run(args: Any) -> dict[str, Any]:
    """Stage 01 from parsed arguments (see scripts/01_download.py)."""
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    options = {k: v for k, v in vars(args).items() if k not in NOT_SETTINGS}
    progress = Progress(out, args.force, {"stage": "01_download", **options})
    if args.source == "phantom":
        rows = generate_phantoms(out, progress, args.n, args.seed, args.tumor_fraction, args.workers)
        origin = f"phantom seed={args.seed} n={args.n}"
    else:
        if args.source in ("kaggle", "figshare"):
            dataset = figshare_mat.FIGSHARE_DATASET if args.source == "figshare" else args.dataset
            root, origin = fetch_kaggle(dataset), f"kaggle:{dataset}"
        elif args.path is None:
            raise DownloadError("--source folder needs --path DIR")
        else:
            root, origin = args.path, str(args.path)
        if figshare_mat.holds_mat(Path(root)):  # Cheng's MATLAB files: an images/ + masks/ tree first
            try:
                root = figshare_mat.convert(Path(root), out / "converted")
            except figshare_mat.MatError as err:
                raise DownloadError(str(err)) from None
        classes = parse_classes(args.classes)
        rows = import_folder(Path(root), out, progress, classes, args.label, args.workers)
    duplicates = add_duplicate_groups(rows)
    df = manifest.write_rows(rows, out, manifest.DOWNLOAD_COLUMNS + manifest.VOLUME_COLUMNS)
    metrics = {"source": origin, **_counts(df), "duplicates": duplicates}
    write_json_atomic(out / "metrics.json", metrics)
    write_lineage(out, "01_download", args, {})
    _print_summary(out, metrics)
    return metrics


def _counts(df: Any) -> dict[str, Any]:
    ok = df[df["status"] == "ok"]
    return {
        "files": len(df),
        "ok": len(ok),
        "errors": int((df["status"] == "error").sum()),
        "labels": ok["label"].value_counts().to_dict(),
        "formats": ok["format"].value_counts().to_dict(),
        "modes": ok["mode"].value_counts().to_dict(),
        "with_mask": int((ok["mask_path"] != "").sum()),
        "error_list": manifest.error_list(df),
    }


def _print_summary(out: Path, m: dict[str, Any]) -> None:
    d = m["duplicates"]
    print(f"01_download: {m['ok']}/{m['files']} images ok ({m['errors']} errors) from {m['source']} -> {out}")
    print(f"  labels {m['labels']}; exact-duplicate groups {d['exact_duplicate_groups']}; "
          f"near+exact groups {d['duplicate_groups']}; distinct images {d['distinct_images']}")
    for item_id, reason in m["error_list"].items():
        print(f"  error {item_id}: {reason}")
