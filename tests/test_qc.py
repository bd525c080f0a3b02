"""Quality control: each signal on constructed masks and probability maps, the quality model, calibration, ranking."""

from __future__ import annotations

import json
import math
import re

import numpy as np
import pytest
from scipy import ndimage

from heartseg_utils import qc

SPACING = (0.8, 1.25, 2.5)  # anisotropic on purpose: a bug that ignores or reorders the spacing changes the numbers
SHAPE = (64, 48, 24)


def _sphere(centre_mm, radius_mm, shape=SHAPE, spacing=SPACING):
    grid = np.indices(shape).astype(float)
    d2 = sum(((g + 0.5) * s - c) ** 2 for g, c, s in zip(grid, centre_mm, spacing))
    return d2 <= radius_mm**2


CENTRE = (25.6, 30.0, 30.0)  # the middle of SHAPE in mm


@pytest.fixture(scope="module")
def reference():
    """Training ranges from eight spheres of radius 9-11 mm, jittered by up to 1.5 mm around the middle."""
    rng = np.random.default_rng(0)
    labels = [_sphere(np.add(CENTRE, rng.uniform(-1.5, 1.5, 3)), rng.uniform(9, 11)) for _ in range(8)]
    return qc.label_statistics(labels, [SPACING] * len(labels))


def test_volume_of_a_sphere_in_ml():
    """A sphere of radius 10 mm at anisotropic spacing: voxel count x voxel volume, close to 4/3 pi r^3."""
    mask = _sphere(CENTRE, 10.0)
    m = qc.mask_measurements(mask, SPACING)
    assert m["volume_ml"] == pytest.approx(mask.sum() * 0.8 * 1.25 * 2.5 / 1000)
    assert m["volume_ml"] == pytest.approx(4 / 3 * math.pi * 10**3 / 1000, rel=0.03)
    assert m["n_components"] == 1 and m["largest_share"] == 1.0
    assert [m[f"extent_{a}_mm"] for a in "xyz"] == pytest.approx([20.0, 20.0, 20.0], abs=2.6)  # one voxel per axis
    assert [m[f"centroid_{a}"] for a in "xyz"] == pytest.approx([0.5, 0.5, 0.5], abs=0.02)


def test_components_use_26_connectivity():
    """Two separate blobs are two components; two cubes touching at one corner are one (26-connectivity)."""
    mask = np.zeros(SHAPE, bool)
    mask[2:10, 2:10, 2:6] = True  # 256 voxels
    mask[30:34, 30:34, 10:14] = True  # 64 voxels
    m = qc.mask_measurements(mask, SPACING)
    assert m["n_components"] == 2 and m["largest_share"] == pytest.approx(256 / 320)
    corner = np.zeros(SHAPE, bool)
    corner[0:2, 0:2, 0:2] = corner[2:4, 2:4, 2:4] = True
    assert qc.mask_measurements(corner, SPACING)["n_components"] == 1


def test_centroid_is_relative_to_the_body_box():
    """The centroid is a fraction of the body's bounding box (image > 0), not of the array."""
    mask = np.zeros(SHAPE, bool)
    mask[20:30, 10:20, 5:10] = True
    image = np.zeros(SHAPE, np.int16)
    image[20:40, 10:30, 5:15] = 100
    m = qc.mask_measurements(mask, SPACING, body=image)
    assert [m[f"centroid_{a}"] for a in "xyz"] == pytest.approx([0.25, 0.25, 0.25])
    assert qc.mask_measurements(mask, SPACING)["centroid_x"] == pytest.approx(25 / 64)


def test_reference_is_json_and_a_training_like_mask_is_plausible(reference):
    """qc.json's reference is strict JSON; a sphere like the training ones raises nothing."""
    assert reference["n_cases"] == 8 and set(reference["measurements"]) == set(qc.MEASUREMENTS)
    json.dumps(reference, allow_nan=False)
    v = reference["measurements"]["volume_ml"]
    assert v["low"] < v["p05"] <= v["median"] <= v["p95"] < v["high"]
    result = qc.plausibility(_sphere(CENTRE, 10.0), SPACING, reference)
    assert result["plausible"] and result["violations"] == [] and not any(result["out_of_range"].values())
    assert abs(result["z"]["volume_ml"]) < 2
    json.dumps(result, allow_nan=False)


def test_a_shifted_mask_has_its_centroid_out_of_range(reference):
    """The same sphere moved 15 mm along x: the centroid along x is above the range, with a reason saying so."""
    result = qc.plausibility(_sphere((CENTRE[0] + 15, *CENTRE[1:]), 10.0), SPACING, reference)
    assert result["out_of_range"]["centroid_x"] and not result["out_of_range"]["centroid_y"]
    assert result["z"]["centroid_x"] > 3 and not result["plausible"]
    (reason,) = result["violations"]
    assert re.fullmatch(r"centroid along x \(fraction of the body box\) 0\.\d\d is above the training range "
                        r"0\.\d\d-0\.\d\d", reason), reason  # fmt: skip


def test_a_small_mask_is_below_the_volume_range(reference):
    """A sphere of half the radius: the volume (and the extents) fall below the training range, in mL and mm."""
    result = qc.plausibility(_sphere(CENTRE, 5.0), SPACING, reference)
    assert result["out_of_range"]["volume_ml"] and result["z"]["volume_ml"] < -3
    volume = result["measurements"]["volume_ml"]
    low, high = (reference["measurements"]["volume_ml"][k] for k in ("low", "high"))
    assert f"volume {volume:.1f} mL is below the training range {low:.1f}-{high:.1f} mL" in result["violations"]
    assert any(r.startswith("extent along x") and r.endswith(" mm") for r in result["violations"])


def test_an_empty_mask_is_flagged_with_a_clear_reason(reference):
    """An empty mask: one plain violation, None for what cannot be measured, finite features, needs review."""
    empty = np.zeros(SHAPE, bool)
    result = qc.plausibility(empty, SPACING, reference)
    assert result["violations"][0].startswith("empty mask: no foreground voxel") and len(result["violations"]) == 1
    assert result["measurements"]["centroid_x"] is None and result["z"]["volume_ml"] is None
    json.dumps(result, allow_nan=False)
    features = qc.qc_features(qc.uncertainty(np.zeros(SHAPE, np.float32)), result)
    assert all(math.isfinite(v) for v in features.values()) and features["abs_z_volume_ml"] == qc.Z_CAP
    assert features["max_abs_z"] == qc.Z_CAP and features["n_violations"] == 1 and features["n_components"] == 0
    model = {"kind": "ridge", "features": [], "means": [], "scales": [], "weights": [], "intercept": 0.9}
    decision = qc.flag(features, model, 0.5, result)
    assert decision["needs_review"] and decision["quality_score"] == 0.9
    assert decision["reasons"] == result["violations"]


def test_features_of_a_plausible_scan(reference):
    """The feature vector: uncertainty numbers (no counts), TTA disagreement and a few plausibility summaries."""
    mask = _sphere(CENTRE, 10.0)
    prob = np.where(mask, 0.9, 0.1).astype(np.float32)
    features = qc.qc_features(
        qc.uncertainty(prob, tta_probabilities=[prob, prob]), qc.plausibility(mask, SPACING, reference)
    )
    assert set(features) == {
        "mean_probability", "entropy_in_mask", "entropy_shell", "uncertain_fraction", "tta_pairwise_dice",
        "tta_std_in_union", "n_components", "largest_share", "abs_z_volume_ml", "max_abs_z", "n_violations",
    }  # fmt: skip
    assert features["n_violations"] == 0 and features["max_abs_z"] < 3 and features["tta_pairwise_dice"] == 1.0


def test_a_confident_map_is_less_uncertain_than_a_blurred_one():
    """A sharp, sure map has higher mean probability and lower entropy/uncertain fraction than a blurred one."""
    mask = _sphere(CENTRE, 10.0)
    sure = np.where(mask, 0.99, 0.01).astype(np.float32)
    blurred = ndimage.gaussian_filter(mask.astype(np.float32), sigma=2.0)
    a, b = qc.uncertainty(sure), qc.uncertainty(blurred, mask=mask)
    assert a["mask_voxels"] == mask.sum() and a["uncertain_fraction"] == 0.0
    assert a["mean_probability"] == pytest.approx(0.99)
    assert a["entropy_in_mask"] == pytest.approx(qc.binary_entropy(0.99), rel=1e-5)
    assert a["mean_probability"] > b["mean_probability"]
    assert a["entropy_in_mask"] < b["entropy_in_mask"] and a["entropy_shell"] < b["entropy_shell"]
    assert b["uncertain_fraction"] > 0.2
    assert qc.binary_entropy(0.5) == pytest.approx(1.0) and qc.binary_entropy(0.0) == pytest.approx(0.0, abs=1e-9)


def test_tta_members_that_agree_show_no_disagreement():
    """Identical members: pairwise Dice 1, std 0; members shifted against each other: lower Dice, positive std."""
    prob = np.where(_sphere(CENTRE, 10.0), 0.95, 0.05).astype(np.float32)
    same = qc.uncertainty(prob, tta_probabilities=[prob, prob.copy(), prob.copy()])
    assert same["tta_members"] == 3 and same["tta_pairwise_dice"] == 1.0 and same["tta_std_in_union"] == 0.0
    members = [np.roll(prob, shift, axis=0) for shift in (-4, 0, 4)]
    moved = qc.member_disagreement(members)
    assert moved["tta_pairwise_dice"] < 0.9 and moved["tta_std_in_union"] > 0.1
    assert "tta_members" not in qc.qc_features(same)
    with pytest.raises(ValueError, match="two or more maps"):
        qc.member_disagreement([prob])


def _cases(n=12, seed=1):
    """Feature dicts whose "signal" tracks Dice (with a little noise) and whose "noise" does not."""
    rng = np.random.default_rng(seed)
    dice = np.linspace(0.2, 0.95, n)
    rng.shuffle(dice)
    features = [{"signal": d + rng.normal(0, 0.02), "noise": rng.normal(), "constant": 3.0} for d in dice]
    return features, dice


def test_the_quality_model_ranks_cases_by_dice():
    """Fitted on 12 constructed cases, the score orders new cases as their Dice; the model is JSON."""
    features, dice = _cases()
    model = qc.fit_quality_model(features, dice)
    json.dumps(model, allow_nan=False)
    assert model["features"] == ["constant", "noise", "signal"] and model["n_cases"] == 12
    weights = dict(zip(model["features"], model["weights"]))
    assert weights["constant"] == 0.0 and weights["signal"] > 5 * abs(weights["noise"])
    assert model["loo_mae"] < 0.15 and model["train_mae"] <= model["loo_mae"] and len(model["loo_scores"]) == 12
    assert np.corrcoef(model["loo_scores"], dice)[0, 1] > 0.9  # left-out cases are ranked too, not only fitted ones
    new, new_dice = _cases(8, seed=2)
    scores = [qc.quality_score(f, model) for f in new]
    assert all(0 <= s <= 1 for s in scores)
    assert np.argsort(scores).tolist() == np.argsort(new_dice).tolist()
    with pytest.raises(KeyError, match="signal"):
        qc.quality_score({"noise": 0.0, "constant": 3.0}, model)


def test_choose_threshold_catches_every_failure():
    """Three failures (Dice < 0.5), the best-scoring at 0.6; the next score is 0.7: threshold 0.65, one false alarm."""
    scores = [0.1, 0.3, 0.35, 0.6, 0.7, 0.9]
    dice = [0.2, 0.4, 0.8, 0.3, 0.9, 0.95]
    t = qc.choose_threshold(scores, dice, fail_below=0.5)
    assert t["threshold"] == pytest.approx(0.65)
    assert t["n_failures"] == t["failures_caught"] == 3
    assert t["n_false_alarms"] == 1 and t["false_alarm_rate"] == pytest.approx(1 / 3)
    assert t["flagged"] == [True, True, True, True, False, False] and "halfway" in t["reason"]
    json.dumps(t, allow_nan=False)
    fallback = qc.choose_threshold([0.8, 0.9, 0.85], [0.9, 0.92, 0.88], margin=0.05)
    assert fallback["threshold"] == pytest.approx(0.75) and fallback["n_failures"] == 0
    assert fallback["reason"].startswith("no validation case had Dice < 0.5") and not any(fallback["flagged"])
    top = qc.choose_threshold([0.9, 0.5], [0.1, 0.9])  # the failure scores highest: everything is flagged
    assert top["flagged"] == [True, True] and top["false_alarm_rate"] == 1.0


def test_flag_by_score_and_by_plausibility(reference):
    """Below the threshold: flagged with the score's reason; above it and plausible: not flagged."""
    model = qc.fit_quality_model(*_cases())
    good, bad = {"signal": 0.9, "noise": 0.0, "constant": 3.0}, {"signal": 0.2, "noise": 0.0, "constant": 3.0}
    plausible = qc.plausibility(_sphere(CENTRE, 10.0), SPACING, reference)
    threshold = {"threshold": 0.5}
    ok = qc.flag(good, model, threshold, plausible)
    assert ok == {"quality_score": ok["quality_score"], "needs_review": False, "reasons": []}
    low = qc.flag(bad, model, threshold)
    assert low["needs_review"] and re.fullmatch(r"quality score 0\.\d{3} .* below the review threshold 0\.500",
                                                low["reasons"][0])  # fmt: skip
    shifted = qc.plausibility(_sphere((CENTRE[0] + 15, *CENTRE[1:]), 10.0), SPACING, reference)
    assert qc.flag(good, model, 0.5, shifted)["reasons"] == shifted["violations"]


def _calibrated(n=400_000, seed=0):
    """Foreground probabilities and labels drawn as Bernoulli(p): calibrated by construction."""
    rng = np.random.default_rng(seed)
    p = rng.uniform(0, 1, n)
    return p, rng.uniform(0, 1, n) < p


def test_ece_is_zero_when_calibrated_and_large_when_over_confident():
    """Bernoulli(p) labels give ECE ~ 0; the same labels with the logit doubled (temperature 0.5) give a large ECE."""
    p, y = _calibrated()
    assert qc.expected_calibration_error(p, y) < 0.01
    over = qc.apply_temperature(p, 0.5)
    assert qc.expected_calibration_error(over, y) > 0.05
    curve = qc.reliability_curve(p, y, n_bins=10)
    assert curve["n_voxels"] == p.size and len(curve["bins"]) == 10 and sum(b["count"] for b in curve["bins"]) == p.size
    for b in curve["bins"]:
        assert b["low"] <= b["confidence"] <= b["high"] and b["accuracy"] == pytest.approx(b["confidence"], abs=0.02)
    sampled = qc.reliability_curve(p, y, max_voxels=10_000, seed=3)
    assert sampled["n_voxels"] == 10_000 and sampled == qc.reliability_curve(p, y, max_voxels=10_000, seed=3)
    assert qc.reliability_curve(np.array([0.05, 0.15]), np.array([0, 1]), n_bins=4)["bins"][3]["confidence"] is None


def test_fit_temperature_recovers_a_known_temperature():
    """Probabilities made over-confident by temperature 0.5 need T = 2; applying it brings the ECE back down."""
    p, y = _calibrated(200_000)
    over = qc.apply_temperature(p, 0.5)
    t = qc.fit_temperature(over, y)
    assert t == pytest.approx(2.0, rel=0.05)
    assert qc.fit_temperature([over[:1000], over[1000:]], [y[:1000], y[1000:]]) == pytest.approx(t, rel=1e-3)
    logits = 2 * (np.log(p) - np.log1p(-p))  # the over-confident logits, before float32 rounding
    assert qc.fit_temperature(logits, y, kind="logit") == pytest.approx(t, rel=1e-2)
    fixed = qc.apply_temperature(over, t)
    assert qc.expected_calibration_error(fixed, y) < 0.2 * qc.expected_calibration_error(over, y)
    assert fixed.dtype == np.float32 and ((fixed > 0.5) == (over > 0.5)).all()  # the mask never changes
    assert qc.fit_temperature(p, y) == pytest.approx(1.0, rel=0.05)


def test_risk_coverage_on_a_hand_computed_example():
    """Sorted by score: Dice 0.8, 1.0, 0.6, 0.2 -> kept means 0.8, 0.9, 0.8, 0.65; area = their mean 0.7875."""
    rc = qc.risk_coverage([0.9, 0.5, 0.7, 0.1], [0.8, 0.6, 1.0, 0.2])
    assert rc["coverage"] == [0.25, 0.5, 0.75, 1.0]
    assert rc["mean_dice"] == pytest.approx([0.8, 0.9, 0.8, 0.65])
    assert rc["risk"] == pytest.approx([0.2, 0.1, 0.2, 0.35])
    assert rc["area"] == pytest.approx(0.7875) and rc["oracle_area"] == pytest.approx((1.0 + 0.9 + 0.8 + 0.65) / 4)
    assert rc["overall_mean_dice"] == pytest.approx(0.65)
    tied = qc.risk_coverage([1.0, 1.0, 0.0], [1.0, 0.0, 0.5])  # a tie shares its mean Dice: order gives no credit
    assert tied["mean_dice"] == pytest.approx([0.5, 0.5, 0.5]) and tied["area"] == pytest.approx(0.5)


def test_auroc_on_hand_computed_examples():
    """Good scans above failures: 1; reversed: 0; one misordered pair of four: 0.75; a tie counts half."""
    assert qc.auroc([0.9, 0.8, 0.3, 0.2], [False, False, True, True]) == 1.0
    assert qc.auroc([0.1, 0.2, 0.8, 0.9], [False, False, True, True]) == 0.0
    assert qc.auroc([0.9, 0.4, 0.6, 0.2], [False, False, True, True]) == pytest.approx(0.75)
    assert qc.auroc([0.5, 0.5, 0.1], [False, True, True]) == pytest.approx(0.75)
    assert math.isnan(qc.auroc([0.5, 0.6], [False, False]))


def test_bad_inputs_fail_clearly():
    """Wrong dimensions, spacing, shapes and empty training labels name what is wrong."""
    with pytest.raises(ValueError, match="3D"):
        qc.mask_measurements(np.zeros((4, 4)), SPACING)
    with pytest.raises(ValueError, match="spacing"):
        qc.mask_measurements(np.zeros(SHAPE), (1.0, 0.0, 1.0))
    with pytest.raises(ValueError, match="empty"):
        qc.label_statistics([np.zeros(SHAPE)], [SPACING])
    with pytest.raises(ValueError, match="differs"):
        qc.uncertainty(np.zeros(SHAPE), mask=np.zeros((2, 2, 2)))
    with pytest.raises(ValueError, match="one score per Dice"):
        qc.choose_threshold([0.1], [0.2, 0.3])


def test_the_leave_one_out_scores_leave_a_whole_group_out() -> None:
    """With groups, a case's score comes from a fit without any case of its group: a copy cannot vouch for it."""
    rng = np.random.default_rng(0)
    features = [{"a": float(x), "b": float(rng.normal())} for x in np.linspace(0, 1, 6)]
    dice = [0.2 + 0.6 * f["a"] for f in features]
    groups = ["p", "p", "q", "q", "r", "r"]
    grouped = qc.fit_quality_model(features, dice, groups=groups)
    for i in (0, 2, 4):  # refit by hand without the group of case i
        out = [j for j in range(6) if groups[j] != groups[i]]
        rest = qc.fit_quality_model([features[j] for j in out], [dice[j] for j in out])
        assert grouped["loo_scores"][i] == pytest.approx(qc.quality_score(features[i], rest), abs=1e-9)
    plain = qc.fit_quality_model(features, dice)
    assert not np.allclose(plain["loo_scores"], grouped["loo_scores"])
    with pytest.raises(ValueError, match=">= 3 groups"):
        qc.fit_quality_model(features, dice, groups=["p"] * 3 + ["q"] * 3)


def test_a_range_reason_never_prints_the_value_equal_to_the_bound_it_crossed() -> None:
    """0.5004 above 0.32-0.5003 must not read "0.50 is above 0.32-0.50"; a share's range stays within [0, 1]."""
    from heartseg_utils.qc import _range_reason

    text = _range_reason("centroid_y", 0.5004, 0.32, 0.5003)
    assert text == "centroid along y (fraction of the body box) 0.5004 is above the training range 0.3200-0.5003"
    assert _range_reason("largest_share", 0.53, 0.95, 1.05).endswith("0.53 is below the training range 0.95-1.00")
    assert _range_reason("volume_ml", 30.0, 14.0, 23.1) == "volume 30.0 mL is above the training range 14.0-23.1 mL"
