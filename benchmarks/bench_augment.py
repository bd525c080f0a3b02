"""Benchmark MR-artefact augmentation: does training with MONAI's MR artefacts help on scans that carry them?

Trains the same phantom twice with notebook 03's settings (its fixed reference layout: ``time_budget_min 0``,
``--max_epochs`` epochs, the seed given), once with ``mr_artefacts=False`` (today's default) and once with
``mr_artefacts=True`` (``transforms.mr_artefact_transforms``). Each run is then scored on a test set it never
saw (10 phantom cases of another seed), clean and with every test shift of ``heartseg_utils.shifts`` that keeps
the heart in view (bias field, Gibbs ringing, k-space spike, Rician noise, low contrast, inversion), and the time
per epoch is read from ``history.csv``.

Usage:
    python benchmarks/bench_augment.py [--variant default] [--max_epochs 40] [--seeds 0 1] [--out runs/bench_augment]

Appends one JSON line per run to ``<out>/rows.jsonl`` and prints the markdown table for docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import platform
from pathlib import Path

TEST_SHIFTS = ("bias_field", "gibbs", "kspace_spike", "rician", "low_contrast", "inversion")


def make_data(out: Path, variant: str) -> tuple[Path, dict[str, Path]]:
    """The training phantom (notebook 03's default: 20 cases, seed 0), the test phantom (10 cases, seed 1) and one
    shifted copy of the test phantom per test shift, made once."""
    from heartseg_utils.shifts import write_shifted
    from heartseg_utils.synthetic import make_synthetic_dataset

    src = make_synthetic_dataset(out / f"phantom_{variant}", seed=0, variant=variant)
    test = make_synthetic_dataset(out / f"test_{variant}", n_train=10, n_test=0, seed=1, variant=variant)
    shifted = {"clean": test}
    for kind in TEST_SHIFTS:
        dst = out / f"test_{variant}_{kind}"
        if not (dst / "dataset.json").is_file():
            write_shifted(test, dst, kind, seed=100)
        shifted[kind] = dst
    return src, shifted


def score(run_dir: Path, data_dir: Path) -> float:
    """Mean Dice over every labelled case of ``data_dir`` (the run's own post-processing)."""
    from heartseg_utils.inference import predict_run
    from heartseg_utils.metrics import evaluate_files

    items = predict_run(run_dir, str(data_dir), "all", keep_largest=None)
    dices = [evaluate_files(i["prediction"], i["label"])["dice"] for i in items]
    return sum(dices) / len(dices)


def epoch_seconds(run_dir: Path) -> float:
    """Mean epoch time of a run (history.csv's ``epoch_seconds``: training and validation)."""
    with open(run_dir / "history.csv") as f:
        rows = list(csv.DictReader(f))
    return sum(float(r["epoch_seconds"]) for r in rows) / len(rows)


def run_arm(src: Path, shifted: dict[str, Path], out: Path, mr: bool, seed: int, max_epochs: int) -> dict:
    """Train one arm and score it clean and on every shift."""
    from heartseg_utils.train import run_training

    run_dir = out / f"run_mr{int(mr)}_seed{seed}"
    cfg = {"data_dir": str(src), "run_dir": str(run_dir), "time_budget_min": 0, "max_epochs": max_epochs}
    metrics = run_training({**cfg, "seed": seed, "mr_artefacts": mr, "overwrite": True, "progress": False})
    row = {"mr_artefacts": mr, "seed": seed, "best_val_dice": metrics["best_val_dice"]}
    row["epoch_s"] = round(epoch_seconds(run_dir), 2)
    for kind, folder in shifted.items():
        row[kind] = round(score(run_dir, folder), 4)
        print(f"  mr_artefacts={mr} seed={seed} {kind}: {row[kind]:.3f}", flush=True)
    return row


def augmentation_ms(src: Path, repeats: int = 20) -> dict[str, float]:
    """Milliseconds the random part of the training pipeline takes per volume, without and with the MR artefacts
    (notebook 03's reference layout: 2.5 mm, 48^3 patches, 2 per volume), on one cached case."""
    import time

    import monai.transforms as mt

    from heartseg_utils.data import load_datalist
    from heartseg_utils.transforms import get_transforms

    out = {}
    for mr in (False, True):
        pipe = get_transforms("train", pixdim=(2.5, 2.5, 2.74), roi_size=(48, 48, 48), mr_artefacts=mr)
        first = next(i for i, t in enumerate(pipe.transforms) if isinstance(t, mt.Randomizable))
        cached = mt.Compose(pipe.transforms[:first])(load_datalist(src)[0])
        rest = mt.Compose(pipe.transforms[first:])
        rest.set_random_state(seed=0)
        start = time.perf_counter()
        for _ in range(repeats):
            rest(dict(cached))
        out[f"mr_artefacts={mr}"] = round((time.perf_counter() - start) / repeats * 1e3, 1)
    return out


def table(rows: list[dict]) -> str:
    """The markdown table: one line per run, Dice clean and per shift, and the epoch time."""
    cols = ["clean", *TEST_SHIFTS]
    lines = ["| mr_artefacts | seed | s/epoch | " + " | ".join(cols) + " | mean of shifts |"]
    lines.append("|" + "---|" * (len(cols) + 4))
    for r in rows:
        shifts = sum(r[k] for k in TEST_SHIFTS) / len(TEST_SHIFTS)
        cells = " | ".join(f"{r[c]:.3f}" for c in cols)
        lines.append(f"| {r['mr_artefacts']} | {r['seed']} | {r['epoch_s']:.1f} | {cells} | {shifts:.3f} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--variant", default="default")
    parser.add_argument("--max_epochs", type=int, default=40)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--out", default="runs/bench_augment")
    parser.add_argument("--time_only", action="store_true", help="only time the augmentations (no training)")
    args = parser.parse_args()
    out = Path(args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    src, shifted = make_data(out, args.variant)
    print("random part of the training pipeline, ms per volume:", augmentation_ms(src), flush=True)
    if args.time_only:
        return
    rows = []
    for seed in args.seeds:
        for mr in (False, True):
            row = {**run_arm(src, shifted, out, mr, seed, args.max_epochs), "variant": args.variant}
            row["machine"] = f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores"
            rows.append(row)
            with open(out / "rows.jsonl", "a") as f:
                f.write(json.dumps(row) + "\n")
    print(table(rows))


if __name__ == "__main__":
    main()
