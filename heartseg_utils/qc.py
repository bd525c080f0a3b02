"""Per-scan quality control: plausibility, the model's own uncertainty, one fitted quality score, calibration.

Introduced in notebook 04 (issue 23); :mod:`heartseg_utils.qc_run` fits a run's ``qc.json`` from these. A Dice
needs the truth and a new scan has none; these pure numpy functions give the signals that stand in for it and the
numbers a run records in ``qc.json`` (docs/contract.md): plausibility of the mask against ranges from the training
labels, the model's uncertainty and its TTA/ensemble disagreement, a small ridge model of Dice fitted on validation
with a "needs review" threshold, calibration (reliability, ECE, temperature) and risk-coverage / AUROC.
Masks are 3D (or (1, x, y, z)), non-zero = foreground; spacings are in mm along the array axes.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np

from heartseg_utils import metrics
from heartseg_utils.viz import as_volume

AXES = ("x", "y", "z")  # array axes 0, 1, 2
MEASUREMENTS = ("volume_ml", "n_components", "largest_share", *(f"centroid_{a}" for a in AXES))
MEASUREMENTS += tuple(f"extent_{a}_mm" for a in AXES)
# the smallest widening of a training range on each side: a few training cases must not make the ranges razor-thin
# (all of them in one component must not flag a prediction with one stray speck); "relative" = times the median
MIN_PAD: dict[str, tuple[str, float]] = {
    "volume_ml": ("relative", 0.10),
    "n_components": ("absolute", 1.0),
    "largest_share": ("absolute", 0.05),
    **{f"centroid_{a}": ("absolute", 0.05) for a in AXES},
    **{f"extent_{a}_mm": ("relative", 0.10) for a in AXES},
}
Z_SEVERE = 4.0  # a measurement out of range by a robust |z| above this flags a scan; a milder one only lowers its score
Z_CAP = 10.0  # |z| beyond this says "implausible" as loudly as it needs to; caps keep the linear model robust
UNCERTAIN = (0.2, 0.8)  # a voxel is uncertain when its foreground probability lies strictly between these
_EPS = 1e-6


def _spacing(spacing: Sequence[float]) -> tuple[float, float, float]:
    values = tuple(float(s) for s in spacing)
    if len(values) != 3 or not all(math.isfinite(s) and s > 0 for s in values):
        raise ValueError(f"spacing must be 3 positive voxel sizes in mm, got {tuple(spacing)}")
    return values  # type: ignore[return-value]


# ---- 1. Plausibility against the training labels -------------------------------------------------
def mask_measurements(mask: Any, spacing: Sequence[float], body: Any = None) -> dict[str, float]:
    """Volume, connected components, position and extent of one mask: the numbers plausibility compares.

    ``volume_ml`` is the foreground volume; ``n_components`` counts 26-connected pieces and ``largest_share`` is
    the largest piece's fraction of the foreground (a clean atrium is one piece); ``centroid_<axis>`` places the
    mask's centre of mass inside the body's bounding box (0 = its first voxel, 1 = its last), so a mask on the
    wrong side of the chest stands out whatever the field of view; ``extent_<axis>_mm`` is the mask's bounding-box
    length along each array axis.

    Args:
        mask: 3D mask (non-zero = foreground) or (1, x, y, z).
        spacing: voxel size in mm along the three axes.
        body: the scan itself (voxels > 0 are the body) or a body mask, same shape; None = the whole array.

    Returns:
        ``{name: value}`` for each of :data:`MEASUREMENTS`; an empty mask has no component and NaN centroids.
    """
    from scipy import ndimage

    m, sp = as_volume(mask) != 0, _spacing(spacing)
    region = np.ones(m.shape, bool) if body is None else as_volume(body, "body") > 0
    if region.shape != m.shape:
        raise ValueError(f"body shape {region.shape} differs from mask shape {m.shape}")
    out: dict[str, float] = {"volume_ml": metrics.volume_ml(m, sp)}
    labelled, n = ndimage.label(m, structure=np.ones((3, 3, 3), bool))
    sizes = np.bincount(labelled.ravel())[1:]
    out["n_components"] = float(n)
    out["largest_share"] = float(sizes.max() / sizes.sum()) if n else 0.0
    where = np.nonzero(m)
    for axis, name in enumerate(AXES):
        inside = np.flatnonzero(region.any(axis=tuple(a for a in range(3) if a != axis)))
        lo, hi = (int(inside[0]), int(inside[-1])) if inside.size else (0, m.shape[axis] - 1)
        if n:
            out[f"centroid_{name}"] = float((where[axis].mean() - lo + 0.5) / (hi - lo + 1))
            out[f"extent_{name}_mm"] = float((where[axis].max() - where[axis].min() + 1) * sp[axis])
        else:
            out[f"centroid_{name}"], out[f"extent_{name}_mm"] = math.nan, 0.0
    return out


def _summary(values: np.ndarray, name: str, margin: float) -> dict[str, float]:
    """Median, scaled MAD, 5th/95th percentiles and the widened range [low, high] of one measurement."""
    median = float(np.median(values))
    mad = 1.4826 * float(np.median(np.abs(values - median)))
    p05, p95 = (float(v) for v in np.percentile(values, [5, 95]))
    kind, floor = MIN_PAD[name]
    pad = max(margin * (p95 - p05), floor * abs(median) if kind == "relative" else floor)
    return {"median": median, "mad": mad, "p05": p05, "p95": p95, "low": p05 - pad, "high": p95 + pad}


def label_statistics(
    labels: Iterable[Any], spacings: Iterable[Sequence[float]], bodies: Iterable | None = None, *, margin: float = 0.25
) -> dict[str, Any]:
    """Robust reference ranges of every measurement over the training labels (``qc.json``'s ``reference``).

    A prediction is plausible when it looks like the training masks: each measurement's range is the 5th to 95th
    percentile over the training cases, widened on each side by ``margin`` times its width (at least
    :data:`MIN_PAD`), and its median and scaled MAD give a robust z-score.

    Args:
        labels: the training cases' label masks (an iterable: a generator that loads one at a time is fine).
        spacings: each case's voxel size in mm, in the same order.
        bodies: optional, each case's image (voxels > 0 are the body) or body mask; None = the whole array.
        margin: widening of each 5-95 % range, as a fraction of its width.

    Returns:
        A JSON-serialisable dict: ``n_cases``, ``margin``, ``measurements`` (``{name: {"median", "mad", "p05",
        "p95", "low", "high"}}``) and ``cases`` (each case's measurements).
    """
    body_list = iter(bodies) if bodies is not None else None
    cases = [
        mask_measurements(label, spacing, None if body_list is None else next(body_list))
        for label, spacing in zip(labels, spacings)
    ]
    if not cases:
        raise ValueError("label_statistics needs at least one training label")
    empty = [i for i, c in enumerate(cases) if c["n_components"] == 0]
    if empty:
        raise ValueError(f"training labels {empty} (by position) are empty: every training case needs a foreground")
    summary = {name: _summary(np.array([c[name] for c in cases]), name, margin) for name in MEASUREMENTS}
    return {"n_cases": len(cases), "margin": margin, "measurements": summary, "cases": cases}


def _describe(name: str) -> tuple[str, str, int]:
    """A measurement's words, its unit (with a leading space) and decimal places, for a reason string."""
    if name.startswith("centroid"):
        return f"centroid along {name.split('_')[1]} (fraction of the body box)", "", 2
    if name.startswith("extent"):
        return f"extent along {name.split('_')[1]}", " mm", 1
    return {
        "volume_ml": ("volume", " mL", 1),
        "n_components": ("number of connected components", "", 0),
        "largest_share": ("largest component's share", "", 2),
    }[name]


def _range_reason(name: str, value: float, low: float, high: float) -> str:
    """ "<measurement> <value> is above/below the training range <low>-<high>", with enough decimals that the value
    never prints equal to the bound it crossed, and a share's range shown within [0, 1]."""
    words, unit, dp = _describe(name)
    side, bound = ("below", low) if value < low else ("above", high)
    while dp < 4 and f"{value:.{dp}f}" == f"{bound:.{dp}f}":
        dp += 1
    if name == "largest_share":
        low, high = max(low, 0.0), min(high, 1.0)
    return f"{words} {value:.{dp}f}{unit} is {side} the training range {low:.{dp}f}-{high:.{dp}f}{unit}"


def plausibility(mask: Any, spacing: Sequence[float], reference: Mapping[str, Any], body: Any = None) -> dict[str, Any]:
    """A predicted mask's measurements against the training ranges: a robust z-score and a flag for each.

    Args:
        mask: the predicted 3D mask.
        spacing: voxel size in mm.
        reference: :func:`label_statistics`'s result (or ``qc.json``'s ``reference``).
        body: the scan (voxels > 0 are the body) or a body mask; None = the whole array (as in the reference).

    Returns:
        JSON-serialisable ``{"measurements", "z": {name: (value - median) / max(MAD, 5 % of the median)},
        "out_of_range": {name: bool}, "violations": [reason, ...], "severe": [reason, ...], "plausible": bool}``;
        an empty mask is one violation, every measurement counts as out of range and its position and z-scores are
        None. ``severe`` holds the violations that flag a scan by themselves (:func:`severe_violations`).
    """
    values, stats = mask_measurements(mask, spacing, body), reference["measurements"]
    empty = values["n_components"] == 0
    z: dict[str, float | None] = dict.fromkeys(MEASUREMENTS)
    out_of_range, violations = dict.fromkeys(MEASUREMENTS, empty), []
    if empty:
        v = stats["volume_ml"]
        violations.append(f"empty mask: no foreground voxel (training masks hold {v['low']:.1f}-{v['high']:.1f} mL)")
    for name in MEASUREMENTS if not empty else ():
        value, s = values[name], stats[name]
        scale = max(s["mad"], _EPS + 0.05 * abs(s["median"]))
        z[name] = (value - s["median"]) / scale
        out_of_range[name] = not s["low"] <= value <= s["high"]
        if out_of_range[name]:
            violations.append(_range_reason(name, value, s["low"], s["high"]))
    measured = {k: v if math.isfinite(v) else None for k, v in values.items()}
    severe = violations if empty else severe_violations(z, out_of_range, violations)
    return dict(
        measurements=measured, z=z, out_of_range=out_of_range, violations=violations, severe=severe,
        plausible=not violations,
    )  # fmt: skip


def severe_violations(
    z: Mapping[str, float | None], out_of_range: Mapping[str, bool], violations: Sequence[str]
) -> list[str]:
    """The violations that flag a scan whatever its score: out of range with a robust ``|z|`` above :data:`Z_SEVERE`.

    A measurement just past the edge of a range learned from a few training labels is common on good scans; so is a
    speck beside a clean atrium, so the component count never flags alone (the largest component's share does).
    Every violation still counts in :func:`qc_features`, so a mild one lowers the quality score.
    """
    named = [name for name in MEASUREMENTS if out_of_range[name]]  # the order violations were written in
    return [
        reason
        for name, reason in zip(named, violations)
        if name != "n_components" and z[name] is not None and abs(z[name]) > Z_SEVERE
    ]


# ---- 2. The model's own uncertainty --------------------------------------------------------------
def binary_entropy(probability: Any) -> np.ndarray:
    """Entropy of each voxel's foreground/background distribution in bits: 0 when sure, 1 at p = 0.5."""
    p = np.clip(np.asarray(probability, dtype=np.float64), 1e-12, 1 - 1e-12)
    return -(p * np.log2(p) + (1 - p) * np.log2(1 - p))


def _shell(mask: np.ndarray, voxels: int) -> np.ndarray:
    """The voxels within ``voxels`` (26-connected steps) of the mask but outside it; computed on a padded crop."""
    from scipy import ndimage

    shell = np.zeros_like(mask)
    if not mask.any() or voxels < 1:
        return shell
    where = np.nonzero(mask)
    box = tuple(slice(max(int(w.min()) - voxels, 0), int(w.max()) + voxels + 1) for w in where)
    crop = mask[box]
    grown = ndimage.binary_dilation(crop, structure=np.ones((3, 3, 3), bool), iterations=voxels)
    shell[box] = grown & ~crop
    return shell


def near_mask(mask: Any, voxels: int = 5) -> np.ndarray:
    """The mask and every voxel within ``voxels`` (26-connected steps) of it: where calibration matters.

    A whole volume is mostly far background that every model gets right with p near 0; reliability, ECE and the
    temperature are measured on this region (around the union of truth and prediction) instead.
    """
    m = as_volume(mask) != 0
    return m | _shell(m, voxels)


def member_disagreement(members: Sequence[Any]) -> dict[str, float]:
    """How much TTA (or ensemble) members disagree: their mean pairwise Dice and mean voxel-wise std.

    Members that agree give Dice 1 and std 0; the pairwise Dice is on the masks thresholded at 0.5 and the std is
    averaged inside the union of those masks (where a disagreement can matter).

    Args:
        members: two or more probability maps of one shape.

    Returns:
        ``{"tta_members", "tta_pairwise_dice", "tta_std_in_union"}``.
    """
    maps = [np.asarray(as_volume(m, "TTA member"), dtype=np.float32) for m in members]
    if len(maps) < 2 or any(m.shape != maps[0].shape for m in maps):
        raise ValueError(f"member_disagreement needs two or more maps of one shape, got {[m.shape for m in maps]}")
    masks = [m > 0.5 for m in maps]
    pairs = [metrics.dice(masks[i], masks[j]) for i in range(len(masks)) for j in range(i + 1, len(masks))]
    union = np.logical_or.reduce(masks)
    std = np.std(np.stack(maps), axis=0)
    spread = float(std[union].mean()) if union.any() else 0.0
    return {"tta_members": float(len(maps)), "tta_pairwise_dice": float(np.mean(pairs)), "tta_std_in_union": spread}


def uncertainty(
    probability: Any, mask: Any = None, tta_probabilities: Sequence[Any] | None = None, *, shell_voxels: int = 3
) -> dict[str, float]:
    """The model's own uncertainty about one scan, from its foreground probability map.

    ``mean_probability`` is the mean foreground probability inside the mask (a sure model is near 1);
    ``entropy_in_mask`` and ``entropy_shell`` are the mean binary entropy (bits) inside the mask and in a shell of
    ``shell_voxels`` around it (a sharp boundary has low shell entropy); ``uncertain_fraction`` is the number of
    voxels with 0.2 < p < 0.8 divided by the mask's voxel count (a fuzzy mask has many); with TTA or ensemble maps,
    :func:`member_disagreement` is added.

    Args:
        probability: foreground probability map (x, y, z), values in [0, 1] (the members' mean with TTA).
        mask: the predicted mask; None = ``probability > 0.5`` (the argmax of a two-class softmax).
        tta_probabilities: optional TTA or ensemble members' probability maps.
        shell_voxels: the shell's thickness in voxels.

    Returns:
        A flat ``{name: float}``; an empty mask gives ``mask_voxels`` 0 and zeros inside it.
    """
    p = np.asarray(as_volume(probability, "probability"), dtype=np.float32)
    m = p > 0.5 if mask is None else as_volume(mask) != 0
    if m.shape != p.shape:
        raise ValueError(f"mask shape {m.shape} differs from probability shape {p.shape}")
    n = int(np.count_nonzero(m))
    shell = _shell(m, shell_voxels)
    n_uncertain = int(np.count_nonzero((p > UNCERTAIN[0]) & (p < UNCERTAIN[1])))
    out = {
        "mask_voxels": float(n),
        "mean_probability": float(p[m].mean()) if n else 0.0,
        "entropy_in_mask": float(binary_entropy(p[m]).mean()) if n else 0.0,
        "entropy_shell": float(binary_entropy(p[shell]).mean()) if shell.any() else 0.0,
        "uncertain_fraction": n_uncertain / max(n, 1),
    }
    if tta_probabilities is not None:
        out.update(member_disagreement(tta_probabilities))
    return out


# ---- 3. One quality score, its threshold and the flag --------------------------------------------
def qc_features(
    uncertainty_result: Mapping[str, float], plausibility_result: Mapping[str, Any] | None = None
) -> dict[str, float]:
    """One short, flat, finite feature vector per scan for the quality model (a few validation cases fit few).

    The uncertainty numbers as they are (less the counts ``mask_voxels`` and ``tta_members``) and, from the
    plausibility check, the component count, the largest share, the volume's ``|z|``, the largest ``|z|`` of any
    measurement (both capped at :data:`Z_CAP`; an empty mask counts as the cap) and the number of violations.

    Args:
        uncertainty_result: :func:`uncertainty`'s result.
        plausibility_result: :func:`plausibility`'s result, or None.

    Returns:
        ``{feature name: float}``, every value finite.
    """
    out = {k: float(v) for k, v in uncertainty_result.items() if k not in ("mask_voxels", "tta_members")}
    if plausibility_result is not None:
        values, zs = plausibility_result["measurements"], plausibility_result["z"]
        capped = {k: Z_CAP if z is None or not math.isfinite(z) else min(abs(z), Z_CAP) for k, z in zs.items()}
        out["n_components"], out["largest_share"] = float(values["n_components"]), float(values["largest_share"])
        out["abs_z_volume_ml"], out["max_abs_z"] = capped["volume_ml"], max(capped.values())
        out["n_violations"] = float(len(plausibility_result["violations"]))
    bad = [k for k, v in out.items() if not math.isfinite(v)]
    if bad:
        raise ValueError(f"qc_features: non-finite values for {bad}")
    return out


def _ridge(X: np.ndarray, y: np.ndarray, alpha: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Means, scales and weights of ridge on standardised columns (a constant column gets scale 1, weight 0)."""
    means, sds = X.mean(axis=0), X.std(axis=0)
    scales = np.where(sds > 1e-12, sds, 1.0)
    Z = (X - means) / scales
    w = np.linalg.solve(Z.T @ Z + len(y) * alpha * np.eye(X.shape[1]), Z.T @ (y - y.mean())) if X.shape[1] else []
    return means, scales, np.asarray(w, dtype=np.float64)


def fit_quality_model(
    features: Sequence[Mapping[str, float]],
    dice: Sequence[float],
    *,
    alpha: float = 0.25,
    names: Sequence[str] | None = None,
    groups: Sequence[Any] | None = None,
) -> dict[str, Any]:
    """A small ridge regression of validation Dice on standardised features: the quality model of ``qc.json``.

    With 4-20 validation cases anything bigger over-fits: every feature is standardised (mean 0, sd 1 over the
    validation cases; a constant feature gets weight 0), the weights minimise ``mean((y - Xw - b)^2) + alpha *
    |w|^2`` with a fixed ``alpha`` (no tuning on the same few cases), and the prediction is clipped to [0, 1].
    Leave-one-out refits say how far to trust it; choose the review threshold on ``loo_scores``, since in-sample
    scores flatter the model.

    Args:
        features: one :func:`qc_features` dict per validation case.
        dice: each case's Dice.
        alpha: ridge penalty on the standardised weights (0.25 keeps 80 % of a lone feature's slope; 1 halves it).
        names: the features to use; None = those every case has, sorted.
        groups: one key per case (e.g. the source case of a shifted copy); the leave-one-out refits leave out
            every case of a group together, so a copy never vouches for its original. None = each case alone.

    Returns:
        JSON-serialisable ``{"kind": "ridge", "features", "means", "scales", "weights", "intercept", "alpha",
        "n_cases", "train_mae", "loo_mae", "loo_scores"}``.
    """
    y = np.asarray(dice, dtype=np.float64)
    if len(features) != len(y) or len(y) < 3:
        raise ValueError(f"fit_quality_model needs >= 3 cases with one Dice each, got {len(features)} and {len(y)}")
    names = sorted(set.intersection(*(set(f) for f in features))) if names is None else list(names)
    X = np.array([[float(f[k]) for k in names] for f in features], dtype=np.float64).reshape(len(y), len(names))

    def predict(rows: np.ndarray, means: np.ndarray, scales: np.ndarray, w: np.ndarray, b: float) -> np.ndarray:
        return np.clip(b + ((rows - means) / scales) @ w, 0.0, 1.0)

    means, scales, w = _ridge(X, y, alpha)
    fitted = predict(X, means, scales, w, float(y.mean()))
    keys = np.asarray([str(g) for g in groups] if groups is not None else [str(i) for i in range(len(y))])
    if keys.shape != y.shape or len(set(keys.tolist())) < 3:
        raise ValueError(f"fit_quality_model needs one group per case and >= 3 groups, got {keys.tolist()}")
    loo = np.empty_like(y)
    for key in dict.fromkeys(keys.tolist()):
        out = keys == key
        loo[out] = predict(X[out], *_ridge(X[~out], y[~out], alpha), float(y[~out].mean()))
    fit = {"n_cases": len(y), "train_mae": float(np.abs(fitted - y).mean()), "loo_mae": float(np.abs(loo - y).mean())}
    model = {"kind": "ridge", "features": names, "means": means.tolist(), "scales": scales.tolist(), "alpha": alpha}
    return {**model, "weights": w.tolist(), "intercept": float(y.mean()), **fit, "loo_scores": loo.tolist()}


def quality_score(features: Mapping[str, float], model: Mapping[str, Any]) -> float:
    """The predicted Dice of one scan from its features and a :func:`fit_quality_model` model, clipped to [0, 1]."""
    missing = [k for k in model["features"] if k not in features]
    if missing:
        raise KeyError(
            f"quality_score: features {missing} of the quality model are missing (compute them as on validation)"
        )
    x = np.array([float(features[k]) for k in model["features"]])
    z = (x - np.asarray(model["means"])) / np.asarray(model["scales"])
    return float(np.clip(model["intercept"] + z @ np.asarray(model["weights"]), 0.0, 1.0))


def choose_threshold(
    scores: Sequence[float], dice: Sequence[float], fail_below: float = 0.5, *, margin: float = 0.05
) -> dict[str, Any]:
    """The "needs review" threshold (flag when score < threshold), chosen on validation cases.

    The threshold sits halfway between the highest-scoring failure (Dice < ``fail_below``) and the next higher
    score, so every validation failure is caught and as few good cases as possible are flagged. Without a failure
    in validation there is nothing to tune on: the threshold is ``margin`` below the lowest validation score, and
    the reason says so.

    Args:
        scores: each validation case's quality score.
        dice: each case's Dice.
        fail_below: a case with Dice below this is a failure.
        margin: the fallback's distance below the lowest score.

    Returns:
        JSON-serialisable ``{"threshold", "fail_below", "reason", "n_cases", "n_failures", "failures_caught",
        "n_false_alarms", "false_alarm_rate" (flagged good cases / good cases; None without good cases),
        "flagged": [bool per case]}``.
    """
    s, d = np.asarray(scores, dtype=np.float64), np.asarray(dice, dtype=np.float64)
    if s.shape != d.shape or s.ndim != 1 or s.size == 0:
        raise ValueError(f"choose_threshold needs one score per Dice, got {s.shape} and {d.shape}")
    failed = d < fail_below
    if not failed.any():
        threshold = float(s.min() - margin)
        reason = (
            f"no validation case had Dice < {fail_below}: nothing to tune on, so the threshold is {margin} below "
            f"the lowest validation score ({s.min():.3f}); treat it as provisional"
        )
    else:
        worst = float(s[failed].max())
        above = s[s > worst]
        threshold = float((worst + above.min()) / 2) if above.size else float(np.nextafter(worst, np.inf))
        reason = (
            f"halfway between the highest-scoring failure (score {worst:.3f}, Dice < {fail_below}) and the next "
            f"score{f' ({above.min():.3f})' if above.size else ' (none: every case is flagged)'}"
        )
    flagged, n_good = s < threshold, int((~failed).sum())
    alarms = int((flagged & ~failed).sum())
    counts = {"n_cases": int(s.size), "n_failures": int(failed.sum()), "failures_caught": int((flagged & failed).sum())}
    rate = alarms / n_good if n_good else None
    out = {"threshold": threshold, "fail_below": fail_below, "reason": reason, **counts, "n_false_alarms": alarms}
    return {**out, "false_alarm_rate": rate, "flagged": flagged.tolist()}


def flag(
    features: Mapping[str, float],
    model: Mapping[str, Any],
    threshold: float | Mapping[str, Any],
    plausibility_result: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Whether one scan needs review: its quality score is below the threshold, or a plausibility rule fails.

    Args:
        features: the scan's :func:`qc_features`.
        model: the quality model (:func:`fit_quality_model`).
        threshold: the threshold, or :func:`choose_threshold`'s result.
        plausibility_result: the scan's :func:`plausibility`, whose severe violations (empty mask, a volume or
            position far outside the training range...) each flag the scan whatever its score.

    Returns:
        ``{"quality_score", "needs_review", "reasons": [human-readable, ...]}``.
    """
    limit = float(threshold["threshold"] if isinstance(threshold, Mapping) else threshold)
    score = quality_score(features, model)
    reasons = []
    if score < limit:
        reasons.append(f"quality score {score:.3f} (predicted Dice) is below the review threshold {limit:.3f}")
    if plausibility_result is not None:
        reasons += list(plausibility_result.get("severe", plausibility_result["violations"]))
    return {"quality_score": score, "needs_review": bool(reasons), "reasons": reasons}


# ---- 4. Calibration ------------------------------------------------------------------------------
def _voxels(values: Any, labels: Any, max_voxels: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Flat values and labels of an array (or a list of arrays, one per case): a seeded subset of each if too many."""
    xs, ys = ([np.ravel(np.asarray(v)) for v in (a if isinstance(a, list | tuple) else [a])] for a in (values, labels))
    if [x.size for x in xs] != [y.size for y in ys] or not sum(x.size for x in xs):
        raise ValueError(f"probabilities {[x.size for x in xs]} and labels {[y.size for y in ys]} (voxels) must match")
    total, rng = sum(x.size for x in xs), np.random.default_rng(seed)
    if total > max_voxels:  # the same share of every case, without replacement
        picks = [rng.choice(x.size, size=max(1, round(max_voxels * x.size / total)), replace=False) for x in xs]
        xs, ys = [x[i] for x, i in zip(xs, picks)], [y[i] for y, i in zip(ys, picks)]
    return np.concatenate(xs).astype(np.float64), np.concatenate(ys) != 0


def reliability_curve(
    probabilities: Any, labels: Any, n_bins: int = 10, *, max_voxels: int = 1_000_000, seed: int = 0
) -> dict[str, Any]:
    """Voxel-level reliability curve of foreground probabilities: per bin, the mean probability vs the truth.

    Bins split [0, 1] evenly by foreground probability; a bin's ``confidence`` is its voxels' mean foreground
    probability and its ``accuracy`` the fraction of them that are foreground, so a calibrated model lies on the
    diagonal. Background far from the heart dominates a whole volume; pass ``probability[region]`` and
    ``label[region]`` to look near the boundary.

    Args:
        probabilities: foreground probability map(s): an array, or a list of arrays (several cases).
        labels: the truth (non-zero = foreground), same shape(s).
        n_bins: number of equal-width bins.
        max_voxels, seed: at most ``max_voxels`` voxels are used, the same share of each case, drawn with ``seed``.

    Returns:
        ``{"bins": [{"low", "high", "confidence", "accuracy", "count"}, ...] (empty bins have None), "n_voxels"}``.
    """
    p, y = _voxels(probabilities, labels, max_voxels, seed)
    index = np.clip((p * n_bins).astype(int), 0, n_bins - 1)
    count = np.bincount(index, minlength=n_bins)
    conf = np.bincount(index, weights=p, minlength=n_bins)
    acc = np.bincount(index, weights=y.astype(np.float64), minlength=n_bins)
    mean = [(float(conf[b] / c), float(acc[b] / c)) if (c := count[b]) else (None, None) for b in range(n_bins)]
    bins = [
        dict(low=b / n_bins, high=(b + 1) / n_bins, confidence=mean[b][0], accuracy=mean[b][1], count=int(count[b]))
        for b in range(n_bins)
    ]
    return {"bins": bins, "n_voxels": int(p.size)}


def expected_calibration_error(
    probabilities: Any, labels: Any, n_bins: int = 10, *, max_voxels: int = 1_000_000, seed: int = 0
) -> float:
    """ECE: the voxel-weighted mean gap between confidence and accuracy over :func:`reliability_curve`'s bins."""
    curve = reliability_curve(probabilities, labels, n_bins, max_voxels=max_voxels, seed=seed)
    total = curve["n_voxels"]
    return float(sum(b["count"] / total * abs(b["accuracy"] - b["confidence"]) for b in curve["bins"] if b["count"]))


def _logit(probability: np.ndarray) -> np.ndarray:
    p = np.clip(probability, 1e-7, 1 - 1e-7)
    return np.log(p) - np.log1p(-p)


def fit_temperature(
    logits_or_probabilities: Any, labels: Any, *, kind: str = "auto", max_voxels: int = 1_000_000, seed: int = 0
) -> float:
    """Temperature T of the foreground logit that minimises the voxel-level negative log-likelihood.

    Temperature scaling divides the foreground logit (``logit1 - logit0`` of a two-class softmax, i.e.
    ``log(p / (1 - p))``) by T: T > 1 softens an over-confident model, T < 1 sharpens it, and the mask (p > 0.5)
    never changes. T is searched on log T in [0.05, 20] (bounded 1-D search, scipy's ``minimize_scalar``).

    Args:
        logits_or_probabilities: foreground logits or probabilities (an array or a list of arrays).
        labels: the truth (non-zero = foreground), same shape(s).
        kind: "logit", "probability", or "auto" (probability when every value lies in [0, 1]).
        max_voxels, seed: as in :func:`reliability_curve`.

    Returns:
        The temperature.
    """
    from scipy.optimize import minimize_scalar

    x, y = _voxels(logits_or_probabilities, labels, max_voxels, seed)
    if kind not in ("auto", "logit", "probability"):
        raise ValueError(f"kind must be 'auto', 'logit' or 'probability', got {kind!r}")
    if kind == "probability" or (kind == "auto" and x.min() >= 0 and x.max() <= 1):
        x = _logit(x)
    sign = np.where(y, 1.0, -1.0)

    def nll(log_t: float) -> float:  # -log sigmoid(sign * z / T), stably
        return float(np.logaddexp(0.0, -sign * x / math.exp(log_t)).mean())

    result = minimize_scalar(nll, bounds=(math.log(0.05), math.log(20.0)), method="bounded", options={"xatol": 1e-5})
    return float(math.exp(result.x))


def apply_temperature(probability: Any, temperature: float) -> np.ndarray:
    """The foreground probability with its logit divided by ``temperature`` (same shape, float32)."""
    if not temperature > 0:
        raise ValueError(f"temperature must be positive, got {temperature}")
    z = _logit(np.asarray(probability, dtype=np.float64)) / float(temperature)
    return (1.0 / (1.0 + np.exp(-z))).astype(np.float32)


# ---- 5. Risk-coverage and AUROC ------------------------------------------------------------------
def risk_coverage(scores: Sequence[float], dice: Sequence[float]) -> dict[str, Any]:
    """Mean Dice of the scans kept when only the best-scoring fraction is trusted, for every coverage.

    Scans are sorted by score, highest first; keeping the top k gives coverage k / n and the mean Dice of those k.
    Tied scores share their mean Dice (the expected value over the tie's orders), so a constant score earns no
    credit from the input order. ``area`` is the mean over the n coverages (the area under the step curve); the
    oracle (sorting by Dice itself) and ``overall_mean_dice`` (a score that knows nothing) bracket it.

    Args:
        scores: each scan's quality score (higher = trusted more).
        dice: each scan's Dice.

    Returns:
        ``{"coverage": [...], "mean_dice": [...], "risk": [1 - mean Dice, ...], "area", "oracle_area",
        "overall_mean_dice"}``.
    """
    s, d = np.asarray(scores, dtype=np.float64), np.asarray(dice, dtype=np.float64)
    if s.shape != d.shape or s.ndim != 1 or s.size == 0:
        raise ValueError(f"risk_coverage needs one score per Dice, got {s.shape} and {d.shape}")
    order = np.argsort(-s, kind="stable")
    _, group, group_size = np.unique(s[order], return_inverse=True, return_counts=True)
    d_tied = np.bincount(group, weights=d[order])[group] / group_size[group]
    k = np.arange(1, s.size + 1)
    kept = np.cumsum(d_tied) / k
    oracle = np.cumsum(np.sort(d)[::-1]) / k
    curve = {"coverage": (k / s.size).tolist(), "mean_dice": kept.tolist(), "risk": (1 - kept).tolist()}
    areas = {"area": float(kept.mean()), "oracle_area": float(oracle.mean()), "overall_mean_dice": float(d.mean())}
    return {**curve, **areas}


def auroc(scores: Sequence[float], is_failure: Sequence[bool]) -> float:
    """How well a low score finds the failures: P(a good scan scores above a failure), ties counting half.

    Rank-based (Mann-Whitney U with average ranks for ties): 1 = every failure scores below every good scan,
    0.5 = chance. NaN when there is no failure or no good scan.

    Args:
        scores: each scan's quality score (higher = better).
        is_failure: whether each scan failed (e.g. Dice < 0.5).

    Returns:
        The AUROC.
    """
    from scipy.stats import rankdata

    s, f = np.asarray(scores, dtype=np.float64), np.asarray(is_failure, dtype=bool)
    if s.shape != f.shape or s.ndim != 1:
        raise ValueError(f"auroc needs one failure flag per score, got {s.shape} and {f.shape}")
    n_fail, n_good = int(f.sum()), int((~f).sum())
    if not n_fail or not n_good:
        return math.nan
    ranks = rankdata(s)  # average ranks; the good scans should hold the high ones
    u = ranks[~f].sum() - n_good * (n_good + 1) / 2
    return float(u / (n_good * n_fail))
