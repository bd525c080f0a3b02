"""Test shifts: a copy of an MSD folder whose scans carry one MR artefact or failure, for robustness and QC checks.

Real scans differ from the training data in ways a phantom does not show by default: a coil's smooth intensity
bias, ringing at sharp edges (Gibbs), a k-space spike (a herringbone pattern over the whole image), Rician
noise at low signal, a different contrast, or a field of view that misses most of the heart. :func:`write_shifted`
writes a new MSD folder where every labelled case carries one such shift, so a trained model (and its quality
control) can be measured on it. MONAI's intensity transforms make the artefacts; the crop and the inversion are
written here because no library transform does them. The source folder is only read.

Command line: ``python -m heartseg_utils.shifts SRC DST --kind bias_field`` (one folder per kind).
"""

from __future__ import annotations

import argparse
import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from heartseg_utils import data

# Each shift, in one sentence (the key is the `kind` argument).
SHIFTS: dict[str, str] = {
    "bias_field": "a smooth multiplicative bias across the field (about 25 % mean change), as from a surface coil",
    "gibbs": "ringing next to sharp edges (MONAI's Gibbs noise, alpha 0.4-0.6), as from a truncated k-space",
    "kspace_spike": "one bright k-space spike: a stripe pattern over the whole image (about 10 % mean change)",
    "rician": "Rician noise with a standard deviation of 15 % of the image's",
    "low_contrast": "intensities compressed by a gamma of 2.5 (dark tissue darker, contrast lost)",
    "inversion": "every voxel > 0 inverted, bright becomes dark (on the phantoms the noisy air too), as another MR "
    "sequence can show",
    "miss_heart": "the scan cropped along its slice axis so that about a fifth of the label is left",
}
MISS_HEART_FRACTION = 0.2  # the share of label voxels that the "miss_heart" crop keeps


def _monai_artefact(kind: str, seed: int) -> Callable[[np.ndarray], np.ndarray]:
    """One MONAI intensity transform, always applied (prob 1), seeded; it maps (x, y, z) float32 to the same."""
    import monai.transforms as mt

    make: dict[str, Callable[[], Any]] = {
        "bias_field": lambda: mt.RandBiasField(degree=3, coeff_range=(0.15, 0.25), prob=1.0),
        "gibbs": lambda: mt.RandGibbsNoise(prob=1.0, alpha=(0.4, 0.6)),
        "kspace_spike": lambda: mt.RandKSpaceSpikeNoise(prob=1.0, intensity_range=(17.0, 18.0)),
        "rician": lambda: mt.RandRicianNoise(prob=1.0, std=0.15, relative=True, sample_std=False),
        "low_contrast": lambda: mt.RandAdjustContrast(prob=1.0, gamma=(2.5, 2.5)),
    }
    xform = make[kind]()
    xform.set_random_state(seed=seed)
    return lambda image: np.asarray(xform(image[None]))[0].astype(np.float32)


def _invert(image: np.ndarray) -> np.ndarray:
    """Invert intensities inside the body (voxels > 0) and keep the background at 0."""
    body = image > 0
    out = np.zeros_like(image, dtype=np.float32)
    if body.any():
        lo, hi = float(image[body].min()), float(image[body].max())
        out[body] = hi + lo - image[body]
        out[body] = np.maximum(out[body], lo)  # stays > 0, so the crop to the body is unchanged
    return out


def miss_heart_slab(label: np.ndarray, fraction: float = MISS_HEART_FRACTION) -> slice:
    """The slices (last axis) to keep so that about ``fraction`` of the label's voxels remain, at one end.

    Args:
        label: the case's label map (x, y, z); non-zero is foreground.
        fraction: the share of foreground voxels to keep, in (0, 1).

    Returns:
        A slice of the last axis, at least 2 slices long, that starts at the volume's first slice.
    """
    per_slice = (np.asarray(label) != 0).sum(axis=(0, 1)).astype(float)
    total = per_slice.sum()
    if total == 0:
        raise ValueError("the label is empty: there is no heart to miss")
    first = int(np.flatnonzero(per_slice)[0])
    kept = np.cumsum(per_slice) / total
    stop = int(np.searchsorted(kept, fraction)) + 1
    return slice(0, max(stop, first + 1, 2))


def shift_case(image: np.ndarray, label: np.ndarray, kind: str, seed: int) -> tuple[np.ndarray, np.ndarray, slice]:
    """Apply one shift to a case.

    Args:
        image: (x, y, z) intensities.
        label: (x, y, z) label map, same shape.
        kind: a key of :data:`SHIFTS`.
        seed: seeds the random artefact.

    Returns:
        ``(image, label, kept)``: float32 image, the label (cropped like the image), and the slice of the last
        axis that was kept (all of it except for ``"miss_heart"``).
    """
    if kind not in SHIFTS:
        raise ValueError(f"unknown shift {kind!r}; choose one of {sorted(SHIFTS)}")
    image = np.asarray(image, dtype=np.float32)
    kept = slice(0, image.shape[-1])
    if kind == "inversion":
        image = _invert(image)
    elif kind == "miss_heart":
        kept = miss_heart_slab(label)
        image, label = image[..., kept], np.asarray(label)[..., kept]
    else:
        image = np.where(image > 0, np.maximum(_monai_artefact(kind, seed)(image), 1e-3), 0).astype(np.float32)
    return image, label, kept


def _write_case(item: dict, dst: Path, kind: str, seed: int) -> dict:
    import nibabel as nib

    img, lbl = nib.load(item["image"]), nib.load(item["label"])
    image, label, kept = shift_case(np.asarray(img.dataobj), np.asarray(lbl.dataobj), kind, seed)
    affine = img.affine.copy()
    affine[:3, 3] = img.affine[:3, :3] @ np.array([0, 0, kept.start]) + img.affine[:3, 3]
    name = Path(item["image"]).name
    out_img = nib.Nifti1Image(image, affine)
    out_lbl = nib.Nifti1Image(label.astype(np.uint8), affine)
    nib.save(out_img, str(dst / "imagesTr" / name))
    nib.save(out_lbl, str(dst / "labelsTr" / Path(item["label"]).name))
    return {"image": f"./imagesTr/{name}", "label": f"./labelsTr/{Path(item['label']).name}"}


def _new_folder(dst: Path, kind: str) -> None:
    """Check the shift and that ``dst`` is new or empty, then create its imagesTr/ and labelsTr/."""
    if kind not in SHIFTS:
        raise ValueError(f"unknown shift {kind!r}; choose one of {sorted(SHIFTS)}")
    if dst.exists() and any(dst.iterdir()):
        raise ValueError(f"{dst} is not empty: choose a new folder")
    for sub in ("imagesTr", "labelsTr"):
        (dst / sub).mkdir(parents=True, exist_ok=True)


def shifted_items(items: list[dict], dst_dir: str | os.PathLike[str], kind: str, seed: int = 0) -> list[dict]:
    """Write shifted copies of labelled items (``image``, ``label``, ``case``) into a new folder; return their items.

    Training uses it for quality control (``qc_run.fit``'s ``shifted``): copies of its validation cases in a
    temporary folder. Item i gets ``seed + i``, as in :func:`write_shifted`.

    Args:
        items: datalist entries with absolute ``image`` and ``label`` paths (read only).
        dst_dir: a new or empty folder, outside the items' folders.
        kind: a key of :data:`SHIFTS`.
        seed: seeds the artefacts.

    Returns:
        One item per input with the same ``case``, ``kind``, and absolute ``image`` and ``label`` paths in ``dst_dir``.
    """
    dst = Path(dst_dir).expanduser().resolve()
    sources = {Path(item[key]).resolve().parent for item in items for key in ("image", "label")}
    if any(dst == src or src in dst.parents for src in sources):
        raise ValueError(f"{dst} is inside an input folder: the inputs are never written to")
    _new_folder(dst, kind)
    out = []
    for i, item in enumerate(items):
        written = _write_case(item, dst, kind, seed + i)
        paths = {key: str(dst / written[key]) for key in ("image", "label")}
        out.append({"case": item.get("case", Path(item["image"]).name), "kind": kind, **paths})
    return out


def write_shifted(src_dir: str | os.PathLike[str], dst_dir: str | os.PathLike[str], kind: str, seed: int = 0) -> Path:
    """Write a copy of an MSD folder's labelled cases with one shift applied to every scan.

    Introduced for issue-23's failure set (benchmarks/bench_qc.py) and the augmentation benchmark.

    Args:
        src_dir: an MSD folder (read only).
        dst_dir: a new or empty folder; it must not be ``src_dir`` or inside it.
        kind: a key of :data:`SHIFTS`.
        seed: seeds the artefacts (case i gets ``seed + i``).

    Returns:
        ``dst_dir``, an MSD folder with the same case names, labels cropped with their image, and a
        ``dataset.json`` that records the shift.
    """
    src, dst = Path(src_dir).expanduser().resolve(), Path(dst_dir).expanduser().resolve()
    if dst == src or src in dst.parents:
        raise ValueError(f"{dst} is {src} or inside it: the source folder is never written to")
    meta = data.load_dataset_json(src)
    items = data.load_datalist(src, "training")
    _new_folder(dst, kind)
    training = [_write_case(item, dst, kind, seed + i) for i, item in enumerate(items)]
    out = {k: v for k, v in meta.items() if k not in ("training", "test", "numTraining", "numTest")}
    out.update(training=training, test=[], numTraining=len(training), numTest=0)
    out["shift"] = {"kind": kind, "what": SHIFTS[kind], "seed": seed, "source": str(src)}
    (dst / "dataset.json").write_text(json.dumps(out, indent=2))
    return dst


def main(argv: list[str] | None = None) -> Path:
    """``python -m heartseg_utils.shifts SRC DST --kind KIND [--seed N]``."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("src")
    parser.add_argument("dst")
    parser.add_argument("--kind", required=True, choices=sorted(SHIFTS))
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    out = write_shifted(args.src, args.dst, args.kind, args.seed)
    print(f"wrote {out} ({args.kind}: {SHIFTS[args.kind]})")
    return out


if __name__ == "__main__":
    main()
