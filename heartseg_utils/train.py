"""Training: an explicit, readable loop around MONAI pieces, writing ``run_dir`` per docs/contract.md.

Introduced in notebook 03. ``train(config)`` is what notebook 03 calls and what
``python -m heartseg_utils.train --data_dir ... --run_dir ...`` runs; both share this one code path.
Launched by ``torchrun --nproc_per_node=N -m heartseg_utils.train ...`` the same loop runs data-parallel:
the few lines that differ are marked ``# DDP`` and call :mod:`heartseg_utils.distributed` (docs/distributed.md).

Read it top to bottom: the registries (losses, optimisers, schedules), the building blocks (AMP, seeding,
one epoch, validation, checkpoints), then :func:`train` over named steps and :func:`fit`, the epoch loop.
Written into ``run_dir``: ``config.json``, ``split.json``, ``plan.json`` (planned runs only),
``history.csv`` (one row per epoch), ``last.pt`` (every epoch), ``best_model.pt`` and ``metrics.json``.
"""

from __future__ import annotations

import argparse
import copy
import csv
import dataclasses
import importlib.util
import json
import math
import os
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import torch

from heartseg_utils import distributed
from heartseg_utils.data import write_atomic, write_json

HISTORY_FIELDS = ("epoch", "train_loss", "val_dice", "lr", "planned_epochs", "epoch_seconds")
PLANNED_FIELDS = ("pixdim", "roi_size", "batch_size", "model_name")  # "auto" = chosen by heartseg_utils.plan


# --------------------------------------------------------------------------------------------------
# Registries: one per name family; the allowed names are their keys
# --------------------------------------------------------------------------------------------------
class LossSpec(NamedTuple):
    """One entry of :data:`LOSSES`: a factory and how many output channels the network needs for it."""

    make: Callable[[], torch.nn.Module]
    out_channels: int


def _dicece() -> torch.nn.Module:
    from monai.losses import DiceCELoss

    return DiceCELoss(to_onehot_y=True, softmax=True)


def _dice() -> torch.nn.Module:
    from monai.losses import DiceLoss

    return DiceLoss(to_onehot_y=True, softmax=True)


LOSSES: dict[str, LossSpec] = {
    "dicece": LossSpec(_dicece, 2),  # Dice + cross-entropy over a 2-channel softmax (background, atrium)
    "dice": LossSpec(_dice, 2),
    "bce": LossSpec(torch.nn.BCEWithLogitsLoss, 1),  # one logit, sigmoid
}
OPTIMIZERS: dict[str, type[torch.optim.Optimizer]] = {"adamw": torch.optim.AdamW, "adam": torch.optim.Adam}


def poly_decay(progress: float) -> float:
    """nnU-Net's schedule: the learning-rate factor ``(1 - progress) ** 0.9``. Introduced in notebook 03."""
    return max(0.0, 1.0 - progress) ** 0.9


def cosine_decay(progress: float) -> float:
    """Half a cosine from 1 to 0 over the run (no restarts). Introduced in notebook 03."""
    return 0.5 * (1.0 + math.cos(math.pi * min(max(progress, 0.0), 1.0)))


DECAYS: dict[str, Callable[[float], float]] = {"poly": poly_decay, "cosine": cosine_decay}


class ProgressLR:
    """Learning rate = initial lr x ``DECAYS[name](progress)``, progress = epochs done / planned epochs.

    Introduced in notebook 03. Like nnU-Net's PolyLRScheduler, it is told where the run stands instead of
    counting steps, so a time budget that shortens the run also shortens the schedule.
    """

    def __init__(self, optimizer: torch.optim.Optimizer, name: str) -> None:
        self.optimizer, self.name = optimizer, name
        self.base_lrs = [g["lr"] for g in optimizer.param_groups]
        self.progress = 0.0

    def step(self, progress: float) -> None:
        """Set every parameter group's lr for the next epoch."""
        self.progress = progress
        for group, base in zip(self.optimizer.param_groups, self.base_lrs):
            group["lr"] = base * DECAYS[self.name](progress)

    def state_dict(self) -> dict[str, Any]:
        return {"name": self.name, "base_lrs": self.base_lrs, "progress": self.progress}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.name, self.base_lrs, self.progress = state["name"], list(state["base_lrs"]), state["progress"]


SCHEDULERS: dict[str, Callable[[torch.optim.Optimizer], Any]] = {
    "poly": lambda opt: ProgressLR(opt, "poly"),  # nnU-Net's default
    "cosine": lambda opt: ProgressLR(opt, "cosine"),
    "cosine_restarts": lambda opt: torch.optim.lr_scheduler.CosineAnnealingWarmRestarts(opt, T_0=10, T_mult=2),
    "plateau": lambda opt: torch.optim.lr_scheduler.ReduceLROnPlateau(opt, mode="max", factor=0.5, patience=5),
    "none": lambda opt: None,
}
CHOICES = {
    "loss_name": LOSSES,
    "optimizer_name": OPTIMIZERS,
    "scheduler_name": SCHEDULERS,
    "device": ("auto", "cpu", "cuda"),
    "amp": ("auto", "on", "off"),
}


def make_loss(name: str) -> torch.nn.Module:
    """Build a loss of :data:`LOSSES` by name. Introduced in notebook 03."""
    return LOSSES[_choice("loss_name", name)].make()


def _choice(what: str, value: Any) -> Any:
    """``value`` if it is one of ``CHOICES[what]``, else a ValueError listing the choices."""
    if value not in CHOICES[what]:
        raise ValueError(f"unknown {what} {value!r}; choose one of {', '.join(CHOICES[what])}")
    return value


def step_scheduler(scheduler: Any, val_dice: float, progress: float) -> None:
    """Advance any schedule of :data:`SCHEDULERS` after an epoch: by progress, by validation Dice, or by one."""
    if isinstance(scheduler, ProgressLR):
        scheduler.step(progress)
    elif isinstance(scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau):
        scheduler.step(val_dice)
    elif scheduler is not None:
        scheduler.step()


# --------------------------------------------------------------------------------------------------
# The configuration
# --------------------------------------------------------------------------------------------------
@dataclass
class TrainConfig:
    """Every knob of a training run; the names and defaults are notebook 03's parameters cell.

    Introduced in notebook 03. Defaults are CI-sized (synthetic phantom, 2 CPU cores, a few minutes) and
    equal the notebook's (a test checks it); docs/full_size.md gives the full-size recipe for the real
    Task02_Heart on a GPU. ``pixdim``, ``roi_size``, ``batch_size`` and ``model_name`` accept ``"auto"``:
    :func:`resolve_auto` asks the planner (``heartseg_utils.plan``) for them before training starts.
    """

    data_dir: str = ""  # "" = $HEARTSEG_DATA_DIR or data/ (synthetic phantom generated there once)
    run_dir: str = "runs/03_train"
    max_epochs: int = 40
    time_budget_min: float = 4.5  # 0 = no limit; else stop at the epoch boundary that would overrun
    seed: int = 0
    device: str = "auto"  # "auto" | "cpu" | "cuda"
    amp: str = "auto"  # "auto" (bf16/fp16 on CUDA; bf16 on a CPU where it measures faster) | "on" | "off"
    model_name: str = "auto"  # a key of models.MODELS, or "auto" (the planned UNet)
    model_kwargs: dict[str, Any] = field(default_factory=dict)
    loss_name: str = "dicece"
    optimizer_name: str = "adamw"
    scheduler_name: str = "poly"
    lr: float = 3e-3
    weight_decay: float = 1e-5
    roi_size: Any = "auto"  # 3 sides, or "auto" (planned: CPU time budget or GPU memory)
    batch_size: Any = "auto"  # per process (the effective batch is batch_size x processes), or "auto"
    num_samples: int = 2  # patches drawn per volume per epoch
    pixdim: Any = "auto"  # (x, y, z) in mm, or "auto" (planned from the median spacing and the budget)
    elastic: bool = False
    val_fraction: float = 0.2
    n_folds: int = 0  # 0 = the val_fraction split; k >= 2 = validate on fold `fold` of data.holdout_then_kfold
    fold: int = 0
    holdout_fraction: float = 0.0  # cases set aside before splitting (split.json "holdout"), e.g. for an ensemble
    patience: int = 15  # early stopping: epochs without a better validation Dice (late in decaying schedules)
    sw_batch_size: int = 4
    sw_overlap: float = 0.25
    num_workers: int = 0
    resume: bool = False
    progress: bool = True

    def __post_init__(self) -> None:
        for name in ("roi_size", "pixdim", "model_kwargs"):  # papermill's -p passes "[96, 96, 96]" as text
            value = getattr(self, name)
            if isinstance(value, str) and value.strip()[:1] in "[{" and value.strip():
                setattr(self, name, json.loads(value))
        if self.roi_size != "auto":
            self.roi_size = tuple(int(r) for r in self.roi_size)
        if isinstance(self.batch_size, str) and self.batch_size.strip().isdigit():  # "4" from a command line
            self.batch_size = int(self.batch_size)
        if isinstance(self.pixdim, list):
            self.pixdim = tuple(float(p) for p in self.pixdim)
        for name in CHOICES:
            _choice(name, getattr(self, name))
        if self.max_epochs < 1 or (self.batch_size != "auto" and self.batch_size < 1) or self.lr <= 0:
            raise ValueError("max_epochs and batch_size must be >= 1 and lr > 0")
        if self.n_folds == 1 or self.n_folds < 0 or not 0 <= self.fold < max(self.n_folds, 1):
            raise ValueError(
                f"n_folds {self.n_folds} / fold {self.fold}: use n_folds 0 (val_fraction split) or >= 2, "
                "and 0 <= fold < n_folds"
            )
        if not 0.0 <= self.holdout_fraction < 1.0:
            raise ValueError(f"holdout_fraction must be in [0, 1), got {self.holdout_fraction}")
        check_roi(self)

    @property
    def out_channels(self) -> int:
        """The loss decides: 1 logit for sigmoid + BCE, else 2 (softmax over background/atrium)."""
        return LOSSES[self.loss_name].out_channels


def check_roi(cfg: TrainConfig) -> None:
    """Reject an unknown model name, and a ``roi_size`` its network cannot take; "auto" values wait for the plan."""
    from heartseg_utils.models import required_divisor

    if cfg.model_name == "auto":
        return
    div = required_divisor(cfg.model_name, cfg.model_kwargs)  # also rejects unknown model names
    if cfg.roi_size != "auto" and (len(cfg.roi_size) != 3 or any(r <= 0 or r % d for r, d in zip(cfg.roi_size, div))):
        raise ValueError(f"roi_size {cfg.roi_size} must be 3 positive sides divisible by {div} for {cfg.model_name!r}")


def config_dict(cfg: TrainConfig) -> dict[str, Any]:
    """The JSON form of a config (``config.json``): tuples become lists; ``out_channels`` is added."""
    d = dataclasses.asdict(cfg)
    d["out_channels"] = cfg.out_channels
    for name in ("roi_size", "pixdim"):
        if isinstance(d[name], tuple):
            d[name] = list(d[name])
    return d


def model_from_config(config: dict[str, Any]) -> torch.nn.Module:
    """Rebuild the network described by a run's ``config.json``. Introduced in notebook 04."""
    from heartseg_utils.models import get_model

    out = LOSSES[config["loss_name"]].out_channels
    return get_model(config["model_name"], out_channels=out, **config.get("model_kwargs", {}))


def transforms_from_config(config: dict[str, Any], stage: str, device: torch.device | None = None):
    """Rebuild a run's transforms from ``config.json`` (values resolved). Introduced in notebook 04.

    The pad divisor comes from the model registry (``models.required_divisor``); ``device`` is the CUDA fast
    path of :func:`heartseg_utils.transforms.get_transforms` (None on the CPU).
    """
    from heartseg_utils.models import required_divisor
    from heartseg_utils.transforms import get_transforms

    divisor = required_divisor(config["model_name"], config.get("model_kwargs"))
    return get_transforms(
        stage,
        pixdim=tuple(config["pixdim"]),
        roi_size=tuple(config["roi_size"]),
        num_samples=config["num_samples"],
        elastic=config["elastic"],
        divisor=divisor,
        device=device,
    )


# --------------------------------------------------------------------------------------------------
# Device, mixed precision, seeding
# --------------------------------------------------------------------------------------------------
def resolve_device(device: str = "auto") -> torch.device:
    """Map "auto" to CUDA when available, else CPU; asking for "cuda" without one is an error."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cuda" and not torch.cuda.is_available():
        raise ValueError("device='cuda' but no CUDA GPU is visible; use device='auto' or 'cpu'")
    return torch.device(device)


NO_BF16_ENV = "HEARTSEG_NO_BF16"  # set to 1: behave as a CPU without native bf16 (tests, CI, "as a laptop would")


def cpu_bf16_flags() -> str:
    """The CPU's native bf16 instruction flags from /proc/cpuinfo (``avx512_bf16``, ``amx_bf16``); "" if none.

    ``HEARTSEG_NO_BF16=1`` in the environment makes it answer "" on any CPU, so the whole series and the tests run
    the fp32 branch as most laptops do (``.ci/run`` runs the precision tests both ways).
    """
    if os.environ.get(NO_BF16_ENV, "").strip() not in ("", "0"):
        return ""
    try:
        words = set(Path("/proc/cpuinfo").read_text().split())
    except OSError:  # not Linux
        return ""
    return " ".join(f for f in ("avx512_bf16", "amx_bf16") if f in words)


_PROBED: dict[tuple, tuple[float, float]] = {}  # probe results of this process, keyed by network and input shape


def _probe_block(channels: int = 16) -> torch.nn.Module:
    """A small UNet-like block (conv, batch norm, PReLU, strided and transposed conv): the probe's default network."""
    nn = torch.nn
    return nn.Sequential(
        nn.Conv3d(1, channels, 3, padding=1), nn.BatchNorm3d(channels), nn.PReLU(),
        nn.Conv3d(channels, channels, 3, stride=2, padding=1), nn.BatchNorm3d(channels), nn.PReLU(),
        nn.ConvTranspose3d(channels, channels, 3, stride=2, padding=1, output_padding=1), nn.Conv3d(channels, 2, 1),
    )  # fmt: skip


def probe_cpu_bf16(
    model: torch.nn.Module | None = None,
    shape: Sequence[int] = (2, 1, 32, 32, 32),
    *,
    train_step: bool = True,
    repeats: int = 2,
) -> tuple[float, float]:
    """Best seconds of one step of ``model`` on a random ``shape`` input, in fp32 and in bf16 autocast.

    Introduced in notebook 03. Training asks with its own network and batch shape (forward + backward), inference
    with its network and sliding-window batch (forward only): a lone convolution or a toy block can rank the two
    precisions differently from the real workload. The model is copied, so its weights and batch-norm statistics
    stay untouched; fp32 and bf16 alternate, so a load change hits both; round 0 only warms up. The random state is
    left alone, and each (network, shape, step) is measured once per process.
    """
    key = (type(model).__name__, sum(p.numel() for p in model.parameters()) if model else 0, tuple(shape), train_step)
    if key in _PROBED:
        return _PROBED[key]
    best = {None: math.inf, torch.bfloat16: math.inf}
    with torch.random.fork_rng(devices=[]):
        net = (_probe_block() if model is None else copy.deepcopy(model)).cpu().train(train_step)
        x = torch.randn(*shape)
        for i in range(repeats + 1):
            for dtype in best:
                t0 = time.perf_counter()
                with torch.set_grad_enabled(train_step), autocast(torch.device("cpu"), dtype):
                    out = net(x)
                if train_step:
                    out.float().mean().backward()
                if i:
                    best[dtype] = min(best[dtype], time.perf_counter() - t0)
    _PROBED[key] = best[None], best[torch.bfloat16]
    return _PROBED[key]


def amp_decision(
    amp: str,
    device: torch.device,
    model: torch.nn.Module | None = None,
    shape: Sequence[int] | None = None,
    *,
    train_step: bool = True,
) -> tuple[torch.dtype | None, str]:
    """Decide the autocast dtype (None = fp32) and say why. Introduced in notebook 03.

    CUDA: bf16, or fp16 (with a gradient scaler) where the GPU has no bf16. CPU: ``"on"`` = bf16;
    ``"auto"`` = bf16 only where the CPU has native bf16 instructions and :func:`probe_cpu_bf16` measures
    ``model`` on ``shape`` faster in bf16 (without them bf16 3D convolutions run many times slower). The probe is
    timed, so two processes can decide differently: set ``amp`` explicitly where runs must match bit for bit.

    Args:
        amp: ``"auto"``, ``"on"`` or ``"off"``.
        device: where the run computes.
        model, shape: the network and input batch shape to probe (default: a small block on 2 x 32^3).
        train_step: probe forward + backward (training) or forward only (inference).

    Returns:
        ``(dtype or None, reason)``; both are recorded in metrics.json (``amp``, ``amp_reason``).
    """
    if _choice("amp", amp) == "off":
        return None, "amp='off': fp32"
    if device.type == "cuda":
        if torch.cuda.is_bf16_supported():
            return torch.bfloat16, f"amp={amp!r} on CUDA: bf16 autocast"
        return torch.float16, f"amp={amp!r} on CUDA without bf16: fp16 autocast with a gradient scaler"
    if amp == "on":
        return torch.bfloat16, "amp='on' on the CPU: bf16 autocast"
    flags = cpu_bf16_flags()
    if not flags:
        return None, "amp='auto' on a CPU without native bf16 (no avx512_bf16/amx_bf16): fp32"
    shape = tuple(shape or (2, 1, 32, 32, 32))
    fp32_s, bf16_s = probe_cpu_bf16(model, shape, train_step=train_step)
    what = f"{'training step' if train_step else 'forward pass'} on {shape}"
    verdict = f"probe {what}: bf16 {bf16_s * 1e3:.0f} ms vs fp32 {fp32_s * 1e3:.0f} ms"
    if bf16_s < fp32_s:
        return torch.bfloat16, f"amp='auto' on a CPU with {flags}: {verdict}: bf16 autocast"
    return None, f"amp='auto' on a CPU with {flags}: {verdict}: fp32"


def decide_amp(cfg: TrainConfig, device: torch.device) -> tuple[torch.dtype | None, str]:
    """:func:`amp_decision` for a planned config: probes its own network on one batch of its patches."""
    patches = (cfg.batch_size * cfg.num_samples, 1, *cfg.roi_size)
    model = model_from_config(config_dict(cfg)) if cfg.amp == "auto" and device.type == "cpu" else None
    return amp_decision(cfg.amp, device, model, patches)


def resolve_amp(amp: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype of :func:`amp_decision` alone (None = fp32). Introduced in notebook 03."""
    return amp_decision(amp, device)[0]


def autocast(device: torch.device, dtype: torch.dtype | None):
    """``torch.autocast`` to ``dtype`` on ``device``'s type, or a disabled one for None (fp32). Notebook 03."""
    return torch.autocast(device.type, dtype=dtype or torch.float32, enabled=dtype is not None)


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


# --------------------------------------------------------------------------------------------------
# One epoch, validation, checkpoints
# --------------------------------------------------------------------------------------------------
def logits_to_mask(logits: torch.Tensor) -> torch.Tensor:
    """Turn network output (N, C, ...) into a (N, 1, ...) foreground mask: argmax, or logit > 0 for C = 1."""
    if logits.shape[1] == 1:
        return (logits > 0).to(torch.uint8)
    return logits.argmax(dim=1, keepdim=True).to(torch.uint8)


def logits_to_probability(logits: torch.Tensor) -> torch.Tensor:
    """Network output (N, C, ...) as a (N, 1, ...) foreground probability: softmax channel 1, or sigmoid for C = 1.

    Introduced in notebook 04 (inference averages probabilities for TTA; notebook 07's export check uses it too).
    """
    return torch.sigmoid(logits) if logits.shape[1] == 1 else torch.softmax(logits, dim=1)[:, 1:2]


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
            raise FloatingPointError(f"loss became {loss.item()} at step {n}; lower lr (now {lr:g})")
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
        total, n = total + loss.item(), n + 1
    return total / max(n, 1)


def validation_masks(
    model: torch.nn.Module, batches: Any, cfg: TrainConfig, device: torch.device, amp_dtype: torch.dtype | None
) -> Any:
    """Yield ``(mask, label)`` per whole validation volume: sliding-window inference, argmax. Notebook 03."""
    from monai.inferers import sliding_window_inference

    model.eval()
    for batch in batches:
        image, label = batch["image"].to(device), batch["label"].to(device)
        with torch.no_grad(), autocast(device, amp_dtype):
            logits = sliding_window_inference(image, cfg.roi_size, cfg.sw_batch_size, model, overlap=cfg.sw_overlap)
        yield logits_to_mask(logits.float()), (label > 0).to(torch.uint8)


def dice_score(mask: torch.Tensor, label: torch.Tensor) -> float:
    """Foreground Dice of one (1, 1, ...) mask; NaN where mask and label are both empty. Notebook 03."""
    from monai.metrics import compute_dice  # the function: no gathering across processes (DiceMetric does that)

    return float(compute_dice(mask.float(), label.float(), include_background=True))


def validate(
    model: torch.nn.Module,
    loader: Any,
    cfg: TrainConfig,
    device: torch.device,
    amp_dtype: torch.dtype | None,
    ddp: distributed.Distributed | None = None,
) -> float:
    """Mean foreground Dice over whole validation volumes with sliding-window inference. Notebook 03.

    Under torchrun (``ddp``) each process validates its share of the cases (possibly none); the Dice sums and
    counts are added over all processes, so every process returns the same mean.
    """
    scores = torch.tensor([dice_score(*pair) for pair in validation_masks(model, loader, cfg, device, amp_dtype)])
    total, count = float(scores.nansum()), float((~scores.isnan()).sum())
    if ddp is not None:
        total, count = distributed.reduce([total, count], ddp)  # DDP
    return total / count if count else 0.0


def save_best(path: Path, net: torch.nn.Module, epoch: int, val_dice: float) -> None:
    """Write ``best_model.pt`` atomically: the weights of the best validation Dice so far. Notebook 03."""
    best = {"model": net.state_dict(), "epoch": epoch, "val_dice": val_dice}
    write_atomic(path, lambda tmp: torch.save(best, tmp))


def save_checkpoint(path: Path, run: Run, state: dict[str, Any], history: list[dict[str, Any]]) -> None:
    """Write ``last.pt`` atomically: everything :func:`load_checkpoint` needs to continue. Notebook 03."""
    ckpt = {
        "model": run.net.state_dict(),
        "optimizer": run.optimizer.state_dict(),
        "scaler": run.scaler.state_dict(),
        "scheduler": run.scheduler.state_dict() if run.scheduler is not None else {},
        "epoch": len(history),
        "state": dict(state),
        "history": list(history),
    }
    write_atomic(path, lambda tmp: torch.save(ckpt, tmp))


def load_checkpoint(path: Path, run: Run) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Restore what :func:`save_checkpoint` wrote into ``run`` (``weights_only=True``). Introduced in notebook 03.

    Returns:
        ``(state, history)``: the bookkeeping of :func:`new_state` and the epochs so far (the checkpoint, not
        history.csv, is the source of truth).
    """
    ckpt = torch.load(path, map_location=run.ddp.device, weights_only=True)
    run.net.load_state_dict(ckpt["model"])
    run.optimizer.load_state_dict(ckpt["optimizer"])
    run.scaler.load_state_dict(ckpt["scaler"])
    if run.scheduler is not None:
        run.scheduler.load_state_dict(ckpt["scheduler"])
    return {**new_state(), **ckpt["state"]}, list(ckpt["history"])


def new_state() -> dict[str, Any]:
    """The bookkeeping of a fresh run: best Dice so far, early-stopping count, seconds, planned epochs."""
    return {"best_val_dice": -1.0, "best_epoch": 0, "bad_epochs": 0, "train_seconds": 0.0, "planned_epochs": 0}


def write_history(rows: list[dict[str, Any]], path: Path) -> None:
    """Write ``history.csv`` (one row per epoch, :data:`HISTORY_FIELDS`) atomically. Introduced in notebook 03."""

    def write(tmp: Path) -> None:
        with tmp.open("w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=HISTORY_FIELDS)
            writer.writeheader()
            writer.writerows(rows)

    write_atomic(path, write)


# --------------------------------------------------------------------------------------------------
# Data, the planner's hook, the pieces of a run
# --------------------------------------------------------------------------------------------------
def _planner() -> Any:
    """The ``heartseg_utils.plan`` module, or None where this installation has no planner."""
    if importlib.util.find_spec("heartseg_utils.plan") is None:
        return None
    from heartseg_utils import plan

    return plan


def resolve_auto(
    cfg: TrainConfig, items: list[dict], device: torch.device, run_dir: Path
) -> tuple[TrainConfig, dict[str, Any] | None]:
    """Replace the ``"auto"`` values of :data:`PLANNED_FIELDS` by the planner's choices. Notebook 03.

    The planner hook: ``heartseg_utils.plan.resolve_auto(config_dict, items, device)`` returns the config dict
    with concrete values and a JSON-able plan (written to ``run_dir/plan.json``). A resumed run keeps the
    values in its ``config.json``. Without the planner only ``pixdim="auto"`` works (the median spacing).

    Returns:
        ``(resolved config, plan dict or None)``.
    """
    auto = [name for name in PLANNED_FIELDS if getattr(cfg, name) == "auto"]
    if not auto:
        return cfg, None
    saved = run_dir / "config.json"
    if cfg.resume and saved.is_file():
        old = json.loads(saved.read_text())
        plan_path = run_dir / "plan.json"
        plan_dict = json.loads(plan_path.read_text()) if plan_path.is_file() else None
        return dataclasses.replace(cfg, **{k: old[k] for k in (*auto, "model_kwargs")}), plan_dict
    plan = _planner()
    if plan is None:
        if auto == ["pixdim"]:
            from heartseg_utils.transforms import resolve_pixdim

            return dataclasses.replace(cfg, pixdim=resolve_pixdim("auto", items)), None
        raise ValueError(
            f"{', '.join(auto)} = 'auto' needs the planner (heartseg_utils.plan): planner not "
            "available in this installation; give explicit values"
        )
    resolved, plan_dict = plan.resolve_auto(config_dict(cfg), items, device)
    names = {f.name for f in dataclasses.fields(TrainConfig)}
    return TrainConfig(**{k: v for k, v in resolved.items() if k in names}), plan_dict


class Data(NamedTuple):
    """What :func:`prepare_data` hands to training: the resolved config, the cases and the cached datasets."""

    cfg: TrainConfig
    dataset_dir: Path
    split: dict[str, Any]  # split.json's content
    plan: dict[str, Any] | None
    train_ds: Any
    val_ds: Any


def prepare_data(cfg: TrainConfig, run_dir: Path, device: torch.device) -> Data:
    """Validate the dataset, split it (reusing split.json on resume), plan "auto" values, cache the datasets.

    Introduced in notebook 03. On CUDA the cached volumes live on the GPU and the random transforms run there
    (MONAI's fast-training pattern, ``get_transforms(device=...)``); on the CPU nothing moves.
    """
    from monai.data import CacheDataset

    from heartseg_utils import data
    from heartseg_utils.transforms import resolve_pixdim

    dataset_dir = data.get_dataset_dir(cfg.data_dir)
    items = data.validate_dataset(dataset_dir)
    if cfg.resume and (run_dir / "split.json").is_file():
        cases = {k: data.split_cases(run_dir, k, items) for k in ("train", "validation")}
        cases["holdout"] = data.split_cases(run_dir, "holdout", items) if "holdout" in data.read_split(run_dir) else []
    else:
        cases = data.make_split(
            items,
            seed=cfg.seed,
            val_fraction=cfg.val_fraction,
            n_folds=cfg.n_folds,
            fold=cfg.fold,
            holdout_fraction=cfg.holdout_fraction,
        )
    split = {"dataset_dir": str(dataset_dir), "seed": cfg.seed, **{k: [i["case"] for i in v] for k, v in cases.items()}}
    cfg, plan = resolve_auto(cfg, items, device, run_dir)  # the planner plugs in here
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
    return Data(cfg, dataset_dir, split, plan, *datasets)


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
    """
    budget_s = cfg.time_budget_min * 60
    if not budget_s or not session_epochs:
        return cfg.max_epochs
    fits = math.floor(max(budget_s - session_s, 0.0) / (session_s / session_epochs))
    return max(epochs_done, min(cfg.max_epochs, epochs_done + fits))


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
def fit(run: Run, state: dict[str, Any], history: list[dict[str, Any]]) -> str:
    """The epoch loop: train, validate, schedule, checkpoint, stop. Introduced in notebook 03.

    Returns:
        Why it stopped: ``"max_epochs"``, ``"time_budget"`` or ``"early_stopping"``.
    """
    from monai.data import ThreadDataLoader
    from tqdm import tqdm  # plain text: an executed notebook keeps the final line, not a frozen widget

    cfg, device, master = run.cfg, run.ddp.device, run.ddp.master
    sampler = distributed.train_sampler(run.train_ds, run.ddp, cfg.seed)  # DDP: a disjoint share per process
    val_loader = ThreadDataLoader(distributed.shard(run.val_ds, run.ddp), batch_size=1, num_workers=0)  # DDP
    first = len(history) + 1
    epochs = range(first, cfg.max_epochs + 1)
    show = cfg.progress and master
    bar = tqdm(epochs, desc="epochs", initial=first - 1, total=cfg.max_epochs, disable=not show, file=sys.stdout)
    session_s, last_s = 0.0, 0.0  # the time budget applies to this call: resume=True gets a fresh one
    for epoch in bar:
        if cfg.time_budget_min and session_s + last_s > cfg.time_budget_min * 60:
            return "time_budget"
        t0, lr = time.perf_counter(), run.optimizer.param_groups[0]["lr"]
        loader = _epoch_loader(run, epoch, sampler)
        loss = train_one_epoch(run.model, loader, run.loss_fn, run.optimizer, run.scaler, device, run.amp_dtype)
        loss = distributed.mean_over_processes(loss, run.ddp)  # DDP
        distributed.sync_buffers(run.net, run.ddp)  # DDP: keep rank 0's batch-norm statistics
        dice = validate(run.net, val_loader, cfg, device, run.amp_dtype, run.ddp)
        last_s = distributed.reduce([time.perf_counter() - t0], run.ddp, "max")[0]  # DDP: identical decisions
        session_s += last_s
        planned = planned_epochs(cfg, epoch, session_s, epoch - first + 1)
        step_scheduler(run.scheduler, dice, progress=epoch / planned)
        history.append(
            dict(zip(HISTORY_FIELDS, (epoch, round(loss, 6), round(dice, 6), lr, planned, round(last_s, 3))))
        )
        improved = track_best(state, cfg, epoch, dice, planned, last_s)
        if master:
            if improved:
                save_best(run.run_dir / "best_model.pt", run.net, epoch, dice)
            save_checkpoint(run.run_dir / "last.pt", run, state, history)
            write_history(history, run.run_dir / "history.csv")
        bar.set_postfix(loss=f"{loss:.3f}", dice=f"{dice:.3f}", best=f"{state['best_val_dice']:.3f}")
        if state["bad_epochs"] >= cfg.patience:
            return "early_stopping"
        if epoch >= planned < cfg.max_epochs:  # the budget fits no further epoch: the schedule has just ended
            return "time_budget"
    return "max_epochs"


def track_best(state: dict[str, Any], cfg: TrainConfig, epoch: int, dice: float, planned: int, seconds: float) -> bool:
    """Update the run's bookkeeping after an epoch; True when validation Dice improved. Introduced in notebook 03.

    A better Dice resets the early-stopping count; a worse one adds to it once :func:`patience_counts` allows.
    """
    state["train_seconds"] += seconds
    state["planned_epochs"] = planned
    if dice > state["best_val_dice"]:
        state.update(best_val_dice=dice, best_epoch=epoch, bad_epochs=0)
        return True
    if patience_counts(cfg, epoch / planned):
        state["bad_epochs"] += 1
    return False


def decide_postprocessing(run: Run) -> dict[str, Any]:
    """Keep only the largest connected component where it helps: nnU-Net's rule, decided on the validation cases.

    Introduced in notebook 03. The best checkpoint predicts every whole validation volume (as :func:`validate`
    does); the mean foreground Dice of the raw masks is compared with that of their largest 26-connected
    component. Inference (notebooks 04 and 07, ``python -m heartseg_utils.predict``) follows the decision
    unless told otherwise. Written to ``run_dir/postprocessing.json``.
    """
    from heartseg_utils.inference import largest_component

    net = copy.deepcopy(run.net)
    state = torch.load(run.run_dir / "best_model.pt", map_location=run.ddp.device, weights_only=True)
    net.load_state_dict(state["model"])
    scores = []
    cases = ({key: item[key][None] for key in ("image", "label")} for item in run.val_ds)  # batches of one
    for mask, label in validation_masks(net, cases, run.cfg, run.ddp.device, run.amp_dtype):
        largest = torch.as_tensor(largest_component(mask[0, 0].cpu().numpy()))[None, None].to(mask.device)
        scores.append([dice_score(mask, label), dice_score(largest, label)])
    without, largest = torch.tensor(scores, dtype=torch.float64).nanmean(dim=0).tolist()
    return {
        "keep_largest": largest > without,
        "val_dice_raw": round(without, 6),
        "val_dice_largest_component": round(largest, 6),
        "cases": len(run.val_ds),
        "rule": "keep only the largest connected component if that raises the mean validation Dice",
    }


def train(config: TrainConfig | dict[str, Any]) -> dict[str, Any]:
    """Train a segmentation network and write ``run_dir`` as docs/contract.md says. Introduced in notebook 03.

    Args:
        config: a :class:`TrainConfig` or a dict of its fields (e.g. notebook 03's parameters).

    Returns:
        The contents of ``metrics.json`` (:func:`run_metrics`); under torchrun every process returns the
        same dict and only rank 0 writes.
    """
    from monai.data import set_track_meta

    cfg = config if isinstance(config, TrainConfig) else TrainConfig(**config)
    run_dir = open_run_dir(cfg)
    ddp = distributed.setup(resolve_device(cfg.device))  # DDP: rank 0 of 1 without torchrun
    try:
        data = prepare_data(cfg, run_dir, ddp.device)
        timed = decide_amp(data.cfg, ddp.device) if ddp.master or ddp.world == 1 else None  # DDP: rank 0 probes
        amp_dtype, amp_reason = distributed.broadcast(timed, ddp)  # DDP: every process takes rank 0's answer
        set_track_meta(False)  # plain tensors from here on: faster, and metadata is not needed for training
        run = build_run(data, run_dir, ddp, amp_dtype)
        state, history = load_checkpoint(run_dir / "last.pt", run) if cfg.resume else (new_state(), [])
        if ddp.master:
            write_run_files(run, data, history, amp_reason)
        stopped = fit(run, state, history)
        post = distributed.broadcast(decide_postprocessing(run) if ddp.master else None, ddp)  # DDP: rank 0 decides
        metrics = {
            **run_metrics(run, state, history, stopped, amp_reason),
            "keep_largest": (post or {}).get("keep_largest"),
        }
        if ddp.master:
            write_json(post, run_dir / "postprocessing.json")
            write_json(metrics, run_dir / "metrics.json")
    finally:
        set_track_meta(True)
        distributed.teardown(ddp)  # DDP
    return metrics


def open_run_dir(cfg: TrainConfig) -> Path:
    """Create ``run_dir``; with ``resume=True`` it must hold a ``last.pt``."""
    run_dir = Path(cfg.run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    if cfg.resume and not (run_dir / "last.pt").exists():
        raise FileNotFoundError(f"resume=True but {run_dir / 'last.pt'} does not exist; run once with resume=False")
    return run_dir


def run_metrics(run: Run, state: dict, history: list, stopped: str, amp_reason: str) -> dict[str, Any]:
    """The content of ``metrics.json`` (docs/contract.md)."""
    return {
        "best_val_dice": round(state["best_val_dice"], 6),
        "best_epoch": state["best_epoch"],
        "epochs_run": len(history),
        "planned_epochs": state["planned_epochs"] or run.cfg.max_epochs,
        "train_seconds": round(state["train_seconds"], 2),
        "device": str(run.ddp.device),
        "amp": str(run.amp_dtype).replace("torch.", "") if run.amp_dtype else "off",
        "amp_reason": amp_reason,
        "stopped_because": stopped,
        "world_size": run.ddp.world,
    }


def write_run_files(run: Run, data: Data, history: list[dict[str, Any]], amp_reason: str) -> None:
    """Write config.json, split.json, plan.json (planned runs) and, on resume, history.csv; print a summary."""
    from heartseg_utils.models import count_parameters

    write_json({**config_dict(run.cfg), "dataset_dir": str(data.dataset_dir)}, run.run_dir / "config.json")
    write_json(data.split, run.run_dir / "split.json")
    if data.plan is not None:
        write_json(data.plan, run.run_dir / "plan.json")
    if history:
        write_history(history, run.run_dir / "history.csv")
    print(
        f"{run.cfg.model_name}: {count_parameters(run.net):,} parameters | device {run.ddp.device} x "
        f"{run.ddp.world} process(es) | {amp_reason} | {len(run.train_ds)} train / {len(run.val_ds)} val cases | "
        f"pixdim {run.cfg.pixdim} | roi {run.cfg.roi_size} | batch {run.cfg.batch_size}"
    )


# --------------------------------------------------------------------------------------------------
# Command line
# --------------------------------------------------------------------------------------------------
def _flag_parser(default: Any):
    """argparse ``type=`` for a field: by the type of its default; JSON for lists, tuples and dicts."""

    def boolean(text: str) -> bool:
        if text.lower() not in ("true", "false", "1", "0", "yes", "no"):
            raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")
        return text.lower() in ("true", "1", "yes")

    def integer(text: str) -> int | str:  # batch_size also takes "auto"
        return text if text == "auto" else int(text)

    def literal(text: str) -> Any:  # "[96, 96, 96]", '{"channels": [8, 16]}'; anything else ("auto") stays text
        try:
            return json.loads(text)
        except json.JSONDecodeError:
            return text

    return {bool: boolean, int: integer, float: float, str: str}.get(type(default), literal)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Command-line entry: ``python -m heartseg_utils.train --run_dir runs/x --max_epochs 50`` (flags = fields).

    Introduced in notebook 03. Defaults are notebook 03's parameters; ``torchrun --nproc_per_node=N -m
    heartseg_utils.train ...`` runs the same code in N processes (docs/distributed.md).
    """
    parser = argparse.ArgumentParser(description="Train a heartseg model (same code path as notebook 03).")
    for f in dataclasses.fields(TrainConfig):
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()  # type: ignore[misc]
        parser.add_argument(
            f"--{f.name}", default=default, type=_flag_parser(default), help=f"default: {json.dumps(default)}"
        )
    return train(vars(parser.parse_args(argv)))


if __name__ == "__main__":
    result = main()
    if distributed.is_master() and os.environ.get("RANK", "0") == "0":  # under torchrun every process returns it
        print(json.dumps(result, indent=2))
