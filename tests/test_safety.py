"""Issue 20: predict, export and validate_dataset never destroy what they are given, and fail in one clear line.

One test per defect, each reproducing it first: ``predict`` writing over its input, report names clobbering other
files, silent replacement of masks, reports and export folders, NaN/Inf or spacing-0 scans giving wrong volumes,
``validate_dataset`` passing 4D images and paths outside the data folder, and tracebacks (2D/4D/5D, empty,
truncated or non-NIfTI scans, absurd headers, damaged checkpoints and JSON files, link loops) instead of one line.
After every refused command the input folder is checked byte for byte and the output checked absent.
"""

from __future__ import annotations

import gzip
import json
import os
import runpy
import shutil
import subprocess
import sys
import warnings
from pathlib import Path
from unittest import mock

import nibabel as nib
import numpy as np
import pytest

from heartseg_utils import data, dicom
from heartseg_utils import export as E
from heartseg_utils import predict as P
from tests._msd import make_msd, tree_digest, write_nifti
from tests._tiny_run import train_tiny_run

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def run_dir(tiny_msd: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return train_tiny_run(tiny_msd, tmp_path_factory.mktemp("safety") / "run")


@pytest.fixture(scope="module")
def source(tiny_msd: Path) -> Path:
    return min((tiny_msd / "imagesTs").glob("*.nii.gz"))


@pytest.fixture()
def scans(source: Path, tmp_path: Path) -> Path:
    """A folder ``scans/`` holding one good scan, ``a.nii.gz``."""
    folder = tmp_path / "scans"
    folder.mkdir()
    shutil.copy(source, folder / "a.nii.gz")
    return folder


def _tool(module: str, *args: object, capsys: pytest.CaptureFixture) -> tuple[int, str]:
    """Run ``python -m heartseg_utils.<module> ARGS`` in this process; return (exit code, stderr)."""
    with mock.patch.object(sys, "argv", [module, *map(str, args)]), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # runpy: the module is already imported
        try:
            runpy.run_module(f"heartseg_utils.{module}", run_name="__main__", alter_sys=False)
            code = 0
        except SystemExit as exit_:
            code = exit_.code if isinstance(exit_.code, int) else int(exit_.code is not None)
    return code, capsys.readouterr().err


def _predict_cli(run: Path, inp: Path, out: Path, *extra: object, capsys: pytest.CaptureFixture) -> tuple[int, str]:
    return _tool("predict", "--run_dir", run, "--input", inp, "--output", out, "--no_progress", *extra, capsys=capsys)


def _one_line_failure(code: int, err: str, *needles: str) -> str:
    """Exit code 2, no traceback, the last line is the tool's error naming every needle; returns that line."""
    assert code == 2, err
    assert "Traceback" not in err, err
    last = err.strip().splitlines()[-1]
    assert ": error: " in last, err
    for needle in needles:
        assert needle in last, (needle, last)
    return last


def _scan_with(tmp_path: Path, source: Path, name: str, fn) -> Path:
    """A copy of ``source`` whose (array, affine, header) went through ``fn``, in its own folder."""
    img = nib.load(source)
    array, affine, header = fn(np.asanyarray(img.dataobj).astype(np.float32), img.affine.copy(), img.header.copy())
    path = tmp_path / "in" / name
    path.parent.mkdir(exist_ok=True)
    image = nib.Nifti1Image(array, affine, header)
    image.set_data_dtype(np.float32)  # the source's int16 would turn NaN into a number
    nib.save(image, str(path))
    return path


# ------------------------------------------------------------------------- group 1: predict destroys its input
@pytest.mark.parametrize("out", ["scans/a.nii.gz", "scans", "scans/masks", "scans/masks/a.nii.gz"])
def test_predict_never_writes_over_or_into_its_input_folder(run_dir, scans, tmp_path, out) -> None:
    before = tree_digest(scans)
    with pytest.raises(ValueError, match=r"(is the input|inside the input folder)"):
        P.predict(run_dir, scans, tmp_path / out, progress=False)
    assert tree_digest(scans) == before


@pytest.mark.parametrize("out", ["scans/a.nii.gz", "scans"])
def test_predict_never_writes_over_its_input_file(run_dir, scans, tmp_path, capsys, out) -> None:
    before = tree_digest(scans)
    code, err = _predict_cli(run_dir, scans / "a.nii.gz", tmp_path / out, capsys=capsys)
    _one_line_failure(code, err, "is the input", "a.nii.gz")
    assert tree_digest(scans) == before


def test_predict_refuses_a_link_to_its_input_as_output(run_dir, scans, tmp_path) -> None:
    (tmp_path / "link.nii.gz").symlink_to(scans / "a.nii.gz")  # the output is a symbolic link to the input
    os.link(scans / "a.nii.gz", tmp_path / "hard.nii.gz")  # the input is a hard link of the output
    before = tree_digest(scans)
    with pytest.raises(ValueError, match="is the input"):
        P.predict(run_dir, scans / "a.nii.gz", tmp_path / "link.nii.gz", progress=False)
    with pytest.raises(ValueError, match="is the input"):
        P.predict(run_dir, tmp_path / "hard.nii.gz", scans / "a.nii.gz", progress=False)
    assert tree_digest(scans) == before


# ------------------------------------------------------------------------- group 4: name collisions, replacing
def test_report_name_cannot_clobber_another_json(run_dir, scans, tmp_path) -> None:
    folder = tmp_path / "run_c"
    folder.mkdir()
    (folder / "config.json").write_text('{"keep": "me"}')
    (report,) = P.predict(run_dir, scans / "a.nii.gz", folder / "config.nii.gz", progress=False)
    assert (folder / "config.json").read_text() == '{"keep": "me"}'
    assert Path(report["mask"]) == folder / "config.nii.gz"
    assert P.report_path(folder / "config.nii.gz") == folder / "config.heartseg.json"
    assert json.loads((folder / "config.heartseg.json").read_text()) == report


def test_two_inputs_with_one_case_name_are_refused(run_dir, scans, tmp_path) -> None:
    img = nib.load(scans / "a.nii.gz")
    nib.save(img, str(scans / "a.nii"))
    before = tree_digest(scans)
    with pytest.raises(ValueError, match=r"a\.nii.* and .*a\.nii.* are both case 'a'"):
        P.predict(run_dir, scans, tmp_path / "masks", progress=False)
    assert tree_digest(scans) == before and not (tmp_path / "masks").exists()


def test_existing_mask_and_edited_report_are_kept_without_overwrite(run_dir, scans, tmp_path) -> None:
    out = tmp_path / "masks"
    (first,) = P.predict(run_dir, scans, out, progress=False)
    report = P.report_path(first["mask"])
    report.write_text('{"edited": "by a clinician"}')
    kept, before = tree_digest(out), tree_digest(scans)
    with pytest.raises(FileExistsError, match=r"already exist.*--overwrite"):
        P.predict(run_dir, scans, out, progress=False)
    assert tree_digest(out) == kept and tree_digest(scans) == before
    (again,) = P.predict(run_dir, scans, out, progress=False, overwrite=True)
    assert json.loads(report.read_text()) == again and sorted(p.name for p in out.iterdir()) == sorted(kept)


def test_existing_mask_file_is_kept_without_overwrite_on_the_command_line(run_dir, scans, tmp_path, capsys) -> None:
    (tmp_path / "mine.nii.gz").write_bytes(b"someone's file")
    code, err = _predict_cli(run_dir, scans / "a.nii.gz", tmp_path / "mine.nii.gz", capsys=capsys)
    _one_line_failure(code, err, "mine.nii.gz", "--overwrite")
    assert (tmp_path / "mine.nii.gz").read_bytes() == b"someone's file"


def test_predict_refuses_to_write_into_a_dicom_series_folder(run_dir, scans, source, tmp_path) -> None:
    img = nib.load(source)
    dicom.write_series(np.asanyarray(img.dataobj)[:, :, :4], img.affine, tmp_path / "series")
    before = tree_digest(tmp_path / "series")
    for out in (tmp_path / "series", tmp_path / "series" / "mask.nii.gz"):
        with pytest.raises(ValueError, match="holds a DICOM series"):
            P.predict(run_dir, scans / "a.nii.gz", out, progress=False)
    assert tree_digest(tmp_path / "series") == before


def test_export_refuses_a_foreign_out_dir_and_reexports_its_own(run_dir, tmp_path, capsys) -> None:
    proj = tmp_path / "proj"
    proj.mkdir()
    (proj / "README.md").write_text("my project")
    (proj / "export.json").write_text('{"mine": true}')
    before, run_before = tree_digest(proj), tree_digest(run_dir)
    code, err = _tool("export", "--run_dir", run_dir, "--out_dir", proj, "--no_program", capsys=capsys)
    _one_line_failure(code, err, str(proj), "--overwrite")
    assert tree_digest(proj) == before and tree_digest(run_dir) == run_before
    own = tmp_path / "own"
    E.export_run(run_dir, own, program=False)
    (own / "notes.txt").write_text("kept")
    info = E.export_run(run_dir, own, program=False)  # an earlier export of its own is replaced
    assert json.loads((own / "export.json").read_text()) == info and (own / "notes.txt").read_text() == "kept"
    E.export_run(run_dir, proj, program=False, overwrite=True)
    written = json.loads((proj / "export.json").read_text())
    assert (proj / "model.onnx").is_file() and written["files"] == ["model.onnx"]


# ------------------------------------------------------------------------- group 5: silent wrong results
def test_nan_and_inf_voxels_are_an_error_not_an_empty_mask(run_dir, source, tmp_path) -> None:
    def poison(a, affine, header):
        a[10:12, 10:12, 10] = np.nan
        a[0, 0, 0] = np.inf
        return a, affine, header

    scan = _scan_with(tmp_path, source, "nan.nii.gz", poison)
    before = tree_digest(scan.parent)
    with pytest.raises(ValueError, match=r"nan\.nii\.gz has 5 NaN/inf voxel\(s\)"):
        P.predict(run_dir, scan, tmp_path / "out" / "m.nii.gz", progress=False)
    assert tree_digest(scan.parent) == before and not (tmp_path / "out").exists()


def test_spacing_zero_is_an_error_not_a_wrong_volume(run_dir, source, tmp_path) -> None:
    img = nib.load(source)
    flat = nib.Nifti1Image(np.asanyarray(img.dataobj), img.affine)
    flat.header.set_zooms((1.25, 1.25, 0.0))  # pixdim[3] = 0 (the affine keeps its spacing)
    scan = tmp_path / "in" / "flat.nii.gz"
    scan.parent.mkdir()
    nib.save(flat, str(scan))
    with gzip.open(scan) as f:  # nibabel's loader turns a 0 into 1 (and says so on stderr): read the bytes
        assert nib.Nifti1Header.from_fileobj(f, check=False)["pixdim"][3] == 0
    with pytest.raises(ValueError, match=r"flat\.nii\.gz has voxel spacing .*positive"):
        P.predict(run_dir, scan, tmp_path / "out.nii.gz", progress=False)
    assert not (tmp_path / "out.nii.gz").exists()


# ------------------------------------------------------------------------- group 6: validate_dataset
def test_validate_refuses_a_4d_training_image_training_cannot_use(tmp_path) -> None:
    root = make_msd(tmp_path / "msd")
    image = root / "imagesTr" / "la_004.nii.gz"
    array = np.asanyarray(nib.load(image).dataobj)
    write_nifti(image, np.stack([array, array], axis=-1))
    before = tree_digest(root)
    with pytest.raises(data.DatasetError, match=r"la_004\.nii\.gz is 4D with 2 channels.*training reads one channel"):
        data.validate_dataset(root)
    assert tree_digest(root) == before
    write_nifti(image, array[..., None])  # one frame: what training reads as one channel
    assert len(data.validate_dataset(root)) == 3


@pytest.mark.parametrize("where", ["dotdot", "absolute"])
def test_validate_refuses_paths_outside_the_data_folder(tmp_path, where) -> None:
    root = make_msd(tmp_path / "msd")
    outside = tmp_path / "elsewhere" / "la_009.nii.gz"
    outside.parent.mkdir()
    shutil.copy(root / "imagesTr" / "la_004.nii.gz", outside)
    meta = json.loads((root / "dataset.json").read_text())
    meta["training"][1]["image"] = "../elsewhere/la_009.nii.gz" if where == "dotdot" else str(outside)
    (root / "dataset.json").write_text(json.dumps(meta))
    before = tree_digest(tmp_path)
    with pytest.raises(data.DatasetError, match=r"training entry 1 names .*la_009\.nii\.gz.*outside the data folder"):
        data.validate_dataset(root)
    assert tree_digest(tmp_path) == before
    meta["training"][1]["image"] = str(root / "imagesTr" / "la_004.nii.gz")  # absolute but inside: fine
    (root / "dataset.json").write_text(json.dumps(meta))
    assert len(data.validate_dataset(root)) == 3


# ------------------------------------------------------------------------- group 7: one line, not a traceback
def _2d(a, affine, header):
    return a[:, :, 0], affine, None


def _4d(a, affine, header):
    return np.stack([a, a * 0.5], axis=-1), affine, None


def _5d(a, affine, header):
    return np.stack([np.stack([a, a], -1)] * 2, -1), affine, None


@pytest.mark.parametrize(
    "name, fn, needles",
    [
        ("flat.nii.gz", _2d, ("flat.nii.gz", "2D", "3D volume")),
        ("cine.nii.gz", _4d, ("cine.nii.gz", "2 channels", "--channel")),
        ("five.nii.gz", _5d, ("five.nii.gz", "more than one axis")),
    ],
)
def test_scans_of_the_wrong_dimension_end_in_one_line(run_dir, source, tmp_path, capsys, name, fn, needles) -> None:
    scan = _scan_with(tmp_path, source, name, fn)
    before = tree_digest(scan.parent)
    code, err = _predict_cli(run_dir, scan, tmp_path / "out", capsys=capsys)
    _one_line_failure(code, err, *needles)
    assert tree_digest(scan.parent) == before and not (tmp_path / "out").exists()


def test_a_chosen_channel_of_a_4d_scan_is_predicted(run_dir, source, tmp_path) -> None:
    scan = _scan_with(tmp_path, source, "cine.nii.gz", _4d)
    (report,) = P.predict(run_dir, scan, tmp_path / "out", channel=0, progress=False)
    (plain,) = P.predict(run_dir, source, tmp_path / "plain", progress=False)
    mask = nib.load(report["mask"])
    assert mask.shape == nib.load(source).shape and report["channel"] == 0
    np.testing.assert_array_equal(np.asanyarray(mask.dataobj), np.asanyarray(nib.load(plain["mask"]).dataobj))


def _truncated(path: Path) -> None:
    raw = path.read_bytes()
    path.write_bytes(raw[: len(raw) // 2])


def _flipped(path: Path) -> None:
    raw = bytearray(path.read_bytes())
    raw[len(raw) // 2 : len(raw) // 2 + 16] = b"\xff" * 16  # nibabel reads it; only the gzip CRC tells
    path.write_bytes(bytes(raw))


def _huge_header(path: Path) -> None:
    header = nib.Nifti1Header()
    header.set_data_shape((4000, 4000, 4000))
    header.set_data_dtype(np.float32)
    header.set_zooms((1.0, 1.0, 1.0))
    header["vox_offset"] = 352
    path.write_bytes(gzip.compress(header.binaryblock + b"\x00" * 4 + b"\x00" * 4096))


@pytest.mark.parametrize(
    "name, damage, needle",
    [
        ("empty.nii.gz", lambda p: p.write_bytes(b""), "is empty"),
        ("half.nii.gz", _truncated, "corrupt or truncated"),
        ("text.nii.gz", lambda p: p.write_text("not an image\n" * 50), "cannot be read as NIfTI"),
        ("text.nii", lambda p: p.write_text("not an image\n" * 50), "cannot be read as NIfTI"),
        ("flipped.nii.gz", _flipped, "corrupt or truncated"),
        ("huge.nii.gz", _huge_header, "header claims shape (4000, 4000, 4000)"),
    ],
)
def test_unreadable_scans_end_in_one_line(run_dir, source, tmp_path, capsys, name, damage, needle) -> None:
    scan = tmp_path / "in" / name
    scan.parent.mkdir()
    shutil.copy(source, scan) if name.endswith(".gz") else nib.save(nib.load(source), str(scan))
    damage(scan)
    before = tree_digest(scan.parent)
    code, err = _predict_cli(run_dir, scan, tmp_path / "out", capsys=capsys)
    _one_line_failure(code, err, name, needle)
    assert tree_digest(scan.parent) == before and not (tmp_path / "out").exists()


@pytest.fixture()
def run_copy(run_dir: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(run_dir, tmp_path / "run_copy"))


@pytest.mark.parametrize(
    "tool, name",
    [("predict", n) for n in ("best_model.pt", "config.json", "metrics.json", "postprocessing.json", "qc.json")]
    + [("export", n) for n in ("best_model.pt", "config.json", "metrics.json")],  # export reads no postprocessing
)
def test_damaged_run_files_end_in_one_line_naming_them(run_copy, scans, tmp_path, capsys, name, tool) -> None:
    _truncated(run_copy / name)
    before, inputs = tree_digest(run_copy), tree_digest(scans)
    if tool == "predict":
        code, err = _predict_cli(run_copy, scans / "a.nii.gz", tmp_path / "out", capsys=capsys)
    else:
        code, err = _tool("export", "--run_dir", run_copy, "--out_dir", tmp_path / "out", capsys=capsys)
    line = _one_line_failure(code, err, str(run_copy / name))
    assert "weights_only=False" not in err, line
    assert tree_digest(run_copy) == before and tree_digest(scans) == inputs and not (tmp_path / "out").exists()


@pytest.mark.parametrize("what", ["input", "run_dir"])
def test_a_symlink_loop_is_not_reported_as_missing(run_dir, scans, tmp_path, capsys, what) -> None:
    loop = tmp_path / "loop.nii.gz"
    loop.symlink_to(loop)
    args = (run_dir, loop) if what == "input" else (loop, scans / "a.nii.gz")
    code, err = _predict_cli(*args, tmp_path / "out", capsys=capsys)
    _one_line_failure(code, err, "loop.nii.gz", "symbolic link loop")
    assert "does not exist" not in err


def test_validate_says_symlink_loop_for_a_looping_data_folder(tmp_path) -> None:
    (tmp_path / "msd").symlink_to(tmp_path / "msd")
    with pytest.raises(data.DatasetError, match="symbolic link loop"):
        data.validate_dataset(tmp_path / "msd")


def test_debug_shows_the_traceback(run_dir, scans, tmp_path, capsys) -> None:
    code, err = _predict_cli(run_dir, scans / "a.nii.gz", scans / "a.nii.gz", "--debug", capsys=capsys)
    assert code == 2 and "Traceback" in err and err.strip().splitlines()[-1].count(": error: ") == 1


def test_the_real_command_line_fails_in_one_line(run_dir, source, tmp_path) -> None:
    scan = _scan_with(tmp_path, source, "cine.nii.gz", _4d)
    before = tree_digest(scan.parent)
    done = subprocess.run(
        [sys.executable, "-m", "heartseg_utils.predict", "--run_dir", str(run_dir), "--input", str(scan),
         "--output", str(tmp_path / "out"), "--no_progress"],
        capture_output=True, text=True, cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)}, check=False,
    )  # fmt: skip
    _one_line_failure(done.returncode, done.stderr, "cine.nii.gz", "--channel")
    assert len(done.stderr.strip().splitlines()) == 1, done.stderr
    assert tree_digest(scan.parent) == before and not (tmp_path / "out").exists()
