"""3D surfaces of masks: marching cubes, distance to the other surface, an offline matplotlib view, STL/OBJ files.

Introduced in notebook 07. A slice overlay shows an error in one plane; a surface coloured by its distance to the
other mask's surface shows where in 3D the prediction bulges out (prediction coloured by its distance to the
truth) or falls short (truth coloured by its distance to the prediction). Surfaces come from scikit-image's
marching cubes with the voxel spacing, so distances are in mm; with an affine they are placed in world (RAS) mm
instead, which is what a mesh file for 3D Slicer needs. matplotlib is imported inside the functions.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

LPS_FROM_RAS = np.diag([-1.0, -1.0, 1.0])


def mask_surface(
    mask: Any, spacing: Any = (1.0, 1.0, 1.0), *, affine: Any = None, step_size: int = 1
) -> tuple[np.ndarray, np.ndarray]:
    """Triangle surface of a binary mask by marching cubes (level 0.5), closed at the array border.

    Introduced in notebook 07.

    Args:
        mask: 3D array (non-zero = inside), or (1, x, y, z).
        spacing: voxel size in mm along the three axes; vertices are in mm along the array axes.
        affine: optional voxel -> world (RAS mm) matrix; if given, vertices are in world mm and ``spacing`` is unused.
        step_size: marching-cubes step in voxels (2 gives about 4x fewer triangles, coarser).

    Returns:
        ``(vertices (V, 3) float, faces (F, 3) int)``.

    Raises:
        ValueError: the mask is empty or not 3D.
    """
    from skimage.measure import marching_cubes

    m = np.asarray(mask)
    m = m[0] if m.ndim == 4 and m.shape[0] == 1 else m
    if m.ndim != 3:
        raise ValueError(f"mask must be 3D (x, y, z); got shape {m.shape}")
    if not np.any(m):
        raise ValueError("the mask is empty: there is no surface to draw")
    padded = np.pad(m != 0, 1).astype(np.float32)  # closes surfaces that touch the border
    verts, faces, _, _ = marching_cubes(padded, level=0.5, step_size=step_size, allow_degenerate=False)
    verts -= 1.0  # back to the unpadded voxel indices
    if affine is not None:
        a = np.asarray(affine, dtype=np.float64)
        return verts @ a[:3, :3].T + a[:3, 3], faces
    return verts * np.asarray([float(s) for s in spacing]), faces


def distance_to_surface(points: np.ndarray, other_vertices: np.ndarray) -> np.ndarray:
    """Distance from each point to the nearest vertex of another surface (mm, as the inputs).

    Introduced in notebook 07. Marching-cubes vertices lie at most half a voxel apart, so the nearest vertex is
    within about half a voxel of the true point-to-surface distance.
    """
    from scipy.spatial import cKDTree

    return cKDTree(np.asarray(other_vertices)).query(np.asarray(points))[0]


def _draw(
    ax: Any,
    verts: np.ndarray,
    faces: np.ndarray,
    dist: np.ndarray,
    vmax: float,
    cmap: Any,
    lo: np.ndarray,
    hi: np.ndarray,
) -> Any:
    """Add one surface to a 3D axis, each triangle coloured by the mean distance of its corners."""
    from matplotlib.colors import Normalize
    from mpl_toolkits.mplot3d.art3d import Poly3DCollection

    colours = cmap(Normalize(0.0, vmax)(dist[faces].mean(axis=1)))
    ax.add_collection3d(Poly3DCollection(verts[faces], facecolors=colours, edgecolor="none", linewidth=0))
    ax.set(
        xlim=(lo[0], hi[0]), ylim=(lo[1], hi[1]), zlim=(lo[2], hi[2]), xlabel="x (mm)", ylabel="y (mm)", zlabel="z (mm)"
    )
    ax.set_box_aspect(hi - lo)
    return ax


def plot_surfaces(
    pred: Any,
    truth: Any,
    spacing: Any,
    *,
    step_size: int = 1,
    max_mm: float | None = None,
    view: tuple[float, float] = (20.0, -60.0),
    title: str = "",
    cmap: str = "magma_r",
) -> Any:
    """Predicted and true surfaces side by side, each coloured by its distance (mm) to the other one.

    Introduced in notebook 07. Left: the prediction; bright where it is close to the truth, dark where it
    bulges out (false positives). Right: the truth; dark where the prediction falls short (false negatives).

    Args:
        pred, truth: 3D masks on one voxel grid.
        spacing: voxel size in mm.
        step_size: marching-cubes step (2 draws faster).
        max_mm: top of the colour scale; default the larger 95th percentile of the two distance sets (>= 1 mm).
        view: (elevation, azimuth) of both 3D axes in degrees.
        title: figure title.
        cmap: a matplotlib colour map name.

    Returns:
        The matplotlib figure (the distances are in ``fig.distances_mm = {"pred": ..., "truth": ...}``).
    """
    import matplotlib.pyplot as plt

    pv, pf = mask_surface(pred, spacing, step_size=step_size)
    tv, tf = mask_surface(truth, spacing, step_size=step_size)
    dist = {"pred": distance_to_surface(pv, tv), "truth": distance_to_surface(tv, pv)}
    vmax = max_mm if max_mm is not None else max(1.0, *(float(np.percentile(d, 95)) for d in dist.values()))
    lo, hi = np.minimum(pv.min(0), tv.min(0)), np.maximum(pv.max(0), tv.max(0))
    fig = plt.figure(figsize=(11, 5))
    colours = plt.get_cmap(cmap)
    for i, (key, verts, faces, name) in enumerate((("pred", pv, pf, "prediction"), ("truth", tv, tf, "truth"))):
        ax = _draw(fig.add_subplot(1, 2, i + 1, projection="3d"), verts, faces, dist[key], vmax, colours, lo, hi)
        ax.view_init(*view)
        other = "truth" if key == "pred" else "prediction"
        ax.set_title(f"{name}: distance to the {other}\nmean {dist[key].mean():.2f} mm, max {dist[key].max():.1f} mm")
    mappable = plt.cm.ScalarMappable(cmap=colours, norm=plt.Normalize(0.0, vmax))
    fig.colorbar(mappable, ax=fig.axes, shrink=0.6, pad=0.1, label="distance to the other surface (mm)")
    if title:
        fig.suptitle(title)
    fig.distances_mm = dist
    return fig


def plot_class_surfaces(
    label_map: Any,
    spacing: Any,
    classes: dict[int, str],
    *,
    colours: dict[int, Any] | None = None,
    step_size: int = 1,
    view: tuple[float, float] = (20.0, -60.0),
    title: str = "",
    alpha: float = 0.6,
) -> Any:
    """One surface per class of a label map in one 3D view, each in its own colour, with a legend.

    Introduced in notebook 04 (multi-class runs). A class absent from the map is listed in the legend as absent.

    Args:
        label_map: 3D array of label values (the dataset's).
        spacing: voxel size in mm.
        classes: ``{label value: name}`` without background.
        colours: ``{label value: colour}``, e.g. ``viz.class_colours(classes)``; default matplotlib's cycle.
        step_size: marching-cubes step (2 draws faster).
        view: (elevation, azimuth) in degrees.
        title: axis title.
        alpha: surface opacity (inner classes show through the outer ones).

    Returns:
        The matplotlib figure; ``fig.surfaces = {value: (vertices, faces)}`` of the classes drawn.
    """
    import matplotlib.pyplot as plt
    from matplotlib.patches import Patch
    from mpl_toolkits.mplot3d.art3d import Poly3DCollection

    m = np.asarray(label_map)
    cycle = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    colours = colours or {v: cycle[i % len(cycle)] for i, v in enumerate(classes)}
    fig = plt.figure(figsize=(6, 5.5))
    ax = fig.add_subplot(projection="3d")
    surfaces, handles = {}, []
    for value, name in classes.items():
        present = bool(np.any(m == value))
        if present:
            verts, faces = surfaces[value] = mask_surface(m == value, spacing, step_size=step_size)
            ax.add_collection3d(Poly3DCollection(verts[faces], facecolor=colours[value], alpha=alpha, linewidth=0))
        handles.append(Patch(color=colours[value], label=name if present else f"{name} (absent)"))
    if surfaces:
        pts = np.concatenate([v for v, _ in surfaces.values()])
        lo, hi = pts.min(0), pts.max(0)
        ax.set(xlim=(lo[0], hi[0]), ylim=(lo[1], hi[1]), zlim=(lo[2], hi[2]))
        ax.set_box_aspect(np.maximum(hi - lo, 1e-6))
    ax.set(xlabel="x (mm)", ylabel="y (mm)", zlabel="z (mm)", title=title)
    ax.view_init(*view)
    ax.legend(handles=handles, loc="upper left", fontsize=8)
    fig.surfaces = surfaces
    return fig


def write_stl(
    path: str | os.PathLike[str],
    vertices: np.ndarray,
    faces: np.ndarray,
    *,
    name: str = "mask",
    ras_to_lps: bool = True,
) -> Path:
    """Write a triangle surface as ASCII STL, e.g. for 3D Slicer. Introduced in notebook 07.

    Args:
        path: the .stl file.
        vertices, faces: from :func:`mask_surface` (with ``affine`` for world coordinates).
        name: the solid's name in the file.
        ras_to_lps: flip x and y: 3D Slicer reads STL/OBJ files as LPS unless told otherwise.

    Returns:
        ``path``.
    """
    v = np.asarray(vertices, dtype=np.float64) @ (LPS_FROM_RAS if ras_to_lps else np.eye(3))
    tri = v[np.asarray(faces)]
    normals = np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])
    normals /= np.maximum(np.linalg.norm(normals, axis=1, keepdims=True), 1e-12)
    lines = [f"solid {name}"]
    for n, (a, b, c) in zip(normals, tri):
        lines += [
            f"facet normal {n[0]:.6e} {n[1]:.6e} {n[2]:.6e}",
            " outer loop",
            *(f"  vertex {p[0]:.6e} {p[1]:.6e} {p[2]:.6e}" for p in (a, b, c)),
            " endloop",
            "endfacet",
        ]
    lines.append(f"endsolid {name}")
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text("\n".join(lines) + "\n")
    return Path(path)


def write_obj(
    path: str | os.PathLike[str], vertices: np.ndarray, faces: np.ndarray, *, ras_to_lps: bool = True
) -> Path:
    """Write a triangle surface as Wavefront OBJ (1-based face indices). Introduced in notebook 07."""
    v = np.asarray(vertices, dtype=np.float64) @ (LPS_FROM_RAS if ras_to_lps else np.eye(3))
    lines = [f"v {p[0]:.6f} {p[1]:.6f} {p[2]:.6f}" for p in v]
    lines += [f"f {a + 1} {b + 1} {c + 1}" for a, b, c in np.asarray(faces)]
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text("\n".join(lines) + "\n")
    return Path(path)
