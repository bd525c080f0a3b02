"""Shared fixtures: a tiny synthetic MSD dataset, a tiny training configuration, and one in-order series run."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from tests._tiny_run import TINY

REPO = Path(__file__).resolve().parents[1]
SERIES_CELL_TIMEOUT_S = 900  # a hung cell fails the run instead of hanging CI
# Notebook 03's defaults train for the time budget (max_epochs 0), with a layout planned from a measured step: its
# Dice depends on the machine's speed. Under test the run must not: time_budget_min 0 plans notebook 03's fixed
# reference layout (never timed) and max_epochs 40 ends it, so every machine trains the same 40 epochs.
SERIES_PARAMETERS: dict[str, dict] = {"03_train": {"time_budget_min": 0, "max_epochs": 40}}
_SERIES_SECONDS: dict[str, float] = {}  # filled by `series`, printed at the end of the session


@pytest.fixture(scope="session")
def tiny_msd(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Six small phantom cases (plus one test image) in MSD layout, generated once per test session."""
    from heartseg_utils.synthetic import make_synthetic_dataset

    return make_synthetic_dataset(
        tmp_path_factory.mktemp("msd") / "Task02_Heart_tiny", n_train=6, n_test=1, seed=3, shape=(64, 64, 48)
    )


@pytest.fixture()
def tiny_config(tiny_msd: Path, tmp_path: Path) -> dict:
    """A training configuration that runs an epoch in about a second on the CPU."""
    return {**TINY, "data_dir": str(tiny_msd), "run_dir": str(tmp_path / "run"), "max_epochs": 2}


@pytest.fixture(scope="session")
def series(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """Run every numbered notebook once, in order, with its defaults, as a learner would (papermill, headless).

    All notebooks share one working folder, so notebook 04 finds notebook 03's ``runs/03_train`` exactly as
    in JupyterLab. A notebook that fails stops the series (later notebooks depend on earlier files).

    Returns:
        ``{"workdir": Path, "seconds": {name: wall s}, "executed": {name: Path}, "solutions": {name: {file:
        {"ok", "seconds", "error"}}}}``; name is e.g. ``"03_train"``. After each notebook's own cells, the same
        kernel runs every ``solutions/NN_exK.py`` of that notebook (a learner's ``%load``, done for all): the
        seconds exclude them, and the executed copy leaves that extra cell out.
    """
    import papermill

    work = tmp_path_factory.mktemp("series")
    result: dict = {"workdir": work, "seconds": {}, "executed": {}, "solutions": {}}
    for nb in sorted((REPO / "notebooks").glob("[0-9][0-9]_*.ipynb")):
        out, record = work / f"{nb.stem}_out.ipynb", work / f"{nb.stem}_solutions.json"
        t0 = time.perf_counter()
        papermill.execute_notebook(
            str(_with_solutions(nb, work / f"{nb.stem}_in.ipynb", record)),
            str(out),
            parameters=SERIES_PARAMETERS.get(nb.stem, {}),
            kernel_name="python3",
            cwd=str(work),
            progress_bar=False,
            execution_timeout=SERIES_CELL_TIMEOUT_S,
        )
        solved = json.loads(record.read_text())
        _drop_last_cell(out)  # the executed copy is the learner's notebook: the solutions' outputs stay out of it
        solution_s = sum(r["seconds"] for r in solved.values())
        result["seconds"][nb.stem] = round(time.perf_counter() - t0 - solution_s, 1)
        result["executed"][nb.stem] = out
        result["solutions"][nb.stem] = solved
    (work / "series_seconds.json").write_text(json.dumps(result["seconds"], indent=1))  # for docs/benchmarks.md
    _SERIES_SECONDS.update(result["seconds"])
    return result


SOLUTION_RUNNER = """\
import json as _json, time as _time, traceback as _traceback
_solved = {{}}
for _path in {files!r}:  # each solution in the notebook's namespace, as %load then run would
    _t0 = _time.perf_counter()
    try:
        exec(compile(open(_path).read(), _path, "exec"), get_ipython().user_ns)
        _solved[_path] = {{"ok": True}}
    except Exception:
        _solved[_path] = {{"ok": False, "error": _traceback.format_exc()[-3000:]}}
    _solved[_path]["seconds"] = round(_time.perf_counter() - _t0, 1)
open({record!r}, "w").write(_json.dumps(_solved, indent=1))
"""


def solution_files(notebook: Path) -> list[Path]:
    """The solution files of a numbered notebook: ``solutions/NN_exK.py`` with NN its number, in exercise order."""
    files = (REPO / "solutions").glob(f"{notebook.name[:2]}_ex*.py")
    return sorted(files, key=lambda p: int(p.stem.split("_ex")[1]))


def _with_solutions(notebook: Path, copy: Path, record: Path) -> Path:
    """A copy of ``notebook`` with one more cell at the end that runs its solutions and writes ``record``."""
    import nbformat

    nb = nbformat.read(str(notebook), as_version=4)
    files = [str(p) for p in solution_files(notebook)]
    nb.cells.append(nbformat.v4.new_code_cell(SOLUTION_RUNNER.format(files=files, record=str(record))))
    nbformat.write(nb, str(copy))
    return copy


def _drop_last_cell(executed: Path) -> None:
    """Remove the solution runner (the last cell) from an executed copy."""
    import nbformat

    nb = nbformat.read(str(executed), as_version=4)
    nb.cells.pop()
    nbformat.write(nb, str(executed))


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """Print the series' wall time per notebook (a figure for docs/benchmarks.md, never an assertion)."""
    if _SERIES_SECONDS:
        times = ", ".join(f"{name} {s:.0f} s" for name, s in _SERIES_SECONDS.items())
        terminalreporter.write_line(f"notebook series: {sum(_SERIES_SECONDS.values()):.0f} s ({times})")
