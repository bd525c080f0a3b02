"""Tests for heartseg_utils.transforms on tiny synthetic NIfTI files (LPS, anisotropic)."""

from __future__ import annotations

import pickle

import nibabel as nib
import numpy as np
import pytest

pytest.importorskip("monai")
import torch  # noqa: E402
from monai.transforms import Invertd, Rand3DElasticd, Randomizable  # noqa: E402
from monai.utils import set_determinism  # noqa: E402

from heartseg_utils import transforms as T  # noqa: E402

PIXDIM = (1.25, 1.25, 1.37)
ROI = (32, 32, 32)


def _write_case(folder, name: str, spacing=(1.0, 1.5, 3.0), shape=(40, 36, 20), label_value=2, seed=0):
    """Write an image/label pair with an LPS affine (x and y flipped) and anisotropic voxels."""
    rng = np.random.default_rng(seed)
    img = np.zeros(shape, np.float32)
    img[4:-4, 4:-4, 2:-2] = rng.normal(100, 20, (shape[0] - 8, shape[1] - 8, shape[2] - 4)).clip(1, None)
    lab = np.zeros(shape, np.uint8)
    lab[15:25, 12:22, 6:12] = label_value
    affine = np.diag([-spacing[0], -spacing[1], spacing[2], 1.0])
    paths = {"case": name, "image": str(folder / f"{name}.nii.gz"), "label": str(folder / f"{name}_seg.nii.gz")}
    nib.save(nib.Nifti1Image(img, affine), paths["image"])
    nib.save(nib.Nifti1Image(lab, affine), paths["label"])
    return paths


@pytest.fixture(scope="module")
def case(tmp_path_factory):
    return _write_case(tmp_path_factory.mktemp("tf"), "la_001")


@pytest.fixture(scope="module")
def val_out(case):
    return T.get_transforms("val", pixdim=PIXDIM)(case)


def test_val_orientation_spacing_and_padding(val_out):
    img, lab = val_out["image"], val_out["label"]
    assert nib.aff2axcodes(img.affine.numpy()) == ("R", "A", "S")
    np.testing.assert_allclose(img.pixdim.numpy(), PIXDIM, atol=1e-4)
    assert img.shape == lab.shape and img.shape[0] == 1
    assert all(s % 16 == 0 for s in img.shape[1:])


def test_val_label_nearest_and_binary(val_out):
    values = set(np.unique(val_out["label"].numpy()).tolist())
    assert values == {0.0, 1.0}  # 2 -> 1, and nearest interpolation keeps it integer


def test_per_axis_divisor_pads_each_axis_to_its_own_multiple(case):
    out = T.get_transforms("val", pixdim=PIXDIM, divisor=(16, 8, 3))(case)
    assert all(s % d == 0 for s, d in zip(out["image"].shape[1:], (16, 8, 3)))
    assert out["image"].shape[1:] != val_shape(case)  # differs from the default divisor 16 on some axis


def val_shape(case):
    return tuple(T.get_transforms("val", pixdim=PIXDIM)(case)["image"].shape[1:])


@pytest.mark.parametrize("stage", ["train", "val"])
def test_device_argument_keeps_keys_and_shapes_on_the_cpu(case, stage):
    """The CUDA fast path (EnsureTyped at the end of the cached prefix), exercised with device="cpu"."""
    from monai.transforms import EnsureTyped

    def run(**kw):
        tf = T.get_transforms(stage, pixdim=PIXDIM, roi_size=ROI, num_samples=2, **kw)
        tf.set_random_state(seed=0)
        out = tf(case)
        return tf, out if isinstance(out, list) else [out]

    (plain_tf, plain), (fast_tf, fast) = run(), run(device="cpu")
    assert [type(t) for t in fast_tf.transforms].count(EnsureTyped) == 1
    assert EnsureTyped not in [type(t) for t in plain_tf.transforms]
    for a, b in zip(plain, fast, strict=True):
        assert set(a) == set(b) and {"image", "label"} <= set(b)
        assert all(a[k].shape == b[k].shape and b[k].device.type == "cpu" for k in ("image", "label"))


def test_binarize_label_numpy_and_torch():
    arr = np.array([0, 1, 2, 3], np.uint8)
    np.testing.assert_array_equal(T.binarize_label(arr), [0, 1, 1, 1])
    assert T.binarize_label(arr).dtype == np.uint8
    ten = torch.tensor([0.0, 2.0])
    assert T.binarize_label(ten).tolist() == [0.0, 1.0]


def test_normalize_nonzero(val_out):
    img = val_out["image"].numpy()
    body = img[img != 0]
    assert abs(body.mean()) < 0.05 and abs(body.std() - 1) < 0.05


def test_train_patches(case):
    out = T.get_transforms("train", pixdim=PIXDIM, roi_size=ROI, num_samples=3)(case)
    assert isinstance(out, list) and len(out) == 3
    for patch in out:
        assert tuple(patch["image"].shape) == (1, *ROI)
        assert tuple(patch["label"].shape) == (1, *ROI)
        assert set(np.unique(patch["label"].numpy()).tolist()) <= {0.0, 1.0}


def test_train_non_cubic_roi_keeps_shape(case):
    tf = T.get_transforms("train", pixdim=PIXDIM, roi_size=(16, 24, 16), num_samples=4)
    tf.set_random_state(seed=0)
    for _ in range(3):
        assert all(tuple(p["image"].shape) == (1, 16, 24, 16) for p in tf(case))


def test_train_deterministic_with_seed(case):
    def run():
        set_determinism(seed=0)
        try:
            return T.get_transforms("train", pixdim=PIXDIM, roi_size=ROI)(case)
        finally:
            set_determinism(seed=None)

    a, b = run(), run()
    for pa, pb in zip(a, b):
        assert torch.equal(pa["image"].as_tensor(), pb["image"].as_tensor())
        assert torch.equal(pa["label"].as_tensor(), pb["label"].as_tensor())


def test_elastic_flag():
    names = lambda c: [type(t) for t in c.transforms]  # noqa: E731
    assert Rand3DElasticd not in names(T.get_transforms("train", pixdim=PIXDIM))
    assert Rand3DElasticd in names(T.get_transforms("train", pixdim=PIXDIM, elastic=True))


def test_both_in_plane_flips_of_tta_are_trained_for_any_patch():
    """A square patch gets quarter turns (which with the left-right flip give the front-back flip); a patch that is
    not square in-plane, which a turn would reshape, gets the front-back flip itself. TTA flips axes 0 and 1."""
    import monai.transforms as mt

    from heartseg_utils.inference import TTA_AXES

    def flips(roi):
        chain = T.get_transforms("train", pixdim=PIXDIM, roi_size=roi).transforms
        axes = {t.flipper.spatial_axis for t in chain if isinstance(t, mt.RandFlipd)}
        return axes, any(isinstance(t, mt.RandRotate90d) for t in chain)

    assert flips((16, 16, 16)) == ({0}, True)
    assert flips((16, 24, 16)) == ({0, 1}, False) and set(TTA_AXES) == {0, 1}


def test_mr_artefacts_flag_adds_monai_artefacts_that_keep_the_patch():
    import monai.transforms as mt
    from monai.transforms import RandBiasFieldd, RandGibbsNoised, RandKSpaceSpikeNoised

    names = lambda c: [type(t) for t in c.transforms]  # noqa: E731
    added = {RandBiasFieldd, RandGibbsNoised, RandKSpaceSpikeNoised}
    assert not added & set(names(T.get_transforms("train", pixdim=PIXDIM)))
    assert added <= set(names(T.get_transforms("train", pixdim=PIXDIM, mr_artefacts=True)))
    assert not added & set(names(T.get_transforms("val", pixdim=PIXDIM, mr_artefacts=True)))  # training only
    patch = {"image": torch.randn(1, 16, 16, 8), "label": torch.zeros(1, 16, 16, 8)}
    for xform in T.mr_artefact_transforms(mt):
        xform.set_random_state(seed=0)
        if hasattr(xform, "prob"):
            xform.prob = 1.0  # every artefact applied once, so each is shown to keep shape and finiteness
        out = xform(dict(patch))["image"]
        assert out.shape == patch["image"].shape and torch.isfinite(torch.as_tensor(out)).all()


@pytest.mark.parametrize("stage", ["train", "val", "infer"])
def test_deterministic_prefix_then_random(stage):
    is_random = [isinstance(t, Randomizable) for t in T.get_transforms(stage, pixdim=PIXDIM).transforms]
    first = is_random.index(True) if True in is_random else len(is_random)
    assert not any(is_random[:first]) and all(is_random[first:])
    assert (stage == "train") == any(is_random)


def test_infer_image_only_and_invertible(case):
    pipeline = T.get_transforms("infer", pixdim=PIXDIM)
    out = pipeline({"image": case["image"]})
    assert set(out) == {"image"}
    out["pred"] = out["image"].clone()
    inv = Invertd(keys="pred", transform=pipeline, orig_keys="image", nearest_interp=True)(out)
    assert tuple(inv["pred"].shape[1:]) == nib.load(case["image"]).shape


def test_pipelines_pickle():
    pickle.dumps(T.get_transforms("train", pixdim=PIXDIM, elastic=True))


def test_bad_arguments():
    with pytest.raises(ValueError, match="train.*val.*infer"):
        T.get_transforms("test")
    with pytest.raises(ValueError, match="resolve_pixdim"):
        T.get_transforms("val", pixdim="auto")


def test_median_spacing_and_resolve(tmp_path):
    items = [
        _write_case(tmp_path, "a", spacing=(1.0, 1.0, 2.0)),
        _write_case(tmp_path, "b", spacing=(1.2, 1.4, 2.5)),
        _write_case(tmp_path, "c", spacing=(0.8, 1.6, 3.0)),
    ]
    assert T.median_spacing(items) == (1.0, 1.4, 2.5)
    assert T.resolve_pixdim("auto", items) == (1.0, 1.4, 2.5)
    assert T.resolve_pixdim((1.5, 1.5, 1.0)) == (1.5, 1.5, 1.0)
    assert T.resolve_pixdim(2) == (2.0, 2.0, 2.0)
    with pytest.raises(ValueError):
        T.resolve_pixdim("auto")
    with pytest.raises(ValueError):
        T.resolve_pixdim((1.0, -1.0, 1.0))


def test_median_spacing_reorders_to_ras(tmp_path):
    """A volume stored as (z, x, y) still reports spacing in RAS axis order."""
    path = tmp_path / "perm.nii.gz"
    affine = np.array([[0, 1.0, 0, 0], [0, 0, 1.5, 0], [3.0, 0, 0, 0], [0, 0, 0, 1]])
    nib.save(nib.Nifti1Image(np.zeros((4, 5, 6), np.float32), affine), path)
    assert T.median_spacing([{"image": str(path)}]) == (1.0, 1.5, 3.0)
