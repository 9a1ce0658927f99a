"""Specks dropped from masks, and how small a part may be chosen on validation slices."""

import numpy as np

from lib.segment import postprocess


def _mask(*boxes: tuple[int, int, int, int], size: int = 64) -> np.ndarray:
    mask = np.zeros((size, size), bool)
    for top, left, height, width in boxes:
        mask[top:top + height, left:left + width] = True
    return mask


def test_parts_under_the_area_go_and_larger_ones_stay_whole() -> None:
    mask = _mask((5, 5, 10, 10), (40, 40, 3, 3))  # a 100 px tumour and a 9 px speck
    np.testing.assert_array_equal(postprocess.drop_small(mask, 16), _mask((5, 5, 10, 10)))
    np.testing.assert_array_equal(postprocess.drop_small(mask, 0), mask)
    assert not postprocess.drop_small(mask, 101).any()
    diagonal = np.eye(8, dtype=bool)  # 8-connected: one part of 8 pixels, not eight of one
    assert postprocess.drop_small(diagonal, 8).sum() == 8


def test_the_validation_slices_choose_an_area_that_spares_tumour_free_slices() -> None:
    tumour = _mask((5, 5, 10, 10))
    masks = [tumour | _mask((50, 50, 4, 4)), _mask((30, 30, 5, 5)), _mask((20, 20, 6, 6))]  # specks on empty slices
    truths = [tumour, _mask(), _mask()]
    area, scores = postprocess.choose_min_area(masks, truths)
    assert scores[0] < scores[64] == 1.0 and area == 64  # the largest area that keeps the 100 px tumour
    assert scores[128] < 1.0  # larger drops the tumour itself
    small_tumours = [_mask((5, 5, 3, 3))] * 3
    assert postprocess.choose_min_area(small_tumours, small_tumours)[0] == 0  # nothing to gain: keep every part
