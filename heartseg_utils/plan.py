"""Plan a training run from the dataset, as nnU-Net does, with the reason for every value.

Introduced in notebook 03. Three steps, each one a function a learner can call and print:

1. ``fingerprints.fingerprint`` reads the training cases once: voxel spacing (RAS order), shape after cropping to the
   image foreground, intensities inside the label, foreground fraction and label values.
2. :func:`make_plan` turns the fingerprint into a target spacing (``pixdim``), a patch (``roi_size``), a batch
   and a MONAI UNet whose downsampling respects anisotropy (``architecture``), within a budget: GPU memory on
   CUDA, the time budget on the CPU. ``plan["reasons"]`` says why each value was chosen, with the numbers.
3. :func:`resolve_auto` replaces the ``"auto"`` values of a training configuration with the plan's; explicit
   values always win. :func:`plan_table` lays the plan out as rows for a notebook table.

The rules follow nnU-Net (Isensee et al., Nature Methods 2021): median spacing, with the 10th percentile for an
axis that is more than 3x coarser than the others; a patch shaped by the spacing and clipped to the median
shape; pool an axis only while its spacing is at most twice the finest one.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from heartseg_utils.architecture import (
    MIN_SIDE,
    activation_bytes,
    build_unet,
    divisor_of,
    planned_network,
    pooling_strides,
)
from heartseg_utils.config import PLANNED_FIELDS, TrainConfig
from heartseg_utils.fingerprints import fingerprint, fmt_mm, resampled_shape, target_spacing
from heartseg_utils.models import get_model, required_divisor
from heartseg_utils.precision import resolve_device, train_step_seconds
from heartseg_utils.transforms import resolve_pixdim

CPU_REFERENCE_MIN = 4.5  # notebook 03's CPU time budget, which the CPU sizes below are calibrated for
CPU_VOLUME_VOXELS = 64**3  # median resampled volume for that budget: the default phantom at 2.5 mm
CPU_PATCH_VOXELS = 48**3  # patch for that budget: notebook 03's 48^3
COARSEN_STEPS = (1.0, 1.25, 1.5, 2.0, 2.5, 3.0, 4.0, 6.0, 8.0)  # spacing multipliers tried on the CPU
GPU_MAX_SIDE, GPU_MEMORY_FRACTION, GPU_OVERHEAD_BYTES = 128, 0.85, 2**30  # nnU-Net-like patches; CUDA context
# Planning by measured step time on the CPU (a run with a time budget); the figures behind each value are in
# docs/benchmarks.md ("Planning by measured step time").
CPU_STEPS = (
    400  # optimiser steps a CPU run should get: with fewer, a finer layout lost to coarser ones that trained longer
)
CPU_BUDGET_USE = 0.75  # plan the epochs into 75% of the budget: a margin for a busier machine and slower epochs
CPU_STEP_OVERHEAD = 1.15  # a real step (data, loss, optimiser) over the timed forward + backward, measured
CPU_SCALES = (4.0, 2.83, 2.0, 1.41, 1.0, 0.71, 0.5, 0.35, 0.25)  # budget scales tried, largest patch first
THICK_SLICE_NETWORK = "2d"  # thick slices in a timed CPU plan: a 2D UNet won there (docs/benchmarks.md)
GIB = 2**30


def budget_scale(time_budget_min: float) -> float:
    """CPU sizes grow with the time budget (0 = notebook 03's 4.5 minutes), clipped to 0.25x-4x: the untimed plan's
    scale, and the "today" row of benchmarks/bench_budget.py."""
    return float(np.clip((time_budget_min or CPU_REFERENCE_MIN) / CPU_REFERENCE_MIN, 0.25, 4.0))


def coarsen_for_cpu(
    fp: Mapping[str, Any], spacing: Sequence[float], time_budget_min: float, *, scale: float | None = None
) -> tuple[list[float], str]:
    """Coarsen the spacing until the median resampled volume fits the CPU's time budget.

    Introduced in notebook 03. The limit is ``CPU_VOLUME_VOXELS`` (64^3) for a 4.5-minute budget, in proportion
    to the budget, so that a run keeps about as many epochs as notebook 03's default. Thick-slice data coarsens
    its fine (in-plane) axes first, up to half the slice spacing, as nnU-Net's low-resolution plan does;
    then every axis by the same factor from ``COARSEN_STEPS``.

    Args:
        fp: a ``fingerprints.fingerprint``.
        spacing: the target spacing (from ``fingerprints.target_spacing``).
        time_budget_min: the run's time budget in minutes (0 = 4.5).
        scale: the voxel budget's multiple of the 4.5-minute one, when measured step times chose it
            (:func:`plan_cpu_by_time`); None = in proportion to ``time_budget_min``.

    Returns:
        ``(spacing, reason)``.
    """
    limit = CPU_VOLUME_VOXELS * (budget_scale(time_budget_min) if scale is None else scale)
    sp = np.array(spacing, float)

    def voxels(s: np.ndarray) -> int:
        return int(np.prod(resampled_shape(fp, s)))

    start = voxels(sp)
    head = f"at {fmt_mm(spacing)} mm the median volume has {start:,} voxels, the CPU budget allows {int(limit):,}"
    if start <= limit:
        return [round(float(s), 4) for s in sp], f"{head}: kept"
    fine = sp < sp.max() / 2
    if fine.any():  # thick-slice data: bring the in-plane axes towards the slice spacing first
        for f in COARSEN_STEPS:
            cand = np.where(fine, np.minimum(sp * f, sp.max() / 2), sp)
            if voxels(cand) <= limit:
                return [round(float(s), 4) for s in cand], f"{head}: in-plane axes coarsened {f:g}x"
        sp = np.where(fine, sp.max() / 2, sp)
    for f in COARSEN_STEPS:
        if voxels(sp * f) <= limit:
            break
    cand = sp * f
    return [round(float(s), 4) for s in cand], f"{head}: coarsened to {fmt_mm(cand)} mm ({voxels(cand):,} voxels)"


def gpu_bytes(model_kwargs: Mapping[str, Any], roi: Sequence[int], patches: int, model_name: str = "unet") -> int:
    """Estimated GPU memory of one training step: activations (``architecture.activation_bytes``, counted at 4
    bytes as a margin over bf16), fp32 weights + gradients + two AdamW moments, and 1 GiB of CUDA context
    and workspace."""
    net = build_unet(model_kwargs, model_name=model_name)
    params = sum(p.numel() for p in net.parameters())
    return activation_bytes(net, roi, patches, bytes_per_value=4) + 16 * params + GPU_OVERHEAD_BYTES


def fit_patch(
    median: Sequence[int],
    spacing: Sequence[float],
    fits: Callable[[list[int], list], bool],
    *,
    divisor: Sequence[int] | None = None,
    max_side: int | None = None,
) -> tuple[list[int], list]:
    """Largest patch that fits: start at the median shape, shrink the longest side (in mm) until ``fits``.

    Introduced in notebook 03 (nnU-Net shrinks its patch the same way, one divisor step at a time). Each
    step recomputes the network's strides, and the patch is rounded down to the per-axis divisor, so every
    patch side stays <= the median shape (unless that is smaller than the divisor).

    Args:
        median: median resampled shape (voxels).
        spacing: target spacing (mm).
        fits: ``fits(patch, strides)`` says whether the patch fits the budget.
        divisor: a fixed per-axis divisor (an explicitly chosen model); None = plan the strides.
        max_side: upper limit per side (GPU: 128).

    Returns:
        ``(patch, strides)``; strides is ``[]`` when ``divisor`` was given.
    """
    patch = np.minimum(np.array(median, int), max_side or max(median))
    while True:
        strides = pooling_strides(patch, spacing) if divisor is None else []
        div = np.array(divisor_of(strides) if divisor is None else divisor, int)
        rounded = np.maximum(patch // div * div, div)
        if not np.array_equal(rounded, patch):
            patch = rounded
            continue
        if fits(patch.tolist(), strides):
            return patch.tolist(), strides
        order = [a for a in np.argsort(-(patch * np.array(spacing)), kind="stable") if patch[a] > div[a]]
        if not order:  # nothing left to shrink: the smallest patch, even if over budget
            return patch.tolist(), strides
        patch[order[0]] -= div[order[0]]


def _gpu_memory_gib(gpu_memory_gib: float | None) -> float:
    """The GPU's memory in GiB: the given value, else what CUDA reports for device 0."""
    if gpu_memory_gib is not None:
        return float(gpu_memory_gib)
    import torch

    if not torch.cuda.is_available():
        raise ValueError("make_plan(device='cuda') needs a visible GPU or gpu_memory_gib=<GiB>")
    return torch.cuda.get_device_properties(0).total_memory / GIB


def _fit_budget(
    fp: Mapping[str, Any],
    spacing: list[float],
    device: str,
    scale: float,
    gpu_memory_gib: float | None,
    divisor: Sequence[int] | None,
    num_samples: int,
):
    """Patch, strides, batch size and their reasons for the device's budget (see make_plan)."""
    median = resampled_shape(fp, spacing)

    def used(strides: Any, p: Sequence[int], n: int) -> int:  # the model only matters when strides are planned
        name, kwargs = planned_network(strides or [[2, 2, 2]] * 4, spacing)
        return gpu_bytes(kwargs, p, n, name)

    if device == "cpu":
        limit = CPU_PATCH_VOXELS * scale
        patch, strides = fit_patch(median, spacing, lambda p, s: int(np.prod(p)) <= limit, divisor=divisor)
        whole = fit_patch(median, spacing, lambda p, s: True, divisor=divisor)[0]  # the median shape, divisible
        how = "shrunk along its longest side in mm" if patch != whole else "the median shape rounded to the divisor"
        return (
            patch,
            strides,
            2,
            (
                f"the largest patch <= the median resampled shape {median} with at most {int(limit):,} voxels (the CPU "
                f"time budget), {how}: {int(np.prod(patch)):,} voxels"
            ),
            ("2 volumes x 2 patches each = 4 patches per step, notebook 03's CPU setting (batch norm needs > 1)"),
        )
    target = GPU_MEMORY_FRACTION * _gpu_memory_gib(gpu_memory_gib) * GIB
    patches = 2 * num_samples
    patch, strides = fit_patch(
        median, spacing, lambda p, s: used(s, p, patches) <= target, divisor=divisor, max_side=GPU_MAX_SIDE
    )
    one = used(strides, patch, num_samples)
    per_volume = used(strides, patch, 2 * num_samples) - one  # activations of one more volume's patches
    cases_cap = max(2, int(0.05 * fp["n_cases"] * np.prod(median) / (num_samples * np.prod(patch))))
    batch = int(np.clip((target - (one - per_volume)) // max(per_volume, 1), 2, min(cases_cap, 8)))
    gib = used(strides, patch, batch * num_samples) / GIB
    return (
        patch,
        strides,
        batch,
        (
            f"the largest patch <= the median resampled shape {median}, at most {GPU_MAX_SIDE} per side, whose step "
            f"fits {GPU_MEMORY_FRACTION:.0%} of {target / GPU_MEMORY_FRACTION / GIB:.0f} GiB (estimated with "
            f"architecture.activation_bytes)"
        ),
        (
            f"{batch} volumes x {num_samples} patches per step: an estimated {gib:.1f} GiB of "
            f"{target / GPU_MEMORY_FRACTION / GIB:.0f} GiB; at least 2 and at most 5% of the dataset's voxels per "
            "step, as nnU-Net"
        ),
    )


StepTimer = Callable[[str, dict, tuple], tuple[float, str]]  # (model_name, kwargs, batch shape) -> (s, precision)


def measured_step(model_name: str, model_kwargs: dict, shape: tuple, amp: str = "auto") -> tuple[float, str]:
    """Time one training step of the planned network on this CPU: the planner's :data:`StepTimer`. Notebook 03.

    ``amp`` "auto" times the precision training will pick (``precision.train_step_seconds``); "off" times fp32.
    """
    return train_step_seconds(get_model(model_name, **model_kwargs), shape, fp32_only=amp == "off")


def epoch_seconds(step_s: float, layout: Mapping[str, Any], n_train: int, n_val: int, overlap: float = 0.25) -> float:
    """Expected seconds of one epoch: the training steps plus the sliding-window validation. Notebook 03.

    A step is the timed forward + backward times :data:`CPU_STEP_OVERHEAD` (data, loss, optimiser); one validation
    window costs about a third of one patch's training step (a forward pass, no backward), and each validation
    case takes as many windows as cover the median resampled shape with ``overlap``.
    """
    patches = layout["batch_size"] * layout["num_samples"]
    steps = -(-n_train // layout["batch_size"])
    roi, median = np.array(layout["roi_size"]), np.array(layout["median_shape"])
    windows = np.prod(np.ceil(np.maximum(median - roi, 0) / (roi * (1 - overlap))) + 1)
    return float(CPU_STEP_OVERHEAD * steps * step_s + n_val * windows * step_s / (3 * patches))


def plan_cpu_by_time(
    layout_at: Callable[[float], dict], fp: Mapping[str, Any], budget: Mapping[str, Any], timer: StepTimer
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Choose the CPU voxel budget by timing training steps: the largest layout that still gets enough steps.

    Introduced in notebook 03. Tries the scales of :data:`CPU_SCALES` (1 = notebook 03's 48^3 at 2.5 mm), starting
    at 1 and moving up while the next larger layout still affords :data:`CPU_STEPS` optimiser steps (or every step
    ``max_epochs`` allows) in :data:`CPU_BUDGET_USE` of the budget, down while the current one does not. A longer
    budget or a faster machine thus buys finer voxels and more context at the same number of steps, as the
    benchmark in docs/benchmarks.md found best; a slow one gets a coarser, smaller layout instead of too few steps.

    Args:
        layout_at: scale -> a plan body (:func:`layout`), with ``roi_size``, ``median_shape``, the network.
        fp: the fingerprint (its case count gives the training and validation cases).
        budget: ``{"minutes", "max_epochs", "n_val"}``.
        timer: a :data:`StepTimer`.

    Returns:
        ``(chosen layout, timing)``; ``timing`` lists every candidate tried with its step seconds and the epochs
        and steps it would get, and the rule.
    """
    n_val = budget["n_val"] if budget["n_val"] is not None else max(1, round(0.2 * fp["n_cases"]))
    n_train = max(1, fp["n_cases"] - n_val)
    seconds, tried = budget["minutes"] * 60 * CPU_BUDGET_USE, {}

    def trial(i: int) -> dict[str, Any]:
        lay = layout_at(CPU_SCALES[i])
        key = json.dumps([lay["roi_size"], lay["pixdim"], lay["model_kwargs"]])
        if key not in tried:
            shape = (lay["batch_size"] * lay["num_samples"], 1, *lay["roi_size"])
            step_s, precision = timer(lay["model_name"], lay["model_kwargs"], shape)
            per_epoch = -(-n_train // lay["batch_size"])
            epochs = int(seconds // epoch_seconds(step_s, lay, n_train, n_val))
            if budget["max_epochs"]:
                epochs = min(epochs, budget["max_epochs"])
            need = min(CPU_STEPS, (budget["max_epochs"] or 10**9) * per_epoch)
            tried[key] = {
                "scale": CPU_SCALES[i], "pixdim": lay["pixdim"], "roi_size": lay["roi_size"],
                "model_name": lay["model_name"], "step_seconds": round(step_s, 4), "precision": precision,
                "epochs": epochs, "steps": epochs * per_epoch, "enough": epochs * per_epoch >= need,
            }  # fmt: skip
        return {**lay, "trial": tried[key], "key": key}

    i = CPU_SCALES.index(1.0)
    best = trial(i)
    while best["trial"]["enough"] and i > 0 and (up := trial(i - 1))["trial"]["enough"] and up["key"] != best["key"]:
        i, best = i - 1, up
    while not best["trial"]["enough"] and i < len(CPU_SCALES) - 1:
        i, best = i + 1, trial(i + 1)
    chosen = best.pop("trial")
    best.pop("key")
    rule = (
        f"the largest layout whose measured step ({chosen['step_seconds'] * 1e3:.0f} ms, {chosen['precision']}) "
        f"gives >= {CPU_STEPS} optimiser steps (or all that max_epochs allows) in {CPU_BUDGET_USE:.0%} of "
        f"{budget['minutes']:g} min: {chosen['epochs']} epochs, {chosen['steps']} steps expected"
    )
    best["reasons"] = {**best["reasons"], "budget": rule}
    return best, {"chosen": chosen, "tried": list(tried.values()), "rule": rule, "n_train": n_train, "n_val": n_val}


def layout(fp: dict, target: list[float], dev: str, scale: float, fixed: Mapping[str, Any]) -> dict[str, Any]:
    """Spacing, patch, batch and network at one budget scale, explicit values kept (the body of make_plan).

    ``fixed`` holds the explicit values (``pixdim``, ``roi_size``, ``divisor``, ``num_samples``,
    ``gpu_memory_gib``, ``model``; None = planned); benchmarks/bench_budget.py calls it for its rows.
    """
    reasons: dict[str, str] = {}
    divisor, num_samples = fixed["divisor"], fixed["num_samples"]
    if fixed["pixdim"] is not None:
        spacing, reasons["pixdim"] = [float(v) for v in fixed["pixdim"]], "given explicitly"
    elif dev == "cpu":
        spacing, reasons["pixdim"] = coarsen_for_cpu(fp, target, 0, scale=scale)
    else:
        spacing, reasons["pixdim"] = list(target), "the target spacing: on a GPU the full resolution is affordable"
    if fixed["roi_size"] is not None:
        patch = [int(r) for r in fixed["roi_size"]]
        strides = [] if divisor is not None else pooling_strides(patch, spacing, exact=True)
        batch, reasons["roi_size"] = 2, "given explicitly"
        reasons["batch_size"] = "2 volumes per step, notebook 03's default, for a patch given explicitly"
    else:
        patch, strides, batch, reasons["roi_size"], reasons["batch_size"] = _fit_budget(
            fp, spacing, dev, scale, fixed["gpu_memory_gib"], divisor, num_samples
        )
    thick = THICK_SLICE_NETWORK if fixed.get("timed") else "unet"
    name, kwargs = planned_network(strides, spacing, thick) if divisor is None else fixed["model"]
    if divisor is None:
        flat = "kernel_size" in kwargs and name == "unet"
        what = "a 2D MONAI UNet (3 x 3 x 1 kernels, slices never pooled: the slices are > 2x the in-plane voxels)"
        reasons["model_kwargs"] = (
            f"{what if flat else 'MONAI ' + ('UNet' if name == 'unet' else 'DynUNet')} with "
            f"{len(kwargs['strides']) - (name == 'dynunet')} downsamplings: an axis is pooled while its side stays "
            f">= {MIN_SIDE} voxels and its spacing is <= 2x the finest (nnU-Net's rule); strides {kwargs['strides']}"
        )
    div = list(divisor) if divisor is not None else divisor_of(kwargs["strides"])
    reasons["num_samples"] = f"{num_samples} patches per volume, centred on the label half of the time (pos=1, neg=1)"
    reasons["divisor"] = f"every patch side must be divisible by the product of the strides on its axis: {div}"
    return {
        "pixdim": [round(float(v), 4) for v in spacing],
        "roi_size": [int(v) for v in patch],
        "batch_size": int(batch),
        "num_samples": int(num_samples),
        "model_name": name,
        "model_kwargs": kwargs,
        "divisor": [int(d) for d in div],
        "target_spacing": list(target),
        "median_shape": resampled_shape(fp, spacing),
        "reasons": reasons,
    }


def make_plan(
    fp: dict,
    *,
    device: str,
    time_budget_min: float = 0.0,
    gpu_memory_gib: float | None = None,
    pixdim: Sequence[float] | None = None,
    roi_size: Sequence[int] | None = None,
    divisor: Sequence[int] | None = None,
    num_samples: int = 2,
    step_timer: StepTimer | None = None,
    max_epochs: int = 0,
    n_val: int | None = None,
    model: tuple[str, dict] | None = None,
) -> dict[str, Any]:
    """Plan spacing, patch, batch and network from a fingerprint, within the device's budget.

    Introduced in notebook 03. On CUDA the patch (at most 128 per side) and batch fit the GPU's memory at the
    target spacing. On the CPU the spacing is coarsened and the patch limited by a voxel budget: with a
    ``step_timer`` and a time budget, the budget is chosen by measuring training steps on this machine
    (:func:`plan_cpu_by_time`); without one it grows in proportion to ``time_budget_min`` from notebook 03's
    values (2.5 x 2.5 x 2.74 mm, 48^3, batch 2, 2 samples, UNet 16-256 with stride 2 at every level), the same
    plan on every machine.

    Args:
        fp: a ``fingerprints.fingerprint``.
        device: ``"cpu"`` or ``"cuda"`` (``"cuda:0"`` and ``torch.device`` work too).
        time_budget_min: the run's time budget (CPU only; 0 = notebook 03's 4.5 minutes, never measured).
        gpu_memory_gib: GPU memory to plan for (None = what CUDA reports).
        pixdim: a fixed target spacing (an explicit setting); None = planned.
        roi_size: a fixed patch (an explicit setting); the network is planned to divide it.
        divisor: a fixed per-axis divisor (an explicitly chosen model); the patch is planned to respect it.
        num_samples: patches drawn per volume.
        step_timer: ``(model_name, model_kwargs, batch shape) -> (seconds, precision)`` for one training step
            (:func:`measured_step`); None = do not measure.
        max_epochs: the run's epoch limit (0 = none): a run that cannot use more steps gets no smaller patch.
        n_val: validation cases (None = 20% of the fingerprint's cases), whose sliding window each epoch costs.
        model: the explicitly chosen ``(model_name, model_kwargs)`` that ``divisor`` comes from, timed as it is.

    Returns:
        ``{"pixdim", "roi_size", "batch_size", "num_samples", "model_name", "model_kwargs", "divisor",
        "target_spacing", "median_shape", "reasons", "fingerprint", "device"}`` and, when measured, ``"timing"``
        (step seconds, expected epochs and steps of every candidate tried); JSON-serialisable.
    """
    dev = "cuda" if str(device).startswith("cuda") else "cpu"
    if str(device) not in ("cpu", "cuda") and not str(device).startswith("cuda:"):
        raise ValueError(f"device must be 'cpu' or 'cuda', got {device!r}")
    target, target_reason = target_spacing(fp)
    fixed = {"pixdim": pixdim, "roi_size": roi_size, "divisor": divisor, "num_samples": num_samples}
    fixed.update(gpu_memory_gib=gpu_memory_gib, model=model or ("unet", {}))
    timing = None
    if dev == "cpu" and step_timer is not None and time_budget_min > 0:
        budget = {"minutes": time_budget_min, "max_epochs": max_epochs, "n_val": n_val}
        timed = {**fixed, "timed": True}
        planned, timing = plan_cpu_by_time(lambda sc: layout(fp, target, dev, sc, timed), fp, budget, step_timer)
    else:
        planned = layout(fp, target, dev, budget_scale(time_budget_min), fixed)
    planned["reasons"] = {"target_spacing": target_reason, **planned["reasons"]}
    out = {**planned, "fingerprint": fp, "device": dev}
    return {**out, "timing": timing} if timing else out


def resolve_auto(cfg: TrainConfig, items: list[dict], device: str | Any = "auto") -> tuple[TrainConfig, dict | None]:
    """Replace the ``"auto"`` values of a training configuration with a plan's; explicit values win.

    Introduced in notebook 03. Planned keys: ``config.PLANNED_FIELDS`` (``pixdim``, ``roi_size``, ``batch_size``,
    ``num_samples`` and ``model_name``: ``"auto"`` = the plan's UNet and its ``model_kwargs``, unless
    ``model_kwargs`` is given). An explicit model fixes the divisor the planned patch must respect; an explicit
    patch fixes the patch the planned network must divide; an explicit ``pixdim`` is the spacing the rest is
    planned at.

    Args:
        cfg: the run's configuration (e.g. notebook 03's parameters as a ``TrainConfig``).
        items: the training items (``data.validate_dataset``).
        device: ``"cpu"``, ``"cuda"``, ``"auto"`` (CUDA when visible) or a ``torch.device``.

    Returns:
        ``(resolved config, plan)``; ``plan`` is None (and the config unchanged) when nothing was "auto".
    """
    keys = [k for k in PLANNED_FIELDS if getattr(cfg, k) == "auto"]
    if not keys:
        return cfg, None
    device = resolve_device(device) if isinstance(device, str) else device
    explicit_kwargs = bool(cfg.model_kwargs)
    model_name = "unet" if cfg.model_name == "auto" else cfg.model_name
    explicit_model = explicit_kwargs or cfg.model_name != "auto"
    divisor = list(required_divisor(model_name, cfg.model_kwargs)) if explicit_model else None
    fp = fingerprint(items)
    the_plan = make_plan(
        fp,
        device=device.type,
        time_budget_min=float(cfg.time_budget_min or 0),
        pixdim=None if cfg.pixdim == "auto" else resolve_pixdim(cfg.pixdim),
        roi_size=None if cfg.roi_size == "auto" else cfg.roi_size,
        divisor=divisor,
        num_samples=2 if cfg.num_samples == "auto" else int(cfg.num_samples),
        step_timer=lambda name, kw, shape: measured_step(name, kw, shape, "off" if cfg.amp == "off" else "auto"),
        max_epochs=cfg.max_epochs,
        n_val=max(1, round(cfg.val_fraction * fp["n_cases"])) if not cfg.n_folds else fp["n_cases"] // cfg.n_folds,
        model=(model_name, dict(cfg.model_kwargs)) if explicit_model else None,
    )
    planned = {key: the_plan[key] for key in keys if key != "model_name"}
    if "model_name" in keys:
        planned["model_name"] = model_name if explicit_kwargs else the_plan["model_name"]
        if not explicit_kwargs:
            planned["model_kwargs"] = the_plan["model_kwargs"]
    if cfg.label_mode == "multiclass":  # plan.json of a binary run stays as it was
        the_plan["label_mode"] = "multiclass"
    return dataclasses.replace(cfg, **planned), the_plan


def _label_reason(plan: Mapping[str, Any]) -> str:
    """The plan table's reason for the label values: the run's label mode (``resolve_auto`` records multiclass)."""
    if plan.get("label_mode") == "multiclass":
        return "multiclass: one output channel per value (background included), softmax over all of them"
    if len([v for v in plan["fingerprint"]["label_values"] if v]) > 1:
        return "several foreground values: label_mode 'auto' trains one class each where dataset.json names them"
    return "binary mode trains label != 0 against background"


def plan_table(plan: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The plan as rows ``{"setting", "value", "reason"}`` for a notebook table (``pd.DataFrame(rows)``).

    Introduced in notebook 03.
    """
    fp, r = plan["fingerprint"], plan["reasons"]
    med = fp["median"]
    inten = fp.get("intensity") or {}
    rows = [
        ("cases", fp["n_cases"], "training cases read for the fingerprint"),
        ("median spacing (mm)", med["spacing"], "per-case voxel sizes in RAS order, median per axis"),
        ("median shape after foreground crop", med["cropped_shape"], "voxels where image > 0, as CropForegroundd"),
        (
            "foreground intensity p0.5 / p50 / p99.5",
            [inten.get(k) for k in ("p0.5", "p50", "p99.5")],
            "inside the label; the pipeline z-scores each volume, so any scale works",
        ),
        ("label values", fp["label_values"], _label_reason(plan)),
        ("target spacing (mm)", plan["target_spacing"], r["target_spacing"]),
        ("pixdim (mm)", plan["pixdim"], r["pixdim"]),
        ("median resampled shape", plan["median_shape"], "the median cropped shape at pixdim"),
        ("roi_size", plan["roi_size"], r["roi_size"]),
        ("batch_size", plan["batch_size"], r["batch_size"]),
        ("num_samples", plan["num_samples"], r["num_samples"]),
    ]
    if "model_kwargs" in r:  # a planned network (not an explicitly chosen one)
        kw = plan["model_kwargs"]
        rows.append(
            ("model", f"{plan['model_name']}: channels {kw.get('channels', kw.get('filters'))}", r["model_kwargs"])
        )
        if "kernel_size" in kw:
            rows.append(
                (
                    "kernels per level",
                    kw["kernel_size"],
                    "3 x 3 x 1 on levels where the slices are > 2x the in-plane voxels",
                )
            )
    if "budget" in r:
        t = plan["timing"]["chosen"]
        rows.append(("measured step (s)", t["step_seconds"], r["budget"]))
        rows.append(
            (
                "expected epochs / steps",
                [t["epochs"], t["steps"]],
                f"in {CPU_BUDGET_USE:.0%} of the budget, from the measured step",
            )
        )
    rows.append(("divisor", plan["divisor"], r["divisor"]))
    return [{"setting": s, "value": v, "reason": why} for s, v, why in rows]
