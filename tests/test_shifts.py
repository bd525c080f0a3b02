"""The test shifts (heartseg_utils.shifts): each kind changes the scans as documented, and the source is only read."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from heartseg_utils.data import load_datalist
from heartseg_utils.shifts import SHIFTS, miss_heart_slab, shift_case, write_shifted
from tests._msd import tree_digest


def _case() -> tuple[np.ndarray, np.ndarray]:
    """A smooth body with a bright cube as the label, so each artefact's effect is measurable."""
    x, y, z = np.meshgrid(*[np.linspace(-1, 1, n) for n in (32, 32, 20)], indexing="ij")
    image = np.where(x**2 + y**2 < 0.9, 300.0, 0.0).astype(np.float32)
    label = np.zeros(image.shape, np.uint8)
    label[12:20, 12:20, 5:15] = 1
    image[label == 1] = 900.0
    return image, label


@pytest.mark.parametrize("kind", sorted(set(SHIFTS) - {"miss_heart"}))
def test_each_shift_changes_the_body_and_keeps_the_background(kind: str) -> None:
    image, label = _case()
    shifted, out_label, kept = shift_case(image, label, kind, seed=1)
    body = image > 0
    assert shifted.shape == image.shape and kept == slice(0, image.shape[-1])
    assert np.array_equal(out_label, label)
    assert (shifted[~body] == 0).all() and (shifted[body] > 0).all()  # the crop to the body (image > 0) holds
    change = np.abs(shifted[body] - image[body]).mean() / image[body].mean()
    assert change > 0.02, f"{kind} changed the body by only {change:.3f} of its mean"


def test_inversion_makes_the_label_darker_than_its_surroundings() -> None:
    image, label = _case()
    shifted, _, _ = shift_case(image, label, "inversion", seed=0)
    assert shifted[label == 1].mean() < shifted[(image > 0) & (label == 0)].mean()


def test_miss_heart_keeps_about_a_fifth_of_the_label() -> None:
    image, label = _case()
    shifted, out_label, kept = shift_case(image, label, "miss_heart", seed=0)
    share = out_label.sum() / label.sum()
    assert 0.1 <= share <= 0.35 and shifted.shape[-1] == kept.stop < image.shape[-1]
    with pytest.raises(ValueError, match="empty"):
        miss_heart_slab(np.zeros_like(label))


def test_write_shifted_copies_the_cases_and_reads_the_source_only(tiny_msd: Path, tmp_path: Path) -> None:
    before = tree_digest(tiny_msd)
    out = write_shifted(tiny_msd, tmp_path / "shifted", "miss_heart")
    assert tree_digest(tiny_msd) == before
    src, dst = load_datalist(tiny_msd), load_datalist(out)
    assert [i["case"] for i in dst] == [i["case"] for i in src]
    img_src, img_dst = nib.load(src[0]["image"]), nib.load(dst[0]["image"])
    assert img_dst.shape[2] < img_src.shape[2]  # cropped along the slice axis, with its affine's origin
    assert np.allclose(img_dst.affine[:3, :3], img_src.affine[:3, :3])
    with pytest.raises(ValueError, match="not empty"):
        write_shifted(tiny_msd, out, "gibbs")
    with pytest.raises(ValueError, match="never written"):
        write_shifted(tiny_msd, tiny_msd / "inside", "gibbs")
    with pytest.raises(ValueError, match="unknown shift"):
        write_shifted(tiny_msd, tmp_path / "other", "blur")


def test_shifted_items_copy_chosen_items_into_a_new_folder(tiny_msd: Path, tmp_path: Path) -> None:
    """What training's quality control uses: copies of given items (absolute paths, case and kind), source untouched."""
    from heartseg_utils.shifts import shifted_items

    before, items = tree_digest(tiny_msd), load_datalist(tiny_msd)[:2]
    copies = shifted_items(items, tmp_path / "qc" / "inversion", "inversion", seed=3)
    assert tree_digest(tiny_msd) == before
    assert [(c["case"], c["kind"]) for c in copies] == [(i["case"], "inversion") for i in items]
    for c, i in zip(copies, items):
        assert Path(c["image"]).is_absolute() and Path(c["image"]).parent == tmp_path / "qc" / "inversion" / "imagesTr"
        np.testing.assert_array_equal(nib.load(c["label"]).get_fdata(), nib.load(i["label"]).get_fdata())
        assert not np.allclose(nib.load(c["image"]).get_fdata(), nib.load(i["image"]).get_fdata())
    with pytest.raises(ValueError, match="not empty"):
        shifted_items(items, tmp_path / "qc" / "inversion", "inversion")
    with pytest.raises(ValueError, match="inside an input folder"):
        shifted_items(items, tiny_msd / "imagesTr" / "copies", "inversion")
