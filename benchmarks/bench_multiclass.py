"""Benchmark: a planned CPU run (notebook 03's defaults) on the multi-label phantom (lv, myo, rv), per-class Dice.

Usage::

    python benchmarks/bench_multiclass.py --out runs/bench_multiclass [--time_budget_min 4.5] [--labels lv,myo,rv]

Writes ``OUT/data`` (the phantom, 20 training + 5 test cases), ``OUT/run`` (the training run) and
``OUT/bench_multiclass.json``: the machine, the run's planned layout, its time, the best validation Dice per class
(history.csv) and the per-class metrics of the saved validation label maps (as notebook 04 scores them).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", required=True)
    parser.add_argument("--labels", default="lv,myo,rv")
    parser.add_argument("--time_budget_min", type=float, default=4.5)
    parser.add_argument("--max_epochs", type=int, default=0)
    args = parser.parse_args()

    import torch

    from heartseg_utils import inference, metrics, runs
    from heartseg_utils.config import class_names
    from heartseg_utils.precision import cpu_bf16_flags
    from heartseg_utils.synthetic import make_synthetic_dataset
    from heartseg_utils.train import run_training

    out = Path(args.out)
    t0 = time.perf_counter()
    data = make_synthetic_dataset(out / "data", n_train=20, n_test=5, seed=0, labels=args.labels)
    generate_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    result = run_training(
        {
            "data_dir": str(data),
            "run_dir": str(out / "run"),
            "time_budget_min": args.time_budget_min,
            "max_epochs": args.max_epochs,
            "progress": False,
            "overwrite": True,
        }
    )
    train_wall_s = time.perf_counter() - t0
    config = runs.read_json(out / "run" / runs.CONFIG)
    t0 = time.perf_counter()
    predicted = inference.predict_run(out / "run", split="validation", keep_largest=None)
    rows = [
        {"case": it["case"], **row}
        for it in predicted
        for row in metrics.evaluate_class_files(it["prediction"], it["label"], class_names(config))
    ]
    summary = metrics.summarize_classes(rows)
    report = {
        "machine": {
            "cpu_count": os.cpu_count(),
            "torch_threads": torch.get_num_threads(),
            "cpu_bf16_flags": cpu_bf16_flags(),
            "platform": platform.platform(),
            "HEARTSEG_NO_BF16": os.environ.get("HEARTSEG_NO_BF16", ""),
        },
        "labels": args.labels,
        "generate_seconds": round(generate_s, 1),
        "train_wall_seconds": round(train_wall_s, 1),
        "evaluate_seconds": round(time.perf_counter() - t0, 1),
        "layout": {k: config[k] for k in ("model_name", "pixdim", "roi_size", "batch_size", "num_samples")},
        "metrics": result,
        "validation_per_class": {
            name: {k: s[k] for k in ("dice", "dice_sd", "hd95_mm", "volume_ml_pred", "volume_ml_true")}
            for name, s in summary["classes"].items()
        },
        "validation_macro_dice": summary["macro"]["dice"],
    }
    (out / "bench_multiclass.json").write_text(json.dumps(report, indent=1))
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
