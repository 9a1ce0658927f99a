"""Stage 08: a segmentation network trained on pseudo-labels (07) or true masks, tested against true masks.

1. Sources: the input folder, plus every `--extra-masks` folder of true masks
   (lib.segment.mask_sources: images/ + masks/ trees are cleaned as 02 cleans).
   Each is split by its own rule (lib.common.splits.segmentation_parts): contiguous
   index ranges where the data set's index.csv names blocks of them (figshare, whose
   patients are runs of indices), never at random, so neighbouring slices of one
   patient stay on one side; whole duplicate groups drawn per label elsewhere
   (navoneel, phantoms: numbered files without patients). `--leave-out K` holds out
   block K of a ranged source whole as its test part. `--score-on` folders are
   only tested on, never trained on: the score on data from elsewhere.
2. Training targets: `--masks pseudo` = 07's accepted SAM masks (tumour
   slices whose label was rejected or never prompted are left out),
   `--masks truth` = the manifest's true masks; extra sources always give true
   masks. `--pseudo-weight` and `--truth-weight` weigh each slice's loss by
   its kind of target. Tumour-free slices train with an empty mask (true-mask
   weight), so the network also learns to say "none".
3. The validation part (same kind of masks as training: an honest pseudo-label
   run never sees a true mask) drives early stopping on Dice.
4. The test parts are scored against TRUE masks: Dice, IoU, HD95 per slice,
   plus detection terms (a mask on a tumour-free slice is a false positive),
   pooled and per source (metrics.json: test, test_by_source, test_by_kind). Parts of a mask
   smaller than --min-area pixels are dropped first ("auto": chosen on the validation slices,
   lib.segment.postprocess), since specks are what a segmenter draws on tumour-free slices.
The network: lib.segment.unet's Keras U-Net or DeepLabV3+ from scratch, or
`litemedsam`, the pretrained LiteMedSAM fine-tuned (lib.segment.medsam_tuning, PyTorch).
With `--refit` (litemedsam), a fresh model then trains on training + validation slices for the
epoch count early stopping chose, and that model is tested; the validation-chosen one stays in search/.
With `--refit-epochs N` that fresh model trains for N epochs without the early-stopping run.
Training checkpoints every epoch (litemedsam: checkpoint.pt, Keras: checkpoint/): a rerun resumes it,
--force starts afresh. With `--ensemble N`, N networks train with seeds seed .. seed+N-1, each in
its own folder (seed-<s>/), and the test part is scored with the mean of their probability maps,
each member also scored alone (a seed ensemble: the best segmentation results came from one).
Outputs: model.keras (litemedsam: model.pt), history.csv, predictions/<id>.png for the test part
(another source's: predictions/<source>/<id>.png), sources.csv (every slice's source and part),
per_image.csv, metrics.json, training curves, best/worst overlays, report.html.
"""

from __future__ import annotations

import argparse
import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple

import cv2
import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from lib.common import manifest, plots, report, splits
from lib.common.io import read_image, read_mask, write_json_atomic, write_png
from lib.common.stage import check_in_dir, read_lineage, settings_of, write_lineage
from lib.segment import mask_metrics, mask_sources, postprocess, pseudo_label
from lib.segment.models import TUNED, engine

MASK_SOURCES = ("pseudo", "truth")
INPUT = "input"  # the source name of 08's own input folder (others: lib.segment.mask_sources.source_name)
TUNE_CHOICES = ("all", "top")  # what of LiteMedSAM learns: lib.segment.medsam_tuning.frozen_parts
PRECISIONS = ("auto", "float32", "bfloat16")  # litemedsam: lib.segment.medsam_tuning.uses_bf16
OVERLAYS = 16  # best and worst test slices shown
SEARCH = "search"  # with --refit: the subfolder of the validation-chosen model (model.pt, history.csv)
MEMBER = "seed-{}"  # with --ensemble: each member network's folder, by its seed
TRAINING_KEYS = ("epochs_run", "best_epoch", "best_val_dice", "refit")  # metrics.json: how a network trained


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Stage 08 from parsed arguments (see scripts/08_unet_train.py)."""
    out: Path = args.out
    check_options(args)
    df = check_in_dir(args.in_dir, out)
    out.mkdir(parents=True, exist_ok=True)
    rows, rules = all_sources(df, args)
    rows.to_csv(out / "sources.csv", index=False)
    sam = _refiner(args.refine)  # before fit: a missing LiteMedSAM stops the run before hours of training
    trained = rows[rows["role"] != "score"]
    data = {name: training_pairs(trained[trained["part"] == name], out) for name in ("train", "val")}
    if not data["train"].images or not data["val"].images:
        raise SystemExit(f"error: {args.in_dir}: no usable training or validation slices for --masks {args.masks} "
                         f"(train {len(data['train'].images)}, validation {len(data['val'].images)})")
    start = time.perf_counter()
    fitted = fit_ensemble(args, data, out) if args.ensemble > 1 else fit(args, data, out)
    train_seconds = time.perf_counter() - start
    fitted = min_area_for(args, fitted, data["val"])
    test = rows[rows["part"] == "test"]
    per_image = score_test(fitted, test, out, sam)
    per_image.to_csv(out / "per_image.csv", index=False)
    unscored = predict_unscored(fitted, test, out, sam)
    if len(unscored):
        unscored.to_csv(out / "unscored.csv", index=False)
    metrics = summarise(per_image, unscored, rows, data, args, fitted, train_seconds) | {"sources": rules}
    write_json_atomic(out / "metrics.json", metrics)
    extras = {f"extra_masks_{i + 1}": Path(p) for i, p in enumerate(args.extra_masks)}
    scored_on = {f"score_on_{i + 1}": Path(p) for i, p in enumerate(args.score_on)}
    write_lineage(out, "08_unet_train", args, {"in": args.in_dir, **extras, **scored_on})
    write_report(out, per_image, metrics, fitted, unscored)
    _print_summary(out, metrics)
    return metrics


def check_options(args: argparse.Namespace) -> None:
    """One-line errors for option combinations that cannot work, before anything is read or trained."""
    if (args.refit or args.refit_epochs) and args.architecture != TUNED:
        option = "--refit" if args.refit else "--refit-epochs"
        raise SystemExit(f"error: {option} is for --architecture {TUNED}; {args.architecture} has early stopping only")
    if args.refit_epochs < 0:
        raise SystemExit(f"error: --refit-epochs {args.refit_epochs}: give a number of epochs, or 0 for none")
    if args.ensemble < 1:
        raise SystemExit(f"error: --ensemble {args.ensemble}: give the number of networks to train, 1 or more")
    if min(args.pseudo_weight, args.truth_weight) < 0 or max(args.pseudo_weight, args.truth_weight) == 0:
        raise SystemExit(f"error: --pseudo-weight {args.pseudo_weight} --truth-weight {args.truth_weight}: "
                         "weights are 0 or more, and one of them above 0")
    for folder in [*args.extra_masks, *args.score_on]:
        if not Path(folder).is_dir():
            raise SystemExit(f"error: {folder}: no such folder; give a stage folder or an images/ + masks/ tree")


def all_sources(df: pd.DataFrame, args: argparse.Namespace) -> tuple[pd.DataFrame, dict[str, dict[str, Any]]]:
    """Every slice 08 uses, one row each, with its source, role (input, extra, score), part, target and
    weight; and per source its split rule and counts (metrics.json: sources)."""
    out: Path = args.out
    inputs, rule = with_parts(manifest.rebase(df, args.in_dir, out), args.in_dir, args.leave_out, args.split)
    frames, rules = [inputs.assign(source=INPUT, role="input")], {INPUT: _rule(inputs, str(args.in_dir), rule)}
    size, skull_strip = _clean_settings(inputs, out, args.in_dir)
    roles = [("extra", folder) for folder in args.extra_masks] + [("score", folder) for folder in args.score_on]
    for role, folder in roles:
        name = mask_sources.source_name(Path(folder), set(rules))
        try:
            rows = mask_sources.load(Path(folder), name, out / mask_sources.PREPARED, size, skull_strip)
            rows, rule = (mask_sources.with_parts(rows, args.leave_out) if role == "extra"
                          else (rows.assign(part="test"), "scored only"))
        except (mask_sources.MaskSourceError, ValueError) as err:
            raise SystemExit(f"error: {'--extra-masks' if role == 'extra' else '--score-on'} {folder}: {err}") \
                from None
        frames.append(rows.assign(role=role))
        rules[name] = _rule(rows, str(folder), rule)
    rows = pd.concat(frames, ignore_index=True).fillna("")
    rows["target"] = [_target_kind(r, args.masks) for r in rows.to_dict("records")]
    rows["weight"] = [args.pseudo_weight if t == "pseudo" else args.truth_weight for t in rows["target"]]
    return rows, rules


def _rule(rows: pd.DataFrame, folder: str, rule: str) -> dict[str, Any]:
    """How a source was split, for metrics.json: its folder, rule and slices per part."""
    parts = rows["part"].value_counts()
    return {"folder": folder, "rule": rule,
            **{name: int(parts.get(name, 0)) for name in splits.PARTS}}


def _clean_settings(inputs: pd.DataFrame, out: Path, in_dir: Path) -> tuple[int, bool]:
    """02's crop size and skull stripping of the input, which raw extra sources are cleaned with."""
    cleaned = settings_of(read_lineage(in_dir), "02_clean") or {}
    if "size" in cleaned:
        return int(cleaned["size"]), bool(cleaned.get("skull_strip", False))
    first = read_image(out / manifest.slice_path(inputs.iloc[0])).pixels if len(inputs) else None
    return (int(first.shape[0]) if first is not None else 256), False


def with_parts(rows: pd.DataFrame, in_dir: Path, leave_out: int | None = None,
               rule: str = "auto") -> tuple[pd.DataFrame, str]:
    """The usable slices (read, labelled), each with its part by its source's rule (mask_sources.with_parts),
    and the rule; tumour type, patient and index block come from the data set's index.csv where it has one."""
    rows = rows[(rows["status"] == "ok") & rows["label"].isin(["tumor", "no_tumor"])].reset_index(drop=True)
    index = mask_sources.index_columns(in_dir)
    found = pd.DataFrame([index.get(i, {}) for i in rows["id"]], index=rows.index,
                         columns=["kind", "block", "group"]).fillna("")
    duplicates = rows["dup_group"] if "dup_group" in rows else rows["id"]
    rows = rows.assign(kind=found["kind"], block=found["block"],
                       group=found["group"].where(found["group"] != "", duplicates))
    return mask_sources.with_parts(rows, leave_out, rule)


def _target_kind(row: dict[str, Any], masks: str) -> str:
    """What a slice trains towards: "empty" (tumour-free), "truth" (a true mask) or "pseudo" (07's)."""
    if row["label"] == "no_tumor":
        return "empty"
    return masks if row["role"] == "input" else "truth"


class Pairs(NamedTuple):
    """Training or validation slices: images, their target masks and each one's loss weight."""

    images: list[np.ndarray]
    masks: list[np.ndarray]
    weights: list[float]


def training_pairs(rows: pd.DataFrame, out: Path) -> Pairs:
    """Slices with their targets and weights; tumour slices without a target mask are left out."""
    images, targets, weights = [], [], []
    for row in rows.to_dict("records"):
        image = read_image(out / manifest.slice_path(row)).pixels
        target = _target(row, out, image.shape[:2])
        if target is not None:
            images.append(image)
            targets.append(target)
            weights.append(float(row["weight"]))
    return Pairs(images, targets, weights)


def _target(row: dict[str, Any], out: Path, shape: tuple[int, int]) -> np.ndarray | None:
    if row["target"] == "empty":
        return np.zeros(shape, bool)
    path = row.get("pred_mask_path", "") if row["target"] == "pseudo" else row.get("mask_path", "")
    if row["target"] == "truth" and not path:
        raise SystemExit(f"error: --masks truth needs true masks; {row['id']} has none (use --masks pseudo)")
    mask = read_mask(out / path) if path else None
    if mask is not None and mask.shape != shape:
        raise SystemExit(f"error: {row['id']}: its mask {path} is {mask.shape[1]}x{mask.shape[0]}, its slice "
                         f"{shape[1]}x{shape[0]}; give masks of the slices' size")
    return mask


class Fitted(NamedTuple):
    """A trained 08 network: the model to test, its predict(model, images) -> bool masks, and curves per epoch.

    `history` is the early-stopping run's; with --refit, `refit` holds the curves of the model tested.
    With --ensemble, `members` holds each member's own Fitted (seed-<s>: ...), `model` is None,
    `history` empty, and `proba` gives a member's probability maps."""

    model: Any
    history: dict[str, list[float]]
    predict: Callable[[Any, list[np.ndarray]], list[np.ndarray]]
    refit: dict[str, list[float]] | None = None
    members: dict[str, Fitted] | None = None
    proba: Callable[[Any, list[np.ndarray]], list[np.ndarray]] | None = None
    min_area: int = 0  # parts of a mask smaller than this are dropped (lib.segment.postprocess)
    min_area_scores: dict[int, float] | None = None  # validation Dice per candidate min_area

    @property
    def epochs(self) -> int:
        """Epochs this network trained: the early-stopping run's plus the refit's."""
        return len(self.history.get("loss", [])) + len((self.refit or {}).get("loss", []))


def fit(args: argparse.Namespace, data: dict[str, Pairs], out: Path) -> Fitted:
    """Train the chosen network; with --refit (litemedsam), train it again on training + validation slices.

    With --refit-epochs only that second model trains, for the epochs given."""
    common = {"epochs": args.epochs, "patience": args.patience, "seed": args.seed, "minutes": args.time_budget,
              "fresh": args.force}  # else a checkpointed run resumes
    if args.architecture == TUNED:
        from lib.segment import (
            medsam_tuning,  # PyTorch; built before anything imports Keras (see lib.common.medsam)
        )

        batch_size = args.batch_size or medsam_tuning.BATCH_SIZE
        common |= {"tune": args.tune, "precision": args.precision}
        if args.refit_epochs:  # the epoch count is known (an earlier run's choice): no early-stopping run
            return _refit(args, data, out, {}, args.refit_epochs, batch_size)
        model, history = medsam_tuning.train(*data["train"][:2], *data["val"][:2], batch_size=batch_size,
                                             weights=data["train"].weights,
                                             out_dir=out / SEARCH if args.refit else out, **common)
        if not args.refit:
            return Fitted(model, history, medsam_tuning.predict)
        return _refit(args, data, out, history, best_epoch(history, medsam_tuning.WARMUP_EPOCHS) + 1, batch_size)
    from lib.segment import unet  # Keras loads only when there is something to train

    model, history = unet.train(*data["train"][:2], *data["val"][:2], architecture=args.architecture,
                                weights=data["train"].weights,
                                image_size=args.image_size, batch_size=args.batch_size or unet.BATCH_SIZE,
                                width=args.width, out_dir=out, **common)
    return Fitted(model, history, unet.predict)


def fit_ensemble(args: argparse.Namespace, data: dict[str, Pairs], out: Path) -> Fitted:
    """--ensemble N: `fit` N times with seeds seed .. seed+N-1, each member in out/seed-<s>/ (and resumable).

    Why: members that differ only in their seed make different mistakes, and the mean of
    their maps outlined the figshare tumours better than the average member did."""
    members = {}
    for k, seed in enumerate(range(args.seed, args.seed + args.ensemble)):
        print(f"ensemble member {k + 1}/{args.ensemble}: seed {seed}", flush=True)
        members[MEMBER.format(seed)] = fit(argparse.Namespace(**{**vars(args), "seed": seed}), data,
                                           out / MEMBER.format(seed))
    tools = engine(args.architecture)
    return Fitted(None, {}, tools.predict, members=members, proba=tools.predict_proba)


def mean_masks(maps: list[list[np.ndarray]], threshold: float = 0.5) -> list[np.ndarray]:
    """Per slice, the mask of the mean of several networks' probability maps (maps[member][slice])."""
    return [np.mean(per_slice, axis=0) > threshold for per_slice in zip(*maps)]


def _refit(args: argparse.Namespace, data: dict[str, Pairs], out: Path,
           history: dict[str, list[float]], epochs: int, batch_size: int) -> Fitted:
    """A fresh LiteMedSAM trained on training + validation slices for `epochs` (lib.segment.medsam_tuning.refit)."""
    from lib.segment import medsam_tuning

    images, masks = (data["train"].images + data["val"].images, data["train"].masks + data["val"].masks)
    weights = data["train"].weights + data["val"].weights
    chosen = "validation's choice" if history else "--refit-epochs"
    print(f"refit: {epochs} epochs ({chosen}) on {len(images)} training + validation slices", flush=True)
    model, refit_history = medsam_tuning.refit(images, masks, epochs, batch_size, out, args.seed, tune=args.tune,
                                               weights=weights,
                                               minutes=args.time_budget, precision=args.precision,
                                               fresh=args.force)
    return Fitted(model, history, medsam_tuning.predict, refit_history)


def best_epoch(history: dict[str, list[float]], warmup: int) -> int:
    """The epoch (from 0) whose weights early stopping kept: the best val_dice from `warmup` on, else the last."""
    watched = history.get("val_dice", [])[warmup:]
    return warmup + int(np.argmax(watched)) if watched else len(history.get("val_dice", [])) - 1


def _refiner(refine: str | None) -> Any:
    """LiteMedSAM for `--refine sam` (lib.segment.pseudo_label.refine), else None; one line when it is missing."""
    if refine != "sam":
        return None
    from lib.segment import segmenters

    try:
        return segmenters.load("litemedsam")
    except segmenters.SegmenterUnavailable as err:
        raise SystemExit(f"error: --refine sam: {err}") from None


class ScoredSlice(NamedTuple):
    """One scored test slice: its manifest row, pixels, true mask (empty when tumour-free) and head mask."""

    record: dict[str, Any]
    image: np.ndarray
    truth: np.ndarray
    head: np.ndarray | None


def scored_slices(test: pd.DataFrame, folder: Path) -> list[ScoredSlice]:
    """The test rows 08 scores (a true mask or a no-tumour label), read from `folder` (paths relative to it)."""
    out = []
    for record in test.to_dict("records"):
        if not (record.get("mask_path") or record["label"] == "no_tumor"):
            continue
        image = read_image(folder / manifest.slice_path(record)).pixels
        truth = read_mask(folder / record["mask_path"]) if record.get("mask_path") else np.zeros(image.shape[:2], bool)
        out.append(ScoredSlice(record, image, truth, _head(record, folder)))
    return out


def _head(record: dict[str, Any], folder: Path) -> np.ndarray | None:
    """02's head mask of a slice, which keeps SAM's outline inside the head; None where 02 wrote none."""
    return read_mask(folder / record["head_mask_path"]) if record.get("head_mask_path") else None


def score_test(fitted: Fitted, test: pd.DataFrame, out: Path, sam: Any = None) -> pd.DataFrame:
    """Per test slice: Dice, IoU, HD95 against the true mask (rows without one are skipped).

    With `sam` (a lib.segment.segmenters engine) each mask is refined by lib.segment.pseudo_label.refine; the
    scores are then the refined mask's, and dice_unrefined / refine_status say what SAM changed.
    An ensemble's members are scored alone too (dice_seed-<s>, unrefined)."""
    slices = scored_slices(test, out)
    predictions, by_member = test_masks(fitted, [s.image for s in slices])
    rows = []
    for i, ((record, image, truth, head), pred) in enumerate(
            zip(tqdm(slices, desc="08 test", unit="img", disable=sam is None), predictions)):
        extra = {f"dice_{name}": round(mask_metrics.dice(masks[i], truth), 4) for name, masks in by_member.items()}
        if sam is not None:
            extra["dice_unrefined"] = round(mask_metrics.dice(pred, truth), 4)
            pred, extra["refine_status"] = refined(sam, image, pred, head)
        rows.append(_write_prediction(out, record, pred) | mask_metrics.score(pred, truth) | extra)
    return pd.DataFrame(rows)


def refined(sam: Any, image: np.ndarray, mask: np.ndarray, head: np.ndarray | None) -> tuple[np.ndarray, str]:
    """The mask after --refine sam (lib.segment.pseudo_label.refine) and SAM's verdict on it, for the per-slice table."""
    mask, result = pseudo_label.refine(sam, image, mask, head)
    return mask, result.status if result else "nothing to refine"


def _write_prediction(out: Path, record: dict[str, Any], mask: np.ndarray) -> dict[str, Any]:
    """Write predictions/<id>.png (another source's: predictions/<source>/<id>.png, 0/255) and return the
    per-slice row's first columns."""
    source = record.get("source", INPUT)
    rel = f"predictions/{record['id']}.png" if source == INPUT else f"predictions/{source}/{record['id']}.png"
    write_png(out / rel, mask.astype(np.uint8) * 255)
    return {"id": record["id"], "source": source, "role": record.get("role", "input"),
            "kind": record.get("kind", ""), "label": record["label"], "pred_mask_path": rel,
            "image_path": manifest.slice_path(record), "mask_path": record.get("mask_path", "")}


def predict_unscored(fitted: Fitted, test: pd.DataFrame, out: Path, sam: Any = None) -> pd.DataFrame:
    """Test slices labelled tumour but without a true mask (navoneel): the masks, written, not scored.

    Why: such a set gives no Dice, but a reader still wants to see what the network outlines there
    (predictions/<id>.png, unscored.csv, and a contact sheet in the report). With `sam` they are
    refined as the scored slices are, so that both show what --refine sam produces."""
    records = [r for r in test.to_dict("records") if r["label"] == "tumor" and not r.get("mask_path")]
    if not records:
        return pd.DataFrame(columns=["id", "label", "pred_mask_path", "image_path", "mask_path", "pred_pixels"])
    images = [read_image(out / manifest.slice_path(r)).pixels for r in records]
    masks, _ = test_masks(fitted, images)
    rows = []
    for record, image, mask in zip(tqdm(records, desc="08 unscored", unit="img", disable=sam is None), images, masks):
        extra = {}
        if sam is not None:
            extra["pred_pixels_unrefined"] = int(mask.sum())
            mask, extra["refine_status"] = refined(sam, image, mask, _head(record, out))
        rows.append(_write_prediction(out, record, mask) | {"pred_pixels": int(mask.sum())} | extra)
    return pd.DataFrame(rows)


def test_masks(fitted: Fitted, images: list[np.ndarray]) -> tuple[list[np.ndarray], dict[str, list[np.ndarray]]]:
    """The masks 08 tests (specks under fitted.min_area dropped) and, for an ensemble, each member's own masks
    as the network drew them (every map computed once)."""
    if not fitted.members:
        masks, by_member = fitted.predict(fitted.model, images), {}
    else:
        maps = {name: fitted.proba(member.model, images) for name, member in fitted.members.items()}
        masks, by_member = mean_masks(list(maps.values())), {name: [m > 0.5 for m in member]
                                                             for name, member in maps.items()}
    return [postprocess.drop_small(m, fitted.min_area) for m in masks], by_member


def min_area_for(args: argparse.Namespace, fitted: Fitted, val: Pairs) -> Fitted:
    """--min-area, or with "auto" the one that scores best on the validation slices (postprocess.choose_min_area).

    With --refit or --refit-epochs the validation slices trained the tested model too, so the choice
    is made on slices it has seen: it then drops fewer specks than it should."""
    if args.min_area != "auto":
        return fitted._replace(min_area=int(args.min_area))
    masks, _ = test_masks(fitted._replace(min_area=0), val.images)
    area, scores = postprocess.choose_min_area(masks, val.masks)
    return fitted._replace(min_area=area, min_area_scores=scores)


def summarise(per_image: pd.DataFrame, unscored: pd.DataFrame, rows: pd.DataFrame,
              data: dict[str, Pairs], args: argparse.Namespace, fitted: Fitted,
              seconds: float) -> dict[str, Any]:
    """metrics.json: the test scores and how the model was trained (best_val_dice is the early-stopping run's);
    `unscored`: the test tumour slices without a true mask, counted (with a predicted mask or not), not scored."""
    trained = per_image[per_image["role"] != "score"] if len(per_image) else per_image
    scores = mask_metrics.summary(trained) if len(trained) else {}
    tuned = args.architecture == TUNED
    return {
        "masks": args.masks, "architecture": args.architecture, "tune": args.tune if tuned else None,
        "precision": _precision(args.precision) if tuned else None,
        "image_size": engine(TUNED).FRAME if tuned else args.image_size, "width": None if tuned else args.width,
        "time_budget_minutes": args.time_budget,
        "backend": _backend(args.architecture),
        "split": {name: int(((rows["part"] == name) & (rows["role"] != "score")).sum()) for name in splits.PARTS},
        "weights": {"pseudo": args.pseudo_weight, "truth": args.truth_weight},
        "trained_on": len(data["train"][0]), "validated_on": len(data["val"][0]),
        **(dict.fromkeys(TRAINING_KEYS) if fitted.members else training_summary(fitted, data, args.architecture)),
        "min_area": fitted.min_area,
        "min_area_scores": {str(k): round(v, 4) for k, v in (fitted.min_area_scores or {}).items()} or None,
        "train_seconds": round(seconds, 1), "test": {k: _round(v) for k, v in scores.items()},
        **by_source(per_image),
        "ensemble": _ensemble_summary(per_image, fitted, args, data),
        "unscored": _unscored_summary(unscored),
        **_refine_summary(per_image),
    }


def by_source(per_image: pd.DataFrame) -> dict[str, Any]:
    """The test scores of each source (test_by_source) and, where a source names them, of each tumour type
    (test_by_kind: {source: {type: scores}}); a --score-on source is one the network never trained on."""
    if not len(per_image):
        return {"test_by_source": {}, "test_by_kind": {}}
    sources = {name: _summary(rows) for name, rows in per_image.groupby("source", sort=False)}
    kinds = {name: {kind: _summary(group) for kind, group in rows.groupby("kind") if kind}
             for name, rows in per_image.groupby("source", sort=False) if (rows["kind"] != "").any()}
    return {"test_by_source": sources, "test_by_kind": kinds}


def _summary(per_image: pd.DataFrame) -> dict[str, Any]:
    return {k: _round(v) for k, v in mask_metrics.summary(per_image).items()}


def training_summary(fitted: Fitted, data: dict[str, Pairs], architecture: str) -> dict[str, Any]:
    """How one network trained (TRAINING_KEYS): epochs of the early-stopping run, the epoch it kept and its
    validation Dice, and the refit (epochs, slices, where its epoch count came from).

    An ensemble's members each have their own: metrics.ensemble.training holds them, and the
    top-level keys are null rather than one member's numbers standing for all."""
    history = fitted.history
    best = best_epoch(history, engine(architecture).WARMUP_EPOCHS)
    best = None if best < 0 else best
    return {"epochs_run": len(history.get("loss", [])), "best_epoch": None if best is None else best + 1,
            "best_val_dice": None if best is None else round(float(history["val_dice"][best]), 4),
            "refit": None if fitted.refit is None else {"epochs": len(fitted.refit["loss"]),
                                                        "slices": len(data["train"][0]) + len(data["val"][0]),
                                                        "epochs_from": "validation" if history else "--refit-epochs"}}


def _ensemble_summary(per_image: pd.DataFrame, fitted: Fitted, args: argparse.Namespace,
                      data: dict[str, Pairs]) -> dict[str, Any] | None:
    """With --ensemble: the members' seeds and folders, how each trained (epochs in all, and
    training_summary's fields), and each one's own test Dice mean (unrefined)."""
    if not fitted.members:
        return None
    tumour = per_image[per_image["true_pixels"] > 0] if len(per_image) else per_image
    return {"seeds": list(range(args.seed, args.seed + args.ensemble)), "folders": list(fitted.members),
            "member_epochs": {name: member.epochs for name, member in fitted.members.items()},
            "training": {name: training_summary(member, data, args.architecture)
                         for name, member in fitted.members.items()},
            "member_dice_mean": {name: _round(float(tumour[f"dice_{name}"].mean())) if len(tumour) else None
                                 for name in fitted.members}}


def _unscored_summary(unscored: pd.DataFrame) -> dict[str, Any] | None:
    """The test tumour slices without a true mask: how many, how many got a mask, and SAM's verdicts."""
    if not len(unscored):
        return None
    return {"tumour_images": len(unscored), "with_mask": int((unscored["pred_pixels"] > 0).sum()),
            "refine_status": _verdicts(unscored) or None}


def _verdicts(table: pd.DataFrame) -> dict[str, int]:
    """SAM's verdicts on a table's slices (refine_status), counted; empty without --refine sam."""
    if "refine_status" not in table:
        return {}
    return {str(k): int(v) for k, v in table["refine_status"].value_counts().items()}


def _refine_summary(per_image: pd.DataFrame) -> dict[str, Any]:
    """With --refine sam: the test Dice before refinement and how often SAM's outline was kept."""
    if "refine_status" not in per_image:
        return {}
    tumour = per_image[per_image["true_pixels"] > 0]
    return {"refine": "sam", "dice_mean_unrefined": _round(float(tumour["dice_unrefined"].mean())),
            "refine_status": _verdicts(per_image)}


def _precision(precision: str) -> str:
    """What --precision chose on this machine: "bfloat16" or "float32" (timings and scores depend on it)."""
    return "bfloat16" if engine(TUNED).uses_bf16(precision) else "float32"


def _backend(architecture: str) -> str:
    """Framework and accelerator, e.g. "torch/cuda": timings compare only on the same one."""
    if architecture == TUNED:
        from lib.common import medsam

        return f"torch/{medsam.default_device()}"
    import keras

    backend = keras.backend.backend()
    if backend == "torch":
        import torch

        device = "cuda" if torch.cuda.is_available() else "cpu"
    elif backend == "jax":
        import jax

        device = jax.devices()[0].platform
    else:
        import tensorflow as tf

        device = "gpu" if tf.config.list_physical_devices("GPU") else "cpu"
    return f"{backend}/{device}"


def _round(value: Any) -> Any:
    """4 decimals; a mean over no slices (NaN) becomes None, as metrics.json holds it (null), for the summary."""
    if isinstance(value, (tuple, list)):
        return [_round(v) for v in value]
    if isinstance(value, float):
        return round(value, 4) if math.isfinite(value) else None
    return value


# --- report -------------------------------------------------------------------------------


def write_report(out: Path, per_image: pd.DataFrame, metrics: dict[str, Any], fitted: Fitted,
                 unscored: pd.DataFrame) -> Path:
    histories, labels = [], []
    for name, network in (fitted.members or {"": fitted}).items():  # an ensemble: every member's curves
        for history, label in ((network.history, "early stopping on validation"),
                               (network.refit, "refit on training + validation")):
            if history:
                histories.append(history)
                labels.append(f"{name}: {label}" if name else label)
    curves = plots.training_curves(histories, out / "training.png", "08: training curves", labels)
    tumour = per_image[per_image["true_pixels"] > 0].sort_values("dice")
    sheets = []
    for name, chosen in (("worst", tumour.head(OVERLAYS)), ("best", tumour.tail(OVERLAYS).iloc[::-1])):
        cells = [report.caption(overlay(r, out), f"{r['id'][-8:]} D{r['dice']:.2f}") for r in chosen.to_dict("records")]
        if cells:
            sheets.append(report.contact_sheet(cells, out / f"overlays_{name}.png"))
    shown = "Worst and best test slices: prediction (yellow), true mask (green)"
    if len(unscored):  # no true mask: the prediction alone, largest first
        chosen = unscored.sort_values("pred_pixels", ascending=False).head(2 * OVERLAYS)
        cells = [report.caption(overlay(r, out), r["id"][-8:]) for r in chosen.to_dict("records")]
        sheets.append(report.contact_sheet(cells, out / "overlays_unscored.png"))
        shown += "; then test tumour slices without a true mask, not scored"
    per_source = ("test_by_source", "test_by_kind", "sources")
    sections = [
        ("Outcome (test part, against true masks)", report.dict_table_html(
            {k: v for k, v in metrics.items() if k != "test" and k not in per_source} | metrics["test"])),
        ("By source (a source 'scored only' was never trained on) and by tumour type",
         report.table_html(source_rows(metrics))),
        ("Training curves", report.img_html(out, curves) if curves else ""),
        (shown, "".join(report.img_html(out, p) for p in sheets)),
    ]
    return report.html_page(out / "report.html", "08_unet_train: tumour segmentation", sections)


def source_rows(metrics: dict[str, Any]) -> list[dict[str, Any]]:
    """One table row per source and per tumour type: its split rule, slices per part, and its test scores."""
    rows = []
    for name, scores in metrics["test_by_source"].items():
        source = metrics["sources"].get(name, {})
        split = {part: source.get(part) for part in splits.PARTS}
        groups = {"all": scores, **metrics["test_by_kind"].get(name, {})}
        for kind, s in groups.items():
            rows.append({"source": name, "type": kind, "rule": source.get("rule", ""), **split,
                         "Dice mean": s["dice_mean"], "95 % CI": s["dice_ci"], "missed": s["missed"],
                         "tumour slices": s["tumour_images"], "masks on tumour-free": s["false_positive_images"],
                         "tumour-free": s["tumour_free_images"]})
    return rows


def overlay(row: dict[str, Any], out: Path) -> np.ndarray:
    rgb = cv2.cvtColor(read_image(out / row["image_path"]).pixels, cv2.COLOR_GRAY2RGB)
    for path, colour in ((row["mask_path"], (0, 255, 0)), (row["pred_mask_path"], (255, 255, 0))):
        if path:
            report.outline(rgb, read_mask(out / path), colour)
    return report.thumbnail(rgb)


def _print_summary(out: Path, m: dict[str, Any]) -> None:
    t = m["test"]
    trained = next(iter(m["ensemble"]["training"].values())) if m["ensemble"] else m  # members share the options
    only_refit = trained["refit"] and not trained["epochs_run"]  # --refit-epochs: the tested model saw validation too
    slices = (f"{trained['refit']['slices']} training + validation slices" if only_refit
              else f"{m['trained_on']} training slices")
    total = (m["epochs_run"] or 0) + (m["refit"]["epochs"] if m["refit"] else 0)  # --refit-epochs: no first run
    epochs = "each member's epochs below" if m["ensemble"] else f"{total} epochs"
    print(f"08_unet_train ({m['architecture']} on {m['masks']} masks, {slices}, "
          f"{epochs}, {m['train_seconds']:.0f} s) -> {out}")
    if m["refit"]:
        chosen = (f"best validation Dice {m['best_val_dice']} at epoch {m['best_epoch']} of the first run, in "
                  f"{SEARCH}/" if m["best_epoch"] else "epochs given by --refit-epochs, no validation run")
        print(f"  refit: {m['refit']['epochs']} epochs on {m['refit']['slices']} training + validation slices "
              f"({chosen})")
    if t and not t["tumour_images"]:
        print(f"  test part has no true tumour masks; false-positive masks on {t['false_positive_images']}"
              f"/{t['tumour_free_images']} tumour-free slices")
    elif t:
        low, high = t["dice_ci"]
        scored = "test vs true masks, refined by SAM" if "refine" in m else "test vs true masks"
        print(f"  {scored}: Dice mean {t['dice_mean']} (95 % CI {low:.3f}-{high:.3f}), median "
              f"{t['dice_median']}, IoU {t['iou_mean']}, "
              f"HD95 median {t['hd95_median']} px; missed {t['missed']}/{t['tumour_images']}, "
              f"false positives {t['false_positive_images']}/{t['tumour_free_images']}")
    if len(m["test_by_source"]) > 1:
        for name, scores in m["test_by_source"].items():
            _print_source(name, scores, m["sources"][name], m["test_by_kind"].get(name, {}))
    if m.get("unscored"):
        u = m["unscored"]
        print(f"  {u['tumour_images']} test tumour slices without a true mask, not scored: a mask on "
              f"{u['with_mask']} (unscored.csv, overlays_unscored.png)"
              + (f"; SAM's outline per slice: {_verdict_text(u['refine_status'])}" if u["refine_status"] else ""))
    if "refine" in m:
        unrefined = m["dice_mean_unrefined"]
        own = "" if unrefined is None else f"the network's own masks: Dice mean {unrefined}; "
        print(f"  {own}SAM's outline per slice: {_verdict_text(m['refine_status'])}")
    if m["ensemble"]:
        counts = m["ensemble"]["member_epochs"]
        alone = ", ".join(f"{name} {dice} ({counts[name]} epochs)"
                          for name, dice in m["ensemble"]["member_dice_mean"].items())
        print(f"  ensemble: the mean of {len(m['ensemble']['seeds'])} networks' maps is what was scored above; "
              f"each alone (unrefined): {alone}")
    print(f"  report: {out / 'report.html'}")


def _print_source(name: str, scores: dict[str, Any], source: dict[str, Any], kinds: dict[str, Any]) -> None:
    """One source's test line: Dice on its tumour slices, masks drawn on its tumour-free ones, per type."""
    seen = "never trained on" if source["rule"] == "scored only" else source["rule"]
    dice = (f"Dice mean {scores['dice_mean']} (95 % CI {scores['dice_ci'][0]:.3f}-{scores['dice_ci'][1]:.3f}) "
            f"on {scores['tumour_images']} tumour slices" if scores["tumour_images"] else "no tumour slices")
    types = ", ".join(f"{kind} {k['dice_mean']}" for kind, k in kinds.items())
    print(f"  {name} ({seen}): {dice}; masks on {scores['false_positive_images']}/{scores['tumour_free_images']} "
          f"tumour-free slices" + (f"; by type: {types}" if types else ""))


def _verdict_text(counts: dict[str, int]) -> str:
    """metrics.json's refine_status counts as the summary prints them: "accepted 81, rejected 7"."""
    return ", ".join(f"{status} {count}" for status, count in counts.items())
