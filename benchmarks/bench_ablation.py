"""Notebook 05's ablation study at a larger size than its CI defaults, for docs/benchmarks.md (issue 5).

  python benchmarks/bench_ablation.py --out /tmp/ablation --n_folds 3 --max_epochs 20 --ablations all

Runs the notebook itself with papermill (the same code path as a learner), then prints ablation.csv and the
ensemble summary as markdown, with the wall time and the load average before and after.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def main() -> None:
    import pandas as pd
    import papermill

    from heartseg_utils.crossval import ARMS

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True, help="working folder (the study goes to <out>/runs/05_improvements)")
    parser.add_argument("--n_folds", type=int, default=3)
    parser.add_argument("--max_epochs", type=int, default=20)
    parser.add_argument("--ablations", default="all", help='"all" or comma-separated arm names')
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    arms = list(ARMS) if args.ablations == "all" else ["baseline"] + [a for a in args.ablations.split(",") if a != "baseline"]
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    load0, t0 = os.getloadavg(), time.perf_counter()
    papermill.execute_notebook(str(REPO / "notebooks" / "05_improvements.ipynb"), str(out / "05_out.ipynb"),
                               parameters={"n_folds": args.n_folds, "max_epochs": args.max_epochs, "ablations": arms,
                                           "seed": args.seed},
                               cwd=str(out), kernel_name="python3", progress_bar=False)
    wall = time.perf_counter() - t0
    root = out / "runs" / "05_improvements"
    table = pd.read_csv(root / "ablation.csv")
    ens = pd.read_csv(root / "ensemble.csv").groupby("member")["dice"].agg(["mean", "std", "count"])
    print(json.dumps({"wall_s": round(wall, 1), "load_before": load0, "load_after": os.getloadavg(), **vars(args)}))
    print("| arm | folds | Dice mean ± sd | paired gain (points) | 95 % CI | exceeds noise |\n|---|---|---|---|---|---|")
    for r in table.itertuples():
        print(f"| {r.arm} | {r.n} | {r.dice_mean:.3f} ± {r.dice_sd:.3f} | {100 * r.gain_mean:+.2f} | "
              f"[{100 * r.gain_ci_low:+.2f}, {100 * r.gain_ci_high:+.2f}] | {'yes' if r.exceeds_noise else 'no'} |")
    print("\n| holdout member | mean Dice | sd | cases |\n|---|---|---|---|")
    for member, r in ens.iterrows():
        print(f"| {member} | {r['mean']:.3f} | {r['std']:.3f} | {int(r['count'])} |")


if __name__ == "__main__":
    main()
