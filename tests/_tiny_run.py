"""Test helper: one tiny trained run (conftest's tiny_config settings, one epoch) in a given folder."""

from __future__ import annotations

from pathlib import Path

# conftest's tiny_config and the module fixtures share these: an epoch takes about a second on the CPU
TINY: dict = {
    "seed": 1,
    "progress": False,
    "model_name": "unet",
    "pixdim": [2.5, 2.5, 2.74],
    "roi_size": [16, 16, 16],
    "batch_size": 2,
    "num_samples": 1,
    "val_fraction": 0.34,
    "model_kwargs": {"channels": [4, 8, 16], "strides": [2, 2], "num_res_units": 1},
}


def train_tiny_run(dataset_dir: Path, run_dir: Path) -> Path:
    """Train the tiny UNet of :data:`TINY` for one epoch into ``run_dir`` (about a second of CPU)."""
    from heartseg_utils.train import run_training

    run_training({**TINY, "data_dir": str(dataset_dir), "run_dir": str(run_dir), "max_epochs": 1})
    return run_dir
