"""Image I/O that trusts file contents, not file names, and writes atomically.

Real MRI collections lie: `no/no 96.jpg` is an RGBA PNG, some files are palette
images, scanners export 16-bit TIFFs, phones add EXIF rotation. `read_image`
sniffs the real format, normalises every mode to 8-bit grey or RGB, and turns
every failure into one `ImageReadError` line that names the file and says what
to do. Writers go through a temporary file and `os.replace`, so a killed run
never leaves half a PNG behind.
"""

from __future__ import annotations

import json
import os
import re
import tempfile
import warnings
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

import cv2
import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from lib.common.image_errors import WINDOW_PERCENTILES, ImageReadError, first_line, window  # noqa: F401 - part of this API

# Largest image accepted, in pixels. The biggest real slice in the navoneel set
# is 1920x1080 (2 MP); 40 MP leaves room for scanner exports and still refuses
# decompression bombs before they are decoded.
MAX_PIXELS = 40_000_000
# Smallest side accepted: below this there is no anatomy left to read.
MIN_SIDE = 16

# The decompression-bomb guard is ours (MAX_PIXELS, checked before decoding).
Image.MAX_IMAGE_PIXELS = None


@dataclass
class LoadedImage:
    """Decoded pixels plus what the file really was."""

    pixels: np.ndarray  # uint8, HxW (grey) or HxWx3 (RGB)
    format: str  # real format from the content: JPEG, PNG, TIFF, BMP, WEBP ...
    mode: str  # mode stored in the file: L, RGB, RGBA, P, I;16 ...

    @property
    def height(self) -> int:
        return int(self.pixels.shape[0])

    @property
    def width(self) -> int:
        return int(self.pixels.shape[1])


def read_image(path: str | os.PathLike) -> LoadedImage:
    """Decode any common image file into 8-bit grey or RGB pixels.

    A single-slice DICOM or NIfTI file reads like any image (lib.common.scanner_files: rescaled, windowed).
    Raises ImageReadError for empty, unreadable, truncated, tiny or huge files, and for multi-slice volumes.
    """
    path = Path(path)
    if path.is_dir():  # e.g. a folder named x.jpg: "no such file" would send the user looking for a missing one
        raise ImageReadError(path, "a folder, not a file", "give one of the image files inside it")
    if not path.is_file():
        raise ImageReadError(path, "no such file", "check the path")
    if path.stat().st_size == 0:
        raise ImageReadError(path, "empty file (0 bytes)", "re-download or remove it")
    from lib.common import scanner_files

    if scanner_files.kind(path):
        return _one_slice(path, scanner_files.read_volume(path))
    try:
        with Image.open(path) as im:
            _check_size(path, im.size)
            fmt, mode = im.format or "unknown", im.mode
            with warnings.catch_warnings():
                warnings.simplefilter("error", Image.DecompressionBombWarning)
                im = ImageOps.exif_transpose(im)
                pixels = _to_uint8(im)
    except UnidentifiedImageError:
        raise ImageReadError(
            path, "not a readable image (unknown format)", "remove it or convert it to PNG/JPEG"
        ) from None
    except ImageReadError:
        raise
    except (OSError, SyntaxError, ValueError) as err:
        raise ImageReadError(
            path, f"corrupt or truncated image ({first_line(err)})", "re-download or remove it"
        ) from None
    return LoadedImage(pixels=pixels, format=fmt, mode=mode)


def _one_slice(path: Path, volume: Any) -> LoadedImage:
    """A DICOM or NIfTI file that holds one slice, as an image; a volume is refused here, since callers that
    take volumes (01, predict.py, the demo) read every slice with lib.common.scanner_files.read_volume."""
    if len(volume.slices) != 1:
        raise ImageReadError(path, f"a {volume.format} volume of {len(volume.slices)} slices, not one image",
                             "import or predict it with 01 or predict.py, which read every slice")
    pixels = volume.slices[0]
    _check_size(path, (pixels.shape[1], pixels.shape[0]))
    return LoadedImage(pixels=pixels, format=volume.format, mode="L")



def _check_size(path: Path, size: tuple[int, int]) -> None:
    width, height = size
    if width * height > MAX_PIXELS:
        raise ImageReadError(
            path,
            f"image too large ({width}x{height} = {width * height / 1e6:.0f} MP > {MAX_PIXELS / 1e6:.0f} MP)",
            "downscale it before import",
        )
    if min(width, height) < MIN_SIDE:
        raise ImageReadError(
            path, f"image too small ({width}x{height} px, need at least {MIN_SIDE} px a side)", "remove it"
        )


def _to_uint8(im: Image.Image) -> np.ndarray:
    """Normalise every Pillow mode to uint8 grey (HxW) or RGB (HxWx3)."""
    if im.mode == "P":
        im = im.convert("RGBA" if "transparency" in im.info else "RGB")
    if im.mode in ("RGBA", "LA", "PA"):
        # Transparent background means "no signal": composite on black, as MRI.
        alpha = np.asarray(im.getchannel("A"), dtype=np.float32)[..., None] / 255.0
        colour = np.asarray(im.convert("RGB" if im.mode != "LA" else "L"), dtype=np.float32)
        if colour.ndim == 2:
            colour = colour[..., None]
        out = np.rint(colour * alpha).astype(np.uint8)
        return out[..., 0] if out.shape[2] == 1 else out
    if im.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        return window_to_uint8(np.asarray(im, dtype=np.float32))
    if im.mode == "1":
        return np.asarray(im.convert("L"), dtype=np.uint8)
    if im.mode == "L":
        return np.asarray(im, dtype=np.uint8)
    return np.asarray(im.convert("RGB"), dtype=np.uint8)


def window_to_uint8(values: np.ndarray) -> np.ndarray:
    """Map a high-bit-depth image to 0..255 between robust percentiles.

    Why percentiles: 16-bit MRI exports use a few hundred of 65536 levels and
    often carry a handful of extreme pixels; min-max scaling would leave the
    anatomy almost black.
    """
    lo, hi = np.percentile(values, WINDOW_PERCENTILES)
    return window(values, lo, hi)


def to_grey(pixels: np.ndarray) -> np.ndarray:
    """8-bit grey view of a grey or RGB array (MRI is grey; colour is packaging)."""
    if pixels.ndim == 2:
        return pixels
    return cv2.cvtColor(pixels, cv2.COLOR_RGB2GRAY)


# --- atomic writers ---------------------------------------------------------


# Name of the temporary file beside `NAME`: `.NAME.` + mkstemp's 8 random characters + `.tmp`. A killed
# run can leave one behind; `remove_stale_temps` (run as every stage starts) matches exactly this pattern.
TEMP_SUFFIX = ".tmp"
TEMP_NAME = re.compile(r"\..+\.[a-z0-9_]{8}" + re.escape(TEMP_SUFFIX))


@contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside `path`; rename it over `path` on success.

    A crash inside the block leaves `path` untouched (old content or absent).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=TEMP_SUFFIX)
    os.fchmod(fd, _new_file_mode())  # mkstemp's 0600 would make every output private
    os.close(fd)
    try:
        yield Path(tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def _new_file_mode() -> int:
    """The mode `open` gives a new file, 0666 less the umask (0644 by default), so outputs stay readable by
    others (a bundle served by another user) unless the umask says otherwise."""
    umask = os.umask(0o077)  # reading the umask means setting it; 0o077 meanwhile errs on the private side
    os.umask(umask)
    return 0o666 & ~umask


def remove_stale_temps(folder: str | os.PathLike) -> list[Path]:
    """Delete the temporary files a killed writer left anywhere under `folder`; returns them.

    Only names of the `atomic_path` pattern go: a finished write never leaves one, so any found when a run
    starts is debris. Other files, hidden or not, stay."""
    stale = [p for p in Path(folder).rglob(f"*{TEMP_SUFFIX}") if p.is_file() and TEMP_NAME.fullmatch(p.name)]
    for path in stale:
        path.unlink(missing_ok=True)
    return stale


def write_bytes_atomic(path: str | os.PathLike, data: bytes) -> None:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def write_text_atomic(path: str | os.PathLike, text: str) -> None:
    write_bytes_atomic(path, text.encode("utf-8"))


def write_json_atomic(path: str | os.PathLike, obj: object) -> None:
    """`obj` as standard JSON (see `as_json`), so that jq, browsers and other languages read every file we write."""
    text = json.dumps(as_json(obj), indent=2, sort_keys=True, allow_nan=False)
    write_text_atomic(path, text + "\n")


def as_json(obj: object, default: Callable[[object], object] | None = None) -> Any:
    """`obj` as it reads back from our JSON files: numpy values plain, paths strings, NaN and +-inf None.

    Why: Python's json writes NaN and Infinity, which standard JSON has no words for (a mean over
    no slices, an AUC on one class). Comparing a run's options with the saved ones (checkpoints,
    stage signatures) goes through this too, so both sides read alike. `default` turns other
    objects into something JSON holds (e.g. `str`)."""
    text = json.dumps(obj, default=default or _json_default)
    return json.loads(text, parse_constant=lambda _: None)


def _json_default(value: object) -> object:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def write_png(path: str | os.PathLike, pixels: np.ndarray) -> None:
    """Write a uint8 grey or RGB array as PNG, atomically."""
    array = pixels if pixels.ndim == 2 else cv2.cvtColor(pixels, cv2.COLOR_RGB2BGR)
    ok, buf = cv2.imencode(".png", array)
    if not ok:
        raise OSError(f"{path}: PNG encoding failed")
    write_bytes_atomic(path, buf.tobytes())


def write_jpeg(path: str | os.PathLike, pixels: np.ndarray, quality: int = 90) -> None:
    """Write a uint8 grey or RGB array as JPEG, atomically."""
    array = pixels if pixels.ndim == 2 else cv2.cvtColor(pixels, cv2.COLOR_RGB2BGR)
    ok, buf = cv2.imencode(".jpg", array, [cv2.IMWRITE_JPEG_QUALITY, int(quality)])
    if not ok:
        raise OSError(f"{path}: JPEG encoding failed")
    write_bytes_atomic(path, buf.tobytes())


def read_mask(path: str | os.PathLike) -> np.ndarray:
    """Read a mask file as a boolean array (any non-zero pixel is inside)."""
    return to_grey(read_image(path).pixels) > 0
