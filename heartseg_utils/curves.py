"""Live training curves: TensorBoard scalars and a validation overlay per epoch (``TrainConfig.log_dir``).

Introduced in notebook 03. ``history.csv`` stays the source of truth: :meth:`Curves.log_epoch` writes exactly the
values of its row (as TensorBoard's float32), under the tags of :data:`SCALARS`; :meth:`Curves.log_overlay` adds one
picture of a validation case (:func:`heartseg_utils.viz.overlay_rgb`: green truth, red prediction, yellow both).
Only the master process writes (``train`` opens no writer elsewhere). Watch a run live with
``tensorboard --logdir runs/tb`` when its ``log_dir`` is ``runs/tb/<name>``. ``torch.utils.tensorboard`` (and the
``tensorboard`` package it needs) is imported only when a writer is opened: ``log_dir = ""`` needs neither.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator, Mapping
from typing import Any

import numpy as np

from heartseg_utils.viz import overlay_rgb, plane_slice

# history.csv column -> TensorBoard tag, one scalar per epoch (step = the epoch number)
SCALARS: dict[str, str] = {
    "train_loss": "loss/train",
    "val_dice": "dice/val_mean",
    "val_dice_min": "dice/val_min",
    "lr": "lr",
    "epoch_seconds": "time/epoch_seconds",
}
OVERLAY = "overlay/validation"  # the image tag: one axial slice of the first validation case per epoch


def _volume(array: Any) -> np.ndarray:
    """A (1, 1, x, y, z), (1, x, y, z) or (x, y, z) tensor or array as a 3D float numpy array on the CPU."""
    vol = np.asarray(array.detach().float().cpu() if hasattr(array, "detach") else array, dtype=np.float32)
    if vol.ndim < 3 or any(n != 1 for n in vol.shape[:-3]):
        raise ValueError(f"expected one 3D volume (x, y, z), possibly with leading 1s; got shape {vol.shape}")
    return vol.reshape(vol.shape[-3:])


def overlay_slice(image: Any, mask: Any, label: Any) -> np.ndarray:
    """The axial slice with the most label voxels (the middle one if the label is empty), as an RGB overlay.

    Introduced in notebook 03 (TensorBoard's validation picture).

    Args:
        image: the preprocessed volume, as validation sees it.
        mask: the predicted foreground mask on the same grid.
        label: the true foreground mask on the same grid.

    Returns:
        float array (H, W, 3) in [0, 1], in :mod:`heartseg_utils.viz`'s display orientation.
    """
    img, pred, truth = _volume(image), _volume(mask), _volume(label)
    if not img.shape == pred.shape == truth.shape:
        raise ValueError(f"image {img.shape}, mask {pred.shape} and label {truth.shape} must share one grid")
    area = (truth != 0).sum(axis=(0, 1))
    z = int(area.argmax()) if area.any() else img.shape[2] // 2
    return overlay_rgb(*(plane_slice(v, "axial", z) for v in (img, truth, pred)))


class Curves:
    """One TensorBoard writer for one run: the epoch scalars of :data:`SCALARS` and the :data:`OVERLAY` picture.

    Introduced in notebook 03. ``purge_step`` is the first epoch this run writes: TensorBoard then hides the events
    of that epoch and later ones that an earlier run (killed, overwritten, or the one being resumed) left in
    ``log_dir``, so a resumed run's curves continue without a second line over the same epochs.
    """

    def __init__(self, log_dir: str | os.PathLike[str], *, purge_step: int | None = None) -> None:
        self.log_dir = os.fspath(log_dir)
        try:
            from torch.utils.tensorboard import SummaryWriter  # needs the `tensorboard` package
        except ImportError as err:
            raise ImportError(f"log_dir {self.log_dir!r} needs TensorBoard: pip install tensorboard") from err
        self.writer = SummaryWriter(self.log_dir, purge_step=purge_step)

    def log_epoch(self, row: Mapping[str, Any]) -> None:
        """Write one history.csv row (:data:`heartseg_utils.runs.HISTORY_FIELDS`) at step ``row["epoch"]``."""
        for field, tag in SCALARS.items():
            self.writer.add_scalar(tag, float(row[field]), int(row["epoch"]))
        self.writer.flush()  # live: TensorBoard sees the epoch now, not after flush_secs

    def log_overlay(self, epoch: int, image: Any, mask: Any, label: Any) -> None:
        """Write :func:`overlay_slice` of one validation case at step ``epoch`` (tag :data:`OVERLAY`)."""
        self.writer.add_image(OVERLAY, overlay_slice(image, mask, label), epoch, dataformats="HWC")
        self.writer.flush()

    def close(self) -> None:
        """Flush and close the event file."""
        self.writer.close()


@contextlib.contextmanager
def open_curves(log_dir: str | os.PathLike[str], *, purge_step: int | None = None) -> Iterator[Curves | None]:
    """A :class:`Curves` writing to ``log_dir`` (None for ``""``: no curves), closed on exit, errors included.

    Introduced in notebook 03. A relative ``log_dir`` is relative to the working folder, as ``run_dir`` is.
    """
    if not os.fspath(log_dir):
        yield None
        return
    curves = Curves(log_dir, purge_step=purge_step)
    try:
        yield curves
    finally:
        curves.close()
