"""A bad-input corpus: what a folder from the wild holds, written by tests (never committed as binaries).

Why a module: tests/test_bad_inputs.py runs it through 01, 02, predict.py and the demo, and any other test
can reuse it. `build(folder)` lays it out as 01 imports it (class folders yes/ and no/), writes the target of
the link out beside the folder (`outside/`, so that following the link would import a good image), and
returns {case: path}. REFUSED names the cases that no reader may accept.
"""

from __future__ import annotations

import gzip
import shutil
import struct
import zlib
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

from lib.common.io import MAX_PIXELS, write_png
from tests.scanner_data import phantom_slices, write_dicom, write_nifti

DICOM_FILES = ("MR_small.dcm", "MR_small_RLE.dcm", "MR_small_bigendian.dcm", "MR_small_expb.dcm",
               "MR_small_implicit.dcm", "MR_small_jp2klossless.dcm", "MR_small_jpeg_ls_lossless.dcm",
               "MR_small_padded.dcm")
HUGE_SIDE = 100_000  # the claimed side of the header-only PNG: 10 gigapixels, never to be decoded
OUTSIDE = "outside"  # beside the corpus folder: what the link out points to

# Cases no reader may accept, with words their one-line reason holds (the link out: only 01 refuses it, since
# only 01 copies what it reads; predict.py and the demo read what the user points them at).
REFUSED = {
    "empty": "empty file", "truncated_jpeg": "corrupt or truncated", "truncated_png": "corrupt or truncated",
    "jpeg_header_only": "not a readable image", "text": "not a readable image", "html": "not a readable image",
    "tiny": "too small", "sliver": "too small", "huge_header": "too large", "huge_black": "too large",
    "dicom_truncated": "truncated DICOM", "png_named_dcm": "DICOM without pixel data",
    "nifti_truncated": "unreadable NIfTI", "text_named_nii": "unreadable NIfTI",
    "link_out": "outside the import folder",
}
# Readable scanner files and their slice counts (anatomical.nii is nibabel's own 33x41x25 test volume).
SLICES = {**{f"dicom_{kind}": 1 for kind in ("plain", "RLE", "bigendian", "expb", "implicit", "jp2klossless",
                                               "jpeg_ls_lossless", "padded", "no_suffix")},
          "dicom_multiframe": 3, "nifti_3d": 4, "nifti_4d": 3, "nifti_anatomical": 25}


def build(folder: Path) -> dict[str, Path]:
    """Write the corpus into `folder` (yes/, no/) and its link target beside it; {case: path}."""
    good = _grey(0)
    cases: dict[str, Path] = {}
    for name, (rel, write) in {**_image_cases(good), **_odd_cases(good), **_scanner_cases()}.items():
        path = folder / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        write(path)
        cases[name] = path
    cases.update(_file_system_cases(folder, good))
    return cases


def files(cases: dict[str, Path]) -> dict[str, Path]:
    """The cases that are files (links included): a folder named x.jpg is an input to ignore, not a file."""
    return {name: path for name, path in cases.items() if path.is_symlink() or path.is_file()}


# --- the cases ---------------------------------------------------------------------------------------


Writer = Callable[[Path], object]


def _image_cases(good: np.ndarray) -> dict[str, tuple[str, Writer]]:
    """Good and odd encodings of a phantom slice, and pictures that are no MRI."""
    grey16 = good.astype(np.uint16) * 257
    return {
        "good_png": ("yes/good.png", lambda p: write_png(p, good)),
        "good_jpeg": ("yes/good.jpg", lambda p: _pil(good).save(p, quality=90)),
        "bmp": ("no/slice.bmp", lambda p: _pil(_grey(1)).save(p, format="BMP")),
        "png_named_jpg": ("no/lies.jpg", lambda p: _pil(_grey(2)).save(p, format="PNG")),
        "grey16_png": ("yes/grey16.png", lambda p: Image.fromarray(grey16).save(p)),
        "grey16_tiff": ("yes/grey16.tif", lambda p: Image.fromarray(grey16).save(p)),
        "float_tiff": ("yes/float.tif", lambda p: Image.fromarray(good.astype(np.float32) / 7).save(p)),
        "rgba": ("yes/rgba.png", lambda p: _pil(good).convert("RGBA").save(p)),
        "grey_alpha": ("no/grey_alpha.png", lambda p: _pil(good).convert("LA").save(p)),
        "palette": ("no/palette.png", lambda p: _pil(good).convert("P").save(p)),
        "palette_transparent": ("no/palette_t.png", lambda p: _pil(good).convert("P").save(p, transparency=0)),
        "bilevel": ("no/bilevel.png", lambda p: _pil(good).convert("1").save(p)),
        "cmyk_jpeg": ("yes/cmyk.jpg", lambda p: _pil(good).convert("CMYK").save(p, quality=90)),
        "progressive_jpeg": ("yes/progressive.jpg", lambda p: _pil(good).save(p, quality=90, progressive=True)),
        "gif": ("no/animated.gif", lambda p: _pages(p, good, 3)),
        "multipage_tiff": ("yes/pages.tif", lambda p: _pages(p, good, 3)),
        "webp": ("yes/slice.webp", lambda p: _pil(good).save(p, quality=90)),
        "exif_rotated": ("yes/exif_rotated.jpg", lambda p: _exif_rotated(p, good)),
        "black": ("no/black.png", lambda p: write_png(p, np.zeros((256, 256), np.uint8))),
        "white": ("no/white.png", lambda p: write_png(p, np.full((256, 256), 255, np.uint8))),
        "noise": ("no/noise.png", lambda p: write_png(p, _noise(256))),
        "photo_astronaut": ("no/astronaut.jpg", lambda p: _pil(_photo("astronaut")).save(p, quality=90)),
        "photo_camera": ("no/camera.png", lambda p: write_png(p, _photo("camera"))),
        "wide": ("no/wide.png", lambda p: write_png(p, cv2.resize(good, (1600, 40)))),
    }


def _odd_cases(good: np.ndarray) -> dict[str, tuple[str, Writer]]:
    """Broken files, sizes the readers refuse, and names that trip up shells and encodings."""
    png, jpeg = _encoded(good, ".png"), _encoded(good, ".jpg")
    return {
        "empty": ("no/empty.jpg", lambda p: p.write_bytes(b"")),
        "truncated_jpeg": ("yes/truncated.jpg", lambda p: p.write_bytes(_half(jpeg))),
        "truncated_png": ("yes/truncated.png", lambda p: p.write_bytes(_half(png))),
        "jpeg_header_only": ("yes/header_only.jpg", lambda p: p.write_bytes(jpeg[:20])),
        "text": ("no/notes.jpg", lambda p: p.write_text("patient list: not an image\n")),
        "html": ("no/download.png", lambda p: p.write_text(_HTML)),
        "tiny": ("no/tiny.png", lambda p: write_png(p, good[:8, :8])),
        "sliver": ("no/sliver.png", lambda p: write_png(p, cv2.resize(good, (2000, 4)))),
        "huge_header": ("yes/huge_header.png", lambda p: p.write_bytes(_png_header_only(HUGE_SIDE, HUGE_SIDE))),
        "huge_black": ("yes/huge_black.png", _huge_black),
        "unicode_name": ("yes/tumör 脑 ñ.png", lambda p: write_png(p, _grey(3))),
        "space_name": ("no/no 9.png", lambda p: write_png(p, _grey(4))),
        "leading_dash": ("yes/--help.png", lambda p: write_png(p, _grey(5))),
    }


def _scanner_cases() -> dict[str, tuple[str, Writer]]:
    """pydicom's MR_small in every encoding it ships, broken scanner files, and NIfTI volumes."""
    import nibabel
    from pydicom.data import get_testdata_file

    dicoms = {"dicom_" + (name.removeprefix("MR_small").removesuffix(".dcm").strip("_") or "plain"):
              (f"yes/{name}", lambda p, n=name: shutil.copyfile(get_testdata_file(n), p)) for name in DICOM_FILES}
    plain = Path(get_testdata_file("MR_small.dcm")).read_bytes()
    nifti = Path(nibabel.__file__).parent / "tests" / "data" / "anatomical.nii"
    return {
        **dicoms,
        "dicom_truncated": ("yes/truncated.dcm", lambda p: p.write_bytes(_half(plain))),
        "dicom_multiframe": ("yes/multiframe.dcm", lambda p: write_dicom(p, phantom_slices(3))),
        "dicom_no_suffix": ("yes/IM0001", lambda p: p.write_bytes(plain)),
        "png_named_dcm": ("no/export.dcm", lambda p: write_png(p, _grey(6))),
        "nifti_3d": ("yes/volume.nii.gz", lambda p: write_nifti(p, phantom_slices(4))),
        "nifti_4d": ("yes/series.nii", lambda p: write_nifti(p, phantom_slices(3), volumes=2)),
        "nifti_anatomical": ("no/anatomical.nii", lambda p: shutil.copyfile(nifti, p)),
        "nifti_truncated": ("yes/cut.nii.gz", lambda p: p.write_bytes(_half(_nifti_bytes()))),
        "text_named_nii": ("no/notes.nii.gz", lambda p: p.write_text("not a volume\n")),
    }


def _file_system_cases(folder: Path, good: np.ndarray) -> dict[str, Path]:
    """A link out of the folder (to a good image, so that following it would import it), one inside, and a
    folder with an image's name."""
    target = folder.parent / OUTSIDE / "secret.png"
    write_png(target, good)
    cases = {"link_out": folder / "yes" / "x.jpg", "link_in": folder / "no" / "link_in.png",
             "dir_named_jpg": folder / "no" / "x.jpg"}
    cases["link_out"].symlink_to(target)
    cases["link_in"].symlink_to(Path("..") / "yes" / "good.png")
    cases["dir_named_jpg"].mkdir()
    return cases


# --- writers -----------------------------------------------------------------------------------------


_HTML = ("<!DOCTYPE html>\n<html><head><title>403 Forbidden</title></head>\n"
         "<body><h1>Sign in to download this file</h1></body></html>\n")


def _grey(seed: int) -> np.ndarray:
    """A grey phantom slice (a tumour on even seeds)."""
    from lib.acquire import phantom
    from lib.common.io import to_grey

    return to_grey(phantom.make_slice(np.random.default_rng(seed), 1 - seed % 2).image)


def _pil(pixels: np.ndarray) -> Image.Image:
    return Image.fromarray(pixels).convert("RGB") if pixels.ndim == 3 else Image.fromarray(pixels)


def _photo(name: str) -> np.ndarray:
    import skimage.data

    return getattr(skimage.data, name)()


def _noise(side: int) -> np.ndarray:
    return np.random.default_rng(0).integers(0, 256, (side, side), np.uint8)


def _pages(path: Path, pixels: np.ndarray, n: int) -> None:
    """A file of n frames or pages (GIF, TIFF: the format follows the suffix), each shifted a little."""
    frames = [_pil(np.roll(pixels, 9 * k, axis=1)) for k in range(n)]
    frames[0].save(path, save_all=True, append_images=frames[1:])


def _half(data: bytes) -> bytes:
    """The first half of a file, as an interrupted download leaves it."""
    return data[: len(data) // 2]


def _encoded(pixels: np.ndarray, suffix: str) -> bytes:
    ok, buf = cv2.imencode(suffix, pixels)
    assert ok, suffix
    return buf.tobytes()


def _exif_rotated(path: Path, pixels: np.ndarray) -> None:
    """A JPEG stored on its side, with EXIF orientation 6 (turn 90° clockwise to view), as phones write."""
    exif = Image.Exif()
    exif[0x0112] = 6
    _pil(np.rot90(pixels)).save(path, quality=90, exif=exif)


def _png_header_only(width: int, height: int) -> bytes:
    """A PNG whose header claims width x height (grey, 8 bit) and whose data stops after one row."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0" * (width + 1)))
            + chunk(b"IEND", b""))


def _huge_black(path: Path) -> None:
    """A real, complete PNG just over the pixel limit: mostly black, so it compresses to kilobytes."""
    width, height = 8000, 6000
    assert width * height > MAX_PIXELS
    pixels = np.zeros((height, width), np.uint8)
    pixels[100:200, 100:200] = 200
    ok, buf = cv2.imencode(".png", pixels, [cv2.IMWRITE_PNG_COMPRESSION, 9])
    assert ok
    path.write_bytes(buf.tobytes())


def _nifti_bytes() -> bytes:
    """A gzipped NIfTI volume of noise as bytes (noise, so that it stays long once compressed: to be cut short)."""
    import nibabel as nib

    image = nib.Nifti1Image(_noise(32)[..., None].repeat(4, axis=2).astype(np.float32), np.eye(4))
    return gzip.compress(image.to_bytes())
