"""Time the whole series headless with its defaults against the budgets the notebooks state (issue 25).

  python benchmarks/bench_series.py --out /tmp/series            # every numbered notebook, in order
  python benchmarks/bench_series.py --out /tmp/series --bf16     # without HEARTSEG_NO_BF16 (the machine decides)

Each notebook runs with papermill exactly as a learner's Run All would (notebook 03 with its real 4.5-minute
budget, not the test series' fixed 40 epochs), in one working folder, so 04 finds 03's run. By default
``HEARTSEG_NO_BF16=1`` forces the "no native bf16" branch (fp32 everywhere, as on most laptops). After a
notebook's own cells, one extra cell reads the kernel's CPU seconds (``resource.getrusage``, the kernel and its
children), then the same kernel runs every ``solutions/NN_exK.py`` of it, as the test series does; neither is in
the wall time of the notebook's own cells (papermill's per-cell timestamps).

The budget of each notebook is read from its "**Time budget:**" line ("under N minutes", or 03's "at most
`time_budget_min` of training ... plus at most N minutes"), and the margin is budget / wall - 1: issue 25 asks
for at least 25 %. Prints a markdown table for docs/benchmarks.md and writes ``series.json``; the executed copies
(``NN_name_out.ipynb``) stay in ``--out`` to be read.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import sys
import time
from datetime import datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.conftest import _drop_last_cell, _with_solutions  # noqa: E402  (the test series' solution runner)

CPU_CELL = """\
import json as _json, resource as _resource
_usage = [_resource.getrusage(w) for w in (_resource.RUSAGE_SELF, _resource.RUSAGE_CHILDREN)]
open({path!r}, "w").write(_json.dumps(sum(u.ru_utime + u.ru_stime for u in _usage)))
"""
UNDER = re.compile(r"\*\*Time budget:\*\*[^.]*?under (\d+(?:\.\d+)?) minutes?")
PLUS = re.compile(
    r"\*\*Time budget:\*\*.*?`time_budget_min`.*?\((\d+(?:\.\d+)?) minutes by default\), plus at most (\d+)"
)


def stated_budget_s(notebook: Path) -> float | None:
    """The wall-clock budget the notebook states at its top, in seconds (None if it states none we can read)."""
    import nbformat

    text = " ".join(c.source for c in nbformat.read(str(notebook), as_version=4).cells[:3] if c.cell_type == "markdown")
    text = " ".join(text.split())
    if m := PLUS.search(text):
        return 60 * (float(m.group(1)) + float(m.group(2)))
    if m := UNDER.search(text):
        return 60 * float(m.group(1))
    return None


def own_cells_wall_s(executed: Path) -> float:
    """From the first cell's start to the last own cell's end (papermill's timestamps; the CPU cell excluded)."""
    import nbformat

    cells = [c for c in nbformat.read(str(executed), as_version=4).cells if c.cell_type == "code"][:-1]
    stamps = [c.metadata.get("papermill", {}) for c in cells]
    start = min(datetime.fromisoformat(s["start_time"]) for s in stamps if s.get("start_time"))
    end = max(datetime.fromisoformat(s["end_time"]) for s in stamps if s.get("end_time"))
    return (end - start).total_seconds()


def run_one(notebook: Path, work: Path) -> dict:
    """Execute one notebook (+ the CPU cell, + its solutions) in ``work``; its figures."""
    import nbformat
    import papermill

    cpu_path, record = work / f"{notebook.stem}_cpu.json", work / f"{notebook.stem}_solutions.json"
    staged = _with_solutions(notebook, work / f"{notebook.stem}_in.ipynb", record)
    nb = nbformat.read(str(staged), as_version=4)
    nb.cells.insert(len(nb.cells) - 1, nbformat.v4.new_code_cell(CPU_CELL.format(path=str(cpu_path))))
    nbformat.write(nb, str(staged))
    out, t0 = work / f"{notebook.stem}_out.ipynb", time.perf_counter()
    papermill.execute_notebook(str(staged), str(out), kernel_name="python3", cwd=str(work), progress_bar=False)
    total = time.perf_counter() - t0
    _drop_last_cell(out)  # the solution runner; the CPU cell stays last and is left out of the wall time
    solved = json.loads(record.read_text())
    wall, budget = own_cells_wall_s(out), stated_budget_s(notebook)
    return {
        "notebook": notebook.stem,
        "wall_s": round(wall, 1),
        "kernel_cpu_s": round(json.loads(cpu_path.read_text()), 1),
        "budget_s": budget,
        "margin": None if budget is None else round(budget / wall - 1, 2),
        "solutions_s": round(sum(r["seconds"] for r in solved.values()), 1),
        "solutions_ok": all(r["ok"] for r in solved.values()),
        "failed_solutions": [p for p, r in solved.items() if not r["ok"]],
        "papermill_total_s": round(total, 1),
    }


def markdown(rows: list[dict], head: dict) -> str:
    lines = [
        f"Machine: {head['machine']}, {head['cores']} cores, load average before the run {head['load_before']}; "
        f"HEARTSEG_NO_BF16={head['no_bf16']}; started {head['started']}.",
        "",
        "| notebook | wall of its own cells (s) | kernel CPU s | stated budget (s) | margin | solutions (s, all ok) |",
        "|---|---|---|---|---|---|",
    ]
    for r in rows:
        budget = "none" if r["budget_s"] is None else f"{r['budget_s']:.0f}"
        margin = "n/a" if r["margin"] is None else f"{r['margin']:+.0%}"
        ok = "yes" if r["solutions_ok"] else f"NO: {', '.join(r['failed_solutions'])}"
        lines.append(
            f"| {r['notebook']} | {r['wall_s']:.0f} | {r['kernel_cpu_s']:.0f} | {budget} | {margin} | "
            f"{r['solutions_s']:.0f}, {ok} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True, help="a new working folder (runs, executed copies, series.json)")
    parser.add_argument("--only", nargs="*", default=None, help="notebook number prefixes, e.g. 01 03")
    parser.add_argument("--bf16", action="store_true", help="do not set HEARTSEG_NO_BF16 (the machine decides)")
    args = parser.parse_args()
    work = Path(args.out).expanduser().resolve()
    work.mkdir(parents=True, exist_ok=bool(args.only))  # --only may continue a series in its folder
    if not args.bf16:
        os.environ["HEARTSEG_NO_BF16"] = "1"  # the kernels inherit it
    head = {
        "machine": f"{platform.machine()} {platform.processor() or platform.platform()}",
        "cores": os.cpu_count(),
        "load_before": " ".join(f"{x:.2f}" for x in os.getloadavg()),
        "no_bf16": os.environ.get("HEARTSEG_NO_BF16", "unset"),
        "started": datetime.now().isoformat(timespec="seconds"),
    }
    rows = []
    for nb in sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb")):
        if args.only and nb.name[:2] not in args.only:
            continue
        rows.append(run_one(nb, work))
        print(json.dumps(rows[-1]), flush=True)
        partial = work / "series_partial.json"  # every finished notebook, in case a later one fails
        partial.write_text(json.dumps(rows, indent=1))
    head["load_after"] = " ".join(f"{x:.2f}" for x in os.getloadavg())
    saved = work / "series.json"
    if saved.is_file():  # an --only run replaces its notebooks' rows and keeps the others
        done = {r["notebook"] for r in rows}
        rows = sorted(
            [r for r in json.loads(saved.read_text())["rows"] if r["notebook"] not in done] + rows,
            key=lambda r: r["notebook"],
        )
    saved.write_text(json.dumps({"head": head, "rows": rows}, indent=1))
    print(markdown(rows, head))


if __name__ == "__main__":
    main()
