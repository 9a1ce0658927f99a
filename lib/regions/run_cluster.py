"""Stage 04: intensity regions, a tumour-candidate box and handcrafted features per slice.

1. k: with `--k auto`, a sweep over k = 2..20 (WCSS, BCSS, silhouette,
   Calinski-Harabasz) on a sample of slices, averaged, and lib.regions.cluster's rule
   picks k; the choice and its reason are recorded (k_choice.json).
2. Per slice: k-means inside the head (lib.regions.cluster), a colour-coded region map
   ordered by intensity, optional watershed / Chan-Vese regions, the tumour
   candidate (lib.regions.candidates: `cand_box`, `cand_score`) and the handcrafted
   features (lib.regions.features) kept in features/<id>.json and gathered into
   features.csv.
3. Where true masks exist, the candidate is scored against them (hit rate,
   box IoU); where only labels exist, how well `cand_score` separates them.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pandas as pd

from lib.common import manifest, report
from lib.common.dedup import sha256_file
from lib.common.io import read_image, read_mask, write_json_atomic, write_png, write_text_atomic
from lib.common.stage import Progress, check_in_dir, error_row, imap, require_some_ok, write_lineage
from lib.preprocess.clean import head_mask
from lib.regions import candidates, cluster, features

CLUSTER_COLUMNS = [
    "k", "cluster_path", "cluster_labels_path", "cand_box", "cand_score", "cand_reason",
    "cand_hit", "cand_iou", "features_path", "watershed_path", "chanvese_path",
]
REGION_TOOLS = ("watershed", "chanvese")
SWEEP_IMAGES = 24  # slices in the k sweep: enough for a stable mean curve, ~12 s on 2 cores
SWEEP_PLOTS = 4  # per-slice sweep plots kept next to the mean one
SHEET_ROWS = 48  # slices per contact sheet (image with boxes, region map)
MAX_SHEETS = 4


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Stage 04 from parsed arguments (see scripts/04_cluster.py)."""
    out: Path = args.out
    regions = _parse_regions(args.regions)
    rows_in = check_in_dir(args.in_dir, out)
    out.mkdir(parents=True, exist_ok=True)
    rows_in = manifest.rebase(rows_in, args.in_dir, out).to_dict("records")
    input_hash = sha256_file(args.in_dir / manifest.MANIFEST)
    k, k_choice = choose_k(rows_in, out, args, input_hash)
    options = {"k": k, "features": args.features, "regions": regions, "candidate_on": args.candidate_on}
    progress = Progress(out, args.force, {"stage": "04_cluster", "input": input_hash, **options})
    jobs = [(row, options, str(out)) for row in rows_in if progress.finished(row["id"], _outputs(out, row, regions)) is None]
    for row in imap(_cluster_job, jobs, args.workers, desc="cluster"):
        progress.add(row)
    df = manifest.write_rows([progress.rows[r["id"]] for r in rows_in], out)
    require_some_ok(df, out)
    table = gather_features(df, out)
    metrics = measure(df, out, k_choice)
    metrics["cluster_features"] = args.features  # what predict-time preprocessing must repeat (lib.deploy.predictor)
    write_json_atomic(out / "metrics.json", metrics)
    write_lineage(out, "04_cluster", args, {"in": args.in_dir}, chosen_k=k,
                  feature_columns=[c for c in table.columns if c not in ("id", "label")])
    write_report(df, out, table, metrics)
    _print_summary(out, metrics)
    return metrics


def _parse_regions(text: str) -> tuple[str, ...]:
    names = tuple(n.strip() for n in text.split(",") if n.strip() and n.strip() != "none")
    unknown = [n for n in names if n not in REGION_TOOLS]
    if unknown:
        raise SystemExit(f"error: unknown region tool {unknown[0]!r}; choose from {', '.join(REGION_TOOLS)} or none")
    return names


def _outputs(out: Path, row: dict[str, Any], regions: tuple[str, ...]) -> list[Path]:
    stem = row["id"]
    paths = [out / "clusters" / f"{stem}.png", out / "labels" / f"{stem}.png", out / "features" / f"{stem}.json"]
    return paths + [out / "regions" / f"{stem}_{tool}.png" for tool in regions]


# --- choosing k ------------------------------------------------------------------


def choose_k(rows: list[dict[str, Any]], out: Path, args: argparse.Namespace, input_hash: str) -> tuple[int, dict]:
    """k from the command line, or from the mean sweep over a sample (reused when inputs are unchanged)."""
    if args.k != "auto":
        k = int(args.k)
        if not 2 <= k <= len(cluster.PALETTE):
            raise SystemExit(f"error: --k {k} out of range; use 2..{len(cluster.PALETTE)} or auto")
        return k, {"k": k, "reason": "given on the command line (--k)"}
    path = out / "k_choice.json"
    key = {"input": input_hash, "sweep_images": args.sweep_images, "seed": args.seed}
    if path.is_file() and not args.force:
        saved = json.loads(path.read_text())
        if saved.get("key") == key:
            return int(saved["k"]), saved
    sample = _sweep_sample(rows, args.sweep_images, args.seed)
    if not sample:
        raise SystemExit(f"error: {args.in_dir} has no usable images for the k sweep")
    tables = list(imap(_sweep_job, [(row, str(out)) for row in sample], args.workers, desc="k sweep"))
    mean = cluster.mean_sweep([pd.DataFrame(t) for t in tables])
    k, reason = cluster.choose_k(mean)
    qc = _qc(out)
    mean.to_csv(qc / "k_sweep_mean.csv", index=False)
    cluster.plot_sweep(mean, qc / "k_sweep_mean.png", f"k sweep, mean of {len(sample)} slices (normalised)")
    for row, table in list(zip(sample, tables))[:SWEEP_PLOTS]:
        cluster.plot_sweep(pd.DataFrame(table), qc / f"k_sweep_{row['id']}.png", f"k sweep: {row['id']}")
    choice = {"k": int(k), "reason": reason, "images": [r["id"] for r in sample], "key": key}
    write_json_atomic(path, choice)
    return int(k), choice


def _sweep_sample(rows: list[dict[str, Any]], n: int, seed: int) -> list[dict[str, Any]]:
    """A seeded sample of ok rows, balanced over labels as far as they allow."""
    ok = pd.DataFrame([r for r in rows if r.get("status") == "ok"])
    if ok.empty:
        return []
    per_label = max(1, n // ok["label"].nunique())
    picked = ok.groupby("label", group_keys=False).apply(
        lambda g: g.sample(min(len(g), per_label), random_state=seed))
    return picked.head(n).to_dict("records")


def _sweep_job(job: tuple[dict[str, Any], str]) -> dict[str, list]:
    row, out = job
    image, head = _image_and_head(row, Path(out))
    return cluster.sweep(image, head).to_dict("list")


def _image_and_head(row: dict[str, Any], out: Path) -> tuple[np.ndarray, np.ndarray]:
    """The stage's image and its head mask (03's, or computed when the input is 02)."""
    image = read_image(out / row["image_path"]).pixels
    head = read_mask(out / row["head_mask_path"]) if row.get("head_mask_path") else head_mask(image)
    return image, head


def _qc(out: Path) -> Path:
    (out / "qc").mkdir(parents=True, exist_ok=True)
    return out / "qc"


# --- per slice ----------------------------------------------------------------------


def _cluster_job(job: tuple[dict[str, Any], dict[str, Any], str]) -> dict[str, Any]:
    row, options, out = job
    row = {**row, **{c: "" for c in CLUSTER_COLUMNS}}
    if row.get("status") == "error":
        return row
    try:
        return cluster_one(row, Path(out), options)
    except Exception as err:  # noqa: BLE001 - one bad slice must not stop the stage
        return error_row(row, err, file=manifest.resolve(out, row["image_path"]) if row.get("image_path") else None)


def cluster_one(row: dict[str, Any], out: Path, options: dict[str, Any]) -> dict[str, Any]:
    """Regions, candidate and features of one slice; returns the row with this stage's columns."""
    stem = row["id"]
    image, head = _image_and_head(row, out)
    fitted = cluster.fit(image, head, k=options["k"], features=options["features"])
    write_png(out / "clusters" / f"{stem}.png", cluster.colourise(fitted.labels))
    write_png(out / "labels" / f"{stem}.png", (fitted.labels + 1).astype(np.uint8))
    row.update(k=options["k"], cluster_path=f"clusters/{stem}.png", cluster_labels_path=f"labels/{stem}.png")
    for tool in options["regions"]:
        row[f"{tool}_path"] = _write_regions(out, stem, tool, image, head, fitted)
    prompt_image = _candidate_image(row, out, image, options["candidate_on"])
    cand = candidates.find(prompt_image, head, fitted.labels)
    row.update(cand_box=candidates.box_text(cand.box), cand_score=round(cand.score, 4), cand_reason=cand.reason)
    if row.get("mask_path"):
        truth = read_mask(out / row["mask_path"])
        row["cand_hit"] = int(candidates.box_hit(cand.box, truth)) if truth.any() else ""
        row["cand_iou"] = round(candidates.box_iou(cand.box, truth), 4) if truth.any() else ""
    values = features.extract(image, head, fitted.labels)
    write_json_atomic(out / "features" / f"{stem}.json", values)
    row["features_path"] = f"features/{stem}.json"
    return row


def _candidate_image(row: dict[str, Any], out: Path, image: np.ndarray, which: str) -> np.ndarray:
    if which == "clean" and row.get("clean_image_path"):
        return read_image(out / row["clean_image_path"]).pixels
    return image


def _write_regions(out: Path, stem: str, tool: str, image: np.ndarray, head: np.ndarray,
                   fitted: cluster.Clustering) -> str:
    """Watershed regions (colour per region) or the Chan-Vese foreground (0/255)."""
    rel = f"regions/{stem}_{tool}.png"
    if tool == "watershed":
        regions = cluster.watershed_regions(image, head, fitted)
        write_png(out / rel, cluster.colourise(np.where(regions > 0, (regions - 1) % len(cluster.PALETTE), -1)))
    else:
        write_png(out / rel, cluster.chan_vese(image, head).astype(np.uint8) * 255)
    return rel


# --- tables and measurement ---------------------------------------------------------------


def gather_features(df: pd.DataFrame, out: Path) -> pd.DataFrame:
    """features.csv (id, label, then every lib.regions.features column) and features.md (what each means)."""
    ok = manifest.ok_rows(df)
    records = [{"id": r.id, "label": r.label, **json.loads((out / r.features_path).read_text())}
               for r in ok.itertuples()]
    table = pd.DataFrame(records, columns=["id", "label", *features.COLUMNS])
    table.to_csv(out / "features.csv", index=False)
    write_text_atomic(out / "features.md", "# features.csv columns\n\n" + features.columns_markdown() + "\n")
    return table


def measure(df: pd.DataFrame, out: Path, k_choice: dict[str, Any]) -> dict[str, Any]:
    """Counts, the k choice, and the candidate measured against truth or labels."""
    ok = manifest.ok_rows(df)
    metrics: dict[str, Any] = {
        "images": len(df), "ok": len(ok), "errors": int((df["status"] == "error").sum()),
        "error_list": manifest.error_list(df),
        "k": int(k_choice["k"]), "k_reason": k_choice["reason"], "feature_columns": len(features.COLUMNS),
    }
    with_mask = ok[ok["mask_path"] != ""] if "mask_path" in ok.columns else ok.iloc[:0]
    if len(with_mask):
        pairs = [(_candidate_of(r, out), read_mask(out / r.mask_path)) for r in with_mask.itertuples()]
        metrics["candidates_vs_truth"] = candidates.evaluate(pairs)
    metrics["candidates_by_label"] = _by_label(ok)
    return metrics


def _candidate_of(row: Any, out: Path) -> candidates.Candidate:
    """The row's candidate again, with its head area (for the box's share of the head)."""
    head_area = int(read_mask(out / row.head_mask_path).sum()) if getattr(row, "head_mask_path", "") else 0
    return candidates.Candidate(candidates.parse_box_text(row.cand_box), float(row.cand_score), row.cand_reason,
                                head_area=head_area)


def _by_label(ok: pd.DataFrame) -> dict[str, Any]:
    """Share of slices with a candidate and mean score per label; ROC AUC of the score."""
    out: dict[str, Any] = {}
    for label, group in ok.groupby("label"):
        out[label] = {"images": len(group), "with_candidate": round(float((group["cand_box"] != "").mean()), 4),
                      "mean_score": round(float(group["cand_score"].astype(float).mean()), 4)}
    if {"tumor", "no_tumor"} <= set(ok["label"]):
        from sklearn.metrics import roc_auc_score

        known = ok[ok["label"].isin(["tumor", "no_tumor"])]
        out["score_roc_auc"] = round(float(roc_auc_score(known["label"] == "tumor",
                                                         known["cand_score"].astype(float))), 4)
    return out


# --- report -------------------------------------------------------------------------------


def write_report(df: pd.DataFrame, out: Path, table: pd.DataFrame, metrics: dict[str, Any]) -> Path:
    ok = manifest.ok_rows(df)
    qc = _qc(out)
    sweep_plots = sorted(qc.glob("k_sweep_*.png"))
    sheets = _contact_sheets(ok, out, qc)
    by_class = table.groupby("label")[list(features.COLUMNS)].median().T.reset_index(names="feature")
    cand = {k: v for k, v in metrics.items() if k.startswith("candidates")}
    sections = [
        ("Outcome", report.dict_table_html({k: v for k, v in metrics.items()
                                            if k != "error_list" and not k.startswith("candidates")})),
        ("Errors", report.table_html([{"id": k, "error": v} for k, v in metrics["error_list"].items()])),
        ("Choosing k", "".join(report.img_html(out, p) for p in sweep_plots)),
        ("Tumour candidates", report.dict_table_html(cand)),
        ("Slices: candidate (red), true tumour box (green); regions by intensity",
         "".join(report.img_html(out, p) for p in sheets)),
        ("Features: median per class (columns explained in features.md)",
         report.table_html(by_class.round(4).to_dict("records"))),
    ]
    return report.html_page(out / "report.html", "04_cluster: regions, candidates, features", sections)


def _contact_sheets(ok: pd.DataFrame, out: Path, qc: Path) -> list[Path]:
    """Pairs of (slice with candidate and true boxes, region map), SHEET_ROWS per sheet."""

    def cells(row: Any) -> list[np.ndarray]:
        return [report.caption(_with_boxes(row, out), f"{row.label[:2]} {row.cand_score}"),
                report.thumbnail(read_image(out / row.cluster_path).pixels)]

    return report.contact_sheets(ok.itertuples(), cells, qc, SHEET_ROWS, MAX_SHEETS)


def _with_boxes(row: Any, out: Path) -> np.ndarray:
    rgb = cv2.cvtColor(read_image(out / row.image_path).pixels, cv2.COLOR_GRAY2RGB)
    if row.mask_path:
        truth = candidates.mask_box(read_mask(out / row.mask_path))
        if truth is not None:
            cv2.rectangle(rgb, truth[:2], (truth[2] - 1, truth[3] - 1), (0, 255, 0), 2)
    box = candidates.parse_box_text(row.cand_box)
    if box is not None:
        cv2.rectangle(rgb, box[:2], (box[2] - 1, box[3] - 1), (255, 0, 0), 2)
    return report.thumbnail(rgb)


def _print_summary(out: Path, m: dict[str, Any]) -> None:
    print(f"04_cluster: {m['ok']}/{m['images']} slices, k = {m['k']} ({m['k_reason']}) ({m['errors']} errors) -> {out}")
    if "candidates_vs_truth" in m:
        c = m["candidates_vs_truth"]
        print("  candidate vs true tumour: " + ", ".join(f"{k} {v:.3f}" if isinstance(v, float) else f"{k} {v}"
                                                     for k, v in c.items()))
    print("  candidate by label: " + json.dumps(m["candidates_by_label"]))
    for item_id, reason in m["error_list"].items():
        print(f"  error {item_id}: {reason}")
    print(f"  features: {out / 'features.csv'} ({m['feature_columns']} columns, see features.md)")
    print(f"  report: {out / 'report.html'}")
