"""Inference from a finished run: load, sliding window, optional flip TTA and post-processing, save NIfTI.

Introduced in notebook 04. Everything needed comes from ``run_dir`` (``config.json``, ``best_model.pt``,
``split.json``): the model and the ``"infer"`` transforms are rebuilt from the config, and MONAI's ``Invertd``
maps the foreground probability back onto the original image grid (undoing padding, crop, spacing and
orientation) before it is thresholded at 0.5 and saved with the input image's shape and affine.

Training's per-epoch validation (notebook 03) uses the same sliding window: :func:`validation_masks`,
:func:`validate_classes`.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from heartseg_utils import distributed, runs, scans
from heartseg_utils.config import TrainConfig, config_dict, model_from_config, transforms_from_config
from heartseg_utils.data import split_cases
from heartseg_utils.metrics import class_dice, dice
from heartseg_utils.models import logits_to_mask, logits_to_probability, probability_to_classes
from heartseg_utils.precision import amp_decision, autocast, resolve_device

SPLITS = ("validation", "all", "test")
# flip TTA uses the flips training's augmentation shows: RandFlipd on axis 0, and RandRotate90d in the (0, 1) plane
# (which flips within it) or, for a patch that is not square in-plane, RandFlipd on axis 1; never the head-foot
# axis 2, which the network never saw reversed (issue 25)
TTA_AXES = (0, 1)


def load_run(run_dir: str | os.PathLike[str], device: str = "auto") -> tuple[torch.nn.Module, dict[str, Any]]:
    """Rebuild a run's network from ``config.json`` and load ``best_model.pt`` (``weights_only=True``).

    Introduced in notebook 04.

    Args:
        run_dir: the folder notebook 03 (or ``python -m heartseg_utils.train``) wrote.
        device: "auto", "cpu" or "cuda".

    Returns:
        ``(model in eval mode on the device, config.json as a dict)``; the dict also holds ``"trained_with"``:
        the device and precision training used (from ``metrics.json``), which :func:`prediction_precision` follows.
    """
    run = Path(run_dir).expanduser()
    scans.refuse_broken_link(run, "run_dir")  # a link loop "does not exist" for Path: name it
    config = runs.read_run_config(run)
    try:
        model = model_from_config(config)
    except (KeyError, TypeError, AttributeError) as err:
        raise ValueError(
            f"{run / runs.CONFIG} does not describe a network this package builds ({type(err).__name__}: {err}):"
            " retrain the run, or restore its config.json"
        ) from err
    runs.load_weights(run / runs.BEST, model)
    return model.to(resolve_device(device)).eval(), config


def sliding_window_logits(model: torch.nn.Module, image: torch.Tensor, config: dict[str, Any]) -> torch.Tensor:
    """Network logits (N, C, ...) over a whole volume by MONAI's sliding window, as float32. Notebook 03.

    ``config`` is a run's config.json (``roi_size``, ``sw_batch_size``, ``sw_overlap``); training's validation and
    every prediction call this one function.
    """
    from monai.inferers import sliding_window_inference

    return sliding_window_inference(
        image, config["roi_size"], config["sw_batch_size"], model, overlap=config["sw_overlap"]
    ).float()


def validation_masks(
    model: torch.nn.Module, batches: Any, cfg: TrainConfig, device: torch.device, amp_dtype: torch.dtype | None
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Yield ``(mask, label)`` per whole validation volume: sliding-window inference, argmax. Notebook 03.

    Binary runs get foreground masks (label > 0); multi-class runs class index maps (0..K) of both.
    """
    settings = config_dict(cfg)
    binary = cfg.label_mode != "multiclass"
    model.eval()
    for batch in batches:
        image, label = batch["image"].to(device), batch["label"].to(device)
        with torch.no_grad(), autocast(device, amp_dtype):
            logits = sliding_window_logits(model, image, settings)
        yield logits_to_mask(logits), ((label > 0) if binary else label).to(torch.uint8)


def case_scores(cfg: TrainConfig, mask: torch.Tensor, label: torch.Tensor) -> list[float]:
    """One validation case's Dice: ``[foreground Dice]`` (binary), or one per class without background.

    Introduced in notebook 03. Multi-class runs score each class k = 1..K of the class index maps
    (:func:`metrics.class_dice`, the rule of MONAI's ``DiceMetric(include_background=False)``).
    """
    if cfg.label_mode != "multiclass":
        return [dice(mask, label)]
    return class_dice(mask, label, range(1, len(cfg.label_values)))


def validate(
    model: torch.nn.Module,
    loader: Any,
    cfg: TrainConfig,
    device: torch.device,
    amp_dtype: torch.dtype | None,
    ddp: distributed.Distributed | None = None,
) -> tuple[float, float]:
    """Mean and minimum foreground Dice (:func:`metrics.dice`) over whole validation volumes. Notebook 03.

    The minimum is the worst case: a mean of 0.8 can hide one case at 0.0, which the minimum shows.
    Under torchrun (``ddp``) each process validates its share of the cases (possibly none); the Dice sums and
    counts are added and the minima compared over all processes, so every process returns the same numbers.
    A multi-class run's numbers are those of :func:`validate_classes` (a case's Dice = the mean over its classes).
    """
    mean, low, _ = validate_classes(model, loader, cfg, device, amp_dtype, ddp)
    return mean, low


def validate_classes(
    model: torch.nn.Module,
    loader: Any,
    cfg: TrainConfig,
    device: torch.device,
    amp_dtype: torch.dtype | None,
    ddp: distributed.Distributed | None = None,
) -> tuple[float, float, list[float]]:
    """:func:`validate` with the per-class means: ``(mean, worst case, [mean Dice of each class])``. Notebook 03.

    Each case scores :func:`case_scores`; a class's Dice is its mean over the cases, the run's Dice the mean over
    the classes (the macro mean: the number that picks the best checkpoint), the worst case the lowest class mean
    of a case. A binary run has one class: all three are its foreground Dice.
    """
    n_classes = len(cfg.label_values) - 1 if cfg.label_mode == "multiclass" else 1
    scores = [case_scores(cfg, *pair) for pair in validation_masks(model, loader, cfg, device, amp_dtype)]
    sums = [float(sum(s[k] for s in scores)) for k in range(n_classes)]
    count, low = float(len(scores)), min((sum(s) / len(s) for s in scores), default=1.0)
    if ddp is not None:
        *sums, count = distributed.reduce([*sums, count], ddp)  # DDP
        low = distributed.reduce([low], ddp, "min")[0]  # DDP
    if not count:
        return 0.0, 0.0, [0.0] * n_classes
    per_class = [total / count for total in sums]
    return sum(per_class) / n_classes, low, per_class


def _foreground_probability(
    model: torch.nn.Module, image: torch.Tensor, config: dict[str, Any], flip_axes: tuple[int, ...]
) -> torch.Tensor:
    """Sliding-window class probabilities (N, M x C, ...), member-major: the identity, then one flipped copy per axis.

    Member m > 0 is the prediction of the image flipped along ``flip_axes[m - 1]``, flipped back; their mean is the
    flip-TTA probability, their disagreement a QC signal (``qc.member_disagreement``).
    """
    probs = []
    for dims in [[]] + [[int(a) + 2] for a in flip_axes]:
        flipped = torch.flip(image, dims) if dims else image
        prob = logits_to_probability(sliding_window_logits(model, flipped, config))
        probs.append(torch.flip(prob, dims) if dims else prob)
    return torch.cat(probs, dim=1)


def check_tta_axes(tta_axes: tuple[int, ...]) -> tuple[int, ...]:
    """``tta_axes`` as a tuple of distinct spatial axes 0, 1, 2 (a clear error otherwise)."""
    axes = tuple(int(a) for a in tta_axes)
    if not axes or len(set(axes)) != len(axes) or any(a not in (0, 1, 2) for a in axes):
        raise ValueError(f"tta_axes must be distinct axes among 0, 1, 2 (of the RAS array), got {tuple(tta_axes)}")
    return axes


def prediction_precision(
    model: torch.nn.Module, config: dict[str, Any], device: torch.device
) -> tuple[torch.dtype | None, str]:
    """``precision.amp_decision`` for predicting with a run: forward passes of its sliding-window batch.

    Introduced in notebook 04. On a CPU that can, a run predicts in the precision it recorded
    (``config["trained_with"]``, see :func:`load_run`), so the same scan gives the same mask every time; fp32 where
    the run was trained with ``amp="off"``.
    """
    windows = (config["sw_batch_size"], 1, *config["roi_size"])  # what the sliding window feeds the network
    amp = "off" if config.get("amp") == "off" else "auto"
    return amp_decision(amp, device, model, windows, train_step=False, recorded=config.get("trained_with"))


@torch.no_grad()
def predict_case(
    model: torch.nn.Module,
    config: dict[str, Any],
    image_path: str | os.PathLike[str],
    *,
    device: str | torch.device | None = None,
    tta: bool = False,
    keep_largest: bool | Sequence[int] = False,
    tta_axes: tuple[int, ...] = TTA_AXES,
    members: bool = False,
) -> dict[str, Any]:
    """Predict one image and map the result back to the image's original voxel grid.

    Introduced in notebook 04.

    Args:
        model: from :func:`load_run`.
        config: the run's ``config.json`` (transforms, ``roi_size``, ``sw_batch_size``, ``sw_overlap``).
        image_path: a NIfTI image.
        device: where to run; default: the model's device. Mixed precision as training decides it
            (``precision.amp_decision`` with ``amp="auto"``, unless the run was trained with ``amp="off"``).
        tta: average the probability over the identity and one flip along each of ``tta_axes``
            (1 + len(tta_axes) passes).
        keep_largest: keep only the largest connected component of the mask (:func:`largest_component`); for a
            multi-class run True = of every class, or a list of the label values to do it for.
        tta_axes: spatial axes (0, 1, 2 of the RAS array) to flip; default :data:`TTA_AXES`, the flips training
            showed (a flip the training never showed, such as head-foot, can hurt).
        members: also return each flip member's foreground probability (identity first; the flips run even
            without ``tta``, for quality control's disagreement signal; the mask is unchanged).

    Returns:
        ``{"probability": float32 (x, y, z), "mask": uint8 (x, y, z), "affine": (4, 4), "spacing": (mm,) * 3,
        "precision": "bfloat16" or "float32"}`` on the original image's grid, with ``"members"``: a list of
        float32 (x, y, z) maps, when ``members`` (a multi-class run adds ``"class_members"``, (members, K, x, y, z)
        float32: each member's probability of each class). For a multi-class run (``config`` ``label_mode``
        ``"multiclass"``) ``mask`` is a label map holding the dataset's label values (the class with the highest
        probability; uint8, int16 above 255), ``probability`` the probability of any foreground class and
        ``probabilities`` (K, x, y, z) that of each class, in the order of ``label_values[1:]``.
    """
    import nibabel as nib
    from monai.data import MetaTensor
    from monai.transforms import Invertd

    device = torch.device(device) if device is not None else next(model.parameters()).device
    amp_dtype, _ = prediction_precision(model, config, device)
    pipeline = transforms_from_config(config, "infer")
    data = pipeline({"image": str(image_path)})
    image = data["image"].unsqueeze(0).to(device)
    axes = check_tta_axes(tta_axes) if tta or members else ()
    with autocast(device, amp_dtype):
        probs = _foreground_probability(model, image, config, axes)[0].float().cpu()  # (members x classes, ...)
    data["prob"] = MetaTensor(probs, meta=data["image"].meta)  # resampling is linear: invert, then average
    probs = np.asarray(Invertd(keys="prob", transform=pipeline, orig_keys="image", nearest_interp=False)(data)["prob"])
    probs = probs.reshape(1 + len(axes), -1, *probs.shape[1:]).astype(np.float32)  # (members, classes, x, y, z)
    prob = probs.mean(axis=0) if tta else probs[0]
    reference = nib.load(str(image_path))
    if config.get("label_mode") == "multiclass":
        result = class_label_map(prob, config["label_values"], keep_largest)
    else:
        mask = np.asarray(prob[0] >= 0.5, dtype=np.uint8)
        result = {"probability": prob[0], "mask": largest_component(mask) if keep_largest else mask}
    if members:  # each member's probability of any foreground class
        result["members"] = [member.sum(axis=0).clip(0.0, 1.0) for member in probs]
        if config.get("label_mode") == "multiclass":  # and of each class: (members, K, x, y, z)
            result["class_members"] = probs
    return {
        **result,
        "affine": reference.affine,
        "spacing": tuple(float(z) for z in reference.header.get_zooms()[:3]),
        "precision": str(amp_dtype or torch.float32).replace("torch.", ""),  # "bfloat16" or "float32"
    }


def class_label_map(
    probabilities: np.ndarray, label_values: Sequence[int], keep_largest: bool | Sequence[int] = False
) -> dict[str, Any]:
    """Per-class probabilities (K, x, y, z) -> the label map with the dataset's values. Introduced in notebook 04.

    Each voxel takes the class with the highest probability (background = 1 - the sum), class k becomes
    ``label_values[k]``; ``keep_largest`` (True, or the label values to do it for) keeps each such class's largest
    component. Returns ``{"mask", "probability" (any foreground), "probabilities"}``.
    """
    values = np.asarray([int(v) for v in label_values])
    mask = values[probability_to_classes(probabilities)].astype(np.uint8 if values.max() <= 255 else np.int16)
    chosen = [int(v) for v in values[1:]] if keep_largest is True else [int(v) for v in keep_largest or ()]
    return {
        "mask": largest_component(mask, chosen) if chosen else mask,
        "probability": probabilities.sum(axis=0).clip(0.0, 1.0).astype(np.float32),
        "probabilities": probabilities,
    }


def largest_component(mask: np.ndarray, labels: Sequence[int] = (1,)) -> np.ndarray:
    """Keep the largest 26-connected blob with MONAI's KeepLargestConnectedComponent. Introduced in notebook 04.

    ``labels``: the values of a label map whose largest blob is kept, each on its own (binary masks: 1).
    """
    from monai.transforms import KeepLargestConnectedComponent

    arr = np.asarray(mask)
    keep = KeepLargestConnectedComponent(applied_labels=[int(v) for v in labels], is_onehot=False, connectivity=3)
    return np.asarray(keep(np.array(arr)[None]))[0].astype(arr.dtype)  # a copy: keep() works in place


def run_keep_largest(run_dir: str | os.PathLike[str]) -> bool | list[int]:
    """The run's post-processing decision (``postprocessing.json``, written by training); False where it has none.

    Introduced in notebook 04: training compares the validation Dice with and without keeping the largest
    connected component and keeps it only where it helps (nnU-Net's rule). A multi-class run decides per class:
    the label values whose largest component is kept (``keep_largest_values``), a list that may be empty.
    """
    keep = runs.read_keep_largest(run_dir)
    path = Path(run_dir).expanduser() / runs.POSTPROCESSING
    if path.is_file() and "keep_largest_values" in (decision := runs.read_json(path)):
        return [int(v) for v in decision["keep_largest_values"]]
    return keep


def decide_inference(
    members: list[list[np.ndarray]], labels: list[np.ndarray], tta_axes: tuple[int, ...] = TTA_AXES
) -> tuple[dict[str, Any], list[np.ndarray], list[np.ndarray]]:
    """Flip TTA, then the largest component, each used only if it raises the mean validation Dice. Notebook 03.

    Args:
        members: per validation case, the flip members of :func:`predict_case` (``members=True``), identity first.
        labels: each case's truth on the same grid.
        tta_axes: the flipped axes the members came from (recorded).

    Returns:
        ``(postprocessing.json's content, each case's probability, each case's final mask)``.
    """
    from heartseg_utils.metrics import dice

    def mean(masks: list[np.ndarray]) -> float:
        return float(np.mean([dice(m, t) for m, t in zip(masks, labels)]))

    plain, averaged = [m[0] for m in members], [np.mean(m, axis=0) for m in members]
    use_tta = mean([p >= 0.5 for p in averaged]) > mean([p >= 0.5 for p in plain])
    probabilities = averaged if use_tta else plain
    masks = [np.asarray(p >= 0.5, dtype=np.uint8) for p in probabilities]
    largest = [largest_component(m) for m in masks]
    keep = mean(largest) > mean(masks)
    post = {
        "keep_largest": keep,
        "val_dice_raw": round(mean(masks), 6),
        "val_dice_largest_component": round(mean(largest), 6),
        "tta": use_tta,
        "tta_axes": list(tta_axes),
        "val_dice_no_tta": round(mean([p >= 0.5 for p in plain]), 6),
        "val_dice_tta": round(mean([p >= 0.5 for p in averaged]), 6),
        "cases": len(labels),
        "rule": "use flip TTA if it raises the mean validation Dice; then keep only the largest connected component "
        "if that raises it",
    }
    return post, probabilities, largest if keep else masks


def decide_class_inference(
    members: list[np.ndarray],
    labels: list[np.ndarray],
    label_values: Sequence[int],
    names: Sequence[str],
    tta_axes: tuple[int, ...] = TTA_AXES,
) -> tuple[dict[str, Any], list[np.ndarray], list[np.ndarray]]:
    """:func:`decide_inference` for a multi-class run: flip TTA on the macro Dice, the largest component per class.

    Introduced in notebook 03. Flip TTA is used if it raises the mean over the classes of their mean validation
    Dice; then each class keeps only its largest 26-connected component where that raises the class's own mean
    Dice (nnU-Net's rule, class by class: removing one class's pieces leaves the others unchanged).

    Args:
        members: per validation case, :func:`predict_case`'s ``class_members`` (members, K, x, y, z).
        labels: each case's label map (the dataset's values) on the same grid.
        label_values: ``config.json`` ``label_values`` (background first); ``names`` the K class names.

    Returns:
        ``(postprocessing.json's content, each case's class probabilities (K, ...), each case's final label map)``.
    """
    from heartseg_utils.metrics import class_dice

    values = [int(v) for v in label_values[1:]]

    def maps(probabilities: list[np.ndarray]) -> list[np.ndarray]:
        return [class_label_map(p, label_values)["mask"] for p in probabilities]

    def per_class(masks: list[np.ndarray]) -> np.ndarray:  # each class's mean Dice over the cases
        return np.mean([class_dice(m, t, values) for m, t in zip(masks, labels)], axis=0)

    plain, averaged = [m[0] for m in members], [np.mean(m, axis=0) for m in members]
    no_tta, with_tta = per_class(maps(plain)), per_class(maps(averaged))
    use_tta = bool(with_tta.mean() > no_tta.mean())
    probabilities = averaged if use_tta else plain
    raw_masks = maps(probabilities)
    raw = with_tta if use_tta else no_tta
    largest = per_class([largest_component(m, values) for m in raw_masks])
    keep = [v for v, w, k in zip(values, raw, largest) if k > w]
    masks = [largest_component(m, keep) for m in raw_masks] if keep else raw_masks
    classes = {
        name: {"label_value": v, "keep_largest": v in keep, "val_dice_raw": round(float(w), 6)}
        | {"val_dice_largest_component": round(float(k), 6)}
        for name, v, w, k in zip(names, values, raw, largest)
    }
    post = {
        "keep_largest": bool(keep),
        "keep_largest_values": keep,
        "classes": classes,
        "val_dice_raw": round(float(raw.mean()), 6),
        "val_dice_postprocessed": round(float(np.maximum(raw, largest).mean()), 6),
        "tta": use_tta,
        "tta_axes": list(tta_axes),
        "val_dice_no_tta": round(float(no_tta.mean()), 6),
        "val_dice_tta": round(float(with_tta.mean()), 6),
        "cases": len(labels),
        "rule": "use flip TTA if it raises the macro mean validation Dice; then, per class, keep only its largest "
        "connected component if that raises the class's mean validation Dice",
    }
    return post, probabilities, masks


def run_tta(run_dir: str | os.PathLike[str]) -> bool:
    """The run's flip-TTA decision (``postprocessing.json`` ``tta``, over :data:`TTA_AXES`); False where it has none.

    Introduced in notebook 04: training compares the validation Dice with and without flip TTA and uses it only
    where it helps, as it decides the largest component.
    """
    return runs.read_tta(run_dir)


def save_prediction(mask: Any, reference_image_path: str | os.PathLike[str], out_path: str | os.PathLike[str]) -> Path:
    """Write a mask as NIfTI with the reference image's shape, affine and header. Introduced in notebook 04.

    uint8 (a binary mask, or a label map whose values fit), int16 for a label map with values above 255.
    """
    import nibabel as nib

    reference = nib.load(str(reference_image_path))
    mask = np.asarray(mask)
    dtype = np.int16 if mask.size and int(mask.max()) > 255 else np.uint8
    mask = mask.astype(dtype)
    if mask.shape != reference.shape[:3]:
        raise ValueError(f"mask shape {mask.shape} differs from {reference_image_path} {reference.shape[:3]}")
    image = nib.Nifti1Image(mask, reference.affine, reference.header.copy())
    image.set_data_dtype(dtype)
    Path(out_path).parent.mkdir(parents=True, exist_ok=True)
    nib.save(image, str(out_path))
    return Path(out_path)


def split_items(run_dir: str | os.PathLike[str], data_dir: str = "", split: str = "validation") -> list[dict]:
    """The cases of a split: "validation" (split.json), "all" (labelled cases) or "test" (imagesTs, no labels).

    Introduced in notebook 04. ``data_dir=""`` means the dataset the run was trained on (config.json's
    ``dataset_dir``) if it still exists, else the default data folder.
    """
    from heartseg_utils import data

    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    run = Path(run_dir).expanduser()
    trained_on = runs.read_json(run / runs.CONFIG).get("dataset_dir", "") if (run / runs.CONFIG).is_file() else ""
    use_trained = not str(data_dir).strip() and trained_on and Path(trained_on).is_dir()
    dataset_dir = data.get_dataset_dir(trained_on if use_trained else data_dir)
    items = data.load_datalist(dataset_dir, "test" if split == "test" else "training")
    if split == "validation":
        items = split_cases(run, "validation", items)  # the run's split.json, looked up in this data folder
    if not items:
        raise ValueError(f"no {split!r} cases found in {dataset_dir}")
    return items


def predict_run(
    run_dir: str | os.PathLike[str],
    data_dir: str = "",
    split: str = "validation",
    *,
    tta: bool | None = None,
    keep_largest: bool | Sequence[int] | None = False,
    device: str = "auto",
    tta_axes: tuple[int, ...] = TTA_AXES,
) -> list[dict]:
    """Predict every case of a split (see :func:`split_items`) into ``run_dir/predictions/<case>.nii.gz``.

    Introduced in notebook 04. ``tta``, ``keep_largest``, ``tta_axes`` and ``device`` are as in :func:`predict_case`;
    ``tta=None`` and ``keep_largest=None`` follow the run's own decisions (:func:`run_tta`, :func:`run_keep_largest`).

    Returns:
        The split's items (``case``, ``image``, ``label`` if labelled), each with its ``prediction`` path added.
    """
    model, config = load_run(run_dir, device)
    items = split_items(run_dir, data_dir, split)
    out_dir = Path(run_dir).expanduser() / "predictions"
    keep_largest = run_keep_largest(run_dir) if keep_largest is None else keep_largest
    tta = run_tta(run_dir) if tta is None else tta
    for item in items:
        result = predict_case(model, config, item["image"], tta=tta, keep_largest=keep_largest, tta_axes=tta_axes)
        item["prediction"] = str(save_prediction(result["mask"], item["image"], out_dir / f"{item['case']}.nii.gz"))
    return items
