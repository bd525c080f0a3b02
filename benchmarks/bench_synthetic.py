"""Benchmark the synthetic phantom: generation speed on one core, label statistics, threshold baselines.

Usage: python benchmarks/bench_synthetic.py [--cases 10] [--shape 128 128 96] [--variant NAME of synthetic.VARIANTS]
Prints a markdown table for docs/benchmarks.md.
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_var] = "1"  # one core, set before numpy is imported

import argparse  # noqa: E402
import platform  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
from scipy import ndimage  # noqa: E402
from skimage.filters import threshold_otsu  # noqa: E402

from heartseg_utils import synthetic  # noqa: E402


def dice(a: np.ndarray, b: np.ndarray) -> float:
    return 2.0 * np.logical_and(a, b).sum() / max(a.sum() + b.sum(), 1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", type=int, default=10, help="cases to generate and score")
    parser.add_argument("--shape", type=int, nargs=3, default=synthetic.DEFAULT_SHAPE)
    parser.add_argument("--write-cases", type=int, default=4, help="cases written as a dataset (NIfTI, gzip)")
    parser.add_argument(
        "--variant",
        default="default",
        choices=sorted(synthetic.VARIANTS),
        help="geometry variant (--shape applies to the default only)",
    )
    args = parser.parse_args()
    shape = tuple(args.shape)
    variant = args.variant

    def draw(seed: int) -> synthetic.PhantomCase:
        return (
            synthetic.generate_case(seed, shape=shape)
            if variant == "default"
            else synthetic.generate_variant_case(seed, variant)
        )

    synthetic.generate_case(0, shape=(32, 32, 24))  # warm-up (imports, caches)
    seconds, fractions, otsu, best, grown = [], [], [], [], []
    for seed in range(args.cases):
        start = time.perf_counter()
        case = draw(seed)
        seconds.append(time.perf_counter() - start)
        x, y = case.image.astype(np.float32), case.label.astype(bool)
        fractions.append(100 * y.mean())
        otsu.append(dice(x > threshold_otsu(x), y))
        sweep = np.linspace(np.percentile(x, 1), np.percentile(x, 99.9), 50)
        best.append(max(dice(x > t, y) for t in sweep))  # oracle: threshold chosen with the labels
        myo = np.median(x[case.tissues == 7])
        components, _ = ndimage.label(x > (np.median(x[y]) + myo) / 2)  # region growing from the atrium
        grown.append((components == np.bincount(components[y]).argmax()).sum() / y.sum())

    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        synthetic.make_synthetic_dataset(
            Path(tmp) / "ds",
            n_train=args.write_cases,
            n_test=0,
            **({"shape": shape} if variant == "default" else {"variant": variant}),
        )
        write = (time.perf_counter() - start) / args.write_cases

    geometry = f"shape {shape}" if variant == "default" else f"variant {variant}"
    print(
        f"Synthetic phantom, {geometry}, {args.cases} cases, 1 thread, "
        f"{platform.processor() or platform.machine()}, numpy {np.__version__}\n"
    )
    print("| metric | mean | min | max |\n|---|---|---|---|")
    for name, values, fmt in [
        ("generation s/case (1 core)", seconds, ".3f"),
        ("left-atrium voxels %", fractions, ".2f"),
        ("Dice, Otsu threshold", otsu, ".3f"),
        ("Dice, best of 50 thresholds (oracle)", best, ".3f"),
        ("region grown from LA / LA volume", grown, ".1f"),
    ]:
        print(f"| {name} | {np.mean(values):{fmt}} | {np.min(values):{fmt}} | {np.max(values):{fmt}} |")
    print(f"| generate + write NIfTI pair s/case | {write:.3f} | | |")


if __name__ == "__main__":
    main()
