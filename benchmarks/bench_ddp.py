"""1 process vs torchrun with N processes on this machine's CPU (issue 7), for docs/benchmarks.md.

  python benchmarks/bench_ddp.py --epochs 5 --nproc 2

Both runs use notebook 03's defaults (the command line's defaults) on the default dataset, with no time
budget. An epoch is one pass over every training volume in both runs: with N processes each process takes
1/N of the volumes and the effective batch is N x batch_size. Prints one markdown row per run. On a CPU-only
machine this *simulates* multi-GPU scaling with gloo processes; it says nothing about GPU speed.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def run(nproc: int, epochs: int, run_dir: Path) -> dict:
    """Train for ``epochs`` epochs with ``nproc`` processes (1 = plain python -m); return the figures."""
    flags = ["--run_dir", str(run_dir), "--max_epochs", str(epochs), "--time_budget_min", "0", "--progress", "false"]
    if nproc == 1:
        cmd = [sys.executable, "-m", "heartseg_utils.train", *flags]
    else:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        cmd = [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--nnodes=1",
            f"--nproc_per_node={nproc}",
            "--master_addr=127.0.0.1",
            f"--master_port={port}",
            "-m",
            "heartseg_utils.train",
            *flags,
        ]
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, env=os.environ.copy())
    wall = time.perf_counter() - t0
    with (run_dir / "history.csv").open() as f:
        rows = list(csv.DictReader(f))
    metrics = json.loads((run_dir / "metrics.json").read_text())
    return {
        "nproc": nproc,
        "wall_s": round(wall, 1),
        "train_seconds": metrics["train_seconds"],
        "median_epoch_s_after_first": round(statistics.median(float(r["epoch_seconds"]) for r in rows[1:]), 2),
        "val_dice_last": float(rows[-1]["val_dice"]),
        "best_val_dice": metrics["best_val_dice"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--nproc", type=int, default=2)
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp())
    load = os.getloadavg()
    results = [run(n, args.epochs, tmp / f"n{n}") for n in (1, args.nproc)]
    print(json.dumps({"results": results, "loadavg_before": load, "loadavg_after": os.getloadavg()}, indent=2))
    for r in results:
        print(
            f"| {r['nproc']} | {r['median_epoch_s_after_first']} s | {r['train_seconds']} s | {r['wall_s']} s | "
            f"{r['val_dice_last']:.3f} |"
        )


if __name__ == "__main__":
    main()
