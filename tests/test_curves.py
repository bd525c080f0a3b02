"""TensorBoard curves (``log_dir``): the event file holds history.csv's values, one per epoch, and an overlay per epoch;
a resumed run continues them; ``log_dir = ""`` writes nothing."""

from __future__ import annotations

import csv
import io
import time
from pathlib import Path

import numpy as np
import pytest

from heartseg_utils import curves, runs
from heartseg_utils.config import argument_parser
from heartseg_utils.train import run_training
from heartseg_utils.viz import overlay_rgb, plane_slice


def _history(run_dir: Path) -> list[dict[str, float]]:
    with (run_dir / runs.HISTORY).open() as f:
        return [{k: float(v) for k, v in row.items()} for row in csv.DictReader(f)]


def _events(log_dir: Path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(log_dir), size_guidance={"scalars": 0, "images": 0})  # 0: keep every event
    events.Reload()
    return events


def _assert_curves_are_history(log_dir: Path, run_dir: Path) -> None:
    """Every scalar tag has one value per epoch of history.csv, equal to its column (float32 in TensorBoard)."""
    history = _history(run_dir)
    events = _events(log_dir)
    assert set(events.Tags()["scalars"]) == set(curves.SCALARS.values())
    for field, tag in curves.SCALARS.items():
        logged = events.Scalars(tag)
        assert [e.step for e in logged] == [int(row["epoch"]) for row in history], tag
        assert [e.value for e in logged] == pytest.approx([row[field] for row in history], rel=1e-6, abs=1e-9), tag
    images = events.Images(curves.OVERLAY)
    assert [e.step for e in images] == [int(row["epoch"]) for row in history]


def test_curves_equal_history_and_resume_appends(
    tiny_config: dict, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)  # SummaryWriter's own default folder would be ./runs
    plain = Path(tiny_config["run_dir"])
    run_training({**tiny_config, "amp": "off"})  # log_dir "": no curves
    assert len(_history(plain)) == 2
    assert not list(tmp_path.rglob("events.out.tfevents*"))

    log_dir, run_dir = tmp_path / "tb" / "tiny", tmp_path / "run_tb"
    run_training({**tiny_config, "amp": "off", "run_dir": str(run_dir), "log_dir": str(log_dir)})
    _assert_curves_are_history(log_dir, run_dir)
    untimed = lambda rows: [{k: v for k, v in row.items() if k != "epoch_seconds"} for row in rows]  # noqa: E731
    assert untimed(_history(run_dir)) == untimed(_history(plain)), "the curves leave training as it was"

    from PIL import Image

    picture = np.asarray(Image.open(io.BytesIO(_events(log_dir).Images(curves.OVERLAY)[-1].encoded_image_string)))
    assert picture.ndim == 3 and picture.shape[2] >= 3 and min(picture.shape[:2]) > 1
    tint = np.ptp(picture[..., :3].astype(int), axis=-1)  # grey pixels have equal channels
    assert (tint > 40).any(), "the label is drawn (blue, or yellow where the prediction agrees)"

    run_training(
        {**tiny_config, "amp": "off", "run_dir": str(run_dir), "log_dir": str(log_dir), "resume": True, "max_epochs": 3}
    )
    assert len(_history(run_dir)) == 3
    _assert_curves_are_history(log_dir, run_dir)  # the resumed run appended epoch 3 to the same curves


def test_log_dir_is_a_flag_and_may_change_on_resume() -> None:
    assert argument_parser("train").parse_args(["--log_dir", "runs/tb/x"]).log_dir == "runs/tb/x"
    assert argument_parser("train").parse_args([]).log_dir == ""
    assert runs.config_differences({"log_dir": "", "lr": 0.1}, {"log_dir": "runs/tb/x", "lr": 0.1}) == []


def test_overlay_slice_draws_truth_and_prediction() -> None:
    image = np.zeros((8, 6, 5), np.float32)
    image[2:6, 1:5, :] = 1.0
    label, mask = np.zeros_like(image), np.zeros_like(image)
    label[3, 2, 4] = 1
    label[3:5, 2:4, 1] = 1  # z = 1: the slice with the most label voxels
    mask[3, 2, 1] = 1
    rgb = curves.overlay_slice(image[None, None], mask[None, None], label[None])
    assert rgb.shape == (6, 8, 3) and 0.0 <= rgb.min() and rgb.max() <= 1.0
    expected = overlay_rgb(*(plane_slice(v, "axial", 1) for v in (image, label, mask)))  # truth, then prediction
    np.testing.assert_array_equal(rgb, expected)
    empty = curves.overlay_slice(image, mask, np.zeros_like(label))  # no label: the middle slice
    np.testing.assert_array_equal(
        empty, overlay_rgb(plane_slice(image, "axial", 2), None, plane_slice(mask, "axial", 2))
    )
    with pytest.raises(ValueError, match="one grid"):
        curves.overlay_slice(image, mask[:4], label)


def test_a_new_run_in_the_same_log_dir_replaces_the_curves_it_writes_again(tmp_path: Path) -> None:
    """``purge_step`` = the first epoch a run writes: TensorBoard shows a rerun's epochs, not two lines over them."""
    row = dict.fromkeys(curves.SCALARS, 0.5)
    for purge_step, epochs in ((1, (1, 2, 3)), (3, (3, 4)), (1, (1,))):  # a run, its resume, then a new run
        if purge_step == 3 or epochs == (1,):
            time.sleep(1.1)  # event files are named (and read in order) by the second they were opened
        with curves.open_curves(tmp_path, purge_step=purge_step) as tb:
            for epoch in epochs:
                tb.log_epoch({**row, "epoch": epoch})
        if purge_step == 3:
            assert [e.step for e in _events(tmp_path).Scalars("lr")] == [1, 2, 3, 4]
    assert [e.step for e in _events(tmp_path).Scalars("lr")] == [1]
    with curves.open_curves("") as none:
        assert none is None
