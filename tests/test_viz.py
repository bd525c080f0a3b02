"""Tests for heartseg_utils.viz: figures, overlay colours and the slice-scrubber widget (no browser)."""

from __future__ import annotations

import base64

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

from heartseg_utils import viz  # noqa: E402


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
            green = (rgb[..., 1] > rgb[..., 0] + 0.1).sum()
            assert green > 0  # the mid slices cut through the label box
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
    assert np.allclose(rgb[0, 0], [1, 1, 0])  # yellow = both
    assert np.allclose(rgb[0, 1], [0, 1, 0])  # green = truth
    assert np.allclose(rgb[0, 2], [1, 0, 0])  # red = prediction
    assert np.allclose(rgb[1, 1], [0.5, 0.5, 0.5])  # untouched grey
    assert np.allclose(viz.overlay_rgb(image)[..., 0], viz.overlay_rgb(image)[..., 2])


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
