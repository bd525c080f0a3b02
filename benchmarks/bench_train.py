"""CPU training figures for docs/benchmarks.md (issue 3).

  python benchmarks/bench_train.py convergence   # wall time to validation Dice 0.85 / 0.90 (notebook 03 defaults)
  python benchmarks/bench_train.py throughput    # this pipeline vs a plain MONAI-tutorial pipeline, epoch time ratio

Each figure is printed as a markdown row. Uses the default (synthetic) dataset.
"""

from __future__ import annotations

import argparse
import csv
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

# notebook 03's CPU defaults (keep in step with the parameters cell)
DEFAULTS = dict(pixdim=[2.5, 2.5, 2.74], roi_size=[48, 48, 48], batch_size=2, num_samples=2, lr=0.003, seed=0)


def convergence(minutes: float, max_epochs: int) -> None:
    """Train with notebook 03's defaults past its epoch limit; report when each Dice target is first reached.

    Training is deterministic by seed, so the epoch of each crossing is the same on any CPU; the seconds
    are the summed epoch times of this run (they grow with the machine's load).
    """
    from heartseg_utils.train import run_training

    run = Path(tempfile.mkdtemp()) / "run"
    metrics = run_training(
        {
            **DEFAULTS,
            "run_dir": str(run),
            "max_epochs": max_epochs,
            "patience": max_epochs,
            "time_budget_min": minutes,
            "progress": False,
        }
    )
    elapsed, reached = 0.0, {}
    with (run / "history.csv").open() as f:
        for row in csv.DictReader(f):
            elapsed += float(row["epoch_seconds"])
            for target in (0.80, 0.85, 0.90):
                if float(row["val_dice"]) >= target and target not in reached:
                    reached[target] = (int(row["epoch"]), round(elapsed, 1))
    print(json.dumps({"metrics": metrics, "reached": {str(k): v for k, v in reached.items()}}, indent=2))
    for target in (0.80, 0.85, 0.90):
        epoch, secs = reached.get(target, ("not reached", "-"))
        print(f"| validation Dice {target:.2f} | epoch {epoch} | {secs} s |")


def one_pipeline(kind: str, epochs: int) -> None:
    """Time `epochs` training epochs with one data pipeline (run in its own process for a clean peak RAM)."""
    import torch
    from monai.data import CacheDataset, DataLoader, Dataset, ThreadDataLoader, set_track_meta
    from monai.utils import set_determinism

    from heartseg_utils import data, splits
    from heartseg_utils.models import get_model
    from heartseg_utils.recipe import make_loss
    from heartseg_utils.train import train_one_epoch
    from heartseg_utils.transforms import get_transforms

    set_determinism(0)
    items, _ = splits.train_val_split(data.load_datalist(data.get_dataset_dir("")), seed=0)
    tf = get_transforms(
        "train", pixdim=DEFAULTS["pixdim"], roi_size=DEFAULTS["roi_size"], num_samples=DEFAULTS["num_samples"]
    )
    t0 = time.perf_counter()
    if kind == "heartseg":  # cached deterministic prefix, thread loader, plain tensors
        ds = CacheDataset(items, tf, cache_rate=1.0, progress=False)
        set_track_meta(False)
        loader = ThreadDataLoader(ds, batch_size=DEFAULTS["batch_size"], shuffle=True, num_workers=0)
    else:  # the MONAI tutorial pattern: no cache, multiprocess DataLoader, MetaTensor tracking on
        ds = Dataset(items, tf)
        loader = DataLoader(ds, batch_size=DEFAULTS["batch_size"], shuffle=True, num_workers=2)
    setup = time.perf_counter() - t0
    model = get_model("unet")
    opt = torch.optim.AdamW(model.parameters(), lr=DEFAULTS["lr"])
    scaler = torch.amp.GradScaler("cpu", enabled=False)
    times = []
    for _ in range(epochs):
        t0 = time.perf_counter()
        train_one_epoch(model, loader, make_loss("dicece"), opt, scaler, torch.device("cpu"), None)
        times.append(time.perf_counter() - t0)
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss + resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    print(
        json.dumps(
            {
                "kind": kind,
                "setup_s": round(setup, 2),
                "epoch_s": [round(t, 2) for t in times],
                "peak_rss_mib": round(rss / 1024),
            }
        )
    )


def throughput(epochs: int) -> None:
    out = {}
    for kind in ("tutorial", "heartseg"):
        cmd = [sys.executable, __file__, "_one", kind, str(epochs)]
        proc = subprocess.run(cmd, capture_output=True, text=True, check=True)
        out[kind] = json.loads(proc.stdout.strip().splitlines()[-1])
    mean = {k: sum(v["epoch_s"]) / len(v["epoch_s"]) for k, v in out.items()}
    print(json.dumps(out, indent=2))
    for kind in ("tutorial", "heartseg"):
        o = out[kind]
        print(f"| {kind} | {mean[kind]:.1f} s/epoch | setup {o['setup_s']} s | peak RAM {o['peak_rss_mib']} MiB |")
    print(f"| speed-up | {mean['tutorial'] / mean['heartseg']:.2f}x |")


if __name__ == "__main__":
    if sys.argv[1:2] == ["_one"]:
        one_pipeline(sys.argv[2], int(sys.argv[3]))
        sys.exit(0)
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("what", choices=["convergence", "throughput"])
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--epochs", type=int, default=3, help="throughput: epochs timed per pipeline")
    parser.add_argument("--max_epochs", type=int, default=120, help="convergence: epoch limit")
    args = parser.parse_args()
    convergence(args.minutes, args.max_epochs) if args.what == "convergence" else throughput(args.epochs)
