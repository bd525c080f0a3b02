"""Data access for the heartseg series: MSD folders, the Task02_Heart download, validation, splits.

Any folder in Medical Segmentation Decathlon (MSD) layout works: ``dataset.json``, ``imagesTr/``,
``labelsTr/`` and an optional ``imagesTs/``. The default data folder is ``$HEARTSEG_DATA_DIR`` if set, else
the repository's ``data/`` folder (see ``data/README.md``, the data card).

This module imports only the standard library, numpy, nibabel and ``heartseg_utils.scans`` (no torch); MONAI is
imported inside ``download_task02_heart`` only. Importing it has no side effects.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import socket
import tempfile
import threading
import urllib.parse
import urllib.request
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from heartseg_utils import runs, scans
from heartseg_utils.scans import ScanError

# MONAI's DecathlonDataset resource for Task02_Heart (monai/apps/datasets.py: DecathlonDataset.resource / .md5).
TASK02_URL = "https://msd-for-monai.s3-us-west-2.amazonaws.com/Task02_Heart.tar"
TASK02_MD5 = "06ee59366e1e5124267b774dbd654057"

DATA_ENV_VAR = "HEARTSEG_DATA_DIR"
REAL_DIRNAME = "Task02_Heart"
SYNTHETIC_DIRNAME = "Task02_Heart_synthetic"
AFFINE_ATOL = 1e-3

_MSD_HINT = (
    "Point data_dir (or $HEARTSEG_DATA_DIR) at an MSD folder (dataset.json, imagesTr/, labelsTr/), "
    'or leave data_dir="" to use the synthetic default dataset.'
)


class DatasetError(ScanError):
    """Bad or missing input data; the message names the file, the problem and the fix.

    Introduced in notebook 01. A ``ValueError``; derives from ``scans.ScanError``, the error of the scan check
    that ``validate_dataset`` and ``predict`` share.
    """


# --------------------------------------------------------------------------------------------------
# Where the data lives
# --------------------------------------------------------------------------------------------------
def _repo_data_dir() -> Path:
    return Path(__file__).resolve().parents[1] / "data"


def resolve_data_dir(data_dir: str | os.PathLike[str] | None = "") -> Path:
    """Resolve the data folder: the argument, else ``$HEARTSEG_DATA_DIR``, else the repo's ``data/``.

    Introduced in notebook 01.

    Args:
        data_dir: a folder, or ``""``/``None`` for the default.

    Returns:
        The absolute folder path (it may not exist yet).
    """
    if data_dir is not None and str(data_dir).strip():
        chosen = Path(str(data_dir).strip())
    elif os.environ.get(DATA_ENV_VAR, "").strip():
        chosen = Path(os.environ[DATA_ENV_VAR].strip())
    else:
        chosen = _repo_data_dir()
    return chosen.expanduser().resolve()


def get_dataset_dir(data_dir: str | os.PathLike[str] | None = "", *, seed: int = 0) -> Path:
    """Return the MSD folder to use, generating the synthetic default dataset once if needed.

    The resolved folder (see ``resolve_data_dir``) is the MSD folder if it holds a ``dataset.json``; else
    ``<folder>/Task02_Heart`` (the real data) if present; else ``<folder>/Task02_Heart_synthetic``, which is
    generated (deterministic in ``seed``) only when ``data_dir`` was left at the default, and reused afterwards.
    An explicit ``data_dir`` with none of these raises ``DatasetError``.

    Introduced in notebook 01.

    Args:
        data_dir: an MSD folder, a folder containing ``Task02_Heart``, or ``""`` for the default.
        seed: seed of the synthetic dataset (used only when it is generated).

    Returns:
        Absolute path of the MSD folder.
    """
    explicit = data_dir is not None and bool(str(data_dir).strip())
    folder = resolve_data_dir(data_dir)
    if (folder / "dataset.json").is_file():
        return folder
    if (folder / REAL_DIRNAME).is_dir():
        return folder / REAL_DIRNAME
    synthetic_dir = folder / SYNTHETIC_DIRNAME
    if explicit:
        if (synthetic_dir / "dataset.json").is_file():  # generated earlier: reuse, never generate here
            return synthetic_dir
        if not folder.exists():
            raise DatasetError(f"Data folder {folder} does not exist. {_MSD_HINT}")
        raise DatasetError(
            f"Data folder {folder} has neither a dataset.json nor a {REAL_DIRNAME}/ folder inside. {_MSD_HINT}"
        )
    if not (synthetic_dir / "dataset.json").is_file():
        from heartseg_utils import synthetic  # lazy: only needed the first time

        folder.mkdir(parents=True, exist_ok=True)
        synthetic.make_synthetic_dataset(synthetic_dir, seed=seed)
    return synthetic_dir


# --------------------------------------------------------------------------------------------------
# dataset.json and datalists
# --------------------------------------------------------------------------------------------------
def load_dataset_json(dataset_dir: str | os.PathLike[str]) -> dict:
    """Read and sanity-check an MSD ``dataset.json``.

    Introduced in notebook 01.

    Args:
        dataset_dir: the MSD folder.

    Returns:
        The parsed JSON object (it has a ``"training"`` list).
    """
    path = Path(dataset_dir).expanduser().resolve() / "dataset.json"
    if not path.is_file():
        raise DatasetError(f"{path} is missing: every MSD folder needs a dataset.json. {_MSD_HINT}")
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise DatasetError(
            f"{path} is not valid JSON ({exc.msg} at line {exc.lineno}, column {exc.colno}). "
            "Fix the syntax (e.g. check with `python -m json.tool dataset.json`) or restore the original file."
        ) from exc
    except (OSError, UnicodeDecodeError) as exc:
        raise DatasetError(f"{path} cannot be read ({exc}). Check the file's permissions and encoding.") from exc
    if not isinstance(meta, dict):
        raise DatasetError(f'{path} must hold a JSON object with a "training" list, found {type(meta).__name__}.')
    if "training" not in meta:
        raise DatasetError(
            f'{path} has no "training" key. Add a "training" list of '
            '{"image": "./imagesTr/<case>.nii.gz", "label": "./labelsTr/<case>.nii.gz"} entries.'
        )
    if not isinstance(meta["training"], list):
        raise DatasetError(f'{path}: "training" must be a list of {{"image", "label"}} entries.')
    if "labels" in meta and not isinstance(meta["labels"], dict):
        raise DatasetError(f'{path}: "labels" must be an object such as {{"0": "background", "1": "left atrium"}}.')
    return meta


def case_name(path: str | os.PathLike[str]) -> str:
    """A case's name: the file's or folder's name without .nii/.nii.gz (any case). Introduced in notebook 01.

    The one rule for every case id: dataset.json items, prediction masks and their reports.
    """
    name = Path(path).name
    for suffix in (".nii.gz", ".nii"):
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return name


def load_datalist(dataset_dir: str | os.PathLike[str], section: str = "training") -> list[dict]:
    """List the cases of one ``dataset.json`` section with absolute paths.

    Introduced in notebook 01.

    Args:
        dataset_dir: the MSD folder.
        section: ``"training"`` (image + label) or ``"test"`` (image only); a missing ``"test"`` gives ``[]``.

    Returns:
        Dicts ``{"case": "la_003", "image": "/abs/imagesTr/la_003.nii.gz", "label": "/abs/labelsTr/..."}``
        (no ``"label"`` for entries that are plain image paths, as in the MSD test section).
    """
    root = Path(dataset_dir).expanduser().resolve()
    meta = load_dataset_json(root)
    json_path = root / "dataset.json"
    if section not in meta:
        if section == "test":
            return []
        sections = [k for k, v in meta.items() if isinstance(v, list)]
        raise DatasetError(f'{json_path} has no "{section}" section; available list sections: {sections}.')
    entries = meta[section]
    if not isinstance(entries, list):
        raise DatasetError(f'{json_path}: "{section}" must be a list.')
    items: list[dict] = []
    for i, entry in enumerate(entries):
        if isinstance(entry, str):
            entry = {"image": entry}
        if not isinstance(entry, dict) or not isinstance(entry.get("image"), str):
            raise DatasetError(
                f'{json_path}: "{section}" entry {i} ({entry!r}) needs an "image" path string. '
                'Use {"image": "./imagesTr/<case>.nii.gz", "label": "./labelsTr/<case>.nii.gz"}.'
            )
        if section == "training" and not isinstance(entry.get("label"), str):
            raise DatasetError(
                f'{json_path}: training entry {i} ({entry["image"]}) has no "label" path. '
                'Add the matching "./labelsTr/<case>.nii.gz" or move the image to the "test" section.'
            )
        item = {"case": case_name(entry["image"]), "image": str((root / entry["image"]).resolve())}
        if isinstance(entry.get("label"), str):
            item["label"] = str((root / entry["label"]).resolve())
        items.append(item)
    return items


# --------------------------------------------------------------------------------------------------
# Validation
# --------------------------------------------------------------------------------------------------
_TRAINING_CHANNEL_HINT = (
    "training reads one channel. Save the channel to train on as a 3D NIfTI (e.g. nibabel: "
    "nib.save(img.slicer[..., 0], path)) and list that file in dataset.json."
)


def validate_dataset(dataset_dir: str | os.PathLike[str], *, check_voxels: bool = True) -> list[dict]:
    """Check an MSD folder before training; raise ``DatasetError`` on the first problem found.

    Checks: dataset.json present and well-formed, a non-empty training list, every listed path inside the data
    folder (no ``../`` or absolute path leading out of it), every listed image and label present and readable,
    each image passing the scan check of :mod:`heartseg_utils.scans` (a sane header size, 3D or 4D with one frame,
    positive spacing), image/label spatial shapes and affines (atol 1e-3) agree, and, with ``check_voxels``, that
    the voxels decompress, the image holds no NaN/inf and is not constant (blank), and the label values are keys of
    dataset.json's ``"labels"``. Nothing in the folder is modified.

    Introduced in notebook 01.

    Args:
        dataset_dir: the MSD folder.
        check_voxels: also read every voxel (slower; catches truncated files, NaN/inf, stray label values).

    Returns:
        The training datalist (as ``load_datalist``).
    """
    _check_dataset_dir(dataset_dir)
    root = Path(dataset_dir).expanduser().resolve()
    meta = load_dataset_json(root)
    json_path = root / "dataset.json"
    _check_entries_inside(meta, root, json_path)
    items = load_datalist(root, "training")
    if not items:
        raise DatasetError(
            f'{json_path} lists no training cases ("training" is empty). '
            "Add image/label entries, or point data_dir at a complete MSD folder."
        )
    seen: dict[str, str] = {}
    for item in items:
        if item["case"] in seen:
            raise DatasetError(
                f"{json_path}: case id {item['case']!r} appears twice ({seen[item['case']]} and {item['image']}). "
                "Remove the duplicate entry."
            )
        seen[item["case"]] = item["image"]
    allowed = _allowed_label_values(meta, json_path)
    for item in items:
        img, lbl = _check_case_headers(item, json_path)
        if check_voxels:
            _check_case_voxels(item, img, lbl, allowed, json_path)
        img.uncache()
        lbl.uncache()
    return items


def _check_dataset_dir(dataset_dir: str | os.PathLike[str]) -> None:
    """The dataset folder exists (a symbolic link loop or a dangling link is said as such)."""
    link = scans.broken_link(Path(dataset_dir).expanduser())
    if link:
        raise DatasetError(f"Dataset folder {link}. {_MSD_HINT}")
    root = Path(dataset_dir).expanduser().resolve()
    if not root.is_dir():
        raise DatasetError(f"Dataset folder {root} does not exist. {_MSD_HINT}")


def _check_entries_inside(meta: dict, root: Path, json_path: Path) -> None:
    """Every image/label path of dataset.json stays inside the data folder (``..`` and absolute paths included).

    A path that runs into a symbolic link loop is refused here too (resolving it would raise).

    The check is on the written path (normalised, links not followed), so a data folder may hold symbolic links to
    where its files really are; what it may not do is name files outside itself.
    """
    for section in ("training", "test"):
        entries = meta.get(section)
        for i, entry in enumerate(entries if isinstance(entries, list) else []):
            paths = [entry] if isinstance(entry, str) else [entry.get(k) for k in ("image", "label")]
            for raw in [p for p in paths if isinstance(p, str)]:
                written = Path(os.path.normpath(root / raw))
                if scans.is_link_loop(root / raw):
                    raise DatasetError(
                        f"{json_path}: {section} entry {i} names {raw!r}, a symbolic link loop (it points, directly "
                        "or through others, back at itself). Fix the link or remove the entry."
                    )
                if written != root and root not in written.parents:
                    raise DatasetError(
                        f"{json_path}: {section} entry {i} names {raw!r}, which is outside the data folder {root}. "
                        f'dataset.json paths must stay inside its folder (e.g. "./imagesTr/<case>.nii.gz"): copy '
                        "or link the file into the folder and list it there."
                    )


def _allowed_label_values(meta: dict, json_path: Path) -> set[float] | None:
    """The class ids of dataset.json's ``"labels"`` as floats; None where it has no ``"labels"``."""
    if "labels" not in meta:
        return None
    try:
        return {float(int(k)) for k in meta["labels"]}
    except (TypeError, ValueError) as exc:
        raise DatasetError(
            f'{json_path}: "labels" keys must be integer class ids as strings, e.g. {{"0": "background"}}.'
        ) from exc


def _as_dataset_error(err: ScanError) -> DatasetError:
    """The scan check's error as a ``DatasetError`` (same message)."""
    return err if isinstance(err, DatasetError) else DatasetError(str(err))


def _load_checked_header(path: Path, what: str, hint: str) -> Any:
    """Open one listed file and run the header part of the scan check on it (nothing but the header is read)."""
    try:
        img = scans.load_header(path, what)
        info = scans.check_header(img, path, what, hint=hint)
    except ScanError as err:
        raise _as_dataset_error(err) from err
    if len(info.shape) > 4:
        raise DatasetError(f"{what} {path} has shape {info.shape}: {_TRAINING_CHANNEL_HINT}")
    return img


def _check_case_headers(item: dict, json_path: Path) -> tuple[Any, Any]:
    """Both files of a case exist, and their headers agree on shape and affine; returns the two nibabel images."""
    image_path, label_path = Path(item["image"]), Path(item["label"])
    for path in (image_path, label_path):
        link = scans.broken_link(path)
        if link:
            raise DatasetError(f"Listed file {link} (case {item['case']}, in {json_path})")
    if not image_path.is_file():
        raise DatasetError(
            f"Listed image {image_path} (case {item['case']}, in {json_path}) is missing. "
            "Restore the file or remove its entry from dataset.json."
        )
    if not label_path.is_file():
        raise DatasetError(
            f"Image {image_path} has no label: {label_path} (listed in {json_path}) is missing. "
            'Add the label file, or move the image to the "test" section of dataset.json.'
        )
    img = _load_checked_header(image_path, "Image", _TRAINING_CHANNEL_HINT)
    lbl = _load_checked_header(label_path, "Label", "a label is one 3D volume of class ids; re-export it as 3D.")
    img_shape, lbl_shape = tuple(img.shape), tuple(lbl.shape)
    if len(lbl_shape) != 3 or img_shape[:3] != lbl_shape:
        raise DatasetError(
            f"Shape mismatch for case {item['case']}: image {image_path} is {img_shape}, "
            f"label {label_path} is {lbl_shape}; the label must have the image's spatial shape "
            "(3D label, 3D image or 4D with one frame). Re-export the label on the image's voxel grid."
        )
    if not np.allclose(img.affine, lbl.affine, rtol=0.0, atol=AFFINE_ATOL):
        raise DatasetError(
            f"Affine mismatch for case {item['case']}: label {label_path} is not on the voxel grid of image "
            f"{image_path} (max difference {np.abs(img.affine - lbl.affine).max():.4g} > {AFFINE_ATOL}). "
            "Resample the label onto the image (nearest-neighbour) or fix its header."
        )
    return img, lbl


def _check_case_voxels(item: dict, img: Any, lbl: Any, allowed: set[float] | None, json_path: Path) -> None:
    """The voxels decompress, the image is finite and not blank, the label holds only allowed class ids."""
    image_path, label_path = Path(item["image"]), Path(item["label"])
    try:
        image = scans.load_voxels(img, image_path, "Image")
        scans.check_finite(image, image_path, "Image")
    except ScanError as err:
        raise _as_dataset_error(err) from err
    if image.size and float(image.min()) == float(image.max()):
        raise DatasetError(
            f"Image {image_path} is blank: every voxel is {float(image.min()):g}. A z-score of a constant volume "
            "divides by a standard deviation of 0 (NaN). Re-export the scan or remove the case from dataset.json."
        )
    del image
    try:
        values = np.unique(scans.load_voxels(lbl, label_path, "Label"))  # also catches a truncated label file
    except ScanError as err:
        raise _as_dataset_error(err) from err
    stray = [] if allowed is None else [v for v in values.tolist() if float(v) not in allowed]
    if stray:
        shown = ", ".join(f"{v:g}" for v in stray[:8]) + (" ..." if len(stray) > 8 else "")
        raise DatasetError(
            f'Label {label_path} holds values [{shown}] that are not keys of "labels" in {json_path} '
            f"(allowed: {sorted(int(a) for a in allowed)}). Labels must be integer class ids: resample "
            'them with nearest-neighbour interpolation, or add the class to "labels".'
        )


# --------------------------------------------------------------------------------------------------
# Download of the real Task02_Heart
# --------------------------------------------------------------------------------------------------
def _md5(path: Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.md5()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(chunk), b""):
            digest.update(block)
    return digest.hexdigest()


def _can_connect(url: str, timeout: float) -> bool:
    """Whether a TCP connection to the URL's host (or its proxy) opens within ``timeout`` (DNS included)."""
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in ("http", "https"):
        return True  # file:// and friends need no network
    host, port = parts.hostname or "", parts.port or (443 if parts.scheme == "https" else 80)
    proxy = urllib.request.getproxies().get(parts.scheme)
    if proxy and not urllib.request.proxy_bypass(host):
        proxy_parts = urllib.parse.urlsplit(proxy if "://" in proxy else f"http://{proxy}")
        host, port = proxy_parts.hostname or host, proxy_parts.port or 80
    result: list[bool] = []

    def probe() -> None:
        try:
            socket.create_connection((host, port), timeout=timeout).close()
            result.append(True)
        except OSError:
            result.append(False)

    thread = threading.Thread(target=probe, daemon=True)  # bounds a hanging DNS lookup, too
    thread.start()
    thread.join(timeout)
    return bool(result and result[0])


def download_task02_heart(
    root: str | os.PathLike[str],
    *,
    progress: bool = True,
    url: str = TASK02_URL,
    md5: str = TASK02_MD5,
    timeout: float = 10.0,
) -> Path:
    """Download Task02_Heart.tar into ``root``, verify its md5, then extract ``root/Task02_Heart``.

    A tar already at ``root/Task02_Heart.tar`` (e.g. copied from another machine) is verified and
    extracted without any network access. Extraction happens only after the checksum matches, into a
    temporary folder that is renamed when complete. Offline, it fails within ``timeout`` seconds.

    Introduced in notebook 01.

    Args:
        root: the data folder that will hold ``Task02_Heart.tar`` and ``Task02_Heart/``.
        progress: show a download progress bar.
        url: where to download from (MONAI's resource by default; tests pass a ``file://`` URL).
        md5: expected md5 of the tar.
        timeout: seconds allowed for the connectivity check.

    Returns:
        Path of the extracted MSD folder ``root/Task02_Heart``.
    """
    root = Path(root).expanduser().resolve()
    dest = root / REAL_DIRNAME
    if (dest / "dataset.json").is_file():
        return dest
    tar_path = root / f"{REAL_DIRNAME}.tar"
    manual = (
        f'Either use the synthetic default (data_dir=""), or download {url} on a machine with internet '
        f"access and place it at {tar_path}; it will be verified (md5 {md5}) and extracted on the next call."
    )
    root.mkdir(parents=True, exist_ok=True)
    if not tar_path.is_file():
        if not _can_connect(url, timeout):
            raise DatasetError(
                f"Cannot download Task02_Heart: {urllib.parse.urlsplit(url).hostname} is unreachable "
                f"(offline?). {manual}"
            )
        from monai.apps import download_url  # lazy: imports torch

        previous = socket.getdefaulttimeout()
        socket.setdefaulttimeout(60.0)  # a stalled transfer fails instead of hanging forever
        try:
            download_url(url, filepath=tar_path, hash_val=md5, hash_type="md5", progress=progress)
        except Exception as exc:  # URLError, HTTPError, HashCheckError, RuntimeError, OSError
            raise DatasetError(
                f"Download of {url} to {tar_path} failed ({type(exc).__name__}: {exc}). {manual}"
            ) from exc
        finally:
            socket.setdefaulttimeout(previous)
        if not tar_path.is_file():
            raise DatasetError(f"Download of {url} did not produce {tar_path}. {manual}")
    found = _md5(tar_path)
    if found != md5.lower():
        raise DatasetError(
            f"{tar_path} has md5 {found}, expected {md5}: the file is incomplete or not Task02_Heart.tar. "
            f"Delete it and run again, or replace it with a good copy of {url}. Nothing was extracted."
        )
    from monai.apps import extractall  # lazy: imports torch; guards against path traversal in the tar

    staging = Path(tempfile.mkdtemp(prefix=".extract-", dir=root))
    try:
        extractall(tar_path, staging, has_base=False)
        extracted = staging / REAL_DIRNAME
        if not (extracted / "dataset.json").is_file():
            raise DatasetError(f"{tar_path} does not contain {REAL_DIRNAME}/dataset.json; it is not an MSD tar.")
        os.replace(extracted, dest)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return dest


# --------------------------------------------------------------------------------------------------
# A run's cases (the split rules themselves are heartseg_utils.splits)
# --------------------------------------------------------------------------------------------------
def split_cases(
    run_dir: str | os.PathLike[str], key: str = "validation", items: Sequence[dict] | None = None
) -> list[dict]:
    """The datalist items of ``split.json[key]`` ("train", "validation" or "holdout") of a run.

    Introduced in notebook 05.

    Args:
        run_dir: a training run folder.
        key: which list of split.json.
        items: the datalist to look the case ids up in; default: the ``dataset_dir`` recorded in split.json.

    Returns:
        The items in split.json's order.
    """
    split, path = runs.read_split(run_dir), Path(run_dir).expanduser() / runs.SPLIT
    if key not in split:
        raise KeyError(f"{path} has no {key!r} list (it has {sorted(split)}); was it trained before notebook 05?")
    by_case = {it["case"]: it for it in (items if items is not None else load_datalist(split["dataset_dir"]))}
    missing = [c for c in split[key] if c not in by_case]
    if missing:
        raise ValueError(
            f"{key} cases {missing[:5]} of {path} are not in the dataset searched: wrong data_dir? The run was "
            f"trained on {split.get('dataset_dir', 'another dataset')}; pass that folder as data_dir, "
            "or use split='all'"
        )
    return [by_case[c] for c in split[key]]
