"""Exact and near-duplicate detection, so that copies never straddle folds.

Public MRI sets repeat images: byte-identical files under two names, and the
same slice re-encoded, resized or recoloured. If one copy lands in a training
fold and another in the test fold, the test score measures memory, not
reading. We group both kinds and every later split keeps a group together.

- exact: same SHA-256 of the file bytes.
- near: perceptual hash (imagehash.phash, 64-bit DCT hash of the grey image)
  within NEAR_DUP_DISTANCE bits. Groups are the transitive closure of the pairs.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Sequence

import numpy as np
from PIL import Image

# Hamming distance (of 64 bits) at or below which two images count as the
# same picture. Re-encoding or resizing a slice moves its pHash by 0-4 bits;
# different slices of the navoneel set sit mostly above 12. 8 is the
# conventional cut and errs on the side of grouping (a merge costs a little
# statistical power; a missed copy inflates the test score).
NEAR_DUP_DISTANCE = 8


def sha256_file(path: str | os.PathLike) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def phash(grey: np.ndarray) -> str:
    """64-bit perceptual hash of a uint8 grey image, as 16 hex digits."""
    import imagehash  # on first use: stages that only hash files (07, 08) run where it is not installed

    return str(imagehash.phash(Image.fromarray(grey)))


def hamming_matrix(hashes: Sequence[str]) -> np.ndarray:
    """Pairwise Hamming distances between hex pHashes (n x n, uint8)."""
    values = np.array([int(h, 16) for h in hashes], dtype=np.uint64)
    return np.bitwise_count(values[:, None] ^ values[None, :]).astype(np.uint8)


def group_duplicates(
    sha256: Sequence[str], hashes: Sequence[str], max_distance: int = NEAR_DUP_DISTANCE
) -> list[int]:
    """Group index per item: equal SHA-256 or pHash within `max_distance` bits.

    Empty hashes (unreadable files) get a group of their own. Groups are
    numbered in order of first appearance.
    """
    n = len(sha256)
    parent = list(range(n))

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    def union(i: int, j: int) -> None:
        parent[find(j)] = find(i)

    first_with_sha: dict[str, int] = {}
    for i, digest in enumerate(sha256):
        if digest:
            union(first_with_sha.setdefault(digest, i), i)

    valid = [i for i, h in enumerate(hashes) if h]
    if valid:
        close = hamming_matrix([hashes[i] for i in valid]) <= max_distance
        for a, b in zip(*np.nonzero(np.triu(close, k=1))):
            union(valid[a], valid[b])

    labels: dict[int, int] = {}
    return [labels.setdefault(find(i), len(labels)) for i in range(n)]


def exact_counts(sha256: Sequence[str]) -> list[int]:
    """For each item, how many items share its SHA-256 (itself included)."""
    counts: dict[str, int] = {}
    for digest in sha256:
        counts[digest] = counts.get(digest, 0) + 1
    return [counts[d] if d else 1 for d in sha256]


def summary(sha256: Sequence[str], groups: Sequence[int]) -> dict[str, int]:
    """Counts people ask for: exact groups, near groups, distinct images."""
    sha_sizes: dict[str, int] = {}
    for digest in filter(None, sha256):
        sha_sizes[digest] = sha_sizes.get(digest, 0) + 1
    group_sizes: dict[int, int] = {}
    for g in groups:
        group_sizes[g] = group_sizes.get(g, 0) + 1
    return {
        "files": len(sha256),
        "exact_duplicate_groups": sum(size > 1 for size in sha_sizes.values()),
        "files_in_exact_groups": sum(size for size in sha_sizes.values() if size > 1),
        "unique_files": len(sha_sizes),
        "duplicate_groups": sum(size > 1 for size in group_sizes.values()),
        "files_in_duplicate_groups": sum(size for size in group_sizes.values() if size > 1),
        "distinct_images": len(group_sizes),
        "near_dup_distance": NEAR_DUP_DISTANCE,
    }
