"""Stage 05: train a DDIM on 02's cleaned slices, sample from it, and score how real the samples are.

Reads 02's manifest (tumour slices only, or both classes with --conditional);
holds out a share of the duplicate groups as real validation slices (never
trained on: the validation losses and KID are measured against them), or, with
--splits and --fold, trains on one 06 fold's inner training part only; trains
lib.synth.diffusion's network with a checkpoint per epoch (a rerun resumes,
--time-budget stops in time); then writes the model (EMA weights), samples/
with a manifest (origin=synthetic, label, seed: readable like any stage
folder), trained_on.csv (the real slices it learned from), sample grids, loss
curves, KID with its real-vs-real floor, the two-sample test, metrics.json and
report.html.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import cv2
import keras
import numpy as np
import pandas as pd
from sklearn.model_selection import GroupShuffleSplit

from lib.common import manifest, metrics, plots, report, splits
from lib.common.fingerprint import fingerprint
from lib.common.io import read_image, write_json_atomic, write_png, write_text_atomic
from lib.common.keras_checkpoint import CHECKPOINT_DIR, EpochCheckpoint, TimeBudget
from lib.common.stage import NOT_SETTINGS, check_in_dir, write_lineage
from lib.synth import anomaly, diffusion, realism

MODEL_FILE = "model.keras"
TRAINED_ON = "trained_on.csv"
LABELS = {"no_tumor": 0, "tumor": 1}
GRID_SAMPLES = 16


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Stage 05 from parsed arguments (see scripts/05_ddim_train.py)."""
    out: Path = args.out
    table = check_in_dir(args.in_dir, out)
    rows, train, val, fold = choose_parts(table, args)
    realism.check(args.kid_features)  # InceptionV3 offline: say so now, not after the training
    images = load_slices(args.in_dir, rows, args.size)
    mean, std = float(images[train].mean()), float(images[train].std()) or 1.0
    normalised = ((images - mean) / std)[..., None]
    labels = rows["label"].map(LABELS).to_numpy(np.int32) if args.conditional else None
    out.mkdir(parents=True, exist_ok=True)
    print(f"05_ddim_train: {len(train)} training and {len(val)} held-out real slices at {args.size} px"
          f"{' (both classes, conditional)' if args.conditional else ' (tumour slices)'}")
    network, history = train_network(normalised, labels, train, val, (mean, std), args)
    seconds = float(np.nansum(history.get("epoch_seconds", [])))  # every run's epochs, a resumed one's included
    write_trained_on(rows.iloc[train], out)
    result = {"size": args.size, "conditional": args.conditional, "fold": fold, "train_slices": int(len(train)),
              "val_slices": int(len(val)), "epochs_run": len(history.get("loss", [])), "train_seconds": seconds,
              "normalisation": {"mean": mean, "std": std}, "ema_momentum": diffusion.ema_momentum(total_steps(args, train)),
              "final": {key: values[-1] for key, values in history.items() if values}}
    generated, generated_labels = write_samples(network, args, mean, std, out)
    result["realism"] = score_realism(images, rows, train, val, generated, generated_labels, args)
    result["anomaly"] = score_anomaly(network, table, rows.iloc[val], (mean, std), args)
    result["plots"] = write_plots(network, history, mean, std, args, out)
    write_json_atomic(out / "metrics.json", result)
    write_lineage(out, "05_ddim_train", args, {"in": args.in_dir})
    write_report(out, result)
    print_summary(result, out)
    return result


# --- data ------------------------------------------------------------------------------


def real_rows(df: pd.DataFrame, conditional: bool) -> pd.DataFrame:
    """The usable real slices: status ok, labelled tumour (or either class when conditional)."""
    wanted = list(LABELS) if conditional else ["tumor"]
    rows = manifest.ok_rows(df)
    rows = rows[rows["label"].isin(wanted)].reset_index(drop=True)
    if len(rows) < 4:
        raise SystemExit(f"error: only {len(rows)} usable {'/'.join(wanted)} slices in the input; "
                         "05 needs at least 4 (point --in at 02_clean's folder)")
    return rows


def choose_parts(table: pd.DataFrame, args: argparse.Namespace) -> tuple[pd.DataFrame, np.ndarray, np.ndarray,
                                                                        dict[str, Any] | None]:
    """The real slices, the training and held-out positions into them, and the fold (None without --splits).

    With --splits and --fold the generator trains on that fold's inner training part only and is scored
    against its inner validation part; the fold's test slices are left out altogether, so 06 may add this
    generator's images to that fold's training without leaking its validation or test slices."""
    rows = real_rows(table, args.conditional)
    if getattr(args, "splits", None) is None:
        train, val = split(rows, args.val_fraction, args.seed)
        return rows, train, val, None
    folds = read_splits(args.splits, args.fold, args.repeat)
    labelled = manifest.ok_rows(table)
    labelled = labelled[labelled["label"].isin(list(LABELS))].reset_index(drop=True)
    ids = labelled["id"].tolist()
    if not set(ids) & set(folds["assignments"][args.repeat]):
        raise SystemExit(f"error: {args.splits} names none of {args.in_dir}'s slices; give the splits.json of a "
                         "06 run on this data set")
    inner, held, _ = splits.fold_parts(folds, ids, (labelled["label"] == "tumor").to_numpy(),
                                       labelled.get("dup_group", labelled["id"]).to_numpy(), args.repeat, args.fold)
    train_ids, held_ids = set(labelled["id"].iloc[inner]), set(labelled["id"].iloc[held])
    rows = rows[rows["id"].isin(train_ids | held_ids)].reset_index(drop=True)
    train = np.flatnonzero(rows["id"].isin(train_ids).to_numpy())
    val = np.flatnonzero(rows["id"].isin(held_ids).to_numpy())
    if len(train) < 2 or len(val) < 2:
        raise SystemExit(f"error: fold {args.fold} of {args.splits} leaves {len(train)} training and {len(val)} "
                         "held-out slices of the wanted classes; use fewer folds or --conditional")
    return rows, train, val, {"splits": str(args.splits), "digest": splits.digest(folds), "fold": args.fold,
                              "repeat": args.repeat}


def read_splits(path: Path, fold: int | None, repeat: int) -> dict[str, Any]:
    """06's splits.json, checked against --fold and --repeat."""
    try:
        folds = json.loads(Path(path).read_text())
    except (OSError, ValueError) as err:
        raise SystemExit(f"error: --splits {path}: {err}; give the splits.json that 06_classify_kfold wrote") from None
    if fold is None or not 0 <= fold < folds["folds"] or not 0 <= repeat < len(folds["assignments"]):
        raise SystemExit(f"error: --splits {path} has folds 0-{folds['folds'] - 1} and repeats "
                         f"0-{len(folds['assignments']) - 1}; give --fold (and --repeat) within them")
    return folds


def write_trained_on(rows: pd.DataFrame, out: Path) -> Path:
    """trained_on.csv: id, label and content hash of every real slice the generator learned from.

    Why: 06 --synthetic reads it to refuse a generator that saw a fold's validation or test slices
    (by id within one data set, by hash across copies)."""
    columns = [c for c in ("id", "label", "sha256") if c in rows.columns]
    path = out / TRAINED_ON
    write_text_atomic(path, rows[columns].to_csv(index=False))
    return path


def load_slices(in_dir: Path, rows: pd.DataFrame, size: int) -> np.ndarray:
    """Grey slices in [0, 1], resized to size x size (INTER_AREA: averaging, no aliasing)."""
    out = []
    for path in rows["image_path"]:
        pixels = read_image(manifest.resolve(in_dir, path)).pixels
        grey = pixels if pixels.ndim == 2 else cv2.cvtColor(pixels, cv2.COLOR_RGB2GRAY)
        out.append(cv2.resize(grey, (size, size), interpolation=cv2.INTER_AREA).astype(np.float32) / 255.0)
    return np.stack(out)


def split(rows: pd.DataFrame, val_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Training and held-out indices; duplicate groups stay on one side, so no near copy is on both."""
    groups = rows["dup_group"].where(rows["dup_group"] != "", rows["id"]).to_numpy()
    splitter = GroupShuffleSplit(n_splits=1, test_size=val_fraction, random_state=seed)
    train, val = next(splitter.split(rows, groups=groups))
    return np.sort(train), np.sort(val)


# --- training --------------------------------------------------------------------------


def total_steps(args: argparse.Namespace, train: np.ndarray) -> int:
    return int(args.epochs) * max(1, int(np.ceil(len(train) / args.batch_size)))


class ImageLoss(keras.callbacks.Callback):
    """Adds the original's image loss (training and validation) and the epoch's seconds to each epoch's logs,
    and a sample grid every `grid_every` epochs (same seed: the grids show one set of slices taking shape)."""

    def __init__(self, images: np.ndarray, labels: np.ndarray | None, train: np.ndarray, val: np.ndarray,
                 grid: tuple[int, float, float, Path] | None, seed: int) -> None:
        super().__init__()
        self.images, self.labels, self.train, self.val, self.grid, self.seed = images, labels, train, val, grid, seed

    def _part(self, index: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        return self.images[index], None if self.labels is None else self.labels[index]

    def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
        self.clock = time.perf_counter()

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        if logs is None:
            return
        logs["epoch_seconds"] = time.perf_counter() - self.clock
        logs["image_loss"] = diffusion.image_loss(self.model, *self._part(self.train[:64]), seed=self.seed)
        logs["val_image_loss"] = diffusion.image_loss(self.model, *self._part(self.val), seed=self.seed + 1)
        if self.grid and (epoch + 1) % self.grid[0] == 0:
            every, mean, std, folder = self.grid
            slices = diffusion.sample(self.model, GRID_SAMPLES, 10, self.seed, grid_labels(self.labels))
            grid_png(slices, mean, std, folder / f"epoch-{epoch + 1:04d}.png")


def train_network(images: np.ndarray, labels: np.ndarray | None, train: np.ndarray, val: np.ndarray,
                  mean_std: tuple[float, float], args: argparse.Namespace) -> tuple[keras.Model, dict[str, list[float]]]:
    """Fit (or resume, or reuse a finished run); returns the network with EMA weights and every epoch's curves."""
    keras.utils.set_random_seed(args.seed)
    network = diffusion.build_network(args.size, args.widths, args.block_depth, args.conditional)
    diffusion.compile_network(network, total_steps(args, train), args.learning_rate)
    not_training = (*NOT_SETTINGS, "time_budget", "samples", "kid_features", "kid_subsets", "steps", "grid_every")
    identity = {"options": {k: v for k, v in vars(args).items() if k not in not_training},
                "slices": fingerprint(images, train)}
    budget = [TimeBudget(args.time_budget)] if args.time_budget else []
    checkpoint = EpochCheckpoint(args.out / CHECKPOINT_DIR, identity, budget, fresh=args.force)
    if checkpoint.finished and (args.out / MODEL_FILE).is_file():
        print(f"{args.out}: already trained with these options and slices (--force to retrain)")
        return keras.saving.load_model(args.out / MODEL_FILE), checkpoint.history
    checkpoint.restore(network)
    grid = (args.grid_every, *mean_std, args.out / "grids") if args.grid_every else None
    part = (lambda index: None) if labels is None else (lambda index: labels[index])
    batches = diffusion.NoisyBatches(images[train], part(train), args.batch_size, args.seed)
    batches.epoch = checkpoint.epochs_done  # a resumed run draws the noise the uninterrupted one would
    network.fit(batches,
                validation_data=diffusion.NoisyBatches(images[val], part(val), args.batch_size, args.seed + 1,
                                                       fixed=True),
                epochs=args.epochs, initial_epoch=checkpoint.epochs_done, verbose=2,
                shuffle=False,  # NoisyBatches orders each epoch by its own seed: a resumed run replays it exactly
                callbacks=[ImageLoss(images, labels, train, val, grid, args.seed), *budget, checkpoint])
    partial = args.out / f".partial.{MODEL_FILE}"  # Keras wants the .keras suffix; renamed when whole
    network.save(partial)
    partial.replace(args.out / MODEL_FILE)
    checkpoint.finish()  # only now: a run killed before this point trains on, never reuses a missing model
    return network, checkpoint.history


# --- samples and scores ----------------------------------------------------------------


def grid_labels(labels: np.ndarray | None) -> np.ndarray | None:
    """Half no tumour, half tumour for a conditional model's grid; None otherwise."""
    return None if labels is None else np.repeat([0, 1], GRID_SAMPLES // 2).astype(np.int32)


def to_uint8(slices: np.ndarray, mean: float, std: float) -> np.ndarray:
    """Normalised network output (N, S, S, 1) -> grey uint8 slices (N, S, S)."""
    return np.clip((slices[..., 0] * std + mean) * 255.0, 0, 255).round().astype(np.uint8)


def grid_png(slices: np.ndarray, mean: float, std: float, path: Path) -> Path:
    """A square grid of generated slices."""
    pixels = to_uint8(slices, mean, std)
    side = int(np.ceil(np.sqrt(len(pixels))))
    padded = np.concatenate([pixels, np.zeros((side * side - len(pixels), *pixels.shape[1:]), np.uint8)])
    rows = [np.concatenate(list(padded[r * side:(r + 1) * side]), axis=1) for r in range(side)]
    write_png(path, np.concatenate(rows, axis=0))
    return path


def write_samples(network: keras.Model, args: argparse.Namespace, mean: float, std: float,
                  out: Path) -> tuple[np.ndarray, np.ndarray]:
    """--samples slices (half per class when conditional) into samples/, with their manifest rows."""
    labels = (np.arange(args.samples) % 2).astype(np.int32) if args.conditional else np.ones(args.samples, np.int32)
    slices = to_uint8(diffusion.sample(network, args.samples, args.steps, args.seed,
                                       labels if args.conditional else None), mean, std)
    names = {v: k for k, v in LABELS.items()}
    rows = []
    for i, (pixels, label) in enumerate(zip(slices, labels)):
        sample_id = f"ddim_{args.seed}_{i:05d}"
        write_png(out / "samples" / "images" / f"{sample_id}.png", pixels)
        rows.append({"id": sample_id, "image_path": f"images/{sample_id}.png", "label": names[int(label)],
                     "origin": f"synthetic:ddim:seed={args.seed}:index={i}:steps={args.steps}",
                     "seed": args.seed, "dup_group": sample_id, "status": "ok", "error": ""})
    manifest.write(pd.DataFrame(rows), out / "samples")
    return slices, labels


def score_realism(images: np.ndarray, rows: pd.DataFrame, train: np.ndarray, val: np.ndarray,
                  generated: np.ndarray, generated_labels: np.ndarray, args: argparse.Namespace) -> dict[str, Any]:
    """KID of the samples against the held-out real slices, the real-vs-real floor, and the two-sample AUC."""
    if args.kid_features == "none":
        return {}
    real = (images * 255.0).round().astype(np.uint8)
    feats = realism.features(list(real) + list(generated), args.kid_features)
    real_feats, gen_feats = feats[:len(real)], feats[len(real):]
    size = min(len(val), len(train), len(generated))
    result = {"features": args.kid_features, "subset_size": size, "subsets": args.kid_subsets}
    result["kid_mean"], result["kid_std"] = realism.kid_subsets(real_feats[val], gen_feats, args.kid_subsets, size,
                                                                args.seed)
    result["floor_mean"], result["floor_std"] = realism.kid_floor(real_feats[train], real_feats[val],
                                                                  args.kid_subsets, size, args.seed)
    result["two_sample_auc"] = realism.two_sample_auc(real_feats, gen_feats, rows["dup_group"].tolist(),
                                                      seed=args.seed)
    return result


def score_anomaly(network: keras.Model, table: pd.DataFrame, held_out: pd.DataFrame, mean_std: tuple[float, float],
                  args: argparse.Namespace) -> dict[str, Any]:
    """ROC AUC of the anomaly score (lib.synth.anomaly) on slices the model never trained on: the held-out
    ones, plus, for a tumour-only model, every tumour-free slice."""
    scored = held_out
    if not args.conditional:
        free = manifest.ok_rows(table)
        scored = pd.concat([held_out, free[free["label"] == "no_tumor"]], ignore_index=True)
    x = ((load_slices(args.in_dir, scored, args.size) - mean_std[0]) / mean_std[1])[..., None]
    score = anomaly.tumour_score(network, x, args.conditional, args.seed)
    return {**anomaly.roc((scored["label"] == "tumor").to_numpy(int), score), "time": anomaly.ANOMALY_TIME,
            "draws": anomaly.DRAWS, "scored": "held-out slices" + ("" if args.conditional else
                                                                   " and every tumour-free slice")}


# --- reporting -------------------------------------------------------------------------


def write_plots(network: keras.Model, history: dict[str, list[float]], mean: float, std: float,
                args: argparse.Namespace, out: Path) -> list[str]:
    """The final sample grid and the loss curves."""
    labels = grid_labels(np.zeros(1)) if args.conditional else None
    final = grid_png(diffusion.sample(network, GRID_SAMPLES, args.steps, args.seed, labels), mean, std,
                     out / "samples_grid.png")
    paths = [final.name]
    if history.get("loss"):
        curves = plots.training_curves([history], out / "training.png", "05 DDIM: noise and image loss",
                                       labels=["DDIM"])
        paths += [curves.name] if curves else []
    return paths


def write_report(out: Path, result: dict[str, Any]) -> Path:
    scores = result.get("realism") or {}
    summary = {"training / held-out real slices": f"{result['train_slices']} / {result['val_slices']}",
               "epochs; seconds": f"{result['epochs_run']}; {result['train_seconds']:.0f}",
               **{key.replace("_", " "): value for key, value in result["final"].items()}}
    if scores:
        summary["KID (samples vs held-out real)"] = f"{scores['kid_mean']:.3g} ± {scores['kid_std']:.2g}"
        summary["KID floor (real vs real)"] = f"{scores['floor_mean']:.3g} ± {scores['floor_std']:.2g}"
        summary["two-sample test ROC AUC (0.5: indistinguishable)"] = f"{scores['two_sample_auc']:.3f}"
    found = result.get("anomaly") or {}
    if found.get("roc_auc") is not None:
        summary["anomaly score ROC AUC (" + found["scored"] + ")"] = (
            f"{found['roc_auc']:.3f} {metrics.interval_text(found['roc_auc_ci'])} "
            f"({found['tumour']} tumour, {found['no_tumour']} tumour-free)")
    grids = sorted((out / "grids").glob("*.png")) if (out / "grids").is_dir() else []
    sections = [("Summary", report.dict_table_html(summary)),
                ("Samples", "".join(report.img_html(out, out / p) for p in result["plots"])),
                ("Grids during training", "".join(report.img_html(out, g, g.stem) for g in grids))]
    return report.html_page(out / "report.html", "05 DDIM", sections)


def print_summary(result: dict[str, Any], out: Path) -> None:
    final, scores = result["final"], result.get("realism") or {}
    print(f"05_ddim_train: {result['epochs_run']} epochs in {result['train_seconds']:.0f} s; "
          f"noise loss {final.get('loss', float('nan')):.3f} (val {final.get('val_loss', float('nan')):.3f}), "
          f"image loss {final.get('image_loss', float('nan')):.3f} (val {final.get('val_image_loss', float('nan')):.3f})")
    if scores:
        print(f"  KID ({scores['features']}) {scores['kid_mean']:.3g} ± {scores['kid_std']:.2g}; floor "
              f"{scores['floor_mean']:.3g} ± {scores['floor_std']:.2g}; two-sample AUC {scores['two_sample_auc']:.3f}")
    found = result.get("anomaly") or {}
    if found.get("roc_auc") is not None:
        print(f"  anomaly score ROC AUC {found['roc_auc']:.3f} {metrics.interval_text(found['roc_auc_ci'])} "
              f"on {found['tumour']} held-out tumour and {found['no_tumour']} tumour-free slices")
    print(f"  samples: {out / 'samples'}; report: {out / 'report.html'}")
