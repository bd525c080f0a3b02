"""Training loop: the run_dir contract, determinism per precision, resume after a kill, time budget, schedules,
early stopping, the AMP decision, the planner hook, bad parameters."""

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

from heartseg_utils import config as C
from heartseg_utils import recipe as R
from heartseg_utils import runs
from heartseg_utils import train as T

CONTRACT_FILES = ("best_model.pt", "last.pt", "config.json", "split.json", "history.csv", "metrics.json", "qc.json")


def _history(run_dir: Path) -> list[dict]:
    with (run_dir / "history.csv").open() as f:
        return [{k: v for k, v in row.items() if k != "epoch_seconds"} for row in csv.DictReader(f)]


def test_run_dir_contract(tiny_config: dict) -> None:
    metrics = T.run_training({**tiny_config, "amp": "off"})
    run = Path(tiny_config["run_dir"])
    assert all((run / f).is_file() for f in CONTRACT_FILES)
    saved = json.loads((run / "metrics.json").read_text())
    assert saved == metrics
    assert set(saved) >= {"best_val_dice", "best_epoch", "epochs_run", "train_seconds", "device", "amp"}
    assert (saved["epochs_run"], saved["device"], saved["amp"], saved["planned_epochs"]) == (2, "cpu", "off", 2)
    assert saved["amp_reason"] == "amp='off': fp32"
    assert 0.0 <= saved["best_val_dice"] <= 1.0 and saved["best_epoch"] in (1, 2)
    assert [int(r["epoch"]) for r in _history(run)] == [1, 2]
    # the worst validation case is logged beside the mean, and kept for the best epoch
    rows = _history(run)
    assert all(0.0 <= float(r["val_dice_min"]) <= float(r["val_dice"]) + 1e-9 for r in rows)
    at_best = rows[saved["best_epoch"] - 1]
    assert saved["best_val_dice_min"] == pytest.approx(float(at_best["val_dice_min"]), abs=1e-6)
    split = json.loads((run / "split.json").read_text())
    assert (
        len(split["train"]) == 4
        and len(split["validation"]) == 2
        and not set(split["train"]) & set(split["validation"])
    )
    # config.json alone rebuilds the model (strict load of the best checkpoint) and the transforms
    config = json.loads((run / "config.json").read_text())
    model = C.model_from_config(config)
    model.load_state_dict(torch.load(run / "best_model.pt", weights_only=True)["model"])
    item = C.transforms_from_config(config, "val")(
        {
            "image": str(Path(tiny_config["data_dir"]) / "imagesTr" / "la_001.nii.gz"),
            "label": str(Path(tiny_config["data_dir"]) / "labelsTr" / "la_001.nii.gz"),
        }
    )
    # padded to the divisor of the network in config.json (strides [2, 2]: 4), not a fixed 16
    assert item["image"].shape[0] == 1 and all(s % 4 == 0 for s in item["image"].shape[1:])
    assert any(s % 16 for s in item["image"].shape[1:])
    assert not (run / "plan.json").exists(), "explicit values: nothing planned"
    assert not list(run.glob("*.tmp*")), "atomic writes leave no temp files behind"


@pytest.mark.parametrize("amp", ["off", "on"])  # fp32, and bf16 autocast on the CPU
def test_same_seed_same_history(tiny_config: dict, tmp_path: Path, amp: str) -> None:
    cfg = {**tiny_config, "amp": amp}
    first = T.run_training(cfg)
    T.run_training({**cfg, "run_dir": str(tmp_path / "again")})
    assert _history(Path(tiny_config["run_dir"])) == _history(tmp_path / "again")
    assert first["amp"] == {"off": "off", "on": "bfloat16"}[amp]
    T.run_training({**cfg, "run_dir": str(tmp_path / "other_seed"), "seed": 2})
    assert _history(tmp_path / "other_seed") != _history(tmp_path / "again")


def test_epoch_seeds_never_collide() -> None:
    """The old seed * 1000 + epoch + 1_000_000 * rank collided (seed 0, epoch 1000 = seed 1, epoch 0)."""
    seeds = {
        T.seed_epoch(seed, epoch, rank=rank).initial_seed()
        for seed in (0, 1)
        for rank in (0, 1)
        for epoch in (0, 1, 1000)
    }
    assert len(seeds) == 12


def test_resume_after_kill_loses_and_repeats_no_epoch(tiny_config: dict, tmp_path: Path) -> None:
    cfg = {**tiny_config, "max_epochs": 4, "amp": "off"}  # explicit: "auto" times a probe in each process
    T.run_training({**cfg, "run_dir": str(tmp_path / "straight")})
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
    metrics = T.run_training({**cfg, "run_dir": str(killed), "resume": True})
    assert metrics["epochs_run"] == 4
    assert _history(killed) == _history(tmp_path / "straight")


def test_time_budget_stops_at_an_epoch_boundary(tiny_config: dict) -> None:
    metrics = T.run_training({**tiny_config, "max_epochs": 50, "time_budget_min": 1e-4})
    assert metrics["stopped_because"] == "time_budget" and metrics["epochs_run"] == 1
    assert all((Path(tiny_config["run_dir"]) / f).is_file() for f in CONTRACT_FILES)
    assert all(float(r["lr"]) > 0 for r in _history(Path(tiny_config["run_dir"])))  # no epoch at lr 0


def test_early_stopping_respects_patience(tiny_config: dict) -> None:
    cfg = {**tiny_config, "max_epochs": 50, "patience": 1, "lr": 1e-9, "scheduler_name": "plateau"}
    metrics = T.run_training(cfg)
    assert metrics["stopped_because"] == "early_stopping" and metrics["epochs_run"] < 50
    assert metrics["epochs_run"] == metrics["best_epoch"] + 1


def test_early_stopping_waits_for_half_a_decaying_schedule(tiny_config: dict) -> None:
    """With poly, patience 1 and a learning rate too small to learn, the run still trains half its planned epochs.

    (Plateau stops such a run one epoch after its best, see above.) Batch-norm statistics still move, so
    validation Dice may creep up for an epoch or two: the stop comes at epoch 3 (progress 3/6) or later.
    """
    metrics = T.run_training({**tiny_config, "max_epochs": 6, "patience": 1, "lr": 1e-9, "scheduler_name": "poly"})
    assert metrics["epochs_run"] >= 3 and metrics["stopped_because"] in ("early_stopping", "max_epochs")


@pytest.mark.parametrize("name, decay", [("poly", R.poly_decay), ("cosine", R.cosine_decay)])
def test_decaying_schedules_follow_progress_over_the_planned_epochs(tiny_config: dict, name: str, decay) -> None:
    T.run_training({**tiny_config, "max_epochs": 3, "scheduler_name": name, "lr": 0.01})
    rows = _history(Path(tiny_config["run_dir"]))
    assert [float(r["lr"]) for r in rows] == pytest.approx([0.01 * decay(e / 3) for e in range(3)])
    assert [int(r["planned_epochs"]) for r in rows] == [3, 3, 3]
    assert R.poly_decay(0) == R.cosine_decay(0) == 1 and R.poly_decay(1) == 0 and R.cosine_decay(1) < 1e-12


def test_planned_epochs_follow_the_budget() -> None:
    cfg = C.TrainConfig(max_epochs=100, time_budget_min=1.0)
    assert T.planned_epochs(cfg, 0, 0.0, 0) == 100  # nothing measured yet
    assert T.planned_epochs(cfg, 2, 20.0, 2) == 2 + 4  # 10 s per epoch, 40 s left
    assert T.planned_epochs(cfg, 2, 0.2, 2) == 100  # a generous budget: exactly max_epochs
    assert T.planned_epochs(C.TrainConfig(max_epochs=7, time_budget_min=0), 3, 999.0, 3) == 7
    assert T.planned_epochs(cfg, 5, 90.0, 5) == 5  # over budget: no negative estimate
    budget_only = C.TrainConfig(max_epochs=0, time_budget_min=1.0)  # 0 = no epoch limit: the budget decides
    assert T.planned_epochs(budget_only, 0, 0.0, 0) == 1 and T.planned_epochs(budget_only, 2, 20.0, 2) == 2 + 4
    with pytest.raises(ValueError, match="needs a time budget"):
        C.TrainConfig(max_epochs=0, time_budget_min=0)
    with pytest.raises(ValueError, match="max_epochs must be >= 0"):
        C.TrainConfig(max_epochs=-1)


def test_a_run_without_an_epoch_limit_trains_for_its_budget(tiny_config: dict) -> None:
    run = {**tiny_config, "amp": "off", "max_epochs": 0, "time_budget_min": 0.05, "patience": 10_000}
    metrics = T.run_training(run)
    assert metrics["stopped_because"] == "time_budget" and metrics["epochs_run"] >= 1  # no max_epochs to reach
    assert metrics["planned_epochs"] <= metrics["epochs_run"] + 1  # the schedule was planned to end with the budget
    assert not T.patience_counts(C.TrainConfig(scheduler_name="poly"), 0.4)
    assert T.patience_counts(C.TrainConfig(scheduler_name="poly"), 0.5)
    assert T.patience_counts(C.TrainConfig(scheduler_name="plateau"), 0.0)


def test_registries_define_the_allowed_names() -> None:
    assert C.CHOICES["scheduler_name"] is R.SCHEDULERS and set(R.SCHEDULERS) >= {"poly", "cosine", "cosine_restarts"}
    assert {name: spec.out_channels for name, spec in R.LOSSES.items()} == {"dicece": 2, "dice": 2, "bce": 1}
    assert C.TrainConfig(loss_name="bce").out_channels == 1 and C.TrainConfig().scheduler_name == "poly"
    with pytest.raises(ValueError, match="unknown scheduler_name 'cosine_warm'.*poly, cosine, cosine_restarts"):
        C.TrainConfig(scheduler_name="cosine_warm")


def test_auto_values_wait_for_the_plan_and_parse_from_text() -> None:
    """ "auto" is kept until plan.resolve_auto; the command line's text values parse per field type."""
    cfg = C.TrainConfig(roi_size="auto", batch_size="auto", model_name="auto", num_samples="auto")
    assert (cfg.roi_size, cfg.batch_size, cfg.num_samples) == ("auto", "auto", "auto")
    assert C.TrainConfig(roi_size="[16, 16, 16]", batch_size="3", num_samples="2", model_name="unet").roi_size == (
        16,
        16,
        16,
    )
    assert C._flag_type(2)("auto") == "auto" and C._flag_type(2)("3") == 3
    with pytest.raises(ValueError, match="num_samples must be >= 1"):
        C.TrainConfig(num_samples=0)


def test_cli_uses_the_notebook_parameter_names(tiny_config: dict) -> None:
    argv = []
    for key, value in {**tiny_config, "max_epochs": 1}.items():
        argv += [f"--{key}", value if isinstance(value, str) else json.dumps(value)]
    assert T.main(argv)["epochs_run"] == 1


@pytest.mark.parametrize(
    "override, message",
    [
        ({"model_name": "vnet"}, "unknown model_name 'vnet'"),
        ({"loss_name": "focal"}, "unknown loss_name 'focal'.*dicece, dice, bce"),
        ({"roi_size": [18, 16, 16]}, r"divisible by \(4, 4, 4\)"),
        (
            {"model_kwargs": {"channels": [4, 8, 16], "strides": [[2, 2, 1], 2]}, "roi_size": [16, 16, 7]},
            r"divisible by \(4, 4, 2\)",
        ),
        ({"amp": "maybe"}, "unknown amp 'maybe'"),
        ({"device": "tpu"}, "unknown device 'tpu'"),
    ],
)
def test_bad_parameters_are_clear_errors(tiny_config: dict, override: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        T.run_training({**tiny_config, **override})


def test_roi_larger_than_the_volume_trains_and_says_so(tiny_config: dict, capsys: pytest.CaptureFixture) -> None:
    """A patch larger than a small volume is padded (training crop and sliding window), with a printed note."""
    metrics = T.run_training({**tiny_config, "roi_size": [32, 32, 32], "max_epochs": 1})
    assert metrics["epochs_run"] == 1
    assert "is larger than the preprocessed volume" in capsys.readouterr().out


def test_postprocessing_is_decided_on_the_validation_cases(tiny_config: dict) -> None:
    """Flip TTA, then nnU-Net's rule (the largest component), each kept only if it raises the validation Dice."""
    import nibabel as nib
    import numpy as np

    from heartseg_utils import inference
    from heartseg_utils.metrics import dice

    metrics = T.run_training({**tiny_config, "amp": "off"})
    run = Path(tiny_config["run_dir"])
    post = json.loads((run / "postprocessing.json").read_text())
    assert post["cases"] == 2 and 0.0 <= post["val_dice_raw"] <= 1.0
    assert post["keep_largest"] == (post["val_dice_largest_component"] > post["val_dice_raw"])
    assert metrics["keep_largest"] == post["keep_largest"] == inference.run_keep_largest(run)
    # the decision scores the masks inference makes: predict_case on each validation scan, on the scan's own grid
    model, config = inference.load_run(run, "cpu")
    cases = inference.split_items(run)  # the validation scans of split.json
    scores = [
        dice(inference.predict_case(model, config, c["image"], tta=tta)["mask"], nib.load(c["label"]).get_fdata())
        for c in cases
        for tta in (False, True)
    ]
    assert post["val_dice_no_tta"] == pytest.approx(np.mean(scores[0::2]), abs=1e-5)
    assert post["val_dice_tta"] == pytest.approx(np.mean(scores[1::2]), abs=1e-5)
    assert post["tta"] == (post["val_dice_tta"] > post["val_dice_no_tta"]) == inference.run_tta(run)
    assert post["tta_axes"] == [0, 1] and metrics["tta"] == post["tta"]
    (run / "postprocessing.json").write_text(json.dumps({**post, "keep_largest": not post["keep_largest"]}))
    assert inference.run_keep_largest(run) != post["keep_largest"]
    (run / "postprocessing.json").unlink()
    assert inference.run_keep_largest(run) is False  # a run without a decision: raw masks


def test_resume_without_a_checkpoint_is_a_clear_error(tiny_config: dict) -> None:
    with pytest.raises(FileNotFoundError, match="last.pt does not exist"):
        T.run_training({**tiny_config, "resume": True})


def _checksums(folder: Path) -> dict[str, str]:
    import hashlib

    return {
        str(p.relative_to(folder)): hashlib.md5(p.read_bytes()).hexdigest() for p in folder.rglob("*") if p.is_file()
    }


def test_a_finished_run_is_refused_unless_resumed_or_overwritten(tiny_config: dict) -> None:
    """A second run into a finished run's folder changes nothing; overwrite=True replaces only the run's files."""
    cfg = {**tiny_config, "max_epochs": 1, "amp": "off"}
    T.run_training(cfg)
    run = Path(cfg["run_dir"])
    (run / "notes.txt").write_text("the user's own file")
    before = _checksums(run)
    with pytest.raises(runs.RunDirError, match=r"already holds a training run .*resume=True.*overwrite=True"):
        T.run_training({**cfg, "seed": 7})
    assert _checksums(run) == before
    with pytest.raises(runs.RunDirError, match=r"records another run: seed 1 -> 7"):
        T.run_training({**cfg, "seed": 7, "resume": True})
    assert _checksums(run) == before
    T.run_training({**cfg, "seed": 7, "overwrite": True})
    assert json.loads((run / "config.json").read_text())["seed"] == 7 and (run / "notes.txt").exists()
    assert not (run / runs.LOCK).exists(), "the lock is released when the run ends"


def test_a_bad_dataset_creates_no_run_dir(tiny_config: dict, tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    run = tmp_path / "never"
    with pytest.raises(Exception, match="dataset.json"):
        T.run_training({**tiny_config, "data_dir": str(tmp_path / "empty"), "run_dir": str(run)})
    assert not run.exists()


def test_a_second_writer_is_refused_and_a_dead_ones_lock_is_taken_over(tiny_config: dict) -> None:
    import socket

    run = Path(tiny_config["run_dir"])
    run.mkdir(parents=True)
    lock = {"pid": os.getpid(), "host": socket.gethostname(), "since": "2026-12-01 10:00:00"}
    (run / runs.LOCK).write_text(json.dumps(lock))  # a live process (this one) holds it
    with pytest.raises(runs.RunDirError, match=rf"being written by process {os.getpid()} .*delete .*heartseg.lock"):
        T.run_training({**tiny_config, "max_epochs": 1})
    assert sorted(p.name for p in run.iterdir()) == [runs.LOCK]
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    (run / runs.LOCK).write_text(json.dumps({**lock, "pid": dead.pid}))  # left by a killed run
    assert T.run_training({**tiny_config, "max_epochs": 1})["epochs_run"] == 1
    assert not (run / runs.LOCK).exists()


def test_resume_with_more_epochs_replans_the_schedule(tiny_config: dict) -> None:
    """The old behaviour trained the new epoch at lr 0: the finished 1-epoch poly schedule had reached zero."""
    cfg = {**tiny_config, "max_epochs": 1, "amp": "off", "scheduler_name": "poly", "lr": 0.01}
    T.run_training(cfg)
    T.run_training({**cfg, "max_epochs": 3, "resume": True})
    lrs = [float(row["lr"]) for row in _history(Path(cfg["run_dir"]))]
    assert lrs[0] == 0.01 and lrs[1] == pytest.approx(0.01 * R.poly_decay(1 / 3)) and lrs[2] > 0


def test_an_unknown_qc_shift_is_refused_before_anything_is_written(tmp_path: Path) -> None:
    from heartseg_utils.train import run_training

    with pytest.raises(ValueError, match=r"qc_shifts: unknown shift\(s\) \['blur'\]"):
        run_training({"data_dir": str(tmp_path / "none"), "run_dir": str(tmp_path / "run"), "qc_shifts": ["blur"]})
    assert not (tmp_path / "run").exists()
    with pytest.raises(ValueError, match="qc_shifts must be a list"):
        run_training({"run_dir": str(tmp_path / "run"), "qc_shifts": "inversion"})
