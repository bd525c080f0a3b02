"""Bring your own scans: ``python -m heartseg_utils.convert`` turns folders of images and labels into an MSD folder.

Introduced in docs/own_data.md (the walkthrough: the pairing rule, each refusal, then training and prediction)::

    python -m heartseg_utils.convert --images scans/ --labels masks/ --out data/MyHeart [--test unlabelled/]

Reads NIfTI, one DICOM series per case (a sub-folder, :mod:`heartseg_utils.dicom`) and NRRD/MetaImage through the
optional SimpleITK. Cases pair by :func:`case_name`. Writes ``imagesTr/``, ``labelsTr/``, ``imagesTs/`` (.nii.gz),
``dataset.json`` and :data:`MARKER` into a folder beside ``--out``, checks it with ``data.validate_dataset``, then
renames it to ``--out``. The sources are only read. Every refusal is a :class:`ConvertError` naming the file and the
fix; nothing is left at ``--out`` after one.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import uuid
from pathlib import Path
from typing import Any

import numpy as np

from heartseg_utils import cli, data, scans
from heartseg_utils.dicom import LPS_TO_RAS, DicomSeriesError, read_series
from heartseg_utils.scans import ScanError

PROG = "python -m heartseg_utils.convert"
NIFTI_EXTENSIONS = (".nii.gz", ".nii")
ITK_EXTENSIONS = (".nrrd", ".nhdr", ".mha", ".mhd")
EXTENSIONS = NIFTI_EXTENSIONS + ITK_EXTENSIONS
COMPANION_EXTENSIONS = (".raw", ".raw.gz", ".zraw")  # the voxels of a .mhd/.nhdr header: read through the header
IMAGE_SUFFIXES = ("_0000",)
LABEL_SUFFIXES = ("_label", "_labels", "_seg", "_gt", "_mask")
MARKER = ".heartseg_convert.json"
ORIGIN_ATOL_MM = 1e-3
SPACING_ATOL_MM = 1e-3
DIRECTION_ATOL_RAD = 1e-4
MAX_LABEL = 32767
FRAME_HINT = "choose the frame (time point or channel) to convert with --frame N (frame=N in Python), from 0."
_RULE = (
    "cases pair by name: the file name without its extension (or the series folder's name), less _0000 on images "
    "and _label/_labels/_seg/_gt/_mask on labels"
)


class ConvertError(ScanError):
    """Input the converter refuses; the message names the file, the problem and the fix. See docs/own_data.md.

    A ``ValueError`` (through ``scans.ScanError``): the command line prints it as one line and exits with 2.
    """


def case_name(path: str | Path, role: str = "image") -> str:
    """The case a scan belongs to: the pairing rule. See docs/own_data.md.

    The file name without its extension (one of :data:`EXTENSIONS`, any letter case) or a DICOM series folder's
    name; then one trailing suffix is removed (any letter case; never the whole name): ``_0000`` (nnU-Net's channel
    suffix) from an image's name, one of :data:`LABEL_SUFFIXES` from a label's. ``case7_0000.nii.gz`` (image) and
    ``case7.nii``, ``case7_seg.nrrd`` or ``case7_gt.mha`` (label) are all case ``case7``.

    Args:
        path: a scan file or a DICOM series folder.
        role: ``"image"`` (removes a trailing ``_0000``) or ``"label"`` (removes one of :data:`LABEL_SUFFIXES`).

    Returns:
        The case name, e.g. ``"case7"`` for ``case7_0000.nii.gz`` (image) or ``case7_seg.nrrd`` (label).
    """
    if role not in ("image", "label"):
        raise ValueError(f"role must be 'image' or 'label', got {role!r}")
    path = Path(path)
    name = path.name
    extension = next((e for e in EXTENSIONS if name.lower().endswith(e)), "")
    if not extension and not path.is_dir():
        raise ConvertError(
            f"{path} is not a scan the converter reads (known: {', '.join(EXTENSIONS)} files, or a folder holding "
            "one DICOM series): convert it to NIfTI, or move it out of the folder"
        )
    stem = name[: len(name) - len(extension)]
    for suffix in IMAGE_SUFFIXES if role == "image" else LABEL_SUFFIXES:
        if stem.lower().endswith(suffix) and len(stem) > len(suffix):
            return stem[: -len(suffix)]
    return stem


def _source_dir(folder: str | Path, flag: str) -> Path:
    """A source folder that exists, as an absolute path (links resolved)."""
    try:
        return scans.check_exists(folder, flag, kind="dir").resolve()
    except FileNotFoundError as err:
        raise ConvertError(str(err)) from err


def list_cases(folder: str | Path, role: str = "image", flag: str = "--images") -> dict[str, Path]:
    """The scans of one folder by :func:`case_name`; stray files and two scans of one case are refused.

    Hidden files and the voxel files of .mhd/.nhdr headers (:data:`COMPANION_EXTENSIONS`) are
    skipped; each sub-folder is one DICOM series.

    Args:
        folder: the folder of images, labels or test images (sub-folders are DICOM series).
        role: ``"image"`` or ``"label"``: which suffixes the rule removes.
        flag: how messages name the folder.

    Returns:
        ``{case: path}`` sorted by case name.
    """
    root = _source_dir(folder, flag)
    found: dict[str, list[Path]] = {}
    stray = []
    for entry in sorted(root.iterdir()):
        if entry.name.startswith(".") or entry.name.lower().endswith(COMPANION_EXTENSIONS):
            continue
        scans.refuse_broken_link(entry, flag)
        if entry.is_dir() or entry.name.lower().endswith(EXTENSIONS):
            found.setdefault(case_name(entry, role), []).append(entry)
        else:
            stray.append(entry)
    if stray:
        shown = ", ".join(p.name for p in stray[:8]) + (" ..." if len(stray) > 8 else "")
        raise ConvertError(
            f"{flag} {root} holds {len(stray)} file(s) the converter does not read: {shown}. It reads "
            f"{', '.join(EXTENSIONS)} files and DICOM series (one sub-folder per case); move the others out"
        )
    clashes = [f"{' and '.join(map(str, ps))} are all case {c!r}" for c, ps in found.items() if len(ps) > 1]
    if clashes:
        raise ConvertError(f"{'; '.join(clashes)} ({_RULE}): keep one file per case, or rename the others")
    if not found:
        raise ConvertError(f"{flag} {root} holds no scans: point it at the folder of {role} files")
    return {case: found[case][0] for case in sorted(found)}


def pair_cases(images: str | Path, labels: str | Path) -> list[tuple[str, Path, Path]]:
    """Pair two folders' images and labels by :func:`case_name`; refuse, listing all, any without a partner.

    Args:
        images: the folder of images.
        labels: the folder of labels (a different folder).

    Returns:
        ``[(case, image, label), ...]`` sorted by case name.
    """
    by_image, by_label = list_cases(images, "image", "--images"), list_cases(labels, "label", "--labels")
    lonely = [f"image {by_image[c]} (case {c!r}) has no label" for c in sorted(by_image.keys() - by_label.keys())]
    lonely += [f"label {by_label[c]} (case {c!r}) has no image" for c in sorted(by_label.keys() - by_image.keys())]
    if lonely:
        raise ConvertError(
            f"{len(lonely)} case(s) without a partner: {'; '.join(lonely)}. {_RULE[0].upper()}{_RULE[1:]}: rename "
            "the files so the names match, or move unlabelled images to --test"
        )
    return [(case, by_image[case], by_label[case]) for case in sorted(by_image)]


def _pick_frame(array: np.ndarray, path: Path, what: str, frame: int | None) -> np.ndarray:
    """A 3D array from (x, y, z) or (x, y, z, frames); several frames need ``frame``, in range."""
    if array.ndim == 3 or array.shape[3] == 1:
        return array if array.ndim == 3 else array[..., 0]
    n = array.shape[3]
    if frame is None:
        raise ConvertError(f"{what} {path} is 4D with {n} frames (shape {array.shape}): {FRAME_HINT}")
    if not 0 <= frame < n:
        raise ConvertError(f"{what} {path} has frames 0 to {n - 1}: --frame {frame} does not exist; choose one")
    return array[..., frame]


def _read_itk(path: Path, what: str, frame: int | None) -> tuple[np.ndarray, np.ndarray]:
    """An NRRD/MetaImage file through SimpleITK, as (x, y, z) voxels and a RAS affine (ITK's geometry is LPS)."""
    try:
        import SimpleITK as sitk
    except ImportError as err:
        raise ConvertError(
            f"{what} {path} is NRRD/MetaImage, which needs SimpleITK (not installed): pip install SimpleITK, or "
            "convert the file to NIfTI first"
        ) from err
    try:
        image = sitk.ReadImage(str(path))
    except RuntimeError as err:
        raise ConvertError(f"{what} {path} cannot be read ({' '.join(str(err).split())[-200:]}): re-export it") from err
    dim, components = image.GetDimension(), image.GetNumberOfComponentsPerPixel()
    if dim not in (3, 4) or (dim == 4 and components > 1):
        raise ConvertError(f"{what} {path} is {dim}D with {components} component(s): a 3D volume is needed")
    voxels = sitk.GetArrayFromImage(image)  # (z, y, x), (z, y, x, c) or (t, z, y, x)
    voxels = voxels.transpose(3, 2, 1, 0) if dim == 4 else voxels.transpose(2, 1, 0, *range(3, voxels.ndim))
    lps = np.eye(4)
    direction = np.asarray(image.GetDirection(), dtype=np.float64).reshape(dim, dim)[:3, :3]
    lps[:3, :3] = direction * np.asarray(image.GetSpacing()[:3], dtype=np.float64)
    lps[:3, 3] = image.GetOrigin()[:3]
    return _pick_frame(voxels, path, what, frame), LPS_TO_RAS @ lps


def _check_grid(voxels: np.ndarray, affine: np.ndarray, path: Path, what: str) -> None:
    """Real, finite voxels and an affine with positive, finite spacing (for what nibabel's checks do not see)."""
    if voxels.dtype.kind not in "biuf":
        raise ConvertError(f"{what} {path} stores {voxels.dtype} voxels (RGB or complex): save one real channel")
    spacing = np.linalg.norm(affine[:3, :3], axis=0)
    if not np.isfinite(affine).all() or abs(np.linalg.det(affine[:3, :3])) < 1e-12 or not (spacing > 0).all():
        raise ConvertError(f"{what} {path} has a singular or non-finite geometry: fix its header or re-export it")
    scans.check_finite(voxels, path, what)


def _smallest_integer(volume: np.ndarray) -> np.ndarray:
    """A DICOM series' float32 voxels as the smallest integer type that holds them, if they are integers."""
    if volume.size and np.array_equal(volume, np.round(volume)):
        for dtype in (np.int16, np.uint16, np.int32):
            if np.iinfo(dtype).min <= volume.min() and volume.max() <= np.iinfo(dtype).max:
                return volume.astype(dtype)
    return volume.astype(np.float32)


def read_volume(path: str | Path, frame: int | None = None, what: str = "Image") -> tuple[np.ndarray, np.ndarray]:
    """Read one scan (NIfTI, DICOM series folder, NRRD/MetaImage) as 3D voxels and a RAS affine. See docs/own_data.md.

    Args:
        path: the file, or the folder holding one DICOM series.
        frame: the frame of a 4D scan (from 0); None refuses a scan with several frames; 3D scans ignore it.
        what: how messages name the file (``"Image"``, ``"Label"``).

    Returns:
        ``(voxels (x, y, z), affine voxel -> RAS mm)``: NIfTI and SimpleITK voxels in their stored type (scaled
        NIfTI as nibabel reads it), a DICOM series' as the smallest integer type that holds them (else float32).
    """
    path = Path(path)
    lower = path.name.lower()
    try:
        if path.is_dir():
            voxels, affine = read_series(path)
            voxels = _smallest_integer(voxels)
        elif lower.endswith(NIFTI_EXTENSIONS):
            image = scans.load_header(path, what)
            info = scans.check_header(image, path, what, channel=frame, hint=FRAME_HINT)
            voxels, affine = np.asarray(scans.load_voxels(image, path, what, channel=info.channel)), image.affine
        elif lower.endswith(ITK_EXTENSIONS):
            voxels, affine = _read_itk(path, what, frame)
        else:
            case_name(path)  # raises: not a scan the converter reads
            raise ConvertError(f"{what} {path} is not a scan the converter reads")
        affine = np.asarray(affine, dtype=np.float64)
        _check_grid(voxels, affine, path, what)
    except ConvertError:
        raise
    except (ScanError, DicomSeriesError) as err:
        raise ConvertError(str(err)) from err
    return voxels, affine


def grid_differences(image_affine: np.ndarray, label_affine: np.ndarray) -> list[str]:
    """What differs between two voxel grids beyond the tolerances: origin, spacing, axis directions.

    See docs/own_data.md.

    Args:
        image_affine, label_affine: voxel -> world affines (4, 4).

    Returns:
        One phrase per difference; empty when the grids agree.
    """
    a, b = np.asarray(image_affine, dtype=np.float64), np.asarray(label_affine, dtype=np.float64)
    found = []
    origin = float(np.linalg.norm(a[:3, 3] - b[:3, 3]))
    if origin > ORIGIN_ATOL_MM:
        found.append(f"origin differs by {origin:.4g} mm ({np.round(a[:3, 3], 3)} vs {np.round(b[:3, 3], 3)})")
    sa, sb = np.linalg.norm(a[:3, :3], axis=0), np.linalg.norm(b[:3, :3], axis=0)
    if np.abs(sa - sb).max() > SPACING_ATOL_MM:
        found.append(f"spacing differs ({np.round(sa, 4)} vs {np.round(sb, 4)} mm)")
    da, db = a[:3, :3] / sa, b[:3, :3] / sb
    angle = max(float(np.arctan2(np.linalg.norm(np.cross(da[:, k], db[:, k])), da[:, k] @ db[:, k])) for k in range(3))
    if angle > DIRECTION_ATOL_RAD:
        found.append(f"axis directions differ by up to {angle:.3g} rad{' (an axis is flipped)' if angle > 3 else ''}")
    return found


def check_pair(case: str, image: tuple, label: tuple, paths: tuple[Path, Path]) -> None:
    """Refuse a label whose shape or voxel grid differs from its image's. See docs/own_data.md.

    Args:
        case: the case name.
        image, label: ``(voxels, affine)`` as :func:`read_volume` returns them.
        paths: ``(image path, label path)``, for the message.
    """
    if image[0].shape != label[0].shape:
        raise ConvertError(
            f"Label {paths[1]} is {label[0].shape} voxels, its image {paths[0]} {image[0].shape} (case {case!r}): "
            "a label must have its image's shape. Re-export the label on the image's grid (nearest-neighbour)"
        )
    differences = grid_differences(image[1], label[1])
    if differences:
        raise ConvertError(
            f"Label {paths[1]} is not on the voxel grid of image {paths[0]} (case {case!r}): {'; '.join(differences)}"
            ". Resample the label onto the image (nearest-neighbour) or fix its header"
        )


def label_array(voxels: np.ndarray, path: Path) -> np.ndarray:
    """A label map as integers: uint8, or int16 above 255; non-integer or negative values are refused.

    See docs/own_data.md.

    Args:
        voxels: the label's voxels.
        path: the label file, for the message.

    Returns:
        The label map as uint8 or int16.
    """
    off = voxels != np.round(voxels) if voxels.dtype.kind == "f" else np.zeros(0, bool)
    if off.any():
        raise ConvertError(
            f"Label {path} holds {int(off.sum())} non-integer value(s) (e.g. {float(voxels[off][0]):g}): a label map "
            "holds integer class ids (was it resampled with linear interpolation?). Re-export it with nearest-neighbour"
        )
    lo, hi = (float(voxels.min()), float(voxels.max())) if voxels.size else (0.0, 0.0)
    if lo < 0 or hi > MAX_LABEL:
        raise ConvertError(f"Label {path} holds values from {lo:g} to {hi:g}: class ids must be 0 to {MAX_LABEL}")
    return voxels.astype(np.uint8 if hi <= 255 else np.int16)


def parse_label_names(spec: str | dict | None) -> dict[int, str] | None:
    """``"1=LV,2=MYO"`` or ``{1: "LV"}`` as ``{1: "LV", 2: "MYO"}`` (None stays None). See docs/own_data.md."""
    if spec is None:
        return None
    items = spec.items() if isinstance(spec, dict) else [p.split("=", 1) for p in str(spec).split(",") if p.strip()]
    try:
        names = {int(str(k).strip()): str(v).strip() for k, v in items}
    except ValueError as err:
        raise ConvertError(
            f"--label_names {spec!r}: write it as 1=LV,2=MYO (integer id = name, comma-separated)"
        ) from err
    if not names or any(k < 0 or not v for k, v in names.items()):
        raise ConvertError(f"--label_names {spec!r}: give ids >= 0 with non-empty names, e.g. 1=LV,2=MYO")
    return names


def check_out(out: str | Path, sources: dict[str, Path], *, force: bool = False) -> Path:
    """Refuse an ``--out`` that is or lies inside a source or holds one, or is not empty (see ``force``).

    See docs/own_data.md.

    Args:
        out: the MSD folder to write.
        sources: ``{flag: resolved folder}`` of the inputs.
        force: allow replacing a folder that holds :data:`MARKER` (an earlier conversion); never any other.

    Returns:
        ``out`` as an absolute path (links resolved).
    """
    given = Path(out).expanduser()
    scans.refuse_broken_link(given, "--out")
    out = given.resolve()
    for flag, src in sources.items():
        if out == src or src in out.parents:
            raise ConvertError(
                f"--out {given} is inside the source folder {flag} {src}: the converter never writes into its "
                "input. Choose an --out outside it (e.g. a sibling folder)"
            )
        if out in src.parents:
            raise ConvertError(f"source folder {flag} {src} is inside --out {given}: choose an --out outside it")
    if out.exists() and not out.is_dir():
        raise ConvertError(f"--out {given} is a file: choose a folder")
    if out.is_dir() and any(out.iterdir()) and not (force and (out / MARKER).is_file()):
        raise ConvertError(
            f"--out {given} is not empty and holds no {MARKER} (it is not an earlier conversion): choose a new "
            "folder; --force replaces only an earlier conversion"
            if force
            else f"--out {given} is not empty: choose a new folder, or pass --force to replace an earlier conversion"
        )
    return out


def _write_nifti(voxels: np.ndarray, affine: np.ndarray, path: Path) -> None:
    """Save a 3D volume as .nii.gz in its own data type, ``affine`` as qform and sform (scanner space, mm)."""
    import nibabel as nib

    image = nib.Nifti1Image(voxels, affine, dtype=voxels.dtype)
    image.set_qform(affine, code=1)
    image.set_sform(affine, code=1)
    image.header.set_xyzt_units("mm", "sec")
    nib.save(image, str(path))


def _image_voxels(voxels: np.ndarray, path: Path) -> np.ndarray:
    """An image in its own integer type (bool as uint8) or float32; a blank (constant) image is refused."""
    if voxels.size and float(voxels.min()) == float(voxels.max()):
        raise ConvertError(
            f"Image {path} is blank: every voxel is {float(voxels.min()):g}. Re-export it or leave it out"
        )
    if voxels.dtype.kind in "iu":
        return voxels
    return voxels.astype(np.uint8 if voxels.dtype.kind == "b" else np.float32)


def _write_case(tmp: Path, case: str, paths: tuple[Path, Path], frame: int | None, names: dict | None) -> set[int]:
    """Read, check and write one training case (the label on its image's grid); returns its label values."""
    image, label = read_volume(paths[0], frame, "Image"), read_volume(paths[1], frame, "Label")
    check_pair(case, image, label, paths)
    labels = label_array(label[0], paths[1])
    values = {int(v) for v in np.unique(labels)}
    unnamed = sorted(values - {0} - set(names or {}))
    if names is not None and unnamed:
        raise ConvertError(
            f"Label {paths[1]} holds value(s) {unnamed} that --label_names does not name: add them (e.g. "
            "--label_names 1=LV,2=MYO,3=RV) or fix the label"
        )
    _write_nifti(_image_voxels(image[0], paths[0]), image[1], tmp / "imagesTr" / f"{case}.nii.gz")
    _write_nifti(labels, image[1], tmp / "labelsTr" / f"{case}.nii.gz")
    return values


def _dataset_json(pairs: list, tests: dict, found: set[int], names: dict | None, fields: dict) -> dict:
    """dataset.json in MSD's form; ``labels`` from ``names`` or numbered from the values found."""
    labels = {"0": (names or {}).get(0, "background")}
    labels.update(
        {str(v): names[v] for v in sorted(names) if v} if names else {str(v): f"label_{v}" for v in sorted(found) if v}
    )
    return {
        **fields,
        "tensorImageSize": "3D",
        "labels": labels,
        "numTraining": len(pairs),
        "numTest": len(tests),
        "training": [{"image": f"./imagesTr/{c}.nii.gz", "label": f"./labelsTr/{c}.nii.gz"} for c, _, _ in pairs],
        "test": [f"./imagesTs/{c}.nii.gz" for c in tests],
    }


def _build(
    tmp: Path, pairs: list, tests: dict, frame: int | None, names: dict | None, fields: dict, sources: dict
) -> dict:
    """Write every case, dataset.json and the marker into ``tmp``, then validate it; returns dataset.json."""
    for sub in ("imagesTr", "labelsTr", "imagesTs"):
        (tmp / sub).mkdir(parents=True)
    found: set[int] = set()
    for case, image_path, label_path in pairs:
        found |= _write_case(tmp, case, (image_path, label_path), frame, names)
    if found <= {0}:
        raise ConvertError(f"every label in {pairs[0][2].parent} is background (0) only: there is nothing to learn")
    for case, path in tests.items():
        voxels, affine = read_volume(path, frame, "Image")
        _write_nifti(_image_voxels(voxels, path), affine, tmp / "imagesTs" / f"{case}.nii.gz")
    meta = _dataset_json(pairs, tests, found, names, fields)
    (tmp / "dataset.json").write_text(json.dumps(meta, indent=2), encoding="utf-8")
    marker = {
        "written_by": "heartseg_utils.convert",
        "sources": sources,
        "frame": frame,
        "training": [{"case": c, "image": str(i), "label": str(la)} for c, i, la in pairs],
        "test": [{"case": c, "image": str(p)} for c, p in tests.items()],
    }
    (tmp / MARKER).write_text(json.dumps(marker, indent=2), encoding="utf-8")
    try:
        data.validate_dataset(tmp)
    except ScanError as err:  # every check above should have caught it first: a gap in the converter
        raise ConvertError(f"the converted folder fails data.validate_dataset ({err}); please report it") from err
    return meta


def _move_into_place(tmp: Path, out: Path) -> None:
    """Rename the finished ``tmp`` to ``out``; an earlier conversion there is moved aside first, then removed."""
    if out.is_dir() and any(out.iterdir()):
        if not (out / MARKER).is_file():  # checked before writing; again in case the folder changed meanwhile
            raise ConvertError(f"--out {out} is not empty and holds no {MARKER}: choose a new folder")
        trash = Path(tempfile.mkdtemp(prefix=f".{out.name}.old-", dir=out.parent))
        out.rename(trash / out.name)
        try:
            tmp.rename(out)
        except OSError:
            (trash / out.name).rename(out)  # the earlier conversion goes back where it was
            raise
        shutil.rmtree(trash, ignore_errors=True)
        return
    if out.is_dir():
        out.rmdir()
    tmp.rename(out)


def _inputs(images: Any, labels: Any, test: Any, frame: Any) -> tuple[dict[str, Path], list, dict[str, Path]]:
    """The checked source folders, the training pairs and the test images (nothing is read but folder listings)."""
    sources = {"--images": _source_dir(images, "--images"), "--labels": _source_dir(labels, "--labels")}
    if test is not None:
        sources["--test"] = _source_dir(test, "--test")
    if len(set(sources.values())) < len(sources):
        raise ConvertError(
            f"{', '.join(f'{k} {v}' for k, v in sources.items())}: the folders must differ; put images, labels and "
            "test images in folders of their own"
        )
    if frame is not None and (isinstance(frame, bool) or not isinstance(frame, (int, np.integer)) or frame < 0):
        raise ConvertError(f"--frame {frame!r}: a frame is a whole number from 0")
    pairs = pair_cases(images, labels)
    tests = list_cases(test, "image", "--test") if test is not None else {}
    clash = sorted(set(tests) & {case for case, _, _ in pairs})
    if clash:
        raise ConvertError(f"test image {tests[clash[0]]} is case {clash[0]!r}, a training case too: rename one")
    return sources, pairs, tests


def convert_dataset(
    images: str | Path,
    labels: str | Path,
    out: str | Path,
    *,
    test: str | Path | None = None,
    label_names: str | dict | None = None,
    frame: int | None = None,
    force: bool = False,
    name: str | None = None,
    description: str | None = None,
    modality: str = "MRI",
    licence: str = "unknown",
    verbose: bool = True,
) -> dict[str, Any]:
    """Convert a folder of images and one of labels (and of test images) into a new MSD folder. See docs/own_data.md.

    Args:
        images, labels: the source folders (only read). test: an optional folder of unlabelled images.
        out: the MSD folder to write: new, empty, or (with ``force``) an earlier conversion.
        label_names: ``"1=LV,2=MYO"`` or ``{1: "LV"}``; None numbers the values found (``"1": "label_1"``).
        frame: the frame of 4D scans (from 0). force: replace an earlier conversion at ``out``.
        name, description, modality, licence: dataset.json's fields (``name`` defaults to the folder's name).
        verbose: print each pair (``case: image <- label``) and the summary.

    Returns:
        ``{"out", "cases", "test_cases", "labels", "numTraining", "numTest"}``, once ``data.validate_dataset`` passed.
    """
    sources, pairs, tests = _inputs(images, labels, test, frame)
    target, names = check_out(out, sources, force=force), parse_label_names(label_names)
    for case, image_path, label_path in pairs if verbose else []:
        print(f"{case}: {image_path} <- {label_path}")
    fields = {"name": name or target.name, "description": description or f"Converted from {sources['--images']}"}
    fields |= {"reference": "", "licence": licence, "release": "", "modality": {"0": modality}}
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.parent / f".{target.name}.convert-{uuid.uuid4().hex[:8]}"
    try:
        meta = _build(tmp, pairs, tests, frame, names, fields, {k[2:]: str(v) for k, v in sources.items()})
        _move_into_place(tmp, target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    summary = {"out": str(target), "cases": [c for c, _, _ in pairs], "test_cases": list(tests)}
    summary |= {key: meta[key] for key in ("labels", "numTraining", "numTest")}
    if verbose:
        print(
            f"wrote {target} (data.validate_dataset passed): {len(pairs)} training case(s), {len(tests)} test "
            f"image(s), labels {meta['labels']}"
        )
    return summary


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """``python -m heartseg_utils.convert``: parse the flags and convert. See docs/own_data.md.

    Args:
        argv: the arguments (default ``sys.argv[1:]``).

    Returns:
        The summary of :func:`convert_dataset`.
    """
    parser = argparse.ArgumentParser(
        prog=PROG, description="Turn a folder of images and one of labels into an MSD folder (docs/own_data.md)."
    )
    add = parser.add_argument
    add("--images", required=True, help="folder of images: scan files, or one DICOM series folder per case")
    add("--labels", required=True, help="folder of label maps (paired with the images by case name)")
    add("--out", required=True, help="the MSD folder to write (new, or empty)")
    add("--test", default=None, help="optional folder of unlabelled test images (imagesTs/)")
    add("--label_names", default=None, help="class names, e.g. 1=LV,2=MYO (default: label_1, label_2, ...)")
    add("--frame", type=int, default=None, help="the frame of 4D scans to convert (from 0)")
    add("--modality", default="MRI", help='dataset.json "modality" ({"0": MODALITY})')
    add("--name", default=None, help="dataset.json name (default: the --out folder's name)")
    add("--description", default=None, help="dataset.json description")
    add("--licence", "--license", dest="licence", default="unknown", help="dataset.json licence")
    add("--force", action="store_true", help=f"replace an earlier conversion at --out (a folder holding {MARKER})")
    cli.add_debug_flag(parser)
    args = vars(parser.parse_args(argv))
    del args["debug"]
    return convert_dataset(args.pop("images"), args.pop("labels"), args.pop("out"), **args)


if __name__ == "__main__":
    sys.exit(cli.run(main, PROG))
