"""DICOM and NIfTI files with known answers, written in tests from phantom slices (never committed as binaries)."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np


def phantom_slices(n: int, seed: int = 7) -> list[np.ndarray]:
    """n grey uint8 phantom slices of one size, alternately with and without a tumour."""
    from lib.acquire import phantom
    from lib.common.io import to_grey

    rng = np.random.default_rng(seed)
    out = [to_grey(phantom.make_slice(rng, (k + 1) % 2).image) for k in range(n)]
    side = min(min(image.shape) for image in out)  # phantom canvases differ in size: one volume, one size
    return [cv2.resize(image, (side, side), interpolation=cv2.INTER_AREA) for image in out]


def write_dicom(path: Path, frames: list[np.ndarray], slope: float = 1.0, intercept: float = 0.0,
                window: tuple[float, float] | None = None, monochrome1: bool = False,
                spacing: tuple[float, float, float] = (0.5, 0.5, 5.0)) -> Path:
    """An MR DICOM file holding `frames` (uint8) as 16-bit stored values v with v * slope + intercept = pixel."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, MRImageStorage, generate_uid

    stored = np.stack([(f.astype(np.float64) - intercept) / slope for f in frames])
    if monochrome1:
        stored = stored.max() + stored.min() - stored  # low values show bright
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID = MRImageStorage, generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID, ds.Modality = MRImageStorage, meta.MediaStorageSOPInstanceUID, "MR"
    ds.Rows, ds.Columns = frames[0].shape
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME1" if monochrome1 else "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 0
    if len(frames) > 1:
        ds.NumberOfFrames = len(frames)
    ds.RescaleSlope, ds.RescaleIntercept = slope, intercept
    ds.PixelSpacing, ds.SliceThickness = [spacing[0], spacing[1]], spacing[2]
    if window is not None:
        ds.WindowCenter, ds.WindowWidth = window
    ds.PixelData = np.rint(stored).astype("<u2").tobytes()
    ds.save_as(path, enforce_file_format=True)
    return path


def write_nifti(path: Path, slices: list[np.ndarray], flip_x: bool = False,
                zooms: tuple[float, float, float] = (1.0, 1.0, 3.0), volumes: int = 1) -> Path:
    """A NIfTI volume whose canonical axial slices (scanner_files' view) are `slices`; with flip_x it is
    stored left-right mirrored with a matching affine, so only a reader that reorients gets them back."""
    import nibabel as nib

    data = np.stack([np.rot90(s, -1) for s in slices], axis=2).astype(np.float32)  # x, y, z in RAS
    affine = np.diag([*zooms, 1.0])
    if flip_x:
        data = data[::-1]
        affine[0, 0], affine[0, 3] = -zooms[0], zooms[0] * (data.shape[0] - 1)
    if volumes > 1:
        data = np.stack([data] + [np.zeros_like(data)] * (volumes - 1), axis=3)
    nib.save(nib.Nifti1Image(data, affine), str(path))
    return path
