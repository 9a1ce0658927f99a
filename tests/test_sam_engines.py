"""The keras-hub and transformers SAM engines on tiny random models: shapes, prompts, caching, offline errors.

Random weights say nothing about mask quality; what can break here is the
plumbing: non-square images (resize, pad, crop back), prompt scaling, the
one-encode-per-image cache, and loading failing fast in one line offline.
"""

from __future__ import annotations

import time

import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
keras_hub = pytest.importorskip("keras_hub")

from lib.segment import sam_keras_hub, sam_transformers, segmenters  # noqa: E402

SIZE = 64  # model input side: 4 x 4 patches of 16 px
SHAPE = (100, 140)  # non-square on purpose
BOX = (30, 20, 90, 70)
POINTS = [(60, 45, 1), (10, 90, 0)]
MADE_UP = "no_such_preset_xyz"
MISSING_PATH = "/nonexistent/dir/no_such_preset_xyz"


def grey_image(seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    image = rng.integers(0, 60, SHAPE, dtype=np.uint8)
    image[20:70, 30:90] += 150  # a bright blob where the box is
    return image


def tiny_keras_backbone() -> object:
    """A SAMBackbone with ~20 k random weights: 64 px input, 4 x 4 embedding, 16 x 16 masks."""
    encoder = keras_hub.models.ViTDetBackbone(
        hidden_size=16, num_layers=1, intermediate_dim=32, num_heads=2, global_attention_layer_indices=[0],
        image_shape=(SIZE, SIZE, 3), patch_size=16, num_output_channels=16, window_size=2)
    prompt_encoder = keras_hub.layers.SAMPromptEncoder(
        hidden_size=16, image_embedding_size=(SIZE // 16, SIZE // 16), input_image_size=(SIZE, SIZE),
        mask_in_channels=4)
    mask_decoder = keras_hub.layers.SAMMaskDecoder(
        hidden_size=16, num_layers=1, intermediate_dim=32, num_heads=2, embedding_dim=16,
        num_multimask_outputs=3, iou_head_depth=2, iou_head_hidden_dim=16)
    return keras_hub.models.SAMBackbone(image_encoder=encoder, prompt_encoder=prompt_encoder,
                                        mask_decoder=mask_decoder)


def tiny_transformers_parts() -> tuple[object, object]:
    """A random SamModel (64 px input) and a SamProcessor resizing and padding to 64 px."""
    from transformers import SamConfig, SamImageProcessor, SamModel, SamProcessor

    torch.manual_seed(0)
    config = SamConfig(
        vision_config=dict(hidden_size=16, output_channels=16, num_hidden_layers=1, num_attention_heads=2,
                           image_size=SIZE, patch_size=16, window_size=2, global_attn_indexes=[0],
                           num_pos_feats=8, mlp_dim=32),
        prompt_encoder_config=dict(hidden_size=16, image_size=SIZE, patch_size=16, mask_input_channels=4),
        mask_decoder_config=dict(hidden_size=16, mlp_dim=32, num_hidden_layers=1, num_attention_heads=2,
                                 iou_head_hidden_dim=16))
    processor = SamProcessor(SamImageProcessor(size={"longest_edge": SIZE}, pad_size={"height": SIZE, "width": SIZE},
                                               mask_size={"longest_edge": SIZE // 4},
                                               mask_pad_size={"height": SIZE // 4, "width": SIZE // 4}))
    return SamModel(config), processor


@pytest.fixture(scope="module")
def keras_segmenter() -> segmenters.Segmenter:
    return sam_keras_hub.KerasHubSegmenter(backbone=tiny_keras_backbone())


@pytest.fixture(scope="module")
def transformers_segmenter() -> segmenters.Segmenter:
    model, processor = tiny_transformers_parts()
    return sam_transformers.TransformersSegmenter(model=model, processor=processor)


@pytest.fixture(params=["keras-hub", "transformers"])
def segmenter(request: pytest.FixtureRequest) -> segmenters.Segmenter:
    name = {"keras-hub": "keras_segmenter", "transformers": "transformers_segmenter"}[request.param]
    return request.getfixturevalue(name)


def check_output(masks: np.ndarray, scores: np.ndarray) -> None:
    assert masks.dtype == bool and masks.shape == (3, *SHAPE)  # SAM's multimask output, at the image's size
    assert scores.shape == (3,) and np.isfinite(scores).all()
    assert (np.diff(scores) <= 0).all(), "best score first"


def test_box_prompt_gives_masks_at_image_size(segmenter: segmenters.Segmenter) -> None:
    check_output(*segmenter.predict(grey_image(), box=BOX))


def test_points_and_box_plus_points(segmenter: segmenters.Segmenter) -> None:
    image = grey_image()
    check_output(*segmenter.predict(image, points=POINTS))
    check_output(*segmenter.predict(image, box=BOX, points=POINTS[:1]))


def test_prompts_on_one_image_encode_once(segmenter: segmenters.Segmenter, monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[tuple[int, ...]] = []
    encode = segmenter.encode
    monkeypatch.setattr(segmenter, "encode", lambda image: calls.append(image.shape) or encode(image))
    first, second = grey_image(1), grey_image(2)
    a, _ = segmenter.predict(first, box=BOX)
    segmenter.predict(first, points=POINTS)
    b, _ = segmenter.predict(first, box=BOX)
    assert len(calls) == 1 and (a == b).all()  # same prompt, cached embedding: same masks
    segmenter.predict(second, box=BOX)
    assert len(calls) == 2  # new pixels are encoded again


def test_prompt_changes_the_answer(segmenter: segmenters.Segmenter) -> None:
    """Prompts reach the decoder: two different boxes get different IoU predictions."""
    image = grey_image()
    _, small = segmenter.predict(image, box=(0, 0, 20, 20))
    _, large = segmenter.predict(image, box=(0, 0, 139, 99))
    assert not np.allclose(small, large)


def test_single_mask_option() -> None:
    model, processor = tiny_transformers_parts()
    seg = sam_transformers.TransformersSegmenter(model=model, processor=processor, multimask=False)
    masks, scores = seg.predict(grey_image(), box=BOX)
    assert masks.shape == (1, *SHAPE) and scores.shape == (1,)


def test_keras_single_mask_option(keras_segmenter: sam_keras_hub.KerasHubSegmenter) -> None:
    keras_segmenter.multimask = False
    try:
        masks, scores = keras_segmenter.predict(grey_image(), box=BOX)
    finally:
        keras_segmenter.multimask = True
    assert masks.shape == (1, *SHAPE) and scores.shape == (1,)


# --- keras-hub helpers: the geometry SAM's predictor does and keras-hub leaves to us ---


def test_resized_shape_rounds_like_sam() -> None:
    assert sam_keras_hub.resized_shape((100, 140), 64) == (46, 64)  # 45.7 -> 46
    assert sam_keras_hub.resized_shape((256, 256), 1024) == (1024, 1024)
    assert sam_keras_hub.resized_shape((300, 200), 1024) == (1024, 683)


def test_preprocess_keeps_aspect_and_pads_with_the_mean() -> None:
    image = np.full(SHAPE, 255, np.uint8)
    rescale = keras_hub.layers.SAMImageConverter(scale=1.0 / 255.0)
    pixels, resized = sam_keras_hub.preprocess(image, SIZE, rescale)
    assert pixels.shape == (1, SIZE, SIZE, 3) and resized == (46, 64)
    np.testing.assert_allclose(pixels[0, :46, :64], 1.0, atol=1e-5)  # white image, scaled to [0, 1], not cropped
    np.testing.assert_allclose(pixels[0, 46:], np.broadcast_to(sam_keras_hub.IMAGENET_MEAN, (18, 64, 3)), atol=1e-6)


def test_prompts_scale_into_the_model_frame() -> None:
    prompts = sam_keras_hub.prompt_arrays((0, 0, 140, 100), [(70, 50, 1)], SHAPE, (46, 64))
    np.testing.assert_allclose(prompts["boxes"][0, 0], [[0, 0], [64, 46]], atol=1e-4)
    np.testing.assert_allclose(prompts["points"][0], [[32, 23]], atol=1e-4)
    assert prompts["labels"].tolist() == [[1.0]]
    alone = sam_keras_hub.prompt_arrays(None, [(70, 50, 0)], SHAPE, (46, 64))
    assert "boxes" not in alone and alone["labels"].tolist() == [[0.0, -1.0]]  # SAM's padding point


def test_upsampling_crops_the_padding_before_resizing() -> None:
    """Positive logits in the top half of the padded square cover the image down to 32/46 of its height."""
    logits = -np.ones((1, 16, 16), np.float32)
    logits[:, :8] = 1.0  # model rows 0-31 of 64; the image fills rows 0-45
    mask = sam_keras_hub.upsample_logits(logits, SIZE, (46, 64), SHAPE)[0] > 0
    covered = mask.all(axis=1).sum()
    assert abs(covered - round(100 * 32 / 46)) <= 3  # ~70 rows, not the 50 a crop-less resize would give
    assert mask[:60].all() and not mask[80:].any()


# --- loading offline: one line naming what was asked for, in seconds ---


@pytest.mark.parametrize("engine", ["keras-hub", "transformers"])
@pytest.mark.parametrize("preset", [MADE_UP, MISSING_PATH])
def test_missing_weights_fail_fast_in_one_line(engine: str, preset: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    start = time.monotonic()
    with pytest.raises(segmenters.SegmenterUnavailable) as err:
        segmenters.load(engine, preset)
    assert time.monotonic() - start < 10
    message = str(err.value)
    assert "\n" not in message and repr(preset) in message and "--sam-preset" in message


def test_builtin_preset_without_network_fails_fast(monkeypatch: pytest.MonkeyPatch) -> None:
    """The default preset when Kaggle cannot be reached (simulated): one line naming it, no hang."""
    import requests
    from keras_hub.src.utils import preset_utils

    def offline(*_: object, **__: object) -> str:
        raise requests.exceptions.ConnectionError("Failed to resolve 'api.kaggle.com'")

    monkeypatch.setattr(preset_utils.kagglehub, "model_download", offline)
    with pytest.raises(segmenters.SegmenterUnavailable) as err:
        segmenters.load("keras-hub")
    message = str(err.value)
    assert "\n" not in message and "'sam_base_sa1b'" in message and "api.kaggle.com" in message


def test_hub_checkpoint_unreachable_fails_fast(monkeypatch: pytest.MonkeyPatch) -> None:
    """Not cached and the Hub does not answer: SegmenterUnavailable without trying to download."""
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("TRANSFORMERS_OFFLINE", raising=False)
    monkeypatch.setattr(sam_transformers, "_reachable", lambda host, port=443: False)
    start = time.monotonic()
    with pytest.raises(segmenters.SegmenterUnavailable) as err:
        segmenters.load("transformers", "someone/no-such-sam")
    assert time.monotonic() - start < 10
    message = str(err.value)
    assert "\n" not in message and "'someone/no-such-sam'" in message and "unreachable" in message


def test_ready_model_needs_its_processor() -> None:
    model, _ = tiny_transformers_parts()
    with pytest.raises(ValueError, match="SamProcessor"):
        sam_transformers.TransformersSegmenter(model=model)


def test_preset_converter_rescales_without_cropping() -> None:
    """A preset's converter squares images (crop_to_aspect_ratio); ours keeps its scale and drops the resize."""
    from types import SimpleNamespace

    converter = keras_hub.layers.SAMImageConverter(image_size=(SIZE, SIZE), scale=1.0 / 255.0)
    model = SimpleNamespace(preprocessor=SimpleNamespace(image_converter=converter))
    out = sam_keras_hub._to_numpy(sam_keras_hub._rescaler(model)(np.full((1, 46, 64, 3), 51.0, np.float32)))
    assert out.shape == (1, 46, 64, 3)
    np.testing.assert_allclose(out, 0.2, atol=1e-6)
