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

LABEL_MODES = (
    "auto",
    "binary",
    "multiclass",
)  # "auto": binary for one foreground label in dataset.json, else multiclass
PLANNED_FIELDS = ("pixdim", "roi_size", "batch_size", "num_samples", "model_name")  # "auto" = chosen by the plan
CHOICES: dict[str, Any] = {
    "loss_name": LOSSES,
    "optimizer_name": OPTIMIZERS,
    "scheduler_name": SCHEDULERS,
    "device": DEVICES,
    "amp": AMP_CHOICES,
    "label_mode": LABEL_MODES,
}
QC_SHIFTS = ("inversion", "miss_heart", "bias_field")  # the failures quality control's threshold is fitted on
_LITERAL_FIELDS = (
    "roi_size",
    "pixdim",
    "model_kwargs",
    "label_values",
    "label_names",
    "qc_shifts",
)  # papermill's -p and the command line pass them as text


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
    label_mode: str = "auto"  # "auto" (binary for one foreground label in dataset.json) | "binary" | "multiclass"
    label_values: Any = "auto"  # multiclass: the dataset's label values in class order, 0 first; "auto" = all
    label_names: Any = "auto"  # one name per class (dataset.json's "labels"); "auto" = from dataset.json
    qc_shifts: Any = field(default_factory=lambda: list(QC_SHIFTS))  # shifted validation copies for QC; [] = none

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
        check_labels(self)
        if not isinstance(self.qc_shifts, (list, tuple)) or not all(isinstance(k, str) for k in self.qc_shifts):
            raise ValueError(
                f"qc_shifts must be a list of shift names (heartseg_utils.shifts.SHIFTS), got {self.qc_shifts!r}"
            )
        self.qc_shifts = list(self.qc_shifts)

    @property
    def out_channels(self) -> int:
        """Binary: the loss decides (1 logit for sigmoid + BCE, else 2); multiclass: one channel per class."""
        if self.label_mode == "multiclass" and isinstance(self.label_values, (list, tuple)):
            return len(self.label_values)
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


def check_labels(cfg: TrainConfig) -> None:
    """Reject a loss that cannot train several classes, and class values or names that do not fit together.

    Introduced in notebook 03. A loss of :data:`recipe.LOSSES` with one output channel (sigmoid, e.g. ``bce``) scores
    one foreground only: it is refused for ``label_mode="multiclass"`` (``"auto"`` is checked once resolved).
    """
    if cfg.label_mode == "multiclass" and LOSSES[cfg.loss_name].out_channels == 1:
        multi = [name for name, spec in LOSSES.items() if spec.out_channels > 1]
        raise ValueError(
            f"loss_name {cfg.loss_name!r} gives one sigmoid channel and cannot train label_mode 'multiclass': "
            f"choose one of {', '.join(multi)}, or label_mode 'binary' (label != 0 against background)"
        )
    values, names = cfg.label_values, cfg.label_names
    if values != "auto":
        ints = [int(v) for v in values] if isinstance(values, (list, tuple)) else []
        if len(ints) < 2 or ints[0] != 0 or len(set(ints)) != len(ints) or any(v < 0 for v in ints):
            raise ValueError(
                f"label_values {values!r} must list distinct label values, background 0 first, e.g. [0, 1, 2, 3]"
            )
        cfg.label_values = ints
    if names != "auto" and (not isinstance(names, (list, tuple)) or (values != "auto" and len(names) != len(values))):
        raise ValueError(f"label_names {names!r} must be a list with one name per entry of label_values {values!r}")


def resolve_labels(cfg: TrainConfig, dataset_labels: dict[str, str] | None) -> TrainConfig:
    """The config with ``label_mode``, ``label_values`` and ``label_names`` resolved from dataset.json's ``labels``.

    Introduced in notebook 03. ``"auto"`` is binary when dataset.json names one foreground label (Task02_Heart),
    multiclass when it names several (hippocampus 1/2, cardiac cine RV/MYO/LV). A binary run keeps every value as
    it was (foreground = label != 0; ``label_values`` and ``label_names`` stay ``"auto"``). A multiclass run trains
    class k for the k-th value of ``label_values`` (0 = background first); values left out count as background.

    Args:
        cfg: the run's config (its label fields may be ``"auto"``).
        dataset_labels: dataset.json's ``"labels"`` (``{"0": "background", "1": "left atrium"}``) or None.

    Returns:
        A new config whose ``label_mode`` is ``"binary"`` or ``"multiclass"``, re-checked (:func:`check_labels`).
    """
    named = {int(k): str(v) for k, v in (dataset_labels or {}).items()}
    mode = cfg.label_mode
    if mode == "auto":
        mode = "multiclass" if len([v for v in named if v != 0]) > 1 else "binary"
    if mode == "binary":
        return dataclasses.replace(cfg, label_mode="binary")
    values = cfg.label_values if cfg.label_values != "auto" else sorted({0, *named})
    if len(values) < 2:
        raise ValueError("label_mode 'multiclass' needs dataset.json 'labels' naming the classes, or label_values")
    names = cfg.label_names
    if names == "auto":
        names = [named.get(int(v), "background" if int(v) == 0 else f"label_{v}") for v in values]
    return dataclasses.replace(cfg, label_mode="multiclass", label_values=list(values), label_names=list(names))


def class_names(config: dict[str, Any]) -> dict[int, str]:
    """A run's classes: ``{dataset label value: name}`` without background (binary: ``{1: "foreground"}``).

    Introduced in notebook 04. Reads ``config.json`` (:func:`config_dict`); an older run without label fields is binary.
    """
    if config.get("label_mode") != "multiclass":
        return {1: "foreground"}
    return {int(v): str(n) for v, n in zip(config["label_values"][1:], config["label_names"][1:])}


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
    multiclass = config.get("label_mode") == "multiclass"
    return get_transforms(
        stage,
        pixdim=tuple(config["pixdim"]),
        roi_size=tuple(config["roi_size"]),
        num_samples=config["num_samples"],
        elastic=config["elastic"],
        mr_artefacts=config.get("mr_artefacts", False),  # runs from before the option trained without
        divisor=required_divisor(config["model_name"], config.get("model_kwargs")),
        device=device,
        label_values=tuple(config["label_values"]) if multiclass else None,
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
