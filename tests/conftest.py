"""Shared fixtures: a tiny synthetic MSD dataset and a tiny training configuration."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def tiny_msd(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Six small phantom cases (plus one test image) in MSD layout, generated once per test session."""
    from heartseg_utils.synthetic import make_synthetic_dataset

    return make_synthetic_dataset(tmp_path_factory.mktemp("msd") / "Task02_Heart_tiny", n_train=6, n_test=1,
                                  seed=3, shape=(64, 64, 48))


@pytest.fixture()
def tiny_config(tiny_msd: Path, tmp_path: Path) -> dict:
    """A training configuration that runs an epoch in about a second on the CPU."""
    return dict(data_dir=str(tiny_msd), run_dir=str(tmp_path / "run"), max_epochs=2, seed=1, progress=False,
                pixdim=[2.5, 2.5, 2.74], roi_size=[16, 16, 16], batch_size=2, num_samples=1, val_fraction=0.34,
                model_kwargs={"channels": [4, 8, 16], "strides": [2, 2], "num_res_units": 1})
