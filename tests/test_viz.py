"""Tests for heartseg_utils.viz: figures, overlay colours and the slice-scrubber widget (no browser)."""

from __future__ import annotations

import base64

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

from heartseg_utils import surface, viz  # noqa: E402


@pytest.fixture()
def volume() -> tuple[np.ndarray, np.ndarray]:
    """A (40, 32, 24) gradient volume with a box-shaped label."""
    rng = np.random.default_rng(0)
    image = np.linspace(0, 500, 40 * 32 * 24).reshape(40, 32, 24) + rng.normal(0, 5, (40, 32, 24))
    label = np.zeros(image.shape, np.uint8)
    label[10:25, 8:24, 6:18] = 1
    return image.astype(np.int16), label


def _last_line(widget) -> str:
    streams = [o["text"] for o in widget.output.outputs if o["output_type"] == "stream"]
    assert len(streams) == 1, widget.output.outputs
    return streams[0].strip()


def _png(widget) -> bytes:
    images = [o["data"]["image/png"] for o in widget.output.outputs if o["output_type"] == "display_data"]
    assert len(images) == 1
    data = base64.b64decode(images[0])
    assert data.startswith(b"\x89PNG")
    return data


def test_show_planes_returns_three_panels(volume):
    image, label = volume
    fig = viz.show_planes(image, label, title="toy")
    try:
        assert len(fig.axes) == 3
        titles = [ax.get_title() for ax in fig.axes]
        assert [t.split()[0] for t in titles] == ["axial", "coronal", "sagittal"]
        shapes = [ax.get_images()[0].get_array().shape for ax in fig.axes]
        assert shapes == [(32, 40, 3), (24, 40, 3), (24, 32, 3)]  # rows = vertical axis, columns = horizontal
        for ax in fig.axes:
            rgb = np.asarray(ax.get_images()[0].get_array())
            assert np.isfinite(rgb).all() and rgb.min() >= 0 and rgb.max() <= 1 and rgb.std() > 0
            blue = (rgb[..., 2] > rgb[..., 0] + 0.1).sum()  # viz.TRUTH_ONLY over grey
            assert blue > 0  # the mid slices cut through the label box
    finally:
        plt.close(fig)


def test_show_planes_index_and_channel_dim(volume):
    image, label = volume
    fig = viz.show_planes(image[None], label[None], index=(0, 0, 0), alpha=0.5)
    try:
        assert fig.axes[0].get_title() == "axial (z = 0)"
        for ax in fig.axes:  # slices at index 0 miss the label: no colour at all
            rgb = np.asarray(ax.get_images()[0].get_array())
            assert np.allclose(rgb[..., 0], rgb[..., 1]) and np.allclose(rgb[..., 1], rgb[..., 2])
    finally:
        plt.close(fig)


def test_show_planes_rejects_bad_shapes(volume):
    image, label = volume
    with pytest.raises(ValueError, match="label shape"):
        viz.show_planes(image, label[:-1])
    with pytest.raises(ValueError, match="3D volume"):
        viz.show_planes(image[0])


def test_plane_slice_orientation():
    """Radiological display of a RAS volume: right on the left, anterior/superior on top."""
    vol = np.zeros((4, 5, 6))
    vol[3, 4, 5] = 1  # the most right, anterior, superior voxel
    for plane in ("axial", "coronal"):
        assert viz.plane_slice(vol, plane, {"axial": 5, "coronal": 4}[plane])[0, 0] == 1  # top-left
    assert viz.plane_slice(vol, "sagittal", 3)[0, 0] == 1  # anterior on the left, superior on top


def test_overlay_rgb_colours():
    image = np.full((4, 4), 100.0)
    truth = np.zeros((4, 4), bool)
    pred = np.zeros((4, 4), bool)
    truth[0, :2] = True  # (0,0) both, (0,1) truth only
    pred[0, 0] = pred[0, 2] = True  # (0,2) prediction only
    rgb = viz.overlay_rgb(image, truth, pred, alpha=1.0, window=(0, 200))
    assert rgb.shape == (4, 4, 3)
    assert np.allclose(rgb[0, 0], viz.BOTH)  # yellow
    assert np.allclose(rgb[0, 1], viz.TRUTH_ONLY)  # blue
    assert np.allclose(rgb[0, 2], viz.PRED_ONLY)  # orange
    assert np.allclose(rgb[1, 1], [0.5, 0.5, 0.5])  # untouched grey
    assert np.allclose(viz.overlay_rgb(image)[..., 0], viz.overlay_rgb(image)[..., 2])


# Machado, Oliveira & Fernandes (2009), severity 1, on linear RGB: what a deuteranope / protanope sees
_DEUTAN = np.array([[0.367322, 0.860646, -0.227968], [0.280085, 0.672501, 0.047413], [-0.01182, 0.04294, 0.968881]])
_PROTAN = np.array([[0.152286, 1.052583, -0.204868], [0.114503, 0.786281, 0.099216], [-0.003882, -0.048116, 1.051998]])


def _seen(colour: tuple, matrix: np.ndarray) -> np.ndarray:
    """sRGB of ``colour`` blended at alpha 0.5 over mid grey, as seen through a colour-blindness ``matrix``."""
    c = 0.5 * np.asarray(colour) + 0.25
    linear = np.where(c <= 0.04045, c / 12.92, ((c + 0.055) / 1.055) ** 2.4)
    out = np.clip(matrix @ linear, 0, 1)
    return np.where(out <= 0.0031308, 12.92 * out, 1.055 * out ** (1 / 2.4) - 0.055)


def _closest_pair(colours: tuple, matrix: np.ndarray) -> float:
    seen = [_seen(c, matrix) for c in colours]
    return min(float(np.linalg.norm(a - b)) for i, a in enumerate(seen) for b in seen[i + 1 :])


def test_overlay_colours_stay_apart_for_red_green_colour_blindness():
    """Truth only, prediction only and both stay distinct as a deuteranope or protanope sees them over grey."""
    for matrix in (_DEUTAN, _PROTAN):
        assert _closest_pair((viz.TRUTH_ONLY, viz.PRED_ONLY, viz.BOTH), matrix) > 0.25
    assert _closest_pair(((0, 1, 0), (1, 0, 0), (1, 1, 0)), _PROTAN) < 0.1  # green/red/yellow: green = yellow


def test_slice_scrubber_redraws_on_change(volume):
    image, label = volume
    widget = viz.slice_scrubber(image, label)
    assert _last_line(widget) == "redraw: plane=axial slice=12 overlay=True"
    before = _png(widget)
    assert "image/png" in widget._repr_mimebundle_()  # static picture for papermill/nbconvert
    widget.slider.value = 3
    assert _last_line(widget) == "redraw: plane=axial slice=3 overlay=True"
    assert _png(widget) != before
    widget.overlay.value = False
    assert _last_line(widget) == "redraw: plane=axial slice=3 overlay=False"
    widget.plane.value = "sagittal"
    assert _last_line(widget) == "redraw: plane=sagittal slice=20 overlay=False"
    assert widget.slider.max == 39


def test_slice_scrubber_without_label(volume):
    widget = viz.slice_scrubber(volume[0], plane="coronal", alpha=0.2)
    assert widget.overlay.disabled and not widget.overlay.value
    assert _last_line(widget) == "redraw: plane=coronal slice=16 overlay=False"
    with pytest.raises(ValueError, match="plane"):
        viz.slice_scrubber(volume[0], plane="oblique")


def test_import_has_no_side_effects():
    import subprocess
    import sys

    code = "import sys, heartseg_utils.viz; print('matplotlib' in sys.modules, 'ipywidgets' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["False", "False"]


# --------------------------------------------------------------------------------------------------
# 3D surfaces (heartseg_utils.surface, notebook 07)


def _ball(radius: float, shape=(40, 40, 40), centre=(20, 20, 20)) -> np.ndarray:
    grid = np.indices(shape).astype(float)
    return (sum((g - c) ** 2 for g, c in zip(grid, centre)) <= radius**2).astype(np.uint8)


def test_mask_surface_uses_the_spacing_and_the_affine():
    box = np.zeros((20, 20, 20), np.uint8)
    box[5:15, 4:10, 2:18] = 1
    verts, faces = surface.mask_surface(box, (1.0, 2.0, 3.0))
    assert faces.shape[1] == 3 and faces.max() < len(verts)
    np.testing.assert_allclose(verts.min(0), [4.5 * 1, 3.5 * 2, 1.5 * 3], atol=1e-6)  # half a voxel outside
    np.testing.assert_allclose(verts.max(0), [14.5 * 1, 9.5 * 2, 17.5 * 3], atol=1e-6)
    affine = np.array([[-1.0, 0, 0, 10], [0, -2.0, 0, 20], [0, 0, 3.0, -5], [0, 0, 0, 1]])
    world, _ = surface.mask_surface(box, affine=affine)
    np.testing.assert_allclose(world.max(0), [10 - 4.5, 20 - 3.5 * 2, -5 + 17.5 * 3], atol=1e-6)
    with pytest.raises(ValueError, match="empty"):
        surface.mask_surface(np.zeros((4, 4, 4)))


def test_distance_between_concentric_spheres_is_the_radius_gap():
    inner, _ = surface.mask_surface(_ball(6), (1.5, 1.5, 1.5))
    outer, _ = surface.mask_surface(_ball(10), (1.5, 1.5, 1.5))
    d = surface.distance_to_surface(inner, outer)
    assert abs(float(np.median(d)) - 4 * 1.5) < 0.75  # within half a voxel of the true 6 mm gap
    assert surface.distance_to_surface(inner, inner).max() == 0


def test_plot_surfaces_colours_errors_by_distance():
    truth, pred = _ball(8), _ball(8)
    pred[28:34, 18:22, 18:22] = 1  # a false-positive bump
    fig = surface.plot_surfaces(pred, truth, (1.0, 1.0, 1.0), step_size=2, title="bump")
    assert len([ax for ax in fig.axes if ax.name == "3d"]) == 2
    d = fig.distances_mm
    assert d["pred"].max() > 4 and d["truth"].max() < 2  # the bump is far from the truth, not the other way
    plt.close(fig)


def test_stl_and_obj_files(tmp_path):
    verts, faces = surface.mask_surface(_ball(4, (12, 12, 12), (6, 6, 6)), affine=np.diag([2.0, 2.0, 2.0, 1.0]))
    stl = surface.write_stl(tmp_path / "m.stl", verts, faces, name="atrium").read_text().splitlines()
    assert stl[0] == "solid atrium" and stl[-1] == "endsolid atrium"
    assert sum(line.startswith("facet normal") for line in stl) == len(faces)
    first = np.array(stl[3].split()[1:], dtype=float)
    np.testing.assert_allclose(first, verts[faces[0, 0]] * [-1, -1, 1], atol=1e-5)  # RAS -> LPS for Slicer
    obj = surface.write_obj(tmp_path / "m.obj", verts, faces, ras_to_lps=False).read_text().splitlines()
    assert sum(line.startswith("v ") for line in obj) == len(verts)
    assert obj[len(verts)] == f"f {faces[0, 0] + 1} {faces[0, 1] + 1} {faces[0, 2] + 1}"


def test_surface_import_has_no_side_effects():
    import subprocess
    import sys

    code = (
        "import sys, heartseg_utils.surface, heartseg_utils.predict, heartseg_utils.export, heartseg_utils.dicom; "
        "print('matplotlib' in sys.modules, 'pydicom' in sys.modules, 'onnxruntime' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["False", "False", "False"]


def test_orientation_letters_name_the_edges_plane_slice_draws() -> None:
    """A voxel at high x (patient's right in RAS+) lands on the left of an axial picture, where the letter is R;
    one at high y (anterior) lands on top, where the letter is A."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from heartseg_utils.viz import letter_planes, plane_slice, show_planes

    vol = np.zeros((8, 6, 4))
    vol[7, 0, 2] = 1.0  # right, posterior
    axial = plane_slice(vol, "axial", 2)
    row, col = np.argwhere(axial == 1.0)[0]
    assert col < axial.shape[1] / 2 and row > axial.shape[0] / 2  # left of the screen, bottom half
    fig = letter_planes(show_planes(vol))
    letters = {ax.get_title().split()[0]: {t.get_text(): t.get_position() for t in ax.texts} for ax in fig.axes}
    assert letters["axial"]["R"][0] < 0.5 < letters["axial"]["L"][0]  # R on the left edge, where the voxel is
    assert letters["axial"]["P"][1] < 0.5 < letters["axial"]["A"][1]  # P at the bottom, where the voxel is
    assert set(letters["sagittal"]) == set("APSI") and set(letters["coronal"]) == set("RLSI")
    plt.close(fig)


def test_smoothing_rounds_the_staircase_off_and_keeps_the_size():
    """Taubin smoothing: the vertices of a voxel ball end closer to one sphere, of about the same radius."""
    verts, faces = surface.mask_surface(_ball(8), (1.0, 1.0, 1.0))
    smooth, same_faces = surface.mask_surface(_ball(8), (1.0, 1.0, 1.0), smooth=20)
    assert np.array_equal(faces, same_faces) and smooth.shape == verts.shape
    raw_r, smooth_r = (np.linalg.norm(v - v.mean(axis=0), axis=1) for v in (verts, smooth))
    assert smooth_r.std() < 0.5 * raw_r.std()  # the steps are gone
    assert abs(smooth_r.mean() - raw_r.mean()) < 0.3  # without shrinking (plain averaging loses about a voxel)


def test_far_regions_find_the_added_piece_and_say_where_it_is():
    truth, pred = _ball(8), _ball(8)
    pred[28:34, 18:22, 18:22] = 1  # a bump on the +x side
    affine = np.diag([2.0, 2.0, 2.0, 1.0])
    fig = surface.plot_surfaces(pred, truth, None, affine=affine, smooth=10, min_mm=2.0)
    (pv, pf), (tv, tf) = fig.surfaces["pred"], fig.surfaces["truth"]
    [bump, *rest] = surface.far_regions(pv, pf, fig.distances_mm["pred"], 2.0)
    assert bump["centre"][0] > pv.mean(axis=0)[0] + 10 and bump["max_mm"] > 4  # out along +x, the bump
    under = surface.far_regions(tv, tf, fig.distances_mm["truth"], 2.0)  # only where the bump covers the ball
    assert all(r["n_vertices"] < bump["n_vertices"] / 4 and r["centre"][0] > tv.mean(axis=0)[0] for r in under)
    assert surface.direction_words([23.2, -10.0, 4.4]) == "23 mm R, 10 mm P, 4 mm S"
    labels = [ax.get_xlabel() for ax in fig.axes if ax.name == "3d"]
    assert labels == ["x (mm) → R"] * 2  # world RAS mm: the axis says where it grows
    for ax in (a for a in fig.axes if a.name == "3d"):
        assert len(ax.get_yticks()) <= 5  # few ticks: the labels of a short axis do not collide
    assert fig.axes[-1].get_ylim()[0] == pytest.approx(2.0)  # the colour bar starts at min_mm: agreement
    plt.close(fig)


def test_class_surfaces_draw_into_a_given_axis():
    labels = np.zeros((12, 12, 8), np.uint8)
    labels[2:6, 2:6, 2:6], labels[7:10, 7:10, 3:6] = 1, 3
    fig = plt.figure()
    left, right = (fig.add_subplot(1, 2, i, projection="3d") for i in (1, 2))
    same = surface.plot_class_surfaces(labels, (1.0, 1.0, 1.0), {1: "lv", 3: "rv"}, ax=right, smooth=5)
    assert same is fig and sorted(right.surfaces) == [1, 3] and not left.collections
    plt.close(fig)


def test_the_scrubber_writes_the_patient_directions(volume):
    image, label = volume
    with_letters, without = (viz.slice_scrubber(image, label, letters=flag) for flag in (True, False))
    assert _png(with_letters) != _png(without)  # the letters are drawn on the picture (R/L, A/P for axial)


def test_zoom_to_frames_the_masks_and_leaves_an_empty_view_alone():
    fig, ax = plt.subplots()
    try:
        ax.imshow(np.zeros((100, 120)))
        full = (ax.get_xlim(), ax.get_ylim())
        assert not viz.zoom_to(ax, np.zeros((100, 120)), None) and (ax.get_xlim(), ax.get_ylim()) == full
        truth, pred = np.zeros((100, 120), bool), np.zeros((100, 120), bool)
        truth[40:50, 60:70], pred[45:60, 65:68] = True, True  # joint box: rows 40-59, columns 60-69
        assert viz.zoom_to(ax, truth, pred, margin=5)
        assert ax.get_xlim() == (64.5 - 15, 64.5 + 15) and ax.get_ylim() == (49.5 + 15, 49.5 - 15)  # square, row 0 up
    finally:
        plt.close(fig)
