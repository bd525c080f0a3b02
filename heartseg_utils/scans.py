"""One input check for a scan file, shared by ``data.validate_dataset`` and ``predict``.

Introduced in notebook 01 (validation) and used again in notebook 07 (prediction). A scan must be

- there and readable: not a broken or looping symbolic link, not empty, a NIfTI (or other nibabel) header, and,
  when the voxels are read, a gzip stream whose CRC and length are right (nibabel stops reading early);
- of a sane size, decided from the header BEFORE any voxel is read (a header claiming 4000^3 voxels is refused
  instead of allocated): at most :data:`MAX_VOXELS` voxels, and a file long enough to hold them;
- 3D, or 4D (5D) with one channel/frame, or with a channel chosen explicitly (``channel=``); anything else is
  refused with the way to choose;
- of finite voxels (NaN/Inf are counted and refused) and positive, finite voxel spacing with an invertible affine.

Every failure raises :class:`ScanError` (a ``ValueError``) whose message names the file, the problem and the fix.
This module imports no other heartseg_utils module (layer 0): numpy and nibabel only.
"""

from __future__ import annotations

import errno
import gzip
import os
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

MAX_VOXELS = 1_000_000_000  # 4 GB as float32: more than any cardiac MRI, far less than a corrupt header claims
_REEXPORT = "Re-download or re-export the file (an interrupted copy or download is the usual cause)."


class ScanError(ValueError):
    """A scan file that cannot be used; the message names the file, the problem and the fix.

    Introduced in notebook 01 (``data.DatasetError`` derives from it).
    """


@dataclass(frozen=True)
class ScanInfo:
    """What the header says about a scan that passed :func:`check_header`."""

    path: Path
    shape: tuple[int, ...]  # the stored shape, e.g. (x, y, z) or (x, y, z, t)
    spatial_shape: tuple[int, int, int]
    n_channels: int  # channels/frames beyond the three spatial axes (1 for a 3D scan)
    channel: int | None  # the channel to read (None: the scan has one)
    spacing: tuple[float, float, float]


def is_link_loop(path: str | os.PathLike[str]) -> bool:
    """True if reaching ``path`` runs into a symbolic link loop (``Path.resolve`` raises, ``exists`` says False).

    Introduced in notebook 07.
    """
    try:
        os.stat(path)
    except OSError as err:
        return err.errno == errno.ELOOP
    return False


def broken_link(path: str | os.PathLike[str]) -> str | None:
    """Describe a path that cannot be reached because of a symbolic link (loop or dangling); None otherwise.

    Introduced in notebook 07 (``Path.exists`` answers False for both, which reads as "does not exist").

    Args:
        path: any path.

    Returns:
        A sentence naming the path and the problem, or None when the path exists or is plainly missing.
    """
    try:
        os.stat(path)
    except OSError as err:
        if err.errno == errno.ELOOP:
            return (
                f"{path} is a symbolic link loop (a link that points, directly or through others, back at itself): "
                "fix or remove the link"
            )
        if err.errno == errno.ENOENT and os.path.islink(path):
            return f"{path} is a broken symbolic link to {os.readlink(path)} (which does not exist): fix the link"
        return None
    return None


def refuse_broken_link(path: str | os.PathLike[str], what: str) -> None:
    """Raise :class:`ScanError` when ``path`` is a symbolic link loop or a dangling link (named as such, not "missing").

    Introduced in notebook 07.
    """
    link = broken_link(path)
    if link:
        raise ScanError(f"{what} {link}")


def check_exists(path: str | os.PathLike[str], what: str = "Scan", *, kind: str = "file") -> Path:
    """Raise a clear error unless ``path`` exists (as a file, a folder or either). Introduced in notebook 07.

    Args:
        path: the path to check.
        what: how the message names it (``"Scan"``, ``"--input"``, ``"run_dir"``).
        kind: ``"file"``, ``"dir"`` or ``"any"``.

    Returns:
        ``path`` as a Path (``~`` expanded).

    Raises:
        ScanError: a symbolic link loop or a dangling link, or the wrong kind of path.
        FileNotFoundError: the path does not exist.
    """
    path = Path(path).expanduser()
    refuse_broken_link(path, what)
    if not path.exists():
        raise FileNotFoundError(f"{what} {path} does not exist: check the path (a typo, or a file not copied yet?)")
    if kind == "file" and not path.is_file():
        raise ScanError(f"{what} {path} is a folder, not a file: pass the scan file itself")
    if kind == "dir" and not path.is_dir():
        raise ScanError(f"{what} {path} is a file, not a folder: pass the folder")
    return path


def load_header(path: str | os.PathLike[str], what: str = "Scan") -> Any:
    """Open a scan with nibabel without reading its voxels. Introduced in notebook 01.

    Args:
        path: a .nii/.nii.gz (or any format nibabel reads).
        what: how the message names the file (``"Image"``, ``"Label"``, ``"Scan"``).

    Returns:
        The nibabel image (voxels not loaded).

    Raises:
        ScanError: a broken link, an empty file, or a file nibabel cannot read as an image.
    """
    import nibabel as nib

    path = check_exists(path, what)
    if path.stat().st_size == 0:
        raise ScanError(f"{what} {path} is empty (0 bytes): an interrupted copy or download. {_REEXPORT}")
    try:
        return nib.load(str(path))
    except Exception as exc:  # nibabel raises ImageFileError, OSError, EOFError, zlib.error, ...
        raise ScanError(
            f"{what} {path} cannot be read as NIfTI ({type(exc).__name__}: {exc}). "
            "The file is corrupt or not a .nii/.nii.gz: re-download or re-export it."
        ) from exc


def _channels(shape: tuple[int, ...], path: Path, what: str, channel: int | None, hint: str) -> tuple[int, int | None]:
    """The number of channels beyond the spatial axes and the one to read; refuse what cannot be one 3D volume."""
    if len(shape) < 3:
        raise ScanError(
            f"{what} {path} is {len(shape)}D (shape {shape}): a 3D volume (x, y, z) is needed. "
            "Pass the whole volume, not one slice (a DICOM series folder works too)."
        )
    extra = [n for n in shape[3:] if n != 1]
    if len(extra) > 1:
        raise ScanError(
            f"{what} {path} has shape {shape}: more than one axis beyond x, y, z. "
            "Save the one 3D volume you want as its own NIfTI file."
        )
    n_channels = extra[0] if extra else 1
    if n_channels == 1:
        return 1, None
    if channel is None:
        raise ScanError(f"{what} {path} is {len(shape)}D with {n_channels} channels/frames (shape {shape}): {hint}")
    if not 0 <= int(channel) < n_channels:
        raise ScanError(f"{what} {path}: channel {channel} does not exist; it has channels 0 to {n_channels - 1}")
    return n_channels, int(channel)


def check_header(
    img: Any, path: str | os.PathLike[str], what: str = "Scan", *, channel: int | None = None, hint: str = ""
) -> ScanInfo:
    """Check a scan's header before its voxels are read: size, dimensions, channels, spacing, affine.

    Introduced in notebook 01.

    Args:
        img: from :func:`load_header`.
        path: the file (for messages and its length).
        what: how the message names the file.
        channel: for a scan with several channels/frames, the one to use; None refuses such a scan.
        hint: how to choose a channel, appended to the refusal of a multi-channel scan.

    Returns:
        The :class:`ScanInfo`.

    Raises:
        ScanError: too many voxels, fewer than 3 or several extra dimensions, an unchosen or missing channel, a
            non-numeric voxel type, a file too short for its voxels, spacing that is not positive and finite.
    """
    path = Path(path)
    shape = tuple(int(n) for n in img.header.get_data_shape())
    n_voxels = int(np.prod(shape, dtype=np.float64)) if shape else 0
    if n_voxels > MAX_VOXELS or any(n <= 0 for n in shape):
        raise ScanError(
            f"{what} {path}: its header claims shape {shape} ({n_voxels:.3g} voxels; at most {MAX_VOXELS:.0e}, each "
            f"axis at least 1). The header is corrupt. {_REEXPORT}"
        )
    n_channels, chosen = _channels(shape, path, what, channel, hint or "choose one with channel=N.")
    dtype = img.header.get_data_dtype()
    if dtype.fields is not None or dtype.kind not in "biuf":
        raise ScanError(f"{what} {path} stores {dtype} voxels (RGB or complex): save one real-valued channel.")
    _check_length(img, path, what, n_voxels * dtype.itemsize)
    stored = _stored_spacing(path, img) or tuple(float(z) for z in img.header.get_zooms()[:3])
    spacing = tuple(round(float(v), 6) for v in stored)
    affine = np.asarray(img.affine, dtype=np.float64)
    if not all(np.isfinite(s) and s > 0 for s in spacing):
        raise ScanError(
            f"{what} {path} has voxel spacing {tuple(round(v, 4) for v in spacing)} mm in its header (pixdim): "
            "every spacing must be a positive, finite number of mm, or volumes and resampling are wrong. Fix the "
            "header (nibabel: img.header.set_zooms) or re-export the scan."
        )
    if not np.isfinite(affine).all() or abs(np.linalg.det(affine[:3, :3])) < 1e-12:
        raise ScanError(
            f"{what} {path} has an affine that does not map voxels to space (non-finite or singular: "
            f"{np.round(affine[:3, :3], 4).tolist()}). Fix its sform/qform or re-export the scan."
        )
    return ScanInfo(path, shape, (shape[0], shape[1], shape[2]), n_channels, chosen, spacing)  # type: ignore[arg-type]


def _stored_spacing(path: Path, img: Any) -> tuple[float, ...] | None:
    """The voxel spacing as stored in the file's pixdim: nibabel's header check silently turns 0 into 1 on load."""
    header = img.header
    if "pixdim" not in getattr(header, "keys", list)() or not path.is_file():
        return None
    from nibabel.openers import ImageOpener

    try:
        with ImageOpener(str(path)) as f:
            raw = type(header).from_fileobj(f, check=False)
        return tuple(float(v) for v in raw["pixdim"][1:4])
    except Exception:  # noqa: BLE001 - the loaded header's zooms are the fallback
        return None


def _check_length(img: Any, path: Path, what: str, voxel_bytes: int) -> None:
    """An uncompressed file must hold its header's voxels (checked from the file size, nothing is read)."""
    if path.name.lower().endswith(".gz") or not path.is_file() or not hasattr(img.header, "get_data_offset"):
        return  # a gzip stream's length is checked by check_stream, when the voxels are read
    expected = int(img.header.get_data_offset()) + voxel_bytes
    size = path.stat().st_size
    if size < expected:
        raise ScanError(
            f"{what} {path} is truncated: its header needs {expected} bytes, the file holds {size}. {_REEXPORT}"
        )


def _corrupt(path: Path, what: str, exc: BaseException) -> ScanError:
    """The error for voxels that cannot be decompressed or read."""
    return ScanError(
        f"{what} {path} is corrupt or truncated: its voxels cannot be read ({type(exc).__name__}: {exc}). {_REEXPORT}"
    )


def check_stream(path: str | os.PathLike[str], img: Any, what: str = "Scan") -> None:
    """Decompress a .gz scan to its end (CRC and length checked) and compare its length with the header's.

    Introduced in notebook 01. Runs before the voxels are read, so a short stream never makes nibabel allocate the
    header's size first. Uncompressed files are checked by :func:`check_header` from their size.

    Raises:
        ScanError: a truncated or damaged stream, or one shorter than the header's voxels.
    """
    path = Path(path)
    if not path.name.lower().endswith(".gz"):
        return
    length = 0
    try:
        with gzip.open(path, "rb") as f:
            while block := f.read(1 << 22):
                length += len(block)
    except (EOFError, OSError, zlib.error) as exc:  # truncated: EOFError; damaged: BadGzipFile, zlib.error
        raise _corrupt(path, what, exc) from exc
    header = img.header
    if hasattr(header, "get_data_offset"):
        shape = header.get_data_shape()
        expected = int(header.get_data_offset()) + int(np.prod(shape)) * header.get_data_dtype().itemsize
        if length < expected:
            raise ScanError(
                f"{what} {path} is truncated: its header needs {expected} bytes, the decompressed stream holds "
                f"{length}. {_REEXPORT}"
            )


def load_voxels(img: Any, path: str | os.PathLike[str], what: str = "Scan", *, channel: int | None = None) -> Any:
    """Read a checked scan's voxels (one channel of a multi-channel scan). Introduced in notebook 01.

    Args:
        img: from :func:`load_header`, checked with :func:`check_header`.
        path: the file.
        what: how the message names the file.
        channel: the channel to read for a multi-channel scan (as :func:`check_header` returned it).

    Returns:
        The voxels (scaled as the header says); 3D when a channel is chosen or the extra axes are all 1.
    """
    path = Path(path)
    check_stream(path, img, what)
    try:
        voxels = np.asanyarray(img.dataobj)
    except Exception as exc:  # truncated gzip: EOFError; damaged stream: zlib.error / OSError
        raise _corrupt(path, what, exc) from exc
    if voxels.ndim > 3:
        voxels = voxels.reshape(*voxels.shape[:3], -1)
        voxels = voxels[..., 0] if voxels.shape[3] == 1 else voxels[..., 0 if channel is None else channel]
    return voxels


def check_finite(voxels: Any, path: str | os.PathLike[str], what: str = "Scan") -> None:
    """Refuse NaN or infinite voxels, counting them. Introduced in notebook 01.

    Raises:
        ScanError: naming the file and the number of non-finite voxels.
    """
    voxels = np.asanyarray(voxels)
    if voxels.dtype.kind not in "fc":
        return
    bad = int(np.count_nonzero(~np.isfinite(voxels)))
    if bad:
        raise ScanError(
            f"{what} {path} has {bad} NaN/inf voxel(s). Re-export the volume, or replace them "
            "with finite values (e.g. numpy.nan_to_num) and save it under a new name."
        )


def check_scan(
    path: str | os.PathLike[str],
    what: str = "Scan",
    *,
    channel: int | None = None,
    voxels: bool = True,
    hint: str = "",
) -> tuple[ScanInfo, Any]:
    """The whole input check of one scan file: readable, sane header, 3D or a chosen channel, finite, spacing.

    Introduced in notebook 07 (``predict``); ``data.validate_dataset`` runs the same steps.

    Args:
        path: the scan file.
        what: how messages name the file.
        channel: the channel of a multi-channel (4D) scan to use; None refuses such a scan.
        voxels: also read the voxels (gzip CRC, length, NaN/Inf); False checks the header only.
        hint: how to choose a channel, for the refusal of a multi-channel scan.

    Returns:
        ``(info, voxels)``: the :class:`ScanInfo` and the 3D voxel array (None when ``voxels`` is False).

    Raises:
        ScanError: on the first problem (FileNotFoundError for a missing file).
    """
    img = load_header(path, what)
    info = check_header(img, path, what, channel=channel, hint=hint)
    if not voxels:
        return info, None
    array = load_voxels(img, path, what, channel=info.channel)
    check_finite(array, path, what)
    return info, array
