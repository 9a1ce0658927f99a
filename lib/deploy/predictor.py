"""Predict one slice with a bundle: clean and crop it as training did, classify, segment.

Why one module for the demo and scripts/predict.py: both must prepare a new
slice exactly as the stages prepared the training slices (02 clean and crop,
03 head mask and enhancement, 04 clusters and features), or the models see
inputs unlike anything they learned from. The settings come from the bundle.

Speed: the fold models run through `predict_on_batch` (Keras' compiled
predict step, no per-call set-up of `Model.predict`), so a warm prediction costs tens of
milliseconds on a CPU; LiteMedSAM's encoder, through OpenVINO without
PyTorch, 35 ms more for the brain-MRI check of lib.deploy.ood on most real
slices (128 px; 0.12 s more at 256 px on those it is unsure of) and 0.12 s
for `medsam_embed` / `fusion` members (256 px). SAM's refinement and the
user's prompts run LiteMedSAM's decoder through OpenVINO too (about 25 ms a
prompt): only a bundle whose segmenter is a fine-tuned LiteMedSAM loads
PyTorch.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from threadpoolctl import threadpool_limits

from lib.common.io import read_image
from lib.deploy import ood
from lib.deploy.bundle import KERAS_KIND
from lib.deploy.ensemble import Ensemble
from lib.preprocess import clean, enhance
from lib.regions import cluster, features
from lib.segment import models, postprocess

BUNDLE_FILE = "bundle.json"


class BundleError(RuntimeError):
    """A bundle folder that is missing, incomplete or from an incompatible version."""


@dataclass
class Prepared:
    """A slice after the training pipeline's preprocessing, plus the geometry back to the source."""

    source_shape: tuple[int, int]
    clean: np.ndarray  # uint8 grey, size x size: 02's output
    head: np.ndarray  # bool: 03's head mask
    enhanced: np.ndarray  # uint8: 03's output (the features' input)
    square_box: tuple[int, int, int, int]  # the clean frame in source pixels
    traits: ood.Traits  # what lib.deploy.ood reads to tell a brain MRI slice from other pictures
    embedding: np.ndarray | None = None  # LiteMedSAM's pooled embedding, computed once for all members and ood
    maps: np.ndarray | None = None  # LiteMedSAM's encoder maps (256, 64, 64), kept for the user's prompts
    ood_view: np.ndarray | None = None  # 02's crop as lib.deploy.ood's reference saw it, when `clean` differs


@dataclass
class Prediction:
    """What a bundle says about one slice."""

    prob: float  # calibrated P(tumour)
    label: str  # class name at the bundle's threshold
    threshold: float
    members: dict[str, float]  # P(tumour) of each member the ensemble weighs (mean over its fold models)
    prepared: Prepared
    mask: np.ndarray | None = None  # bool, clean frame; None when segmentation was not asked for
    seconds: dict[str, float] = field(default_factory=dict)
    hidden_pixels: int = 0  # area of the segmenter's mask hidden because the classifier called the slice tumour-free
    ood: str = ""  # why the slice does not look like brain MRI (lib.deploy.ood.verdict); '' when it does

    def source_mask(self) -> np.ndarray | None:
        """The tumour mask in the uploaded image's own pixels."""
        if self.mask is None:
            return None
        return clean.unwarp_mask(self.mask, self.prepared.square_box, self.prepared.source_shape)


def read_settings(bundle_dir: Path) -> dict[str, Any]:
    """bundle.json, or a BundleError saying how to make one."""
    path = Path(bundle_dir) / BUNDLE_FILE
    if not path.is_file():
        raise BundleError(f"{path} not found: build a bundle with `make all` (or scripts/09_ensemble.py --bundle DIR)")
    return json.loads(path.read_text())


def tuned_segmenter(settings: dict[str, Any]) -> bool:
    """Whether the bundle's segmenter is 08's fine-tuned LiteMedSAM (PyTorch) rather than a Keras network."""
    return (settings.get("segmenter") or {}).get("architecture") == models.TUNED


def _segmenter_engine(settings: dict[str, Any]) -> Any:
    """The module that loads and runs the bundle's segmenter (lib.segment.models.engine)."""
    return models.engine(settings["segmenter"]["architecture"])


def prepare(pixels: np.ndarray, settings: dict[str, Any], embedded_check: bool = True) -> Prepared:
    """02 -> 03 -> (04's input) for one slice, with the bundle's preprocessing settings; `embedded_check`:
    also 02's crop as the brain-MRI check's reference saw it, where the bundle's differs (a 256 px crop)."""
    result = clean.clean_image(pixels, size=int(settings["size"]), skull_strip=bool(settings["skull_strip"]))
    head = clean.head_mask(result.image)
    enhanced = enhance.enhance(result.image, head, tuple(settings["chain"]))
    plain = int(settings["size"]) == ood.VIEW_SIZE and not settings["skull_strip"]
    return Prepared(source_shape=tuple(pixels.shape[:2]), clean=result.image, head=head, enhanced=enhanced,
                    square_box=tuple(int(v) for v in result.square_box), traits=ood.traits(pixels, result),
                    ood_view=None if plain or not embedded_check else
                    clean.clean_image(pixels, size=ood.VIEW_SIZE).image)


def feature_vector(prepared: Prepared, settings: dict[str, Any]) -> np.ndarray:
    """04's handcrafted features of the slice, in the column order the classifiers learned."""
    fitted = cluster.fit(prepared.enhanced, prepared.head, k=int(settings["k"]),
                         features=settings.get("cluster_features", "intensity"))
    values = features.extract(prepared.enhanced, prepared.head, fitted.labels)
    return np.array([[values[c] for c in settings["feature_columns"]]], float)


class Predictor:
    """A loaded bundle: call `predict(pixels)`; load once, predict many times."""

    def __init__(self, bundle_dir: Path | str, sam: bool = False, ood_check: str = "full") -> None:
        """Load every model of the bundle; `sam` also readies LiteMedSAM for refine_with_sam and segment_prompt
        (lib.segment.sam_base.SegmenterUnavailable where it cannot be had); `ood_check` is
        one of lib.deploy.ood.MODES ('full' embeds the slices the traits pass with LiteMedSAM: about 50 ms on 2
        cores, 0.17 s where the 128 px quick pass is unsure)."""
        if ood_check not in ood.MODES:
            raise ValueError(f"ood_check {ood_check!r}: choose one of {ood.MODES}")
        self.dir = Path(bundle_dir)
        self.settings = read_settings(self.dir)
        self.ood_check = ood_check
        # the encoder IRs 09 put in the bundle, by input size, and the prompt decoder's (None: the cache's, made
        # if missing)
        self.encoder_irs = {size: self._ir(key) for size, key in ((ood.FULL_SIZE, "encoder"),
                                                                  (ood.SHORTCUT_SIZE, "shortcut_encoder"))}
        self._sam = self._load_sam() if sam else None
        self.preprocessing = self.settings["preprocessing"]
        self.ensemble = Ensemble.from_json(self.settings["classifier"]["ensemble"])
        self.class_names = self.settings["class_names"]
        self.members = {name: self._load_member(spec) for name, spec in self.settings["classifier"]["members"].items()}
        self.unet = self._load_unet()
        # "tumour": masks only on slices called tumour (09 --masks-when); bundles made before it drew them always
        self.masks_when = (self.settings.get("segmenter") or {}).get("masks_when", "always")
        self.warm_up()

    # --- loading -------------------------------------------------------------

    def _path(self, rel: str) -> Path:
        path = self.dir / rel
        if not path.exists():
            raise BundleError(f"{path} is missing: the bundle is incomplete; rebuild it with scripts/09_ensemble.py")
        return path

    def _ir(self, key: str) -> Path | None:
        return self.dir / self.settings[key]["xml"] if self.settings.get(key) else None

    def _load_sam(self) -> Any:
        """LiteMedSAM by OpenVINO alone (lib.segment.segmenters.LiteMedSAMOpenVINO), from the bundle's IRs."""
        from lib.segment import segmenters

        return segmenters.LiteMedSAMOpenVINO(self.encoder_irs[ood.FULL_SIZE], self._ir("prompt_decoder"))

    def _load_member(self, spec: dict[str, Any]) -> list[Any]:
        if spec["kind"] == KERAS_KIND:
            import keras

            return [keras.saving.load_model(self._path(p)) for p in spec["folds"]]
        from lib.classify import tabular

        return [{head: tabular.load(self._path(p)) for head, p in fold.items()} if isinstance(fold, dict)
                else tabular.load(self._path(fold)) for fold in spec["folds"]]

    def _load_unet(self) -> list[Any] | None:
        """The segmenter's networks: one, or the members of an 08 --ensemble (their maps are averaged)."""
        spec = self.settings.get("segmenter")
        if not spec:
            return None
        load = _segmenter_engine(self.settings).load
        return [load(self._path(path)) for path in spec.get("paths", [spec.get("path")])]

    def warm_up(self) -> None:
        """One pass of every Keras model on zeros: the first real slice then costs what the others cost."""
        keras_models = [m for name in self.members for m in self.members[name]
                        if self.settings["classifier"]["members"][name]["kind"] == KERAS_KIND]
        keras_unet = self.unet is not None and not tuned_segmenter(self.settings)
        for model in keras_models + (self.unet if keras_unet else []):
            _call(model, np.zeros((1, *model.input_shape[1:]), np.float32))
        if self.ood_check == "full":  # compiled and run once now (OpenVINO's first inference is slow)
            for size, ir in self.encoder_irs.items():
                ood.embed([np.zeros((64, 64), np.uint8)], size, ir)

    # --- prediction ----------------------------------------------------------

    def predict(self, pixels: np.ndarray, segment: bool = True) -> Prediction:
        """Classify (and segment) one decoded slice (grey or RGB uint8, any size)."""
        seconds: dict[str, float] = {}
        start = time.perf_counter()
        prepared = prepare(pixels, self.preprocessing, self.ood_check == "full")
        seconds["prepare"] = time.perf_counter() - start
        verdict = self.ood_verdict(prepared, seconds)
        members = {name: self._member_prob(name, prepared, seconds) for name in self.weighed_members()}
        prob = float(self.ensemble.predict(np.array([[members.get(n, 0.0) for n in self.ensemble.members]]))[0])
        label, mask, hidden = self.decide(prob), None, 0
        if segment and self.unet is not None:
            tic = time.perf_counter()
            mask = self.segment(prepared)
            seconds["segment"] = time.perf_counter() - tic
            if self.masks_when == "tumour" and label == self.class_names[0] and mask.any():
                hidden, mask = int(mask.sum()), np.zeros_like(mask)  # the classifier's call wins (bundle setting)
        seconds["total"] = time.perf_counter() - start
        return Prediction(prob=prob, label=label, threshold=self.ensemble.threshold, members=members,
                          prepared=prepared, mask=mask, seconds=seconds, hidden_pixels=hidden, ood=verdict)

    def ood_verdict(self, prepared: Prepared, seconds: dict[str, float]) -> str:
        """lib.deploy.ood's verdict on the slice ('' when it looks like brain MRI)."""
        if self.ood_check == "off":
            return ""
        tic = time.perf_counter()

        def embed_at(size: int) -> np.ndarray:  # on the crop the reference describes (ood_view: another one)
            if prepared.ood_view is None and size == ood.FULL_SIZE:
                return self._embed(prepared)  # the check's full-size embedding serves the members too
            view = prepared.clean if prepared.ood_view is None else prepared.ood_view
            return ood.embed([view], size, self.encoder_irs[size])

        verdict = ood.verdict(ood.judge(prepared.traits, embed_at if self.ood_check == "full" else None))
        seconds["ood"] = time.perf_counter() - tic
        return verdict

    def _embed(self, prepared: Prepared) -> np.ndarray:
        """LiteMedSAM's pooled embedding of the clean slice, computed once per slice, through OpenVINO without
        PyTorch (lib.common.medsam_encoder: the same vectors as lib.common.medsam's CPU route, 500 MB less).
        The maps stay too: a prompt on the slice then costs only the decoder."""
        if prepared.embedding is None:
            from lib.common import medsam_encoder

            if prepared.maps is None:
                prepared.maps = medsam_encoder.maps(prepared.clean, self.encoder_irs[ood.FULL_SIZE])
            prepared.embedding = medsam_encoder.pool(prepared.maps[None])
        return prepared.embedding

    def weighed_members(self) -> list[str]:
        """Members whose probability moves the ensemble's (a zero weight, e.g. after `best`, needs no run)."""
        combiner = self.ensemble.combiner
        weights = combiner.get("weights", combiner.get("coef"))
        return [name for name, w in zip(self.ensemble.members, weights) if w != 0]

    def predict_file(self, path: Path | str, segment: bool = True) -> Prediction:
        """`predict` on an image file (lib.common.io.read_image: any common format; ImageReadError when unreadable)."""
        return self.predict(read_image(path).pixels, segment)

    def decide(self, prob: float) -> str:
        return self.class_names[1] if prob >= self.ensemble.threshold else self.class_names[0]

    def _member_prob(self, name: str, prepared: Prepared, seconds: dict[str, float]) -> float:
        tic = time.perf_counter()
        spec, models = self.settings["classifier"]["members"][name], self.members[name]
        if spec["kind"] == KERAS_KIND:
            probs = [_keras_prob(m, prepared.clean) for m in models]
        else:
            x = self._table_row(spec["kind"], prepared)
            probs = [_table_prob(m, x, spec) for m in models]
        seconds[name] = time.perf_counter() - tic
        return float(np.mean(probs))

    def _table_row(self, kind: str, prepared: Prepared) -> np.ndarray:
        if kind == "features":
            return feature_vector(prepared, self.preprocessing)
        embedding = self._embed(prepared)
        if kind == "medsam":
            return embedding
        return np.hstack([feature_vector(prepared, self.preprocessing), embedding])

    def segment(self, prepared: Prepared) -> np.ndarray:
        """The segmenter's tumour mask (bool) in the clean frame."""
        proba = _segmenter_engine(self.settings).predict_proba
        prob = np.mean([proba(model, [prepared.clean])[0] for model in self.unet], axis=0)  # clean slice's size
        threshold = float(self.settings["segmenter"].get("threshold", 0.5))
        return postprocess.drop_small((prob > threshold) & prepared.head, int(self.settings["segmenter"].get(
            "min_area", 0)))

    def image_models(self) -> list[Any]:
        """The fold models of the first image member (for Grad-CAM), or [] when the ensemble has none."""
        for name in self.ensemble.members:
            if self.settings["classifier"]["members"][name]["kind"] == KERAS_KIND:
                return self.members[name]
        return []

    def refine_with_sam(self, prepared: Prepared, mask: np.ndarray) -> tuple[np.ndarray, Any]:
        """LiteMedSAM's outline in the box of `mask` (the segmenter's) when it passes 07's check; same frame.

        Returns (mask, lib.segment.pseudo_label.PseudoLabel or None): see lib.segment.pseudo_label.refine."""
        from lib.segment import pseudo_label

        if self._sam is None and mask.any():
            self._sam = self._load_sam()
        return pseudo_label.refine(self._sam, prepared.clean, mask, prepared.head)

    def segment_prompt(self, prepared: Prepared, box: tuple[float, float, float, float] | None = None,
                       points: list[tuple[float, float, int]] | None = None) -> tuple[np.ndarray, float]:
        """LiteMedSAM's mask for the user's own prompt on the clean slice: a box (x0, y0, x1, y1) and/or points
        (x, y, 1 tumour / 0 background), in clean-frame pixels -> (bool mask, SAM's predicted IoU).

        The encoder maps are computed once per slice, so trying several prompts costs only the decoder."""
        if self._sam is None:
            self._sam = self._load_sam()
        if prepared.maps is None:
            prepared.maps = self._sam.encode(prepared.clean)
        masks, scores = self._sam.decode(prepared.maps, prepared.clean.shape, box, points or None)
        return masks[0] & prepared.head, float(scores[0])


def _call(model: Any, x: np.ndarray) -> np.ndarray:
    """One forward pass in inference mode through Keras' compiled predict step.

    predict_on_batch reuses the traced function (a graph on TensorFlow, jit on
    JAX): about 3 ms per small model against ~40 ms for an eager call.
    """
    return np.asarray(model.predict_on_batch(x))


def _keras_prob(model: Any, image: np.ndarray) -> float:
    from lib.classify import cnn

    size = int(model.input_shape[1])
    return float(np.asarray(_call(model, cnn.prepare_images(image[None], size))).reshape(-1)[0])


def _table_prob(model: Any, x: np.ndarray, spec: dict[str, Any]) -> float:
    """P(tumour) of one table row, on one thread.

    One row needs no parallelism, and OpenMP workers (gradient boosting) that
    spin next to TensorFlow's thread pools turned 10 ms into 2.5 s at times.
    """
    with threadpool_limits(limits=1):
        return _table_prob_threads(model, x, spec)


def _table_prob_threads(model: Any, x: np.ndarray, spec: dict[str, Any]) -> float:
    if isinstance(model, dict):  # fusion: mean of the features head and the embeddings head
        split = int(spec["feature_columns"])
        return float((model["features"].predict_proba(x[:, :split])[0, 1]
                      + model["embeddings"].predict_proba(x[:, split:])[0, 1]) / 2)
    return float(model.predict_proba(x)[0, 1])
