"""Tests for heartseg_utils.data: data folder resolution, MSD datalists, validation, download, splits."""

from __future__ import annotations

import gzip
import hashlib
import json
import random
import socket
import subprocess
import sys
import tarfile
import urllib.request
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from _msd import AFFINE, make_msd, tree_digest, write_nifti

from heartseg_utils import data, runs, splits
from heartseg_utils.data import DatasetError

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def msd(tmp_path: Path) -> Path:
    return make_msd(tmp_path / "msd")


@pytest.fixture
def no_network(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Make every network path fail (and record attempts) so no test can reach the internet."""
    attempts: list[str] = []

    def refuse(address, *args, **kwargs):
        attempts.append(str(address))
        raise OSError("network unreachable (blocked in tests)")

    def refuse_url(url, *args, **kwargs):
        if str(getattr(url, "full_url", url)).startswith("file:"):
            return real_urlopen(url, *args, **kwargs)
        attempts.append(str(url))
        raise AssertionError(f"test tried to fetch {url}")

    real_urlopen = urllib.request.urlopen
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    monkeypatch.setattr(urllib.request, "urlopen", refuse_url)
    return attempts


# ---------------------------------------------------------------------------------------------- import
def test_import_is_light_and_side_effect_free():
    code = "import sys, heartseg_utils.data; assert 'torch' not in sys.modules and 'monai' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], cwd=REPO, check=True)


def test_public_functions_say_which_notebook_introduces_them():
    for name in [
        "resolve_data_dir",
        "get_dataset_dir",
        "load_dataset_json",
        "load_datalist",
        "validate_dataset",
        "download_task02_heart",
        "case_name",
        "split_cases",
    ]:
        assert "Introduced in notebook 0" in getattr(data, name).__doc__, name
    for name in ("train_val_split", "kfold_split", "set_aside", "holdout_then_kfold", "make_split"):
        assert "Introduced in notebook 0" in getattr(splits, name).__doc__, name
    assert "notebook 03" in splits.train_val_split.__doc__
    assert "notebook 05" in splits.kfold_split.__doc__


def test_task02_constants_match_monai_source():
    import monai.apps.datasets as ds

    source = Path(ds.__file__).read_text()
    assert f'"Task02_Heart": "{data.TASK02_URL}"' in source
    assert f'"Task02_Heart": "{data.TASK02_MD5}"' in source


# ---------------------------------------------------------------------------------------------- resolve
def test_resolve_argument_beats_env(tmp_path, monkeypatch):
    monkeypatch.setenv("HEARTSEG_DATA_DIR", str(tmp_path / "env"))
    assert data.resolve_data_dir(tmp_path / "arg") == (tmp_path / "arg").resolve()


@pytest.mark.parametrize("empty", ["", None, "  "])
def test_resolve_env_beats_repo_data(tmp_path, monkeypatch, empty):
    monkeypatch.setenv("HEARTSEG_DATA_DIR", str(tmp_path / "env"))
    assert data.resolve_data_dir(empty) == (tmp_path / "env").resolve()


def test_resolve_falls_back_to_repo_data_folder(monkeypatch):
    monkeypatch.delenv("HEARTSEG_DATA_DIR", raising=False)
    assert data.resolve_data_dir() == REPO / "data"
    monkeypatch.setenv("HEARTSEG_DATA_DIR", "")
    assert data.resolve_data_dir("") == REPO / "data"


# ---------------------------------------------------------------------------------------------- get_dataset_dir
def test_get_dataset_dir_uses_msd_folder_itself(msd):
    assert data.get_dataset_dir(str(msd)) == msd.resolve()


def test_get_dataset_dir_finds_task02_heart_inside(tmp_path):
    make_msd(tmp_path / "Task02_Heart")
    assert data.get_dataset_dir(tmp_path) == (tmp_path / "Task02_Heart").resolve()


def test_get_dataset_dir_explicit_folder_without_data_is_an_error(tmp_path, monkeypatch):
    monkeypatch.setattr(data, "_repo_data_dir", lambda: pytest.fail("must not fall back"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(DatasetError, match=r"empty.*neither a dataset\.json nor a Task02_Heart.*data_dir=\"\""):
        data.get_dataset_dir(tmp_path / "empty")
    with pytest.raises(DatasetError, match=r"nowhere does not exist.*data_dir=\"\""):
        data.get_dataset_dir(tmp_path / "nowhere")
    assert sorted(tmp_path.iterdir()) == [tmp_path / "empty"]  # nothing generated for an explicit folder


def test_get_dataset_dir_generates_synthetic_default_once_and_reuses(tmp_path, monkeypatch):
    synthetic = pytest.importorskip("heartseg_utils.synthetic")
    calls: list[tuple] = []
    real = synthetic.make_synthetic_dataset

    def small(out_dir, **kwargs):
        calls.append((out_dir, kwargs))
        return real(out_dir, n_train=3, n_test=1, shape=(24, 24, 16), seed=kwargs.get("seed", 0))

    monkeypatch.setattr(synthetic, "make_synthetic_dataset", small)
    monkeypatch.setenv("HEARTSEG_DATA_DIR", str(tmp_path))
    first = data.get_dataset_dir("", seed=0)
    assert first == (tmp_path / "Task02_Heart_synthetic").resolve()
    assert len(calls) == 1
    items = data.validate_dataset(first)
    assert len(items) == 3
    before = tree_digest(first)
    assert data.get_dataset_dir("") == first and len(calls) == 1  # reused, not regenerated
    assert data.get_dataset_dir(str(tmp_path)) == first and len(calls) == 1  # explicit: reuse only
    assert tree_digest(first) == before


# ---------------------------------------------------------------------------------------------- datalists
def test_load_datalist_training_and_test(msd):
    train = data.load_datalist(msd)
    assert [d["case"] for d in train] == ["la_003", "la_004", "la_005"]
    for d in train:
        assert set(d) == {"case", "image", "label"}
        assert Path(d["image"]).is_absolute() and Path(d["image"]).is_file()
        assert Path(d["label"]) == (msd / "labelsTr" / f"{d['case']}.nii.gz").resolve()
    test = data.load_datalist(msd, "test")
    assert test == [{"case": "la_006", "image": str((msd / "imagesTs" / "la_006.nii.gz").resolve())}]


def test_load_datalist_without_test_section_and_unknown_section(msd):
    meta = json.loads((msd / "dataset.json").read_text())
    del meta["test"]
    (msd / "dataset.json").write_text(json.dumps(meta))
    assert data.load_datalist(msd, "test") == []
    with pytest.raises(DatasetError, match=r"dataset\.json has no \"tset\" section"):
        data.load_datalist(msd, "tset")


def test_validate_good_dataset_returns_datalist_and_changes_nothing(msd):
    before = tree_digest(msd)
    assert data.validate_dataset(msd) == data.load_datalist(msd)
    assert tree_digest(msd) == before


# ---------------------------------------------------------------------------------------------- bad inputs
def _edit_json(root: Path, edit) -> None:
    meta = json.loads((root / "dataset.json").read_text())
    edit(meta)
    (root / "dataset.json").write_text(json.dumps(meta))


def _truncate(path: Path, keep: float) -> None:
    raw = path.read_bytes()
    path.write_bytes(raw[: int(len(raw) * keep)])


def _overwrite_middle(path: Path) -> None:
    raw = bytearray(path.read_bytes())
    raw[len(raw) // 2 : len(raw) // 2 + 16] = b"\xff" * 16  # decodes "fine" for nibabel; the gzip CRC fails
    path.write_bytes(bytes(raw))


def _image(root, case="la_004"):
    return root / "imagesTr" / f"{case}.nii.gz"


def _label(root, case="la_004"):
    return root / "labelsTr" / f"{case}.nii.gz"


def _rewrite_image(root, fn):
    img = nib.load(str(_image(root)))
    arr = np.asanyarray(img.dataobj).copy()
    write_nifti(_image(root), fn(arr))


def _rewrite_label(root, array=None, affine=AFFINE):
    arr = np.asanyarray(nib.load(str(_label(root))).dataobj).copy() if array is None else array
    write_nifti(_label(root), arr, affine)


def _set(arr, index, value):
    arr[index] = value
    return arr


def _label_with(value, dtype):
    arr = np.zeros((8, 8, 6), dtype=dtype)
    arr[1, 1, 1] = value
    return arr


BAD_INPUTS = {
    # name: (break the folder, regex the message must match: file name + problem + fix)
    "missing dataset.json": (lambda r: (r / "dataset.json").unlink(), r"dataset\.json is missing.*data_dir"),
    "bad json": (
        lambda r: (r / "dataset.json").write_text('{"training": [,]}'),
        r"dataset\.json is not valid JSON.*line 1.*Fix the syntax",
    ),
    "no training key": (
        lambda r: _edit_json(r, lambda m: m.pop("training")),
        r"dataset\.json has no \"training\" key.*Add a \"training\" list",
    ),
    "empty training": (
        lambda r: _edit_json(r, lambda m: m.update(training=[])),
        r"dataset\.json lists no training cases.*Add image/label entries",
    ),
    "entry without label": (
        lambda r: _edit_json(r, lambda m: m["training"][1].pop("label")),
        r"dataset\.json: training entry 1 .*la_004.* has no \"label\"",
    ),
    "missing image": (
        lambda r: _image(r).unlink(),
        r"Listed image .*imagesTr/la_004\.nii\.gz.* is missing.*Restore the file",
    ),
    "image without label": (
        lambda r: _label(r).unlink(),
        r"imagesTr/la_004\.nii\.gz has no label: .*labelsTr/la_004\.nii\.gz.*missing",
    ),
    "not a nifti": (
        lambda r: _image(r).write_bytes(b"this is not a NIfTI file" * 20),
        r"Image .*imagesTr/la_004\.nii\.gz cannot be read as NIfTI.*re-download",
    ),
    "damaged gzip": (
        lambda r: _label(r).write_bytes(gzip.compress(b"\x00" * 10)[:-8] + b"garbage!"),
        r"Label .*labelsTr/la_004\.nii\.gz cannot be read as NIfTI",
    ),
    "truncated image": (
        lambda r: _truncate(_image(r), 0.6),
        r"Image .*imagesTr/la_004\.nii\.gz is corrupt or truncated.*Re-download",
    ),
    "flipped bytes": (
        lambda r: _overwrite_middle(_image(r)),
        r"Image .*imagesTr/la_004\.nii\.gz is corrupt or truncated",
    ),
    "truncated label": (
        lambda r: _truncate(_label(r), 0.5),
        r"Label .*labelsTr/la_004\.nii\.gz (is corrupt or truncated|cannot be read)",
    ),
    "shape mismatch": (
        lambda r: _rewrite_label(r, np.zeros((8, 8, 5), np.uint8)),
        r"Shape mismatch for case la_004: image .*la_004\.nii\.gz is \(8, 8, 6\), "
        r"label .*la_004\.nii\.gz is \(8, 8, 5\)",
    ),
    "affine mismatch": (
        lambda r: _rewrite_label(r, affine=np.diag([1.25, 1.25, 1.5, 1.0])),
        r"Affine mismatch for case la_004: label .*labelsTr/la_004\.nii\.gz.*Resample",
    ),
    "nan voxel": (
        lambda r: _rewrite_image(r, lambda a: _set(a, (1, 2, 3), np.nan)),
        r"Image .*imagesTr/la_004\.nii\.gz has 1 NaN/inf voxel\(s\).*nan_to_num",
    ),
    "inf voxel": (
        lambda r: _rewrite_image(r, lambda a: _set(a, (0, 0, 0), np.inf)),
        r"Image .*imagesTr/la_004\.nii\.gz has 1 NaN/inf",
    ),
    "blank image": (
        lambda r: _rewrite_image(r, lambda a: a * 0),
        r"Image .*imagesTr/la_004\.nii\.gz is blank: every voxel is 0.*Re-export",
    ),
    "label value 2": (
        lambda r: _rewrite_label(r, _label_with(2, np.uint8)),
        r"Label .*labelsTr/la_004\.nii\.gz holds values \[2\] .*not keys of \"labels\""
        r".*allowed: \[0, 1\]",
    ),
    "interpolated label": (
        lambda r: _rewrite_label(r, _label_with(0.5, np.float32)),
        r"Label .*la_004\.nii\.gz holds values \[0\.5\].*nearest-neighbour",
    ),
    "duplicate case": (
        lambda r: _edit_json(r, lambda m: m["training"].append(m["training"][0])),
        r"case id 'la_003' appears twice",
    ),
}


@pytest.mark.parametrize("name", list(BAD_INPUTS))
def test_validate_rejects_bad_input_naming_the_file(msd, name):
    breaker, pattern = BAD_INPUTS[name]
    breaker(msd)
    before = tree_digest(msd)
    with pytest.raises(DatasetError, match=pattern):
        data.validate_dataset(msd)
    assert tree_digest(msd) == before  # validation never modifies or deletes anything


def test_validate_without_voxel_check_skips_voxel_problems_only(msd):
    BAD_INPUTS["nan voxel"][0](msd)
    assert len(data.validate_dataset(msd, check_voxels=False)) == 3
    BAD_INPUTS["affine mismatch"][0](msd)
    with pytest.raises(DatasetError, match="Affine mismatch"):
        data.validate_dataset(msd, check_voxels=False)


def test_validate_accepts_tiny_affine_differences(msd):
    _rewrite_label(msd, affine=AFFINE + 1e-5)
    assert len(data.validate_dataset(msd)) == 3


def test_validate_missing_folder(tmp_path):
    with pytest.raises(DatasetError, match=r"nope does not exist.*data_dir"):
        data.validate_dataset(tmp_path / "nope")


# ---------------------------------------------------------------------------------------------- download
def _make_tar(tmp_path: Path) -> tuple[Path, str]:
    src = tmp_path / "src"
    make_msd(src / "Task02_Heart", n_train=2, n_test=1)
    tar_path = tmp_path / "upload" / "Task02_Heart.tar"
    tar_path.parent.mkdir()
    with tarfile.open(tar_path, "w") as tar:
        tar.add(src / "Task02_Heart", arcname="Task02_Heart")
    return tar_path, hashlib.md5(tar_path.read_bytes()).hexdigest()


def _leftovers(root: Path) -> list[str]:
    return sorted(p.name for p in root.iterdir()) if root.exists() else []


def test_download_from_url_verifies_then_extracts(tmp_path, no_network):
    tar_path, md5 = _make_tar(tmp_path)
    root = tmp_path / "data"
    out = data.download_task02_heart(root, url=tar_path.as_uri(), md5=md5, progress=False)
    assert out == (root / "Task02_Heart").resolve()
    assert len(data.validate_dataset(out)) == 2
    assert _leftovers(root) == ["Task02_Heart", "Task02_Heart.tar"]
    assert no_network == []
    before = tree_digest(root)
    assert data.download_task02_heart(root, url="https://example.invalid/x.tar", md5=md5) == out  # no-op
    assert tree_digest(root) == before and no_network == []


def test_download_wrong_md5_extracts_nothing(tmp_path, no_network):
    tar_path, _ = _make_tar(tmp_path)
    root = tmp_path / "data"
    with pytest.raises(DatasetError, match=r"Download of .*Task02_Heart\.tar.* failed.*md5"):
        data.download_task02_heart(root, url=tar_path.as_uri(), md5="0" * 32, progress=False)
    assert _leftovers(root) == []


def test_preplaced_tar_is_verified_and_extracted_offline(tmp_path, no_network):
    tar_path, md5 = _make_tar(tmp_path)
    root = tmp_path / "data"
    root.mkdir()
    (root / "Task02_Heart.tar").write_bytes(tar_path.read_bytes())
    out = data.download_task02_heart(root, md5=md5)  # default (real) URL, but the network is blocked
    assert (out / "dataset.json").is_file() and no_network == []


def test_preplaced_tar_with_wrong_md5_is_rejected_and_not_extracted(tmp_path, no_network):
    tar_path, md5 = _make_tar(tmp_path)
    root = tmp_path / "data"
    root.mkdir()
    (root / "Task02_Heart.tar").write_bytes(tar_path.read_bytes()[:-512])  # incomplete copy
    with pytest.raises(DatasetError, match=r"Task02_Heart\.tar has md5 [0-9a-f]{32}, expected " + md5):
        data.download_task02_heart(root, md5=md5)
    assert _leftovers(root) == ["Task02_Heart.tar"]  # kept for inspection, nothing extracted
    assert no_network == []


def test_download_offline_fails_fast_with_both_ways_out(tmp_path, no_network, monkeypatch):
    probes: list[float] = []
    real_probe = data._can_connect
    monkeypatch.setattr(data, "_can_connect", lambda url, timeout: probes.append(timeout) or real_probe(url, timeout))
    with pytest.raises(DatasetError) as info:
        data.download_task02_heart(tmp_path / "data")
    message = str(info.value)
    assert probes and max(probes) <= 10  # one connectivity probe, bounded by its timeout: no download that hangs
    assert "unreachable" in message and 'data_dir=""' in message
    assert str(tmp_path / "data" / "Task02_Heart.tar") in message and data.TASK02_URL in message
    assert "verified" in message and data.TASK02_MD5 in message
    assert no_network  # the connectivity probe was tried (and refused), nothing downloaded
    assert _leftovers(tmp_path / "data") == []


# ---------------------------------------------------------------------------------------------- splits
CASES = [{"case": f"la_{i:03d}", "image": f"/x/la_{i:03d}.nii.gz"} for i in range(3, 23)]


def _ids(items):
    return [d["case"] if isinstance(d, dict) else d for d in items]


def test_train_val_split_is_deterministic_disjoint_and_order_independent():
    train, val = splits.train_val_split(CASES, val_fraction=0.2, seed=0)
    assert len(val) == 4 and len(train) == 16
    assert set(_ids(train)).isdisjoint(_ids(val)) and set(_ids(train + val)) == set(_ids(CASES))
    assert _ids(val) == sorted(_ids(val)) and _ids(train) == sorted(_ids(train))
    assert splits.train_val_split(CASES, 0.2, 0) == (train, val)
    shuffled = CASES[:]
    random.Random(123).shuffle(shuffled)
    assert splits.train_val_split(shuffled, 0.2, 0) == (train, val)
    assert _ids(splits.train_val_split(CASES, 0.2, 1)[1]) != _ids(val)
    assert splits.train_val_split(_ids(CASES), 0.2, 0) == (_ids(train), _ids(val))  # plain ids work too


def test_train_val_split_edges_and_errors():
    assert [len(part) for part in splits.train_val_split(CASES[:2], 0.01)] == [1, 1]
    assert [len(part) for part in splits.train_val_split(CASES[:3], 0.99)] == [1, 2]
    with pytest.raises(ValueError, match="val_fraction"):
        splits.train_val_split(CASES, 1.0)
    with pytest.raises(ValueError, match="at least 2"):
        splits.train_val_split(CASES[:1])
    with pytest.raises(ValueError, match="Duplicate case ids"):
        splits.train_val_split(CASES + CASES[:1])


@pytest.mark.parametrize("n_cases,n_folds", [(20, 5), (10, 3), (7, 7), (11, 2)])
def test_kfold_partitions_every_case_once(n_cases, n_folds):
    items = CASES[:n_cases]
    folds = splits.kfold_split(items, n_folds=n_folds, seed=0)
    assert len(folds) == n_folds
    vals = [_ids(val) for _, val in folds]
    assert sorted(sum(vals, [])) == sorted(_ids(items))  # every case validated exactly once
    assert max(map(len, vals)) - min(map(len, vals)) <= 1
    for train, val in folds:
        assert set(_ids(train)).isdisjoint(_ids(val)) and len(train) + len(val) == n_cases
    shuffled = items[::-1]
    assert splits.kfold_split(shuffled, n_folds=n_folds, seed=0) == folds


def test_kfold_seeded_and_errors():
    assert splits.kfold_split(CASES, 5, seed=0) == splits.kfold_split(CASES, 5, seed=0)
    assert splits.kfold_split(CASES, 5, seed=0) != splits.kfold_split(CASES, 5, seed=1)
    with pytest.raises(ValueError, match="n_folds"):
        splits.kfold_split(CASES[:3], 4)
    with pytest.raises(ValueError, match="n_folds"):
        splits.kfold_split(CASES, 1)


def test_holdout_then_kfold_sets_aside_then_partitions():
    holdout, folds = splits.holdout_then_kfold(CASES, n_folds=3, holdout_fraction=0.2, seed=5)
    assert len(holdout) == 4 and len(folds) == 3
    validated = sum((_ids(v) for _, v in folds), [])
    assert sorted(validated + _ids(holdout)) == sorted(_ids(CASES))  # every case: holdout or validated once
    assert all(set(_ids(t)).isdisjoint(_ids(holdout)) for t, _ in folds)
    assert splits.holdout_then_kfold(CASES, 3, 0.0, 5)[0] == []
    split = splits.make_split(CASES, seed=5, n_folds=3, fold=1, holdout_fraction=0.2)
    assert (split["holdout"], split["validation"]) == (holdout, folds[1][1])
    plain = splits.make_split(CASES, seed=0, val_fraction=0.2)
    assert (plain["train"], plain["validation"], plain["holdout"]) == (*splits.train_val_split(CASES, 0.2, 0), [])


def test_read_split_and_split_cases(tmp_path):
    items = [{"case": c, "image": f"/x/{c}"} for c in ("a", "b", "c")]
    with pytest.raises(FileNotFoundError, match="split.json is missing"):
        runs.read_split(tmp_path)
    (tmp_path / "split.json").write_text("{not json")
    with pytest.raises(ValueError, match="split.json is not valid JSON"):
        runs.read_split(tmp_path)
    (tmp_path / "split.json").write_text(json.dumps({"train": ["a"]}))
    with pytest.raises(ValueError, match="needs 'train' and 'validation'"):
        runs.read_split(tmp_path)
    runs.write_json({"dataset_dir": "/nowhere", "train": ["c", "a"], "validation": ["b"]}, tmp_path / "split.json")
    assert data.split_cases(tmp_path, "train", items) == [items[2], items[0]]
    with pytest.raises(KeyError, match="no 'holdout' list"):
        data.split_cases(tmp_path, "holdout", items)
    with pytest.raises(ValueError, match=r"validation cases \['b'\].*wrong data_dir"):
        data.split_cases(tmp_path, "validation", items[:1])


def test_write_atomic_replaces_whole_files_only(tmp_path):
    target = tmp_path / "x.json"
    runs.write_json({"a": 1}, target)

    def crash(tmp):
        tmp.write_text('{"a": ')
        raise RuntimeError("killed mid-write")

    with pytest.raises(RuntimeError):
        runs.write_atomic(target, crash)
    assert json.loads(target.read_text()) == {"a": 1}  # the old content survives a crash
    assert runs.write_atomic(target, lambda p: p.write_text("{}")) == target and json.loads(target.read_text()) == {}
