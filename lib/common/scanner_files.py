"""DICOM and NIfTI files as 8-bit grey slices, with the geometry a volume needs (millimetres per voxel).

Why its own module: scanners do not write PNGs. A DICOM file (recognised by
its content: the "DICM" tag after the 128-byte preamble, whatever its name)
stores raw detector values that the rescale slope and intercept turn into
physical units, a display window chosen at the console (Window Center and
Width; else robust percentiles of the pixel data), MONOCHROME1 means "low is
bright" and is inverted, a multi-frame file holds several slices, and
compressed transfer syntaxes need a decoder plug-in (pinned: pylibjpeg with
libjpeg, openjpeg and rle). A NIfTI volume (`.nii`, `.nii.gz`) is turned to
the canonical RAS orientation, cut into axial slices (anterior up, patient
right on the image's right), and windowed once for the whole volume, so a
slice's brightness means the same on every slice.
"""

from __future__ import annotations

import gzip
import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from lib.common.image_errors import WINDOW_PERCENTILES, ImageReadError, first_line, window

DICOM_MAGIC_OFFSET = 128
NIFTI_SUFFIXES = (".nii", ".nii.gz")
NIFTI1_HEADER_SIZES = (348, 540)  # sizeof_hdr of NIfTI-1 and NIfTI-2, the first field of the header


@dataclass
class Volume:
    """The slices of one scanner file, in file order, and its voxel size."""

    slices: list[np.ndarray]  # uint8 HxW each
    format: str  # "DICOM" or "NIfTI"
    spacing_mm: tuple[float, float, float] | None = None  # rows, columns, between slices; None when unknown
    notes: list[str] = field(default_factory=list)  # what was assumed (no window in the file, 4D: first volume)

    @property
    def voxel_ml(self) -> float | None:
        """One voxel's volume in millilitres (1 ml = 1000 mm³), or None without a known spacing."""
        return None if self.spacing_mm is None else float(np.prod(self.spacing_mm)) / 1000.0


def kind(path: str | os.PathLike) -> str | None:
    """'dicom', 'nifti' or None, from the content (DICOM) or the name and header (NIfTI)."""
    path = Path(path)
    try:
        with open(path, "rb") as handle:
            head = handle.read(DICOM_MAGIC_OFFSET + 4)
    except OSError:
        return None
    if head[DICOM_MAGIC_OFFSET:DICOM_MAGIC_OFFSET + 4] == b"DICM":
        return "dicom"
    if path.name.lower().endswith(NIFTI_SUFFIXES):
        return "nifti"
    if path.suffix.lower() == ".dcm":  # a DICOM without its preamble, as some exporters write
        return "dicom"
    return "nifti" if _nifti_header(path, head) else None


def _nifti_header(path: Path, head: bytes) -> bool:
    """Whether the bytes start a NIfTI header (plain or gzipped), for files whose name hides it."""
    if head[:2] == b"\x1f\x8b":
        try:
            with gzip.open(path, "rb") as handle:
                head = handle.read(4)
        except (OSError, EOFError):
            return False
    return len(head) >= 4 and (int.from_bytes(head[:4], "little") in NIFTI1_HEADER_SIZES
                               or int.from_bytes(head[:4], "big") in NIFTI1_HEADER_SIZES)


def read_volume(path: str | os.PathLike) -> Volume:
    """Every slice of a DICOM or NIfTI file; ImageReadError (one line, naming the file) when it cannot be read."""
    path = Path(path)
    found = kind(path)
    if found == "dicom":
        return _read_dicom(path)
    if found == "nifti":
        return _read_nifti(path)
    raise ImageReadError(path, "neither DICOM nor NIfTI", "give a .dcm, .nii or .nii.gz file")


# --- DICOM ---------------------------------------------------------------------------


def _read_dicom(path: Path) -> Volume:
    import pydicom
    from pydicom.errors import InvalidDicomError
    from pydicom.pixels import apply_modality_lut

    try:
        ds = pydicom.dcmread(path, force=True)
    except (InvalidDicomError, OSError, ValueError, EOFError) as err:
        raise ImageReadError(path, f"unreadable DICOM ({first_line(err)})", "re-export it from the scanner") from None
    if "PixelData" not in ds:
        raise ImageReadError(path, "DICOM without pixel data (a report or a structured file)", "give an image series")
    meta = getattr(ds, "file_meta", None)
    syntax = meta.get("TransferSyntaxUID") if meta is not None else None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # e.g. "excess padding removed": harmless, not the user's business
            raw = ds.pixel_array
    except (NotImplementedError, RuntimeError) as err:
        name = getattr(syntax, "name", str(syntax))
        raise ImageReadError(path, f"no decoder for the DICOM transfer syntax {name}",
                             "re-export it uncompressed (Explicit VR Little Endian)") from err
    except (ValueError, EOFError, OSError, AttributeError, KeyError) as err:
        raise ImageReadError(path, f"corrupt or truncated DICOM pixel data ({first_line(err)})",
                             "re-export it from the scanner") from None
    frames = int(ds.get("NumberOfFrames", 1) or 1)
    if str(ds.get("PhotometricInterpretation", "MONOCHROME2")) not in ("MONOCHROME1", "MONOCHROME2"):
        raise ImageReadError(path, f"a colour DICOM ({ds.get('PhotometricInterpretation')})",
                             "give a grey MR series")
    stack = raw.reshape(frames, *raw.shape[-2:]) if frames > 1 else raw[None]
    values = apply_modality_lut(stack, ds).astype(np.float32)  # rescale slope and intercept
    low, high, note = _dicomwindow(ds, values)
    slices = [window(frame, low, high) for frame in values]
    if str(ds.get("PhotometricInterpretation")) == "MONOCHROME1":
        slices = [255 - s for s in slices]
    return Volume(slices=slices, format="DICOM", spacing_mm=_dicom_spacing(ds), notes=[note] if note else [])


def _dicomwindow(ds: object, values: np.ndarray) -> tuple[float, float, str]:
    """(low, high) of the display window: the file's Window Center/Width, else percentiles of the pixels."""
    centre, width = ds.get("WindowCenter"), ds.get("WindowWidth")  # type: ignore[attr-defined]
    if centre is not None and width is not None:
        centre = float(centre[0] if _multi(centre) else centre)
        width = float(width[0] if _multi(width) else width)
        if width > 0:
            return centre - width / 2.0, centre + width / 2.0, ""
    low, high = np.percentile(values, WINDOW_PERCENTILES)
    return float(low), float(high), "no window in the file: percentiles of its pixels"


def _multi(value: object) -> bool:
    return isinstance(value, (list, tuple)) or type(value).__name__ == "MultiValue"


def _dicom_spacing(ds: object) -> tuple[float, float, float] | None:
    """PixelSpacing (rows, columns) and the slice spacing (SpacingBetweenSlices, else SliceThickness), mm."""
    spacing = ds.get("PixelSpacing")  # type: ignore[attr-defined]
    between = ds.get("SpacingBetweenSlices") or ds.get("SliceThickness")  # type: ignore[attr-defined]
    if not spacing or between is None:
        return None
    return float(spacing[0]), float(spacing[1]), float(between)


# --- NIfTI ---------------------------------------------------------------------------


def _read_nifti(path: Path) -> Volume:
    import nibabel as nib

    try:
        image = nib.as_closest_canonical(nib.load(path))
        data = np.asarray(image.dataobj, dtype=np.float32)
    except Exception as err:  # noqa: BLE001 - nibabel raises many types for broken files; one line says which
        raise ImageReadError(path, f"unreadable NIfTI ({type(err).__name__}: {first_line(err)})",
                             "re-export it, or check that it is not truncated") from None
    notes = []
    if data.ndim == 4:
        notes.append(f"4D ({data.shape[3]} volumes): the first volume is used")
        data = data[..., 0]
    if data.ndim != 3:
        raise ImageReadError(path, f"a {data.ndim}D NIfTI image", "give a 3D (or 4D) volume")
    low, high = np.percentile(data, WINDOW_PERCENTILES)  # one window for the whole volume
    zooms = tuple(float(z) for z in image.header.get_zooms()[:3])
    slices = [window(np.rot90(data[:, :, k]), float(low), float(high)) for k in range(data.shape[2])]
    return Volume(slices=slices, format="NIfTI", spacing_mm=(zooms[1], zooms[0], zooms[2]), notes=notes)
