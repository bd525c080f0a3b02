"""Viewing 3D volumes: orthogonal planes, colour overlays and an interactive slice scrubber.

Display convention: volumes are indexed (x, y, z) and assumed RAS+ (after ``nibabel.as_closest_canonical``
or MONAI ``Orientationd(axcodes="RAS")``). Slices are shown the radiological way: patient's right on the
screen's left (axial, coronal), anterior (axial) or superior (coronal, sagittal) on top, anterior on the
left (sagittal). A non-RAS volume gets the same index flips, so the picture then shows index order only.
matplotlib and ipywidgets are imported inside the functions: importing this module changes nothing.
"""

from __future__ import annotations

import base64
import functools
import io
from typing import Any

import numpy as np

PLANES = {"sagittal": 0, "coronal": 1, "axial": 2}  # plane name -> array axis that is held fixed
# Okabe & Ito's colour-blind-safe palette (without black): one colour per class of a label map, in order
PALETTE = (
    (0.902, 0.624, 0.0),  # orange
    (0.337, 0.706, 0.914),  # sky blue
    (0.0, 0.620, 0.451),  # bluish green
    (0.941, 0.894, 0.259),  # yellow
    (0.0, 0.447, 0.698),  # blue
    (0.835, 0.369, 0.0),  # vermillion
    (0.800, 0.475, 0.655),  # reddish purple
)
# Truth against prediction, from the same palette (told apart with red-green colour blindness, unlike green/red)
TRUTH_ONLY = PALETTE[1]  # sky blue: atrium the prediction missed (or the label alone)
PRED_ONLY = PALETTE[5]  # vermillion: what the prediction added
BOTH = PALETTE[3]  # yellow: where they agree


def as_volume(array: Any, name: str = "image") -> np.ndarray:
    """Return ``array`` (numpy, torch or MetaTensor) as a 3D numpy array, dropping a leading channel of 1."""
    vol = np.asarray(array.detach().cpu() if hasattr(array, "detach") else array)
    vol = vol[0] if vol.ndim == 4 and vol.shape[0] == 1 else vol
    if vol.ndim != 3:
        raise ValueError(f"{name} must be a 3D volume (x, y, z) or (1, x, y, z); got shape {vol.shape}")
    return vol


def _volumes(image: Any, label: Any) -> tuple[np.ndarray, np.ndarray | None]:
    """Image and optional label as 3D arrays of the same shape, or a ValueError saying what differs."""
    vol, lab = as_volume(image), None if label is None else as_volume(label, "label")
    if lab is not None and lab.shape != vol.shape:
        raise ValueError(f"label shape {lab.shape} differs from image shape {vol.shape}")
    return vol, lab


def plane_slice(volume: Any, plane: str, index: int) -> np.ndarray:
    """Cut one slice of a 3D volume and turn it to display orientation (module docstring), ready for imshow.

    Introduced in notebook 01.

    Args:
        volume: 3D array (x, y, z), assumed RAS+.
        plane: "axial" (fixed z), "coronal" (fixed y) or "sagittal" (fixed x).
        index: slice number along the fixed axis.

    Returns:
        2D array whose row 0 is the top of the screen.
    """
    if plane not in PLANES:
        raise ValueError(f"plane must be one of {sorted(PLANES)}; got {plane!r}")
    s = np.take(np.asarray(volume), index, axis=PLANES[plane])  # remaining axes (a, b) keep their order
    return s[::-1, ::-1].T  # rows: b from high to low (A/S on top); columns: a from high to low (R/A left)


def _window(vol: np.ndarray) -> tuple[float, float]:
    """Robust grey-level window (1st-99.5th percentile) shared by all slices of a volume."""
    lo, hi = np.percentile(vol, [1.0, 99.5])
    return (float(lo), float(hi)) if hi > lo else (float(lo), float(lo) + 1.0)


def overlay_rgb(
    image2d: Any,
    truth2d: Any = None,
    pred2d: Any = None,
    *,
    alpha: float = 0.5,
    window: tuple[float, float] | None = None,
) -> np.ndarray:
    """Blend masks over a grey slice: blue = truth only, orange = prediction only, yellow = both.

    Introduced in notebook 01 (truth only); notebook 04 adds predictions.

    Args:
        image2d: 2D intensity slice.
        truth2d: optional 2D mask (non-zero = foreground), e.g. the ground-truth label.
        pred2d: optional 2D mask of the same shape, e.g. a model's prediction.
        alpha: opacity of the colours (0 = image only, 1 = solid colour).
        window: (low, high) grey-level window; default is the slice's 1st-99.5th percentile.

    Returns:
        float array of shape (H, W, 3) with values in [0, 1], ready for ``plt.imshow``.
    """
    img = np.asarray(image2d, dtype=np.float64)
    lo, hi = window if window is not None else _window(img)
    grey = np.clip((img - lo) / max(hi - lo, 1e-12), 0.0, 1.0)
    rgb = np.repeat(grey[..., None], 3, axis=-1)
    t = np.zeros(img.shape, bool) if truth2d is None else np.asarray(truth2d) != 0
    p = np.zeros(img.shape, bool) if pred2d is None else np.asarray(pred2d) != 0
    for mask, colour in ((t & ~p, TRUTH_ONLY), (p & ~t, PRED_ONLY), (t & p, BOTH)):
        rgb[mask] = (1.0 - alpha) * rgb[mask] + alpha * np.asarray(colour)
    return rgb


def is_label_map(*masks: Any) -> bool:
    """True when a mask holds more than one non-zero value (a multi-class label map), so classes get colours."""
    return any(m is not None and np.setdiff1d(np.unique(np.asarray(m)), [0, 1]).size > 0 for m in masks)


def class_colours(values: Any) -> dict[int, tuple[float, float, float]]:
    """One :data:`PALETTE` colour per non-zero label value, in increasing order (cycling after seven classes).

    Introduced in notebook 01. The same values always get the same colours, whichever of them a slice shows.
    """
    ordered = sorted({int(v) for v in np.asarray(list(values)).ravel()} - {0})
    return {v: PALETTE[i % len(PALETTE)] for i, v in enumerate(ordered)}


def _outline(mask: np.ndarray) -> np.ndarray:
    """The boundary pixels of a 2D mask (the mask less its erosion)."""
    from scipy import ndimage

    return mask & ~ndimage.binary_erosion(mask)


def label_rgb(
    image2d: Any,
    truth2d: Any = None,
    pred2d: Any = None,
    *,
    colours: dict[int, tuple[float, float, float]] | None = None,
    alpha: float = 0.5,
    window: tuple[float, float] | None = None,
) -> np.ndarray:
    """Blend label maps over a grey slice, each class in its own colour (:func:`class_colours`). Notebook 01.

    The truth is filled; a prediction is filled when it is drawn alone, and drawn as each class's outline (solid)
    over the filled truth when both are given, so that a boundary error shows as an outline off its colour.

    Args:
        image2d: 2D intensity slice.
        truth2d, pred2d: optional 2D label maps (the dataset's label values).
        colours: ``{label value: RGB}``; default :func:`class_colours` of the values in both maps.
        alpha: opacity of the filled colours.
        window: (low, high) grey-level window; default the slice's 1st-99.5th percentile.

    Returns:
        float array (H, W, 3) in [0, 1].
    """
    rgb = overlay_rgb(image2d, window=window)
    maps = [np.asarray(m) for m in (truth2d, pred2d) if m is not None]
    colours = colours or class_colours(np.concatenate([m.ravel() for m in maps]) if maps else [])
    for value, colour in colours.items():
        fill = truth2d if truth2d is not None else pred2d
        if fill is not None:
            where = np.asarray(fill) == value
            rgb[where] = (1.0 - alpha) * rgb[where] + alpha * np.asarray(colour)
        if truth2d is not None and pred2d is not None:
            rgb[_outline(np.asarray(pred2d) == value)] = colour
    return rgb


def add_class_legend(target: Any, classes: dict[int, str], colours: dict | None = None, **kwargs: Any) -> Any:
    """A legend of coloured patches, one per class (``{label value: name}``), on an Axes or a Figure. Notebook 01."""
    from matplotlib.patches import Patch

    colours = colours or class_colours(classes)
    handles = [Patch(color=colours[v], label=f"{v} {name}") for v, name in classes.items() if v in colours]
    return target.legend(handles=handles, **{"loc": "lower center", "fontsize": 8, "framealpha": 0.8, **kwargs})


def show_planes(
    image: Any,
    label: Any = None,
    *,
    index: tuple[int, int, int] | None = None,
    alpha: float = 0.4,
    title: str | None = None,
    classes: dict[int, str] | None = None,
):
    """Plot axial, coronal and sagittal slices through one point, with the label in blue.

    Introduced in notebook 01. See the module docstring for the display convention. A label map with several
    values (or ``classes`` given) draws each class in its own colour (:func:`label_rgb`) with a legend.

    Args:
        image: 3D volume (x, y, z), numpy or torch; a leading channel of size 1 is dropped.
        label: optional 3D mask of the same shape, drawn in blue (:data:`TRUTH_ONLY`).
        index: voxel (x, y, z) where the three planes cross; default is the volume's centre.
        alpha: opacity of the label overlay.
        title: optional figure title.
        classes: ``{label value: name}`` for the legend of a label map (default: the values it holds).

    Returns:
        the matplotlib Figure (created with pyplot, so a notebook shows it at the end of the cell).
    """
    import matplotlib.pyplot as plt

    vol, lab = _volumes(image, label)
    multi = lab is not None and (classes is not None or is_label_map(lab))
    classes = classes or ({int(v): str(int(v)) for v in np.unique(lab) if v} if multi else None)
    colours = class_colours(classes) if multi else None
    index = tuple(n // 2 for n in vol.shape) if index is None else tuple(int(i) for i in index)
    window = _window(vol)
    fig, axes = plt.subplots(1, 3, figsize=(12, 4.2))
    for ax, plane in zip(axes, ("axial", "coronal", "sagittal")):
        i = index[PLANES[plane]]
        truth = None if lab is None else plane_slice(lab, plane, i)
        grey = plane_slice(vol, plane, i)
        rgb = label_rgb(grey, truth, colours=colours, alpha=alpha, window=window) if multi else None
        ax.imshow(rgb if multi else overlay_rgb(grey, truth, alpha=alpha, window=window))
        ax.set_title(f"{plane} ({'xyz'[PLANES[plane]]} = {i})")
        ax.axis("off")
    if multi:
        add_class_legend(fig, classes, colours, ncol=len(classes), loc="lower center")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


def _render_png(
    rgb: np.ndarray,
    title: str,
    classes: dict[int, str] | None = None,
    colours: Any = None,
    plane: str | None = None,
) -> str:
    """Draw one RGB slice with matplotlib (no pyplot, no global state) and return base64 PNG text.

    With ``plane``, the picture's edges carry :func:`orientation_letters`.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(4.6, 4.6), dpi=80)
    ax = fig.add_axes((0.02, 0.02, 0.96, 0.9), title=title)
    ax.imshow(rgb)
    ax.axis("off")
    if plane is not None:
        orientation_letters(ax, plane)
    if classes:  # in a corner, off the letters on the edges' middles
        add_class_legend(ax, classes, colours, **({"loc": "lower right"} if plane is not None else {}))
    buf = io.BytesIO()
    FigureCanvasAgg(fig).print_png(buf)
    return base64.b64encode(buf.getvalue()).decode("ascii")


def slice_scrubber(
    image: Any,
    label: Any = None,
    *,
    plane: str = "axial",
    alpha: float = 0.4,
    prediction: Any = None,
    classes: dict[int, str] | None = None,
    letters: bool = True,
):
    """Interactive viewer: choose a plane, scrub through slices, toggle the label overlay and its opacity.

    Introduced in notebook 01. Each redraw replaces the widget's Output with one PNG and exactly one line
    ``redraw: plane=axial slice=40 overlay=True`` (browser tests wait for it). The returned widget also
    carries a PNG of its current view, so papermill/nbconvert outputs show a picture without a kernel.

    Args:
        image: 3D volume (x, y, z); a leading channel of size 1 is dropped.
        label: optional 3D mask of the same shape, drawn in blue (:data:`TRUTH_ONLY`).
        plane: starting plane: "axial", "coronal" or "sagittal".
        alpha: starting opacity of the overlay.
        prediction: optional 3D mask drawn in orange (yellow where it overlaps the label); added in notebook 04.
        classes: ``{label value: name}``: label maps (also found by their values) are drawn one colour per class
            with a legend, the prediction as outlines over the filled truth (:func:`label_rgb`).
        letters: write the patient directions on the picture's edges (:func:`orientation_letters`, true for a
            RAS+ volume; pass False for a volume in another orientation, whose picture shows index order only).

    Returns:
        an ipywidgets VBox with attributes ``plane``, ``slider``, ``overlay``, ``opacity``, ``output``.
    """
    import ipywidgets as widgets

    vol, lab = _volumes(image, label)
    pred = None if prediction is None else _volumes(image, prediction)[1]
    plane_slice(vol, plane, 0)  # validates the plane name
    window, n = _window(vol), vol.shape[PLANES[plane]]
    multi = classes is not None or is_label_map(lab, pred)
    if multi and classes is None:
        found = np.union1d(*(np.unique(m) if m is not None else [] for m in (lab, pred)))
        classes = {int(v): str(int(v)) for v in found if v}
    colours = class_colours(classes) if multi else None
    plane_w = widgets.Dropdown(options=["axial", "coronal", "sagittal"], value=plane, description="plane")
    slider = widgets.IntSlider(value=n // 2, min=0, max=n - 1, description="slice", continuous_update=False)
    has_mask = lab is not None or pred is not None
    overlay = widgets.Checkbox(value=has_mask, description="overlay", disabled=not has_mask)
    opacity = widgets.FloatSlider(
        value=alpha, min=0.0, max=1.0, step=0.05, description="opacity", continuous_update=False
    )
    output = widgets.Output()
    state = {"busy": False, "png": ""}  # busy: skip redraws while the plane change moves the slider

    def redraw(_change: Any = None) -> None:
        if state["busy"]:
            return
        p, i, show = plane_w.value, slider.value, overlay.value and has_mask
        truth = plane_slice(lab, p, i) if show and lab is not None else None
        predicted = plane_slice(pred, p, i) if show and pred is not None else None
        draw = functools.partial(label_rgb, colours=colours) if multi else overlay_rgb
        rgb = draw(plane_slice(vol, p, i), truth, predicted, alpha=opacity.value, window=window)
        shown = classes if show else None
        state["png"] = _render_png(rgb, f"{p} slice {i} / {slider.max}", shown, colours, p if letters else None)
        output.outputs = (
            {
                "output_type": "display_data",
                "data": {"image/png": state["png"], "text/plain": f"<{p} {i}>"},
                "metadata": {},
            },
            {"output_type": "stream", "name": "stdout", "text": f"redraw: plane={p} slice={i} overlay={show}\n"},
        )

    def change_plane(change: Any) -> None:
        state["busy"] = True
        try:
            size = vol.shape[PLANES[change["new"]]]
            slider.value = min(slider.value, size - 1)
            slider.max, slider.value = size - 1, size // 2
        finally:
            state["busy"] = False
        redraw()

    class SliceScrubber(widgets.VBox):
        def _repr_mimebundle_(self, **kwargs: Any) -> dict | None:
            bundle = super()._repr_mimebundle_(**kwargs)
            if bundle is not None:
                bundle["image/png"] = state["png"]  # static fallback for viewers without a kernel
            return bundle

    plane_w.observe(change_plane, names="value")
    for w in (slider, overlay, opacity):
        w.observe(redraw, names="value")
    box = SliceScrubber([widgets.HBox([plane_w, overlay]), widgets.HBox([slider, opacity]), output])
    box.plane, box.slider, box.overlay, box.opacity, box.output = plane_w, slider, overlay, opacity, output
    redraw()
    return box


# edges of a plane_slice picture (module docstring): (left, right, top, bottom) for a RAS+ volume
ORIENTATION_LETTERS = {"axial": "RLAP", "coronal": "RLSI", "sagittal": "APSI"}


def orientation_letters(ax: Any, plane: str, *, color: str = "yellow") -> None:
    """Write the patient directions (R/L, A/P, S/I) on the four edges of a :func:`plane_slice` picture in ``ax``.

    Introduced in notebook 01. The letters follow this module's display convention for a RAS+ volume, so every
    slice figure of the series reads the same way: an axial slice has R on the left and A on top.
    """
    if plane not in ORIENTATION_LETTERS:
        raise ValueError(f"plane must be one of {sorted(ORIENTATION_LETTERS)}; got {plane!r}")
    from matplotlib import patheffects

    left, right, top, bottom = ORIENTATION_LETTERS[plane]
    outline = [patheffects.withStroke(linewidth=2.5, foreground="black")]  # readable on a bright body edge too
    style = {"transform": ax.transAxes, "color": color, "fontsize": 11, "fontweight": "bold", "path_effects": outline}
    for text, x, y, ha, va in ((left, 0.02, 0.5, "left", "center"), (right, 0.98, 0.5, "right", "center"),
                               (top, 0.5, 0.98, "center", "top"), (bottom, 0.5, 0.02, "center", "bottom")):  # fmt: skip
        ax.text(x, y, text, ha=ha, va=va, **style)


def zoom_to(ax: Any, *masks2d: Any, margin: int = 8) -> bool:
    """Zoom ``ax`` (a :func:`plane_slice` picture) onto the masks' joint bounding box plus ``margin`` pixels.

    Introduced in notebook 04: the atrium fills a small part of a slice, so its boundary errors are a few pixels
    wide at full view. The box is made square (the longer side), so the picture keeps its aspect. Returns False,
    leaving the view as it was, when every mask is empty or None.
    """
    present = [np.asarray(m) != 0 for m in masks2d if m is not None]
    union = np.logical_or.reduce(present) if present else np.zeros((0, 0), bool)
    if not union.any():
        return False
    rows, cols = np.nonzero(union)
    half = (max(np.ptp(rows), np.ptp(cols)) + 1) / 2 + margin
    r, c = (rows.min() + rows.max()) / 2, (cols.min() + cols.max()) / 2
    ax.set_xlim(c - half, c + half)
    ax.set_ylim(r + half, r - half)  # imshow draws row 0 on top
    return True


def letter_planes(fig: Any) -> Any:
    """Add :func:`orientation_letters` to every panel of ``fig`` whose title starts with a plane name.

    Introduced in notebook 01: ``viz.letter_planes(viz.show_planes(image, label))``. Returns ``fig``.
    """
    for ax in fig.axes:
        plane = ax.get_title().split(" ")[0]
        if plane in ORIENTATION_LETTERS:
            orientation_letters(ax, plane)
    return fig
