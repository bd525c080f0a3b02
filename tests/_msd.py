"""Test helper: write tiny MSD-layout folders with nibabel (no torch, no synthetic generator)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import nibabel as nib
import numpy as np

SHAPE = (8, 8, 6)
AFFINE = np.diag([1.25, 1.25, 1.37, 1.0])
LABELS = {"0": "background", "1": "left atrium"}


def write_nifti(path: Path, array: np.ndarray, affine: np.ndarray = AFFINE) -> Path:
    """Save ``array`` as NIfTI at ``path`` (folders created)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(array, affine), str(path))
    return path


def make_msd(
    root: Path, n_train: int = 3, n_test: int = 1, shape: tuple[int, int, int] = SHAPE, first_case: int = 3
) -> Path:
    """Write an MSD folder ``root`` with ``n_train`` labelled and ``n_test`` unlabelled cases ``la_XXX``."""
    rng = np.random.default_rng(0)
    training, test = [], []
    for i in range(n_train + n_test):
        case = f"la_{first_case + i:03d}"
        image = rng.normal(100.0, 20.0, size=shape).astype(np.float32)
        if i < n_train:
            label = np.zeros(shape, dtype=np.uint8)
            label[2:5, 2:5, 1:4] = 1
            write_nifti(root / "imagesTr" / f"{case}.nii.gz", image)
            write_nifti(root / "labelsTr" / f"{case}.nii.gz", label)
            training.append({"image": f"./imagesTr/{case}.nii.gz", "label": f"./labelsTr/{case}.nii.gz"})
        else:
            write_nifti(root / "imagesTs" / f"{case}.nii.gz", image)
            test.append(f"./imagesTs/{case}.nii.gz")
    meta = {
        "name": "TinyLA",
        "tensorImageSize": "3D",
        "modality": {"0": "MRI"},
        "labels": LABELS,
        "numTraining": n_train,
        "numTest": n_test,
        "training": training,
        "test": test,
    }
    (root / "dataset.json").write_text(json.dumps(meta, indent=2))
    return root


def tree_digest(root: Path) -> dict[str, str]:
    """Map every file under ``root`` (relative path) to its sha256, to prove a folder was not modified."""
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }
