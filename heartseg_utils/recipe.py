"""The training recipe's name families: losses, optimisers and learning-rate schedules, one registry each.

Introduced in notebook 03. The allowed names of ``loss_name``, ``optimizer_name`` and ``scheduler_name`` are the
keys of :data:`LOSSES`, :data:`OPTIMIZERS` and :data:`SCHEDULERS`: adding one is a one-line change here.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, NamedTuple

import torch


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


def make_loss(name: str) -> torch.nn.Module:
    """Build a loss of :data:`LOSSES` by name. Introduced in notebook 03."""
    if name not in LOSSES:
        raise ValueError(f"unknown loss_name {name!r}; choose one of {', '.join(LOSSES)}")
    return LOSSES[name].make()


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


def step_scheduler(scheduler: Any, val_dice: float, progress: float) -> None:
    """Advance any schedule of :data:`SCHEDULERS` after an epoch: by progress, by validation Dice, or by one."""
    if isinstance(scheduler, ProgressLR):
        scheduler.step(progress)
    elif isinstance(scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau):
        scheduler.step(val_dice)
    elif scheduler is not None:
        scheduler.step()
