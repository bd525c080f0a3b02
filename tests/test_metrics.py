"""Metrics: each number cross-checked against an independent NumPy/SciPy computation; empty-mask rules; sanity_check."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from scipy import ndimage

from heartseg_utils import metrics as M

SPACING = (0.8, 1.25, 2.5)  # anisotropic on purpose: a bug that ignores or reorders spacing changes the numbers


def _sphere(shape, centre, radius_mm, spacing=SPACING):
    grid = np.indices(shape).astype(float)
    d2 = sum(((g - c) * s) ** 2 for g, c, s in zip(grid, centre, spacing))
    return d2 <= radius_mm**2


def _cube(shape, lo, hi):
    m = np.zeros(shape, bool)
    m[lo[0] : hi[0], lo[1] : hi[1], lo[2] : hi[2]] = True
    return m


def _reference(pred, truth, spacing):
    """Textbook definitions: surface = mask & ~erosion; distances from a Euclidean distance transform in mm."""
    tp, fp, fn = (pred & truth).sum(), (pred & ~truth).sum(), (~pred & truth).sum()
    surf_p, surf_t = pred & ~ndimage.binary_erosion(pred), truth & ~ndimage.binary_erosion(truth)
    d_pt = ndimage.distance_transform_edt(~surf_t, sampling=spacing)[surf_p]  # pred surface -> truth surface
    d_tp = ndimage.distance_transform_edt(~surf_p, sampling=spacing)[surf_t]
    voxel_ml = np.prod(spacing) / 1000
    return {
        "dice": 2 * tp / (2 * tp + fp + fn),
        "iou": tp / (tp + fp + fn),
        "precision": tp / (tp + fp),
        "recall": tp / (tp + fn),
        "hd95_mm": max(np.percentile(d_pt, 95), np.percentile(d_tp, 95)),
        "assd_mm": np.concatenate([d_pt, d_tp]).mean(),
        "volume_ml_pred": pred.sum() * voxel_ml,
        "volume_ml_true": truth.sum() * voxel_ml,
    }


CASES = {
    "shifted spheres": (_sphere((40, 30, 16), (20, 15, 8), 9.0), _sphere((40, 30, 16), (23, 14, 8), 10.0)),
    "cube inside cube": (_cube((24, 20, 12), (6, 5, 3), (14, 12, 8)), _cube((24, 20, 12), (4, 4, 2), (18, 15, 10))),
    "sphere vs cube": (_sphere((32, 24, 12), (16, 12, 6), 8.0), _cube((32, 24, 12), (8, 6, 3), (22, 18, 9))),
    "touching the border": (_cube((20, 20, 10), (0, 0, 0), (10, 12, 6)), _cube((20, 20, 10), (2, 1, 0), (12, 12, 10))),
}


@pytest.mark.parametrize("name", list(CASES))
def test_every_metric_matches_an_independent_computation(name):
    pred, truth = CASES[name]
    got, want = M.evaluate_case(pred, truth, SPACING), _reference(pred, truth, SPACING)
    assert set(got) == set(M.METRIC_NAMES)
    for key in M.METRIC_NAMES:
        assert got[key] == pytest.approx(want[key], rel=1e-5, abs=1e-5), key


def test_spacing_matters_and_is_in_mm():
    pred, truth = CASES["shifted spheres"]
    iso = M.evaluate_case(pred, truth, (1.0, 1.0, 1.0))
    aniso = M.evaluate_case(pred, truth, SPACING)
    assert iso["dice"] == aniso["dice"]  # overlap counts do not depend on spacing
    assert iso["hd95_mm"] != pytest.approx(aniso["hd95_mm"])
    assert aniso["volume_ml_true"] == pytest.approx(truth.sum() * 0.8 * 1.25 * 2.5 / 1000)


def test_identical_masks_are_perfect_and_torch_channel_input_works():
    import torch

    pred, _ = CASES["sphere vs cube"]
    got = M.evaluate_case(torch.as_tensor(pred)[None], pred.astype(np.uint8), SPACING)
    assert (got["dice"], got["iou"], got["precision"], got["recall"], got["hd95_mm"], got["assd_mm"]) == (
        1,
        1,
        1,
        1,
        0,
        0,
    )


def test_empty_masks_follow_the_documented_rules():
    empty, full = np.zeros((10, 10, 10), bool), _cube((10, 10, 10), (2, 2, 2), (6, 6, 6))
    both = M.evaluate_case(empty, empty, SPACING)
    assert (both["dice"], both["iou"], both["precision"], both["recall"], both["hd95_mm"], both["assd_mm"]) == (
        1,
        1,
        1,
        1,
        0,
        0,
    )
    for pred, truth in ((empty, full), (full, empty)):
        one = M.evaluate_case(pred, truth, SPACING)
        assert (one["dice"], one["iou"], one["precision"], one["recall"]) == (0, 0, 0, 0)
        assert math.isinf(one["hd95_mm"]) and math.isinf(one["assd_mm"])
    assert "empty" in M.__doc__ and "inf" in M.__doc__


def test_summarize_means_sd_and_counts_without_hiding_empty_cases():
    rows = [M.evaluate_case(p, t, SPACING) for p, t in CASES.values()]
    empty, full = np.zeros((10, 10, 10), bool), _cube((10, 10, 10), (2, 2, 2), (6, 6, 6))
    rows.append(M.evaluate_case(empty, full, SPACING))  # a missed case
    summary = M.summarize(rows)
    dice = [r["dice"] for r in rows]
    assert summary["n_cases"] == 5 and summary["dice"] == pytest.approx(np.mean(dice))
    assert summary["dice_sd"] == pytest.approx(np.std(dice, ddof=1))
    assert summary["hd95_mm"] == pytest.approx(np.mean([r["hd95_mm"] for r in rows[:4]]))  # finite cases only...
    assert (summary["n_distance_inf"], summary["n_empty_pred"], summary["n_empty_true"]) == (1, 1, 0)  # ...and counted
    json.dumps(summary, allow_nan=False)  # valid JSON: no NaN or inf
    only_missed = M.summarize(rows[-1:])
    assert only_missed["hd95_mm"] is None and only_missed["dice"] == 0.0
    json.dumps(only_missed, allow_nan=False)


def test_sanity_check_flags_all_foreground_empty_and_oversized():
    shape = (20, 20, 20)
    assert M.sanity_check(_sphere(shape, (10, 10, 10), 3.0, (1, 1, 1))) == []
    empty = M.sanity_check(np.zeros(shape))
    assert len(empty) == 1 and "empty" in empty[0]
    full = M.sanity_check(np.ones(shape))
    assert any("every voxel" in w for w in full) and any("100.0%" in w for w in full)
    body = _cube(shape, (5, 5, 5), (15, 15, 15))
    big = M.sanity_check(_cube(shape, (5, 5, 5), (15, 15, 8)), body_mask=body)  # 30 % of the body, 4 % of the volume
    assert len(big) == 1 and "30.0% of the body" in big[0]
    assert M.sanity_check(_cube(shape, (5, 5, 5), (15, 15, 8))) == []
    assert M.sanity_check(_cube(shape, (5, 5, 5), (15, 15, 8)), body_mask=body, max_fraction=None) == []
    assert len(M.sanity_check(np.zeros(shape), max_fraction=None)) == 1  # the empty rule stays


def test_bad_inputs_are_clear_errors():
    with pytest.raises(ValueError, match="shape"):
        M.evaluate_case(np.zeros((4, 4, 4)), np.zeros((4, 4, 5)), SPACING)
    with pytest.raises(ValueError, match="spacing"):
        M.evaluate_case(np.zeros((4, 4, 4)), np.zeros((4, 4, 4)), (1.0, 1.0))
    with pytest.raises(ValueError, match="3D"):
        M.evaluate_case(np.zeros((4, 4)), np.zeros((4, 4)), SPACING)
