"""Notebook 05's ablation study at a larger size than its CI defaults, for docs/benchmarks.md (issue 5).

  python benchmarks/bench_ablation.py --out /tmp/ablation --n_folds 3 --max_epochs 20 --ablations all

Runs the notebook itself with papermill (the same code path as a learner), then prints ablation.csv and the
ensemble summary as markdown, with the wall time and the load average before and after.

  python benchmarks/bench_ablation.py --out /tmp/ablation --n_folds 3 --max_epochs 14 --ablations all --arm_by_arm

With ``--arm_by_arm`` the same ``crossval`` calls as the notebook run one arm at a time (notebook 05's
training defaults), and ``per_case.csv`` and the table are rewritten after every arm: a study cut short by the
clock still leaves the table of the arms it finished.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def main() -> None:
    import papermill

    from heartseg_utils.crossval import ARMS

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True, help="working folder (the study goes to <out>/runs/05_improvements)")
    parser.add_argument("--n_folds", type=int, default=3)
    parser.add_argument("--max_epochs", type=int, default=20)
    parser.add_argument("--ablations", default="all", help='"all" or comma-separated arm names')
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--arm_by_arm", action="store_true", help="crossval directly, table rewritten after each arm")
    args = parser.parse_args()
    chosen = [a for a in args.ablations.split(",") if a != "baseline"]
    arms = list(ARMS) if args.ablations == "all" else ["baseline", *chosen]
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    load0, t0 = os.getloadavg(), time.perf_counter()
    if args.arm_by_arm:
        return arm_by_arm(args, arms, out, load0, t0)
    papermill.execute_notebook(
        str(REPO / "notebooks" / "05_improvements.ipynb"),
        str(out / "05_out.ipynb"),
        parameters={"n_folds": args.n_folds, "max_epochs": args.max_epochs, "ablations": arms, "seed": args.seed},
        cwd=str(out),
        kernel_name="python3",
        progress_bar=False,
    )
    wall = time.perf_counter() - t0
    print_tables(out / "runs" / "05_improvements", wall, load0, args)


def arm_by_arm(args, arms: list[str], out: Path, load0, t0: float) -> None:
    """Train and score one arm at a time with notebook 05's defaults; rewrite per_case.csv and ablation.csv each."""
    import ast

    import nbformat
    import pandas as pd

    from heartseg_utils import crossval

    nb = nbformat.read(REPO / "notebooks" / "05_improvements.ipynb", as_version=4)
    cell = next(c for c in nb.cells if "parameters" in c.metadata.get("tags", []))
    p = {s.targets[0].id: ast.literal_eval(s.value) for s in ast.parse(cell.source).body}
    config = dict(
        data_dir=p["data_dir"],
        max_epochs=args.max_epochs,
        seed=args.seed,
        device=p["device"],
        lr=p["lr"],
        pixdim=p["pixdim"],
        roi_size=p["roi_size"],
        batch_size=p["batch_size"],
        num_samples=p["num_samples"],
        progress=False,
        holdout_fraction=p["holdout_fraction"],
        patience=args.max_epochs,
        time_budget_min=0,
    )
    root, rows = out / "runs" / "05_improvements", []
    for arm in arms:
        t = time.perf_counter()
        crossval.train_folds(config, root, arm, args.n_folds)
        rows += crossval.evaluate_folds(root, arm, args.n_folds)
        per_case = pd.DataFrame(rows)
        per_case.to_csv(root / "per_case.csv", index=False)
        means = per_case.groupby(["arm", "fold"])["dice"].mean().unstack("fold")
        pd.DataFrame(crossval.ablation_table({a: means.loc[a].tolist() for a in means.index})).to_csv(
            root / "ablation.csv", index=False
        )
        print(f"{arm}: {time.perf_counter() - t:.0f} s (load {os.getloadavg()[0]:.2f})", flush=True)
    pd.DataFrame(crossval.evaluate_ensemble(root, "baseline", args.n_folds)).to_csv(root / "ensemble.csv", index=False)
    print_tables(root, time.perf_counter() - t0, load0, args)


def print_tables(root: Path, wall: float, load0, args) -> None:
    """Print ablation.csv and the ensemble summary of a finished study as markdown tables."""
    import pandas as pd

    table = pd.read_csv(root / "ablation.csv")
    ens = pd.read_csv(root / "ensemble.csv").groupby("member")["dice"].agg(["mean", "std", "count"])
    print(json.dumps({"wall_s": round(wall, 1), "load_before": load0, "load_after": os.getloadavg(), **vars(args)}))
    print("| arm | folds | Dice mean ± sd | paired gain (points) | 95 % CI | exceeds noise |")
    print("|---|---|---|---|---|---|")
    for r in table.itertuples():
        print(
            f"| {r.arm} | {r.n} | {r.dice_mean:.3f} ± {r.dice_sd:.3f} | {100 * r.gain_mean:+.2f} | "
            f"[{100 * r.gain_ci_low:+.2f}, {100 * r.gain_ci_high:+.2f}] | {'yes' if r.exceeds_noise else 'no'} |"
        )
    print("\n| holdout member | mean Dice | sd | cases |\n|---|---|---|---|")
    for member, r in ens.iterrows():
        print(f"| {member} | {r['mean']:.3f} | {r['std']:.3f} | {int(r['count'])} |")


if __name__ == "__main__":
    main()
