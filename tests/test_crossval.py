"""Notebook 05's machinery: k-fold training folds, the probability-averaging ensemble, the paired ablation table."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from heartseg_utils import crossval, data, splits
from heartseg_utils.config import TrainConfig
from tests._tiny_run import TINY


def test_kfold_split_is_disjoint_and_validates_every_case_once() -> None:
    cases = [f"la_{i:03d}" for i in range(11)]
    folds = splits.kfold_split(cases, n_folds=3, seed=4)
    vals = [v for _, v in folds]
    assert sorted(sum(vals, [])) == cases  # every case validated exactly once
    for train, val in folds:
        assert not set(train) & set(val) and sorted(train + val) == cases
    assert folds == splits.kfold_split(list(reversed(cases)), n_folds=3, seed=4)  # deterministic, order-free


@pytest.mark.parametrize(
    "bad", [{"n_folds": 1}, {"n_folds": 3, "fold": 3}, {"n_folds": 0, "fold": 1}, {"holdout_fraction": 1.0}]
)
def test_bad_fold_settings_are_rejected(bad: dict) -> None:
    with pytest.raises(ValueError, match="fold|holdout_fraction"):
        TrainConfig(**bad)


@pytest.fixture(scope="module")
def study(tiny_msd: Path, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """Two folds of the tiny baseline (1 epoch each) with one holdout case, trained once for this module."""
    root = tmp_path_factory.mktemp("study")
    tiny = {k: v for k, v in TINY.items() if k != "val_fraction"}
    config = {**tiny, "data_dir": str(tiny_msd), "max_epochs": 1, "holdout_fraction": 0.2}
    metrics = crossval.train_folds(config, root, "baseline", n_folds=2)
    return {"root": root, "metrics": metrics, "msd": tiny_msd}


def test_train_folds_writes_disjoint_folds_through_split_json(study: dict) -> None:
    assert len(study["metrics"]) == 2 and crossval.train_folds({}, study["root"], "flip_tta", 2) == []
    splits = [json.loads((study["root"] / "baseline" / f"fold_{k}" / "split.json").read_text()) for k in range(2)]
    cases = sorted(it["case"] for it in data.load_datalist(study["msd"]))
    holdout = splits[0]["holdout"]
    assert len(holdout) == 1 and all(s["holdout"] == holdout for s in splits)  # one shared, untouched test case
    validated = splits[0]["validation"] + splits[1]["validation"]
    assert sorted(validated + holdout) == cases  # every non-holdout case validated exactly once
    for s in splits:
        assert not set(s["train"]) & (set(s["validation"]) | set(holdout))
        assert sorted(s["train"] + s["validation"] + s["holdout"]) == cases


def test_inference_only_arms_reuse_the_baseline_folds(study: dict) -> None:
    assert crossval.fold_dir(study["root"], "largest_cc", 1) == study["root"] / "baseline" / "fold_1"
    rows = crossval.evaluate_folds(study["root"], "largest_cc", 2)
    assert sorted(r["case"] for r in rows) == sorted(
        c
        for k in range(2)
        for c in json.loads((study["root"] / "baseline" / f"fold_{k}" / "split.json").read_text())["validation"]
    )
    assert all(0.0 <= r["dice"] <= 1.0 for r in rows)
    with pytest.raises(ValueError, match="unknown ablation arm"):
        crossval.fold_dir(study["root"], "crf", 0)


def test_average_probabilities_is_the_mean_and_checks_shapes() -> None:
    rng = np.random.default_rng(0)
    probs = [rng.random((5, 4, 3)).astype(np.float32) for _ in range(3)]
    mean = crossval.average_probabilities(probs)
    assert mean.shape == (5, 4, 3) and np.allclose(mean, (probs[0] + probs[1] + probs[2]) / 3)
    assert np.array_equal(mean, crossval.average_probabilities(probs))
    with pytest.raises(ValueError, match="one shape"):
        crossval.average_probabilities([probs[0], probs[1][:4]])


def test_ensemble_on_the_holdout_is_deterministic(study: dict) -> None:
    rows = crossval.evaluate_ensemble(study["root"], "baseline", 2, device="cpu")
    assert [r["member"] for r in rows] == ["fold_0", "fold_1", "ensemble"]
    assert rows == crossval.evaluate_ensemble(study["root"], "baseline", 2, device="cpu")


def test_ablation_table_pairs_gains_by_fold() -> None:
    scores = {"baseline": [0.70, 0.80, 0.90], "better": [0.72, 0.82, 0.93], "noisy": [0.60, 0.90, 0.95]}
    rows = {r["arm"]: r for r in crossval.ablation_table(scores)}
    assert rows["baseline"]["gain_mean"] == 0 and not rows["baseline"]["exceeds_noise"]
    better = rows["better"]
    assert better["gain_mean"] == pytest.approx(0.07 / 3) and better["gain_sd"] == pytest.approx(
        np.std([0.02, 0.02, 0.03], ddof=1)
    )
    half = 4.302653 * better["gain_sd"] / math.sqrt(3)  # t(0.975, 2 df)
    assert better["gain_ci_low"] == pytest.approx(better["gain_mean"] - half, rel=1e-5) and better["exceeds_noise"]
    assert rows["noisy"]["dice_mean"] > rows["baseline"]["dice_mean"] and not rows["noisy"]["exceeds_noise"]
    assert not crossval.ablation_table({"baseline": [0.5], "x": [0.9]})[1]["exceeds_noise"]  # n = 1: never
    with pytest.raises(ValueError, match="pair the same folds"):
        crossval.ablation_table({"baseline": [0.5, 0.6], "x": [0.9]})


def test_a_multiclass_study_is_scored_by_the_macro_dice(tmp_path: Path) -> None:
    """Swapping two classes leaves the union perfect; the multi-class score (and the ensemble's label map) see it."""
    import nibabel as nib

    truth = np.zeros((6, 6, 4), np.uint8)
    truth[1:3, 1:3, 1:3], truth[3:5, 3:5, 1:3] = 1, 2
    nib.save(nib.Nifti1Image(truth, np.eye(4)), tmp_path / "label.nii.gz")
    item, config = {"label": str(tmp_path / "label.nii.gz")}, {"label_mode": "multiclass", "label_values": [0, 1, 2]}
    swapped = np.where(truth == 1, 2, np.where(truth == 2, 1, 0))
    assert crossval._score(swapped, item)["dice"] == 1.0  # the binary score: any structure vs background
    assert crossval._score(swapped, item, config)["dice"] == 0.0
    assert crossval._score(truth, item, config)["dice"] == 1.0
    probabilities = np.stack([(truth == 1) * 0.9, (truth == 2) * 0.9]).astype(np.float32)  # (K, x, y, z)
    np.testing.assert_array_equal(crossval._to_mask(probabilities, config), truth)
    np.testing.assert_array_equal(crossval._to_mask(probabilities[0], {}), truth == 1)
