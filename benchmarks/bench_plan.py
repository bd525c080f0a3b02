"""Benchmark the planner: notebook 03's training on each synthetic geometry variant, planned from the data.

Usage:
    python benchmarks/bench_plan.py [--variants default thick_slice small] [--n_train 20] [--mode plan]
                                    [--time_budget_min 4.5] [--max_epochs 0] [--device auto] [--out runs/bench_plan]

Modes:
    plan       make_plan's values passed explicitly to train.run_training (works before notebook 03 plans by itself)
    auto       train.run_training with pixdim/roi_size/batch_size/model_name = "auto" (plan.resolve_auto)
    papermill  notebook 03 executed with only data_dir (and run_dir) changed: what a learner runs

Prints a markdown table (variant, plan, epochs, minutes, best validation Dice) for docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def _notebook_parameters(folder: Path, run_dir: Path, args: argparse.Namespace) -> dict:
    """data_dir and run_dir; max_epochs/time_budget_min/device only where they differ from notebook 03's defaults."""
    params = {"data_dir": str(folder), "run_dir": str(run_dir)}
    for key, default in (("max_epochs", 0), ("time_budget_min", 4.5), ("device", "auto"), ("seed", 0)):
        if getattr(args, key) != default:
            params[key] = getattr(args, key)
    return params


def run_variant(variant: str, args: argparse.Namespace) -> dict:
    """Generate one variant, train on it in the chosen mode and return the table row."""
    from heartseg_utils import data, fingerprints, plan, precision, synthetic, train

    folder = synthetic.make_synthetic_dataset(
        Path(args.out) / "data" / variant, n_train=args.n_train, n_test=0, seed=args.seed, variant=variant
    )
    run_dir = Path(args.out) / f"{variant}_{args.mode}"
    base = {
        "data_dir": str(folder),
        "run_dir": str(run_dir),
        "time_budget_min": args.time_budget_min,
        "max_epochs": args.max_epochs,
        "device": args.device,
        "progress": False,
        "seed": args.seed,
    }
    device = str(precision.resolve_device(args.device))
    p = plan.make_plan(
        fingerprints.fingerprint(data.validate_dataset(folder)), device=device, time_budget_min=args.time_budget_min
    )
    t0 = time.perf_counter()
    if args.mode == "plan":
        metrics = train.run_training(
            {
                **base,
                "pixdim": p["pixdim"],
                "roi_size": p["roi_size"],
                "batch_size": p["batch_size"],
                "num_samples": p["num_samples"],
                "model_kwargs": p["model_kwargs"],
            }
        )
    elif args.mode == "auto":
        metrics = train.run_training(
            {**base, "pixdim": "auto", "roi_size": "auto", "batch_size": "auto", "model_name": "auto"}
        )
    else:
        import papermill

        papermill.execute_notebook(
            str(REPO / "notebooks" / "03_train.ipynb"),
            str(run_dir.with_suffix(".ipynb")),
            parameters=_notebook_parameters(folder, run_dir, args),
            kernel_name="python3",
            progress_bar=False,
            cwd=str(REPO),
        )
        metrics = json.loads((run_dir / "metrics.json").read_text())
    config = json.loads((run_dir / "config.json").read_text())
    return {
        "variant": variant,
        "mode": args.mode,
        "pixdim": config["pixdim"],
        "roi_size": config["roi_size"],
        "epochs": metrics["epochs_run"],
        "minutes": round((time.perf_counter() - t0) / 60, 2),
        "train_minutes": round(metrics["train_seconds"] / 60, 2),
        "best_val_dice": metrics["best_val_dice"],
        "best_val_dice_min": metrics.get("best_val_dice_min"),
        "best_epoch": metrics["best_epoch"],
        "planned": (json.loads((run_dir / "plan.json").read_text()).get("timing") or {}).get("chosen")
        if (run_dir / "plan.json").is_file()
        else None,
        "stopped": metrics["stopped_because"],
        "device": metrics["device"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--variants", nargs="+", default=["default", "thick_slice", "small"])
    parser.add_argument("--mode", choices=("plan", "auto", "papermill"), default="plan")
    parser.add_argument("--n_train", type=int, default=20)
    parser.add_argument("--time_budget_min", type=float, default=4.5)
    parser.add_argument("--max_epochs", type=int, default=0, help="0 = no epoch limit (notebook 03's default)")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=str(REPO / "runs" / "bench_plan"))
    args = parser.parse_args()

    rows = [run_variant(v, args) for v in args.variants]
    print(
        f"\nPlanner benchmark, mode {args.mode}, {args.n_train} training cases, budget {args.time_budget_min} min, "
        f"{platform.processor() or platform.machine()}\n"
    )
    keys = list(rows[0])
    print("| " + " | ".join(keys) + " |\n|" + "---|" * len(keys))
    for row in rows:
        print("| " + " | ".join(str(row[k]) for k in keys) + " |")


if __name__ == "__main__":
    main()
