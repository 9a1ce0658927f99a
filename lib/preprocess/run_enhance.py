"""Stage 03: enhance every cleaned slice (MUSICA and friends) and measure the effect.

Per image: the head mask of the cleaned slice (lib.preprocess.clean.head_mask), the
enhancement chain inside it (lib.preprocess.enhance; background forced to black), and
contrast numbers before and after: RMS contrast and edge strength inside the
head, plus the tumour's contrast-to-noise ratio where a true mask exists, so
the chain's effect on what matters is measured, not assumed.

Outputs: images/<id>.png (enhanced), heads/<id>.png (the head mask later
stages share), manifest.csv (image_path now the enhanced slice,
clean_image_path the input), qc/contrast.csv, before/after CDFs and contact
sheets, metrics.json and report.html.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pandas as pd

from lib.common import manifest, report
from lib.common.dedup import sha256_file
from lib.common.io import read_image, read_mask, write_json_atomic, write_png
from lib.common.stage import Progress, check_in_dir, error_row, imap, require_some_ok, write_lineage
from lib.preprocess import enhance
from lib.preprocess.clean import head_mask

ENHANCE_COLUMNS = ["clean_image_path", "head_mask_path", "chain"]
CONTRAST_KEYS = ("rms_contrast", "edge_strength", "tumour_cnr")
SHEET_PAIRS = 32  # before/after pairs per contact sheet
MAX_SHEETS = 4  # contact sheets written at most


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Stage 03 from parsed arguments (see scripts/03_enhance.py)."""
    out: Path = args.out
    try:
        chain = enhance.parse_chain(args.chain)
    except ValueError as err:
        raise SystemExit(f"error: --chain {args.chain}: {err}") from None
    rows_in = check_in_dir(args.in_dir, out)
    out.mkdir(parents=True, exist_ok=True)
    rows_in = manifest.rebase(rows_in, args.in_dir, out).to_dict("records")
    signature = {"stage": "03_enhance", "input": sha256_file(args.in_dir / manifest.MANIFEST), "chain": chain}
    progress = Progress(out, args.force, signature)
    todo = [(row, chain, str(out)) for row in rows_in if progress.finished(row["id"], _outputs(out, row)) is None]
    for row in imap(_enhance_job, todo, args.workers, desc="enhance"):
        progress.add(row)
    df = manifest.write_rows([progress.rows[r["id"]] for r in rows_in], out)
    require_some_ok(df, out)
    contrast = contrast_table(df, out)
    contrast.to_csv(_qc(out) / "contrast.csv", index=False)
    metrics = measure(df, contrast, chain)
    write_json_atomic(out / "metrics.json", metrics)
    write_lineage(out, "03_enhance", args, {"in": args.in_dir}, chain=list(chain))
    write_report(df, out, contrast, metrics)
    _print_summary(out, metrics)
    return metrics


def _qc(out: Path) -> Path:
    (out / "qc").mkdir(parents=True, exist_ok=True)
    return out / "qc"


def _outputs(out: Path, row: dict[str, Any]) -> list[Path]:
    return [out / "images" / f"{row['id']}.png", out / "heads" / f"{row['id']}.png"]


def _enhance_job(job: tuple[dict[str, Any], tuple[str, ...], str]) -> dict[str, Any]:
    row, chain, out = job
    row = {**row, **{c: "" for c in ENHANCE_COLUMNS}}
    if row.get("status") == "error":
        return row  # an earlier stage already said why
    try:
        return enhance_one(row, Path(out), chain)
    except Exception as err:  # noqa: BLE001 - one bad file must not stop the stage
        return error_row(row, err)


def enhance_one(row: dict[str, Any], out: Path, chain: tuple[str, ...]) -> dict[str, Any]:
    """Enhance one cleaned slice; write it and its head mask; return the row."""
    image = read_image(out / row["image_path"]).pixels
    head = head_mask(image)
    write_png(out / "images" / f"{row['id']}.png", enhance.enhance(image, head, chain))
    write_png(out / "heads" / f"{row['id']}.png", head.astype(np.uint8) * 255)
    return {
        **row, "clean_image_path": row["image_path"], "image_path": f"images/{row['id']}.png",
        "head_mask_path": f"heads/{row['id']}.png", "chain": ",".join(chain) or "none",
    }


# --- measurement ---------------------------------------------------------------


def contrast_table(df: pd.DataFrame, out: Path) -> pd.DataFrame:
    """Contrast before (cleaned) and after (enhanced) for every ok image."""
    rows = []
    for row in manifest.ok_rows(df).itertuples():
        before = read_image(out / row.clean_image_path).pixels
        after = read_image(out / row.image_path).pixels
        head = read_mask(out / row.head_mask_path)
        tumour = read_mask(out / row.mask_path) if row.mask_path else None
        entry: dict[str, Any] = {"id": row.id, "label": row.label}
        for name, image in (("before", before), ("after", after)):
            stats = enhance.contrast_stats(image, head)
            entry[f"rms_contrast_{name}"] = stats["rms_contrast"]
            entry[f"edge_strength_{name}"] = stats["edge_strength"]
            has_tumour = tumour is not None and tumour.any()
            entry[f"tumour_cnr_{name}"] = enhance.tumour_cnr(image, tumour, head) if has_tumour else np.nan
        rows.append(entry)
    return pd.DataFrame(rows)


def measure(df: pd.DataFrame, contrast: pd.DataFrame, chain: tuple[str, ...]) -> dict[str, Any]:
    """Outcome counts and the median contrast numbers before and after."""
    metrics: dict[str, Any] = {
        "images": len(df), "ok": int((df["status"] == "ok").sum()),
        "errors": int((df["status"] == "error").sum()), "error_list": manifest.error_list(df),
        "chain": ",".join(chain) or "none",
    }
    for key in CONTRAST_KEYS:
        before, after = contrast.get(f"{key}_before"), contrast.get(f"{key}_after")
        if before is None or before.notna().sum() == 0:
            continue
        ratio = (after / before.where(before > 0)).dropna()
        metrics[key] = {
            "images": int(before.notna().sum()),
            "median_before": round(float(before.median()), 4),
            "median_after": round(float(after.median()), 4),
            "median_ratio_after_before": round(float(ratio.median()), 4) if len(ratio) else None,
            "share_improved": round(float((after > before)[before.notna()].mean()), 4),
        }
    return metrics


# --- report --------------------------------------------------------------------


def write_report(df: pd.DataFrame, out: Path, contrast: pd.DataFrame, metrics: dict[str, Any]) -> Path:
    """CDFs before/after, the contrast table summary, contact sheets, report.html."""
    ok = manifest.ok_rows(df)
    qc = _qc(out)
    before, after = _histograms(ok, out)
    plots = [
        report.cdf_plot(before, qc / "cdf_before.png", "Cleaned (before): intensity CDF inside the head"),
        report.cdf_plot(after, qc / "cdf_after.png", f"Enhanced ({metrics['chain']}): intensity CDF inside the head"),
    ]
    sheets = _contact_sheets(ok, out, qc)
    summary = [{"measure": k, **v} for k, v in metrics.items() if k in CONTRAST_KEYS]
    sections = [
        ("Outcome", report.dict_table_html({k: v for k, v in metrics.items()
                                            if k not in CONTRAST_KEYS and k != "error_list"})),
        ("Errors", report.table_html([{"id": k, "error": v} for k, v in metrics["error_list"].items()])),
        ("Contrast before and after (medians; per image in qc/contrast.csv)", report.table_html(summary)),
        ("Intensity distributions", "".join(report.img_html(out, p) for p in plots)),
        ("Before / after", "".join(report.img_html(out, p) for p in sheets)),
    ]
    return report.html_page(out / "report.html", "03_enhance: contrast enhancement", sections)


def _histograms(ok: pd.DataFrame, out: Path) -> tuple[dict, dict]:
    """256-bin head histograms per class, before and after."""
    before: dict[str, np.ndarray] = {}
    after: dict[str, np.ndarray] = {}
    for label, group in ok.groupby("label"):
        for row in group.head(400).itertuples():
            head = read_mask(out / row.head_mask_path).astype(np.uint8)
            for hists, path in ((before, row.clean_image_path), (after, row.image_path)):
                pixels = read_image(out / path).pixels
                hist = cv2.calcHist([pixels], [0], head, [256], [0, 256]).ravel()
                hists[f"{label} grey"] = hists.get(f"{label} grey", 0) + hist
    return before, after


def _contact_sheets(ok: pd.DataFrame, out: Path, qc: Path) -> list[Path]:
    """Pairs of (cleaned, enhanced), SHEET_PAIRS per sheet."""

    def cells(row: Any) -> list[np.ndarray]:
        return [report.caption(report.thumbnail(read_image(out / row.clean_image_path).pixels),
                               f"{row.label[:2]} {row.id}"),
                report.caption(report.thumbnail(read_image(out / row.image_path).pixels), "enhanced", (255, 128, 0))]

    return report.contact_sheets(ok.itertuples(), cells, qc, SHEET_PAIRS, MAX_SHEETS)


def _print_summary(out: Path, m: dict[str, Any]) -> None:
    print(f"03_enhance: {m['ok']}/{m['images']} images enhanced with '{m['chain']}' ({m['errors']} errors) -> {out}")
    for key in CONTRAST_KEYS:
        if key in m:
            v = m[key]
            print(f"  {key}: median {v['median_before']} -> {v['median_after']} "
                  f"(ratio {v['median_ratio_after_before']}, improved in {v['share_improved']:.0%} of {v['images']})")
    for item_id, reason in m["error_list"].items():
        print(f"  error {item_id}: {reason}")
    print(f"  report: {out / 'report.html'}")
