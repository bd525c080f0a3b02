"""Training: an explicit, readable loop around MONAI pieces, writing ``run_dir`` per docs/contract.md.

Introduced in notebook 03. ``run_training(config)`` is what notebook 03 calls and what
``python -m heartseg_utils.train --data_dir ... --run_dir ...`` runs; both share this one code path.
Launched by ``torchrun --nproc_per_node=N -m heartseg_utils.train ...`` the same loop runs data-parallel:
the few lines that differ are marked ``# DDP`` and call :mod:`heartseg_utils.distributed` (docs/distributed.md).

Read it top to bottom: the building blocks (seeding, one epoch; the validation Dice is
``inference.validate_classes``), the data and the pieces of a run, then :func:`fit`, the epoch loop, and
:func:`run_training` over named steps. The recipe's registries live in
:mod:`heartseg_utils.recipe`, the configuration in :mod:`heartseg_utils.config`, the precision decision in
:mod:`heartseg_utils.precision` and every file of the run folder in :mod:`heartseg_utils.runs`.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import itertools
import json
import math
import os
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import torch

from heartseg_utils import cli, distributed, plan, qc_run, runs, shifts, splits
from heartseg_utils.config import (
    PLANNED_FIELDS,
    TrainConfig,
    argument_parser,
    class_names,
    config_dict,
    model_from_config,
    resolve_labels,
    transforms_from_config,
)
from heartseg_utils.curves import Curves, open_curves
from heartseg_utils.inference import (
    TTA_AXES,
    decide_class_inference,
    decide_inference,
    predict_case,
    validate_classes,
    validation_masks,
)
from heartseg_utils.models import count_parameters
from heartseg_utils.precision import amp_decision, autocast, dtype_name, resolve_device
from heartseg_utils.recipe import DECAYS, OPTIMIZERS, SCHEDULERS, ProgressLR, make_loss, step_scheduler


# --------------------------------------------------------------------------------------------------
# Seeding, one epoch, the first validation case
# --------------------------------------------------------------------------------------------------
def seed_epoch(seed: int, epoch: int, *datasets: Any, rank: int = 0) -> torch.Generator:
    """Reseed every random source from (seed, rank, epoch): a resumed run replays what it would have done.

    Introduced in notebook 03. ``numpy.random.SeedSequence`` mixes the three numbers, so no two
    (rank, epoch) pairs share a seed; each torchrun process gets its own augmentation and dropout stream.

    Returns:
        A torch Generator seeded the same way, for the data loader's shuffling.
    """
    import numpy as np
    from monai.utils import set_determinism

    s = int(np.random.SeedSequence([seed, rank, epoch]).generate_state(1)[0])
    set_determinism(seed=s)
    for ds in datasets:
        ds.transform.set_random_state(seed=s)
    return torch.Generator().manual_seed(s)


def train_one_epoch(model, loader, loss_fn, optimizer, scaler, device, amp_dtype) -> float:
    """One pass over the training patches; returns the mean loss. Introduced in notebook 03."""
    model.train()
    total, n = 0.0, 0
    for batch in loader:
        image, label = batch["image"].to(device), batch["label"].to(device)
        optimizer.zero_grad(set_to_none=True)
        with autocast(device, amp_dtype):
            logits = model(image)
        loss = loss_fn(logits.float(), label.float() if logits.shape[1] == 1 else label)
        if not torch.isfinite(loss):
            lr = optimizer.param_groups[0]["lr"]
            raise FloatingPointError(f"loss became {loss.item()} at step {n + 1} of this epoch; lower lr (now {lr:g})")
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
        total, n = total + loss.item(), n + 1
    return total / max(n, 1)


def class_columns(cfg: TrainConfig) -> list[str]:
    """history.csv's per-class columns of a multi-class run, ``val_dice_<name>`` (none for a binary run).

    Introduced in notebook 03. The name is the class name in lower case, other characters than letters and digits
    as ``_`` (``"left ventricle"`` -> ``val_dice_left_ventricle``); a name taken twice gets its label value added.
    """
    if cfg.label_mode != "multiclass":
        return []
    columns: list[str] = []
    for name, value in zip(cfg.label_names[1:], cfg.label_values[1:]):
        column = "val_dice_" + ("".join(c if c.isalnum() else "_" for c in str(name).lower()).strip("_") or "class")
        columns.append(f"{column}_{value}" if column in columns or column in runs.HISTORY_FIELDS else column)
    return columns


def first_validation_case(run: Run) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(image, mask, label)`` of the first validation case: one more sliding window, for TensorBoard's overlay."""
    case = {key: run.val_ds[0][key][None] for key in ("image", "label")}  # a batch of one
    mask, label = next(validation_masks(run.net, [case], run.cfg, run.ddp.device, run.amp_dtype))
    return case["image"], mask, label


# --------------------------------------------------------------------------------------------------
# The data, the plan, the pieces of a run
# --------------------------------------------------------------------------------------------------
class Data(NamedTuple):
    """What :func:`prepare_data` hands to training: the resolved config, the cases and the cached datasets."""

    cfg: TrainConfig
    dataset_dir: Path
    split: dict[str, Any]  # split.json's content
    plan: dict[str, Any] | None
    train_ds: Any
    val_ds: Any


def plan_config(
    cfg: TrainConfig, items: list[dict], device: torch.device, run_dir: Path, ddp: distributed.Distributed | None = None
) -> tuple[TrainConfig, dict[str, Any] | None]:
    """The config with its ``"auto"`` values planned (``plan.resolve_auto``); a resumed run keeps its own.

    Introduced in notebook 03. Returns ``(resolved config, plan dict or None)``. Under torchrun only rank 0 plans
    (a plan may time training steps, and every process must train the same layout) and sends its plan to all.
    """
    if ddp is not None and ddp.world > 1:
        return distributed.broadcast(plan_config(cfg, items, device, run_dir) if ddp.master else None, ddp)  # DDP
    auto = [name for name in PLANNED_FIELDS if getattr(cfg, name) == "auto"]
    if cfg.resume and auto and (run_dir / runs.CONFIG).is_file():
        old = runs.read_json(run_dir / runs.CONFIG)
        plan_dict = runs.read_json(run_dir / runs.PLAN) if (run_dir / runs.PLAN).is_file() else None
        return dataclasses.replace(cfg, **{k: old[k] for k in (*auto, "model_kwargs")}), plan_dict
    return plan.resolve_auto(cfg, items, device)


def _cases(cfg: TrainConfig, run_dir: Path, items: list[dict]) -> dict[str, list[dict]]:
    """The run's train/validation/holdout items: split.json's on resume, else a new ``splits.make_split``."""
    from heartseg_utils import data

    if cfg.resume and (run_dir / runs.SPLIT).is_file():
        keys = [k for k in ("train", "validation", "holdout") if k in runs.read_split(run_dir)]
        return {"holdout": [], **{k: data.split_cases(run_dir, k, items) for k in keys}}
    return splits.make_split(
        items,
        seed=cfg.seed,
        val_fraction=cfg.val_fraction,
        n_folds=cfg.n_folds,
        fold=cfg.fold,
        holdout_fraction=cfg.holdout_fraction,
    )


def prepare_data(
    cfg: TrainConfig, run_dir: Path, device: torch.device, ddp: distributed.Distributed | None = None
) -> Data:
    """Validate the dataset, split it (reusing split.json on resume), plan "auto" values, cache the datasets.

    Introduced in notebook 03. On CUDA the cached volumes live on the GPU and the random transforms run there
    (MONAI's fast-training pattern, ``get_transforms(device=...)``); on the CPU nothing moves.
    """
    from monai.data import CacheDataset

    from heartseg_utils import data
    from heartseg_utils.transforms import resolve_pixdim

    dataset_dir = data.get_dataset_dir(cfg.data_dir)
    items = data.validate_dataset(dataset_dir)
    cfg = resolve_labels(cfg, data.load_dataset_json(dataset_dir).get("labels"))  # label_mode "auto": decided here
    cases = _cases(cfg, run_dir, items)
    split = {"dataset_dir": str(dataset_dir), "seed": cfg.seed, **{k: [i["case"] for i in v] for k, v in cases.items()}}
    cfg, the_plan = plan_config(cfg, items, device, run_dir, ddp)  # the planner plugs in here
    cfg = dataclasses.replace(cfg, pixdim=resolve_pixdim(cfg.pixdim))  # three floats; also re-checks roi_size
    tf_device = device if device.type == "cuda" else None
    datasets = [
        CacheDataset(
            cases[key],
            transforms_from_config(config_dict(cfg), stage, tf_device),
            cache_rate=1.0,
            num_workers=None,
            progress=False,
        )
        for key, stage in (("train", "train"), ("validation", "val"))
    ]
    for item, case in zip(datasets[1], cases["validation"]):  # legal (MONAI pads), but worth knowing
        shape = tuple(item["image"].shape[1:])
        if any(r > s for r, s in zip(cfg.roi_size, shape)):
            print(
                f"note: roi_size {cfg.roi_size} is larger than the preprocessed volume {case['case']} {shape} "
                f"(pixdim {cfg.pixdim}); patches and sliding windows are zero-padded to fit"
            )
    return Data(cfg, dataset_dir, split, the_plan, *datasets)


@dataclass
class Run:
    """What the epoch loop works with: the config, the network and its optimisation pieces, the data."""

    cfg: TrainConfig
    run_dir: Path
    ddp: distributed.Distributed
    net: torch.nn.Module  # the bare network: validated and saved, loads without DDP
    model: torch.nn.Module  # the network the optimiser steps: net, or its DDP wrapper under torchrun
    loss_fn: torch.nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: Any
    scaler: torch.amp.GradScaler
    amp_dtype: torch.dtype | None
    train_ds: Any
    val_ds: Any

    def parts(self) -> dict[str, Any]:
        """What ``last.pt`` saves and restores (:func:`runs.save_checkpoint`): weights and optimisation state."""
        return {"model": self.net, "optimizer": self.optimizer, "scaler": self.scaler, "scheduler": self.scheduler}


def probe_inputs(cfg: TrainConfig, device: torch.device) -> tuple[torch.nn.Module | None, tuple[int, ...]]:
    """What ``precision.amp_decision`` probes for a planned run: its own network (CPU, amp "auto") and patch batch."""
    patches = (cfg.batch_size * cfg.num_samples, 1, *cfg.roi_size)
    model = model_from_config(config_dict(cfg)) if cfg.amp == "auto" and device.type == "cpu" else None
    return model, patches


def build_run(data: Data, run_dir: Path, ddp: distributed.Distributed, amp_dtype: torch.dtype | None) -> Run:
    """Build the network (same initial weights in every process), loss, optimiser, schedule and scaler."""
    cfg = data.cfg
    seed_epoch(cfg.seed, 0)
    net = model_from_config(config_dict(cfg)).to(ddp.device)
    model = distributed.wrap(net, ddp)  # DDP: DistributedDataParallel under torchrun, net itself otherwise
    optimizer = OPTIMIZERS[cfg.optimizer_name](model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    scheduler = SCHEDULERS[cfg.scheduler_name](optimizer)
    scaler = torch.amp.GradScaler(ddp.device.type, enabled=amp_dtype == torch.float16)  # fp16 only
    loss_fn = make_loss(cfg.loss_name)
    return Run(
        cfg, run_dir, ddp, net, model, loss_fn, optimizer, scheduler, scaler, amp_dtype, data.train_ds, data.val_ds
    )


def planned_epochs(cfg: TrainConfig, epochs_done: int, session_s: float, session_epochs: int) -> int:
    """How many epochs the run will get: ``max_epochs``, or fewer when the time budget binds first.

    Introduced in notebook 03. With a budget: ``min(max_epochs, done + floor(remaining s / mean epoch s))``,
    re-estimated after every epoch of this session; a generous budget gives exactly ``max_epochs``.
    ``max_epochs`` 0 means no epoch limit: the budget alone decides (at least one more epoch before any is timed).
    """
    budget_s = cfg.time_budget_min * 60
    if not budget_s or not session_epochs:
        return cfg.max_epochs or epochs_done + 1
    fits = math.floor(max(budget_s - session_s, 0.0) / (session_s / session_epochs))
    return max(epochs_done, min(cfg.max_epochs or math.inf, epochs_done + fits))


def patience_counts(cfg: TrainConfig, progress: float) -> bool:
    """Early stopping counts bad epochs only once a decaying schedule (poly, cosine) is half done.

    Early in such a schedule the learning rate is still high and validation Dice noisy; stopping there
    would waste the budget the schedule was planned for. Other schedules count from the first epoch.
    """
    return cfg.scheduler_name not in DECAYS or progress >= 0.5


def _epoch_loader(run: Run, epoch: int, sampler: Any) -> Any:
    """This epoch's training loader, every random source reseeded from (seed, rank, epoch)."""
    from monai.data import ThreadDataLoader
    from torch.utils.data import RandomSampler

    gen = seed_epoch(run.cfg.seed, epoch, run.train_ds, rank=run.ddp.rank)
    if sampler is not None:
        sampler.set_epoch(epoch)  # DDP: a new shuffle every epoch, the same in every process
    workers = 0 if run.ddp.device.type == "cuda" else run.cfg.num_workers  # GPU transforms: no worker processes
    # MONAI's loader also seeds the dataset's random transforms from `gen`: pass it in both cases
    return ThreadDataLoader(
        run.train_ds,
        batch_size=run.cfg.batch_size,
        generator=gen,
        num_workers=workers,
        sampler=sampler or RandomSampler(run.train_ds, generator=gen),
    )


# --------------------------------------------------------------------------------------------------
# The loop
# --------------------------------------------------------------------------------------------------
def fit(run: Run, state: dict[str, Any], history: list[dict[str, Any]], curves: Curves | None = None) -> str:
    """The epoch loop: train, validate, schedule, checkpoint, stop. Introduced in notebook 03.

    ``curves`` (``log_dir``, master process only) gets each history.csv row and the first validation case's overlay.

    Returns:
        Why it stopped: ``"max_epochs"``, ``"time_budget"`` or ``"early_stopping"``.
    """
    from monai.data import ThreadDataLoader
    from tqdm import tqdm  # plain text: an executed notebook keeps the final line, not a frozen widget

    cfg, device, master = run.cfg, run.ddp.device, run.ddp.master
    sampler = distributed.train_sampler(run.train_ds, run.ddp, cfg.seed)  # DDP: a disjoint share per process
    val_loader = ThreadDataLoader(distributed.shard(run.val_ds, run.ddp), batch_size=1, num_workers=0)  # DDP
    first = len(history) + 1
    epochs = range(first, cfg.max_epochs + 1) if cfg.max_epochs else itertools.count(first)  # 0: the budget ends it
    show = cfg.progress and master
    total = cfg.max_epochs or None
    bar = tqdm(desc="epochs", initial=first - 1, total=total, disable=not show, file=sys.stdout)
    session_s, last_s = 0.0, 0.0  # the time budget applies to this call: resume=True gets a fresh one
    with bar:  # closed on every return: the last line printed is the last epoch
        for epoch in epochs:
            if cfg.time_budget_min and session_s + last_s > cfg.time_budget_min * 60:
                return "time_budget"
            t0, lr = time.perf_counter(), run.optimizer.param_groups[0]["lr"]
            loader = _epoch_loader(run, epoch, sampler)
            loss = train_one_epoch(run.model, loader, run.loss_fn, run.optimizer, run.scaler, device, run.amp_dtype)
            loss = distributed.mean_over_processes(loss, run.ddp)  # DDP
            distributed.sync_buffers(run.net, run.ddp)  # DDP: keep rank 0's batch-norm statistics
            val_dice, val_min, per_class = validate_classes(run.net, val_loader, cfg, device, run.amp_dtype, run.ddp)
            last_s = distributed.reduce([time.perf_counter() - t0], run.ddp, "max")[0]  # DDP: identical decisions
            session_s += last_s
            planned = planned_epochs(cfg, epoch, session_s, epoch - first + 1)
            step_scheduler(run.scheduler, val_dice, progress=epoch / planned)
            row = (epoch, round(loss, 6), round(val_dice, 6), round(val_min, 6), lr, planned, round(last_s, 3))
            history.append(dict(zip(runs.HISTORY_FIELDS, row)))
            history[-1].update(zip(class_columns(cfg), (round(d, 6) for d in per_class)))  # multi-class runs only
            improved = track_best(state, cfg, epoch, (val_dice, val_min), planned, last_s)
            if master:
                if improved:
                    runs.save_best(run.run_dir / runs.BEST, run.net, epoch, val_dice)
                runs.save_checkpoint(run.run_dir / runs.LAST, run.parts(), state, history)
                runs.write_history(history, run.run_dir / runs.HISTORY)
            if curves is not None:  # TensorBoard (log_dir): history.csv's row, one validation overlay
                curves.log_epoch(history[-1])
                curves.log_overlay(epoch, *first_validation_case(run))
            bar.total = planned  # the planned epochs, re-estimated each epoch; min = the worst case
            best = state["best_val_dice"]
            bar.set_postfix(
                loss=f"{loss:.3f}", dice=f"{val_dice:.3f}", min=f"{val_min:.3f}", best=f"{best:.3f}", refresh=False
            )
            bar.update(epoch - bar.n)  # one printed line per epoch, counted against the planned epochs
            if state["bad_epochs"] >= cfg.patience:
                return "early_stopping"
            if epoch >= planned and (not cfg.max_epochs or planned < cfg.max_epochs):  # the budget fits no more epochs
                return "time_budget"
    return "max_epochs"


def track_best(
    state: dict[str, Any], cfg: TrainConfig, epoch: int, scores: tuple[float, float], planned: int, seconds: float
) -> bool:
    """Update the run's bookkeeping after an epoch; True when the mean validation Dice improved. Notebook 03.

    ``scores`` is ``(mean, minimum)`` over the validation cases; the mean decides, the minimum is kept beside it.
    A better Dice resets the early-stopping count; a worse one adds to it once :func:`patience_counts` allows.
    """
    state["train_seconds"] += seconds
    state["planned_epochs"] = planned
    if scores[0] > state["best_val_dice"]:
        state.update(best_val_dice=scores[0], best_val_dice_min=scores[1], best_epoch=epoch, bad_epochs=0)
        return True
    if patience_counts(cfg, epoch / planned):
        state["bad_epochs"] += 1
    return False


def decide_postprocessing(run: Run) -> tuple[dict[str, Any], dict[str, Any]]:
    """Decide flip TTA and the largest component on the validation cases, and fit the run's quality control.

    Introduced in notebook 03. The best checkpoint predicts every validation scan as inference does
    (``inference.predict_case`` on the file, back on the scan's own grid), with the flip members of
    ``inference.TTA_AXES``. Flip TTA is used if it raises the mean foreground Dice; then the largest 26-connected
    component is kept if that raises it (nnU-Net's rule; a multi-class run decides it per class,
    ``inference.decide_class_inference``). Inference (notebooks 04 and 07, ``python -m heartseg_utils.predict``)
    follows both unless told otherwise. The final masks fit ``qc.json`` (``qc_run.fit``: plausibility from the
    training labels, temperature, quality model, review threshold; ``qc_run.fit_classes``: one per class).

    Returns:
        ``(postprocessing.json, qc.json)`` contents.
    """
    from monai.data import set_track_meta

    net = copy.deepcopy(run.net)
    runs.load_weights(run.run_dir / runs.BEST, net, run.ddp.device)
    config = {**config_dict(run.cfg), "trained_with": {"device": str(run.ddp.device), "amp": dtype_name(run.amp_dtype)}}
    items = list(run.val_ds.data)  # the validation files (CacheDataset keeps its input list)
    set_track_meta(True)  # Invertd maps each prediction back onto its scan's grid
    try:
        results = [predict_case(net, config, item["image"], members=True) for item in items]
    finally:
        set_track_meta(False)
    labels = [qc_run.read_scan(item["label"])[0] for item in items]
    cases = [
        {"case": item["case"], "affine": r["affine"], "image": qc_run.read_scan(item["image"])[0], "label": t}
        for item, r, t in zip(items, results, labels)
    ]
    if run.cfg.label_mode == "multiclass":
        return _decide_classes(run, net, config, results, cases)
    post, probabilities, masks = decide_inference([r["members"] for r in results], [t != 0 for t in labels])
    for case, r, p, m in zip(cases, results, probabilities, masks):
        case.update(probability=p, mask=m, label=case["label"] != 0, members=r["members"])
    decided = {k: post[k] for k in ("tta", "keep_largest", "tta_axes")}
    copies = shifted_cases(run, net, config, tta=post["tta"], keep_largest=post["keep_largest"])
    for c in copies:
        c.update(label=c["label"] != 0)
    return post, qc_run.fit(cases, qc_run.training_reference(run.train_ds.data), shifted=copies, **decided)


def shifted_cases(run: Run, net: torch.nn.Module, config: dict[str, Any], **decided: Any) -> list[dict[str, Any]]:
    """Shifted copies of the validation scans (``cfg.qc_shifts``), predicted as inference will (``decided``).

    Quality control's threshold needs failures to sit between, and validation rarely has one: an inverted
    contrast or a crop that misses the heart shows what a failed mask looks like. The copies are written to a
    temporary folder (removed after); the dataset is only read. Each becomes a case dict of ``qc_run.fit``.
    """
    import tempfile

    from monai.data import set_track_meta

    items, cases = list(run.val_ds.data), []
    with tempfile.TemporaryDirectory(prefix="heartseg_qc_") as tmp:
        set_track_meta(True)
        try:
            for kind in run.cfg.qc_shifts:
                for item in shifts.shifted_items(items, Path(tmp) / kind, kind, run.cfg.seed):
                    r = predict_case(net, config, item["image"], members=True, **decided)
                    image, label = qc_run.read_scan(item["image"])[0], qc_run.read_scan(item["label"])[0]
                    cases.append({**r, "case": item["case"], "kind": kind, "image": image, "label": label})
        finally:
            set_track_meta(False)
    return cases


def _decide_classes(
    run: Run, net: torch.nn.Module, config: dict[str, Any], results: list[dict[str, Any]], cases: list[dict[str, Any]]
) -> tuple[dict[str, Any], dict[str, Any]]:
    """:func:`decide_postprocessing` of a multi-class run: per-class decisions and one QC record per class."""
    names = class_names(config)
    post, probabilities, masks = decide_class_inference(
        [r["class_members"] for r in results], [c["label"] for c in cases], config["label_values"], list(names.values())
    )
    for case, r, p, m in zip(cases, results, probabilities, masks):
        case.update(probabilities=p, mask=m, class_members=r["class_members"])
    decided = {k: post[k] for k in ("tta", "keep_largest", "keep_largest_values", "tta_axes")}
    references = qc_run.training_reference(run.train_ds.data, list(names))
    copies = shifted_cases(run, net, config, tta=post["tta"], keep_largest=post["keep_largest_values"])
    return post, qc_run.fit_classes(cases, references, names, shifted=copies, **decided)


def run_training(config: TrainConfig | dict[str, Any]) -> dict[str, Any]:
    """Train a segmentation network and write ``run_dir`` as docs/contract.md says. Introduced in notebook 03.

    A ``run_dir`` that holds another run is refused before anything is written (``resume=True`` continues it,
    ``overwrite=True`` replaces it), and a bad dataset stops the run before ``run_dir`` is created.

    Args:
        config: a :class:`TrainConfig` or a dict of its fields (e.g. notebook 03's parameters).

    Returns:
        The contents of ``metrics.json`` (:func:`run_metrics`); under torchrun every process returns the
        same dict and only rank 0 writes.
    """
    from monai.data import set_track_meta

    cfg = config if isinstance(config, TrainConfig) else TrainConfig(**config)
    if unknown := [k for k in cfg.qc_shifts if k not in shifts.SHIFTS]:
        raise ValueError(f"qc_shifts: unknown shift(s) {unknown}; choose among {sorted(shifts.SHIFTS)}")
    run_dir = Path(cfg.run_dir)
    runs.check_run_dir(run_dir, config_dict(cfg), resume=cfg.resume, overwrite=cfg.overwrite)
    ddp = distributed.setup(resolve_device(cfg.device))  # DDP: rank 0 of 1 without torchrun
    try:
        data = prepare_data(cfg, run_dir, ddp.device, ddp)
        with claim_run_dir(run_dir, cfg, ddp):
            return train_and_decide(data, run_dir, ddp)
    finally:
        set_track_meta(True)
        distributed.teardown(ddp)  # DDP


@contextlib.contextmanager
def claim_run_dir(run_dir: Path, cfg: TrainConfig, ddp: distributed.Distributed) -> Iterator[None]:
    """Create ``run_dir`` and hold its lock while the run writes (rank 0 writes, so rank 0 locks).

    Inside the lock the folder is checked again (another run may have finished there meanwhile); with
    ``overwrite=True`` the previous run's files are removed first, so no file of two runs ever sits side by side.
    """
    if not ddp.master:  # DDP: other processes write nothing
        yield
        return
    run_dir.mkdir(parents=True, exist_ok=True)
    with runs.run_lock(run_dir):
        runs.check_run_dir(run_dir, config_dict(cfg), resume=cfg.resume, overwrite=cfg.overwrite)
        removed = runs.clear_run(run_dir) if cfg.overwrite and not cfg.resume else []
        if removed:
            print(f"overwrite=True: removed the previous run's {', '.join(removed)} from {run_dir}")
        yield


def train_and_decide(data: Data, run_dir: Path, ddp: distributed.Distributed) -> dict[str, Any]:
    """The run itself, in named steps: precision, pieces, resume, files, the loop, post-processing, metrics."""
    from monai.data import set_track_meta

    probe = probe_inputs(data.cfg, ddp.device)
    timed = amp_decision(data.cfg.amp, ddp.device, *probe) if ddp.master or ddp.world == 1 else None  # DDP: rank 0
    amp_dtype, amp_reason = distributed.broadcast(timed, ddp)  # DDP: every process takes rank 0's answer
    set_track_meta(False)  # plain tensors from here on: faster, and metadata is not needed for training
    run = build_run(data, run_dir, ddp, amp_dtype)
    state, history = resume_run(run) if data.cfg.resume else (runs.new_state(), [])
    if ddp.master:
        write_run_files(run, data, history, amp_reason)
    with open_curves(data.cfg.log_dir if ddp.master else "", purge_step=len(history) + 1) as curves:  # DDP: rank 0
        stopped = fit(run, state, history, curves)
    if ddp.master and data.cfg.progress:
        n_val, n_copies = len(run.val_ds.data), len(run.val_ds.data) * len(data.cfg.qc_shifts)
        print(
            f"deciding flip TTA and the largest component on {n_val} validation scan{'s' * (n_val != 1)} and fitting "
            f"quality control (with {n_copies} shifted copies): {n_val + n_copies} predictions of "
            f"{1 + len(TTA_AXES)} network passes",
            flush=True,
        )
    post, qc_record = decide_postprocessing(run) if ddp.master else (None, None)  # DDP: rank 0 decides
    post = distributed.broadcast(post, ddp)  # DDP
    metrics = {
        **run_metrics(run, state, history, stopped, amp_reason),
        "keep_largest": (post or {}).get("keep_largest"),
        "tta": (post or {}).get("tta"),
    }
    if ddp.master:
        runs.write_json(post, run_dir / runs.POSTPROCESSING)
        runs.write_json(qc_record, run_dir / runs.QC)
        runs.write_json(metrics, run_dir / runs.METRICS)
    return metrics


def resume_run(run: Run) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Load ``last.pt`` into the run, and re-plan a progress schedule from where it stopped. Notebook 03.

    The poly/cosine decay continues from ``epochs done / max_epochs``, as :func:`planned_epochs` plans a session that
    has timed no epoch yet: a run resumed with a larger ``max_epochs`` gets the rest of a longer schedule (its last
    session had ended the old one at lr 0), and a run interrupted before its own ``max_epochs`` goes on as planned.
    """
    state, history = runs.load_checkpoint(run.run_dir / runs.LAST, run.parts(), run.ddp.device)
    if isinstance(run.scheduler, ProgressLR):
        mean_s = sum(float(h["epoch_seconds"]) for h in history) / max(len(history), 1)  # max_epochs 0: as timed
        timed = (mean_s, 1) if not run.cfg.max_epochs and history else (0.0, 0)
        run.scheduler.step(len(history) / planned_epochs(run.cfg, len(history), *timed))
    return state, history


def run_metrics(run: Run, state: dict, history: list, stopped: str, amp_reason: str) -> dict[str, Any]:
    """The content of ``metrics.json`` (docs/contract.md)."""
    return {
        "best_val_dice": round(state["best_val_dice"], 6),
        "best_val_dice_min": round(state.get("best_val_dice_min", -1.0), 6),
        "best_epoch": state["best_epoch"],
        "epochs_run": len(history),
        "planned_epochs": state["planned_epochs"] or run.cfg.max_epochs,
        "train_seconds": round(state["train_seconds"], 2),
        "device": str(run.ddp.device),
        "amp": dtype_name(run.amp_dtype),
        "amp_reason": amp_reason,
        "stopped_because": stopped,
        "world_size": run.ddp.world,
        **best_class_dice(run.cfg, history, state["best_epoch"]),
    }


def best_class_dice(cfg: TrainConfig, history: list[dict[str, Any]], best_epoch: int) -> dict[str, Any]:
    """metrics.json's ``best_val_dice_per_class`` of a multi-class run: ``{class name: Dice at the best epoch}``."""
    row = next((h for h in history if int(h["epoch"]) == best_epoch), None)
    if cfg.label_mode != "multiclass" or row is None:
        return {}
    return {"best_val_dice_per_class": {n: float(row[c]) for n, c in zip(cfg.label_names[1:], class_columns(cfg))}}


def write_run_files(run: Run, data: Data, history: list[dict[str, Any]], amp_reason: str) -> None:
    """Write config.json, split.json, plan.json (planned runs) and, on resume, history.csv; print a summary."""
    runs.write_json({**config_dict(run.cfg), "dataset_dir": str(data.dataset_dir)}, run.run_dir / runs.CONFIG)
    runs.write_json(data.split, run.run_dir / runs.SPLIT)
    if data.plan is not None:
        runs.write_json(data.plan, run.run_dir / runs.PLAN)
    if history:
        runs.write_history(history, run.run_dir / runs.HISTORY)
    print(
        f"{run.cfg.model_name}: {count_parameters(run.net):,} parameters | device {run.ddp.device} x "
        f"{run.ddp.world} process(es) | {amp_reason} | {len(run.train_ds)} train / {len(run.val_ds)} val cases | "
        f"pixdim {run.cfg.pixdim} | roi {run.cfg.roi_size} | batch {run.cfg.batch_size}"
    )


# --------------------------------------------------------------------------------------------------
# Command line
# --------------------------------------------------------------------------------------------------
def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Command-line entry: ``python -m heartseg_utils.train --run_dir runs/x --max_epochs 50`` (flags = fields).

    Introduced in notebook 03. Defaults are notebook 03's parameters; ``torchrun --nproc_per_node=N -m
    heartseg_utils.train ...`` runs the same code in N processes (docs/distributed.md). ``--debug`` shows the
    traceback of a failure, which otherwise ends in one line naming the file and the fix (exit code 2).
    """
    parser = argument_parser("Train a heartseg model (same code path as notebook 03).")
    cli.add_debug_flag(parser)
    flags = vars(parser.parse_args(argv))
    flags.pop("debug")
    return run_training(flags)


def _command_line(argv: list[str]) -> None:
    """:func:`main`, then the metrics as JSON from the master process (under torchrun every process returns them)."""
    result = main(argv)
    if distributed.is_master() and os.environ.get("RANK", "0") == "0":
        print(json.dumps(result, indent=2))


if __name__ == "__main__":
    sys.exit(cli.run(_command_line, "python -m heartseg_utils.train"))
