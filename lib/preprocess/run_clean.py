"""Stage 02: clean and crop every imported image; check the crop against truth.

Per image: decode by content, clean up (white background, frame, text), crop
to the head, pad to square, resize (lib.preprocess.clean), and warp any true masks with
exactly the same geometry. Then quality control: per-class intensity CDFs,
a histogram summary, before/after contact sheets, and, where true brain
masks exist (phantoms), how much brain the crop kept and background it removed.
"""

from __future__ import annotations

import argparse
from collections import Counter
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pandas as pd

from lib.common import manifest, report
from lib.common.dedup import sha256_file
from lib.common.io import read_image, read_mask, to_grey, write_json_atomic, write_png
from lib.common.stage import Progress, check_in_dir, error_row, imap, require_some_ok, write_lineage
from lib.preprocess import clean

# Columns this stage adds (besides rewriting mask paths to the cleaned masks).
CLEAN_COLUMNS = [
    "image_path", "source_mask_path", "source_brain_mask_path", "crop_box", "square_box",
    "crop_mode", "crop_reason", "flags", "brain_kept", "background_removed",
]
BRAIN_KEPT_TARGET = 0.995  # a crop must keep this share of true brain pixels
SHEET_PAIRS = 32  # before/after pairs per contact sheet
MAX_SHEETS = 20  # contact sheets written at most (a large import shows its first ones)
QC_SAMPLE = 400  # images per class read again for the intensity CDFs


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Stage 02 from parsed arguments (see scripts/02_clean.py)."""
    out: Path = args.out
    rows_in = check_in_dir(args.in_dir, out)
    out.mkdir(parents=True, exist_ok=True)
    rows_in = manifest.rebase(rows_in, args.in_dir, out).to_dict("records")
    options = {"size": args.size, "skull_strip": args.skull_strip}
    signature = {"stage": "02_clean", "input": sha256_file(args.in_dir / manifest.MANIFEST), **options}
    progress = Progress(out, args.force, signature)
    options["out"] = str(out)
    todo = [(row, options) for row in rows_in if progress.finished(row["id"], _outputs(out, row)) is None]
    for row in imap(_clean_job, todo, args.workers, desc="clean"):
        progress.add(row)
    df = manifest.write_rows([progress.rows[r["id"]] for r in rows_in], out)
    require_some_ok(df, out)
    metrics = measure(df)
    metrics["size"], metrics["skull_strip"] = args.size, args.skull_strip
    write_json_atomic(out / "metrics.json", metrics)
    write_lineage(out, "02_clean", args, {"in": args.in_dir})
    write_report(df, out, metrics)
    _print_summary(out, metrics)
    return metrics


def _outputs(out: Path, row: dict[str, Any]) -> list[Path]:
    paths = [out / "images" / f"{row['id']}.png"]
    if row.get("mask_path"):
        paths.append(out / "masks" / f"{row['id']}.png")
    if row.get("brain_mask_path"):
        paths.append(out / "masks" / f"{row['id']}_brain.png")
    return paths


def _clean_job(job: tuple[dict[str, Any], dict[str, Any]]) -> dict[str, Any]:
    row, options = job
    row = {**row, **{c: "" for c in CLEAN_COLUMNS}}
    if row.get("status") == "error":
        return row  # the previous stage already said why
    try:
        return clean_one(row, Path(options["out"]), options["size"], options["skull_strip"])
    except Exception as err:  # noqa: BLE001 - one bad file must not stop the stage
        return error_row(row, err, file=Path(options["out"]) / row["source_path"])  # a reason must name its file


def clean_one(row: dict[str, Any], out: Path, size: int, skull_strip: bool) -> dict[str, Any]:
    """Clean one image and its masks; return the row with this stage's columns."""
    source = read_image(out / row["source_path"])
    result = clean.clean_image(source.pixels, size=size, skull_strip=skull_strip)
    image_rel = f"images/{row['id']}.png"
    write_png(out / image_rel, result.image)
    row.update(
        image_path=image_rel, crop_box=_box_text(result.crop_box), square_box=_box_text(result.square_box),
        crop_mode=result.crop_mode, crop_reason=result.crop_reason, flags=" ".join(result.flags),
    )
    for column, suffix in (("mask_path", ""), ("brain_mask_path", "_brain")):
        if row.get(column):
            row[f"source_{column}"] = row[column]
            row[column] = _warp_mask_file(out, row[column], f"masks/{row['id']}{suffix}.png", result, size)
    if row.get("source_brain_mask_path"):
        brain = read_mask(out / row["source_brain_mask_path"])
        row["brain_kept"], row["background_removed"] = crop_quality(brain, result.crop_box)
    return row


def _warp_mask_file(out: Path, src_rel: str, dst_rel: str, result: clean.CleanResult, size: int) -> str:
    mask = read_mask(out / src_rel)
    write_png(out / dst_rel, clean.warp_mask(mask, result.square_box, size).astype(np.uint8) * 255)
    return dst_rel


def _box_text(box: tuple[int, int, int, int]) -> str:
    return " ".join(str(int(v)) for v in box)


def parse_box(text: str) -> tuple[int, int, int, int]:
    """'x0 y0 x1 y1' -> ints (the manifest's box format)."""
    x0, y0, x1, y1 = (int(v) for v in text.split())
    return x0, y0, x1, y1


def crop_quality(brain: np.ndarray, box: tuple[int, int, int, int]) -> tuple[float, float]:
    """(share of brain pixels inside the crop box, share of non-brain pixels outside it)."""
    x0, y0, x1, y1 = box
    inside = np.zeros_like(brain, dtype=bool)
    inside[y0:y1, x0:x1] = True
    brain_total, other_total = int(brain.sum()), int((~brain).sum())
    kept = float((brain & inside).sum() / brain_total) if brain_total else 1.0
    removed = float((~brain & ~inside).sum() / other_total) if other_total else 0.0
    return round(kept, 6), round(removed, 6)


# --- measurement ---------------------------------------------------------------


def measure(df: pd.DataFrame) -> dict[str, Any]:
    """Counts of outcomes, flags and crop modes; crop quality where truth exists."""
    ok = df[df["status"] == "ok"]
    flags = Counter(flag for text in ok["flags"] for flag in text.split())
    metrics: dict[str, Any] = {
        "images": len(df), "ok": len(ok), "errors": int((df["status"] == "error").sum()),
        "error_list": manifest.error_list(df),
        "flags": dict(sorted(flags.items())),
        "crop_modes": ok["crop_mode"].value_counts().to_dict(),
    }
    truth = ok[ok["brain_kept"] != ""]
    if len(truth):
        kept = truth["brain_kept"].astype(float)
        metrics["crop_vs_true_brain"] = {
            "images": len(truth),
            "brain_kept_min": float(kept.min()),
            "brain_kept_mean": float(kept.mean()),
            "share_images_keeping_99.5pct": float((kept >= BRAIN_KEPT_TARGET).mean()),
            "background_removed_mean": float(truth["background_removed"].astype(float).mean()),
        }
    if "phantom_artefacts" in ok.columns:
        metrics["artefacts_fixed"] = _artefacts_fixed(ok)
    return metrics


def _artefacts_fixed(ok: pd.DataFrame) -> dict[str, str]:
    """Phantoms know their artefacts: was each one flagged as fixed?"""
    out = {}
    for artefact, flag in (("white_background", "white_background"), ("white_frame", "white_frame")):
        has = ok["phantom_artefacts"].str.split().apply(lambda names, a=artefact: a in names)
        fixed = ok.loc[has, "flags"].str.split().apply(lambda flags, f=flag: f in flags)
        out[artefact] = f"{int(fixed.sum())}/{int(has.sum())}"
    return out


# --- report --------------------------------------------------------------------


def write_report(df: pd.DataFrame, out: Path, metrics: dict[str, Any]) -> Path:
    """QC plots, histogram summary, contact sheets and report.html."""
    ok = df[df["status"] == "ok"]
    qc = out / "qc"
    raw_hists, clean_hists, summary = _histograms(ok, out)
    plots = [
        report.cdf_plot(raw_hists, qc / "cdf_raw.png", "Imported images: intensity CDF per class"),
        report.cdf_plot(clean_hists, qc / "cdf_clean.png", "Cleaned images: intensity CDF per class"),
    ]
    pd.DataFrame(summary).to_csv(qc / "histogram_summary.csv", index=False)
    sheets = _contact_sheets(ok, out, qc)
    sections = [
        ("Outcome", report.dict_table_html({k: v for k, v in metrics.items() if k != "error_list"})),
        ("Errors", report.table_html([{"id": k, "error": v} for k, v in metrics["error_list"].items()])),
        ("Intensity distributions", "".join(report.img_html(out, p) for p in plots)),
        ("Histogram summary", report.table_html(summary)),
        ("Before / after (green: crop box)", "".join(report.img_html(out, p) for p in sheets)),
    ]
    return report.html_page(out / "report.html", "02_clean: cleanup and head crop", sections)


def _histograms(ok: pd.DataFrame, out: Path) -> tuple[dict, dict, list[dict]]:
    """256-bin histograms per class (grey and RGB of the imports, grey of the crops)."""
    raw: dict[str, np.ndarray] = {}
    cleaned: dict[str, np.ndarray] = {}
    summary = []
    for label, group in ok.groupby("label"):
        group = group.head(QC_SAMPLE)
        crop_hist = np.zeros(256)
        for row in group.itertuples():
            pixels = read_image(out / row.source_path).pixels
            rgb = pixels if pixels.ndim == 3 else np.repeat(pixels[..., None], 3, axis=2)
            for channel, name in enumerate("RGB"):
                raw[f"{label} {name}"] = raw.get(f"{label} {name}", 0) + _hist(rgb[..., channel])
            raw[f"{label} grey"] = raw.get(f"{label} grey", 0) + _hist(to_grey(pixels))
            crop_hist += _hist(to_grey(read_image(out / row.image_path).pixels))
        cleaned[f"{label} grey"] = crop_hist
        summary.append(_hist_summary(label, len(group), crop_hist, group))
    return raw, cleaned, summary


def _hist(channel: np.ndarray) -> np.ndarray:
    return cv2.calcHist([np.ascontiguousarray(channel)], [0], None, [256], [0, 256]).ravel()


def _hist_summary(label: str, n: int, hist: np.ndarray, group: pd.DataFrame) -> dict[str, Any]:
    cdf = np.cumsum(hist) / max(hist.sum(), 1)
    levels = np.arange(256)
    mean = float((hist * levels).sum() / max(hist.sum(), 1))
    return {
        "label": label, "images": n, "mean": round(mean, 1),
        "std": round(float(np.sqrt((hist * (levels - mean) ** 2).sum() / max(hist.sum(), 1))), 1),
        "p1": int(np.searchsorted(cdf, 0.01)), "p50": int(np.searchsorted(cdf, 0.5)),
        "p99": int(np.searchsorted(cdf, 0.99)), "black_share": round(float(cdf[0]), 3),
        "source_width_median": float(group["width"].astype(float).median()),
        "source_height_median": float(group["height"].astype(float).median()),
        "source_modes": " ".join(f"{k}:{v}" for k, v in group["mode"].value_counts().items()),
    }


def _contact_sheets(ok: pd.DataFrame, out: Path, qc: Path) -> list[Path]:
    """Pairs of (import with crop box, cleaned crop), SHEET_PAIRS per sheet."""

    def cells(row: Any) -> list[np.ndarray]:
        before = read_image(out / row.source_path).pixels
        before = before.copy() if before.ndim == 3 else cv2.cvtColor(before, cv2.COLOR_GRAY2RGB)
        x0, y0, x1, y1 = parse_box(row.crop_box)
        width = max(2, round(max(before.shape[:2]) / 100))
        cv2.rectangle(before, (x0, y0), (x1 - 1, y1 - 1), (0, 255, 0), width)
        after = report.thumbnail(read_image(out / row.image_path).pixels)
        return [report.caption(report.thumbnail(before), f"{row.label[:2]} {row.id}"),
                report.caption(after, row.flags.replace("white_", "w_"), (255, 128, 0))]

    return report.contact_sheets(ok.itertuples(), cells, qc, SHEET_PAIRS, MAX_SHEETS)


def _print_summary(out: Path, m: dict[str, Any]) -> None:
    print(f"02_clean: {m['ok']}/{m['images']} images cleaned ({m['errors']} errors) -> {out}")
    print(f"  crop modes {m['crop_modes']}; flags {m['flags']}")
    if "crop_vs_true_brain" in m:
        c = m["crop_vs_true_brain"]
        print(f"  true brain kept: min {c['brain_kept_min']:.4f}, mean {c['brain_kept_mean']:.4f}, "
              f"{c['share_images_keeping_99.5pct']:.3f} of images keep >= 99.5 %; "
              f"background removed (mean) {c['background_removed_mean']:.3f}")
    if "artefacts_fixed" in m:
        print(f"  artefacts flagged as fixed: {m['artefacts_fixed']}")
    print(f"  report: {out / 'report.html'}")
