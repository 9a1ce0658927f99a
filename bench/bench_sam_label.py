"""Benchmark: LiteMedSAM pseudo-labels (stage 07's engine) — speed per slice, and Dice against true masks.

On a 04_cluster folder with true masks (figshare by default), for the tumour
slices of one part of the index-range split (lib.common.splits.by_index_ranges;
`--part test` by default, the part U-Nets are scored on), each slice is
encoded once and prompted twice:
  truth  the true mask's box (the upper bound: a perfect detector),
  auto   04_cluster's candidate box (what 07 --prompt auto does).
Each answer goes through lib.segment.pseudo_label (cleanup, quality, rejection).
Prints Dice means (raw SAM mask, cleaned, accepted only, and over all slices
with rejected or missing labels counted as 0), the rejection rate, and time
per slice: encoder, decoder, total, eager and (--compile) compiled, with the
ratio to eager measured in the same run. Writes bench/results/sam_label.json.
Targets: truth-box Dice >= 0.90; auto Dice >= 0.75; <= 1.5 s per slice.

    python bench/bench_sam_label.py [--in runs/figshare/04_cluster] [--part test|val|train|all] [--compile 20]
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from lib.common import manifest, medsam, splits  # noqa: E402
from lib.common.io import read_image, read_mask, write_json_atomic  # noqa: E402
from lib.regions import candidates  # noqa: E402
from lib.segment import mask_metrics, pseudo_label, segmenters  # noqa: E402

TARGET_SECONDS = 1.5


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--in", dest="in_dir", type=Path, default=ROOT / "runs" / "figshare" / "04_cluster")
    p.add_argument("--part", default="test", choices=[*splits.PARTS, "all"])
    p.add_argument("--limit", type=int, default=0, help="at most this many slices (0 = all of the part)")
    p.add_argument("--compile", type=int, default=0, metavar="N",
                   help="also time N slices with torch.compile (after its one-off compile, reported apart)")
    p.add_argument("--json", type=Path, default=ROOT / "bench" / "results" / "sam_label.json")
    args = p.parse_args()
    rows = tumour_rows(args.in_dir, args.part, args.limit)
    if not rows:
        print(f"error: no tumour slices with true masks in {args.in_dir} (part {args.part})", file=sys.stderr)
        return 2
    segmenter = segmenters.load("litemedsam")
    results = [label_both(segmenter, row, args.in_dir) for row in rows]
    summary = summarise(results)
    if args.compile:
        summary["compiled"] = time_compiled(rows[: args.compile], args.in_dir)
    print_table(summary, args)
    args.json.parent.mkdir(parents=True, exist_ok=True)
    write_json_atomic(args.json, {"machine": platform.platform(), "cores": os.cpu_count(),
                                  "in": str(args.in_dir), "part": args.part, **summary})
    print(f"wrote {args.json}")
    return 0


def tumour_rows(folder: Path, part: str, limit: int) -> list[dict]:
    df = manifest.read(folder)
    ok = df[(df["status"] == "ok") & df["label"].isin(["tumor", "no_tumor"])]
    part_of = splits.by_index_ranges(list(ok["id"]), list(ok["dup_group"]))
    rows = [r for r in ok.to_dict("records")
            if r["label"] == "tumor" and r["mask_path"] and (part == "all" or part_of[r["id"]] == part)]
    return rows[:limit] if limit else rows


def label_both(segmenter: segmenters.Segmenter, row: dict, folder: Path) -> dict:
    image = read_image(folder / (row["clean_image_path"] or row["image_path"])).pixels
    truth = read_mask(folder / row["mask_path"])
    head = read_mask(folder / row["head_mask_path"]) if row.get("head_mask_path") else None
    start = time.perf_counter()
    segmenter.embedding(image)
    encode = time.perf_counter() - start
    out = {"id": row["id"], "encode_s": encode}
    for prompt, box in (("truth", candidates.mask_box(truth)), ("auto", candidates.parse_box_text(row["cand_box"]))):
        if box is None:
            out[prompt] = None
            continue
        start = time.perf_counter()
        masks, scores = segmenter.predict(image, box=box)
        out[f"decode_s_{prompt}"] = time.perf_counter() - start
        label = pseudo_label.label(masks, scores, box, head)
        out[prompt] = {"raw": mask_metrics.dice(masks[0], truth), "clean": mask_metrics.dice(label.mask, truth),
                       "status": label.status, "quality": label.quality}
    return out


def summarise(results: list[dict]) -> dict:
    summary = {"slices": len(results)}
    for prompt in ("truth", "auto"):
        answered = [r[prompt] for r in results if r[prompt] is not None]
        accepted = [a for a in answered if a["status"] == "accepted"]
        summary[prompt] = {
            "prompted": len(answered),
            "dice_raw_mean": _mean([a["raw"] for a in answered]),
            "dice_clean_mean": _mean([a["clean"] for a in answered]),
            "dice_accepted_mean": _mean([a["clean"] for a in accepted]),
            "dice_all_slices_mean": float(sum(a["clean"] for a in accepted) / len(results)),
            "rejection_rate": 1 - len(accepted) / len(answered) if answered else None,
            "quality_dice_correlation": _corr([a["quality"] for a in answered], [a["clean"] for a in answered]),
        }
    encode = np.array([r["encode_s"] for r in results])
    decode = np.array([r.get("decode_s_truth", np.nan) for r in results])
    summary["eager"] = {"encode_s_median": float(np.median(encode)), "decode_ms_median": float(np.nanmedian(decode) * 1000),
                        "per_slice_s_median": float(np.median(encode + np.nan_to_num(decode)))}
    return summary


def time_compiled(rows: list[dict], folder: Path) -> dict:
    """Encoder seconds per slice with torch.compile, after a warm-up slice that pays the compile."""
    medsam.COMPILE = True
    medsam._load.cache_clear()
    images = [read_image(folder / (r["clean_image_path"] or r["image_path"])).pixels for r in rows]
    start = time.perf_counter()
    medsam.embed_image(images[:1])
    compile_s = time.perf_counter() - start
    times = []
    for image in images[1:]:
        start = time.perf_counter()
        medsam.embed_image([image])
        times.append(time.perf_counter() - start)
    medsam.COMPILE = False
    medsam._load.cache_clear()
    return {"compile_s": compile_s, "encode_s_median": float(np.median(times)) if times else None, "slices": len(times)}


def _mean(values: list[float]) -> float | None:
    return float(np.mean(values)) if values else None


def _corr(a: list[float], b: list[float]) -> float | None:
    return float(np.corrcoef(a, b)[0, 1]) if len(a) > 2 and np.std(a) > 0 and np.std(b) > 0 else None


def _fmt(value: float | None, digits: int = 3) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def print_table(s: dict, args: argparse.Namespace) -> None:
    print(f"\nLiteMedSAM pseudo-labels on {args.in_dir} ({args.part} part, {s['slices']} tumour slices, "
          f"{os.cpu_count()} cores)")
    print(f"{'prompt':<8}{'prompted':>9}{'raw':>8}{'clean':>8}{'accepted':>9}{'all':>8}{'rejected':>9}{'q~Dice r':>9}")
    for prompt in ("truth", "auto"):
        r = s[prompt]
        print(f"{prompt:<8}{r['prompted']:>9}{_fmt(r['dice_raw_mean']):>8}{_fmt(r['dice_clean_mean']):>8}"
              f"{_fmt(r['dice_accepted_mean']):>9}{_fmt(r['dice_all_slices_mean']):>8}"
              f"{_fmt(r['rejection_rate']):>9}{_fmt(r['quality_dice_correlation'], 2):>9}")
    e = s["eager"]
    print(f"time per slice (eager): encoder {e['encode_s_median']:.2f} s, decoder {e['decode_ms_median']:.0f} ms, "
          f"total {e['per_slice_s_median']:.2f} s (target {TARGET_SECONDS} s)")
    if "compiled" in s and s["compiled"]["encode_s_median"]:
        c = s["compiled"]
        print(f"torch.compile: one-off {c['compile_s']:.0f} s, then encoder {c['encode_s_median']:.2f} s "
              f"(x{e['encode_s_median'] / c['encode_s_median']:.2f} faster than eager, {c['slices']} slices)")


if __name__ == "__main__":
    sys.exit(main())
