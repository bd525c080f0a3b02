"""Distributed training: 2 CPU processes under torchrun (gloo), and the command line that torchrun launches.

The slow tests launch ``python -m torch.distributed.run`` twice on loopback: once through tests/ddp_probe.py
(the real ``train`` plus a record of what each process drew and ended with) and once through
``-m heartseg_utils.train --resume true`` to continue a copy of that run taken after its first epochs.
"""

from __future__ import annotations

import ast
import csv
import dataclasses
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest
import torch

from heartseg_utils import config as C
from heartseg_utils import distributed
from heartseg_utils import train as T

REPO = Path(__file__).resolve().parents[1]
TORCHRUN_TIMEOUT_S = 300  # a hung rendezvous or collective fails the test instead of blocking CI
SNAPSHOT_AFTER = 10  # the probe copies run_dir after this epoch: an "interrupted" run to resume
# a configuration that learns on tiny_msd in seconds: per process and step 1 volume x 4 patches of 32 x 32 x 24
DDP_CONFIG = dict(
    max_epochs=12,
    seed=1,
    progress=False,
    amp="off",  # explicit: "auto" times a probe, and the resumed launch must decide the same
    pixdim=[2.5, 2.5, 2.74],
    roi_size=[32, 32, 24],
    batch_size=1,
    num_samples=4,
    val_fraction=0.34,
    lr=0.01,
    time_budget_min=0,
    patience=50,
    model_kwargs={"channels": [8, 16, 32], "strides": [2, 2], "num_res_units": 1},
)


def _flags(config: dict) -> list[str]:
    return [a for k, v in config.items() for a in (f"--{k}", v if isinstance(v, str) else json.dumps(v))]


def _torchrun(target: list[str], config: dict, env: dict | None = None) -> None:
    """Run ``target`` (a script or ``-m module``) in 2 processes on 127.0.0.1 with a free port; fail loudly."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nnodes=1",
        "--nproc_per_node=2",
        "--master_addr=127.0.0.1",
        f"--master_port={port}",
        *target,
        *_flags(config),
    ]
    env = {
        **os.environ,
        "OMP_NUM_THREADS": "1",
        "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]),
        **(env or {}),
    }
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=TORCHRUN_TIMEOUT_S, cwd=REPO)
    assert proc.returncode == 0, f"torchrun failed ({proc.returncode}):\n{proc.stdout[-2000:]}\n{proc.stderr[-4000:]}"


def _history(run_dir: Path) -> list[dict]:
    with (run_dir / "history.csv").open() as f:
        return [{k: v for k, v in row.items() if k != "epoch_seconds"} for row in csv.DictReader(f)]


@pytest.fixture(scope="module")
def ddp_run(tiny_msd: Path, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """One 2-process gloo run of ``train`` through the probe; returns its run_dir, config and per-rank records."""
    run = tmp_path_factory.mktemp("ddp") / "run"
    config = {**DDP_CONFIG, "data_dir": str(tiny_msd), "run_dir": str(run)}
    _torchrun([str(REPO / "tests" / "ddp_probe.py")], config, {"PROBE_SNAPSHOT_AFTER_EPOCH": str(SNAPSHOT_AFTER)})
    ranks = [json.loads((run / "probe" / f"rank{r}.json").read_text()) for r in (0, 1)]
    return {"run": run, "config": config, "ranks": ranks}


# --------------------------------------------------------------------------------------------------
# Fast: the command line and the single-process defaults


def test_notebook_03_defaults_are_the_command_line_defaults() -> None:
    """The flags of ``python -m heartseg_utils.train`` default to notebook 03's parameters cell: one source of truth."""
    nb = nbformat.read(REPO / "notebooks" / "03_train.ipynb", as_version=4)
    cell = next(c for c in nb.cells if "parameters" in c.metadata.get("tags", []))
    notebook = {s.targets[0].id: ast.literal_eval(s.value) for s in ast.parse(cell.source).body}
    parser_defaults = {f.name: f.default for f in dataclasses.fields(C.TrainConfig) if f.name in notebook}
    assert set(parser_defaults) == set(notebook), "every notebook parameter is a TrainConfig field"
    normalise = lambda v: list(v) if isinstance(v, tuple) else v  # noqa: E731 (JSON lists vs tuples)
    assert {k: normalise(v) for k, v in parser_defaults.items()} == notebook


@pytest.mark.parametrize(
    "text, value",
    [("true", True), ("True", True), ("1", True), ("false", False), ("False", False), ("0", False), ("no", False)],
)
def test_boolean_flags_parse(text: str, value: bool) -> None:
    assert C._flag_type(False)(text) is value


def test_a_bad_flag_value_stops_before_training(capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit):
        T.main(["--resume", "maybe"])
    assert "expected true or false, got 'maybe'" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        T.main(["--max_epochs", "ten"])


def test_one_process_joins_no_process_group(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    ddp = distributed.setup(torch.device("cpu"))
    assert ddp == distributed.Distributed(torch.device("cpu"), 0, 1, False) and ddp.master
    assert not torch.distributed.is_initialized() and distributed.is_master()
    net = torch.nn.Linear(2, 2)
    assert distributed.wrap(net, ddp) is net and distributed.shard([1, 2, 3], ddp) == [1, 2, 3]
    assert distributed.reduce([1.0, 2.0], ddp) == [1.0, 2.0] and distributed.broadcast("x", ddp) == "x"
    assert distributed.train_sampler([1, 2], ddp, seed=0) is None


def test_only_the_master_process_writes(monkeypatch: pytest.MonkeyPatch, tiny_config: dict) -> None:
    """The loop writes under an explicit `if master:`: a process of rank 1 trains but writes nothing, not even
    run_dir (rank 0 creates it and holds its lock)."""
    monkeypatch.setattr(distributed, "setup", lambda device: distributed.Distributed(device, rank=1, world=1))
    metrics = T.run_training({**tiny_config, "max_epochs": 1, "amp": "off"})
    assert metrics["epochs_run"] == 1 and not Path(tiny_config["run_dir"]).exists()


# --------------------------------------------------------------------------------------------------
# Slow: 2 processes with the gloo backend on the CPU


@pytest.mark.slow
def test_two_processes_train_and_write_the_contract(ddp_run: dict) -> None:
    run, ranks = ddp_run["run"], ddp_run["ranks"]
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["world_size"] == 2 and metrics["epochs_run"] == DDP_CONFIG["max_epochs"]
    assert ranks[0]["metrics"] == ranks[1]["metrics"] == metrics, "every process reaches the same decisions"
    assert {r["wrapper"] for r in ranks} == {"DistributedDataParallel"}
    for name in ("best_model.pt", "last.pt", "config.json", "split.json", "history.csv", "metrics.json"):
        assert (run / name).is_file()
    assert not list(run.glob("*.tmp*"))


@pytest.mark.slow
def test_ranks_see_disjoint_data_reshuffled_every_epoch(ddp_run: dict) -> None:
    n_train = len(json.loads((ddp_run["run"] / "split.json").read_text())["train"])
    orders = []
    for e0, e1 in zip(ddp_run["ranks"][0]["epochs"], ddp_run["ranks"][1]["epochs"]):
        assert not set(e0["indices"]) & set(e1["indices"]), "a case went to both processes in one epoch"
        assert sorted(e0["indices"] + e1["indices"]) == list(range(n_train)), "every case is used every epoch"
        assert e0["batches"] == e1["batches"] > 0, "equal step counts, or DDP's all-reduce would hang"
        orders.append(e0["indices"] + e1["indices"])
    assert len({tuple(o) for o in orders}) > 1, "set_epoch must reshuffle between epochs"


@pytest.mark.slow
def test_rank_0_checkpoint_equals_the_model_in_every_process(ddp_run: dict) -> None:
    saved = torch.load(ddp_run["run"] / "last.pt", weights_only=True)["model"]
    for rank in (0, 1):
        held = torch.load(ddp_run["run"] / "probe" / f"rank{rank}.pt", weights_only=True)
        assert held.keys() == saved.keys()
        assert all(torch.equal(held[k], saved[k]) for k in saved), f"rank {rank} holds other weights or BN statistics"


@pytest.mark.slow
def test_reduced_validation_dice_equals_one_process_validating_the_checkpoint(ddp_run: dict) -> None:
    """Each process validated half of the cases; the all-reduced mean must be the plain mean over all cases."""
    from monai.data import DataLoader, Dataset

    from heartseg_utils.inference import split_items, validate

    run = ddp_run["run"]
    saved = json.loads((run / "config.json").read_text())
    cfg = C.TrainConfig(**{f.name: saved[f.name] for f in dataclasses.fields(C.TrainConfig)})
    model = C.model_from_config(saved)
    model.load_state_dict(torch.load(run / "last.pt", weights_only=True)["model"])
    loader = DataLoader(
        Dataset(split_items(run, split="validation"), C.transforms_from_config(saved, "val")), batch_size=1
    )
    dice, _ = validate(model, loader, cfg, torch.device("cpu"), None)
    assert abs(dice - float(_history(run)[-1]["val_dice"])) < 1e-5


@pytest.mark.slow
def test_two_processes_learn_like_one(ddp_run: dict, tmp_path: Path) -> None:
    """Same data, steps and effective batch (1 process x 2 volumes vs 2 x 1): validation Dice in line."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as torchrun gives each process (OMP_NUM_THREADS=1)
    try:
        one = T.run_training({**ddp_run["config"], "run_dir": str(tmp_path / "one"), "batch_size": 2})
    finally:
        torch.set_num_threads(threads)
    two = json.loads((ddp_run["run"] / "metrics.json").read_text())
    assert one["best_val_dice"] > 0.2 and two["best_val_dice"] > 0.2, (one, two)  # both learned: epoch 1 is ~0.02
    assert abs(one["best_val_dice"] - two["best_val_dice"]) < 0.1, (one, two)  # measured: 0.265 (1 process) vs 0.245


@pytest.mark.slow
def test_resume_a_two_process_run_from_its_checkpoint(ddp_run: dict) -> None:
    """torchrun -m heartseg_utils.train --resume true continues a copy taken after epoch 10 and replays the rest."""
    snapshot = ddp_run["run"] / "probe" / f"after_epoch{SNAPSHOT_AFTER}"
    assert len(_history(snapshot)) == SNAPSHOT_AFTER
    _torchrun(["-m", "heartseg_utils.train"], {**ddp_run["config"], "run_dir": str(snapshot), "resume": True})
    assert _history(snapshot) == _history(ddp_run["run"])
    assert json.loads((snapshot / "metrics.json").read_text())["world_size"] == 2
