"""Benchmark CPU plans under one time budget: which layout learns most in the minutes a learner has?

Trains several configurations of the same data for the same budget (each with notebook 03's settings otherwise)
and reports, per configuration, the layout, the measured step, the epochs and optimiser steps it got, the best
validation Dice (mean and worst case) and the Dice it had reached after 80, 160, 320 and 640 steps (the
steps-vs-Dice curve). Rows:

    today        the previous planner: a voxel budget in proportion to the minutes (64^3 volume / 48^3 patch at
                 4.5 minutes), MONAI UNet
    planned      what ``run_training`` plans now: every planned value "auto" (measured step times)
    scale:<s>    the planner's layout with the 3D MONAI UNet at budget scale s (plan.CPU_SCALES; 1 = 48^3 at 2.5 mm):
                 a larger s gives finer voxels and a bigger patch, so fewer steps fit the budget
    2d:<s>       that layout with a 2D UNet: in-plane kernels only and no pooling of the thick (slice) axis
                 (architecture.planned_network(..., "2d"), what CPU plans use for thick slices)
    dynunet:<s>  that layout with nnU-Net's DynUNet (3 x 3 x 1 kernels on levels where the slices are thick)

Usage:
    python benchmarks/bench_budget.py --variant short_axis --time_budget_min 12 --rows today scale:1.41 2d:2.83
        [--n_train 20] [--out runs/bench_budget]

Run it with ``HEARTSEG_NO_BF16=1`` to plan and train as a CPU without native bf16 does. Each row appends one JSON
line to ``<out>/rows.jsonl``; the markdown table printed at the end goes into docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
STEP_MARKS = (80, 160, 320, 640)


def _explicit(layout: dict, name: str, kwargs: dict) -> dict:
    """Run settings that fix a layout (nothing left to the planner)."""
    return {
        "pixdim": layout["pixdim"],
        "roi_size": layout["roi_size"],
        "batch_size": layout["batch_size"],
        "num_samples": layout["num_samples"],
        "model_name": name,
        "model_kwargs": kwargs,
    }


def _at_scale(fp: dict, scale: float) -> dict:
    """The planner's CPU layout (spacing, patch, UNet) at one budget scale of plan.CPU_SCALES."""
    from heartseg_utils import fingerprints, plan

    fixed = {"pixdim": None, "roi_size": None, "divisor": None, "num_samples": 2, "gpu_memory_gib": None}
    return plan.layout(fp, fingerprints.target_spacing(fp)[0], "cpu", scale, {**fixed, "model": ("unet", {})})


def row_settings(row: str, fp: dict, args: argparse.Namespace) -> dict:
    """The training settings of one benchmark row: "planned", "today", "scale:<s>", "2d:<s>" or "dynunet:<s>"."""
    from heartseg_utils import architecture, plan

    if row == "planned":
        return {"pixdim": "auto", "roi_size": "auto", "batch_size": "auto", "model_name": "auto"}
    kind, scale = ("scale", plan.budget_scale(args.time_budget_min)) if row == "today" else row.split(":")
    layout = _at_scale(fp, float(scale))  # the previous planner = the 3D UNet at the budget-proportional scale
    strides = architecture.pooling_strides(layout["roi_size"], layout["pixdim"])  # as fit_patch planned them
    network = {"scale": "unet", "2d": "2d", "dynunet": "dynunet"}[kind]
    name, kw = architecture.planned_network(strides, layout["pixdim"], thick_slice_network=network)
    return _explicit(layout, name, kw)


def steps_curve(history: list[dict], steps_per_epoch: int) -> dict:
    """Best mean validation Dice reached within each of STEP_MARKS optimiser steps (None = not reached)."""
    out = {}
    for mark in STEP_MARKS:
        seen = [float(h["val_dice"]) for h in history if int(h["epoch"]) * steps_per_epoch <= mark]
        out[f"dice@{mark}"] = (
            round(max(seen), 3) if seen and int(history[-1]["epoch"]) * steps_per_epoch >= mark else None
        )
    return out


def run_row(row: str, folder: Path, args: argparse.Namespace) -> dict:
    """Train one row and return its table entry."""
    from heartseg_utils import data, fingerprints, models, train

    items = data.validate_dataset(folder)
    n_val = max(1, round(0.2 * len(items)))
    settings = row_settings(row, fingerprints.fingerprint(items), args)
    tag = row.replace(":", "_") + ("_nobf16" if os.environ.get("HEARTSEG_NO_BF16") else "")
    run_dir = Path(args.out) / f"{args.variant}_{tag}"
    t0 = time.perf_counter()
    metrics = train.run_training(
        {
            "data_dir": str(folder), "run_dir": str(run_dir), "time_budget_min": args.time_budget_min,
            "max_epochs": args.max_epochs, "device": "cpu", "progress": False, "seed": args.seed,
            "overwrite": True, **settings,
        }
    )  # fmt: skip
    config = json.loads((run_dir / "config.json").read_text())
    with (run_dir / "history.csv").open() as f:
        history = list(csv.DictReader(f))
    per_epoch = -(-(len(items) - n_val) // config["batch_size"])
    best = max(history, key=lambda h: float(h["val_dice"]))
    timing = (
        (json.loads((run_dir / "plan.json").read_text()).get("timing") or {})
        if (run_dir / "plan.json").is_file()
        else {}
    )
    return {
        "variant": args.variant, "row": row, "bf16_off": bool(os.environ.get("HEARTSEG_NO_BF16")),
        "pixdim": config["pixdim"], "roi_size": config["roi_size"], "model": config["model_name"],
        "parameters": models.count_parameters(models.get_model(config["model_name"], **config["model_kwargs"])),
        "planned_steps": (timing.get("chosen") or {}).get("steps"),
        "epochs": metrics["epochs_run"], "steps": metrics["epochs_run"] * per_epoch,
        "epoch_s": round(metrics["train_seconds"] / max(metrics["epochs_run"], 1), 2),
        "minutes": round((time.perf_counter() - t0) / 60, 2), "train_minutes": round(metrics["train_seconds"] / 60, 2),
        "amp": metrics["amp"], "best_val_dice": metrics["best_val_dice"],
        "best_val_dice_min": metrics["best_val_dice_min"],
        "best_epoch": metrics["best_epoch"], "last_val_dice_min": float(history[-1]["val_dice_min"]),
        "best_row_min": float(best["val_dice_min"]), **steps_curve(history, per_epoch),
    }  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--variant", default="short_axis")
    parser.add_argument("--rows", nargs="+", default=["today", "planned"])
    parser.add_argument("--n_train", type=int, default=20)
    parser.add_argument("--time_budget_min", type=float, default=12.0)
    parser.add_argument("--max_epochs", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=str(REPO / "runs" / "bench_budget"))
    args = parser.parse_args()

    from heartseg_utils import synthetic

    folder = synthetic.make_synthetic_dataset(
        Path(args.out) / "data" / args.variant, n_train=args.n_train, n_test=0, seed=args.seed, variant=args.variant
    )
    rows = []
    for row in args.rows:
        rows.append(run_row(row, folder, args))
        with (Path(args.out) / "rows.jsonl").open("a") as f:
            f.write(json.dumps(rows[-1]) + "\n")
        print(json.dumps(rows[-1]), flush=True)
    machine = platform.processor() or platform.machine()
    print(f"\n{args.variant}, {args.n_train} cases, {args.time_budget_min:g} min, {machine}, {os.cpu_count()} cores\n")
    keys = list(rows[0])
    print("| " + " | ".join(keys) + " |\n|" + "---|" * len(keys))
    for r in rows:
        print("| " + " | ".join(str(r[k]) for k in keys) + " |")


if __name__ == "__main__":
    main()
