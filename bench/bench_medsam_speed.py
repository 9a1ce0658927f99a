"""Benchmark: LiteMedSAM's frozen encoder per slice in each runtime and precision, with the tolerance checks.

Why: the encoder (about 75 GFLOP per 256 px slice) is what LiteMedSAM costs in
06's medsam_embed / fusion, 07's labels, 08's --refine sam and the demo. Each
route is timed on the same slices in the same run, after a warm-up, at batch 1
(what the demo and predict.py do), and checked against float32:
- pooled embeddings (what the classifiers read): cosine >= 0.999;
- masks from the true tumour box: mean Dice >= 0.99 (the lowest slice is
  printed too: on a small tumour a few boundary pixels move Dice by 0.01);
- with --classifier DIR (a stage folder with labels, e.g. navoneel's 02_clean):
  grouped 5-fold logistic regression on the pooled embeddings, ROC AUC within
  0.005 of float32's.
Routes, each run by lib.common.medsam unless named otherwise:
- PyTorch: `float32`; `bf16-autocast` (float32 weights under torch.autocast);
  `bfloat16` (weights and input cast); `torch-compile` (inductor, bfloat16);
- OpenVINO (lib.common.openvino_runtime): `openvino-f32`, `openvino-bf16` (what
  medsam's "auto" runtime and precision take on a CPU with native bfloat16);
- `onnxruntime`: the float32 encoder exported to ONNX (onnx and onnxruntime are
  pinned in bench/requirements.txt, which `make bench` installs; skipped where absent).
Writes bench/results/medsam_speed.json.

    python bench/bench_medsam_speed.py [--slices 12] [--real ../shared/data/figshare_seg]
                                       [--classifier runs/navoneel/02_clean] [--routes float32 openvino-bf16]
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.metadata
import os
import platform
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from lib.acquire import phantom  # noqa: E402
from lib.common import manifest, medsam  # noqa: E402
from lib.common.io import read_image, write_json_atomic  # noqa: E402
from lib.preprocess import clean  # noqa: E402
from lib.regions import candidates  # noqa: E402
from lib.segment.mask_metrics import dice  # noqa: E402

TOLERANCE = {"pooled_cosine_min": 0.999, "mask_dice_mean": 0.99, "auc_change_max": 0.005}
Encoder = Callable[[np.ndarray], np.ndarray]  # one cleaned slice -> its (256, 64, 64) float32 map


def medsam_route(runtime: str, precision: str, autocast: bool = False) -> Encoder:
    """The encoder as lib.common.medsam runs it with this runtime and precision."""
    context = torch.autocast("cpu", dtype=torch.bfloat16) if autocast else contextlib.nullcontext()

    def encode(image: np.ndarray) -> np.ndarray:
        with context:
            return medsam.embed_image([image], precision=precision, runtime=runtime)[0]

    return encode


def compiled_route() -> Encoder:
    """torch.compile (inductor) of the bfloat16 encoder, as medsam.COMPILE does; the compile is the warm-up."""
    medsam.COMPILE = True
    medsam._load.cache_clear()  # a fresh model for the compiled one; the eager routes keep theirs in their own runs
    return medsam_route("torch", "bfloat16")


def onnxruntime_route() -> Encoder:
    """The float32 encoder exported to ONNX and run by ONNX Runtime (bench only: bench/requirements.txt)."""
    import onnxruntime

    path = Path(tempfile.mkdtemp()) / "encoder.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(medsam.network().image_encoder.eval(), (torch.zeros(1, 3, 256, 256),), str(path),
                          input_names=["image"], output_names=["map"], opset_version=17, dynamo=False)
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = medsam.NUM_THREADS
    session = onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    return lambda image: session.run(None, {"image": medsam.preprocess(image)[None].numpy()})[0][0]


ROUTES: dict[str, Callable[[], Encoder]] = {
    "float32": lambda: medsam_route("torch", "float32"),
    "bf16-autocast": lambda: medsam_route("torch", "float32", autocast=True),
    "bfloat16": lambda: medsam_route("torch", "bfloat16"),
    "openvino-f32": lambda: medsam_route("openvino", "float32"),
    "openvino-bf16": lambda: medsam_route("openvino", "bfloat16"),
    "onnxruntime": onnxruntime_route,
    "torch-compile": compiled_route,
}
DEFAULT_ROUTES = ["float32", "bf16-autocast", "bfloat16", "openvino-f32", "openvino-bf16", "onnxruntime"]


def encode(images: list[np.ndarray], encoder: Encoder) -> tuple[np.ndarray, list[float]]:
    """Encoder maps of `images` one at a time, and the seconds each took (a warm-up first)."""
    encoder(images[0])  # builds or converts the model, warms the kernels
    maps, seconds = [], []
    for image in images:
        start = time.perf_counter()
        maps.append(encoder(image))
        seconds.append(time.perf_counter() - start)
    return np.stack(maps), seconds


def phantom_slices(count: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """Cleaned 256 px phantoms with one tumour each, and the true tumour mask in that frame."""
    found = []
    for seed in range(count):
        ph = phantom.make_slice(np.random.default_rng(seed), n_tumors=1)
        result = clean.clean_image(ph.image, size=256)
        found.append((result.image, clean.warp_mask(ph.tumor_mask, result.square_box, 256)))
    return found


def real_slices(folder: Path, count: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """`count` evenly spaced slices of an images/ + masks/ tree (e.g. ../shared/data/figshare_seg), as stored."""
    paths = sorted((folder / "images").glob("*.png"))
    if not paths:
        raise SystemExit(f"error: {folder}/images holds no PNG slices; give an images/ + masks/ folder")
    picked = [paths[i] for i in np.linspace(0, len(paths) - 1, min(count, len(paths))).round().astype(int)]
    return [(read_image(path).pixels, read_image(folder / "masks" / path.name).pixels > 127) for path in picked]


def compare(reference: np.ndarray, maps: np.ndarray, slices: list[tuple[np.ndarray, np.ndarray]]) -> dict:
    """How far `maps` are from the float32 maps: pooled cosine, map cosine, true-box mask Dice."""
    cosine = torch.nn.functional.cosine_similarity
    pooled = cosine(medsam.pool(torch.from_numpy(reference)), medsam.pool(torch.from_numpy(maps)))
    flat = cosine(torch.from_numpy(reference).flatten(1), torch.from_numpy(maps).flatten(1))
    dices = []
    for (image, truth), a, b in zip(slices, reference, maps):
        box = candidates.mask_box(truth)
        dices.append(dice(medsam.predict_box(a, box, image.shape)[0], medsam.predict_box(b, box, image.shape)[0]))
    return {"pooled_cosine_min": float(pooled.min()), "map_cosine_min": float(flat.min()),
            "mask_dice_min": min(dices), "mask_dice_mean": float(np.mean(dices))}


def classifier_auc(folder: Path, encoder: Encoder) -> float:
    """Grouped 5-fold ROC AUC of a logistic regression on the pooled embeddings of a labelled stage folder."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import roc_auc_score
    from sklearn.model_selection import StratifiedGroupKFold, cross_val_predict
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    rows = manifest.read(folder)
    rows = rows[(rows["status"] == "ok") & rows["label"].isin(["tumor", "no_tumor"])]
    images = [read_image(folder / p).pixels for p in rows["image_path"]]
    x = np.concatenate([medsam.pool(torch.from_numpy(encoder(image)[None])).numpy() for image in images])
    y = (rows["label"] == "tumor").to_numpy(int)
    model = make_pipeline(StandardScaler(), LogisticRegression(C=0.1, max_iter=2000))
    folds = StratifiedGroupKFold(5, shuffle=True, random_state=0)
    prob = cross_val_predict(model, x, y, groups=rows["dup_group"].to_numpy(), cv=folds, method="predict_proba")
    return float(roc_auc_score(y, prob[:, 1]))


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--slices", type=int, default=12, help="slices timed and checked per route")
    p.add_argument("--real", type=Path, default=None,
                   help="images/ + masks/ folder of real slices to use instead of phantoms (e.g. figshare_seg)")
    p.add_argument("--routes", nargs="+", default=DEFAULT_ROUTES, choices=list(ROUTES),
                   help="torch-compile is left out by default: its compile takes minutes")
    p.add_argument("--classifier", type=Path, default=None, help="labelled stage folder for the AUC check")
    p.add_argument("--json", type=Path, default=ROOT / "bench" / "results" / "medsam_speed.json")
    args = p.parse_args()
    slices = real_slices(args.real, args.slices) if args.real else phantom_slices(args.slices)
    images = [image for image, _ in slices]
    rows, reference = [], None
    for route in ["float32"] + [r for r in args.routes if r != "float32"]:
        try:
            encoder = ROUTES[route]()
        except ImportError as err:
            print(f"skipped {route}: {err}")
            continue
        maps, seconds = encode(images, encoder)
        reference = maps if reference is None else reference
        row = {"route": route, "seconds_per_slice": float(np.median(seconds)), **compare(reference, maps, slices)}
        if args.classifier:
            row["roc_auc"] = classifier_auc(args.classifier, encoder)
        rows.append(row)
    for row in rows:
        row["speedup"] = rows[0]["seconds_per_slice"] / row["seconds_per_slice"]
        row["auc_change"] = abs(row["roc_auc"] - rows[0]["roc_auc"]) if args.classifier else None
        row["within_tolerance"] = (row["pooled_cosine_min"] >= TOLERANCE["pooled_cosine_min"]
                                   and row["mask_dice_mean"] >= TOLERANCE["mask_dice_mean"]
                                   and (row["auc_change"] is None or row["auc_change"] <= TOLERANCE["auc_change_max"]))
    print_table(rows, args)
    write_json_atomic(args.json, {"machine": platform.platform(), "cores": os.cpu_count(), "torch": torch.__version__,
                                  "openvino": importlib.metadata.version("openvino"),
                                  "bf16_native": medsam.bf16_native("cpu"), "slices": args.slices,
                                  "source": str(args.real or "phantom"), "classifier": str(args.classifier or ""),
                                  "tolerance": TOLERANCE, "rows": rows})
    print(f"wrote {args.json}")
    return 0


def print_table(rows: list[dict], args: argparse.Namespace) -> None:
    source = args.real or "phantom"
    print(f"LiteMedSAM encoder, batch 1, median of {args.slices} slices of {source}; {os.cpu_count()} cores; "
          f"bfloat16 native: {medsam.bf16_native('cpu')}")
    print(f"{'route':<14} {'s/slice':>8} {'speedup':>8} {'pooled cos':>11} {'map cos':>8} {'mask Dice':>17} "
          f"{'ROC AUC':>8} {'ok':>4}")
    for r in rows:
        auc = f"{r['roc_auc']:.4f}" if "roc_auc" in r else "-"
        print(f"{r['route']:<14} {r['seconds_per_slice']:>8.3f} {r['speedup']:>7.2f}x {r['pooled_cosine_min']:>11.5f} "
              f"{r['map_cosine_min']:>8.4f} {r['mask_dice_min']:>8.4f} (mean {r['mask_dice_mean']:.3f}) {auc:>8} "
              f"{'yes' if r['within_tolerance'] else 'NO':>4}")


if __name__ == "__main__":
    sys.exit(main())
