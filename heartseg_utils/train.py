"""Training: an explicit, readable loop around MONAI pieces, writing ``run_dir`` per the contract.

Introduced in notebook 03. ``train(config)`` is what notebook 03 calls and what
``python -m heartseg_utils.train --data_dir ... --run_dir ...`` runs; both share this one code path.
Launched by ``torchrun --nproc_per_node=N -m heartseg_utils.train ...`` the same loop runs data-parallel
(DistributedDataParallel, one process per GPU or CPU slot); see docs/distributed.md.

Written into ``run_dir``: ``config.json``, ``split.json``, ``history.csv`` (one row per epoch),
``last.pt`` (every epoch), ``best_model.pt`` (best validation Dice) and ``metrics.json``.
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

LOSS_NAMES = ("dicece", "dice", "bce")
OPTIMIZER_NAMES = ("adamw", "adam")
SCHEDULER_NAMES = ("plateau", "cosine", "none")
HISTORY_FIELDS = ("epoch", "train_loss", "val_dice", "lr", "epoch_seconds")


@dataclass
class TrainConfig:
    """Every knob of a training run; the names and defaults are notebook 03's parameters cell.

    Introduced in notebook 03. Defaults are CI-sized (synthetic phantom, 2 CPU cores, a few minutes) and
    equal the notebook's (a test checks it); notebook 03's markdown gives the full-size values for the real
    Task02_Heart on a GPU.
    """

    data_dir: str = ""  # "" = $HEARTSEG_DATA_DIR or data/ (synthetic phantom generated there once)
    run_dir: str = "runs/03_train"
    max_epochs: int = 40
    time_budget_min: float = 4.5  # 0 = no limit; else stop at the epoch boundary that would overrun
    seed: int = 0
    device: str = "auto"  # "auto" | "cpu" | "cuda"
    amp: str = "auto"  # "auto" (on for CUDA only) | "on" | "off"
    model_name: str = "unet"
    model_kwargs: dict[str, Any] = field(default_factory=dict)
    loss_name: str = "dicece"
    optimizer_name: str = "adamw"
    scheduler_name: str = "plateau"
    lr: float = 3e-3
    weight_decay: float = 1e-5
    roi_size: tuple[int, int, int] = (48, 48, 48)
    batch_size: int = 2  # per process: the effective batch is batch_size x processes
    num_samples: int = 2  # patches drawn per volume per epoch
    pixdim: Any = (2.5, 2.5, 2.74)  # (x, y, z) in mm, or "auto" = the dataset's median spacing
    label_mode: str = "binary"
    elastic: bool = False
    val_fraction: float = 0.2
    n_folds: int = 0  # 0 = the val_fraction split; k >= 2 = validate on fold `fold` of data.kfold_split
    fold: int = 0
    holdout_fraction: float = 0.0  # cases set aside before splitting (split.json "holdout"), e.g. for an ensemble
    patience: int = 15  # early stopping: epochs without a better validation Dice
    sw_batch_size: int = 4
    sw_overlap: float = 0.25
    num_workers: int = 0
    resume: bool = False
    progress: bool = True
    tensorboard: bool = False

    def __post_init__(self) -> None:
        for name in ("roi_size", "pixdim", "model_kwargs"):  # papermill's -p passes "[96, 96, 96]" as text
            value = getattr(self, name)
            if isinstance(value, str) and value.strip()[:1] in "[{" and value.strip():
                setattr(self, name, json.loads(value))
        self.roi_size = tuple(int(r) for r in self.roi_size)  # type: ignore[assignment]
        if isinstance(self.pixdim, list):
            self.pixdim = tuple(float(p) for p in self.pixdim)
        checks = {"loss_name": LOSS_NAMES, "optimizer_name": OPTIMIZER_NAMES,
                  "scheduler_name": SCHEDULER_NAMES, "device": ("auto", "cpu", "cuda"), "amp": ("auto", "on", "off")}
        for name, allowed in checks.items():
            if getattr(self, name) not in allowed:
                raise ValueError(f"unknown {name} {getattr(self, name)!r}; choose one of {', '.join(allowed)}")
        from heartseg_utils.models import required_divisor

        div = required_divisor(self.model_name, self.model_kwargs)  # also rejects unknown model names
        if len(self.roi_size) != 3 or any(r <= 0 or r % div for r in self.roi_size):
            raise ValueError(f"roi_size {self.roi_size} must be 3 positive sides divisible by {div} for {self.model_name!r}")
        if self.max_epochs < 1 or self.batch_size < 1 or self.lr <= 0:
            raise ValueError("max_epochs and batch_size must be >= 1 and lr > 0")
        if self.n_folds == 1 or self.n_folds < 0 or not 0 <= self.fold < max(self.n_folds, 1):
            raise ValueError(f"n_folds {self.n_folds} / fold {self.fold}: use n_folds 0 (val_fraction split) or >= 2, "
                             "and 0 <= fold < n_folds")
        if not 0.0 <= self.holdout_fraction < 1.0:
            raise ValueError(f"holdout_fraction must be in [0, 1), got {self.holdout_fraction}")

    @property
    def out_channels(self) -> int:
        """1 logit for single-channel sigmoid + BCE, else 2 (softmax over background/atrium)."""
        return 1 if self.loss_name == "bce" else 2


def resolve_device(device: str = "auto") -> torch.device:
    """Map "auto" to CUDA when available, else CPU; asking for "cuda" without one is an error."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cuda" and not torch.cuda.is_available():
        raise ValueError("device='cuda' but no CUDA GPU is visible; use device='auto' or 'cpu'")
    return torch.device(device)


def resolve_amp(amp: str, device: torch.device) -> torch.dtype | None:
    """Decide the autocast dtype: bf16 (or fp16 on older GPUs) on CUDA, None (fp32) on the CPU.

    Introduced in notebook 03. AMP is never used on the CPU: bf16 autocast there was measured
    ~16x slower than fp32 for 3D convolutions.
    """
    if device.type != "cuda" or amp == "off":
        if amp == "on":
            raise ValueError("amp='on' needs a CUDA device; use amp='auto' (fp32 on the CPU)")
        return None
    return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16


def make_loss(name: str) -> torch.nn.Module:
    """DiceCE (default), Dice (softmax over 2 channels) or single-channel BCE-with-logits."""
    from monai.losses import DiceCELoss, DiceLoss

    if name == "dicece":
        return DiceCELoss(to_onehot_y=True, softmax=True)
    if name == "dice":
        return DiceLoss(to_onehot_y=True, softmax=True)
    if name == "bce":
        return torch.nn.BCEWithLogitsLoss()
    raise ValueError(f"unknown loss_name {name!r}; choose one of {', '.join(LOSS_NAMES)}")


def logits_to_mask(logits: torch.Tensor) -> torch.Tensor:
    """Turn network output (N, C, ...) into a (N, 1, ...) foreground mask: argmax, or logit > 0 for C = 1."""
    if logits.shape[1] == 1:
        return (logits > 0).to(torch.uint8)
    return logits.argmax(dim=1, keepdim=True).to(torch.uint8)


def model_from_config(config: dict[str, Any]) -> torch.nn.Module:
    """Rebuild the network described by a run's ``config.json``. Introduced in notebook 04."""
    from heartseg_utils.models import get_model

    out = 1 if config["loss_name"] == "bce" else 2
    return get_model(config["model_name"], out_channels=out, **config.get("model_kwargs", {}))


def transforms_from_config(config: dict[str, Any], stage: str):
    """Rebuild a run's transforms from ``config.json`` (pixdim already resolved). Introduced in notebook 04."""
    from heartseg_utils.transforms import get_transforms

    return get_transforms(stage, pixdim=tuple(config["pixdim"]), roi_size=tuple(config["roi_size"]),
                          num_samples=config["num_samples"], label_mode=config["label_mode"], elastic=config["elastic"])


def _is_main() -> bool:
    """True in a single process and on rank 0 of a torchrun job: the only process that writes run_dir files."""
    import torch.distributed as dist

    return not (dist.is_available() and dist.is_initialized()) or dist.get_rank() == 0


def _reduce(values: list[float], device: torch.device, op: str = "sum") -> list[float]:
    """Sum (op="sum") or maximum (op="max") of numbers over all processes; unchanged in a single process."""
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()):
        return values
    t = torch.tensor(values, dtype=torch.float64, device=device)
    dist.all_reduce(t, op=dist.ReduceOp.SUM if op == "sum" else dist.ReduceOp.MAX)
    return t.tolist()


def _init_distributed(device: torch.device) -> tuple[torch.device, int, int, bool]:
    """Join torchrun's process group when launched by it (WORLD_SIZE > 1): nccl on GPUs, gloo on CPUs.

    Introduced in docs/distributed.md (the notebooks run one process). Each process takes the GPU
    ``LOCAL_RANK``. Returns ``(device, rank, world_size, created)``; ``created`` says this call initialised
    the group, so ``train`` destroys it at the end.
    """
    import torch.distributed as dist

    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return device, 0, 1, False
    if device.type == "cuda":
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        torch.cuda.set_device(device)
    created = not dist.is_initialized()
    if created:
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return device, dist.get_rank(), dist.get_world_size(), created


def _data_parallel(model: torch.nn.Module, device: torch.device) -> torch.nn.Module:
    """Wrap in DistributedDataParallel; on GPUs batch norm becomes SyncBatchNorm (PyTorch's is GPU-only)."""
    from torch.nn.parallel import DistributedDataParallel

    if device.type == "cuda":
        model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)
    return DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)


def _save_atomic(obj: Any, path: Path) -> None:
    """torch.save to a temp file, then rename: a crash never leaves a half-written checkpoint (rank 0 only)."""
    if not _is_main():
        return
    tmp = path.with_suffix(path.suffix + ".tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def _write_json(obj: Any, path: Path) -> None:
    if not _is_main():
        return
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(obj, indent=2))
    os.replace(tmp, path)


def _seed_epoch(seed: int, epoch: int, *datasets: Any, rank: int = 0) -> torch.Generator:
    """Reseed every random source from (seed, epoch, rank): a resumed run replays exactly what it would have done.

    Each torchrun process (``rank``) gets its own augmentation and dropout stream.
    """
    from monai.utils import set_determinism

    s = seed * 1000 + epoch + 1_000_000 * rank
    set_determinism(seed=s)
    for ds in datasets:
        ds.transform.set_random_state(seed=s)
    return torch.Generator().manual_seed(s)


@torch.no_grad()
def validate(model: torch.nn.Module, loader: Any, cfg: TrainConfig, device: torch.device,
             amp_dtype: torch.dtype | None) -> float:
    """Mean foreground Dice over whole validation volumes with sliding-window inference.

    Under torchrun each process validates its share of the cases; the Dice sums and counts are added over
    all processes, so every process returns the same mean.
    """
    from monai.inferers import sliding_window_inference
    from monai.metrics import DiceMetric

    metric = DiceMetric(include_background=True, reduction="mean")
    model.eval()
    for batch in loader:
        image, label = batch["image"].to(device), batch["label"].to(device)
        with torch.autocast(device.type, dtype=amp_dtype or torch.float32, enabled=amp_dtype is not None):
            logits = sliding_window_inference(image, cfg.roi_size, cfg.sw_batch_size, model, overlap=cfg.sw_overlap)
        metric(y_pred=logits_to_mask(logits.float()), y=(label > 0).to(torch.uint8))
    scores = metric.get_buffer()  # (cases, 1); NaN where prediction and label are both empty
    scores = torch.zeros(0) if scores is None else scores.flatten().double().cpu()
    total, count = _reduce([float(scores.nansum()), float((~scores.isnan()).sum())], device)
    return total / count if count else 0.0


def train_one_epoch(model, loader, loss_fn, optimizer, scaler, device, amp_dtype, bar=None) -> float:
    """One pass over the training patches; returns the mean loss. Introduced in notebook 03."""
    model.train()
    total, n = 0.0, 0
    for batch in loader:
        image, label = batch["image"].to(device), batch["label"].to(device)
        optimizer.zero_grad(set_to_none=True)
        with torch.autocast(device.type, dtype=amp_dtype or torch.float32, enabled=amp_dtype is not None):
            logits = model(image)
        loss = loss_fn(logits.float(), label.float() if logits.shape[1] == 1 else label)
        if not torch.isfinite(loss):
            raise FloatingPointError(f"loss became {loss.item()} at step {n}; lower lr (now {optimizer.param_groups[0]['lr']:g})")
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
        total, n = total + loss.item(), n + 1
        if bar is not None:
            bar.update(1)
            bar.set_postfix(loss=f"{loss.item():.3f}")
    return total / max(n, 1)


def _make_scheduler(name: str, optimizer: torch.optim.Optimizer):
    if name == "plateau":
        return torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer, mode="max", factor=0.5, patience=5)
    if name == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingWarmRestarts(optimizer, T_0=10, T_mult=2)
    return None


def _prepare_data(cfg: TrainConfig, run_dir: Path):
    """Validate the dataset, split it (saved to split.json; reused on resume) and build cached datasets."""
    from monai.data import CacheDataset

    from heartseg_utils import data
    from heartseg_utils.transforms import resolve_pixdim

    dataset_dir = data.get_dataset_dir(cfg.data_dir)
    items = data.validate_dataset(dataset_dir)
    split_path = run_dir / "split.json"
    if cfg.resume and split_path.exists():
        split = json.loads(split_path.read_text())
        by_case = {it["case"]: it for it in items}
        train_items, val_items = [by_case[c] for c in split["train"]], [by_case[c] for c in split["validation"]]
    else:
        pool, holdout = (data.train_val_split(items, cfg.holdout_fraction, cfg.seed) if cfg.holdout_fraction
                         else (items, []))
        if cfg.n_folds:  # introduced in notebook 05: fold k of a k-fold partition of the non-holdout cases
            train_items, val_items = data.kfold_split(pool, cfg.n_folds, cfg.seed)[cfg.fold]
        else:
            train_items, val_items = data.train_val_split(pool, val_fraction=cfg.val_fraction, seed=cfg.seed)
        _write_json({"dataset_dir": str(dataset_dir), "seed": cfg.seed, "train": [i["case"] for i in train_items],
                     "validation": [i["case"] for i in val_items], "holdout": [i["case"] for i in holdout]}, split_path)
    pixdim = resolve_pixdim(cfg.pixdim, items)
    resolved = dataclasses.replace(cfg, pixdim=tuple(float(p) for p in pixdim))
    train_ds = CacheDataset(train_items, transforms_from_config(_config_dict(resolved), "train"),
                            cache_rate=1.0, num_workers=None, progress=False)
    val_ds = CacheDataset(val_items, transforms_from_config(_config_dict(resolved), "val"),
                          cache_rate=1.0, num_workers=None, progress=False)
    for item, case in zip(val_ds, val_items):
        shape = tuple(item["image"].shape[1:])
        if any(r > s for r, s in zip(cfg.roi_size, shape)):
            raise ValueError(f"roi_size {cfg.roi_size} is larger than the preprocessed volume {case['case']} "
                             f"{shape} (pixdim {resolved.pixdim}); choose roi_size <= {shape} or a finer pixdim")
    return resolved, dataset_dir, train_ds, val_ds


def _config_dict(cfg: TrainConfig) -> dict[str, Any]:
    d = dataclasses.asdict(cfg)
    d["roi_size"], d["out_channels"] = list(cfg.roi_size), cfg.out_channels
    if isinstance(cfg.pixdim, tuple):
        d["pixdim"] = list(cfg.pixdim)
    return d


def _write_history(rows: list[dict[str, Any]], path: Path) -> None:
    if not _is_main():
        return
    tmp = path.with_suffix(".tmp")
    with tmp.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=HISTORY_FIELDS)
        writer.writeheader()
        writer.writerows(rows)
    os.replace(tmp, path)


def train(config: TrainConfig | dict[str, Any]) -> dict[str, Any]:
    """Train a segmentation network and write ``run_dir`` as STYLE.md's contract says.

    Introduced in notebook 03.

    Args:
        config: a :class:`TrainConfig` or a dict of its fields (e.g. notebook 03's parameters).

    Returns:
        The contents of ``metrics.json``: ``best_val_dice``, ``best_epoch``, ``epochs_run``,
        ``train_seconds``, ``device``, ``amp``, ``stopped_because`` and ``world_size`` (processes; 1
        unless launched by torchrun, where every process returns the same dict and only rank 0 writes).
    """
    from monai.data import ThreadDataLoader, set_track_meta
    from torch.utils.data import DistributedSampler, RandomSampler, Subset
    from tqdm.auto import tqdm

    from heartseg_utils.models import count_parameters

    cfg = config if isinstance(config, TrainConfig) else TrainConfig(**config)
    run_dir = Path(cfg.run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    last_path = run_dir / "last.pt"
    if cfg.resume and not last_path.exists():
        raise FileNotFoundError(f"resume=True but {last_path} does not exist; run once with resume=False")
    device = resolve_device(cfg.device)
    amp_dtype = resolve_amp(cfg.amp, device)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    device, rank, world, created_group = _init_distributed(device)  # (device, 0, 1, False) without torchrun
    main = rank == 0

    _seed_epoch(cfg.seed, 0)  # the same initial weights in every process
    try:
        cfg, dataset_dir, train_ds, val_ds = _prepare_data(cfg, run_dir)
        _write_json({**_config_dict(cfg), "dataset_dir": str(dataset_dir)}, run_dir / "config.json")
        set_track_meta(False)  # plain tensors from here on: faster, and metadata is not needed for training
        net = model_from_config(_config_dict(cfg)).to(device)
        model = _data_parallel(net, device) if world > 1 else net
        net = getattr(model, "module", model)  # the bare network: validated and saved, loads without DDP
        loss_fn = make_loss(cfg.loss_name)
        opt_cls = torch.optim.AdamW if cfg.optimizer_name == "adamw" else torch.optim.Adam
        optimizer = opt_cls(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
        scheduler = _make_scheduler(cfg.scheduler_name, optimizer)
        scaler = torch.amp.GradScaler(device.type, enabled=amp_dtype == torch.float16)
        history, state = [], {"best_val_dice": -1.0, "best_epoch": 0, "bad_epochs": 0, "train_seconds": 0.0}
        if cfg.resume:
            ckpt = torch.load(last_path, map_location=device, weights_only=True)
            net.load_state_dict(ckpt["model"])
            optimizer.load_state_dict(ckpt["optimizer"])
            scaler.load_state_dict(ckpt["scaler"])
            if scheduler is not None:
                scheduler.load_state_dict(ckpt["scheduler"])
            state.update(ckpt["state"])
            history = list(ckpt["history"])  # the checkpoint, not history.csv, is the source of truth
            _write_history(history, run_dir / "history.csv")
        if main:
            print(f"{cfg.model_name}: {count_parameters(net):,} parameters | device {device} x {world} process(es) | "
                  f"amp {amp_dtype} | {len(train_ds)} train / {len(val_ds)} val cases | pixdim {cfg.pixdim}")
        # every process caches all cases; a DistributedSampler gives each a disjoint share of every epoch
        sampler = DistributedSampler(train_ds, num_replicas=world, rank=rank, seed=cfg.seed) if world > 1 else None
        val_loader = ThreadDataLoader(Subset(val_ds, range(rank, len(val_ds), world)), batch_size=1, num_workers=0)
        stopped = "max_epochs"
        start_epoch = len(history) + 1
        epochs = tqdm(range(start_epoch, cfg.max_epochs + 1), desc="epochs", disable=not (cfg.progress and main),
                      initial=start_epoch - 1, total=cfg.max_epochs)
        writer = _tensorboard(cfg, run_dir) if main else None
        last_epoch_s, session_s = 0.0, 0.0  # the time budget applies to this call, so resume=True gets a fresh one
        for epoch in epochs:
            budget_s = cfg.time_budget_min * 60
            if budget_s and session_s + last_epoch_s > budget_s:
                stopped = "time_budget"
                break
            t0 = time.perf_counter()
            gen = _seed_epoch(cfg.seed, epoch, train_ds, rank=rank)
            if sampler is not None:
                sampler.set_epoch(epoch)  # a new shuffle every epoch, the same in every process
            # MONAI's loader also seeds the dataset's random transforms from `gen`: pass it in both cases
            loader = ThreadDataLoader(train_ds, batch_size=cfg.batch_size, generator=gen, num_workers=cfg.num_workers,
                                      sampler=sampler or RandomSampler(train_ds, generator=gen))
            with tqdm(total=len(loader), desc=f"epoch {epoch}", leave=False, disable=not (cfg.progress and main)) as bar:
                train_loss = train_one_epoch(model, loader, loss_fn, optimizer, scaler, device, amp_dtype, bar)
            train_loss = _reduce([train_loss], device)[0] / world  # every process ran the same number of steps
            if world > 1:  # batch-norm running statistics differ per process: keep rank 0's, as DDP does
                for buf in net.buffers():
                    torch.distributed.broadcast(buf, src=0)
            val_dice = validate(net, val_loader, cfg, device, amp_dtype)  # the same number in every process
            if isinstance(scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau):
                scheduler.step(val_dice)
            elif scheduler is not None:
                scheduler.step()
            last_epoch_s = _reduce([time.perf_counter() - t0], device, "max")[0]  # identical stop decisions
            state["train_seconds"] += last_epoch_s
            session_s += last_epoch_s
            row = {"epoch": epoch, "train_loss": round(train_loss, 6), "val_dice": round(val_dice, 6),
                   "lr": optimizer.param_groups[0]["lr"], "epoch_seconds": round(last_epoch_s, 3)}
            history.append(row)
            improved = val_dice > state["best_val_dice"]
            if improved:
                state.update(best_val_dice=val_dice, best_epoch=epoch, bad_epochs=0)
                _save_atomic({"model": net.state_dict(), "epoch": epoch, "val_dice": val_dice}, run_dir / "best_model.pt")
            else:
                state["bad_epochs"] += 1
            _save_atomic({"model": net.state_dict(), "optimizer": optimizer.state_dict(), "scaler": scaler.state_dict(),
                          "scheduler": scheduler.state_dict() if scheduler is not None else {},
                          "epoch": epoch, "state": dict(state), "history": history}, last_path)
            _write_history(history, run_dir / "history.csv")
            if writer is not None:
                for key in ("train_loss", "val_dice", "lr"):
                    writer.add_scalar(key, row[key], epoch)
            epochs.set_postfix(loss=f"{train_loss:.3f}", dice=f"{val_dice:.3f}", best=f"{state['best_val_dice']:.3f}")
            if state["bad_epochs"] >= cfg.patience:
                stopped = "early_stopping"
                break
        if writer is not None:
            writer.close()
        metrics = {"best_val_dice": round(state["best_val_dice"], 6), "best_epoch": state["best_epoch"],
                   "epochs_run": len(history), "train_seconds": round(state["train_seconds"], 2),
                   "device": str(device), "amp": str(amp_dtype).replace("torch.", "") if amp_dtype else "off",
                   "stopped_because": stopped, "world_size": world}
        _write_json(metrics, run_dir / "metrics.json")
    finally:
        set_track_meta(True)
        if created_group:
            torch.distributed.destroy_process_group()
    return metrics


def _tensorboard(cfg: TrainConfig, run_dir: Path):
    if not cfg.tensorboard:
        return None
    from torch.utils.tensorboard import SummaryWriter

    return SummaryWriter(str(run_dir / "tensorboard"))


def _flag_parser(default: Any):
    """argparse ``type=`` for a field: by the type of its default; JSON for lists, tuples and dicts."""
    def boolean(text: str) -> bool:
        if text.lower() not in ("true", "false", "1", "0", "yes", "no"):
            raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")
        return text.lower() in ("true", "1", "yes")

    def literal(text: str) -> Any:  # "[96, 96, 96]", '{"channels": [8, 16]}'; anything else ("auto") stays text
        try:
            return json.loads(text)
        except json.JSONDecodeError:
            return text

    return {bool: boolean, int: int, float: float, str: str}.get(type(default), literal)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Command-line entry: ``python -m heartseg_utils.train --run_dir runs/x --max_epochs 50`` (flags = fields).

    Introduced in notebook 03. Defaults are notebook 03's parameters; ``torchrun --nproc_per_node=N -m
    heartseg_utils.train ...`` runs the same code in N processes (docs/distributed.md).
    """
    parser = argparse.ArgumentParser(description="Train a heartseg model (same code path as notebook 03).")
    for f in dataclasses.fields(TrainConfig):
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()  # type: ignore[misc]
        parser.add_argument(f"--{f.name}", default=default, type=_flag_parser(default), help=f"default: {json.dumps(default)}")
    return train(vars(parser.parse_args(argv)))


if __name__ == "__main__":
    result = main()
    if os.environ.get("RANK", "0") == "0":  # under torchrun every process returns the same metrics
        print(json.dumps(result, indent=2))
