"""A run's quality control, ``qc.json``: fitted on its validation cases at the end of training, applied by predict.

Introduced in notebook 04 (issue 23). :mod:`heartseg_utils.qc` holds the signals; this module puts them together
the one way training (:func:`fit`) and prediction (:func:`assess`) share, so a new scan is scored exactly as the
validation cases were: every mask is measured in RAS orientation (axis permutations and flips only, so a scan
stored in another orientation is measured like the training labels), the body is the scan's voxels above
:data:`BODY_FRACTION` of its 99th intensity percentile, the probability is temperature-scaled before the
uncertainty is measured, and the flip members (identity and one flip per TTA axis) give the disagreement.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np

from heartseg_utils import metrics, qc

VERSION = 3  # 2: only severe violations flag alone, an empty mask scores 0; 3: shifted validation copies in the fit
BODY_FRACTION = 0.1  # body = voxels above this fraction of the scan's 99th intensity percentile
REGION_VOXELS = 5  # calibration is measured within this many voxels of the truth or the prediction
FAIL_BELOW = 0.5  # a case with Dice below this is a failure the flag must catch
MIN_CASES = 3  # the quality model needs at least this many validation cases


def to_ras(volume: Any, affine: Any) -> tuple[np.ndarray, tuple[float, float, float]]:
    """The array reoriented to RAS by axis permutations and flips (no resampling), and its voxel size in mm."""
    from nibabel import orientations as ornt

    affine = np.asarray(affine, dtype=np.float64)
    start = ornt.io_orientation(affine)
    to_canonical = ornt.ornt_transform(start, ornt.axcodes2ornt(("R", "A", "S")))
    zooms = np.sqrt((affine[:3, :3] ** 2).sum(axis=0))
    spacing = tuple(float(zooms[int(np.flatnonzero(start[:, 0] == axis)[0])]) for axis in range(3))
    return ornt.apply_orientation(np.asarray(volume), to_canonical), spacing  # type: ignore[return-value]


def body_mask(image: Any) -> np.ndarray:
    """The body: voxels above :data:`BODY_FRACTION` of the image's 99th percentile (air and noise are below)."""
    values = np.asarray(image, dtype=np.float32)
    return values > BODY_FRACTION * float(np.percentile(values, 99))


def read_scan(path: str | os.PathLike[str]) -> tuple[np.ndarray, np.ndarray]:
    """A 3D NIfTI's voxels (first channel of a 4D file) and affine."""
    import nibabel as nib

    image = nib.load(str(path))
    data = np.asanyarray(image.dataobj)
    return (data[..., 0] if data.ndim == 4 else data), image.affine


def training_reference(items: Iterable[Mapping[str, Any]], values: Sequence[int] | None = None) -> Any:
    """:func:`qc.label_statistics` of the training labels (``items``: ``image`` and ``label`` paths), in RAS.

    ``values`` None: of the foreground (label != 0). A list of label values (a multi-class run): ``{value:
    statistics of that class}``, each file read once.
    """
    keys = [None] if values is None else [int(v) for v in values]
    labels: dict[Any, list[np.ndarray]] = {key: [] for key in keys}
    spacings, bodies = [], []
    for item in items:
        label, affine = read_scan(item["label"])
        image, _ = read_scan(item["image"])
        for key in keys:
            ras, spacing = to_ras(label != 0 if key is None else label == key, affine)
            labels[key].append(ras)
        spacings.append(spacing)  # one grid for every class
        bodies.append(to_ras(body_mask(image), affine)[0])
    found = {key: qc.label_statistics(masks, spacings, bodies) for key, masks in labels.items()}
    return found[None] if values is None else found


def signals(
    probability: Any,
    mask: Any,
    affine: Any,
    reference: Mapping[str, Any],
    *,
    image: Any = None,
    members: Sequence[Any] | None = None,
    temperature: float = 1.0,
) -> tuple[dict[str, float], dict[str, Any]]:
    """One scan's quality features (:func:`qc.qc_features`) and its plausibility check, as :func:`fit` measures them.

    Args:
        probability: foreground probability on the scan's grid (what the mask was thresholded from).
        mask: the final mask (after any post-processing), same grid.
        affine: the scan's affine.
        reference: ``qc.json``'s ``reference`` (:func:`training_reference`).
        image: the scan's voxels, for the body box; None = the whole array.
        members: the flip members' probabilities (identity first), for the disagreement; None = no TTA signal.
        temperature: divides the foreground logit before the uncertainty is measured.
    """
    p = qc.apply_temperature(probability, temperature) if temperature != 1.0 else probability
    uncertain = qc.uncertainty(p, mask, members)
    ras_mask, spacing = to_ras(np.asarray(mask) != 0, affine)
    body = None if image is None else to_ras(body_mask(image), affine)[0]
    checked = qc.plausibility(ras_mask, spacing, reference, body)
    return qc.qc_features(uncertain, checked), checked


def calibrate(cases: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Temperature scaling of the validation probabilities near each mask, with the ECE before and after.

    The temperature is used (``value``) only where it lowers the validation ECE; otherwise ``value`` is 1.
    """
    regions = [qc.near_mask(np.asarray(c["label"]) | np.asarray(c["mask"]), REGION_VOXELS) for c in cases]
    probs = [np.asarray(c["probability"])[r] for c, r in zip(cases, regions)]
    labels = [np.asarray(c["label"])[r] for c, r in zip(cases, regions)]
    fitted = qc.fit_temperature(probs, labels, kind="probability")
    before = qc.expected_calibration_error(probs, labels)
    after = qc.expected_calibration_error([qc.apply_temperature(p, fitted) for p in probs], labels)
    return {
        "value": fitted if after < before else 1.0,
        "fitted": fitted,
        "ece_before": before,
        "ece_after": after,
        "n_voxels": int(sum(p.size for p in probs)),
        "region": f"voxels within {REGION_VOXELS} voxels of the truth or the prediction of each validation case",
        "rule": "use the fitted temperature only if it lowers the validation ECE",
    }


def _signals_of(case: Mapping[str, Any], reference: Mapping[str, Any], temperature: float) -> Any:
    """:func:`signals` of one case dict of :func:`fit`."""
    return signals(
        case["probability"],
        case["mask"],
        case["affine"],
        reference,
        image=case.get("image"),
        members=case.get("members"),
        temperature=temperature,
    )


def fit(
    cases: Sequence[Mapping[str, Any]],
    reference: Mapping[str, Any],
    *,
    shifted: Sequence[Mapping[str, Any]] = (),
    **decisions: Any,
) -> dict[str, Any]:
    """The content of ``qc.json`` from the validation cases, as training writes it (docs/contract.md).

    Args:
        cases: one dict per validation case: ``case``, ``probability`` (what the final mask came from), ``mask``
            (final, after post-processing), ``label``, ``affine``, ``image`` and ``members`` (flip members).
        reference: :func:`training_reference` of the training labels.
        shifted: shifted copies of the validation cases (``heartseg_utils.shifts``), the same keys plus ``kind``
            (``case`` names the source case). Without them every validation case may be good and nothing places
            the threshold; with them the quality model and the threshold also see failures. A copy with an empty
            mask scores 0 (:func:`verdict`) and is left out of the model's fit; every copy counts for the
            threshold. The temperature is fitted on the validation cases only.
        decisions: recorded as they are (e.g. ``tta``, ``keep_largest``, ``tta_axes``: how the masks were made).

    Returns:
        ``{"version", "reference", "temperature" (:func:`calibrate`), "quality_model" (or None with fewer than
        :data:`MIN_CASES` cases), "threshold", "validation": [per case: case, dice, loo score, needs_review,
        reasons], "shifted" (the same per copy, with its kind), "fail_below", "decisions", "note"}``.
    """
    if not cases:
        raise ValueError("qc_run.fit needs at least one validation case")
    temperature = calibrate(cases)
    everything = [*cases, *shifted]
    found = [_signals_of(c, reference, temperature["value"]) for c in everything]
    dice = [metrics.dice(c["mask"], c["label"]) for c in everything]
    model = threshold = None
    loo = [None] * len(everything)
    if len(cases) >= MIN_CASES:
        used = [i for i, (f, p) in enumerate(found) if i < len(cases) or p["measurements"]["n_components"] > 0]
        groups = [everything[i].get("case", i) for i in used]
        model = qc.fit_quality_model([found[i][0] for i in used], [dice[i] for i in used], groups=groups)
        for i, score in zip(used, model["loo_scores"]):
            loo[i] = score
        loo = [0.0 if s is None else s for s in loo]  # an empty shifted mask scores 0
        threshold = qc.choose_threshold(loo, dice, FAIL_BELOW)
    record = {"version": VERSION, "reference": reference, "temperature": temperature, "quality_model": model}
    record.update(threshold=threshold, fail_below=FAIL_BELOW, decisions=dict(decisions), note=_note(cases, shifted))
    rows = []
    for c, d, s, (f, p) in zip(everything, dice, loo, found):
        v = verdict(record, f, p)
        rows.append({"case": c.get("case"), "dice": d, "loo_score": s, "needs_review": v["needs_review"]})
        rows[-1].update({"kind": c["kind"]} if "kind" in c else {}, reasons=v["reasons"])
    record.update(validation=rows[: len(cases)], shifted=rows[len(cases) :])
    return record


def _note(cases: Sequence[Mapping[str, Any]], shifted: Sequence[Mapping[str, Any]]) -> str:
    """``qc.json``'s one-line account of what the quality model and the threshold were fitted on."""
    if len(cases) < MIN_CASES:
        return f"{len(cases)} validation case(s) < {MIN_CASES}: no quality model; only plausibility rules flag"
    kinds = sorted({c["kind"] for c in shifted})
    copies = f" and {len(shifted)} shifted copies of them ({', '.join(kinds)})" if shifted else ""
    return (
        f"quality model fitted on {len(cases)} validation cases{copies}; threshold chosen on leave-one-case-out "
        "scores (a case and its copies are left out together)"
    )


def class_case(case: Mapping[str, Any], k: int, value: int) -> dict[str, Any]:
    """A multi-class case (``probabilities`` (K, ...), label-map ``mask`` and ``label``, ``class_members``) seen as
    class ``k`` (label value ``value``) against everything else: what :func:`fit` and :func:`assess` take."""
    members = case.get("class_members")
    label = case.get("label")
    return {
        "case": case.get("case"),
        "probability": np.asarray(case["probabilities"][k]),
        "mask": np.asarray(case["mask"]) == value,
        "label": None if label is None else np.asarray(label) == value,
        "affine": case["affine"],
        "image": case.get("image"),
        "members": None if members is None else [np.asarray(m[k]) for m in members],
    }


def fit_classes(
    cases: Sequence[Mapping[str, Any]],
    references: Mapping[int, Mapping[str, Any]],
    classes: Mapping[int, str],
    *,
    shifted: Sequence[Mapping[str, Any]] = (),
    **decisions: Any,
) -> dict[str, Any]:
    """``qc.json`` of a multi-class run: one :func:`fit` per class, that class against everything else.

    Args:
        cases: as :func:`fit`'s, with ``probabilities`` (K, ...) and ``class_members`` (members, K, ...) instead of
            ``probability`` and ``members``, and ``mask`` and ``label`` label maps (the dataset's values).
        references: :func:`training_reference` with the class values: ``{value: statistics}``.
        classes: ``{label value: name}`` without background, in the order of the probabilities.
        shifted: shifted copies of the validation cases, as ``cases`` plus ``kind`` (:func:`fit`).

    Returns:
        ``{"version", "label_mode": "multiclass", "classes": {name: {"label_value", ...a binary qc.json}},
        "decisions", "note"}``.
    """
    per_class = {}
    for k, (value, name) in enumerate(classes.items()):
        copies = [{**class_case(c, k, value), "kind": c["kind"]} for c in shifted]
        record = fit([class_case(c, k, value) for c in cases], references[value], shifted=copies, **decisions)
        per_class[name] = {"label_value": int(value), **record}
    copies = f" and {len(shifted)} shifted copies" if shifted else ""
    note = f"one quality model per class ({len(classes)} classes), each fitted on {len(cases)} validation cases{copies}"
    record = {"version": VERSION, "label_mode": "multiclass", "classes": per_class, "decisions": dict(decisions)}
    return {**record, "note": note}


def verdict(record: Mapping[str, Any], features: Mapping[str, float], checked: Mapping[str, Any]) -> dict[str, Any]:
    """``{"quality_score", "needs_review", "reasons"}`` of one scan (:func:`qc.flag`; score None without a model).

    An empty mask scores 0: every training label has a foreground, so its Dice is 0 whatever the signals say
    (an empty mask has no uncertainty to measure, and a linear model would extrapolate it to a good score).
    """
    if record.get("quality_model"):
        result = qc.flag(features, record["quality_model"], record["threshold"], checked)
        if checked["measurements"]["n_components"] == 0:
            result["quality_score"] = 0.0
        return result
    reasons = list(checked.get("severe", checked["violations"]))
    return {"quality_score": None, "needs_review": bool(reasons), "reasons": reasons}


def assess(
    record: Mapping[str, Any],
    probability: Any,
    mask: Any,
    affine: Any,
    *,
    image: Any = None,
    members: Sequence[Any] | None = None,
) -> dict[str, Any]:
    """One new scan's quality control with a run's ``qc.json``: what predict writes into the scan's report.

    Returns:
        ``{"fitted": True, "quality_score", "needs_review", "reasons", "threshold", "temperature", "signals",
        "measurements"}`` (all JSON-serialisable).
    """
    temperature = float(record["temperature"]["value"])
    features, checked = signals(
        probability, mask, affine, record["reference"], image=image, members=members, temperature=temperature
    )
    threshold = record.get("threshold")
    return {
        "fitted": True,
        **verdict(record, features, checked),
        "threshold": None if threshold is None else float(threshold["threshold"]),
        "temperature": temperature,
        "signals": features,
        "measurements": checked["measurements"],
    }


def assess_classes(
    record: Mapping[str, Any],
    probabilities: Any,
    mask: Any,
    affine: Any,
    *,
    image: Any = None,
    class_members: Any = None,
) -> dict[str, Any]:
    """:func:`assess` of a multi-class scan: each class against its own record in ``qc.json``'s ``classes``.

    The scan needs review if any class does (each reason starts with the class's name); its quality score is the
    lowest class score (None if a class has no quality model); ``classes`` holds every class's :func:`assess` block.
    """
    case = {"probabilities": probabilities, "mask": mask, "affine": affine, "image": image}
    case["class_members"] = class_members
    blocks = {}
    for k, (name, sub) in enumerate(record["classes"].items()):
        one = class_case(case, k, int(sub["label_value"]))
        blocks[name] = assess(sub, one["probability"], one["mask"], affine, image=image, members=one["members"])
    scores = [b["quality_score"] for b in blocks.values()]
    return {
        "fitted": True,
        "quality_score": None if None in scores else min(scores),
        "needs_review": any(b["needs_review"] for b in blocks.values()),
        "reasons": [f"{name}: {reason}" for name, b in blocks.items() for reason in b["reasons"]],
        "classes": blocks,
    }


def assess_prediction(record: Mapping[str, Any], result: Mapping[str, Any], image: Any = None) -> dict[str, Any]:
    """The QC block of one ``inference.predict_case`` result (``members=True``), binary or multi-class.

    ``image`` is the scan's voxels (for the body box). A multi-class ``qc.json`` scores each class
    (:func:`assess_classes`); a binary one the foreground (:func:`assess`).
    """
    if record.get("label_mode") == "multiclass":
        if "probabilities" not in result:
            raise ValueError("a multi-class qc.json needs a multi-class prediction (its per-class probabilities)")
        return assess_classes(
            record,
            result["probabilities"],
            result["mask"],
            result["affine"],
            image=image,
            class_members=result.get("class_members"),
        )
    members = result.get("members")
    return assess(record, result["probability"], result["mask"], result["affine"], image=image, members=members)


def not_fitted(run_dir: str | os.PathLike[str]) -> dict[str, Any]:
    """The QC block of a report for a run without ``qc.json``: one trained before QC existed."""
    why = "it was trained before QC existed; retrained, it gets one"
    return {
        "fitted": False,
        "quality_score": None,
        "needs_review": None,
        "reasons": [f"QC is not fitted: {run_dir} has no qc.json ({why})"],
    }
