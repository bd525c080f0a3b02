"""A training run's configuration: :class:`TrainConfig`, its parsing and checks, and what is rebuilt from it.

Introduced in notebook 03. The fields are notebook 03's parameters and the flags of
``python -m heartseg_utils.train`` (a test checks all three agree). ``config.json`` in a run folder is
:func:`config_dict` of the resolved config; :func:`model_from_config` and :func:`transforms_from_config` rebuild
the network and the transforms from it, for training, inference and export alike.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
from dataclasses import dataclass, field
from typing import Any

import torch

from heartseg_utils.models import get_model, required_divisor
from heartseg_utils.precision import AMP_CHOICES, DEVICES
from heartseg_utils.recipe import LOSSES, OPTIMIZERS, SCHEDULERS
from heartseg_utils.transforms import get_transforms

PLANNED_FIELDS = ("pixdim", "roi_size", "batch_size", "num_samples", "model_name")  # "auto" = chosen by the plan
CHOICES: dict[str, Any] = {
    "loss_name": LOSSES,
    "optimizer_name": OPTIMIZERS,
    "scheduler_name": SCHEDULERS,
    "device": DEVICES,
    "amp": AMP_CHOICES,
}
_LITERAL_FIELDS = ("roi_size", "pixdim", "model_kwargs")  # papermill's -p and the command line pass them as text


@dataclass
class TrainConfig:
    """Every knob of a training run; the names and defaults are notebook 03's parameters cell.

    Introduced in notebook 03. Defaults are CI-sized (synthetic phantom, 2 CPU cores, a few minutes) and
    equal the notebook's (a test checks it); docs/full_size.md gives the full-size recipe for the real
    Task02_Heart on a GPU. The fields of :data:`PLANNED_FIELDS` accept ``"auto"``: ``plan.resolve_auto``
    replaces them by the planner's choices before training starts.
    """

    data_dir: str = ""  # "" = $HEARTSEG_DATA_DIR or data/ (synthetic phantom generated there once)
    run_dir: str = "runs/03_train"
    max_epochs: int = 0  # 0 = no epoch limit: the time budget ends the run; else at most this many epochs
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
    num_samples: Any = 2  # patches drawn per volume per epoch, or "auto" (planned)
    pixdim: Any = "auto"  # (x, y, z) in mm, or "auto" (planned from the median spacing and the budget)
    elastic: bool = False
    mr_artefacts: bool = False  # add MR artefacts (bias field, Gibbs ringing, k-space spike, gamma) to training
    val_fraction: float = 0.2
    n_folds: int = 0  # 0 = the val_fraction split; k >= 2 = validate on fold `fold` of splits.make_split
    fold: int = 0
    holdout_fraction: float = 0.0  # cases set aside before splitting (split.json "holdout"), e.g. for an ensemble
    patience: int = 15  # early stopping: epochs without a better validation Dice (late in decaying schedules)
    sw_batch_size: int = 4
    sw_overlap: float = 0.25
    num_workers: int = 0
    resume: bool = False  # continue the run in run_dir from its last.pt (same values; max_epochs may grow)
    overwrite: bool = False  # replace a finished run in run_dir (without it, or resume, that is refused)
    progress: bool = True
    log_dir: str = ""  # TensorBoard curves: "" = off; else a folder (relative = to the working folder)

    def __post_init__(self) -> None:
        for name in _LITERAL_FIELDS:
            setattr(self, name, parse_literal(getattr(self, name)))
        if self.roi_size != "auto":
            self.roi_size = tuple(int(r) for r in self.roi_size)
        for name in ("batch_size", "num_samples"):  # "4" from a command line
            value = getattr(self, name)
            if isinstance(value, str) and value.strip().isdigit():
                setattr(self, name, int(value))
        if isinstance(self.pixdim, list):
            self.pixdim = tuple(float(p) for p in self.pixdim)
        for name in CHOICES:
            choice(name, getattr(self, name))
        check_numbers(self)
        check_roi(self)

    @property
    def out_channels(self) -> int:
        """The loss decides: 1 logit for sigmoid + BCE, else 2 (softmax over background/atrium)."""
        return LOSSES[self.loss_name].out_channels


def parse_literal(value: Any) -> Any:
    """JSON text such as ``"[96, 96, 96]"`` or ``'{"channels": [8, 16]}'`` as a value; anything else unchanged."""
    if isinstance(value, str) and value.strip()[:1] in ("[", "{"):
        return json.loads(value)
    return value


def choice(what: str, value: Any) -> Any:
    """``value`` if it is one of ``CHOICES[what]``, else a ValueError listing the choices."""
    if value not in CHOICES[what]:
        raise ValueError(f"unknown {what} {value!r}; choose one of {', '.join(CHOICES[what])}")
    return value


def check_numbers(cfg: TrainConfig) -> None:
    """Reject epochs, batch sizes, learning rates, folds and fractions that cannot train."""
    counts = [v for v in (cfg.batch_size, cfg.num_samples) if v != "auto"]
    if cfg.max_epochs < 0 or any(v < 1 for v in counts) or cfg.lr <= 0:
        raise ValueError("max_epochs must be >= 0 (0: no limit), batch_size and num_samples must be >= 1, lr > 0")
    if cfg.max_epochs == 0 and not cfg.time_budget_min:
        raise ValueError(
            "max_epochs 0 (no epoch limit) needs a time budget: set time_budget_min > 0 or max_epochs >= 1"
        )
    if cfg.n_folds == 1 or cfg.n_folds < 0 or not 0 <= cfg.fold < max(cfg.n_folds, 1):
        raise ValueError(
            f"n_folds {cfg.n_folds} / fold {cfg.fold}: use n_folds 0 (val_fraction split) or >= 2, "
            "and 0 <= fold < n_folds"
        )
    if not 0.0 <= cfg.holdout_fraction < 1.0:
        raise ValueError(f"holdout_fraction must be in [0, 1), got {cfg.holdout_fraction}")


def check_roi(cfg: TrainConfig) -> None:
    """Reject an unknown model name, and a ``roi_size`` its network cannot take; "auto" values wait for the plan."""
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


def from_dict(values: dict[str, Any]) -> TrainConfig:
    """A :class:`TrainConfig` from a dict that may hold more keys (``config.json`` adds ``out_channels``, ...)."""
    names = {f.name for f in dataclasses.fields(TrainConfig)}
    return TrainConfig(**{k: v for k, v in values.items() if k in names})


def model_from_config(config: dict[str, Any]) -> torch.nn.Module:
    """Rebuild the network described by a run's ``config.json`` (:func:`config_dict`). Introduced in notebook 04."""
    if "out_channels" not in config:
        raise KeyError("the config has no 'out_channels': pass config_dict(cfg) or a run's config.json")
    return get_model(config["model_name"], out_channels=config["out_channels"], **config.get("model_kwargs", {}))


def transforms_from_config(config: dict[str, Any], stage: str, device: torch.device | None = None):
    """Rebuild a run's transforms from ``config.json`` (values resolved). Introduced in notebook 04.

    The pad divisor comes from the model registry (``models.required_divisor``); ``device`` is the CUDA fast
    path of :func:`heartseg_utils.transforms.get_transforms` (None on the CPU).
    """
    return get_transforms(
        stage,
        pixdim=tuple(config["pixdim"]),
        roi_size=tuple(config["roi_size"]),
        num_samples=config["num_samples"],
        elastic=config["elastic"],
        mr_artefacts=config.get("mr_artefacts", False),  # runs from before the option trained without
        divisor=required_divisor(config["model_name"], config.get("model_kwargs")),
        device=device,
    )


def _flag_type(default: Any):
    """argparse ``type=`` for a field: by the type of its default; JSON for lists, tuples and dicts."""

    def boolean(text: str) -> bool:
        if text.lower() not in ("true", "false", "1", "0", "yes", "no"):
            raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")
        return text.lower() in ("true", "1", "yes")

    def integer(text: str) -> int | str:  # batch_size and num_samples also take "auto"
        return text if text == "auto" else int(text)

    def literal(text: str) -> Any:  # "[96, 96, 96]", '{"channels": [8, 16]}'; anything else ("auto") stays text
        try:
            return json.loads(text)
        except json.JSONDecodeError:
            return text

    return {bool: boolean, int: integer, float: float, str: str}.get(type(default), literal)


def argument_parser(description: str) -> argparse.ArgumentParser:
    """One ``--flag`` per :class:`TrainConfig` field, with its default and type (``python -m heartseg_utils.train``)."""
    parser = argparse.ArgumentParser(description=description)
    for f in dataclasses.fields(TrainConfig):
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()  # type: ignore[misc]
        parser.add_argument(
            f"--{f.name}", default=default, type=_flag_type(default), help=f"default: {json.dumps(default)}"
        )
    return parser
