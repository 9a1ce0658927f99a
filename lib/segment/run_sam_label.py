"""Stage 07: SAM pseudo-labels for every tumour slice, scored against true masks where they exist.

Per tumour slice (label 'tumor', status ok):
1. a prompt box: `auto` = 04_cluster's candidate box, `truth` = the box of
   the true mask (an upper bound for evaluation), `file` = a CSV (id, box as
   'x0 y0 x1 y1') someone drew, `unet` = the box of the largest blob that a
   U-Net trained by 08 on earlier pseudo-labels draws (self-training, round 2;
   see unet_boxes);
2. the segmenter (lib.segment.segmenters, LiteMedSAM by default) answers with masks
   and scores; lib.segment.pseudo_label picks, cleans and scores the mask and accepts
   or rejects it (rejections are kept, with their reason);
3. masks/<id>.png (0/255, the size of the slice) for accepted labels.
Manifest columns: prompt_source, prompt_box, sam_score, sam_quality,
sam_status (accepted / rejected / no_prompt / skipped), sam_reason,
pred_mask_path (accepted) or rejected_mask_path, sam_dice (where a true mask
exists). Slices that are not
tumours pass through as 'skipped'. A rerun reuses finished slices.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from lib.common import manifest, report
from lib.common.dedup import sha256_file
from lib.common.io import read_image, read_mask, write_json_atomic, write_png
from lib.common.stage import Progress, check_in_dir, error_row, require_some_ok, write_lineage
from lib.regions import candidates
from lib.segment import mask_metrics, pseudo_label, segmenters

SAM_COLUMNS = ["prompt_source", "prompt_box", "sam_score", "sam_quality", "sam_status", "sam_reason",
               "pred_mask_path", "rejected_mask_path", "sam_dice"]
PROMPTS = ("auto", "truth", "file", "unet")
UNET_BATCH = 32  # slices per U-Net call when it draws the prompt boxes
SHEET_CELLS = 64  # overlays per contact sheet
MAX_SHEETS = 3


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Stage 07 from parsed arguments (see scripts/07_sam_label.py)."""
    out: Path = args.out
    rows_in = check_in_dir(args.in_dir, out)
    out.mkdir(parents=True, exist_ok=True)
    rows = manifest.rebase(rows_in, args.in_dir, out).to_dict("records")
    unet_model = _unet_model(args.unet) if args.prompt == "unet" else None
    signature = {"stage": "07_sam_label", "input": sha256_file(args.in_dir / manifest.MANIFEST),
                 "prompt": args.prompt, "boxes": str(args.boxes or ""), "engine": args.engine,
                 "preset": args.sam_preset, "min_quality": args.min_quality, "images": args.images,
                 "unet": sha256_file(unet_model) if unet_model else ""}
    progress = Progress(out, args.force, signature)
    todo = [r for r in rows if progress.finished(r["id"], _outputs(out, r)) is None]
    segmenter = _segmenter(args, todo)
    boxes = _file_boxes(args.boxes) if args.prompt == "file" else {}
    if unet_model is not None:
        boxes = unet_boxes(unet_model, [r for r in todo if _wants_label(r)], out)
    start = time.perf_counter()
    for row in tqdm(todo, desc="SAM labels", unit="img", dynamic_ncols=True):
        progress.add(_label_job(row, out, args, boxes, segmenter))
    seconds = time.perf_counter() - start
    df = manifest.write_rows([progress.rows[r["id"]] for r in rows], out)
    require_some_ok(df, out)
    metrics = measure(df, out, seconds, sum(r.get("label") == "tumor" for r in todo))
    write_json_atomic(out / "metrics.json", metrics)
    write_lineage(out, "07_sam_label", args, {"in": args.in_dir, "unet": unet_model.parent if unet_model else None})
    write_report(df, out, metrics)
    _print_summary(out, metrics)
    return metrics


def _segmenter(args: argparse.Namespace, todo: list[dict[str, Any]]) -> segmenters.Segmenter | None:
    """The segmenter, built only when some slice needs it; a missing model stops the stage in one line."""
    if not any(_wants_label(r) for r in todo):
        return None
    # SAM's authors advise one mask for a box prompt (several only for an ambiguous single point).
    options = {} if args.engine == "litemedsam" else {"multimask": False}
    try:
        return segmenters.load(args.engine, args.sam_preset, **options)
    except segmenters.SegmenterUnavailable as err:
        raise SystemExit(f"error: {err}") from None


def _wants_label(row: dict[str, Any]) -> bool:
    return row.get("status") == "ok" and row.get("label") == "tumor"


def _outputs(out: Path, row: dict[str, Any]) -> list[Path]:
    return [out / "masks" / f"{row['id']}.png"] if _wants_label(row) else []


def _file_boxes(path: Path | None) -> dict[str, str]:
    """id -> 'x0 y0 x1 y1' from a CSV with columns id and box."""
    if path is None or not Path(path).is_file():
        raise SystemExit(f"error: --prompt file needs --boxes CSV (columns id, box as 'x0 y0 x1 y1'); got {path}")
    table = pd.read_csv(path, dtype=str, keep_default_na=False)
    if not {"id", "box"} <= set(table.columns):
        raise SystemExit(f"error: {path}: needs columns id and box, has {', '.join(table.columns)}")
    return dict(zip(table["id"], table["box"]))


def _unet_model(path: Path | None) -> Path:
    """08's model.keras (or model.pt), given the file or its 08_unet_train folder; a missing one stops the stage."""
    from lib.segment.models import ARCHITECTURES, model_file

    model = path
    if path is not None and Path(path).is_dir():
        names = dict.fromkeys(model_file(architecture) for architecture in ARCHITECTURES)  # model.keras, model.pt
        model = next((Path(path) / name for name in names if (Path(path) / name).is_file()), None)
    if model is None or not Path(model).is_file():
        raise SystemExit(f"error: --prompt unet needs --unet, an 08_unet_train folder or its model.keras / model.pt "
                         f"(train one with scripts/08_unet_train.py --masks pseudo; of an --ensemble run, give one "
                         f"member's folder, e.g. DIR/seed-0); got {path}")
    return Path(model)


def unet_boxes(model_path: Path, rows: list[dict[str, Any]], out: Path) -> dict[str, str]:
    """Self-training, round 2: id -> box of the largest blob the 08 U-Net draws on the clean slice.

    Why: 04's candidate box misses the tumour on about one tumour slice in five, and SAM then
    outlines whatever the box holds. A U-Net trained on the round-1 labels has learnt what the
    accepted ones look like, and its box finds the tumour more often (figshare test part: accepted
    labels' Dice 0.785 against 0.671 with candidate boxes). No true mask is used. Slices that
    cannot be read get no box here; label_one reports their error.
    """
    from lib.segment.models import TUNED, engine, model_file

    segmenter = engine(TUNED if model_path.name == model_file(TUNED) else "unet")
    model = segmenter.load(model_path)
    readable = []
    for row in rows:
        try:
            readable.append((row["id"], read_image(out / manifest.slice_path(row)).pixels))
        except Exception:  # noqa: BLE001 - reported per slice by label_one
            continue
    found = {}
    for start in tqdm(range(0, len(readable), UNET_BATCH), desc="U-Net boxes", unit="batch", dynamic_ncols=True):
        chunk = readable[start:start + UNET_BATCH]
        for (item_id, _), mask in zip(chunk, segmenter.predict(model, [image for _, image in chunk])):
            found[item_id] = candidates.box_text(pseudo_label.blob_box(mask))
    return found


# --- per slice ----------------------------------------------------------------------


def _label_job(row: dict[str, Any], out: Path, args: argparse.Namespace, boxes: dict[str, str],
               segmenter: segmenters.Segmenter | None) -> dict[str, Any]:
    row = {**row, **{c: "" for c in SAM_COLUMNS}, "prompt_source": args.prompt}
    if not _wants_label(row):
        return {**row, "sam_status": "skipped", "sam_reason": "not a tumour slice" if row.get("status") == "ok"
                else "input error"}
    try:
        return label_one(row, out, args, boxes, segmenter)
    except Exception as err:  # noqa: BLE001 - one bad slice must not stop the stage
        return error_row(row, err)


def prompt_box(row: dict[str, Any], out: Path, prompt: str, boxes: dict[str, str]) -> candidates.Box | None:
    """The slice's prompt box in its own pixels, or None when the source has none."""
    if prompt == "auto":
        return candidates.parse_box_text(row.get("cand_box", ""))
    if prompt == "truth":
        if not row.get("mask_path"):
            raise ValueError("--prompt truth needs a true mask (mask_path) for every tumour slice")
        return candidates.mask_box(read_mask(out / row["mask_path"]))
    return candidates.parse_box_text(boxes.get(row["id"], ""))  # file or unet


def label_one(row: dict[str, Any], out: Path, args: argparse.Namespace, boxes: dict[str, str],
              segmenter: segmenters.Segmenter) -> dict[str, Any]:
    """Prompt, segment, clean, score one tumour slice; write its mask when accepted."""
    box = prompt_box(row, out, args.prompt, boxes)
    if box is None:
        return {**row, "sam_status": "no_prompt", "sam_reason": f"no {args.prompt} box"}
    image = read_image(out / manifest.slice_path(row, args.images)).pixels
    head = read_mask(out / row["head_mask_path"]) if row.get("head_mask_path") else None
    masks, scores = segmenter.predict(image, box=box)
    result = pseudo_label.label(masks, scores, box, head, args.min_quality)
    row.update(prompt_box=candidates.box_text(box), sam_score=round(result.sam_score, 4),
               sam_quality=round(result.quality, 4), sam_status=result.status, sam_reason=result.reason)
    path = out / "masks" / f"{row['id']}.png"
    write_png(path, result.mask.astype(np.uint8) * 255)  # rejected masks too: the report shows why
    row["pred_mask_path"] = f"masks/{row['id']}.png" if result.status == "accepted" else ""
    row["rejected_mask_path"] = "" if result.status == "accepted" else f"masks/{row['id']}.png"
    if row.get("mask_path"):
        row["sam_dice"] = round(mask_metrics.dice(result.mask, read_mask(out / row["mask_path"])), 4)
    return row


# --- measurement and report -----------------------------------------------------------------


def measure(df: pd.DataFrame, out: Path, seconds: float, labelled_now: int) -> dict[str, Any]:
    """Counts by status, rejection rate, speed, and Dice against true masks where they exist."""
    tumour = df[(df["status"] == "ok") & (df["label"] == "tumor")]
    counts = tumour["sam_status"].value_counts().to_dict()
    prompted = tumour[tumour["sam_status"].isin(["accepted", "rejected"])]
    metrics: dict[str, Any] = {
        "images": len(df), "tumour_slices": len(tumour), "errors": int((df["status"] == "error").sum()),
        "error_list": manifest.error_list(df), "by_status": {k: int(v) for k, v in counts.items()},
        "rejection_rate": round(float((prompted["sam_status"] == "rejected").mean()), 4) if len(prompted) else None,
        "seconds_per_slice": round(seconds / labelled_now, 3) if labelled_now else None,
    }
    dice = pd.to_numeric(tumour["sam_dice"], errors="coerce")
    if dice.notna().any():
        accepted = tumour["sam_status"] == "accepted"
        # A slice without prompt or with a rejected label has no pseudo-label: Dice 0 in "all".
        metrics["dice_vs_truth"] = {
            "accepted_mean": round(float(dice[accepted].mean()), 4) if accepted.any() else None,
            "accepted_median": round(float(dice[accepted].median()), 4) if accepted.any() else None,
            "prompted_mean": round(float(dice[prompted.index].mean()), 4) if len(prompted) else None,
            "all_tumour_slices_mean": round(float(dice.fillna(0).mean()), 4),
        }
    return metrics


def write_report(df: pd.DataFrame, out: Path, metrics: dict[str, Any]) -> Path:
    tumour = df[(df["status"] == "ok") & (df["label"] == "tumor") & (df["prompt_box"] != "")]
    sheets = overlay_sheets(tumour, out)
    sections = [
        ("Outcome", report.dict_table_html({k: v for k, v in metrics.items() if k != "error_list"})),
        ("Errors", report.table_html([{"id": k, "error": v} for k, v in metrics["error_list"].items()])),
        ("Pseudo-labels: prompt box (cyan), SAM mask (yellow accepted, red rejected), true mask (green)",
         "".join(report.img_html(out, p) for p in sheets)),
    ]
    return report.html_page(out / "report.html", "07_sam_label: SAM pseudo-labels", sections)


def overlay_sheets(rows: pd.DataFrame, out: Path) -> list[Path]:
    """Contact sheets of overlays, worst quality first (what a person should check)."""
    ordered = rows.assign(q=pd.to_numeric(rows["sam_quality"], errors="coerce")).sort_values("q")
    cells = [report.caption(overlay(r, out), f"{r['sam_status'][:3]} q{r['sam_quality']}")
             for r in ordered.head(SHEET_CELLS * MAX_SHEETS).to_dict("records")]
    (out / "qc").mkdir(exist_ok=True)
    return [report.contact_sheet(cells[i : i + SHEET_CELLS], out / "qc" / f"overlays_{i // SHEET_CELLS:03d}.png")
            for i in range(0, len(cells), SHEET_CELLS)]


def overlay(row: dict[str, Any], out: Path) -> np.ndarray:
    """The slice with the prompt box, the SAM mask's outline and the true mask's outline."""
    rgb = cv2.cvtColor(read_image(out / manifest.slice_path(row)).pixels, cv2.COLOR_GRAY2RGB)
    if row.get("mask_path"):
        report.outline(rgb, read_mask(out / row["mask_path"]), (0, 255, 0))
    path = row.get("pred_mask_path") or row.get("rejected_mask_path")
    if path:
        report.outline(rgb, read_mask(out / path), (255, 255, 0) if row["sam_status"] == "accepted" else (255, 0, 0))
    box = candidates.parse_box_text(row["prompt_box"])
    cv2.rectangle(rgb, box[:2], (box[2] - 1, box[3] - 1), (0, 255, 255), 1)
    return report.thumbnail(rgb)


def _print_summary(out: Path, m: dict[str, Any]) -> None:
    print(f"07_sam_label: {m['tumour_slices']} tumour slices, {m['by_status']}, rejection rate {m['rejection_rate']}"
          f", {m['seconds_per_slice']} s per slice ({m['errors']} errors) -> {out}")
    if "dice_vs_truth" in m:
        print("  Dice vs true masks: " + ", ".join(f"{k} {v}" for k, v in m["dice_vs_truth"].items()))
    for item_id, reason in m["error_list"].items():
        print(f"  error {item_id}: {reason}")
    print(f"  report: {out / 'report.html'}")
