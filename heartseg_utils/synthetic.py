"""Synthetic left-atrium MRI phantoms in the Medical Segmentation Decathlon (MSD) Task02_Heart layout.

Introduced in notebook 01. The real Task02_Heart cannot always be downloaded (CI, offline laptops), so this
module draws an honest stand-in: a torso with fat and muscle layers, dark lungs, spine, liver, the four heart
chambers with myocardium, the aorta, and a left atrium (LA) with an appendage and 2-4 pulmonary-vein stubs. The
label is the LA plus its veins (``labels`` picks others: ventricles, myocardium...). Every blood pool is equally
bright (like a bSSFP scan), the LA opens into the left ventricle through the mitral valve and presses against the
aorta, so neither a global threshold nor region growing isolates it: a model has to learn where the LA sits (the
most posterior chamber, between the lungs, with veins) from examples. Each case varies in pose, size, shape, bias
field and Rician noise.

It is a *scaled* phantom: the anatomy is drawn to fill a 160 x 160 x 132 mm field of view at the default shape,
so the heart is large relative to the torso, and the LA covers about 0.3-1 % of the voxels, as in the real data.
Images are stored in an LPS-like orientation (affine diag(-sx, -sy, sz), non-zero origin), so the arrays are
flipped relative to RAS until ``Orientationd(axcodes="RAS")`` is applied (short-axis stacks are oblique).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import shutil
import tempfile
import uuid
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np
from scipy import ndimage
from scipy.spatial.transform import Rotation

DEFAULT_SHAPE = (128, 128, 96)
DEFAULT_SPACING = (1.25, 1.25, 1.37)
GENERATOR_VERSION = "1.0"

TISSUE_NAMES = {
    0: "air",
    1: "fat",
    2: "muscle",
    3: "soft tissue",
    4: "lung",
    5: "spine",
    6: "liver",
    7: "myocardium",
    8: "left atrium",
    9: "pulmonary vein",
    10: "left ventricle",
    11: "right atrium",
    12: "right ventricle",
    13: "aorta",
}
LABEL_TISSUES = (8, 9)  # the segmentation target: left atrium + pulmonary-vein stubs
# The drawing paints parts: 0-13 the tissues, 14 the LV myocardium (tissue 7), 15 the pulmonary trunk (tissue 12),
# so that labels can follow the cine convention: LV myocardium only, RV without the trunk.
_PART_TISSUE = np.array([*range(14), 7, 12], np.uint8)
# Structures a label map can hold: short code -> (name in dataset.json, parts). See make_synthetic_dataset.
STRUCTURES: dict[str, tuple[str, tuple[int, ...]]] = {
    "la": ("left atrium", LABEL_TISSUES),  # with its pulmonary-vein stubs, as in Task02_Heart
    "lv": ("left ventricle", (10,)),  # the blood pool
    "myo": ("myocardium", (14,)),  # of the left ventricle
    "rv": ("right ventricle", (12,)),  # the blood pool, without the pulmonary trunk
    "ra": ("right atrium", (11,)),
    "aorta": ("aorta", (13,)),
}
# bSSFP-like relative signal per tissue: blood pools bright, fat bright, myocardium dark, lungs near zero.
_SIGNAL = np.array([0.0, 0.85, 0.30, 0.38, 0.03, 0.60, 0.40, 0.28, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0])
_LV_AXIS = np.array([-0.6, 0.45, -0.65])  # the LV's long axis (base -> apex), heart frame, before each case's jitter
# Short-axis stacks turn the whole scene about the mitral valve (midway between the LA and LV centres) so that
# the LV's long axis runs along the slice normal (array z): a rotation taking _LV_AXIS to +z.
_SAX_PIVOT = np.array([-15.0, 2, -7])


@dataclass
class PhantomCase:
    """One synthetic case: image, label, voxel-to-world affine and the tissue map it was drawn from.

    Introduced in notebook 01.
    """

    image: np.ndarray  # int16 (X, Y, Z)
    label: np.ndarray  # uint8 (X, Y, Z): 0 background, k = the k-th requested structure (default 1 = LA + veins)
    affine: np.ndarray  # 4x4 float64, LPS-like: diag(-sx, -sy, sz) plus a non-zero origin
    tissues: np.ndarray  # uint8 (X, Y, Z), keys of tissue_names
    tissue_names: dict[int, str]


def _rotation(rng: np.random.Generator, max_deg: float) -> np.ndarray:
    """Random 3x3 rotation from three Euler angles, each uniform in +-max_deg."""
    return Rotation.from_euler("xyz", rng.uniform(-max_deg, max_deg, 3), degrees=True).as_matrix()


def _axis_frame(direction) -> np.ndarray:
    """Rotation whose first column points along `direction` (for ellipsoids with a long axis)."""
    u = np.asarray(direction, float) / np.linalg.norm(direction)
    v = np.cross(u, [0.0, 0.0, 1.0])
    v /= np.linalg.norm(v)
    return np.stack([u, v, np.cross(u, v)], axis=1)


def _window(g, centre, half):
    """Index box of grid g = (x, y, z) covering centre +- half (per axis) and the sub-grid inside it."""
    box = []
    for i in range(3):
        inside = np.flatnonzero(np.abs(g[i].ravel() - centre[i]) <= half[i])
        box.append(slice(inside[0], inside[-1] + 1) if inside.size else slice(0, 0))
    sub = [g[i][tuple(box[i] if j == i else slice(None) for j in range(3))] for i in range(3)]
    return tuple(box), sub


def _ellipsoid(g, centre, radii, rot=None):
    """(box, mask) of an ellipsoid on grid g; the columns of `rot` are its axes (None: axis-aligned)."""
    radii = np.asarray(radii, float)
    half = radii if rot is None else np.sqrt((rot**2) @ radii**2)  # exact bounding box
    box, s = _window(g, centre, half)
    d = [s[i] - np.float32(centre[i]) for i in range(3)]
    total = 0.0
    for k in range(3):
        u = d[k] if rot is None else sum(np.float32(rot[i, k]) * d[i] for i in range(3))
        total = total + (u / np.float32(radii[k])) ** 2
    return box, total <= 1.0


def _tube(g, a, b, radius: float):
    """(box, mask) of a capsule (cylinder with round ends) of `radius` around the segment a -> b."""
    a, b = np.asarray(a, float), np.asarray(b, float)
    box, s = _window(g, (a + b) / 2, np.abs(b - a) / 2 + radius)
    ab = (b - a).astype(np.float32)
    d = [s[i] - np.float32(a[i]) for i in range(3)]
    t = np.clip(sum(d[i] * ab[i] for i in range(3)) / (ab @ ab), 0.0, 1.0)
    return box, sum((d[i] - t * ab[i]) ** 2 for i in range(3)) <= radius**2


_SAX_TURN = np.array([[0.0, 1, 0], [0, 0, 1], [1, 0, 0]]) @ _axis_frame(_LV_AXIS).T


class _Painter:
    """A part map painted shape by shape on grid g (later ones overwrite); a `turn` rotates the scene first (SAX)."""

    def __init__(self, g, shape, turn: np.ndarray | None = None) -> None:
        self.g, self.parts, self.turn = g, np.zeros(shape, np.uint8), turn

    def _place(self, point):  # scene -> grid coordinates
        return point if self.turn is None else self.turn @ (np.asarray(point, float) - _SAX_PIVOT)

    def fill(self, shape_, tissue: int, only=None) -> None:
        """Set the voxels of shape_ = (box, mask) to `tissue`; `only`: overwrite just these tissues."""
        box, mask = shape_
        view = self.parts[box]
        mask = np.broadcast_to(mask, view.shape)
        view[mask if only is None else mask & np.isin(view, only)] = tissue

    def ellipsoid(self, tissue: int, centre, radii, rot=None, only=None) -> None:  # see _ellipsoid
        if self.turn is not None:
            centre, rot = self._place(centre), self.turn if rot is None else self.turn @ rot
        self.fill(_ellipsoid(self.g, centre, radii, rot), tissue, only)

    def tube(self, tissue: int, a, b, radius: float) -> None:  # see _tube
        self.fill(_tube(self.g, self._place(a), self._place(b), radius), tissue)


class _Heart:
    """One case's heart (mm): pose (rotation +-15 degrees, shift +-6 mm), chambers' (centre, radii, axes), aorta."""

    def __init__(self, rng: np.random.Generator) -> None:
        self.rot, self.centre = _rotation(rng, 15), np.array([-6.0, 8, -4]) + rng.uniform(-6, 6, 3)
        la_r = np.array([21.0, 12, 14]) * rng.uniform(0.88, 1.12, 3)
        self.la = (np.array([2.0, -22, 10]), la_r, self.rot @ _rotation(rng, 10))
        lv_r = np.array([30.0, 17, 17]) * rng.uniform(0.9, 1.1, 3)
        self.lv = (np.array([-20.0, 10, -16]), lv_r, self.rot @ _axis_frame(_LV_AXIS + rng.normal(0, 0.1, 3)))
        self.rv = (np.array([4.0, 20, -14]), np.array([26.0, 11, 20]) * rng.uniform(0.9, 1.1, 3), self.rot)
        self.ra = (np.array([27.0, -8, 4]), np.array([15.0, 14, 17]) * rng.uniform(0.9, 1.1, 3), self.rot)
        self.aorta_r = 10 * rng.uniform(0.9, 1.1)
        top = self.at((0, -4, 42))  # the aorta's path: root, arch top, arch end, descending end (grid coordinates)
        self.aorta = [self.at((-2, 2, -8)), top, np.array([-18.0, -32, top[2]]), np.array([-18.0, -32, -1e3])]

    def at(self, q) -> np.ndarray:
        """Heart frame -> grid coordinates."""
        return self.centre + self.rot @ np.asarray(q, float)


def _draw_body(rng: np.random.Generator, paint: _Painter, size: float = 1.0) -> None:
    """Torso (elliptic cylinder: fat, muscle, soft tissue) with lungs, liver, spine; `size` scales it, not the heart."""
    ax, ay = 74 * rng.uniform(0.95, 1.05), 60 * rng.uniform(0.95, 1.05)
    fat, muscle = rng.uniform(4, 7), rng.uniform(5, 8)
    for tissue, inset in ((1, 0.0), (2, fat), (3, fat + muscle)):
        paint.ellipsoid(tissue, (0, 0, 0), np.array([ax - inset, ay - inset, 1e4]) * size)
    for x in (-46, 42):
        paint.ellipsoid(4, np.array([x, -8, 12]) * size, (32, 44, 80) * rng.uniform(0.9, 1.1, 3) * size, only=3)
    paint.ellipsoid(6, ((22, 8, -95) + rng.uniform(-5, 5, 3)) * size, np.array([60, 50, 55]) * size, only=(3, 4))
    paint.tube(5, np.array([0, -38, -1e3]) * size, np.array([0, -38, 1e3]) * size, 10 * size)


def _draw_chambers(rng: np.random.Generator, paint: _Painter, heart: _Heart) -> None:
    """Walls first (thin for atria, RV and aorta), then blood, the thick LV myocardium, LV blood, mitral opening."""
    (la_c, la_r, la_rot), (lv_c, lv_r, lv_rot) = heart.la, heart.lv
    (rv_c, rv_r, rot), (ra_c, ra_r, _) = heart.rv, heart.ra
    paint.ellipsoid(7, heart.at(ra_c), ra_r + 2.5, rot)
    paint.ellipsoid(7, heart.at(rv_c), rv_r + 3, rot)
    paint.ellipsoid(7, heart.at(la_c), la_r + 2.5, la_rot)
    paint.tube(7, *heart.aorta[:2], heart.aorta_r + 2)
    paint.ellipsoid(11, heart.at(ra_c), ra_r, rot)
    paint.ellipsoid(12, heart.at(rv_c), rv_r, rot)
    paint.ellipsoid(14, heart.at(lv_c), lv_r + 7, lv_rot)
    paint.ellipsoid(10, heart.at(lv_c), lv_r, lv_rot)
    paint.tube(10, heart.at(la_c), heart.at(lv_c), 8 * rng.uniform(0.9, 1.1))  # mitral opening: LA <-> LV blood


def _draw_great_vessels(rng: np.random.Generator, paint: _Painter, heart: _Heart) -> None:
    """The aorta (ascending, arch, descending) and the pulmonary trunk from the RV with its left branch."""
    aorta, radius = heart.aorta, heart.aorta_r
    for k, r in enumerate((radius, radius * 0.9, radius * 0.85)):
        paint.tube(13, aorta[k], aorta[k + 1], r)
    pa_top = heart.at((-14, 10, 32) + rng.uniform(-3, 3, 3))
    (rv_c, rv_r, rot) = heart.rv
    paint.tube(15, heart.at(rv_c + (-8, 4, 12)), pa_top, 9)
    paint.tube(15, pa_top, heart.at((-36, -12, 34)), 7)
    paint.ellipsoid(12, heart.at(rv_c), rv_r, rot, only=15)  # the trunk's root inside the RV is RV blood


def _draw_left_atrium(rng: np.random.Generator, paint: _Painter, heart: _Heart) -> None:
    """The LA (painted last), its appendage and 2-4 pulmonary veins leaving backwards and sideways."""
    la_c, la_r, la_rot = heart.la
    paint.ellipsoid(8, heart.at(la_c), la_r, la_rot)
    appendage = la_c + np.array([-18.0, 8, 7]) + rng.uniform(-3, 3, 3)
    paint.ellipsoid(8, heart.at(appendage), np.array([8.0, 5, 5]) * rng.uniform(0.8, 1.2, 3), la_rot)
    directions = np.array([[-1, -0.8, 0.5], [-1, -0.8, -0.5], [1, -0.8, 0.5], [1, -0.8, -0.5]])  # L/R, sup/inf
    for k in rng.choice(4, size=rng.integers(2, 5), replace=False):
        d = la_rot @ (directions[k] + rng.normal(0, 0.2, 3))
        d /= np.linalg.norm(d)
        length = la_r.mean() + rng.uniform(10, 18)
        paint.tube(9, heart.at(la_c), heart.at(la_c) + length * d, rng.uniform(3.5, 5))


def _draw_anatomy(rng: np.random.Generator, g, shape, body_scale: float = 1.0, turn=None) -> np.ndarray:
    """Paint the part map back to front; coordinates are mm of the default-size phantom (RAS axes)."""
    paint = _Painter(g, shape, turn)
    _draw_body(rng, paint, body_scale)
    heart = _Heart(rng)
    _draw_chambers(rng, paint, heart)
    _draw_great_vessels(rng, paint, heart)
    _draw_left_atrium(rng, paint, heart)
    return paint.parts


def _structure_codes(labels) -> tuple[str, ...]:
    """Validated structure codes from ``"la,lv"`` or ``["la", "lv"]`` (see STRUCTURES)."""
    codes = tuple(c.strip().lower() for c in (labels.split(",") if isinstance(labels, str) else labels))
    if not codes or len(set(codes)) < len(codes) or not set(codes) <= set(STRUCTURES):
        raise ValueError(
            f"labels must be distinct codes from {', '.join(STRUCTURES)}, e.g. 'lv,myo,rv'; got {labels!r}"
        )
    return codes


def _label_map(parts: np.ndarray, codes: tuple[str, ...]) -> np.ndarray:
    """uint8 label map: the k-th structure in `codes` -> k, everything else 0."""
    lut = np.zeros(len(_PART_TISSUE), np.uint8)
    for value, code in enumerate(codes, start=1):
        lut[list(STRUCTURES[code][1])] = value
    return lut[parts]


def generate_case(
    seed: int,
    shape=DEFAULT_SHAPE,
    spacing=DEFAULT_SPACING,
    *,
    scale: float | None = None,
    body_scale: float = 1.0,
    short_axis: bool = False,
    labels="la",
) -> PhantomCase:
    """Draw one synthetic cardiac MRI case (deterministic for a given seed, shape and spacing).

    Introduced in notebook 01.

    Args:
        seed: seed for ``np.random.default_rng``; the same seed always gives the same arrays.
        shape: array shape (X, Y, Z). The anatomy is scaled to the field of view (shape * spacing), so small
            shapes such as (64, 64, 48) give a coarser version of the same scene.
        spacing: voxel size in mm.
        scale: size of the anatomy relative to the default phantom (1.0 = the default's millimetres);
            None scales it to the field of view as described above. The geometry variants fix it.
        body_scale: size of the torso, lungs, liver and spine relative to the heart (1.0 = the default's).
        short_axis: slice the scene perpendicular to the LV's long axis through the mitral valve, as a cine
            short-axis stack; the affine is then oblique (it maps the turned grid back to the body).
        labels: structure codes (keys of :data:`STRUCTURES`), as ``"lv,myo,rv"`` or a list; the k-th gets
            label value k. The default ``"la"`` is the binary left-atrium label.

    Returns:
        A PhantomCase with an int16 image, a uint8 label, a 4x4 affine and the tissue map.
    """
    shape, spacing, codes = tuple(int(n) for n in shape), np.asarray(spacing, float), _structure_codes(labels)
    if len(shape) != 3 or min(shape) < 4 or spacing.shape != (3,) or spacing.min() <= 0:
        raise ValueError(f"shape must be 3 ints >= 4 and spacing 3 positive numbers, got {shape}, {spacing}")
    rng = np.random.default_rng(seed)
    fov = np.array(shape) * spacing
    if scale is None:
        scale = np.cbrt(fov.prod() / (np.array(DEFAULT_SHAPE) * DEFAULT_SPACING).prod())
    elif not scale > 0:
        raise ValueError(f"scale must be a positive number, got {scale}")
    # Voxel centres in mm from the volume centre (RAS axes), divided by `scale` so that the anatomy can be
    # written in mm of the default-size phantom. Array axes run R->L and A->P (LPS-like), hence the signs.
    signs = (-1, -1, 1)
    g = [
        (signs[i] * (np.arange(n, dtype=np.float32) - (n - 1) / 2) * spacing[i] / scale).reshape(
            [n if j == i else 1 for j in range(3)]
        )
        for i, n in enumerate(shape)
    ]
    turn = _SAX_TURN if short_axis else None
    parts = _draw_anatomy(rng, g, shape, body_scale, turn)
    tissues = _PART_TISSUE[parts]

    # Image: tissue signal -> partial-volume blur -> smooth multiplicative bias -> Rician noise -> int16.
    signal = (_SIGNAL * rng.uniform(0.93, 1.07, _SIGNAL.size)).astype(np.float32)
    image = ndimage.gaussian_filter(signal[tissues], sigma=0.8)
    x, y, z = (gi / np.float32(np.abs(gi).max()) for gi in g)  # coordinates in [-1, 1]
    terms = (x, y, z, x * y, x * z, y * z, x * x, y * y, z * z)  # bias = exp(quadratic polynomial)
    image *= np.exp(sum(np.float32(c) * term for c, term in zip(rng.normal(0, 0.1, 9), terms)))
    sigma = np.float32(rng.uniform(0.03, 0.06))
    image += sigma * rng.standard_normal(shape, dtype=np.float32)
    image = np.hypot(image, sigma * rng.standard_normal(shape, dtype=np.float32))
    image = np.clip(np.rint(image * rng.uniform(500, 900)), 0, 32767).astype(np.int16)

    origin_mm = rng.uniform(-30, 30, 3) + np.array([0.0, 0.0, 40.0])  # world position of the volume centre
    affine = np.diag([*(np.array(signs) * spacing), 1.0])
    if turn is not None:
        affine[:3, :3] = turn.T @ affine[:3, :3]
    affine[:3, 3] = origin_mm - affine[:3, :3] @ ((np.array(shape) - 1) / 2)
    return PhantomCase(image, _label_map(parts, codes), affine, tissues, dict(TISSUE_NAMES))


@dataclass(frozen=True)
class Variant:
    """The geometry of one family of synthetic datasets: voxel sizes, shapes, anatomy size and intensity range.

    Introduced in notebook 02 (the planner is shown on every variant). Each case draws its spacing and
    shape from the ranges (lowest, highest; both included), so a dataset has the spread real scans have.

    Attributes:
        description: one sentence for dataset.json and the notebooks.
        spacing_mm: (low, high) voxel size in mm per axis (x, y, z).
        shape: (low, high) voxels per axis.
        anatomy_scale: anatomy size relative to the default phantom; None = scaled to the field of view.
        crop_to_label: draw a larger scene, then cut the box of ``shape`` around the label (as the MSD
            hippocampus task ships small boxes around its target).
        intensity: ``"int16"`` (the default's arbitrary units), ``"uint12"`` (rescaled to 0-4095, stored as
            uint16, like 12-bit scanner data), ``"uint16"`` (uint16 whose scale differs per case: the bright
            blood at 1000-3600) or ``"float32"`` (rescaled to about 0-1).
        body_scale: torso size relative to the heart (see :func:`generate_case`).
        short_axis: cine short-axis stacks: slices perpendicular to the LV's long axis, square pixels, and
            as many slices as an 80-130 mm stack takes at the drawn slice spacing (within the z range).
    """

    description: str
    spacing_mm: tuple[tuple[float, float], ...]
    shape: tuple[tuple[int, int], ...]
    anatomy_scale: float | None = None
    crop_to_label: bool = False
    intensity: str = "int16"
    body_scale: float = 1.0
    short_axis: bool = False


VARIANTS: dict[str, Variant] = {
    "default": Variant(
        "near-isotropic whole-torso volumes, 1.25 x 1.25 x 1.37 mm, 128 x 128 x 96 voxels",
        tuple((s, s) for s in DEFAULT_SPACING),
        tuple((n, n) for n in DEFAULT_SHAPE),
    ),
    "thick_slice": Variant(
        "short-axis-like stacks: 1.5 x 1.5 mm in-plane, 8-10 mm slices, 8-16 slices per case,"
        " 160 x 160 in-plane, 12-bit intensities",
        ((1.5, 1.5), (1.5, 1.5), (8.0, 10.0)),
        ((160, 160), (160, 160), (8, 16)),
        anatomy_scale=1.5,
        intensity="uint12",
    ),
    "small": Variant(
        "small boxes around the left atrium (like MSD hippocampus): about 40 x 48 x 40 voxels of 1 mm,"
        " float intensities",
        ((1.0, 1.0), (1.0, 1.0), (1.0, 1.0)),
        ((36, 44), (44, 52), (36, 44)),
        anatomy_scale=0.8,
        crop_to_label=True,
        intensity="float32",
    ),
    "short_axis": Variant(
        "cine short-axis stacks: 210-260 x 230-270 pixels of 1.3-1.9 mm, 8-18 slices 5-10 mm apart"
        " perpendicular to the heart's long axis (oblique affine), the whole chest in view, uint16 intensities"
        " with a per-case scale",
        ((1.3, 1.9), (1.3, 1.9), (5.0, 10.0)),
        ((210, 260), (230, 270), (6, 18)),
        anatomy_scale=1.2,
        intensity="uint16",
        body_scale=1.7,
        short_axis=True,
    ),
}


def _crop_around_label(case: PhantomCase, shape, rng: np.random.Generator) -> PhantomCase:
    """Cut a box of `shape` voxels centred (+-3 voxels of jitter) on the labelled structures' centre of mass."""
    centre = np.array(ndimage.center_of_mass(case.label > 0)) + rng.integers(-3, 4, 3)
    start = np.clip(np.rint(centre - np.array(shape) / 2).astype(int), 0, np.array(case.label.shape) - shape)
    box = tuple(slice(int(a), int(a) + int(n)) for a, n in zip(start, shape))
    affine = case.affine.copy()
    affine[:3, 3] = case.affine[:3, :3] @ start + case.affine[:3, 3]  # world position of the box's first voxel
    return PhantomCase(case.image[box], case.label[box], affine, case.tissues[box], case.tissue_names)


def _rescale_intensity(image: np.ndarray, kind: str, rng: np.random.Generator) -> np.ndarray:
    """Map the int16 phantom image to another intensity convention (see Variant.intensity)."""
    if kind == "int16":
        return image
    top = float(np.percentile(image, 99.9)) or 1.0
    if kind == "uint12":
        return np.clip(np.rint(image * (rng.uniform(3300, 3900) / top)), 0, 4095).astype(np.uint16)
    if kind == "uint16":
        return np.clip(np.rint(image * (rng.uniform(1000, 3600) / top)), 0, 65535).astype(np.uint16)
    if kind == "float32":
        return (image * np.float32(rng.uniform(0.8, 1.2) / top)).astype(np.float32)
    raise ValueError(f"unknown intensity {kind!r}; use int16, uint12, uint16 or float32")


def generate_variant_case(seed: int, variant: str = "default", labels="la") -> PhantomCase:
    """Draw one case of a geometry variant: its spacing and shape come from the variant's ranges.

    Introduced in notebook 02. ``"default"`` is exactly :func:`generate_case` with the default shape.

    Args:
        seed: case seed; the same seed always gives the same case.
        variant: a key of :data:`VARIANTS`.
        labels: structure codes, as in :func:`generate_case`.

    Returns:
        A PhantomCase (the image dtype follows the variant's ``intensity``).
    """
    if variant not in VARIANTS:
        raise ValueError(f"unknown variant {variant!r}; choose one of {', '.join(VARIANTS)}")
    if variant == "default":
        return generate_case(seed, labels=labels)
    v = VARIANTS[variant]
    rng = np.random.default_rng(np.random.SeedSequence([seed, 1]))  # geometry: a stream apart from the anatomy's
    shape = [int(rng.integers(lo, hi + 1)) for lo, hi in v.shape]
    spacing = [round(float(rng.uniform(lo, hi)), 2) for lo, hi in v.spacing_mm]
    if v.short_axis:  # square pixels; the slice count follows the stack's extent
        spacing[1] = spacing[0]
        shape[2] = int(np.clip(round(rng.uniform(80, 130) / spacing[2]), *v.shape[2]))
    drawn = [max(72, n + 24) for n in shape] if v.crop_to_label else shape
    case = generate_case(
        seed, drawn, spacing, scale=v.anatomy_scale, body_scale=v.body_scale, short_axis=v.short_axis, labels=labels
    )
    if v.crop_to_label:
        case = _crop_around_label(case, shape, rng)
    case.image = _rescale_intensity(case.image, v.intensity, rng)
    return case


def _case_seed(seed: int, index: int) -> int:
    """Independent per-case seed derived from the dataset seed and the case number."""
    return int(np.random.SeedSequence([seed, index]).generate_state(1)[0])


def _save_nifti(array: np.ndarray, affine: np.ndarray, path: Path) -> None:
    """Write `array` as .nii.gz with `affine` as both qform and sform (scanner space, mm)."""
    img = nib.Nifti1Image(array, affine)
    img.set_qform(affine, code=1)
    img.set_sform(affine, code=1)
    img.header.set_xyzt_units("mm", "sec")
    nib.save(img, path)


def _read_info(out_dir: Path) -> dict | None:
    """The folder's dataset.json as a dict, or None when it is missing or unreadable."""
    try:
        return json.loads((out_dir / "dataset.json").read_text())
    except (OSError, ValueError):
        return None


def _is_complete(out_dir: Path, meta: dict, n_train: int, n_test: int) -> bool:
    """True when out_dir holds a synthetic dataset made with `meta` and every file it lists exists."""
    info = _read_info(out_dir)
    if not info or info.get("synthetic") != meta or (info["numTraining"], info["numTest"]) != (n_train, n_test):
        return False
    files = [f for item in info["training"] for f in item.values()] + info["test"]
    return all((out_dir / f).is_file() for f in files)


def _dataset_meta(seed: int, shape: list[int], variant: str, codes: tuple[str, ...] = ("la",)) -> dict:
    """dataset.json's "synthetic" entry; the default's (variant and labels) stays as it was before either existed."""
    meta = {"generator": "heartseg_utils.synthetic", "version": GENERATOR_VERSION, "seed": int(seed)}
    meta.update({} if codes == ("la",) else {"labels": list(codes)})
    if variant == "default":
        return {**meta, "shape": shape, "spacing": list(DEFAULT_SPACING)}
    if variant not in VARIANTS:
        raise ValueError(f"unknown variant {variant!r}; choose one of {', '.join(VARIANTS)}")
    if shape != list(DEFAULT_SHAPE):
        raise ValueError(f"shape applies to the default variant only; variant {variant!r} draws its own shapes")
    return {**meta, "variant": variant, **dataclasses.asdict(VARIANTS[variant])}


def _dataset_json(training: list[dict], test: list[str], meta: dict) -> dict:
    """The dataset.json content of a synthetic MSD folder (MSD keys plus the generator's ``"synthetic"`` entry)."""
    names = [STRUCTURES[code][0] for code in meta.get("labels", ["la"])]
    return {
        "name": "LeftAtrium" if names == ["left atrium"] else "Heart",
        "description": f"Synthetic phantom standing in for MSD Task02_Heart ({', '.join(names)}, bSSFP-like MRI),"
        " made by heartseg_utils.synthetic: not patient data",
        "reference": "heartseg synthetic phantom, in the layout of the Medical Segmentation Decathlon",
        "licence": "CC-BY-SA 4.0",
        "release": f"synthetic {GENERATOR_VERSION}",
        "tensorImageSize": "3D",
        "modality": {"0": "MRI"},
        "labels": {"0": "background", **{str(value): name for value, name in enumerate(names, start=1)}},
        "numTraining": len(training),
        "numTest": len(test),
        "training": training,
        "test": test,
        "synthetic": meta,
    }


def make_synthetic_dataset(
    out_dir,
    n_train: int = 20,
    n_test: int = 10,
    seed: int = 0,
    shape=DEFAULT_SHAPE,
    overwrite: bool = False,
    variant: str = "default",
    labels="la",
) -> Path:
    """Write a Task02_Heart-like MSD folder of synthetic phantoms, or reuse a matching complete one.

    Introduced in notebook 01. Files go into a temporary sibling folder that is renamed to `out_dir` at the
    end, so an interrupted run never leaves a half-written dataset behind.

    Args:
        out_dir: the MSD folder to create (dataset.json, imagesTr/, labelsTr/, imagesTs/).
        n_train: labelled training cases (la_001, la_002, ...).
        n_test: unlabelled test images, numbered after the training cases.
        seed: dataset seed; per-case seeds derive from it, so one seed always gives the same files.
        shape: array shape of every case (default variant only; the other variants draw their own).
        overwrite: regenerate even when a matching complete dataset is already there.
        variant: a key of :data:`VARIANTS` (introduced in notebook 02); recorded in dataset.json's
            ``"synthetic"`` entry for every variant but the default, whose files and entry are unchanged.
        labels: structure codes (keys of :data:`STRUCTURES`: la, lv, myo, rv, ra, aorta), ``"lv,myo,rv"`` or a
            list; the k-th is label k in the files and in dataset.json's ``"labels"``. Any choice but the default
            ``"la"`` (Task02_Heart's) is recorded in ``"synthetic"``: a folder with other labels is never reused.

    Returns:
        The dataset folder.
    """
    out_dir, shape = Path(out_dir).expanduser().resolve(), [int(n) for n in shape]
    codes = _structure_codes(labels)
    meta = _dataset_meta(seed, shape, variant, codes)
    if not overwrite and _is_complete(out_dir, meta, n_train, n_test):
        return out_dir
    if out_dir.exists() and any(out_dir.iterdir()) and "synthetic" not in (_read_info(out_dir) or {}):
        raise FileExistsError(
            f"{out_dir} is not empty and holds no synthetic dataset; refusing to replace "
            "it. Choose another out_dir (real data is never overwritten)."
        )
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = out_dir.parent / f".{out_dir.name}.tmp-{uuid.uuid4().hex[:8]}"
    try:
        training, test = [], []
        for sub in ("imagesTr", "labelsTr", "imagesTs"):
            (tmp / sub).mkdir(parents=True)
        for index in range(1, n_train + n_test + 1):
            case_seed, name = _case_seed(seed, index), f"la_{index:03d}.nii.gz"
            case = (
                generate_case(case_seed, shape, labels=codes)
                if variant == "default"
                else generate_variant_case(case_seed, variant, labels=codes)
            )
            folder = "imagesTr" if index <= n_train else "imagesTs"
            _save_nifti(case.image, case.affine, tmp / folder / name)
            if index <= n_train:
                _save_nifti(case.label, case.affine, tmp / "labelsTr" / name)
                training.append({"image": f"./imagesTr/{name}", "label": f"./labelsTr/{name}"})
            else:
                test.append(f"./imagesTs/{name}")
        info = _dataset_json(training, test, meta)
        (tmp / "dataset.json").write_text(json.dumps(info, indent=2))
        if out_dir.exists():  # an outdated synthetic dataset (other seed/shape/version): move it away first
            trash = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.old-", dir=out_dir.parent))
            out_dir.rename(trash / out_dir.name)
            shutil.rmtree(trash)
        try:
            tmp.rename(out_dir)
        except OSError:  # another process finished the same dataset a moment earlier
            if not _is_complete(out_dir, meta, n_train, n_test):
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out_dir


def main(argv: list[str] | None = None) -> Path:
    """Command line: ``python -m heartseg_utils.synthetic --variant short_axis --labels lv,myo,rv --out DIR [...]``.

    Introduced in notebook 02. Prints and returns the dataset folder.
    """
    parser = argparse.ArgumentParser(description="Write a synthetic left-atrium dataset in MSD layout.")
    parser.add_argument("--variant", default="default", choices=sorted(VARIANTS))
    parser.add_argument("--labels", default="la", help=f"structures to label, comma-separated: {', '.join(STRUCTURES)}")
    parser.add_argument("--out", dest="out_dir", required=True, help="the MSD folder to create")
    parser.add_argument("--n_train", type=int, default=20)
    parser.add_argument("--n_test", type=int, default=5)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--overwrite", action="store_true")
    args = parser.parse_args(argv)
    try:
        _structure_codes(args.labels)
    except ValueError as err:
        parser.error(str(err))
    out = make_synthetic_dataset(**vars(args))
    print(out)
    return out


if __name__ == "__main__":
    main()
