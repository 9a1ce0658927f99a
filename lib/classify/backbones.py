"""ImageNet backbones from keras.applications for tumour vs no tumour (one fold of 06_classify_kfold).

Why: a network pretrained on a million photographs already has edge, texture
and blob detectors; on ~250 slices a small head on its features often beats
a CNN trained from scratch. Five backbones, each with its own
`preprocess_input`: VGG16, ResNet50, EfficientNetV2B0, EfficientNetV2S and
ConvNeXtTiny. Grey slices are repeated to three channels.

Weights (`settings["weights"]`, checked by `check_weights` before any training):
- 'imagenet': the Keras file in ~/.keras/models/ (or $KERAS_HOME/models/); if
  it is not there it is downloaded. Offline, that fails within seconds with
  `WeightsUnavailable`, whose one-line message names the file and its URL and
  says how to provide it. There is never a silent fallback to random weights.
- 'none': random initialisation: useless for accuracy, but it proves the
  whole path offline (tests, CI).
- a PATH: a .h5 / .weights.h5 file of the backbone without its top (such as
  the Keras file itself, downloaded elsewhere).

Training, in two phases:
1. backbone frozen. Its pooled features are computed ONCE per fold (predict
   on train, validation and test) and a small dense head (standardisation,
   dropout, one sigmoid unit) is trained on the cached features. Seconds on a
   CPU instead of hours. The accepted trade-off: no augmentation in this
   phase, since a cached feature belongs to one fixed view of the image.
2. fine-tuning, only when finetune_epochs > 0 (default 0: on a CPU one epoch
   through a backbone costs minutes; use it on a GPU). The top block of the
   backbone (`TOP_LAYERS`) is unfrozen, batch-norm layers stay frozen and in
   inference mode, augmentation layers (lib.classify.cnn.augmenter) go in front,
   the learning rate is 10x lower, and early stopping watches validation AUC.

Image size: default 128 so that weights 'none' (and a CPU) stay fast. The
ImageNet weights were trained at 224 (EfficientNetV2S at 384): pass
image_size 224 with weights 'imagenet' for the best features.

The saved fold model (out_dir/model.keras) takes grey images (N, size, size, 1)
in 0..255 and includes augmentation, channel repetition, preprocessing,
backbone and head.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import keras
import numpy as np

from lib.classify.cnn import augmenter, compile_model, predict, prepare_images, save, settings_with_defaults, train
from lib.classify.fold import Fold, FoldResult
from lib.common import keras_weights

# --- hyper-parameters ------------------------------------------------------------

BACKBONE = "efficientnetv2b0"
WEIGHTS = "imagenet"  # 'imagenet', 'none' or a path to a .h5 / .weights.h5 file
IMAGE_SIZE = 128  # ImageNet weights want 224; 128 keeps CPU runs short
EPOCHS = 100  # head epochs on cached features (cheap); early stopping ends sooner
FINETUNE_EPOCHS = 0  # phase 2 off by default: minutes per epoch on a CPU
BATCH_SIZE = 32
LEARNING_RATE = 1e-3  # head; fine-tuning uses LEARNING_RATE * FINETUNE_LR_FACTOR
FINETUNE_LR_FACTOR = 0.1
REBALANCE = "class_weight"
HEAD_DROPOUT = 0.3
HEAD_WEIGHT_DECAY = 1e-3  # L2 on the head's kernel: features are many, images few
HEAD_PATIENCE = 15  # epochs without a better validation AUC (head)
FINETUNE_PATIENCE = 5

DEFAULTS = {"backbone": BACKBONE, "weights": WEIGHTS, "image_size": IMAGE_SIZE, "epochs": EPOCHS,
            "finetune_epochs": FINETUNE_EPOCHS, "batch_size": BATCH_SIZE, "learning_rate": LEARNING_RATE,
            "rebalance": REBALANCE}


@dataclass(frozen=True)
class Backbone:
    build: Callable[..., keras.Model]  # the keras.applications constructor
    preprocess: Callable[[Any], Any]  # its preprocess_input (expects RGB in 0..255)
    weights_file: str  # the no-top ImageNet file, relative to keras_weights.WEIGHTS_URL (Keras keeps its base name)
    top_layers: tuple[str, ...]  # name prefixes of the layers unfrozen by fine-tuning


A = keras.applications
BACKBONES = {
    # the last conv block (3 convolutions)
    "vgg16": Backbone(A.VGG16, A.vgg16.preprocess_input,
                      "vgg16/vgg16_weights_tf_dim_ordering_tf_kernels_notop.h5", ("block5_",)),
    # the last bottleneck block of stage 5
    "resnet50": Backbone(A.ResNet50, A.resnet50.preprocess_input,
                         "resnet/resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5", ("conv5_block3_",)),
    # the last MBConv block and the 1x1 top convolution
    "efficientnetv2b0": Backbone(A.EfficientNetV2B0, A.efficientnet_v2.preprocess_input,
                                 "efficientnet_v2/efficientnetv2-b0_notop.h5", ("block6h_", "top_")),
    "efficientnetv2s": Backbone(A.EfficientNetV2S, A.efficientnet_v2.preprocess_input,
                                "efficientnet_v2/efficientnetv2-s_notop.h5", ("block6o_", "top_")),
    # the last block of stage 4 and the final layer norm
    "convnext_tiny": Backbone(A.ConvNeXtTiny, A.convnext.preprocess_input,
                              "convnext/convnext_tiny_notop.h5",
                              ("convnext_tiny_stage_3_block_2_", "layer_normalization")),
}


class WeightsUnavailable(RuntimeError):
    """The requested backbone weights cannot be had (offline, missing or mismatched file)."""


# --- weights ---------------------------------------------------------------------


def spec(backbone: str) -> Backbone:
    """The entry of BACKBONES, or a ValueError listing the names."""
    if backbone not in BACKBONES:
        raise ValueError(f"unknown backbone {backbone!r}; choose from {', '.join(BACKBONES)}")
    return BACKBONES[backbone]


def check_weights(backbone: str, weights: str | None) -> Path | None:
    """The weights file to load (None: random init); downloads ImageNet weights when needed.

    Raises WeightsUnavailable, with a one-line message saying what to do, before any training.
    """
    spec(backbone)
    if weights is None or str(weights).lower() == "none":
        return None
    if weights == "imagenet":
        return imagenet_file(backbone)
    path = Path(weights).expanduser()
    if not path.is_file():
        raise WeightsUnavailable(
            f"weights file {path} not found: give --weights the path of a .h5 or .weights.h5 file of {backbone} "
            f"without its top (e.g. {Path(spec(backbone).weights_file).name}), or --weights imagenet / none")
    if path.suffix != ".h5":
        raise WeightsUnavailable(f"weights file {path} is not a .h5 or .weights.h5 file (Keras weights) for {backbone}")
    return path


def imagenet_file(backbone: str) -> Path:
    """The Keras ImageNet file of the backbone without top: from the cache, else downloaded."""
    relative = spec(backbone).weights_file
    target, why = keras_weights.fetch(relative)
    if why is not None:
        raise WeightsUnavailable(
            f"ImageNet weights for {backbone} could not be downloaded ({why}): download "
            f"{keras_weights.WEIGHTS_URL + relative} elsewhere and put it in {target.parent}/ (Keras looks for "
            f"{target.name} there), or pass --weights PATH to that file (--weights none trains from random weights)")
    return target


# --- model -----------------------------------------------------------------------


@keras.saving.register_keras_serializable(package="tumour")
class Preprocess(keras.layers.Layer):
    """The backbone's own preprocess_input, as a layer (so the saved model holds it)."""

    def __init__(self, backbone: str, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.backbone = backbone

    def call(self, x: Any) -> Any:
        return spec(self.backbone).preprocess(x)

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "backbone": self.backbone}


def get_backbone(backbone: str, image_size: int, weights: str | None) -> keras.Model:
    """keras.applications model without top, average-pooled; weights from check_weights."""
    path = check_weights(backbone, weights)
    model = spec(backbone).build(include_top=False, weights=None, input_shape=(image_size, image_size, 3),
                                 pooling="avg")
    if path is not None:
        try:
            with warnings.catch_warnings():  # a mismatched file warns once per layer before it fails
                warnings.simplefilter("ignore")
                model.load_weights(path)
        except Exception as err:
            why = " ".join(str(err).split())
            raise WeightsUnavailable(f"{path} does not fit {backbone} without its top "
                                     f"(expected e.g. {Path(spec(backbone).weights_file).name}): "
                                     f"{why[:240]}{'...' if len(why) > 240 else ''}") from None
    return model


def get_extractor(backbone: str, image_size: int, weights: str | None) -> keras.Model:
    """Grey image (0..255) -> repeated to RGB -> preprocess_input -> backbone -> pooled features."""
    inputs = keras.Input((image_size, image_size, 1), name="image")
    rgb = keras.layers.Concatenate(name="grey_to_rgb")([inputs, inputs, inputs])
    x = Preprocess(backbone, name="preprocess")(rgb)
    base = get_backbone(backbone, image_size, weights)
    base.trainable = False
    features = base(x, training=False)  # batch norm stays in inference mode, even when fine-tuned
    return keras.Model(inputs, features, name=f"{backbone}_features")


def get_head(n_features: int, train_features: np.ndarray) -> keras.Model:
    """Features standardised on the training fold, dropout, one sigmoid unit."""
    norm = keras.layers.Normalization(name="standardise")
    norm.adapt(train_features)
    inputs = keras.Input((n_features,), name="features")
    x = keras.layers.Dropout(HEAD_DROPOUT)(norm(inputs))
    outputs = keras.layers.Dense(1, activation="sigmoid", kernel_regularizer=keras.regularizers.L2(HEAD_WEIGHT_DECAY),
                                 name="tumour")(x)
    return keras.Model(inputs, outputs, name="head")


def get_model(extractor: keras.Model, head: keras.Model, image_size: int) -> keras.Model:
    """The whole classifier on grey images in 0..255, augmentation in front (training only)."""
    inputs = keras.Input((image_size, image_size, 1), name="image")
    x = keras.layers.Rescaling(1 / 255)(inputs)
    x = augmenter()(x)  # works on 0..1
    x = keras.layers.Rescaling(255.0)(x)
    return keras.Model(inputs, head(extractor(x)), name=extractor.name.replace("_features", "_classifier"))


def unfreeze_top(extractor: keras.Model, backbone: str) -> None:
    """Make the backbone's TOP_LAYERS trainable, except batch norm; the rest stays frozen."""
    prefixes = spec(backbone).top_layers
    base = next(layer for layer in extractor.layers if isinstance(layer, keras.Model))
    base.trainable = True
    for layer in base.layers:
        layer.trainable = (layer.name.startswith(prefixes)
                           and not isinstance(layer, keras.layers.BatchNormalization))


# --- training --------------------------------------------------------------------


def embed(extractor: keras.Model, images: np.ndarray, batch_size: int) -> np.ndarray:
    """Pooled features (N, F), batch by batch in eager mode.

    Not `predict`: tracing a graph of a 300-layer backbone costs longer than
    running it once on a few hundred images, and the features are computed once.
    """
    batches = [keras.ops.convert_to_numpy(extractor(images[i:i + batch_size], training=False))
               for i in range(0, len(images), batch_size)]
    return np.concatenate(batches) if batches else np.zeros((0, extractor.output.shape[-1]), np.float32)


def run_fold(fold: Fold, settings: dict[str, Any]) -> FoldResult:
    """Phase 1 (head on cached features), optional phase 2 (fine-tuning); predict validation, test, extra."""
    s = settings_with_defaults(settings, DEFAULTS)
    keras.utils.set_random_seed(fold.seed)
    size, batch = int(s["image_size"]), int(s["batch_size"])
    extractor = get_extractor(s["backbone"], size, s["weights"])
    images = {part: prepare_images(x, size) for part, x in
              (("train", fold.train_x), ("val", fold.val_x), ("test", fold.test_x), ("extra", fold.extra_x))
              if x is not None}
    features = {part: embed(extractor, x, batch) for part, x in images.items()}
    head = get_head(features["train"].shape[1], features["train"])
    compile_model(head, float(s["learning_rate"]))
    history = train(head, features["train"], np.asarray(fold.train_y), (features["val"], fold.val_y), s,
                    fold.seed, HEAD_PATIENCE, warmup=0)  # no batch norm in the head
    model = get_model(extractor, head, size)
    if int(s["finetune_epochs"]) > 0:
        unfreeze_top(extractor, s["backbone"])
        compile_model(model, float(s["learning_rate"]) * FINETUNE_LR_FACTOR)
        tuned = train(model, images["train"], np.asarray(fold.train_y), (images["val"], fold.val_y),
                      {**s, "epochs": s["finetune_epochs"]}, fold.seed, FINETUNE_PATIENCE, warmup=0)
        history = {k: history.get(k, []) + tuned.get(k, []) for k in history.keys() | tuned.keys()}
        history["finetune_from_epoch"] = [float(len(history["loss"]) - len(tuned["loss"]))]
        prob = {part: predict(model, x, batch) for part, x in images.items()}
    else:
        prob = {part: predict(head, x, batch) for part, x in features.items()}
    save(model, fold.out_dir)
    return FoldResult(val_prob=prob["val"], test_prob=prob["test"], history=history, extra_prob=prob.get("extra"))
