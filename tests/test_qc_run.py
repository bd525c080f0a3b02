"""A run's quality control: qc.json fitted at the end of training, read back, and applied by predict."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from _tiny_run import train_tiny_run

from heartseg_utils import qc, qc_run, runs

SHAPE, CENTRE = (40, 40, 30), (20, 20, 15)


def _ball(radius: float, centre=CENTRE) -> np.ndarray:
    grid = np.indices(SHAPE).astype(float)
    return ((grid - np.array(centre)[:, None, None, None]) ** 2).sum(axis=0) <= radius**2


def _over_confident_case(seed: int, radius: float = 8.0) -> dict:
    """A model that says p = 0.99 / 0.01 where a quarter of the voxels near its mask are the other class."""
    rng = np.random.default_rng(seed)
    mask = _ball(radius)
    label = mask ^ (qc.near_mask(mask, 4) & (rng.random(SHAPE) < 0.25))
    probability = np.where(mask, 0.99, 0.01).astype(np.float32)
    image = np.where(qc.near_mask(mask, 12), 100.0, 0.0).astype(np.float32)
    flipped = np.where(np.roll(mask, 1, axis=0), 0.99, 0.01).astype(np.float32)
    affine = np.diag([1.5, 1.5, 2.0, 1])
    return dict(
        case=f"c{seed}",
        probability=probability,
        mask=mask,
        label=label,
        affine=affine,
        image=image,
        members=[probability, flipped],
    )


def test_temperature_lowers_the_ece_of_an_over_confident_model() -> None:
    """p = 0.99 where 30 % of the boundary is wrong: T > 1 softens it, and the validation ECE drops."""
    calibration = qc_run.calibrate([_over_confident_case(s) for s in range(3)])
    assert calibration["fitted"] > 1.5 and calibration["value"] == calibration["fitted"]
    assert calibration["ece_after"] < 0.5 * calibration["ece_before"]


def test_to_ras_measures_a_reoriented_scan_like_the_original() -> None:
    """The same mask stored with swapped and reversed axes gives the same measurements once in RAS."""
    mask, affine = _ball(6.0, (12, 25, 10)), np.diag([1.0, 2.0, 3.0, 1.0])
    moved = np.flip(mask.transpose(1, 0, 2), axis=2)
    swap = np.array([[0, 1.0, 0, 0], [2.0, 0, 0, 0], [0, 0, -3.0, 3.0 * (SHAPE[2] - 1)], [0, 0, 0, 1]])
    (a, sa), (b, sb) = qc_run.to_ras(mask, affine), qc_run.to_ras(moved, swap)
    assert sa == sb == (1.0, 2.0, 3.0)
    np.testing.assert_array_equal(a, b)


def test_fit_writes_every_part_and_assess_scores_a_new_scan() -> None:
    cases = [_over_confident_case(s, r) for s, r in enumerate((7.0, 8.0, 9.0, 8.5))]
    reference = qc.label_statistics([c["label"] for c in cases], [(1.5, 1.5, 2.0)] * 4, [c["image"] for c in cases])
    record = qc_run.fit(cases, reference, tta=True)
    assert record["quality_model"]["n_cases"] == 4 and "tta_pairwise_dice" in record["quality_model"]["features"]
    assert record["threshold"]["n_cases"] == 4 and record["decisions"] == {"tta": True}
    assert [v["case"] for v in record["validation"]] == ["c0", "c1", "c2", "c3"]
    json.dumps(record)  # qc.json is plain JSON
    good = qc_run.assess(
        record,
        cases[1]["probability"],
        cases[1]["mask"],
        cases[1]["affine"],
        image=cases[1]["image"],
        members=cases[1]["members"],
    )
    assert good["fitted"] and 0.0 <= good["quality_score"] <= 1.0 and isinstance(good["needs_review"], bool)
    far = np.roll(cases[1]["mask"], 12, axis=1)  # the same shape, on the wrong side of the body
    moved = qc_run.assess(
        record,
        far.astype(np.float32),
        far,
        cases[1]["affine"],
        image=cases[1]["image"],
        members=[far.astype(np.float32)] * 2,
    )
    assert moved["needs_review"] and any("centroid along y" in r for r in moved["reasons"])


def _failed_copy(case: dict, kind: str, shift: int) -> dict:
    """A copy of a case whose mask slid ``shift`` voxels off its label: a confident failure (low Dice)."""
    moved = np.roll(case["mask"], shift, axis=0)
    p = np.where(moved, 0.99, 0.01).astype(np.float32)
    return {**case, "kind": kind, "mask": moved, "probability": p, "members": [p, np.roll(p, 3, axis=1)]}


def test_shifted_failures_place_the_threshold_that_good_cases_alone_cannot() -> None:
    """Four good validation cases leave the fallback threshold; failed copies give it something to sit between,
    the fit leaves each case out with its copies, and an empty copy scores 0 without entering the model."""
    cases = [_over_confident_case(s, r) for s, r in enumerate((7.0, 8.0, 9.0, 8.5))]
    reference = qc.label_statistics([c["label"] for c in cases], [(1.5, 1.5, 2.0)] * 4, [c["image"] for c in cases])
    alone = qc_run.fit(cases, reference)
    assert alone["threshold"]["reason"].startswith("no validation case had Dice") and alone["shifted"] == []
    copies = [_failed_copy(c, "slid", 10 + i) for i, c in enumerate(cases)]
    empty = {**cases[0], "kind": "erased", "mask": np.zeros(SHAPE, bool), "probability": np.zeros(SHAPE, np.float32)}
    record = qc_run.fit(cases, reference, shifted=[*copies, empty])
    assert record["quality_model"]["n_cases"] == 8  # the empty copy is not in the model
    assert record["threshold"]["n_cases"] == 9 and record["threshold"]["n_failures"] == 5
    assert record["threshold"]["reason"].startswith("halfway between the highest-scoring failure")
    assert record["threshold"]["failures_caught"] == 5
    assert [r["kind"] for r in record["shifted"]] == ["slid"] * 4 + ["erased"]
    assert record["shifted"][-1]["loo_score"] == 0.0 and record["shifted"][-1]["needs_review"]
    assert all(r["dice"] < 0.5 for r in record["shifted"]) and "4 shifted" not in record["note"]
    assert "5 shifted copies of them (erased, slid)" in record["note"]
    json.dumps(record)


def test_only_a_severe_violation_flags_by_itself() -> None:
    """Just past a range edge, or a speck beside a clean mask: a violation, not a flag; far outside: a flag."""
    labels = [_ball(r) for r in (7.0, 7.5, 8.0, 8.5)]
    reference = qc.label_statistics(labels, [(1.5, 1.5, 2.0)] * 4)
    high = reference["measurements"]["volume_ml"]["high"]
    radius = ((high * 1.03) * 1000 / (1.5 * 1.5 * 2.0) * 3 / (4 * np.pi)) ** (1 / 3)  # 3 % above the range
    mild = qc.plausibility(_ball(radius), (1.5, 1.5, 2.0), reference)
    specks = _ball(8.0)
    specks[13, 13, 9] = specks[27, 27, 9] = specks[13, 27, 21] = True  # apart from it, inside its bounding box
    speckled = qc.plausibility(specks, (1.5, 1.5, 2.0), reference)
    far = qc.plausibility(_ball(8.0, (20, 8, 15)), (1.5, 1.5, 2.0), reference)
    assert mild["violations"] and not mild["severe"]
    assert any("connected components" in v for v in speckled["violations"]) and not speckled["severe"]
    assert any("centroid along y" in v for v in far["severe"])


def test_too_few_validation_cases_fit_no_model_and_flag_by_plausibility_alone() -> None:
    cases = [_over_confident_case(s) for s in range(2)]
    reference = qc.label_statistics([c["label"] for c in cases], [(1.5, 1.5, 2.0)] * 2)
    record = qc_run.fit(cases, reference)
    assert record["quality_model"] is None and record["threshold"] is None and "no quality model" in record["note"]
    empty = np.zeros(SHAPE, bool)
    result = qc_run.assess(record, empty.astype(np.float32), empty, cases[0]["affine"], members=[empty] * 2)
    assert result["quality_score"] is None and result["needs_review"] and "empty mask" in result["reasons"][0]


def test_run_files_without_qc_or_tta_read_as_not_fitted(tmp_path: Path) -> None:
    assert runs.read_qc(tmp_path) is None and runs.read_tta(tmp_path) is False
    runs.write_json({"keep_largest": False}, tmp_path / runs.POSTPROCESSING)  # a run from before flip TTA was decided
    assert runs.read_tta(tmp_path) is False
    runs.write_json({"keep_largest": False, "tta": "yes"}, tmp_path / runs.POSTPROCESSING)
    with pytest.raises(ValueError, match="needs tta true or false"):
        runs.read_tta(tmp_path)
    runs.write_json({"reference": {}}, tmp_path / runs.QC)
    with pytest.raises(ValueError, match="qc.json lacks reference or quality_model"):
        runs.read_qc(tmp_path)
    runs.write_json({"reference": {}, "quality_model": None}, tmp_path / runs.QC)
    with pytest.raises(ValueError, match="qc.json lacks temperature"):
        runs.read_qc(tmp_path)
    runs.write_json({"label_mode": "multiclass", "classes": {"lv": {"reference": {}}}}, tmp_path / runs.QC)
    with pytest.raises(ValueError, match=r"qc.json \(class 'lv'\) lacks reference or quality_model"):
        runs.read_qc(tmp_path)


@pytest.fixture(scope="module")
def run_dir(tiny_msd: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return train_tiny_run(tiny_msd, tmp_path_factory.mktemp("qc_run") / "run")


def test_training_writes_qc_json_that_predict_applies(run_dir: Path, tiny_msd: Path, tmp_path: Path, capsys) -> None:
    """qc.json holds every part; predict's report carries the score, the flag and its reasons, and warns."""
    from heartseg_utils import predict

    record = runs.read_qc(run_dir)
    assert record["reference"]["n_cases"] == len(runs.read_split(run_dir)["train"])
    assert {"ece_before", "ece_after", "value", "fitted"} <= set(record["temperature"])
    assert len(record["validation"]) == len(runs.read_split(run_dir)["validation"])
    n_val, kinds = len(record["validation"]), runs.read_json(run_dir / runs.CONFIG)["qc_shifts"]
    assert [r["kind"] for r in record["shifted"]] == [k for k in kinds for _ in range(n_val)]  # one copy per case
    assert {r["case"] for r in record["shifted"]} == {r["case"] for r in record["validation"]}
    assert n_val < qc_run.MIN_CASES and record["threshold"] is None  # the tiny split: plausibility rules only
    assert all(isinstance(r["needs_review"], bool) and r["dice"] < 1.0 for r in record["shifted"])
    scan = min((tiny_msd / "imagesTs").glob("*.nii.gz"))
    (report,) = predict.predict(run_dir, scan, tmp_path / "m.nii.gz", progress=False)
    assert report["qc"]["fitted"] and isinstance(report["needs_review"], bool)
    assert report["review_reasons"] == report["qc"]["reasons"]
    saved = json.loads(predict.report_path(tmp_path / "m.nii.gz").read_text())
    assert saved["needs_review"] == report["needs_review"] and saved["quality_score"] == report["quality_score"]
    warned = "needs review" in capsys.readouterr().err
    assert warned == report["needs_review"]
    first = predict.format_report(report).splitlines()[0]
    assert first.startswith("NEEDS REVIEW" if report["needs_review"] else "QC passed")


def test_a_flagged_scan_prints_one_warning_line(run_dir: Path, tiny_msd: Path, tmp_path: Path, capsys) -> None:
    from heartseg_utils import predict

    copy = Path(shutil.copytree(run_dir, tmp_path / "run"))
    record = runs.read_qc(copy)
    volume = record["reference"]["measurements"]["volume_ml"]
    volume.update(low=-2.0, high=-1.0, median=-1.5, mad=0.1)  # no mask is this small: every scan is far outside
    runs.write_json(record, copy / runs.QC)
    scan = min((tiny_msd / "imagesTs").glob("*.nii.gz"))
    (report,) = predict.predict(copy, scan, tmp_path / "m.nii.gz", progress=False)
    lines = [line for line in capsys.readouterr().err.splitlines() if "needs review" in line]
    assert report["needs_review"] and len(lines) == 1 and "above the training range" in lines[0]


def test_an_old_run_without_qc_json_still_predicts(run_dir: Path, tiny_msd: Path, tmp_path: Path) -> None:
    from heartseg_utils import predict

    copy = Path(shutil.copytree(run_dir, tmp_path / "run"))
    (copy / runs.QC).unlink()
    scan = min((tiny_msd / "imagesTs").glob("*.nii.gz"))
    (report,) = predict.predict(copy, scan, tmp_path / "m.nii.gz", progress=False)
    assert report["qc"]["fitted"] is False and report["needs_review"] is None and report["quality_score"] is None
    assert predict.format_report(report).startswith("QC not fitted")
    assert nib.load(tmp_path / "m.nii.gz").shape == nib.load(scan).shape


@pytest.mark.parametrize("decided", [True, False])
def test_predict_follows_the_runs_tta_decision_unless_told(run_dir, tiny_msd, tmp_path, decided) -> None:
    from heartseg_utils import predict

    copy = Path(shutil.copytree(run_dir, tmp_path / "run"))
    post = runs.read_json(copy / runs.POSTPROCESSING)
    runs.write_json({**post, "tta": decided}, copy / runs.POSTPROCESSING)
    scan = min((tiny_msd / "imagesTs").glob("*.nii.gz"))
    (auto,) = predict.predict(copy, scan, tmp_path / "a.nii.gz", progress=False)
    (forced,) = predict.predict(copy, scan, tmp_path / "f.nii.gz", progress=False, tta=not decided)
    assert auto["tta"] is decided and forced["tta"] is (not decided)
    cli = predict.main(
        [
            "--run_dir",
            str(copy),
            "--input",
            str(scan),
            "--output",
            str(tmp_path / "c.nii.gz"),
            "--no_progress",
            "--tta",
            "false",
        ]
    )
    assert cli[0]["tta"] is False
