"""Test helper: one tiny trained run (conftest's tiny_config settings, one epoch) in a given folder."""

from __future__ import annotations

from pathlib import Path


def train_tiny_run(dataset_dir: Path, run_dir: Path) -> Path:
    """Train the tiny UNet of conftest's ``tiny_config`` for one epoch into ``run_dir`` (about a second of CPU)."""
    from heartseg_utils.train import train

    train(
        {
            "data_dir": str(dataset_dir),
            "run_dir": str(run_dir),
            "max_epochs": 1,
            "seed": 1,
            "progress": False,
            "pixdim": [2.5, 2.5, 2.74],
            "roi_size": [16, 16, 16],
            "batch_size": 2,
            "num_samples": 1,
            "val_fraction": 0.34,
            "model_kwargs": {"channels": [4, 8, 16], "strides": [2, 2], "num_res_units": 1},
        }
    )
    return run_dir
