"""lib.common.dedup: exact copies and re-encoded copies share a group; other images don't."""

from io import BytesIO
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

from lib.common import dedup


def _slice(seed: int) -> np.ndarray:
    """A head-like grey image with seed-dependent blobs (different seeds, different pictures)."""
    rng = np.random.default_rng(seed)
    image = np.zeros((128, 128), np.uint8)
    cv2.ellipse(image, (64, 64), (50, 58), 0, 0, 360, 90, -1)
    for _ in range(6):
        x, y = rng.integers(24, 104, 2)
        cv2.circle(image, (int(x), int(y)), int(rng.integers(5, 16)), int(rng.integers(150, 255)), -1)
    return image


def _jpeg_round_trip(image: np.ndarray, quality: int) -> np.ndarray:
    buffer = BytesIO()
    Image.fromarray(image).save(buffer, format="JPEG", quality=quality)
    return np.asarray(Image.open(BytesIO(buffer.getvalue())))


def test_reencoded_and_resized_copies_are_near_duplicates() -> None:
    original = _slice(1)
    copies = [_jpeg_round_trip(original, 60), cv2.resize(original, (200, 200), interpolation=cv2.INTER_LINEAR)]
    hashes = [dedup.phash(original)] + [dedup.phash(c) for c in copies]
    distances = dedup.hamming_matrix(hashes)[0, 1:]
    assert (distances <= dedup.NEAR_DUP_DISTANCE).all()


def test_different_images_are_beyond_the_threshold() -> None:
    hashes = [dedup.phash(_slice(seed)) for seed in range(8)]
    distances = dedup.hamming_matrix(hashes)
    assert (distances[np.triu_indices(8, k=1)] > dedup.NEAR_DUP_DISTANCE).all()


def test_hamming_matrix_counts_bits() -> None:
    m = dedup.hamming_matrix(["0000000000000000", "000000000000000f", "ffffffffffffffff"])
    assert m.tolist() == [[0, 4, 64], [4, 0, 60], [64, 60, 0]]


def test_groups_are_transitive_and_include_exact_copies() -> None:
    sha = ["a", "b", "a", "c", "d", ""]
    # b~c within threshold, c~d within threshold, b and d far apart: one chain.
    hashes = ["ffff000000000000", "0000000000000000", "ffff000000000000", "00000000000000ff",
              "000000000000ffff", ""]
    groups = dedup.group_duplicates(sha, hashes)
    assert groups[0] == groups[2]  # exact copies
    assert groups[1] == groups[3] == groups[4]  # chain 0 bits -> 8 bits -> 8 bits
    assert len({groups[0], groups[1], groups[5]}) == 3  # unreadable file stands alone
    assert groups == [0, 1, 0, 1, 1, 2]  # numbered by first appearance


def test_exact_counts_and_summary() -> None:
    sha = ["a", "a", "a", "b", "c", "c"]
    groups = [0, 0, 0, 1, 2, 2]
    assert dedup.exact_counts(sha) == [3, 3, 3, 1, 2, 2]
    s = dedup.summary(sha, groups)
    assert s["exact_duplicate_groups"] == 2 and s["files_in_exact_groups"] == 5
    assert s["distinct_images"] == 3 and s["unique_files"] == 3


def test_sha256_file(tmp_path: Path) -> None:
    path = tmp_path / "x"
    path.write_bytes(b"abc")
    assert dedup.sha256_file(path) == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
