"""Splits of a dataset's cases: train/validation, k folds, a holdout set aside first, deterministic in a seed.

Introduced in notebook 03 (``train_val_split``); notebook 05 adds folds and the holdout. Every function takes
datalist items (dicts keyed by ``"case"``) or case ids, sorts them by case id before shuffling with ``seed`` (so
the input order never matters), and returns lists sorted by case id. ``data.split_cases`` looks a run's recorded
split back up in a data folder.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from typing import Any


def _key(item: Any) -> str:
    if isinstance(item, dict):
        return str(item.get("case", item.get("image", "")))
    return str(item)


def _sorted_shuffled(items: Sequence[Any], seed: int) -> list[Any]:
    ordered = sorted(items, key=_key)
    keys = [_key(i) for i in ordered]
    if len(set(keys)) != len(keys):
        dupes = sorted({k for k in keys if keys.count(k) > 1})
        raise ValueError(f"Duplicate case ids {dupes}: a split needs unique cases.")
    random.Random(seed).shuffle(ordered)
    return ordered


def train_val_split(items: Sequence[Any], val_fraction: float = 0.2, seed: int = 0) -> tuple[list, list]:
    """Split cases into training and validation, deterministically in ``seed`` and independent of input order.

    Introduced in notebook 03.

    Args:
        items: datalist dicts (keyed by ``"case"``) or case ids.
        val_fraction: fraction of cases for validation (rounded, at least 1, at most ``len(items) - 1``).
        seed: shuffling seed.

    Returns:
        ``(train, val)``, each sorted by case id.
    """
    if not 0.0 < val_fraction < 1.0:
        raise ValueError(f"val_fraction must be between 0 and 1 (exclusive), got {val_fraction}.")
    if len(items) < 2:
        raise ValueError(f"Need at least 2 cases to split, got {len(items)}.")
    shuffled = _sorted_shuffled(items, seed)
    n_val = min(max(1, round(len(shuffled) * val_fraction)), len(shuffled) - 1)
    val, train = shuffled[:n_val], shuffled[n_val:]
    return sorted(train, key=_key), sorted(val, key=_key)


def kfold_split(items: Sequence[Any], n_folds: int = 5, seed: int = 0) -> list[tuple[list, list]]:
    """Partition cases into ``n_folds`` disjoint validation folds (sizes differ by at most one).

    Every case is validated exactly once; fold ``k`` trains on all other cases. Deterministic in ``seed``
    and independent of input order.

    Introduced in notebook 05.

    Args:
        items: datalist dicts (keyed by ``"case"``) or case ids.
        n_folds: number of folds, 2 to ``len(items)``.
        seed: shuffling seed.

    Returns:
        A list of ``(train, val)`` pairs, each list sorted by case id.
    """
    if not 2 <= n_folds <= len(items):
        raise ValueError(f"n_folds must be between 2 and the number of cases ({len(items)}), got {n_folds}.")
    shuffled = _sorted_shuffled(items, seed)
    q, r = divmod(len(shuffled), n_folds)
    folds, start = [], 0
    for k in range(n_folds):
        size = q + (1 if k < r else 0)
        val = shuffled[start : start + size]
        train = shuffled[:start] + shuffled[start + size :]
        folds.append((sorted(train, key=_key), sorted(val, key=_key)))
        start += size
    return folds


def set_aside(items: Sequence[Any], fraction: float, seed: int = 0) -> tuple[list, list]:
    """Set ``fraction`` of the cases aside before any other split: ``(pool, holdout)``; no holdout for 0.

    Introduced in notebook 05 (the holdout is what a fold ensemble is scored on; no fold ever trains on it). The
    one holdout rule: :func:`holdout_then_kfold` and :func:`make_split` both call it, as :func:`train_val_split`
    rounds the fraction.
    """
    return train_val_split(items, fraction, seed) if fraction else (list(items), [])


def holdout_then_kfold(
    items: Sequence[Any], n_folds: int, holdout_fraction: float = 0.0, seed: int = 0
) -> tuple[list, list[tuple[list, list]]]:
    """Set ``holdout_fraction`` of the cases aside (:func:`set_aside`), then cut the rest into ``n_folds`` folds.

    Introduced in notebook 05: what :func:`make_split` does for ``n_folds >= 2``, every fold at once.

    Args:
        items: datalist dicts (keyed by ``"case"``) or case ids.
        n_folds: number of folds (>= 2) over the non-holdout cases.
        holdout_fraction: fraction set aside first (0 = none).
        seed: shuffling seed for both steps.

    Returns:
        ``(holdout, folds)``: the holdout cases and :func:`kfold_split`'s ``(train, val)`` pairs.
    """
    pool, holdout = set_aside(items, holdout_fraction, seed)
    return holdout, kfold_split(pool, n_folds, seed)


def make_split(
    items: Sequence[Any],
    *,
    seed: int = 0,
    val_fraction: float = 0.2,
    n_folds: int = 0,
    fold: int = 0,
    holdout_fraction: float = 0.0,
) -> dict[str, list]:
    """The cases of one training run: ``{"train", "validation", "holdout"}`` (what split.json lists).

    Introduced in notebook 03 (``val_fraction``); notebook 05 adds ``n_folds``/``fold`` and ``holdout_fraction``.

    Args:
        items: datalist dicts (keyed by ``"case"``) or case ids.
        seed: shuffling seed.
        val_fraction: the validation share when ``n_folds`` is 0.
        n_folds: 0 = one ``val_fraction`` split; k >= 2 = validate on fold ``fold`` of :func:`holdout_then_kfold`.
        fold: which fold validates.
        holdout_fraction: cases set aside before splitting.

    Returns:
        The three lists of items, each sorted by case id.
    """
    if n_folds:
        holdout, folds = holdout_then_kfold(items, n_folds, holdout_fraction, seed)
        train, val = folds[fold]
    else:
        pool, holdout = set_aside(items, holdout_fraction, seed)
        train, val = train_val_split(pool, val_fraction, seed)
    return {"train": train, "validation": val, "holdout": holdout}
