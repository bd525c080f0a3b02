"""k-fold cross-validation, fold ensembles and paired ablation tables: is a change a real gain or noise?

Introduced in notebook 05. Every arm of an ablation trains the same folds (``splits.kfold_split`` through
``TrainConfig.n_folds``/``fold``) into ``<root>/<arm>/fold_<k>``, so arms are compared fold by fold (paired).
Inference-only arms (flip TTA, largest component) reuse the baseline's fold models.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any

import numpy as np

from heartseg_utils.data import split_cases
from heartseg_utils.inference import class_label_map, load_run, predict_case
from heartseg_utils.metrics import class_dice, dice
from heartseg_utils.train import run_training

# arm name -> overrides of the training config ("train") or of predict_case's options ("infer")
ARMS: dict[str, dict[str, dict[str, Any]]] = {
    "baseline": {},  # notebook 03's recipe: MONAI UNet, DiceCE, AdamW, poly schedule, no elastic
    "dice_loss": {"train": {"loss_name": "dice"}},
    # the deep dive's optimiser claim: its Adam (L2 weight decay 1e-5, coupled with the gradient) against
    # AdamW with decoupled weight decay 1e-2; the baseline is AdamW at 1e-5, so these two arms differ from it
    # in one setting each and from each other in the optimiser and the decay the deep dive pairs
    "adam": {"train": {"optimizer_name": "adam", "weight_decay": 1e-5}},
    "adamw_decay": {"train": {"optimizer_name": "adamw", "weight_decay": 1e-2}},
    "plateau": {"train": {"scheduler_name": "plateau"}},  # halve lr when validation Dice stalls
    "cosine": {"train": {"scheduler_name": "cosine"}},
    "cosine_restarts": {"train": {"scheduler_name": "cosine_restarts"}},
    "segresnet": {"train": {"model_name": "segresnet"}},
    "unet3d_scratch": {"train": {"model_name": "unet3d_scratch"}},
    "unet2d_slices": {"train": {"model_name": "unet2d"}},
    "elastic": {"train": {"elastic": True}},
    "sigmoid_bce": {"train": {"loss_name": "bce"}},
    "flip_tta": {
        "infer": {"tta": True, "tta_axes": (0, 1)}
    },  # the in-plane flips training's flip + quarter turns cover
    "largest_cc": {"infer": {"keep_largest": True}},
}


def _arm(arm: str) -> dict[str, dict[str, Any]]:
    if arm not in ARMS:
        raise ValueError(f"unknown ablation arm {arm!r}; choose from {', '.join(ARMS)}")
    return ARMS[arm]


def fold_dir(root: str | os.PathLike[str], arm: str, fold: int) -> Path:
    """Where fold ``fold`` of ``arm`` is trained; inference-only arms point at the baseline's folds."""
    trained = arm if "infer" not in _arm(arm) else "baseline"
    return Path(root) / trained / f"fold_{fold}"


def train_folds(
    config: dict[str, Any], root: str | os.PathLike[str], arm: str = "baseline", n_folds: int = 5
) -> list[dict[str, Any]]:
    """Train every fold of one ablation arm with :func:`heartseg_utils.train.run_training`.

    Introduced in notebook 05.

    Args:
        config: training parameters shared by all arms (a dict of ``TrainConfig`` fields, ``run_dir`` ignored).
        root: folder of the whole study; fold ``k`` of ``arm`` goes to ``root/arm/fold_k``.
        arm: a key of :data:`ARMS`; its ``"train"`` overrides are applied. Inference-only arms train nothing.
        n_folds: number of folds (>= 2); the folds depend only on the data and ``config["seed"]``.

    Returns:
        One ``metrics.json`` dict per fold (empty for an inference-only arm).
    """
    spec = _arm(arm)
    if "infer" in spec:
        return []
    return [
        run_training(
            {**config, **spec.get("train", {}), "n_folds": n_folds, "fold": k, "run_dir": str(fold_dir(root, arm, k))}
        )
        for k in range(n_folds)
    ]


def _score(mask: np.ndarray, item: dict, config: dict[str, Any] | None = None) -> dict[str, float]:
    """Dice of a mask against the item's label (:func:`metrics.dice`: both empty = 1): of the foreground, or for
    a multi-class run (``config`` ``label_mode``) the mean over the classes of ``metrics.class_dice``."""
    import nibabel as nib

    truth = np.asanyarray(nib.load(item["label"]).dataobj)
    if np.shape(mask) != truth.shape:
        raise ValueError(f"prediction {np.shape(mask)} and label {item['label']} {truth.shape} differ")
    if config and config.get("label_mode") == "multiclass":
        return {"dice": float(np.mean(class_dice(mask, truth, [int(v) for v in config["label_values"][1:]])))}
    return {"dice": dice(np.asarray(mask) != 0, truth != 0)}


def evaluate_folds(
    root: str | os.PathLike[str], arm: str, n_folds: int, *, key: str = "validation", device: str = "auto"
) -> list[dict[str, Any]]:
    """Score every fold model of an arm on its own validation cases (or on the shared holdout).

    Introduced in notebook 05.

    Returns:
        One row per (fold, case): ``arm``, ``fold``, ``case`` and ``dice`` (notebook 04's ``metrics.evaluate_case``
        gives the other metrics; surface distances would double the cost of a study).
    """
    rows = []
    for k in range(n_folds):
        model, config = load_run(fold_dir(root, arm, k), device)
        for item in split_cases(fold_dir(root, arm, k), key):
            mask = predict_case(model, config, item["image"], **_arm(arm).get("infer", {}))["mask"]
            rows.append({"arm": arm, "fold": k, "case": item["case"], **_score(mask, item, config)})
    return rows


def average_probabilities(probabilities: list[np.ndarray]) -> np.ndarray:
    """Mean of the members' foreground probability maps, which must share one shape. Introduced in notebook 05."""
    shapes = {np.shape(p) for p in probabilities}
    if not probabilities or len(shapes) != 1:
        raise ValueError(f"an ensemble needs >= 1 probability maps of one shape, got shapes {sorted(shapes)}")
    return np.mean(np.stack([np.asarray(p, dtype=np.float32) for p in probabilities]), axis=0)


def evaluate_ensemble(root: str | os.PathLike[str], arm: str, n_folds: int, *, device: str = "auto") -> list[dict]:
    """Score each fold model and their probability-averaged ensemble on the holdout cases no fold trained on.

    Introduced in notebook 05. The members' probabilities (on each image's own grid, via ``predict_case``) are
    averaged with :func:`average_probabilities` and thresholded at 0.5; a multi-class run's class probabilities
    are averaged and each voxel takes the likeliest class (``inference.class_label_map``), scored by the macro Dice.

    Returns:
        One row per (member, case): ``member`` ("fold_k" or "ensemble"), ``case`` and ``dice``.
    """
    members = [load_run(fold_dir(root, arm, k), device) for k in range(n_folds)]
    holdout = split_cases(fold_dir(root, arm, 0), "holdout")
    if not holdout:
        raise ValueError(
            f"{fold_dir(root, arm, 0) / 'split.json'} has no holdout cases: train with holdout_fraction > 0"
        )
    config = members[0][1]
    multiclass = config.get("label_mode") == "multiclass"
    key = "probabilities" if multiclass else "probability"
    rows = []
    for item in holdout:
        probs = [predict_case(m, c, item["image"], **_arm(arm).get("infer", {}))[key] for m, c in members]
        masks = [_to_mask(p, config) for p in probs] + [_to_mask(average_probabilities(probs), config)]
        for name, mask in zip([f"fold_{k}" for k in range(len(probs))] + ["ensemble"], masks):
            rows.append({"member": name, "case": item["case"], **_score(mask, item, config)})
    return rows


def _to_mask(probability: np.ndarray, config: dict[str, Any]) -> np.ndarray:
    """The 0.5 threshold of a foreground probability, or a multi-class run's label map of (K, ...) probabilities."""
    if config.get("label_mode") == "multiclass":
        return class_label_map(probability, config["label_values"])["mask"]
    return probability >= 0.5


def ablation_table(
    fold_scores: dict[str, list[float]], baseline: str = "baseline", confidence: float = 0.95
) -> list[dict[str, Any]]:
    """Mean ± sd per arm and the paired gain over the baseline, with a t confidence interval.

    Introduced in notebook 05. ``fold_scores[arm][k]`` is arm's mean Dice on fold ``k`` (or seed ``k``); the
    gain is computed fold by fold, so the fold-to-fold difficulty cancels. A gain "exceeds the noise" when
    its ``confidence`` interval, mean ± t(n - 1) × sd / sqrt(n), excludes 0 (never with n < 2).

    Returns:
        One row per arm: ``arm, n, dice_mean, dice_sd, gain_mean, gain_sd, gain_ci_low, gain_ci_high,
        exceeds_noise``.
    """
    from scipy import stats

    if baseline not in fold_scores:
        raise ValueError(f"the baseline arm {baseline!r} is missing from the scores ({sorted(fold_scores)})")
    base = np.asarray(fold_scores[baseline], dtype=float)
    rows = []
    for arm, scores in fold_scores.items():
        s = np.asarray(scores, dtype=float)
        if s.shape != base.shape:
            raise ValueError(f"arm {arm!r} has {s.size} fold scores, the baseline {base.size}: pair the same folds")
        gain, n = s - base, s.size
        sd = float(gain.std(ddof=1)) if n > 1 else math.nan
        half = float(stats.t.ppf(0.5 + confidence / 2, n - 1)) * sd / math.sqrt(n) if n > 1 else math.nan
        mean = float(gain.mean())
        rows.append(
            {
                "arm": arm,
                "n": n,
                "dice_mean": float(s.mean()),
                "dice_sd": float(s.std(ddof=1)) if n > 1 else math.nan,
                "gain_mean": mean,
                "gain_sd": sd,
                "gain_ci_low": mean - half,
                "gain_ci_high": mean + half,
                "exceeds_noise": bool(n > 1 and arm != baseline and abs(mean) > half),
            }
        )
    return rows
