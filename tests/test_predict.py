"""predict and dicom: NIfTI, DICOM (files in random order) and folder inputs, masks on the input grid, bad inputs."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from heartseg_utils import dicom, inference
from heartseg_utils import predict as P
from tests._tiny_run import train_tiny_run

# new voxel (i', j', k') -> old voxel (j', i', K-1-k'): another grid (axes swapped, slices reversed), same scan
SWAP_FLIP = np.array([[0, 1, 0, 0], [1, 0, 0, 0], [0, 0, -1, 0], [0, 0, 0, 1]], dtype=np.float64)


@pytest.fixture(scope="module")
def run_dir(tiny_msd: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return train_tiny_run(tiny_msd, tmp_path_factory.mktemp("predict") / "run")


@pytest.fixture(scope="module")
def scan(tiny_msd: Path) -> Path:
    return min((tiny_msd / "imagesTs").glob("*.nii.gz"))


def _regrid(image: nib.Nifti1Image) -> tuple[np.ndarray, np.ndarray]:
    """The same scan on another voxel grid: (volume, affine) with i/j swapped and the slice order reversed."""
    vol = np.asanyarray(image.dataobj)
    moved = np.flip(vol.transpose(1, 0, 2), axis=2)
    swap = SWAP_FLIP.copy()
    swap[2, 3] = vol.shape[2] - 1
    return moved, image.affine @ swap


def _on_grid(values: np.ndarray, affine: np.ndarray, target_affine: np.ndarray, target_shape: tuple) -> np.ndarray:
    """Resample ``values`` onto another grid whose voxel centres coincide (index permutation, no interpolation)."""
    idx = np.indices(target_shape).reshape(3, -1)
    world = target_affine[:3, :3] @ idx + target_affine[:3, 3:4]
    src = np.linalg.inv(affine)[:3, :3] @ world + np.linalg.inv(affine)[:3, 3:4]
    assert np.allclose(src, np.round(src), atol=1e-3), "the two grids' voxel centres do not coincide"
    src = np.round(src).astype(int)
    return values[src[0], src[1], src[2]].reshape(target_shape)


def test_dicom_round_trip_in_world_coordinates(scan: Path, tmp_path: Path) -> None:
    image = nib.load(scan)
    moved, affine = _regrid(image)
    files = dicom.write_series(moved, affine, tmp_path / "series", shuffle_seed=0)
    assert [f.name for f in files] != sorted(f.name for f in files), "file names must not follow the slice order"
    volume, read_affine = dicom.read_series(tmp_path / "series")
    np.testing.assert_allclose(read_affine[:3, :3] @ [0, 0, 1], affine[:3, :3] @ [0, 0, 1], atol=1e-6)
    np.testing.assert_array_equal(volume, moved)
    np.testing.assert_allclose(read_affine, affine, atol=1e-6)
    back = _on_grid(volume, read_affine, image.affine, image.shape)
    np.testing.assert_array_equal(back, np.asanyarray(image.dataobj))


def test_dicom_mask_equals_nifti_mask_in_world_coordinates(run_dir: Path, scan: Path, tmp_path: Path) -> None:
    moved, affine = _regrid(nib.load(scan))
    dicom.write_series(moved, affine, tmp_path / "series", shuffle_seed=1)
    (from_dicom,) = P.predict(run_dir, tmp_path / "series", tmp_path / "dicom_mask.nii.gz", progress=False)
    (from_nifti,) = P.predict(run_dir, scan, tmp_path / "out", progress=False)
    d_img, n_img = nib.load(from_dicom["mask"]), nib.load(from_nifti["mask"])
    assert d_img.shape == moved.shape and n_img.shape == nib.load(scan).shape
    np.testing.assert_allclose(d_img.affine, affine, atol=1e-5)  # the series' own grid, not the NIfTI's
    d_mask, n_mask = np.asanyarray(d_img.dataobj), np.asanyarray(n_img.dataobj)
    assert 0 < n_mask.sum() < n_mask.size, "a constant mask would make the comparison vacuous"
    np.testing.assert_array_equal(_on_grid(d_mask, d_img.affine, n_img.affine, n_img.shape), n_mask)
    assert from_dicom["kind"] == "dicom" and from_dicom["volume_ml"] == pytest.approx(from_nifti["volume_ml"])


def test_folder_of_nifti_through_the_command_line(run_dir: Path, tiny_msd: Path, tmp_path: Path, capsys) -> None:
    images = sorted((tiny_msd / "imagesTr").glob("*.nii.gz"))[:2]
    (tmp_path / "scans").mkdir()
    for f in images:
        shutil.copy(f, tmp_path / "scans" / f.name)
    reports = P.main(
        [
            "--run_dir",
            str(run_dir),
            "--input",
            str(tmp_path / "scans"),  # masks/ beside it: predict never writes inside its input folder
            "--output",
            str(tmp_path / "masks"),
            "--keep_largest",
            "--device",
            "cpu",
            "--no_progress",
        ]
    )
    printed = capsys.readouterr().out
    model, config = inference.load_run(run_dir, "cpu")
    for f, report in zip(images, reports):
        mask_img, image = nib.load(tmp_path / "masks" / f.name), nib.load(f)
        assert mask_img.shape == image.shape and np.allclose(mask_img.affine, image.affine)
        mask = np.asanyarray(mask_img.dataobj)
        tta = inference.run_tta(run_dir)  # the run's own flip-TTA decision, followed by default
        expected = inference.predict_case(model, config, f, tta=tta, keep_largest=True)["mask"]
        np.testing.assert_array_equal(mask, expected)
        saved = json.loads(P.report_path(tmp_path / "masks" / f.name).read_text())
        assert saved == report and saved["keep_largest"] is True
        ml = mask.sum() * np.prod(image.header.get_zooms()[:3]) / 1000
        assert saved["volume_ml"] == pytest.approx(ml, abs=1e-3) and f"{saved['volume_ml']:.1f} mL" in printed


def test_sanity_warnings_reach_the_report(run_dir: Path, scan: Path, tmp_path: Path, monkeypatch) -> None:
    from heartseg_utils import metrics

    rules = []
    monkeypatch.setattr(
        metrics, "sanity_check", lambda mask, **kw: rules.append(kw) or ["every voxel is foreground: a test warning"]
    )
    (report,) = P.predict(run_dir, scan, tmp_path / "m.nii.gz", progress=False)
    assert report["warnings"] == ["every voxel is foreground: a test warning"]
    assert rules == [{"max_fraction": None}]  # the run has qc.json: its training labels judge the size
    assert "WARNING: every voxel is foreground" in P.format_report(report)


def test_the_fixed_left_atrium_size_rule_applies_only_without_anything_better() -> None:
    assert P.size_rule({"label_mode": "binary"}, None) == 0.05  # a run from before qc.json
    assert P.size_rule({"label_mode": "binary"}, {"reference": {}}) is None
    assert P.size_rule({"label_mode": "multiclass"}, None) is None  # a whole heart is no atrium


def _series(tmp_path: Path, name: str, scan: Path, seed: int) -> Path:
    image = nib.load(scan)
    dicom.write_series(np.asanyarray(image.dataobj)[:, :, :4], image.affine, tmp_path / name, shuffle_seed=seed)
    return tmp_path / name


def test_bad_inputs_fail_with_clear_errors(scan: Path, tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match=r"empty.* is empty"):
        P.find_inputs(tmp_path / "empty")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        P.find_inputs(tmp_path / "nowhere")
    (tmp_path / "notes.txt").write_text("not an image")
    with pytest.raises(ValueError, match=r"notes\.txt is not a NIfTI file"):
        P.find_inputs(tmp_path / "notes.txt")
    a, b = _series(tmp_path, "a", scan, 0), _series(tmp_path, "b", scan, 1)
    for f in b.iterdir():
        f.rename(a / f"b_{f.name}")
    with pytest.raises(dicom.DicomSeriesError, match=r"holds 2 series .*SeriesInstanceUID"):
        dicom.read_series(a)
    c = _series(tmp_path, "c", scan, 2)
    shutil.copy(tmp_path / "notes.txt", c / "notes.txt")
    with pytest.raises(dicom.DicomSeriesError, match=r"notes\.txt is not a DICOM file"):
        dicom.read_series(c)
    with pytest.raises(ValueError, match="mixes NIfTI files with other files"):
        shutil.copy(scan, c / scan.name)
        P.find_inputs(c)


def test_missing_geometry_and_uneven_slices_are_refused(scan: Path, tmp_path: Path) -> None:
    import pydicom

    def by_position(folder: Path) -> list[Path]:
        return sorted(folder.iterdir(), key=lambda f: float(pydicom.dcmread(f).ImagePositionPatient[2]))

    d = _series(tmp_path, "d", scan, 3)
    victim = by_position(d)[0]
    ds = pydicom.dcmread(victim)
    del ds.ImagePositionPatient
    ds.save_as(victim)
    with pytest.raises(dicom.DicomSeriesError, match=rf"{victim.name} lacks ImagePositionPatient"):
        dicom.read_series(d)
    e = _series(tmp_path, "e", scan, 4)
    by_position(e)[1].unlink()  # slices 0, 2, 3 left: a missing slice
    with pytest.raises(dicom.DicomSeriesError, match="not evenly spaced"):
        dicom.read_series(e)


def test_output_must_be_a_folder_for_several_inputs(tiny_msd: Path) -> None:
    inputs = P.find_inputs(tiny_msd / "imagesTr")
    assert len(inputs) > 1 and {k for k, _ in inputs} == {"nifti"}
    with pytest.raises(ValueError, match="give a folder"):
        P.output_paths(inputs, "one.nii.gz")
    assert [p.name for p in P.output_paths(inputs, "out")] == [p.name for _, p in inputs]


@pytest.mark.slow
def test_notebook_07_in_the_series(series: dict) -> None:
    """The series ran 07 after 03: DICOM and NIfTI masks agree in world coordinates, the export was checked."""
    import nibabel.processing

    work = series["workdir"]
    phantom = work / "runs" / "07_use_the_model" / "phantom"
    from_dicom, from_nifti = nib.load(phantom / "mask_from_dicom.nii.gz"), nib.load(phantom / "mask_from_nifti.nii.gz")
    assert not np.allclose(from_dicom.affine, from_nifti.affine), "the notebook writes the series on another grid"
    resampled = nibabel.processing.resample_from_to(from_dicom, from_nifti, order=0)
    np.testing.assert_array_equal(np.asanyarray(resampled.dataobj), np.asanyarray(from_nifti.dataobj))
    report = json.loads((phantom / "mask_from_dicom.heartseg.json").read_text())
    assert report["kind"] == "dicom" and report["volume_ml"] > 0 and not report["warnings"]
    info = json.loads((work / "runs" / "03_train" / "export" / "export.json").read_text())
    assert info["check"]["max_abs_diff"] <= 1e-3 and "model.onnx" in info["files"]


def test_the_review_line_says_what_passed() -> None:
    """A passed scan says whether a quality model scored it or only the plausibility rules were checked."""
    from heartseg_utils.predict import review_line

    assert review_line({"needs_review": False, "quality_score": 0.871}).startswith("QC passed (quality score 0.87,")
    assert "plausibility rules only" in review_line({"needs_review": False, "quality_score": None})
    flagged = review_line({"needs_review": True, "quality_score": 0.2, "review_reasons": ["volume too small"]})
    assert flagged == "NEEDS REVIEW (quality score 0.20): volume too small"
    assert review_line({"needs_review": None, "review_reasons": ["QC is not fitted"]}).startswith("QC not fitted")
