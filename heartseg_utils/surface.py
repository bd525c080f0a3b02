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
    mask: Any, spacing: Any = (1.0, 1.0, 1.0), *, affine: Any = None, step_size: int = 1, smooth: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """Triangle surface of a binary mask by marching cubes (level 0.5), closed at the array border.

    Introduced in notebook 07.

    Args:
        mask: 3D array (non-zero = inside), or (1, x, y, z).
        spacing: voxel size in mm along the three axes; vertices are in mm along the array axes.
        affine: optional voxel -> world (RAS mm) matrix; if given, vertices are in world mm and ``spacing`` is unused.
        step_size: marching-cubes step in voxels (2 gives about 4x fewer triangles, coarser).
        smooth: rounds of :func:`smooth_mesh` (0 = the voxel staircase as marching cubes draws it; about 10
            rounds it off and keeps thin pieces, which smoothing the mask first would erase).

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
        verts = verts @ a[:3, :3].T + a[:3, 3]
    else:
        verts = verts * np.asarray([float(s) for s in spacing])
    return (smooth_mesh(verts, faces, smooth) if smooth else verts), faces


def smooth_mesh(vertices: np.ndarray, faces: np.ndarray, iterations: int = 10) -> np.ndarray:
    """Taubin's smoothing: each round moves every vertex towards the mean of its neighbours, then back a little.

    Introduced in notebook 07. Marching cubes on a voxel mask draws a staircase; plain averaging rounds it off but
    also shrinks the surface, and Taubin's second, negative step (lambda 0.5, mu -0.53) undoes the shrinking, so the
    surface keeps its size and its thin pieces (a vein stub) while the steps vanish. Returns new vertices.
    """
    from scipy import sparse

    n, f = len(vertices), np.asarray(faces)
    rows, cols = f[:, [0, 1, 2, 1, 2, 0]].ravel(), f[:, [1, 2, 0, 0, 1, 2]].ravel()
    neighbours = sparse.csr_matrix((np.ones(len(rows)), (rows, cols)), shape=(n, n))
    neighbours.data[:] = 1.0  # an edge shared by two triangles counts once
    degree = np.maximum(np.asarray(neighbours.sum(axis=1)).ravel(), 1.0)
    mean_of_neighbours = sparse.diags(1.0 / degree) @ neighbours
    v = np.asarray(vertices, dtype=np.float64).copy()
    for _ in range(int(iterations)):
        for factor in (0.5, -0.53):
            v += factor * (mean_of_neighbours @ v - v)
    return v


def distance_to_surface(points: np.ndarray, other_vertices: np.ndarray) -> np.ndarray:
    """Distance from each point to the nearest vertex of another surface (mm, as the inputs).

    Introduced in notebook 07. Marching-cubes vertices lie at most half a voxel apart, so the nearest vertex is
    within about half a voxel of the true point-to-surface distance.
    """
    from scipy.spatial import cKDTree

    return cKDTree(np.asarray(other_vertices)).query(np.asarray(points))[0]


def far_regions(vertices: np.ndarray, faces: np.ndarray, distances: np.ndarray, min_mm: float) -> list[dict]:
    """The connected pieces of a surface that lie farther than ``min_mm`` from the other surface, most error first.

    Introduced in notebook 07: on the truth's surface such a piece is what the prediction missed (a vein's tip), on
    the prediction's what it added. Returns ``[{"n_vertices", "centre" (mm, as the vertices), "max_mm", "excess_mm",
    "points"}]`` sorted by ``excess_mm``, the distances beyond ``min_mm`` added up over the piece's vertices: the
    first piece is the largest dark patch of the distance colours (a few vertices a little farther do not outrank
    it). ``points`` are the piece's vertices.
    """
    from scipy import sparse
    from scipy.sparse.csgraph import connected_components

    far = np.asarray(distances) > min_mm
    f = np.asarray(faces)[far[np.asarray(faces)].all(axis=1)]  # triangles whose three corners are far
    edges = sparse.csr_matrix((np.ones(3 * len(f)), (f.ravel(), f[:, [1, 2, 0]].ravel())), shape=(len(far),) * 2)
    piece = connected_components(edges, directed=False)[1]
    regions = []
    for k in np.unique(piece[far]):
        members = far & (piece == k)
        centre = np.asarray(vertices)[members].mean(axis=0)
        d = np.asarray(distances)[members]
        regions.append(
            {"n_vertices": int(members.sum()), "centre": centre, "max_mm": float(d.max()),
             "excess_mm": float((d - min_mm).sum()), "points": np.asarray(vertices)[members]}
        )  # fmt: skip
    return sorted(regions, key=lambda r: -r["excess_mm"])


def direction_words(offset: Any) -> str:
    """A world (RAS mm) offset in the patient's words, e.g. ``"23 mm R, 10 mm P, 4 mm I"``. Notebook 07."""
    letters = ("LR", "PA", "IS")  # the direction a negative and a positive coordinate points to
    return ", ".join(f"{abs(v):.0f} mm {pair[int(v > 0)]}" for v, pair in zip(np.asarray(offset, float), letters))


def axis_labels(affine: Any = None) -> tuple[str, str, str]:
    """The 3D view's axis labels: with an affine (world RAS mm) each names the patient direction it grows towards."""
    if affine is None:
        return "x (mm)", "y (mm)", "z (mm)"
    return "x (mm) → R", "y (mm) → A", "z (mm) → S"


def _mm_axes(ax: Any, lo: np.ndarray, hi: np.ndarray, labels: tuple[str, str, str]) -> None:
    """Limits, true proportions, three ticks per axis (no labels collide) and small tick text on a 3D axis."""
    from matplotlib.ticker import MaxNLocator

    lo, hi = np.asarray(lo, float), np.maximum(np.asarray(hi, float), np.asarray(lo, float) + 1e-6)
    ax.set(xlim=(lo[0], hi[0]), ylim=(lo[1], hi[1]), zlim=(lo[2], hi[2]))
    ax.set_box_aspect(hi - lo)
    for axis, label in zip((ax.xaxis, ax.yaxis, ax.zaxis), labels):
        axis.set_major_locator(MaxNLocator(3))
        axis.set_label_text(label, fontsize=8)
        axis.labelpad = 2
    ax.tick_params(labelsize=7, pad=0)


def _lit(**kwargs: Any) -> dict[str, Any]:
    """Poly3DCollection options that shade each triangle by its angle to one light (the shape reads as 3D)."""
    from matplotlib.colors import LightSource

    return {"shade": True, "lightsource": LightSource(azdeg=315, altdeg=45), "edgecolor": "none", **kwargs}


def _draw(ax: Any, verts: np.ndarray, faces: np.ndarray, dist: np.ndarray, norm: Any, cmap: Any) -> Any:
    """Add one surface to a 3D axis, each triangle coloured by the mean distance of its corners, then shaded."""
    from mpl_toolkits.mplot3d.art3d import Poly3DCollection

    colours = cmap(norm(dist[faces].mean(axis=1)))
    ax.add_collection3d(Poly3DCollection(verts[faces], **_lit(facecolors=colours, linewidth=0, antialiased=False)))
    return ax


def plot_surfaces(
    pred: Any,
    truth: Any,
    spacing: Any,
    *,
    step_size: int = 1,
    max_mm: float | None = None,
    min_mm: float = 0.0,
    view: tuple[float, float] = (20.0, -60.0),
    title: str = "",
    cmap: str = "magma_r",
    affine: Any = None,
    smooth: int = 0,
) -> Any:
    """Predicted and true surfaces side by side, each coloured by its distance (mm) to the other one.

    Introduced in notebook 07. Left: the prediction; bright where it is close to the truth, dark where it
    bulges out (false positives). Right: the truth; dark where the prediction falls short (false negatives).

    Args:
        pred, truth: 3D masks on one voxel grid.
        spacing: voxel size in mm.
        step_size: marching-cubes step (2 draws faster).
        max_mm: top of the colour scale; default the larger 95th percentile of the two distance sets (at least
            1 mm and 2 * ``min_mm``).
        min_mm: distances up to this are drawn in the lightest colour, as agreement (e.g. one voxel: two masks on
            one grid cannot agree more finely, and the sub-voxel rest would only speckle the surface).
        view: (elevation, azimuth) of both 3D axes in degrees.
        title: figure title.
        cmap: a matplotlib colour map name.
        affine: optional voxel -> world (RAS mm) matrix of both masks: the view is then in world mm and each axis
            label names the patient direction it grows towards (``spacing`` is unused).
        smooth: rounds of :func:`smooth_mesh` for both surfaces (0 = the voxel staircase; its steps colour the
            surface in a speckle of sub-voxel distances, which about 10 rounds remove).

    Returns:
        The matplotlib figure (the distances are in ``fig.distances_mm = {"pred": ..., "truth": ...}`` and the
        surfaces in ``fig.surfaces = {"pred": (vertices, faces), "truth": ...}``).
    """
    import matplotlib.pyplot as plt

    pv, pf = mask_surface(pred, spacing, affine=affine, step_size=step_size, smooth=smooth)
    tv, tf = mask_surface(truth, spacing, affine=affine, step_size=step_size, smooth=smooth)
    dist = {"pred": distance_to_surface(pv, tv), "truth": distance_to_surface(tv, pv)}
    p95 = max(float(np.percentile(d, 95)) for d in dist.values())
    vmax = max_mm if max_mm is not None else max(1.0, 2.0 * min_mm, p95)
    lo, hi = np.minimum(pv.min(0), tv.min(0)), np.maximum(pv.max(0), tv.max(0))
    fig = plt.figure(figsize=(11, 5))
    colours, norm = plt.get_cmap(cmap), plt.Normalize(min(min_mm, vmax), vmax, clip=True)
    for i, (key, verts, faces, name) in enumerate((("pred", pv, pf, "prediction"), ("truth", tv, tf, "truth"))):
        ax = _draw(fig.add_subplot(1, 2, i + 1, projection="3d"), verts, faces, dist[key], norm, colours)
        _mm_axes(ax, lo, hi, axis_labels(affine))
        ax.view_init(*view)
        other = "truth" if key == "pred" else "prediction"
        ax.set_title(f"{name}: distance to the {other}\nmean {dist[key].mean():.2f} mm, max {dist[key].max():.1f} mm")
    mappable = plt.cm.ScalarMappable(cmap=colours, norm=norm)
    agree = f"\n(lightest: within {min_mm:g} mm)" if min_mm > 0 else ""
    fig.colorbar(mappable, ax=fig.axes, shrink=0.6, pad=0.1, label=f"distance to the other surface (mm){agree}")
    if title:
        fig.suptitle(title)
    fig.distances_mm, fig.surfaces = dist, {"pred": (pv, pf), "truth": (tv, tf)}
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
    affine: Any = None,
    smooth: int = 0,
    ax: Any = None,
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
        affine: optional voxel -> world (RAS mm) matrix: world mm, axis labels naming the patient directions.
        smooth: rounds of :func:`smooth_mesh` (0 = the voxel staircase).
        ax: a 3D axis to draw into (e.g. one panel of two); default a new figure.

    Returns:
        The matplotlib figure; ``fig.surfaces`` (and ``ax.surfaces``) ``= {value: (vertices, faces)}`` of the
        classes drawn.
    """
    import matplotlib.pyplot as plt
    from matplotlib.colors import to_rgba
    from matplotlib.patches import Patch
    from mpl_toolkits.mplot3d.art3d import Poly3DCollection

    m = np.asarray(label_map)
    cycle = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    colours = colours or {v: cycle[i % len(cycle)] for i, v in enumerate(classes)}
    ax = ax if ax is not None else plt.figure(figsize=(6, 5.5)).add_subplot(projection="3d")
    surfaces, handles = {}, []
    for value, name in classes.items():
        present = bool(np.any(m == value))
        if present:
            surfaces[value] = mask_surface(m == value, spacing, affine=affine, step_size=step_size, smooth=smooth)
        handles.append(Patch(color=colours[value], label=name if present else f"{name} (absent)"))
    if surfaces:  # one collection: matplotlib sorts triangles by depth within a collection, not across them
        triangles = np.concatenate([v[f] for v, f in surfaces.values()])
        face_colours = np.concatenate([[to_rgba(colours[k], alpha)] * len(f) for k, (_, f) in surfaces.items()])
        ax.add_collection3d(Poly3DCollection(triangles, **_lit(facecolors=face_colours)))
        pts = np.concatenate([v for v, _ in surfaces.values()])
        _mm_axes(ax, pts.min(0), pts.max(0), axis_labels(affine))
    else:
        ax.set(xlabel="x (mm)", ylabel="y (mm)", zlabel="z (mm)")
    ax.set_title(title)
    ax.view_init(*view)
    ax.legend(handles=handles, loc="upper left", fontsize=8)
    ax.surfaces = ax.figure.surfaces = surfaces
    return ax.figure


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
