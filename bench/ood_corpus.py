"""The images that measure lib.deploy.ood: real brain MRI slices, and pictures that are not brain MRI.

Why these: the check must accept real slices of every source the toolkit meets
(navoneel, figshare, lgg, phantoms, scanner files) and refuse what a user might
upload by mistake: photos, icons, screenshots and plots. Nothing here is
committed; every image is read from ../shared/data or from files that pinned
packages ship (scikit-image, Gradio, matplotlib, scikit-learn, pydicom,
nibabel...), or drawn here (screenshots, gradients).

MRI slices split in two: `tune` (the check's limits and reference come from
these only: `bench/bench_ood.py --choose`) and `held` (scored only):
navoneel by file index (even / odd), figshare by index block, lgg by patient,
phantoms by seed; scanner files are held out whole. Non-MRI images are never
used to choose anything; `skimage` photos were looked at while the checks were
designed, the others (`packaged`, `screens`, `gradients`) were not.
"""

from __future__ import annotations

import io
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from lib.common.image_errors import ImageReadError
from lib.common.io import read_image, to_grey, window_to_uint8

Image = tuple[str, np.ndarray]  # (name, decoded pixels: uint8 grey or RGB)

SKIMAGE_PHOTOS = ("astronaut", "binary_blobs", "brick", "camera", "cat", "cell", "checkerboard", "chelsea", "clock",
                  "coffee", "coins", "colorwheel", "grass", "gravel", "horse", "hubble_deep_field",
                  "immunohistochemistry", "logo", "microaneurysms", "moon", "page", "retina", "rocket", "text")
# Packages whose shipped pictures (photos, logos, icons, plot baselines) serve as everyday non-MRI uploads.
PACKAGES = ("gradio", "matplotlib", "sklearn", "networkx", "sympy", "playwright", "scipy")
PICTURE_SUFFIXES = {".png", ".jpg", ".jpeg", ".gif", ".bmp", ".webp"}


# --- brain MRI -------------------------------------------------------------------------------------------


def _read(paths: list[Path]) -> list[Image]:
    out = []
    for path in paths:
        try:
            out.append((f"{path.parent.name}/{path.name}", read_image(path).pixels))
        except ImageReadError:
            continue  # the reader's own refusals are 01's business, not this check's
    return out


def navoneel(shared: Path, part: str) -> list[Image]:
    files = sorted(p for p in (shared / "navoneel").glob("*/*") if p.is_file())
    return _read(files[part == "held"::2])


def figshare(shared: Path, part: str) -> list[Image]:
    """Tune on the first index block, score on the others (tumour types differ by block)."""
    import pandas as pd

    index = pd.read_csv(shared / "figshare_seg" / "index.csv")
    first = index["index_block"] == index["index_block"].iloc[0]
    files = index.loc[first if part == "tune" else ~first, "file"]
    return _read([shared / "figshare_seg" / "images" / f for f in files])


def lgg(shared: Path, part: str) -> list[Image]:
    """Tune on the first half of the patients, score on the rest."""
    import pandas as pd

    index = pd.read_csv(shared / "lgg_seg" / "index.csv")
    patients = sorted(index["patient"].unique())
    chosen = set(patients[: len(patients) // 2]) if part == "tune" else set(patients[len(patients) // 2:])
    return _read([shared / "lgg_seg" / "images" / f for f in index.loc[index["patient"].isin(chosen), "file"]])


def phantoms(part: str, n: int = 60) -> list[Image]:
    from lib.acquire import phantom

    rng = np.random.default_rng(1 if part == "tune" else 2)
    return [(f"phantom_{part}_{i}", phantom.make_slice(rng, i % 2).image) for i in range(n)]


def scanner_files() -> list[Image]:
    """pydicom's MR_small in every encoding this install decodes, nibabel's anatomical.nii (its slices through
    the brain: the middle half) and matplotlib's s1045.ima (a sagittal head MRI, raw 16-bit)."""
    import matplotlib.cbook
    import nibabel
    from pydicom.data import get_testdata_files

    from lib.common import scanner_files as reader

    out = _read([Path(p) for p in sorted(get_testdata_files("MR_small*.dcm"))])
    volume = reader.read_volume(Path(nibabel.__file__).parent / "tests" / "data" / "anatomical.nii")
    n = len(volume.slices)
    out += [(f"anatomical.nii/{k}", volume.slices[k]) for k in range(n // 4, n - n // 4)]
    with matplotlib.cbook.get_sample_data("s1045.ima.gz") as f:
        raw = np.frombuffer(f.read(), np.uint16).reshape(256, 256)
    return out + [("s1045.ima", window_to_uint8(raw.astype(np.float64)))]


def mri(shared: Path, part: str) -> dict[str, list[Image]]:
    """{source: images} of one part ('tune' or 'held'); sources whose folder is missing are left out."""
    sets = {"phantom": phantoms(part)}
    for name, folder, load in (("navoneel", "navoneel", navoneel), ("figshare", "figshare_seg", figshare),
                               ("lgg", "lgg_seg", lgg)):
        if (shared / folder).is_dir():
            sets[name] = load(shared, part)
    if part == "held":
        sets["scanner"] = scanner_files()
    return sets


# --- not brain MRI -----------------------------------------------------------------------------------------


def _with_grey(images: list[Image]) -> list[Image]:
    """Each colour image twice: as it is and converted to grey (the hard case: the colour check cannot help)."""
    return images + [(f"{name} (grey)", to_grey(px)) for name, px in images if px.ndim == 3]


def skimage_photos() -> list[Image]:
    import skimage.data

    out = []
    for name in SKIMAGE_PHOTOS:
        image = np.asarray(getattr(skimage.data, name)())
        if image.dtype == bool:
            image = image.astype(np.uint8) * 255
        if image.ndim == 3 and image.shape[2] == 4:
            image = image[..., :3]
        out.append((name, image.astype(np.uint8)))
    return _with_grey(out)


def packaged_pictures() -> list[Image]:
    """Every picture the listed installed packages ship that the reader accepts (icons under 16 px it refuses)."""
    import importlib

    out = []
    for package in PACKAGES:
        try:
            root = Path(importlib.import_module(package).__file__).parent
        except ImportError:
            continue
        files = sorted(p for p in root.rglob("*") if p.suffix.lower() in PICTURE_SUFFIXES)
        out += [(f"{package}/{name}", px) for name, px in _read(files)]
    return _with_grey(out)


def screenshots(n_each: int = 3, seed: int = 0) -> list[Image]:
    """Screens a user might grab instead of a slice: plots, a dark terminal, a document, a dark code editor,
    a dashboard of heat maps, drawn with matplotlib at screen-like sizes."""
    rng = np.random.default_rng(seed)
    out = []
    for kind in ("plot", "terminal", "document", "editor", "heatmaps"):
        for k in range(n_each):
            out.append((f"screen_{kind}_{k}", _screen(kind, rng)))
    return _with_grey(out)


def _screen(kind: str, rng: np.random.Generator) -> np.ndarray:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    dark = kind in ("terminal", "editor")
    fig = plt.figure(figsize=(rng.uniform(6, 10), rng.uniform(4, 7)), dpi=80,
                     facecolor="#1e1e1e" if dark else "white")
    if kind == "plot":
        ax = fig.add_subplot()
        for _ in range(3):
            ax.plot(np.cumsum(rng.normal(size=200)))
        ax.set_title("validation loss")
    elif kind == "heatmaps":
        for i in range(4):
            fig.add_subplot(2, 2, i + 1).imshow(rng.normal(size=(20, 20)).cumsum(0), cmap="viridis")
    else:
        words = ["epoch", "loss", "0.231", "import", "numpy", "def", "return", "model", "fit", "slice", "tumour"]
        colour = {"terminal": "#33ff66", "editor": "#d4d4d4", "document": "black"}[kind]
        for row in range(24):
            line = " ".join(rng.choice(words, size=rng.integers(2, 9)))
            fig.text(0.03 + 0.03 * rng.integers(0, 4), 0.95 - row * 0.039, line, color=colour,
                     family="monospace", fontsize=10)
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", facecolor=fig.get_facecolor())
    plt.close(fig)
    buffer.seek(0)
    from PIL import Image as PILImage

    return np.asarray(PILImage.open(buffer).convert("RGB"))


def gradients(n: int = 8, seed: int = 0) -> list[Image]:
    """Colourful gradients, linear and radial: the picture that once got 'tumour, 0.82'."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:256, 0:320] / 256.0
    out = []
    for k in range(n):
        if k % 2:
            field = np.hypot(x - rng.uniform(0, 1.2), y - rng.uniform(0, 1))
        else:
            angle = rng.uniform(0, np.pi)
            field = x * np.cos(angle) + y * np.sin(angle)
        channels = [np.sin(field * rng.uniform(2, 6) + rng.uniform(0, 6)) for _ in range(3)]
        out.append((f"gradient_{k}", (127.5 * (1 + np.stack(channels, axis=2))).astype(np.uint8)))
    return _with_grey(out)


def not_mri() -> dict[str, list[Image]]:
    """{family: images} of pictures that are not brain MRI slices."""
    return {"skimage": skimage_photos(), "packaged": packaged_pictures(), "screens": screenshots(),
            "gradients": gradients()}


def all_images(shared: Path) -> Iterator[tuple[str, str, str, np.ndarray]]:
    """(part, source, name, pixels) for every image: parts 'tune', 'held' (MRI) and 'not_mri'."""
    for part in ("tune", "held"):
        for source, images in mri(shared, part).items():
            for name, pixels in images:
                yield part, source, name, pixels
    for family, images in not_mri().items():
        for name, pixels in images:
            yield "not_mri", family, name, pixels
