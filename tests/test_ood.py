"""The "is it a brain MRI slice?" check (lib.deploy.ood, issue 32): slices pass, photos and screens do not."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from lib.acquire import phantom
from lib.deploy import ood
from tests.conftest import shared_data


def phantom_slices(n: int, seed: int = 5) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [phantom.make_slice(rng, k % 2).image for k in range(n)]


def gradient_photo() -> np.ndarray:
    """The colourful gradient that once got 'tumour, 0.82'."""
    y, x = np.mgrid[0:200, 0:260] / 200.0
    return (127.5 * (1 + np.stack([np.sin(4 * x), np.sin(3 * y + 1), np.sin(2 * (x + y))], axis=2))).astype(np.uint8)


def document_screenshot() -> np.ndarray:
    """Black text on white, as a screen grab of a page."""
    import cv2

    page = np.full((300, 400, 3), 255, np.uint8)
    for row in range(12):
        cv2.putText(page, "epoch 3 loss 0.231 val 0.27", (10, 22 + 23 * row), cv2.FONT_HERSHEY_SIMPLEX, 0.6,
                    (0, 0, 0), 1)
    return page


def test_the_shipped_reference_was_chosen_on_mri_slices_only() -> None:
    reference = ood.shipped()
    assert set(reference.provenance["tuning_slices"]) >= {"phantom"}
    for centres, limit in ((reference.centres, reference.embedding_limit), (reference.low_centres,
                                                                           reference.low_limit)):
        assert centres.shape[1] == 256 and np.allclose(np.linalg.norm(centres, axis=1), 1)
        assert 0 < limit < 1
    assert reference.limits["colour"] > 0


def test_phantom_slices_pass_in_every_mode() -> None:
    for image in phantom_slices(4):
        assert ood.check(image, "rules") == ""
        assert ood.check(image, "full") == ""


@pytest.mark.parametrize("mode", ["rules", "full"])
def test_a_colour_gradient_and_a_screenshot_are_refused_with_reasons(mode: str) -> None:
    gradient, page = ood.check(gradient_photo(), mode), ood.check(document_screenshot(), mode)
    assert gradient.startswith("not like a brain MRI slice") and "colour" in gradient
    assert page.startswith("not like a brain MRI slice")
    assert ood.check(gradient_photo(), "off") == ""


def test_a_small_slice_is_compared_with_the_low_resolution_centres() -> None:
    """A 64 px phantom, enlarged by 02, looks blurred to LiteMedSAM: the low-resolution centres accept it."""
    import cv2

    small = cv2.resize(phantom_slices(1, seed=9)[0], (64, 64), interpolation=cv2.INTER_AREA)
    assert ood.traits(small).side == 64 < ood.LOW_SIDE
    assert ood.check(small, "full") == ""
    assert [v.shape[:2] for v in ood.low_resolution_views(np.zeros((200, 100), np.uint8))] == [(64, 32), (40, 20)]


def test_a_grey_photo_needs_the_embedding_to_be_refused() -> None:
    """skimage's camera man is grey with a dark coat: the traits alone let him through, LiteMedSAM does not."""
    import skimage.data

    camera = skimage.data.camera()
    verdict = ood.check(camera, "full")
    assert "LiteMedSAM" in verdict, verdict


def test_trait_limits_lie_past_every_tuning_slice_and_flag_what_exceeds_them() -> None:
    tuning = [ood.traits(image) for image in phantom_slices(6)]
    limits = ood.trait_limits(tuning)
    assert all(ood.trait_reasons(t, limits) == [] for t in tuning)
    flat = ood.Traits(colour=0.0, head_found=True, flat_share=2 * limits["flat_share"] + 0.01, border_dark=1.0,
                      outside_ratio=0.0, side=256)
    assert ["flat patches" in r for r in ood.trait_reasons(flat, limits)] == [True]
    colour = ood.Traits(colour=limits["colour"] + 1, head_found=False, flat_share=0.0, border_dark=1.0,
                        outside_ratio=0.0, side=256)
    assert len(ood.trait_reasons(colour, limits)) == 2


def test_a_reference_built_and_reloaded_accepts_its_sources_and_refuses_far_vectors() -> None:
    rng = np.random.default_rng(0)
    base = rng.normal(size=(3, 256))
    pooled = np.hstack([np.repeat(base, 20, axis=0) + 0.05 * rng.normal(size=(60, 256)),
                        rng.normal(size=(60, 512))])  # avg part first, as lib.common.medsam_encoder.POOLING
    tuning = [ood.traits(image) for image in phantom_slices(2)]
    built = ood.Reference.build(tuning, pooled, pooled[::-1], {"tuning_slices": {"test": 60}})
    import json

    again = ood.Reference.from_json(json.loads(json.dumps(built.to_json())))
    assert np.allclose(again.centres, built.centres, atol=1e-4)
    inside = ood.distances(ood.embedding_part(pooled), again.centres)
    assert (inside <= again.embedding_limit).mean() >= 0.95
    far = ood.distances(ood.embedding_part(rng.normal(size=(5, 768))), again.centres)
    assert (far > again.embedding_limit).all()


def test_the_full_size_encoder_runs_only_where_the_quick_pass_is_unsure() -> None:
    """judge() embeds nothing when the traits fail, stops at 128 px when the quick pass is sure, and otherwise
    decides by the 256 px embedding alone."""
    rng = np.random.default_rng(1)
    centre = rng.normal(size=256)
    near = np.hstack([centre + 0.01 * rng.normal(size=(40, 256)), rng.normal(size=(40, 512))])
    far = np.hstack([rng.normal(size=(1, 256)), rng.normal(size=(1, 512))])[0]
    reference = ood.Reference.build([ood.traits(image) for image in phantom_slices(2)], near, near, {}, near)
    slice_traits = ood.traits(phantom_slices(1, seed=2)[0])
    assert not ood.trait_reasons(slice_traits, reference.limits)

    def judged(quick: np.ndarray, full: np.ndarray, traits: ood.Traits = slice_traits) -> tuple[list[str], list[int]]:
        asked: list[int] = []

        def embed_at(size: int) -> np.ndarray:
            asked.append(size)
            return quick if size == ood.SHORTCUT_SIZE else full

        return ood.judge(traits, embed_at, reference), asked

    assert judged(near[0], far) == ([], [ood.SHORTCUT_SIZE])  # sure at 128 px: 256 px never runs
    found, asked = judged(far, far)
    assert asked == [ood.SHORTCUT_SIZE, ood.FULL_SIZE] and "LiteMedSAM" in found[0]
    assert judged(far, near[1]) == ([], [ood.SHORTCUT_SIZE, ood.FULL_SIZE])  # unsure, then 256 px says MRI
    grey_blob = ood.Traits(colour=99.0, head_found=False, flat_share=1.0, border_dark=0.0, outside_ratio=9.0,
                           side=256)
    found, asked = judged(near[0], near[0], grey_blob)
    assert found and asked == []


def test_predictions_carry_the_verdict_and_the_csv_its_column(tiny_bundle: Path, tmp_path: Path) -> None:
    from PIL import Image

    from lib.deploy import predict_files
    from lib.deploy.predictor import Predictor

    model = Predictor(tiny_bundle, ood_check="rules")
    assert model.predict(phantom_slices(1)[0]).ood == ""
    odd = model.predict(gradient_photo())
    assert "colour" in odd.ood and 0 <= odd.prob <= 1  # still predicted: the user sees both
    folder = tmp_path / "in"
    folder.mkdir()
    Image.fromarray(gradient_photo()).save(folder / "photo.jpg")
    Image.fromarray(phantom_slices(1)[0]).save(folder / "slice.png")
    table = predict_files.predict_all(model, folder, tmp_path / "out.csv")
    verdicts = dict(zip(table["file"].map(lambda f: Path(f).name), table["ood"]))
    assert verdicts["slice.png"] == "" and "colour" in verdicts["photo.jpg"]


def test_the_demo_warns_above_the_verdict(tiny_bundle: Path) -> None:
    from demo import app
    from lib.deploy.predictor import Predictor

    model = Predictor(tiny_bundle, ood_check="rules")
    warned = app.verdict_markdown(model.predict(gradient_photo()), 0.95)
    assert warned.startswith("> ⚠️ **This does not look like a brain MRI slice**") and "colour" in warned
    assert "⚠️" not in app.verdict_markdown(model.predict(phantom_slices(1)[0]), 0.95)


def test_real_mri_slices_of_both_classes_pass() -> None:
    """A sample of navoneel (both folders) and figshare: real scans, other scanners than the phantoms."""
    from lib.common.io import read_image

    files = sorted(shared_data("navoneel").glob("yes/*"))[:4] + sorted(shared_data("navoneel").glob("no/*"))[:4]
    files += sorted((shared_data("figshare_seg") / "images").glob("*.png"))[-4:]
    verdicts = {f.name: ood.check(read_image(f).pixels, "full") for f in files}
    assert all(v == "" for v in verdicts.values()), verdicts


def test_the_benchmark_scores_a_corpus_without_choosing_from_it(tmp_path: Path) -> None:
    """bench_ood's score() on a handful of cached rows: the table counts what the check accepts."""
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
    import bench_ood

    rows = []
    for part, source, image in [("held", "phantom", phantom_slices(1)[0]), ("not_mri", "screens", gradient_photo())]:
        rows.append({"part": part, "source": source, "name": source, **bench_ood.measure(image, ood.FULL_SIZE),
                     "quick": bench_ood.measure(image, ood.SHORTCUT_SIZE)["pooled"]})
    table = bench_ood.score(rows, ood.shipped())["table"]
    assert table["held/phantom"]["full"]["accepted"] == 1
    assert table["not_mri/screens"]["full"]["accepted"] == 0


def test_the_quick_pass_runs_litemedsams_weights_at_128_px() -> None:
    """lib.common.medsam.encoder_at rebuilds TinyViT for 128 px with the packaged weights (loaded strictly);
    its OpenVINO IR, which the check runs without PyTorch, gives what PyTorch gives (bf16: cosine > 0.99)."""
    import torch

    from lib.common import medsam, medsam_encoder

    network = medsam.encoder_at(ood.SHORTCUT_SIZE)
    image = phantom_slices(1, seed=4)[0][..., 0]
    x = torch.from_numpy(medsam_encoder.preprocess(image, ood.SHORTCUT_SIZE))[None]
    with torch.no_grad():
        maps = network(x).numpy()
    assert maps.shape == (1, medsam_encoder.EMBED_CHANNELS, ood.SHORTCUT_SIZE // 4, ood.SHORTCUT_SIZE // 4)
    expected = ood.embedding_part(medsam_encoder.pool(maps))
    got = ood.embedding_part(ood.embed([image], ood.SHORTCUT_SIZE))
    assert float((expected * got).sum()) > 0.99
    with pytest.raises(ValueError, match="multiple of 32"):
        medsam.encoder_at(100)


def test_the_torch_free_encoder_gives_lib_common_medsams_vectors() -> None:
    """Same IR, same preprocessing, same pooling: the vectors predict.py computes without PyTorch are the
    ones 06 trained the LiteMedSAM members on (its CPU route)."""
    from lib.common import medsam, medsam_encoder

    images = [image[..., 0] for image in phantom_slices(2, seed=3)]
    light = medsam_encoder.pooled_embeddings(images)
    assert light.shape == (2, 3 * medsam_encoder.EMBED_CHANNELS)
    assert np.allclose(light, medsam.pooled_embeddings(images, runtime="openvino"), atol=1e-5)
    maps = np.random.default_rng(0).normal(size=(2, 4, 5, 5)).astype(np.float32)
    for how in ("avg+max+asym", "std+gem"):
        import torch

        assert np.allclose(medsam.pool(torch.from_numpy(maps), how).numpy(), medsam_encoder.pool(maps, how))


def test_the_check_and_sam_prompts_keep_pytorch_out(tiny_bundle: Path, tmp_path: Path) -> None:
    """torch alone is ~500 MB resident: neither the brain-MRI check (predict.py) nor a box prompt (the demo)
    may pull it in, and with the IRs the bundle carries there is nothing to convert (the empty cache folder
    stays empty)."""
    import json
    import os
    import subprocess
    import sys

    settings = json.loads((tiny_bundle / "bundle.json").read_text())
    assert all((tiny_bundle / settings[key]["bin"]).is_file()
               for key in ("encoder", "shortcut_encoder", "prompt_decoder"))

    root = Path(__file__).resolve().parents[1]
    code = ("import sys; sys.path.insert(0, sys.argv[1]); from lib.deploy.predictor import Predictor; "
            "import numpy as np; from lib.acquire import phantom; "
            "image = phantom.make_slice(np.random.default_rng(0), 1).image.copy(); image[..., 0] = 255; "
            "p = Predictor(sys.argv[2], sam=True); r = p.predict(image); "
            "mask, score = p.segment_prompt(r.prepared, box=(30, 30, 100, 100)); "
            "print(mask.shape == r.prepared.clean.shape, 'torch' in sys.modules, bool(r.ood))")
    env = {**os.environ, "BRAINMRI_CACHE_DIR": str(tmp_path)}
    done = subprocess.run([sys.executable, "-c", code, str(root), str(tiny_bundle)], capture_output=True, text=True,
                          timeout=300, env=env)
    assert done.stdout.split()[-3:] == ["True", "False", "True"], done.stderr[-2000:]
    assert list(tmp_path.iterdir()) == []


def test_a_bundle_of_another_crop_size_is_checked_on_the_references_view(tiny_bundle: Path) -> None:
    """The tiny bundle crops to 128 px; enlarged, such a crop looked blurred and unlike the 256 px reference
    (a phantom once got 0.073 > 0.066). The check embeds its own 256 px crop instead."""
    from lib.deploy.predictor import Predictor

    model = Predictor(tiny_bundle)
    assert model.preprocessing["size"] != ood.VIEW_SIZE
    results = [model.predict(image, segment=False) for image in phantom_slices(3, seed=1)]
    assert all(r.prepared.ood_view.shape == (ood.VIEW_SIZE, ood.VIEW_SIZE) for r in results)
    traits_only = Predictor(tiny_bundle, ood_check="rules").predict(phantom_slices(1)[0], segment=False)
    assert traits_only.prepared.ood_view is None  # nothing embeds it: not made
    assert [r.ood for r in results] == ["", "", ""]
