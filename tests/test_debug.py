"""heartseg_utils.debug: gradient-norm log, activation estimate, measured peak memory, reading history curves."""

from __future__ import annotations

import pandas as pd
import pytest
import torch

from heartseg_utils import architecture, debug, models

SMALL = {"channels": (4, 8, 16), "strides": (2, 2), "num_res_units": 1}


def test_track_grad_norms_logs_one_norm_per_step_and_stops_after_remove() -> None:
    model = torch.nn.Linear(3, 1)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    norms, handle = debug.track_grad_norms(opt)
    for _ in range(3):
        opt.zero_grad()
        model(torch.ones(2, 3)).sum().backward()
        expected = torch.cat([p.grad.flatten() for p in model.parameters()]).norm().item()
        opt.step()
        assert norms[-1] == pytest.approx(expected, rel=1e-5)
    handle.remove()
    opt.step()
    assert len(norms) == 3


def test_activation_estimate_scales_with_voxels_batch_and_precision() -> None:
    model = models.get_model("unet", **SMALL)
    one = architecture.activation_bytes(model, (16, 16, 16), 1)
    assert one > 0
    assert architecture.activation_bytes(model, (32, 32, 32), 1) == 8 * one  # every layer's output scales with voxels
    assert architecture.activation_bytes(model, (16, 16, 16), 2) == 2 * one
    assert architecture.activation_bytes(model, (16, 16, 16), 1, bytes_per_value=2) == one // 2
    assert next(model.parameters()).device.type == "cpu"  # the model itself is untouched
    with pytest.raises(ValueError, match="roi"):
        architecture.activation_bytes(model, (16, 16), 1)


def test_measured_cpu_peak_is_positive_and_grows_with_the_patch() -> None:
    model = models.get_model("unet", **SMALL)
    debug.measure_peak_memory(model, (16, 16, 16), 1)  # warm-up
    small = debug.measure_peak_memory(model, (16, 16, 16), 1)
    big = debug.measure_peak_memory(model, (64, 64, 64), 1)
    assert big["peak_mib"] > small["peak_mib"] >= 0 and big["method"]
    assert big["peak_mib"] >= 0.5 * architecture.activation_bytes(model, (64, 64, 64), 1) / 2**20


def _history(loss, dice) -> pd.DataFrame:
    return pd.DataFrame({"epoch": range(1, len(loss) + 1), "train_loss": loss, "val_dice": dice})


@pytest.mark.parametrize(
    "loss, dice, verdict",
    [
        ([1.0, 0.99, 0.99, 0.98, 0.99, 0.98], [0.01, 0.01, 0.02, 0.01, 0.01, 0.01], "under-fitting"),
        ([1.0, 0.6, 0.4, 0.3, 0.2, 0.1, 0.05], [0.3, 0.6, 0.7, 0.65, 0.6, 0.55, 0.5], "over-fitting"),
        ([1.0, 0.8, 0.6, 0.5], [0.1, 0.3, 0.5, 0.6], "still learning"),
        ([1.0, 0.5, 0.4, 0.4, 0.41, 0.42, 0.41], [0.5, 0.8, 0.85, 0.84, 0.84, 0.83, 0.84], "plateau"),
    ],
)
def test_diagnose_history_names_the_pattern(loss, dice, verdict, tmp_path) -> None:
    path = tmp_path / "history.csv"
    _history(loss, dice).to_csv(path, index=False)
    assert debug.diagnose_history(path).startswith(verdict)


def test_diagnose_history_rejects_a_wrong_table() -> None:
    with pytest.raises(ValueError, match="history.csv"):
        debug.diagnose_history(pd.DataFrame({"epoch": [1]}))
