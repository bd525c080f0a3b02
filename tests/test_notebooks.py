"""Notebooks: output policy, the skeleton of docs/contract.md, and the series run headless in order with papermill.

The fast tests read the committed ``.ipynb`` files only. The ``slow`` ones execute notebooks headless with
papermill, exactly as a user would from the command line. The session fixture ``series`` (conftest.py) runs
every numbered notebook once, in order, with its defaults, in one working folder; the tests of notebooks 03,
04, ... read what that run left there (e.g. ``runs/03_train``) instead of running a notebook again.
"""

from __future__ import annotations

import ast
import csv
import io
import json
import re
import tokenize
from pathlib import Path

import nbformat
import pytest

from heartseg_utils.config import QC_SHIFTS

REPO = Path(__file__).resolve().parents[1]
NOTEBOOK_DIR = REPO / "notebooks"
NOTEBOOKS = sorted(NOTEBOOK_DIR.glob("*.ipynb"))
NUMBERED = [p for p in NOTEBOOKS if re.match(r"\d\d_", p.name)]
NB01 = NOTEBOOK_DIR / "01_explore_data.ipynb"
NB03 = NOTEBOOK_DIR / "03_train.ipynb"
CONTRACT_FILES = ("best_model.pt", "last.pt", "config.json", "split.json", "history.csv", "metrics.json", "qc.json")
METRIC_KEYS = {"best_val_dice", "best_epoch", "epochs_run", "train_seconds", "device", "amp"}
MAX_CODE_LINES = 25  # docs/contract.md asks for about 15; this is the hard cap
CELL_TIMEOUT_S = 900  # a hung cell fails the test instead of hanging it (training takes ~5 min on 2 cores)


def _read(path: Path) -> nbformat.NotebookNode:
    return nbformat.read(str(path), as_version=4)


def _markdown(nb: nbformat.NotebookNode) -> str:
    return "\n\n".join(c.source for c in nb.cells if c.cell_type == "markdown")


def _code_cells(nb: nbformat.NotebookNode) -> list:
    return [c for c in nb.cells if c.cell_type == "code"]


def _parameters_cells(nb: nbformat.NotebookNode) -> list:
    return [c for c in _code_cells(nb) if "parameters" in c.metadata.get("tags", [])]


def _count_exercises(nb: nbformat.NotebookNode) -> int:
    """Distinct exercise numbers after the Exercises heading, up to the next level-1/2 heading.

    Accepts both layouts in use: a numbered list (``1. ...``) and ``**Exercise 1.**`` paragraphs.
    """
    text = _markdown(nb)
    start = re.search(r"(?m)^#{1,6}\s+Exercises\b.*$", text)
    if start is None:
        return 0
    rest = text[start.end() :]
    end = re.search(r"(?m)^#{1,2}\s", rest)
    section = rest[: end.start()] if end else rest
    numbers = re.findall(r"(?m)^\s*(\d+)\.\s", section) + re.findall(r"\*\*Exercise\s+(\d+)", section)
    return len(set(numbers))


SOLUTIONS = REPO / "solutions"
LOAD_LINE = re.compile(r"(?m)^# %load \.\./solutions/(\d\d_ex\d+\.py)\s*$")  # commented: Run All skips it


def _solution_loads(nb: nbformat.NotebookNode) -> list[str]:
    """The solution files the exercise cells load on demand (their commented ``# %load ../solutions/...`` lines)."""
    return [name for cell in _code_cells(nb) for name in LOAD_LINE.findall(cell.source)]


def _count_solutions(nb: nbformat.NotebookNode) -> int:
    """Solutions: exercise cells whose commented ``%load`` line names a file that exists in ``solutions/``."""
    return sum((SOLUTIONS / name).is_file() for name in _solution_loads(nb))


def _execute(notebook: Path, output: Path, cwd: Path, parameters: dict | None = None) -> nbformat.NotebookNode:
    import papermill

    return papermill.execute_notebook(
        str(notebook),
        str(output),
        parameters=parameters or {},
        kernel_name="python3",
        cwd=str(cwd),
        progress_bar=False,
        execution_timeout=CELL_TIMEOUT_S,
    )


# --------------------------------------------------------------------------------------------------
# Fast: what is committed


def test_there_are_numbered_notebooks() -> None:
    assert NB01 in NUMBERED and NB03 in NUMBERED


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_output_policy(path: Path) -> None:
    """README's policy: committed notebooks carry no outputs and no execution counts."""
    nb = _read(path)
    nbformat.validate(nb)
    for i, cell in enumerate(_code_cells(nb)):
        assert cell.outputs == [], f"{path.name}: code cell {i} has outputs; strip them before committing"
        assert cell.execution_count is None, f"{path.name}: code cell {i} has an execution count"
    assert nb.metadata.get("kernelspec", {}).get("name") == "python3", f"{path.name}: kernelspec must be python3"


@pytest.mark.parametrize("path", NUMBERED, ids=lambda p: p.name)
def test_skeleton(path: Path) -> None:
    """Workshop readiness (docs/contract.md conventions): title, learning goals, CPU and GPU time budgets, imports
    cell, Summary, >= 3 exercises each with a solution, 'What to try next', short cells."""
    nb = _read(path)
    first = nb.cells[0]
    assert first.cell_type == "markdown" and re.match(r"#\s+\S", first.source), "first cell must be a '# ' title"
    text = _markdown(nb)
    assert re.search(r"you will learn|learning goals", text, re.IGNORECASE), "no learning goals"
    budget = re.search(r"Time budget.*?(?:\n\s*\n|\Z)", text, re.DOTALL)
    assert budget, "no time budget"
    assert "CPU" in budget.group(0) and "GPU" in budget.group(0), "the time budget must state CPU cores and a GPU"
    assert re.search(r"(?m)^#{1,6}\s+Summary\b", text), "no Summary heading"
    assert re.search(r"(?m)^#{1,6}\s+Exercises\b", text), "no Exercises heading"
    n_exercises = _count_exercises(nb)
    assert n_exercises >= 3, "fewer than 3 exercises"
    assert _count_solutions(nb) >= n_exercises, f"{n_exercises} exercises but {_count_solutions(nb)} solutions"
    assert re.search(r"(?m)^#{1,6}\s+What to try next\b", text), "no 'What to try next' heading"
    imports = _code_cells(nb)[0].source
    assert "__version__" in imports and "device" in imports, "the first code cell must print versions and the device"
    for i, cell in enumerate(_code_cells(nb)):
        n = len(cell.source.splitlines())
        assert n <= MAX_CODE_LINES, f"code cell {i} has {n} lines (cap {MAX_CODE_LINES}): split it"


@pytest.mark.parametrize("path", NUMBERED, ids=lambda p: p.name)
def test_parameters_cell_is_flat_literals(path: Path) -> None:
    """docs/contract.md: exactly one 'parameters' cell of `name = literal  # comment` lines, no logic."""
    cells = _parameters_cells(_read(path))
    assert len(cells) == 1, f"expected exactly one code cell tagged 'parameters', found {len(cells)}"
    source = cells[0].source
    commented = {
        tok.start[0] for tok in tokenize.generate_tokens(io.StringIO(source).readline) if tok.type == tokenize.COMMENT
    }
    tree = ast.parse(source)
    assert tree.body, "the parameters cell is empty"
    for stmt in tree.body:
        line = source.splitlines()[stmt.lineno - 1]
        assert isinstance(stmt, ast.Assign) and len(stmt.targets) == 1 and isinstance(stmt.targets[0], ast.Name), (
            f"not a plain `name = value` assignment: {line!r}"
        )
        ast.literal_eval(stmt.value)  # raises for anything but a literal (no calls, names or arithmetic)
        assert commented & set(range(stmt.lineno, stmt.end_lineno + 1)), f"parameter without a comment: {line!r}"


@pytest.mark.parametrize("path", NUMBERED, ids=lambda p: p.name)
def test_papermill_sees_every_parameter(path: Path) -> None:
    """`papermill --help-notebook` skips a line with a second '=' (e.g. in its comment): keep comments '='-free."""
    import papermill

    cell = _parameters_cells(_read(path))[0]
    assigned = {s.targets[0].id for s in ast.parse(cell.source).body}
    unseen = assigned - set(papermill.inspect_notebook(str(path)))
    assert not unseen, f"papermill cannot parse the lines of {sorted(unseen)}: remove the '=' from their comments"


def test_notebook_03_parameter_contract() -> None:
    """docs/contract.md's papermill contract: these names (and defaults) are what users, CI and tests rely on."""
    cell = _parameters_cells(_read(NB03))[0]
    values = {s.targets[0].id: ast.literal_eval(s.value) for s in ast.parse(cell.source).body}
    required = {
        "data_dir",
        "run_dir",
        "max_epochs",
        "time_budget_min",
        "seed",
        "device",
        "amp",
        "model_name",
        "loss_name",
        "roi_size",
        "batch_size",
        "lr",
        "resume",
    }
    assert required <= set(values), f"missing: {sorted(required - set(values))}"
    assert (
        values["data_dir"],
        values["run_dir"],
        values["seed"],
        values["device"],
        values["amp"],
        values["model_name"],
        values["loss_name"],
        values["resume"],
    ) == ("", "runs/03_train", 0, "auto", "auto", "auto", "dicece", False)
    from heartseg_utils.config import TrainConfig

    TrainConfig(**values)  # every parameter is a TrainConfig field and the defaults are valid


# --------------------------------------------------------------------------------------------------
# Slow: papermill runs


@pytest.mark.slow
def test_the_series_runs_in_order_headless(series: dict) -> None:
    """Every numbered notebook ran, in order, with its defaults (the `series` fixture stops at the first failure)."""
    assert list(series["executed"]) == [p.stem for p in NUMBERED]
    for name, path in series["executed"].items():
        assert path.is_file(), name


@pytest.fixture(scope="module")
def trained_run_dir(series: dict) -> Path:
    """Notebook 03's run_dir from the in-order series run (`papermill notebooks/03_train.ipynb out.ipynb`)."""
    return series["workdir"] / "runs" / "03_train"


@pytest.mark.slow
def test_notebook_03_defaults_fulfil_the_run_dir_contract(trained_run_dir: Path) -> None:
    import torch

    from heartseg_utils.config import model_from_config

    missing = [f for f in CONTRACT_FILES if not (trained_run_dir / f).is_file()]
    assert not missing, f"run_dir lacks {missing}"
    metrics = json.loads((trained_run_dir / "metrics.json").read_text())
    assert METRIC_KEYS <= set(metrics), f"metrics.json lacks {sorted(METRIC_KEYS - set(metrics))}"
    with (trained_run_dir / "history.csv").open() as f:
        assert len(list(csv.DictReader(f))) == metrics["epochs_run"]
    config = json.loads((trained_run_dir / "config.json").read_text())
    model = model_from_config(config)
    model.load_state_dict(torch.load(trained_run_dir / "best_model.pt", weights_only=True)["model"], strict=True)
    assert 1 <= metrics["best_epoch"] <= metrics["epochs_run"]


def test_notebook_03_fits_its_review_threshold_with_failed_shifted_copies(trained_run_dir: Path) -> None:
    """The default run's qc.json: its validation cases and a copy of each per default shift; the threshold is placed
    between a failure and a higher score (not the no-failure fallback), and it catches every failure it saw."""
    record = json.loads((trained_run_dir / "qc.json").read_text())
    n_val = len(record["validation"])
    assert [r["kind"] for r in record["shifted"]] == [k for k in QC_SHIFTS for _ in range(n_val)]
    assert record["threshold"]["n_cases"] == n_val * (1 + len(QC_SHIFTS)) and record["threshold"]["n_failures"] >= 1
    assert record["threshold"]["reason"].startswith("halfway between the highest-scoring failure")
    assert record["threshold"]["failures_caught"] == record["threshold"]["n_failures"]


@pytest.mark.slow
def test_notebook_03_defaults_reach_the_target_dice(trained_run_dir: Path) -> None:
    """The issue's target for the CI-sized defaults (synthetic phantoms, 2 CPU cores, ~5 minutes)."""
    metrics = json.loads((trained_run_dir / "metrics.json").read_text())
    # conftest's series runs 03 with time_budget_min=0 and max_epochs=40: the same plan and epochs on any machine
    assert metrics["stopped_because"] in ("max_epochs", "early_stopping"), metrics["stopped_because"]
    assert metrics["best_val_dice"] >= 0.80, (
        f"defaults reached a best validation Dice of {metrics['best_val_dice']:.3f} in {metrics['epochs_run']} "
        f"epochs (stopped by {metrics['stopped_because']}, precision {metrics['amp']})"
    )


@pytest.mark.slow
def test_notebook_03_trains_on_the_given_data_dir(tiny_msd: Path, tmp_path: Path) -> None:
    from heartseg_utils import data

    _execute(
        NB03,
        tmp_path / "03_tiny.ipynb",
        tmp_path,
        {"data_dir": str(tiny_msd), "max_epochs": 1, "pixdim": [2.5, 2.5, 2.74], "roi_size": [16, 16, 16]},
    )
    split = json.loads((tmp_path / "runs" / "03_train" / "split.json").read_text())
    assert Path(split["dataset_dir"]).resolve() == tiny_msd.resolve()
    cases = {item["case"] for item in data.load_datalist(tiny_msd)}
    assert sorted(split["train"] + split["validation"]) == sorted(cases)
    assert json.loads((tmp_path / "runs" / "03_train" / "metrics.json").read_text())["epochs_run"] == 1


@pytest.mark.slow
def test_notebook_03_rejects_a_bad_parameter(tmp_path: Path) -> None:
    from papermill.exceptions import PapermillExecutionError

    with pytest.raises(PapermillExecutionError, match="unknown model_name"):
        _execute(NB03, tmp_path / "03_bad.ipynb", tmp_path, {"model_name": "vnet"})
    assert not (tmp_path / "runs").exists(), "a bad parameter must fail before anything is written"


NB04 = NOTEBOOK_DIR / "04_evaluate.ipynb"
EVAL_COLUMNS = ["case", "dice", "iou", "precision", "recall", "hd95_mm", "assd_mm", "volume_ml_pred", "volume_ml_true"]
EVAL_COLUMNS += ["quality_score", "needs_review", "review_reasons"]  # the run's QC (qc.json), section 7.4


@pytest.mark.slow
def test_notebook_04_evaluates_the_notebook_03_run(trained_run_dir: Path) -> None:
    """04 after 03, as a user runs them: evaluation.csv, evaluation_summary.json and NIfTI predictions."""
    import nibabel as nib
    import numpy as np
    import pandas as pd

    from heartseg_utils import data

    # the series already ran 04 with its defaults (run_dir "runs/03_train" in the same working folder)
    table = pd.read_csv(trained_run_dir / "evaluation.csv")
    assert list(table.columns) == EVAL_COLUMNS
    split = json.loads((trained_run_dir / "split.json").read_text())
    assert sorted(table["case"]) == sorted(split["validation"])
    summary = json.loads((trained_run_dir / "evaluation_summary.json").read_text())
    assert summary["n_cases"] == len(table) and summary["dice"] == pytest.approx(table["dice"].mean())
    assert summary["dice"] > 0.5 and summary["n_empty_pred"] == 0, summary  # a trained model, not a collapsed one
    images = {it["case"]: it for it in data.load_datalist(split["dataset_dir"])}
    for row in table.itertuples():
        pred = nib.load(trained_run_dir / "predictions" / f"{row.case}.nii.gz")
        image, label = nib.load(images[row.case]["image"]), nib.load(images[row.case]["label"])
        assert pred.shape == image.shape[:3] and np.allclose(pred.affine, image.affine, atol=1e-5)
        p, t = np.asanyarray(pred.dataobj) != 0, np.asanyarray(label.dataobj) != 0
        assert row.dice == pytest.approx(2 * (p & t).sum() / (p.sum() + t.sum()))  # Dice recomputed from the files


@pytest.mark.slow
def test_notebook_04_without_a_run_says_run_notebook_03(tmp_path: Path) -> None:
    from papermill.exceptions import PapermillExecutionError

    with pytest.raises(PapermillExecutionError, match="run notebook 03 first"):
        _execute(NB04, tmp_path / "04_bad.ipynb", tmp_path, {"run_dir": str(tmp_path / "no_such_run")})


@pytest.mark.slow
def test_notebook_04_skips_the_test_section_without_imagesTs(trained_run_dir: Path, tmp_path: Path) -> None:
    """imagesTs/ is optional in the MSD layout: notebook 04 says so in one sentence and finishes."""
    import shutil

    run = tmp_path / "run"
    shutil.copytree(trained_run_dir, run, ignore=shutil.ignore_patterns("predictions", "evaluation*"))
    source = Path(json.loads((run / "split.json").read_text())["dataset_dir"])
    no_test = tmp_path / "no_test"
    no_test.mkdir()
    for sub in ("imagesTr", "labelsTr"):
        (no_test / sub).symlink_to(source / sub)
    meta = json.loads((source / "dataset.json").read_text())
    meta.update(test=[], numTest=0)
    (no_test / "dataset.json").write_text(json.dumps(meta))
    nb = _execute(
        NB04,
        tmp_path / "04_no_test.ipynb",
        tmp_path,
        {"run_dir": str(run), "data_dir": str(no_test), "cases_to_show": 1},
    )
    assert "This dataset has no test images" in _outputs_text(nb)
    assert (run / "evaluation.csv").is_file()


def _outputs_text(nb: nbformat.NotebookNode) -> str:
    """Everything an executed notebook printed: streams, plain-text results and error messages."""
    parts = []
    for cell in _code_cells(nb):
        for out in cell.get("outputs", []):
            if out.output_type == "stream":
                parts.append(out.text)
            elif out.output_type in ("execute_result", "display_data"):
                parts.append(out.data.get("text/plain", ""))
            elif out.output_type == "error":
                parts.append(f"{out.ename}: {out.evalue}")
    return "\n".join(parts)


NB06_FAILURES = {  # what each section must have produced, by running code, in the series run
    "NaN loss from a learning rate far too high": r"FloatingPointError: loss became (nan|inf) at step",
    "the gradient-norm log": r"gradient norm per step: [\d.e+ ]+",
    "NaN from a blank scan z-scored by hand": r"z-score by hand: [\d,]+ NaN voxels",
    "the blank scan refused by validate_dataset": r"blank_image: DatasetError: Image .* is blank",
    "the sanity check on an all-foreground mask": r"implausibly large for a left atrium",
    "a bilinear label refused": r"bilinear_label: DatasetError: Label .* holds values",
    "a nearest-neighbour label accepted": r"nearest_label: validate_dataset finds nothing wrong",
    "a reoriented label refused": r"label_reoriented: DatasetError: Affine mismatch",
    "a flipped label that only the overlay shows": r"label_flipped: validate_dataset finds nothing wrong",
    "a measured peak memory": r"estimate \d+ MiB \| measured \d+ MiB",
    "under-fitting read from history.csv": r"under-fitting: neither curve moves",
    "over-fitting read from history.csv": r"over-fitting: validation Dice stopped improving",
    "what early stopping did": r"stopped because (early_stopping|max_epochs) after \d+ epochs; best_model\.pt = epoch",
}


@pytest.mark.slow
def test_notebook_06_produces_every_failure_by_running_code(series: dict) -> None:
    """Issue 6: each failure in notebook 06 comes from running code (the series run), not from pasted output."""
    text = _outputs_text(_read(series["executed"]["06_debugging"]))
    missing = [name for name, pattern in NB06_FAILURES.items() if not re.search(pattern, text)]
    assert not missing, f"notebook 06's outputs lack: {missing}"
    # the all-foreground signature of reference 002: recall 1.0 and precision = the foreground fraction
    fraction = float(re.search(r"atrium = ([\d.]+) of the voxels", text).group(1))
    share, dice, precision, recall = map(
        float, re.search(r"threshold 0\.05\s+([\d.]+)\s+([\d.]+)\s+([\d.]+)\s+([\d.]+)", text).groups()
    )
    assert recall == 1.0 and share > 0.99
    assert precision == pytest.approx(fraction, rel=0.1) and dice == pytest.approx(2 * fraction, rel=0.1)
    # the over-fit is real: the network learnt (unseen-case Dice well above an untrained model's ~0.01) and
    # fits its training volume far better than unseen ones
    own, unseen, best = map(
        float,
        re.search(
            r"last epoch: Dice ([\d.]+) on its training volume, ([\d.]+) on unseen "
            r"cases \(best ([\d.]+)",
            text,
        ).groups(),
    )
    assert best >= 0.3 and own - unseen >= 0.15, (own, unseen, best)
    # the doubled squashing of section 2.1 marks every voxel, as in reference 002
    assert re.search(r"sigmoid\(softmax probability\) > 0\.3\s+1\.0+\s", text)


NB05 = NOTEBOOK_DIR / "05_improvements.ipynb"
ABLATION_COLUMNS = [
    "arm",
    "n",
    "dice_mean",
    "dice_sd",
    "gain_mean",
    "gain_sd",
    "gain_ci_low",
    "gain_ci_high",
    "exceeds_noise",
]


@pytest.mark.slow
def test_notebook_05_measures_its_arms_from_fold_runs(series: dict) -> None:
    """The series ran 05 with its defaults: ablation.csv is computed from the fold runs it left in run_root."""
    import pandas as pd

    cell = _parameters_cells(_read(NB05))[0]
    params = {s.targets[0].id: ast.literal_eval(s.value) for s in ast.parse(cell.source).body}
    root = series["workdir"] / params["run_root"]
    table = pd.read_csv(root / "ablation.csv")
    assert list(table.columns) == ABLATION_COLUMNS and list(table["arm"]) == params["ablations"]
    assert (table["n"] == params["n_folds"]).all() and table["dice_mean"].between(0, 1).all()
    assert table[["dice_sd", "gain_sd", "gain_ci_low", "gain_ci_high"]].notna().all().all()
    per_case = pd.read_csv(root / "per_case.csv")
    for row in table.itertuples():  # every number in the table comes from the per-case scores of the runs
        folds = per_case[per_case["arm"] == row.arm].groupby("fold")["dice"].mean()
        assert row.dice_mean == pytest.approx(folds.mean())
    for k in range(params["n_folds"]):
        assert (root / "baseline" / f"fold_{k}" / "best_model.pt").is_file()
    assert (root / "ablation.png").stat().st_size > 0
    ensemble = pd.read_csv(root / "ensemble.csv")
    assert set(ensemble["member"]) == {"ensemble"} | {f"fold_{k}" for k in range(params["n_folds"])}


# --------------------------------------------------------------------------------------------------
# Fast: what a learner reads


RUNS_CODE = re.compile(r"%load|%run|solutions/|exec\(")  # what would run a solution file


@pytest.mark.parametrize("path", NUMBERED, ids=lambda p: p.name)
def test_no_solution_runs_on_run_all(path: Path) -> None:
    """Run All must not run a solution: solutions live in ``solutions/NN_exK.py``, and the notebook only names them
    in comments (``# %load ../solutions/NN_exK.py``, one per exercise); no code cell holds a solution itself."""
    nb = _read(path)
    for i, cell in enumerate(_code_cells(nb)):
        live = [line for line in cell.source.splitlines() if not line.lstrip().startswith("#")]
        assert not [line for line in live if RUNS_CODE.search(line)], f"code cell {i} runs a solution: {live}"
        assert not cell.source.lstrip().startswith("# Solution"), f"code cell {i} is a solution cell"
        assert not cell.metadata.get("jupyter", {}).get("source_hidden"), f"code cell {i} hides code"
    loads = _solution_loads(nb)
    own = sorted(p.name for p in SOLUTIONS.glob(f"{path.name[:2]}_ex*.py"))
    assert sorted(loads) == own and len(set(loads)) == len(loads), f"loaded {loads}, files {own}"
    assert len(loads) >= _count_exercises(nb), f"{_count_exercises(nb)} exercises, {len(loads)} solutions"


def test_every_solution_file_belongs_to_a_notebook() -> None:
    numbers = {p.name[:2] for p in NUMBERED}
    strays = [
        p.name for p in SOLUTIONS.glob("*.py") if p.name[:2] not in numbers or not re.match(r"\d\d_ex\d+", p.stem)
    ]
    assert not strays, f"solution files without a notebook: {strays}"


@pytest.mark.slow
def test_every_solution_runs_in_ci_and_none_on_the_default_run(series: dict) -> None:
    """The series ran each notebook with its defaults, then every one of its solution files in the same kernel
    (conftest.py): every solution must finish without an error, and in the default run itself the exercise
    cells (a comment and the commented %load line) printed nothing."""
    expected = sorted(str(p) for p in SOLUTIONS.glob("[0-9][0-9]_ex*.py"))
    ran = {f: r for solved in series["solutions"].values() for f, r in solved.items()}
    assert sorted(ran) == expected, "some solution files were not run"
    failed = {Path(f).name: r["error"] for f, r in ran.items() if not r["ok"]}
    assert not failed, "\n\n".join(f"{name}:\n{error}" for name, error in failed.items())
    for name, executed in series["executed"].items():
        for i, cell in enumerate(_code_cells(_read(executed))):
            if LOAD_LINE.search(cell.source):
                assert not cell.outputs, f"{name}: exercise cell {i} printed something on the default run"


PROJECT_WORDS = {  # words about how the project is run, which mean nothing to a learner
    r"\bthe issue\b": "refers to a project issue",
    r"\bissues? ?#?\d+\b": "refers to a project issue by number",
    r"\bthis issue\b": "refers to a project issue",
    r"STYLE\.md": "a file outside the repository",
    r"/work/": "a path outside the repository",
    r"shared/reference": "a path outside the repository (say 'reference 002')",
    r"\bthe lead\b|\b(this|a|the) session\b|\bhelpers? (session|branch)": "a project role",
    r"\d ?% CI\b|\bCI\s*\[": "'CI' means continuous integration in this series: write 'confidence interval'",
}


@pytest.mark.parametrize("path", NUMBERED, ids=lambda p: p.name)
def test_no_project_internal_words(path: Path) -> None:
    """Prose and code comments speak to the learner, not about the project's issues, roles or files outside it."""
    nb = _read(path)
    hits = []
    for i, cell in enumerate(nb.cells):
        text = cell.source
        for pattern, why in PROJECT_WORDS.items():
            for m in re.finditer(pattern, text, flags=re.IGNORECASE):
                hits.append(f"cell {i}: {m.group(0)!r} ({why})")
    assert not hits, "\n".join(hits)


@pytest.mark.parametrize("path", NUMBERED, ids=lambda p: p.name)
def test_curves_read_for_a_level_have_titles_and_fixed_limits(path: Path) -> None:
    """A validation-Dice curve is read for its level (does it peak, does it fall): an auto-scaled axis turns noise
    into a peak, so every cell that plots val_dice sets a title and the y limits."""
    for i, cell in enumerate(_code_cells(_read(path))):
        if "val_dice" in cell.source and ".plot(" in cell.source:
            assert "title" in cell.source, f"code cell {i} plots val_dice without a title"
            assert re.search(r"ylim|set_ylim", cell.source), f"code cell {i} plots val_dice without fixed y limits"


@pytest.mark.slow
def test_notebook_05_reading_is_written_from_its_own_table(series: dict) -> None:
    """The prose after the ablation table is generated from the run, so its gains are the table's gains."""
    import pandas as pd

    nb = _read(series["executed"]["05_improvements"])
    markdown = "\n".join(
        out.data["text/markdown"]
        for cell in _code_cells(nb)
        for out in cell.get("outputs", [])
        if out.output_type in ("execute_result", "display_data") and "text/markdown" in out.data
    )
    cell = _parameters_cells(_read(NB05))[0]
    params = {s.targets[0].id: ast.literal_eval(s.value) for s in ast.parse(cell.source).body}
    table = pd.read_csv(series["workdir"] / params["run_root"] / "ablation.csv")
    for row in table[table["arm"] != "baseline"].itertuples():
        assert f"`{row.arm}`" in markdown and f"by {100 * row.gain_mean:+.2f} points" in markdown, row.arm
    assert "The ensemble scored" in markdown
