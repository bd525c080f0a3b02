"""Run the numbered notebooks headless, in order, with their default parameters.

Usage: .venv/bin/python scripts/run_series.py [--only 01 03] [-p name value ...]
Executed copies go to outputs/ (git-ignored). The notebooks run with notebooks/ as the working
directory, exactly as in JupyterLab, so run folders land in notebooks/runs/ (also git-ignored).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import papermill as pm

ROOT = Path(__file__).resolve().parents[1]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", nargs="*", default=None, help="notebook number prefixes to run, e.g. 01 03")
    parser.add_argument(
        "-p",
        nargs=2,
        action="append",
        default=[],
        metavar=("NAME", "VALUE"),
        help="parameter passed to every notebook that declares it (JSON values allowed)",
    )
    args = parser.parse_args()
    out_dir = ROOT / "outputs"
    out_dir.mkdir(exist_ok=True)
    notebooks = sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))
    if args.only:
        notebooks = [nb for nb in notebooks if nb.name[:2] in args.only]
    for nb in notebooks:
        declared = pm.inspect_notebook(str(nb))
        params = {}
        for name, value in args.p:
            if name in declared:
                try:
                    params[name] = json.loads(value)
                except json.JSONDecodeError:
                    params[name] = value
        t0 = time.perf_counter()
        print(f"==> {nb.name} {params or ''}", flush=True)
        pm.execute_notebook(
            str(nb),
            str(out_dir / nb.name),
            parameters=params,
            cwd=str(nb.parent),
            progress_bar=False,
            kernel_name="python3",
        )
        print(f"    done in {time.perf_counter() - t0:.0f} s -> outputs/{nb.name}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
