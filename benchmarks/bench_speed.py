"""CPU speed figures for docs/benchmarks.md (issue 13): precision, threads and sliding-window inference.

  python benchmarks/bench_speed.py epochs     # notebook 03's default run in fp32 ("before") and with amp="auto"
  python benchmarks/bench_speed.py inference  # sliding window over a 160 x 160 x 96 volume, fp32 vs bf16
  python benchmarks/bench_speed.py threads    # one training step with 1 vs 2 intra-op threads, fp32 vs bf16

Each mode prints markdown rows with the machine's CPU model, core count and load average, so the figures can be
pasted into docs/benchmarks.md together with the conditions they were measured under. Both arms of a comparison
run in the same process on the same machine, one after the other, so their ratio is what to quote.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path

import torch


def machine() -> str:
    """One line naming the CPU, the cores PyTorch uses and the current load average."""
    model = platform.processor() or "cpu"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    threads = torch.get_num_threads()
    return f"{model}, {os.cpu_count()} cores, torch {torch.__version__}, {threads} threads, load {load:.1f}"


def epochs(max_epochs: int) -> None:
    """Notebook 03's default run twice, fp32 (amp "off", the series' old behaviour) and amp "auto"."""
    import pandas as pd

    from heartseg_utils.config import TrainConfig
    from heartseg_utils.train import run_training

    rows = []
    for amp in ("off", "auto"):
        run = Path(tempfile.mkdtemp()) / f"run_{amp}"
        cfg = TrainConfig(run_dir=str(run), amp=amp, max_epochs=max_epochs, progress=False)
        metrics = run_training(cfg)
        hist = pd.read_csv(run / "history.csv")
        rows.append(
            {
                "amp": amp,
                "decision": metrics["amp"],
                "reason": metrics.get("amp_reason", ""),
                "epochs": metrics["epochs_run"],
                "median_epoch_s": float(hist["epoch_seconds"].iloc[1:].median()),
                "train_s": metrics["train_seconds"],
                "best_dice": metrics["best_val_dice"],
                "best_epoch": metrics["best_epoch"],
                "stopped": metrics["stopped_because"],
            }
        )
        print(json.dumps(rows[-1]), flush=True)
    print(f"\nmachine: {machine()}\n")
    print("| amp | chosen | epochs | median epoch (s) | train_seconds | best val Dice (epoch) | stopped |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['amp']} | {r['decision']} | {r['epochs']} | {r['median_epoch_s']:.2f} | {r['train_s']:.1f} | "
            f"{r['best_dice']:.3f} ({r['best_epoch']}) | {r['stopped']} |"
        )
    print(f"\nepoch-time ratio fp32 / auto: {rows[0]['median_epoch_s'] / rows[1]['median_epoch_s']:.2f}x")


def _time(fn, repeats: int) -> float:
    """Median wall seconds of ``fn()`` over ``repeats`` calls, after one warm-up call."""
    fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def inference(repeats: int, shape: tuple[int, int, int]) -> None:
    """Sliding-window inference of one preprocessed volume with notebook 03's network, fp32 vs bf16 autocast."""
    from monai.inferers import sliding_window_inference

    from heartseg_utils.config import TrainConfig
    from heartseg_utils.models import get_model
    from heartseg_utils.precision import autocast

    cfg = TrainConfig()
    roi = cfg.roi_size if not isinstance(cfg.roi_size, str) else (48, 48, 48)
    model = get_model("unet").eval()
    image = torch.randn(1, 1, *shape)
    print(
        f"machine: {machine()}\nvolume {shape}, roi {tuple(roi)}, sw_batch_size {cfg.sw_batch_size}, "
        f"overlap {cfg.sw_overlap}\n"
    )
    print("| precision | median seconds | ratio to fp32 |")
    print("|---|---|---|")
    base = None
    for name, dtype in (("fp32", None), ("bf16 autocast", torch.bfloat16)):

        def run(dtype=dtype):
            with torch.no_grad(), autocast(torch.device("cpu"), dtype):
                sliding_window_inference(image, roi, cfg.sw_batch_size, model, overlap=cfg.sw_overlap)

        seconds = _time(run, repeats)
        base = base or seconds
        print(f"| {name} | {seconds:.2f} | {seconds / base:.2f} |", flush=True)


def threads(repeats: int) -> None:
    """One training step of notebook 03's network at 48^3 x 2 with 1 and 2 intra-op threads, fp32 and bf16."""
    from heartseg_utils.models import get_model
    from heartseg_utils.precision import autocast
    from heartseg_utils.recipe import make_loss

    model, loss_fn = get_model("unet"), make_loss("dicece")
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    x, y = torch.randn(2, 1, 48, 48, 48), (torch.rand(2, 1, 48, 48, 48) > 0.9).long()
    print(f"machine: {machine()}\n")
    print("| threads | precision | median step (s) |")
    print("|---|---|---|")
    for n in (1, 2):
        torch.set_num_threads(n)
        for name, dtype in (("fp32", None), ("bf16 autocast", torch.bfloat16)):

            def step(dtype=dtype):
                opt.zero_grad(set_to_none=True)
                with autocast(torch.device("cpu"), dtype):
                    logits = model(x)
                loss_fn(logits.float(), y).backward()
                opt.step()

            print(f"| {n} | {name} | {_time(step, repeats):.3f} |", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("mode", choices=("epochs", "inference", "threads"))
    parser.add_argument("--max_epochs", type=int, default=40, help="epochs mode: notebook 03's default is 40")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--shape", type=int, nargs=3, default=(160, 160, 96))
    args = parser.parse_args()
    if args.mode == "epochs":
        epochs(args.max_epochs)
    elif args.mode == "inference":
        inference(args.repeats, tuple(args.shape))
    else:
        threads(args.repeats)


if __name__ == "__main__":
    main()
