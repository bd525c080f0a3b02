"""The dataset fingerprint, nnU-Net's first planning step: geometry, intensities and labels of the training cases.

Introduced in notebook 03 (notebook 02 reads it for the target spacing). :func:`fingerprint` reads every case once;
:func:`target_spacing` applies nnU-Net's spacing rule to it (Isensee et al., Nature Methods 2021: the median spacing,
the 10th percentile for an axis more than 3x coarser than the others); :func:`resampled_shape` gives the median
shape at a spacing. ``plan.make_plan`` turns a fingerprint into a plan. Layer 0: numpy and nibabel only.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

ANISOTROPY = 3.0  # an axis this much coarser than the others is "thick-slice" (nnU-Net's threshold)
PERCENTILES = (0.5, 50.0, 99.5)


def _ras_axes(img: Any) -> np.ndarray:
    """For each voxel axis of a NIfTI image, the RAS world axis it runs along (as Orientationd reorders)."""
    import nibabel as nib

    return nib.orientations.io_orientation(img.affine)[:, 0].astype(int)


def _intensity_stats(values: np.ndarray) -> dict[str, float] | None:
    """Percentiles, mean and sd of foreground intensities (None when the label is empty)."""
    if values.size == 0:
        return None
    pct = np.percentile(values, PERCENTILES)
    stats = {f"p{p:g}": round(float(v), 4) for p, v in zip(PERCENTILES, pct)}
    return {**stats, "mean": round(float(values.mean()), 4), "sd": round(float(values.std()), 4)}


def _foreground_box(fg: np.ndarray) -> tuple[slice, ...]:
    """Bounding box of the True voxels (the whole array when there are none)."""
    if not fg.any():
        return tuple(slice(0, n) for n in fg.shape)
    box = []
    for k in range(fg.ndim):
        hit = np.flatnonzero(fg.any(axis=tuple(a for a in range(fg.ndim) if a != k)))
        box.append(slice(int(hit[0]), int(hit[-1]) + 1))
    return tuple(box)


def _case_fingerprint(item: Mapping[str, Any], rng: np.random.Generator) -> tuple[dict[str, Any], np.ndarray]:
    """One case's fingerprint and a sample (up to 10,000) of its foreground intensities for the pooled stats."""
    import nibabel as nib

    try:
        img, lbl = nib.load(str(item["image"])), nib.load(str(item["label"]))
        image, label = np.asanyarray(img.dataobj), np.asanyarray(lbl.dataobj)
    except Exception as err:
        raise ValueError(f"cannot read case {item.get('case')} ({item['image']}, {item['label']}): {err}") from err
    if image.ndim == 4:
        image = image[..., 0]  # first channel, as the fingerprint of a multi-channel scan
    if image.shape != label.shape:
        raise ValueError(f"{item['label']}: label shape {label.shape} differs from image shape {image.shape}")
    axes, zooms = _ras_axes(img), img.header.get_zooms()[:3]
    box = _foreground_box(image > 0)  # the pipeline's CropForegroundd(select_fn=image > 0)
    spacing, shape, cropped = [0.0] * 3, [0] * 3, [0] * 3
    for i in range(3):
        spacing[axes[i]], shape[axes[i]] = round(float(zooms[i]), 4), int(image.shape[i])
        cropped[axes[i]] = box[i].stop - box[i].start
    lab = label[box] != 0
    values = image[box][lab].astype(np.float64)
    sample = rng.choice(values, size=min(values.size, 10_000), replace=False) if values.size else values
    case = {
        "case": str(item.get("case", item["image"])),
        "spacing": spacing,
        "shape": shape,
        "cropped_shape": cropped,
        "foreground_fraction": round(float(lab.mean()), 6),
        "intensity": _intensity_stats(values),
        "label_values": [int(v) for v in np.unique(label)],
        "dtype": str(image.dtype),
    }
    return case, sample


def fingerprint(items: list[dict], *, max_cases: int | None = None) -> dict[str, Any]:
    """Describe the training cases the way nnU-Net's fingerprint does: geometry, intensities, labels.

    Introduced in notebook 03. Reads every image and label once (or ``max_cases`` of them, evenly spread).

    Args:
        items: training items with ``"image"`` and ``"label"`` paths (and ``"case"``), as
            ``data.validate_dataset`` returns.
        max_cases: read at most this many cases (None = all).

    Returns:
        A JSON-serialisable dict: ``"cases"`` (per case: ``spacing`` in mm and ``shape``/``cropped_shape`` in
        voxels, all in RAS axis order; ``foreground_fraction`` of the cropped volume; ``intensity``
        percentiles 0.5/50/99.5, mean and sd inside the label; ``label_values``; ``dtype``), ``"median"``
        (spacing, cropped_shape, foreground_fraction), ``"intensity"`` (pooled over all cases),
        ``"label_values"`` (union) and ``"n_cases"``.
    """
    if not items:
        raise ValueError("fingerprint needs at least one training item (got none); check the data folder.")
    if max_cases is not None and max_cases < len(items):
        if max_cases < 1:
            raise ValueError(f"max_cases must be >= 1 or None, got {max_cases}")
        items = [items[int(i)] for i in np.linspace(0, len(items) - 1, max_cases).round()]
    rng = np.random.default_rng(0)
    cases, samples = zip(*(_case_fingerprint(item, rng) for item in items))
    median = {key: np.median([c[key] for c in cases], axis=0) for key in ("spacing", "cropped_shape")}
    return {
        "n_cases": len(cases),
        "cases": list(cases),
        "median": {
            "spacing": [round(float(s), 4) for s in median["spacing"]],
            "cropped_shape": [round(float(s)) for s in median["cropped_shape"]],
            "foreground_fraction": round(float(np.median([c["foreground_fraction"] for c in cases])), 6),
        },
        "intensity": _intensity_stats(np.concatenate(samples)),
        "label_values": sorted({v for c in cases for v in c["label_values"]}),
    }


def target_spacing(fp: Mapping[str, Any]) -> tuple[list[float], str]:
    """nnU-Net's target spacing: the median per axis; the 10th percentile for a thick-slice axis.

    Introduced in notebook 03. An axis counts as thick-slice when its median spacing is more than
    ``ANISOTROPY`` (3) times the coarsest other axis and it has fewer than a third of the voxels of the
    others; resampling it to the median would blur the thinner stacks, so its 10th percentile is used
    (never finer than the other axes).

    Args:
        fp: a :func:`fingerprint`.

    Returns:
        ``(spacing, reason)``: three floats in mm (RAS order) and one sentence.
    """
    spacings = np.array([c["spacing"] for c in fp["cases"]], float)
    sizes = np.array([c["cropped_shape"] for c in fp["cases"]], float)
    target, size = np.median(spacings, axis=0), np.median(sizes, axis=0)
    worst = int(np.argmax(target))
    others = [i for i in range(3) if i != worst]
    ratio = target[worst] / max(target[i] for i in others)
    if ratio > ANISOTROPY and size[worst] * ANISOTROPY < min(size[i] for i in others):
        p10 = max(float(np.percentile(spacings[:, worst], 10)), max(target[i] for i in others))
        reason = (
            f"median spacing {fmt_mm(target)} mm, but axis {'xyz'[worst]} is {ratio:.1f}x coarser than the others "
            f"(> {ANISOTROPY:g}) with few voxels ({size[worst]:.0f}), so it takes the 10th percentile of its "
            f"spacings, {p10:.3g} mm, as nnU-Net does for thick-slice data"
        )
        target[worst] = p10
    else:
        reason = f"median spacing over {len(spacings)} cases: {fmt_mm(target)} mm (nnU-Net's rule; no thick-slice axis)"
    return [round(float(s), 4) for s in target], reason


def fmt_mm(values: Sequence[float]) -> str:
    """Three sizes in mm as ``a x b x c`` with 3 significant digits (the planner's reasons)."""
    return " x ".join(f"{float(v):.3g}" for v in values)


def resampled_shape(fp: Mapping[str, Any], spacing: Sequence[float]) -> list[int]:
    """Median shape (voxels, RAS) of the cropped cases after resampling to ``spacing``. Introduced in notebook 03."""
    shapes = [np.array(c["cropped_shape"]) * np.array(c["spacing"]) / np.array(spacing, float) for c in fp["cases"]]
    return [max(1, round(float(s))) for s in np.median(shapes, axis=0)]
