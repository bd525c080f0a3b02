"""Training loop: the run_dir contract, determinism, resume after a kill, time budget, AMP logic, bad parameters."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from heartseg_utils import train as T

CONTRACT_FILES = ("best_model.pt", "last.pt", "config.json", "split.json", "history.csv", "metrics.json")


def _history(run_dir: Path) -> list[dict]:
    with (run_dir / "history.csv").open() as f:
        return [{k: v for k, v in row.items() if k != "epoch_seconds"} for row in csv.DictReader(f)]


def test_run_dir_contract(tiny_config: dict) -> None:
    metrics = T.train(tiny_config)
    run = Path(tiny_config["run_dir"])
    assert all((run / f).is_file() for f in CONTRACT_FILES)
    saved = json.loads((run / "metrics.json").read_text())
    assert saved == metrics
    assert set(saved) >= {"best_val_dice", "best_epoch", "epochs_run", "train_seconds", "device", "amp"}
    assert (saved["epochs_run"], saved["device"], saved["amp"]) == (2, "cpu", "off")
    assert 0.0 <= saved["best_val_dice"] <= 1.0 and saved["best_epoch"] in (1, 2)
    assert [int(r["epoch"]) for r in _history(run)] == [1, 2]
    split = json.loads((run / "split.json").read_text())
    assert len(split["train"]) == 4 and len(split["validation"]) == 2 and not set(split["train"]) & set(split["validation"])
    # config.json alone rebuilds the model (strict load of the best checkpoint) and the transforms
    config = json.loads((run / "config.json").read_text())
    model = T.model_from_config(config)
    model.load_state_dict(torch.load(run / "best_model.pt", weights_only=True)["model"])
    item = T.transforms_from_config(config, "val")({"image": str(Path(tiny_config["data_dir"]) / "imagesTr" / "la_001.nii.gz"),
                                                    "label": str(Path(tiny_config["data_dir"]) / "labelsTr" / "la_001.nii.gz")})
    assert item["image"].shape[0] == 1 and all(s % 16 == 0 for s in item["image"].shape[1:])
    assert not list(run.glob("*.tmp")), "atomic writes leave no temp files behind"


def test_same_seed_same_history(tiny_config: dict, tmp_path: Path) -> None:
    T.train(tiny_config)
    T.train({**tiny_config, "run_dir": str(tmp_path / "again")})
    assert _history(Path(tiny_config["run_dir"])) == _history(tmp_path / "again")
    T.train({**tiny_config, "run_dir": str(tmp_path / "other_seed"), "seed": 2})
    assert _history(tmp_path / "other_seed") != _history(tmp_path / "again")


def test_resume_after_kill_loses_and_repeats_no_epoch(tiny_config: dict, tmp_path: Path) -> None:
    cfg = {**tiny_config, "max_epochs": 4}
    T.train({**cfg, "run_dir": str(tmp_path / "straight")})
    killed = tmp_path / "killed"
    args = [sys.executable, "-m", "heartseg_utils.train"]
    for key, value in {**cfg, "run_dir": str(killed)}.items():
        args += [f"--{key}", value if isinstance(value, str) else json.dumps(value)]
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None:
        if (killed / "history.csv").exists() and len(_history(killed)) >= 2:
            break
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    done_before = len(_history(killed))
    assert 2 <= done_before < 4, f"the kill should land mid-run, found {done_before} epochs"
    metrics = T.train({**cfg, "run_dir": str(killed), "resume": True})
    assert metrics["epochs_run"] == 4
    assert _history(killed) == _history(tmp_path / "straight")


def test_time_budget_stops_at_an_epoch_boundary(tiny_config: dict) -> None:
    metrics = T.train({**tiny_config, "max_epochs": 50, "time_budget_min": 1e-4})
    assert metrics["stopped_because"] == "time_budget" and metrics["epochs_run"] == 1
    assert all((Path(tiny_config["run_dir"]) / f).is_file() for f in CONTRACT_FILES)


def test_early_stopping_respects_patience(tiny_config: dict) -> None:
    metrics = T.train({**tiny_config, "max_epochs": 50, "patience": 1, "lr": 1e-9})
    assert metrics["stopped_because"] == "early_stopping" and metrics["epochs_run"] < 50
    assert metrics["epochs_run"] == metrics["best_epoch"] + 1


def test_cli_uses_the_notebook_parameter_names(tiny_config: dict) -> None:
    argv = []
    for key, value in {**tiny_config, "max_epochs": 1}.items():
        argv += [f"--{key}", value if isinstance(value, str) else json.dumps(value)]
    assert T.main(argv)["epochs_run"] == 1


@pytest.mark.parametrize("override, message", [
    ({"model_name": "vnet"}, "unknown model_name 'vnet'"),
    ({"loss_name": "focal"}, "unknown loss_name 'focal'.*dicece, dice, bce"),
    ({"roi_size": [18, 16, 16]}, r"divisible by 4"),
    ({"amp": "on"}, "amp='on' needs a CUDA device"),
    ({"device": "tpu"}, "unknown device 'tpu'"),
])
def test_bad_parameters_are_clear_errors(tiny_config: dict, override: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        T.train({**tiny_config, **override})


def test_roi_larger_than_the_volume_is_a_clear_error(tiny_config: dict) -> None:
    with pytest.raises(ValueError, match=r"roi_size \(64, 64, 64\) is larger than the preprocessed volume la_0"):
        T.train({**tiny_config, "roi_size": [64, 64, 64]})


def test_resume_without_a_checkpoint_is_a_clear_error(tiny_config: dict) -> None:
    with pytest.raises(FileNotFoundError, match="last.pt does not exist"):
        T.train({**tiny_config, "resume": True})


def test_amp_decision_with_cuda_mocked(monkeypatch: pytest.MonkeyPatch) -> None:
    cuda, cpu = torch.device("cuda"), torch.device("cpu")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert T.resolve_device("auto") == cuda
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
    assert T.resolve_amp("auto", cuda) is torch.bfloat16
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: False)
    assert T.resolve_amp("auto", cuda) is torch.float16 and T.resolve_amp("on", cuda) is torch.float16
    assert T.resolve_amp("off", cuda) is None
    assert T.resolve_amp("auto", cpu) is None and T.resolve_amp("off", cpu) is None
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert T.resolve_device("auto") == cpu
    with pytest.raises(ValueError, match="no CUDA GPU is visible"):
        T.resolve_device("cuda")
