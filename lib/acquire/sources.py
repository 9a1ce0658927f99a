"""Where slices come from: the Kaggle download and the layout of a local folder.

Why apart from the 01 runner: these decide what to fetch and which files form
the data set, before any file is copied; the runner (lib.acquire.run_download)
copies and describes them. Scanner-file readers (DICOM, NIfTI) belong here too.

- Kaggle: kagglehub first (public data needs no token), then the kaggle client,
  in a child process with a time limit, after a connection probe, so that an
  offline machine fails in seconds with advice instead of hanging.
- Folders: class folders (yes/ no/ ..., names matched case-insensitively) or an
  images/ + masks/ tree, found at the shallowest depth (Kaggle zips often nest
  the same tree twice); every visible file counts, whatever its extension. A
  link whose target lies outside the folder (or nowhere) is listed as refused,
  never copied: `yes/x.jpg -> /etc/passwd` must not end up in raw/.
"""

from __future__ import annotations

import multiprocessing
import os
import re
import socket
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from lib.common.stage import KAGGLE_INPUT

KAGGLE_DATASET = "navoneel/brain-mri-images-for-brain-tumor-detection"
KAGGLE_HOST = ("www.kaggle.com", 443)
NETWORK_TIMEOUT_S = 10  # connection probe; offline must fail in seconds, not hang
DOWNLOAD_TIMEOUT_S = 600  # the whole download (the navoneel zip is ~15 MB)

# Folder names that mean a class, matched case-insensitively.
DEFAULT_CLASSES = {
    "yes": "tumor", "no": "no_tumor", "tumor": "tumor", "tumour": "tumor",
    "no_tumor": "no_tumor", "notumor": "no_tumor", "no_tumour": "no_tumor", "healthy": "no_tumor",
    "glioma": "tumor", "meningioma": "tumor", "pituitary": "tumor",
}
HIDDEN = re.compile(r"^[._]")


class DownloadError(RuntimeError):
    """A download that cannot happen here; the message says what to do."""


# --- kaggle -------------------------------------------------------------------


def fetch_kaggle(dataset: str = KAGGLE_DATASET, timeout: int = DOWNLOAD_TIMEOUT_S) -> Path:
    """Local folder holding `dataset`: attached to this Kaggle kernel, or downloaded."""
    attached = KAGGLE_INPUT / dataset.split("/")[-1]
    if attached.is_dir():
        return attached
    _probe(KAGGLE_HOST, dataset)
    return _in_subprocess(_download, dataset, timeout)


def _probe(host: tuple[str, int], dataset: str) -> None:
    try:
        socket.create_connection(host, timeout=NETWORK_TIMEOUT_S).close()
    except OSError as err:
        raise DownloadError(
            f"cannot reach {host[0]} ({err}); offline? Download https://www.kaggle.com/datasets/{dataset} "
            "by hand, unzip it, and run: python scripts/01_download.py --source folder --path DIR"
        ) from None


def _download(dataset: str) -> str:
    """kagglehub first (public data needs no token), then the kaggle client."""
    try:
        import kagglehub

        return kagglehub.dataset_download(dataset)
    except Exception as hub_error:  # noqa: BLE001 - report both failures together
        try:
            return _download_with_client(dataset)
        except (Exception, SystemExit) as client_error:
            raise DownloadError(
                f"kagglehub: {str(hub_error).splitlines()[0]}; kaggle client: {str(client_error).splitlines()[0]}. "
                "Create an API token at https://www.kaggle.com/settings/api and export KAGGLE_API_TOKEN "
                "(or KAGGLE_USERNAME and KAGGLE_KEY), then retry"
            ) from None


def _download_with_client(dataset: str) -> str:
    # `import kaggle` authenticates at import time and exits without a token;
    # importing it only here keeps every other code path usable.
    import kaggle

    target = Path.home() / ".cache" / "brainmri" / dataset.replace("/", "__")
    kaggle.api.dataset_download_files(dataset, path=str(target), unzip=True, quiet=False)
    return str(target)


def _in_subprocess(fn: Any, arg: str, timeout: int) -> Path:
    """Run fn(arg) in a child process that is killed after `timeout` seconds."""
    context = multiprocessing.get_context("fork" if os.name == "posix" else "spawn")
    with context.Pool(1) as pool:
        result = pool.apply_async(fn, (arg,))
        try:
            return Path(result.get(timeout=timeout))
        except multiprocessing.TimeoutError:
            raise DownloadError(f"download of {arg} took more than {timeout} s; check the connection and retry") from None


# --- folder -------------------------------------------------------------------


def find_layout(root: Path, classes: dict[str, str]) -> tuple[Path, str]:
    """Locate the part of `root` to import: ('classes' | 'segmentation', folder).

    Kaggle zips often nest the same tree twice (navoneel has yes/, no/ and
    brain_tumor_dataset/yes, .../no); the shallowest match wins.
    """
    if not root.is_dir():
        raise DownloadError(f"{root}: no such folder; give --path a folder of class folders or images/ + masks/")
    for folder in [root, *sorted(p for p in root.rglob("*") if p.is_dir() and not HIDDEN.match(p.name))]:
        if (folder / "images").is_dir():
            return folder, "segmentation"
        if any(child.is_dir() and child.name.lower() in classes for child in folder.iterdir()):
            return folder, "classes"
    raise DownloadError(
        f"{root}: found neither class folders ({', '.join(sorted(classes))}) nor images/; "
        "name the class folders with --classes NAME=tumor,NAME=no_tumor"
    )


def list_folder(root: Path, classes: dict[str, str], label: str) -> list[dict[str, Any]]:
    """One entry per file to import: relative path, label, mask (if any) and `refused`: why the file (or its
    mask) must not be copied, None when it may (see `refusal`)."""
    base, layout = find_layout(root, classes)
    inside = root.resolve()
    entries = []
    if layout == "segmentation":
        masks = {p.stem: p for p in _files(base / "masks")} if (base / "masks").is_dir() else {}
        for path in _files(base / "images"):
            mask = masks.get(path.stem) or masks.get(f"{path.stem}_mask")
            entries.append({"src": path, "rel": path.relative_to(base), "label": label, "mask": mask,
                            "refused": refusal(path, inside) or (refusal(mask, inside) if mask else None)})
    else:
        for folder in sorted(p for p in base.iterdir() if p.is_dir() and p.name.lower() in classes):
            for path in _files(folder):
                entries.append({"src": path, "rel": path.relative_to(base), "label": classes[folder.name.lower()],
                                "refused": refusal(path, inside)})
    if not entries:
        raise DownloadError(f"{base}: the {layout} folders hold no files; nothing to import")
    return entries


def _files(folder: Path) -> list[Path]:
    # Every visible file counts, whatever its extension: the content decides later. Links to nothing count
    # too (refused, so the user hears of them); folders, also one named x.jpg, and links to folders do not.
    return sorted(p for p in folder.rglob("*") if (p.is_file() or (p.is_symlink() and not p.is_dir()))
                  and not HIDDEN.match(p.name))


def refusal(path: Path, root: Path) -> str | None:
    """Why `path` must not be imported from the (resolved) folder `root`, in one line; None when it may.

    Why: 01 copies what a link points to, so `yes/x.jpg -> /etc/passwd` (or a class folder linked to
    another disk) would put a file from outside the folder the user named into raw/, and on into
    reports and bundles. A link that stays inside the folder is just a second name and is fine."""
    try:
        target = path.resolve(strict=True)
    except (OSError, RuntimeError):  # missing target, or a loop of links
        return f"{path}: a link to nothing (its target is missing or loops); remove the link or restore its target"
    if not target.is_relative_to(root):
        return (f"{path}: a link to {target}, outside the import folder {root}; "
                "copy the file into the folder instead of linking to it")
    return None


def parse_classes(text: str | None) -> dict[str, str]:
    """'yes=tumor,no=no_tumor' -> mapping; None -> the defaults."""
    if not text:
        return dict(DEFAULT_CLASSES)
    mapping = {}
    for pair in text.split(","):
        name, _, label = pair.partition("=")
        if label not in ("tumor", "no_tumor", "unknown"):
            raise SystemExit(f"error: --classes {pair!r}: label must be tumor, no_tumor or unknown")
        mapping[name.strip().lower()] = label
    return mapping


def make_ids(rel_paths: Iterable[Path]) -> list[str]:
    """File-system-safe unique ids from relative paths ('no/no 9.png' -> 'no_no_9')."""
    ids, seen = [], set()
    for rel in rel_paths:
        parts = [p for p in rel.with_suffix("").parts if p.lower() != "images"]
        base = re.sub(r"[^A-Za-z0-9]+", "_", "_".join(parts)).strip("_") or "img"
        candidate, k = base, 2
        while candidate in seen:
            candidate, k = f"{base}-{k}", k + 1
        seen.add(candidate)
        ids.append(candidate)
    return ids
