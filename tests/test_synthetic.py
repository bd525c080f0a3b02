"""Tests for heartseg_utils.synthetic: MSD layout, realism targets, determinism and reuse."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from scipy import ndimage
from skimage.filters import threshold_otsu

from heartseg_utils import synthetic

SMALL = (48, 48, 32)
BLOOD = ("left atrium", "pulmonary vein", "left ventricle", "right atrium", "right ventricle", "aorta")


def dice(a: np.ndarray, b: np.ndarray) -> float:
    return 2.0 * np.logical_and(a, b).sum() / max(a.sum() + b.sum(), 1)


@pytest.fixture(scope="module")
def default_cases() -> list[synthetic.PhantomCase]:
    return [synthetic.generate_case(seed) for seed in range(4)]


@pytest.fixture(scope="module")
def small_dataset(tmp_path_factory) -> Path:
    return synthetic.make_synthetic_dataset(
        tmp_path_factory.mktemp("data") / "Task02_Heart_synthetic", n_train=3, n_test=2, seed=0, shape=SMALL
    )


def test_dataset_json_matches_msd_task02(small_dataset):
    info = json.loads((small_dataset / "dataset.json").read_text())
    assert {
        "name",
        "description",
        "reference",
        "licence",
        "release",
        "tensorImageSize",
        "modality",
        "labels",
        "numTraining",
        "numTest",
        "training",
        "test",
        "synthetic",
    } <= set(info)
    assert info["name"] == "LeftAtrium" and info["licence"] == "CC-BY-SA 4.0"
    assert "synthetic phantom" in info["description"].lower()
    assert info["tensorImageSize"] == "3D" and info["modality"] == {"0": "MRI"}
    assert info["labels"] == {"0": "background", "1": "left atrium"}
    assert (info["numTraining"], info["numTest"]) == (3, 2)
    assert info["training"][0] == {"image": "./imagesTr/la_001.nii.gz", "label": "./labelsTr/la_001.nii.gz"}
    assert info["test"] == ["./imagesTs/la_004.nii.gz", "./imagesTs/la_005.nii.gz"]
    assert {"seed", "shape", "version"} <= set(info["synthetic"]) and info["synthetic"]["shape"] == list(SMALL)
    assert sorted(p.name for p in small_dataset.iterdir()) == ["dataset.json", "imagesTr", "imagesTs", "labelsTr"]
    assert not list(small_dataset.parent.glob(".*tmp*")), "temporary folder left behind"


def test_nifti_files_have_msd_like_geometry_and_types(small_dataset):
    info = json.loads((small_dataset / "dataset.json").read_text())
    for item in info["training"]:
        image, label = nib.load(small_dataset / item["image"]), nib.load(small_dataset / item["label"])
        assert image.shape == label.shape == SMALL
        assert image.get_data_dtype() == np.int16 and label.get_data_dtype() == np.uint8
        np.testing.assert_allclose(image.header.get_zooms(), synthetic.DEFAULT_SPACING, rtol=1e-5)
        np.testing.assert_allclose(image.affine, label.affine)
        assert nib.aff2axcodes(image.affine) == ("L", "P", "S"), "not RAS on purpose: Orientationd has work"
        assert np.abs(image.affine[:3, 3]).min() > 1.0, "origin should be a real, non-zero scanner position"
        assert image.header["sform_code"] == 1 and image.header["qform_code"] == 1
        values = np.unique(np.asarray(label.dataobj))
        assert set(values.tolist()) == {0, 1}
    assert not (small_dataset / "labelsTr" / "la_004.nii.gz").exists()
    assert nib.load(small_dataset / "imagesTs" / "la_004.nii.gz").shape == SMALL


def test_case_arrays_and_tissue_map_agree(default_cases):
    for case in default_cases:
        assert case.image.dtype == np.int16 and case.label.dtype == np.uint8 and case.tissues.dtype == np.uint8
        assert case.image.shape == case.label.shape == case.tissues.shape == synthetic.DEFAULT_SHAPE
        assert case.affine.shape == (4, 4) and case.affine.dtype == np.float64
        np.testing.assert_allclose(np.abs(np.diag(case.affine)[:3]), synthetic.DEFAULT_SPACING)
        names = {v: k for k, v in case.tissue_names.items()}
        target = np.isin(case.tissues, [names["left atrium"], names["pulmonary vein"]])
        np.testing.assert_array_equal(case.label, target)
        assert set(np.unique(case.tissues)) <= set(case.tissue_names)


def test_foreground_fraction_like_real_left_atrium(default_cases):
    fractions = [case.label.mean() for case in default_cases]
    assert all(0.003 <= f <= 0.01 for f in fractions), fractions


def test_blood_pools_are_equally_bright(default_cases):
    for case in default_cases:
        names = {v: k for k, v in case.tissue_names.items()}
        median = {n: np.median(case.image[case.tissues == names[n]]) for n in (*BLOOD, "myocardium", "lung")}
        la = median["left atrium"]
        assert all(0.75 < median[n] / la < 1.33 for n in BLOOD), median
        assert median["myocardium"] < 0.5 * la and median["lung"] < 0.15 * la


def test_global_threshold_cannot_find_the_atrium(default_cases):
    otsu, best = [], []
    for case in default_cases:
        x, y = case.image.astype(np.float32), case.label.astype(bool)
        otsu.append(dice(x > threshold_otsu(x), y))
        sweep = np.linspace(np.percentile(x, 1), np.percentile(x, 99.9), 50)
        best.append(max(dice(x > t, y) for t in sweep))  # the oracle threshold, chosen with the labels
    assert np.mean(otsu) < 0.4 and np.mean(best) < 0.4, (otsu, best)


def test_region_growing_from_the_atrium_leaks(default_cases):
    case = default_cases[0]
    names = {v: k for k, v in case.tissue_names.items()}
    la = np.median(case.image[case.label == 1])
    myo = np.median(case.image[case.tissues == names["myocardium"]])
    components, _ = ndimage.label(case.image > (la + myo) / 2)
    grown = components == np.bincount(components[case.label == 1]).argmax()
    assert grown[case.tissues == names["left ventricle"]].mean() > 0.5  # through the mitral opening
    assert grown[case.tissues == names["aorta"]].mean() > 0.5
    assert dice(grown, case.label == 1) < 0.4


def test_generate_case_is_deterministic_by_seed():
    a, b, c = (synthetic.generate_case(seed, shape=SMALL) for seed in (7, 7, 8))
    for field in ("image", "label", "affine", "tissues"):
        np.testing.assert_array_equal(getattr(a, field), getattr(b, field))
    assert not np.array_equal(a.image, c.image) and not np.array_equal(a.label, c.label)


def _arrays(dataset: Path) -> list[np.ndarray]:
    return [np.asarray(nib.load(p).dataobj) for p in sorted(dataset.glob("*/*.nii.gz"))]


def test_same_seed_writes_identical_datasets(tmp_path, small_dataset):
    again = synthetic.make_synthetic_dataset(tmp_path / "again", n_train=3, n_test=2, seed=0, shape=SMALL)
    other = synthetic.make_synthetic_dataset(tmp_path / "other", n_train=3, n_test=2, seed=1, shape=SMALL)
    for x, y in zip(_arrays(small_dataset), _arrays(again)):
        np.testing.assert_array_equal(x, y)
    assert not all(np.array_equal(x, y) for x, y in zip(_arrays(small_dataset), _arrays(other)))


def test_reuse_does_not_regenerate_and_overwrite_does(tmp_path):
    out = synthetic.make_synthetic_dataset(tmp_path / "ds", n_train=2, n_test=1, shape=SMALL)
    files = [out / "dataset.json", out / "imagesTr" / "la_001.nii.gz"]
    for f in files:  # pretend the files are an hour old, so any rewrite shows in st_mtime
        os.utime(f, (f.stat().st_atime - 3600, f.stat().st_mtime - 3600))
    before = [f.stat().st_mtime_ns for f in files]
    assert synthetic.make_synthetic_dataset(tmp_path / "ds", n_train=2, n_test=1, shape=SMALL) == out
    assert [f.stat().st_mtime_ns for f in files] == before
    synthetic.make_synthetic_dataset(out, n_train=2, n_test=1, shape=SMALL, overwrite=True)
    assert all(f.stat().st_mtime_ns > b for f, b in zip(files, before))
    synthetic.make_synthetic_dataset(out, n_train=2, n_test=1, seed=3, shape=SMALL)  # other seed: regenerated
    assert json.loads((out / "dataset.json").read_text())["synthetic"]["seed"] == 3
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ds"], "temporary folders left behind"


def test_refuses_to_replace_a_folder_that_is_not_synthetic(tmp_path):
    real = tmp_path / "Task02_Heart"
    real.mkdir()
    (real / "dataset.json").write_text(json.dumps({"name": "LeftAtrium", "numTraining": 20, "numTest": 10}))
    with pytest.raises(FileExistsError, match="Task02_Heart"):
        synthetic.make_synthetic_dataset(real, n_train=1, n_test=0, shape=SMALL)
    assert sorted(p.name for p in real.iterdir()) == ["dataset.json"]


def test_import_is_light():
    code = "import sys, heartseg_utils.synthetic; print(sorted({'torch', 'monai', 'matplotlib'} & set(sys.modules)))"
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True)
    assert out.stdout.strip() == "[]"


@pytest.mark.parametrize("variant", ["thick_slice", "small", "short_axis"])
def test_variant_cases_follow_their_geometry(variant):
    v = synthetic.VARIANTS[variant]
    for seed in range(4):
        case = synthetic.generate_variant_case(seed, variant)
        spacing = np.linalg.norm(case.affine[:3, :3], axis=0)  # the voxel size, oblique affines included
        for n, s, (lo, hi), (slo, shi) in zip(case.image.shape, spacing, v.shape, v.spacing_mm):
            assert lo <= n <= hi and slo - 0.01 <= s <= shi + 0.01, (case.image.shape, spacing)
        assert case.image.shape == case.label.shape == case.tissues.shape
        assert set(np.unique(case.label).tolist()) == {0, 1}
        assert v.short_axis or nib.aff2axcodes(case.affine) == ("L", "P", "S")
    a, b = synthetic.generate_variant_case(3, variant), synthetic.generate_variant_case(3, variant)
    np.testing.assert_array_equal(a.image, b.image)


def test_thick_slice_label_spans_several_slices_and_12_bit_range():
    for seed in range(6):
        case = synthetic.generate_variant_case(seed, "thick_slice")
        slices = np.flatnonzero(case.label.any(axis=(0, 1)))
        assert slices.size >= 3, f"left atrium on {slices.size} slices only (seed {seed})"
        assert case.image.dtype == np.uint16 and 2000 < case.image.max() <= 4095
        la = case.image[case.label == 1]
        assert np.median(la) > 3 * np.median(case.image[case.tissues == 4])  # bright blood, dark lung


def test_small_variant_is_a_float_box_around_the_atrium():
    for seed in range(4):
        case = synthetic.generate_variant_case(seed, "small")
        assert case.image.dtype == np.float32 and 0.5 < case.image.max() < 2.0
        assert 0.03 < case.label.mean() < 0.4  # a box around the target: far more foreground than the default
        assert np.isin(case.tissues, [10, 13]).any()  # the box also holds bright look-alikes (LV, aorta)


def test_default_variant_is_the_original_generator():
    a, b = synthetic.generate_variant_case(11, "default"), synthetic.generate_case(11)
    np.testing.assert_array_equal(a.image, b.image)
    np.testing.assert_array_equal(a.affine, b.affine)


def test_variant_dataset_records_the_variant_and_loads(tmp_path, small_dataset):
    out = synthetic.make_synthetic_dataset(tmp_path / "thick", n_train=2, n_test=1, variant="thick_slice")
    meta = json.loads((out / "dataset.json").read_text())["synthetic"]
    assert meta["variant"] == "thick_slice" and meta["intensity"] == "uint12" and "shape" in meta
    assert "variant" not in json.loads((small_dataset / "dataset.json").read_text())["synthetic"]
    from heartseg_utils import data

    items = data.validate_dataset(out)
    assert [nib.load(i["image"]).shape[2] for i in items] != [nib.load(i["image"]).shape[0] for i in items]
    with pytest.raises(ValueError, match="variant"):
        synthetic.make_synthetic_dataset(tmp_path / "x", n_train=1, n_test=0, variant="huge")
    with pytest.raises(ValueError, match="default variant only"):
        synthetic.make_synthetic_dataset(tmp_path / "y", n_train=1, n_test=0, shape=SMALL, variant="small")


def test_command_line_writes_a_variant(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "heartseg_utils.synthetic",
            "--variant",
            "small",
            "--out",
            str(tmp_path / "s"),
            "--n_train",
            "2",
            "--n_test",
            "1",
            "--seed",
            "4",
        ],
        capture_output=True,
        text=True,
        env=env,
        check=True,
    )
    info = json.loads((tmp_path / "s" / "dataset.json").read_text())
    assert out.stdout.strip() == str(tmp_path / "s") and info["synthetic"]["variant"] == "small"
    assert (info["numTraining"], info["numTest"], info["synthetic"]["seed"]) == (2, 1, 4)


@pytest.fixture(scope="module")
def short_axis_cases() -> list[synthetic.PhantomCase]:
    return [synthetic.generate_variant_case(seed, "short_axis") for seed in range(5)]


def test_short_axis_geometry_is_that_of_cine_stacks(short_axis_cases):
    heart = [7, 8, 10, 11, 12]  # myocardium and the four chambers
    for case in short_axis_cases:
        (nx, ny, nz), zooms = case.image.shape, np.linalg.norm(case.affine[:3, :3], axis=0)
        assert 210 <= nx <= 260 and 230 <= ny <= 270 and 6 <= nz <= 18, case.image.shape
        assert 1.3 <= zooms[0] <= 1.9 and 5.0 <= zooms[2] <= 10.0 and zooms[0] == pytest.approx(zooms[1]), zooms
        assert 80 - zooms[2] / 2 <= nz * zooms[2] <= 130 + zooms[2] / 2  # the stack spans 80-130 mm
        assert np.abs(case.affine[:3, :3] - np.diag(np.diag(case.affine[:3, :3]))).max() > 0.1, "oblique"
        np.testing.assert_allclose(case.affine[:3, :3].T @ case.affine[:3, :3], np.diag(zooms**2), atol=1e-9)
        inside = np.isin(case.tissues, heart)
        across = [
            max(np.ptp(np.flatnonzero(inside[:, :, k].any(axis=1 - a))) + 1 for k in range(nz) if inside[:, :, k].any())
            for a in (0, 1)
        ]
        fraction = np.array(across) / (nx, ny)
        assert np.all((0.15 <= fraction) & (fraction <= 0.32)), fraction
        assert np.flatnonzero(case.label.any(axis=(0, 1))).size >= 3, "left atrium on too few slices"
        assert set(np.unique(case.label).tolist()) == {0, 1}


def test_short_axis_intensities_are_uint16_with_a_per_case_scale(short_axis_cases):
    tops = []
    for case in short_axis_cases:
        assert case.image.dtype == np.uint16 and 800 < case.image.max() < 5000
        blood, lung = np.median(case.image[case.label == 1]), np.median(case.image[case.tissues == 4])
        assert blood > 5 * lung
        tops.append(np.percentile(case.image, 99.9))
    assert max(tops) > 1.5 * min(tops), tops  # a fixed intensity window would not fit every case


def test_short_axis_is_deterministic():
    """Its generation time is a benchmark figure (docs/benchmarks.md), not an assertion."""
    a = synthetic.generate_variant_case(21, "short_axis")
    b = synthetic.generate_variant_case(21, "short_axis")
    np.testing.assert_array_equal(a.image, b.image)
    np.testing.assert_array_equal(a.affine, b.affine)


ALL_CODES = ("la", "lv", "myo", "rv", "ra", "aorta")
# the tissue (of case.tissues) under each structure's label: LA + veins, LV blood, LV myocardium, RV blood, ...
TISSUES_OF = {"la": {8, 9}, "lv": {10}, "myo": {7}, "rv": {12}, "ra": {11}, "aorta": {13}}


@pytest.fixture(scope="module")
def multi_dataset(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("multi") / "ds"
    return synthetic.make_synthetic_dataset(out, n_train=3, n_test=2, seed=0, shape=SMALL, labels="lv,myo,rv")


def test_multi_label_folder_has_one_value_per_structure(multi_dataset, small_dataset):
    info = json.loads((multi_dataset / "dataset.json").read_text())
    assert info["labels"] == {"0": "background", "1": "left ventricle", "2": "myocardium", "3": "right ventricle"}
    assert info["synthetic"]["labels"] == ["lv", "myo", "rv"] and info["name"] == "Heart"
    for item in info["training"]:
        label = np.asarray(nib.load(multi_dataset / item["label"]).dataobj)
        assert label.dtype == np.uint8 and set(np.unique(label).tolist()) == {0, 1, 2, 3}
    for path in sorted(multi_dataset.glob("images*/*.nii.gz")):  # the labels change, the images do not
        same = small_dataset / path.parent.name / path.name
        np.testing.assert_array_equal(np.asarray(nib.load(path).dataobj), np.asarray(nib.load(same).dataobj))


@pytest.mark.parametrize("variant", list(synthetic.VARIANTS))
def test_every_variant_labels_every_structure_apart(variant):
    for seed in range(2):
        case = synthetic.generate_variant_case(seed, variant, labels=",".join(ALL_CODES))
        assert set(np.unique(case.label).tolist()) == set(range(len(ALL_CODES) + 1)), "a structure is missing"
        for value, code in enumerate(ALL_CODES, start=1):  # one value per voxel, so structures never overlap
            assert set(np.unique(case.tissues[case.label == value]).tolist()) <= TISSUES_OF[code], code
        np.testing.assert_array_equal(case.label == 1, np.isin(case.tissues, [8, 9]))
        if variant != "small":  # whole scenes: the thin atrial/aortic walls and the pulmonary trunk stay background
            assert ((case.tissues == 7) & (case.label == 0)).any() and ((case.tissues == 12) & (case.label == 0)).any()
            binary = synthetic.generate_variant_case(seed, variant)
            np.testing.assert_array_equal(binary.label, (case.label == 1).astype(np.uint8))
            np.testing.assert_array_equal(binary.image, case.image)


def test_labels_la_is_exactly_the_default(tmp_path, small_dataset):
    a, b, c = (synthetic.generate_case(5, SMALL, **kw) for kw in ({}, {"labels": "la"}, {"labels": ["LA"]}))
    for other in (b, c):
        for field in ("image", "label", "affine", "tissues"):
            np.testing.assert_array_equal(getattr(a, field), getattr(other, field))
    out = synthetic.make_synthetic_dataset(tmp_path / "la", n_train=3, n_test=2, seed=0, shape=SMALL, labels="la")
    files = sorted(p.relative_to(out) for p in out.rglob("*") if p.is_file())
    assert files == sorted(p.relative_to(small_dataset) for p in small_dataset.rglob("*") if p.is_file())
    for f in files:  # byte for byte, dataset.json included
        assert (out / f).read_bytes() == (small_dataset / f).read_bytes(), f


def test_a_folder_with_other_labels_is_regenerated_not_reused(tmp_path):
    out = synthetic.make_synthetic_dataset(tmp_path / "ds", n_train=1, n_test=0, shape=SMALL)
    synthetic.make_synthetic_dataset(out, n_train=1, n_test=0, shape=SMALL, labels="la,lv")
    info = json.loads((out / "dataset.json").read_text())
    assert info["labels"] == {"0": "background", "1": "left atrium", "2": "left ventricle"}
    assert set(np.unique(np.asarray(nib.load(out / "labelsTr" / "la_001.nii.gz").dataobj)).tolist()) == {0, 1, 2}
    before = (out / "dataset.json").stat().st_mtime_ns
    synthetic.make_synthetic_dataset(out, n_train=1, n_test=0, shape=SMALL, labels=["la", "lv"])  # same: reused
    assert (out / "dataset.json").stat().st_mtime_ns == before
    synthetic.make_synthetic_dataset(out, n_train=1, n_test=0, shape=SMALL)  # back to the binary default
    assert "labels" not in json.loads((out / "dataset.json").read_text())["synthetic"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ds"], "temporary folders left behind"


@pytest.mark.parametrize("labels", ["la,heart", "lv,lv", "", []])
def test_unknown_or_repeated_label_codes_are_refused(tmp_path, labels):
    with pytest.raises(ValueError, match="la, lv, myo, rv, ra, aorta"):
        synthetic.make_synthetic_dataset(tmp_path / "x", n_train=1, n_test=0, shape=SMALL, labels=labels)
    assert not (tmp_path / "x").exists()


def test_command_line_writes_a_multi_label_short_axis_folder(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    command = [
        sys.executable,
        "-m",
        "heartseg_utils.synthetic",
        "--variant",
        "short_axis",
        "--out",
        str(tmp_path / "s"),
    ]
    options = ["--n_train", "1", "--n_test", "0"]
    subprocess.run([*command, *options, "--labels", "lv,myo,rv"], capture_output=True, env=env, check=True)
    info = json.loads((tmp_path / "s" / "dataset.json").read_text())
    assert info["synthetic"]["variant"] == "short_axis" and info["synthetic"]["labels"] == ["lv", "myo", "rv"]
    bad = subprocess.run([*command, *options, "--labels", "lv,xx"], capture_output=True, text=True, env=env)
    assert bad.returncode == 2 and "la, lv, myo, rv, ra, aorta" in bad.stderr
