"""DICOM series in and out: read one series into a volume with a RAS affine, and write a volume as a series.

Introduced in notebook 07. A DICOM series is a folder of files, one slice each. Its geometry lives in three tags
per slice: ``ImageOrientationPatient`` (the direction of a pixel row and of a pixel column, in LPS patient
coordinates), ``PixelSpacing`` (row spacing, column spacing in mm) and ``ImagePositionPatient`` (the world
position of the slice's first pixel). Slices are stacked in the order of their position along the slice normal
(row x column), never by file name or ``InstanceNumber``: both are often out of order. MONAI 1.6's
``PydicomReader`` sorts by ``InstanceNumber`` and measures the slice gap along z only, so this module reads the
tags itself with pydicom.

Array convention: ``volume[i, j, k]`` with i the column index (along the row direction), j the row index and k
the slice, so that ``affine @ (i, j, k, 1)`` is the world position in RAS mm (NIfTI's convention); the LPS -> RAS
step flips the signs of x and y.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])
GEOMETRY_TAGS = ("ImagePositionPatient", "ImageOrientationPatient", "PixelSpacing")
MR_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.4"


class DicomSeriesError(ValueError):
    """A folder that is not exactly one readable DICOM series (the message names the path and the problem)."""


def series_files(folder: str | os.PathLike[str]) -> list[Path]:
    """The visible files of a folder (hidden files and a ``DICOMDIR`` index are skipped). Introduced in notebook 07.

    Args:
        folder: the folder that should hold one series.

    Returns:
        The files, sorted by name (the order does not matter: :func:`read_series` sorts by position).
    """
    path = Path(folder)
    if not path.is_dir():
        raise DicomSeriesError(f"{path} is not a folder: pass the folder that holds the DICOM series")
    files = sorted(p for p in path.iterdir() if p.is_file() and not p.name.startswith(".") and p.name != "DICOMDIR")
    if not files:
        raise DicomSeriesError(
            f"{path} is empty: no files to read (subfolders are not searched; point at the "
            "folder that holds the series' files)"
        )
    return files


def _read_file(path: Path) -> Any:
    """One DICOM file with pydicom; files without the 128-byte preamble are retried as bare datasets."""
    import pydicom
    from pydicom.errors import InvalidDicomError

    try:
        return pydicom.dcmread(path)
    except InvalidDicomError as err:
        try:
            ds = pydicom.dcmread(path, force=True)
        except Exception:  # noqa: BLE001 - any parse failure means: not DICOM
            ds = None
        if ds is None or "SOPClassUID" not in ds:
            raise DicomSeriesError(
                f"{path} is not a DICOM file ({err}); a DICOM folder must hold the files of one series only"
            ) from err
        return ds
    except (OSError, ValueError) as err:
        raise DicomSeriesError(f"{path} cannot be read as DICOM ({type(err).__name__}: {err})") from err


def _read_slices(files: list[Path]) -> list[Any]:
    """Read every file; a file that is not DICOM, or lacks pixels or geometry, is an error naming it."""
    slices = []
    for f in files:
        ds = _read_file(f)
        missing = [t for t in (*GEOMETRY_TAGS, "SeriesInstanceUID", "PixelData") if t not in ds]
        if missing:
            raise DicomSeriesError(
                f"{f} lacks {', '.join(missing)}: without them the slice cannot be placed in space "
                "(is it a localizer, a report or a secondary capture?)"
            )
        slices.append((ds, f))
    uids = sorted({str(ds.SeriesInstanceUID) for ds, _ in slices})
    if len(uids) > 1:
        raise DicomSeriesError(
            f"{files[0].parent} holds {len(uids)} series (SeriesInstanceUID {', '.join(uids[:4])}"
            f"{', ...' if len(uids) > 4 else ''}): put each series in its own folder"
        )
    return slices


def _sorted_geometry(slices: list[Any]) -> tuple[list[Any], np.ndarray]:
    """Sort slices along their normal and build the LPS affine; inconsistent geometry is an error naming a file."""
    first, folder = slices[0][0], slices[0][1].parent
    orient = np.array(first.ImageOrientationPatient, dtype=np.float64)
    row_dir, col_dir = orient[:3], orient[3:]
    normal = np.cross(row_dir, col_dir)
    for ds, f in slices:
        if not np.allclose(np.array(ds.ImageOrientationPatient, dtype=np.float64), orient, atol=1e-4):
            raise DicomSeriesError(f"{f} has another ImageOrientationPatient than {slices[0][1].name}: not one volume")
        if (ds.Rows, ds.Columns) != (first.Rows, first.Columns):
            raise DicomSeriesError(
                f"{f} is {ds.Rows}x{ds.Columns} pixels, {slices[0][1].name} {first.Rows}x"
                f"{first.Columns}: not one volume"
            )
    ordered = sorted(slices, key=lambda s: float(np.dot(np.array(s[0].ImagePositionPatient, dtype=np.float64), normal)))
    positions = np.array([np.array(ds.ImagePositionPatient, dtype=np.float64) for ds, _ in ordered])
    gaps = np.diff(positions @ normal)
    if len(ordered) > 1 and (gaps.min() <= 1e-4 or not np.allclose(gaps, gaps.mean(), rtol=1e-2, atol=1e-3)):
        raise DicomSeriesError(
            f"{folder}: slice positions along the normal are not evenly spaced (gaps "
            f"{np.round(gaps.min(), 4)} to {np.round(gaps.max(), 4)} mm): a duplicate slice, a missing"
            " slice or several stacks in one series"
        )
    step = (
        (positions[-1] - positions[0]) / (len(ordered) - 1)
        if len(ordered) > 1
        else normal * float(getattr(first, "SliceThickness", 1.0) or 1.0)
    )
    row_spacing, col_spacing = (float(v) for v in first.PixelSpacing)
    lps = np.eye(4)
    lps[:3, 0], lps[:3, 1], lps[:3, 2], lps[:3, 3] = row_dir * col_spacing, col_dir * row_spacing, step, positions[0]
    return ordered, lps


def read_series(folder: str | os.PathLike[str]) -> tuple[np.ndarray, np.ndarray]:
    """Read the one DICOM series in ``folder`` into a float32 volume and its RAS affine. Introduced in notebook 07.

    Args:
        folder: a folder holding the files of exactly one series (any file names, any order).

    Returns:
        ``(volume (i, j, k) float32 with RescaleSlope/Intercept applied, affine (4, 4) voxel -> RAS mm)``.

    Raises:
        DicomSeriesError: empty folder, a non-DICOM file, several series, missing geometry tags, or slices that do
            not form one evenly spaced volume; the message names the file or folder.
    """
    ordered, lps = _sorted_geometry(_read_slices(series_files(folder)))
    planes = []
    for ds, f in ordered:
        try:
            pixels = ds.pixel_array.astype(np.float32)  # (rows, columns) = (j, i)
        except Exception as err:  # e.g. a compressed transfer syntax without its decoder installed
            raise DicomSeriesError(
                f"{f}: its pixels cannot be decoded ({type(err).__name__}: {err}); compressed "
                "series need a decoder such as pylibjpeg, or convert them with dcmdjpeg"
            ) from err
        planes.append(
            pixels * float(getattr(ds, "RescaleSlope", 1) or 1) + float(getattr(ds, "RescaleIntercept", 0) or 0)
        )
    return np.stack(planes, axis=-1).transpose(1, 0, 2).copy(), LPS_TO_RAS @ lps


def series_to_nifti(folder: str | os.PathLike[str], out_path: str | os.PathLike[str]) -> Path:
    """Convert one DICOM series to a NIfTI file with the series' geometry (RAS affine). Introduced in notebook 07."""
    import nibabel as nib

    volume, affine = read_series(folder)
    Path(out_path).parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(volume, affine), str(out_path))
    return Path(out_path)


def _to_int16(volume: np.ndarray) -> tuple[np.ndarray, float, float]:
    """Stored int16 pixels plus (slope, intercept); integer data that fits is stored as is."""
    vol = np.asarray(volume, dtype=np.float64)
    if np.allclose(vol, np.round(vol)) and vol.min() >= -32768 and vol.max() <= 32767:
        return np.round(vol).astype(np.int16), 1.0, 0.0
    lo, hi = float(vol.min()), float(vol.max())
    slope = (hi - lo) / 65000.0 if hi > lo else 1.0
    return np.round((vol - lo) / slope - 32500).astype(np.int16), slope, lo + 32500 * slope


def _ds(value: float) -> str:
    """A DICOM decimal string (16 characters at most) holding ``value`` as precisely as fits."""
    for digits in range(12, 0, -1):
        text = f"{value:.{digits}g}"
        if len(text) <= 16:
            return text
    raise ValueError(f"cannot write {value} as a DICOM decimal string")


def _slice_dataset(
    plane: np.ndarray, lps: np.ndarray, k: int, series: dict[str, str], slope: float, intercept: float
) -> Any:
    """One MR slice as a pydicom dataset: pixels (rows = j, columns = i) and the geometry of slice ``k``."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID = MR_IMAGE_STORAGE, generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID, ds.Modality = MR_IMAGE_STORAGE, meta.MediaStorageSOPInstanceUID, "MR"
    ds.PatientName, ds.PatientID, ds.StudyInstanceUID = series["patient"], series["patient"], series["study"]
    ds.SeriesInstanceUID, ds.SeriesNumber, ds.InstanceNumber = series["series"], 1, k + 1
    spacing = np.linalg.norm(lps[:3, :3], axis=0)
    ds.ImageOrientationPatient = [_ds(v) for v in (*(lps[:3, 0] / spacing[0]), *(lps[:3, 1] / spacing[1]))]
    ds.ImagePositionPatient = [_ds(v) for v in lps[:3, :3] @ np.array([0.0, 0.0, k]) + lps[:3, 3]]
    ds.PixelSpacing, ds.SliceThickness = [_ds(spacing[1]), _ds(spacing[0])], _ds(spacing[2])
    ds.RescaleSlope, ds.RescaleIntercept = _ds(slope), _ds(intercept)
    ds.set_pixel_data(np.ascontiguousarray(plane.T), photometric_interpretation="MONOCHROME2", bits_stored=16)
    return ds


def write_series(
    volume: Any,
    affine: Any,
    out_dir: str | os.PathLike[str],
    *,
    shuffle_seed: int | None = None,
    patient: str = "PHANTOM",
) -> list[Path]:
    """Write a volume with a RAS affine as an MR DICOM series, one file per slice. Introduced in notebook 07.

    Made for tests and demonstrations (a phantom as a scanner would send it); the files carry the geometry and
    pixel tags :func:`read_series` needs, not a complete clinical header.

    Args:
        volume: 3D array (i, j, k); integer values that fit int16 are stored as is, others with a rescale slope.
        affine: voxel -> RAS mm (a NIfTI affine).
        out_dir: the folder to create; it must not hold files yet.
        shuffle_seed: if given, the file names are a random permutation of the slice order (as after a copy by a
            PACS export), so that readers cannot rely on names.
        patient: PatientName and PatientID.

    Returns:
        The written files.
    """
    from pydicom.uid import generate_uid

    vol = np.asarray(volume)
    if vol.ndim != 3:
        raise ValueError(f"volume must be 3D (i, j, k); got shape {vol.shape}")
    out = Path(out_dir)
    if out.is_dir() and any(out.iterdir()):
        raise FileExistsError(f"{out} is not empty: write each series into a fresh folder")
    out.mkdir(parents=True, exist_ok=True)
    stored, slope, intercept = _to_int16(vol)
    lps = LPS_TO_RAS @ np.asarray(affine, dtype=np.float64)
    series = {"patient": patient, "study": generate_uid(), "series": generate_uid()}
    order = (
        np.random.default_rng(shuffle_seed).permutation(vol.shape[2])
        if shuffle_seed is not None
        else np.arange(vol.shape[2])
    )
    paths = []
    for k in range(vol.shape[2]):
        ds = _slice_dataset(stored[:, :, k], lps, k, series, slope, intercept)
        paths.append(out / f"IM{int(order[k]):05d}.dcm")
        ds.save_as(paths[-1], enforce_file_format=True)
    return paths


def is_dicom_file(path: str | os.PathLike[str]) -> bool:
    """True for a file with the DICOM preamble (``DICM`` at byte 128) or a ``.dcm`` name. Introduced in notebook 07."""
    path = Path(path)
    if path.suffix.lower() == ".dcm":
        return True
    try:
        with open(path, "rb") as f:
            return f.read(132)[128:] == b"DICM"
    except OSError:
        return False


def holds_dicom(folder: str | os.PathLike[str], limit: int = 64) -> bool:
    """True if a folder holds DICOM files (its first ``limit`` visible files are looked at). Introduced in notebook 07.

    ``predict`` refuses to write a mask into such a folder: the next read of the series would meet a NIfTI file.
    """
    path = Path(folder)
    if not path.is_dir():
        return False
    files = (p for p in sorted(path.iterdir()) if not p.name.startswith(".") and p.is_file())
    return any(is_dicom_file(p) for _, p in zip(range(limit), files))
