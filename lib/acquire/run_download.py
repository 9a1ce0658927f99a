"""Stage 01: bring images into a stage folder and describe each one.

Three sources, one result (`raw/` files plus a manifest row per file):
- kaggle:  the navoneel data set through kagglehub (or the kaggle client);
           fails fast with advice when offline or without credentials.
- folder:  a local tree of class folders (yes/ no/ ...) or images/ + masks/.
- phantom: synthetic slices with true tumour and brain masks (lib.acquire.phantom),
           the offline default, so every stage can run and be scored.

Files are copied byte for byte (originals are never touched), then every file
is decoded by content to fill in format, mode, size, hashes and errors.
"""

from __future__ import annotations

import multiprocessing
import os
import re
import shutil
import socket
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np

from lib.acquire import phantom
from lib.common import dedup, manifest
from lib.common.io import ImageReadError, read_image, to_grey, write_json_atomic
from lib.common.stage import KAGGLE_INPUT, Progress, error_row, imap, write_lineage

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
# Navoneel's class balance: 155 tumour / 98 no tumour.
NAVONEEL_TUMOR_FRACTION = 155 / 253
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


def list_folder(root: Path, classes: dict[str, str], label: str) -> list[dict[str, str]]:
    """One entry per file to import: relative path, label and mask (if any)."""
    base, layout = find_layout(root, classes)
    entries = []
    if layout == "segmentation":
        masks = {p.stem: p for p in _files(base / "masks")} if (base / "masks").is_dir() else {}
        for path in _files(base / "images"):
            mask = masks.get(path.stem) or masks.get(f"{path.stem}_mask")
            entries.append({"src": path, "rel": path.relative_to(base), "label": label, "mask": mask})
    else:
        for folder in sorted(p for p in base.iterdir() if p.is_dir() and p.name.lower() in classes):
            for path in _files(folder):
                entries.append({"src": path, "rel": path.relative_to(base), "label": classes[folder.name.lower()]})
    if not entries:
        raise DownloadError(f"{base}: the {layout} folders hold no files; nothing to import")
    return entries


def _files(folder: Path) -> list[Path]:
    # Every visible file counts, whatever its extension: the content decides later.
    return sorted(p for p in folder.rglob("*") if p.is_file() and not HIDDEN.match(p.name))


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


def import_folder(
    root: Path, out_dir: Path, progress: Progress, classes: dict[str, str], label: str = "tumor", workers: int = 1
) -> list[dict[str, Any]]:
    """Copy a local tree into out_dir/raw and describe every file."""
    entries = list_folder(root, classes, label)
    jobs = []
    for item_id, entry in zip(make_ids(e["rel"] for e in entries), entries):
        dest = out_dir / "raw" / entry["rel"]
        mask_dest = out_dir / "raw" / "masks" / entry["mask"].name if entry.get("mask") else None
        row = {
            "id": item_id, "source_path": str(dest.relative_to(out_dir)), "origin": str(entry["src"]),
            "label": entry["label"], "mask_path": str(mask_dest.relative_to(out_dir)) if mask_dest else "",
            "brain_mask_path": "",
        }
        if progress.finished(item_id, [dest] + ([mask_dest] if mask_dest else [])) is None:
            _copy(entry["src"], dest)
            if mask_dest:
                _copy(entry["mask"], mask_dest)
        jobs.append((row, str(out_dir)))
    return _describe_all(jobs, progress, workers)


def _copy(src: Path, dest: Path) -> None:
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(f".{dest.name}.tmp")
    shutil.copyfile(src, tmp)
    os.replace(tmp, dest)


# --- phantom ------------------------------------------------------------------


def generate_phantoms(
    out_dir: Path, progress: Progress, n: int, seed: int = 0,
    tumor_fraction: float = NAVONEEL_TUMOR_FRACTION, workers: int = 1,
) -> list[dict[str, Any]]:
    """Write n phantom slices (like navoneel: yes/ Y<i>, no/ no <i>) with true masks."""
    rng = np.random.default_rng(seed)
    has_tumor = rng.permutation(np.arange(n) < round(n * tumor_fraction))
    jobs = [(seed, i, bool(t), str(out_dir)) for i, t in enumerate(has_tumor)]
    todo = [job for job in jobs if progress.finished(_phantom_id(job[1], job[2])) is None]
    for row in imap(_phantom_one, todo, workers, desc="phantoms"):
        progress.add(row)
    return [progress.rows[_phantom_id(i, t)] for _, i, t, _ in jobs]


def _phantom_id(index: int, has_tumor: bool) -> str:
    return f"yes_Y{index}" if has_tumor else f"no_no_{index}"


def _phantom_one(job: tuple[int, int, bool, str]) -> dict[str, Any]:
    seed, index, has_tumor, out = job
    rng = np.random.default_rng([seed, index])
    ph = phantom.make_slice(rng, phantom.draw_n_tumors(rng, has_tumor))
    item_id = _phantom_id(index, has_tumor)
    name = f"yes/Y{index}" if has_tumor else f"no/no {index}"
    paths = phantom.write_slice(ph, Path(out), f"raw/{name}{ph.info['extension']}", item_id)
    row = {
        "id": item_id, "source_path": paths["image"], "origin": f"phantom:seed={seed}:index={index}",
        "label": "tumor" if has_tumor else "no_tumor",
        "mask_path": paths["tumor_mask"], "brain_mask_path": paths["brain_mask"],
        "phantom_sequence": ph.info.get("sequence", ""),
        "phantom_n_tumors": ph.info.get("n_tumors", 0),
        "phantom_tumor_fraction": round(float(ph.info.get("tumor_fraction", 0.0)), 4),
        "phantom_artefacts": " ".join(ph.info.get("artefacts", [])),
    }
    return describe(row, Path(out))


# --- description and duplicates -------------------------------------------------


def describe(row: dict[str, Any], out_dir: Path) -> dict[str, Any]:
    """Add what the file really is: hashes, format, mode, size; or the error."""
    path = out_dir / row["source_path"]
    row = {**row, "sha256": "", "phash": "", "format": "", "mode": "", "width": "", "height": "",
           "file_size": path.stat().st_size if path.exists() else "", "status": "ok", "error": ""}
    try:
        row["sha256"] = dedup.sha256_file(path)
        image = read_image(path)
    except (ImageReadError, OSError) as err:
        return error_row(row, err)
    row.update(format=image.format, mode=image.mode, width=image.width, height=image.height,
               phash=dedup.phash(to_grey(image.pixels)))
    return row


def _describe_job(job: tuple[dict[str, Any], str]) -> dict[str, Any]:
    return describe(job[0], Path(job[1]))


def _describe_all(jobs: list[tuple[dict[str, Any], str]], progress: Progress, workers: int) -> list[dict[str, Any]]:
    todo = [(row, out) for row, out in jobs if progress.finished(row["id"], [Path(out) / row["source_path"]]) is None]
    for row in imap(_describe_job, todo, workers, desc="describe"):
        progress.add(row)
    return [progress.rows[row["id"]] for row, _ in jobs]


def add_duplicate_groups(rows: list[dict[str, Any]]) -> dict[str, int]:
    """Fill dup_group / dup_exact in place; return the summary counts."""
    sha = [str(r.get("sha256", "")) for r in rows]
    groups = dedup.group_duplicates(sha, [str(r.get("phash", "")) for r in rows])
    for row, group, exact in zip(rows, groups, dedup.exact_counts(sha)):
        row["dup_group"], row["dup_exact"] = f"g{group:04d}", exact
    return dedup.summary(sha, groups)


# --- the stage ------------------------------------------------------------------


def run(args: Any) -> dict[str, Any]:
    """Stage 01 from parsed arguments (see scripts/01_download.py)."""
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    options = {k: v for k, v in vars(args).items() if k not in ("out", "force", "workers")}
    progress = Progress(out, args.force, {"stage": "01_download", **options})
    if args.source == "phantom":
        rows = generate_phantoms(out, progress, args.n, args.seed, args.tumor_fraction, args.workers)
        origin = f"phantom seed={args.seed} n={args.n}"
    else:
        if args.source == "kaggle":
            root, origin = fetch_kaggle(args.dataset), f"kaggle:{args.dataset}"
        elif args.path is None:
            raise DownloadError("--source folder needs --path DIR")
        else:
            root, origin = args.path, str(args.path)
        classes = parse_classes(args.classes)
        rows = import_folder(Path(root), out, progress, classes, args.label, args.workers)
    duplicates = add_duplicate_groups(rows)
    df = manifest.write_rows(rows, out, manifest.DOWNLOAD_COLUMNS)
    metrics = {"source": origin, **_counts(df), "duplicates": duplicates}
    write_json_atomic(out / "metrics.json", metrics)
    write_lineage(out, "01_download", args, {})
    _print_summary(out, metrics)
    return metrics


def _counts(df: Any) -> dict[str, Any]:
    ok = df[df["status"] == "ok"]
    return {
        "files": len(df),
        "ok": len(ok),
        "errors": int((df["status"] == "error").sum()),
        "labels": ok["label"].value_counts().to_dict(),
        "formats": ok["format"].value_counts().to_dict(),
        "modes": ok["mode"].value_counts().to_dict(),
        "with_mask": int((ok["mask_path"] != "").sum()),
        "error_list": manifest.error_list(df),
    }


def _print_summary(out: Path, m: dict[str, Any]) -> None:
    d = m["duplicates"]
    print(f"01_download: {m['ok']}/{m['files']} images ok ({m['errors']} errors) from {m['source']} -> {out}")
    print(f"  labels {m['labels']}; exact-duplicate groups {d['exact_duplicate_groups']}; "
          f"near+exact groups {d['duplicate_groups']}; distinct images {d['distinct_images']}")
    for item_id, reason in m["error_list"].items():
        print(f"  error {item_id}: {reason}")
