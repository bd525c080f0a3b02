"""convert: a messy folder of phantoms (mixed extensions, suffixes, a DICOM series) becomes a valid MSD folder.

Every refusal names the offending file; the sources are never modified; the command line fails in one line.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from heartseg_utils import cli, convert, data, dicom
from heartseg_utils.convert import ConvertError, case_name, convert_dataset
from heartseg_utils.synthetic import make_synthetic_dataset
from tests._msd import AFFINE, tree_digest, write_nifti


@pytest.fixture(scope="module")
def phantom(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Five small phantom cases (four labelled, one test image) in MSD layout."""
    root = tmp_path_factory.mktemp("phantom") / "msd"
    return make_synthetic_dataset(root, n_train=4, n_test=1, seed=7, variant="small")


def _load(path: Path) -> tuple[np.ndarray, np.ndarray]:
    image = nib.load(str(path))
    return np.asanyarray(image.dataobj), image.affine


def make_messy(phantom: Path, root: Path) -> dict:
    """The phantom as a user's folders: .nii and .nii.gz, _0000 and _seg/_label/_mask suffixes, one DICOM series.

    Returns:
        ``{"images", "labels", "test": folders, "expected": {case: (image, label, affine)}}``.
    """
    images, labels, test = root / "scans", root / "masks", root / "unlabelled"
    for folder in (images, labels, test):
        folder.mkdir(parents=True)
    items = data.load_datalist(phantom)
    expected = {}
    names = [
        ("la_001_0000.nii.gz", "la_001_seg.nii.gz"),
        ("la_002.nii", "la_002.nii.gz"),
        ("la_003", "la_003_label.nii"),  # the image is a DICOM series folder
        ("LA_004_0000.nii", "LA_004_MASK.nii.gz"),
    ]
    for item, (image_name, label_name) in zip(items, names):
        image, affine = _load(Path(item["image"]))
        label, _ = _load(Path(item["label"]))
        if image_name == "la_003":  # a DICOM series of integer voxels, the files in random order
            image = np.rint(image * 1000).astype(np.int16)
            dicom.write_series(image, affine, images / image_name, shuffle_seed=3)
        else:
            nib.save(nib.Nifti1Image(image, affine), str(images / image_name))
        nib.save(nib.Nifti1Image(label, affine), str(labels / label_name))
        expected[case_name(images / image_name)] = (image, label, affine)
    (test_item,) = data.load_datalist(phantom, "test")
    shutil.copy(test_item["image"], test / "la_005_0000.nii.gz")
    test_image, test_affine = _load(Path(test_item["image"]))
    expected["la_005"] = (test_image, None, test_affine)
    return {"images": images, "labels": labels, "test": test, "expected": expected}


@pytest.fixture(scope="module")
def converted(phantom: Path, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """The messy layout, its digest before the conversion, and the conversion's summary (run once)."""
    messy = make_messy(phantom, tmp_path_factory.mktemp("messy"))
    before = tree_digest(messy["images"].parent)
    paths_before = sorted(messy["images"].parent.rglob("*"))
    out = messy["images"].parent.parent / "converted"
    summary = convert_dataset(messy["images"], messy["labels"], out, test=messy["test"], verbose=False)
    return {**messy, "out": out, "summary": summary, "before": before, "paths_before": paths_before}


def tiny_case(root: Path, case: str = "a", *, image_name: str = "", label: np.ndarray | None = None) -> None:
    """One 8 x 8 x 6 case in ``root/images`` and ``root/labels``."""
    image = np.random.default_rng(0).normal(100.0, 20.0, (8, 8, 6)).astype(np.float32)
    if label is None:
        label = np.zeros((8, 8, 6), np.uint8)
        label[2:5, 2:5, 1:4] = 1
    write_nifti(root / "images" / (image_name or f"{case}.nii.gz"), image)
    write_nifti(root / "labels" / f"{case}.nii.gz", label)


def refused(root: Path, match: str, **kwargs) -> str:
    """Convert ``root/images`` + ``root/labels`` into ``root/out``, expect a ConvertError; nothing is left behind."""
    with pytest.raises(ConvertError, match=match) as err:
        convert_dataset(root / "images", root / "labels", kwargs.pop("out", root / "out"), verbose=False, **kwargs)
    assert not (root / "out").exists() and not list(root.glob(".out.convert-*")), "a refusal left files behind"
    return str(err.value)


@pytest.mark.parametrize(
    ("name", "role", "case"),
    [
        ("case7_0000.nii.gz", "image", "case7"),
        ("case7.NII.GZ", "image", "case7"),
        ("case7.nii", "label", "case7"),
        ("case7_seg.nrrd", "label", "case7"),
        ("case7_GT.mha", "label", "case7"),
        ("case7_mask.mhd", "label", "case7"),
        ("case7_label.nhdr", "label", "case7"),
        ("case7_seg.nii.gz", "image", "case7_seg"),  # the label suffixes apply to labels only
        ("case7_0000.nii.gz", "label", "case7_0000"),
        ("_seg.nii.gz", "label", "_seg"),  # never the whole name
        ("case7_0000_0000.nii", "image", "case7_0000"),  # one suffix only
    ],
)
def test_case_name_is_one_rule(name: str, role: str, case: str) -> None:
    assert case_name(name, role) == case


def test_messy_layout_becomes_a_valid_msd_folder(converted: dict) -> None:
    out, summary = converted["out"], converted["summary"]
    items = data.validate_dataset(out)
    meta = json.loads((out / "dataset.json").read_text())
    assert [it["case"] for it in items] == ["LA_004", "la_001", "la_002", "la_003"] == summary["cases"]
    assert meta["labels"] == {"0": "background", "1": "label_1"} == summary["labels"]
    assert (meta["numTraining"], meta["numTest"], meta["test"]) == (4, 1, ["./imagesTs/la_005.nii.gz"])
    assert meta["modality"] == {"0": "MRI"} and meta["name"] == "converted" and summary["out"] == str(out)
    assert (out / convert.MARKER).is_file() and not list(out.parent.glob(".converted.*"))
    for case, (image, label, affine) in converted["expected"].items():
        folder = "imagesTs" if label is None else "imagesTr"
        got, got_affine = _load(out / folder / f"{case}.nii.gz")
        assert got.dtype == image.dtype and np.array_equal(got, image), case  # voxel for voxel, same data type
        assert np.allclose(got_affine, affine, atol=1e-4), case
        if label is not None:
            got_label, label_affine = _load(out / "labelsTr" / f"{case}.nii.gz")
            assert got_label.dtype == np.uint8 and np.array_equal(got_label, label), case
            assert np.array_equal(label_affine, got_affine), case  # written on the image's grid


def test_sources_are_unchanged(converted: dict) -> None:
    source_root = converted["images"].parent
    assert tree_digest(source_root) == converted["before"]
    assert sorted(source_root.rglob("*")) == converted["paths_before"], "files appeared in a source folder"


def test_pairs_are_printed_and_label_names_used(converted: dict, tmp_path: Path, capsys) -> None:
    summary = convert_dataset(
        converted["images"], converted["labels"], tmp_path / "named", label_names="1=LA", modality="CT"
    )
    printed = capsys.readouterr().out
    assert f"la_001: {converted['images'] / 'la_001_0000.nii.gz'} <- {converted['labels'] / 'la_001_seg.nii.gz'}" in (
        printed
    )
    assert f"la_003: {converted['images'] / 'la_003'} <- " in printed and "wrote" in printed
    meta = json.loads((tmp_path / "named" / "dataset.json").read_text())
    assert meta["labels"] == summary["labels"] == {"0": "background", "1": "LA"} and meta["modality"] == {"0": "CT"}
    assert summary["numTest"] == 0 and not list((tmp_path / "named" / "imagesTs").iterdir())


def test_a_value_label_names_does_not_name_is_refused(tmp_path: Path) -> None:
    label = np.zeros((8, 8, 6), np.uint8)
    label[1:3, 1:3, 1:3], label[4:6, 4:6, 3:5] = 1, 2
    tiny_case(tmp_path, label=label)
    refused(tmp_path, r"labels/a\.nii\.gz holds value\(s\) \[2\] that --label_names does not name", label_names="1=LV")
    summary = convert_dataset(tmp_path / "images", tmp_path / "labels", tmp_path / "out", verbose=False)
    assert summary["labels"] == {"0": "background", "1": "label_1", "2": "label_2"}


def test_missing_partners_are_all_listed(tmp_path: Path) -> None:
    tiny_case(tmp_path, "a")
    tiny_case(tmp_path, "b")
    (tmp_path / "labels" / "b.nii.gz").rename(tmp_path / "labels" / "c_seg.nii.gz")
    message = refused(tmp_path, "2 case")
    assert "image " + str(tmp_path / "images" / "b.nii.gz") + " (case 'b') has no label" in message
    assert "label " + str(tmp_path / "labels" / "c_seg.nii.gz") + " (case 'c') has no image" in message


def test_two_files_of_one_case_are_refused(tmp_path: Path) -> None:
    tiny_case(tmp_path, "a")
    shutil.copy(tmp_path / "images" / "a.nii.gz", tmp_path / "images" / "a_0000.nii")
    message = refused(tmp_path, "are all case 'a'")
    assert "a.nii.gz" in message and "a_0000.nii" in message


def test_geometry_mismatch_is_refused(tmp_path: Path) -> None:
    tiny_case(tmp_path)
    label, affine = _load(tmp_path / "labels" / "a.nii.gz")
    shifted = affine.copy()
    shifted[0, 3] += 2.0
    write_nifti(tmp_path / "labels" / "a.nii.gz", label, shifted)
    message = refused(tmp_path, r"labels/a\.nii\.gz is not on the voxel grid of image .*images/a\.nii\.gz")
    assert "origin differs by 2 mm" in message
    rotated = AFFINE.copy()
    rotated[:3, :3] = AFFINE[:3, :3] @ np.array([[1, 0, 0], [0, np.cos(0.01), -np.sin(0.01)], [0, np.sin(0.01), 1]])
    write_nifti(tmp_path / "labels" / "a.nii.gz", label, rotated)
    assert "axis directions differ" in refused(tmp_path, "not on the voxel grid")
    write_nifti(tmp_path / "labels" / "a.nii.gz", label[:, :, :5])
    refused(tmp_path, r"labels/a\.nii\.gz is \(8, 8, 5\) voxels, its image .*a\.nii\.gz \(8, 8, 6\)")
    tiny_case(tmp_path)  # a grid within the tolerance is accepted
    write_nifti(tmp_path / "labels" / "a.nii.gz", label, AFFINE + np.diag([1e-5, 0, 0, 0]))
    convert_dataset(tmp_path / "images", tmp_path / "labels", tmp_path / "out", verbose=False)


def test_4d_image_needs_a_frame(tmp_path: Path) -> None:
    tiny_case(tmp_path)
    frames = np.random.default_rng(1).normal(100.0, 20.0, (8, 8, 6, 3)).astype(np.float32)
    write_nifti(tmp_path / "images" / "a.nii.gz", frames)
    refused(tmp_path, r"images/a\.nii\.gz is 4D with 3 channels/frames .*--frame N")
    refused(tmp_path, r"images/a\.nii\.gz: channel 3 does not exist; it has channels 0 to 2", frame=3)
    refused(tmp_path, "a frame is a whole number", frame=-1)
    convert_dataset(tmp_path / "images", tmp_path / "labels", tmp_path / "out", frame=0, verbose=False)
    assert np.array_equal(_load(tmp_path / "out" / "imagesTr" / "a.nii.gz")[0], frames[..., 0])


@pytest.mark.parametrize(
    ("value", "match"), [(0.5, r"holds 1 non-integer value\(s\) \(e\.g\. 0\.5\)"), (-1.0, "values from -1 to")]
)
def test_labels_must_be_non_negative_integers(tmp_path: Path, value: float, match: str) -> None:
    label = np.zeros((8, 8, 6), np.float32)
    label[2:5, 2:5, 1:4] = 1.0
    label[0, 0, 0] = value
    tiny_case(tmp_path, label=label)
    assert str(tmp_path / "labels" / "a.nii.gz") in refused(tmp_path, match)


def test_float_labels_with_integer_values_become_uint8(tmp_path: Path) -> None:
    label = np.zeros((8, 8, 6), np.float64)
    label[2:5, 2:5, 1:4] = 1.0
    tiny_case(tmp_path, label=label)
    convert_dataset(tmp_path / "images", tmp_path / "labels", tmp_path / "out", verbose=False)
    got = _load(tmp_path / "out" / "labelsTr" / "a.nii.gz")[0]
    assert got.dtype == np.uint8 and np.array_equal(got, label)


def test_unreadable_and_stray_files_are_named(tmp_path: Path) -> None:
    tiny_case(tmp_path)
    (tmp_path / "images" / "a.nii.gz").write_bytes(b"not a scan at all")
    refused(tmp_path, r"Image .*images/a\.nii\.gz cannot be read as NIfTI")
    tiny_case(tmp_path)
    (tmp_path / "labels" / "notes.txt").write_text("hello")
    refused(tmp_path, r"labels holds 1 file\(s\) the converter does not read: notes\.txt")


def test_out_folder_rules(tmp_path: Path) -> None:
    tiny_case(tmp_path)
    images, labels, out = tmp_path / "images", tmp_path / "labels", tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    with pytest.raises(ConvertError, match=r"--out .*out is not empty: choose a new folder, or pass --force"):
        convert_dataset(images, labels, out, verbose=False)
    with pytest.raises(ConvertError, match=rf"out is not empty and holds no {convert.MARKER}"):
        convert_dataset(images, labels, out, force=True, verbose=False)
    assert [p.name for p in out.iterdir()] == ["keep.txt"]
    with pytest.raises(ConvertError, match=r"--out .*images/out is inside the source folder --images"):
        convert_dataset(images, labels, images / "out", verbose=False)
    with pytest.raises(ConvertError, match="inside the source folder --labels"):
        convert_dataset(images, labels, labels, verbose=False)
    with pytest.raises(ConvertError, match=r"source folder --images .*images is inside --out"):
        convert_dataset(images, labels, tmp_path, verbose=False)
    assert sorted(p.name for p in images.iterdir()) == ["a.nii.gz"]
    convert_dataset(images, labels, tmp_path / "fresh", verbose=False)  # an earlier conversion is replaced
    (tmp_path / "fresh" / "stale.txt").write_text("old")
    convert_dataset(images, labels, tmp_path / "fresh", force=True, verbose=False)
    assert not (tmp_path / "fresh" / "stale.txt").exists() and data.validate_dataset(tmp_path / "fresh")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["fresh", "images", "labels", "out"]


def test_without_simpleitk_the_message_says_how_to_install_it(tmp_path: Path, monkeypatch) -> None:
    tiny_case(tmp_path)
    (tmp_path / "images" / "a.nii.gz").unlink()
    (tmp_path / "images" / "a.nrrd").write_bytes(b"NRRD0004\n")
    monkeypatch.setitem(sys.modules, "SimpleITK", None)  # import SimpleITK raises ImportError
    refused(tmp_path, r"Image .*images/a\.nrrd is NRRD/MetaImage, which needs SimpleITK .*pip install SimpleITK")


def _write_itk(sitk, voxels: np.ndarray, affine: np.ndarray, path: Path) -> None:
    """Save (x, y, z) voxels with a RAS affine through SimpleITK (which stores LPS)."""
    lps = dicom.LPS_TO_RAS @ affine
    spacing = np.linalg.norm(lps[:3, :3], axis=0)
    image = sitk.GetImageFromArray(np.ascontiguousarray(voxels.transpose(2, 1, 0)))
    image.SetSpacing(spacing.tolist())
    image.SetOrigin(lps[:3, 3].tolist())
    image.SetDirection((lps[:3, :3] / spacing).flatten().tolist())
    sitk.WriteImage(image, str(path))


def test_nrrd_and_metaimage_through_simpleitk(phantom: Path, tmp_path: Path) -> None:
    sitk = pytest.importorskip("SimpleITK")
    messy = make_messy(phantom, tmp_path / "src")
    image, label, affine = messy["expected"]["la_002"]
    (messy["images"] / "la_002.nii").unlink()
    (messy["labels"] / "la_002.nii.gz").unlink()
    _write_itk(sitk, image, affine, messy["images"] / "la_002.nrrd")
    _write_itk(sitk, label, affine, messy["labels"] / "la_002_gt.mha")
    _, label_1, affine_1 = messy["expected"]["la_001"]
    _write_itk(sitk, label_1, affine_1, messy["labels"] / "la_001_seg.mhd")  # a header + .raw pair
    (messy["labels"] / "la_001_seg.nii.gz").unlink()
    convert_dataset(messy["images"], messy["labels"], tmp_path / "out", verbose=False)
    got, got_affine = _load(tmp_path / "out" / "imagesTr" / "la_002.nii.gz")
    assert got.dtype == image.dtype and np.array_equal(got, image) and np.allclose(got_affine, affine, atol=1e-4)
    assert np.array_equal(_load(tmp_path / "out" / "labelsTr" / "la_002.nii.gz")[0], label)
    assert np.array_equal(_load(tmp_path / "out" / "labelsTr" / "la_001.nii.gz")[0], label_1)
    assert sorted(p.suffix for p in messy["labels"].glob("la_001*")) == [".mhd", ".raw"]


def test_command_line(tmp_path: Path, capsys) -> None:
    tiny_case(tmp_path)
    argv = ["--images", str(tmp_path / "images"), "--labels", str(tmp_path / "labels"), "--out", str(tmp_path / "o")]
    assert cli.run(convert.main, convert.PROG, [*argv, "--label_names", "1=LA", "--name", "Mine"]) == 0
    assert json.loads((tmp_path / "o" / "dataset.json").read_text())["name"] == "Mine"
    assert "a: " in capsys.readouterr().out
    assert cli.run(convert.main, convert.PROG, argv) == 2  # the out folder now holds a conversion: no --force
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith(f"{convert.PROG}: error: --out {tmp_path / 'o'} is not empty")
    shutil.copy(tmp_path / "images" / "a.nii.gz", tmp_path / "images" / "b.nii.gz")
    assert cli.run(convert.main, convert.PROG, [*argv[:-1], str(tmp_path / "p")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "images/b.nii.gz (case 'b') has no label" in err


def test_python_dash_m_exits_with_2_and_one_line(tmp_path: Path) -> None:
    tiny_case(tmp_path)
    (tmp_path / "labels" / "a.nii.gz").rename(tmp_path / "labels" / "z.nii.gz")
    argv = ["--images", str(tmp_path / "images"), "--labels", str(tmp_path / "labels"), "--out", str(tmp_path / "o")]
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    done = subprocess.run(
        [sys.executable, "-m", "heartseg_utils.convert", *argv], capture_output=True, text=True, env=env, timeout=120
    )
    assert done.returncode == 2 and done.stdout == "", done
    assert done.stderr.count("\n") == 1 and "(case 'a') has no label" in done.stderr, done.stderr
    assert not (tmp_path / "o").exists()
