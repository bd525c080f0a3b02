"""Does a code change keep training identical? Train notebook 03's default run at two commits and compare.

Usage (issue 19: the default run's history.csv before and after a restructuring, same machine and seed)::

    git worktree add ../before <old commit> --detach
    PYTHONPATH=../before python -m heartseg_utils.train --run_dir /tmp/before --amp off --time_budget_min 0
    python -m heartseg_utils.train --run_dir /tmp/after --amp off --time_budget_min 0
    python benchmarks/compare_history.py /tmp/before /tmp/after

``--amp off`` (or ``on``) fixes the precision, which ``auto`` would decide by a timed probe, and
``--time_budget_min 0`` plans exactly as the default 4.5 does but always runs ``max_epochs``. Every column of
history.csv except ``epoch_seconds`` (a wall time) must match, and so must metrics.json's best Dice and epoch.
"""

from __future__ import annotations

import argparse
import csv
import json
from pathlib import Path


def rows(run_dir: Path) -> list[dict[str, str]]:
    """history.csv without its wall-time column."""
    with (run_dir / "history.csv").open() as f:
        return [{k: v for k, v in row.items() if k != "epoch_seconds"} for row in csv.DictReader(f)]


def main() -> int:
    """Print the comparison; exit 1 where the two runs differ."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("before", type=Path)
    parser.add_argument("after", type=Path)
    args = parser.parse_args()
    a, b = rows(args.before), rows(args.after)
    first = next((i for i, (x, y) in enumerate(zip(a, b)) if x != y), None)
    ma, mb = (json.loads((d / "metrics.json").read_text()) for d in (args.before, args.after))
    same = len(a) == len(b) and first is None
    print(f"epochs: {len(a)} vs {len(b)}; first differing epoch: {'none' if first is None else first + 1}")
    for key in ("best_val_dice", "best_epoch", "amp"):
        print(f"{key}: {ma.get(key)} vs {mb.get(key)}")
        same &= ma.get(key) == mb.get(key)
    print("identical" if same else "DIFFERENT")
    return 0 if same else 1


if __name__ == "__main__":
    raise SystemExit(main())
