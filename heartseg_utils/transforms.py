"""MONAI preprocessing and augmentation pipelines: the single source of truth.

Every notebook builds its pipelines with :func:`get_transforms`; nothing copies a
``Compose([...])`` list. Deterministic transforms come first and random ones last,
so ``CacheDataset`` can cache the deterministic prefix and re-run only the random
suffix each epoch.

Introduced in notebook 02.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import warnings
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

STAGES = ("train", "val", "infer")
DEFAULT_PIXDIM = (1.25, 1.25, 1.37)
KEYS = ("image", "label")


def binarize_label(label: Any) -> Any:
    """Map every non-zero label value to 1 (foreground = label != 0), keeping the dtype.

    A module-level function (not a lambda) so that pipelines pickle for
    multi-process data loading.

    Args:
        label: label array or (Meta)Tensor.

    Returns:
        The same type and dtype, with values in {0, 1}.

    Introduced in notebook 02.
    """
    mask = label != 0
    if hasattr(mask, "to"):  # torch.Tensor / MetaTensor
        return mask.to(label.dtype)
    return mask.astype(label.dtype)


def map_label_values(label: Any, values: Sequence[int]) -> Any:
    """Map the dataset's label values to class indices: ``values[k]`` becomes k, any other value 0 (background).

    Multi-class runs train classes 0..K; a dataset whose values are not already 0..K (say 0, 1, 2, 4) is mapped
    here, and predictions map back (``inference``). Module level, so that pipelines pickle. Introduced in notebook 02.

    Args:
        label: label array or (Meta)Tensor.
        values: the dataset's label values in class order, background (0) first.

    Returns:
        The same type and dtype, with values in 0..len(values) - 1.
    """
    out = label * 0
    for k, value in enumerate(values[1:], start=1):
        out[label == value] = k
    return out


def is_positive(image: Any) -> Any:
    """Foreground test used by ``CropForegroundd``: voxels with intensity > 0 (the body).

    Args:
        image: image array or tensor (raw intensities, before normalisation).

    Returns:
        Boolean mask of the same shape.

    Introduced in notebook 02.
    """
    return image > 0


def median_spacing(datalist: Sequence[Mapping[str, Any]], key: str = "image") -> tuple[float, float, float]:
    """Median voxel spacing (mm) per RAS axis over a datalist, read from NIfTI headers only.

    This is nnU-Net's rule for the target spacing: take each case's spacing and the
    median per axis. Spacings are reordered to RAS axis order (as ``Orientationd``
    will do), so volumes stored in another axis order still give RAS spacings.
    Only headers are read: no voxel data is loaded.

    Args:
        datalist: items with a path under ``key`` (e.g. from ``data.load_datalist``).
        key: which path to read (default ``"image"``).

    Returns:
        ``(sx, sy, sz)`` in millimetres, rounded to 4 decimals.

    Introduced in notebook 02.
    """
    import nibabel as nib
    import numpy as np

    if len(datalist) == 0:
        raise ValueError("median_spacing needs a non-empty datalist (got no items); check the data folder.")
    spacings = []
    for item in datalist:
        path = item[key]
        try:
            img = nib.load(str(path))
        except Exception as err:  # noqa: BLE001 - re-raised with the file name
            raise ValueError(f"cannot read NIfTI header of {path}: {err}. Is it a valid .nii/.nii.gz file?") from err
        zooms = np.asarray(img.header.get_zooms()[:3], dtype=float)
        if zooms.size != 3 or np.any(zooms <= 0):
            raise ValueError(f"{path}: expected 3 positive voxel sizes in the header, got {tuple(zooms)}.")
        ornt = nib.orientations.io_orientation(img.affine)  # voxel axis i -> world axis ornt[i, 0]
        ras = np.empty(3)
        for i in range(3):
            ras[int(ornt[i, 0])] = zooms[i]
        spacings.append(ras)
    med = np.median(np.stack(spacings), axis=0)
    return tuple(round(float(s), 4) for s in med)  # type: ignore[return-value]


def resolve_pixdim(
    pixdim: str | float | Sequence[float], datalist: Sequence[Mapping[str, Any]] | None = None
) -> tuple[float, float, float]:
    """Turn a ``pixdim`` setting into a concrete ``(sx, sy, sz)`` target spacing in mm.

    Args:
        pixdim: ``"auto"`` (the dataset's median spacing, see :func:`median_spacing`),
            one number (isotropic) or three numbers.
        datalist: required for ``"auto"``; items with an ``"image"`` path.

    Returns:
        Three positive floats.

    Introduced in notebook 02.
    """
    if isinstance(pixdim, str):
        if pixdim != "auto":
            raise ValueError(f"pixdim must be 'auto', a number or 3 numbers; got the string {pixdim!r}.")
        if datalist is None:
            raise ValueError("pixdim='auto' needs the datalist: call resolve_pixdim('auto', datalist).")
        return median_spacing(datalist)
    if isinstance(pixdim, (int, float)):
        values = [float(pixdim)] * 3
    else:
        values = [float(p) for p in pixdim]
    if len(values) != 3 or any(v <= 0 for v in values):
        raise ValueError(f"pixdim must be 3 positive spacings in mm, got {pixdim!r}.")
    return tuple(values)  # type: ignore[return-value]


def get_transforms(
    stage: str,
    *,
    pixdim: str | float | Sequence[float] = DEFAULT_PIXDIM,
    roi_size: Sequence[int] = (64, 64, 64),
    num_samples: int = 2,
    elastic: bool = False,
    mr_artefacts: bool = False,
    divisor: int | Sequence[int] = 16,
    device: Any = None,
    label_values: Sequence[int] | None = None,
):
    """Build the MONAI pipeline for one stage.

    Deterministic part (all stages, invertible, meta data kept for ``Invertd``):
    LoadImaged -> EnsureChannelFirstd -> binarize label -> Orientationd(RAS) ->
    Spacingd(bilinear image / nearest label) -> CropForegroundd(image > 0) ->
    NormalizeIntensityd(nonzero, channel-wise) -> DivisiblePadd(divisor) [-> EnsureTyped(device)].
    The foreground crop runs before the z-score: afterwards body voxels darker than
    the mean are negative and an ``image > 0`` crop would cut into the body.

    Random part (``"train"`` only): SpatialPadd(roi) -> RandCropByPosNegLabeld
    (pos=1, neg=1, ``num_samples`` patches of ``roi_size``) -> RandFlipd ->
    RandRotate90d (only if ``roi_size[0] == roi_size[1]``, so patches keep ``roi_size``) -> RandAffined ->
    [Rand3DElasticd if ``elastic``] -> RandGaussianNoised -> RandShiftIntensityd
    [-> RandBiasFieldd -> RandGibbsNoised -> RandKSpaceSpikeNoised -> RandAdjustContrastd if ``mr_artefacts``].

    Args:
        stage: ``"train"``, ``"val"`` or ``"infer"`` (image key only, for unlabelled images).
        pixdim: target spacing in mm (3 numbers or one). For ``"auto"`` call
            :func:`resolve_pixdim` with the datalist first.
        roi_size: training patch size (voxels).
        num_samples: patches drawn per volume per epoch (``"train"``).
        elastic: add ``Rand3DElasticd`` to the training augmentations (slow on CPU).
        mr_artefacts: add MONAI's MR artefacts (:func:`mr_artefact_transforms`) to the training augmentations.
        divisor: pad every side to a multiple of this (one int, or per axis ``(x, y, z)``): the network's
            ``models.required_divisor``; 16 suits the default UNet.
        device: MONAI's fast-training pattern (``"train"``/``"val"``): when given, ``EnsureTyped`` moves the
            cached deterministic result to this device once, so the random transforms run there (a GPU).
            ``None`` (the default, and what training uses on the CPU) leaves tensors where they are.
        label_values: ``None`` (binary: label != 0 is foreground) or, for a multi-class run, the dataset's label
            values in class order (0 first): labels become class indices (:func:`map_label_values`) and training
            patches are centred on each class in turn (``RandCropByLabelClassesd``) instead of pos/neg.

    Returns:
        A ``monai.transforms.Compose``.

    Introduced in notebook 02.
    """
    from monai import transforms as mt

    if stage not in STAGES:
        raise ValueError(f"stage must be one of {STAGES}, got {stage!r}.")
    if isinstance(pixdim, str):
        raise ValueError(
            f"get_transforms needs concrete spacings, got pixdim={pixdim!r}: "
            "use pixdim=resolve_pixdim('auto', datalist)."
        )
    keys = KEYS[:1] if stage == "infer" else KEYS
    xforms = _deterministic(mt, keys, resolve_pixdim(pixdim), divisor, label_values)
    if device is not None and stage != "infer":  # infer keeps MetaTensors on the CPU for Invertd
        xforms.append(mt.EnsureTyped(keys=keys, device=device, track_meta=False))
    if stage == "train":
        n_classes = None if label_values is None else len(label_values)
        xforms += _random(mt, tuple(int(r) for r in roi_size), num_samples, elastic, n_classes)
        xforms += mr_artefact_transforms(mt) if mr_artefacts else []
    return mt.Compose(xforms)


@contextlib.contextmanager
def quiet_readers() -> Iterator[None]:
    """Silence MONAI's per-pipeline notice that the optional GPU DICOM decoder (nvImageCodec) is absent.

    With pydicom installed, every ``LoadImage`` builds MONAI's ``NvImgCodecPydicomReader``, which logs this notice
    even for NIfTI files; it says nothing about the scan. Introduced in notebook 02 (used by every pipeline).
    """
    log = logging.getLogger("monai.data.nvimgcodec_pydicom_plugin")
    level = log.level
    log.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="NvImgCodecPydicomReader")
            yield
    finally:
        log.setLevel(level)


def _deterministic(
    mt: Any, keys: tuple[str, ...], spacing: Sequence[float], divisor: Any, label_values: Sequence[int] | None = None
) -> list:
    """The cacheable prefix: load, binarize (or map the classes), orient, resample, crop to the body, z-score, pad."""
    modes = ("bilinear", "nearest")[: len(keys)]
    with quiet_readers():
        xforms: list = [mt.LoadImaged(keys=keys, image_only=True), mt.EnsureChannelFirstd(keys=keys)]
    if "label" in keys:
        classes = functools.partial(map_label_values, values=tuple(int(v) for v in label_values or ()))
        xforms.append(mt.Lambdad(keys="label", func=binarize_label if label_values is None else classes))
    return xforms + [
        mt.Orientationd(keys=keys, axcodes="RAS", labels=None),
        # scale_extent: n voxels of s mm become round(n * s / pixdim), the planner's resampled_shape (without it
        # 96 slices of 1.37 mm at 2.74 mm give 48 or 49 by float rounding, and 49 pads to 64)
        mt.Spacingd(keys=keys, pixdim=spacing, mode=modes, scale_extent=True, align_corners=True),  # MONAI: a pair
        mt.CropForegroundd(
            keys=keys,
            source_key="image",
            select_fn=is_positive,
            allow_smaller=True,
            start_coord_key=None,
            end_coord_key=None,  # keep the data dict to image/label only
        ),
        mt.NormalizeIntensityd(keys="image", nonzero=True, channel_wise=True),
        mt.DivisiblePadd(keys=keys, k=divisor if isinstance(divisor, int) else tuple(int(d) for d in divisor)),
    ]


def _crop(mt: Any, roi: tuple[int, ...], num_samples: int, n_classes: int | None) -> Any:
    """Binary: half the patches centred on foreground (pos/neg); multi-class: each class, background included, alike."""
    if n_classes is None:
        return mt.RandCropByPosNegLabeld(
            keys=KEYS, label_key="label", spatial_size=roi, pos=1, neg=1, num_samples=num_samples
        )
    return mt.RandCropByLabelClassesd(
        keys=KEYS,
        label_key="label",
        spatial_size=roi,
        num_classes=n_classes,
        num_samples=num_samples,
        warn=False,  # a case without one of the classes is legal: the other classes are sampled
    )


def _random(mt: Any, roi: tuple[int, ...], num_samples: int, elastic: bool, n_classes: int | None = None) -> list:
    """The training augmentations, re-run every epoch on the cached prefix."""
    keys, modes = KEYS, ("bilinear", "nearest")
    xforms: list = [
        mt.SpatialPadd(keys=keys, spatial_size=roi),
        _crop(mt, roi, num_samples, n_classes),
        mt.RandFlipd(keys=keys, spatial_axis=0, prob=0.5),
    ]
    if roi[0] == roi[1]:  # quarter turns (with the flip above they also give the front-back flip)
        xforms.append(mt.RandRotate90d(keys=keys, spatial_axes=(0, 1), prob=0.5))
    else:  # a quarter turn would change a non-square patch's shape: flip front-back instead, so that both
        xforms.append(mt.RandFlipd(keys=keys, spatial_axis=1, prob=0.5))  # in-plane flips of TTA were trained
    xforms.append(
        mt.RandAffined(
            keys=keys,
            prob=0.5,
            rotate_range=(0.26, 0.26, 0.26),  # about +-15 degrees
            scale_range=(0.1, 0.1, 0.1),
            mode=modes,
            padding_mode="zeros",
        )
    )
    if elastic:
        xforms.append(
            mt.Rand3DElasticd(
                keys=keys, sigma_range=(5, 7), magnitude_range=(50, 100), prob=0.2, mode=modes, padding_mode="zeros"
            )
        )
    return xforms + [
        mt.RandGaussianNoised(keys="image", prob=0.3, mean=0.0, std=0.1),
        mt.RandShiftIntensityd(keys="image", offsets=0.1, prob=0.5),
    ]


def mr_artefact_transforms(mt: Any) -> list:
    """MONAI's MR artefacts as training augmentations, applied to the z-scored patch (image key only).

    A coil's smooth bias field, Gibbs ringing at edges, a k-space spike (stripes) and a gamma contrast change, each
    on a share of the patches. Rician noise is left out: on z-scored intensities (half of them negative) it would
    fold the negative half to positive values. ``benchmarks/bench_augment.py`` measures what they buy on
    phantoms with those artefacts (docs/benchmarks.md).
    """
    return [
        mt.RandBiasFieldd(keys="image", degree=3, coeff_range=(0.0, 0.2), prob=0.3),
        mt.RandGibbsNoised(keys="image", alpha=(0.0, 0.6), prob=0.2),
        mt.RandKSpaceSpikeNoised(keys="image", prob=0.1),
        mt.RandAdjustContrastd(keys="image", gamma=(0.6, 1.6), prob=0.3),
    ]
