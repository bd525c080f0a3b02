"""Per-case segmentation metrics in physical units, with explicit rules for empty masks.

Introduced in notebook 04. Overlap scores come from voxel counts (TP, FP, FN); surface distances come from
MONAI (``compute_hausdorff_distance`` with ``percentile=95`` and ``compute_average_surface_distance`` with
``symmetric=True``), both given the voxel spacing so that they are in millimetres.

Empty masks (no NaN is ever averaged silently):

- prediction and truth both empty: a correct "nothing here"; dice = iou = precision = recall = 1, distances 0.
- exactly one empty: every overlap score (dice, iou, precision, recall) is 0 and both distances are ``inf``
  (there is no surface to measure from). :func:`summarize` averages distances over the finite cases only
  and reports how many cases were left out, so one empty prediction cannot hide in a mean.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

METRIC_NAMES = ("dice", "iou", "precision", "recall", "hd95_mm", "assd_mm", "volume_ml_pred", "volume_ml_true")


def _binary(mask: Any, name: str) -> np.ndarray:
    arr = np.asarray(mask.detach().cpu() if hasattr(mask, "detach") else mask)
    arr = arr[0] if arr.ndim == 4 and arr.shape[0] == 1 else arr
    if arr.ndim != 3:
        raise ValueError(f"{name} must be a 3D mask (x, y, z) or (1, x, y, z); got shape {arr.shape}")
    return arr != 0


def _counts(pred: Any, truth: Any) -> tuple[int, int, int]:
    """True positives, false positives and false negatives of two masks of one shape (non-zero = foreground)."""
    p, t = (np.asarray(m.detach().cpu() if hasattr(m, "detach") else m) != 0 for m in (pred, truth))
    if p.shape != t.shape:
        raise ValueError(f"prediction shape {p.shape} differs from truth shape {t.shape}: resample onto one grid first")
    return int(np.count_nonzero(p & t)), int(np.count_nonzero(p & ~t)), int(np.count_nonzero(~p & t))


def dice_from_counts(tp: int, fp: int, fn: int) -> float:
    """Dice = 2 TP / (2 TP + FP + FN); 1 when both masks are empty (a correct "nothing here")."""
    return 2 * tp / (2 * tp + fp + fn) if tp + fp + fn else 1.0


def dice(pred: Any, truth: Any) -> float:
    """Foreground Dice of two masks (numpy or torch, any shape, non-zero = foreground). Introduced in notebook 03.

    The one Dice of the package: training's validation, the post-processing decision, notebook 05's folds and
    notebook 04's :func:`evaluate_case` all use this rule, so a case scores the same everywhere.
    """
    return dice_from_counts(*_counts(pred, truth))


def class_dice(pred: Any, truth: Any, values: Sequence[int]) -> list[float]:
    """:func:`dice` of each class of two label maps: ``pred == v`` against ``truth == v`` for every ``v``.

    Introduced in notebook 03 (a multi-class run's validation: one Dice per class, background left out, as MONAI's
    ``DiceMetric(include_background=False)``; a class absent from both maps scores 1, as :func:`dice` says).
    """
    p, t = (np.asarray(m.detach().cpu() if hasattr(m, "detach") else m) for m in (pred, truth))
    return [dice(p == v, t == v) for v in values]


def ml_per_voxel(spacing: Sequence[float]) -> float:
    """Millilitres per voxel: the product of the spacing in mm, / 1000."""
    return float(np.prod([float(s) for s in spacing])) / 1000.0


def volume_ml(mask: Any, spacing: Sequence[float]) -> float:
    """Foreground volume in millilitres: voxel count x voxel volume (mm^3) / 1000. Introduced in notebook 04."""
    return float(np.count_nonzero(np.asarray(mask))) * ml_per_voxel(spacing)


def surface_distances_mm(pred: np.ndarray, truth: np.ndarray, spacing: Sequence[float]) -> tuple[float, float]:
    """HD95 and symmetric average surface distance (ASSD) in mm between two non-empty 3D masks, via MONAI.

    Introduced in notebook 04.
    """
    import warnings

    import torch
    from monai.metrics import compute_average_surface_distance, compute_hausdorff_distance

    p, t = (torch.as_tensor(np.ascontiguousarray(m))[None, None] for m in (pred, truth))
    sp = [float(s) for s in spacing]
    with warnings.catch_warnings():  # MONAI 1.5+ warns about its own internal use of a deprecated argument
        warnings.simplefilter("ignore", FutureWarning)
        hd95 = compute_hausdorff_distance(p, t, include_background=True, percentile=95, spacing=sp)
        assd = compute_average_surface_distance(p, t, include_background=True, symmetric=True, spacing=sp)
    return float(hd95.item()), float(assd.item())


def evaluate_case(pred: Any, truth: Any, spacing: Sequence[float]) -> dict[str, float]:
    """Dice, IoU, precision, recall, HD95 and ASSD (mm) and both volumes (mL) for one case.

    Introduced in notebook 04. Empty masks follow the module docstring's rules.

    Args:
        pred: predicted mask (non-zero = foreground), 3D or (1, x, y, z), numpy or torch.
        truth: ground-truth mask on the same voxel grid.
        spacing: voxel size in mm along the array's three axes (e.g. the NIfTI header's zooms).

    Returns:
        A dict with the keys of ``METRIC_NAMES``.
    """
    p, t = _binary(pred, "pred"), _binary(truth, "truth")
    if len(spacing) != 3 or any(float(s) <= 0 for s in spacing):
        raise ValueError(f"spacing must be 3 positive voxel sizes in mm, got {tuple(spacing)}")
    tp, fp, fn = _counts(p, t)
    ml = ml_per_voxel(spacing)
    volumes = {"volume_ml_pred": (tp + fp) * ml, "volume_ml_true": (tp + fn) * ml}
    if tp + fp == 0 and tp + fn == 0:  # both empty: correct
        return {"dice": 1.0, "iou": 1.0, "precision": 1.0, "recall": 1.0, "hd95_mm": 0.0, "assd_mm": 0.0, **volumes}
    if tp + fp == 0 or tp + fn == 0:  # exactly one empty
        return {
            "dice": 0.0,
            "iou": 0.0,
            "precision": 0.0,
            "recall": 0.0,
            "hd95_mm": math.inf,
            "assd_mm": math.inf,
            **volumes,
        }
    hd95, assd = surface_distances_mm(p, t, spacing)
    return {
        "dice": dice_from_counts(tp, fp, fn),
        "iou": tp / (tp + fp + fn),
        "precision": tp / (tp + fp),
        "recall": tp / (tp + fn),
        "hd95_mm": hd95,
        "assd_mm": assd,
        **volumes,
    }


def evaluate_files(prediction_path: Any, label_path: Any) -> dict[str, float]:
    """:func:`evaluate_case` on two NIfTI files (label != 0 is foreground; spacing from the label's header).

    Introduced in notebook 04.
    """
    import nibabel as nib

    pred_img, label_img = nib.load(str(prediction_path)), nib.load(str(label_path))
    if not np.allclose(pred_img.affine, label_img.affine, atol=1e-3):
        raise ValueError(f"{prediction_path} is not on the voxel grid of {label_path} (affines differ)")
    return evaluate_case(
        np.asanyarray(pred_img.dataobj), np.asanyarray(label_img.dataobj), label_img.header.get_zooms()[:3]
    )


def _label_map(path: Any) -> tuple[np.ndarray, Any]:
    """A NIfTI label map's voxels and image (for its affine and zooms)."""
    import nibabel as nib

    image = nib.load(str(path))
    return np.asanyarray(image.dataobj), image


def evaluate_classes(pred: Any, truth: Any, spacing: Sequence[float], classes: Mapping[int, str]) -> list[dict]:
    """:func:`evaluate_case` for each class of two label maps: one row per class, with ``class`` and ``label_value``.

    Introduced in notebook 04 (a multi-class run's ``evaluation.csv``: one row per case and class).

    Args:
        pred: predicted label map (the dataset's label values), 3D.
        truth: ground-truth label map on the same grid.
        spacing: voxel size in mm.
        classes: ``{label value: class name}`` without background, e.g. ``{1: "lv", 2: "myo", 3: "rv"}``.

    Returns:
        ``[{"class", "label_value", <METRIC_NAMES>}, ...]`` in the order of ``classes``.
    """
    p, t = (np.asarray(m.detach().cpu() if hasattr(m, "detach") else m) for m in (pred, truth))
    return [
        {"class": name, "label_value": int(v), **evaluate_case(p == v, t == v, spacing)} for v, name in classes.items()
    ]


def evaluate_class_files(prediction_path: Any, label_path: Any, classes: Mapping[int, str]) -> list[dict]:
    """:func:`evaluate_classes` on two NIfTI label maps (spacing from the label's header). Notebook 04."""
    (pred, pred_img), (truth, label_img) = _label_map(prediction_path), _label_map(label_path)
    if not np.allclose(pred_img.affine, label_img.affine, atol=1e-3):
        raise ValueError(f"{prediction_path} is not on the voxel grid of {label_path} (affines differ)")
    return evaluate_classes(pred, truth, label_img.header.get_zooms()[:3], classes)


def summarize_classes(rows: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Per-class :func:`summarize` and the macro mean over classes of rows from :func:`evaluate_classes`.

    Introduced in notebook 04.

    Returns:
        ``{"classes": {name: summarize(rows of that class)}, "macro": {metric: mean over the classes' means}}``
        (a metric no class could average is ``None``).
    """
    names = list(dict.fromkeys(str(r["class"]) for r in rows))
    per_class = {name: summarize([r for r in rows if str(r["class"]) == name]) for name in names}
    macro: dict[str, Any] = {}
    for metric in METRIC_NAMES:
        means = [c[metric] for c in per_class.values() if c[metric] is not None]
        macro[metric] = float(np.mean(means)) if means else None
    return {"classes": per_class, "macro": macro}


def summarize(rows: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Mean and sample standard deviation of every metric over cases, plus counts of the special cases.

    Introduced in notebook 04. Distances are averaged over cases where they are finite; ``n_distance_inf``
    says how many cases (exactly one mask empty) were left out of those two means.

    Args:
        rows: one dict per case, as returned by :func:`evaluate_case`.

    Returns:
        ``{"n_cases", "<metric>": mean, "<metric>_sd": sd, ..., "n_empty_pred", "n_empty_true", "n_distance_inf"}``
        (a mean over no finite values is ``None``, so the dict stays valid JSON).
    """
    if not rows:
        raise ValueError("summarize needs at least one case")
    out: dict[str, Any] = {"n_cases": len(rows)}
    for name in METRIC_NAMES:
        values = np.array([float(r[name]) for r in rows])
        values = values[np.isfinite(values)]
        out[name] = float(values.mean()) if values.size else None
        out[f"{name}_sd"] = float(values.std(ddof=1)) if values.size > 1 else (0.0 if values.size else None)
    out["n_empty_pred"] = sum(float(r["volume_ml_pred"]) == 0 for r in rows)
    out["n_empty_true"] = sum(float(r["volume_ml_true"]) == 0 for r in rows)
    out["n_distance_inf"] = sum(not math.isfinite(float(r["hd95_mm"])) for r in rows)
    return out


def sanity_check(prediction: Any, body_mask: Any = None, *, max_fraction: float | None = 0.05) -> list[str]:
    """Warnings about a predicted mask that cannot be right; an empty list means nothing looks wrong.

    Introduced in notebook 04. Flags an empty mask, a mask covering every voxel, and a mask covering more than
    ``max_fraction`` of the body (or of the whole volume without ``body_mask``): the default 5 % is a left-atrium
    rule (the atrium fills under 1 %); None skips it (another target, or a run whose ``qc.json`` knows the
    training labels' sizes: ``predict.size_rule``).

    Args:
        prediction: predicted mask (non-zero = foreground), 3D or (1, x, y, z).
        body_mask: optional mask of the body (same shape); the fraction is measured inside it.
        max_fraction: largest plausible foreground fraction; None = no size rule.

    Returns:
        A list of human-readable warnings.
    """
    p = _binary(prediction, "prediction")
    region = np.ones_like(p) if body_mask is None else _binary(body_mask, "body_mask")
    where = "the volume" if body_mask is None else "the body"
    if region.shape != p.shape:
        raise ValueError(f"body_mask shape {region.shape} differs from prediction shape {p.shape}")
    n, warnings = int(np.count_nonzero(p)), []
    if n == 0:
        warnings.append("empty prediction: no foreground voxel at all (all-background model, or threshold too high)")
    elif n == p.size:
        warnings.append(
            "every voxel is foreground: the all-foreground failure (recall 1, precision = foreground share)"
        )
    fraction = np.count_nonzero(p & region) / max(int(np.count_nonzero(region)), 1)
    if n and max_fraction is not None and fraction > max_fraction:
        warnings.append(
            f"foreground covers {fraction:.1%} of {where} (> {max_fraction:.0%}): implausibly large for a "
            "left atrium; check the threshold, the loss and the label values"
        )
    return warnings
